//! `POST /api/v1/ingest`: an agent's batch in, an acknowledgement with its pending commands out.

use actix_web::{HttpResponse, post, web};
use gpu_agent::protocol::{Batch, BatchAck};

use super::responses::{AgentForbidden, BadBody, NotStored, QueueFull, TooLarge, Unauthorized};
use crate::auth::AgentAuth;
use crate::error::{ApiError, parse_json};
use crate::ingest::{StoreFailure, SubmitError};
use crate::state::AppState;

/// Stores a batch once (idempotent on `(agent_id, seq)`) and answers only after it is committed.
#[utoipa::path(tag = "agents", operation_id = "ingest", security(("agent" = [])),
    request_body(content = gpu_agent::protocol::Batch, content_type = "application/json"),
    responses((status = 200, description = "Stored (or already stored) and committed; carries the agent's due commands", body = gpu_agent::protocol::BatchAck), BadBody, Unauthorized, AgentForbidden, TooLarge, QueueFull, NotStored))]
#[post("/api/v1/ingest")]
#[tracing::instrument(name = "ingest", skip_all)]
pub async fn ingest(auth: AgentAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let batch: Batch =
        parse_json(&body).inspect_err(|_| state.metrics.ingest_batches.with_label_values(&["rejected"]).inc())?;
    Ok(HttpResponse::Ok().json(accept(&auth, &state, batch).await?))
}

/// Prometheus remote-write 1.0 (`Content-Encoding: snappy`, `application/x-protobuf`): DCGM exporter and
/// serving-engine series become agent batches (see [`crate::ingest::remote_write`]), checked and stored exactly
/// as the agent's. 204 when stored; 400 for a request that can never be stored (Prometheus drops it); 429/503
/// to be retried.
#[utoipa::path(tag = "agents", operation_id = "remote_write", security(("agent" = [])),
    request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "snappy (block format) compressed prometheus.WriteRequest; send with Content-Encoding: snappy and X-Prometheus-Remote-Write-Version: 0.1.0"),
    responses((status = 204, description = "Stored (or already stored: a retried request is idempotent)"), BadBody, Unauthorized, AgentForbidden, TooLarge, QueueFull, NotStored))]
#[post("/api/v1/write")]
#[tracing::instrument(name = "remote_write", skip_all)]
pub async fn remote_write(
    auth: AgentAuth,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    use sha2::Digest as _;
    let rejected = || state.metrics.ingest_batches.with_label_values(&["rejected"]).inc();
    let digest = sha2::Sha256::digest(&body);
    let converted = state.remote_write.convert_body(&body, &digest).map_err(|e| {
        rejected();
        ApiError::field("body", e.to_string())
    })?;
    // Every batch (one per node) is checked before any is stored, so a request is refused or stored whole
    // (a retry after a 503 stores the rest: the stored ones are duplicates by their seq).
    let results = futures_util::future::join_all(converted.batches.into_iter().map(|b| accept(&auth, &state, b))).await;
    for r in results {
        r?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The checks and the store every batch goes through, the agent's and remote-write's alike: the protocol's
/// validation, the accepted time window, the credential's scope; then the group commit. The acknowledgement
/// carries the node's due commands.
pub(crate) async fn accept(auth: &AgentAuth, state: &AppState, batch: Batch) -> Result<BatchAck, ApiError> {
    let m = &state.metrics;
    let rejected = || m.ingest_batches.with_label_values(&["rejected"]).inc();
    batch.validate().map_err(|e| {
        rejected();
        ApiError::field(e.field, e.reason)
    })?;
    // The accepted time window: nothing older than raw retention (its partition is or will be dropped),
    // nothing further ahead than the configured clock skew (it would create partitions that are never
    // dropped and pin the node's "latest" rows).
    let now_ms = chrono::Utc::now().timestamp_millis();
    let limits = &state.settings.ingest;
    let min_ms = now_ms - i64::from(limits.retention_days) * 86_400_000;
    let max_ms = now_ms + i64::from(limits.max_future_secs) * 1000;
    batch.validate_window(min_ms, max_ms).map_err(|e| {
        rejected();
        ApiError::field(e.field, e.reason)
    })?;
    // A node credential writes its own node's rows and the serving rows of its assigned deployments only.
    let scoped = || -> Result<(), ApiError> {
        auth.check_node("agent_id", &batch.agent_id)?;
        if let Some(d) = &batch.node.deployment {
            auth.check_deployment("node.deployment", d)?;
        }
        for (i, s) in batch.serving.iter().enumerate() {
            auth.check_deployment(&format!("serving[{i}].deployment"), &s.deployment)?;
        }
        Ok(())
    };
    scoped().inspect_err(|_| rejected())?;
    if !batch.serving.is_empty() {
        let series = batch.serving.iter().map(|s| (s.deployment.as_str(), s.replica.as_str()));
        let max = limits.max_serving_series_per_node;
        if let Err((field, reason)) = state.series_budget.admit(&state.pool, &batch.agent_id, series, max).await? {
            rejected();
            return Err(ApiError::field(field, reason));
        }
    }
    let seq = batch.seq;
    let done = match state.ingest.submit(batch) {
        Ok(rx) => rx,
        Err(SubmitError::Busy) => {
            m.ingest_batches.with_label_values(&["busy"]).inc();
            return Err(ApiError::busy(1));
        }
        Err(e @ SubmitError::TooLarge(..)) => {
            rejected();
            return Err(ApiError::bad_request(e.to_string()));
        }
        Err(SubmitError::Closed) => return Err(ApiError::unavailable("shutting down")),
    };
    match done.await {
        Ok(Ok(stored)) => {
            if !stored.commands.is_empty() {
                m.commands_delivered.with_label_values(&["upload"]).inc_by(stored.commands.len() as u64);
            }
            Ok(BatchAck { seq, duplicate: stored.duplicate, commands: stored.commands })
        }
        // Refused by the database even alone: retrying cannot help, so no retry-forever 503.
        Ok(Err(StoreFailure::Rejected { field, reason })) => Err(ApiError::field(field, reason)),
        // Not committed: the agent keeps the batch and retries.
        Ok(Err(StoreFailure::Unavailable(_))) | Err(_) => {
            Err(ApiError::unavailable("the batch could not be stored; retry"))
        }
    }
}
