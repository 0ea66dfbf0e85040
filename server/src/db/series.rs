//! The read path: a GPU's or a deployment's series over a time range, from raw samples or rollups picked
//! by the range, and the fleet overview. Used by the API and the dashboard.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::domain::policy::Metric;

/// Which table a series came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Raw samples (ranges up to 2 hours).
    Raw,
    /// 1-minute rollups (up to 3 days).
    Minute,
    /// 1-hour rollups.
    Hour,
}

/// The resolution for a range: about 7,200 points at most from raw data, 4,320 from minutes.
pub fn resolution_for(from: DateTime<Utc>, to: DateTime<Utc>) -> Resolution {
    let span = to - from;
    if span <= Duration::hours(2) {
        Resolution::Raw
    } else if span <= Duration::days(3) {
        Resolution::Minute
    } else {
        Resolution::Hour
    }
}

/// One point of a GPU series.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GpuPoint {
    /// Time (bucket start for rollups).
    pub ts: DateTime<Utc>,
    /// Utilisation % (mean over the bucket).
    pub util_pct: f32,
    /// Maximum utilisation % in the bucket.
    pub util_max: f32,
    /// Memory used, bytes (max over the bucket).
    pub mem_used_bytes: i64,
    /// Power, W (mean).
    pub power_w: f32,
    /// Temperature, C (mean).
    pub temp_c: f32,
    /// SM clock, MHz (min).
    pub sm_clock_mhz: i32,
    /// Throttle reasons seen (OR over the bucket).
    pub throttle_reasons: i64,
}

/// A GPU's series between `from` and `to`.
pub async fn gpu_series(
    pool: &PgPool,
    node: &str,
    gpu: i32,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(Resolution, Vec<GpuPoint>), sqlx::Error> {
    let res = resolution_for(from, to);
    let sql = match res {
        Resolution::Raw => {
            "SELECT ts, util_pct, util_pct AS util_max, mem_used_bytes, power_w, temp_c, sm_clock_mhz, throttle_reasons \
             FROM gpu_samples WHERE node_id = $1 AND gpu_index = $2 AND ts >= $3 AND ts < $4 ORDER BY ts"
        }
        Resolution::Minute => {
            "SELECT bucket AS ts, util_mean AS util_pct, util_max, mem_used_max AS mem_used_bytes, power_mean AS power_w, \
             temp_mean AS temp_c, sm_clock_min AS sm_clock_mhz, throttle_any AS throttle_reasons \
             FROM gpu_rollup_1m WHERE node_id = $1 AND gpu_index = $2 AND bucket >= $3 AND bucket < $4 ORDER BY bucket"
        }
        Resolution::Hour => {
            "SELECT bucket AS ts, util_mean AS util_pct, util_max, mem_used_max AS mem_used_bytes, power_mean AS power_w, \
             temp_mean AS temp_c, sm_clock_min AS sm_clock_mhz, throttle_any AS throttle_reasons \
             FROM gpu_rollup_1h WHERE node_id = $1 AND gpu_index = $2 AND bucket >= $3 AND bucket < $4 ORDER BY bucket"
        }
    };
    let points = sqlx::query_as(sql).bind(node).bind(gpu).bind(from).bind(to).fetch_all(pool).await?;
    Ok((res, points))
}

/// One point of a deployment series (summed or maxed over replicas).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeploymentPoint {
    /// Time (bucket start for rollups).
    pub ts: DateTime<Utc>,
    /// Replicas reporting.
    pub replicas: i64,
    /// Requests waiting, summed.
    pub queue_depth: f64,
    /// Requests running, summed.
    pub running: f64,
    /// KV-cache use %, mean.
    pub kv_cache_pct: Option<f64>,
    /// TTFT p95, s (worst replica).
    pub ttft_p95_s: Option<f64>,
    /// Inter-token latency p95, s (worst replica).
    pub itl_p95_s: Option<f64>,
    /// Requests per second, summed.
    pub requests_per_s: f64,
    /// Generated tokens per second, summed.
    pub generation_tokens_per_s: f64,
}

