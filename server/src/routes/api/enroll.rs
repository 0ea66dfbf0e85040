//! Agent enrollment: enrollment tokens (create, list, revoke), `POST /api/v1/enroll` (installers: new node
//! ids only), enrolled nodes (list, revoke, assign deployments, allow one re-enrollment) and the audit
//! trail of all of it (`GET /api/v1/enrollment-events`).
//!
//! Scope: a node credential writes GPU rows of its own node only, and serving rows only for the
//! deployments assigned to it: the enrollment token's `deployments` at enrollment, replaced by the
//! operator with `PUT /api/v1/enrollments/{node_id}/deployments`. Patterns are `namespace/name` or
//! `namespace/*`.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use chrono::{Duration, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::responses::{BadBody, BadPath, NotFound, TooLarge, Unauthorized};
use crate::auth::ApiAuth;
use crate::db::enroll::{self as store, Enrolled, Refused};
use crate::error::ApiError;
use crate::state::AppState;

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The URL installers reach this server at.
pub fn public_url(state: &AppState, req: &HttpRequest) -> String {
    match &state.settings.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let c = req.connection_info();
            format!("{}://{}", c.scheme(), c.host())
        }
    }
}

/// A new enrollment token's settings.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Lifetime, seconds.
    #[serde(default = "default_ttl")]
    #[schema(minimum = 60, maximum = 2592000, default = 3600)]
    ttl_secs: u32,
    /// Enrollments it allows.
    #[serde(default = "default_uses")]
    #[schema(minimum = 1, maximum = 100000, default = 100)]
    max_uses: u32,
    /// What it is for.
    #[serde(default)]
    #[schema(max_length = 200)]
    note: String,
    /// Deployments the nodes enrolled with this token may report serving samples for (`namespace/name` or
    /// `namespace/*`).
    #[serde(default)]
    #[schema(max_items = 256, inline, value_type = Vec<DeploymentPattern>)]
    deployments: Vec<String>,
}

/// A deployment pattern: `namespace/name` or `namespace/*`.
#[derive(utoipa::ToSchema)]
#[schema(
    value_type = String,
    pattern = r"^[a-z0-9.]([a-z0-9.-]{0,251}[a-z0-9.])?/([a-z0-9.]([a-z0-9.-]{0,251}[a-z0-9.])?|\*)$"
)]
pub struct DeploymentPattern(pub String);

/// A created enrollment token: shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewTokenView {
    /// Id (to revoke it).
    pub id: uuid::Uuid,
    /// The token: shown this once.
    pub token: String,
    /// Deployments its nodes may report.
    pub deployments: Vec<String>,
    /// When it expires.
    pub expires_at: chrono::DateTime<Utc>,
    /// Enrollments it allows.
    pub max_uses: u32,
    /// The one-line install command that uses it.
    pub install_command: String,
}

/// Most deployment patterns per token or node.
pub const MAX_DEPLOYMENT_PATTERNS: usize = 256;

/// Checks deployment patterns: `namespace/name` or `namespace/*`.
pub fn parse_deployment_patterns<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in patterns {
        // Counted before duplicates are dropped: the document's maxItems is about the list as sent.
        if out.len() >= MAX_DEPLOYMENT_PATTERNS {
            return Err(format!("at most {MAX_DEPLOYMENT_PATTERNS} patterns"));
        }
        let check = match p.strip_suffix("/*") {
            Some(ns) => gpu_agent::protocol::parse_deployment(&format!("{ns}/x")).map(|_| ()),
            None => gpu_agent::protocol::parse_deployment(p).map(|_| ()),
        };
        check.map_err(|e| format!("{p:?}: {e} (or `namespace/*`)"))?;
        out.push(p.to_string());
    }
    if out.len() > MAX_DEPLOYMENT_PATTERNS {
        return Err(format!("at most {MAX_DEPLOYMENT_PATTERNS} patterns"));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn default_ttl() -> u32 {
    3600
}

fn default_uses() -> u32 {
    100
}

/// Creates an enrollment token (shown once) and the one-line install command that uses it.
#[utoipa::path(tag = "install", operation_id = "create_enrollment_token", security(("api" = [])),
    request_body(content = NewToken, content_type = "application/json", description = "An empty body takes every default"),
    responses((status = 201, description = "Created: the token (shown once) and the install command", body = NewTokenView), BadBody, Unauthorized, TooLarge))]
