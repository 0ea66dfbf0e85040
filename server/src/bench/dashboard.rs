//! `fleetpilot bench dashboard`: every dashboard page at fleet scale. Loads 10,000 GPUs (1,250 nodes x 8) and
//! 500 deployments with policies, forecasts, decisions, rebatch commands, alerts, silences, opportunities,
//! anomaly events, idle-capacity refreshes, rollups and raw samples,
//! starts the server, then has `--clients` concurrent clients request each page in turn (each client waits
//! `--think-ms` between its requests, as a person or a live-refreshing page does) and prints p50/p99 per
//! page. The last line is `overview_p99_ms=… max_page_p99_ms=… slowest_page=…`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{self, users::Role};
use crate::startup::Application;

use super::quantile;

/// Options of the dashboard benchmark.
#[derive(Debug, Clone)]
pub struct DashboardBenchOptions {
    /// GPUs in the fleet (8 per node).
    pub gpus: usize,
    /// Deployments, each with a policy.
    pub deployments: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client per page.
    pub requests: usize,
    /// Pause of each client between its requests, milliseconds.
    pub think_ms: u64,
    /// Only the pages of these names; every page when empty.
    pub pages: Vec<String>,
    /// Working directory (wiped).
    pub data_dir: std::path::PathBuf,
}

use crate::db::seed::{GPUS_PER_NODE, HOT_NODES};

