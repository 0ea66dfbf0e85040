//! The fleet's idle capacity per opportunities refresh ([`forecasting::idle`]).

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use forecasting::idle::IdleCapacity;
use serde::Serialize;
use sqlx::PgPool;

/// How long rows are kept.
pub const KEEP_DAYS: i64 = 7;

/// One stored figure, as the API returns it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct IdleRow {
    /// When the refresher computed it.
    pub computed_at: DateTime<Utc>,
    /// Window start.
    pub window_start: DateTime<Utc>,
    /// Window end.
    pub window_end: DateTime<Utc>,
    /// GPUs with data in the window.
    pub gpus_observed: i32,
    /// GPUs idle on average (sum of each GPU's idle share).
    pub idle_gpu_equivalent: f64,
    /// `idle_gpu_equivalent / gpus_observed`.
    pub idle_share: f64,
    /// Idle GPU-hours per week at this rate.
    pub gpu_hours_per_week: f64,
    /// Their price per week.
    pub money_per_week: f64,
    /// Currency.
    pub currency: String,
    /// Per GPU model: `{gpus, idle_gpu_equivalent, price_per_gpu_hour}`.
    pub by_model: serde_json::Value,
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// Stores `idle` as computed at `now` and prunes rows older than [`KEEP_DAYS`].
pub async fn record(pool: &PgPool, idle: &IdleCapacity, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let by_model = serde_json::to_value(&idle.by_model).unwrap_or(serde_json::Value::Null);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO idle_capacity (computed_at, window_start, window_end, gpus_observed, idle_gpu_equivalent, \
         idle_share, gpu_hours_per_week, money_per_week, currency, by_model) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (computed_at) DO NOTHING",
    )
    .bind(now)
    .bind(at(idle.from_secs))
    .bind(at(idle.to_secs))
    .bind(i32::try_from(idle.gpus_observed).unwrap_or(i32::MAX))
    .bind(idle.idle_gpu_equivalent)
    .bind(idle.idle_share)
    .bind(idle.gpu_hours_per_week)
    .bind(idle.money_per_week)
    .bind(&idle.currency)
    .bind(by_model)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM idle_capacity WHERE computed_at < $1")
        .bind(now - Duration::days(KEEP_DAYS))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// The latest figure, if the refresher has run.
pub async fn latest(pool: &PgPool) -> Result<Option<IdleRow>, sqlx::Error> {
    sqlx::query_as::<_, IdleRow>(
        "SELECT computed_at, window_start, window_end, gpus_observed, idle_gpu_equivalent, idle_share, \
         gpu_hours_per_week, money_per_week, currency, by_model FROM idle_capacity ORDER BY computed_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}
