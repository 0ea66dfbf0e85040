//! The agent's main loop: collect (GPUs, serving engines) -> batch -> send -> apply commands -> report.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::commands::{CommandClient, DEFAULT_POLL_WAIT, command_id};
use crate::nvml::NvmlSource;
use crate::protocol::{
    Batch, CommandAction, CommandResult, IncomingCommand, NodeInfo, PROTOCOL_VERSION, ProbeSample, ServingSample,
};
use crate::scrape::{self, EngineTracker};
use crate::sender::{Backoff, Sender, SenderConfig};
use crate::sim::{NodeSim, SimConfig, Trace, TraceError};
use crate::spool::{SpoolConfig, SpoolError};
use crate::triton::{TritonClient, TritonError};

/// Why the agent could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The simulator's trace file could not be read.
    #[error("reading trace {path}: {source}")]
    ReadTrace {
        /// The trace file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The simulator's trace file is not a bucketed trace.
    #[error("trace {path}: {source}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// What is wrong with it.
        source: TraceError,
    },
    /// NVML was asked for (`gpu_source = "nvml"`) and did not initialise.
    #[error("{0}")]
    Nvml(String),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The Triton client could not be built.
    #[error(transparent)]
    Triton(#[from] TritonError),
    /// Only one of `triton_url` and `triton_model` is set.
    #[error("{0}")]
    TritonIncomplete(&'static str),
}

/// Where GPU readings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GpuSourceKind {
    /// NVML if it initialises, else none.
    Auto,
    /// NVML, failing start-up if it is unavailable.
    Nvml,
    /// The simulator.
    Sim,
    /// No GPU telemetry.
    None,
}

/// Simulator settings of the agent.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// GPUs on the node.
    pub gpus: u32,
    /// Trace CSV; a synthetic diurnal load when absent.
    pub trace: Option<PathBuf>,
    /// Trace seconds per wall second.
    pub speedup: f64,
    /// Position of this node in its group.
    pub node_index: u32,
    /// Nodes in the group.
    pub nodes_total: u32,
    /// Group replicas at start.
    pub initial_replicas: u32,
    /// Cold start, trace seconds.
    pub cold_start_secs: f64,
    /// Replica speed relative to the reference replica of ../shared/EVAL.md (1000 prompt + 100 output
    /// tokens/s).
    pub replica_speed: f64,
    /// Shared trace epoch, Unix ms (defaults to the agent's start).
    pub epoch_ms: Option<i64>,
    /// A GPU that runs hot now and then.
    pub hot_gpu: Option<u32>,
}

/// Everything the agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Control-plane base URL.
    pub server_url: String,
    /// Bearer token.
    pub token: String,
    /// Node identity.
    pub agent_id: String,
    /// Host name reported.
    pub hostname: String,
    /// Sampling and upload interval.
    pub interval: Duration,
    /// Agent group.
    pub group: Option<String>,
    /// Deployment served (`namespace/name`).
    pub deployment: Option<String>,
    /// GPU source.
    pub gpu_source: GpuSourceKind,
    /// Simulator settings (used when `gpu_source` is `sim`).
    pub sim: SimSettings,
    /// Serving-engine `/metrics` URLs to scrape.
    pub engine_urls: Vec<String>,
    /// Batches held in memory while the server is unreachable, when no on-disk spool is configured
    /// ([`AgentOptions::spool`]).
    pub max_queued: usize,
    /// Shell command run for `rebatch` on real engines (gets FLEETPILOT_* variables).
    pub rebatch_hook: Option<String>,
}

pub use crate::selfmetrics::AgentStats;

/// Settings beyond [`AgentConfig`] (kept apart so existing struct literals of `AgentConfig` stay valid).
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// The spool; `None` holds up to [`AgentConfig::max_queued`] batches in memory (lost on restart).
    pub spool: Option<SpoolConfig>,
    /// Limit of one upload; defaults to 5 s (the loop waits for it, so it bounds a stall of sampling).
    pub request_timeout: Option<Duration>,
    /// Waits between failed sends; defaults to 1 s doubling up to 30 s, with jitter.
    pub backoff: Option<Backoff>,
    /// Longest wait of one command long poll; defaults to [`DEFAULT_POLL_WAIT`].
    pub long_poll_wait: Option<Duration>,
    /// Take commands only from upload acknowledgements (no long poll): at most one interval late.
    pub no_long_poll: bool,
    /// PEM CA bundle the server's certificate must chain to (only it is trusted); `None`: the platform's roots.
    pub server_ca: Option<std::sync::Arc<Vec<u8>>>,
}

