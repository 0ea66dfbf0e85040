//! Optimization opportunities: the fleet window the detectors read, the upsert by stable key, and the
//! API's reads and dismissals.

use chrono::{DateTime, Duration, Utc};
use forecasting::opportunities::Opportunity;
use serde::Serialize;
use sqlx::PgPool;

/// One GPU in one bucket.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GpuBucket {
    /// Node.
    pub node_id: String,
    /// GPU index.
    pub gpu_index: i32,
    /// Bucket start, Unix seconds.
    pub b: i64,
    /// Model name.
    pub model: String,
    /// Mean utilisation %.
    pub util: f64,
    /// Mean SM active fraction.
    pub sm_active: Option<f64>,
    /// Memory used, bytes (max).
    pub mem_used: f64,
    /// Memory total, bytes.
    pub mem_total: f64,
    /// Mean power, W.
    pub power: f64,
    /// Lowest SM clock, MHz.
    pub clock: f64,
    /// Throttle reasons (OR).
    pub throttle: i64,
    /// Mean temperature, C.
    pub temp: f64,
}

/// Every GPU's buckets of `bucket_secs` in `[from, to)`: raw samples for windows up to 2 hours, else the
/// 1-minute rollups (then `bucket_secs` should be a whole number of minutes).
pub async fn gpu_buckets(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_secs: i64,
) -> Result<Vec<GpuBucket>, sqlx::Error> {
    let sql = if to - from <= Duration::hours(2) {
        "SELECT node_id, gpu_index, floor(extract(epoch FROM ts) / $1)::bigint * $1 AS b, max(model) AS model, \
                avg(util_pct)::float8 AS util, avg(sm_active)::float8 AS sm_active, \
                max(mem_used_bytes)::float8 AS mem_used, max(mem_total_bytes)::float8 AS mem_total, \
                avg(power_w)::float8 AS power, min(sm_clock_mhz)::float8 AS clock, \
                bit_or(throttle_reasons) AS throttle, avg(temp_c)::float8 AS temp \
         FROM gpu_samples WHERE ts >= $2 AND ts < $3 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    } else {
        "SELECT r.node_id, r.gpu_index, floor(extract(epoch FROM r.bucket) / $1)::bigint * $1 AS b, \
                coalesce(max(l.model), '') AS model, avg(r.util_mean)::float8 AS util, \
                avg(r.sm_active_mean)::float8 AS sm_active, max(r.mem_used_max)::float8 AS mem_used, \
                max(r.mem_total_bytes)::float8 AS mem_total, avg(r.power_mean)::float8 AS power, \
                min(r.sm_clock_min)::float8 AS clock, bit_or(r.throttle_any) AS throttle, avg(r.temp_mean)::float8 AS temp \
         FROM gpu_rollup_1m r LEFT JOIN gpu_latest l ON l.node_id = r.node_id AND l.gpu_index = r.gpu_index \
         WHERE r.bucket >= $2 AND r.bucket < $3 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    };
    sqlx::query_as(sql).bind(bucket_secs.max(1)).bind(from).bind(to).fetch_all(pool).await
}

/// Per GPU over the last two hours of `[from, to)`: highest XID and uncorrectable ECC errors added.
pub async fn gpu_errors(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i32, i32, i64)>, sqlx::Error> {
    let from = from.max(to - Duration::hours(2));
    sqlx::query_as(
        "SELECT node_id, gpu_index, max(xid_last), (max(ecc_dbe_total) - min(ecc_dbe_total))::bigint \
         FROM gpu_samples WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2 \
         HAVING max(xid_last) <> 0 OR max(ecc_dbe_total) > min(ecc_dbe_total)",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// One deployment in one bucket (per-replica means summed, or worst/mean over replicas).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeploymentBucket {
    /// Deployment.
    pub deployment: String,
    /// Bucket start, Unix seconds.
    pub b: i64,
    /// Replicas reporting.
    pub replicas: i64,
    /// Generated tokens per second, summed.
    pub demand: f64,
    /// Inter-token latency p95, s (worst replica).
    pub itl: Option<f64>,
    /// Mean batch size.
    pub batch: Option<f64>,
    /// Mean KV-cache use %.
    pub kv: Option<f64>,
    /// Requests waiting, summed.
    pub queue: f64,
}

/// Every deployment's buckets in `[from, to)` (raw up to 2 hours, else 1-minute rollups).
pub async fn deployment_buckets(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_secs: i64,
) -> Result<Vec<DeploymentBucket>, sqlx::Error> {
    let sql = if to - from <= Duration::hours(2) {
        "SELECT deployment, b, count(*) AS replicas, sum(gen)::float8 AS demand, max(itl)::float8 AS itl, \
                avg(batch)::float8 AS batch, avg(kv)::float8 AS kv, sum(queue)::float8 AS queue FROM ( \
            SELECT deployment, replica, floor(extract(epoch FROM ts) / $1)::bigint * $1 AS b, \
                   avg(generation_tokens_per_s) AS gen, max(itl_p95_s) AS itl, avg(batch_size_mean) AS batch, \
                   avg(kv_cache_pct) AS kv, avg(queue_depth) AS queue \
            FROM serving_samples WHERE ts >= $2 AND ts < $3 GROUP BY 1, 2, 3) t \
         GROUP BY 1, 2 ORDER BY 1, 2"
    } else {
        "SELECT deployment, b, count(*) AS replicas, sum(gen)::float8 AS demand, max(itl)::float8 AS itl, \
                avg(batch)::float8 AS batch, avg(kv)::float8 AS kv, sum(queue)::float8 AS queue FROM ( \
            SELECT deployment, replica, floor(extract(epoch FROM bucket) / $1)::bigint * $1 AS b, \
                   avg(generation_tps) AS gen, max(itl_p95_max) AS itl, avg(batch_size_mean) AS batch, \
                   avg(kv_cache_mean) AS kv, avg(queue_mean) AS queue \
            FROM serving_rollup_1m WHERE bucket >= $2 AND bucket < $3 GROUP BY 1, 2, 3) t \
         GROUP BY 1, 2 ORDER BY 1, 2"
    };
    sqlx::query_as(sql).bind(bucket_secs.max(1)).bind(from).bind(to).fetch_all(pool).await
}

/// Node -> deployment it serves (nodes that declared one).
pub async fn node_deployments(pool: &PgPool) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT node_id, deployment FROM nodes WHERE deployment IS NOT NULL").fetch_all(pool).await
}

/// What one upsert pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpsertOutcome {
    /// Keys seen for the first time (or reopened after closing).
    pub opened: Vec<String>,
    /// Keys updated in place (open or dismissed).
    pub updated: Vec<String>,
    /// Keys closed because they were not detected any more.
    pub closed: Vec<String>,
}