#[post("/api/v1/enrollment-tokens")]
pub async fn create_token(
    a: ApiAuth,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    let t: NewToken = super::doc::parse_body(body)?;
    if !(60..=30 * 86_400).contains(&t.ttl_secs) {
        return Err(ApiError::field("ttl_secs", "must be between 60 and 2592000"));
    }
    if !(1..=100_000).contains(&t.max_uses) {
        return Err(ApiError::field("max_uses", "must be between 1 and 100000"));
    }
    if t.note.chars().count() > 200 || t.note.contains('\0') {
        return Err(ApiError::field("note", "at most 200 characters"));
    }
    let deployments = parse_deployment_patterns(t.deployments.iter().map(String::as_str))
        .map_err(|e| ApiError::field("deployments", e))?;
    let token = random_token("fpe");
    let expires_at = Utc::now() + Duration::seconds(i64::from(t.ttl_secs));
    let id = store::create_token(&state.pool, &token, expires_at, t.max_uses as i32, &t.note, &deployments).await?;
    let after = serde_json::json!({"id": id, "expires_at": expires_at, "max_uses": t.max_uses, "note": t.note, "deployments": deployments});
    crate::db::audit::record(&state.pool, &a.actor, "create", "enrollment_token", &id.to_string(), None, Some(after))
        .await;
    let url = public_url(&state, &req);
    let install_command = format!("curl -fsSL {url}/install.sh | sudo sh -s -- --token {token}");
    Ok(HttpResponse::Created().json(NewTokenView {
        id,
        token,
        deployments,
        expires_at,
        max_uses: t.max_uses,
        install_command,
    }))
}

/// An installer's enrollment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    /// The enrollment token.
    #[schema(max_length = 256)]
    enrollment_token: String,
    /// The node id to bind (1..=128 letters, digits, `.`, `-`, `_`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$", min_length = 1, max_length = 128)]
    node_id: String,
    /// The host's name (logged).
    #[serde(default)]
    #[schema(max_length = 256)]
    hostname: String,
}

/// An enrolled node's credential.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnrolledNode {
    /// The node id.
    pub node_id: String,
    /// Its credential (bearer token for ingest and commands).
    pub token: String,
}

/// A re-enrollment grant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReenrollGrant {
    /// The node id.
    pub node_id: String,
    /// Until when the node may enroll again.
    pub expires_at: chrono::DateTime<Utc>,
}

/// A node's deployments.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeDeployments {
    /// The node id.
    pub node_id: String,
    /// Patterns it may report serving samples for.
    pub deployments: Vec<String>,
}

/// Reads an unauthenticated route's body, refusing anything above `ingest.small_body_bytes` with 413
/// before buffering it (the app-wide limit is sized for ingest batches, megabytes).
pub async fn read_small_body(state: &AppState, payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let limit = state.settings.ingest.small_body_bytes;
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(ApiError::bad_request(format!("reading the body: {e}"))),
        Err(_) => Err(ApiError {
            status: actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            error: format!("request body larger than {limit} bytes"),
            field: None,
            retry_after_secs: None,
        }),
    }
}

fn valid_node_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Exchanges an enrollment token for a per-node credential. Only a new node id is bound; an enrolled one
/// needs an operator's grant (`POST /api/v1/enrollments/{node_id}/re-enroll`), else 409.
#[utoipa::path(tag = "install", operation_id = "enroll",
    request_body(content = Enroll, content_type = "application/json"),
    responses((status = 200, description = "Enrolled: the node's credential", body = EnrolledNode), (status = 401, description = "Enrollment token unknown, expired or used up", body = ApiError), (status = 409, description = "The node id is enrolled already and no operator allowed a re-enrollment", body = ApiError), (status = 413, description = "Body larger than ingest.small_body_bytes", body = ApiError), (status = 429, description = "Too many failed enrollments from this address: retry after Retry-After", body = ApiError, headers(("Retry-After" = u32, description = "Seconds"))), BadBody))]
