//! `fleetpilot bench ingest`: the real HTTP ingest endpoint of a separate server process, driven by
//! concurrent simulated agents against the private PostgreSQL, next to the raw ceiling measured in the same
//! run: a bulk binary `COPY` of the same rows straight into the same database.
//!
//! Phase 1 (saturation): closed-loop agents send as fast as acknowledgements come back; its throughput is
//! the end-to-end figure. Phase 2 (latency): the same agents paced at 80 % of that throughput; its ack
//! latencies are the p50/p99 figures. Then the ceiling. One sample is one metric value of one GPU at one
//! timestamp (12 per GPU reading).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gpu_agent::protocol::{GPU_METRICS_PER_SAMPLE, GpuSample};
use tokio::sync::Mutex;

use super::{peak_rss_mb, quantile};
use crate::db;

/// Options of the ingest benchmark.
#[derive(Debug, Clone)]
pub struct IngestBenchOptions {
    /// Seconds of the saturation phase (the latency phase runs half as long).
    pub seconds: u64,
    /// Concurrent simulated agents.
    pub agents: usize,
    /// GPUs per agent.
    pub gpus: usize,
    /// Readings per GPU in one batch (an agent uploading every N seconds of 1 s samples).
    pub readings_per_batch: usize,
    /// Working directory for the benchmark's private cluster (wiped first).
    pub data_dir: std::path::PathBuf,
}

/// The figures.
#[derive(Debug, Clone)]
pub struct IngestBenchResult {
    /// End-to-end samples/s acknowledged in the saturation phase.
    pub samples_per_s: f64,
    /// Samples/s of a bulk COPY of the same rows.
    pub ceiling_samples_per_s: f64,
    /// Acknowledgement latency at 80 % load, median, ms.
    pub ack_p50_ms: f64,
    /// Acknowledgement latency at 80 % load, 99th percentile, ms.
    pub ack_p99_ms: f64,
    /// Peak RSS of the server process, MiB.
    pub server_peak_rss_mb: f64,
}

/// A batch body with a fixed-width slot for `seq`, so sending costs no encoding (JSON allows the padding
/// spaces). Returns the bytes and the slot's offset.
fn template(agent: usize, gpus: usize, readings: usize, base_ms: i64) -> (Vec<u8>, usize) {
    let mut samples = Vec::with_capacity(gpus * readings);
    for r in 0..readings {
        for g in 0..gpus {
            let (ts_ms, util) = (base_ms + r as i64 * 1000, ((agent * 7 + g * 13 + r) % 100) as f64);
            samples.push(GpuSample {
                mem_used_bytes: Some(40_000_000_000 + (r as u64) * 1_000_000),
                power_w: Some(350.0 + g as f64),
                temp_c: Some(60.0 + (r % 10) as f64),
                tensor_active: Some(0.25),
                ..GpuSample::h100(ts_ms, g as u32, format!("GPU-bench-{agent:05}-{g:02}"), util)
            });
        }
    }
    let gpus_json = serde_json::to_string(&samples).unwrap_or_default();
    let head = format!(
        r#"{{"version":1,"agent_id":"bench-node-{agent:05}","sent_at_ms":{base_ms},"node":{{"hostname":"bench-{agent}","agent_version":"bench","gpu_source":"simulated"}},"seq":"#
    );
    let slot = head.len();
    let body = format!("{head}{:20},\"gpus\":{gpus_json}}}", 0);
    (body.into_bytes(), slot)
}

fn set_seq(body: &mut [u8], slot: usize, seq: u64) {
    let s = format!("{seq:<20}");
    body[slot..slot + 20].copy_from_slice(s.as_bytes());
}

pub(super) struct Server {
    pub(super) child: tokio::process::Child,
    pub(super) url: String,
}

