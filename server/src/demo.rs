//! `fleetpilot demo`: a private Postgres, the control plane, and simulated GPU agents replaying a real
//! trace, with a scaling policy on the simulated fleet so decisions visibly change the load.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use gpu_agent::agent::{Agent, AgentConfig, GpuSourceKind, SimSettings};
use rand::Rng as _;

use crate::config::{Secret, Settings};
use crate::db;
use crate::domain::policy::{
    BehaviorSpec, CapacitySpec, PolicySpec, RateKindSpec, RatePolicySpec, RebatchSpec, RulesSpec, Target, TargetKind,
};
use crate::pg::{PgOptions, PrivatePostgres};
use crate::startup::Application;

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Dashboard address.
    pub listen: String,
    /// Simulated nodes.
    pub agents: u32,
    /// GPUs per node.
    pub gpus: u32,
    /// Trace replayed.
    pub trace: PathBuf,
    /// Trace seconds per wall second.
    pub speedup: f64,
    /// Working directory.
    pub data_dir: PathBuf,
}

const DEMO_DB: &str = "fleetpilot_demo";
const GROUP: &str = "demo";
const DEPLOYMENT: &str = "demo/llama";

fn token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

/// How the demo fleet is sized against its trace, and the idle capacity the backtest implies for it.
///
/// The fleet is provisioned the way EVAL.md's `static-peak` reference is: its GPUs together cover the
/// trace's peak at 70 % (each simulated GPU is `replica_speed` reference replicas of the standard profile).
/// fleetpilot then scales replicas with demand, and the GPUs it leaves without a replica sit idle, exactly
/// what the backtest's static-peak versus fleetpilot GPU-hours say a static fleet wastes. The opportunities
/// page's idle capacity should match [`FleetSizing::implied_idle_gpu_equivalent`].
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSizing {
    /// GPUs in the demo fleet.
    pub gpus: u32,
    /// `static-peak` replicas of the standard profile for the trace.
    pub static_peak_replicas: u32,
    /// Reference replicas per simulated GPU (`static_peak_replicas / gpus`).
    pub replica_speed: f64,
    /// Backtest GPU-hours of `static-peak` (standard profile).
    pub static_peak_gpu_hours: f64,
    /// Backtest GPU-hours of fleetpilot's policy.
    pub fleetpilot_gpu_hours: f64,
    /// `1 - fleetpilot / static-peak`: the share of a static-peak fleet that fleetpilot leaves idle.
    pub implied_idle_share: f64,
    /// GPUs serving at the start: the backtest's warm initial fleet (sized for the first cold-start period).
    pub initial_replicas: u32,
    /// Trace length, seconds.
    pub trace_secs: f64,
}

impl FleetSizing {
    /// GPUs of the demo fleet idle on average, as the backtest implies.
    pub fn implied_idle_gpu_equivalent(&self) -> f64 {
        f64::from(self.gpus) * self.implied_idle_share
    }
}

