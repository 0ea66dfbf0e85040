//! Bearer-token extractors: `ApiAuth` for the REST API, `AgentAuth` for ingest.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::state::AppState;

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

fn check(req: &HttpRequest, pick: fn(&AppState) -> &str) -> Result<(), ApiError> {
    let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal("app state missing"))?;
    let expected = pick(state).as_bytes();
    match bearer(req) {
        Some(given) if !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected)) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Proof that the request carried the API token.
pub struct ApiAuth;

impl FromRequest for ApiAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, |s| s.settings.api_token.expose()).map(|()| ApiAuth))
    }
}

/// Proof that the request carried the agent token.
pub struct AgentAuth;

impl FromRequest for AgentAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req, |s| s.settings.agent_token.expose()).map(|()| AgentAuth))
    }
}
