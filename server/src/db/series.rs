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

/// One point of a GPU series. A reading is `None` (JSON `null`) when no sample in the bucket had it (the
/// agent could not read it): unknown, which is not 0.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GpuPoint {
    /// Time (bucket start for rollups).
    pub ts: DateTime<Utc>,
    /// Utilisation % (mean over the bucket).
    pub util_pct: Option<f32>,
    /// Maximum utilisation % in the bucket.
    pub util_max: Option<f32>,
    /// Memory used, bytes (max over the bucket).
    pub mem_used_bytes: Option<i64>,
    /// Power, W (mean).
    pub power_w: Option<f32>,
    /// Temperature, C (mean).
    pub temp_c: Option<f32>,
    /// SM clock, MHz (min).
    pub sm_clock_mhz: Option<i32>,
    /// Throttle reasons seen (OR over the bucket).
    pub throttle_reasons: Option<i64>,
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
             FROM gpu_samples_between($3, $4) WHERE node_id = $1 AND gpu_index = $2 AND ts >= $3 AND ts < $4 ORDER BY ts"
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
             FROM serving_samples_between($2, $3) WHERE deployment = $1 AND ts >= $2 AND ts < $3 GROUP BY 1 ORDER BY 1"
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
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
    // Rollups up to `to`: no raw tail, as the control loop has always read them.
    let plan = ChartPlan {
        resolution: if rollup { Resolution::Minute } else { Resolution::Raw },
        bucket_secs: bucket,
        rollups_upto: Some(to),
        young: None,
    };
    let points = metric_series(pool, &nodes, deployment, metric, from, to, &plan).await?;
    Ok((points, nodes))
}

/// [`deployment_metric`] for a chart: read as `plan` says, the newest minutes from raw samples.
pub async fn deployment_metric_chart(
    pool: &PgPool,
    deployment: &str,
    group: Option<&str>,
    metric: Metric,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    plan: &ChartPlan,
) -> Result<(ChartPlan, Vec<Point>), sqlx::Error> {
    let nodes = nodes_of(pool, deployment, group).await?;
    let points = metric_series(pool, &nodes, deployment, metric, from, to, plan).await?;
    let first = points.first().and_then(|p| DateTime::from_timestamp(p.bucket_secs, 0));
    match plan.instead(first) {
        Some(raw) => Ok((raw, metric_series(pool, &nodes, deployment, metric, from, to, &raw).await?)),
        None => Ok((*plan, points)),
    }
}

/// `metric` of `nodes` (GPU utilisation) or of `deployment`'s replicas per `plan.bucket_secs` bucket: each
/// member's mean in the bucket (rollup minutes weighted by their samples), summed over members.
async fn metric_series(
    pool: &PgPool,
    nodes: &[String],
    deployment: &str,
    metric: Metric,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    plan: &ChartPlan,
) -> Result<Vec<Point>, sqlx::Error> {
    // $1 nodes, $2 deployment, $3 bucket, $4 from, $5 to, $6 end of the minute rollups. Columns come from
    // closed enums, never from input.
    let (members, raw, rollup, tail) = match metric {
        Metric::GpuUtilization => (
            "node_id, gpu_index",
            "SELECT ts AS t, node_id, gpu_index, util_pct AS v, 1 AS n FROM gpu_samples_between($4, $5) \
             WHERE node_id = ANY($1) AND ts >= $4 AND ts < $5"
                .to_string(),
            "SELECT bucket AS t, node_id, gpu_index, util_mean AS v, samples AS n FROM {table} \
             WHERE node_id = ANY($1) AND bucket >= $4 AND bucket < {end}"
                .to_string(),
            "SELECT date_trunc('minute', ts), node_id, gpu_index, avg(util_pct), count(*) \
             FROM gpu_samples_between(greatest($4, {UPTO}), $5) \
             WHERE node_id = ANY($1) AND ts >= greatest($4, {UPTO}) AND ts < $5 GROUP BY 1, 2, 3"
                .to_string(),
        ),
        m => {
            let (column, rolled) = match m {
                Metric::QueueDepthPerReplica => ("queue_depth", "queue_mean"),
                Metric::KvCachePct => ("coalesce(kv_cache_pct, 0)", "coalesce(kv_cache_mean, 0)"),
                _ => ("generation_tokens_per_s", "generation_tps"),
            };
            (
                "replica",
                format!(
                    "SELECT ts AS t, replica, {column} AS v, 1 AS n FROM serving_samples_between($4, $5) \
                     WHERE deployment = $2 AND ts >= $4 AND ts < $5"
                ),
                format!(
                    "SELECT bucket AS t, replica, {rolled} AS v, samples AS n FROM {{table}} \
                     WHERE deployment = $2 AND bucket >= $4 AND bucket < {{end}}"
                ),
                format!(
                    "SELECT date_trunc('minute', ts), replica, avg({column}), count(*) \
                     FROM serving_samples_between(greatest($4, {{UPTO}}), $5) \
                     WHERE deployment = $2 AND ts >= greatest($4, {{UPTO}}) AND ts < $5 GROUP BY 1, 2"
                ),
            )
        }
    };
    let (minute, hour) = match metric {
        Metric::GpuUtilization => ("gpu_rollup_1m", "gpu_rollup_1h"),
        _ => ("serving_rollup_1m", "serving_rollup_1h"),
    };
    let inner = ChartRows { raw: &raw, rollup: &rollup, tail: &tail, tables: (minute, hour) }.sql(plan, 4, 5, 6);
    let sql = format!(
        "SELECT b, sum(v)::float8, count(*) FROM ( \
         SELECT floor(date_part('epoch', t) / $3)::bigint * $3 AS b, {members}, \
                sum(v * n) / nullif(sum(n) FILTER (WHERE v IS NOT NULL), 0) AS v \
         FROM ({inner}) s GROUP BY 1, {members}) t WHERE v IS NOT NULL GROUP BY b ORDER BY b"
    );
    let rows: Vec<(i64, f64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(nodes)
        .bind(deployment)
        .bind(plan.bucket_secs)
        .bind(from)
        .bind(to)
        .bind(plan.rollups_upto)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(b, total, members)| Point { bucket_secs: b, total, members }).collect())
}

