//! Dashboard users (argon2 password hashes) and their sessions (SHA-256 of the session id only).

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// What a dashboard user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every page; every POST is refused (403).
    Viewer,
    /// Reads and acts: policies, enrollment tokens.
    Operator,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub struct Session {
    /// User.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Per-session token every form must carry.
    pub csrf_token: String,
    /// End of the session.
    pub expires_at: DateTime<Utc>,
}

/// Argon2id hash (PHC string) of `password` with a random salt. CPU-heavy: call from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    let salt = SaltString::encode_b64(&bytes)?;
    Ok(argon2::Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Whether `password` matches the PHC `hash`. CPU-heavy: call from a blocking thread.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Creates a user, or replaces the hash and role of an existing one.
pub async fn upsert(pool: &PgPool, username: &str, password_hash: &str, role: Role) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO dashboard_users (username, password_hash, role) VALUES ($1, $2, $3) \
         ON CONFLICT (username) DO UPDATE SET password_hash = $2, role = $3, updated_at = now(), disabled_at = NULL",
    )
    .bind(username)
    .bind(password_hash)
    .bind(role.as_str())
    .execute(&mut *tx)
    .await?;
    // A password reset ends every session of the user: whoever knew the old password is logged out.
    sqlx::query("DELETE FROM dashboard_sessions WHERE username = $1").bind(username).execute(&mut *tx).await?;
    tx.commit().await
}

/// Disables a user and ends its sessions; false when there is no such user.
pub async fn disable(pool: &PgPool, username: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("UPDATE dashboard_users SET disabled_at = coalesce(disabled_at, now()) WHERE username = $1")
        .bind(username)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM dashboard_sessions WHERE username = $1").bind(username).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// Deletes a user (its sessions go with it); false when there is no such user.
pub async fn delete(pool: &PgPool, username: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("DELETE FROM dashboard_users WHERE username = $1")
        .bind(username)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// A user's password hash and role.
pub async fn credentials(pool: &PgPool, username: &str) -> Result<Option<(String, Role)>, sqlx::Error> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT password_hash, role FROM dashboard_users WHERE username = $1 AND disabled_at IS NULL")
            .bind(username)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(h, r)| Role::parse(&r).map(|r| (h, r))))
}

/// Stores a new session under the digest of its id.
pub async fn create_session(
    pool: &PgPool,
    session_id: &str,
    username: &str,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO dashboard_sessions (id_sha256, username, csrf_token, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(super::enroll::digest(session_id))
        .bind(username)
        .bind(csrf_token)
        .bind(expires_at)
        .execute(pool)
        .await?;
    // Expired sessions are swept at each login: cheap, and the table stays small.
    sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < now()").execute(pool).await?;
    Ok(())
}

/// The live session with this id, if any.
pub async fn session(pool: &PgPool, session_id: &str) -> Result<Option<Session>, sqlx::Error> {
    let row: Option<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT s.username, u.role, s.csrf_token, s.expires_at FROM dashboard_sessions s \
         JOIN dashboard_users u USING (username) \
         WHERE s.id_sha256 = $1 AND s.expires_at > now() AND u.disabled_at IS NULL",
    )
    .bind(super::enroll::digest(session_id))
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(username, role, csrf_token, expires_at)| {
        Role::parse(&role).map(|role| Session { username, role, csrf_token, expires_at })
    }))
}

/// Ends a session.
pub async fn delete_session(pool: &PgPool, session_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM dashboard_sessions WHERE id_sha256 = $1")
        .bind(super::enroll::digest(session_id))
        .execute(pool)
        .await?;
    Ok(())
}

/// Users with their roles, for the users page.
pub async fn list(pool: &PgPool) -> Result<Vec<(String, String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT username, role, created_at FROM dashboard_users ORDER BY username").fetch_all(pool).await
}
