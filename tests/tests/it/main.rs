//! fleetpilot's integration tests: the real server on port 0 against a fresh database in a private
//! PostgreSQL cluster, with fake Kubernetes and PagerDuty servers (real HTTP on 127.0.0.1) that record
//! every request.
#![allow(clippy::unwrap_used)]

mod adversarial;
mod alerting;
mod bad_input;
mod browser;
mod cardinality;
mod commands;
mod crd;
mod dashboard;
mod end_to_end;
mod fakes;
mod grafana;
mod helpers;
mod honesty;
mod install;
mod kube;
mod openapi;
mod opportunities;
mod postgres;
mod remote_write;
mod retention;
mod shadow;
mod store;
mod tls;
mod tokens;