enum GpuSource {
    Nvml(Box<NvmlSource>),
    Sim(Box<NodeSim>),
    None,
}

impl GpuSource {
    fn label(&self) -> &'static str {
        match self {
            GpuSource::Nvml(_) => "nvml",
            GpuSource::Sim(_) => "simulated",
            GpuSource::None => "none",
        }
    }
}

struct EngineScrape {
    url: String,
    tracker: EngineTracker,
    last: Option<Instant>,
}

/// A running agent.
pub struct Agent {
    cfg: AgentConfig,
    source: GpuSource,
    engines: Vec<EngineScrape>,
    sender: Sender,
    http: reqwest::Client,
    seq: u64,
    results: Vec<CommandResult>,
    applied: VecDeque<String>,
    applied_set: HashSet<String>,
    stats: Arc<AgentStats>,
    /// Set by [`Agent::with_triton`]: `rebatch` reloads this Triton model instead of running the hook.
    triton: Option<TritonClient>,
    /// Health-probe results waiting for the next batch.
    probes: Vec<ProbeSample>,
    /// Receipts and results reported outside the upload cycle.
    commands: CommandClient,
    /// Long-poll wait; `None` when commands come with uploads only.
    long_poll: Option<Duration>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Agent {
    /// Sets the agent up with an in-memory spool of `cfg.max_queued` batches.
    pub fn new(cfg: AgentConfig) -> Result<Self, AgentError> {
        Self::with_options(cfg, AgentOptions::default())
    }

    /// Sets the agent up: picks the GPU source (one clear log line when there is no GPU), loads the trace,
    /// opens the spool (indexing batches a previous run left there).
    pub fn with_options(cfg: AgentConfig, opts: AgentOptions) -> Result<Self, AgentError> {
        let source = match cfg.gpu_source {
            GpuSourceKind::Sim => {
                let trace = match &cfg.sim.trace {
                    Some(p) => {
                        let text = std::fs::read_to_string(p)
                            .map_err(|source| AgentError::ReadTrace { path: p.clone(), source })?;
                        Trace::parse_csv(&text).map_err(|source| AgentError::Trace { path: p.clone(), source })?
                    }
                    None => Trace::synthetic(10.0, 360, 42),
                };
                let s = &cfg.sim;
                GpuSource::Sim(Box::new(NodeSim::new(
                    SimConfig {
                        node: cfg.agent_id.clone(),
                        gpus: s.gpus,
                        node_index: s.node_index,
                        nodes_total: s.nodes_total.max(1),
                        speedup: s.speedup,
                        epoch_ms: s.epoch_ms.unwrap_or_else(now_ms),
                        initial_replicas: s.initial_replicas,
                        cold_start_secs: s.cold_start_secs,
                        prefill_tps: 1000.0 * s.replica_speed,
                        decode_tps: 100.0 * s.replica_speed,
                        hot_gpu: s.hot_gpu,
                        deployment: cfg.deployment.clone().unwrap_or_else(|| "default/sim".into()),
                        seed: 42,
                    },
                    trace,
                )))
            }
            GpuSourceKind::Nvml => GpuSource::Nvml(Box::new(NvmlSource::init().map_err(AgentError::Nvml)?)),
            GpuSourceKind::Auto => match NvmlSource::init() {
                Ok(n) => {
                    tracing::info!(gpus = n.count(), driver = %n.driver_version(), "NVML GPU telemetry enabled");
                    GpuSource::Nvml(Box::new(n))
                }
                Err(e) => {
                    tracing::warn!(reason = %e, "no GPU: reporting this node as \"no GPU\"; other collectors keep running");
                    GpuSource::None
                }
            },
            GpuSourceKind::None => GpuSource::None,
        };
        let stats = Arc::new(AgentStats::default());
        let spool = opts.spool.unwrap_or(SpoolConfig { dir: None, max_bytes: u64::MAX, max_batches: cfg.max_queued });
        let sender = Sender::new(
            SenderConfig {
                server_url: cfg.server_url.clone(),
                token: cfg.token.clone(),
                spool,
                request_timeout: opts.request_timeout.unwrap_or(Duration::from_secs(5)),
                backoff: opts.backoff.unwrap_or_default(),
                server_ca: opts.server_ca.clone(),
            },
            stats.clone(),
        )?;
        let engines = cfg
            .engine_urls
            .iter()
            .map(|u| EngineScrape { url: u.clone(), tracker: EngineTracker::new(), last: None })
            .collect();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default();
        let wait = opts.long_poll_wait.unwrap_or(DEFAULT_POLL_WAIT);
        let commands = CommandClient::new(
            &cfg.server_url,
            &cfg.token,
            &cfg.agent_id,
            wait,
            opts.server_ca.as_deref().map(Vec::as_slice),
        );
        Ok(Self {
            // Batches from a previous run may still wait in the spool (or be acknowledged with a later clock):
            // new ones must come after them.
            seq: sender.max_seq(),
            cfg,
            source,
            engines,
            sender,
            http,
            results: Vec::new(),
            applied: VecDeque::new(),
            applied_set: HashSet::new(),
            stats,
            triton: None,
            probes: Vec::new(),
            commands,
            long_poll: (!opts.no_long_poll).then_some(wait),
        })
    }

    /// Makes `rebatch` reload `triton_model` on the Triton at `triton_url` with new dynamic-batching settings
    /// (see [`crate::triton`]) instead of running `rebatch_hook`. Both `None`: no change; one without the
    /// other is an error naming the missing one.
    pub fn with_triton(mut self, triton_url: Option<String>, triton_model: Option<String>) -> Result<Self, AgentError> {
        self.triton = match (triton_url, triton_model) {
            (None, None) => None,
            (Some(url), Some(model)) => {
                let client = TritonClient::new(&url, &model, crate::triton::DEFAULT_LOAD_TIMEOUT)?;
                tracing::info!(url = %url, model = %model, "rebatch reloads the Triton model with new batching");
                Some(client)
            }
            (Some(_), None) => {
                return Err(AgentError::TritonIncomplete("triton_url is set but triton_model is not: both are needed"));
            }
            (None, Some(_)) => {
                return Err(AgentError::TritonIncomplete("triton_model is set but triton_url is not: both are needed"));
            }
        };
        Ok(self)
    }

    /// The agent's counters.
    pub fn stats(&self) -> Arc<AgentStats> {
        self.stats.clone()
    }

    async fn scrape_engines(&mut self, now: i64) -> Vec<ServingSample> {
        let mut out = Vec::new();
        let deployment = self.cfg.deployment.clone().unwrap_or_else(|| "default/unknown".into());
        for e in &mut self.engines {
            let text = match self.http.get(&e.url).send().await.and_then(|r| r.error_for_status()) {
                Ok(r) => match r.text().await {
                    Ok(t) => t,
                    Err(err) => {
                        self.stats.scrape_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(url = %e.url, error = %err, "engine scrape failed");
                        continue;
                    }
                },
                Err(err) => {
                    self.stats.scrape_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %e.url, error = %err, "engine scrape failed");
                    continue;
                }
            };
            let parsed = scrape::parse(&text);
            if !parsed.errors.is_empty() {
                self.stats.scrape_errors.fetch_add(parsed.errors.len() as u64, Ordering::Relaxed);
            }
            let elapsed = e.last.map(|t| t.elapsed().as_secs_f64());
            e.last = Some(Instant::now());
            let Some(elapsed) = elapsed else {
                e.tracker.update(&parsed, 1.0);
                continue;
            };
            if let Some(s) = e.tracker.update(&parsed, elapsed) {
                out.push(s.serving_sample(now, deployment.clone(), replica_name(&self.cfg.agent_id, &e.url)));
            }
        }
        out
    }