/// Records one detection pass at `now`, in one transaction: inserts new keys, updates persisting ones
/// (a dismissed one stays dismissed, a closed one reopens), closes open or dismissed keys not in `ops`.
pub async fn upsert(pool: &PgPool, ops: &[Opportunity], now: DateTime<Utc>) -> Result<UpsertOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut out = UpsertOutcome::default();
    for o in ops {
        let before: Option<String> = sqlx::query_scalar("SELECT status FROM opportunities WHERE key = $1 FOR UPDATE")
            .bind(&o.key)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO opportunities AS o (key, kind, status, deployment, node_id, gpu_index, title, evidence, \
                 gpu_hours_per_week, saving_per_week, currency, confidence, expected_value, latency, action, \
                 first_seen, last_seen) \
             VALUES ($1, $2, 'open', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) \
             ON CONFLICT (key) DO UPDATE SET kind = EXCLUDED.kind, deployment = EXCLUDED.deployment, \
                 node_id = EXCLUDED.node_id, gpu_index = EXCLUDED.gpu_index, title = EXCLUDED.title, \
                 evidence = EXCLUDED.evidence, gpu_hours_per_week = EXCLUDED.gpu_hours_per_week, \
                 saving_per_week = EXCLUDED.saving_per_week, currency = EXCLUDED.currency, \
                 confidence = EXCLUDED.confidence, expected_value = EXCLUDED.expected_value, \
                 latency = EXCLUDED.latency, action = EXCLUDED.action, last_seen = EXCLUDED.last_seen, \
                 first_seen = CASE WHEN o.status = 'closed' THEN EXCLUDED.first_seen ELSE o.first_seen END, \
                 status = CASE WHEN o.status = 'closed' THEN 'open' ELSE o.status END, \
                 closed_at = CASE WHEN o.status = 'closed' THEN NULL ELSE o.closed_at END, \
                 dismissed_at = CASE WHEN o.status = 'closed' THEN NULL ELSE o.dismissed_at END, \
                 dismissed_reason = CASE WHEN o.status = 'closed' THEN NULL ELSE o.dismissed_reason END",
        )
        .bind(&o.key)
        .bind(o.kind.as_str())
        .bind(&o.target.deployment)
        .bind(&o.target.node)
        .bind(o.target.gpu_index.map(|g| g as i32))
        .bind(&o.title)
        .bind(to_json(&o.evidence))
        .bind(o.gpu_hours_per_week)
        .bind(o.saving_per_week)
        .bind(&o.currency)
        .bind(o.confidence)
        .bind(o.expected_value)
        .bind(to_json(&o.latency))
        .bind(to_json(&o.action))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if before.as_deref().is_none_or(|s| s == "closed") {
            out.opened.push(o.key.clone());
        } else {
            out.updated.push(o.key.clone());
        }
    }
    let keys: Vec<&str> = ops.iter().map(|o| o.key.as_str()).collect();
    out.closed = sqlx::query_scalar(
        "UPDATE opportunities SET status = 'closed', closed_at = $2 \
         WHERE status IN ('open', 'dismissed') AND NOT (key = ANY($1)) RETURNING key",
    )
    .bind(&keys)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(out)
}

