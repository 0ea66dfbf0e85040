//! Webhook receivers added through the API (their secrets never leave the store but to be sent).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::is_unique_violation;
use crate::domain::alert::WebhookSpec;

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
