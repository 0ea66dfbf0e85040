//! HTTP routes: `api` (JSON), `web` (HTML), and the operational endpoints.

pub mod api;
pub mod web;

use actix_web::{HttpResponse, get, web as aw};

use crate::state::AppState;

/// Liveness: the process serves HTTP.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Readiness: the database answers.
#[get("/readyz")]
pub async fn readyz(state: aw::Data<AppState>) -> HttpResponse {
    match sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool).await {
        Ok(_) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(e) => {
            HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("database unavailable: {e}\n"))
        }
    }
}

/// Prometheus exposition of the server's own metrics.
#[get("/metrics")]
pub async fn metrics(state: aw::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// The OpenAPI 3.1 document of the API (`docs/openapi.json`, compiled in).
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// `GET /api/v1/openapi.json`.
#[get("/api/v1/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI)
}

/// Registers every route.
pub fn configure(cfg: &mut aw::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics).service(openapi);
    api::configure(cfg);
    web::configure(cfg);
}
