//! `fleetpilot`: the control plane.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fleetpilot::config::Settings;
use fleetpilot::demo::{self, DemoOptions};
use fleetpilot::startup::{Application, open_database};
use fleetpilot::telemetry::init_tracing;

/// fleetpilot: observability and autoscaling for fleets of GPU model servers.
#[derive(Parser, Debug)]
#[command(name = "fleetpilot", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the control plane (HTTP API, dashboard, control loop, alerts).
    Serve {
        /// TOML configuration file (environment variables FLEETPILOT_* override it).
        #[arg(long, env = "FLEETPILOT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// TOML configuration file.
        #[arg(long, env = "FLEETPILOT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create a dashboard user or reset its password and role (the password is the first line of standard
    /// input, so it stays out of the process list and shell history).
    UserAdd {
        /// User name (letters, digits, '.', '-', '_', '@').
        name: String,
        /// `viewer` (reads) or `operator` (acts).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// TOML configuration file.
        #[arg(long, env = "FLEETPILOT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Evaluations of ../shared/EVAL.md (anomaly detection on NAB, forecasting by rolling-origin MASE).
    #[command(subcommand)]
    Eval(EvalCmd),
    /// Replay a demand trace through EVAL.md's fleet model for fleetpilot's policy and the reference policies.
    Backtest {
        /// Trace CSV (`timestamp,requests,prompt_tokens,output_tokens`).
        #[arg(long)]
        trace: PathBuf,
        /// Output directory: <policy>.csv, summary.csv, backtest.svg.
        #[arg(long)]
        out: PathBuf,
        /// Prefill rate of one replica, prompt tokens/s.
        #[arg(long, default_value_t = 1000.0)]
        prefill_tps: f64,
        /// Decode rate of one replica, output tokens/s.
        #[arg(long, default_value_t = 100.0)]
        decode_tps: f64,
        /// Replica cold start, seconds.
        #[arg(long, default_value_t = 120.0)]
        cold_start_s: f64,
        /// GPUs per replica.
        #[arg(long, default_value_t = 1.0)]
        gpus_per_replica: f64,
        /// SLO: maximum queueing delay, seconds.
        #[arg(long, default_value_t = 2.0)]
        slo_delay_s: f64,
        /// Trace step, seconds: read from the trace's timestamps; this only overrides it (with a warning
        /// when the two disagree).
        #[arg(long)]
        step_s: Option<f64>,
    },
    /// Benchmarks; each ends with one line of `key=value` figures.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Run the demo: private Postgres, control plane, simulated agents replaying a real trace.
    Demo {
        /// Dashboard address (a free port is used if 8080 is busy).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Simulated nodes.
        #[arg(long, default_value_t = 3)]
        agents: u32,
        /// GPUs per simulated node.
        #[arg(long, default_value_t = 4)]
        gpus: u32,
        /// Trace to replay (`timestamp,requests,prompt_tokens,output_tokens`).
        #[arg(long, default_value = "../shared/data/traces/azure_conv_10s.csv")]
        trace: PathBuf,
        /// Trace seconds per wall-clock second.
        #[arg(long, default_value_t = 10.0)]
        speedup: f64,
        /// Working directory (private database).
        #[arg(long, default_value = ".fleetpilot/demo")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum EvalCmd {
    /// Score the anomaly detector on a NAB-layout directory (data/, labels/combined_windows.json).
    Nab {
        /// NAB directory.
        #[arg(long, default_value = "../shared/data/nab")]
        data: PathBuf,
        /// Where the per-file results go (<out>/<category>/fleetpilot_<file>.csv).
        #[arg(long)]
        out: PathBuf,
        /// Also print leave-one-category-out cross-validation (EVAL.md section 1, model selection): each
        /// category scored with the detector setting (from the fixed grid of `forecasting::anomaly::selection`)
        /// and the threshold chosen on the other categories, per fold and the mean, next to the dev score.
        #[arg(long)]
        cv: bool,
    },
    /// Fault-injection benchmark on simulated GPU telemetry through the real detection path (EVAL.md 1b).
    Faults {
        /// Seed of the fault schedule and the simulator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated nodes.
        #[arg(long, default_value_t = 8)]
        nodes: u32,
        /// GPUs per node.
        #[arg(long, default_value_t = 8)]
        gpus_per_node: u32,
        /// Simulated hours.
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        /// Trace replayed in a loop.
        #[arg(long, default_value = "../shared/data/traces/azure_conv_10s.csv")]
        trace: PathBuf,
        /// Faults of each kind.
        #[arg(long, default_value_t = 4)]
        faults_per_kind: usize,
        /// Seconds between two samples of every GPU (simulated).
        #[arg(long, default_value_t = 10)]
        sample_secs: u32,
        /// Where faults.csv and events.csv go.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Working directory (private PostgreSQL; wiped).
        #[arg(long, default_value = ".fleetpilot/eval-faults")]
        data_dir: PathBuf,
    },
    /// Rolling-origin MASE of the forecaster and the seasonal-naive and last-value baselines.
    Forecast {
        /// Series CSV.
        #[arg(long)]
        series: PathBuf,
        /// Horizon, steps.
        #[arg(long)]
        horizon: usize,
        /// Seasonal period, steps (1 = none).
        #[arg(long, default_value_t = 1)]
        season: usize,
        /// Warm-up W, steps (default: two seasons, or 60 without a season).
        #[arg(long)]
        warmup: Option<usize>,
        /// Stride between origins (default: the horizon).
        #[arg(long)]
        stride: Option<usize>,
        /// Which column is the series.
        #[arg(long, value_enum, default_value_t = fleetpilot::evaluate::SeriesColumn::Value)]
        column: fleetpilot::evaluate::SeriesColumn,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Decision latency: a sample arriving at the server to the scale request reaching a fake API server.
    Decision {
        /// Load steps timed with fleetpilot's loop.
        #[arg(long, default_value_t = 40)]
        steps: usize,
        /// Load steps timed with the periodic (5 s) baseline loop.
        #[arg(long, default_value_t = 20)]
        baseline_steps: usize,
        /// Working directory (wiped).
        #[arg(long, default_value = ".fleetpilot/bench-decision")]
        data_dir: PathBuf,
    },
    /// One control-loop tick over N deployments and M GPUs on one core.
    Tick {
        /// Deployments (one policy each).
        #[arg(long, default_value_t = 500)]
        deployments: usize,
        /// GPUs in the fleet.
        #[arg(long, default_value_t = 10_000)]
        gpus: usize,
        /// Timed ticks.
        #[arg(long, default_value_t = 10)]
        ticks: usize,
        /// How many of the policies target Kubernetes Deployments on a fake API server (the rest agent
        /// groups).
        #[arg(long, default_value_t = 100)]
        kube_deployments: usize,
        /// Working directory (wiped).
        #[arg(long, default_value = ".fleetpilot/bench-tick")]
        data_dir: PathBuf,
    },
    /// Time to page: a hot-GPU batch posted to ingest -> the PagerDuty-like receiver gets the trigger.
    Alerts {
        /// Alerts (one node and one incident each).
        #[arg(long, default_value_t = 1000)]
        alerts: usize,
        /// Mean gap between alerts, milliseconds.
        #[arg(long, default_value_t = 10)]
        gap_ms: u64,
        /// Seconds between alert evaluations (the server's default).
        #[arg(long, default_value_t = 1.0)]
        eval_secs: f64,
        /// Group wait, seconds (0: page as soon as the alert fires).
        #[arg(long, default_value_t = 0.0)]
        group_wait_secs: f64,
        /// Working directory (wiped).
        #[arg(long, default_value = ".fleetpilot/bench-alerts")]
        data_dir: PathBuf,
    },
    /// Command delivery latency (server records -> agent acknowledges), long poll against upload replies only.
    Commands {
        /// Simulated agents (1 s uploads each).
        #[arg(long, default_value_t = 200)]
        agents: usize,
        /// Commands per phase.
        #[arg(long, default_value_t = 500)]
        commands: usize,
        /// Mean gap between commands, milliseconds.
        #[arg(long, default_value_t = 20)]
        gap_ms: u64,
        /// Working directory (wiped).
        #[arg(long, default_value = ".fleetpilot/bench-commands")]
        data_dir: PathBuf,
    },
    /// Refit of N deployments' forecasts (1 week at 1 min) and one streaming anomaly update of M GPUs.
    Forecast {
        /// Deployments to refit.
        #[arg(long, default_value_t = 500)]
        deployments: usize,
        /// GPU series to update.
        #[arg(long, default_value_t = 10_000)]
        gpus: usize,
    },
    /// Read path at fleet scale: fleet overview and one GPU's 24-hour and 1-hour series.
    Query {
        /// GPUs in the fleet.
        #[arg(long, default_value_t = 10_000)]
        gpus: usize,
        /// Minutes of raw 1 s samples loaded for every GPU (the queried GPU gets 24 h).
        #[arg(long, default_value_t = 10)]
        raw_minutes: i64,
        /// Timed runs per query.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Working directory (wiped).
        #[arg(long, default_value = ".fleetpilot/bench-query")]
        data_dir: PathBuf,
    },
    /// Raw telemetry at rest: a simulated day of 1 s GPU and serving samples through the ingest path with
    /// packing running; bytes per metric value (and the ratio to the unpacked GPU layout), ingest rows/s, chart
    /// read p99.
    Storage {
        /// GPUs in the fleet (8 per node).
        #[arg(long, default_value_t = 1_000)]
        gpus: usize,
        /// Simulated hours of 1 s samples (time compressed).
        #[arg(long, default_value_t = 24)]
        hours: i64,
        /// Seconds of readings per agent batch.
        #[arg(long, default_value_t = 10)]
        batch_secs: i64,
        /// Minutes of the same samples written in the old layout for the ratio.
        #[arg(long, default_value_t = 10)]
        baseline_minutes: i64,
        /// Timed runs per chart read.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Working directory (wiped).
        #[arg(long, default_value = ".fleetpilot/bench-storage")]
        data_dir: PathBuf,
    },
    /// Every dashboard page at fleet scale (10,000 GPUs, 500 deployments) under concurrent clients.
    Dashboard {
        /// GPUs in the fleet (8 per node).
        #[arg(long, default_value_t = 10_000)]
        gpus: usize,
        /// Deployments, each with a policy, forecasts and decisions.
        #[arg(long, default_value_t = 500)]
        deployments: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Requests per client per page.
        #[arg(long, default_value_t = 10)]
        requests: usize,
        /// Pause of each client between its requests, milliseconds (0: back to back, a saturation test).
        #[arg(long, default_value_t = 1000)]
        think_ms: u64,
        /// Only these pages (comma-separated names as printed, e.g. `deployment,gpu`); every page when empty.
        #[arg(long, value_delimiter = ',')]
        pages: Vec<String>,
        /// Working directory (wiped).
        #[arg(long, default_value = ".fleetpilot/bench-dashboard")]
        data_dir: PathBuf,
    },
    /// Prometheus remote-write ingest (DCGM-shaped requests) next to the agent protocol's, same run.
    RemoteWrite {
        /// Seconds of each phase.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Concurrent remote-write senders (the agent phase runs one agent per node of the same fleet).
        #[arg(long, default_value_t = 8)]
        senders: usize,
        /// GPUs per node.
        #[arg(long, default_value_t = 8)]
        gpus: usize,
        /// Readings per agent batch. 1, as the agent uploads by default (it samples and uploads every
        /// `interval_secs`, 1 s); more only when it catches up after an outage, the agent's best case.
        #[arg(long, default_value_t = 1)]
        readings: usize,
        /// Nodes (DCGM exporters) per remote-write request (8 GPUs x 12 series each: 20 is ~2,000 samples,
        /// Prometheus' default max_samples_per_send).
        #[arg(long, default_value_t = 20)]
        nodes_per_request: usize,
        /// Working directory (wiped).
        #[arg(long, default_value = ".fleetpilot/bench-remote-write")]
        data_dir: PathBuf,
    },
    /// End-to-end HTTP ingest against the private PostgreSQL, next to a bulk-COPY ceiling.
    Ingest {
        /// Seconds of the saturation phase (the 80 % latency phase runs half as long).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Concurrent simulated agents (each a node of `--gpus` GPUs uploading `--readings` readings per batch).
        #[arg(long, default_value_t = 256)]
        agents: usize,
        /// GPUs per agent.
        #[arg(long, default_value_t = 8)]
        gpus: usize,
        /// Readings per GPU in one batch.
        #[arg(long, default_value_t = 10)]
        readings: usize,
        /// Working directory (wiped).
        #[arg(long, default_value = ".fleetpilot/bench-ingest")]
        data_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Cmd::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "fleetpilot serving");
            // Registered before serving, so a SIGTERM at any time after this drains instead of killing.
            tokio::spawn(fleetpilot::startup::stop_on_signals(app.shutdown_handle())?);
            Ok(app.run_until_stopped().await?)
        }
        Cmd::Migrate { config } => {
            let settings = Settings::load(config.as_deref())?;
            let (pool, pg) = open_database(&settings).await?;
            pool.close().await;
            if let Some(mut pg) = pg {
                tokio::task::spawn_blocking(move || pg.stop()).await?;
            }
            println!("migrations applied");
            Ok(())
        }
        Cmd::UserAdd { name, role, config } => {
            use fleetpilot::db::users::{self, Role};
            let role = Role::parse(&role).ok_or_else(|| anyhow::anyhow!("--role must be viewer or operator"))?;
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 64
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@')),
                "the name must be 1..=64 letters, digits, '.', '-', '_' or '@'"
            );
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']).to_string();
            anyhow::ensure!(password.len() >= 8, "the password must have at least 8 characters");
            let settings = Settings::load(config.as_deref())?;
            let (pool, pg) = open_database(&settings).await?;
            let hash = tokio::task::spawn_blocking(move || users::hash_password(&password))
                .await?
                .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
            users::upsert(&pool, &name, &hash, role).await?;
            pool.close().await;
            if let Some(mut pg) = pg {
                tokio::task::spawn_blocking(move || pg.stop()).await?;
            }
            println!("dashboard user {name} ({}) saved", role.as_str());
            Ok(())
        }
        Cmd::Eval(EvalCmd::Nab { data, out, cv }) => fleetpilot::evaluate::nab(&data, &out, cv).map(|_| ()),
        Cmd::Eval(EvalCmd::Faults {
            seed,
            nodes,
            gpus_per_node,
            hours,
            trace,
            faults_per_kind,
            sample_secs,
            out,
            data_dir,
        }) => {
            let opts = fleetpilot::faults::FaultBenchOptions {
                seed,
                nodes,
                gpus_per_node,
                hours,
                trace,
                faults_per_kind,
                sample_secs,
                out,
                data_dir,
                progress: true,
            };
            fleetpilot::faults::run(opts).await.map(|_| ())
        }
        Cmd::Eval(EvalCmd::Forecast { series, horizon, season, warmup, stride, column }) => {
            anyhow::ensure!(horizon >= 1, "--horizon must be at least 1");
            fleetpilot::evaluate::forecast(&series, horizon, season, warmup, stride, column).map(|_| ())
        }
        Cmd::Backtest { trace, out, prefill_tps, decode_tps, cold_start_s, gpus_per_replica, slo_delay_s, step_s } => {
            let profile = fleetpilot_eval::backtest::Profile {
                prefill_rate: prefill_tps,
                decode_rate: decode_tps,
                cold_start_s,
                gpus_per_replica,
                slo_s: slo_delay_s,
                step_s: step_s.unwrap_or(f64::NAN),
            };
            fleetpilot::evaluate::backtest(&trace, &out, profile, step_s.is_some()).map(|_| ())
        }
        Cmd::Bench(BenchCmd::Decision { steps, baseline_steps, data_dir }) => {
            let opts = fleetpilot::bench::decision::DecisionBenchOptions { steps, baseline_steps, data_dir };
            fleetpilot::bench::decision::run(opts).await.map(|_| ())
        }
        Cmd::Bench(BenchCmd::Tick { deployments, gpus, ticks, kube_deployments, data_dir }) => {
            let opts =
                fleetpilot::bench::tick::TickBenchOptions { deployments, gpus, ticks, kube_deployments, data_dir };
            fleetpilot::bench::tick::run(opts).await.map(|_| ())
        }
        Cmd::Bench(BenchCmd::Alerts { alerts, gap_ms, eval_secs, group_wait_secs, data_dir }) => {
            let opts =
                fleetpilot::bench::alerts::AlertBenchOptions { alerts, gap_ms, eval_secs, group_wait_secs, data_dir };
            fleetpilot::bench::alerts::run(opts).await
        }
        Cmd::Bench(BenchCmd::Commands { agents, commands, gap_ms, data_dir }) => {
            let opts = fleetpilot::bench::commands::CommandBenchOptions { agents, commands, gap_ms, data_dir };
            fleetpilot::bench::commands::run(opts).await.map(|_| ())
        }
        Cmd::Bench(BenchCmd::Forecast { deployments, gpus }) => {
            tokio::task::spawn_blocking(move || fleetpilot::bench::forecast::run(deployments, gpus)).await?
        }
        Cmd::Bench(BenchCmd::Query { gpus, raw_minutes, runs, data_dir }) => {
            fleetpilot::bench::query::run(fleetpilot::bench::query::QueryBenchOptions {
                gpus,
                raw_minutes,
                runs,
                data_dir,
            })
            .await
        }
        Cmd::Bench(BenchCmd::Storage { gpus, hours, batch_secs, baseline_minutes, runs, data_dir }) => {
            fleetpilot::bench::storage::run(fleetpilot::bench::storage::StorageBenchOptions {
                gpus,
                hours,
                batch_secs,
                baseline_minutes,
                runs,
                data_dir,
            })
            .await
            .map(drop)
        }
        Cmd::Bench(BenchCmd::Dashboard { gpus, deployments, clients, requests, think_ms, pages, data_dir }) => {
            let opts = fleetpilot::bench::dashboard::DashboardBenchOptions {
                gpus,
                deployments,
                clients,
                requests,
                think_ms,
                pages,
                data_dir,
            };
            fleetpilot::bench::dashboard::run(opts).await
        }
        Cmd::Bench(BenchCmd::RemoteWrite { seconds, senders, gpus, readings, nodes_per_request, data_dir }) => {
            let opts = fleetpilot::bench::remote_write::RemoteWriteBenchOptions {
                seconds,
                senders,
                gpus,
                readings,
                nodes_per_request,
                data_dir,
            };
            fleetpilot::bench::remote_write::run(opts).await
        }
        Cmd::Bench(BenchCmd::Ingest { seconds, agents, gpus, readings, data_dir }) => {
            let opts = fleetpilot::bench::ingest::IngestBenchOptions {
                seconds,
                agents,
                gpus,
                readings_per_batch: readings,
                data_dir,
            };
            fleetpilot::bench::ingest::run(opts).await.map(|_| ())
        }
        Cmd::Demo { listen, agents, gpus, trace, speedup, data_dir } => {
            if !(speedup.is_finite() && speedup > 0.0 && speedup <= 1000.0) {
                anyhow::bail!("--speedup must be in (0, 1000]");
            }
            demo::run(DemoOptions { listen, agents, gpus, trace, speedup, data_dir }).await
        }
    }
}
