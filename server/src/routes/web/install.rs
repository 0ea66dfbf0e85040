//! The agent install: the install page (a fresh enrollment token and its one-line command, enrolled nodes),
//! `/install.sh` (with this server's URL baked in) and the agent binary.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::{Duration, Utc};
use rand::Rng as _;

use super::session::WebUser;
use super::{Chrome, State, Submitted, WebError, ago, render};
use crate::db;
use crate::routes::api::enroll::public_url;
use crate::state::AppState;

/// An enrolled node.
pub struct EnrolledView {
    node: String,
    link: String,
    when: String,
    deployments: String,
    revoked: bool,
    reenroll_pending: bool,
    reenroll_action: String,
}

/// `templates/install.html`.
#[derive(Template)]
#[template(path = "install.html")]
pub struct InstallTemplate {
    chrome: Chrome,
    command: String,
    token_expires: String,
    fresh: bool,
    enrolled: Vec<EnrolledView>,
}

async fn install_page(
    state: &AppState,
    user: &WebUser,
    req: &HttpRequest,
    token: Option<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let url = public_url(state, req);
    let now = Utc::now();
    let enrolled = db::enroll::enrolled(&state.pool)
        .await?
        .into_iter()
        .map(|e| EnrolledView {
            link: format!("/nodes/{}", super::url_encode(&e.node_id)),
            reenroll_action: format!("/install/nodes/{}/re-enroll", super::url_encode(&e.node_id)),
            node: e.node_id,
            when: ago(now, e.enrolled_at),
            deployments: if e.deployments.is_empty() { "none".into() } else { e.deployments.join(", ") },
            revoked: e.revoked_at.is_some(),
            reenroll_pending: e.reenroll_pending,
        })
        .collect();
    let (command, token_expires, fresh) = match token {
        Some((t, exp)) => (format!("curl -fsSL {url}/install.sh | sudo sh -s -- --token {t}"), exp, true),
        None => {
            (format!("curl -fsSL {url}/install.sh | sudo sh -s -- --token <enrollment token>"), String::new(), false)
        }
    };
    let chrome = user.still_chrome(state, "Install an agent", "install");
    render(&InstallTemplate { chrome, command, token_expires, fresh, enrolled }, StatusCode::OK)
}

/// `GET /install`: how to install an agent, and the enrolled nodes.
#[get("/install")]
pub async fn page(state: State, user: WebUser, req: HttpRequest) -> Result<HttpResponse, WebError> {
    install_page(&state, &user, &req, None).await
}

/// `POST /install/token`: a fresh enrollment token (1 hour, 50 nodes), shown once with its command.
#[post("/install/token")]
pub async fn create_token(state: State, req: HttpRequest, form: Submitted) -> Result<HttpResponse, WebError> {
    let user = &form.user;
    let deployments = crate::routes::api::enroll::parse_deployment_patterns(
        form.get("deployments").split(',').map(str::trim).filter(|s| !s.is_empty()),
    )
    .map_err(|message| WebError::BadRequest { field: "deployments".into(), message })?;
    let bytes: [u8; 32] = rand::rng().random();
    let token = format!("fpe_{}", hex::encode(bytes));
    let expires = Utc::now() + Duration::hours(1);
    db::enroll::create_token(&state.pool, &token, expires, 50, &format!("dashboard: {}", user.name), &deployments)
        .await?;
    tracing::info!(user = %user.name, "enrollment token created from the dashboard");
    let after = serde_json::json!({"expires_at": expires, "max_uses": 50, "deployments": deployments});
    db::audit::record(&state.pool, &user.actor(), "create", "enrollment_token", &token[..12], None, Some(after)).await;
    install_page(&state, user, &req, Some((token, expires.format("%Y-%m-%d %H:%M UTC").to_string()))).await
}

