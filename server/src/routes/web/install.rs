//! The agent install: `/install.sh` (with this server's URL baked in) and the agent binary.

use actix_web::{HttpRequest, HttpResponse, get, web};

use crate::routes::api::enroll::public_url;
use crate::state::AppState;

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
