//! Enrollment tokens and per-node credentials (SHA-256 digests only; the tokens themselves are shown once),
//! re-enrollment grants and the enrollment audit trail.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// SHA-256 of a token.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Stores a new enrollment token's digest with the deployments its nodes may report.
pub async fn create_token(
    pool: &PgPool,
    token: &str,
    expires_at: DateTime<Utc>,
    max_uses: i32,
    note: &str,
    deployments: &[String],
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO enrollment_tokens (id, token_sha256, note, expires_at, max_uses, deployments) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(digest(token))
    .bind(note)
    .bind(expires_at)
    .bind(max_uses)
    .bind(deployments)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Unknown, expired, revoked or used up.
    InvalidToken,
    /// The node id is enrolled already and no operator granted a re-enrollment.
    NodeExists,
}

/// How an enrollment went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolled {
    /// A new node.
    New,
    /// An existing node, with an operator's grant (its old credential stops working).
    Again,
}

/// Spends one use of `enrollment_token` and issues `node_id`'s credential. A node id that is enrolled
/// already needs a pending re-enrollment grant, which this spends; otherwise nothing changes. One transaction.
pub async fn enroll(
    pool: &PgPool,
    enrollment_token: &str,
    node_id: &str,
    credential: &str,
) -> Result<Result<Enrolled, Refused>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let token: Option<(Uuid, Vec<String>)> = sqlx::query_as(
        "UPDATE enrollment_tokens SET uses = uses + 1 \
         WHERE token_sha256 = $1 AND expires_at > now() AND uses < max_uses AND revoked_at IS NULL \
         RETURNING id, deployments",
    )
    .bind(digest(enrollment_token))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((token_id, deployments)) = token else {
        tx.rollback().await?;
        return Ok(Err(Refused::InvalidToken));
    };
    // Lock the node's row (if any) so two enrollments of one id cannot both see "new".
    let exists: Option<String> =
        sqlx::query_scalar("SELECT node_id FROM node_credentials WHERE node_id = $1 FOR UPDATE")
            .bind(node_id)
            .fetch_optional(&mut *tx)
            .await?;
    let how = if exists.is_some() {
        let granted: Option<String> = sqlx::query_scalar(
            "DELETE FROM reenroll_grants WHERE node_id = $1 AND expires_at > now() RETURNING granted_by",
        )
        .bind(node_id)
        .fetch_optional(&mut *tx)
        .await?;
        if granted.is_none() {
            tx.rollback().await?;
            // Recorded outside the refused transaction: a takeover attempt is worth seeing.
            record(pool, Some(node_id), Some(token_id), "refused-existing-node", "enrollment", "").await?;
            return Ok(Err(Refused::NodeExists));
        }
        Enrolled::Again
    } else {
        Enrolled::New
    };
    // The same four values either replace the node's credential or create it.
    let sql = match how {
        Enrolled::Again => {
            "UPDATE node_credentials SET token_sha256 = $2, enrolled_by = $3, created_at = now(), revoked_at = NULL, \
             deployments = $4 WHERE node_id = $1"
        }
        Enrolled::New => {
            "INSERT INTO node_credentials (node_id, token_sha256, enrolled_by, deployments) VALUES ($1, $2, $3, $4)"
        }
    };
    sqlx::query(sql).bind(node_id).bind(digest(credential)).bind(token_id).bind(&deployments).execute(&mut *tx).await?;
    let kind = if how == Enrolled::New { "enrolled" } else { "re-enrolled" };
    record(&mut *tx, Some(node_id), Some(token_id), kind, "enrollment", "").await?;
    tx.commit().await?;
    Ok(Ok(how))
}

/// A valid (unrevoked) node credential's node and the deployments it may report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeScope {
    /// The node.
    pub node_id: String,
    /// Deployment patterns (`namespace/name` or `namespace/*`).
    pub deployments: Vec<String>,
}

/// The node a credential belongs to, unless revoked.
pub async fn scope_of(pool: &PgPool, credential: &str) -> Result<Option<NodeScope>, sqlx::Error> {
    let row: Option<(String, Vec<String>)> = sqlx::query_as(
        "SELECT node_id, deployments FROM node_credentials WHERE token_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(digest(credential))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(node_id, deployments)| NodeScope { node_id, deployments }))
}

/// The node a credential belongs to, unless revoked.
pub async fn node_of(pool: &PgPool, credential: &str) -> Result<Option<String>, sqlx::Error> {
    Ok(scope_of(pool, credential).await?.map(|s| s.node_id))
}

/// One enrolled node as the API lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Enrollment {
    /// Node id.
    pub node_id: String,
    /// When its current credential was issued.
    pub enrolled_at: DateTime<Utc>,
    /// When its credential was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Deployments it may report serving samples for.
    pub deployments: Vec<String>,
    /// Whether an operator's re-enrollment grant is pending.
    pub reenroll_pending: bool,
}

