//! Agent enrollment: `POST /api/v1/enrollment-tokens` (operators), `POST /api/v1/enroll` (installers),
//! `GET /api/v1/enrollments`.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{Duration, Utc};
use rand::Rng as _;
use serde::Deserialize;

use crate::auth::ApiAuth;
use crate::db::enroll::{self as store, Refused};
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The URL installers reach this server at.
pub fn public_url(state: &AppState, req: &HttpRequest) -> String {
    match &state.settings.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let c = req.connection_info();
            format!("{}://{}", c.scheme(), c.host())
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default = "default_ttl")]
    ttl_secs: u32,
    #[serde(default = "default_uses")]
    max_uses: u32,
    #[serde(default)]
    note: String,
}

fn default_ttl() -> u32 {
    3600
}

fn default_uses() -> u32 {
    100
}

/// Creates an enrollment token (shown once) and the one-line install command that uses it.
#[post("/api/v1/enrollment-tokens")]
pub async fn create_token(
    _a: ApiAuth,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    let t: NewToken = parse_json(body)?;
    if !(60..=30 * 86_400).contains(&t.ttl_secs) {
        return Err(ApiError::field("ttl_secs", "must be between 60 and 2592000"));
    }
    if !(1..=100_000).contains(&t.max_uses) {
        return Err(ApiError::field("max_uses", "must be between 1 and 100000"));
    }
    if t.note.len() > 200 {
        return Err(ApiError::field("note", "at most 200 characters"));
    }
    let token = random_token("fpe");
    let expires_at = Utc::now() + Duration::seconds(i64::from(t.ttl_secs));
    store::create_token(&state.pool, &token, expires_at, t.max_uses as i32, &t.note).await?;
    let url = public_url(&state, &req);
    Ok(HttpResponse::Created().json(serde_json::json!({
        "token": token,
        "expires_at": expires_at,
        "max_uses": t.max_uses,
        "install_command": format!("curl -fsSL {url}/install.sh | sudo sh -s -- --token {token}"),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Enroll {
    enrollment_token: String,
    node_id: String,
    #[serde(default)]
    hostname: String,
}

/// Reads an unauthenticated route's body, refusing anything above `ingest.small_body_bytes` with 413
/// before buffering it (the app-wide limit is sized for ingest batches, megabytes).
pub async fn read_small_body(state: &AppState, payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let limit = state.settings.ingest.small_body_bytes;
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(ApiError::bad_request(format!("reading the body: {e}"))),
        Err(_) => Err(ApiError {
            status: actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            error: format!("request body larger than {limit} bytes"),
            field: None,
            retry_after_secs: None,
        }),
    }
}

fn valid_node_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Exchanges an enrollment token for a per-node credential (re-enrolling a node rotates it).
#[post("/api/v1/enroll")]
pub async fn enroll(state: web::Data<AppState>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body = read_small_body(&state, payload).await?;
    let e: Enroll = parse_json(&body)?;
    if !valid_node_id(&e.node_id) {
        return Err(ApiError::field("node_id", "must be 1..=128 characters of letters, digits, '.', '-', '_'"));
    }
    let credential = random_token("fpn");
    match store::enroll(&state.pool, &e.enrollment_token, &e.node_id, &credential).await? {
        Ok(()) => {
            tracing::info!(node = %e.node_id, hostname = %e.hostname, "node enrolled");
            Ok(HttpResponse::Ok().json(serde_json::json!({ "node_id": e.node_id, "token": credential })))
        }
        Err(Refused::InvalidToken) => Err(ApiError {
            status: actix_web::http::StatusCode::UNAUTHORIZED,
            error: "enrollment token unknown, expired or used up".into(),
            field: Some("enrollment_token".into()),
            retry_after_secs: None,
        }),
    }
}

/// Enrolled nodes.
#[get("/api/v1/enrollments")]
pub async fn enrollments(_a: ApiAuth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rows = store::enrolled(&state.pool).await?;
    Ok(HttpResponse::Ok()
        .json(rows.into_iter().map(|(n, at)| serde_json::json!({"node_id": n, "enrolled_at": at})).collect::<Vec<_>>()))
}
