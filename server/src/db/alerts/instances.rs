//! Alert instances, one per condition: pending -> firing -> resolved, changed by the engine in one transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use crate::domain::alert::{Condition, Labels};

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

/// An alert instance as the fault benchmark scores it: id, rule, and its node, GPU and deployment labels.
pub type FiredInstance = (i64, String, Option<String>, Option<String>, Option<String>);

/// The alert instances that fired exactly at `at`, except those of the rules in `except`.
pub async fn fired_at(pool: &PgPool, at: DateTime<Utc>, except: &[&str]) -> Result<Vec<FiredInstance>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, rule, labels->>'node', labels->>'gpu', labels->>'deployment' FROM alert_instances \
         WHERE fired_at = $1 AND rule <> ALL($2)",
    )
    .bind(at)
    .bind(except)
    .fetch_all(pool)
    .await
}
