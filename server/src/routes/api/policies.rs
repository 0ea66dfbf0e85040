//! `/api/v1/policies`: create, list, get, update (new version), delete.

use actix_web::{HttpResponse, delete as del, get, post, put, web};
use uuid::Uuid;

use super::crud::{self, Resource, Written};
use super::responses::{BadBody, BadPath, NameTaken, NotFound, TooLarge, Unauthorized};
use crate::auth::ApiAuth;
use crate::control::shadow;
use crate::db::policies::{self as store, StoredPolicy, Write};
use crate::domain::policy::PolicySpec;
use crate::error::ApiError;
use crate::state::AppState;

/// Policies as a resource of the CRUD skeleton: a Kubernetes-owned one is refused (409 naming `owner`), and
/// every write tells the dashboard's policy cache.
pub struct Policies;

impl Resource for Policies {
    type Spec = PolicySpec;
    type Stored = StoredPolicy;
    const KIND: &'static str = "policy";
    const PATH: &'static str = "/api/v1/policies";
    const A: &'static str = "a policy";
    const WHAT: &'static str = "policy";

    fn parse(body: &[u8]) -> Result<PolicySpec, ApiError> {
        let spec: PolicySpec = super::doc::parse_body(body)?;
        spec.validate()?;
        Ok(spec)
    }
    fn name(spec: &PolicySpec) -> &str {
        &spec.name
    }
    fn id(stored: &StoredPolicy) -> Uuid {
        stored.id
    }
    async fn get(state: &AppState, id: Uuid) -> Result<Option<StoredPolicy>, sqlx::Error> {
        store::get(&state.pool, id).await
    }
    async fn create(state: &AppState, spec: &PolicySpec) -> Result<Written<StoredPolicy>, sqlx::Error> {
        store::create(&state.pool, spec).await.map(written)
    }
    async fn update(state: &AppState, id: Uuid, spec: &PolicySpec) -> Result<Written<StoredPolicy>, sqlx::Error> {
        store::update(&state.pool, id, spec).await.map(written)
    }
    async fn delete(state: &AppState, id: Uuid) -> Result<bool, sqlx::Error> {
        store::delete(&state.pool, id).await
    }
    async fn may_change(state: &AppState, id: Uuid) -> Result<(), ApiError> {
        match store::get(&state.pool, id).await? {
            Some(StoredPolicy { owner: Some(owner), .. }) => Err(ApiError::conflict(
                "owner",
                format!("policy {id} is managed by {owner}: change it with kubectl (or in Git), not here"),
            )),
            Some(_) => Ok(()),
            None => Err(ApiError::not_found(format!("no policy {id}"))),
        }
    }
    fn changed(state: &AppState) {
        state.policies_changed();
    }
}

fn written(w: Write<StoredPolicy>) -> Written<StoredPolicy> {
    match w {
        Write::Ok(p) => Written::Ok(p),
        Write::NameTaken => Written::NameTaken,
        Write::NotFound => Written::NotFound,
    }
}

/// Creates a policy (201).
#[utoipa::path(tag = "policies", operation_id = "create_policy", security(("api" = [])),
    request_body(content = PolicySpec, content_type = "application/json"),
    responses((status = 201, description = "Created", body = crate::db::policies::StoredPolicy, headers(("Location" = String, description = "URL of the new resource"))), BadBody, Unauthorized, NameTaken, TooLarge))]
#[post("/api/v1/policies")]
pub async fn create(a: ApiAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    crud::create::<Policies>(a, state, body).await
}

/// Lists live policies.
#[utoipa::path(tag = "policies", operation_id = "list_policies", security(("api" = [])),
    responses((status = 200, description = "Live policies", body = Vec<crate::db::policies::StoredPolicy>), Unauthorized))]
#[get("/api/v1/policies")]
pub async fn list(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::list(&state.pool).await?))
}

/// One policy.
#[utoipa::path(tag = "policies", operation_id = "get_policy", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    responses((status = 200, description = "The policy", body = crate::db::policies::StoredPolicy), BadPath, Unauthorized, NotFound))]
#[get("/api/v1/policies/{id}")]
pub async fn get(_a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    crud::get::<Policies>(state, id).await
}

/// Replaces a policy's spec; its version goes up by one.
#[utoipa::path(tag = "policies", operation_id = "update_policy", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")), request_body(content = PolicySpec, content_type = "application/json"),
    responses((status = 200, description = "Updated: a new version", body = crate::db::policies::StoredPolicy), (status = 409, description = "The name is taken, or a ScalingPolicy resource owns the policy (`field` is `owner`)", body = ApiError), BadBody, Unauthorized, NotFound, TooLarge))]
#[put("/api/v1/policies/{id}")]
pub async fn update(
    a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    crud::update::<Policies>(a, state, id, body).await
}

/// Deletes a policy (204); its decisions stay.
#[utoipa::path(delete, path = "/api/v1/policies/{id}", tag = "policies", operation_id = "delete_policy", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    responses((status = 204, description = "Deleted (its versions and decisions are kept)"), (status = 409, description = "A ScalingPolicy resource owns the policy: delete that instead (`field` is `owner`)", body = ApiError), BadPath, Unauthorized, NotFound))]
#[del("/api/v1/policies/{id}")]
pub async fn delete(a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    crud::delete::<Policies>(a, state, id).await
}

/// What the policy's deployment's policies (the active one and its shadows) would have cost over the last
/// 24 h: their recorded decisions replayed against the observed demand (see [`crate::control::shadow`]).
#[utoipa::path(tag = "policies", operation_id = "shadow_report", security(("api" = [])),
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    responses((status = 200, description = "The last 24 h priced for the policy's deployment: the active policy and every shadow", body = serde_json::Value), BadPath, Unauthorized, NotFound))]
#[get("/api/v1/policies/{id}/shadow-report")]
pub async fn shadow_report(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = crud::parse_uuid(&id)?;
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
