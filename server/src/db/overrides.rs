//! Operator overrides of a policy's replica count (one-click actions): recorded here, applied and held by the
//! control loop's leader, never actuated by the handler that records them.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// One override as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Override {
    /// Row id.
    pub id: i64,
    /// The policy whose count it sets.
    pub policy_id: Uuid,
    /// Replicas asked for (the loop clamps them to the policy's bounds).
    pub replicas: i32,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// Until when the loop holds the count (its engine's decisions are recorded, not acted on).
    pub hold_until: DateTime<Utc>,
    /// Who asked.
    pub created_by: String,
    /// Why, in words.
    pub reason: String,
    /// When the loop applied it (`None`: not yet).
    pub applied_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, policy_id, replicas, created_at, hold_until, created_by, reason, applied_at";

/// Records an override; returns its id.
pub async fn create(
    pool: &PgPool,
    policy_id: Uuid,
    replicas: u32,
    hold_until: DateTime<Utc>,
    by: &str,
    reason: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO policy_overrides (policy_id, replicas, hold_until, created_by, reason) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(policy_id)
    .bind(i32::try_from(replicas).unwrap_or(i32::MAX))
    .bind(hold_until)
    .bind(by)
    .bind(reason)
    .fetch_one(pool)
    .await
}

/// The override in force per policy at `now`: each policy's newest (a newer one supersedes older ones), if it
/// is still to be applied or still held.
pub async fn active(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<Override>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM (SELECT DISTINCT ON (policy_id) {COLUMNS} FROM policy_overrides \
           ORDER BY policy_id, created_at DESC, id DESC) o \
         WHERE applied_at IS NULL OR hold_until > $1"
    )))
    .bind(now)
    .fetch_all(pool)
    .await
}

/// Records that the loop applied override `id` with decision `decision_id`.
pub async fn mark_applied(
    pool: &PgPool,
    id: i64,
    decision_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE policy_overrides SET applied_at = $2, decision_id = $3 WHERE id = $1 AND applied_at IS NULL")
        .bind(id)
        .bind(now)
        .bind(decision_id)
        .execute(pool)
        .await
        .map(drop)
}
