//! Commands to agents: the agents' long poll and acknowledgements, and the operators' view and probe trigger.

use std::time::Duration;

use actix_web::{HttpResponse, get, post, web};
use gpu_agent::protocol::{CommandAck, CommandAction, CommandPoll};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::{AgentAuth, ApiAuth};
use crate::db;
use crate::delivery::Wake;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

/// Longest long poll a client may ask for, seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// `?agent_id=...&wait_s=...`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollQuery {
    agent_id: String,
    wait_s: Option<u64>,
}

fn check_node(auth: &AgentAuth, agent_id: &str) -> Result<(), ApiError> {
    auth.check_node("agent_id", agent_id)
}

/// `GET /api/v1/commands`: answers with the agent's due commands as soon as there are any, or with none
/// after `wait_s` (default 25, at most 60) seconds.
#[get("/api/v1/commands")]
#[tracing::instrument(name = "command_poll", skip_all)]
pub async fn poll(
    auth: AgentAuth,
    state: web::Data<AppState>,
    q: web::Query<PollQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    if q.agent_id.is_empty() || q.agent_id.len() > 128 {
        return Err(ApiError::field("agent_id", "must be 1..=128 characters"));
    }
    check_node(&auth, &q.agent_id)?;
    let wait_s = q.wait_s.unwrap_or(25);
    if wait_s > MAX_WAIT_SECS {
        return Err(ApiError::field("wait_s", format!("must be at most {MAX_WAIT_SECS}")));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s);
    let mut rx = state.commands.subscribe();
    loop {
        let mut due = db::commands::due_for(&state.pool, &[q.agent_id.as_str()]).await?;
        if let Some(commands) = due.remove(&q.agent_id) {
            state.metrics.commands_delivered.with_label_values(&["poll"]).inc_by(commands.len() as u64);
            return Ok(HttpResponse::Ok().json(CommandPoll { commands }));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match state.commands.wait(&mut rx, &q.agent_id, left).await {
            Wake::Look => continue,
            Wake::TimedOut | Wake::Stopping => break,
        }
    }
    Ok(HttpResponse::Ok().json(CommandPoll { commands: Vec::new() }))
}

/// `POST /api/v1/commands/ack`: receipts and results from an agent.
#[post("/api/v1/commands/ack")]
#[tracing::instrument(name = "command_ack", skip_all)]
pub async fn ack(auth: AgentAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let a: CommandAck = parse_json(&body)?;
    a.validate().map_err(|e| ApiError::field(e.field, e.reason))?;
    check_node(&auth, &a.agent_id)?;
    let mut conn = state.pool.acquire().await?;
    let (received, completed) = db::commands::acknowledge(&mut conn, &a.agent_id, &a.received, &a.results).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "received": received, "completed": completed })))
}

/// `GET /api/v1/commands/{id}`: one command's life (queued, delivered, received, completed, result).
#[get("/api/v1/commands/{id}")]
pub async fn get_one(_a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::field("id", "must be a UUID"))?;
    match db::commands::get(&state.pool, id).await? {
        Some(c) => Ok(HttpResponse::Ok().json(c)),
        None => Err(ApiError::not_found(format!("no command {id}"))),
    }
}

/// `GET /api/v1/nodes/{node}/commands`: a node's newest commands.
#[get("/api/v1/nodes/{node}/commands")]
pub async fn of_node(
    _a: ApiAuth,
    state: web::Data<AppState>,
    node: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(db::commands::recent_for_node(&state.pool, &node, 100).await?))
}

/// `POST /api/v1/nodes/{node}/probe`: runs the GPU health probe (memory bandwidth) on the node now; 202 with
/// the command id. Results appear under `GET /api/v1/nodes/{node}/probes`.
#[post("/api/v1/nodes/{node}/probe")]
pub async fn probe(_a: ApiAuth, state: web::Data<AppState>, node: web::Path<String>) -> Result<HttpResponse, ApiError> {
    if !db::commands::node_exists(&state.pool, &node).await? {
        return Err(ApiError::not_found(format!("no node {:?} has reported", node.as_str())));
    }
    let id = db::commands::enqueue(&state.pool, &node, &CommandAction::Probe {}, None).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "command_id": id })))
}

/// `GET /api/v1/nodes/{node}/probes`: the latest probe result of each of the node's GPUs.
#[get("/api/v1/nodes/{node}/probes")]
pub async fn probes(
    _a: ApiAuth,
    state: web::Data<AppState>,
    node: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(db::commands::latest_probes(&state.pool, &node).await?))
}
