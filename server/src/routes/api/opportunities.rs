//! Optimization opportunities and anomaly events over REST.

use actix_web::{HttpResponse, get, post, web};
use chrono::Utc;
use forecasting::opportunities::Kind;
use serde::{Deserialize, Serialize};

use super::paging;
use super::responses::{BadBody, BadPath, NotFound, TooLarge, Unauthorized};
use crate::auth::ApiAuth;
use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

/// Largest page.
pub const MAX_LIMIT: i64 = paging::MAX_LIMIT;
/// Longest dismissal reason, characters.
pub const MAX_REASON_CHARS: usize = 500;

fn name(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() || s.chars().count() > 256 || s.contains('\0') => {
            Err(ApiError::field(field, "must be 1..=256 characters, without NUL"))
        }
        v => Ok(v),
    }
}

/// `?deployment=&node=&kind=&status=&limit=&offset=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this deployment (`namespace/name`).
    #[param(min_length = 1, max_length = 256)]
    deployment: Option<String>,
    /// Only this node.
    #[param(min_length = 1, max_length = 256)]
    node: Option<String>,
    /// Only this kind.
    #[param(inline, value_type = Option<OpportunityKind>)]
    kind: Option<String>,
    /// Only this status.
    #[param(inline, value_type = Option<OpportunityStatus>)]
    status: Option<String>,
    /// Page size (1..=1000, default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Items to skip.
    #[param(value_type = Option<i64>, minimum = 0)]
    offset: Option<String>,
}

/// Kinds of opportunity.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpportunityKind {
    /// GPUs allocated with nothing loaded and no work.
    IdleGpu,
    /// Memory held, compute idle.
    MemoryOnly,
    /// Replicas that fit on fewer GPUs.
    Consolidation,
    /// Batching headroom.
    Batching,
    /// KV cache saturated.
    KvCacheSaturation,
    /// Throttled GPUs.
    Throttling,
    /// A GPU slower than its peers.
    Straggler,
    /// A node to drain.
    DrainNode,
}

/// Opportunity states.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OpportunityStatus {
    /// Persisting.
    Open,
    /// Vanished.
    Closed,
    /// Dismissed by an operator.
    Dismissed,
}

/// A page of opportunities.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpportunityPage {
    /// How many match.
    pub total: i64,
    /// Page size.
    pub limit: i64,
    /// Skipped.
    pub offset: i64,
    /// This page.
    pub items: Vec<db::opportunities::StoredOpportunity>,
}

/// `GET /api/v1/opportunities`: highest expected value first, with the total matching.
#[utoipa::path(tag = "opportunities", operation_id = "list_opportunities", security(("api" = [])),
    params(ListQuery),
    responses((status = 200, description = "Highest expected value first, with the total matching", body = OpportunityPage), BadPath, Unauthorized))]
#[get("/api/v1/opportunities")]
#[tracing::instrument(name = "opportunities_list", skip_all)]
pub async fn list(_a: ApiAuth, state: web::Data<AppState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let (limit, offset) = paging::page(q.limit, q.offset)?;
    if let Some(k) = &q.kind
        && Kind::parse(k).is_none()
    {
        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::field("kind", format!("must be one of {}", kinds.join(", "))));
    }
    paging::one_of("status", q.status.as_deref(), &["open", "closed", "dismissed"])?;
    let f = db::opportunities::Filter {
        deployment: name("deployment", q.deployment)?,
        node: name("node", q.node)?,
        kind: q.kind,
        status: q.status,
        limit,
        offset,
    };
    let (items, total) = db::opportunities::list(&state.pool, &f).await?;
    Ok(HttpResponse::Ok().json(OpportunityPage { total, limit, offset, items }))
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::field("id", "must be a positive integer"))
}

/// `GET /api/v1/opportunities/{id}`.
#[utoipa::path(tag = "opportunities", operation_id = "get_opportunity", security(("api" = [])),
    params(("id" = i64, Path, description = "Opportunity id", minimum = 1)),
    responses((status = 200, description = "The opportunity with its evidence", body = crate::db::opportunities::StoredOpportunity), BadPath, Unauthorized, NotFound))]
#[get("/api/v1/opportunities/{id}")]
pub async fn get_one(_a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    match db::opportunities::get(&state.pool, id).await? {
        Some(o) => Ok(HttpResponse::Ok().json(o)),
        None => Err(ApiError::not_found(format!("no opportunity {id}"))),
    }
}

/// Body of a dismissal.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dismissal {
    /// Why (1..=500 characters once trimmed).
    #[schema(
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$",
        min_length = 1,
        max_length = 500
    )]
    reason: String,
}

/// `POST /api/v1/opportunities/{id}/dismiss` with `{"reason": "..."}` (1..=500 characters): it stays
/// dismissed while it persists; 409 if it is closed.
#[utoipa::path(tag = "opportunities", operation_id = "dismiss_opportunity", security(("api" = [])),
    params(("id" = i64, Path, description = "Opportunity id", minimum = 1)), request_body(content = Dismissal, content_type = "application/json"),
    responses((status = 200, description = "Dismissed", body = crate::db::opportunities::StoredOpportunity), (status = 409, description = "The opportunity is closed", body = ApiError), BadBody, Unauthorized, NotFound, TooLarge))]