#[post("/api/v1/enroll")]
pub async fn enroll(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Guessing tokens or probing node ids: failures lock the client out with a growing backoff.
    let ip_key = format!("enroll-ip:{}", req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default());
    if let Some(secs) = state.lockout.locked(&[&ip_key]) {
        return Err(ApiError {
            status: actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            error: format!("too many failed enrollments from this address; retry in {secs} s"),
            field: None,
            retry_after_secs: Some(secs.min(u64::from(u32::MAX)) as u32),
        });
    }
    let body = read_small_body(&state, payload).await?;
    let e: Enroll = super::doc::parse_body(&body)?;
    if e.enrollment_token.chars().count() > 256 {
        return Err(ApiError::field("enrollment_token", "at most 256 characters"));
    }
    if e.hostname.chars().count() > 256 {
        return Err(ApiError::field("hostname", "at most 256 characters"));
    }
    if !valid_node_id(&e.node_id) {
        return Err(ApiError::field("node_id", "must be 1..=128 characters of letters, digits, '.', '-', '_'"));
    }
    let credential = random_token("fpn");
    match store::enroll(&state.pool, &e.enrollment_token, &e.node_id, &credential).await? {
        Ok(how) => {
            tracing::info!(node = %e.node_id, hostname = %e.hostname, again = (how == Enrolled::Again), "node enrolled");
            // A re-enrolled node's old credential must stop working here at once.
            state.credentials.clear();
            Ok(HttpResponse::Ok().json(EnrolledNode { node_id: e.node_id, token: credential }))
        }
        Err(Refused::NodeExists) => {
            state.lockout.failure(&[&ip_key]);
            tracing::warn!(node = %e.node_id, hostname = %e.hostname, "enrollment of an existing node refused");
            Err(ApiError::conflict(
                "node_id",
                "this node is enrolled already; an operator must allow a re-enrollment \
                 (POST /api/v1/enrollments/{node_id}/re-enroll)",
            ))
        }
        Err(Refused::InvalidToken) => {
            state.lockout.failure(&[&ip_key]);
            Err(ApiError {
                status: actix_web::http::StatusCode::UNAUTHORIZED,
                error: "enrollment token unknown, expired or used up".into(),
                field: Some("enrollment_token".into()),
                retry_after_secs: None,
            })
        }
    }
}

/// Enrolled nodes: id, when, revoked, assigned deployments, pending re-enrollment.
#[utoipa::path(tag = "install", operation_id = "list_enrollments", security(("api" = [])),
    responses((status = 200, description = "Enrolled nodes", body = Vec<crate::db::enroll::Enrollment>), Unauthorized))]
#[get("/api/v1/enrollments")]
pub async fn enrollments(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::enrolled(&state.pool).await?))
}

/// Enrollment tokens (never the tokens themselves), newest first.
#[utoipa::path(tag = "install", operation_id = "list_enrollment_tokens", security(("api" = [])),
    responses((status = 200, description = "Enrollment tokens (never the tokens), newest first", body = Vec<crate::db::enroll::TokenInfo>), Unauthorized))]
#[get("/api/v1/enrollment-tokens")]
pub async fn list_tokens(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::tokens(&state.pool).await?))
}

/// Revokes an enrollment token: no further enrollment with it.
#[utoipa::path(tag = "install", operation_id = "revoke_enrollment_token", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), BadPath, Unauthorized, NotFound))]
#[delete("/api/v1/enrollment-tokens/{id}")]
pub async fn revoke_token(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ApiError::field("id", "must be a UUID"))?;
    if !store::revoke_token(&state.pool, id, "api").await? {
        return Err(ApiError::not_found("no such enrollment token"));
    }
    crate::db::audit::record(&state.pool, &a.actor, "revoke", "enrollment_token", &id.to_string(), None, None).await;
    Ok(HttpResponse::NoContent().finish())
}

fn node_path(node: &str) -> Result<&str, ApiError> {
    if valid_node_id(node) { Ok(node) } else { Err(ApiError::field("node_id", "not a valid node id")) }
}

