//! `fleetpilot-agent`: the per-node agent.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gpu_agent::agent::{Agent, AgentConfig, GpuSourceKind, SimSettings};

/// fleetpilot's GPU node agent: samples GPUs (NVML) and serving engines (/metrics), streams them to the
/// control plane, and applies its commands.
#[derive(Parser, Debug)]
#[command(name = "fleetpilot-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the agent until interrupted.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Control-plane base URL.
    #[arg(long, env = "FLEETPILOT_SERVER_URL")]
    server: String,
    /// Agent bearer token.
    #[arg(long, env = "FLEETPILOT_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Node identity (defaults to the host name).
    #[arg(long, env = "FLEETPILOT_AGENT_ID")]
    agent_id: Option<String>,
    /// Seconds between samples.
    #[arg(long, env = "FLEETPILOT_INTERVAL_SECS", default_value_t = 1.0)]
    interval_secs: f64,
    /// Agent group (target of agent-group scaling policies).
    #[arg(long, env = "FLEETPILOT_GROUP")]
    group: Option<String>,
    /// Deployment served on this node, `namespace/name`.
    #[arg(long, env = "FLEETPILOT_DEPLOYMENT")]
    deployment: Option<String>,
    /// GPU telemetry source.
    #[arg(long, env = "FLEETPILOT_GPU_SOURCE", value_enum, default_value_t = GpuSourceKind::Auto)]
    gpu_source: GpuSourceKind,
    /// Serving-engine /metrics URL to scrape (repeatable).
    #[arg(long = "engine-url", env = "FLEETPILOT_ENGINE_URLS", value_delimiter = ',')]
    engine_urls: Vec<String>,
    /// Batches held in memory while the control plane is unreachable.
    #[arg(long, default_value_t = 3600)]
    max_queued: usize,
    /// Shell command that applies a rebatch to a real engine (gets FLEETPILOT_DEPLOYMENT,
    /// FLEETPILOT_MAX_BATCH_SIZE, FLEETPILOT_MAX_QUEUE_DELAY_US).
    #[arg(long, env = "FLEETPILOT_REBATCH_HOOK")]
    rebatch_hook: Option<String>,
    /// Simulator: GPUs on this node.
    #[arg(long, default_value_t = 4)]
    sim_gpus: u32,
    /// Simulator: trace CSV (`timestamp,requests,prompt_tokens,output_tokens`); synthetic load if absent.
    #[arg(long)]
    sim_trace: Option<PathBuf>,
    /// Simulator: trace seconds per wall second.
    #[arg(long, default_value_t = 10.0)]
    sim_speedup: f64,
    /// Simulator: this node's index in its group.
    #[arg(long, default_value_t = 0)]
    sim_node_index: u32,
    /// Simulator: nodes in the group.
    #[arg(long, default_value_t = 1)]
    sim_nodes: u32,
    /// Simulator: group replicas at start.
    #[arg(long, default_value_t = 2)]
    sim_replicas: u32,
    /// Simulator: replica cold start, trace seconds.
    #[arg(long, default_value_t = 120.0)]
    sim_cold_start_secs: f64,
    /// Simulator: shared trace start, Unix ms (defaults to now).
    #[arg(long)]
    sim_epoch_ms: Option<i64>,
}

fn validate(a: &RunArgs) -> anyhow::Result<()> {
    if !(a.server.starts_with("http://") || a.server.starts_with("https://")) {
        anyhow::bail!("--server must be an http:// or https:// URL, got {:?}", a.server);
    }
    if !(a.interval_secs.is_finite() && (0.05..=3600.0).contains(&a.interval_secs)) {
        anyhow::bail!("--interval-secs must be between 0.05 and 3600");
    }
    if let Some(d) = &a.deployment {
        gpu_agent::protocol::parse_deployment(d).map_err(|e| anyhow::anyhow!("--deployment: {e}"))?;
    }
    if a.sim_nodes == 0 || a.sim_node_index >= a.sim_nodes {
        anyhow::bail!("--sim-node-index must be below --sim-nodes (which must be at least 1)");
    }
    if !(a.sim_speedup.is_finite() && a.sim_speedup > 0.0) {
        anyhow::bail!("--sim-speedup must be positive");
    }
    for u in &a.engine_urls {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            anyhow::bail!("--engine-url must be an http(s) URL, got {u:?}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    let Cmd::Run(a) = Cli::parse().command;
    validate(&a)?;
    let hostname =
        std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    let cfg = AgentConfig {
        server_url: a.server,
        token: a.token,
        agent_id: a.agent_id.unwrap_or_else(|| hostname.clone()),
        hostname,
        interval: Duration::from_secs_f64(a.interval_secs),
        group: a.group,
        deployment: a.deployment,
        gpu_source: a.gpu_source,
        sim: SimSettings {
            gpus: a.sim_gpus,
            trace: a.sim_trace,
            speedup: a.sim_speedup,
            node_index: a.sim_node_index,
            nodes_total: a.sim_nodes,
            initial_replicas: a.sim_replicas,
            cold_start_secs: a.sim_cold_start_secs,
            epoch_ms: a.sim_epoch_ms,
            hot_gpu: None,
        },
        engine_urls: a.engine_urls,
        max_queued: a.max_queued,
        rebatch_hook: a.rebatch_hook,
    };
    match gpu_agent::cuda::inventory() {
        Ok(devs) => tracing::info!(devices = ?devs, "CUDA inventory"),
        Err(e) => tracing::info!("{e}"),
    }
    let agent = Agent::new(cfg)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    let stats = agent.run(rx).await;
    tracing::info!(batches = stats.batches_acked.load(std::sync::atomic::Ordering::Relaxed), "agent stopped");
    Ok(())
}
