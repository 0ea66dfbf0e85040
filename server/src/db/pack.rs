//! Packing: once an hour of hot rows is complete (plus a grace period for late samples), its rows are folded
//! into chunks (one row per series per 10 minutes, one array per metric, TOASTed with lz4) and its hourly
//! partition is dropped: a reader sees each sample exactly once, in either layout. Two layouts share this
//! code: GPU samples (`gpu_samples_hot` into `gpu_chunks`, keyed by `gpu_key`) and serving samples
//! (`serving_hot` into `serving_chunks`, keyed by `replica_key`).
//!
//! A late sample for an hour already packed re-creates that hour's partition (ingest creates partitions on
//! demand); the next pass merges it into the existing chunks (the chunk is rebuilt from its old arrays plus the
//! new rows), so nothing is lost and nothing is counted twice. Idempotency stays with `ingest_batches`.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use sqlx::PgPool;

use super::Partitions;

/// Length of a packed chunk. `gpu_samples_between` and `serving_samples_between` (in the migrations) rely on it.
pub const CHUNK_MINUTES: i64 = 10;

/// How long after its hour ends a hot partition still takes rows before it is packed.
pub const GRACE: Duration = Duration::minutes(10);

/// One packed series table pair: hot rows partitioned by hour, chunks partitioned by day. Every name here is a
/// constant of this module, never input.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The hot table (partitioned by hour on `ts`).
    pub hot: &'static str,
    /// The chunks table (partitioned by day on `chunk_start`).
    pub chunks: &'static str,
    /// The series key column both tables lead with.
    pub key: &'static str,
    /// The metric columns: scalars in the hot table, arrays in the chunks, in the same order.
    pub metrics: &'static [&'static str],
}

/// GPU telemetry.
pub const GPU: Layout = Layout {
    hot: "gpu_samples_hot",
    chunks: "gpu_chunks",
    key: "gpu_key",
    metrics: &[
        "util_pct",
        "mem_used_bytes",
        "mem_total_bytes",
        "power_w",
        "temp_c",
        "sm_clock_mhz",
        "mem_clock_mhz",
        "throttle_reasons",
        "ecc_dbe_total",
        "xid_last",
        "sm_active",
        "tensor_active",
    ],
};

/// Serving-engine telemetry.
pub const SERVING: Layout = Layout {
    hot: "serving_hot",
    chunks: "serving_chunks",
    key: "replica_key",
    metrics: &[
        "queue_depth",
        "running",
        "kv_cache_pct",
        "ttft_p50_s",
        "ttft_p95_s",
        "ttft_p99_s",
        "itl_p50_s",
        "itl_p95_s",
        "itl_p99_s",
        "requests_per_s",
        "prompt_tokens_per_s",
        "generation_tokens_per_s",
        "batch_size_mean",
    ],
};

/// Both layouts, in the order a pass packs them.
pub const LAYOUTS: [Layout; 2] = [GPU, SERVING];

/// Advisory lock: one packer at a time across server replicas.
const PACK_LOCK_KEY: i64 = 0x6670_7061_636b; // "fppack"

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackStats {
    /// Hourly partitions packed and dropped.
    pub partitions: usize,
    /// Chunks written (new or merged).
    pub chunks: u64,
    /// Samples in the chunks written (a merged chunk counts its old samples too).
    pub samples: u64,
}

/// The hour a partition of `layout`'s hot table covers, from its name.
fn hour_of_partition(layout: &Layout, name: &str) -> Option<NaiveDateTime> {
    let stamp = name.strip_prefix(layout.hot)?.strip_prefix('_')?;
    NaiveDateTime::parse_from_str(&format!("{stamp}0000"), "%Y%m%d%H%M%S").ok()
}

/// Hot partitions of `layout` whose hour ended more than [`GRACE`] before `now`, oldest first.
pub async fn due(
    pool: &PgPool,
    layout: &Layout,
    now: DateTime<Utc>,
) -> Result<Vec<(String, NaiveDateTime)>, sqlx::Error> {
    let children = super::partitions_of(pool, layout.hot).await?;
    let cutoff = (now - GRACE).naive_utc();
    let mut due: Vec<(String, NaiveDateTime)> = children
        .into_iter()
        .filter_map(|c| hour_of_partition(layout, &c).map(|h| (c, h)))
        .filter(|(name, h)| *h + Duration::hours(1) <= cutoff && *name == super::hot_partition_name(layout.hot, *h))
        .collect();
    due.sort_by_key(|(_, h)| *h);
    Ok(due)
}

