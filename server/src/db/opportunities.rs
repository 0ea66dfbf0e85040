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
    /// Mean utilisation %; `None` when no sample of the bucket had it (unknown, not idle).
    pub util: Option<f64>,
    /// Mean SM active fraction.
    pub sm_active: Option<f64>,
    /// Memory used, bytes (max); `None` when unknown.
    pub mem_used: Option<f64>,
    /// Memory total, bytes; `None` when unknown.
    pub mem_total: Option<f64>,
    /// Mean power, W; `None` when unknown.
    pub power: Option<f64>,
    /// Lowest SM clock, MHz; `None` when unknown.
    pub clock: Option<f64>,
    /// Throttle reasons (OR); `None` when unknown.
    pub throttle: Option<i64>,
    /// Mean temperature, C; `None` when unknown.
    pub temp: Option<f64>,
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
        "SELECT node_id, gpu_index, floor(date_part('epoch', ts) / $1)::bigint * $1 AS b, max(model) AS model, \
                avg(util_pct)::float8 AS util, avg(sm_active)::float8 AS sm_active, \
                max(mem_used_bytes)::float8 AS mem_used, max(mem_total_bytes)::float8 AS mem_total, \
                avg(power_w)::float8 AS power, min(sm_clock_mhz)::float8 AS clock, \
                bit_or(throttle_reasons) AS throttle, avg(temp_c)::float8 AS temp \
         FROM gpu_samples_between($2, $3) WHERE ts >= $2 AND ts < $3 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    } else {
        "SELECT r.node_id, r.gpu_index, floor(date_part('epoch', r.bucket) / $1)::bigint * $1 AS b, \
                coalesce(max(l.model), '') AS model, avg(r.util_mean)::float8 AS util, \
                avg(r.sm_active_mean)::float8 AS sm_active, max(r.mem_used_max)::float8 AS mem_used, \
                max(r.mem_total_bytes)::float8 AS mem_total, avg(r.power_mean)::float8 AS power, \
                min(r.sm_clock_min)::float8 AS clock, bit_or(r.throttle_any) AS throttle, avg(r.temp_mean)::float8 AS temp \
         FROM gpu_rollup_1m r LEFT JOIN gpu_latest l ON l.node_id = r.node_id AND l.gpu_index = r.gpu_index \
         WHERE r.bucket >= $2 AND r.bucket < $3 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    };
    sqlx::query_as(sql).bind(bucket_secs.max(1)).bind(from).bind(to).fetch_all(pool).await
}

/// Per GPU over the last two hours of `[from, to)`: highest XID and uncorrectable ECC errors added (`None`
/// where no sample had the reading).
pub async fn gpu_errors(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i32, Option<i32>, Option<i64>)>, sqlx::Error> {
    let from = from.max(to - Duration::hours(2));
    sqlx::query_as(
        "SELECT node_id, gpu_index, max(xid_last), (max(ecc_dbe_total) - min(ecc_dbe_total))::bigint \
         FROM gpu_samples_between($1, $2) WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2 \
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
            SELECT deployment, replica, floor(date_part('epoch', ts) / $1)::bigint * $1 AS b, \
                   avg(generation_tokens_per_s) AS gen, max(itl_p95_s) AS itl, avg(batch_size_mean) AS batch, \
                   avg(kv_cache_pct) AS kv, avg(queue_depth) AS queue \
            FROM serving_samples_between($2, $3) WHERE ts >= $2 AND ts < $3 GROUP BY 1, 2, 3) t \
         GROUP BY 1, 2 ORDER BY 1, 2"
    } else {
        "SELECT deployment, b, count(*) AS replicas, sum(gen)::float8 AS demand, max(itl)::float8 AS itl, \
                avg(batch)::float8 AS batch, avg(kv)::float8 AS kv, sum(queue)::float8 AS queue FROM ( \
            SELECT deployment, replica, floor(date_part('epoch', bucket) / $1)::bigint * $1 AS b, \
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
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM opportunities o WHERE {FILTER} \
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
    Ok((rows, count(pool, f).await?))
}

/// The list filters as SQL over `opportunities o` (`$1` deployment, `$2` node, `$3` kind, `$4` status).
const FILTER: &str = "($1::text IS NULL OR o.deployment = $1) AND ($2::text IS NULL OR o.node_id = $2) \
                      AND ($3::text IS NULL OR o.kind = $3) AND ($4::text IS NULL OR o.status = $4)";

