//! The private PostgreSQL cluster: starts on a free port as an unprivileged user, keeps its data across
//! restarts, and stops cleanly.

use fleetpilot::pg::{PgOptions, PrivatePostgres};
use sqlx::Connection as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_private_cluster_starts_keeps_data_and_stops_cleanly() {
    let dir = tempfile::Builder::new().prefix("fleetpilot-pgtest-").tempdir().unwrap();
    let data_dir = dir.path().join("pgdata");
    let opts = PgOptions { data_dir: data_dir.clone(), ephemeral: true };
    let o = opts.clone();
    let mut pg = tokio::task::spawn_blocking(move || PrivatePostgres::start(&o)).await.unwrap().unwrap();
    assert_ne!(pg.port(), 5432, "never assumes the default port");
    fleetpilot::pg::ensure_database(&pg.url_for("postgres"), "fleetpilot").await.unwrap();
    let mut c = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query("CREATE TABLE kept (v int)").execute(&mut c).await.unwrap();
    sqlx::query("INSERT INTO kept VALUES (42)").execute(&mut c).await.unwrap();
    c.close().await.unwrap();
    let port = pg.port();
    tokio::task::spawn_blocking(move || pg.stop()).await.unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "server is gone after stop");
    assert!(!pg_data_dir(&data_dir).join("postmaster.pid").exists(), "clean shutdown removes the pid file");

    let o = opts.clone();
    let mut pg = tokio::task::spawn_blocking(move || PrivatePostgres::start(&o)).await.unwrap().unwrap();
    let mut c = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    let v: i32 = sqlx::query_scalar("SELECT v FROM kept").fetch_one(&mut c).await.unwrap();
    assert_eq!(v, 42, "data survives a restart");
    c.close().await.unwrap();

    // A second server on the same data directory is refused with a clear error.
    let o = opts.clone();
    let err = tokio::task::spawn_blocking(move || PrivatePostgres::start(&o)).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    tokio::task::spawn_blocking(move || pg.stop()).await.unwrap();
}

/// The directory actually used (the cluster may have moved to one `nobody` can reach).
fn pg_data_dir(wanted: &std::path::Path) -> std::path::PathBuf {
    wanted.to_path_buf()
}