/// One bucket of one GPU of a node (the node page's overview chart).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NodeGpuPoint {
    /// GPU index.
    pub gpu_index: i32,
    /// Bucket start.
    pub ts: DateTime<Utc>,
    /// Mean utilisation %; `None` when no sample in the bucket had it.
    pub util_pct: Option<f64>,
    /// Mean power, W; `None` when no sample in the bucket had it.
    pub power_w: Option<f64>,
}

/// Utilisation and power of every GPU of `node` in one query, in `plan`'s buckets (rollup minutes weighted
/// by their samples, the minutes not rolled up yet from raw samples). A node's overview needs neither 1 s
/// detail nor one query per GPU; the GPU page has the detail.
async fn node_gpu_chart_once(
    pool: &PgPool,
    node: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    plan: &ChartPlan,
) -> Result<Vec<NodeGpuPoint>, sqlx::Error> {
    const RAW: &str = "SELECT ts AS t, gpu_index, util_pct AS u, power_w AS p, 1 AS n \
                       FROM gpu_samples_between($2, $3) WHERE node_id = $1 AND ts >= $2 AND ts < $3";
    const ROLLUP: &str = "SELECT bucket AS t, gpu_index, util_mean AS u, power_mean AS p, samples AS n \
                          FROM {table} WHERE node_id = $1 AND bucket >= $2 AND bucket < {end}";
    const TAIL: &str = "SELECT date_trunc('minute', ts), gpu_index, avg(util_pct), avg(power_w), count(*) \
                        FROM gpu_samples_between(greatest($2, {UPTO}), $3) WHERE node_id = $1 AND ts >= greatest($2, {UPTO}) AND ts < $3 GROUP BY 1, 2";
    let inner = ChartRows { raw: RAW, rollup: ROLLUP, tail: TAIL, tables: ("gpu_rollup_1m", "gpu_rollup_1h") }
        .sql(plan, 2, 3, 5);
    let sql = format!(
        "SELECT gpu_index, to_timestamp(floor(date_part('epoch', t) / $4) * $4) AS ts, \
                sum(u * n) / nullif(sum(n) FILTER (WHERE u IS NOT NULL), 0) AS util_pct, \
                sum(p * n) / nullif(sum(n) FILTER (WHERE p IS NOT NULL), 0) AS power_w \
         FROM ({inner}) s GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(node).bind(from).bind(to).bind(plan.bucket_secs as f64);
    q.bind(plan.rollups_upto).fetch_all(pool).await
}

/// How a dashboard chart reads a range: the table, the bucket width, and where the 1-minute rollups end
/// (the newest minutes come from raw samples, so a chart of the last hours is complete up to now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChartPlan {
    /// Table read.
    pub resolution: Resolution,
    /// Bucket width, seconds (a whole number of minutes or hours for rollups).
    pub bucket_secs: i64,
    /// With [`Resolution::Minute`]: rollups before this instant, raw samples from it on. `None`: up to the
    /// rollup job's watermark (the range's start when there is none), looked up in the same query.
    pub rollups_upto: Option<DateTime<Utc>>,
    /// With [`Resolution::Minute`]: when the series starts after this instant (a young fleet: no more raw
    /// data than the raw window holds), it is read again raw in buckets of this many seconds, rather than
    /// drawn as a few minutes.
    pub young: Option<(DateTime<Utc>, i64)>,
}