pub(super) async fn start_server(database_url: &str, api: &str, agent: &str) -> anyhow::Result<Server> {
    let port = crate::pg::free_port()?;
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::new(exe)
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("FLEETPILOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEETPILOT_API_TOKEN", api)
        .env("FLEETPILOT_AGENT_TOKEN", agent)
        // The benchmark plays every node with the shared token.
        .env("FLEETPILOT_AGENT_TOKEN_CAN_WRITE", "true")
        .env("FLEETPILOT_CONTROL__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the server process")?;
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if http.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "server did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Server { child, url })
}

pub(super) struct Phase {
    pub(super) samples: u64,
    pub(super) elapsed: Duration,
    pub(super) latencies_ms: Vec<f64>,
    pub(super) busy: u64,
    pub(super) errors: u64,
}

/// Runs `agents` senders for `secs`; `interval` paces each agent (None = closed loop).
pub(super) async fn phase(
    url: &str,
    token: &str,
    opts: &IngestBenchOptions,
    seq_base: u64,
    secs: f64,
    interval: Option<Duration>,
) -> Phase {
    let http = reqwest::Client::builder().pool_max_idle_per_host(opts.agents).build().unwrap_or_default();
    let samples = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let per_batch = (opts.gpus * opts.readings_per_batch * GPU_METRICS_PER_SAMPLE) as u64;
    let base_ms = chrono::Utc::now().timestamp_millis() - 60_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..opts.agents {
        let (mut body, slot) = template(a, opts.gpus, opts.readings_per_batch, base_ms);
        let (http, url, token) = (http.clone(), format!("{url}/api/v1/ingest"), token.to_string());
        let (samples, busy, errors, latencies) = (samples.clone(), busy.clone(), errors.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = seq_base;
            let mut local = Vec::new();
            // Spread paced agents over the interval so they do not arrive in lockstep.
            let mut next = Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(a as f64 / 97.0 % 1.0));
            while Instant::now() < deadline {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += i;
                }
                seq += 1;
                set_seq(&mut body, slot, seq);
                let json = [("content-type", "application/json")];
                let (r, ms) = super::timed_post(&http, &url, &token, &json, body.clone()).await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        local.push(ms);
                        samples.fetch_add(per_batch, Ordering::Relaxed);
                    }
                    Ok(r) if r.status().as_u16() == 429 => {
                        busy.fetch_add(1, Ordering::Relaxed);
                        seq -= 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        seq -= 1;
                    }
                }
            }
            latencies.lock().await.extend(local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let latencies_ms = std::mem::take(&mut *latencies.lock().await);
    Phase {
        samples: samples.load(Ordering::Relaxed),
        elapsed,
        latencies_ms,
        busy: busy.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Bulk COPY of `rows` GPU readings in chunks of the server's group size; returns samples/s.
async fn ceiling(database_url: &str, opts: &IngestBenchOptions, rows: usize) -> anyhow::Result<f64> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    let base_ms = chrono::Utc::now().timestamp_millis() - 60_000;
    let per_agent = opts.gpus * opts.readings_per_batch;
    let chunk_rows = 20_000usize;
    // Same rows as the agents send, built once (the timed part is the COPY, not the encoding of test data).
    let mut templates: Vec<(String, Vec<GpuSample>)> = Vec::new();
    for a in 0..opts.agents {
        let (body, _) = template(a, opts.gpus, opts.readings_per_batch, base_ms);
        let text = String::from_utf8_lossy(&body).replace(&" ".repeat(19), "");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let gpus: Vec<GpuSample> = serde_json::from_value(v["gpus"].clone()).unwrap_or_default();
        templates.push((format!("bench-node-{a:05}"), gpus));
    }
    // Identities are resolved once, untimed (ingest's cache does the same after the first batch of a GPU).
    let keys = db::dimensions::GpuKeys::default();
    let pool = db::connect(database_url, 1).await?;
    let identities: Vec<db::dimensions::GpuRef<'_>> =
        templates.iter().flat_map(|(n, gpus)| gpus.iter().map(move |g| db::dimensions::GpuRef::of(n, g))).collect();
    keys.resolve(&pool, &identities).await?;
    pool.close().await;
    let mut payloads = Vec::new();
    let mut produced = 0usize;
    while produced < rows {
        let mut chunk: Vec<(&str, &GpuSample)> = Vec::with_capacity(chunk_rows);
        'fill: for (node, gpus) in templates.iter().cycle() {
            for g in gpus {
                chunk.push((node.as_str(), g));
                if chunk.len() >= chunk_rows || produced + chunk.len() >= rows {
                    break 'fill;
                }
            }
        }
        produced += chunk.len();
        payloads.push(db::ingest::encode_gpu_rows(&keys, chunk.into_iter(), chunk_rows));
        if per_agent == 0 {
            break;
        }
    }
    let start = Instant::now();
    for p in payloads {
        let mut tx = conn.begin().await?;
        db::ingest::copy_in(&mut tx, db::ingest::GPU_COPY, p).await?;
        tx.commit().await?;
    }
    let secs = start.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(produced as f64 * GPU_METRICS_PER_SAMPLE as f64 / secs.max(1e-9))
}

