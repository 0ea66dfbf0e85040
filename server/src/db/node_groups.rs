//! Workload groups of nodes: replaced by the leader's refresher, read by the API.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// One node's group as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NodeGroup {
    /// Node.
    pub node_id: String,
    /// Cluster index, ordered by mean utilisation (0 = least busy).
    pub cluster: i32,
    /// What the cluster's centroid looks like, in words.
    pub label: String,
    /// Coarse kind (`idle`, `memory-only`, `light`, `busy`, `bursty`, `saturated`).
    pub kind: String,
    /// GPUs of the node in the window.
    pub gpus: i32,
    /// The node's profile (fractions).
    pub features: serde_json::Value,
    /// The cluster's centroid (fractions).
    pub centroid: serde_json::Value,
    /// Mean silhouette of the grouping (0 with one group).
    pub silhouette: f64,
    /// When it was computed.
    pub computed_at: DateTime<Utc>,
}

/// Replaces every stored group with `rows` (nodes no longer in the window disappear).
pub async fn replace(pool: &PgPool, rows: &[NodeGroup]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM node_groups").execute(&mut *tx).await?;
    for r in rows {
        sqlx::query(
            "INSERT INTO node_groups (node_id, cluster, label, kind, gpus, features, centroid, silhouette, computed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&r.node_id)
        .bind(r.cluster)
        .bind(&r.label)
        .bind(&r.kind)
        .bind(r.gpus)
        .bind(&r.features)
        .bind(&r.centroid)
        .bind(r.silhouette)
        .bind(r.computed_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Every node's group, by cluster then node.
pub async fn list(pool: &PgPool) -> Result<Vec<NodeGroup>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, cluster, label, kind, gpus, features, centroid, silhouette, computed_at \
         FROM node_groups ORDER BY cluster, node_id",
    )
    .fetch_all(pool)
    .await
}
