//! Simulated agents for tests and benchmarks: this crate's delivery tests, the integration tests and
//! `fleetpilot bench commands` all run the real [`Agent`] on the simulator, and start it from here so that a
//! change to [`AgentConfig`] touches one place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use crate::agent::{Agent, AgentConfig, AgentOptions, AgentStats, GpuSourceKind, SimSettings};

/// A simulated node of 2 GPUs serving `ml/llama` with 2 replicas (synthetic load at 10x speed, 120 s cold
/// start), sending to `server_url` with `token` as `agent_id` every `interval`. Set the fields a test is
/// about on the result.
pub fn sim_config(server_url: &str, token: &str, agent_id: &str, interval: Duration) -> AgentConfig {
    AgentConfig {
        server_url: server_url.to_string(),
        token: token.to_string(),
        agent_id: agent_id.to_string(),
        hostname: format!("{agent_id}.test"),
        interval,
        group: None,
        deployment: Some("ml/llama".into()),
        gpu_source: GpuSourceKind::Sim,
        sim: SimSettings {
            gpus: 2,
            trace: None,
            speedup: 10.0,
            node_index: 0,
            nodes_total: 1,
            initial_replicas: 2,
            cold_start_secs: 120.0,
            replica_speed: 1.0,
            epoch_ms: None,
            hot_gpu: None,
        },
        engine_urls: Vec::new(),
        max_queued: 1000,
        rebatch_hook: None,
    }
}

/// An agent running on the current tokio runtime until [`RunningAgent::stop`].
pub struct RunningAgent {
    stop: watch::Sender<bool>,
    handle: JoinHandle<Arc<AgentStats>>,
    /// The running agent's counters.
    pub stats: Arc<AgentStats>,
}

impl RunningAgent {
    /// Builds the agent with default options and starts it.
    pub fn start(cfg: AgentConfig) -> anyhow::Result<Self> {
        Self::start_with(cfg, AgentOptions::default())
    }

    /// Builds the agent with `opts` and starts it.
    pub fn start_with(cfg: AgentConfig, opts: AgentOptions) -> anyhow::Result<Self> {
        let agent = Agent::with_options(cfg, opts)?;
        let stats = agent.stats();
        let (stop, rx) = watch::channel(false);
        Ok(RunningAgent { stop, handle: tokio::spawn(agent.run(rx)), stats })
    }

    /// Tells the agent to stop (as a signal would) and waits for it; its final counters.
    pub async fn stop(self) -> Result<Arc<AgentStats>, JoinError> {
        // A send error means the agent is gone already; its handle says how it ended.
        let _ = self.stop.send(true);
        self.handle.await
    }

    /// Stops every agent at once (as a fleet-wide shutdown would), then waits for each; their final counters.
    pub async fn stop_all(agents: Vec<RunningAgent>) -> Result<Vec<Arc<AgentStats>>, JoinError> {
        for a in &agents {
            let _ = a.stop.send(true);
        }
        let mut out = Vec::with_capacity(agents.len());
        for a in agents {
            out.push(a.handle.await?);
        }
        Ok(out)
    }
}

/// The value of one of [`AgentStats`]' counters.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Checks `done` every `poll` until it holds; panics naming `what` once `limit` has passed (a test's
/// failure, not an error to handle).
pub async fn wait_until(what: &str, limit: Duration, poll: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(poll).await;
    }
}
