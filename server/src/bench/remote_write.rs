//! `fleetpilot bench remote-write`: Prometheus remote-write ingest against a separate server process and the
//! private PostgreSQL, next to the agent protocol's ingest of the same GPU readings measured in the same run.
//!
//! Each simulated Prometheus scrapes `--nodes-per-request` DCGM exporters and sends what it scraped as
//! Prometheus does (12 `DCGM_FI_*` series per GPU with dcgm-exporter's labels, one sample per series per
//! request when scrapes are further apart than the flush deadline, about 2,000 samples per request), as fast as
//! it is acknowledged; each agent sends its node's readings as JSON batches (`--readings` per batch).
//!
//! Units, the same in both phases: one sample is one metric value of one GPU at one timestamp, 12 per GPU reading
//! (a remote-write request carries 12 series per GPU; an agent's GPU reading carries 12 metric values), and both
//! phases store the same rows: one GPU sample row per GPU and timestamp. The decode-and-convert rate on one core
//! (the receiver's own steps, timed one by one) shows whether protobuf and snappy are the bottleneck.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gpu_agent::protocol::GPU_METRICS_PER_SAMPLE;

use super::ingest::{IngestBenchOptions, phase, start_server};
use super::quantile;
use crate::ingest::remote_write::{Label, PromSample, TimeSeries, Trackers, WriteRequest, WriteRequestRef, encode};

/// Options of the benchmark.
#[derive(Debug, Clone)]
pub struct RemoteWriteBenchOptions {
    /// Seconds of each phase.
    pub seconds: u64,
    /// Concurrent remote-write senders (Prometheus instances or shards); the agent phase runs one agent per
    /// node of the same fleet (`senders × nodes_per_request`).
    pub senders: usize,
    /// GPUs per node.
    pub gpus: usize,
    /// Readings per agent batch (an agent uploading every N seconds).
    pub readings: usize,
    /// Nodes (DCGM exporters) in one remote-write request.
    pub nodes_per_request: usize,
    /// Working directory (wiped).
    pub data_dir: std::path::PathBuf,
}

/// The DCGM fields a request carries per GPU and timestamp, with a value for GPU `g` at reading `r`.
const FIELDS: [&str; 12] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
];

fn value(field: usize, g: usize, r: usize) -> f64 {
    match field {
        0 => ((g * 13 + r) % 100) as f64,
        1 => 40_000.0 + r as f64,
        2 => 41_000.0 - r as f64,
        3 => 350.0 + g as f64,
        4 | 5 => 60.0 + (r % 10) as f64,
        6 => 1980.0,
        7 => 2619.0,
        8 | 9 => 0.0,
        _ => 0.5,
    }
}

/// A DCGM-shaped request for `nodes` with `readings` timestamps from `base_ms`.
pub fn dcgm_request(nodes: &[String], gpus: usize, readings: usize, base_ms: i64) -> WriteRequest {
    let mut timeseries = Vec::with_capacity(nodes.len() * gpus * FIELDS.len());
    for node in nodes {
        for g in 0..gpus {
            for (f, name) in FIELDS.iter().enumerate() {
                let l = |k: &str, v: String| Label { name: k.into(), value: v };
                timeseries.push(TimeSeries {
                    labels: vec![
                        l("__name__", (*name).into()),
                        l("DCGM_FI_DRIVER_VERSION", "570.133.20".into()),
                        l("Hostname", node.into()),
                        l("UUID", format!("GPU-{node}-{g:02}")),
                        l("device", format!("nvidia{g}")),
                        l("gpu", g.to_string()),
                        l("instance", format!("{node}:9400")),
                        l("job", "dcgm".into()),
                        l("modelName", "NVIDIA H100 80GB HBM3".into()),
                        l("pci_bus_id", format!("00000000:{:02X}:00.0", 0x18 + g)),
                    ],
                    samples: (0..readings)
                        .map(|r| PromSample { value: value(f, g, r), timestamp: base_ms + r as i64 * 1000 })
                        .collect(),
                });
            }
        }
    }
    WriteRequest { timeseries }
}

/// Decode + convert + validate on one core, metric values per second, with the share of each stage: the
/// receiver's own steps ([`Trackers::convert_body`] is decompress + decode + convert), timed one by one.
fn decode_rate(opts: &RemoteWriteBenchOptions) -> (f64, usize, [f64; 3]) {
    let nodes: Vec<String> = (0..opts.nodes_per_request).map(|n| format!("bench-node-{n:05}")).collect();
    let body = encode(&dcgm_request(&nodes, opts.gpus, 1, 1_700_000_000_000));
    let trackers = Trackers::default();
    let values = (opts.nodes_per_request * opts.gpus * GPU_METRICS_PER_SAMPLE) as f64;
    let mut raw = vec![0u8; snap::raw::decompress_len(&body).unwrap_or(0)];
    let mut stage = [Duration::ZERO; 3];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(1500) {
        let t0 = Instant::now();
        let Ok(len) = snap::raw::Decoder::new().decompress(&body, &mut raw) else { break };
        let Ok(req) = WriteRequestRef::decode(&raw[..len]) else { break };
        let t1 = Instant::now();
        let c = trackers.convert_ref(&req, &n.to_le_bytes());
        let t2 = Instant::now();
        let ok = c.batches.iter().all(|b| b.validate().is_ok());
        let t3 = Instant::now();
        stage[0] += t1 - t0;
        stage[1] += t2 - t1;
        stage[2] += t3 - t2;
        if ok {
            n += 1;
        }
    }
    let total: f64 = stage.iter().map(Duration::as_secs_f64).sum::<f64>().max(1e-9);
    let shares = stage.map(|d| d.as_secs_f64() / total);
    (n as f64 * values / start.elapsed().as_secs_f64(), body.len(), shares)
}

