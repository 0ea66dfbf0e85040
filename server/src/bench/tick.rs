//! `fleetpilot bench tick`: one control-loop tick over N deployments and M GPUs, on one core.
//!
//! The private PostgreSQL gets N policies (GPU utilisation at 60 %, forecast on, the default behavior), the
//! first `--kube-deployments` of them targeting Deployments on a fake Kubernetes API server (one pod per
//! node serving it), the rest agent groups, over M GPUs on 4-GPU nodes with the control loop's whole lookback of samples (one reading per
//! bucket per GPU, stored through the real ingest path), each deployment with its own daily-ish shape so
//! decisions differ. The loop then ticks on a single-threaded runtime on its own thread (the control plane's
//! share: one core; PostgreSQL runs in its own processes), first once to warm up (the first tick fits every
//! forecast), then `--ticks` times; the median and the slowest are reported, with the Kubernetes API
//! requests per timed tick (by verb): reads come from the Deployment watch, so they stay near zero however
//! many policies target Deployments.

use std::time::{Duration, Instant};

use chrono::Utc;
use gpu_agent::protocol::{Batch, GpuSample, NodeInfo, PROTOCOL_VERSION};

use super::fake_kube::FakeCluster;
use super::quantile;
use crate::actuators::{Actuators, kube::KubeScaler};
use crate::config::{ControlSettings, KubeSettings};
use crate::control::ControlLoop;
use crate::db;
use crate::domain::policy::{Target, TargetKind};
use crate::telemetry::Metrics;

/// Options of the tick benchmark.
#[derive(Debug, Clone)]
pub struct TickBenchOptions {
    /// Deployments (one policy each).
    pub deployments: usize,
    /// GPUs in the fleet, spread evenly over the deployments.
    pub gpus: usize,
    /// Timed ticks.
    pub ticks: usize,
    /// Policies (the first ones) that target Kubernetes Deployments on the fake API server.
    pub kube_deployments: usize,
    /// Working directory (wiped).
    pub data_dir: std::path::PathBuf,
}

const GPUS_PER_NODE: usize = 4;

