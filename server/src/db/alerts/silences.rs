//! Silences: matchers that mute instances for a time.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::alert::Matcher;

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