/// Runs the benchmark and prints its figures; the last line is machine-readable.
pub async fn run(opts: RemoteWriteBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.seconds >= 1, "--seconds must be at least 1");
    anyhow::ensure!(
        (1..=1024).contains(&opts.senders)
            && (1..=64).contains(&opts.gpus)
            && (1..=60).contains(&opts.readings)
            && (1..=1000).contains(&opts.nodes_per_request),
        "--senders 1..=1024, --gpus 1..=64, --readings 1..=60 and --nodes-per-request 1..=1000"
    );
    let (mut pg, url, pool) = super::fresh_database(&opts.data_dir, false).await?;
    pool.close().await;
    let server = start_server(&url, "bench-api", "bench-agent").await?;
    let (decode_per_s, body_bytes, shares) = decode_rate(&opts);
    let per_request = (opts.nodes_per_request * opts.gpus * GPU_METRICS_PER_SAMPLE) as u64;
    println!(
        "fleetpilot bench remote-write: {} Prometheus senders x {} nodes x {} GPUs per request ({per_request} samples, {body_bytes} bytes snappy), against {} agents (one per node) x {} readings per batch; decode + convert + validate on one core: {decode_per_s:.0} samples/s (decode {:.0} %, convert {:.0} %, validate {:.0} %)",
        opts.senders,
        opts.nodes_per_request,
        opts.gpus,
        opts.senders * opts.nodes_per_request,
        opts.readings,
        shares[0] * 100.0,
        shares[1] * 100.0,
        shares[2] * 100.0
    );

    // The agent protocol, same readings, same server.
    let agent_opts = IngestBenchOptions {
        seconds: opts.seconds,
        agents: opts.senders * opts.nodes_per_request,
        gpus: opts.gpus,
        readings_per_batch: opts.readings,
        data_dir: opts.data_dir.clone(),
    };
    let _ = phase(&server.url, "bench-agent", &agent_opts, 0, 2.0, None).await;
    let agent = phase(&server.url, "bench-agent", &agent_opts, 1_000_000, opts.seconds as f64, None).await;
    let agent_per_s = agent.samples as f64 / agent.elapsed.as_secs_f64();
    println!(
        "agent protocol (JSON): {agent_per_s:.0} samples/s ({} errors; samples = metric values, 12 per GPU reading, in both phases)",
        agent.errors
    );

    // Remote-write: every request distinct (a repeat would be dropped as a duplicate), built before the clock
    // starts, as many as the agent phase's rate suggests plus headroom.
    let expected = (agent_per_s * 2.0 * opts.seconds as f64 / per_request as f64 / opts.senders as f64).ceil() as usize;
    let per_sender = expected.clamp(16, 4000);
    let base_ms = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let bodies: Vec<Arc<Vec<Vec<u8>>>> = (0..opts.senders)
        .map(|s| {
            let nodes: Vec<String> =
                (0..opts.nodes_per_request).map(|n| format!("rw-node-{:05}", s * opts.nodes_per_request + n)).collect();
            Arc::new(
                (0..per_sender)
                    .map(|k| encode(&dcgm_request(&nodes, opts.gpus, 1, base_ms + k as i64 * 1000)))
                    .collect(),
            )
        })
        .collect();
    let http = reqwest::Client::builder().pool_max_idle_per_host(opts.senders).build()?;
    let samples = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for b in bodies {
        let (http, url) = (http.clone(), format!("{}/api/v1/write", server.url));
        let (samples, errors, lat) = (samples.clone(), errors.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            for body in b.iter() {
                if Instant::now() >= deadline {
                    break;
                }
                let headers = [
                    ("content-encoding", "snappy"),
                    ("content-type", "application/x-protobuf"),
                    ("x-prometheus-remote-write-version", "0.1.0"),
                ];
                let (r, ms) = super::timed_post(&http, &url, "bench-agent", &headers, body.clone()).await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        local.push(ms);
                        samples.fetch_add(per_request, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat.lock().await.extend(local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rw_per_s = samples.load(Ordering::Relaxed) as f64 / elapsed;
    let mut lat = std::mem::take(&mut *lat.lock().await);
    let (p50, p99) = (quantile(&mut lat, 0.5), quantile(&mut lat, 0.99));
    let ratio = rw_per_s / agent_per_s.max(1e-9);
    println!(
        "remote-write: {rw_per_s:.0} samples/s over {elapsed:.1}s ({} requests, {} errors), p50 {p50:.1} ms, p99 {p99:.1} ms; ratio to the agent protocol {ratio:.3}",
        lat.len(),
        errors.load(Ordering::Relaxed)
    );
    drop(server);
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    let _ = std::fs::remove_dir_all(&opts.data_dir);
    println!(
        "samples_per_s={rw_per_s:.0} agent_samples_per_s={agent_per_s:.0} ratio={ratio:.3} decode_samples_per_s={decode_per_s:.0} p99_ms={p99:.1}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_request_converts_to_one_valid_batch_of_every_gpu_reading() {
        let req = dcgm_request(&["n1".into(), "n2".into()], 4, 3, 1_700_000_000_000);
        let c = Trackers::default().convert_body(&encode(&req), b"x").unwrap();
        assert_eq!(c.batches.len(), 2);
        assert_eq!(c.batches[0].gpus.len(), 12);
        assert!(c.batches[0].validate().is_ok());
        assert_eq!(c.batches[0].gpus[0].sm_clock_mhz, Some(1980));
    }
}
