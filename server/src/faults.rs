//! `fleetpilot eval faults`: the fault-injection benchmark of ../shared/EVAL.md section 1b.
//!
//! A simulated fleet (`gpu_agent::sim::NodeSim`, one per node, all GPUs serving one deployment, sized so the
//! trace's peak loads it to 70 %) replays a trace in a loop on a simulated clock; `gpu_agent::faults` injects
//! a seeded schedule of faults with ground truth. Every sampling instant's batches go through the real ingest
//! endpoint (`POST /api/v1/ingest`, HTTP) of a real server on a private PostgreSQL, then the product's own
//! detection path runs at that simulated instant: the alert engine ([`crate::alerts::AlertEngine::evaluate`])
//! at every sample, and the opportunity refresher with its anomaly sweep and peer outliers
//! ([`crate::opportunities::Refresher::tick`]) every `opportunities.refresh_secs`, both with the product's
//! default settings. The server's own background loop is off (it would run on the wall clock).
//!
//! Simulated time ends a minute before the wall clock at start, so every sample is in the past and passes
//! the ingest time window. Events collected, each with the simulated time it was emitted:
//! - alert instances that fire (every rule except `anomaly-high`, which mirrors the anomaly events counted
//!   below, and `opportunity-value`, a cost notice);
//! - anomaly events (GPU series, deployment series, peer outliers) when they reach `warning` or above;
//! - opportunities of the fault kinds (`throttling`, `straggler`, `drain_node`) when they open.
//!
//! A fault is detected when an event naming its GPU (or its node without a GPU, or its replica) is emitted
//! between the fault's start and its end plus 10 minutes; the delay is from the fault's start. An event
//! naming a GPU or node outside every such window is a false event; false events are counted per GPU-day of
//! fault-free telemetry after the warm-up (the first hour, or a quarter of a shorter run, carries no fault and
//! is not scored: detectors and the opportunity window fill there). Deployment-level events name no GPU and
//! are reported apart.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use gpu_agent::faults::{Fault, FaultInjector, FaultKind, FaultPlan};
use gpu_agent::protocol::{Batch, NodeInfo, PROTOCOL_VERSION};
use gpu_agent::sim::{NodeSim, SimConfig, Trace};
use sqlx::PgPool;

use crate::alerts::{AlertEngine, Receivers, rules};
use crate::bench::quantile;
use crate::config::{Secret, Settings};
use crate::db;
use crate::opportunities::Refresher;
use crate::startup::Application;

/// Grace after a fault's end within which an event still counts as its detection (EVAL.md), ms.
pub const GRACE_MS: i64 = 10 * 60 * 1000;
/// The deployment every simulated GPU serves.
pub const DEPLOYMENT: &str = "bench/llama";
/// Opportunity kinds that report a fault (the others are costs: idle GPUs, batching, consolidation).
pub const FAULT_OPPORTUNITIES: [&str; 3] = ["throttling", "straggler", "drain_node"];
/// Seconds between two bandwidth probes of every GPU (the straggler opportunity's one-click action; the
/// simulator answers it like the agent does).
const PROBE_EVERY_S: i64 = 900;

/// Options of the benchmark.
#[derive(Debug, Clone)]
pub struct FaultBenchOptions {
    /// Seed of the fault schedule and the simulator's noise.
    pub seed: u64,
    /// Simulated nodes.
    pub nodes: u32,
    /// GPUs per node.
    pub gpus_per_node: u32,
    /// Simulated hours.
    pub hours: f64,
    /// Trace replayed in a loop (`timestamp,requests,prompt_tokens,output_tokens`).
    pub trace: PathBuf,
    /// Faults of each kind.
    pub faults_per_kind: usize,
    /// Seconds between two samples of every GPU (simulated).
    pub sample_secs: u32,
    /// Where `faults.csv` and `events.csv` go (none: not written).
    pub out: Option<PathBuf>,
    /// Working directory of the private PostgreSQL (wiped).
    pub data_dir: PathBuf,
    /// Print progress to stderr.
    pub progress: bool,
}

