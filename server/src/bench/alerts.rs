//! `fleetpilot bench alerts`: time to page. From a batch that makes a GPU hot being posted to
//! `/api/v1/ingest` to a PagerDuty-like receiver (in this process, real HTTP on 127.0.0.1, always 202) getting
//! the incident's trigger. The real server runs in this process against the private PostgreSQL; every alert
//! is its own group (one node each), posted at random moments.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use super::quantile;
use crate::config::Secret;
use crate::startup::Application;

/// Options of the alert benchmark.
#[derive(Debug, Clone)]
pub struct AlertBenchOptions {
    /// Alerts (hot GPUs, one node each).
    pub alerts: usize,
    /// Mean gap between two alerts, milliseconds.
    pub gap_ms: u64,
    /// `alerts.eval_secs` of the server.
    pub eval_secs: f64,
    /// `alerts.group_wait_secs` of the server.
    pub group_wait_secs: f64,
    /// Working directory for the private cluster (wiped first).
    pub data_dir: std::path::PathBuf,
}

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Starts the receiver; returns its URL, the first-trigger instant per group, and its handle.
fn receiver() -> anyhow::Result<(String, Arrivals, actix_web::dev::ServerHandle)> {
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    let server = HttpServer::new(move || {
        let a = a.clone();
        App::new().default_service(web::to(move |body: web::Bytes| {
            let a = a.clone();
            async move {
                let now = Instant::now();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if v["event_action"] == "trigger"
                    && let Some(g) = v["payload"]["group"].as_str()
                    && let Ok(mut m) = a.lock()
                {
                    m.entry(g.to_string()).or_insert(now);
                }
                HttpResponse::Accepted().json(json!({"status": "success"}))
            }
        }))
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")?;
    let port = server.addrs().first().map(|a| a.port()).unwrap_or(0);
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((format!("http://127.0.0.1:{port}"), arrivals, handle))
}

fn batch(node: &str, seq: u64, temp_c: f64) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    json!({
        "version": 1, "agent_id": node, "seq": seq, "sent_at_ms": now,
        "node": {"hostname": node, "agent_version": "bench", "gpu_source": "simulated"},
        "gpus": [{"ts_ms": now, "gpu_index": 0, "uuid": format!("GPU-{node}"), "util_pct": 50.0,
                  "mem_used_bytes": 1, "mem_total_bytes": 2, "power_w": 300.0, "temp_c": temp_c, "sm_clock_mhz": 1980}]
    })
}

/// Runs the benchmark and prints the figures; the last line is `key=value` pairs.
pub async fn run(opts: AlertBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.alerts >= 1, "--alerts must be at least 1");
    let (mut pg, url, pool) = super::fresh_database(&opts.data_dir, true).await?;
    let (pd_url, arrivals, pd) = receiver()?;
    let mut settings = super::bench_settings(url);
    settings.pagerduty.url = format!("{pd_url}/v2/enqueue");
    settings.pagerduty.routing_key = Secret::new("bench-routing-key");
    settings.alerts.eval_secs = opts.eval_secs;
    settings.alerts.group_wait_secs = opts.group_wait_secs;
    settings.alerts.node_silent_secs = 3600;
    settings.validate()?;
    let (eval, wait) = (settings.alerts.eval_secs, settings.alerts.group_wait_secs);
    let app = Application::build_with_pool(settings, pool.clone()).await?;
    let server = format!("http://127.0.0.1:{}/api/v1/ingest", app.port());
    let stop_server = app.shutdown_handle();
    let running = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let post = |body: Value| {
        let req = http.post(&server).bearer_auth("bench-agent").json(&body);
        async move {
            let r = req.send().await?;
            anyhow::ensure!(r.status().is_success(), "ingest answered {}", r.status());
            anyhow::Ok(())
        }
    };

    // Every node reports cool first, so the alert batches are the only change.
    for i in 0..opts.alerts {
        post(batch(&format!("bench-alert-{i:05}"), 1, 50.0)).await?;
    }
    tokio::time::sleep(Duration::from_secs_f64(eval * 2.0 + 0.5)).await;

    let mut rng = StdRng::seed_from_u64(11);
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let pb = indicatif::ProgressBar::new(opts.alerts as u64);
    for i in 0..opts.alerts {
        let node = format!("bench-alert-{i:05}");
        let t0 = Instant::now();
        post(batch(&node, 2, 95.0)).await?;
        sent.insert(format!("node/{node}"), t0);
        pb.inc(1);
        let gap = rng.random_range(0.0..2.0 * opts.gap_ms as f64);
        tokio::time::sleep(Duration::from_secs_f64(gap / 1000.0)).await;
    }
    pb.finish_and_clear();

    let deadline = Instant::now() + Duration::from_secs(60);
    let latencies: Vec<f64> = loop {
        let got = arrivals.lock().map(|m| m.clone()).unwrap_or_default();
        if sent.keys().all(|g| got.contains_key(g)) {
            break sent
                .iter()
                .filter_map(|(g, t0)| got.get(g).map(|t| t.duration_since(*t0).as_secs_f64() * 1e3))
                .collect();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} alerts never reached the receiver",
            sent.keys().filter(|g| !got.contains_key(*g)).count(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let extra = arrivals.lock().map(|m| m.len()).unwrap_or(0).saturating_sub(sent.len());
    let _ = stop_server.send(true);
    running.await??;
    pd.stop(true).await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;

    let mut v = latencies;
    println!("time to page: ingest POST sent -> receiver got the trigger (eval_secs={eval}, group_wait_secs={wait})");
    for q in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0] {
        println!("  p{:<5} {:>8.1} ms", q * 100.0, quantile(&mut v, q));
    }
    anyhow::ensure!(extra == 0, "{extra} unexpected groups paged");
    println!(
        "alerts={} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} max_ms={:.1} eval_secs={eval} group_wait_secs={wait}",
        v.len(),
        quantile(&mut v, 0.5),
        quantile(&mut v, 0.9),
        quantile(&mut v, 0.99),
        quantile(&mut v, 1.0)
    );
    Ok(())
}
