//! The scenario at full length, with production settings: an agent sampling 8 simulated GPUs and two
//! serving engines every second loses the control plane for 5 minutes (dead, then 503, then 429), is restarted
//! in the middle of the outage, and once the server is back every sample collected by either run is stored
//! exactly once, in order. This is the slowest test of the suite (about 6 minutes, mostly waiting); the short
//! variants in `delivery.rs` cover the same paths at a 50 ms interval.

// A failed setup step should fail the test on the spot.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gpu_agent::agent::{AgentConfig, AgentOptions, AgentStats};
use gpu_agent::fakes::{FakeControlPlane, FakeEngine, Mode};
use gpu_agent::spool::SpoolConfig;
use gpu_agent::testkit::{RunningAgent, get, sim_config, wait_until};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");
const OUTAGE: Duration = Duration::from_secs(300);

fn config(server: &str, engines: Vec<String>) -> AgentConfig {
    let mut cfg = sim_config(server, "t0ken", "node-long", Duration::from_secs(1));
    cfg.group = Some("sim-group".into());
    (cfg.sim.gpus, cfg.sim.initial_replicas) = (8, 8);
    cfg.engine_urls = engines;
    cfg.max_queued = 3600;
    cfg
}

/// What `fleetpilot-agent run --spool-dir DIR` uses: default size limit, upload timeout and backoff.
fn production_options(dir: &std::path::Path) -> AgentOptions {
    AgentOptions {
        spool: Some(SpoolConfig {
            dir: Some(dir.to_path_buf()),
            max_bytes: gpu_agent::config::DEFAULT_SPOOL_MAX_BYTES,
            max_batches: usize::MAX,
        }),
        ..AgentOptions::default()
    }
}

async fn eventually(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    wait_until(what, limit, Duration::from_millis(100), done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sample_is_lost_across_a_five_minute_outage_with_an_agent_restart_in_the_middle() {
    let vllm = std::fs::read_to_string(format!("{FIXTURES}/vllm.txt")).unwrap();
    let triton = std::fs::read_to_string(format!("{FIXTURES}/triton.txt")).unwrap();
    let e1 = FakeEngine::start(&vllm).await.unwrap();
    let e2 = FakeEngine::start(&triton).await.unwrap();
    let engines = vec![e1.url.clone(), e2.url.clone()];
    let cp = FakeControlPlane::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let first = RunningAgent::start_with(config(&cp.url, engines.clone()), production_options(dir.path())).unwrap();
    eventually("first batches", Duration::from_secs(10), || cp.batches().len() >= 3).await;
    assert!(cp.batches().iter().any(|b| !b.serving.is_empty()), "engine scrapes produce serving samples");

    // Dead for the first 100 s; the agent is restarted at 50 s.
    let outage_started = Instant::now();
    cp.set_mode(Mode::Down);
    tokio::time::sleep(OUTAGE / 6).await;
    let first = first.stop().await.unwrap();
    assert!(get(&first.spool_batches) >= 40, "the first run spooled {} batches", get(&first.spool_batches));
    let second = RunningAgent::start_with(config(&cp.url, engines), production_options(dir.path())).unwrap();
    tokio::time::sleep(OUTAGE / 6).await;
    // Then a server that is up but overloaded: 503 for 100 s, 429 for 100 s, with Retry-After.
    cp.set_mode(Mode::Unavailable { retry_after_secs: 5.0 });
    tokio::time::sleep(OUTAGE / 3).await;
    cp.set_mode(Mode::TooManyRequests { retry_after_secs: 5.0 });
    tokio::time::sleep(OUTAGE - outage_started.elapsed()).await;
    let spooled = get(&second.stats.spool_batches);
    assert!(spooled >= 250, "about 300 batches should wait in the spool, found {spooled}");
    cp.set_mode(Mode::Up);

    // Backoff is capped at 30 s (with jitter) and Retry-After was 5 s: the spool drains within a minute.
    let back = Instant::now();
    eventually("the spool to drain", Duration::from_secs(90), || get(&second.stats.spool_batches) == 0).await;
    let drain = back.elapsed();
    let second = second.stop().await.unwrap();

    let collected = first.samples_collected() + second.samples_collected();
    assert_eq!(cp.stored_samples(), collected, "samples lost or duplicated");
    let dropped = |s: &AgentStats| {
        get(&s.samples_dropped_spool_full) + get(&s.samples_dropped_refused) + get(&s.samples_dropped_spool_error)
    };
    assert_eq!(dropped(&first) + dropped(&second), 0);
    let arrivals = cp.arrivals();
    assert!(arrivals.windows(2).all(|w| w[0].1 < w[1].1), "batches arrived out of order");
    eprintln!(
        "5-minute outage: {collected} samples collected over two runs, all stored once; spool drained in {drain:?}"
    );
}