/// Sizes a fleet of `gpus` GPUs for the trace at `path` (a bucketed `timestamp,requests,prompt_tokens,
/// output_tokens` CSV) and runs the backtest's static-peak and fleetpilot policies over it.
pub fn size_fleet(path: &std::path::Path, gpus: u32) -> anyhow::Result<FleetSizing> {
    use fleetpilot_eval::backtest::{self as bt, EnginePolicy, Profile};
    if gpus == 0 {
        anyhow::bail!("the fleet needs at least one GPU");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let trace = bt::parse_trace_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let profile = Profile::STANDARD;
    let bad = |e: bt::BacktestError| anyhow::anyhow!("{}: {e}", path.display());
    let static_peak_replicas = bt::static_peak_replicas(&trace, &profile).map_err(bad)?;
    let peak = bt::simulate(&trace, &profile, &mut bt::static_peak(&trace, &profile).map_err(bad)?).map_err(bad)?;
    let ours = bt::simulate(&trace, &profile, &mut EnginePolicy::llm_default(&profile)).map_err(bad)?;
    let replica_speed = f64::from(static_peak_replicas) / f64::from(gpus);
    let warm = bt::initial_ready(&bt::trace_work(&trace, &profile).map_err(bad)?, &profile);
    let s = peak.summary.gpu_hours;
    let f = ours.summary.gpu_hours;
    Ok(FleetSizing {
        gpus,
        static_peak_replicas,
        replica_speed,
        static_peak_gpu_hours: s,
        fleetpilot_gpu_hours: f,
        implied_idle_share: if s > 0.0 { (1.0 - f / s).clamp(0.0, 1.0) } else { 0.0 },
        trace_secs: peak.summary.hours * 3600.0,
        initial_replicas: ((f64::from(warm) / replica_speed).ceil() as u32).clamp(1, gpus),
    })
}

/// The demo's control-plane settings for a trace replayed `speedup` times faster than real time: the
/// loop's windows are the usual ones in trace time.
pub fn tune_settings(settings: &mut Settings, speedup: f64) {
    let wall = |trace_secs: f64| (trace_secs / speedup).max(1.0);
    settings.control.tick_secs = wall(20.0);
    settings.control.bucket_secs = wall(20.0).round() as u32;
    settings.control.lookback_secs = (wall(9000.0).round() as u32).max(settings.control.bucket_secs * 8);
    settings.control.scale_down_stabilization_secs = wall(300.0).round() as u32;
    settings.alerts.node_silent_secs = 15;
    settings.alerts.gpu_temp_c = 88.0;
    // Opportunities every 10 s over the last 6000 s of trace time (10 minutes of wall time at 10x): the
    // fleet is sized for its peak, so the GPUs fleetpilot scales off show up as idle capacity.
    settings.opportunities.refresh_secs = 10.0;
    settings.opportunities.bucket_secs = wall(100.0).round() as u32;
    settings.opportunities.window_secs = (wall(6000.0).round() as u32).max(settings.opportunities.bucket_secs * 4);
    settings.opportunities.full_confidence_secs = f64::from(settings.opportunities.window_secs);
}

/// The demo's scaling policy for `capacity` GPUs at `speedup`: the default policy for LLM serving (what
/// `POST /api/v1/policies` creates from a target and bounds alone, and what `fleetpilot backtest` measures), its
/// times divided by `speedup` because the demo replays the trace that much faster (EVAL.md's 2 s delay budget
/// and 120 s cold start in trace time), rebatching under an ITL SLO.
pub fn demo_policy(capacity: u32, speedup: f64) -> PolicySpec {
    let wall = |trace_secs: f64| trace_secs / speedup;
    let wall_u32 = |trace_secs: f64| wall(trace_secs).ceil().max(1.0) as u32;
    let defaults = CapacitySpec::default();
    let llm = forecasting::engine::EngineSpec::llm_behavior();
    PolicySpec {
        name: "demo-llama".into(),
        target: Target {
            kind: TargetKind::AgentGroup,
            namespace: None,
            name: GROUP.into(),
            deployment: Some(DEPLOYMENT.into()),
        },
        min_replicas: 1,
        max_replicas: capacity,
        metric: None,
        target_value: None,
        metrics: vec![],
        slo: None,
        behavior: BehaviorSpec {
            scale_up: None,
            scale_down: Some(RulesSpec {
                stabilization_window_seconds: Some(wall_u32(f64::from(llm.scale_down.stabilization_window_secs))),
                select_policy: None,
                policies: Some(
                    llm.scale_down
                        .policies
                        .iter()
                        .map(|p| RatePolicySpec {
                            kind: RateKindSpec::Percent,
                            value: p.value,
                            period_seconds: wall_u32(f64::from(p.period_secs)),
                        })
                        .collect(),
                ),
            }),
        },
        predictive: Default::default(),
        panic: forecasting::decision::PanicSettings { threshold: 2.0, window_secs: wall_u32(60.0) },
        scale_to_zero_idle_secs: None,
        tolerance: 0.1,
        cold_start_secs: wall_u32(120.0),
        dry_run: false,
        mode: Default::default(),
        rebatch: Some(RebatchSpec {
            min_batch_size: 4,
            max_batch_size: 128,
            max_queue_delay_us: 2_000,
            itl_slo_ms: 60.0,
        }),
        capacity: Some(CapacitySpec {
            queue_delay_slo_secs: wall(defaults.queue_delay_slo_secs),
            peak_window_secs: wall(defaults.peak_window_secs),
            return_period_secs: wall(defaults.return_period_secs),
            min_tail_window_secs: wall(defaults.min_tail_window_secs),
            ..defaults
        }),
    }
}

/// A simulated fleet: `agents` nodes of `gpus` GPUs replaying a trace against a control plane.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Control plane URL.
    pub server_url: String,
    /// Agent token.
    pub agent_token: String,
    /// Nodes.
    pub agents: u32,
    /// GPUs per node.
    pub gpus: u32,
    /// Trace (None: a synthetic diurnal load).
    pub trace: Option<PathBuf>,
    /// Trace seconds per wall second.
    pub speedup: f64,
    /// Reference replicas per GPU.
    pub replica_speed: f64,
    /// Sampling interval.
    pub interval: Duration,
    /// Replicas serving at the start.
    pub initial_replicas: u32,
}

