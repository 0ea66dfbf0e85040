//! The audit log: who changed what, when, with the object before and after. Writers pass JSON without secrets
//! (webhook secrets, password hashes and token secrets are never part of what is recorded).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

/// One entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Id, increasing.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who: `user:<name>` (dashboard), `token:<name>` (a named API token), `api-token` (the configured one).
    pub actor: String,
    /// What: `create`, `update`, `delete`, `revoke`, `rotate`, `act`, `dismiss`, `expire`, ...
    pub action: String,
    /// Kind of object: `policy`, `silence`, `alert_rule`, `webhook`, `user`, `api_token`, `enrollment_token`,
    /// `opportunity`, ...
    pub object_kind: String,
    /// Its id or name.
    pub object_id: String,
    /// Before the change (`None` for a creation).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// After the change (`None` for a deletion).
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

/// An object as the log stores it.
pub fn json<T: Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

/// Records one change. A failure is logged, never returned: the change itself already happened.
pub async fn record(
    pool: &PgPool,
    actor: &str,
    action: &str,
    kind: &str,
    id: &str,
    before: Option<Value>,
    after: Option<Value>,
) {
    let r = sqlx::query(
        "INSERT INTO audit_log (actor, action, object_kind, object_id, before, after) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(actor)
    .bind(action)
    .bind(kind)
    .bind(id)
    .bind(before)
    .bind(after)
    .execute(pool)
    .await;
    if let Err(e) = r {
        tracing::error!(error = %e, actor, action, kind, id, "could not write the audit log");
    }
}

/// Newest first, at most `limit`, older than `before_id` when given, optionally one kind of object.
pub async fn list(
    pool: &PgPool,
    kind: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, action, object_kind, object_id, before, after FROM audit_log \
         WHERE ($1::text IS NULL OR object_kind = $1) AND ($2::bigint IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(kind)
    .bind(before_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
