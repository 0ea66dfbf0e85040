//! The dashboard's access rules and form handling over plain HTTP (the browser test drives the pages).

use fleetpilot::config::Secret;
use fleetpilot::db::users::Role;

use crate::helpers::{WebSession, add_user, set_cookie, spawn_app};

const ADMIN_PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_without_a_login_redirect_to_it_and_a_wrong_bearer_token_is_401() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/", "/decisions?page=2", "/policies", "/install", "/nodes/x"] {
        let r = http.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert!(loc.starts_with("/login?next=/"), "{path}: {loc}");
    }
    let r = http.get(format!("{}/", app.address)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(format!("{}/", app.address)).bearer_auth(&app.api_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_operator_logs_in_with_an_httponly_samesite_strict_cookie_and_a_wrong_password_is_refused() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.dashboard.admin_user = "ops".into();
        s.dashboard.admin_password = Secret::new(ADMIN_PASSWORD);
    })
    .await;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM dashboard_users WHERE username = 'ops'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let s = WebSession::login(&app.address, "ops", ADMIN_PASSWORD).await;
    let c = s.set_cookie.to_lowercase();
    assert!(c.contains("httponly") && c.contains("samesite=strict") && !c.contains("secure"), "{c}");
    let page = s.get("/").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Fleet utilisation"));

    // Wrong password: 401 with the login form again, and no session.
    let login = s.http.get(format!("{}/login", app.address)).send().await.unwrap();
    let (csrf, _) = set_cookie(&login, "fp_login_csrf").unwrap();
    let r = s
        .http
        .post(format!("{}/login", app.address))
        .header("cookie", format!("fp_login_csrf={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(crate::helpers::form_body(&[("username", "ops"), ("password", "nope"), ("csrf", &csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(set_cookie(&r, "fp_session").is_none());
    // A login form without its CSRF token is refused.
    let r = s
        .http
        .post(format!("{}/login", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(crate::helpers::form_body(&[("username", "ops"), ("password", ADMIN_PASSWORD)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Logging out ends the session.
    let r = s.post("/logout", &[("csrf", &s.csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(s.get("/").await.status(), 303);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_when_the_public_url_is_https() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.public_url = Some("https://fleet.example".into());
        s.dashboard.admin_password = Secret::new(ADMIN_PASSWORD);
    })
    .await;
    let s = WebSession::login(&app.address, "admin", ADMIN_PASSWORD).await;
    assert!(s.set_cookie.to_lowercase().contains("secure"), "{}", s.set_cookie);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_every_page_but_every_post_is_forbidden() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    add_user(&app.pool, "watcher", "viewer-password", Role::Viewer).await;
    let s = WebSession::login(&app.address, "watcher", "viewer-password").await;
    for path in ["/", "/deployments", "/decisions", "/alerts", "/policies", "/policies/new", "/install"] {
        assert_eq!(s.get(path).await.status(), 200, "{path}");
    }
    let policy = [
        ("csrf", s.csrf.as_str()),
        ("name", "llama"),
        ("target.kind", "deployment"),
        ("target.namespace", "ml"),
        ("target.name", "llama"),
        ("min_replicas", "1"),
        ("max_replicas", "4"),
        ("metric", "gpu_utilization"),
        ("target_value", "60"),
        ("predictive.mode", "on"),
    ];
    let r = s.post("/policies", &policy).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("viewer"));
    assert_eq!(s.post("/install/token", &[("csrf", &s.csrf)]).await.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM policies").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM enrollment_tokens").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_forms_need_the_session_csrf_token_and_validate_like_the_api() {
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.dashboard.admin_password = Secret::new(ADMIN_PASSWORD);
    })
    .await;
    let s = WebSession::login(&app.address, "admin", ADMIN_PASSWORD).await;
    let mut form = vec![
        ("name", "llama"),
        ("target.kind", "deployment"),
        ("target.namespace", "ml"),
        ("target.name", "llama"),
        ("min_replicas", "1"),
        ("max_replicas", "4"),
        ("metric", "gpu_utilization"),
        ("target_value", "150"),
        ("predictive.mode", "on"),
        ("predictive.quantile", "0.9"),
        ("dry_run", "on"),
    ];
    // No token, then a wrong one: 403, nothing stored.
    assert_eq!(s.post("/policies", &form).await.status(), 403);
    let mut wrong = form.clone();
    wrong.push(("csrf", "0000"));
    assert_eq!(s.post("/policies", &wrong).await.status(), 403);
    form.push(("csrf", &s.csrf));
    // 150 % is not a utilisation: 400, the form again with the error next to target_value.
    let r = s.post("/policies", &form).await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"id="err-target_value""#), "{html}");
    assert!(html.contains(r#"value="150""#), "the form keeps what was typed");
    // A number that is not one names its field too.
    let mut bad = form.clone();
    bad.retain(|(k, _)| *k != "min_replicas");
    bad.push(("min_replicas", "two"));
    let html = s.post("/policies", &bad).await.text().await.unwrap();
    assert!(html.contains(r#"id="err-min_replicas""#), "{html}");
    assert_eq!(app.count("SELECT count(*) FROM policies").await, 0);
    // Fixed: created, and the edit page shows it.
    form.retain(|(k, _)| *k != "target_value");
    form.push(("target_value", "60"));
    let r = s.post("/policies", &form).await;
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let page = s.get(&loc).await.text().await.unwrap();
    assert!(page.contains(r#"value="llama""#));
    let (spec,): (serde_json::Value,) = sqlx::query_as("SELECT spec FROM policies").fetch_one(&app.pool).await.unwrap();
    assert_eq!(spec["target_value"], 60.0);
    assert_eq!(spec["dry_run"], true);
    // The preview runs (no data yet: no changes).
    assert_eq!(s.get(&format!("{loc}/preview")).await.status(), 200);
    // An enrollment token from the install page.
    let html = s.post("/install/token", &[("csrf", &s.csrf)]).await.text().await.unwrap();
    assert!(html.contains("install.sh | sudo sh -s -- --token fpe_"), "{html}");
    assert_eq!(app.count("SELECT count(*) FROM enrollment_tokens").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_on_pages_are_a_400_naming_the_field() {
    let app = spawn_app(|s| s.control.enabled = false).await;
    let http = reqwest::Client::new();
    for (path, field) in [
        ("/?page=abc", "page"),
        ("/decisions?outcome=bogus", "outcome"),
        ("/alerts?state=maybe", "state"),
        ("/deployments/ml/llama?range=2y", "range"),
        ("/nodes/node-a/gpus/abc", "gpu"),
        ("/policies/not-a-uuid", "id"),
    ] {
        let r = http.get(format!("{}{path}", app.address)).bearer_auth(&app.api_token).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let html = r.text().await.unwrap();
        assert!(html.contains(&format!(r#"<strong id="error-field">{field}</strong>"#)), "{path}: {html}");
    }
    let r = http.get(format!("{}/nodes/nope", app.address)).bearer_auth(&app.api_token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}
