//! HTTP routes: `api` (JSON), `web` (HTML), and the operational endpoints.

pub mod api;
pub mod web;

use actix_web::{HttpResponse, get, web as aw};

use crate::state::AppState;

/// Liveness: the process serves HTTP.
#[utoipa::path(tag = "meta", operation_id = "healthz",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Readiness: the database answers.
#[utoipa::path(tag = "meta", operation_id = "readyz",
    responses((status = 200, description = "Ready", body = String, content_type = "text/plain"), (status = 503, description = "The database does not answer", body = String, content_type = "text/plain")))]
#[get("/readyz")]
pub async fn readyz(state: aw::Data<AppState>) -> HttpResponse {
    match crate::db::ping(&state.pool).await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(e) => {
            HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("database unavailable: {e}\n"))
        }
    }
}

/// The fleet gauges are read from the store at most this often (whatever the scrape interval).
pub const FLEET_GAUGES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// Prometheus exposition of the server's own metrics, with the fleet gauges read from the store (so every
/// replica reports the same fleet; a store that does not answer leaves the last values, never fails the scrape).
#[utoipa::path(tag = "meta", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: aw::Data<AppState>) -> HttpResponse {
    if state.metrics.fleet_due(FLEET_GAUGES_MAX_AGE) {
        match crate::db::dashboard::fleet_gauges(&state.pool, state.settings.alerts.node_silent_secs).await {
            Ok(r) => state.metrics.record_fleet(&crate::telemetry::FleetReading {
                gpus_reporting: r.tiles.gpus_reporting,
                gpus_idle_allocated: r.tiles.idle_allocated,
                gpus_throttled: r.tiles.throttled,
                gpus_xid: r.tiles.xid,
                nodes_silent: r.tiles.silent_nodes,
                idle_gpu_equivalent: r.idle_gpu_equivalent,
                opportunity_money: r.opportunity_money,
                firing: r.firing,
            }),
            Err(e) => tracing::warn!(error = %e, "fleet gauges not read"),
        }
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3.1 document generated from the API's types (see [`api::doc`]).
#[utoipa::path(tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object, content_type = "application/json")))]
#[get("/api/v1/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(api::doc::document())
}

/// Registers every route.
pub fn configure(cfg: &mut aw::ServiceConfig) {
    // The ingest endpoints first: every request is matched against the routes in order, and the 405 table
    // below holds a pattern per declared path. Both are fixed paths, so nothing more specific can hide
    // behind them, and a wrong method on them still falls through to the 405.
    cfg.service(api::ingest::ingest).service(api::ingest::remote_write);
    api::doc::configure_method_not_allowed(cfg);
    cfg.service(healthz).service(readyz).service(metrics).service(openapi);
    api::configure(cfg);
    web::configure(cfg);
}
