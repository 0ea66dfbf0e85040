//! `/api/v1/policies`: create, list, get, update (new version), delete.

use actix_web::{HttpResponse, delete as del, get, post, put, web};
use uuid::Uuid;

use crate::auth::ApiAuth;
use crate::control::shadow;
#[allow(unused_imports)] // named by the OpenAPI annotations
use crate::db::policies::StoredPolicy;
use crate::db::policies::{self as store, Write};
use crate::domain::policy::PolicySpec;
use crate::error::ApiError;
use crate::state::AppState;

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::field("id", "must be a UUID"))
}

/// Refuses to change a policy a Kubernetes resource owns (409 naming `owner`).
async fn not_owned(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    match store::get(&state.pool, id).await? {
        Some(p) => match p.owner {
            Some(owner) => Err(ApiError::conflict(
                "owner",
                format!("policy {id} is managed by {owner}: change it with kubectl (or in Git), not here"),
            )),
            None => Ok(()),
        },
        None => Err(ApiError::not_found(format!("no policy {id}"))),
    }
}

fn parse_spec(body: &[u8]) -> Result<PolicySpec, ApiError> {
    let spec: PolicySpec = super::doc::parse_body(body)?;
    spec.validate()?;
    Ok(spec)
}

/// Creates a policy (201).
#[utoipa::path(
    tag = "policies",
    operation_id = "create_policy",
    security(("api" = [])),
    request_body(content = PolicySpec, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = crate::db::policies::StoredPolicy, headers(("Location" = String, description = "URL of the new resource"))),
        (status = 400, description = "Bad input; `field` names the offending field", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 409, description = "The name is taken", body = ApiError),
        (status = 413, description = "Body larger than the server accepts", body = ApiError)
    )
)]
#[post("/api/v1/policies")]
pub async fn create(a: ApiAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let spec = parse_spec(&body)?;
    let written = store::create(&state.pool, &spec).await?;
    state.policies_changed();
    match written {
        Write::Ok(p) => {
            crate::db::audit::record(
                &state.pool,
                &a.actor,
                "create",
                "policy",
                &p.id.to_string(),
                None,
                crate::db::audit::json(&p),
            )
            .await;
            Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/policies/{}", p.id))).json(p))
        }
        Write::NameTaken => Err(ApiError::conflict("name", format!("a policy named {:?} exists", spec.name))),
        Write::NotFound => Err(ApiError::internal("created policy vanished")),
    }
}

/// Lists live policies.
#[utoipa::path(
    tag = "policies",
    operation_id = "list_policies",
    security(("api" = [])),
    responses(
        (status = 200, description = "Live policies", body = Vec<crate::db::policies::StoredPolicy>),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError, headers(("WWW-Authenticate" = String, description = "Bearer")))
    )
)]
#[get("/api/v1/policies")]
pub async fn list(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::list(&state.pool).await?))
}

/// One policy.
#[utoipa::path(
    tag = "policies",
    operation_id = "get_policy",
    security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    responses(
        (status = 200, description = "The policy", body = crate::db::policies::StoredPolicy),
        (status = 400, description = "Bad path or query parameter; `field` names it", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 404, description = "No such resource", body = ApiError)
    )
)]
#[get("/api/v1/policies/{id}")]
pub async fn get(_a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    match store::get(&state.pool, id).await? {
        Some(p) => Ok(HttpResponse::Ok().json(p)),
        None => Err(ApiError::not_found(format!("no policy {id}"))),
    }
}

/// Replaces a policy's spec; its version goes up by one.
#[utoipa::path(
    tag = "policies",
    operation_id = "update_policy",
    security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    request_body(content = PolicySpec, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated: a new version", body = crate::db::policies::StoredPolicy),
        (status = 400, description = "Bad input; `field` names the offending field", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 404, description = "No such resource", body = ApiError),
        (status = 409, description = "The name is taken, or a ScalingPolicy resource owns the policy (`field` is `owner`)", body = ApiError),
        (status = 413, description = "Body larger than the server accepts", body = ApiError)
    )
)]
#[put("/api/v1/policies/{id}")]
pub async fn update(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let spec = parse_spec(&body)?;
    not_owned(&state, id).await?;
    let before = store::get(&state.pool, id).await?;
    let written = store::update(&state.pool, id, &spec).await?;
    state.policies_changed();
    match written {
        Write::Ok(p) => {
            let b = before.as_ref().and_then(crate::db::audit::json);
            crate::db::audit::record(
                &state.pool,
                &a.actor,
                "update",
                "policy",
                &id.to_string(),
                b,
                crate::db::audit::json(&p),
            )
            .await;
            Ok(HttpResponse::Ok().json(p))
        }
        Write::NameTaken => Err(ApiError::conflict("name", format!("a policy named {:?} exists", spec.name))),
        Write::NotFound => Err(ApiError::not_found(format!("no policy {id}"))),
    }
}

/// Deletes a policy (204); its decisions stay.
#[utoipa::path(
    delete,
    path = "/api/v1/policies/{id}",
    tag = "policies",
    operation_id = "delete_policy",
    security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    responses(
        (status = 204, description = "Deleted (its versions and decisions are kept)"),
        (status = 400, description = "Bad path or query parameter; `field` names it", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 404, description = "No such resource", body = ApiError),
        (status = 409, description = "A ScalingPolicy resource owns the policy: delete that instead (`field` is `owner`)", body = ApiError)
    )
)]
#[del("/api/v1/policies/{id}")]
pub async fn delete(a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    not_owned(&state, id).await?;
    let before = store::get(&state.pool, id).await?;
    let deleted = store::delete(&state.pool, id).await?;
    state.policies_changed();
    if !deleted {
        return Err(ApiError::not_found(format!("no policy {id}")));
    }
    crate::db::audit::record(
        &state.pool,
        &a.actor,
        "delete",
        "policy",
        &id.to_string(),
        before.as_ref().and_then(crate::db::audit::json),
        None,
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// What the policy's deployment's policies (the active one and its shadows) would have cost over the last
/// 24 h: their recorded decisions replayed against the observed demand (see [`crate::control::shadow`]).
#[utoipa::path(
    tag = "policies",
    operation_id = "shadow_report",
    security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    responses(
        (status = 200, description = "The last 24 h priced for the policy's deployment: the active policy and every shadow", body = serde_json::Value),
        (status = 400, description = "Bad path or query parameter; `field` names it", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 404, description = "No such resource", body = ApiError)
    )
)]
#[get("/api/v1/policies/{id}/shadow-report")]
pub async fn shadow_report(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let all = store::list(&state.pool).await?;
    let Some(asked) = all.iter().find(|p| p.id == id) else {
        return Err(ApiError::not_found(format!("no policy {id}")));
    };
    let pricing = crate::opportunities::detector_config(&state.settings.opportunities).pricing;
    let report = shadow::report(&state.pool, &all, asked, chrono::Utc::now(), &pricing).await.map_err(|e| match e {
        shadow::ShadowError::Db(e) => ApiError::from(e),
        other => ApiError::internal(other.to_string()),
    })?;
    Ok(HttpResponse::Ok().json(report))
}
