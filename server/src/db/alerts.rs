//! Alert state and the delivery outbox. A state change and its delivery row are written in one
//! transaction, so a crash can neither send a page for a state that was never stored nor lose one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// An alert condition that holds now.
#[derive(Debug, Clone, Serialize)]
pub struct Firing {
    /// Stable identity of the condition (also the PagerDuty dedup_key).
    pub dedup_key: String,
    /// Rule name.
    pub rule: String,
    /// `critical`, `error`, `warning` or `info` (PagerDuty's severities).
    pub severity: String,
    /// Affected system (node).
    pub source: String,
    /// Affected component (e.g. `gpu 3`).
    pub component: String,
    /// Grouping (deployment or node).
    pub group: String,
    /// One line for the page.
    pub summary: String,
    /// Evidence.
    pub details: serde_json::Value,
}

/// An open alert as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OpenAlert {
    /// Row id.
    pub id: i64,
    /// Dedup key.
    pub dedup_key: String,
    /// Rule.
    pub rule: String,
    /// Severity.
    pub severity: String,
    /// Source.
    pub source: String,
    /// Summary.
    pub summary: String,
    /// Since when.
    pub started_at: DateTime<Utc>,
}

/// Open alerts by dedup key.
pub async fn open(pool: &PgPool) -> Result<HashMap<String, OpenAlert>, sqlx::Error> {
    let rows: Vec<OpenAlert> = sqlx::query_as(
        "SELECT id, dedup_key, rule, severity, source, summary, started_at FROM alerts WHERE state = 'firing' ORDER BY started_at DESC",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|a| (a.dedup_key.clone(), a)).collect())
}

/// Opens an alert (unless one is already open for the key) and, if `payload` is given, queues its trigger.
/// Returns whether a new alert was opened.
pub async fn fire(pool: &PgPool, f: &Firing, payload: Option<serde_json::Value>) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO alerts (dedup_key, rule, severity, source, component, group_name, summary, details, state, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'firing', now()) \
         ON CONFLICT (dedup_key) WHERE state = 'firing' DO NOTHING RETURNING id",
    )
    .bind(&f.dedup_key)
    .bind(&f.rule)
    .bind(&f.severity)
    .bind(&f.source)
    .bind(&f.component)
    .bind(&f.group)
    .bind(&f.summary)
    .bind(&f.details)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        tx.rollback().await?;
        return Ok(false);
    };
    if let Some(p) = payload {
        queue(&mut tx, id, "trigger", &f.dedup_key, &p).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Resolves the open alert `id` and, if `payload` is given, queues its resolve.
pub async fn resolve(
    pool: &PgPool,
    id: i64,
    dedup_key: &str,
    payload: Option<serde_json::Value>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done =
        sqlx::query("UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE id = $1 AND state = 'firing'")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
    if done && let Some(p) = payload {
        queue(&mut tx, id, "resolve", dedup_key, &p).await?;
    }
    tx.commit().await?;
    Ok(done)
}

async fn queue(
    tx: &mut sqlx::PgConnection,
    alert: i64,
    action: &str,
    dedup_key: &str,
    payload: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO alert_deliveries (alert_id, action, dedup_key, payload) VALUES ($1, $2, $3, $4)")
        .bind(alert)
        .bind(action)
        .bind(dedup_key)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A delivery claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    /// Row id.
    pub id: i64,
    /// `trigger` or `resolve`.
    pub action: String,
    /// Dedup key.
    pub dedup_key: String,
    /// Body without the routing key (added at send time so it is never stored).
    pub payload: serde_json::Value,
    /// Attempts so far, including this one.
    pub attempts: i32,
}

/// Claims up to `limit` due deliveries for `lease_secs` (other workers skip them meanwhile). Deliveries of
/// one dedup key go strictly in order: a resolve is never sent before its trigger.
pub async fn claim_due(pool: &PgPool, limit: i64, lease_secs: i32) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE alert_deliveries SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2) \
         WHERE id IN ( \
           SELECT d.id FROM alert_deliveries d \
           WHERE d.delivered_at IS NULL AND NOT d.failed_permanently AND d.next_attempt_at <= now() \
             AND NOT EXISTS (SELECT 1 FROM alert_deliveries e WHERE e.dedup_key = d.dedup_key AND e.id < d.id \
                             AND e.delivered_at IS NULL AND NOT e.failed_permanently) \
           ORDER BY d.id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, action, dedup_key, payload, attempts",
    )
    .bind(limit)
    .bind(f64::from(lease_secs))
    .fetch_all(pool)
    .await
}

/// Records a successful delivery.
pub async fn delivered(pool: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE alert_deliveries SET delivered_at = now(), last_error = NULL WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a failed attempt: retried after `retry_in_secs`, or never again if `permanent`.
pub async fn failed(
    pool: &PgPool,
    id: i64,
    error: &str,
    permanent: bool,
    retry_in_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alert_deliveries SET last_error = $2, failed_permanently = $3, \
         next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(permanent)
    .bind(retry_in_secs)
    .execute(pool)
    .await?;
    Ok(())
}

/// Latest GPU readings newer than `since` that are at or above `temp_c`.
pub async fn hot_gpus(
    pool: &PgPool,
    temp_c: f64,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i32, String, f32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT node_id, gpu_index, uuid, temp_c FROM gpu_latest WHERE temp_c >= $1 AND ts >= $2 ORDER BY node_id, gpu_index",
    )
    .bind(temp_c as f32)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Nodes not heard from since `since`, with when they were last seen.
pub async fn silent_nodes(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT node_id, last_seen FROM nodes WHERE last_seen < $1 ORDER BY node_id")
        .bind(since)
        .fetch_all(pool)
        .await
}
