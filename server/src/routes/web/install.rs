//! The agent install: the install page (a fresh enrollment token and its one-line command, enrolled nodes),
//! `/install.sh` (with this server's URL baked in) and the agent binary.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::{Duration, Utc};
use rand::Rng as _;

use super::session::WebUser;
use super::{Chrome, WebError, ago, render};
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
    let mut chrome = user.chrome(state, "Install an agent", "install");
    chrome.refresh_secs = 0;
    render(&InstallTemplate { chrome, command, token_expires, fresh, enrolled }, StatusCode::OK)
}

/// `GET /install`: how to install an agent, and the enrolled nodes.
#[get("/install")]
pub async fn page(state: web::Data<AppState>, user: WebUser, req: HttpRequest) -> Result<HttpResponse, WebError> {
    install_page(&state, &user, &req, None).await
}

/// `POST /install/token`: a fresh enrollment token (1 hour, 50 nodes), shown once with its command.
#[post("/install/token")]
pub async fn create_token(
    state: web::Data<AppState>,
    user: WebUser,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    user.may_act(form.get("csrf").map(String::as_str))?;
    let deployments = crate::routes::api::enroll::parse_deployment_patterns(
        form.get("deployments").map(String::as_str).unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()),
    )
    .map_err(|message| WebError::BadRequest { field: "deployments".into(), message })?;
    let bytes: [u8; 32] = rand::rng().random();
    let token = format!("fpe_{}", hex::encode(bytes));
    let expires = Utc::now() + Duration::hours(1);
    db::enroll::create_token(&state.pool, &token, expires, 50, &format!("dashboard: {}", user.name), &deployments)
        .await?;
    tracing::info!(user = %user.name, "enrollment token created from the dashboard");
    install_page(&state, &user, &req, Some((token, expires.format("%Y-%m-%d %H:%M UTC").to_string()))).await
}

/// `POST /install/nodes/{node}/re-enroll`: an operator allows the node's next enrollment (one time, one
/// hour) to replace its credential; recorded in the enrollment events.
#[post("/install/nodes/{node}/re-enroll")]
pub async fn reenroll(
    state: web::Data<AppState>,
    user: WebUser,
    req: HttpRequest,
    node: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> Result<HttpResponse, WebError> {
    user.may_act(form.get("csrf").map(String::as_str))?;
    let expires = Utc::now() + Duration::hours(1);
    if !db::enroll::grant_reenroll(&state.pool, &node, &format!("dashboard: {}", user.name), expires).await? {
        return Err(WebError::NotFound(format!("node {node:?} is not enrolled")));
    }
    tracing::info!(user = %user.name, node = %node, "re-enrollment granted from the dashboard");
    install_page(&state, &user, &req, None).await
}

const SCRIPT: &str = include_str!("../../../../scripts/install-agent.sh");

/// `GET /install.sh`.
#[get("/install.sh")]
pub async fn install_sh(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let url = public_url(&state, &req);
    HttpResponse::Ok()
        .content_type("text/x-shellscript; charset=utf-8")
        .body(SCRIPT.replace("__FLEETPILOT_SERVER__", &url))
}

/// `GET /download/fleetpilot-agent`: the configured agent binary, else the one next to this executable.
#[get("/download/fleetpilot-agent")]
pub async fn agent_binary(state: web::Data<AppState>) -> HttpResponse {
    let path = state
        .settings
        .agent_binary
        .clone()
        .or_else(|| std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("fleetpilot-agent"))));
    let Some(path) = path else {
        return HttpResponse::NotFound().json(serde_json::json!({"error": "no agent binary configured"}));
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => HttpResponse::Ok().content_type("application/octet-stream").body(bytes),
        Err(e) => HttpResponse::NotFound().json(serde_json::json!({
            "error": format!("agent binary {} not available: {e}; build it with `cargo build --release --bins` or set agent_binary", path.display())
        })),
    }
}
