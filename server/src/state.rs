//! Shared state of the HTTP handlers and background tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    pub credentials: Arc<crate::auth::cache::CredentialCache>,
    /// Serving series per node, for the per-node cardinality budget.
    pub series_budget: Arc<crate::ingest::cardinality::SeriesBudget>,
    /// Named API tokens resolved recently.
    pub api_tokens: Arc<crate::auth::cache::ApiTokenCache>,
    /// Wakes command long polls.
    pub commands: crate::delivery::CommandBus,
    /// Bumped whenever a policy is written here, so caches of the policy list (the dashboard's) drop theirs.
    pub policy_writes: Arc<AtomicU64>,
    /// Brute-force lockouts of login and enrollment.
    pub lockout: Arc<crate::lockout::Lockout>,
    /// Prometheus remote-write targets' previous writes (rates and histogram intervals).
    pub remote_write: Arc<crate::ingest::remote_write::Trackers>,
}

impl AppState {
    /// Records that a policy was written (created, replaced, deleted, switched).
    pub fn policies_changed(&self) {
        self.policy_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// How many policy writes this replica has seen: a cache of the policy list is valid for one value.
    pub fn policy_epoch(&self) -> u64 {
        self.policy_writes.load(Ordering::Relaxed)
    }
}
