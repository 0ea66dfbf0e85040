//! Packing: once an hour of hot GPU rows is complete (plus a grace period for late samples), its rows are
//! folded into `gpu_chunks` (one row per GPU per 10 minutes, one array per metric, TOASTed with lz4) and its
//! hourly partition is dropped, in one transaction: a reader sees each sample exactly once, in either layout.
//!
//! A late sample for an hour already packed re-creates that hour's partition (ingest creates partitions on
//! demand); the next pass merges it into the existing chunks (the chunk is rebuilt from its old arrays plus the
//! new rows), so nothing is lost and nothing is counted twice. Idempotency stays with `ingest_batches`.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use sqlx::PgPool;

use super::{HOT_TABLE, Partitions};

/// Length of a packed chunk. `gpu_samples_between` (in the migration) relies on it.
pub const CHUNK_MINUTES: i64 = 10;

/// How long after its hour ends a hot partition still takes rows before it is packed.
pub const GRACE: Duration = Duration::minutes(10);

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

/// The hour a hot partition covers, from its name.
fn hour_of_partition(name: &str) -> Option<NaiveDateTime> {
    let stamp = name.strip_prefix(HOT_TABLE)?.strip_prefix('_')?;
    NaiveDateTime::parse_from_str(&format!("{stamp}0000"), "%Y%m%d%H%M%S").ok()
}