/// `coalesce(upto, watermark, from)` for the SQL of a minute plan, `$upto` and `$from` being parameters.
fn upto_sql(upto: u8, from: u8) -> String {
    // A function, not a sub-select: the raw readers are inlined only when their arguments hold no sub-select.
    format!("coalesce(${upto}::timestamptz, rollup_upto_1m(), ${from})")
}

/// The SQL of a chart's rows under a [`ChartPlan`]: raw samples; minute rollups plus the minutes not rolled
/// up yet; or hourly rollups.
struct ChartRows<'a> {
    /// Raw samples in the range.
    raw: &'a str,
    /// Rollup rows: `{table}` is the rollup table, `{end}` the bound on `bucket`.
    rollup: &'a str,
    /// Raw samples from `{UPTO}` on, aggregated per minute as a rollup row.
    tail: &'a str,
    /// The minute and hour rollup tables.
    tables: (&'static str, &'static str),
}

impl ChartRows<'_> {
    /// The rows' SQL; `from`, `to` and `upto` number the parameters of the range and of the end of the minute
    /// rollups.
    fn sql(&self, plan: &ChartPlan, from: u8, to: u8, upto: u8) -> String {
        match plan.resolution {
            Resolution::Raw => self.raw.to_string(),
            Resolution::Minute => {
                let upto = upto_sql(upto, from);
                format!(
                    "{} UNION ALL {}",
                    self.rollup.replace("{table}", self.tables.0).replace("{end}", &format!("least(${to}, {upto})")),
                    self.tail.replace("{UPTO}", &upto)
                )
            }
            Resolution::Hour => self.rollup.replace("{table}", self.tables.1).replace("{end}", &format!("${to}")),
        }
    }
}

impl ChartPlan {
    /// `from..to` in at most `max_points` buckets of at least `min_bucket_secs`: raw samples for spans up to
    /// `raw_up_to` (or, read again, for a series that holds no more than that much data in the range),
    /// 1-minute rollups (plus the minutes not rolled up yet) up to 3 days, hourly ones beyond.
    pub fn new(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        raw_up_to: Duration,
        max_points: i64,
        min_bucket_secs: i64,
    ) -> Self {
        let span = (to - from).num_seconds().max(1);
        let per = ((span + max_points.max(1) - 1) / max_points.max(1)).max(min_bucket_secs).max(1);
        let (resolution, unit) = if to - from <= raw_up_to {
            (Resolution::Raw, 1)
        } else if to - from <= Duration::days(3) {
            (Resolution::Minute, 60)
        } else {
            (Resolution::Hour, 3600)
        };
        let bucket_secs = (per + unit - 1) / unit * unit;
        // A first bucket that starts up to one bucket before the raw window still means little raw data.
        let young = (resolution == Resolution::Minute).then(|| (to - raw_up_to - Duration::seconds(bucket_secs), per));
        Self { resolution, bucket_secs, rollups_upto: None, young }
    }

    /// The plan reading minute rollups up to `watermark` (the rollup job's, `None` before its first run:
    /// raw samples only) and raw samples after it. A value rather than the lookup in each chart's SQL lets
    /// PostgreSQL plan the raw tail as the few minutes it is.
    pub fn rolled_up_to(mut self, watermark: Option<DateTime<Utc>>) -> Self {
        if self.resolution == Resolution::Minute {
            self.rollups_upto = Some(watermark.unwrap_or(DateTime::<Utc>::UNIX_EPOCH));
        }
        self
    }

    /// The raw plan to read instead when the series read with this one starts at `first` (`None`: no data).
    fn instead(&self, first: Option<DateTime<Utc>>) -> Option<Self> {
        let (after, bucket_secs) = self.young?;
        first.is_none_or(|f| f >= after).then_some(Self {
            resolution: Resolution::Raw,
            bucket_secs,
            rollups_upto: None,
            young: None,
        })
    }