/// The running agents of a [`FleetOptions`] fleet.
pub struct Fleet {
    stop: tokio::sync::watch::Sender<bool>,
    agents: Vec<tokio::task::JoinHandle<std::sync::Arc<gpu_agent::agent::AgentStats>>>,
}

impl Fleet {
    /// Starts the agents; the trace starts now for all of them.
    pub fn start(opts: &FleetOptions) -> anyhow::Result<Fleet> {
        let epoch_ms = chrono::Utc::now().timestamp_millis();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut agents = Vec::new();
        for i in 0..opts.agents {
            let cfg = AgentConfig {
                server_url: opts.server_url.clone(),
                token: opts.agent_token.clone(),
                agent_id: format!("gpu-node-{}", i + 1),
                hostname: format!("gpu-node-{}.demo", i + 1),
                interval: opts.interval,
                group: Some(GROUP.into()),
                deployment: Some(DEPLOYMENT.into()),
                gpu_source: GpuSourceKind::Sim,
                sim: SimSettings {
                    gpus: opts.gpus,
                    trace: opts.trace.clone(),
                    speedup: opts.speedup,
                    node_index: i,
                    nodes_total: opts.agents,
                    initial_replicas: opts.initial_replicas.max(1),
                    cold_start_secs: 120.0,
                    replica_speed: opts.replica_speed,
                    epoch_ms: Some(epoch_ms),
                    hot_gpu: (i == 1).then_some(opts.gpus - 1),
                },
                engine_urls: Vec::new(),
                max_queued: 3600,
                rebatch_hook: None,
            };
            let agent = Agent::new(cfg).context("starting a simulated agent")?;
            agents.push(tokio::spawn(agent.run(rx.clone())));
        }
        Ok(Fleet { stop, agents })
    }

    /// Stops every agent and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for a in self.agents {
            let _ = a.await;
        }
    }
}

