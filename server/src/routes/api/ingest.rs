//! `POST /api/v1/ingest`: an agent's batch in, an acknowledgement with its pending commands out.

use std::time::Instant;

use actix_web::{HttpResponse, post, web};
use gpu_agent::protocol::{Batch, BatchAck};

use crate::auth::AgentAuth;
use crate::db;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

/// Stores a batch once (idempotent on `(agent_id, seq)`), answers only after commit.
#[post("/api/v1/ingest")]
#[tracing::instrument(name = "ingest", skip_all)]
pub async fn ingest(_auth: AgentAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let m = &state.metrics;
    let Ok(_permit) = state.ingest_permits.clone().try_acquire_owned() else {
        m.ingest_batches.with_label_values(&["busy"]).inc();
        return Err(ApiError::busy(1));
    };
    let started = Instant::now();
    let batch: Batch = parse_json(&body).inspect_err(|_| m.ingest_batches.with_label_values(&["rejected"]).inc())?;
    batch.validate().map_err(|e| {
        m.ingest_batches.with_label_values(&["rejected"]).inc();
        ApiError::field(e.field, e.reason)
    })?;
    let days = batch
        .gpus
        .iter()
        .map(|g| g.ts_ms)
        .chain(batch.serving.iter().map(|s| s.ts_ms))
        .map(|ms| db::ingest::ts(ms).date_naive());
    state.partitions.ensure(&state.pool, days).await?;
    let outcome = db::ingest::store_batch(&state.pool, &batch).await?;
    let commands = db::ingest::pending_commands(&state.pool, &batch.agent_id).await?;
    if outcome.duplicate {
        m.ingest_batches.with_label_values(&["duplicate"]).inc();
    } else {
        m.ingest_batches.with_label_values(&["stored"]).inc();
        m.ingest_samples.inc_by(batch.metric_values() as u64);
    }
    m.ingest_seconds.observe(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(BatchAck { seq: batch.seq, duplicate: outcome.duplicate, commands }))
}
