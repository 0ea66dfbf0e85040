//! Read-only API: decisions, open alerts, nodes.

use actix_web::{HttpResponse, get, web};
use serde::Deserialize;

use crate::auth::ApiAuth;
use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

/// `?limit=N` (1..=1000, default 100).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    limit: Option<i64>,
}

impl Limit {
    fn get(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n) if (1..=1000).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::field("limit", "must be in 1..=1000")),
        }
    }
}

/// Most recent decisions, newest first.
#[get("/api/v1/decisions")]
pub async fn decisions(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<Limit>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(db::dashboard::decisions(&state.pool, q.get()?).await?))
}

/// Open alerts.
#[get("/api/v1/alerts")]
pub async fn alerts(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut open: Vec<_> = db::alerts::open(&state.pool).await?.into_values().collect();
    open.sort_by_key(|a| std::cmp::Reverse(a.started_at));
    Ok(HttpResponse::Ok().json(open))
}

/// Nodes and their GPUs' latest readings.
#[get("/api/v1/nodes")]
pub async fn nodes(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let nodes = db::dashboard::nodes(&state.pool).await?;
    let gpus = db::dashboard::gpus(&state.pool).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "nodes": nodes, "gpus": gpus })))
}
