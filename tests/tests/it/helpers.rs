//! Spawning the app and the cluster it runs against.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use fleetpilot::config::{Secret, Settings};
use fleetpilot::pg::{PgOptions, PrivatePostgres};
use fleetpilot::startup::Application;
use sqlx::PgPool;
use tokio::sync::watch;

/// The admin URL of the cluster the tests use: `FLEETPILOT_TEST_DATABASE_URL` if set (an existing server,
/// connecting to its `postgres` database), else a private cluster started once per test process. The private
/// cluster lives in a temporary directory and dies with the process (parent-death signal).
fn admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("FLEETPILOT_TEST_DATABASE_URL") {
            return url;
        }
        clean_stale_dirs();
        let dir = std::env::temp_dir().join(format!("fleetpilot-test-pg-{}", std::process::id()));
        let pg = PrivatePostgres::start(&PgOptions { data_dir: dir, ephemeral: true })
            .unwrap_or_else(|e| panic!("starting the private PostgreSQL for tests: {e}"));
        let url = pg.url_for("postgres");
        // Keep it running for the life of the process; the parent-death signal stops it at exit.
        std::mem::forget(pg);
        url
    })
}

/// Removes the data directories of earlier test processes that are gone.
fn clean_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("fleetpilot-test-pg-").and_then(|p| p.split('.').next()?.parse::<u32>().ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let p = e.path();
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
}

/// A fresh, migrated database; returns its URL.
pub async fn fresh_database() -> String {
    let admin = tokio::task::spawn_blocking(admin_url).await.unwrap().to_string();
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    fleetpilot::pg::ensure_database(&admin, &name).await.unwrap();
    // The private cluster's URL carries its socket directory as `?host=/...`: keep the query, swap the path.
    let (main, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let base = main.rsplit_once('/').unwrap().0;
    if query.is_empty() { format!("{base}/{name}") } else { format!("{base}/{name}?{query}") }
}

/// A running app.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// API token.
    pub api_token: String,
    /// Agent token.
    pub agent_token: String,
    /// Pool on the app's database.
    pub pool: PgPool,
    /// HTTP client.
    pub http: reqwest::Client,
    shutdown: watch::Sender<bool>,
    handle: Option<tokio::task::JoinHandle<Result<(), fleetpilot::startup::StartupError>>>,
}

/// Settings for a test app; tweak with `customize`.
pub fn test_settings() -> Settings {
    let mut s = Settings {
        listen: "127.0.0.1:0".into(),
        api_token: Secret::new("test-api-token"),
        agent_token: Secret::new("test-agent-token"),
        // Most tests play many nodes with one token; the adversarial tests turn this off.
        agent_token_can_write: true,
        ..Settings::default()
    };
    s.control.tick_secs = 0.5;
    s.control.bucket_secs = 1;
    s.control.lookback_secs = 300;
    s.alerts.eval_secs = 0.3;
    s.alerts.group_wait_secs = 0.3;
    // The tests' webhook receivers listen on 127.0.0.1; the adversarial tests turn this off.
    s.alerts.webhook_allow_private = true;
    s
}

/// Starts the app on a fresh database.
pub async fn spawn_app(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let url = fresh_database().await;
    spawn_app_on(&url, customize).await
}

/// Starts the app on an existing database (e.g. to restart it).
pub async fn spawn_app_on(url: &str, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut settings = test_settings();
    settings.database_url = Some(url.to_string());
    customize(&mut settings);
    let pool = fleetpilot::db::connect(url, 10).await.unwrap();
    let app = Application::build_with_pool(settings.clone(), pool.clone()).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_handle();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        api_token: settings.api_token.expose().to_string(),
        agent_token: settings.agent_token.expose().to_string(),
        pool,
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        shutdown,
        handle: Some(handle),
    }
}

