//! Read models of the dashboard.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Total;

/// One node row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GpuRow {
    /// Node.
    pub node_id: String,
    /// Index.
    pub gpu_index: i32,
    /// Model name.
    pub model: String,
    /// Latest sample time.
    pub ts: DateTime<Utc>,
    /// Utilisation %; `null` when the agent could not read it (unknown, not idle).
    pub util_pct: Option<f32>,
    /// Memory used, bytes; `null` when unknown.
    pub mem_used_bytes: Option<i64>,
    /// Memory total, bytes; `null` when unknown.
    pub mem_total_bytes: Option<i64>,
    /// Power, W; `null` when unknown.
    pub power_w: Option<f32>,
    /// Temperature, C; `null` when unknown.
    pub temp_c: Option<f32>,
}

/// One decision row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

/// The overview tiles that are cheap to compute on every request (latest readings only).
#[derive(Debug, Clone, Default, serde::Serialize, sqlx::FromRow)]
pub struct Tiles {
    /// GPUs with a reading within the freshness window.
    pub gpus_reporting: i64,
    /// Of those, GPUs under 5 % on nodes that serve a deployment or belong to a group (allocated).
    pub idle_allocated: i64,
    /// Mean utilisation of reporting GPUs, %.
    pub mean_util_pct: Option<f64>,
    /// Reporting GPUs with a throttle reason other than "idle" set.
    pub throttled: i64,
    /// Reporting GPUs whose last XID error is not 0.
    pub xid: i64,
    /// Nodes not heard from within the freshness window.
    pub silent_nodes: i64,
    /// Nodes known.
    pub nodes: i64,
    /// Alerts firing.
    pub open_alerts: i64,
}

/// The cheap overview tiles; "reporting" means a reading within `fresh_secs`.
pub async fn tiles(pool: &PgPool, fresh_secs: u32) -> Result<Tiles, sqlx::Error> {
    sqlx::query_as(
        "WITH g AS (SELECT l.util_pct, l.throttle_reasons, l.xid_last, \
                           (n.deployment IS NOT NULL OR n.agent_group IS NOT NULL) AS allocated \
                    FROM gpu_latest l JOIN nodes n USING (node_id) WHERE l.ts >= now() - make_interval(secs => $1)) \
         SELECT (SELECT count(*) FROM g) AS gpus_reporting, \
                (SELECT count(*) FROM g WHERE allocated AND util_pct < 5) AS idle_allocated, \
                (SELECT avg(util_pct)::float8 FROM g) AS mean_util_pct, \
                (SELECT count(*) FROM g WHERE (throttle_reasons & ~1::bigint) <> 0) AS throttled, \
                (SELECT count(*) FROM g WHERE xid_last <> 0) AS xid, \
                (SELECT count(*) FROM nodes WHERE last_seen < now() - make_interval(secs => $1)) AS silent_nodes, \
                (SELECT count(*) FROM nodes) AS nodes, \
                (SELECT count(*) FROM alerts WHERE state = 'firing') AS open_alerts",
    )
    .bind(f64::from(fresh_secs))
    .fetch_one(pool)
    .await
}

/// Figures that scan history (cached by the dashboard, refreshed in the background).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SlowTiles {
    /// GPU-hours spent under 5 % utilisation since midnight UTC.
    pub idle_gpu_hours_today: f64,
    /// GPUs with an uncorrectable (double-bit) ECC error count above 0 in the last 10 minutes.
    pub ecc_gpus: i64,
}

/// Idle GPU-hours since midnight UTC (hourly rollups for complete hours, minute rollups for the current one)
/// and GPUs with ECC errors recently.
pub async fn slow_tiles(pool: &PgPool) -> Result<SlowTiles, sqlx::Error> {
    let (idle, ecc): (Option<f64>, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FILTER (WHERE util_mean < 5)::float8 FROM gpu_rollup_1h \
                 WHERE bucket >= date_trunc('day', now()) AND bucket < date_trunc('hour', now())) \
              + (SELECT count(*) FILTER (WHERE util_mean < 5)::float8 / 60.0 FROM gpu_rollup_1m \
                 WHERE bucket >= greatest(date_trunc('hour', now()), date_trunc('day', now()))), \
                (SELECT count(DISTINCT (node_id, gpu_index)) \
                 FROM gpu_samples_between(now() - interval '10 minutes', 'infinity') WHERE ecc_dbe_total > 0)",
    )
    .fetch_one(pool)
    .await?;
    Ok(SlowTiles { idle_gpu_hours_today: idle.unwrap_or(0.0), ecc_gpus: ecc })
}

