//! Alert state and the delivery outbox. Instances (one per condition) move pending -> firing -> resolved;
//! incidents (`alerts`, one open per group) are opened, re-triggered and resolved together with their
//! deliveries, one outbox row per receiver, in one transaction: a crash can neither send a page for a state
//! that was never stored nor lose one. Also user rules, silences, webhook receivers and the metric reads
//! the rules evaluate.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::alerts::rules::{Aggregate, Condition, Labels, Matcher, Metric, RuleSpec, WebhookSpec};

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

/// An active (pending or firing) instance as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Instance {
    /// Row id.
    pub id: i64,
    /// Identity of the condition.
    pub fingerprint: String,
    /// Rule.
    pub rule: String,
    /// Severity.
    pub severity: String,
    /// Group.
    #[sqlx(rename = "group_name")]
    pub group: String,
    /// Labels.
    pub labels: Value,
    /// Summary.
    pub summary: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// Why it does not page.
    pub suppressed: Option<String>,
    /// Holding since.
    pub active_since: DateTime<Utc>,
    /// Fired at.
    pub fired_at: Option<DateTime<Utc>>,
    /// Resolved at.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Incident it belongs to.
    pub incident_id: Option<i64>,
}

const INSTANCE_COLUMNS: &str = "id, fingerprint, rule, severity, group_name, labels, summary, state, suppressed, \
     active_since, fired_at, resolved_at, incident_id";

/// Pending and firing instances by fingerprint.
pub async fn active_instances(pool: &PgPool) -> Result<HashMap<String, Instance>, sqlx::Error> {
    let rows: Vec<Instance> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INSTANCE_COLUMNS} FROM alert_instances WHERE state IN ('pending', 'firing')"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|i| (i.fingerprint.clone(), i)).collect())
}

/// Instances for the API: by state (None: pending and firing), newest first.
pub async fn instances(pool: &PgPool, state: Option<&str>, limit: i64) -> Result<Vec<Instance>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INSTANCE_COLUMNS} FROM alert_instances \
         WHERE CASE WHEN $1::text IS NULL THEN state IN ('pending', 'firing') ELSE state = $1 END \
         ORDER BY active_since DESC, id DESC LIMIT $2"
    )))
    .bind(state)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One change to the instances, decided by the engine.
#[derive(Debug, Clone)]
pub enum InstanceChange<'a> {
    /// A new condition: pending, or firing at once when it has no for-duration.
    Insert {
        /// The condition.
        cond: &'a Condition,
        /// Fires now.
        firing: bool,
    },
    /// A pending instance held long enough.
    Fire {
        /// Row id.
        id: i64,
        /// The condition now.
        cond: &'a Condition,
    },
    /// Still holding; its suppression or severity changed.
    Update {
        /// Row id.
        id: i64,
        /// The condition now.
        cond: &'a Condition,
    },
    /// A pending instance that stopped holding before it fired (forgotten).
    Drop {
        /// Row id.
        id: i64,
    },
    /// A firing instance that stopped holding.
    Resolve {
        /// Row id.
        id: i64,
    },
}

