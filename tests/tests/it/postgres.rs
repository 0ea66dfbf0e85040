//! The private PostgreSQL cluster: starts as an unprivileged user on a Unix socket only (no TCP, never
//! trust on TCP), keeps its data across restarts, and stops cleanly.

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
    // No TCP listener: a local user cannot log in as superuser over 127.0.0.1 (issue #15).
    assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err(), "no TCP listener");
    let listen: String = sqlx::query_scalar("SHOW listen_addresses").fetch_one(&mut c).await.unwrap();
    assert_eq!(listen, "");
    let hba: Vec<String> =
        sqlx::query_scalar("SELECT type || ' ' || auth_method FROM pg_hba_file_rules").fetch_all(&mut c).await.unwrap();
    assert!(!hba.iter().any(|r| r.starts_with("host") && r.ends_with("trust")), "{hba:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(pg.data_dir()).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "only the cluster's user reaches its socket");
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