/// Runs the demo until Ctrl-C, then stops the agents, the server and the database.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    if opts.agents == 0 || opts.gpus == 0 {
        anyhow::bail!("--agents and --gpus must be at least 1");
    }
    if !(opts.speedup.is_finite() && opts.speedup > 0.0) {
        anyhow::bail!("--speedup must be a positive number");
    }
    let capacity = opts.agents * opts.gpus;
    let sizing = if opts.trace.exists() {
        Some(size_fleet(&opts.trace, capacity)?)
    } else {
        tracing::warn!(path = %opts.trace.display(), "trace not found; replaying a synthetic diurnal load instead");
        None
    };
    let pg_opts = PgOptions { data_dir: opts.data_dir.join("pgdata"), ephemeral: false };
    let mut pg = tokio::task::spawn_blocking(move || PrivatePostgres::start(&pg_opts)).await??;
    // A fresh database per run: the dashboard shows this run's fleet only.
    crate::pg::recreate_database(&pg.url_for("postgres"), DEMO_DB).await?;
    let pool = db::connect(&pg.url_for(DEMO_DB), 20).await?;
    let api_token = token();
    let agent_token = token();
    let mut settings = Settings {
        listen: opts.listen.clone(),
        api_token: Secret::new(api_token.clone()),
        agent_token: Secret::new(agent_token.clone()),
        // The simulated fleet runs in this process with one shared token: trusted here, never in a cluster.
        agent_token_can_write: true,
        data_dir: opts.data_dir.clone(),
        ..Settings::default()
    };
    tune_settings(&mut settings, opts.speedup);
    // A fresh dashboard operator per run; the login is printed below.
    let admin_password = token()[..16].to_string();
    settings.dashboard.admin_user = "admin".into();
    settings.dashboard.admin_password = Secret::new(admin_password.clone());
    let app = match Application::build_with_pool(settings.clone(), pool.clone()).await {
        Ok(a) => a,
        Err(e) if opts.listen.ends_with(":8080") => {
            tracing::warn!(error = %e, "port 8080 is busy; using a free port");
            settings.listen = "127.0.0.1:0".into();
            Application::build_with_pool(settings, pool.clone()).await?
        }
        Err(e) => return Err(e.into()),
    };
    let port = app.port();
    let fleet = Fleet::start(&FleetOptions {
        server_url: format!("http://127.0.0.1:{port}"),
        agent_token: agent_token.clone(),
        agents: opts.agents,
        gpus: opts.gpus,
        trace: sizing.as_ref().map(|_| opts.trace.clone()),
        speedup: opts.speedup,
        // Sized like the backtest's static-peak fleet; four reference replicas per GPU for the synthetic load.
        replica_speed: sizing.as_ref().map_or(4.0, |s| s.replica_speed),
        interval: Duration::from_secs(1),
        // Warm, as the backtest's fleets start; one replica for the synthetic load.
        initial_replicas: sizing.as_ref().map_or(1, |s| s.initial_replicas),
    })?;
    let shutdown = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());
    // The policy once the agents have reported, so its first decision sees the fleet (an agent group
    // without nodes cannot be scaled).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while db::series::nodes_of(&pool, DEPLOYMENT, Some(GROUP)).await?.len() < opts.agents as usize
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let policy = demo_policy(capacity, opts.speedup);
    policy.validate().map_err(|e| anyhow::anyhow!("demo policy: {}", e.error))?;
    if let db::policies::Write::NameTaken = db::policies::create(&pool, &policy).await? {
        anyhow::bail!("demo policy exists already");
    }

    println!();
    println!("  fleetpilot demo is running");
    println!("  dashboard:  http://127.0.0.1:{port}/");
    println!("  login:      admin / {admin_password}");
    println!(
        "  API token:  {api_token}   (e.g. curl -H 'Authorization: Bearer {api_token}' http://127.0.0.1:{port}/api/v1/decisions)"
    );
    println!("  fleet:      {} simulated nodes x {} GPUs replaying {}", opts.agents, opts.gpus, opts.trace.display());
    if let Some(s) = &sizing {
        println!(
            "  sizing:     {} GPUs = the trace's static-peak fleet ({} reference replicas); the backtest implies \
             {:.1} GPUs idle on average under fleetpilot ({:.0} % of a static-peak fleet): compare the \
             opportunities page's idle capacity after one trace loop ({:.0} s)",
            s.gpus,
            s.static_peak_replicas,
            s.implied_idle_gpu_equivalent(),
            s.implied_idle_share * 100.0,
            s.trace_secs / opts.speedup
        );
    }
    println!(
        "  opportunities: curl -H 'Authorization: Bearer {api_token}' http://127.0.0.1:{port}/api/v1/opportunities"
    );
    println!("  Ctrl-C stops everything and cleans up.");
    println!();

    // Ctrl-C or SIGTERM (e.g. `timeout`, a container stop) both clean up.
    let (signalled, mut got) = tokio::sync::watch::channel(false);
    let wait = crate::startup::stop_on_signals(signalled).context("installing signal handlers")?;
    tokio::spawn(wait);
    let _ = got.wait_for(|v| *v).await;
    println!("stopping...");
    fleet.stop().await;
    let _ = shutdown.send(true);
    server.await??;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    println!("stopped; the private PostgreSQL is shut down");
    Ok(())
}
