//! The latest load of each serving replica of a deployment (`serving_latest`), for ordering pods before a
//! scale-down.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One replica's latest serving sample, reduced to its load.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReplicaLoad {
    /// Replica id as its reporter names it: the agent's `<node>/<host>:<port>`, or a pod name.
    pub replica: String,
    /// The node whose agent reported it.
    pub node_id: String,
    /// Requests being processed.
    pub running: f64,
    /// Requests waiting for admission.
    pub queue_depth: f64,
}

impl ReplicaLoad {
    /// Requests in flight at the replica: running and queued alike (stopping it drops both).
    pub fn in_flight(&self) -> f64 {
        (self.running.max(0.0) + self.queue_depth.max(0.0)).max(0.0)
    }
}

/// Replicas of `deployment` (`namespace/name`) with a sample at or after `since`.
pub async fn latest(pool: &PgPool, deployment: &str, since: DateTime<Utc>) -> Result<Vec<ReplicaLoad>, sqlx::Error> {
    sqlx::query_as(
        "SELECT replica, node_id, running::float8 AS running, queue_depth::float8 AS queue_depth \
         FROM serving_latest WHERE deployment = $1 AND ts >= $2 ORDER BY replica",
    )
    .bind(deployment)
    .bind(since)
    .fetch_all(pool)
    .await
}