/// `POST /install/nodes/{node}/re-enroll`: an operator allows the node's next enrollment (one time, one
/// hour) to replace its credential; recorded in the enrollment events.
#[post("/install/nodes/{node}/re-enroll")]
pub async fn reenroll(
    state: State,
    req: HttpRequest,
    node: web::Path<String>,
    form: Submitted,
) -> Result<HttpResponse, WebError> {
    let user = &form.user;
    let expires = Utc::now() + Duration::hours(1);
    if !db::enroll::grant_reenroll(&state.pool, &node, &format!("dashboard: {}", user.name), expires).await? {
        return Err(WebError::NotFound(format!("node {node:?} is not enrolled")));
    }
    tracing::info!(user = %user.name, node = %node, "re-enrollment granted from the dashboard");
    let after = serde_json::json!({"expires_at": expires});
    db::audit::record(&state.pool, &user.actor(), "grant-re-enroll", "node", &node, None, Some(after)).await;
    install_page(&state, user, &req, None).await
}

const SCRIPT: &str = include_str!("../../../../scripts/install-agent.sh");

/// The agent binary to serve: the configured one, else the one next to this executable.
fn agent_binary_path(state: &AppState) -> Option<std::path::PathBuf> {
    state
        .settings
        .agent_binary
        .clone()
        .or_else(|| std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("fleetpilot-agent"))))
}

/// SHA-256 (hex) of the file at `path`, recomputed only when its size or modification time changes.
async fn sha256_of(path: &std::path::Path) -> Option<String> {
    use sha2::Digest as _;
    type Cache = std::sync::Mutex<Option<(std::path::PathBuf, u64, std::time::SystemTime, String)>>;
    static CACHE: Cache = std::sync::Mutex::new(None);
    let meta = tokio::fs::metadata(path).await.ok()?;
    let (len, modified) = (meta.len(), meta.modified().ok()?);
    if let Some((p, l, m, sum)) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        && p == path
        && *l == len
        && *m == modified
    {
        return Some(sum.clone());
    }
    let bytes = tokio::fs::read(path).await.ok()?;
    let sum = tokio::task::spawn_blocking(move || hex::encode(sha2::Sha256::digest(&bytes))).await.ok()?;
    *CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.to_path_buf(), len, modified, sum.clone()));
    Some(sum)
}

/// `GET /install.sh`: the installer with this server's URL and the agent binary's SHA-256 baked in.
#[get("/install.sh")]
pub async fn install_sh(state: State, req: HttpRequest) -> HttpResponse {
    let url = public_url(&state, &req);
    let sum = match agent_binary_path(&state) {
        Some(p) => sha256_of(&p).await.unwrap_or_default(),
        None => String::new(),
    };
    HttpResponse::Ok()
        .content_type("text/x-shellscript; charset=utf-8")
        .body(SCRIPT.replace("__FLEETPILOT_SERVER__", &url).replace("__FLEETPILOT_AGENT_SHA256__", &sum))
}

fn no_binary(path: Option<&std::path::Path>, e: &str) -> HttpResponse {
    let what = path.map(|p| p.display().to_string()).unwrap_or_else(|| "fleetpilot-agent".into());
    HttpResponse::NotFound().json(serde_json::json!({
        "error": format!("agent binary {what} not available: {e}; build it with `cargo build --release --bins` or set agent_binary")
    }))
}

/// `GET /download/fleetpilot-agent`: the configured agent binary, else the one next to this executable.
#[get("/download/fleetpilot-agent")]
pub async fn agent_binary(state: State) -> HttpResponse {
    let Some(path) = agent_binary_path(&state) else { return no_binary(None, "no agent binary configured") };
    match tokio::fs::read(&path).await {
        Ok(bytes) => HttpResponse::Ok().content_type("application/octet-stream").body(bytes),
        Err(e) => no_binary(Some(&path), &e.to_string()),
    }
}

/// `GET /download/fleetpilot-agent.sha256`: the binary's SHA-256 in `sha256sum` format, which the installer
/// checks the download against.
#[get("/download/fleetpilot-agent.sha256")]
pub async fn agent_binary_sha256(state: State) -> HttpResponse {
    let Some(path) = agent_binary_path(&state) else { return no_binary(None, "no agent binary configured") };
    match sha256_of(&path).await {
        Some(sum) => {
            HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(format!("{sum}  fleetpilot-agent\n"))
        }
        None => no_binary(Some(&path), "cannot be read"),
    }
}
