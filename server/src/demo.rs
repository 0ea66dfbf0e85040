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
    BehaviorSpec, Metric, PolicySpec, RateKindSpec, RatePolicySpec, RebatchSpec, RulesSpec, Target, TargetKind,
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

/// Runs the demo until Ctrl-C, then stops the agents, the server and the database.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    if opts.agents == 0 || opts.gpus == 0 {
        anyhow::bail!("--agents and --gpus must be at least 1");
    }
    let pg_opts = PgOptions { data_dir: opts.data_dir.join("pgdata"), ephemeral: false };
    let mut pg = tokio::task::spawn_blocking(move || PrivatePostgres::start(&pg_opts)).await??;
    // A fresh database per run: the dashboard shows this run's fleet only.
    {
        use sqlx::Connection as _;
        let mut admin = crate::pg::connect_retrying(&pg.url_for("postgres"), Duration::from_secs(30)).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)")))
            .execute(&mut admin)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DEMO_DB}"))).execute(&mut admin).await?;
        admin.close().await?;
    }
    let pool = db::connect(&pg.url_for(DEMO_DB), 20).await?;
    let api_token = token();
    let agent_token = token();
    let mut settings = Settings {
        listen: opts.listen.clone(),
        api_token: Secret::new(api_token.clone()),
        agent_token: Secret::new(agent_token.clone()),
        data_dir: opts.data_dir.clone(),
        ..Settings::default()
    };
    settings.control.tick_secs = 2.0;
    settings.control.bucket_secs = 2;
    settings.control.lookback_secs = 900;
    // 30 s of wall time is 5 minutes of trace time at the default 10x.
    settings.control.scale_down_stabilization_secs = 30;
    settings.alerts.node_silent_secs = 15;
    settings.alerts.gpu_temp_c = 88.0;
    // Opportunities every 10 s over the last 10 minutes (100 minutes of trace time at 10x): the fleet is
    // over-provisioned at night, so idle GPUs show up, priced as H100s.
    settings.opportunities.refresh_secs = 10.0;
    settings.opportunities.window_secs = 600;
    settings.opportunities.bucket_secs = 10;
    settings.opportunities.full_confidence_secs = 600.0;
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
        Err(e) => return Err(e),
    };
    let port = app.port();
    let capacity = opts.agents * opts.gpus;
    let policy = PolicySpec {
        name: "demo-llama".into(),
        target: Target {
            kind: TargetKind::AgentGroup,
            namespace: None,
            name: GROUP.into(),
            deployment: Some(DEPLOYMENT.into()),
        },
        min_replicas: 1,
        max_replicas: capacity,
        metric: Some(Metric::GpuUtilization),
        target_value: Some(60.0),
        metrics: Vec::new(),
        slo: None,
        // HPA's rate limits and panic window, on the demo's faster clock.
        behavior: BehaviorSpec {
            scale_up: Some(RulesSpec {
                stabilization_window_seconds: Some(0),
                select_policy: None,
                policies: Some(vec![RatePolicySpec { kind: RateKindSpec::Percent, value: 100, period_seconds: 2 }]),
            }),
            scale_down: None,
        },
        predictive: Default::default(),
        panic: forecasting::decision::PanicSettings { threshold: 2.0, window_secs: 10 },
        scale_to_zero_idle_secs: None,
        tolerance: 0.1,
        // 120 s of trace time at the demo's speed-up.
        cold_start_secs: (120.0 / opts.speedup).ceil().max(1.0) as u32,
        dry_run: false,
        rebatch: Some(RebatchSpec {
            min_batch_size: 4,
            max_batch_size: 128,
            max_queue_delay_us: 2_000,
            itl_slo_ms: 60.0,
        }),
    };
    policy.validate().map_err(|e| anyhow::anyhow!("demo policy: {}", e.error))?;
    if let db::policies::Write::NameTaken = db::policies::create(&pool, &policy).await? {
        anyhow::bail!("demo policy exists already");
    }

    let trace = if opts.trace.exists() {
        Some(opts.trace.clone())
    } else {
        tracing::warn!(path = %opts.trace.display(), "trace not found; replaying a synthetic diurnal load instead");
        None
    };
    let epoch_ms = chrono::Utc::now().timestamp_millis();
    let (stop_agents, rx) = tokio::sync::watch::channel(false);
    let mut agents = Vec::new();
    for i in 0..opts.agents {
        let cfg = AgentConfig {
            server_url: format!("http://127.0.0.1:{port}"),
            token: agent_token.clone(),
            agent_id: format!("gpu-node-{}", i + 1),
            hostname: format!("gpu-node-{}.demo", i + 1),
            interval: Duration::from_secs(1),
            group: Some(GROUP.into()),
            deployment: Some(DEPLOYMENT.into()),
            gpu_source: GpuSourceKind::Sim,
            sim: SimSettings {
                gpus: opts.gpus,
                trace: trace.clone(),
                speedup: opts.speedup,
                node_index: i,
                nodes_total: opts.agents,
                // The fleet starts at the policy's minimum; fleetpilot sizes it from there.
                initial_replicas: 1,
                cold_start_secs: 120.0,
                // Four reference replicas' worth per GPU: the fleet's 12 GPUs cover the trace's peak with
                // headroom, so scaling up and down is visible.
                replica_speed: 4.0,
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
    let shutdown = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());

    println!();
    println!("  fleetpilot demo is running");
    println!("  dashboard:  http://127.0.0.1:{port}/");
    println!("  login:      admin / {admin_password}");
    println!(
        "  API token:  {api_token}   (e.g. curl -H 'Authorization: Bearer {api_token}' http://127.0.0.1:{port}/api/v1/decisions)"
    );
    println!("  fleet:      {} simulated nodes x {} GPUs replaying {}", opts.agents, opts.gpus, opts.trace.display());
    println!(
        "  opportunities: curl -H 'Authorization: Bearer {api_token}' http://127.0.0.1:{port}/api/v1/opportunities"
    );
    println!("  Ctrl-C stops everything and cleans up.");
    println!();

    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    println!("stopping...");
    let _ = stop_agents.send(true);
    for a in agents {
        let _ = a.await;
    }
    let _ = shutdown.send(true);
    server.await??;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    println!("stopped; the private PostgreSQL is shut down");
    Ok(())
}
