//! Named API tokens (`/api/v1/tokens`) and the audit log (`/api/v1/audit`); both need the `admin` scope.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{ApiAuth, Scope};
use crate::db;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

/// `POST /api/v1/tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    scope: String,
    #[serde(default)]
    ttl_secs: Option<u32>,
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::field("id", "must be a UUID"))
}

fn view(t: &db::api_tokens::ApiToken) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// `GET /api/v1/tokens`: every token (never a secret).
#[get("/api/v1/tokens")]
pub async fn list(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "tokens": db::api_tokens::list(&state.pool).await? })))
}

/// `POST /api/v1/tokens`: a named token with a scope; the answer carries its secret, shown this once.
#[post("/api/v1/tokens")]
pub async fn create(a: ApiAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let t: NewToken = parse_json(&body)?;
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
    let mut v = view(&token);
    v["secret"] = Value::String(secret);
    Ok(HttpResponse::Created().json(v))
}

/// `POST /api/v1/tokens/{id}/rotate`: a new secret for a live token; the old one stops working at once.
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
    let mut v = view(&token);
    v["secret"] = Value::String(secret);
    Ok(HttpResponse::Ok().json(v))
}

/// `DELETE /api/v1/tokens/{id}`: revokes a token at once.
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    before_id: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /api/v1/audit?kind=&before_id=&limit=`: newest first (at most 500 per page; page on with the last
/// entry's id as `before_id`).
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
    Ok(HttpResponse::Ok().json(json!({ "entries": entries })))
}
