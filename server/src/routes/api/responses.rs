//! The error answers the API's operations share, declared once for the OpenAPI document: a handler lists
//! them after its own answers (`responses((status = 200, ...), BadPath, Unauthorized, NotFound)`). Each is
//! the JSON error body ([`ApiError`], the document's `Error`) with its status and words.

use crate::error::ApiError;

/// 400 for a body.
#[derive(utoipa::IntoResponses)]
#[response(status = 400, description = "Bad input; `field` names the offending field")]
pub struct BadBody(pub ApiError);

/// 400 for a path or query parameter.
#[derive(utoipa::IntoResponses)]
#[response(status = 400, description = "Bad path or query parameter; `field` names it")]
pub struct BadPath(pub ApiError);

/// 401 with `WWW-Authenticate: Bearer`.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 401,
    description = "Missing or wrong bearer token",
    headers(("WWW-Authenticate" = String, description = "Bearer"))
)]
pub struct Unauthorized(pub ApiError);

/// 403 for an agent's credential.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 403,
    description = "The credential may not act for this node or deployment, or the shared agent token may not write (agent_token_can_write off)"
)]
pub struct AgentForbidden(pub ApiError);

/// 404.
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "No such resource")]
pub struct NotFound(pub ApiError);

/// 409 for a name another live resource has.
#[derive(utoipa::IntoResponses)]
#[response(status = 409, description = "The name is taken")]
pub struct NameTaken(pub ApiError);

/// 413.
#[derive(utoipa::IntoResponses)]
#[response(status = 413, description = "Body larger than the server accepts")]
pub struct TooLarge(pub ApiError);

/// 429 while the ingest queue is full.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 429,
    description = "Ingest queue full: retry after Retry-After",
    headers(("Retry-After" = u32, description = "Seconds"))
)]
pub struct QueueFull(pub ApiError);

/// 503 when nothing was stored.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 503,
    description = "Not stored: retry after Retry-After",
    headers(("Retry-After" = u32, description = "Seconds"))
)]
pub struct NotStored(pub ApiError);