    /// Collects one batch.
    async fn collect(&mut self) -> Batch {
        let now = now_ms();
        let (gpus, mut serving) = match &mut self.source {
            GpuSource::Nvml(n) => (n.sample(now, &self.stats.nvml_read_failures), Vec::new()),
            GpuSource::Sim(s) => s.sample(now),
            GpuSource::None => (Vec::new(), Vec::new()),
        };
        serving.extend(self.scrape_engines(now).await);
        self.stats.gpu_samples.fetch_add(gpus.len() as u64, Ordering::Relaxed);
        self.stats.serving_samples.fetch_add(serving.len() as u64, Ordering::Relaxed);
        // Strictly increasing without stored state: milliseconds since the epoch, bumped if two batches share one.
        self.seq = (self.seq + 1).max(now as u64);
        Batch {
            version: PROTOCOL_VERSION,
            agent_id: self.cfg.agent_id.clone(),
            seq: self.seq,
            sent_at_ms: now,
            node: NodeInfo {
                hostname: self.cfg.hostname.clone(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                gpu_source: self.source.label().into(),
                group: self.cfg.group.clone(),
                deployment: self.cfg.deployment.clone(),
            },
            gpus,
            serving,
            command_results: std::mem::take(&mut self.results),
            probes: std::mem::take(&mut self.probes),
        }
    }

    /// Executes commands in order, then reports receipt and results at once (falling back to the next
    /// upload when that fails).
    async fn execute_all(&mut self, commands: Vec<IncomingCommand>) {
        if commands.is_empty() {
            return;
        }
        let received: Vec<String> = commands.iter().map(command_id).collect();
        let mut results = Vec::new();
        for c in commands {
            if let Some(r) = self.execute(c).await {
                results.push(r);
            }
        }
        if results.is_empty() {
            return;
        }
        if let Err(e) = self.commands.ack(received, results.clone()).await {
            tracing::debug!(error = %e, "command results go with the next upload");
            self.results.extend(results);
        }
    }

    /// Executes a command once (a repeated id is not executed again); unknown or malformed commands are
    /// rejected with the reason, nothing applied.
    async fn execute(&mut self, c: IncomingCommand) -> Option<CommandResult> {
        let id = command_id(&c);
        if self.applied_set.contains(&id) {
            return None;
        }
        let outcome = match &c {
            IncomingCommand::Known(c) => self.apply(&c.action).await,
            IncomingCommand::Unknown { rest, .. } => {
                let action = rest.get("action").map_or_else(|| "(no action)".to_string(), |a| a.to_string());
                let mut shown: String = action.chars().take(200).collect();
                if shown.len() < action.len() {
                    shown.push_str("...");
                }
                Err(format!("unknown or invalid command for agent {}: {shown}", env!("CARGO_PKG_VERSION")))
            }
        };
        let (ok, message) = match outcome {
            Ok(m) => {
                self.stats.commands_ok.fetch_add(1, Ordering::Relaxed);
                (true, m)
            }
            Err(m) => {
                self.stats.commands_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%id, reason = %m, "command rejected");
                (false, m)
            }
        };
        self.applied.push_back(id.clone());
        self.applied_set.insert(id.clone());
        while self.applied.len() > 10_000 {
            if let Some(old) = self.applied.pop_front() {
                self.applied_set.remove(&old);
            }
        }
        Some(CommandResult { id, ok, message: truncate(message, 4096) })
    }