/// Hot partitions whose hour ended more than [`GRACE`] before `now`, oldest first.
pub async fn due(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<(String, NaiveDateTime)>, sqlx::Error> {
    let children = super::partitions_of(pool, HOT_TABLE).await?;
    let cutoff = (now - GRACE).naive_utc();
    let mut due: Vec<(String, NaiveDateTime)> = children
        .into_iter()
        .filter_map(|c| hour_of_partition(&c).map(|h| (c, h)))
        .filter(|(name, h)| *h + Duration::hours(1) <= cutoff && *name == super::hot_partition_name(*h))
        .collect();
    due.sort_by_key(|(_, h)| *h);
    Ok(due)
}

/// Packs every due hour (see [`due`]) as of `now`; tells `partitions` which hours are gone. Another replica
/// packing at the same time makes this pass a no-op.
pub async fn run(pool: &PgPool, now: DateTime<Utc>, partitions: &Partitions) -> Result<PackStats, sqlx::Error> {
    let mut stats = PackStats::default();
    for (name, hour) in due(pool, now).await? {
        let Some(done) = pack_partition(pool, &name, hour).await? else { break };
        // Dropped or not, let ingest re-check: a late sample re-creates the partition if it is gone.
        partitions.forget_hour(hour);
        stats.partitions += 1;
        stats.chunks += done.0;
        stats.samples += done.1;
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
async fn pack_partition(pool: &PgPool, name: &str, hour: NaiveDateTime) -> Result<Option<(u64, u64)>, sqlx::Error> {
    // The chunks' daily partition (idempotent; outside the transaction so a concurrent creator is harmless).
    super::create_partition(pool, "gpu_chunks", hour.date()).await?;
    let mut tx = pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(PACK_LOCK_KEY).fetch_one(&mut *tx).await?;
    if !locked {
        return Ok(None);
    }
    sqlx::query("SET LOCAL lock_timeout = '10s'").execute(&mut *tx).await?;
    // `name` is built by `hot_partition_name` from a parsed hour (checked in `due`), never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {name} IN SHARE MODE"))).execute(&mut *tx).await?;
    let written: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(merge_sql(name))).fetch_all(&mut *tx).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {name}"))).execute(&mut *tx).await?;
    tx.commit().await?;
    let samples = written.iter().map(|n| u64::try_from(*n).unwrap_or(0)).sum();

    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
    let dropped = async {
        sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {HOT_TABLE}, {name} IN ACCESS EXCLUSIVE MODE")))
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

/// The metric columns shared by the hot table and the chunks, in order.
const METRICS: [&str; 13] = [
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
    "ts_off_ms",
];

/// One statement that folds the rows of `source` into chunks: the chunks these rows fall in are deleted
/// and re-inserted with their old samples plus the new ones, so a late row merges into a packed chunk.
fn merge_sql(source: &str) -> String {
    let values = &METRICS[..METRICS.len() - 1];
    let cols = values.join(", ");
    let unnested = values.iter().map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ");
    let aggs = values.iter().map(|c| format!("array_agg({c})")).collect::<Vec<_>>().join(", ");
    format!(
        "WITH src AS (\
            SELECT ts, gpu_key, {cols}, \
                   date_bin('{CHUNK_MINUTES} minutes', ts, timestamptz '2000-01-01 00:00:00+00') AS chunk_start \
            FROM {source}), \
         keys AS (SELECT DISTINCT gpu_key, chunk_start FROM src), \
         old AS (DELETE FROM gpu_chunks c USING keys k \
                 WHERE c.gpu_key = k.gpu_key AND c.chunk_start = k.chunk_start RETURNING c.*), \
         merged AS (\
            SELECT gpu_key, chunk_start, ts, {cols} FROM src \
            UNION ALL \
            SELECT o.gpu_key, o.chunk_start, o.chunk_start + z.off * interval '1 millisecond', {zcols} \
            FROM old o CROSS JOIN LATERAL unnest(o.ts_off_ms, {unnested}) AS z(off, {cols})) \
         INSERT INTO gpu_chunks (gpu_key, chunk_start, samples, ts_off_ms, {cols}) \
         SELECT gpu_key, chunk_start, count(*)::int, \
                array_agg(round(extract(epoch FROM ts - chunk_start) * 1000)::integer), {aggs} \
         FROM (SELECT * FROM merged ORDER BY gpu_key, chunk_start, ts) s \
         GROUP BY gpu_key, chunk_start \
         RETURNING samples",
        zcols = values.iter().map(|c| format!("z.{c}")).collect::<Vec<_>>().join(", "),
    )
}

/// Bytes at rest of the raw GPU telemetry (tables, their indexes and TOAST).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RawSizes {
    /// Hot hourly partitions.
    pub hot: i64,
    /// Packed chunks.
    pub chunks: i64,
    /// The `gpus` dimension.
    pub dimensions: i64,
}

impl RawSizes {
    /// All of it.
    pub fn total(&self) -> i64 {
        self.hot + self.chunks + self.dimensions
    }
}

/// Measures [`RawSizes`] from the catalogue.
pub async fn raw_sizes(pool: &PgPool) -> Result<RawSizes, sqlx::Error> {
    let (hot, chunks, dimensions): (i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE p.relname = 'gpu_samples_hot'), 0)::bigint, \
                coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE p.relname = 'gpu_chunks'), 0)::bigint, \
                pg_total_relation_size('gpus') \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname IN ('gpu_samples_hot', 'gpu_chunks')",
    )
    .fetch_one(pool)
    .await?;
    Ok(RawSizes { hot, chunks, dimensions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_name_gives_its_hour_and_back() {
        let h = hour_of_partition("gpu_samples_hot_2026120613").unwrap();
        assert_eq!(h.to_string(), "2026-12-06 13:00:00");
        assert_eq!(super::super::hot_partition_name(h), "gpu_samples_hot_2026120613");
        assert!(hour_of_partition("gpu_samples_hot_default").is_none());
        assert!(hour_of_partition("serving_samples_20261206").is_none());
    }

    #[test]
    fn the_merge_keeps_every_metric_paired_with_its_timestamp() {
        let sql = merge_sql("gpu_samples_hot_2026120613");
        // Each metric is aggregated once, from the same ordered rows as the offsets.
        for m in METRICS {
            assert!(sql.contains(m), "{m}");
        }
        assert!(sql.contains("ORDER BY gpu_key, chunk_start, ts"));
    }
}
