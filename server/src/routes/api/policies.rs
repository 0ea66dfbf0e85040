//! `/api/v1/policies`: create, list, get, update (new version), delete.

use actix_web::{HttpResponse, delete as del, get, post, put, web};
use uuid::Uuid;

use crate::auth::ApiAuth;
use crate::control::shadow;
use crate::db::policies::{self as store, Write};
use crate::domain::policy::PolicySpec;
use crate::error::{ApiError, parse_json};
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
    let spec: PolicySpec = parse_json(body)?;
    spec.validate()?;
    Ok(spec)
}

/// Creates a policy (201).
#[post("/api/v1/policies")]
pub async fn create(_a: ApiAuth, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let spec = parse_spec(&body)?;
    let written = store::create(&state.pool, &spec).await?;
    state.policies.invalidate();
    match written {
        Write::Ok(p) => {
            Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/policies/{}", p.id))).json(p))
        }
        Write::NameTaken => Err(ApiError::conflict("name", format!("a policy named {:?} exists", spec.name))),
        Write::NotFound => Err(ApiError::internal("created policy vanished")),
    }
}

/// Lists live policies.
#[get("/api/v1/policies")]
pub async fn list(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(store::list(&state.pool).await?))
}

/// One policy.
#[get("/api/v1/policies/{id}")]
pub async fn get(_a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    match store::get(&state.pool, id).await? {
        Some(p) => Ok(HttpResponse::Ok().json(p)),
        None => Err(ApiError::not_found(format!("no policy {id}"))),
    }
}

/// Replaces a policy's spec; its version goes up by one.
#[put("/api/v1/policies/{id}")]
pub async fn update(
    _a: ApiAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let spec = parse_spec(&body)?;
    not_owned(&state, id).await?;
    let written = store::update(&state.pool, id, &spec).await?;
    state.policies.invalidate();
    match written {
        Write::Ok(p) => Ok(HttpResponse::Ok().json(p)),
        Write::NameTaken => Err(ApiError::conflict("name", format!("a policy named {:?} exists", spec.name))),
        Write::NotFound => Err(ApiError::not_found(format!("no policy {id}"))),
    }
}

/// Deletes a policy (204); its decisions stay.
#[del("/api/v1/policies/{id}")]
pub async fn delete(_a: ApiAuth, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    not_owned(&state, id).await?;
    let deleted = store::delete(&state.pool, id).await?;
    state.policies.invalidate();
    if deleted { Ok(HttpResponse::NoContent().finish()) } else { Err(ApiError::not_found(format!("no policy {id}"))) }
}

/// What the policy's deployment's policies (the active one and its shadows) would have cost over the last
/// 24 h: their recorded decisions replayed against the observed demand (see [`crate::control::shadow`]).
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
