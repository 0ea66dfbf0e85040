//! Dashboard users: disable (ends the user's sessions at once) and delete.

use actix_web::{HttpResponse, delete, post, web};

use super::responses::{NotFound, Unauthorized};
use crate::auth::ApiAuth;
use crate::db::users;
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /api/v1/users/{username}/disable`: the user can no longer log in; its sessions end now.
#[utoipa::path(tag = "users", operation_id = "disable_user", security(("api" = [])),
    params(("username" = String, Path, description = "Dashboard user name")),
    responses((status = 204, description = "Disabled; its sessions ended"), Unauthorized, NotFound))]
#[post("/api/v1/users/{username}/disable")]
pub async fn disable(
    a: ApiAuth,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !users::disable(&state.pool, &name).await? {
        return Err(ApiError::not_found("no such user"));
    }
    tracing::info!(user = %name, "dashboard user disabled");
    crate::db::audit::record(&state.pool, &a.actor, "disable", "user", &name, None, None).await;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /api/v1/users/{username}`: removes the user and its sessions.
#[utoipa::path(tag = "users", operation_id = "delete_user", security(("api" = [])),
    params(("username" = String, Path, description = "Dashboard user name")),
    responses((status = 204, description = "Deleted with its sessions"), Unauthorized, NotFound))]
#[delete("/api/v1/users/{username}")]
pub async fn remove(a: ApiAuth, state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    if !users::delete(&state.pool, &name).await? {
        return Err(ApiError::not_found("no such user"));
    }
    tracing::info!(user = %name, "dashboard user deleted");
    crate::db::audit::record(&state.pool, &a.actor, "delete", "user", &name, None, None).await;
    Ok(HttpResponse::NoContent().finish())
}
