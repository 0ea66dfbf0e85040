//! `fleetpilot-agent`: the per-node agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gpu_agent::agent::{Agent, GpuSourceKind};
use gpu_agent::config::Settings;
use serde::Serialize;

/// fleetpilot's GPU node agent: samples GPUs (NVML) and serving engines (/metrics), streams them to the
/// control plane, spools them on disk while it is unreachable, and applies its commands.
#[derive(Parser, Debug)]
#[command(name = "fleetpilot-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the agent until interrupted (SIGINT or SIGTERM).
    Run(Box<RunArgs>),
    /// Measure the agent itself.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// CPU and peak memory of `run` with 8 simulated GPUs and two engine scrapes against in-process fakes
    /// at a 1 s interval. Ends with one line `cpu_percent=... peak_rss_mb=...`.
    Overhead {
        /// Measured seconds (after a 3 s warm-up).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Directory holding vllm.txt and triton.txt (the engine fixtures).
        #[arg(long)]
        fixtures: Option<PathBuf>,
    },
}

/// Settings come from built-in defaults, then the `--config` TOML file, then `FLEETPILOT_*` variables, then
/// flags. Each flag below is also a key of the file: its name with underscores (`--spool-dir` is
/// `spool_dir`, `--server` is `server_url`, `--engine-url` is `engine_urls`, a list); unknown keys are
/// rejected.
#[derive(clap::Args, Debug, Serialize)]
#[command(after_help = "The upload interval is also how long a command from the control plane can take to \
arrive (it rides on the acknowledgement of the next upload): keep --interval-secs at 1 or below.")]
struct RunArgs {
    /// TOML config file (keys as the flags, with underscores).
    #[arg(long, env = "FLEETPILOT_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Control-plane base URL (required). [file: server_url]
    #[arg(long = "server", env = "FLEETPILOT_SERVER_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    server_url: Option<String>,
    /// PEM CA bundle the control plane's certificate must chain to (only it is trusted). [file: server_ca_file]
    #[arg(long = "server-ca", env = "FLEETPILOT_SERVER_CA_FILE")]
    #[serde(rename = "server_ca_file", skip_serializing_if = "Option::is_none")]
    server_ca_file: Option<PathBuf>,
    /// Agent bearer token (required; prefer the variable or a file readable only by the agent). [file: token]
    #[arg(long, env = "FLEETPILOT_AGENT_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// Node identity [default: the host name].
    #[arg(long, env = "FLEETPILOT_AGENT_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    /// Seconds between samples and uploads, 0.05..=3600 [default: 1]. Commands arrive within one interval.
    #[arg(long, env = "FLEETPILOT_INTERVAL_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_secs: Option<f64>,
    /// Agent group (target of agent-group scaling policies).
    #[arg(long, env = "FLEETPILOT_GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// Deployment served on this node, `namespace/name`.
    #[arg(long, env = "FLEETPILOT_DEPLOYMENT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<String>,
    /// GPU telemetry source [default: auto].
    #[arg(long, env = "FLEETPILOT_GPU_SOURCE", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_source: Option<GpuSourceKind>,
    /// Serving-engine /metrics URL to scrape (repeatable; comma-separated in the variable). [file: engine_urls]
    #[arg(long = "engine-url", env = "FLEETPILOT_ENGINE_URLS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    engine_urls: Vec<String>,
    /// Shell command that applies a rebatch to a real engine (gets FLEETPILOT_DEPLOYMENT,
    /// FLEETPILOT_MAX_BATCH_SIZE, FLEETPILOT_MAX_QUEUE_DELAY_US).
    #[arg(long, env = "FLEETPILOT_REBATCH_HOOK")]
    #[serde(skip_serializing_if = "Option::is_none")]
    rebatch_hook: Option<String>,
    /// Triton base URL (http://host:8000, model control mode "explicit"); with --triton-model, rebatch
    /// reloads that model with the new batching through Triton's model-repository API.
    #[arg(long, env = "FLEETPILOT_TRITON_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    triton_url: Option<String>,
    /// Triton model that rebatch changes.
    #[arg(long, env = "FLEETPILOT_TRITON_MODEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    triton_model: Option<String>,
    /// Directory of the on-disk spool that holds batches while the control plane is unavailable and across
    /// restarts (e.g. /var/lib/fleetpilot-agent/spool). Unset or empty: batches wait in memory only.
    #[arg(long, env = "FLEETPILOT_SPOOL_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    spool_dir: Option<PathBuf>,
    /// Spool size limit in bytes; when full, the oldest batches are dropped (and counted) [default: 268435456].
    #[arg(long, env = "FLEETPILOT_SPOOL_MAX_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    spool_max_bytes: Option<u64>,
    /// Batches held in memory when there is no spool directory [default: 3600].
    #[arg(long, env = "FLEETPILOT_MAX_QUEUED")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_queued: Option<usize>,
    /// Address of the agent's own Prometheus /metrics; 0 disables it [default: 127.0.0.1:9478].
    #[arg(long, env = "FLEETPILOT_METRICS_ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_addr: Option<String>,
    /// Limit of one upload in seconds, connection included [default: 5].
    #[arg(long, env = "FLEETPILOT_REQUEST_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    request_timeout_secs: Option<f64>,
    /// Longest wait of one command long poll in seconds; commands arrive within milliseconds of their creation.
    /// 0 takes commands only from upload replies (within one interval) [default: 25].
    #[arg(long, env = "FLEETPILOT_COMMAND_POLL_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    command_poll_secs: Option<u64>,
    /// Simulator: GPUs on this node [default: 4].
    #[arg(long, env = "FLEETPILOT_SIM_GPUS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_gpus: Option<u32>,
    /// Simulator: trace CSV (`timestamp,requests,prompt_tokens,output_tokens`); synthetic load if absent.
    #[arg(long, env = "FLEETPILOT_SIM_TRACE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_trace: Option<PathBuf>,
    /// Simulator: trace seconds per wall second [default: 10].
    #[arg(long, env = "FLEETPILOT_SIM_SPEEDUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_speedup: Option<f64>,
    /// Simulator: this node's index in its group [default: 0].
    #[arg(long, env = "FLEETPILOT_SIM_NODE_INDEX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_node_index: Option<u32>,
    /// Simulator: nodes in the group [default: 1].
    #[arg(long = "sim-nodes", env = "FLEETPILOT_SIM_NODES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_nodes: Option<u32>,
    /// Simulator: group replicas at start [default: 2].
    #[arg(long, env = "FLEETPILOT_SIM_REPLICAS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_replicas: Option<u32>,
    /// Simulator: replica cold start, trace seconds [default: 120].
    #[arg(long, env = "FLEETPILOT_SIM_COLD_START_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_cold_start_secs: Option<f64>,
    /// Simulator: replica speed as a multiple of the reference replica (1000 prompt + 100 output tokens/s)
    /// [default: 1].
    #[arg(long, env = "FLEETPILOT_SIM_REPLICA_SPEED")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_replica_speed: Option<f64>,
    /// Simulator: shared trace start, Unix ms [default: now].
    #[arg(long, env = "FLEETPILOT_SIM_EPOCH_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_epoch_ms: Option<i64>,
}

