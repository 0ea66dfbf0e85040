//! Incremental 1-minute and 1-hour rollups. Each run rolls up the complete minutes past the watermark and
//! the minutes that late batches made dirty, then refreshes the hours those minutes belong to. One replica
//! at a time (a transaction-scoped advisory lock); every statement is an idempotent upsert, so a crashed
//! run is simply redone.

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use sqlx::PgPool;

const ROLLUP_LOCK_KEY: i64 = 0x666c_6565_7472_6f6c; // "fleetrol"
/// Minutes younger than this are left for the next run (batches still arriving).
const GRACE_SECS: i64 = 90;
/// Longest stretch rolled up in one statement.
const MAX_SPAN_MINUTES: i64 = 60;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupStats {
    /// Minute ranges rolled up.
    pub ranges: usize,
    /// Rows written into the minute tables.
    pub minute_rows: u64,
}

const GPU_1M: &str = "INSERT INTO gpu_rollup_1m SELECT node_id, gpu_index, date_trunc('minute', ts), count(*), \
    min(util_pct), avg(util_pct), max(util_pct), percentile_cont(0.95) WITHIN GROUP (ORDER BY util_pct), \
    max(mem_used_bytes), max(mem_total_bytes), avg(power_w), max(power_w), avg(temp_c), max(temp_c), \
    min(sm_clock_mhz), bit_or(throttle_reasons), max(xid_last), avg(sm_active) \
    FROM gpu_samples_between($1, $2) WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2, 3 \
    ON CONFLICT (node_id, gpu_index, bucket) DO UPDATE SET samples = excluded.samples, util_min = excluded.util_min, \
    util_mean = excluded.util_mean, util_max = excluded.util_max, util_p95 = excluded.util_p95, \
    mem_used_max = excluded.mem_used_max, mem_total_bytes = excluded.mem_total_bytes, power_mean = excluded.power_mean, \
    power_max = excluded.power_max, temp_mean = excluded.temp_mean, temp_max = excluded.temp_max, \
    sm_clock_min = excluded.sm_clock_min, throttle_any = excluded.throttle_any, xid_max = excluded.xid_max, \
    sm_active_mean = excluded.sm_active_mean";

// Absent readings are NULL in `gpu_samples`: the aggregates skip them, and the hourly means weigh only the
// minutes that had the reading (a minute without it is NULL, not 0).
const GPU_1H: &str = "INSERT INTO gpu_rollup_1h SELECT node_id, gpu_index, date_trunc('hour', bucket), sum(samples), \
    min(util_min), sum(util_mean * samples) / nullif(sum(samples) FILTER (WHERE util_mean IS NOT NULL), 0), \
    max(util_max), max(util_p95), max(mem_used_max), max(mem_total_bytes), \
    sum(power_mean * samples) / nullif(sum(samples) FILTER (WHERE power_mean IS NOT NULL), 0), max(power_max), \
    sum(temp_mean * samples) / nullif(sum(samples) FILTER (WHERE temp_mean IS NOT NULL), 0), max(temp_max), \
    min(sm_clock_min), bit_or(throttle_any), max(xid_max), \
    avg(sm_active_mean) \
    FROM gpu_rollup_1m WHERE bucket >= $1 AND bucket < $2 GROUP BY 1, 2, 3 \
    ON CONFLICT (node_id, gpu_index, bucket) DO UPDATE SET samples = excluded.samples, util_min = excluded.util_min, \
    util_mean = excluded.util_mean, util_max = excluded.util_max, util_p95 = excluded.util_p95, \
    mem_used_max = excluded.mem_used_max, mem_total_bytes = excluded.mem_total_bytes, power_mean = excluded.power_mean, \
    power_max = excluded.power_max, temp_mean = excluded.temp_mean, temp_max = excluded.temp_max, \
    sm_clock_min = excluded.sm_clock_min, throttle_any = excluded.throttle_any, xid_max = excluded.xid_max, \
    sm_active_mean = excluded.sm_active_mean";

const SERVING_1M: &str = "INSERT INTO serving_rollup_1m SELECT deployment, replica, date_trunc('minute', ts), \
    max(node_id), count(*), avg(queue_depth), max(queue_depth), avg(running), avg(kv_cache_pct), max(kv_cache_pct), \
    max(ttft_p95_s), max(itl_p95_s), avg(requests_per_s), avg(prompt_tokens_per_s), avg(generation_tokens_per_s), \
    avg(batch_size_mean) \
    FROM serving_samples_between($1, $2) WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2, 3 \
    ON CONFLICT (deployment, replica, bucket) DO UPDATE SET node_id = excluded.node_id, samples = excluded.samples, \
    queue_mean = excluded.queue_mean, queue_max = excluded.queue_max, running_mean = excluded.running_mean, \
    kv_cache_mean = excluded.kv_cache_mean, kv_cache_max = excluded.kv_cache_max, ttft_p95_max = excluded.ttft_p95_max, \
    itl_p95_max = excluded.itl_p95_max, requests_per_s = excluded.requests_per_s, prompt_tps = excluded.prompt_tps, \
    generation_tps = excluded.generation_tps, batch_size_mean = excluded.batch_size_mean";