    /// Words for the page: "raw, 6 s buckets", "1-minute rollups, 3 min buckets".
    pub fn describe(&self) -> String {
        let b = self.bucket_secs;
        let width = if b % 3600 == 0 {
            format!("{} h", b / 3600)
        } else if b % 60 == 0 {
            format!("{} min", b / 60)
        } else {
            format!("{b} s")
        };
        let table = match self.resolution {
            Resolution::Raw => "raw samples",
            Resolution::Minute => "1-minute rollups",
            Resolution::Hour => "1-hour rollups",
        };
        format!("{table}, {width} buckets")
    }
}

/// A GPU's series for a chart, aggregated in PostgreSQL into `plan`'s buckets: mean utilisation, power and
/// temperature, maximum utilisation and memory, minimum SM clock, throttle reasons OR-ed. Bucket `ts` is the
/// bucket's start.
async fn gpu_chart_once(
    pool: &PgPool,
    node: &str,
    gpu: i32,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    plan: &ChartPlan,
) -> Result<Vec<GpuPoint>, sqlx::Error> {
    const RAW: &str = "SELECT ts AS t, util_pct AS u, util_pct AS umax, mem_used_bytes AS mem, power_w AS p, temp_c AS tc, \
                       sm_clock_mhz AS clk, throttle_reasons AS thr, 1 AS n \
                       FROM gpu_samples_between($3, $4) WHERE node_id = $1 AND gpu_index = $2 AND ts >= $3 AND ts < $4";
    const ROLLUP: &str = "SELECT bucket AS t, util_mean AS u, util_max AS umax, mem_used_max AS mem, power_mean AS p, \
                          temp_mean AS tc, sm_clock_min AS clk, throttle_any AS thr, samples AS n FROM {table} \
                          WHERE node_id = $1 AND gpu_index = $2 AND bucket >= $3 AND bucket < {end}";
    // The newest minutes, not rolled up yet, as minutes of raw samples.
    const TAIL: &str = "SELECT date_trunc('minute', ts), avg(util_pct), max(util_pct), max(mem_used_bytes), avg(power_w), \
                        avg(temp_c), min(sm_clock_mhz), bit_or(throttle_reasons), count(*) \
                        FROM gpu_samples_between(greatest($3, {UPTO}), $4) WHERE node_id = $1 AND gpu_index = $2 AND ts >= greatest($3, {UPTO}) AND ts < $4 GROUP BY 1";
    let inner = ChartRows { raw: RAW, rollup: ROLLUP, tail: TAIL, tables: ("gpu_rollup_1m", "gpu_rollup_1h") }
        .sql(plan, 3, 4, 6);
    // Table and column names are constants, never input. Means weigh only the rows that have the reading.
    let sql = format!(
        "SELECT to_timestamp(floor(date_part('epoch', t) / $5) * $5) AS ts, \
                (sum(u * n) / nullif(sum(n) FILTER (WHERE u IS NOT NULL), 0))::real AS util_pct, \
                max(umax)::real AS util_max, max(mem)::bigint AS mem_used_bytes, \
                (sum(p * n) / nullif(sum(n) FILTER (WHERE p IS NOT NULL), 0))::real AS power_w, \
                (sum(tc * n) / nullif(sum(n) FILTER (WHERE tc IS NOT NULL), 0))::real AS temp_c, \
                min(clk)::integer AS sm_clock_mhz, \
                bit_or(thr)::bigint AS throttle_reasons \
         FROM ({inner}) s GROUP BY 1 ORDER BY 1"
    );
    let q =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(node).bind(gpu).bind(from).bind(to).bind(plan.bucket_secs as f64);
    q.bind(plan.rollups_upto).fetch_all(pool).await
}