/// Opportunities matching `f` (its paging aside).
async fn count(pool: &PgPool, f: &Filter) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM opportunities o WHERE {FILTER}")))
        .bind(&f.deployment)
        .bind(&f.node)
        .bind(&f.kind)
        .bind(&f.status)
        .fetch_one(pool)
        .await
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

/// Sort orders of the dashboard's list (each backed by an index on `(status, ...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Expected value (money times confidence), highest first.
    #[default]
    Value,
    /// GPU-hours per week, highest first.
    GpuHours,
    /// First detected, newest first.
    FirstSeen,
    /// Last detected, newest first.
    Updated,
}

impl Sort {
    fn order_by(self) -> &'static str {
        match self {
            Sort::Value => "o.expected_value DESC, o.confidence DESC, o.key",
            Sort::GpuHours => "o.gpu_hours_per_week DESC, o.expected_value DESC, o.key",
            Sort::FirstSeen => "o.first_seen DESC, o.key",
            Sort::Updated => "o.last_seen DESC, o.key",
        }
    }
}

/// The newest one-click action taken on an opportunity.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ActionRecord {
    /// Id.
    pub id: i64,
    /// When.
    pub acted_at: DateTime<Utc>,
    /// Who (dashboard user, or `api-token`).
    pub acted_by: String,
    /// The command as the opportunity described it.
    pub command: serde_json::Value,
    /// Whether it was carried out (queued, recorded or applied).
    pub ok: bool,
    /// What happened, in words.
    pub result: String,
    /// The decision recorded for a scale.
    pub decision_id: Option<i64>,
    /// Agent commands queued.
    pub command_ids: Vec<uuid::Uuid>,
}

/// An opportunity as the dashboard lists it: the stored row, who dismissed it and its newest action.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedOpportunity {
    /// The stored row.
    #[sqlx(flatten)]
    pub o: StoredOpportunity,
    /// Who dismissed it from the dashboard.
    pub dismissed_by: Option<String>,
    /// Newest action: when.
    pub action_at: Option<DateTime<Utc>>,
    /// Newest action: who.
    pub action_by: Option<String>,
    /// Newest action: whether it was carried out.
    pub action_ok: Option<bool>,
    /// Newest action: what happened.
    pub action_result: Option<String>,
}

/// The dashboard list's filters, order and page.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Filters (its `limit` and `offset` are the page).
    pub filter: Filter,
    /// Order.
    pub sort: Sort,
}

const LISTED: &str = "o.id, o.key, o.kind, o.status, o.deployment, o.node_id, o.gpu_index, o.title, o.evidence, \
     o.gpu_hours_per_week, o.saving_per_week, o.currency, o.confidence, o.expected_value, o.latency, o.action, \
     o.first_seen, o.last_seen, o.closed_at, o.dismissed_at, o.dismissed_reason, o.dismissed_by, \
     a.acted_at AS action_at, a.acted_by AS action_by, a.ok AS action_ok, a.result AS action_result";

/// The newest action per listed row: one index probe each on `opportunity_actions_latest`.
const LATEST_ACTION: &str = "LEFT JOIN LATERAL (SELECT acted_at, acted_by, ok, result FROM opportunity_actions \
     WHERE opportunity_id = o.id ORDER BY acted_at DESC LIMIT 1) a ON true";

/// One page of the dashboard's list and how many match (counted up to [`super::COUNT_CAP`]).
pub async fn page(pool: &PgPool, q: &PageQuery) -> Result<(Vec<ListedOpportunity>, super::Total), sqlx::Error> {
    let f = &q.filter;
    let rows = page_rows(pool, q).await?;
    let cap = super::Total::limit(f.offset, f.limit);
    let counted = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM (SELECT 1 FROM opportunities o WHERE {FILTER} LIMIT $5) c"
    )))
    .bind(&f.deployment)
    .bind(&f.node)
    .bind(&f.kind)
    .bind(&f.status)
    .bind(cap)
    .fetch_one(pool)
    .await?;
    Ok((rows, super::Total::from_counted(counted, cap)))
}

/// One page of the dashboard's list, without counting (the overview's top list).
pub async fn page_rows(pool: &PgPool, q: &PageQuery) -> Result<Vec<ListedOpportunity>, sqlx::Error> {
    let f = &q.filter;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LISTED} FROM (SELECT * FROM opportunities o WHERE {FILTER} ORDER BY {order} LIMIT $5 OFFSET $6) o \
         {LATEST_ACTION} ORDER BY {order}",
        order = q.sort.order_by()
    )))
    .bind(&f.deployment)
    .bind(&f.node)
    .bind(&f.kind)
    .bind(&f.status)
    .bind(f.limit)
    .bind(f.offset)
    .fetch_all(pool)
    .await
}

