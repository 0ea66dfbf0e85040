//! The JSON API under `/api/v1`.

pub mod alerting;
pub mod commands;
pub mod crud;
pub mod doc;
pub mod enroll;
pub mod ingest;
pub mod opportunities;
pub mod paging;
pub mod policies;
pub mod reads;
pub mod responses;
pub mod series;
pub mod tokens;
pub mod users;

use actix_web::web;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes as root;

/// Registers the API routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(tokens::list)
        .service(tokens::create)
        .service(tokens::rotate)
        .service(tokens::revoke)
        .service(tokens::audit)
        .service(commands::poll)
        .service(commands::ack)
        .service(commands::get_one)
        .service(commands::of_node)
        .service(commands::probe)
        .service(commands::probes)
        .service(policies::create)
        .service(policies::list)
        .service(policies::get)
        .service(policies::update)
        .service(policies::delete)
        .service(policies::shadow_report)
        .service(reads::decisions)
        .service(reads::alerts)
        .service(alerting::create_rule)
        .service(alerting::list_rules)
        .service(alerting::get_rule)
        .service(alerting::update_rule)
        .service(alerting::delete_rule)
        .service(alerting::create_silence)
        .service(alerting::list_silences)
        .service(alerting::expire_silence)
        .service(alerting::create_webhook)
        .service(alerting::list_webhooks)
        .service(alerting::delete_webhook)
        .service(alerting::instances)
        .service(alerting::deliveries)
        .service(reads::nodes)
        .service(series::gpu)
        .service(series::deployment)
        .service(series::deployment_metric)
        .service(series::fleet)
        .service(enroll::create_token)
        .service(enroll::enroll)
        .service(enroll::enrollments)
        .service(enroll::list_tokens)
        .service(enroll::revoke_token)
        .service(enroll::revoke_node)
        .service(enroll::reenroll)
        .service(enroll::set_deployments)
        .service(enroll::events)
        .service(users::disable)
        .service(users::remove)
        .service(opportunities::list)
        .service(opportunities::get_one)
        .service(opportunities::dismiss)
        .service(opportunities::anomalies)
        .service(opportunities::idle_capacity)
        .service(opportunities::node_groups);
}

// The document's route table sits beside `configure`, the server's: both list every handler, and the
// document's refinements and the body parser that reads it (`doc`) then need nothing from the handlers.
/// Adds the two bearer schemes.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The API token (`api_token`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "agent",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An enrolled node's credential (or the shared agent token where agent_token_can_write trusts it)",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every route of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "fleetpilot",
        version = "1",
        description = "Observability and autoscaling control plane for GPU model-serving fleets. Bad input is a 400 \
                       with `{error, field}`; a declared path asked with an undeclared method is a 405 with `Allow`."
    ),
    paths(
        ingest::ingest,
        ingest::remote_write,
        commands::poll,
        commands::ack,
        commands::get_one,
        commands::of_node,
        commands::probe,
        commands::probes,
        policies::create,
        policies::list,
        policies::get,
        policies::update,
        policies::delete,
        policies::shadow_report,
        reads::decisions,
        reads::alerts,
        reads::nodes,
        alerting::create_rule,
        alerting::list_rules,
        alerting::get_rule,
        alerting::update_rule,
        alerting::delete_rule,
        alerting::create_silence,
        alerting::list_silences,
        alerting::expire_silence,
        alerting::create_webhook,
        alerting::list_webhooks,
        alerting::delete_webhook,
        alerting::instances,
        alerting::deliveries,
        series::gpu,
        series::deployment,
        series::deployment_metric,
        series::fleet,
        enroll::create_token,
        enroll::enroll,
        enroll::enrollments,
        enroll::list_tokens,
        enroll::revoke_token,
        enroll::revoke_node,
        enroll::reenroll,
        enroll::set_deployments,
        enroll::events,
        users::disable,
        users::remove,
        tokens::list,
        tokens::create,
        tokens::rotate,
        tokens::revoke,
        tokens::audit,
        opportunities::list,
        opportunities::get_one,
        opportunities::dismiss,
        opportunities::anomalies,
        opportunities::idle_capacity,
        opportunities::node_groups,
        root::healthz,
        root::readyz,
        root::metrics,
        root::openapi,
    ),
    modifiers(&Security),
    tags(
        (name = "agents", description = "What agents call: ingest, remote-write, commands"),
        (name = "commands", description = "Commands to agents, as operators see them"),
        (name = "policies", description = "Scaling policies and their decisions"),
        (name = "alerting", description = "Alert rules, incidents, silences, receivers, the outbox"),
        (name = "fleet", description = "Nodes, GPUs and series"),
        (name = "install", description = "Enrollment of nodes"),
        (name = "users", description = "Dashboard users"),
        (name = "tokens", description = "Named API tokens with scopes (read < operate < admin), and the audit log"),
        (name = "opportunities", description = "Optimization opportunities, anomalies, idle capacity"),
        (name = "meta", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;