/// A deployment's series for a chart, aggregated in PostgreSQL into `plan`'s buckets: per replica the mean
/// (worst for latency) over the bucket, then summed over replicas (mean for KV-cache use, worst for latency).
/// `replicas` counts the replicas that reported in the bucket.
async fn deployment_chart_once(
    pool: &PgPool,
    deployment: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    plan: &ChartPlan,
) -> Result<Vec<DeploymentPoint>, sqlx::Error> {
    const RAW: &str = "SELECT ts AS t, replica, queue_depth AS q, running AS run, kv_cache_pct AS kv, ttft_p95_s AS ttft, \
                       itl_p95_s AS itl, requests_per_s AS rps, generation_tokens_per_s AS gen, 1 AS n \
                       FROM serving_samples_between($2, $3) WHERE deployment = $1 AND ts >= $2 AND ts < $3";
    const ROLLUP: &str = "SELECT bucket AS t, replica, queue_mean AS q, running_mean AS run, kv_cache_mean AS kv, \
                          ttft_p95_max AS ttft, itl_p95_max AS itl, requests_per_s AS rps, generation_tps AS gen, samples AS n \
                          FROM {table} WHERE deployment = $1 AND bucket >= $2 AND bucket < {end}";
    const TAIL: &str = "SELECT date_trunc('minute', ts), replica, avg(queue_depth), avg(running), avg(kv_cache_pct), \
                        max(ttft_p95_s), max(itl_p95_s), avg(requests_per_s), avg(generation_tokens_per_s), count(*) \
                        FROM serving_samples_between(greatest($2, {UPTO}), $3) WHERE deployment = $1 AND ts >= greatest($2, {UPTO}) AND ts < $3 GROUP BY 1, 2";
    let inner = ChartRows { raw: RAW, rollup: ROLLUP, tail: TAIL, tables: ("serving_rollup_1m", "serving_rollup_1h") }
        .sql(plan, 2, 3, 5);
    let sql = format!(
        "SELECT b AS ts, count(*) AS replicas, sum(q)::float8 AS queue_depth, sum(run)::float8 AS running, \
                avg(kv)::float8 AS kv_cache_pct, max(ttft)::float8 AS ttft_p95_s, max(itl)::float8 AS itl_p95_s, \
                sum(rps)::float8 AS requests_per_s, sum(gen)::float8 AS generation_tokens_per_s \
         FROM (SELECT to_timestamp(floor(date_part('epoch', t) / $4) * $4) AS b, replica, sum(q * n) / sum(n) AS q, \
                      sum(run * n) / sum(n) AS run, sum(kv * n) / nullif(sum(n) FILTER (WHERE kv IS NOT NULL), 0) AS kv, \
                      max(ttft) AS ttft, max(itl) AS itl, sum(rps * n) / sum(n) AS rps, sum(gen * n) / sum(n) AS gen \
               FROM ({inner}) s GROUP BY 1, 2) r \
         GROUP BY b ORDER BY b"
    );
    let q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(deployment).bind(from).bind(to).bind(plan.bucket_secs as f64);
    q.bind(plan.rollups_upto).fetch_all(pool).await
}

/// A GPU's series for a chart ([`gpu_chart_once`]), read again raw when `plan` says the series is young;
/// returns the plan it was read with.
pub async fn gpu_chart(
    pool: &PgPool,
    node: &str,
    gpu: i32,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    plan: &ChartPlan,
) -> Result<(ChartPlan, Vec<GpuPoint>), sqlx::Error> {
    let points = gpu_chart_once(pool, node, gpu, from, to, plan).await?;
    match plan.instead(points.first().map(|p| p.ts)) {
        Some(raw) => Ok((raw, gpu_chart_once(pool, node, gpu, from, to, &raw).await?)),
        None => Ok((*plan, points)),
    }
}

/// A deployment's series for a chart ([`deployment_chart_once`]), read again raw when `plan` says the
/// series is young; returns the plan it was read with.
pub async fn deployment_chart(
    pool: &PgPool,
    deployment: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    plan: &ChartPlan,
) -> Result<(ChartPlan, Vec<DeploymentPoint>), sqlx::Error> {
    let points = deployment_chart_once(pool, deployment, from, to, plan).await?;
    match plan.instead(points.first().map(|p| p.ts)) {
        Some(raw) => Ok((raw, deployment_chart_once(pool, deployment, from, to, &raw).await?)),
        None => Ok((*plan, points)),
    }
}

/// Every GPU of a node for a chart ([`node_gpu_chart_once`]), read again raw when `plan` says the series
/// is young; returns the plan it was read with.
pub async fn node_gpu_chart(
    pool: &PgPool,
    node: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    plan: &ChartPlan,
) -> Result<(ChartPlan, Vec<NodeGpuPoint>), sqlx::Error> {
    let points = node_gpu_chart_once(pool, node, from, to, plan).await?;
    match plan.instead(points.iter().map(|p| p.ts).min()) {
        Some(raw) => Ok((raw, node_gpu_chart_once(pool, node, from, to, &raw).await?)),
        None => Ok((*plan, points)),
    }
}

/// Where the 1-minute rollups end (`None` before the first rollup).
pub async fn rollup_watermark(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT upto FROM rollup_watermark WHERE name = '1m'").fetch_optional(pool).await
}
