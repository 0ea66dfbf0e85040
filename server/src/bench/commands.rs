//! `fleetpilot bench commands`: command delivery latency, from the server recording a command to the agent
//! acknowledging its receipt (both instants on the database clock: `created_at` and `acked_at`).
//!
//! The real server (in this process, on a port of 127.0.0.1) and N simulated agents on the private
//! PostgreSQL; commands are queued at random moments to random agents, one phase with the agents' long poll
//! (fleetpilot's delivery) and one with commands riding only on the replies to 1 s uploads (the baseline,
//! what the agent did before the long poll). Both phases run in the same process, against the same database.

use std::time::Duration;

use gpu_agent::agent::AgentOptions;
use gpu_agent::protocol::CommandAction;
use gpu_agent::testkit::{RunningAgent, sim_config};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::quantile;
use crate::db;
use crate::startup::Application;

/// Options of the command benchmark.
#[derive(Debug, Clone)]
pub struct CommandBenchOptions {
    /// Simulated agents.
    pub agents: usize,
    /// Commands per phase.
    pub commands: usize,
    /// Mean gap between two commands, milliseconds.
    pub gap_ms: u64,
    /// Working directory for the private cluster (wiped first).
    pub data_dir: std::path::PathBuf,
}

/// Latencies of one phase, milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Distribution {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

fn distribution(mut v: Vec<f64>) -> Distribution {
    Distribution {
        p50: quantile(&mut v, 0.5),
        p90: quantile(&mut v, 0.9),
        p99: quantile(&mut v, 0.99),
        max: quantile(&mut v, 1.0),
    }
}

/// Runs both phases and prints the figures; the last line is `key=value` pairs.
pub async fn run(opts: CommandBenchOptions) -> anyhow::Result<(Distribution, Distribution)> {
    anyhow::ensure!(opts.agents >= 1, "--agents must be at least 1");
    anyhow::ensure!(opts.commands >= 1, "--commands must be at least 1");
    let (mut pg, url, pool) = super::fresh_database(&opts.data_dir, true).await?;
    let mut settings = super::bench_settings(url);
    settings.control.enabled = false;
    let app = Application::build_with_pool(settings, pool.clone()).await?;
    let server_url = format!("http://127.0.0.1:{}", app.port());
    let stop_server = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());

    let mut results = Vec::new();
    for (phase, long_poll) in [("long poll", true), ("baseline: upload replies only", false)] {
        let latencies = phase_run(&pool, &server_url, &opts, long_poll).await?;
        let d = distribution(latencies.clone());
        println!(
            "{phase:<30} commands={} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} max_ms={:.1}",
            latencies.len(),
            d.p50,
            d.p90,
            d.p99,
            d.max
        );
        results.push(d);
    }
    let _ = stop_server.send(true);
    server.await??;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    let (lp, base) = (results[0], results[1]);
    println!(
        "agents={} commands={} p50_ms={:.1} p99_ms={:.1} baseline_p50_ms={:.1} baseline_p99_ms={:.1} ratio_p99={:.3}",
        opts.agents,
        opts.commands,
        lp.p50,
        lp.p99,
        base.p50,
        base.p99,
        lp.p99 / base.p99
    );
    Ok((lp, base))
}

async fn phase_run(
    pool: &sqlx::PgPool,
    server_url: &str,
    opts: &CommandBenchOptions,
    long_poll: bool,
) -> anyhow::Result<Vec<f64>> {
    let tag = if long_poll { "lp" } else { "up" };
    let mut agents = Vec::new();
    for i in 0..opts.agents {
        let mut cfg = sim_config(server_url, "bench-agent", &format!("bench-{tag}-{i:04}"), Duration::from_secs(1));
        cfg.deployment = Some(format!("bench/model-{i}"));
        cfg.max_queued = 100;
        let options = AgentOptions { no_long_poll: !long_poll, ..AgentOptions::default() };
        agents.push(RunningAgent::start_with(cfg, options)?);
        // Spread the agents' upload phases over the interval, as a real fleet's are.
        tokio::time::sleep(Duration::from_micros(1_000_000 / opts.agents as u64)).await;
    }
    // Every agent has uploaded once (it is known) and, with the long poll, is waiting on the server.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let known = db::dashboard::nodes_named_like(pool, &format!("bench-{tag}-%")).await?;
        if known as usize >= opts.agents {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "agents did not report within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut rng = StdRng::seed_from_u64(7);
    let pb = indicatif::ProgressBar::new(opts.commands as u64);
    let mut ids = Vec::with_capacity(opts.commands);
    for n in 0..opts.commands {
        let i = rng.random_range(0..opts.agents);
        let action = CommandAction::Rebatch {
            deployment: format!("bench/model-{i}"),
            max_batch_size: 8 + (n % 120) as u32,
            max_queue_delay_us: 1_000,
        };
        ids.push(db::commands::enqueue(pool, &format!("bench-{tag}-{i:04}"), &action, None).await?);
        pb.inc(1);
        let gap = rng.random_range(0.0..2.0 * opts.gap_ms as f64);
        tokio::time::sleep(Duration::from_secs_f64(gap / 1000.0)).await;
    }
    pb.finish_and_clear();
    // Wait for every receipt (a missing one is a failure of the benchmark, not a slow sample).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let latencies: Vec<f64> = loop {
        let rows = db::commands::ack_latencies_ms(pool, &ids).await?;
        if rows.iter().all(|(_, l)| l.is_some()) {
            break rows.into_iter().filter_map(|(_, l)| l).collect();
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} of {} commands were never acknowledged",
            rows.iter().filter(|(_, l)| l.is_none()).count(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = RunningAgent::stop_all(agents).await;
    Ok(latencies)
}
