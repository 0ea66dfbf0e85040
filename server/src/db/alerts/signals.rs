//! The fleet readings the alert rules evaluate (latest GPU readings, silent nodes, failed scaling, open anomalies
//! and opportunities).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::alert::{Aggregate, Metric};

/// Latest GPU readings newer than `since` that are at or above `temp_c`: (node, gpu, uuid, temp, deployment).
pub async fn hot_gpus(
    pool: &PgPool,
    temp_c: f64,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i32, String, f32, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.node_id, g.gpu_index, g.uuid, g.temp_c, n.deployment FROM gpu_latest g JOIN nodes n USING (node_id) \
         WHERE g.temp_c >= $1 AND g.ts >= $2 ORDER BY g.node_id, g.gpu_index",
    )
    .bind(temp_c as f32)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Latest GPU readings newer than `since` with any of the `mask` throttle reasons set.
pub async fn throttled_gpus(
    pool: &PgPool,
    mask: i64,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i32, String, i64, Option<f32>)>, sqlx::Error> {
    // `temp_c` may be absent (the agent could not read it); an absent throttle mask never matches.
    sqlx::query_as(
        "SELECT node_id, gpu_index, uuid, throttle_reasons, temp_c FROM gpu_latest \
         WHERE (throttle_reasons & $1) <> 0 AND ts >= $2 ORDER BY node_id, gpu_index",
    )
    .bind(mask)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Records GPUs whose sticky `xid_last` changed since the last call, then returns the GPUs with a non-zero
/// XID that changed at or after `changed_since` and reported at or after `fresh_since`.
pub async fn recent_xids(
    pool: &PgPool,
    changed_since: DateTime<Utc>,
    fresh_since: DateTime<Utc>,
) -> Result<Vec<(String, i32, String, i32, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO gpu_xid_seen (node_id, gpu_index, xid_last, changed_at) \
         SELECT g.node_id, g.gpu_index, g.xid_last, g.ts FROM gpu_latest g \
         LEFT JOIN gpu_xid_seen s ON s.node_id = g.node_id AND s.gpu_index = g.gpu_index \
         WHERE g.xid_last IS NOT NULL AND s.xid_last IS DISTINCT FROM g.xid_last \
         ON CONFLICT (node_id, gpu_index) DO UPDATE SET xid_last = EXCLUDED.xid_last, changed_at = EXCLUDED.changed_at",
    )
    .execute(pool)
    .await?;
    sqlx::query_as(
        "SELECT s.node_id, s.gpu_index, g.uuid, s.xid_last, s.changed_at FROM gpu_xid_seen s \
         JOIN gpu_latest g ON g.node_id = s.node_id AND g.gpu_index = s.gpu_index \
         WHERE s.xid_last <> 0 AND s.changed_at >= $1 AND g.ts >= $2 ORDER BY s.node_id, s.gpu_index",
    )
    .bind(changed_since)
    .bind(fresh_since)
    .fetch_all(pool)
    .await
}

/// GPUs that stopped reporting while their node still reports: the latest reading older than `fresh` but
/// newer than `forget_before` (a GPU removed for good stops alerting a day later), on a node with another
/// GPU reading at or after `fresh`: (node, gpu, uuid, last reading, deployment).
pub async fn missing_gpus(
    pool: &PgPool,
    fresh: DateTime<Utc>,
    forget_before: DateTime<Utc>,
) -> Result<Vec<(String, i32, String, DateTime<Utc>, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.node_id, g.gpu_index, g.uuid, g.ts, n.deployment FROM gpu_latest g JOIN nodes n USING (node_id) \
         WHERE g.ts < $1 AND g.ts >= $2 \
           AND EXISTS (SELECT 1 FROM gpu_latest o WHERE o.node_id = g.node_id AND o.ts >= $1) \
         ORDER BY g.node_id, g.gpu_index",
    )
    .bind(fresh)
    .bind(forget_before)
    .fetch_all(pool)
    .await
}

