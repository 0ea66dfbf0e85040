//! Delivery guarantees of the agent against a real HTTP control plane on 127.0.0.1 that stores batches by
//! `(agent_id, seq)`: every sample collected is stored exactly once across outages (dead server, 503, 429),
//! across a restart during an outage, with a torn spool tail; a full spool drops the oldest batches and says
//! how many; refused batches are not retried. Outages are short (a parameter) and the interval is 50 ms so
//! the suite stays fast; `long_outage.rs` runs the 5-minute scenario with production settings.

// A failed setup step should fail the test on the spot.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gpu_agent::agent::{AgentConfig, AgentOptions, AgentStats};
use gpu_agent::fakes::{FakeControlPlane, Mode};
use gpu_agent::protocol::{Command, CommandAction};
use gpu_agent::sender::Backoff;
use gpu_agent::spool::SpoolConfig;
use gpu_agent::testkit::{RunningAgent, get, sim_config, wait_until};
use tokio::sync::watch;

const INTERVAL: Duration = Duration::from_millis(50);
/// How long the control plane stays away in the outage tests (the scenario is 5 minutes).
const OUTAGE: Duration = Duration::from_millis(1500);

fn config(server: &str, agent_id: &str, interval: Duration) -> AgentConfig {
    AgentConfig { group: Some("sim-group".into()), ..sim_config(server, "t0ken", agent_id, interval) }
}

fn options(spool: &Path, max_bytes: u64) -> AgentOptions {
    AgentOptions {
        spool: Some(SpoolConfig { dir: Some(spool.to_path_buf()), max_bytes, max_batches: usize::MAX }),
        request_timeout: Some(Duration::from_secs(1)),
        backoff: Some(Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(200) }),
        ..AgentOptions::default()
    }
}

/// Starts an agent; panics if it cannot be set up.
fn start(cfg: AgentConfig, opts: AgentOptions) -> RunningAgent {
    RunningAgent::start_with(cfg, opts).unwrap()
}

/// A fake control plane and an agent `node` spooling up to `spool_bytes` in a fresh directory, once the
/// first `batches` batches have arrived.
async fn sending(node: &str, spool_bytes: u64, batches: usize) -> (FakeControlPlane, tempfile::TempDir, RunningAgent) {
    let cp = FakeControlPlane::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = start(config(&cp.url, node, INTERVAL), options(dir.path(), spool_bytes));
    eventually("first batches", Duration::from_secs(5), || cp.batches().len() >= batches).await;
    (cp, dir, agent)
}

async fn eventually(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    wait_until(what, limit, Duration::from_millis(10), done).await;
}

/// Sequence numbers of each agent arrive strictly increasing: replay keeps order, and live sends wait for it.
fn assert_in_order(cp: &FakeControlPlane) {
    let arrivals = cp.arrivals();
    for w in arrivals.windows(2) {
        if w[0].0 == w[1].0 {
            assert!(w[0].1 < w[1].1, "out of order: {:?} then {:?}", w[0], w[1]);
        }
    }
}

async fn outage_then_recovery(outage: Duration) {
    let (cp, _dir, agent) = sending("node-1", 16 << 20, 3).await;

    // A dead server, then one that answers 503, then 429, each with Retry-After.
    let third = outage / 3;
    cp.set_mode(Mode::Down);
    tokio::time::sleep(third).await;
    cp.set_mode(Mode::Unavailable { retry_after_secs: 0.1 });
    tokio::time::sleep(third).await;
    cp.set_mode(Mode::TooManyRequests { retry_after_secs: 0.1 });
    tokio::time::sleep(third).await;
    let spooled = get(&agent.stats.samples_spooled);
    assert!(spooled > 0, "nothing was spooled during the outage");
    cp.set_mode(Mode::Up);

    eventually("the spool to drain", Duration::from_secs(10), || get(&agent.stats.spool_batches) == 0).await;
    let stats = agent.stop().await.unwrap();
    assert_eq!(get(&stats.spool_batches), 0);
    assert_eq!(cp.stored_samples(), stats.samples_collected(), "samples lost or duplicated");
    assert_eq!(get(&stats.samples_sent), stats.samples_collected());
    assert_eq!(get(&stats.samples_dropped_spool_full) + get(&stats.samples_dropped_refused), 0);
    assert!(get(&stats.send_failures) > 0);
    assert_in_order(&cp);
}

