//! Alerting API: user rules (`/api/v1/alert-rules`), silences (`/api/v1/silences`), webhook receivers
//! (`/api/v1/webhooks`), alert instances (`/api/v1/alert-instances`) and the outbox
//! (`/api/v1/alert-deliveries`). Secrets (routing key, webhook secrets) are never returned.

use actix_web::{HttpResponse, delete as del, get, post, put, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::crud::{self, Change, Resource, Written};
use super::paging;
use super::responses::{BadBody, BadPath, NameTaken, NotFound, TooLarge, Unauthorized};
use crate::alerts::rules::{RuleSpec, SilenceSpec, WebhookSpec};
use crate::alerts::silence_from;
use crate::auth::ApiAuth;
use crate::db::alerts::{self as store, RuleWrite, StoredRule};
use crate::error::ApiError;
use crate::state::AppState;

/// User alert rules as a resource of the CRUD skeleton.
pub struct Rules;

impl Resource for Rules {
    type Spec = RuleSpec;
    type Stored = StoredRule;
    const KIND: &'static str = "alert_rule";
    const PATH: &'static str = "/api/v1/alert-rules";
    const A: &'static str = "an alert rule";
    const WHAT: &'static str = "alert rule";

    fn parse(body: &[u8]) -> Result<RuleSpec, ApiError> {
        let spec: RuleSpec = super::doc::parse_body(body)?;
        spec.validate()?;
        Ok(spec)
    }
    fn name(spec: &RuleSpec) -> &str {
        &spec.name
    }
    fn id(stored: &StoredRule) -> Uuid {
        stored.id
    }
    async fn get(state: &AppState, id: Uuid) -> Result<Option<StoredRule>, sqlx::Error> {
        store::rule(&state.pool, id).await
    }
    async fn create(state: &AppState, spec: &RuleSpec) -> Result<Written<StoredRule>, sqlx::Error> {
        store::create_rule(&state.pool, spec).await.map(written)
    }
    async fn update(state: &AppState, id: Uuid, spec: &RuleSpec) -> Result<Written<StoredRule>, sqlx::Error> {
        store::update_rule(&state.pool, id, spec).await.map(written)
    }
    async fn delete(state: &AppState, id: Uuid) -> Result<bool, sqlx::Error> {
        store::delete_rule(&state.pool, id).await
    }
}

fn written(w: RuleWrite) -> Written<StoredRule> {
    match w {
        RuleWrite::Ok(r) => Written::Ok(r),
        RuleWrite::NameTaken => Written::NameTaken,
        RuleWrite::NotFound => Written::NotFound,
    }
}

/// Creates a user rule (201).
#[utoipa::path(tag = "alerting", operation_id = "create_alert_rule", security(("api" = [])),
    request_body(content = RuleSpec, content_type = "application/json"),
    responses((status = 201, description = "Created", body = crate::db::alerts::StoredRule, headers(("Location" = String, description = "URL of the new resource"))), BadBody, Unauthorized, NameTaken, TooLarge))]
#[post("/api/v1/alert-rules")]
pub async fn create_rule(a: ApiAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    crud::create::<Rules>(a, state, body).await
}

/// Lists user rules.
#[utoipa::path(tag = "alerting", operation_id = "list_alert_rules", security(("api" = [])),
    responses((status = 200, description = "User alert rules", body = Vec<crate::db::alerts::StoredRule>), Unauthorized))]
#[get("/api/v1/alert-rules")]
pub async fn list_rules(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::rules(&state.pool).await?))
}

/// One user rule.
#[utoipa::path(tag = "alerting", operation_id = "get_alert_rule", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Rule id")),
    responses((status = 200, description = "The rule", body = crate::db::alerts::StoredRule), BadPath, Unauthorized, NotFound))]
#[get("/api/v1/alert-rules/{id}")]
pub async fn get_rule(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    crud::get::<Rules>(state, id).await
}

/// Replaces a user rule.
#[utoipa::path(tag = "alerting", operation_id = "update_alert_rule", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Rule id")), request_body(content = RuleSpec, content_type = "application/json"),
    responses((status = 200, description = "Replaced", body = crate::db::alerts::StoredRule), BadBody, Unauthorized, NotFound, NameTaken, TooLarge))]
