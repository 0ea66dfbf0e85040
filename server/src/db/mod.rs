//! All SQL lives under this module and nowhere else. Queries are bound-parameter only; the few dynamic
//! identifiers (partition names, whitelisted metric columns) are built from values we generate, never from
//! input, and marked with `AssertSqlSafe` at that one spot.

pub mod alerts;
pub mod anomalies;
pub mod api_tokens;
pub mod audit;
pub mod commands;
pub mod control;
pub mod copy;
pub mod dashboard;
pub mod dimensions;
pub mod enroll;
pub mod idle;
pub mod ingest;
pub mod node_groups;
pub mod opportunities;
pub mod overrides;
pub mod pack;
pub mod policies;
pub mod replica_load;
pub mod retention;
pub mod rollups;
pub mod seed;
pub mod series;
pub mod users;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, Timelike, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Tables partitioned by day (`chunk_start`: packed history), dropped past the raw retention.
pub const PARTITIONED_TABLES: [&str; 2] = ["gpu_chunks", "serving_chunks"];

/// The hot sample tables (GPU, serving), partitioned by hour; [`pack`] folds each complete hour into its
/// chunks table and drops the partition.
pub const HOT_TABLES: [&str; 2] = [pack::GPU.hot, pack::SERVING.hot];

/// Most rows a list page counts: past it the pager says "10000+ matching" instead of counting a large table
/// on every request (history tables such as decisions grow without bound).
pub const COUNT_CAP: i64 = 10_000;

/// How many rows a list's filter matches, counted up to a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Total {
    /// Rows counted.
    pub counted: i64,
    /// Whether more rows match than were counted.
    pub more: bool,
}

impl Total {
    /// Rows to count for a page of `limit` rows at `offset`: the cap, or a row past the page, so the pager
    /// always knows whether a next page exists.
    pub fn limit(offset: i64, limit: i64) -> i64 {
        COUNT_CAP.max(offset.saturating_add(limit)).saturating_add(1)
    }

    /// From `counted`, counted with `LIMIT limit` (from [`Total::limit`]).
    pub fn from_counted(counted: i64, limit: i64) -> Self {
        if counted >= limit { Total { counted: limit - 1, more: true } } else { Total { counted, more: false } }
    }
}

/// Opens a pool, waiting up to 30 s for the server to accept connections.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    // Connect once with retries so a just-started private cluster has time to finish recovery.
    let conn = crate::pg::connect_retrying(url, Duration::from_secs(30)).await?;
    sqlx::Connection::close(conn).await?;
    // No JIT: fleetpilot's queries are short, and PostgreSQL's cost estimates on freshly filled partitions
    // can cross `jit_above_cost`, where compiling the query takes longer (hundreds of ms) than running it.
    // That once added half a second to every scale decision (`fleetpilot bench decision`).
    let options = url.parse::<sqlx::postgres::PgConnectOptions>()?.options([("jit", "off")]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// A round trip to the database on `conn` (a pool, or the leader's own connection): whether it answers.
pub async fn ping<'c>(conn: impl sqlx::PgExecutor<'c>) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(conn).await.map(drop)
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Creates partitions on demand (daily ones for [`PARTITIONED_TABLES`], hourly ones for [`HOT_TABLES`]) and
/// remembers which exist.
#[derive(Debug, Default)]
pub struct Partitions {
    known: Mutex<HashSet<NaiveDate>>,
    hours: Mutex<HashSet<NaiveDateTime>>,
}

impl Partitions {
    /// Makes sure every daily table has a partition for each of `days`.
    pub async fn ensure(&self, pool: &PgPool, days: impl IntoIterator<Item = NaiveDate>) -> Result<(), sqlx::Error> {
        let missing: Vec<NaiveDate> = {
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<NaiveDate> = days.into_iter().filter(|d| !known.contains(d)).collect();
            v.sort();
            v.dedup();
            v
        };
        for day in missing {
            for table in PARTITIONED_TABLES {
                create_partition(pool, table, day).await?;
            }
            self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(day);
        }
        Ok(())
    }

    /// Makes sure every hot table has a partition for the hour of each of `times`.
    pub async fn ensure_hours(
        &self,
        pool: &PgPool,
        times: impl IntoIterator<Item = DateTime<Utc>>,
    ) -> Result<(), sqlx::Error> {
        let missing: Vec<NaiveDateTime> = {
            let known = self.hours.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<NaiveDateTime> = times.into_iter().map(hour_of).filter(|h| !known.contains(h)).collect();
            v.sort();
            v.dedup();
            v
        };
        for hour in missing {
            for table in HOT_TABLES {
                create_hot_partition(pool, table, hour).await?;
            }
            self.hours.lock().unwrap_or_else(|p| p.into_inner()).insert(hour);
        }
        Ok(())
    }

