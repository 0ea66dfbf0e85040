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

/// Registers the API routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(ingest::ingest)
        .service(tokens::list)
        .service(tokens::create)
        .service(tokens::rotate)
        .service(tokens::revoke)
        .service(tokens::audit)
        .service(ingest::remote_write)
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