/// Packs every due hour (see [`due`]) of both layouts as of `now`; tells `partitions` which hours are gone.
/// Another replica packing at the same time makes this pass a no-op.
pub async fn run(pool: &PgPool, now: DateTime<Utc>, partitions: &Partitions) -> Result<PackStats, sqlx::Error> {
    let mut stats = PackStats::default();
    for layout in &LAYOUTS {
        for (name, hour) in due(pool, layout, now).await? {
            let Some(done) = pack_partition(pool, layout, &name, hour).await? else { return Ok(stats) };
            // Dropped or not, let ingest re-check: a late sample re-creates the partition if it is gone.
            partitions.forget_hour(hour);
            stats.partitions += 1;
            stats.chunks += done.0;
            stats.samples += done.1;
        }
    }
    Ok(stats)
}

/// Packs one hot partition, then drops it if nothing arrived meanwhile; `None` when another packer holds the
/// lock. Returns (chunks, samples).
///
/// Two transactions, so neither can deadlock with ingest (which locks the parent table, then a partition):
/// 1. `SHARE` on the partition alone (readers go on; writers of late samples for this hour wait), fold its
///    rows into chunks, delete them. Readers see the rows before the commit and the chunks after it.
/// 2. `ACCESS EXCLUSIVE` on the parent first, then the partition is dropped only if it is still empty; a late
///    sample written between the two leaves it for the next pass. A short lock timeout keeps ingest and
///    readers from queueing long behind this lock; it is retried on the next pass.
async fn pack_partition(
    pool: &PgPool,
    layout: &Layout,
    name: &str,
    hour: NaiveDateTime,
) -> Result<Option<(u64, u64)>, sqlx::Error> {
    // The chunks' daily partition (idempotent; outside the transaction so a concurrent creator is harmless).
    super::create_partition(pool, layout.chunks, hour.date()).await?;
    let mut tx = pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(PACK_LOCK_KEY).fetch_one(&mut *tx).await?;
    if !locked {
        return Ok(None);
    }
    sqlx::query("SET LOCAL lock_timeout = '10s'").execute(&mut *tx).await?;
    // `name` is built by `hot_partition_name` from a parsed hour (checked in `due`), never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {name} IN SHARE MODE"))).execute(&mut *tx).await?;
    let written: Vec<i32> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(merge_sql(layout, name))).fetch_all(&mut *tx).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {name}"))).execute(&mut *tx).await?;
    tx.commit().await?;
    let samples = written.iter().map(|n| u64::try_from(*n).unwrap_or(0)).sum();

    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
    let dropped = async {
        sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {}, {name} IN ACCESS EXCLUSIVE MODE", layout.hot)))
            .execute(&mut *tx)
            .await?;
        let empty: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT NOT EXISTS (SELECT 1 FROM {name})")))
            .fetch_one(&mut *tx)
            .await?;
        if empty {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {name}"))).execute(&mut *tx).await?;
        }
        Ok::<_, sqlx::Error>(empty)
    }
    .await;
    match dropped {
        Ok(_) => tx.commit().await?,
        // Busy (lock timeout): the empty partition waits for the next pass; the packing above is committed.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => tx.rollback().await?,
        Err(e) => return Err(e),
    }
    Ok(Some((written.len() as u64, samples)))
}