#[tokio::test]
async fn no_sample_is_lost_or_duplicated_across_an_outage_of_a_dead_server_503_and_429() {
    outage_then_recovery(OUTAGE).await;
}

#[tokio::test]
async fn an_agent_restarted_during_an_outage_replays_its_predecessors_spool_first() {
    let (cp, dir, first) = sending("node-2", 16 << 20, 3).await;
    cp.set_mode(Mode::Down);
    tokio::time::sleep(OUTAGE / 2).await;
    let first = first.stop().await.unwrap();
    let left = get(&first.spool_batches);
    assert!(left > 0, "the first agent left nothing in its spool");

    let second = start(config(&cp.url, "node-2", INTERVAL), options(dir.path(), 16 << 20));
    tokio::time::sleep(OUTAGE / 2).await;
    assert!(get(&second.stats.spool_batches) > left, "the restarted agent did not pick up the spool");
    cp.set_mode(Mode::Up);
    eventually("the spool to drain", Duration::from_secs(10), || get(&second.stats.spool_batches) == 0).await;
    let second = second.stop().await.unwrap();

    assert_eq!(
        cp.stored_samples(),
        first.samples_collected() + second.samples_collected(),
        "samples lost or duplicated"
    );
    assert_in_order(&cp);
}

#[tokio::test]
async fn a_full_spool_drops_the_oldest_batches_first_and_counts_them() {
    // 16 KiB: about ten batches of two simulated GPUs and a serving sample.
    let (cp, _dir, agent) = sending("node-3", 16 << 10, 2).await;
    cp.set_mode(Mode::Down);
    // Whatever was in flight when the server went down has landed by now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before: Vec<u64> = cp.arrivals().iter().map(|a| a.1).collect();
    eventually("the spool to overflow", Duration::from_secs(10), || get(&agent.stats.batches_dropped_spool_full) >= 5)
        .await;
    assert!(get(&agent.stats.spool_bytes) <= 16 << 10);
    cp.set_mode(Mode::Up);
    eventually("the spool to drain", Duration::from_secs(10), || get(&agent.stats.spool_batches) == 0).await;
    let stats = agent.stop().await.unwrap();

    let dropped = get(&stats.samples_dropped_spool_full);
    assert!(dropped > 0);
    assert_eq!(
        cp.stored_samples() + dropped,
        stats.samples_collected(),
        "every sample is stored or counted as dropped"
    );
    // Oldest first: the batches replayed after the outage are the newest ones, so there is a gap right after
    // the last batch before the outage and none later (batches are 50 ms apart; the first replayed one is
    // much later than that).
    let after: Vec<u64> = cp.arrivals().iter().map(|a| a.1).filter(|s| !before.contains(s)).collect();
    let last_before = before.last().copied().unwrap_or(0);
    let first_after = after.first().copied().unwrap_or(0);
    assert!(
        first_after - last_before > 4 * INTERVAL.as_millis() as u64,
        "the oldest spooled batches were not the ones dropped"
    );
    assert_in_order(&cp);
}

/// Offsets and sample counts of the records in one spool segment (`magic | len u32 | crc u32 | samples u32 |
/// seq u64 | body`).
fn records(data: &[u8]) -> Vec<(usize, u32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 24 <= data.len() {
        assert_eq!(&data[at..at + 4], b"FPS1");
        let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap()) as usize;
        let samples = u32::from_le_bytes(data[at + 12..at + 16].try_into().unwrap());
        out.push((at, samples));
        at += 24 + len;
    }
    out
}