    async fn apply(&mut self, a: &CommandAction) -> Result<String, String> {
        match a {
            CommandAction::SetReplicas { group, replicas } => {
                if self.cfg.group.as_deref() != Some(group.as_str()) {
                    return Err(format!("this node is not in agent group {group:?}"));
                }
                match &mut self.source {
                    GpuSource::Sim(s) => {
                        s.set_replicas(*replicas, now_ms());
                        tracing::info!(replicas, "simulated group follows the new replica count");
                        Ok(format!("simulated group now targets {} replicas", s.desired()))
                    }
                    _ => Err("replica counts of real nodes are set through Kubernetes, not the agent".into()),
                }
            }
            CommandAction::Probe {} => {
                let probes = self.probe().await;
                let ok: Vec<f64> = probes.iter().filter_map(|p| p.bandwidth_gb_s).collect();
                let first_error = probes.iter().find_map(|p| p.error.clone());
                self.probes.extend(probes);
                match (ok.is_empty(), first_error) {
                    (true, Some(e)) => Err(e),
                    (true, None) => Err(match &self.source {
                        GpuSource::Sim(_) => "the simulated node has no GPUs to probe".to_string(),
                        _ => crate::cuda::device_count()
                            .err()
                            .unwrap_or_else(|| "CUDA reports no devices to probe".to_string()),
                    }),
                    (false, _) => {
                        let min = ok.iter().copied().fold(f64::INFINITY, f64::min);
                        Ok(format!("probed {} GPUs: lowest bandwidth {min:.0} GB/s", ok.len()))
                    }
                }
            }
            CommandAction::Rebatch { deployment, max_batch_size, max_queue_delay_us } => {
                if self.cfg.deployment.as_deref() != Some(deployment.as_str()) {
                    return Err(format!("deployment {deployment:?} is not served on this node"));
                }
                if !(1..=4096).contains(max_batch_size) || *max_queue_delay_us > 10_000_000 {
                    return Err("max_batch_size must be 1..=4096 and max_queue_delay_us at most 10 s".into());
                }
                match &mut self.source {
                    GpuSource::Sim(s) => {
                        s.set_batching(*max_batch_size, *max_queue_delay_us);
                        Ok(format!("simulated engine batches up to {max_batch_size}, delay {max_queue_delay_us} us"))
                    }
                    // Triton takes batching changes at run time; engines whose batching is fixed at start
                    // (vLLM --max-num-seqs, TGI) need the hook, which restarts them.
                    _ => match (&self.triton, &self.cfg.rebatch_hook) {
                        (Some(t), _) => {
                            t.rebatch(*max_batch_size, *max_queue_delay_us).await.map_err(|e| e.to_string())
                        }
                        (None, Some(hook)) => run_hook(hook, deployment, *max_batch_size, *max_queue_delay_us).await,
                        (None, None) => Err("no rebatch hook configured (--rebatch-hook) and no Triton model \
                                             (--triton-url, --triton-model)"
                            .into()),
                    },
                }
            }
        }
    }

