//! Read-only API: decisions, alert incidents, nodes.

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

/// `?state=firing|resolved|all&severity=...&group=...&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    state: Option<String>,
    severity: Option<String>,
    group: Option<String>,
    limit: Option<i64>,
}

/// Incidents (one per alert group), newest first; open ones by default.
#[get("/api/v1/alerts")]
pub async fn alerts(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    let st = match q.state.as_deref() {
        None | Some("firing") => Some("firing".to_string()),
        Some("resolved") => Some("resolved".to_string()),
        Some("all") => None,
        Some(_) => return Err(ApiError::field("state", "must be firing, resolved or all")),
    };
    if let Some(s) = &q.severity
        && crate::alerts::rules::Severity::parse(s).is_none()
    {
        return Err(ApiError::field("severity", "must be critical, error, warning or info"));
    }
    let filter = db::alerts::IncidentFilter {
        state: st,
        severity: q.severity.clone(),
        group: q.group.clone(),
        limit: Limit { limit: q.limit }.get()?,
    };
    Ok(HttpResponse::Ok().json(db::alerts::incidents(&state.pool, &filter).await?))
}

/// Nodes and their GPUs' latest readings.
#[get("/api/v1/nodes")]
pub async fn nodes(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let nodes = db::dashboard::nodes(&state.pool).await?;
    let gpus = db::dashboard::gpus(&state.pool).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "nodes": nodes, "gpus": gpus })))
}
