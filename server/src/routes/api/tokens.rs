//! Named API tokens (`/api/v1/tokens`) and the audit log (`/api/v1/audit`); both need the `admin` scope.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::responses::{BadBody, TooLarge, Unauthorized};
use crate::auth::{ApiAuth, Scope};
use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

/// A new API token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = NewApiToken)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Unique among live tokens: letters, digits, `.`, `-`, `_`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    /// What it may do.
    #[schema(value_type = Scope)]
    scope: String,
    /// Lifetime, seconds (none: until revoked).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31622400)]
    ttl_secs: Option<u32>,
}

/// A token with its secret, shown this once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ApiTokenWithSecret {
    /// The token.
    #[serde(flatten)]
    pub token: db::api_tokens::ApiToken,
    /// The secret (`fpa_` and 64 hex characters): shown this once, only its digest is stored.
    pub secret: String,
}

/// Every token.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ApiTokenList {
    /// Live first, newest first.
    pub tokens: Vec<db::api_tokens::ApiToken>,
}

/// A page of the audit log.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<db::audit::AuditEntry>,
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::field("id", "must be a UUID"))
}

fn view(t: &db::api_tokens::ApiToken) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// Every API token (never a secret); `admin` scope.
#[utoipa::path(tag = "tokens", operation_id = "list_api_tokens", security(("api" = [])),
    responses((status = 200, description = "Every token, live first", body = ApiTokenList), Unauthorized))]
#[get("/api/v1/tokens")]
pub async fn list(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ApiTokenList { tokens: db::api_tokens::list(&state.pool).await? }))
}

/// Creates a named token with a scope; the answer carries its secret, shown this once. `admin` scope.
#[utoipa::path(tag = "tokens", operation_id = "create_api_token", security(("api" = [])),
    request_body(content = NewToken, content_type = "application/json"),
    responses((status = 201, description = "Created, with its secret (shown once)", body = ApiTokenWithSecret), (status = 409, description = "A live token has that name", body = ApiError), BadBody, Unauthorized, TooLarge))]
#[post("/api/v1/tokens")]
pub async fn create(a: ApiAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let t: NewToken = super::doc::parse_body(&body)?;
    let name = t.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(ApiError::field("name", "1-64 characters: letters, digits, '.', '-', '_'"));
    }
    let scope = Scope::parse(&t.scope).ok_or_else(|| ApiError::field("scope", "one of read, operate, admin"))?;
    let expires = match t.ttl_secs {
        Some(0) | Some(31_622_401..) => return Err(ApiError::field("ttl_secs", "between 1 and 31622400 (366 days)")),
        Some(s) => Some(Utc::now() + Duration::seconds(i64::from(s))),
        None => None,
    };
    let Some((token, secret)) = db::api_tokens::create(&state.pool, name, scope, &a.actor, expires).await? else {
        return Err(ApiError::conflict("name", format!("a live token is named {name:?}")));
    };
    db::audit::record(&state.pool, &a.actor, "create", "api_token", name, None, Some(view(&token))).await;
    Ok(HttpResponse::Created().json(ApiTokenWithSecret { token, secret }))
}

/// A new secret for a live token; the old one stops working at once. `admin` scope.
#[utoipa::path(tag = "tokens", operation_id = "rotate_api_token", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses((status = 200, description = "Rotated, with its new secret (shown once)", body = ApiTokenWithSecret), (status = 400, description = "Bad path parameter; `field` names it", body = ApiError), (status = 404, description = "No such live token", body = ApiError), Unauthorized))]
#[post("/api/v1/tokens/{id}/rotate")]
pub async fn rotate(a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let before = db::api_tokens::get(&state.pool, id).await?;
    let Some((token, secret)) = db::api_tokens::rotate(&state.pool, id).await? else {
        return Err(ApiError::not_found(format!("no live token {id}")));
    };
    state.api_tokens.clear();
    db::audit::record(
        &state.pool,
        &a.actor,
        "rotate",
        "api_token",
        &token.name,
        before.as_ref().map(view),
        Some(view(&token)),
    )
    .await;
    Ok(HttpResponse::Ok().json(ApiTokenWithSecret { token, secret }))
}

/// Revokes a token at once. `admin` scope.
#[utoipa::path(tag = "tokens", operation_id = "revoke_api_token", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 400, description = "Bad path parameter; `field` names it", body = ApiError), (status = 404, description = "No such live token", body = ApiError), Unauthorized))]
#[delete("/api/v1/tokens/{id}")]
pub async fn revoke(a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let before = db::api_tokens::get(&state.pool, id).await?;
    let Some(after) = db::api_tokens::revoke(&state.pool, id).await? else {
        return Err(ApiError::not_found(format!("no live token {id}")));
    };
    state.api_tokens.clear();
    let name = after.name.clone();
    db::audit::record(
        &state.pool,
        &a.actor,
        "revoke",
        "api_token",
        &name,
        before.as_ref().map(view),
        Some(view(&after)),
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/v1/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this kind of object (`policy`, `silence`, `api_token`, ...).
    #[serde(default)]
    #[param(min_length = 1, max_length = 64)]
    kind: Option<String>,
    /// Entries older than this id (the last id of the previous page).
    #[serde(default)]
    #[param(minimum = 1)]
    before_id: Option<i64>,
    /// How many (1..=500, default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// The audit log, newest first: who changed what, when, with the object before and after. `admin` scope.
#[utoipa::path(tag = "tokens", operation_id = "list_audit_log", security(("api" = [])),
    params(AuditQuery),
    responses((status = 200, description = "Entries, newest first", body = AuditPage), (status = 400, description = "Bad query parameter; `field` names it", body = ApiError), Unauthorized))]
#[get("/api/v1/audit")]
pub async fn audit(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "between 1 and 500"));
    }
    if let Some(k) = &q.kind
        && (k.is_empty() || k.len() > 64)
    {
        return Err(ApiError::field("kind", "1-64 characters"));
    }
    if q.before_id.is_some_and(|b| b < 1) {
        return Err(ApiError::field("before_id", "must be at least 1"));
    }
    let entries = db::audit::list(&state.pool, q.kind.as_deref(), q.before_id, limit).await?;
    Ok(HttpResponse::Ok().json(AuditPage { entries }))
}
