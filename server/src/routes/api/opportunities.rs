//! Optimization opportunities and anomaly events over REST.

use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use forecasting::opportunities::Kind;
use serde::Deserialize;

use crate::auth::ApiAuth;
use crate::db;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

/// Largest page.
pub const MAX_LIMIT: i64 = 1000;
/// Longest dismissal reason, characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Query values are taken as text and parsed here so that a bad one is named in the 400.
fn page(limit: Option<String>, offset: Option<String>) -> Result<(i64, i64), ApiError> {
    let int = |field: &str, v: Option<String>| -> Result<Option<i64>, ApiError> {
        v.map(|s| s.parse::<i64>().map_err(|_| ApiError::field(field, "must be an integer"))).transpose()
    };
    let limit = match int("limit", limit)? {
        None => 100,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Err(ApiError::field("limit", format!("must be in 1..={MAX_LIMIT}"))),
    };
    let offset = match int("offset", offset)? {
        None => 0,
        Some(n) if n >= 0 => n,
        Some(_) => return Err(ApiError::field("offset", "must be >= 0")),
    };
    Ok((limit, offset))
}

fn name(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() || s.len() > 256 => Err(ApiError::field(field, "must be 1..=256 characters")),
        v => Ok(v),
    }
}

/// `?deployment=&node=&kind=&status=&limit=&offset=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    deployment: Option<String>,
    node: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// `GET /api/v1/opportunities`: highest expected value first, with the total matching.
#[get("/api/v1/opportunities")]
#[tracing::instrument(name = "opportunities_list", skip_all)]
pub async fn list(_a: ApiAuth, state: web::Data<AppState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let (limit, offset) = page(q.limit, q.offset)?;
    if let Some(k) = &q.kind
        && Kind::parse(k).is_none()
    {
        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::field("kind", format!("must be one of {}", kinds.join(", "))));
    }
    if let Some(s) = &q.status
        && !["open", "closed", "dismissed"].contains(&s.as_str())
    {
        return Err(ApiError::field("status", "must be open, closed or dismissed"));
    }
    let f = db::opportunities::Filter {
        deployment: name("deployment", q.deployment)?,
        node: name("node", q.node)?,
        kind: q.kind,
        status: q.status,
        limit,
        offset,
    };
    let (items, total) = db::opportunities::list(&state.pool, &f).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "total": total, "limit": limit, "offset": offset, "items": items })))
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::field("id", "must be a positive integer"))
}

/// `GET /api/v1/opportunities/{id}`.
#[get("/api/v1/opportunities/{id}")]
pub async fn get_one(_a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    match db::opportunities::get(&state.pool, id).await? {
        Some(o) => Ok(HttpResponse::Ok().json(o)),
        None => Err(ApiError::not_found(format!("no opportunity {id}"))),
    }
}

/// Body of a dismissal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dismissal {
    reason: String,
}

/// `POST /api/v1/opportunities/{id}/dismiss` with `{"reason": "..."}` (1..=500 characters): it stays
/// dismissed while it persists; 409 if it is closed.
#[post("/api/v1/opportunities/{id}/dismiss")]
#[tracing::instrument(name = "opportunity_dismiss", skip_all)]
pub async fn dismiss(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let d: Dismissal = parse_json(&body)?;
    let reason = d.reason.trim();
    let chars = reason.chars().count();
    if chars == 0 || chars > MAX_REASON_CHARS {
        return Err(ApiError::field("reason", format!("must be 1..={MAX_REASON_CHARS} characters")));
    }
    match db::opportunities::dismiss(&state.pool, id, reason, Utc::now()).await? {
        Some(o) => Ok(HttpResponse::Ok().json(o)),
        None => match db::opportunities::get(&state.pool, id).await? {
            Some(_) => Err(ApiError::conflict("id", format!("opportunity {id} is closed"))),
            None => Err(ApiError::not_found(format!("no opportunity {id}"))),
        },
    }
}

/// `GET /api/v1/idle-capacity`: the fleet's idle capacity over the latest opportunities window (GPUs
/// allocated with nothing loaded and no work, summed bucket by bucket), in GPU-hours and money per week;
/// 404 before the first refresh.
#[get("/api/v1/idle-capacity")]
pub async fn idle_capacity(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match db::idle::latest(&state.pool).await? {
        Some(row) => Ok(HttpResponse::Ok().json(row)),
        None => Err(ApiError::not_found("no idle-capacity figure yet: the opportunities refresher has not run")),
    }
}

/// `?node=&deployment=&severity=&open=&limit=&offset=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyQuery {
    node: Option<String>,
    deployment: Option<String>,
    severity: Option<String>,
    open: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// `GET /api/v1/anomalies`: anomaly events, newest first.
#[get("/api/v1/anomalies")]
#[tracing::instrument(name = "anomalies_list", skip_all)]
pub async fn anomalies(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<AnomalyQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let (limit, offset) = page(q.limit, q.offset)?;
    if let Some(s) = &q.severity
        && !["info", "warning", "critical"].contains(&s.as_str())
    {
        return Err(ApiError::field("severity", "must be info, warning or critical"));
    }
    let open = match q.open.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::field("open", "must be true or false")),
    };
    let f = db::anomalies::Filter {
        node: name("node", q.node)?,
        deployment: name("deployment", q.deployment)?,
        severity: q.severity,
        open,
        limit,
        offset,
    };
    Ok(HttpResponse::Ok().json(db::anomalies::list(&state.pool, &f).await?))
}

/// `GET /api/v1/node-groups`: the latest workload grouping of nodes (k-means over per-node profiles of the
/// refresher's window): the groups with their label, centroid and nodes, and every node's own profile.
#[get("/api/v1/node-groups")]
#[tracing::instrument(name = "node_groups", skip_all)]
pub async fn node_groups(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let nodes = db::node_groups::list(&state.pool).await?;
    let mut groups: Vec<serde_json::Value> = Vec::new();
    for n in &nodes {
        // Rows come ordered by cluster: a new cluster starts a new group.
        if groups.last().and_then(|g| g["cluster"].as_i64()) != Some(i64::from(n.cluster)) {
            groups.push(serde_json::json!({
                "cluster": n.cluster, "label": n.label, "kind": n.kind, "centroid": n.centroid, "nodes": [],
            }));
        }
        if let Some(members) = groups.last_mut().and_then(|g| g["nodes"].as_array_mut()) {
            members.push(serde_json::json!(n.node_id));
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "computed_at": nodes.first().map(|n| n.computed_at),
        "silhouette": nodes.first().map_or(0.0, |n| n.silhouette),
        "groups": groups,
        "nodes": nodes,
    })))
}
