//! Read models of the dashboard.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One node row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct NodeRow {
    /// Node id.
    pub node_id: String,
    /// Host name.
    pub hostname: String,
    /// GPU source (`nvml`, `simulated`, `none`).
    pub gpu_source: String,
    /// Agent group.
    pub agent_group: Option<String>,
    /// Deployment.
    pub deployment: Option<String>,
    /// Last contact.
    pub last_seen: DateTime<Utc>,
    /// GPUs reporting.
    pub gpus: i64,
    /// Mean utilisation of its GPUs.
    pub mean_util: Option<f64>,
}

/// One GPU row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct GpuRow {
    /// Node.
    pub node_id: String,
    /// Index.
    pub gpu_index: i32,
    /// Model name.
    pub model: String,
    /// Latest sample time.
    pub ts: DateTime<Utc>,
    /// Utilisation %.
    pub util_pct: f32,
    /// Memory used, bytes.
    pub mem_used_bytes: i64,
    /// Memory total, bytes.
    pub mem_total_bytes: i64,
    /// Power, W.
    pub power_w: f32,
    /// Temperature, C.
    pub temp_c: f32,
}

/// One decision row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DecisionRow {
    /// When.
    pub decided_at: DateTime<Utc>,
    /// Target.
    pub target: String,
    /// Before.
    pub current_replicas: i32,
    /// After.
    pub desired_replicas: i32,
    /// Winning proposal.
    pub winner: String,
    /// Why.
    pub reason: String,
    /// Dry run.
    pub dry_run: bool,
    /// Applied.
    pub applied: bool,
    /// Error, if acting failed.
    pub error: Option<String>,
}

/// Nodes with their GPU counts.
pub async fn nodes(pool: &PgPool) -> Result<Vec<NodeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n.node_id, n.hostname, n.gpu_source, n.agent_group, n.deployment, n.last_seen, \
                count(g.gpu_index) AS gpus, avg(g.util_pct)::float8 AS mean_util \
         FROM nodes n LEFT JOIN gpu_latest g ON g.node_id = n.node_id \
         GROUP BY n.node_id ORDER BY n.node_id",
    )
    .fetch_all(pool)
    .await
}

/// Latest reading of every GPU.
pub async fn gpus(pool: &PgPool) -> Result<Vec<GpuRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, gpu_index, model, ts, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c \
         FROM gpu_latest ORDER BY node_id, gpu_index",
    )
    .fetch_all(pool)
    .await
}

/// Most recent decisions.
pub async fn decisions(pool: &PgPool, limit: i64) -> Result<Vec<DecisionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT decided_at, target, current_replicas, desired_replicas, winner, reason, dry_run, applied, error \
         FROM decisions ORDER BY decided_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