#[tokio::test]
async fn a_torn_record_at_the_tail_of_the_spool_is_skipped_and_the_rest_replayed() {
    let (cp, dir, first) = sending("node-4", 16 << 20, 2).await;
    cp.set_mode(Mode::Down);
    tokio::time::sleep(OUTAGE / 2).await;
    let first = first.stop().await.unwrap();

    // Tear the last record as a crash in the middle of its write would.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a spool segment");
    let data = std::fs::read(last).unwrap();
    let &(offset, torn_samples) = records(&data).last().expect("a record");
    let cut = offset + (data.len() - offset) / 2;
    std::fs::OpenOptions::new().write(true).open(last).unwrap().set_len(cut as u64).unwrap();

    cp.set_mode(Mode::Up);
    let second = start(config(&cp.url, "node-4", INTERVAL), options(dir.path(), 16 << 20));
    eventually("the spool to drain", Duration::from_secs(10), || get(&second.stats.spool_batches) == 0).await;
    let second = second.stop().await.unwrap();
    assert_eq!(get(&second.spool_torn_records), 1);
    assert_eq!(
        cp.stored_samples(),
        first.samples_collected() + second.samples_collected() - u64::from(torn_samples),
        "only the torn batch is missing"
    );
    assert_in_order(&cp);
}

#[tokio::test]
async fn batches_the_server_refuses_are_dropped_and_never_retried() {
    let cp = FakeControlPlane::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    cp.set_mode(Mode::Refuse);
    let agent = start(config(&cp.url, "node-5", INTERVAL), options(dir.path(), 16 << 20));
    eventually("refusals", Duration::from_secs(5), || get(&agent.stats.batches_refused) >= 5).await;
    cp.set_mode(Mode::Up);
    eventually("stored batches", Duration::from_secs(5), || cp.batches().len() >= 3).await;
    let stats = agent.stop().await.unwrap();

    assert_eq!(cp.posts(), get(&stats.batches_refused) + get(&stats.batches_acked), "a refused batch was sent again");
    assert_eq!(get(&stats.spool_batches), 0);
    assert_eq!(cp.stored_samples() + get(&stats.samples_dropped_refused), stats.samples_collected());
}

#[tokio::test]
async fn a_command_reaches_an_agent_at_the_default_interval_within_one_second() {
    let cp = FakeControlPlane::start().await.unwrap();
    let agent = start(config(&cp.url, "node-6", Duration::from_secs(1)), AgentOptions::default());
    eventually("first batch", Duration::from_secs(5), || !cp.batches().is_empty()).await;
    let queued = Instant::now();
    cp.push_command(Command {
        id: "cmd-1".into(),
        action: CommandAction::SetReplicas { group: "sim-group".into(), replicas: 3 },
    });
    eventually("the command to run", Duration::from_secs(3), || get(&agent.stats.commands_ok) == 1).await;
    let latency = queued.elapsed();
    // One interval plus the round trip and the polling of this test.
    assert!(latency < Duration::from_millis(1100), "command took {latency:?}");
    eventually("its result", Duration::from_secs(3), || {
        cp.batches().iter().any(|b| b.command_results.iter().any(|r| r.id == "cmd-1" && r.ok))
    })
    .await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn the_agent_serves_its_own_prometheus_metrics() {
    let stats = Arc::new(AgentStats::default());
    stats.gpu_samples.fetch_add(7, Ordering::Relaxed);
    stats.spool_bytes.store(1234, Ordering::Relaxed);
    let (_stop, rx) = watch::channel(false);
    let (addr, _h) = gpu_agent::selfmetrics::serve("127.0.0.1:0".parse().unwrap(), stats, rx).await.unwrap();
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    for want in [
        "fleetpilot_agent_samples_collected_total{kind=\"gpu\"} 7",
        "fleetpilot_agent_spool_bytes 1234",
        "fleetpilot_agent_samples_sent_total 0",
        "fleetpilot_agent_samples_spooled_total 0",
        "fleetpilot_agent_samples_dropped_total{reason=\"spool_full\"} 0",
        "fleetpilot_agent_scrape_errors_total 0",
        "fleetpilot_agent_command_results_total{result=\"ok\"} 0",
        "fleetpilot_agent_last_successful_send_timestamp_seconds 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}