/// Node ids for one page of the heatmap, and how many nodes there are.
pub async fn node_page(pool: &PgPool, limit: i64, offset: i64) -> Result<(Vec<String>, i64), sqlx::Error> {
    let ids = sqlx::query_scalar("SELECT node_id FROM nodes ORDER BY node_id LIMIT $1 OFFSET $2")
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM nodes").fetch_one(pool).await?;
    Ok((ids, total))
}

/// Latest reading of the GPUs of `nodes`.
pub async fn gpus_of(pool: &PgPool, nodes: &[String]) -> Result<Vec<GpuRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, gpu_index, model, ts, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c \
         FROM gpu_latest WHERE node_id = ANY($1) ORDER BY node_id, gpu_index",
    )
    .bind(nodes)
    .fetch_all(pool)
    .await
}

/// A node with its agent's status.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct NodeDetail {
    /// Node id.
    pub node_id: String,
    /// Host name.
    pub hostname: String,
    /// Agent version.
    pub agent_version: String,
    /// GPU source.
    pub gpu_source: String,
    /// Agent group.
    pub agent_group: Option<String>,
    /// Deployment served.
    pub deployment: Option<String>,
    /// First contact.
    pub first_seen: DateTime<Utc>,
    /// Last contact.
    pub last_seen: DateTime<Utc>,
}

/// One node.
pub async fn node(pool: &PgPool, node: &str) -> Result<Option<NodeDetail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, hostname, agent_version, gpu_source, agent_group, deployment, first_seen, last_seen \
         FROM nodes WHERE node_id = $1",
    )
    .bind(node)
    .fetch_optional(pool)
    .await
}

/// A decision with its id and policy, for lists and timelines.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DecisionItem {
    /// Id.
    pub id: i64,
    /// Policy.
    pub policy_id: uuid::Uuid,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// Target label.
    pub target: String,
    /// Replicas before.
    pub current_replicas: i32,
    /// Replicas decided.
    pub desired_replicas: i32,
    /// Winning proposal.
    pub winner: String,
    /// Why, in words.
    pub reason: String,
    /// Recorded only.
    pub dry_run: bool,
    /// Applied.
    pub applied: bool,
    /// Why acting failed.
    pub error: Option<String>,
}

/// Outcome filter of the decisions list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeFilter {
    /// Any.
    All,
    /// Changed the replica count.
    Changed,
    /// Applied.
    Applied,
    /// Dry run.
    DryRun,
    /// Failed.
    Failed,
}

/// Filters, sort and page of the decisions list.
#[derive(Debug, Clone)]
pub struct DecisionQuery {
    /// Substring of the target label.
    pub target: Option<String>,
    /// Outcome.
    pub outcome: OutcomeFilter,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    /// Rows per page.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
}

const DECISION_COLUMNS: &str =
    "id, policy_id, decided_at, target, current_replicas, desired_replicas, winner, reason, dry_run, applied, error";

/// The SQL condition of a decisions-list filter (`$1`: the target substring).
fn decision_filter(q: &DecisionQuery) -> String {
    // Every piece of SQL below comes from closed enums; values are bound.
    let outcome = match q.outcome {
        OutcomeFilter::All => "true",
        OutcomeFilter::Changed => "desired_replicas <> current_replicas",
        OutcomeFilter::Applied => "applied",
        OutcomeFilter::DryRun => "dry_run",
        OutcomeFilter::Failed => "error IS NOT NULL",
    };
    format!("($1::text IS NULL OR target ILIKE '%' || $1 || '%') AND {outcome}")
}