/// One opportunity as the dashboard shows it.
pub async fn listed(pool: &PgPool, id: i64) -> Result<Option<ListedOpportunity>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {LISTED} FROM opportunities o {LATEST_ACTION} WHERE o.id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Open opportunities and the money they would save per week (positive savings only).
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct OpenSummary {
    /// Open opportunities.
    pub open: i64,
    /// Sum of positive savings per week.
    pub saving_per_week: f64,
    /// Sum of positive GPU-hours per week.
    pub gpu_hours_per_week: f64,
}

/// Counts and sums over the open opportunities (one pass over the `status` index).
pub async fn open_summary(pool: &PgPool) -> Result<OpenSummary, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) AS open, \
                coalesce(sum(saving_per_week) FILTER (WHERE saving_per_week > 0), 0)::float8 AS saving_per_week, \
                coalesce(sum(gpu_hours_per_week) FILTER (WHERE gpu_hours_per_week > 0), 0)::float8 AS gpu_hours_per_week \
         FROM opportunities WHERE status = 'open'",
    )
    .fetch_one(pool)
    .await
}

/// Dismisses an open (or already dismissed) opportunity from the dashboard, recording who; `None` if there is
/// no such id or it is closed.
pub async fn dismiss_by(
    pool: &PgPool,
    id: i64,
    reason: &str,
    user: &str,
    now: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE opportunities SET status = 'dismissed', dismissed_at = $3, dismissed_reason = $2, dismissed_by = $4 \
         WHERE id = $1 AND status IN ('open', 'dismissed') RETURNING id",
    )
    .bind(id)
    .bind(reason)
    .bind(now)
    .bind(user)
    .fetch_optional(pool)
    .await
}

/// A one-click action about to be recorded.
#[derive(Debug, Clone)]
pub struct NewAction<'a> {
    /// Opportunity.
    pub opportunity_id: i64,
    /// When.
    pub acted_at: DateTime<Utc>,
    /// Who.
    pub acted_by: &'a str,
    /// The command as the opportunity described it.
    pub command: &'a serde_json::Value,
    /// Whether it was carried out.
    pub ok: bool,
    /// What happened.
    pub result: &'a str,
    /// Decision recorded, if any.
    pub decision_id: Option<i64>,
    /// Agent commands queued.
    pub command_ids: &'a [uuid::Uuid],
}

/// Records a one-click action; returns its id.
pub async fn record_action(pool: &PgPool, a: &NewAction<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO opportunity_actions (opportunity_id, acted_at, acted_by, command, ok, result, decision_id, command_ids) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(a.opportunity_id)
    .bind(a.acted_at)
    .bind(a.acted_by)
    .bind(a.command)
    .bind(a.ok)
    .bind(a.result)
    .bind(a.decision_id)
    .bind(a.command_ids)
    .fetch_one(pool)
    .await
}

/// The newest actions on an opportunity.
pub async fn actions(pool: &PgPool, opportunity_id: i64, limit: i64) -> Result<Vec<ActionRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, acted_at, acted_by, command, ok, result, decision_id, command_ids FROM opportunity_actions \
         WHERE opportunity_id = $1 ORDER BY acted_at DESC, id DESC LIMIT $2",
    )
    .bind(opportunity_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The nodes that declared they serve `deployment`.
pub async fn nodes_serving(pool: &PgPool, deployment: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT node_id FROM nodes WHERE deployment = $1 ORDER BY node_id")
        .bind(deployment)
        .fetch_all(pool)
        .await
}

/// An opportunity as the fault benchmark scores it: kind, node, GPU, deployment.
pub type OpenedOpportunity = (String, Option<String>, Option<i32>, Option<String>);

/// The opportunities of the given kinds first seen exactly at `at` and still open.
pub async fn opened_at(
    pool: &PgPool,
    at: DateTime<Utc>,
    kinds: &[&str],
) -> Result<Vec<OpenedOpportunity>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, node_id, gpu_index, deployment FROM opportunities \
         WHERE first_seen = $1 AND status = 'open' AND kind = ANY($2)",
    )
    .bind(at)
    .bind(kinds)
    .fetch_all(pool)
    .await
}