/// Applies instance changes at `now` in one transaction.
pub async fn apply_instance_changes(
    pool: &PgPool,
    changes: &[InstanceChange<'_>],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for ch in changes {
        match ch {
            InstanceChange::Insert { cond: c, firing } => {
                sqlx::query(
                    "INSERT INTO alert_instances (fingerprint, rule, rule_id, severity, group_name, labels, summary, details, \
                     state, suppressed, active_since, fired_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (fingerprint) WHERE state IN ('pending', 'firing') DO NOTHING",
                )
                .bind(&c.fingerprint)
                .bind(&c.rule)
                .bind(c.rule_id)
                .bind(c.severity.as_str())
                .bind(&c.group)
                .bind(sqlx::types::Json(&c.labels))
                .bind(&c.summary)
                .bind(&c.details)
                .bind(if *firing { "firing" } else { "pending" })
                .bind(&c.suppressed)
                .bind(now)
                .bind(firing.then_some(now))
                .execute(&mut *tx)
                .await?;
            }
            InstanceChange::Fire { id, cond: c } | InstanceChange::Update { id, cond: c } => {
                let fire = matches!(ch, InstanceChange::Fire { .. });
                sqlx::query(
                    "UPDATE alert_instances SET severity = $2, labels = $3, summary = $4, details = $5, suppressed = $6, \
                     state = CASE WHEN $7 THEN 'firing' ELSE state END, \
                     fired_at = CASE WHEN $7 THEN $8 ELSE fired_at END WHERE id = $1 AND state IN ('pending', 'firing')",
                )
                .bind(id)
                .bind(c.severity.as_str())
                .bind(sqlx::types::Json(&c.labels))
                .bind(&c.summary)
                .bind(&c.details)
                .bind(&c.suppressed)
                .bind(fire)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            InstanceChange::Drop { id } => {
                sqlx::query("DELETE FROM alert_instances WHERE id = $1 AND state = 'pending'")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            InstanceChange::Resolve { id } => {
                sqlx::query(
                    "UPDATE alert_instances SET state = 'resolved', resolved_at = $2 WHERE id = $1 AND state = 'firing'",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await
}

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
    let done = sqlx::query(
        "UPDATE alerts SET last_notified_at = $2, notifications = notifications + 1, rule = $3, severity = $4, \
         source = $5, component = $6, summary = $7, details = $8 WHERE id = $1 AND state = 'firing'",
    )
    .bind(id)
    .bind(now)
    .bind(f.rule)
    .bind(f.severity)
    .bind(f.source)
    .bind(f.component)
    .bind(f.summary)
    .bind(f.details)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
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
    sqlx::query(
        "UPDATE alerts SET rule = $2, severity = $3, source = $4, component = $5, summary = $6, details = $7 \
         WHERE id = $1 AND state = 'firing'",
    )
    .bind(id)
    .bind(f.rule)
    .bind(f.severity)
    .bind(f.source)
    .bind(f.component)
    .bind(f.summary)
    .bind(f.details)
    .execute(&mut *tx)
    .await?;
    link_members(&mut tx, id, f.group).await?;
    tx.commit().await
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

async fn queue(
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

/// A stored user rule.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoredRule {
    /// Id.
    pub id: Uuid,
    /// The rule.
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

type RuleRow = (Uuid, Value, DateTime<Utc>, DateTime<Utc>);

fn rule_of(r: RuleRow) -> Option<StoredRule> {
    match serde_json::from_value::<RuleSpec>(r.1) {
        Ok(spec) => Some(StoredRule { id: r.0, spec, created_at: r.2, updated_at: r.3 }),
        Err(e) => {
            tracing::warn!(rule = %r.0, error = %e, "stored alert rule does not parse; skipped");
            None
        }
    }
}

/// Outcome of a rule write.
#[derive(Debug)]
pub enum RuleWrite {
    /// Written.
    Ok(StoredRule),
    /// Another live rule has that name.
    NameTaken,
    /// No such rule.
    NotFound,
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Creates a user rule.
pub async fn create_rule(pool: &PgPool, spec: &RuleSpec) -> Result<RuleWrite, sqlx::Error> {
    let json = serde_json::to_value(spec).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let r: Result<RuleRow, _> = sqlx::query_as(
        "INSERT INTO alert_rules (id, name, spec) VALUES ($1, $2, $3) RETURNING id, spec, created_at, updated_at",
    )
    .bind(Uuid::new_v4())
    .bind(&spec.name)
    .bind(json)
    .fetch_one(pool)
    .await;
    match r {
        Ok(row) => Ok(rule_of(row).map_or(RuleWrite::NotFound, RuleWrite::Ok)),
        Err(e) if is_unique_violation(&e) => Ok(RuleWrite::NameTaken),
        Err(e) => Err(e),
    }
}

/// Replaces a user rule.
pub async fn update_rule(pool: &PgPool, id: Uuid, spec: &RuleSpec) -> Result<RuleWrite, sqlx::Error> {
    let json = serde_json::to_value(spec).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let r: Result<Option<RuleRow>, _> = sqlx::query_as(
        "UPDATE alert_rules SET name = $2, spec = $3, updated_at = now() WHERE id = $1 AND deleted_at IS NULL \
         RETURNING id, spec, created_at, updated_at",
    )
    .bind(id)
    .bind(&spec.name)
    .bind(json)
    .fetch_optional(pool)
    .await;
    match r {
        Ok(Some(row)) => Ok(rule_of(row).map_or(RuleWrite::NotFound, RuleWrite::Ok)),
        Ok(None) => Ok(RuleWrite::NotFound),
        Err(e) if is_unique_violation(&e) => Ok(RuleWrite::NameTaken),
        Err(e) => Err(e),
    }
}

/// Live user rules, by name.
pub async fn rules(pool: &PgPool) -> Result<Vec<StoredRule>, sqlx::Error> {
    let rows: Vec<RuleRow> = sqlx::query_as(
        "SELECT id, spec, created_at, updated_at FROM alert_rules WHERE deleted_at IS NULL ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(rule_of).collect())
}

/// One live user rule.
pub async fn rule(pool: &PgPool, id: Uuid) -> Result<Option<StoredRule>, sqlx::Error> {
    let row: Option<RuleRow> =
        sqlx::query_as("SELECT id, spec, created_at, updated_at FROM alert_rules WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(rule_of))
}

/// Deletes a user rule (its firing alerts resolve at the next evaluation).
pub async fn delete_rule(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("UPDATE alert_rules SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        == 1)
}

/// A silence.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Silence {
    /// Id.
    pub id: Uuid,
    /// Matchers.
    #[schema(value_type = Vec<Matcher>)]
    pub matchers: sqlx::types::Json<Vec<Matcher>>,
    /// Why.
    pub comment: String,
    /// Who.
    pub created_by: String,
    /// From.
    pub starts_at: DateTime<Utc>,
    /// Until.
    pub ends_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Creates a silence.
pub async fn create_silence(
    pool: &PgPool,
    matchers: &[Matcher],
    comment: &str,
    created_by: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
) -> Result<Silence, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO silences (id, matchers, comment, created_by, starts_at, ends_at) VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING id, matchers, comment, created_by, starts_at, ends_at, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(sqlx::types::Json(matchers))
    .bind(comment)
    .bind(created_by)
    .bind(starts_at)
    .bind(ends_at)
    .fetch_one(pool)
    .await
}

/// Silences not yet ended at `now` (with `all`, every one), newest first.
pub async fn silences(pool: &PgPool, now: DateTime<Utc>, all: bool) -> Result<Vec<Silence>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, matchers, comment, created_by, starts_at, ends_at, created_at FROM silences \
         WHERE $2 OR ends_at > $1 ORDER BY created_at DESC LIMIT 1000",
    )
    .bind(now)
    .bind(all)
    .fetch_all(pool)
    .await
}

/// Silences in force at `now`.
pub async fn active_silences(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<(Uuid, Vec<Matcher>)>, sqlx::Error> {
    let rows: Vec<(Uuid, sqlx::types::Json<Vec<Matcher>>)> =
        sqlx::query_as("SELECT id, matchers FROM silences WHERE starts_at <= $1 AND ends_at > $1")
            .bind(now)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(id, m)| (id, m.0)).collect())
}

/// Ends a silence now; false if there is none or it already ended.
pub async fn expire_silence(pool: &PgPool, id: Uuid, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("UPDATE silences SET ends_at = $2 WHERE id = $1 AND ends_at > $2")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected()
        == 1)
}

/// One incident by id.
pub async fn incident(pool: &PgPool, id: i64) -> Result<Option<Incident>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {INCIDENT_COLUMNS} FROM alerts WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The labels of the pending and firing instances of `groups`, with their group: what the dashboard checks
/// silences against to show an incident as silenced before the next evaluation marks it.
pub async fn active_labels(pool: &PgPool, groups: &[String]) -> Result<Vec<(String, Labels)>, sqlx::Error> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, sqlx::types::Json<Labels>)> = sqlx::query_as(
        "SELECT group_name, labels FROM alert_instances WHERE state IN ('pending', 'firing') AND group_name = ANY($1)",
    )
    .bind(groups)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(g, l)| (g, l.0)).collect())
}

/// The rule names incidents have carried, for the alerts list's rule filter.
pub async fn incident_rules(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT r FROM alerts, unnest(string_to_array(rule, ',')) AS r WHERE r <> '' ORDER BY r LIMIT 200",
    )
    .fetch_all(pool)
    .await
}

/// A webhook receiver added through the API, as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Webhook {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Adds a webhook receiver; None if the name is taken.
pub async fn create_webhook(pool: &PgPool, w: &WebhookSpec) -> Result<Option<Webhook>, sqlx::Error> {
    let r = sqlx::query_as(
        "INSERT INTO webhook_receivers (id, name, url, secret) VALUES ($1, $2, $3, $4) RETURNING id, name, url, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(&w.name)
    .bind(&w.url)
    .bind(w.secret.expose())
    .fetch_one(pool)
    .await;
    match r {
        Ok(w) => Ok(Some(w)),
        Err(e) if is_unique_violation(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Live webhook receivers added through the API.
pub async fn webhooks(pool: &PgPool) -> Result<Vec<Webhook>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, url, created_at FROM webhook_receivers WHERE deleted_at IS NULL ORDER BY name")
        .fetch_all(pool)
        .await
}

/// A live webhook's URL and secret, by name (for sending only).
pub async fn webhook_target(pool: &PgPool, name: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT url, secret FROM webhook_receivers WHERE name = $1 AND deleted_at IS NULL")
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// Removes a webhook receiver (queued deliveries to it then fail permanently).
pub async fn delete_webhook(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("UPDATE webhook_receivers SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        == 1)
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

/// Latest GPU readings newer than `since` that are at or above `temp_c`: (node, gpu, uuid, temp, deployment).
pub async fn hot_gpus(
    pool: &PgPool,
    temp_c: f64,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i32, String, f32, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.node_id, g.gpu_index, g.uuid, g.temp_c, n.deployment FROM gpu_latest g JOIN nodes n USING (node_id) \
         WHERE g.temp_c >= $1 AND g.ts >= $2 ORDER BY g.node_id, g.gpu_index",
    )
    .bind(temp_c as f32)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Latest GPU readings newer than `since` with any of the `mask` throttle reasons set.
pub async fn throttled_gpus(
    pool: &PgPool,
    mask: i64,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i32, String, i64, Option<f32>)>, sqlx::Error> {
    // `temp_c` may be absent (the agent could not read it); an absent throttle mask never matches.
    sqlx::query_as(
        "SELECT node_id, gpu_index, uuid, throttle_reasons, temp_c FROM gpu_latest \
         WHERE (throttle_reasons & $1) <> 0 AND ts >= $2 ORDER BY node_id, gpu_index",
    )
    .bind(mask)
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Records GPUs whose sticky `xid_last` changed since the last call, then returns the GPUs with a non-zero
/// XID that changed at or after `changed_since` and reported at or after `fresh_since`.
pub async fn recent_xids(
    pool: &PgPool,
    changed_since: DateTime<Utc>,
    fresh_since: DateTime<Utc>,
) -> Result<Vec<(String, i32, String, i32, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO gpu_xid_seen (node_id, gpu_index, xid_last, changed_at) \
         SELECT g.node_id, g.gpu_index, g.xid_last, g.ts FROM gpu_latest g \
         LEFT JOIN gpu_xid_seen s ON s.node_id = g.node_id AND s.gpu_index = g.gpu_index \
         WHERE g.xid_last IS NOT NULL AND s.xid_last IS DISTINCT FROM g.xid_last \
         ON CONFLICT (node_id, gpu_index) DO UPDATE SET xid_last = EXCLUDED.xid_last, changed_at = EXCLUDED.changed_at",
    )
    .execute(pool)
    .await?;
    sqlx::query_as(
        "SELECT s.node_id, s.gpu_index, g.uuid, s.xid_last, s.changed_at FROM gpu_xid_seen s \
         JOIN gpu_latest g ON g.node_id = s.node_id AND g.gpu_index = s.gpu_index \
         WHERE s.xid_last <> 0 AND s.changed_at >= $1 AND g.ts >= $2 ORDER BY s.node_id, s.gpu_index",
    )
    .bind(changed_since)
    .bind(fresh_since)
    .fetch_all(pool)
    .await
}

/// GPUs that stopped reporting while their node still reports: the latest reading older than `fresh` but
/// newer than `forget_before` (a GPU removed for good stops alerting a day later), on a node with another
/// GPU reading at or after `fresh`: (node, gpu, uuid, last reading, deployment).
pub async fn missing_gpus(
    pool: &PgPool,
    fresh: DateTime<Utc>,
    forget_before: DateTime<Utc>,
) -> Result<Vec<(String, i32, String, DateTime<Utc>, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.node_id, g.gpu_index, g.uuid, g.ts, n.deployment FROM gpu_latest g JOIN nodes n USING (node_id) \
         WHERE g.ts < $1 AND g.ts >= $2 \
           AND EXISTS (SELECT 1 FROM gpu_latest o WHERE o.node_id = g.node_id AND o.ts >= $1) \
         ORDER BY g.node_id, g.gpu_index",
    )
    .bind(fresh)
    .bind(forget_before)
    .fetch_all(pool)
    .await
}

/// GPUs reporting at or after `fresh` whose whole reading (utilisation, memory, power, temperature, SM
/// clock) has not changed for at least `for_secs`: (node, gpu, uuid, unchanged since, deployment). A GPU
/// with none of those readings (every NVML read failing) has nothing to be stuck on and is left out: the
/// agent counts those failures in its own metrics.
pub async fn stuck_gpus(
    pool: &PgPool,
    fresh: DateTime<Utc>,
    for_secs: f64,
) -> Result<Vec<(String, i32, String, DateTime<Utc>, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT g.node_id, g.gpu_index, g.uuid, g.changed_at, n.deployment FROM gpu_latest g JOIN nodes n USING (node_id) \
         WHERE g.ts >= $1 AND g.changed_at IS NOT NULL AND g.ts - g.changed_at >= make_interval(secs => $2) \
           AND num_nonnulls(g.util_pct, g.mem_used_bytes, g.power_w, g.temp_c, g.sm_clock_mhz) > 0 \
         ORDER BY g.node_id, g.gpu_index",
    )
    .bind(fresh)
    .bind(for_secs)
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

/// A GPU metric's latest value per GPU, readings newer than `since`, optionally of one node / deployment:
/// (node, gpu, uuid, deployment, value). GPUs whose latest reading lacks the metric (unknown) are left out:
/// an unknown utilisation must not satisfy "below 5 %".
pub async fn gpu_metric(
    pool: &PgPool,
    metric: Metric,
    since: DateTime<Utc>,
    node: Option<&str>,
    deployment: Option<&str>,
) -> Result<Vec<(String, i32, String, Option<String>, f64)>, sqlx::Error> {
    let col = metric.column();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT g.node_id, g.gpu_index, g.uuid, n.deployment, g.{col}::float8 FROM gpu_latest g JOIN nodes n USING (node_id) \
         WHERE g.ts >= $1 AND g.{col} IS NOT NULL AND ($2::text IS NULL OR g.node_id = $2) \
           AND ($3::text IS NULL OR n.deployment = $3) ORDER BY g.node_id, g.gpu_index"
    )))
    .bind(since)
    .bind(node)
    .bind(deployment)
    .fetch_all(pool)
    .await
}

/// A serving metric per deployment: the `agg` of its replicas' latest values newer than `since` (replicas
/// without the value are left out): (deployment, value, replicas).
pub async fn serving_metric(
    pool: &PgPool,
    metric: Metric,
    agg: Aggregate,
    since: DateTime<Utc>,
    node: Option<&str>,
    deployment: Option<&str>,
) -> Result<Vec<(String, f64, i64)>, sqlx::Error> {
    let (col, f) = (metric.column(), agg.sql());
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT deployment, {f}({col})::float8, count(*) FROM serving_latest \
         WHERE ts >= $1 AND {col} IS NOT NULL AND ($2::text IS NULL OR node_id = $2) AND ($3::text IS NULL OR deployment = $3) \
         GROUP BY deployment ORDER BY deployment"
    )))
    .bind(since)
    .bind(node)
    .bind(deployment)
    .fetch_all(pool)
    .await
}

