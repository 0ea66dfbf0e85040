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

/// Registers every route.
pub fn configure(cfg: &mut aw::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics);
    api::configure(cfg);
    web::configure(cfg);
}
