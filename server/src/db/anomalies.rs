//! Anomaly events: opened, escalated and closed by the leader's sweep; read by the API.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Identity of an event's series: at most one open event per identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId {
    /// Node ('' for deployment series).
    pub node_id: String,
    /// Deployment ('' when unknown).
    pub deployment: String,
    /// What the series is of (`gpu:<node>:<index>`, `deployment:<name>`).
    pub target: String,
    /// Metric (`util_pct`, `itl_p95_s`, `peer:util_pct`, ...).
    pub metric: String,
}

/// Opens an event, or updates the open one of the same series (severity only rises); returns its id.
#[allow(clippy::too_many_arguments)]
pub async fn open_or_update(
    pool: &PgPool,
    s: &SeriesId,
    source: &str,
    started_at: DateTime<Utc>,
    severity: &str,
    score: f64,
    evidence: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO anomalies AS a (node_id, deployment, target, metric, source, started_at, severity, score, evidence, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (node_id, deployment, target, metric) WHERE ended_at IS NULL DO UPDATE SET \
             severity = CASE WHEN array_position(ARRAY['info', 'warning', 'critical'], EXCLUDED.severity) \
                               > array_position(ARRAY['info', 'warning', 'critical'], a.severity) \
                             THEN EXCLUDED.severity ELSE a.severity END, \
             score = greatest(a.score, EXCLUDED.score), evidence = EXCLUDED.evidence, updated_at = EXCLUDED.updated_at \
         RETURNING id",
    )
    .bind(&s.node_id)
    .bind(&s.deployment)
    .bind(&s.target)
    .bind(&s.metric)
    .bind(source)
    .bind(started_at)
    .bind(severity)
    .bind(score)
    .bind(evidence)
    .bind(now)
    .fetch_one(pool)
    .await
}

/// Closes the open event of a series at `ended_at`; whether there was one.
pub async fn close(pool: &PgPool, s: &SeriesId, ended_at: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE anomalies SET ended_at = $5, updated_at = $5 \
         WHERE node_id = $1 AND deployment = $2 AND target = $3 AND metric = $4 AND ended_at IS NULL",
    )
    .bind(&s.node_id)
    .bind(&s.deployment)
    .bind(&s.target)
    .bind(&s.metric)
    .bind(ended_at)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Per-replica latency of the serving samples in `[from, to)`, bucketed: (deployment, node, replica, bucket
/// start in Unix seconds, mean ITL p95, mean TTFT p95), ordered.
pub async fn replica_latency_buckets(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_secs: i64,
) -> Result<Vec<(String, String, String, i64, Option<f64>, Option<f64>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT deployment, node_id, replica, floor(date_part('epoch', ts) / $1)::bigint * $1 AS b, \
                avg(itl_p95_s)::float8, avg(ttft_p95_s)::float8 \
         FROM serving_samples_between($2, $3) WHERE ts >= $2 AND ts < $3 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    )
    .bind(bucket_secs.max(1))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// Series with an open event from `source`.
pub async fn open_series(pool: &PgPool, source: &str) -> Result<Vec<SeriesId>, sqlx::Error> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT node_id, deployment, target, metric FROM anomalies WHERE ended_at IS NULL AND source = $1",
    )
    .bind(source)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(node_id, deployment, target, metric)| SeriesId { node_id, deployment, target, metric })
        .collect())
}

/// One stored anomaly event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StoredAnomaly {
    /// Id.
    pub id: i64,
    /// Node ('' for deployment series).
    pub node_id: String,
    /// Deployment ('' when unknown).
    pub deployment: String,
    /// What the series is of.
    pub target: String,
    /// Metric.
    pub metric: String,
    /// `detector` (streaming detector + hysteresis) or `peers` (peer outlier).
    pub source: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End (`None` while open).
    pub ended_at: Option<DateTime<Utc>>,
    /// `info`, `warning` or `critical` (peak).
    pub severity: String,
    /// Peak score, `[0, 1]`.
    pub score: f64,
    /// Observed and expected values, component, tail probability.
    pub evidence: serde_json::Value,
}

/// Filters of the list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Node.
    pub node: Option<String>,
    /// Deployment.
    pub deployment: Option<String>,
    /// Severity.
    pub severity: Option<String>,
    /// Only open (true) or only closed (false) events.
    pub open: Option<bool>,
    /// Page size.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
}

/// Events matching `f`, newest first.
pub async fn list(pool: &PgPool, f: &Filter) -> Result<Vec<StoredAnomaly>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, node_id, deployment, target, metric, source, started_at, ended_at, severity, score, evidence \
         FROM anomalies WHERE ($1::text IS NULL OR node_id = $1) AND ($2::text IS NULL OR deployment = $2) \
           AND ($3::text IS NULL OR severity = $3) AND ($4::bool IS NULL OR (ended_at IS NULL) = $4) \
         ORDER BY started_at DESC, id DESC LIMIT $5 OFFSET $6",
    )
    .bind(&f.node)
    .bind(&f.deployment)
    .bind(&f.severity)
    .bind(f.open)
    .bind(f.limit)
    .bind(f.offset)
    .fetch_all(pool)
    .await
}