    /// Forgets every day before `day`: retention dropped their partitions, so a later sample for one of
    /// them must create it again (or be refused) instead of failing its whole group on a missing partition.
    pub fn forget_before(&self, day: NaiveDate) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).retain(|d| *d >= day);
    }

    /// Forgets an hour whose hot partition (of either table) the packer dropped: a late sample for it creates
    /// it again.
    pub fn forget_hour(&self, hour: NaiveDateTime) {
        self.hours.lock().unwrap_or_else(|p| p.into_inner()).remove(&hour);
    }

    /// Forgets every day and hour: the next group re-checks (`CREATE ... IF NOT EXISTS`) the partitions it
    /// needs. Used after a group failed, in case a partition was dropped behind this process's back (by
    /// retention, or by another replica's packer).
    pub fn forget_all(&self) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.hours.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Partitions for yesterday through the day after tomorrow (clock skew and midnight both covered), and hot
    /// partitions for the past hour through the next two.
    pub async fn ensure_around_now(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let today = now.date_naive();
        let days = [
            today.checked_sub_days(Days::new(1)),
            Some(today),
            today.succ_opt(),
            today.succ_opt().and_then(|d| d.succ_opt()),
        ];
        self.ensure(pool, days.into_iter().flatten()).await?;
        self.ensure_hours(pool, (-1..=2).map(|h| now + chrono::Duration::hours(h))).await
    }
}

/// The start of the hour `t` falls in.
pub fn hour_of(t: DateTime<Utc>) -> NaiveDateTime {
    let n = t.naive_utc();
    n.date().and_hms_opt(n.hour(), 0, 0).unwrap_or(n)
}

/// The name of the partition of the hot `table` for `hour`.
pub fn hot_partition_name(table: &str, hour: NaiveDateTime) -> String {
    format!("{table}_{}", hour.format("%Y%m%d%H"))
}

async fn create_hot_partition(pool: &PgPool, table: &str, hour: NaiveDateTime) -> Result<(), sqlx::Error> {
    let next = hour + chrono::Duration::hours(1);
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {table} FOR VALUES FROM ('{}+00') TO ('{}+00')",
        hot_partition_name(table, hour),
        hour.format("%Y-%m-%d %H:00:00"),
        next.format("%Y-%m-%d %H:00:00"),
    );
    run_ddl(pool, sql).await
}

fn partition_name(table: &str, day: NaiveDate) -> String {
    format!("{table}_{}", day.format("%Y%m%d"))
}

/// Creates the daily partition of `table` for `day`.
pub async fn create_partition(pool: &PgPool, table: &str, day: NaiveDate) -> Result<(), sqlx::Error> {
    let Some(next) = day.succ_opt() else { return Ok(()) };
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {table} FOR VALUES FROM ('{} 00:00:00+00') TO ('{} 00:00:00+00')",
        partition_name(table, day),
        day.format("%Y-%m-%d"),
        next.format("%Y-%m-%d"),
    );
    run_ddl(pool, sql).await
}

async fn run_ddl(pool: &PgPool, sql: String) -> Result<(), sqlx::Error> {
    match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await {
        Ok(_) => Ok(()),
        // Two server replicas creating the same partition at once: the loser's error is harmless.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P07") | Some("23505")) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The first day whose partitions `retention_days` keeps.
pub fn retention_cutoff(retention_days: u32) -> NaiveDate {
    Utc::now().date_naive() - chrono::Duration::days(i64::from(retention_days))
}

/// The names of the partitions of `table`.
pub async fn partitions_of(pool: &PgPool, table: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
}

/// Drops daily partitions entirely older than `retention_days`; returns the dropped table names. Callers
/// holding a [`Partitions`] must call [`Partitions::forget_before`] with [`retention_cutoff`] afterwards.
pub async fn drop_expired_partitions(pool: &PgPool, retention_days: u32) -> Result<Vec<String>, sqlx::Error> {
    let cutoff = retention_cutoff(retention_days);
    let mut dropped = Vec::new();
    for table in PARTITIONED_TABLES {
        for child in partitions_of(pool, table).await? {
            let Some(day) = child.rsplit('_').next().and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok()) else {
                continue;
            };
            if day < cutoff && child == partition_name(table, day) {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {child}"))).execute(pool).await?;
                dropped.push(child);
            }
        }
    }
    sqlx::query("DELETE FROM ingest_batches WHERE received_at < now() - make_interval(days => $1)")
        .bind(retention_days as i32)
        .execute(pool)
        .await?;
    Ok(dropped)
}
