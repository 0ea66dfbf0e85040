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
enum BenchCmd {
    /// End-to-end HTTP ingest against the private PostgreSQL, next to a bulk-COPY ceiling.
    Ingest {
        /// Seconds of the saturation phase (the 80 % latency phase runs half as long).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Concurrent simulated agents.
        #[arg(long, default_value_t = 32)]
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
            let stop = app.shutdown_handle();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down");
                let _ = stop.send(true);
            });
            app.run_until_stopped().await
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
