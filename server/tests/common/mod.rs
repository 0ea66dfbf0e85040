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

/// Waits until the server on `port` answers `/readyz` (60 s at most).
pub async fn wait_ready(port: u16) {
    let http = reqwest::Client::new();
    let start = std::time::Instant::now();
    while !http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "server did not come up");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A private PostgreSQL cluster in a fresh temporary directory (named after `prefix`) with an empty
/// database `name`; the directory, the cluster and the database's URL. Stop the cluster before the
/// directory goes.
pub async fn private_database(
    prefix: &str,
    name: &str,
) -> (tempfile::TempDir, fleetpilot::pg::PrivatePostgres, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(std::env::temp_dir()).unwrap();
    let opts = fleetpilot::pg::PgOptions { data_dir: dir.path().join("pg"), ephemeral: true };
    let pg = tokio::task::spawn_blocking(move || fleetpilot::pg::PrivatePostgres::start(&opts)).await.unwrap().unwrap();
    fleetpilot::pg::ensure_database(&pg.url_for("postgres"), name).await.unwrap();
    let db = pg.url_for(name);
    (dir, pg, db)
}
