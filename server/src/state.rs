//! Shared state of the HTTP handlers and background tasks.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Settings;
use crate::db::Partitions;
use crate::ingest::IngestQueue;
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
    /// The bounded ingest queue.
    pub ingest: IngestQueue,
    /// Self-metrics.
    pub metrics: Metrics,
    /// Node credentials resolved recently.
    pub credentials: Arc<crate::auth::CredentialCache>,
    /// Serving series per node, for the per-node cardinality budget.
    pub series_budget: Arc<crate::ingest::cardinality::SeriesBudget>,
    /// Named API tokens resolved recently.
    pub api_tokens: Arc<crate::auth::ApiTokenCache>,
    /// Wakes command long polls.
    pub commands: crate::delivery::CommandBus,
    /// Dashboard figures that scan history, cached.
    pub overview: Arc<crate::routes::web::dashboard::OverviewCache>,
    /// The live policies as the dashboard's pages read them, cached for a second.
    pub policies: Arc<crate::routes::web::cache::PolicyCache>,
    /// Where the minute rollups end, as the dashboard's charts read it, cached for a second.
    pub watermark: Arc<crate::routes::web::cache::WatermarkCache>,
    /// Deployment pages' data, shared for a second.
    pub deployment_data: Arc<crate::routes::web::cache::DeploymentDataCache>,
    /// Counts of the dashboard's lists, cached for two seconds.
    pub counts: Arc<crate::routes::web::cache::CountCache>,
    /// Brute-force lockouts of login and enrollment.
    pub lockout: Arc<crate::lockout::Lockout>,
    /// What the control loop acts through; the dashboard's one-click actions use the same.
    pub actuators: crate::actuators::Actuators,
    /// Prometheus remote-write targets' previous writes (rates and histogram intervals).
    pub remote_write: Arc<crate::ingest::remote_write::Trackers>,
}