/// The latest decision of each live policy made at or after `since`, when it carries an error:
/// (policy name, target, error, decided_at).
pub async fn failed_scaling(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<(String, String, String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, target, error, decided_at FROM ( \
           SELECT DISTINCT ON (d.policy_id) p.name, d.target, d.error, d.decided_at FROM decisions d \
           JOIN policies p ON p.id = d.policy_id AND p.deleted_at IS NULL \
           WHERE d.decided_at >= $1 ORDER BY d.policy_id, d.decided_at DESC) latest \
         WHERE error IS NOT NULL ORDER BY name",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Open anomaly events whose severity is one of `severities` (`anomaly-high`), oldest first.
pub async fn open_anomalies(
    pool: &PgPool,
    severities: &[&str],
) -> Result<Vec<crate::db::anomalies::StoredAnomaly>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, node_id, deployment, target, metric, source, started_at, ended_at, severity, score, evidence \
         FROM anomalies WHERE ended_at IS NULL AND severity = ANY($1) ORDER BY started_at, id",
    )
    .bind(severities)
    .fetch_all(pool)
    .await
}

/// Open (not closed, not dismissed) opportunities saving at least `min_saving` per week
/// (`opportunity-value`), highest saving first.
pub async fn open_opportunities_worth(
    pool: &PgPool,
    min_saving: f64,
) -> Result<Vec<crate::db::opportunities::StoredOpportunity>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM opportunities WHERE status = 'open' AND saving_per_week >= $1 \
         ORDER BY saving_per_week DESC, key",
        crate::db::opportunities::COLUMNS
    )))
    .bind(min_saving)
    .fetch_all(pool)
    .await
}