/// Sort orders of the dashboard's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Start, newest first.
    #[default]
    Newest,
    /// Start, oldest first.
    Oldest,
    /// Peak score, highest first.
    Score,
}

/// The dashboard list's filters: those of the API plus one GPU's series and a time range (events that
/// overlap it: started before its end, and ongoing or ended after its start).
#[derive(Debug, Clone)]
pub struct PageQuery {
    /// Node, deployment, severity, open/closed, page.
    pub filter: Filter,
    /// One series target (`gpu:<node>:<index>`).
    pub target: Option<String>,
    /// Range start.
    pub from: DateTime<Utc>,
    /// Range end.
    pub to: DateTime<Utc>,
    /// Order.
    pub sort: Sort,
}

/// One page of events overlapping the range, and how many match in all.
pub async fn page(pool: &PgPool, q: &PageQuery) -> Result<(Vec<StoredAnomaly>, super::Total), sqlx::Error> {
    let f = &q.filter;
    let cond = "($1::text IS NULL OR node_id = $1) AND ($2::text IS NULL OR deployment = $2) \
                AND ($3::text IS NULL OR severity = $3) AND ($4::bool IS NULL OR (ended_at IS NULL) = $4) \
                AND ($5::text IS NULL OR target = $5) AND started_at <= $7 AND (ended_at IS NULL OR ended_at >= $6)";
    let order = match q.sort {
        Sort::Newest => "started_at DESC, id DESC",
        Sort::Oldest => "started_at, id",
        Sort::Score => "score DESC, started_at DESC, id DESC",
    };
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, node_id, deployment, target, metric, source, started_at, ended_at, severity, score, evidence \
         FROM anomalies WHERE {cond} ORDER BY {order} LIMIT $8 OFFSET $9"
    )))
    .bind(&f.node)
    .bind(&f.deployment)
    .bind(&f.severity)
    .bind(f.open)
    .bind(&q.target)
    .bind(q.from)
    .bind(q.to)
    .bind(f.limit)
    .bind(f.offset)
    .fetch_all(pool)
    .await?;
    let cap = super::Total::limit(f.offset, f.limit);
    let counted = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM (SELECT 1 FROM anomalies WHERE {cond} LIMIT $8) c"
    )))
    .bind(&f.node)
    .bind(&f.deployment)
    .bind(&f.severity)
    .bind(f.open)
    .bind(&q.target)
    .bind(q.from)
    .bind(q.to)
    .bind(cap)
    .fetch_one(pool)
    .await?;
    Ok((rows, super::Total::from_counted(counted, cap)))
}

/// Events of one node's GPU series (or of one GPU, `gpu_index`) that overlap `[from, to]`, newest first, at
/// most `limit`: the markers of the node and GPU charts.
pub async fn of_node_gpus(
    pool: &PgPool,
    node: &str,
    gpu_index: Option<i32>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<StoredAnomaly>, sqlx::Error> {
    let target = gpu_index.map(|g| format!("gpu:{node}:{g}"));
    sqlx::query_as(
        "SELECT id, node_id, deployment, target, metric, source, started_at, ended_at, severity, score, evidence \
         FROM anomalies WHERE node_id = $1 AND target LIKE 'gpu:%' AND ($2::text IS NULL OR target = $2) \
           AND started_at <= $4 AND (ended_at IS NULL OR ended_at >= $3) \
         ORDER BY started_at DESC, id DESC LIMIT $5",
    )
    .bind(node)
    .bind(&target)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Events of a deployment (its own series and its GPUs' peer outliers) that overlap `[from, to]`: the open
/// ones first, then newest first, at most `limit`. The deployment page's markers and replica status.
pub async fn of_deployment(
    pool: &PgPool,
    deployment: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<StoredAnomaly>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, node_id, deployment, target, metric, source, started_at, ended_at, severity, score, evidence \
         FROM anomalies WHERE deployment = $1 AND started_at <= $3 AND (ended_at IS NULL OR ended_at >= $2) \
         ORDER BY ended_at IS NULL DESC, started_at DESC, id DESC LIMIT $4",
    )
    .bind(deployment)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// An anomaly event as the fault benchmark scores it: id, node, deployment, target, metric, source.
pub type UpdatedEvent = (i64, String, String, String, String, String);

/// The anomaly events of the given severities last updated exactly at `at`.
pub async fn updated_at(
    pool: &PgPool,
    at: DateTime<Utc>,
    severities: &[&str],
) -> Result<Vec<UpdatedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, node_id, deployment, target, metric, source FROM anomalies \
         WHERE updated_at = $1 AND severity = ANY($2)",
    )
    .bind(at)
    .bind(severities)
    .fetch_all(pool)
    .await
}