/// Enrolled nodes.
pub async fn enrolled(pool: &PgPool) -> Result<Vec<Enrollment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.node_id, c.created_at AS enrolled_at, c.revoked_at, c.deployments, \
                EXISTS (SELECT 1 FROM reenroll_grants g WHERE g.node_id = c.node_id AND g.expires_at > now()) \
                  AS reenroll_pending \
         FROM node_credentials c ORDER BY c.node_id",
    )
    .fetch_all(pool)
    .await
}

/// One enrollment token as the API lists it (never the token itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Token id.
    pub id: Uuid,
    /// Operator's note.
    pub note: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expires.
    pub expires_at: DateTime<Utc>,
    /// Uses allowed.
    pub max_uses: i32,
    /// Uses spent.
    pub uses: i32,
    /// When revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Deployments its nodes may report.
    pub deployments: Vec<String>,
}

/// Enrollment tokens, newest first.
pub async fn tokens(pool: &PgPool) -> Result<Vec<TokenInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, note, created_at, expires_at, max_uses, uses, revoked_at, deployments \
         FROM enrollment_tokens ORDER BY created_at DESC LIMIT 1000",
    )
    .fetch_all(pool)
    .await
}

/// Revokes an enrollment token; false when there is no such token.
pub async fn revoke_token(pool: &PgPool, id: Uuid, actor: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("UPDATE enrollment_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected();
    if n > 0 {
        record(pool, None, Some(id), "token-revoked", actor, "").await?;
    }
    Ok(n > 0)
}

/// Revokes a node's credential; false when the node is not enrolled.
pub async fn revoke_node(pool: &PgPool, node_id: &str, actor: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("UPDATE node_credentials SET revoked_at = coalesce(revoked_at, now()) WHERE node_id = $1")
        .bind(node_id)
        .execute(pool)
        .await?
        .rows_affected();
    if n > 0 {
        record(pool, Some(node_id), None, "credential-revoked", actor, "").await?;
    }
    Ok(n > 0)
}

/// Grants one re-enrollment of an enrolled node until `expires_at`; false when the node is not enrolled.
pub async fn grant_reenroll(
    pool: &PgPool,
    node_id: &str,
    actor: &str,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT node_id FROM node_credentials WHERE node_id = $1")
        .bind(node_id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO reenroll_grants (node_id, granted_by, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (node_id) DO UPDATE SET granted_by = excluded.granted_by, expires_at = excluded.expires_at, \
         created_at = now()",
    )
    .bind(node_id)
    .bind(actor)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    record(&mut *tx, Some(node_id), None, "re-enroll-granted", actor, &format!("until {expires_at}")).await?;
    tx.commit().await?;
    Ok(true)
}

/// Sets the deployments a node may report; false when the node is not enrolled.
pub async fn set_deployments(
    pool: &PgPool,
    node_id: &str,
    deployments: &[String],
    actor: &str,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("UPDATE node_credentials SET deployments = $2 WHERE node_id = $1")
        .bind(node_id)
        .bind(deployments)
        .execute(pool)
        .await?
        .rows_affected();
    if n > 0 {
        record(pool, Some(node_id), None, "deployments-set", actor, &deployments.join(",")).await?;
    }
    Ok(n > 0)
}

/// One recorded enrollment event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    /// When.
    pub at: DateTime<Utc>,
    /// Node concerned, if any.
    pub node_id: Option<String>,
    /// Enrollment token concerned, if any.
    pub token_id: Option<Uuid>,
    /// What happened.
    pub kind: String,
    /// Who did it (`api`, `enrollment`, or a dashboard user).
    pub actor: String,
    /// Details.
    pub detail: String,
}

/// The latest enrollment events, newest first.
pub async fn events(pool: &PgPool, limit: i64) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as("SELECT at, node_id, token_id, kind, actor, detail FROM enrollment_events ORDER BY id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

async fn record<'e, E: sqlx::PgExecutor<'e>>(
    exec: E,
    node_id: Option<&str>,
    token_id: Option<Uuid>,
    kind: &str,
    actor: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO enrollment_events (node_id, token_id, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(node_id)
        .bind(token_id)
        .bind(kind)
        .bind(actor)
        .bind(detail)
        .execute(exec)
        .await?;
    Ok(())
}

/// Whether `deployment` (`namespace/name`) matches one of `patterns` (`namespace/name` or `namespace/*`).
pub fn deployment_allowed(patterns: &[String], deployment: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix("/*") {
        Some(ns) => deployment.split_once('/').is_some_and(|(dns, _)| dns == ns),
        None => p == deployment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_patterns_match_exactly_or_by_namespace() {
        let p = vec!["ml/llama".to_string(), "batch/*".to_string()];
        assert!(deployment_allowed(&p, "ml/llama"));
        assert!(!deployment_allowed(&p, "ml/llama2"));
        assert!(deployment_allowed(&p, "batch/anything"));
        assert!(!deployment_allowed(&p, "batchx/a"));
        assert!(!deployment_allowed(&[], "ml/llama"));
    }
}
