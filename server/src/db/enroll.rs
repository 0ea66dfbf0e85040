//! Enrollment tokens and per-node credentials (SHA-256 digests only; the tokens themselves are shown once).

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// SHA-256 of a token.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Stores a new enrollment token's digest.
pub async fn create_token(
    pool: &PgPool,
    token: &str,
    expires_at: DateTime<Utc>,
    max_uses: i32,
    note: &str,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO enrollment_tokens (id, token_sha256, note, expires_at, max_uses) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(digest(token))
    .bind(note)
    .bind(expires_at)
    .bind(max_uses)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Unknown, expired or used up.
    InvalidToken,
}

/// Spends one use of `enrollment_token` and (re)issues `node_id`'s credential, whose digest replaces any
/// earlier one (re-enrolling a node rotates its credential). One transaction.
pub async fn enroll(
    pool: &PgPool,
    enrollment_token: &str,
    node_id: &str,
    credential: &str,
) -> Result<Result<(), Refused>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE enrollment_tokens SET uses = uses + 1 WHERE token_sha256 = $1 AND expires_at > now() AND uses < max_uses RETURNING id",
    )
    .bind(digest(enrollment_token))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        tx.rollback().await?;
        return Ok(Err(Refused::InvalidToken));
    };
    sqlx::query(
        "INSERT INTO node_credentials (node_id, token_sha256, enrolled_by) VALUES ($1, $2, $3) \
         ON CONFLICT (node_id) DO UPDATE SET token_sha256 = excluded.token_sha256, enrolled_by = excluded.enrolled_by, created_at = now()",
    )
    .bind(node_id)
    .bind(digest(credential))
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// The node a credential belongs to.
pub async fn node_of(pool: &PgPool, credential: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT node_id FROM node_credentials WHERE token_sha256 = $1")
        .bind(digest(credential))
        .fetch_optional(pool)
        .await
}

/// Enrolled nodes with when they enrolled.
pub async fn enrolled(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT node_id, created_at FROM node_credentials ORDER BY node_id").fetch_all(pool).await
}