/// GPUs reporting at or after `fresh` whose whole reading (utilisation, memory, power, temperature, SM
/// clock) has not changed for at least `for_secs`: (node, gpu, uuid, unchanged since, deployment). A GPU
/// with none of those readings (every NVML read failing) has nothing to be stuck on and is left out: the
/// agent counts those failures in its own metrics.
pub async fn stuck_gpus(
    pool: &PgPool,
    fresh: DateTime<Utc>,
    for_secs: f64,
) -> Result<Vec<(String, i32, String, DateTime<Utc>, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.node_id, g.gpu_index, g.uuid, g.changed_at, n.deployment FROM gpu_latest g JOIN nodes n USING (node_id) \
         WHERE g.ts >= $1 AND g.changed_at IS NOT NULL AND g.ts - g.changed_at >= make_interval(secs => $2) \
           AND num_nonnulls(g.util_pct, g.mem_used_bytes, g.power_w, g.temp_c, g.sm_clock_mhz) > 0 \
         ORDER BY g.node_id, g.gpu_index",
    )
    .bind(fresh)
    .bind(for_secs)
    .fetch_all(pool)
    .await
}

/// Nodes not heard from since `since`, with when they were last seen.
pub async fn silent_nodes(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT node_id, last_seen FROM nodes WHERE last_seen < $1 ORDER BY node_id")
        .bind(since)
        .fetch_all(pool)
        .await
}

/// A GPU metric's latest value per GPU, readings newer than `since`, optionally of one node / deployment:
/// (node, gpu, uuid, deployment, value). GPUs whose latest reading lacks the metric (unknown) are left out:
/// an unknown utilisation must not satisfy "below 5 %".
pub async fn gpu_metric(
    pool: &PgPool,
    metric: Metric,
    since: DateTime<Utc>,
    node: Option<&str>,
    deployment: Option<&str>,
) -> Result<Vec<(String, i32, String, Option<String>, f64)>, sqlx::Error> {
    let col = metric.column();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT g.node_id, g.gpu_index, g.uuid, n.deployment, g.{col}::float8 FROM gpu_latest g JOIN nodes n USING (node_id) \
         WHERE g.ts >= $1 AND g.{col} IS NOT NULL AND ($2::text IS NULL OR g.node_id = $2) \
           AND ($3::text IS NULL OR n.deployment = $3) ORDER BY g.node_id, g.gpu_index"
    )))
    .bind(since)
    .bind(node)
    .bind(deployment)
    .fetch_all(pool)
    .await
}

/// A serving metric per deployment: the `agg` of its replicas' latest values newer than `since` (replicas
/// without the value are left out): (deployment, value, replicas).
pub async fn serving_metric(
    pool: &PgPool,
    metric: Metric,
    agg: Aggregate,
    since: DateTime<Utc>,
    node: Option<&str>,
    deployment: Option<&str>,
) -> Result<Vec<(String, f64, i64)>, sqlx::Error> {
    let (col, f) = (metric.column(), agg.sql());
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT deployment, {f}({col})::float8, count(*) FROM serving_latest \
         WHERE ts >= $1 AND {col} IS NOT NULL AND ($2::text IS NULL OR node_id = $2) AND ($3::text IS NULL OR deployment = $3) \
         GROUP BY deployment ORDER BY deployment"
    )))
    .bind(since)
    .bind(node)
    .bind(deployment)
    .fetch_all(pool)
    .await
}

/// The latest decision of each live policy made at or after `since`, when it carries an error:
/// (policy name, target, error, decided_at).
pub async fn failed_scaling(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<(String, String, String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, target, error, decided_at FROM ( \
           SELECT DISTINCT ON (d.policy_id) p.name, d.target, d.error, d.decided_at FROM decisions d \
           JOIN policies p ON p.id = d.policy_id AND p.deleted_at IS NULL \
           WHERE d.decided_at >= $1 ORDER BY d.policy_id, d.decided_at DESC) latest \
         WHERE error IS NOT NULL ORDER BY name",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Open anomaly events whose severity is one of `severities` (`anomaly-high`), oldest first.
pub async fn open_anomalies(
    pool: &PgPool,
    severities: &[&str],
) -> Result<Vec<crate::db::anomalies::StoredAnomaly>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, node_id, deployment, target, metric, source, started_at, ended_at, severity, score, evidence \
         FROM anomalies WHERE ended_at IS NULL AND severity = ANY($1) ORDER BY started_at, id",
    )
    .bind(severities)
    .fetch_all(pool)
    .await
}

/// Open (not closed, not dismissed) opportunities saving at least `min_saving` per week
/// (`opportunity-value`), highest saving first.
pub async fn open_opportunities_worth(
    pool: &PgPool,
    min_saving: f64,
) -> Result<Vec<crate::db::opportunities::StoredOpportunity>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM opportunities WHERE status = 'open' AND saving_per_week >= $1 \
         ORDER BY saving_per_week DESC, key",
        crate::db::opportunities::COLUMNS
    )))
    .bind(min_saving)
    .fetch_all(pool)
    .await
}
