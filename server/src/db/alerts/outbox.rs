//! The delivery outbox: one row per receiver and state change, claimed with a lease, retried, given up.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

/// An outbox row to queue with a state change: its receiver and body (without secrets).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `pagerduty` or `webhook:<name>`.
    pub receiver: String,
    /// `trigger` or `resolve`.
    pub action: &'static str,
    /// The body.
    pub payload: Value,
}

pub(super) async fn queue(
    tx: &mut Transaction<'_, Postgres>,
    alert: i64,
    dedup_key: &str,
    o: &Outgoing,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_deliveries (alert_id, action, dedup_key, payload, receiver) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(alert)
    .bind(o.action)
    .bind(dedup_key)
    .bind(&o.payload)
    .bind(&o.receiver)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A delivery claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    /// Row id.
    pub id: i64,
    /// Receiver.
    pub receiver: String,
    /// `trigger` or `resolve`.
    pub action: String,
    /// Dedup key.
    pub dedup_key: String,
    /// Body without secrets (the routing key is added at send time so it is never stored).
    pub payload: Value,
    /// Attempts so far, including this one.
    pub attempts: i32,
}

/// Claims up to `limit` due deliveries for `lease_secs` (other workers skip them meanwhile). Deliveries of
/// one dedup key to one receiver go strictly in order: a resolve is never sent before its trigger.
pub async fn claim_due(pool: &PgPool, limit: i64, lease_secs: f64) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE alert_deliveries SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2) \
         WHERE id IN ( \
           SELECT d.id FROM alert_deliveries d \
           WHERE d.delivered_at IS NULL AND NOT d.failed_permanently AND d.next_attempt_at <= now() \
             AND NOT EXISTS (SELECT 1 FROM alert_deliveries e WHERE e.receiver = d.receiver AND e.dedup_key = d.dedup_key \
                             AND e.id < d.id AND e.delivered_at IS NULL AND NOT e.failed_permanently) \
           ORDER BY d.id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, receiver, action, dedup_key, payload, attempts",
    )
    .bind(limit)
    .bind(lease_secs)
    .fetch_all(pool)
    .await
}

/// Records a successful delivery.
pub async fn delivered(pool: &PgPool, id: i64, status: u16) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE alert_deliveries SET delivered_at = now(), last_error = NULL, last_status = $2 WHERE id = $1")
        .bind(id)
        .bind(i32::from(status))
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a failed attempt: retried after `retry_in_secs`, or never again if `permanent`.
pub async fn failed(
    pool: &PgPool,
    id: i64,
    error: &str,
    status: Option<u16>,
    permanent: bool,
    retry_in_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alert_deliveries SET last_error = $2, failed_permanently = $3, last_status = $5, \
         next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(permanent)
    .bind(retry_in_secs)
    .bind(status.map(i32::from))
    .execute(pool)
    .await?;
    Ok(())
}

/// A delivery as the API lists it (no payload: it is what was sent, minus secrets, and can be large).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeliveryRow {
    /// Row id.
    pub id: i64,
    /// Incident.
    pub alert_id: i64,
    /// Receiver.
    pub receiver: String,
    /// `trigger` or `resolve`.
    pub action: String,
    /// Dedup key.
    pub dedup_key: String,
    /// Queued.
    pub created_at: DateTime<Utc>,
    /// Attempts.
    pub attempts: i32,
    /// Next attempt.
    pub next_attempt_at: DateTime<Utc>,
    /// Delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Refused for good (a 4xx other than 429).
    pub failed_permanently: bool,
    /// Last error.
    pub last_error: Option<String>,
    /// Last HTTP status.
    pub last_status: Option<i32>,
}

/// Deliveries, newest first: `state` is `pending`, `delivered`, `failed` (permanently) or None for all.
pub async fn deliveries(pool: &PgPool, state: Option<&str>, limit: i64) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, alert_id, receiver, action, dedup_key, created_at, attempts, next_attempt_at, delivered_at, \
         failed_permanently, last_error, last_status FROM alert_deliveries \
         WHERE CASE $1::text WHEN 'pending' THEN delivered_at IS NULL AND NOT failed_permanently \
                             WHEN 'delivered' THEN delivered_at IS NOT NULL \
                             WHEN 'failed' THEN failed_permanently ELSE true END \
         ORDER BY id DESC LIMIT $2",
    )
    .bind(state)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Gives up every delivery still undelivered `older_than_secs` after it was queued: it is marked failed with the
/// reason and never sent. Returns how many.
pub async fn give_up_stale(pool: &PgPool, older_than_secs: f64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE alert_deliveries SET failed_permanently = true, \
           last_error = format('gave up: undelivered %s s after it was queued (%s attempts); last error: %s', \
                               round($1::numeric), attempts, coalesce(last_error, 'none')) \
         WHERE delivered_at IS NULL AND NOT failed_permanently AND created_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than_secs)
    .execute(pool)
    .await?
    .rows_affected())
}