/// One page of decisions.
pub async fn decision_rows(pool: &PgPool, q: &DecisionQuery) -> Result<Vec<DecisionItem>, sqlx::Error> {
    let order = if q.oldest_first { "decided_at, id" } else { "decided_at DESC, id DESC" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DECISION_COLUMNS} FROM decisions WHERE {} ORDER BY {order} LIMIT $2 OFFSET $3",
        decision_filter(q)
    )))
    .bind(q.target.as_deref())
    .bind(q.limit)
    .bind(q.offset)
    .fetch_all(pool)
    .await
}

/// How many decisions the filter matches, counted up to [`super::COUNT_CAP`] (or past the page).
pub async fn decision_total(pool: &PgPool, q: &DecisionQuery) -> Result<Total, sqlx::Error> {
    let cap = Total::limit(q.offset, q.limit);
    let counted = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM (SELECT 1 FROM decisions WHERE {} LIMIT $2) c",
        decision_filter(q)
    )))
    .bind(q.target.as_deref())
    .bind(cap)
    .fetch_one(pool)
    .await?;
    Ok(Total::from_counted(counted, cap))
}

/// Decisions of some policies since `since`, newest first.
pub async fn decisions_of(
    pool: &PgPool,
    policies: &[uuid::Uuid],
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DecisionItem>, sqlx::Error> {
    // One index range per policy. With `policy_id = ANY($1)` the generic plan that PostgreSQL settles on for
    // the prepared statement after a few runs walks `decisions_decided_at` and filters every decision of
    // every policy in the range: 35 ms instead of 0.3 ms at 500 policies x 200 decisions an hour.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DECISION_COLUMNS} FROM unnest($1::uuid[]) p (policy) CROSS JOIN LATERAL ( \
             SELECT {DECISION_COLUMNS} FROM decisions WHERE policy_id = p.policy AND decided_at >= $2 \
             ORDER BY decided_at DESC, id DESC LIMIT $3) d \
         ORDER BY decided_at DESC, id DESC LIMIT $3"
    )))
    .bind(policies)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What a deployment page draws of a policy's decisions: the ones in `[since, now]` that changed the
/// replicas or failed (newest first, at most `limit`), the newest few whatever they were, and the last one
/// before `since` (where the chart's replica steps start). Newest first, each once.
pub async fn decision_steps(
    pool: &PgPool,
    policy: uuid::Uuid,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DecisionItem>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (decided_at, id) * FROM ( \
             (SELECT {DECISION_COLUMNS} FROM decisions WHERE policy_id = $1 AND decided_at >= $2 \
                AND (desired_replicas <> current_replicas OR error IS NOT NULL) ORDER BY decided_at DESC, id DESC LIMIT $3) \
             UNION ALL (SELECT {DECISION_COLUMNS} FROM decisions WHERE policy_id = $1 ORDER BY decided_at DESC, id DESC LIMIT 5) \
             UNION ALL (SELECT {DECISION_COLUMNS} FROM decisions WHERE policy_id = $1 AND decided_at < $2 \
                ORDER BY decided_at DESC, id DESC LIMIT 1)) d \
         ORDER BY decided_at DESC, id DESC"
    )))
    .bind(policy)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A stored forecast.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct ForecastRow {
    /// When it was made.
    pub made_at: DateTime<Utc>,
    /// Seconds per step.
    pub step_secs: i32,
    /// Model.
    pub model: String,
    /// Point forecast per step.
    pub point: Vec<f64>,
    /// Lower bound per step.
    pub lower: Vec<f64>,
    /// Upper bound per step.
    pub upper: Vec<f64>,
    /// Interval level.
    pub level: f64,
}

/// The latest forecast of a policy.
pub async fn latest_forecast(pool: &PgPool, policy: uuid::Uuid) -> Result<Option<ForecastRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT made_at, step_secs, model, point, lower, upper, level FROM forecasts WHERE policy_id = $1 \
         ORDER BY made_at DESC LIMIT 1",
    )
    .bind(policy)
    .fetch_optional(pool)
    .await
}

