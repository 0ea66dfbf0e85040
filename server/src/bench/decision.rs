//! `fleetpilot bench decision`: from a sample arriving at the server to the scale request leaving it.
//!
//! The real server (in this process) with the control loop and a fake Kubernetes API server on 127.0.0.1
//! (it answers the Deployment's `scale` subresource and timestamps every PATCH). Four nodes of two GPUs post
//! one batch a second at 45 % utilisation for a Deployment held at 60 % per replica; then, again and again,
//! all four post a load step (95 %) and the time from the first post leaving the client to the PATCH arriving
//! at the fake API server is one sample. The scale counts are reset between steps. Two phases in the same
//! run: fleetpilot's loop (woken by committed samples, at most every `min_tick_gap_secs`) and the baseline of
//! a periodic loop (`tick_secs` = 5 s, no wake-up: how HPA-style controllers poll). 1-second buckets, so
//! the step is in the latest bucket at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpu_agent::fakes::{Handler, Request, serve};
use gpu_agent::protocol::{Batch, GpuSample, NodeInfo, PROTOCOL_VERSION};

use super::quantile;
use crate::db;
use crate::domain::policy::{
    BehaviorSpec, PolicySpec, PredictiveSpec, RulesSpec, SelectPolicySpec, Target, TargetKind,
};
use crate::startup::Application;
use forecasting::decision::PredictiveMode;

/// Options of the decision benchmark.
#[derive(Debug, Clone)]
pub struct DecisionBenchOptions {
    /// Load steps timed with fleetpilot's loop.
    pub steps: usize,
    /// Load steps timed with the periodic baseline.
    pub baseline_steps: usize,
    /// Working directory (wiped).
    pub data_dir: std::path::PathBuf,
}

/// A fake API server for `deployments/llama/scale` in namespace `bench`.
struct FakeKube {
    url: String,
    replicas: Arc<AtomicU32>,
    patches: Arc<Mutex<Vec<Instant>>>,
}

impl FakeKube {
    async fn start() -> anyhow::Result<Self> {
        let replicas = Arc::new(AtomicU32::new(8));
        let patches = Arc::new(Mutex::new(Vec::new()));
        let (r, p) = (replicas.clone(), patches.clone());
        let handler: Handler = Arc::new(move |req: Request| {
            if !req.path.starts_with("/apis/apps/v1/namespaces/bench/deployments/llama/scale") {
                return Some((404, Vec::new(), b"{}".to_vec()));
            }
            if req.method == "PATCH" {
                p.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now());
                let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
                if let Some(n) = v["spec"]["replicas"].as_u64() {
                    r.store(n as u32, Ordering::SeqCst);
                }
            }
            let n = r.load(Ordering::SeqCst);
            let body = serde_json::json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "llama", "namespace": "bench"},
                "spec": {"replicas": n}, "status": {"replicas": n}
            });
            Some((200, vec![("content-type", "application/json".into())], body.to_string().into_bytes()))
        });
        let addr = serve(handler).await?;
        Ok(Self { url: format!("http://{addr}"), replicas, patches })
    }

    fn patches(&self) -> usize {
        self.patches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn patch_at(&self, i: usize) -> Option<Instant> {
        self.patches.lock().unwrap_or_else(|e| e.into_inner()).get(i).copied()
    }
}

fn batch(node: usize, seq: u64, util: f64) -> Batch {
    let now = chrono::Utc::now().timestamp_millis();
    Batch {
        version: PROTOCOL_VERSION,
        agent_id: format!("dec-node-{node}"),
        seq,
        sent_at_ms: now,
        node: NodeInfo {
            hostname: format!("dec-node-{node}"),
            agent_version: "bench".into(),
            gpu_source: "nvml".into(),
            group: None,
            deployment: Some("bench/llama".into()),
        },
        gpus: (0..2)
            .map(|g| GpuSample {
                mem_used_bytes: Some(50_000_000_000),
                power_w: Some(300.0 + 3.0 * util),
                sm_active: None,
                ..GpuSample::h100(now, g, format!("GPU-dec-{node}-{g}"), util)
            })
            .collect(),
        serving: Vec::new(),
        command_results: Vec::new(),
        probes: Vec::new(),
    }
}

/// Posts one batch per node, concurrently.
async fn post_all(http: &reqwest::Client, url: &str, seq: &mut u64, util: f64) -> anyhow::Result<()> {
    *seq += 1;
    let s = *seq;
    let posts = (0..4).map(|n| {
        let b = batch(n, s, util);
        http.post(url).bearer_auth("bench-agent").json(&b).send()
    });
    for r in futures_util::future::join_all(posts).await {
        let r = r?;
        anyhow::ensure!(r.status().is_success(), "ingest answered {}", r.status());
    }
    Ok(())
}

