//! Shared by the tests that run the real `fleetpilot` binary as separate processes.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};

/// `fleetpilot serve` on `127.0.0.1:port` against `db`, with fixed test tokens and extra `env`.
pub fn start_server(db: &str, port: u16, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fleetpilot"))
        .arg("serve")
        .env("DATABASE_URL", db)
        .env("FLEETPILOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEETPILOT_API_TOKEN", "api")
        .env("FLEETPILOT_AGENT_TOKEN", "agent")
        // These tests play their agents with the shared token (real nodes enroll instead).
        .env("FLEETPILOT_AGENT_TOKEN_CAN_WRITE", "true")
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}