/// One statement that folds the rows of `source` (a partition of `layout.hot`) into `layout.chunks`: the chunks
/// these rows fall in are deleted and re-inserted with their old samples plus the new ones, so a late row
/// merges into a packed chunk.
fn merge_sql(layout: &Layout, source: &str) -> String {
    let Layout { chunks, key, metrics, .. } = *layout;
    let list = |prefix: &str| metrics.iter().map(|c| format!("{prefix}{c}")).collect::<Vec<_>>().join(", ");
    let cols = list("");
    let aggs = metrics.iter().map(|c| format!("array_agg({c})")).collect::<Vec<_>>().join(", ");
    format!(
        "WITH src AS (\
            SELECT ts, {key}, {cols}, \
                   date_bin('{CHUNK_MINUTES} minutes', ts, timestamptz '2000-01-01 00:00:00+00') AS chunk_start \
            FROM {source}), \
         keys AS (SELECT DISTINCT {key}, chunk_start FROM src), \
         old AS (DELETE FROM {chunks} c USING keys k \
                 WHERE c.{key} = k.{key} AND c.chunk_start = k.chunk_start RETURNING c.*), \
         merged AS (\
            SELECT {key}, chunk_start, ts, {cols} FROM src \
            UNION ALL \
            SELECT o.{key}, o.chunk_start, o.chunk_start + z.off * interval '1 millisecond', {zcols} \
            FROM old o CROSS JOIN LATERAL unnest(o.ts_off_ms, {unnested}) AS z(off, {cols})) \
         INSERT INTO {chunks} ({key}, chunk_start, samples, ts_off_ms, {cols}) \
         SELECT {key}, chunk_start, count(*)::int, \
                array_agg(round(extract(epoch FROM ts - chunk_start) * 1000)::integer), {aggs} \
         FROM (SELECT * FROM merged ORDER BY {key}, chunk_start, ts) s \
         GROUP BY {key}, chunk_start \
         RETURNING samples",
        zcols = list("z."),
        unnested = list("o."),
    )
}

/// Bytes at rest of the raw telemetry (tables, their indexes and TOAST).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RawSizes {
    /// Hot hourly GPU partitions.
    pub hot: i64,
    /// Packed GPU chunks.
    pub chunks: i64,
    /// The `gpus` dimension.
    pub dimensions: i64,
    /// Hot hourly serving partitions.
    pub serving_hot: i64,
    /// Packed serving chunks.
    pub serving_chunks: i64,
    /// The `serving_replicas` dimension.
    pub serving_dimensions: i64,
}

impl RawSizes {
    /// All of the GPU telemetry.
    pub fn total(&self) -> i64 {
        self.hot + self.chunks + self.dimensions
    }

    /// All of the serving telemetry.
    pub fn serving_total(&self) -> i64 {
        self.serving_hot + self.serving_chunks + self.serving_dimensions
    }
}

/// Measures [`RawSizes`] from the catalogue.
pub async fn raw_sizes(pool: &PgPool) -> Result<RawSizes, sqlx::Error> {
    let sizes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT p.relname::text, coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname IN ('gpu_samples_hot', 'gpu_chunks', 'serving_hot', 'serving_chunks') GROUP BY p.relname \
         UNION ALL SELECT 'gpus', pg_total_relation_size('gpus') \
         UNION ALL SELECT 'serving_replicas', pg_total_relation_size('serving_replicas')",
    )
    .fetch_all(pool)
    .await?;
    let size = |name: &str| sizes.iter().find(|(n, _)| n == name).map_or(0, |(_, b)| *b);
    Ok(RawSizes {
        hot: size(GPU.hot),
        chunks: size(GPU.chunks),
        dimensions: size("gpus"),
        serving_hot: size(SERVING.hot),
        serving_chunks: size(SERVING.chunks),
        serving_dimensions: size("serving_replicas"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_name_gives_its_hour_and_back() {
        for layout in &LAYOUTS {
            let name = format!("{}_2026120613", layout.hot);
            let h = hour_of_partition(layout, &name).unwrap();
            assert_eq!(h.to_string(), "2026-12-06 13:00:00");
            assert_eq!(super::super::hot_partition_name(layout.hot, h), name);
            assert!(hour_of_partition(layout, &format!("{}_default", layout.hot)).is_none());
        }
        assert!(hour_of_partition(&GPU, "serving_hot_2026120613").is_none());
        assert!(hour_of_partition(&SERVING, "gpu_samples_hot_2026120613").is_none());
    }

    #[test]
    fn the_merge_keeps_every_metric_paired_with_its_timestamp() {
        for layout in &LAYOUTS {
            let sql = merge_sql(layout, "x_2026120613");
            // Each metric is aggregated once, from the same ordered rows as the offsets.
            for m in layout.metrics {
                assert!(sql.contains(&format!("array_agg({m})")), "{m}");
                assert!(sql.contains(&format!("z.{m}")), "{m}");
            }
            assert!(sql.contains(&format!("ORDER BY {}, chunk_start, ts", layout.key)));
            assert!(sql.contains(&format!("INSERT INTO {} ({}, chunk_start", layout.chunks, layout.key)));
        }
    }
}
