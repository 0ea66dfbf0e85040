//! Two server processes on one database: exactly one leads the control loop, and leadership moves to the
//! other within 10 s when the leader is SIGKILLed.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

fn start_server(db: &str, port: u16) -> Child {
    common::start_server(db, port, &[("FLEETPILOT_CONTROL__TICK_SECS", "0.5")])
}

/// 1 when the server at `port` leads, 0 when it follows, None when it does not answer.
async fn leader_gauge(http: &reqwest::Client, port: u16) -> Option<i64> {
    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("fleetpilot_leader ")).and_then(|v| v.trim().parse().ok())
}

async fn wait_for<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_two_servers_leads_and_leadership_moves_when_the_leader_dies() {
    let (_dir, mut pg, db) = common::private_database("fleetpilot-leader-", "leader").await;
    // Migrate once so the two servers do not race each other's first start.
    let pool = fleetpilot::db::connect(&db, 2).await.unwrap();
    fleetpilot::db::migrate(&pool).await.unwrap();
    pool.close().await;

    let ports = [fleetpilot::pg::free_port().unwrap(), fleetpilot::pg::free_port().unwrap()];
    let mut servers: Vec<Child> = ports.iter().map(|p| start_server(&db, *p)).collect();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();

    wait_for(Duration::from_secs(60), "both servers up and one leader", || {
        let http = http.clone();
        async move {
            let a = leader_gauge(&http, ports[0]).await;
            let b = leader_gauge(&http, ports[1]).await;
            matches!((a, b), (Some(x), Some(y)) if x + y == 1)
        }
    })
    .await;
    // It stays exactly one for a while.
    for _ in 0..10 {
        let a = leader_gauge(&http, ports[0]).await.unwrap();
        let b = leader_gauge(&http, ports[1]).await.unwrap();
        assert_eq!(a + b, 1, "exactly one leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = if leader_gauge(&http, ports[0]).await == Some(1) { 0 } else { 1 };
    let follower = 1 - leader;
    servers[leader].kill().unwrap(); // SIGKILL: no clean release of the lock
    servers[leader].wait().unwrap();
    let took = wait_for(Duration::from_secs(10), "the follower to take over", || {
        let http = http.clone();
        async move { leader_gauge(&http, ports[follower]).await == Some(1) }
    })
    .await;
    eprintln!("leadership moved in {took:?}");

    servers[follower].kill().unwrap();
    servers[follower].wait().unwrap();
    tokio::task::spawn_blocking(move || pg.stop()).await.unwrap();
}