/// One phase: a server with `min_gap` / `tick` on `url`, `steps` load steps; latencies in ms.
async fn phase(url: &str, kube: &FakeKube, tick_secs: f64, min_gap: f64, steps: usize) -> anyhow::Result<Vec<f64>> {
    let mut settings = super::bench_settings(url.to_string());
    settings.control.bucket_secs = 1;
    settings.control.lookback_secs = 120;
    settings.control.tick_secs = tick_secs;
    settings.control.min_tick_gap_secs = min_gap;
    settings.kube.api_url = Some(kube.url.clone());
    // Each phase's server owns its pool (stopping the server closes it).
    let pool = db::connect(url, 10).await?;
    let app = Application::build_with_pool(settings, pool).await?;
    let ingest = format!("http://127.0.0.1:{}/api/v1/ingest", app.port());
    let stop = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let mut seq = chrono::Utc::now().timestamp_millis() as u64;

    // Steady load first, so the loop is warm and holding.
    for _ in 0..15 {
        post_all(&http, &ingest, &mut seq, 45.0).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let pb = indicatif::ProgressBar::new(steps as u64);
    let mut latencies = Vec::with_capacity(steps);
    for _ in 0..steps {
        kube.replicas.store(8, Ordering::SeqCst);
        // Quiet before the step: no scale request pending from the steady load.
        let mut before = kube.patches();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = kube.patches();
            if now == before {
                break;
            }
            before = now;
            kube.replicas.store(8, Ordering::SeqCst);
        }
        let t0 = Instant::now();
        post_all(&http, &ingest, &mut seq, 95.0).await?;
        let deadline = t0 + Duration::from_secs_f64(tick_secs * 2.0 + 5.0);
        let mut high = t0;
        while kube.patches() == before {
            anyhow::ensure!(Instant::now() < deadline, "no scale request within {:?}", deadline - t0);
            if high.elapsed() >= Duration::from_secs(1) {
                // Load stays high while waiting, as a real step would.
                post_all(&http, &ingest, &mut seq, 95.0).await?;
                high = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let at = kube.patch_at(before).unwrap_or_else(Instant::now);
        latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0);
        pb.inc(1);
        // Back to the steady load; the next step starts at another phase of the loop's cycle.
        for _ in 0..2 {
            kube.replicas.store(8, Ordering::SeqCst);
            post_all(&http, &ingest, &mut seq, 45.0).await?;
            tokio::time::sleep(Duration::from_millis(700 + (seq % 600))).await;
        }
    }
    pb.finish_and_clear();
    let _ = stop.send(true);
    server.await??;
    Ok(latencies)
}

/// Runs both phases and prints the figures; the last line is `key=value` pairs.
pub async fn run(opts: DecisionBenchOptions) -> anyhow::Result<(f64, f64)> {
    anyhow::ensure!(opts.steps >= 1 && opts.baseline_steps >= 1, "--steps and --baseline-steps must be at least 1");
    let (mut pg, url, pool) = super::fresh_database(&opts.data_dir, true).await?;
    let kube = FakeKube::start().await?;
    let target = Target {
        kind: TargetKind::Deployment,
        namespace: Some("bench".into()),
        name: "llama".into(),
        deployment: None,
    };
    let spec = PolicySpec {
        // The reactive path is what a load step exercises; scale-down is disabled so that nothing but the steps
        // moves the (reset) replica count.
        behavior: BehaviorSpec {
            scale_up: None,
            scale_down: Some(RulesSpec {
                stabilization_window_seconds: None,
                select_policy: Some(SelectPolicySpec::Disabled),
                policies: None,
            }),
        },
        predictive: PredictiveSpec { mode: PredictiveMode::Off, ..PredictiveSpec::default() },
        ..super::utilization_policy("llama".into(), target)
    };
    db::policies::create(&pool, &spec).await?;
    let mut fp = phase(&url, &kube, 5.0, 0.5, opts.steps).await?;
    let mut base = phase(&url, &kube, 5.0, 5.0, opts.baseline_steps).await?;
    let _ = pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    let show = |name: &str, v: &mut Vec<f64>| {
        println!(
            "{name:<34} steps={} p50_ms={:.0} p90_ms={:.0} p99_ms={:.0} max_ms={:.0}",
            v.len(),
            quantile(v, 0.5),
            quantile(v, 0.9),
            quantile(v, 0.99),
            quantile(v, 1.0)
        );
    };
    show("fleetpilot (woken by samples)", &mut fp);
    show("baseline (periodic 5 s loop)", &mut base);
    let (p50, p99) = (quantile(&mut fp, 0.5), quantile(&mut fp, 0.99));
    let (b50, b99) = (quantile(&mut base, 0.5), quantile(&mut base, 0.99));
    println!(
        "steps={} p50_ms={p50:.1} p99_ms={p99:.1} baseline_p50_ms={b50:.1} baseline_p99_ms={b99:.1} ratio_p99={:.3}",
        fp.len(),
        p99 / b99
    );
    Ok((p50, p99))
}