    /// Runs the GPU health probe on every GPU (simulated GPUs answer at once; CUDA takes about a second per
    /// GPU on a blocking thread). Without CUDA: an empty list, and [`crate::cuda::device_count`] says why.
    async fn probe(&mut self) -> Vec<ProbeSample> {
        if let GpuSource::Sim(s) = &mut self.source {
            return s.probe(now_ms());
        }
        probe_samples(tokio::task::spawn_blocking(crate::cuda::log_probe_all).await.unwrap_or_default())
    }

    /// Runs until `shutdown` flips: one collection per interval, delivered (or spooled) at once. Commands
    /// arrive through the long poll as soon as the server records them (or with the next acknowledgement,
    /// at most one interval later); the health probe runs once at start and on command.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Arc<AgentStats> {
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Vec<IncomingCommand>>(16);
        let poller = self.long_poll.map(|_| {
            tokio::spawn(crate::commands::poll_until_stopped(
                self.commands.clone(),
                cmd_tx.clone(),
                self.stats.clone(),
                shutdown.clone(),
            ))
        });
        // The start-up probe of real GPUs takes seconds: it runs beside the loop, which keeps sampling.
        let mut startup_probe = match &mut self.source {
            GpuSource::Sim(s) => {
                self.probes.extend(s.probe(now_ms()));
                None
            }
            _ => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::task::spawn_blocking(move || {
                    let _ = tx.send(crate::cuda::log_probe_all());
                });
                Some(rx)
            }
        };
        let mut ticker = tokio::time::interval(self.cfg.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let b = self.collect().await;
                    // Replay gets at most one interval so sampling keeps its cadence after a long outage.
                    let acks = self.sender.deliver(&b, self.cfg.interval).await;
                    for ack in acks {
                        self.execute_all(ack.commands).await;
                    }
                }
                Some(commands) = cmd_rx.recv() => self.execute_all(commands).await,
                r = async {
                    match &mut startup_probe {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                } => {
                    startup_probe = None;
                    self.probes.extend(probe_samples(r.unwrap_or_default()));
                }
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        drop(cmd_tx);
        if let Some(p) = poller {
            let _ = p.await;
        }
        self.stats
    }
}

fn probe_samples(results: Vec<crate::cuda::ProbeResult>) -> Vec<ProbeSample> {
    let now = now_ms();
    results
        .into_iter()
        .map(|r| ProbeSample {
            ts_ms: now,
            gpu_index: u32::try_from(r.ordinal).unwrap_or(u32::MAX),
            uuid: r.uuid,
            bandwidth_gb_s: r.bandwidth_gb_s,
            error: r.error.map(|e| truncate(e, 1024)),
        })
        .collect()
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max.saturating_sub(3);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn replica_name(agent: &str, url: &str) -> String {
    let host = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or(url);
    format!("{agent}/{host}")
}

async fn run_hook(hook: &str, deployment: &str, batch: u32, delay_us: u64) -> Result<String, String> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(hook)
        .env("FLEETPILOT_DEPLOYMENT", deployment)
        .env("FLEETPILOT_MAX_BATCH_SIZE", batch.to_string())
        .env("FLEETPILOT_MAX_QUEUE_DELAY_US", delay_us.to_string())
        .output()
        .await
        .map_err(|e| format!("rebatch hook could not start: {e}"))?;
    if out.status.success() {
        Ok(format!("rebatch hook applied batch {batch}, delay {delay_us} us"))
    } else {
        Err(format!("rebatch hook failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}