/// Decode throughput of the wire encodings on one core, samples/s: JSON (what agents send) and postcard
/// (a compact binary serde format), measured on the benchmark's own batch.
pub fn decode_rates(opts: &IngestBenchOptions) -> (f64, f64, usize, usize) {
    let (mut body, slot) = template(0, opts.gpus, opts.readings_per_batch, 1_700_000_000_000);
    set_seq(&mut body, slot, 1);
    let Ok(batch) = serde_json::from_slice::<gpu_agent::protocol::Batch>(&body) else { return (0.0, 0.0, 0, 0) };
    // postcard is positional: a field the JSON encoding skips when empty (`probes`) cannot round-trip, so
    // the binary copy carries one probe result (one row against the batch's hundreds of GPU samples).
    let mut with_probe = batch.clone();
    if with_probe.probes.is_empty() {
        with_probe.probes.push(gpu_agent::protocol::ProbeSample {
            ts_ms: batch.sent_at_ms,
            gpu_index: 0,
            uuid: None,
            bandwidth_gb_s: Some(1000.0),
            error: None,
        });
    }
    let binary = postcard::to_allocvec(&with_probe).unwrap_or_default();
    let samples = batch.metric_values() as f64;
    let rate = |f: &dyn Fn() -> bool| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(700) {
            if f() {
                n += 1;
            }
        }
        n as f64 * samples / start.elapsed().as_secs_f64()
    };
    let json =
        rate(&|| serde_json::from_slice::<gpu_agent::protocol::Batch>(&body).is_ok_and(|b| b.validate().is_ok()));
    let bin = rate(&|| postcard::from_bytes::<gpu_agent::protocol::Batch>(&binary).is_ok_and(|b| b.validate().is_ok()));
    (json, bin, body.len(), binary.len())
}

