//! Scaling policies, versioned: every change writes a new row in `policy_versions`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::policy::PolicySpec;

/// A stored policy.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoredPolicy {
    /// Id.
    pub id: Uuid,
    /// Current version (1 on creation, +1 per update).
    pub version: i32,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
    /// The spec.
    #[serde(flatten)]
    pub spec: PolicySpec,
    /// The Kubernetes resource that owns it (`ScalingPolicy <namespace>/<name>`): read-only here, edited
    /// through the resource. Absent for policies made through the API or the dashboard.
    pub owner: Option<String>,
}

/// The policy that acts on `deployment` (the first active one: a shadow never does), from a list.
pub fn active_for<'a>(policies: &'a [StoredPolicy], deployment: &str) -> Option<&'a StoredPolicy> {
    policies.iter().find(|p| !p.spec.is_shadow() && p.spec.deployment() == deployment)
}

type Row = (Uuid, i32, DateTime<Utc>, DateTime<Utc>, serde_json::Value, Option<String>);

/// The columns of a [`Row`] (a macro, so that queries stay `&'static str` literals).
macro_rules! columns {
    () => {
        "id, version, created_at, updated_at, spec, owner"
    };
}

fn from_row((id, version, created_at, updated_at, spec, owner): Row) -> Option<StoredPolicy> {
    match serde_json::from_value(spec) {
        Ok(spec) => Some(StoredPolicy { id, version, created_at, updated_at, spec, owner }),
        Err(e) => {
            tracing::error!(%id, error = %e, "stored policy does not parse; skipping it");
            None
        }
    }
}

/// Result of a write that may clash with another policy's name.
pub enum Write<T> {
    /// Done.
    Ok(T),
    /// The name is taken by another live policy.
    NameTaken,
    /// No such policy.
    NotFound,
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Creates a policy at version 1.
pub async fn create(pool: &PgPool, spec: &PolicySpec) -> Result<Write<StoredPolicy>, sqlx::Error> {
    create_owned(pool, spec, None).await
}

/// Creates a policy at version 1 owned by `owner` (see [`StoredPolicy::owner`]).
pub async fn create_owned(
    pool: &PgPool,
    spec: &PolicySpec,
    owner: Option<&str>,
) -> Result<Write<StoredPolicy>, sqlx::Error> {
    let id = Uuid::new_v4();
    let json = serde_json::to_value(spec).unwrap_or_default();
    let mut tx = pool.begin().await?;
    let row: Result<Row, _> = sqlx::query_as(concat!(
        "INSERT INTO policies (id, name, version, spec, owner) VALUES ($1, $2, 1, $3, $4) RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(&spec.name)
    .bind(&json)
    .bind(owner)
    .fetch_one(&mut *tx)
    .await;
    let row = match row {
        Ok(r) => r,
        Err(e) if is_unique_violation(&e) => return Ok(Write::NameTaken),
        Err(e) => return Err(e),
    };
    sqlx::query("INSERT INTO policy_versions (policy_id, version, spec) VALUES ($1, 1, $2)")
        .bind(id)
        .bind(&json)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(from_row(row).map_or(Write::NotFound, Write::Ok))
}

/// Live policies, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<StoredPolicy>, sqlx::Error> {
    let rows: Vec<Row> =
        sqlx::query_as(concat!("SELECT ", columns!(), " FROM policies WHERE deleted_at IS NULL ORDER BY name"))
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// One live policy.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<StoredPolicy>, sqlx::Error> {
    let row: Option<Row> =
        sqlx::query_as(concat!("SELECT ", columns!(), " FROM policies WHERE id = $1 AND deleted_at IS NULL"))
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(from_row))
}

/// Replaces the spec; the version goes up by one and the old one stays in `policy_versions`.
pub async fn update(pool: &PgPool, id: Uuid, spec: &PolicySpec) -> Result<Write<StoredPolicy>, sqlx::Error> {
    let json = serde_json::to_value(spec).unwrap_or_default();
    let mut tx = pool.begin().await?;
    let row: Result<Option<Row>, _> = sqlx::query_as(concat!(
        "UPDATE policies SET name = $2, spec = $3, version = version + 1, updated_at = now() \
         WHERE id = $1 AND deleted_at IS NULL RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(&spec.name)
    .bind(&json)
    .fetch_optional(&mut *tx)
    .await;
    let row = match row {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(Write::NotFound),
        Err(e) if is_unique_violation(&e) => return Ok(Write::NameTaken),
        Err(e) => return Err(e),
    };
    sqlx::query("INSERT INTO policy_versions (policy_id, version, spec) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(row.1)
        .bind(&json)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(from_row(row).map_or(Write::NotFound, Write::Ok))
}

/// Soft-deletes (decisions keep pointing at it); returns whether it existed.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE policies SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// The live policy `owner` owns (see [`StoredPolicy::owner`]).
pub async fn by_owner(pool: &PgPool, owner: &str) -> Result<Option<StoredPolicy>, sqlx::Error> {
    let row: Option<Row> =
        sqlx::query_as(concat!("SELECT ", columns!(), " FROM policies WHERE owner = $1 AND deleted_at IS NULL"))
            .bind(owner)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(from_row))
}

/// Live policies that a Kubernetes resource owns.
pub async fn owned(pool: &PgPool) -> Result<Vec<StoredPolicy>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM policies WHERE owner IS NOT NULL AND deleted_at IS NULL ORDER BY name"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}