#[put("/api/v1/alert-rules/{id}")]
pub async fn update_rule(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    crud::update::<Rules>(a, state, id, body).await
}

/// Deletes a user rule (204); its alerts resolve at the next evaluation.
#[utoipa::path(delete, path = "/api/v1/alert-rules/{id}", tag = "alerting", operation_id = "delete_alert_rule", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Rule id")),
    responses((status = 204, description = "Deleted; its alerts resolve at the next evaluation"), BadPath, Unauthorized, NotFound))]
#[del("/api/v1/alert-rules/{id}")]
pub async fn delete_rule(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    crud::delete::<Rules>(a, state, id).await
}

/// Creates a silence (201).
#[utoipa::path(tag = "alerting", operation_id = "create_silence", security(("api" = [])),
    request_body(content = SilenceSpec, content_type = "application/json"),
    responses((status = 201, description = "Created", body = crate::db::alerts::Silence, headers(("Location" = String, description = "URL of the new resource"))), BadBody, Unauthorized, TooLarge))]
#[post("/api/v1/silences")]
pub async fn create_silence(
    a: ApiAuth,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let spec: SilenceSpec = super::doc::parse_body(&body)?;
    let (start, end) = spec.validate(Utc::now())?;
    let by = spec.created_by.as_deref().unwrap_or("api");
    let s = silence_from::record(&state.pool, &spec, by, &a.actor, (start, end)).await?;
    Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/silences/{}", s.id))).json(s))
}

/// `?all=true` includes ended silences.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SilenceQuery {
    /// Include ended silences.
    all: Option<bool>,
}

/// A webhook receiver as the API shows it (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Id (null for a receiver configured in the settings).
    pub id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// `settings` or `api`.
    #[schema(inline)]
    pub source: WebhookSource,
    /// When it was added through the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<chrono::DateTime<Utc>>,
}

/// Where a webhook receiver comes from.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookSource {
    /// The settings file / environment.
    Settings,
    /// `POST /api/v1/webhooks`.
    Api,
}

/// PagerDuty's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PagerDutyView {
    /// Whether a routing key is set.
    pub configured: bool,
}

/// `GET /api/v1/webhooks`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Receivers {
    /// PagerDuty.
    pub pagerduty: PagerDutyView,
    /// Webhooks from the settings, then the API's.
    pub webhooks: Vec<WebhookView>,
}

/// Silences in force or upcoming (all with `?all=true`).
#[utoipa::path(tag = "alerting", operation_id = "list_silences", security(("api" = [])),
    params(SilenceQuery),
    responses((status = 200, description = "Silences in force or upcoming (all with all=true)", body = Vec<crate::db::alerts::Silence>), BadPath, Unauthorized))]
#[get("/api/v1/silences")]
pub async fn list_silences(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<SilenceQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::silences(&state.pool, Utc::now(), q.all.unwrap_or(false)).await?))
}

/// Expires a silence now (204).
#[utoipa::path(delete, path = "/api/v1/silences/{id}", tag = "alerting", operation_id = "expire_silence", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Silence id")),
    responses((status = 204, description = "Expired now"), (status = 404, description = "No such silence in force", body = ApiError), BadPath, Unauthorized))]
#[del("/api/v1/silences/{id}")]
pub async fn expire_silence(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = crud::parse_uuid(&id)?;
    let expired = silence_from::expire(&state.pool, id, &a.actor, Utc::now()).await?;
    crud::no_content(expired, || format!("no silence {id} in force"))
}

/// Adds a webhook receiver (201); the secret is stored to sign deliveries and never returned.
#[utoipa::path(tag = "alerting", operation_id = "create_webhook", security(("api" = [])),
    request_body(content = WebhookSpec, content_type = "application/json"),
    responses((status = 201, description = "Created (the secret is never returned)", body = WebhookView, headers(("Location" = String, description = "URL of the new resource"))), BadBody, Unauthorized, NameTaken, TooLarge))]
