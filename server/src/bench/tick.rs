//! `fleetpilot bench tick`: one control-loop tick over N deployments and M GPUs, on one core.
//!
//! The private PostgreSQL gets N agent-group policies (GPU utilisation at 60 %, forecast on, the default
//! behavior) over M GPUs on 4-GPU nodes with the control loop's whole lookback of samples (one reading per
//! bucket per GPU, stored through the real ingest path), each deployment with its own daily-ish shape so
//! decisions differ. The loop then ticks on a single-threaded runtime on its own thread (the control plane's
//! share: one core; PostgreSQL runs in its own processes), first once to warm up (the first tick fits every
//! forecast), then `--ticks` times; the median and the slowest are reported.

use std::time::{Duration, Instant};

use chrono::Utc;
use gpu_agent::protocol::{Batch, GpuSample, NodeInfo, PROTOCOL_VERSION};

use super::quantile;
use crate::actuators::{Actuators, agents::AgentActuator};
use crate::config::ControlSettings;
use crate::control::ControlLoop;
use crate::db;
use crate::domain::policy::{Metric, PolicySpec, Target, TargetKind};
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
    /// Working directory (wiped).
    pub data_dir: std::path::PathBuf,
}

const GPUS_PER_NODE: usize = 4;

/// Runs the benchmark and prints its figures; the last line is machine-readable.
pub async fn run(opts: TickBenchOptions) -> anyhow::Result<f64> {
    anyhow::ensure!(opts.deployments >= 1 && opts.ticks >= 1, "--deployments and --ticks must be at least 1");
    anyhow::ensure!(opts.gpus >= opts.deployments * GPUS_PER_NODE, "--gpus must give each deployment a 4-GPU node");
    let (mut pg, _url, pool) = super::fresh_database(&opts.data_dir, true).await?;
    let settings = ControlSettings::default();
    let bucket = i64::from(settings.bucket_secs);
    let buckets = i64::from(settings.lookback_secs) / bucket;
    let nodes_total = opts.gpus / GPUS_PER_NODE;
    let now = Utc::now();
    let load = Instant::now();

    // Samples through the real write path, one batch per node.
    let pb = indicatif::ProgressBar::new(nodes_total as u64);
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
                    ts_ms,
                    gpu_index: g as u32,
                    uuid: format!("GPU-tick-{n:05}-{g}"),
                    model: "NVIDIA H100 80GB HBM3".into(),
                    util_pct: util,
                    mem_used_bytes: 50_000_000_000,
                    mem_total_bytes: 85_520_809_984,
                    power_w: 300.0 + 3.0 * util,
                    temp_c: 40.0 + 0.4 * util,
                    sm_clock_mhz: 1980,
                    mem_clock_mhz: 2619,
                    throttle_reasons: 0,
                    ecc_dbe_total: 0,
                    xid_last: 0,
                    sm_active: None,
                    tensor_active: None,
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
            db::ingest::store_group(&pool, &refs).await?;
            pb.inc(batches.len() as u64);
            batches.clear();
        }
    }
    pb.finish_and_clear();
    for d in 0..opts.deployments {
        let spec = PolicySpec {
            name: format!("model-{d:04}"),
            target: Target {
                kind: TargetKind::AgentGroup,
                namespace: None,
                name: format!("group-{d:04}"),
                deployment: Some(format!("bench/model-{d:04}")),
            },
            min_replicas: 1,
            max_replicas: 64,
            metric: Some(Metric::GpuUtilization),
            target_value: Some(60.0),
            metrics: Vec::new(),
            slo: None,
            behavior: Default::default(),
            predictive: Default::default(),
            panic: Default::default(),
            scale_to_zero_idle_secs: None,
            tolerance: 0.1,
            cold_start_secs: 120,
            dry_run: false,
            rebatch: None,
            capacity: None,
        };
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
    let control = ControlLoop::new(
        pool.clone(),
        settings,
        Actuators { kube: None, agents: AgentActuator::new(pool.clone()) },
        Metrics::new(),
    );
    let ticks = opts.ticks;
    let deployments = opts.deployments;
    let timings = std::thread::spawn(move || -> anyhow::Result<(f64, Vec<f64>)> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let mut now = Utc::now();
            let start = Instant::now();
            let first = control.tick(now).await?;
            let warm = start.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(first.policies.len() == deployments, "first tick failed: {:?}", first.failures.first());
            let mut v = Vec::with_capacity(ticks);
            for _ in 0..ticks {
                now += chrono::Duration::seconds(5);
                let start = Instant::now();
                let out = control.tick(now).await?;
                v.push(start.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(out.failures.is_empty(), "tick failures: {:?}", out.failures.first());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok((warm, v))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the tick thread panicked"))??;
    let (warm, mut v) = timings;
    let median = quantile(&mut v, 0.5);
    let max = quantile(&mut v, 1.0);
    let _ = pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    println!(
        "first tick (fits every forecast): {warm:.0} ms; {ticks} ticks: median {median:.0} ms, slowest {max:.0} ms"
    );
    println!(
        "deployments={} gpus={} tick_ms={median:.1} tick_max_ms={max:.1} first_tick_ms={warm:.1}",
        opts.deployments,
        nodes_total * GPUS_PER_NODE
    );
    Ok(median)
}