/// A deployment's series between `from` and `to` (raw data is aggregated per second).
pub async fn deployment_series(
    pool: &PgPool,
    deployment: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(Resolution, Vec<DeploymentPoint>), sqlx::Error> {
    let res = resolution_for(from, to);
    let sql = match res {
        Resolution::Raw => {
            "SELECT date_trunc('second', ts) AS ts, count(DISTINCT replica) AS replicas, sum(queue_depth)::float8 AS queue_depth, \
             sum(running)::float8 AS running, avg(kv_cache_pct)::float8 AS kv_cache_pct, max(ttft_p95_s)::float8 AS ttft_p95_s, \
             max(itl_p95_s)::float8 AS itl_p95_s, sum(requests_per_s)::float8 AS requests_per_s, \
             sum(generation_tokens_per_s)::float8 AS generation_tokens_per_s \
             FROM serving_samples WHERE deployment = $1 AND ts >= $2 AND ts < $3 GROUP BY 1 ORDER BY 1"
        }
        Resolution::Minute => {
            "SELECT bucket AS ts, count(*) AS replicas, sum(queue_mean)::float8 AS queue_depth, sum(running_mean)::float8 AS running, \
             avg(kv_cache_mean)::float8 AS kv_cache_pct, max(ttft_p95_max)::float8 AS ttft_p95_s, max(itl_p95_max)::float8 AS itl_p95_s, \
             sum(requests_per_s)::float8 AS requests_per_s, sum(generation_tps)::float8 AS generation_tokens_per_s \
             FROM serving_rollup_1m WHERE deployment = $1 AND bucket >= $2 AND bucket < $3 GROUP BY 1 ORDER BY 1"
        }
        Resolution::Hour => {
            "SELECT bucket AS ts, count(*) AS replicas, sum(queue_mean)::float8 AS queue_depth, sum(running_mean)::float8 AS running, \
             avg(kv_cache_mean)::float8 AS kv_cache_pct, max(ttft_p95_max)::float8 AS ttft_p95_s, max(itl_p95_max)::float8 AS itl_p95_s, \
             sum(requests_per_s)::float8 AS requests_per_s, sum(generation_tps)::float8 AS generation_tokens_per_s \
             FROM serving_rollup_1h WHERE deployment = $1 AND bucket >= $2 AND bucket < $3 GROUP BY 1 ORDER BY 1"
        }
    };
    let points = sqlx::query_as(sql).bind(deployment).bind(from).bind(to).fetch_all(pool).await?;
    Ok((res, points))
}

/// The fleet at a glance, from the latest readings.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FleetOverview {
    /// Nodes known.
    pub nodes: i64,
    /// Nodes heard from recently.
    pub nodes_reporting: i64,
    /// GPUs with a recent reading.
    pub gpus_reporting: i64,
    /// Mean utilisation of reporting GPUs, %.
    pub mean_util_pct: Option<f64>,
    /// Reporting GPUs under 5 % utilisation.
    pub idle_gpus: i64,
    /// Reporting GPUs with a throttle reason set.
    pub throttled_gpus: i64,
    /// Reporting GPUs with an XID error.
    pub xid_gpus: i64,
    /// Power drawn by reporting GPUs, W.
    pub power_w: Option<f64>,
}

/// Fleet overview; "recent" means within `fresh_secs`.
pub async fn fleet_overview(pool: &PgPool, fresh_secs: u32) -> Result<FleetOverview, sqlx::Error> {
    sqlx::query_as(
        "WITH g AS (SELECT * FROM gpu_latest WHERE ts >= now() - make_interval(secs => $1)) \
         SELECT (SELECT count(*) FROM nodes) AS nodes, \
                (SELECT count(*) FROM nodes WHERE last_seen >= now() - make_interval(secs => $1)) AS nodes_reporting, \
                (SELECT count(*) FROM g) AS gpus_reporting, \
                (SELECT avg(util_pct)::float8 FROM g) AS mean_util_pct, \
                (SELECT count(*) FROM g WHERE util_pct < 5) AS idle_gpus, \
                (SELECT count(*) FROM g WHERE throttle_reasons <> 0) AS throttled_gpus, \
                (SELECT count(*) FROM g WHERE xid_last <> 0) AS xid_gpus, \
                (SELECT sum(power_w)::float8 FROM g) AS power_w",
    )
    .bind(f64::from(fresh_secs))
    .fetch_one(pool)
    .await
}

/// One aggregated point: the metric summed over the deployment's replicas (or GPUs) in a time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Bucket start, Unix seconds.
    pub bucket_secs: i64,
    /// Sum over replicas of their mean in the bucket.
    pub total: f64,
    /// How many replicas (or GPUs) reported in the bucket.
    pub members: i64,
}

/// Nodes serving `deployment` or belonging to agent `group`.
pub async fn nodes_of(pool: &PgPool, deployment: &str, group: Option<&str>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT node_id FROM nodes WHERE deployment = $1 OR ($2::text IS NOT NULL AND agent_group = $2) ORDER BY node_id",
    )
    .bind(deployment)
    .bind(group)
    .fetch_all(pool)
    .await
}

