//! Dashboard users: disable (ends the user's sessions at once) and delete.

use actix_web::{HttpResponse, delete, post, web};

use crate::auth::ApiAuth;
use crate::db::users;
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /api/v1/users/{username}/disable`: the user can no longer log in; its sessions end now.
#[post("/api/v1/users/{username}/disable")]
pub async fn disable(
    _a: ApiAuth,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !users::disable(&state.pool, &name).await? {
        return Err(ApiError::not_found("no such user"));
    }
    tracing::info!(user = %name, "dashboard user disabled");
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /api/v1/users/{username}`: removes the user and its sessions.
#[delete("/api/v1/users/{username}")]
pub async fn remove(
    _a: ApiAuth,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !users::delete(&state.pool, &name).await? {
        return Err(ApiError::not_found("no such user"));
    }
    tracing::info!(user = %name, "dashboard user deleted");
    Ok(HttpResponse::NoContent().finish())
}