#[post("/api/v1/opportunities/{id}/dismiss")]
#[tracing::instrument(name = "opportunity_dismiss", skip_all)]
pub async fn dismiss(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let d: Dismissal = super::doc::parse_body(&body)?;
    let reason = d.reason.trim();
    let chars = reason.chars().count();
    if chars == 0 || chars > MAX_REASON_CHARS {
        return Err(ApiError::field("reason", format!("must be 1..={MAX_REASON_CHARS} characters")));
    }
    match db::opportunities::dismiss(&state.pool, id, reason, Utc::now()).await? {
        Some(o) => {
            let after = serde_json::json!({"reason": reason});
            crate::db::audit::record(
                &state.pool,
                &a.actor,
                "dismiss",
                "opportunity",
                &id.to_string(),
                None,
                Some(after),
            )
            .await;
            Ok(HttpResponse::Ok().json(o))
        }
        None => match db::opportunities::get(&state.pool, id).await? {
            Some(_) => Err(ApiError::conflict("id", format!("opportunity {id} is closed"))),
            None => Err(ApiError::not_found(format!("no opportunity {id}"))),
        },
    }
}

/// `GET /api/v1/idle-capacity`: the fleet's idle capacity over the latest opportunities window (GPUs
/// allocated with nothing loaded and no work, summed bucket by bucket), in GPU-hours and money per week;
/// 404 before the first refresh.
#[utoipa::path(tag = "opportunities", operation_id = "idle_capacity", security(("api" = [])),
    responses((status = 200, description = "The fleet's idle capacity over the latest window", body = crate::db::idle::IdleRow), (status = 404, description = "No figure yet: the opportunities refresher has not run", body = ApiError), Unauthorized))]
#[get("/api/v1/idle-capacity")]
pub async fn idle_capacity(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match db::idle::latest(&state.pool).await? {
        Some(row) => Ok(HttpResponse::Ok().json(row)),
        None => Err(ApiError::not_found("no idle-capacity figure yet: the opportunities refresher has not run")),
    }
}

/// `?node=&deployment=&severity=&open=&limit=&offset=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AnomalyQuery {
    /// Only this node.
    #[param(min_length = 1, max_length = 256)]
    node: Option<String>,
    /// Only this deployment (`namespace/name`).
    #[param(min_length = 1, max_length = 256)]
    deployment: Option<String>,
    /// Only this severity.
    #[param(inline, value_type = Option<AnomalySeverity>)]
    severity: Option<String>,
    /// Only open (true) or ended (false) events.
    #[param(value_type = Option<bool>)]
    open: Option<String>,
    /// Page size (1..=1000, default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Items to skip.
    #[param(value_type = Option<i64>, minimum = 0)]
    offset: Option<String>,
}

/// Anomaly severities.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnomalySeverity {
    /// Info.
    Info,
    /// Warning.
    Warning,
    /// Critical.
    Critical,
}

/// One workload group of nodes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeGroupView {
    /// Ordered by mean utilisation, 0 = least busy.
    pub cluster: i32,
    /// The centroid in words.
    pub label: String,
    /// The group's kind.
    pub kind: String,
    /// The centroid's profile.
    pub centroid: serde_json::Value,
    /// Its nodes.
    pub nodes: Vec<String>,
}

/// `GET /api/v1/node-groups`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeGroupsView {
    /// When the leader last grouped the nodes (null: never).
    pub computed_at: Option<chrono::DateTime<Utc>>,
    /// Mean silhouette of the grouping (0 with one group).
    pub silhouette: f64,
    /// The groups.
    pub groups: Vec<NodeGroupView>,
    /// Every node's own profile.
    pub nodes: Vec<db::node_groups::NodeGroup>,
}

/// `GET /api/v1/anomalies`: anomaly events, newest first.
#[utoipa::path(tag = "opportunities", operation_id = "list_anomalies", security(("api" = [])),
    params(AnomalyQuery),
    responses((status = 200, description = "Anomaly events, newest first", body = Vec<crate::db::anomalies::StoredAnomaly>), BadPath, Unauthorized))]
#[get("/api/v1/anomalies")]
#[tracing::instrument(name = "anomalies_list", skip_all)]
pub async fn anomalies(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<AnomalyQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let (limit, offset) = paging::page(q.limit, q.offset)?;
    paging::one_of("severity", q.severity.as_deref(), &["info", "warning", "critical"])?;
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
#[utoipa::path(tag = "opportunities", operation_id = "node_groups", security(("api" = [])),
    responses((status = 200, description = "The latest workload grouping of nodes", body = NodeGroupsView), Unauthorized))]
#[get("/api/v1/node-groups")]
#[tracing::instrument(name = "node_groups", skip_all)]
pub async fn node_groups(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let nodes = db::node_groups::list(&state.pool).await?;
    let mut groups: Vec<NodeGroupView> = Vec::new();
    for n in &nodes {
        // Rows come ordered by cluster: a new cluster starts a new group.
        if groups.last().map(|g| g.cluster) != Some(n.cluster) {
            groups.push(NodeGroupView {
                cluster: n.cluster,
                label: n.label.clone(),
                kind: n.kind.clone(),
                centroid: n.centroid.clone(),
                nodes: Vec::new(),
            });
        }
        if let Some(g) = groups.last_mut() {
            g.nodes.push(n.node_id.clone());
        }
    }
    Ok(HttpResponse::Ok().json(NodeGroupsView {
        computed_at: nodes.first().map(|n| n.computed_at),
        silhouette: nodes.first().map_or(0.0, |n| n.silhouette),
        groups,
        nodes,
    }))
}