const SERVING_1H: &str = "INSERT INTO serving_rollup_1h SELECT deployment, replica, date_trunc('hour', bucket), \
    max(node_id), sum(samples), sum(queue_mean * samples) / sum(samples), max(queue_max), \
    sum(running_mean * samples) / sum(samples), avg(kv_cache_mean), max(kv_cache_max), max(ttft_p95_max), \
    max(itl_p95_max), avg(requests_per_s), avg(prompt_tps), avg(generation_tps), avg(batch_size_mean) \
    FROM serving_rollup_1m WHERE bucket >= $1 AND bucket < $2 GROUP BY 1, 2, 3 \
    ON CONFLICT (deployment, replica, bucket) DO UPDATE SET node_id = excluded.node_id, samples = excluded.samples, \
    queue_mean = excluded.queue_mean, queue_max = excluded.queue_max, running_mean = excluded.running_mean, \
    kv_cache_mean = excluded.kv_cache_mean, kv_cache_max = excluded.kv_cache_max, ttft_p95_max = excluded.ttft_p95_max, \
    itl_p95_max = excluded.itl_p95_max, requests_per_s = excluded.requests_per_s, prompt_tps = excluded.prompt_tps, \
    generation_tps = excluded.generation_tps, batch_size_mean = excluded.batch_size_mean";

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::minutes(1)).unwrap_or(t)
}

fn hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::hours(1)).unwrap_or(t)
}

/// Marks the minutes of late samples dirty so the next run rolls them up again.
pub async fn mark_dirty(conn: &mut sqlx::PgConnection, minutes: &[DateTime<Utc>]) -> Result<(), sqlx::Error> {
    if minutes.is_empty() {
        return Ok(());
    }
    // Appended, never upserted: an upsert on a minute the rollup job is recomputing would wait for its whole
    // transaction (migration `20261206007002_rollup_dirty_log`).
    sqlx::query(
        "INSERT INTO rollup_dirty (bucket) SELECT DISTINCT date_trunc('minute', t) FROM UNNEST($1::timestamptz[]) t",
    )
    .bind(minutes)
    .execute(conn)
    .await?;
    Ok(())
}

/// Samples older than this are late: the minute they fall in may have been rolled up already.
pub fn late_cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::seconds(GRACE_SECS)
}

/// One rollup run as of `now`.
pub async fn run(pool: &PgPool, now: DateTime<Utc>) -> Result<RollupStats, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(ROLLUP_LOCK_KEY).fetch_one(&mut *tx).await?;
    if !locked {
        return Ok(RollupStats::default());
    }
    let upto = minute(now - Duration::seconds(GRACE_SECS));
    let wm: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT upto FROM rollup_watermark WHERE name = '1m'").fetch_optional(&mut *tx).await?;
    let from = match wm {
        Some(w) => w,
        None => {
            let first: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT min(ts) FROM gpu_samples_between($1, 'infinity') WHERE ts >= $1")
                    .bind(upto - Duration::days(2))
                    .fetch_one(&mut *tx)
                    .await?;
            first.map(minute).unwrap_or(upto)
        }
    };
    let mut ranges: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut t = from;
    while t < upto {
        let end = (t + Duration::minutes(MAX_SPAN_MINUTES)).min(upto);
        ranges.push((t, end));
        t = end;
    }
    // The marks this statement's snapshot sees; one committed later stays for the next run. The same minute
    // may be marked many times (one mark per ingest group).
    let mut dirty: Vec<DateTime<Utc>> =
        sqlx::query_scalar("DELETE FROM rollup_dirty WHERE bucket < $1 RETURNING bucket")
            .bind(upto)
            .fetch_all(&mut *tx)
            .await?;
    dirty.sort_unstable();
    dirty.dedup();
    ranges.extend(dirty.into_iter().filter(|d| *d < from).map(|d| (d, d + Duration::minutes(1))));
    let mut stats = RollupStats { ranges: ranges.len(), minute_rows: 0 };
    let mut hours: Vec<DateTime<Utc>> = Vec::new();
    for (a, b) in &ranges {
        stats.minute_rows += sqlx::query(GPU_1M).bind(a).bind(b).execute(&mut *tx).await?.rows_affected();
        stats.minute_rows += sqlx::query(SERVING_1M).bind(a).bind(b).execute(&mut *tx).await?.rows_affected();
        let mut h = hour(*a);
        while h < *b {
            hours.push(h);
            h += Duration::hours(1);
        }
    }
    hours.sort();
    hours.dedup();
    for h in hours {
        let end = h + Duration::hours(1);
        sqlx::query(GPU_1H).bind(h).bind(end).execute(&mut *tx).await?;
        sqlx::query(SERVING_1H).bind(h).bind(end).execute(&mut *tx).await?;
    }
    sqlx::query("INSERT INTO rollup_watermark (name, upto) VALUES ('1m', $1) ON CONFLICT (name) DO UPDATE SET upto = greatest(rollup_watermark.upto, $1)")
        .bind(upto.max(from))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(stats)
}

/// Deletes rollups past their retention.
pub async fn expire(pool: &PgPool, minute_days: u32, hour_days: u32) -> Result<(), sqlx::Error> {
    for (table, days) in [
        ("gpu_rollup_1m", minute_days),
        ("serving_rollup_1m", minute_days),
        ("gpu_rollup_1h", hour_days),
        ("serving_rollup_1h", hour_days),
    ] {
        let sql = format!("DELETE FROM {table} WHERE bucket < now() - make_interval(days => $1)");
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(days as i32).execute(pool).await?;
    }
    Ok(())
}
