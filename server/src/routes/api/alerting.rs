//! Alerting API: user rules (`/api/v1/alert-rules`), silences (`/api/v1/silences`), webhook receivers
//! (`/api/v1/webhooks`), alert instances (`/api/v1/alert-instances`) and the outbox
//! (`/api/v1/alert-deliveries`). Secrets (routing key, webhook secrets) are never returned.

use actix_web::{HttpResponse, delete as del, get, post, put, web};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::alerts::rules::{RuleSpec, SilenceSpec, WebhookSpec};
use crate::auth::ApiAuth;
use crate::db::alerts::{self as store, RuleWrite};
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::field("id", "must be a UUID"))
}

fn parse_rule(body: &[u8]) -> Result<RuleSpec, ApiError> {
    let spec: RuleSpec = parse_json(body)?;
    spec.validate()?;
    Ok(spec)
}

fn limit(n: Option<i64>) -> Result<i64, ApiError> {
    match n {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", "must be in 1..=1000")),
    }
}

/// Creates a user rule (201).
#[post("/api/v1/alert-rules")]
pub async fn create_rule(_a: ApiAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let spec = parse_rule(&body)?;
    match store::create_rule(&state.pool, &spec).await? {
        RuleWrite::Ok(r) => {
            Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/alert-rules/{}", r.id))).json(r))
        }
        RuleWrite::NameTaken => Err(ApiError::conflict("name", format!("an alert rule named {:?} exists", spec.name))),
        RuleWrite::NotFound => Err(ApiError::internal("created alert rule vanished")),
    }
}

/// Lists user rules.
#[get("/api/v1/alert-rules")]
pub async fn list_rules(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::rules(&state.pool).await?))
}

/// One user rule.
#[get("/api/v1/alert-rules/{id}")]
pub async fn get_rule(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    match store::rule(&state.pool, id).await? {
        Some(r) => Ok(HttpResponse::Ok().json(r)),
        None => Err(ApiError::not_found(format!("no alert rule {id}"))),
    }
}

/// Replaces a user rule.
#[put("/api/v1/alert-rules/{id}")]
pub async fn update_rule(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let spec = parse_rule(&body)?;
    match store::update_rule(&state.pool, id, &spec).await? {
        RuleWrite::Ok(r) => Ok(HttpResponse::Ok().json(r)),
        RuleWrite::NameTaken => Err(ApiError::conflict("name", format!("an alert rule named {:?} exists", spec.name))),
        RuleWrite::NotFound => Err(ApiError::not_found(format!("no alert rule {id}"))),
    }
}

/// Deletes a user rule (204); its alerts resolve at the next evaluation.
#[del("/api/v1/alert-rules/{id}")]
pub async fn delete_rule(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    if store::delete_rule(&state.pool, id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(format!("no alert rule {id}")))
    }
}

/// Creates a silence (201).
#[post("/api/v1/silences")]
pub async fn create_silence(
    _a: ApiAuth,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let spec: SilenceSpec = parse_json(&body)?;
    let (start, end) = spec.validate(Utc::now())?;
    let by = spec.created_by.as_deref().unwrap_or("api");
    let s = store::create_silence(&state.pool, &spec.matchers, spec.comment.trim(), by, start, end).await?;
    Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/silences/{}", s.id))).json(s))
}

/// `?all=true` includes ended silences.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceQuery {
    all: Option<bool>,
}

/// Silences in force or upcoming (all with `?all=true`).
#[get("/api/v1/silences")]
pub async fn list_silences(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<SilenceQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::silences(&state.pool, Utc::now(), q.all.unwrap_or(false)).await?))
}

/// Expires a silence now (204).
#[del("/api/v1/silences/{id}")]
pub async fn expire_silence(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    if store::expire_silence(&state.pool, id, Utc::now()).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(format!("no silence {id} in force")))
    }
}

/// Adds a webhook receiver (201); the secret is stored to sign deliveries and never returned.
#[post("/api/v1/webhooks")]
pub async fn create_webhook(
    _a: ApiAuth,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let spec: WebhookSpec = parse_json(&body)?;
    spec.validate()?;
    crate::alerts::targets::check(&spec.url, state.settings.alerts.webhook_allow_private)
        .await
        .map_err(|e| ApiError::field("url", e.to_string()))?;
    if state.settings.webhooks.iter().any(|w| w.name == spec.name) {
        return Err(ApiError::conflict(
            "name",
            format!("a webhook named {:?} is configured in the settings", spec.name),
        ));
    }
    match store::create_webhook(&state.pool, &spec).await? {
        Some(w) => Ok(HttpResponse::Created()
            .insert_header(("Location", format!("/api/v1/webhooks/{}", w.id)))
            .json(json!({ "id": w.id, "name": w.name, "url": w.url, "source": "api", "created_at": w.created_at }))),
        None => Err(ApiError::conflict("name", format!("a webhook named {:?} exists", spec.name))),
    }
}

/// Receivers: PagerDuty (whether configured), the settings' webhooks and the API's (no secrets).
#[get("/api/v1/webhooks")]
pub async fn list_webhooks(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut out: Vec<_> = state
        .settings
        .webhooks
        .iter()
        .map(|w| json!({ "id": null, "name": w.name, "url": w.url, "source": "settings" }))
        .collect();
    for w in store::webhooks(&state.pool).await? {
        out.push(json!({ "id": w.id, "name": w.name, "url": w.url, "source": "api", "created_at": w.created_at }));
    }
    Ok(HttpResponse::Ok().json(json!({
        "pagerduty": { "configured": !state.settings.pagerduty.routing_key.is_empty() },
        "webhooks": out,
    })))
}

/// Removes a webhook receiver added through the API (204).
#[del("/api/v1/webhooks/{id}")]
pub async fn delete_webhook(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    if store::delete_webhook(&state.pool, id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(format!("no webhook {id}")))
    }
}

/// `?state=pending|firing|resolved&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceQuery {
    state: Option<String>,
    limit: Option<i64>,
}

/// Alert instances (default: pending and firing), newest first, with why each is suppressed.
#[get("/api/v1/alert-instances")]
pub async fn instances(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<InstanceQuery>,
) -> Result<HttpResponse, ApiError> {
    if let Some(s) = &q.state
        && !matches!(s.as_str(), "pending" | "firing" | "resolved")
    {
        return Err(ApiError::field("state", "must be pending, firing or resolved"));
    }
    Ok(HttpResponse::Ok().json(store::instances(&state.pool, q.state.as_deref(), limit(q.limit)?).await?))
}

/// `?state=pending|delivered|failed&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    state: Option<String>,
    limit: Option<i64>,
}

/// Outbox rows, newest first: what was sent where, attempts, and permanent failures with their error.
#[get("/api/v1/alert-deliveries")]
pub async fn deliveries(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    if let Some(s) = &q.state
        && !matches!(s.as_str(), "pending" | "delivered" | "failed")
    {
        return Err(ApiError::field("state", "must be pending, delivered or failed"));
    }
    Ok(HttpResponse::Ok().json(store::deliveries(&state.pool, q.state.as_deref(), limit(q.limit)?).await?))
}