/// Rebatch commands sent for a deployment, newest first.
pub async fn rebatch_commands(
    pool: &PgPool,
    deployment: &str,
    limit: i64,
) -> Result<Vec<super::commands::CommandRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, node_id, action, decision_id, created_at, delivered_at, acked_at, completed_at, ok, result \
         FROM commands WHERE action->>'kind' = 'rebatch' AND action->>'deployment' = $1 \
         ORDER BY created_at DESC LIMIT $2",
    )
    .bind(deployment)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A deployment seen in serving data or named by a policy.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeploymentRow {
    /// `namespace/name`.
    pub deployment: String,
    /// Replicas reporting.
    pub replicas: i64,
    /// Requests per second, summed.
    pub requests_per_s: Option<f64>,
    /// Worst TTFT p95, s.
    pub ttft_p95_s: Option<f64>,
    /// Latest reading.
    pub last_ts: Option<DateTime<Utc>>,
}

/// Deployments with their latest serving readings.
pub async fn deployments(pool: &PgPool) -> Result<Vec<DeploymentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT deployment, count(*) AS replicas, sum(requests_per_s)::float8 AS requests_per_s, \
                max(ttft_p95_s)::float8 AS ttft_p95_s, max(ts) AS last_ts \
         FROM serving_latest GROUP BY deployment ORDER BY deployment",
    )
    .fetch_all(pool)
    .await
}

/// An alert, open or resolved.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AlertItem {
    /// Id.
    pub id: i64,
    /// Rule.
    pub rule: String,
    /// Severity.
    pub severity: String,
    /// Source (node, GPU, deployment).
    pub source: String,
    /// Summary.
    pub summary: String,
    /// Group (`node/<id>`, `deployment/<name>`): what a silence from the list matches.
    pub group_name: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// Fired.
    pub started_at: DateTime<Utc>,
    /// Resolved.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Orders of the alerts list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AlertSort {
    /// Newest first.
    #[default]
    Newest,
    /// Oldest first.
    Oldest,
    /// Most severe first, then newest.
    Severity,
}

/// Filters, sort and page of the alerts list.
#[derive(Debug, Clone)]
pub struct AlertQuery {
    /// `firing`, `resolved`, or any.
    pub state: Option<String>,
    /// Severity.
    pub severity: Option<String>,
    /// Substring of the rule or source.
    pub search: Option<String>,
    /// One of the incident's rules, exactly.
    pub rule: Option<String>,
    /// The node's group (`node/<id>`).
    pub node: Option<String>,
    /// The deployment's group (`deployment/<namespace/name>`).
    pub deployment: Option<String>,
    /// Order.
    pub sort: AlertSort,
    /// Rows per page.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
}

/// One page of alerts and the number matching (counted up to [`super::COUNT_CAP`]).
pub async fn alert_page(pool: &PgPool, q: &AlertQuery) -> Result<(Vec<AlertItem>, Total), sqlx::Error> {
    let order = match q.sort {
        AlertSort::Newest => "started_at DESC, id DESC",
        AlertSort::Oldest => "started_at, id",
        AlertSort::Severity => {
            "CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END, \
             started_at DESC, id DESC"
        }
    };
    // An incident's `rule` lists the rules of its members, comma-separated.
    let filter = "($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR severity = $2) \
                  AND ($3::text IS NULL OR rule ILIKE '%' || $3 || '%' OR source ILIKE '%' || $3 || '%') \
                  AND ($4::text IS NULL OR $4 = ANY (string_to_array(rule, ','))) \
                  AND ($5::text IS NULL OR group_name = 'node/' || $5) \
                  AND ($6::text IS NULL OR group_name = 'deployment/' || $6)";
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, rule, severity, source, summary, group_name, state, started_at, resolved_at FROM alerts \
         WHERE {filter} ORDER BY {order} LIMIT $7 OFFSET $8"
    )))
    .bind(q.state.as_deref())
    .bind(q.severity.as_deref())
    .bind(q.search.as_deref())
    .bind(q.rule.as_deref())
    .bind(q.node.as_deref())
    .bind(q.deployment.as_deref())
    .bind(q.limit)
    .bind(q.offset)
    .fetch_all(pool)
    .await?;
    let cap = Total::limit(q.offset, q.limit);
    let counted = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM (SELECT 1 FROM alerts WHERE {filter} LIMIT $7) c"
    )))
    .bind(q.state.as_deref())
    .bind(q.severity.as_deref())
    .bind(q.search.as_deref())
    .bind(q.rule.as_deref())
    .bind(q.node.as_deref())
    .bind(q.deployment.as_deref())
    .bind(cap)
    .fetch_one(pool)
    .await?;
    Ok((rows, Total::from_counted(counted, cap)))
}