/// Runs the benchmark and prints its figures; the last line is machine-readable.
pub async fn run(opts: TickBenchOptions) -> anyhow::Result<f64> {
    anyhow::ensure!(opts.deployments >= 1 && opts.ticks >= 1, "--deployments and --ticks must be at least 1");
    anyhow::ensure!(opts.gpus >= opts.deployments * GPUS_PER_NODE, "--gpus must give each deployment a 4-GPU node");
    anyhow::ensure!(opts.kube_deployments <= opts.deployments, "--kube-deployments must be at most --deployments");
    let (mut pg, _url, pool) = super::fresh_database(&opts.data_dir, true).await?;
    let settings = ControlSettings::default();
    let bucket = i64::from(settings.bucket_secs);
    let buckets = i64::from(settings.lookback_secs) / bucket;
    let nodes_total = opts.gpus / GPUS_PER_NODE;
    let now = Utc::now();
    let load = Instant::now();

    // Samples through the real write path, one batch per node.
    let pb = indicatif::ProgressBar::new(nodes_total as u64);
    let keys = db::dimensions::Dimensions::default();
    let mut batches = Vec::new();
    for n in 0..nodes_total {
        let dep = n % opts.deployments;
        let phase = dep as f64 / opts.deployments as f64 * std::f64::consts::TAU;
        let mut gpus = Vec::with_capacity(GPUS_PER_NODE * buckets as usize);
        for b in 0..buckets {
            let ts_ms = (now - chrono::Duration::seconds((buckets - b) * bucket)).timestamp_millis();
            let wave = (b as f64 / buckets as f64 * std::f64::consts::TAU + phase).sin();
            for g in 0..GPUS_PER_NODE {
                let util = (55.0 + 25.0 * wave + ((n * 7 + g * 3 + b as usize) % 9) as f64).clamp(0.0, 100.0);
                gpus.push(GpuSample {
                    mem_used_bytes: Some(50_000_000_000),
                    power_w: Some(300.0 + 3.0 * util),
                    temp_c: Some(40.0 + 0.4 * util),
                    sm_active: None,
                    ..GpuSample::h100(ts_ms, g as u32, format!("GPU-tick-{n:05}-{g}"), util)
                });
            }
        }
        batches.push(Batch {
            version: PROTOCOL_VERSION,
            agent_id: format!("tick-node-{n:05}"),
            seq: 1,
            sent_at_ms: now.timestamp_millis(),
            node: NodeInfo {
                hostname: format!("tick-node-{n:05}"),
                agent_version: "bench".into(),
                gpu_source: "nvml".into(),
                group: Some(format!("group-{dep:04}")),
                deployment: Some(format!("bench/model-{dep:04}")),
            },
            gpus,
            serving: Vec::new(),
            command_results: Vec::new(),
            probes: Vec::new(),
        });
        if batches.len() == 50 || n + 1 == nodes_total {
            let refs: Vec<&Batch> = batches.iter().collect();
            db::ingest::store_group(&pool, &keys, &refs).await?;
            pb.inc(batches.len() as u64);
            batches.clear();
        }
    }
    pb.finish_and_clear();
    // The Deployments, as many pods as nodes serve each, in namespace `bench`.
    let cluster = FakeCluster::start()?;
    for d in 0..opts.kube_deployments {
        let name = format!("model-{d:04}");
        let nodes: Vec<usize> = (0..nodes_total).filter(|n| n % opts.deployments == d).collect();
        cluster.add_deployment("bench", &name, nodes.len().max(1) as u32, &[("app", &name)]);
        for (i, n) in nodes.iter().enumerate() {
            let ip = format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256);
            cluster.add_pod(
                "bench",
                &format!("{name}-{i}"),
                &name,
                &[("app", &name)],
                &ip,
                &format!("tick-node-{n:05}"),
            );
        }
    }
    for d in 0..opts.deployments {
        let target = if d < opts.kube_deployments {
            Target {
                kind: TargetKind::Deployment,
                namespace: Some("bench".into()),
                name: format!("model-{d:04}"),
                deployment: None,
            }
        } else {
            Target {
                kind: TargetKind::AgentGroup,
                namespace: None,
                name: format!("group-{d:04}"),
                deployment: Some(format!("bench/model-{d:04}")),
            }
        };
        let spec = super::utilization_policy(format!("model-{d:04}"), target);
        db::policies::create(&pool, &spec).await?;
    }
    let rows = nodes_total as i64 * GPUS_PER_NODE as i64 * buckets;
    println!(
        "loaded {} deployments, {} GPUs on {nodes_total} nodes, {rows} samples ({} s of history) in {:.1} s",
        opts.deployments,
        nodes_total * GPUS_PER_NODE,
        settings.lookback_secs,
        load.elapsed().as_secs_f64()
    );

    // The loop on one core.
    let metrics = Metrics::new();
    let kube_settings = KubeSettings { api_url: Some(cluster.url.clone()), ..KubeSettings::default() };
    let kube = if opts.kube_deployments > 0 {
        KubeScaler::from_settings(&kube_settings, metrics.clone()).await?
    } else {
        None
    };
    let control = ControlLoop::new(pool.clone(), settings, Actuators::new(kube, pool.clone()), metrics.clone());
    let ticks = opts.ticks;
    let deployments = opts.deployments;
    let m = metrics.clone();
    let timings = std::thread::spawn(move || -> anyhow::Result<(f64, Vec<f64>, KubeCalls)> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            // Ticks act only within a leadership term, as in `serve`.
            let _lock =
                control.take_leadership().await.ok_or_else(|| anyhow::anyhow!("could not take the leader lock"))?;
            let mut now = Utc::now();
            let start = Instant::now();
            let first = control.tick(now).await?;
            let warm = start.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(first.policies.len() == deployments, "first tick failed: {:?}", first.failures.first());
            // The watches list and settle between ticks as they would in a live loop.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = KubeCalls::read(&m);
            let mut v = Vec::with_capacity(ticks);
            for _ in 0..ticks {
                now += chrono::Duration::seconds(5);
                let start = Instant::now();
                let out = control.tick(now).await?;
                v.push(start.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(out.failures.is_empty(), "tick failures: {:?}", out.failures.first());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let calls = KubeCalls::read(&m).since(&before);
            Ok((warm, v, calls))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the tick thread panicked"))??;
    let (warm, mut v, calls) = timings;
    cluster.stop().await;
    let median = quantile(&mut v, 0.5);
    let max = quantile(&mut v, 1.0);
    let _ = pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    println!(
        "first tick (fits every forecast): {warm:.0} ms; {ticks} ticks: median {median:.0} ms, slowest {max:.0} ms"
    );
    let per_tick = calls.total() as f64 / ticks as f64;
    println!(
        "Kubernetes API, {} policies on Deployments: {per_tick:.2} requests per tick ({}) over {ticks} ticks",
        opts.kube_deployments,
        calls.describe()
    );
    println!(
        "deployments={} gpus={} tick_ms={median:.1} tick_max_ms={max:.1} first_tick_ms={warm:.1} kube_deployments={} kube_calls_per_tick={per_tick:.2}",
        opts.deployments,
        nodes_total * GPUS_PER_NODE,
        opts.kube_deployments
    );
    Ok(median)
}

/// Kubernetes API requests by verb, from `fleetpilot_kube_requests_total`.
#[derive(Debug, Clone, Default)]
struct KubeCalls(std::collections::BTreeMap<String, u64>);

impl KubeCalls {
    fn read(m: &Metrics) -> Self {
        let mut by = std::collections::BTreeMap::new();
        for verb in ["get", "list", "watch", "patch", "update", "create", "delete", "other"] {
            let n = m.kube_requests.get_metric_with_label_values(&[verb]).map(|c| c.get()).unwrap_or(0);
            by.insert(verb.to_string(), n);
        }
        Self(by)
    }

    fn since(&self, before: &Self) -> Self {
        Self(self.0.iter().map(|(k, v)| (k.clone(), v.saturating_sub(before.0.get(k).copied().unwrap_or(0)))).collect())
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self.0.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    }
}
