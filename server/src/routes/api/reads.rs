//! Read-only API: decisions, alert incidents, nodes.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};

use super::paging;
use super::responses::{BadPath, Unauthorized};
use crate::auth::ApiAuth;
use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

/// `?limit=N` (1..=1000, default 100).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// How many (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Most recent decisions, newest first.
#[utoipa::path(tag = "policies", operation_id = "list_decisions", security(("api" = [])),
    params(Limit),
    responses((status = 200, description = "Decisions, newest first, with the winning proposal and the reason", body = Vec<crate::db::dashboard::DecisionRow>), BadPath, Unauthorized))]
#[get("/api/v1/decisions")]
pub async fn decisions(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<Limit>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(db::dashboard::decisions(&state.pool, paging::limit(q.limit)?).await?))
}

/// `?state=firing|resolved|all&severity=...&group=...&limit=N`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `firing` (default), `resolved` or `all`.
    #[param(inline, value_type = Option<IncidentState>)]
    state: Option<String>,
    /// Only this severity.
    #[param(value_type = Option<crate::alerts::rules::Severity>)]
    severity: Option<String>,
    /// Only this group (`node/<id>` or `deployment/<ns>/<name>`).
    #[param(max_length = 512)]
    group: Option<String>,
    /// How many (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Incident states a list can ask for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    /// Open incidents.
    Firing,
    /// Resolved incidents.
    Resolved,
    /// Both.
    All,
}

/// `GET /api/v1/nodes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodesView {
    /// Nodes that reported.
    pub nodes: Vec<db::dashboard::NodeRow>,
    /// Their GPUs' latest readings.
    pub gpus: Vec<db::dashboard::GpuRow>,
}

/// Incidents (one per alert group), newest first; open ones by default.
#[utoipa::path(tag = "alerting", operation_id = "list_incidents", security(("api" = [])),
    params(AlertQuery),
    responses((status = 200, description = "Incidents (one per alert group), newest first", body = Vec<crate::db::alerts::Incident>), BadPath, Unauthorized))]
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
    if let Some(g) = &q.group
        && (g.chars().count() > 512 || g.contains('\0'))
    {
        return Err(ApiError::field("group", "must be at most 512 characters, without NUL"));
    }
    let filter = db::alerts::IncidentFilter {
        state: st,
        severity: q.severity.clone(),
        group: q.group.clone(),
        limit: paging::limit(q.limit)?,
    };
    Ok(HttpResponse::Ok().json(db::alerts::incidents(&state.pool, &filter).await?))
}

/// Nodes and their GPUs' latest readings.
#[utoipa::path(tag = "fleet", operation_id = "list_nodes", security(("api" = [])),
    responses((status = 200, description = "Nodes and their GPUs' latest readings", body = NodesView), Unauthorized))]
#[get("/api/v1/nodes")]
pub async fn nodes(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let nodes = db::dashboard::nodes(&state.pool).await?;
    let gpus = db::dashboard::gpus(&state.pool).await?;
    Ok(HttpResponse::Ok().json(NodesView { nodes, gpus }))
}