/// A serving replica's latest reading.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct ReplicaRow {
    /// Replica name.
    pub replica: String,
    /// Node it runs on.
    pub node_id: String,
    /// Serving engine.
    pub engine: String,
    /// When it last reported.
    pub ts: DateTime<Utc>,
    /// Requests waiting.
    pub queue_depth: f32,
    /// Requests running.
    pub running: f32,
    /// KV-cache use, %.
    pub kv_cache_pct: Option<f32>,
    /// TTFT p95, s.
    pub ttft_p95_s: Option<f32>,
    /// Inter-token latency p95, s.
    pub itl_p95_s: Option<f32>,
    /// Requests per second.
    pub requests_per_s: f32,
    /// Mean batch size observed.
    pub batch_size_mean: Option<f32>,
}

/// A deployment's replicas, by name.
pub async fn replicas_of(pool: &PgPool, deployment: &str) -> Result<Vec<ReplicaRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT replica, node_id, engine, ts, queue_depth, running, kv_cache_pct, ttft_p95_s, itl_p95_s, requests_per_s, \
                batch_size_mean FROM serving_latest WHERE deployment = $1 ORDER BY replica LIMIT 1000",
    )
    .bind(deployment)
    .fetch_all(pool)
    .await
}

/// The batching each node of a deployment was last set to: its newest applied rebatch command.
pub async fn applied_batching(
    pool: &PgPool,
    deployment: &str,
) -> Result<Vec<super::commands::CommandRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (node_id) id, node_id, action, decision_id, created_at, delivered_at, acked_at, completed_at, ok, result \
         FROM commands WHERE action->>'kind' = 'rebatch' AND action->>'deployment' = $1 AND ok \
         ORDER BY node_id, created_at DESC",
    )
    .bind(deployment)
    .fetch_all(pool)
    .await
}

/// What `/metrics` publishes about the fleet (the same on every replica: read from the store).
#[derive(Debug, Clone, Default)]
pub struct FleetGaugeRows {
    /// The overview's cheap tiles (GPUs reporting, idle allocated, throttled, XID, silent nodes, alerts).
    pub tiles: Tiles,
    /// GPU-equivalents idle over the latest idle-capacity refresh, if there was one.
    pub idle_gpu_equivalent: Option<f64>,
    /// Open opportunities' money per week by kind.
    pub opportunity_money: Vec<(String, f64)>,
    /// Firing incidents by severity.
    pub firing: Vec<(String, i64)>,
}

/// Reads [`FleetGaugeRows`] ("reporting" = a reading within `fresh_secs`).
pub async fn fleet_gauges(pool: &PgPool, fresh_secs: u32) -> Result<FleetGaugeRows, sqlx::Error> {
    let (tiles, idle, money, firing) = tokio::try_join!(
        tiles(pool, fresh_secs),
        sqlx::query_scalar::<_, f64>("SELECT idle_gpu_equivalent FROM idle_capacity ORDER BY computed_at DESC LIMIT 1")
            .fetch_optional(pool),
        sqlx::query_as::<_, (String, f64)>(
            "SELECT kind, coalesce(sum(saving_per_week) FILTER (WHERE saving_per_week > 0), 0)::float8 \
             FROM opportunities WHERE status = 'open' GROUP BY kind",
        )
        .fetch_all(pool),
        sqlx::query_as::<_, (String, i64)>(
            "SELECT severity, count(*) FROM alerts WHERE state = 'firing' GROUP BY severity"
        )
        .fetch_all(pool),
    )?;
    Ok(FleetGaugeRows { tiles, idle_gpu_equivalent: idle, opportunity_money: money, firing })
}

/// How many nodes have an id matching the `LIKE` pattern.
pub async fn nodes_named_like(pool: &PgPool, pattern: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM nodes WHERE node_id LIKE $1").bind(pattern).fetch_one(pool).await
}