/// Runs the benchmark and prints its figures; the last line is machine-readable.
pub async fn run(opts: DashboardBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.gpus >= GPUS_PER_NODE * HOT_NODES, "--gpus must be at least {}", GPUS_PER_NODE * HOT_NODES);
    anyhow::ensure!(
        opts.deployments >= 1 && opts.clients >= 1 && opts.requests >= 1,
        "--deployments, --clients, --requests >= 1"
    );
    let (mut pg, url, pool) = super::fresh_database(&opts.data_dir, true).await?;
    let nodes = opts.gpus.div_ceil(GPUS_PER_NODE);
    println!("loading {} GPUs on {nodes} nodes, {} deployments", nodes * GPUS_PER_NODE, opts.deployments);
    let t = Instant::now();
    db::seed::dashboard_fleet(&pool, nodes, opts.deployments).await?;
    println!("loaded in {:.1} s", t.elapsed().as_secs_f64());

    let mut settings = super::bench_settings(url.clone());
    settings.control.enabled = false;
    settings.alerts.node_silent_secs = 3600;
    let app_pool = db::connect(&url, 20).await?;
    let app = Application::build_with_pool(settings, app_pool).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());

    // A logged-in operator: the session lookup is part of every request, as for a person.
    let hash = tokio::task::spawn_blocking(|| db::users::hash_password("bench-password"))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    db::users::upsert(&pool, "bench", &hash, Role::Operator).await?;
    let sid = "bench-session-id";
    db::users::create_session(&pool, sid, "bench", "csrf", chrono::Utc::now() + chrono::Duration::hours(2)).await?;
    // The first seeded policy by name: the one whose pages are measured.
    let policy = db::policies::list(&pool).await?.into_iter().min_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let policy = policy.ok_or_else(|| anyhow::anyhow!("no seeded policy"))?.id;

    let mut pages: Vec<(&str, Vec<String>)> = vec![
        ("overview", vec!["/".into()]),
        ("overview_page", vec!["/?page=7".into()]),
        ("deployments", vec!["/deployments".into()]),
        (
            "deployment",
            // Every hot deployment (8 replicas at 1 s) and a spread of the others.
            (0..HOT_NODES.min(opts.deployments))
                .chain((HOT_NODES..opts.deployments).step_by(7))
                .map(|i| format!("/deployments/ns{}/dep-{i}", i % 50))
                .collect(),
        ),
        ("node", (0..HOT_NODES).map(|n| format!("/nodes/node-{n:05}")).collect()),
        ("gpu", (0..HOT_NODES * 8).map(|i| format!("/nodes/node-{:05}/gpus/{}", i / 8, i % 8)).collect()),
        (
            "decisions",
            vec!["/decisions".into(), "/decisions?outcome=changed&page=3".into(), "/decisions?target=dep-42".into()],
        ),
        (
            "alerts",
            vec![
                "/alerts".into(),
                "/alerts?state=all&sort=oldest&page=5".into(),
                "/alerts?state=all&severity=critical&q=node-001&sort=severity".into(),
                "/alerts?state=all&node=node-00042".into(),
                "/alerts?rule=node-silent&page=2".into(),
            ],
        ),
        (
            "opportunities",
            vec![
                "/opportunities".into(),
                "/opportunities?status=all&sort=gpu_hours&page=4".into(),
                "/opportunities?kind=idle_gpu&sort=first_seen".into(),
                "/opportunities?deployment=ns7/dep-7".into(),
            ],
        ),
        ("opportunity", (1..=2000).step_by(97).map(|i| format!("/opportunities/{i}")).collect()),
        (
            "anomalies",
            vec![
                "/anomalies".into(),
                "/anomalies?state=all&range=7d&page=6".into(),
                "/anomalies?state=open&sort=score".into(),
                "/anomalies?node=node-00003&range=7d".into(),
                "/anomalies?deployment=ns2/dep-2&range=3d".into(),
            ],
        ),
        ("policies", vec!["/policies".into()]),
        ("policy_edit", vec![format!("/policies/{policy}")]),
        ("policy_preview", vec![format!("/policies/{policy}/preview")]),
        ("install", vec!["/install".into()]),
    ];
    if !opts.pages.is_empty() {
        pages.retain(|(name, _)| opts.pages.iter().any(|p| p == name));
        anyhow::ensure!(!pages.is_empty(), "--pages names no page");
    }
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(opts.clients).timeout(Duration::from_secs(60)).build()?;
    // Warm up: connections, caches, and one check that every page answers 200.
    for (name, urls) in &pages {
        for u in urls.iter().take(3) {
            let r = http.get(format!("{base}{u}")).header("cookie", format!("fp_session={sid}")).send().await?;
            anyhow::ensure!(r.status() == 200, "{name} {u}: HTTP {}", r.status());
            let _ = r.bytes().await?;
        }
    }
    println!(
        "{} clients, {} requests each per page, {} ms between a client's requests",
        opts.clients, opts.requests, opts.think_ms
    );
    let mut overview_p99 = 0.0_f64;
    let (mut max_other, mut slowest) = (0.0_f64, "");
    for (name, urls) in &pages {
        let urls = Arc::new(urls.clone());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..opts.clients {
            let (http, base, urls) = (http.clone(), base.clone(), urls.clone());
            let (n, think, clients) = (opts.requests, Duration::from_millis(opts.think_ms), opts.clients);
            tasks.push(tokio::spawn(async move {
                // Spread the clients' start over one think time, as independent people would be.
                tokio::time::sleep(think.mul_f64(c as f64 / clients as f64)).await;
                let mut lat = Vec::with_capacity(n);
                for i in 0..n {
                    let u = &urls[(c * 31 + i) % urls.len()];
                    let t = Instant::now();
                    let r = http.get(format!("{base}{u}")).header("cookie", format!("fp_session={sid}")).send().await?;
                    let ok = r.status() == 200;
                    let _ = r.bytes().await?;
                    anyhow::ensure!(ok, "{u}: not 200");
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    tokio::time::sleep(think).await;
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let secs = started.elapsed().as_secs_f64();
        let count = all.len();
        let (p50, p99) = (quantile(&mut all, 0.5), quantile(&mut all, 0.99));
        println!(
            "{name:<16} requests={count:<5} p50_ms={p50:<7.1} p99_ms={p99:<7.1} req_per_s={:.0}",
            count as f64 / secs
        );
        if *name == "overview" {
            overview_p99 = p99;
        }
        if p99 > max_other {
            (max_other, slowest) = (p99, name);
        }
    }
    let _ = stop.send(true);
    server.await??;
    pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    println!("overview_p99_ms={overview_p99:.1} max_page_p99_ms={max_other:.1} slowest_page={slowest}");
    Ok(())
}
