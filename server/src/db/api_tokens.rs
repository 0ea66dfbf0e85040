//! Named API tokens with scopes (`read` < `operate` < `admin`), stored as SHA-256 digests: the secret is shown
//! once, at creation or rotation.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::enroll::digest;

/// What a token may do; each scope includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = TokenScope)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every read (GET) of the API.
    Read,
    /// Reads, and operating the fleet: policies, silences, opportunities, commands, probes.
    Operate,
    /// Everything, including users, tokens, enrollment, webhooks and alert rules.
    Admin,
}

impl Scope {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Scope::Read),
            "operate" => Some(Scope::Operate),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiToken {
    /// Id.
    pub id: Uuid,
    /// Unique among live tokens.
    pub name: String,
    /// `read`, `operate` or `admin`.
    #[schema(value_type = Scope)]
    pub scope: String,
    /// The secret's first characters.
    pub prefix: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// By whom.
    pub created_by: String,
    /// Last rotation.
    pub rotated_at: Option<DateTime<Utc>>,
    /// Last use (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, name, scope, prefix, created_at, created_by, rotated_at, last_used_at, expires_at, revoked_at";

/// A fresh secret: `fpa_` and 64 hex characters (256 bits).
fn secret() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("fpa_{}", hex::encode(b))
}

/// Creates a token; returns it with its secret (shown once). `None` when a live token has that name.
pub async fn create(
    pool: &PgPool,
    name: &str,
    scope: Scope,
    created_by: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Option<(ApiToken, String)>, sqlx::Error> {
    let s = secret();
    let row: Result<ApiToken, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_tokens (id, name, scope, digest, prefix, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(name)
    .bind(scope.as_str())
    .bind(digest(&s))
    .bind(&s[..12])
    .bind(created_by)
    .bind(expires_at)
    .fetch_one(pool)
    .await;
    match row {
        Ok(t) => Ok(Some((t, s))),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every token, live first, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<ApiToken>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_tokens ORDER BY revoked_at IS NOT NULL, created_at DESC LIMIT 1000"
    )))
    .fetch_all(pool)
    .await
}

/// One token.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ApiToken>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Revokes a live token; returns it revoked, `None` if unknown or already revoked.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<Option<ApiToken>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Gives a live token a new secret (the old one stops working at once); `None` if unknown or revoked.
pub async fn rotate(pool: &PgPool, id: Uuid) -> Result<Option<(ApiToken, String)>, sqlx::Error> {
    let s = secret();
    let row: Option<ApiToken> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET digest = $2, prefix = $3, rotated_at = now() \
         WHERE id = $1 AND revoked_at IS NULL RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(digest(&s))
    .bind(&s[..12])
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|t| (t, s)))
}

/// The live, unexpired token with this secret: (id, name, scope).
pub async fn lookup(pool: &PgPool, secret: &str) -> Result<Option<(Uuid, String, Scope)>, sqlx::Error> {
    let row: Option<(Uuid, String, String)> = sqlx::query_as(
        "UPDATE api_tokens SET last_used_at = now() \
         WHERE digest = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) \
         RETURNING id, name, scope",
    )
    .bind(digest(secret))
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(id, name, scope)| Scope::parse(&scope).map(|s| (id, name, s))))
}