/// Revokes a node's credential: its uploads are refused (401) from now on (other replicas: within a minute).
#[utoipa::path(tag = "install", operation_id = "revoke_node", security(("api" = [])),
    params(("node_id" = String, Path, description = "Node id (1..=128 letters, digits, `.`, `-`, `_`)", pattern = r"^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 204, description = "Revoked: the node's uploads get 401"), BadPath, Unauthorized, NotFound))]
#[delete("/api/v1/enrollments/{node_id}")]
pub async fn revoke_node(
    a: ApiAuth,
    state: web::Data<AppState>,
    node: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let node = node_path(&node)?;
    if !store::revoke_node(&state.pool, node, "api").await? {
        return Err(ApiError::not_found("no such enrolled node"));
    }
    state.credentials.clear();
    crate::db::audit::record(&state.pool, &a.actor, "revoke-credential", "node", node, None, None).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Allows the node's next enrollment (once, within an hour) to replace its credential.
#[utoipa::path(tag = "install", operation_id = "allow_reenrollment", security(("api" = [])),
    params(("node_id" = String, Path, description = "Node id (1..=128 letters, digits, `.`, `-`, `_`)", pattern = r"^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 201, description = "Granted for an hour", body = ReenrollGrant), BadPath, Unauthorized, NotFound))]
#[post("/api/v1/enrollments/{node_id}/re-enroll")]
pub async fn reenroll(
    a: ApiAuth,
    state: web::Data<AppState>,
    node: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let node = node_path(&node)?;
    let expires_at = Utc::now() + Duration::hours(1);
    if !store::grant_reenroll(&state.pool, node, "api", expires_at).await? {
        return Err(ApiError::not_found("no such enrolled node"));
    }
    let after = serde_json::json!({"expires_at": expires_at});
    crate::db::audit::record(&state.pool, &a.actor, "grant-re-enroll", "node", node, None, Some(after)).await;
    Ok(HttpResponse::Created().json(ReenrollGrant { node_id: node.to_string(), expires_at }))
}

/// The deployments a node may report serving samples for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deployments {
    /// `namespace/name` or `namespace/*` patterns.
    #[schema(max_items = 256, inline, value_type = Vec<DeploymentPattern>)]
    deployments: Vec<String>,
}

/// Replaces the deployments a node may report serving samples for.
#[utoipa::path(tag = "install", operation_id = "set_node_deployments", security(("api" = [])),
    params(("node_id" = String, Path, description = "Node id (1..=128 letters, digits, `.`, `-`, `_`)", pattern = r"^[A-Za-z0-9._-]{1,128}$")), request_body(content = Deployments, content_type = "application/json"),
    responses((status = 200, description = "Replaced", body = NodeDeployments), BadBody, Unauthorized, NotFound, TooLarge))]
#[put("/api/v1/enrollments/{node_id}/deployments")]
pub async fn set_deployments(
    a: ApiAuth,
    state: web::Data<AppState>,
    node: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let node = node_path(&node)?;
    let d: Deployments = super::doc::parse_body(&body)?;
    let deployments = parse_deployment_patterns(d.deployments.iter().map(String::as_str))
        .map_err(|e| ApiError::field("deployments", e))?;
    if !store::set_deployments(&state.pool, node, &deployments, "api").await? {
        return Err(ApiError::not_found("no such enrolled node"));
    }
    state.credentials.clear();
    let after = serde_json::json!({"deployments": deployments});
    crate::db::audit::record(&state.pool, &a.actor, "set-deployments", "node", node, None, Some(after)).await;
    Ok(HttpResponse::Ok().json(NodeDeployments { node_id: node.to_string(), deployments }))
}

/// The latest enrollment events (enrolled, re-enrolled, grants, revocations, refused takeovers).
#[utoipa::path(tag = "install", operation_id = "list_enrollment_events", security(("api" = [])),
    responses((status = 200, description = "The latest 1000 enrollment events, newest first", body = Vec<crate::db::enroll::Event>), Unauthorized))]
#[get("/api/v1/enrollment-events")]
pub async fn events(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::events(&state.pool, 1000).await?))
}