// One worker thread is plenty for one collection per second, and each extra thread costs memory.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    match Cli::parse().command {
        Cmd::Run(a) => run(*a).await,
        Cmd::Bench(BenchCmd::Overhead { seconds, fixtures }) => bench_overhead(seconds, fixtures).await,
    }
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let hostname =
        std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    let settings = Settings::load(a.config.as_deref(), &a)?;
    let resolved = settings.resolve(&hostname)?;
    match gpu_agent::cuda::inventory() {
        Ok(devs) => tracing::info!(devices = ?devs, "CUDA inventory"),
        Err(e) => tracing::info!("{e}"),
    }
    if resolved.options.spool.is_none() {
        tracing::info!(
            "no spool_dir: batches wait in memory while the control plane is unavailable and are lost on restart"
        );
    }
    let agent = Agent::with_options(resolved.agent, resolved.options)?
        .with_triton(resolved.triton_url, resolved.triton_model)?;
    let stats = agent.stats();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let metrics = match resolved.metrics_addr {
        Some(addr) => {
            let (bound, handle) = gpu_agent::selfmetrics::serve(addr, Arc::clone(&stats), rx.clone())
                .await
                .with_context(|| format!("metrics_addr (--metrics-addr): cannot listen on {addr}"))?;
            tracing::info!(addr = %bound, "serving the agent's own metrics on /metrics");
            Some(handle)
        }
        None => None,
    };
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        let _ = tx.send(true);
    });
    let stats = agent.run(rx).await;
    if let Some(h) = metrics {
        let _ = h.await;
    }
    tracing::info!(
        batches = stats.batches_acked.load(Ordering::Relaxed),
        spooled = stats.spool_batches.load(Ordering::Relaxed),
        "agent stopped"
    );
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends a pod it stops).
async fn wait_for_stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

async fn bench_overhead(seconds: u64, fixtures: Option<PathBuf>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let fixtures = fixtures.unwrap_or_else(gpu_agent::bench::default_fixtures);
    println!("fleetpilot-agent bench overhead: 8 simulated GPUs, 2 engine scrapes (vLLM, Triton), 1 s interval,");
    println!("on-disk spool, against an in-process fake control plane; measuring {seconds} s after a 3 s warm-up...");
    let r = gpu_agent::bench::overhead(&exe, seconds, &fixtures).await?;
    println!("  window:        {:.1} s", r.window_secs);
    println!("  agent CPU:     {:.3} % of one core (target < 1 %)", r.cpu_percent);
    println!("  agent peak RSS: {:.1} MiB (target < 20 MB)", r.peak_rss_mb);
    println!("  delivered:     {} batches, {} samples; {} engine scrapes served", r.batches, r.samples, r.scrapes);
    println!("cpu_percent={:.3} peak_rss_mb={:.1}", r.cpu_percent, r.peak_rss_mb);
    Ok(())
}