/// Runs the benchmark and prints its figures; the last line is machine-readable.
pub async fn run(opts: IngestBenchOptions) -> anyhow::Result<IngestBenchResult> {
    anyhow::ensure!(opts.seconds >= 1, "--seconds must be at least 1");
    anyhow::ensure!(
        opts.agents >= 1 && opts.gpus >= 1 && opts.readings_per_batch >= 1,
        "--agents, --gpus, --readings must be at least 1"
    );
    // Durable settings, like production: the ceiling is measured under the same ones.
    let (mut pg, url, pool) = super::fresh_database(&opts.data_dir, false).await?;
    pool.close().await;
    let server = start_server(&url, "bench-api", "bench-agent").await?;
    let pid = server.child.id().unwrap_or(0);
    println!(
        "fleetpilot bench ingest: {} agents x {} GPUs x {} readings per batch ({} samples per batch), server pid {pid}",
        opts.agents,
        opts.gpus,
        opts.readings_per_batch,
        opts.gpus * opts.readings_per_batch * GPU_METRICS_PER_SAMPLE
    );

    let (json_rate, bin_rate, json_bytes, bin_bytes) = decode_rates(&opts);
    println!(
        "decode + validate on one core: JSON {json_rate:.0} samples/s ({json_bytes} bytes/batch), postcard {bin_rate:.0} samples/s ({bin_bytes} bytes/batch)"
    );
    // Warm-up: fills connection pools and the first partitions.
    let _ = phase(&server.url, "bench-agent", &opts, 0, 2.0, None).await;
    let sat = phase(&server.url, "bench-agent", &opts, 1_000_000, opts.seconds as f64, None).await;
    let samples_per_s = sat.samples as f64 / sat.elapsed.as_secs_f64();
    let mut sat_lat = sat.latencies_ms.clone();
    println!(
        "saturation: {:.0} samples/s end to end over {:.1}s ({} batches acknowledged, {} answered 429, {} errors); ack p50 {:.1} ms p99 {:.1} ms",
        samples_per_s,
        sat.elapsed.as_secs_f64(),
        sat.latencies_ms.len(),
        sat.busy,
        sat.errors,
        quantile(&mut sat_lat, 0.5),
        quantile(&mut sat_lat, 0.99),
    );

    let batch_samples = (opts.gpus * opts.readings_per_batch * GPU_METRICS_PER_SAMPLE) as f64;
    let per_agent_rate = 0.8 * samples_per_s / batch_samples / opts.agents as f64;
    let interval = Duration::from_secs_f64(1.0 / per_agent_rate.max(1e-3));
    let paced =
        phase(&server.url, "bench-agent", &opts, 2_000_000, (opts.seconds as f64 / 2.0).max(1.0), Some(interval)).await;
    let mut lat = paced.latencies_ms.clone();
    let (p50, p99) = (quantile(&mut lat, 0.5), quantile(&mut lat, 0.99));
    println!(
        "at 80% load ({:.0} samples/s offered): {:.0} samples/s acknowledged; ack p50 {p50:.1} ms, p99 {p99:.1} ms ({} errors)",
        0.8 * samples_per_s,
        paced.samples as f64 / paced.elapsed.as_secs_f64(),
        paced.errors
    );
    let server_peak_rss_mb = peak_rss_mb(pid).unwrap_or(f64::NAN);
    drop(server);

    let rows = (sat.samples / GPU_METRICS_PER_SAMPLE as u64) as usize;
    let ceiling_samples_per_s = ceiling(&url, &opts, rows.max(20_000)).await?;
    let ratio = samples_per_s / ceiling_samples_per_s;
    println!("ceiling: bulk binary COPY of the same rows into the same database: {ceiling_samples_per_s:.0} samples/s");
    println!("ratio end-to-end / ceiling: {ratio:.3}; server peak RSS {server_peak_rss_mb:.1} MiB");
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    let _ = std::fs::remove_dir_all(&opts.data_dir);
    println!(
        "samples_per_s={samples_per_s:.0} ceiling_samples_per_s={ceiling_samples_per_s:.0} ratio={ratio:.3} ack_p50_ms={p50:.1} ack_p99_ms={p99:.1} server_peak_rss_mb={server_peak_rss_mb:.1}"
    );
    Ok(IngestBenchResult { samples_per_s, ceiling_samples_per_s, ack_p50_ms: p50, ack_p99_ms: p99, server_peak_rss_mb })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_wire_encodings_of_the_template_decode() {
        let opts = IngestBenchOptions {
            seconds: 1,
            agents: 1,
            gpus: 2,
            readings_per_batch: 2,
            data_dir: "/nonexistent".into(),
        };
        let (json, bin, _, _) = decode_rates(&opts);
        assert!(json > 0.0 && bin > 0.0, "json {json} postcard {bin}");
    }

    #[test]
    fn the_template_is_a_valid_batch_with_a_patchable_seq() {
        let (mut body, slot) = template(3, 2, 2, 1_700_000_000_000);
        set_seq(&mut body, slot, 12345);
        let b: gpu_agent::protocol::Batch = serde_json::from_slice(&body).unwrap();
        assert_eq!(b.seq, 12345);
        assert_eq!(b.gpus.len(), 4);
        assert_eq!(b.validate(), Ok(()));
    }
}
