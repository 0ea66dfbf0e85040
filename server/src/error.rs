//! The JSON error every route returns: `{"error": "...", "field": "..."}` with the right status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, Serialize, thiserror::Error, utoipa::ToSchema)]
#[schema(as = Error)]
#[error("{status}: {error}")]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub error: String,
    /// The offending field (JSON path), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before retrying (429/503).
    #[serde(skip)]
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    /// 400 naming a field.
    pub fn field(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, error: error.into(), field: Some(field.into()), retry_after_secs: None }
    }
    /// 400 without a single field to blame.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, error: error.into(), field: None, retry_after_secs: None }
    }
    /// 401.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "missing or invalid bearer token".into(),
            field: None,
            retry_after_secs: None,
        }
    }
    /// 403 naming a field.
    pub fn forbidden(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, error: error.into(), field: Some(field.into()), retry_after_secs: None }
    }
    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, error: what.into(), field: None, retry_after_secs: None }
    }
    /// 409.
    pub fn conflict(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self { status: StatusCode::CONFLICT, error: error.into(), field: Some(field.into()), retry_after_secs: None }
    }
    /// 429 with Retry-After.
    pub fn busy(retry_after_secs: u32) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "ingest queue is full; retry later".into(),
            field: None,
            retry_after_secs: Some(retry_after_secs),
        }
    }
    /// 503 with Retry-After: nothing was stored, try again.
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, error: error.into(), field: None, retry_after_secs: Some(1) }
    }
    /// 500; the detail is logged, not returned.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal error (see server log)".into(),
            field: None,
            retry_after_secs: None,
        }
    }
}

impl From<crate::domain::Invalid> for ApiError {
    /// A value the domain refused is the client's mistake: 400 naming the field.
    fn from(e: crate::domain::Invalid) -> Self {
        Self::field(e.field, e.error)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(e)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after_secs {
            r.insert_header(("Retry-After", s.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.insert_header(("WWW-Authenticate", "Bearer"));
        }
        r.json(self)
    }
}

fn contains_nul_escape(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\\u0000").is_some()
}

/// The JSON path of the first string (value or key) that holds a NUL.
pub fn nul_path(v: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('\0') => Some(at),
        Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| nul_path(x, format!("{at}[{i}]"))),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            let here = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            if k.contains('\0') { Some(here) } else { nul_path(x, here) }
        }),
        _ => None,
    }
}

/// Parses a JSON body into `T`, naming the failing field by its path (`gpus[0].util_pct`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // PostgreSQL cannot store NUL in text or jsonb: refused here, naming the field, rather than by the
    // database as a 500. The escape is the only way JSON carries a NUL, so the scan is skipped otherwise.
    if contains_nul_escape(body)
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(field) = nul_path(&v, String::new())
    {
        let field = if field.is_empty() { "body".to_string() } else { field };
        return Err(ApiError::field(field, "must not contain NUL characters"));
    }
    // The common case, a valid body, decodes without path tracking (it costs as much as the decode itself
    // on ingest's large batches); a refused body is decoded again to name the field.
    if let Ok(v) = serde_json::from_slice::<T>(body) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, T>(de).map_err(serde_error)
}

/// The 400 for a body serde refused, naming the field by its path.
pub fn serde_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let msg = e.into_inner().to_string();
    // serde_path_to_error's path ends at an unknown field but stops at the parent of a missing one.
    let missing = msg.strip_prefix("missing field `").and_then(|r| r.split('`').next());
    let field = match missing {
        Some(name) if path == "." => name.to_string(),
        Some(name) => format!("{path}.{name}"),
        None if path == "." => String::new(),
        None => path,
    };
    if field.is_empty() {
        ApiError::bad_request(format!("malformed JSON body: {msg}"))
    } else {
        ApiError::field(field, msg)
    }
}
