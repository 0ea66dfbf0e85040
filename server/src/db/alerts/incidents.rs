//! Incidents (`alerts`, one open per group): opened, re-triggered, refreshed and resolved together with their
//! deliveries in one transaction, so a crash can neither send a page for a state that was never stored nor lose one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use super::outbox::{Outgoing, queue};

/// An open incident as the dashboard shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OpenAlert {
    /// Row id.
    pub id: i64,
    /// Dedup key.
    pub dedup_key: String,
    /// Rules involved.
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

/// Open incidents by dedup key.
pub async fn open(pool: &PgPool) -> Result<HashMap<String, OpenAlert>, sqlx::Error> {
    let rows: Vec<OpenAlert> = sqlx::query_as(
        "SELECT id, dedup_key, rule, severity, source, summary, started_at FROM alerts WHERE state = 'firing' ORDER BY started_at DESC",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|a| (a.dedup_key.clone(), a)).collect())
}

/// An incident as the API lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Incident {
    /// Row id.
    pub id: i64,
    /// PagerDuty dedup key (also sent to webhooks).
    pub dedup_key: String,
    /// Group (`node/<id>`, `deployment/<name>`).
    #[sqlx(rename = "group_name")]
    pub group: String,
    /// Rules involved.
    pub rule: String,
    /// Severity.
    pub severity: String,
    /// Source.
    pub source: String,
    /// Component.
    pub component: String,
    /// Summary.
    pub summary: String,
    /// Members and evidence as last sent.
    pub details: Value,
    /// `firing` or `resolved`.
    pub state: String,
    /// Opened.
    pub started_at: DateTime<Utc>,
    /// Resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Last trigger queued.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// Triggers queued (1 + repeats).
    pub notifications: i32,
}

/// Filters of the incident list.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// `firing`, `resolved` or None for both.
    pub state: Option<String>,
    /// Exact severity.
    pub severity: Option<String>,
    /// Exact group.
    pub group: Option<String>,
    /// At most this many, newest first.
    pub limit: i64,
}

const INCIDENT_COLUMNS: &str = "id, dedup_key, group_name, rule, severity, source, component, summary, details, state, \
     started_at, resolved_at, last_notified_at, notifications";

/// Incidents, newest first.
pub async fn incidents(pool: &PgPool, f: &IncidentFilter) -> Result<Vec<Incident>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM alerts WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR severity = $2) \
         AND ($3::text IS NULL OR group_name = $3) ORDER BY started_at DESC, id DESC LIMIT $4"
    )))
    .bind(&f.state)
    .bind(&f.severity)
    .bind(&f.group)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

/// Open incidents by group.
pub async fn open_incidents(pool: &PgPool) -> Result<HashMap<String, Incident>, sqlx::Error> {
    let rows: Vec<Incident> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {INCIDENT_COLUMNS} FROM alerts WHERE state = 'firing'")))
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|a| (a.group.clone(), a)).collect())
}

/// One incident by id.
pub async fn incident(pool: &PgPool, id: i64) -> Result<Option<Incident>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {INCIDENT_COLUMNS} FROM alerts WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The rule names incidents have carried, for the alerts list's rule filter.
pub async fn incident_rules(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT r FROM alerts, unnest(string_to_array(rule, ',')) AS r WHERE r <> '' ORDER BY r LIMIT 200",
    )
    .fetch_all(pool)
    .await
}

/// What an incident says when it is opened or re-triggered.
#[derive(Debug, Clone)]
pub struct IncidentFields<'a> {
    /// Group.
    pub group: &'a str,
    /// Rules involved.
    pub rule: &'a str,
    /// Severity.
    pub severity: &'a str,
    /// Source.
    pub source: &'a str,
    /// Component.
    pub component: &'a str,
    /// Summary.
    pub summary: &'a str,
    /// Members and evidence.
    pub details: &'a Value,
}

/// Opens the incident of a group (unless one is open) with the deliveries `outgoing(dedup_key)` gives,
/// and links the group's firing instances to it. Returns the dedup key if it opened one.
pub async fn open_incident(
    pool: &PgPool,
    f: &IncidentFields<'_>,
    now: DateTime<Utc>,
    outgoing: impl Fn(&str) -> Vec<Outgoing>,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: i64 =
        sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('alerts', 'id'))").fetch_one(&mut *tx).await?;
    // One key per incident of the group: a group that fires again after resolving is a new incident.
    let dedup_key = format!("fleetpilot/{}/{id}", f.group);
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO alerts (id, dedup_key, rule, severity, source, component, group_name, summary, details, state, \
         started_at, last_notified_at, notifications) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'firing', $10, $10, 1) \
         ON CONFLICT (group_name) WHERE state = 'firing' DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(&dedup_key)
    .bind(f.rule)
    .bind(f.severity)
    .bind(f.source)
    .bind(f.component)
    .bind(f.group)
    .bind(f.summary)
    .bind(f.details)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        tx.rollback().await?;
        return Ok(None);
    }
    for o in outgoing(&dedup_key) {
        queue(&mut tx, id, &dedup_key, &o).await?;
    }
    link_members(&mut tx, id, f.group).await?;
    tx.commit().await?;
    Ok(Some(dedup_key))
}

/// Triggers an open incident again (the repeat interval passed) with fresh fields and deliveries.
pub async fn retrigger(
    pool: &PgPool,
    id: i64,
    dedup_key: &str,
    f: &IncidentFields<'_>,
    now: DateTime<Utc>,
    outgoing: &[Outgoing],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = update_fields(&mut tx, id, f, Some(now)).await?;
    if done {
        for o in outgoing {
            queue(&mut tx, id, dedup_key, o).await?;
        }
        link_members(&mut tx, id, f.group).await?;
    }
    tx.commit().await?;
    Ok(done)
}

/// Updates what an open incident says (its members changed) without notifying anyone.
pub async fn refresh_incident(pool: &PgPool, id: i64, f: &IncidentFields<'_>) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    update_fields(&mut tx, id, f, None).await?;
    link_members(&mut tx, id, f.group).await?;
    tx.commit().await
}

/// Writes what a firing incident says; with `notified_at`, also counts a notification sent then. Whether it
/// was still firing.
async fn update_fields(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
    f: &IncidentFields<'_>,
    notified_at: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE alerts SET rule = $2, severity = $3, source = $4, component = $5, summary = $6, details = $7, \
         last_notified_at = coalesce($8, last_notified_at), \
         notifications = notifications + CASE WHEN $8::timestamptz IS NULL THEN 0 ELSE 1 END \
         WHERE id = $1 AND state = 'firing'",
    )
    .bind(id)
    .bind(f.rule)
    .bind(f.severity)
    .bind(f.source)
    .bind(f.component)
    .bind(f.summary)
    .bind(f.details)
    .bind(notified_at)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Resolves the open incident `id` with its deliveries.
pub async fn resolve_incident(
    pool: &PgPool,
    id: i64,
    dedup_key: &str,
    now: DateTime<Utc>,
    outgoing: &[Outgoing],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query("UPDATE alerts SET state = 'resolved', resolved_at = $2 WHERE id = $1 AND state = 'firing'")
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if done {
        for o in outgoing {
            queue(&mut tx, id, dedup_key, o).await?;
        }
    }
    tx.commit().await?;
    Ok(done)
}

/// Links the group's firing instances that have no incident yet to incident `id`.
async fn link_members(tx: &mut Transaction<'_, Postgres>, id: i64, group: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE alert_instances SET incident_id = $1 WHERE group_name = $2 AND state = 'firing' AND incident_id IS NULL")
        .bind(id)
        .bind(group)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