/// An event the detection path emitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Simulated time it was emitted, Unix ms.
    pub at_ms: i64,
    /// `alert`, `anomaly` or `opportunity`.
    pub source: &'static str,
    /// Rule, anomaly series metric (with its source), or opportunity kind.
    pub what: String,
    /// Node named ('' for deployment-level events).
    pub node: String,
    /// GPU named, if any.
    pub gpu: Option<u32>,
    /// Replica named, if any (`<node>-gpu<i>` in the simulated fleet: the replica on that GPU).
    pub replica: Option<String>,
    /// Deployment named ('' when none).
    pub deployment: String,
}

/// One fault and what the product made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultOutcome {
    /// The injected fault.
    pub fault: Fault,
    /// Node name.
    pub node: String,
    /// Its first matching event's index in [`FaultBenchReport::events`], if detected.
    pub first_event: Option<usize>,
    /// Seconds from the fault's start to that event.
    pub delay_s: Option<f64>,
}

/// Figures of one fault kind.
#[derive(Debug, Clone, PartialEq)]
pub struct KindFigures {
    /// Kind.
    pub kind: FaultKind,
    /// Faults injected.
    pub n: usize,
    /// Faults detected.
    pub detected: usize,
    /// Detection delay p50 / p95, seconds (NaN when none detected).
    pub delay_p50_s: f64,
    /// See `delay_p50_s`.
    pub delay_p95_s: f64,
}

impl KindFigures {
    /// Detected / injected (NaN without faults).
    pub fn recall(&self) -> f64 {
        if self.n == 0 { f64::NAN } else { self.detected as f64 / self.n as f64 }
    }
}

/// The benchmark's result.
#[derive(Debug, Clone)]
pub struct FaultBenchReport {
    /// Per fault, in schedule order.
    pub faults: Vec<FaultOutcome>,
    /// Every event collected after the warm-up.
    pub events: Vec<Event>,
    /// Per kind, in [`FaultKind::ALL`] order.
    pub kinds: Vec<KindFigures>,
    /// Detected / injected over all kinds.
    pub recall: f64,
    /// Delay p95 over every detected fault, seconds.
    pub delay_p95_s: f64,
    /// Events naming a GPU or node outside every fault window.
    pub false_events: usize,
    /// Deployment-level events (no GPU or node named).
    pub deployment_events: usize,
    /// GPU-days of fault-free telemetry after the warm-up.
    pub clean_gpu_days: f64,
    /// `false_events / clean_gpu_days`.
    pub false_per_gpu_day: f64,
    /// False events per source/what.
    pub false_by_what: BTreeMap<String, usize>,
}

fn node_name(i: u32) -> String {
    format!("fault-node-{i:02}")
}

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Reference replicas of EVAL.md's standard profile (P = 1000, D = 100) per simulated GPU so that the whole
/// fleet serves the trace's peak step at 70 %.
fn replica_speed(trace: &Trace, gpus: u32) -> f64 {
    let step = trace.step_secs.max(1e-9);
    let peak =
        trace.rows.iter().map(|r| (r.prompt_tokens / 1000.0 + r.output_tokens / 100.0) / step).fold(0.0, f64::max);
    (peak / 0.7 / f64::from(gpus.max(1))).max(1e-3)
}

/// Collects what the detection path emitted at `now_ms` since the previous call.
struct Collector {
    seen_anomalies: HashSet<i64>,
    seen_instances: HashSet<i64>,
    events: Vec<Event>,
}