#[post("/api/v1/webhooks")]
pub async fn create_webhook(
    a: ApiAuth,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let spec: WebhookSpec = super::doc::parse_body(&body)?;
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
        // The secret is never recorded.
        Some(w) => {
            // The secret is never recorded.
            let after = serde_json::json!({"id": w.id, "name": w.name, "url": w.url});
            crate::db::audit::record(&state.pool, &a.actor, "create", "webhook", &w.id.to_string(), None, Some(after))
                .await;
            Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/webhooks/{}", w.id))).json(
                WebhookView {
                    id: Some(w.id),
                    name: w.name,
                    url: w.url,
                    source: WebhookSource::Api,
                    created_at: Some(w.created_at),
                },
            ))
        }
        None => Err(ApiError::conflict("name", format!("a webhook named {:?} exists", spec.name))),
    }
}

/// Receivers: PagerDuty (whether configured), the settings' webhooks and the API's (no secrets).
#[utoipa::path(tag = "alerting", operation_id = "list_webhooks", security(("api" = [])),
    responses((status = 200, description = "Receivers: PagerDuty (whether configured) and webhooks (no secrets)", body = Receivers), Unauthorized))]
#[get("/api/v1/webhooks")]
pub async fn list_webhooks(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut webhooks: Vec<WebhookView> = state
        .settings
        .webhooks
        .iter()
        .map(|w| WebhookView {
            id: None,
            name: w.name.clone(),
            url: w.url.clone(),
            source: WebhookSource::Settings,
            created_at: None,
        })
        .collect();
    for w in store::webhooks(&state.pool).await? {
        webhooks.push(WebhookView {
            id: Some(w.id),
            name: w.name,
            url: w.url,
            source: WebhookSource::Api,
            created_at: Some(w.created_at),
        });
    }
    let pagerduty = PagerDutyView { configured: !state.settings.pagerduty.routing_key.is_empty() };
    Ok(HttpResponse::Ok().json(Receivers { pagerduty, webhooks }))
}

/// Removes a webhook receiver added through the API (204).
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "alerting", operation_id = "delete_webhook", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Webhook id")),
    responses((status = 204, description = "Removed"), BadPath, Unauthorized, NotFound))]
#[del("/api/v1/webhooks/{id}")]
pub async fn delete_webhook(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = crud::parse_uuid(&id)?;
    let deleted = store::delete_webhook(&state.pool, id).await?;
    let key = id.to_string();
    crud::audited(&state, &a.actor, deleted, Change::of("delete", "webhook", &key), || format!("no webhook {id}")).await
}

/// `?state=pending|firing|resolved&limit=N`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstanceQuery {
    /// Only this state (default: pending and firing).
    #[param(inline, value_type = Option<InstanceState>)]
    state: Option<String>,
    /// How many (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Alert instance states.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Condition holds, not yet for `for_secs`.
    Pending,
    /// Firing.
    Firing,
    /// Resolved.
    Resolved,
}

/// Alert instances (default: pending and firing), newest first, with why each is suppressed.
#[utoipa::path(tag = "alerting", operation_id = "list_alert_instances", security(("api" = [])),
    params(InstanceQuery),
    responses((status = 200, description = "Alert instances, newest first", body = Vec<crate::db::alerts::Instance>), BadPath, Unauthorized))]
#[get("/api/v1/alert-instances")]
pub async fn instances(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<InstanceQuery>,
) -> Result<HttpResponse, ApiError> {
    paging::one_of("state", q.state.as_deref(), &["pending", "firing", "resolved"])?;
    Ok(HttpResponse::Ok().json(store::instances(&state.pool, q.state.as_deref(), paging::limit(q.limit)?).await?))
}

/// `?state=pending|delivered|failed&limit=N`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only this state.
    #[param(inline, value_type = Option<DeliveryState>)]
    state: Option<String>,
    /// How many (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Outbox delivery states.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; retried.
    Pending,
    /// Delivered.
    Delivered,
    /// Refused permanently.
    Failed,
}

/// Outbox rows, newest first: what was sent where, attempts, and permanent failures with their error.
#[utoipa::path(tag = "alerting", operation_id = "list_alert_deliveries", security(("api" = [])),
    params(DeliveryQuery),
    responses((status = 200, description = "Outbox rows, newest first", body = Vec<crate::db::alerts::DeliveryRow>), BadPath, Unauthorized))]
#[get("/api/v1/alert-deliveries")]
pub async fn deliveries(
    _a: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    paging::one_of("state", q.state.as_deref(), &["pending", "delivered", "failed"])?;
    Ok(HttpResponse::Ok().json(store::deliveries(&state.pool, q.state.as_deref(), paging::limit(q.limit)?).await?))
}
