//! fleetpilot's control plane: ingest -> Postgres -> control loop -> Kubernetes / agent commands, alerts to
//! PagerDuty, and the dashboard, all reading the same tables.

pub mod actuators;
pub mod alerts;
pub mod auth;
pub mod bench;
pub mod config;
pub mod control;
pub mod db;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod error;
pub mod evaluate;
pub mod faults;
pub mod ingest;
pub mod lockout;
pub mod opportunities;
pub mod pg;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tls;