/// A value as JSON for a jsonb column (`null` if it cannot be represented, which our types never hit).
fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// One stored opportunity.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredOpportunity {
    /// Id (for the API).
    pub id: i64,
    /// Stable key.
    pub key: String,
    /// Kind.
    pub kind: String,
    /// `open`, `closed` or `dismissed`.
    pub status: String,
    /// Deployment.
    pub deployment: Option<String>,
    /// Node.
    pub node_id: Option<String>,
    /// GPU index.
    pub gpu_index: Option<i32>,
    /// One line.
    pub title: String,
    /// Series, time range, key numbers.
    pub evidence: serde_json::Value,
    /// GPU-hours saved per week (negative: spent).
    pub gpu_hours_per_week: f64,
    /// Money saved per week.
    pub saving_per_week: f64,
    /// Currency.
    pub currency: String,
    /// Confidence, `[0, 1]`.
    pub confidence: f64,
    /// Saving times confidence.
    pub expected_value: f64,
    /// Latency/SLO effect.
    pub latency: serde_json::Value,
    /// Action (and the one-click command, if any).
    pub action: serde_json::Value,
    /// First detected (this occurrence).
    pub first_seen: DateTime<Utc>,
    /// Last detected.
    pub last_seen: DateTime<Utc>,
    /// When it stopped being detected.
    pub closed_at: Option<DateTime<Utc>>,
    /// When dismissed.
    pub dismissed_at: Option<DateTime<Utc>>,
    /// Why dismissed.
    pub dismissed_reason: Option<String>,
}

pub(crate) const COLUMNS: &str = "id, key, kind, status, deployment, node_id, gpu_index, title, evidence, gpu_hours_per_week, \
     saving_per_week, currency, confidence, expected_value, latency, action, first_seen, last_seen, closed_at, \
     dismissed_at, dismissed_reason";

/// Filters of the list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Deployment.
    pub deployment: Option<String>,
    /// Node.
    pub node: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
}

/// Opportunities matching `f`, highest expected value first; and how many match in all.
pub async fn list(pool: &PgPool, f: &Filter) -> Result<(Vec<StoredOpportunity>, i64), sqlx::Error> {
    let cond = "($1::text IS NULL OR deployment = $1) AND ($2::text IS NULL OR node_id = $2) \
                AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR status = $4)";
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM opportunities WHERE {cond} \
         ORDER BY expected_value DESC, confidence DESC, key LIMIT $5 OFFSET $6"
    )))
    .bind(&f.deployment)
    .bind(&f.node)
    .bind(&f.kind)
    .bind(&f.status)
    .bind(f.limit)
    .bind(f.offset)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM opportunities WHERE {cond}")))
        .bind(&f.deployment)
        .bind(&f.node)
        .bind(&f.kind)
        .bind(&f.status)
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

/// One opportunity by id.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<StoredOpportunity>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM opportunities WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Dismisses an open (or already dismissed: the reason is replaced) opportunity; `None` if there is no such
/// id or it is closed.
pub async fn dismiss(
    pool: &PgPool,
    id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<StoredOpportunity>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE opportunities SET status = 'dismissed', dismissed_at = $3, dismissed_reason = $2 \
         WHERE id = $1 AND status IN ('open', 'dismissed') RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(reason)
    .bind(now)
    .fetch_optional(pool)
    .await
}
