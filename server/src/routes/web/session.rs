//! Dashboard access: login with a session cookie (or the API token as a Bearer header), roles, CSRF.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, get, post, web};
use askama::Template;
use chrono::Utc;
use futures_util::future::LocalBoxFuture;
use rand::Rng as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::{Chrome, Params, State, WebError, render};
use crate::db::users::{self, Role};
use crate::state::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "fp_session";
/// Name of the login form's double-submit CSRF cookie (there is no session yet to hold a token).
const LOGIN_CSRF_COOKIE: &str = "fp_login_csrf";

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

fn secure_cookies(state: &AppState) -> bool {
    state.settings.tls.enabled() || state.settings.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

fn cookie<'a>(state: &AppState, name: &'a str, value: String, max_age_secs: i64) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure_cookies(state))
        .max_age(CookieDuration::seconds(max_age_secs))
        .finish()
}

/// Whoever is looking at a page: a logged-in user, or a client with the API token (an operator, which
/// carries no ambient credential and so needs no CSRF token).
#[derive(Debug, Clone)]
pub struct WebUser {
    /// User name (`api-token` for Bearer clients).
    pub name: String,
    /// Role.
    pub role: Role,
    /// The session's CSRF token; `None` for Bearer clients.
    pub csrf: Option<String>,
}

impl WebUser {
    /// Who this is in the audit log: `user:<name>`, `token:<name>` or `api-token`.
    pub fn actor(&self) -> String {
        if self.csrf.is_some() { format!("user:{}", self.name) } else { self.name.clone() }
    }

    /// 403 unless an operator.
    pub fn require_operator(&self) -> Result<(), WebError> {
        match self.role {
            Role::Operator => Ok(()),
            Role::Viewer => {
                Err(WebError::Forbidden(format!("{} is a viewer: only operators can change anything", self.name)))
            }
        }
    }

    /// 403 unless `given` is this session's CSRF token (Bearer clients need none).
    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), WebError> {
        match &self.csrf {
            None => Ok(()),
            Some(expected) => match given {
                Some(g) if bool::from(g.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
                _ => Err(WebError::Forbidden(
                    "missing or wrong CSRF token (field csrf): reload the page and try again".into(),
                )),
            },
        }
    }

    /// Operator and CSRF checks of every form POST.
    pub fn may_act(&self, csrf: Option<&str>) -> Result<(), WebError> {
        self.check_csrf(csrf)?;
        self.require_operator()
    }

    /// The page chrome for this user.
    pub fn chrome(&self, state: &AppState, title: impl Into<String>, nav: &'static str) -> Chrome {
        Chrome {
            title: title.into(),
            nav,
            user: self.name.clone(),
            is_operator: self.role == Role::Operator,
            role: self.role.as_str(),
            csrf: self.csrf.clone().unwrap_or_default(),
            generated_at: Utc::now().format("%H:%M:%S UTC").to_string(),
            refresh_secs: state.settings.dashboard.refresh_secs,
            fragment: false,
        }
    }

    /// The chrome of a page that does not refresh itself (a form: a refresh would lose what is typed).
    pub fn still_chrome(&self, state: &AppState, title: impl Into<String>, nav: &'static str) -> Chrome {
        Chrome { refresh_secs: 0, ..self.chrome(state, title, nav) }
    }

    /// The chrome of a list page: only its live part when polled (`?fragment=1`).
    pub fn list_chrome(&self, state: &AppState, title: impl Into<String>, nav: &'static str, p: &Params) -> Chrome {
        Chrome { fragment: p.fragment(), ..self.chrome(state, title, nav) }
    }
}

impl FromRequest for WebUser {
    type Error = WebError;
    type Future = LocalBoxFuture<'static, Result<Self, WebError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let session = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string());
        let next = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        Box::pin(async move {
            let state = state.ok_or_else(|| WebError::Internal("app state missing".into()))?;
            if let Some(token) = bearer {
                let expected = state.settings.api_token.expose().as_bytes();
                if !expected.is_empty() && bool::from(token.as_bytes().ct_eq(expected)) {
                    return Ok(WebUser { name: "api-token".into(), role: Role::Operator, csrf: None });
                }
                // A named API token: `read` looks like a viewer, `operate` and `admin` like an operator.
                if token.starts_with("fpa_")
                    && let Some((name, scope)) =
                        state.api_tokens.lookup(&state.pool, &token).await.map_err(WebError::from)?
                {
                    let role = if scope >= crate::auth::Scope::Operate { Role::Operator } else { Role::Viewer };
                    return Ok(WebUser { name: format!("token:{name}"), role, csrf: None });
                }
                return Err(WebError::Unauthorized);
            }
            let Some(id) = session else { return Err(WebError::Login(next)) };
            match users::session(&state.pool, &id).await.map_err(WebError::from)? {
                Some(s) => Ok(WebUser { name: s.username, role: s.role, csrf: Some(s.csrf_token) }),
                None => Err(WebError::Login(next)),
            }
        })
    }
}

/// `templates/login.html`.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginTemplate {
    chrome: Chrome,
    next: String,
    username: String,
    error: Option<String>,
    login_csrf: String,
}

fn login_chrome(state: &AppState) -> Chrome {
    Chrome {
        title: "Sign in".into(),
        nav: "login",
        user: String::new(),
        is_operator: false,
        role: "",
        csrf: String::new(),
        generated_at: Utc::now().format("%H:%M:%S UTC").to_string(),
        refresh_secs: state.settings.dashboard.refresh_secs,
        fragment: false,
    }
}

