//! Shared state of the HTTP handlers and background tasks.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::config::Settings;
use crate::db::Partitions;
use crate::telemetry::Metrics;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Database pool.
    pub pool: PgPool,
    /// Configuration.
    pub settings: Arc<Settings>,
    /// Daily partitions known to exist.
    pub partitions: Arc<Partitions>,
    /// Bounds concurrent ingest; an empty semaphore means 429.
    pub ingest_permits: Arc<Semaphore>,
    /// Self-metrics.
    pub metrics: Metrics,
}