/// What a scaling policy sees: `metric` of a deployment (GPU utilisation of the nodes serving it or of its
/// agent `group`) summed over replicas per `bucket_secs` bucket in `[from, to)`. Raw samples for ranges up
/// to 2 hours or buckets under a minute, 1-minute rollups otherwise (the bucket is then a whole number of
/// minutes). Used by the control loop and the API alike. Returns the points and the nodes considered.
pub async fn deployment_metric(
    pool: &PgPool,
    deployment: &str,
    group: Option<&str>,
    metric: Metric,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_secs: u32,
) -> Result<(Vec<Point>, Vec<String>), sqlx::Error> {
    let nodes = nodes_of(pool, deployment, group).await?;
    let rollup = to - from > Duration::hours(2) && bucket_secs >= 60;
    let bucket = if rollup { i64::from(bucket_secs).div_euclid(60).max(1) * 60 } else { i64::from(bucket_secs.max(1)) };
    // Columns come from closed enums, never from input.
    let sql = match (metric, rollup) {
        (Metric::GpuUtilization, false) => "SELECT b, sum(v)::float8, count(*) FROM ( \
               SELECT floor(extract(epoch FROM ts) / $3)::bigint * $3 AS b, node_id, gpu_index, avg(util_pct) AS v \
               FROM gpu_samples WHERE node_id = ANY($1) AND ts >= $4 AND ts < $5 GROUP BY 1, 2, 3) t GROUP BY b ORDER BY b"
            .to_string(),
        (Metric::GpuUtilization, true) => "SELECT b, sum(v)::float8, count(*) FROM ( \
               SELECT floor(extract(epoch FROM bucket) / $3)::bigint * $3 AS b, node_id, gpu_index, avg(util_mean) AS v \
               FROM gpu_rollup_1m WHERE node_id = ANY($1) AND bucket >= $4 AND bucket < $5 GROUP BY 1, 2, 3) t GROUP BY b ORDER BY b"
            .to_string(),
        (m, false) => {
            let column = match m {
                Metric::QueueDepthPerReplica => "queue_depth",
                Metric::KvCachePct => "coalesce(kv_cache_pct, 0)",
                _ => "generation_tokens_per_s",
            };
            format!(
                "SELECT b, sum(v)::float8, count(*) FROM ( \
                 SELECT floor(extract(epoch FROM ts) / $3)::bigint * $3 AS b, replica, avg({column}) AS v \
                 FROM serving_samples WHERE deployment = $2 AND ts >= $4 AND ts < $5 GROUP BY 1, 2) t GROUP BY b ORDER BY b"
            )
        }
        (m, true) => {
            let column = match m {
                Metric::QueueDepthPerReplica => "queue_mean",
                Metric::KvCachePct => "coalesce(kv_cache_mean, 0)",
                _ => "generation_tps",
            };
            format!(
                "SELECT b, sum(v)::float8, count(*) FROM ( \
                 SELECT floor(extract(epoch FROM bucket) / $3)::bigint * $3 AS b, replica, avg({column}) AS v \
                 FROM serving_rollup_1m WHERE deployment = $2 AND bucket >= $4 AND bucket < $5 GROUP BY 1, 2) t GROUP BY b ORDER BY b"
            )
        }
    };
    let rows: Vec<(i64, f64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&nodes)
        .bind(deployment)
        .bind(bucket)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    Ok((rows.into_iter().map(|(b, total, members)| Point { bucket_secs: b, total, members }).collect(), nodes))
}

/// One bucket of one GPU of a node (the node page's overview chart).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NodeGpuPoint {
    /// GPU index.
    pub gpu_index: i32,
    /// Bucket start.
    pub ts: DateTime<Utc>,
    /// Mean utilisation %.
    pub util_pct: f64,
    /// Mean power, W.
    pub power_w: f64,
}

/// Utilisation and power of every GPU of `node` in one query, averaged into about 300 buckets: raw samples up
/// to 15 minutes, 1-minute rollups up to 3 days, hourly beyond. A node's overview needs neither 1 s detail
/// nor one query per GPU (the GPU page has the raw series); the newest minute or two show up once rolled up.
pub async fn node_gpu_series(
    pool: &PgPool,
    node: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(Resolution, Vec<NodeGpuPoint>), sqlx::Error> {
    let span = (to - from).num_seconds().max(1);
    let res = match resolution_for(from, to) {
        Resolution::Raw if span > 15 * 60 => Resolution::Minute,
        r => r,
    };
    let (sql, floor) = match res {
        Resolution::Raw => (
            "SELECT gpu_index, to_timestamp(floor(extract(epoch FROM ts) / $4) * $4) AS ts, avg(util_pct)::float8 AS util_pct, \
             avg(power_w)::float8 AS power_w FROM gpu_samples WHERE node_id = $1 AND ts >= $2 AND ts < $3 GROUP BY 1, 2 ORDER BY 1, 2",
            1,
        ),
        Resolution::Minute => (
            "SELECT gpu_index, to_timestamp(floor(extract(epoch FROM bucket) / $4) * $4) AS ts, avg(util_mean)::float8 AS util_pct, \
             avg(power_mean)::float8 AS power_w FROM gpu_rollup_1m WHERE node_id = $1 AND bucket >= $2 AND bucket < $3 GROUP BY 1, 2 ORDER BY 1, 2",
            60,
        ),
        Resolution::Hour => (
            "SELECT gpu_index, to_timestamp(floor(extract(epoch FROM bucket) / $4) * $4) AS ts, avg(util_mean)::float8 AS util_pct, \
             avg(power_mean)::float8 AS power_w FROM gpu_rollup_1h WHERE node_id = $1 AND bucket >= $2 AND bucket < $3 GROUP BY 1, 2 ORDER BY 1, 2",
            3600,
        ),
    };
    let bucket = (span / 300).max(floor) as f64;
    let points = sqlx::query_as(sql).bind(node).bind(from).bind(to).bind(bucket).fetch_all(pool).await?;
    Ok((res, points))
}