impl TestApp {
    /// A handle that stops the app when `true` is sent (as a signal handler would).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Stops the app and waits for it.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    /// POST JSON to the API with the API token.
    pub async fn api_post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.address)).bearer_auth(&self.api_token).json(body).send().await.unwrap()
    }

    /// A request to `path` with the API token, to finish and send.
    pub fn api_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.address)).bearer_auth(&self.api_token)
    }

    /// GET from the API with the API token.
    pub async fn api_get(&self, path: &str) -> reqwest::Response {
        self.api_request(reqwest::Method::GET, path).send().await.unwrap()
    }

    /// GET from the API with the API token and read the body as JSON (whatever the status).
    pub async fn api_json(&self, path: &str) -> serde_json::Value {
        self.api_get(path).await.json().await.unwrap()
    }

    /// `method path` with the API token and an optional JSON body; the status and JSON body.
    pub async fn api_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        call(self, &self.api_token, method, path, body).await
    }

    /// The server's own Prometheus exposition (`/metrics`, no token).
    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.address)).send().await.unwrap().text().await.unwrap()
    }

    /// Creates a policy through the API; panics unless it is created (201). Its JSON.
    pub async fn create_policy(&self, spec: &serde_json::Value) -> serde_json::Value {
        let (status, body) = self.api_call(reqwest::Method::POST, "/api/v1/policies", Some(spec)).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// POST a raw body to ingest with the agent token.
    pub async fn ingest_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.agent_post("/api/v1/ingest", &[("content-type", "application/json")], body).await
    }

    /// POST a raw body with the agent token and the given headers.
    pub async fn agent_post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.address)).bearer_auth(&self.agent_token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body).send().await.unwrap()
    }

    /// Polls `sql` (at most one row of one column) until it returns a row; its value.
    pub async fn eventually_scalar<T>(&self, timeout: Duration, what: &str, sql: &'static str) -> T
    where
        T: sqlx::Type<sqlx::Postgres> + for<'r> sqlx::Decode<'r, sqlx::Postgres> + Send + Unpin,
    {
        eventually(timeout, what, || async { sqlx::query_scalar(sql).fetch_optional(&self.pool).await.unwrap() }).await
    }

    /// GET from the API with the API token; the JSON body of a 200 (panics on any other status).
    pub async fn api_ok_json(&self, path: &str) -> serde_json::Value {
        let r = self.api_get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// A scalar query.
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

/// The status and JSON body (`null` when there is none) of a response.
pub async fn status_json(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Sends `method path` to `app` with `token` and an optional JSON body; returns the status and JSON body.
pub async fn call(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = app.http.request(method, format!("{}{path}", app.address)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    status_json(req.send().await.unwrap()).await
}

/// Asserts that `r` is a JSON error with `status` and returns its body.
pub async fn error_of(r: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(r.status().as_u16(), status);
    assert!(r.headers().get("content-type").unwrap().to_str().unwrap().starts_with("application/json"));
    r.json().await.unwrap()
}

/// Asserts that `r` is a JSON error with `status` whose body names `field`; returns the body.
pub async fn assert_field_error(r: reqwest::Response, status: u16, field: &str) -> serde_json::Value {
    let e = error_of(r, status).await;
    assert_eq!(e["field"], field, "{e}");
    e
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Percent-encodes form values.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of `name="<field>" value="..."` in a page (hidden inputs).
pub fn hidden_value(html: &str, field: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{field}\" value=\""))?;
    let rest = &html[at + field.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

/// A cookie's value from a response's Set-Cookie headers.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let value = c.strip_prefix(&format!("{name}="))?.split(';').next()?.to_string();
        Some((value, c.to_string()))
    })
}

/// A dashboard session: its cookie header and CSRF token.
pub struct WebSession {
    /// `fp_session=...`.
    pub cookie: String,
    /// The session's CSRF token (from a page's forms).
    pub csrf: String,
    /// The raw Set-Cookie header of the session cookie.
    pub set_cookie: String,
    /// A client that does not follow redirects.
    pub http: reqwest::Client,
    /// Base URL.
    pub address: String,
}

/// A client that does not follow redirects (to see the dashboard's 303s).
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Fetches the login page (a fresh CSRF cookie, echoed in its form) and posts the login form with it.
pub async fn post_login(http: &reqwest::Client, address: &str, user: &str, password: &str) -> reqwest::Response {
    let page = http.get(format!("{address}/login")).send().await.unwrap();
    let (login_csrf, _) = set_cookie(&page, "fp_login_csrf").expect("login page sets its CSRF cookie");
    let html = page.text().await.unwrap();
    assert_eq!(hidden_value(&html, "csrf").as_deref(), Some(login_csrf.as_str()));
    http.post(format!("{address}/login"))
        .header("cookie", format!("fp_login_csrf={login_csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("username", user), ("password", password), ("csrf", &login_csrf), ("next", "/")]))
        .send()
        .await
        .unwrap()
}

/// An OpenAPI path template with concrete values for its parameters (the resource may not exist; the route
/// does).
pub fn concrete_path(template: &str) -> String {
    template
        .replace("{id}", "00000000-0000-0000-0000-000000000000")
        .replace("{node}", "node-x")
        .replace("{node_id}", "node-x")
        .replace("{username}", "nobody")
        .replace("{gpu}", "0")
        .replace("{namespace}", "ml")
        .replace("{name}", "llama")
}

impl WebSession {
    /// Logs in through the login form; panics unless it works.
    pub async fn login(address: &str, user: &str, password: &str) -> WebSession {
        let http = no_redirects();
        let r = post_login(&http, address, user, password).await;
        assert_eq!(r.status(), 303, "login of {user}: {}", r.text().await.unwrap());
        let (session, raw) = set_cookie(&r, "fp_session").expect("session cookie");
        let cookie = format!("fp_session={session}");
        let html = http
            .get(format!("{address}/policies"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = hidden_value(&html, "csrf").expect("pages carry the CSRF token");
        WebSession { cookie, csrf, set_cookie: raw, http, address: address.to_string() }
    }

    /// GET a page with the session.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.address)).header("cookie", &self.cookie).send().await.unwrap()
    }

    /// POST a form with the session.
    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.address))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(pairs))
            .send()
            .await
            .unwrap()
    }
}

/// Adds a dashboard user directly in the database.
pub async fn add_user(pool: &PgPool, name: &str, password: &str, role: fleetpilot::db::users::Role) {
    let p = password.to_string();
    let hash = tokio::task::spawn_blocking(move || fleetpilot::db::users::hash_password(&p).unwrap()).await.unwrap();
    fleetpilot::db::users::upsert(pool, name, &hash, role).await.unwrap();
}