/// Only local paths may be redirected to after login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".into(),
    }
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// `GET /login`.
#[get("/login")]
pub async fn login_page(state: State, q: web::Query<NextQuery>) -> Result<HttpResponse, WebError> {
    let token = random_hex(16);
    let t = LoginTemplate {
        chrome: login_chrome(&state),
        next: safe_next(q.next.as_deref()),
        username: String::new(),
        error: None,
        login_csrf: token.clone(),
    };
    let mut r = render(&t, actix_web::http::StatusCode::OK)?;
    r.add_cookie(&cookie(&state, LOGIN_CSRF_COOKIE, token, 3600)).map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(r)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    csrf: Option<String>,
}

/// `POST /login`: checks the password (argon2), starts a session and sets its cookie.
#[post("/login")]
pub async fn login(state: State, req: HttpRequest, form: web::Form<LoginForm>) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    let expected = req.cookie(LOGIN_CSRF_COOKIE).map(|c| c.value().to_string());
    let csrf_ok = matches!((&expected, &form.csrf), (Some(e), Some(g)) if bool::from(e.as_bytes().ct_eq(g.as_bytes())));
    if !csrf_ok {
        return Err(WebError::Forbidden("missing or wrong CSRF token (field csrf): reload the login page".into()));
    }
    let next = safe_next(form.next.as_deref());
    // Brute force: locked keys are refused before the (expensive) password hash runs.
    let ip_key = format!("ip:{}", req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default());
    let user_key = format!("user:{}", form.username);
    if let Some(secs) = state.lockout.locked(&[&ip_key, &user_key]) {
        tracing::warn!(user = %form.username, ip = %ip_key, secs, "login locked out");
        return Ok(HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", secs.to_string()))
            .content_type("text/plain; charset=utf-8")
            .body(format!("too many failed logins; try again in {secs} s\n")));
    }
    let stored = users::credentials(&state.pool, &form.username).await?;
    let password = form.password.clone();
    let verified = tokio::task::spawn_blocking(move || match stored {
        Some((hash, role)) => users::verify_password(&password, &hash).then_some(role),
        None => {
            // Spend the same time on unknown users so timing does not reveal which names exist.
            let _ = users::hash_password(&password);
            None
        }
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?;
    let Some(_role) = verified else {
        state.lockout.failure(&[&ip_key, &user_key]);
        tracing::info!(user = %form.username, "dashboard login refused");
        let token = expected.unwrap_or_default();
        let t = LoginTemplate {
            chrome: login_chrome(&state),
            next,
            username: form.username,
            error: Some("unknown user or wrong password".into()),
            login_csrf: token,
        };
        return render(&t, actix_web::http::StatusCode::UNAUTHORIZED);
    };
    state.lockout.success(&[&user_key]);
    let id = random_hex(32);
    let ttl = i64::from(state.settings.dashboard.session_ttl_secs);
    let expires = Utc::now() + chrono::Duration::seconds(ttl);
    users::create_session(&state.pool, &id, &form.username, &random_hex(24), expires).await?;
    tracing::info!(user = %form.username, "dashboard login");
    let mut r = HttpResponse::SeeOther().insert_header(("Location", next)).finish();
    r.add_cookie(&cookie(&state, SESSION_COOKIE, id, ttl)).map_err(|e| WebError::Internal(e.to_string()))?;
    r.add_cookie(&cookie(&state, LOGIN_CSRF_COOKIE, String::new(), 0))
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(r)
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// `POST /logout`.
#[post("/logout")]
pub async fn logout(
    state: State,
    user: WebUser,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    user.check_csrf(form.csrf.as_deref())?;
    if let Some(c) = req.cookie(SESSION_COOKIE) {
        users::delete_session(&state.pool, c.value()).await?;
    }
    let mut r = HttpResponse::SeeOther().insert_header(("Location", "/login")).finish();
    r.add_cookie(&cookie(&state, SESSION_COOKIE, String::new(), 0)).map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(r)
}

/// Why the bootstrap operator could not be set.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The users table could not be read or written.
    #[error("users table: {0}")]
    Db(#[from] sqlx::Error),
    /// The blocking task that hashes or verifies the password did not finish.
    #[error("password task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The password could not be hashed.
    #[error("hashing the admin password: {0}")]
    Hash(argon2::password_hash::Error),
}

/// Creates or resets the bootstrap operator from `dashboard.admin_user`/`admin_password` (if a password is
/// set and the stored one differs).
pub async fn bootstrap_admin(
    pool: &sqlx::PgPool,
    settings: &crate::config::DashboardSettings,
) -> Result<(), BootstrapError> {
    if settings.admin_password.is_empty() {
        return Ok(());
    }
    let user = settings.admin_user.clone();
    let password = settings.admin_password.expose().to_string();
    let stored = users::credentials(pool, &user).await?;
    let up_to_date = match &stored {
        Some((hash, Role::Operator)) => {
            let (p, h) = (password.clone(), hash.clone());
            tokio::task::spawn_blocking(move || users::verify_password(&p, &h)).await?
        }
        _ => false,
    };
    if !up_to_date {
        let hash = tokio::task::spawn_blocking(move || users::hash_password(&password))
            .await?
            .map_err(BootstrapError::Hash)?;
        users::upsert(pool, &user, &hash, Role::Operator).await?;
        tracing::info!(user = %user, "dashboard bootstrap operator set from configuration");
    }
    Ok(())
}