impl Collector {
    async fn alerts(&mut self, pool: &PgPool, now_ms: i64) -> Result<(), sqlx::Error> {
        let rows = db::alerts::fired_at(pool, ts(now_ms), &[rules::ANOMALY_HIGH, rules::OPPORTUNITY_VALUE]).await?;
        for (id, rule, node, gpu, dep) in rows {
            if self.seen_instances.insert(id) {
                self.events.push(Event {
                    at_ms: now_ms,
                    source: "alert",
                    what: rule,
                    node: node.unwrap_or_default(),
                    gpu: gpu.and_then(|g| g.parse().ok()),
                    replica: None,
                    deployment: dep.unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    async fn sweep(&mut self, pool: &PgPool, now_ms: i64) -> Result<(), sqlx::Error> {
        let rows = db::anomalies::updated_at(pool, ts(now_ms), &["warning", "critical"]).await?;
        for (id, node, dep, target, metric, source) in rows {
            if self.seen_anomalies.insert(id) {
                let gpu =
                    target.strip_prefix("gpu:").and_then(|t| t.rsplit_once(':')).and_then(|(_, g)| g.parse().ok());
                let replica = target.strip_prefix("replica:").map(str::to_string);
                self.events.push(Event {
                    at_ms: now_ms,
                    source: "anomaly",
                    what: format!("{source}:{metric}"),
                    node,
                    gpu,
                    replica,
                    deployment: dep,
                });
            }
        }
        let rows = db::opportunities::opened_at(pool, ts(now_ms), &FAULT_OPPORTUNITIES).await?;
        for (kind, node, gpu, dep) in rows {
            self.events.push(Event {
                at_ms: now_ms,
                source: "opportunity",
                what: kind,
                node: node.unwrap_or_default(),
                gpu: gpu.and_then(|g| u32::try_from(g).ok()),
                replica: None,
                deployment: dep.unwrap_or_default(),
            });
        }
        Ok(())
    }
}

/// Whether `e` names `f`'s GPU, its replica, or its node as a whole, inside its window plus the grace.
fn names(e: &Event, f: &Fault, node: &str) -> bool {
    let place = match (&e.replica, e.gpu) {
        (Some(r), _) => *r == format!("{node}-gpu{}", f.gpu_index),
        (None, Some(g)) => g == f.gpu_index,
        (None, None) => true,
    };
    e.node == node && place && e.at_ms >= f.start_ms && e.at_ms <= f.end_ms + GRACE_MS
}

/// Scores the events against the faults (pure: the figures of EVAL.md section 1b).
pub fn score(
    faults: &[Fault],
    events: Vec<Event>,
    nodes: u32,
    gpus_per_node: u32,
    scored_from_ms: i64,
    end_ms: i64,
) -> FaultBenchReport {
    let outcomes: Vec<FaultOutcome> = faults
        .iter()
        .map(|f| {
            let node = node_name(f.node_index);
            let first = events
                .iter()
                .enumerate()
                .filter(|(_, e)| names(e, f, &node))
                .min_by_key(|(_, e)| e.at_ms)
                .map(|(i, _)| i);
            let delay_s = first.and_then(|i| events.get(i)).map(|e| (e.at_ms - f.start_ms) as f64 / 1000.0);
            FaultOutcome { fault: f.clone(), node, first_event: first, delay_s }
        })
        .collect();
    let kinds: Vec<KindFigures> = FaultKind::ALL
        .iter()
        .map(|&kind| {
            let of: Vec<&FaultOutcome> = outcomes.iter().filter(|o| o.fault.kind == kind).collect();
            let mut delays: Vec<f64> = of.iter().filter_map(|o| o.delay_s).collect();
            KindFigures {
                kind,
                n: of.len(),
                detected: delays.len(),
                delay_p50_s: quantile(&mut delays, 0.5),
                delay_p95_s: quantile(&mut delays, 0.95),
            }
        })
        .collect();
    let mut all_delays: Vec<f64> = outcomes.iter().filter_map(|o| o.delay_s).collect();
    let detected = all_delays.len();
    let mut false_by_what: BTreeMap<String, usize> = BTreeMap::new();
    let mut false_events = 0;
    let mut deployment_events = 0;
    for e in &events {
        if e.node.is_empty() {
            deployment_events += 1;
            continue;
        }
        let explained = faults.iter().any(|f| names(e, f, &node_name(f.node_index)));
        if !explained {
            false_events += 1;
            *false_by_what.entry(format!("{}:{}", e.source, e.what)).or_default() += 1;
        }
    }
    // Fault-free telemetry: every GPU's scored time minus its faults' windows plus the grace.
    let scored_ms = (end_ms - scored_from_ms).max(0) as f64;
    let mut clean_ms = f64::from(nodes) * f64::from(gpus_per_node) * scored_ms;
    for f in faults {
        let from = f.start_ms.max(scored_from_ms);
        let to = (f.end_ms + GRACE_MS).min(end_ms);
        clean_ms -= (to - from).max(0) as f64;
    }
    let clean_gpu_days = clean_ms.max(0.0) / 86_400_000.0;
    FaultBenchReport {
        recall: if faults.is_empty() { f64::NAN } else { detected as f64 / faults.len() as f64 },
        delay_p95_s: quantile(&mut all_delays, 0.95),
        false_per_gpu_day: if clean_gpu_days > 0.0 { false_events as f64 / clean_gpu_days } else { f64::NAN },
        faults: outcomes,
        events,
        kinds,
        false_events,
        deployment_events,
        clean_gpu_days,
        false_by_what,
    }
}

/// Runs the benchmark, prints the figures (last line `recall=… false_per_gpu_day=… delay_p95_s=…` and
/// per-kind keys) and writes the CSVs.
pub async fn run(opts: FaultBenchOptions) -> anyhow::Result<FaultBenchReport> {
    anyhow::ensure!(opts.nodes >= 1 && opts.gpus_per_node >= 1, "--nodes and --gpus-per-node must be at least 1");
    // reqwest is built without a default TLS provider (the server's and the ingest client's); a library
    // caller may not have installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    anyhow::ensure!(opts.hours.is_finite() && opts.hours >= 1.0, "--hours must be at least 1");
    anyhow::ensure!(opts.sample_secs >= 1, "--sample-secs must be at least 1");
    let text = std::fs::read_to_string(&opts.trace).with_context(|| format!("reading {}", opts.trace.display()))?;
    let trace = Trace::parse_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", opts.trace.display()))?;
    let gpus = opts.nodes * opts.gpus_per_node;
    let speed = replica_speed(&trace, gpus);

    // The simulated clock: whole samples, ending a minute before the wall clock.
    let step_ms = i64::from(opts.sample_secs) * 1000;
    let now_ms = Utc::now().timestamp_millis();
    let end_ms = (now_ms - 60_000).div_euclid(60_000) * 60_000;
    let start_ms = end_ms - (opts.hours * 3_600_000.0) as i64 / 60_000 * 60_000;
    let warmup_ms = ((end_ms - start_ms) / 4).min(3_600_000);
    let scored_from_ms = start_ms + warmup_ms;
    // Faults end early enough for their whole grace to be observed.
    let plan = FaultPlan::random(
        opts.seed,
        opts.nodes,
        opts.gpus_per_node,
        scored_from_ms,
        end_ms - GRACE_MS,
        opts.faults_per_kind,
    )?;

    let (mut pg, url, pool) = crate::bench::fresh_database(&opts.data_dir, true).await?;
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        api_token: Secret::new("faults-api"),
        agent_token: Secret::new("faults-agent"),
        // One process simulates every node: the shared token is trusted, as in the demo.
        agent_token_can_write: true,
        database_url: Some(url),
        ..Settings::default()
    };
    // The loop, alerts and refresher run below on the simulated clock, not on the wall clock.
    settings.control.enabled = false;
    // Rollups are not on the detection path; every sample here is "late" for them.
    settings.ingest.rollup_secs = 3600.0;
    settings.validate()?;
    let app = Application::build_with_pool(settings.clone(), pool.clone()).await?;
    let ingest_url = format!("http://127.0.0.1:{}/api/v1/ingest", app.port());
    let public_url = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());
    let result = drive(
        &opts,
        &trace,
        speed,
        &plan,
        &pool,
        &settings,
        &ingest_url,
        &public_url,
        (start_ms, end_ms),
        scored_from_ms,
        step_ms,
    )
    .await;
    let _ = stop.send(true);
    let _ = server.await;
    pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    let report = result?;
    print(&report, &opts);
    if let Some(out) = &opts.out {
        write_csv(out, &report)?;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    opts: &FaultBenchOptions,
    trace: &Trace,
    speed: f64,
    plan: &FaultPlan,
    pool: &PgPool,
    settings: &Settings,
    ingest_url: &str,
    public_url: &str,
    (start_ms, end_ms): (i64, i64),
    scored_from_ms: i64,
    step_ms: i64,
) -> anyhow::Result<FaultBenchReport> {
    let gpus = opts.nodes * opts.gpus_per_node;
    let mut sims: Vec<(String, NodeSim, FaultInjector)> = (0..opts.nodes)
        .map(|i| {
            let cfg = SimConfig {
                node: node_name(i),
                gpus: opts.gpus_per_node,
                node_index: i,
                nodes_total: opts.nodes,
                speedup: 1.0,
                epoch_ms: start_ms,
                // Every GPU serves a replica: no scaling policy runs here, so the fleet stays as it starts.
                initial_replicas: gpus,
                cold_start_secs: 120.0,
                prefill_tps: 1000.0 * speed,
                decode_tps: 100.0 * speed,
                hot_gpu: None,
                deployment: DEPLOYMENT.into(),
                seed: opts.seed,
            };
            (node_name(i), NodeSim::new(cfg, trace.clone()), FaultInjector::new(plan.for_node(i)))
        })
        .collect();
    let alerts = AlertEngine::new(
        pool.clone(),
        settings.alerts.clone(),
        Receivers::default(),
        public_url.to_string(),
        Arc::new(tokio::sync::Notify::new()),
    );
    let refresher = Refresher::new(pool.clone(), settings.opportunities.clone());
    let refresh_ms = ((settings.opportunities.refresh_secs * 1000.0) as i64).max(step_ms);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let mut collector =
        Collector { seen_anomalies: HashSet::new(), seen_instances: HashSet::new(), events: Vec::new() };
    let mut seq = 0u64;
    let mut t = start_ms;
    let mut next_refresh = start_ms + refresh_ms;
    let mut last_hour = -1;
    let started = std::time::Instant::now();
    while t <= end_ms {
        seq += 1;
        let mut posts = Vec::with_capacity(sims.len());
        for (node, sim, inj) in &mut sims {
            let (mut g, mut s) = sim.sample(t);
            inj.apply(t, &mut g, &mut s);
            let mut probes = Vec::new();
            if (t - start_ms) % (PROBE_EVERY_S * 1000) == 0 {
                probes = sim.probe(t);
                inj.apply_probes(t, &mut probes);
            }
            let batch = Batch {
                version: PROTOCOL_VERSION,
                agent_id: node.clone(),
                seq,
                sent_at_ms: t,
                node: NodeInfo {
                    hostname: node.clone(),
                    agent_version: "fault-bench".into(),
                    gpu_source: "simulated".into(),
                    group: None,
                    deployment: Some(DEPLOYMENT.into()),
                },
                gpus: g,
                serving: s,
                command_results: Vec::new(),
                probes,
            };
            let req = http.post(ingest_url).bearer_auth("faults-agent").json(&batch);
            posts.push(async move {
                let r = req.send().await?;
                let status = r.status();
                anyhow::ensure!(
                    status.is_success(),
                    "ingest answered {status}: {}",
                    r.text().await.unwrap_or_default()
                );
                anyhow::Ok(())
            });
        }
        futures_util::future::try_join_all(posts).await?;
        alerts.evaluate(ts(t)).await.context("alert evaluation")?;
        collector.alerts(pool, t).await?;
        if t >= next_refresh {
            refresher.tick(ts(t)).await.context("opportunity refresh and anomaly sweep")?;
            collector.sweep(pool, t).await?;
            next_refresh += refresh_ms;
        }
        let hour = (t - start_ms) / 3_600_000;
        if opts.progress && hour != last_hour {
            last_hour = hour;
            eprintln!(
                "simulated hour {hour} of {:.0}: {} events so far, {:.0} s elapsed",
                opts.hours,
                collector.events.len(),
                started.elapsed().as_secs_f64()
            );
        }
        t += step_ms;
    }
    let events: Vec<Event> = collector.events.into_iter().filter(|e| e.at_ms >= scored_from_ms).collect();
    Ok(score(&plan.faults, events, opts.nodes, opts.gpus_per_node, scored_from_ms, end_ms))
}

fn fmt(x: f64) -> String {
    if x.is_finite() { format!("{x:.3}") } else { "nan".into() }
}

fn print(r: &FaultBenchReport, opts: &FaultBenchOptions) {
    println!(
        "fault benchmark: {} nodes x {} GPUs, {} simulated hours, seed {}, {} faults ({} per kind), trace {}",
        opts.nodes,
        opts.gpus_per_node,
        opts.hours,
        opts.seed,
        r.faults.len(),
        opts.faults_per_kind,
        opts.trace.display()
    );
    println!("{:<20} {:>3} {:>7} {:>12} {:>12}", "kind", "n", "recall", "delay_p50_s", "delay_p95_s");
    for k in &r.kinds {
        println!(
            "{:<20} {:>3} {:>7} {:>12} {:>12}",
            k.kind.name(),
            k.n,
            fmt(k.recall()),
            fmt(k.delay_p50_s),
            fmt(k.delay_p95_s)
        );
    }
    println!(
        "false events on fault-free stretches: {} over {:.2} GPU-days = {} per GPU-day; deployment-level events: {}",
        r.false_events,
        r.clean_gpu_days,
        fmt(r.false_per_gpu_day),
        r.deployment_events
    );
    for (what, n) in &r.false_by_what {
        println!("  false {what}: {n}");
    }
    let mut line = format!(
        "recall={} false_per_gpu_day={} delay_p95_s={}",
        fmt(r.recall),
        fmt(r.false_per_gpu_day),
        fmt(r.delay_p95_s)
    );
    for k in &r.kinds {
        line.push_str(&format!(
            " recall_{}={} delay_p95_{}_s={}",
            k.kind.name(),
            fmt(k.recall()),
            k.kind.name(),
            fmt(k.delay_p95_s)
        ));
    }
    println!("{line}");
}

fn write_csv(out: &std::path::Path, r: &FaultBenchReport) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut f = String::from("kind,node,gpu,replica,start,end,detected,delay_s,event_time,event_source,event_what\n");
    for o in &r.faults {
        let e = o.first_event.and_then(|i| r.events.get(i));
        let _ = writeln!(
            f,
            "{},{},{},{}-gpu{},{},{},{},{},{},{},{}",
            o.fault.kind.name(),
            o.node,
            o.fault.gpu_index,
            o.node,
            o.fault.gpu_index,
            ts(o.fault.start_ms).to_rfc3339(),
            ts(o.fault.end_ms).to_rfc3339(),
            e.is_some(),
            o.delay_s.map(|d| format!("{d:.0}")).unwrap_or_default(),
            e.map(|e| ts(e.at_ms).to_rfc3339()).unwrap_or_default(),
            e.map(|e| e.source).unwrap_or_default(),
            e.map(|e| e.what.as_str()).unwrap_or_default(),
        );
    }
    std::fs::write(out.join("faults.csv"), f)?;
    let mut f = String::from("time,source,what,node,gpu,replica,deployment,fault\n");
    let by_event: HashMap<usize, usize> =
        r.faults.iter().enumerate().filter_map(|(fi, o)| o.first_event.map(|e| (e, fi))).collect();
    for (i, e) in r.events.iter().enumerate() {
        let fault = r
            .faults
            .iter()
            .position(|o| names(e, &o.fault, &o.node))
            .or_else(|| by_event.get(&i).copied())
            .map(|fi| format!("{}#{fi}", r.faults[fi].fault.kind.name()))
            .unwrap_or_default();
        let _ = writeln!(
            f,
            "{},{},{},{},{},{},{},{}",
            ts(e.at_ms).to_rfc3339(),
            e.source,
            e.what,
            e.node,
            e.gpu.map(|g| g.to_string()).unwrap_or_default(),
            e.replica.as_deref().unwrap_or_default(),
            e.deployment,
            fault
        );
    }
    std::fs::write(out.join("events.csv"), f)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind, node: u32, gpu: u32, start_s: i64, end_s: i64) -> Fault {
        Fault { kind, node_index: node, gpu_index: gpu, start_ms: start_s * 1000, end_ms: end_s * 1000 }
    }

    fn event(at_s: i64, node: u32, gpu: Option<u32>) -> Event {
        Event {
            at_ms: at_s * 1000,
            source: "alert",
            what: "x".into(),
            node: node_name(node),
            gpu,
            replica: None,
            deployment: String::new(),
        }
    }

    #[test]
    fn events_on_the_faulted_gpu_within_the_window_and_grace_detect_the_rest_are_false() {
        let faults = vec![
            fault(FaultKind::Thermal, 0, 1, 1000, 2000),
            fault(FaultKind::Dropout, 1, 0, 5000, 6000),
            fault(FaultKind::XidBurst, 1, 3, 8000, 8100),
        ];
        let events = vec![
            event(1030, 0, Some(1)),                               // thermal, 30 s
            event(1500, 0, Some(1)),                               // same fault again: not false
            event(6500, 1, None),                                  // node-level, in the dropout's grace: detects it
            event(1200, 0, Some(2)),                               // another GPU: false
            event(2000 + 601, 0, Some(1)),                         // after the grace: false
            Event { node: String::new(), ..event(3000, 0, None) }, // deployment-level
        ];
        let r = score(&faults, events, 2, 4, 0, 86_400_000);
        assert_eq!(r.faults[0].delay_s, Some(30.0));
        assert_eq!(r.faults[1].delay_s, Some(1500.0));
        assert_eq!(r.faults[2].delay_s, None);
        assert!((r.recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.false_events, 2);
        assert_eq!(r.deployment_events, 1);
        let busy_s = (1000 + 600) + (1000 + 600) + (100 + 600);
        let clean_days = (8.0 * 86_400.0 - busy_s as f64) / 86_400.0;
        assert!((r.clean_gpu_days - clean_days).abs() < 1e-9);
        assert!((r.false_per_gpu_day - 2.0 / clean_days).abs() < 1e-9);
        let thermal = &r.kinds[0];
        assert_eq!((thermal.n, thermal.detected, thermal.delay_p95_s), (1, 1, 30.0));
        assert_eq!(r.kinds.iter().find(|k| k.kind == FaultKind::XidBurst).map(|k| k.recall()), Some(0.0));
    }

    #[test]
    fn the_fleet_is_sized_so_the_peak_runs_at_seventy_percent() {
        let trace = Trace {
            step_secs: 10.0,
            rows: vec![gpu_agent::sim::TraceRow { requests: 1.0, prompt_tokens: 7000.0, output_tokens: 700.0 }],
        };
        // 7 + 7 = 14 replica-seconds per 10 s = 1.4 replicas busy; at 70 % over 2 GPUs: 1 replica each.
        assert!((replica_speed(&trace, 2) - 1.0).abs() < 1e-12);
    }
}
