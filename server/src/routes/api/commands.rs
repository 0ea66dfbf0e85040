//! Commands to agents: the agents' long poll and acknowledgements, and the operators' view and probe trigger.

use std::time::Duration;

use actix_web::{HttpResponse, get, post, web};
use gpu_agent::protocol::{CommandAck, CommandAction, CommandPoll};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::responses::{AgentForbidden, BadBody, BadPath, NotFound, TooLarge, Unauthorized};
use crate::auth::{AgentAuth, ApiAuth};
use crate::db;
use crate::delivery::Wake;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

/// Longest long poll a client may ask for, seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// `?agent_id=...&wait_s=...`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PollQuery {
    /// The agent (its node id).
    #[param(min_length = 1, max_length = 128)]
    agent_id: String,
    /// Longest wait, seconds (default 25).
    #[param(maximum = 60)]
    wait_s: Option<u64>,
}

/// What an acknowledgement recorded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AckCounts {
    /// Commands newly marked received.
    pub received: u64,
    /// Commands newly marked completed.
    pub completed: u64,
}

/// A queued probe.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProbeQueued {
    /// Follow it with `GET /api/v1/commands/{id}`.
    pub command_id: Uuid,
}

fn check_node(auth: &AgentAuth, agent_id: &str) -> Result<(), ApiError> {
    auth.check_node("agent_id", agent_id)
}

/// `GET /api/v1/commands`: answers with the agent's due commands as soon as there are any, or with none
/// after `wait_s` (default 25, at most 60) seconds.
#[utoipa::path(tag = "agents", operation_id = "poll_commands", security(("agent" = [])),
    params(PollQuery),
    responses((status = 200, description = "Due commands as soon as there are any, else none after wait_s", body = gpu_agent::protocol::CommandPoll), BadPath, Unauthorized, AgentForbidden))]
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
#[utoipa::path(tag = "agents", operation_id = "ack_commands", security(("agent" = [])),
    request_body(content = gpu_agent::protocol::CommandAck, content_type = "application/json"),
    responses((status = 200, description = "Receipts and results recorded", body = AckCounts), BadBody, Unauthorized, AgentForbidden, TooLarge))]
#[post("/api/v1/commands/ack")]
#[tracing::instrument(name = "command_ack", skip_all)]
pub async fn ack(auth: AgentAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let a: CommandAck = parse_json(&body)?;
    a.validate().map_err(|e| ApiError::field(e.field, e.reason))?;
    check_node(&auth, &a.agent_id)?;
    let mut conn = state.pool.acquire().await?;
    let (received, completed) = db::commands::acknowledge(&mut conn, &a.agent_id, &a.received, &a.results).await?;
    Ok(HttpResponse::Ok().json(AckCounts { received, completed }))
}

/// `GET /api/v1/commands/{id}`: one command's life (queued, delivered, received, completed, result).
#[utoipa::path(tag = "commands", operation_id = "get_command", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Command id")),
    responses((status = 200, description = "The command's life", body = crate::db::commands::CommandRecord), BadPath, Unauthorized, NotFound))]
#[get("/api/v1/commands/{id}")]
pub async fn get_one(_a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::field("id", "must be a UUID"))?;
    match db::commands::get(&state.pool, id).await? {
        Some(c) => Ok(HttpResponse::Ok().json(c)),
        None => Err(ApiError::not_found(format!("no command {id}"))),
    }
}

/// `GET /api/v1/nodes/{node}/commands`: a node's newest commands.
#[utoipa::path(tag = "commands", operation_id = "node_commands", security(("api" = [])),
    params(("node" = String, Path, description = "Node id")),
    responses((status = 200, description = "The node's newest commands (at most 100)", body = Vec<crate::db::commands::CommandRecord>), Unauthorized))]
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
#[utoipa::path(tag = "commands", operation_id = "probe_node", security(("api" = [])),
    params(("node" = String, Path, description = "Node id")),
    responses((status = 202, description = "Queued", body = ProbeQueued), Unauthorized, NotFound))]
#[post("/api/v1/nodes/{node}/probe")]
pub async fn probe(a: ApiAuth, state: web::Data<AppState>, node: web::Path<String>) -> Result<HttpResponse, ApiError> {
    if !db::commands::node_exists(&state.pool, &node).await? {
        return Err(ApiError::not_found(format!("no node {:?} has reported", node.as_str())));
    }
    let id = db::commands::enqueue(&state.pool, &node, &CommandAction::Probe {}, None).await?;
    let after = serde_json::json!({"command_id": id});
    crate::db::audit::record(&state.pool, &a.actor, "probe", "node", &node, None, Some(after)).await;
    Ok(HttpResponse::Accepted().json(ProbeQueued { command_id: id }))
}

/// `GET /api/v1/nodes/{node}/probes`: the latest probe result of each of the node's GPUs.
#[utoipa::path(tag = "commands", operation_id = "node_probes", security(("api" = [])),
    params(("node" = String, Path, description = "Node id")),
    responses((status = 200, description = "The latest probe result of each GPU", body = Vec<crate::db::commands::ProbeRecord>), Unauthorized))]
#[get("/api/v1/nodes/{node}/probes")]
pub async fn probes(
    _a: ApiAuth,
    state: web::Data<AppState>,
    node: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(db::commands::latest_probes(&state.pool, &node).await?))
}
