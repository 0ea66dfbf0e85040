//! User alert rules.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::is_unique_violation;

use crate::domain::alert::RuleSpec;

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
