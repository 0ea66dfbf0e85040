//! `fleetpilot bench storage`: bytes at rest of raw GPU telemetry, through the production path with the
//! clock simulated. The simulator (`gpu_agent::sim::NodeSim`, the demo's agents) produces `--hours` of 1 s
//! samples for `--gpus` GPUs, time compressed; they go through the real ingest pipeline (`IngestQueue`: group
//! commit, partitions on demand, the GPU key cache, binary COPY into the hot table) while the real packer
//! (`db::pack::run`) and rollup job (`db::rollups::run`) run beside it at the simulated clock, as the server's
//! background tasks do at the real one.
//!
//! Then it reports:
//! - bytes at rest per metric value of the raw data (hot partitions + chunks + the `gpus` dimension, with
//!   their indexes and TOAST), the same for the serving samples the simulated replicas report, and its ratio to the layout before packing (one row per GPU-second with the
//!   identity strings), measured in the same run on the first `--baseline-minutes` of the same samples;
//! - ingest rows/s while packing and rollups run;
//! - p50/p99 of one GPU's 1-hour chart (newest hour: hot rows and chunks), of a 1-hour chart of packed
//!   history, and of the 24-hour chart (rollups).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use gpu_agent::protocol::{
    Batch, GPU_METRICS_PER_SAMPLE, GpuSample, NodeInfo, PROTOCOL_VERSION, SERVING_METRICS_PER_SAMPLE, ServingSample,
};
use gpu_agent::sim::{NodeSim, SimConfig, Trace};
use tokio::sync::oneshot;

use super::quantile;
use crate::db::{self, Partitions, copy::CopyBinary, series};
use crate::ingest::{IngestQueue, QueueLimits, StoreResult};
use crate::telemetry::Metrics;

/// Options of the storage benchmark.
#[derive(Debug, Clone)]
pub struct StorageBenchOptions {
    /// GPUs in the fleet (8 per node).
    pub gpus: usize,
    /// Simulated hours of 1 s samples.
    pub hours: i64,
    /// Seconds of readings per agent batch (an agent's upload interval).
    pub batch_secs: i64,
    /// Minutes of the same samples written in the old layout, for the ratio.
    pub baseline_minutes: i64,
    /// Timed runs per chart read.
    pub runs: usize,
    /// Working directory (wiped).
    pub data_dir: std::path::PathBuf,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Copy)]
pub struct StorageBenchResult {
    /// Bytes at rest per metric value, raw data (hot + packed).
    pub bytes_per_sample: f64,
    /// The same for the old layout, measured in this run.
    pub baseline_bytes_per_sample: f64,
    /// `bytes_per_sample / baseline_bytes_per_sample`.
    pub ratio: f64,
    /// Ingest rows (GPU samples) per second while packing ran.
    pub rows_per_s: f64,
    /// Worst p99 of the chart reads, ms.
    pub chart_p99_ms: f64,
    /// Bytes at rest per metric value of the raw serving samples (hot + packed + replica identities).
    pub serving_bytes_per_sample: f64,
}

const GPUS_PER_NODE: u32 = 8;

fn node_name(n: u32) -> String {
    format!("store-node-{n:05}")
}

fn sims(nodes: u32, start_ms: i64) -> Vec<NodeSim> {
    let trace = Trace::synthetic(60.0, 24 * 60, 19);
    (0..nodes)
        .map(|i| {
            let cfg = SimConfig {
                node: node_name(i),
                gpus: GPUS_PER_NODE,
                node_index: i,
                nodes_total: nodes,
                speedup: 1.0,
                epoch_ms: start_ms,
                initial_replicas: nodes * GPUS_PER_NODE / 2,
                cold_start_secs: 120.0,
                prefill_tps: 40_000.0,
                decode_tps: 4_000.0,
                hot_gpu: Some(i % GPUS_PER_NODE),
                deployment: "bench/storage".into(),
                seed: 19,
            };
            NodeSim::new(cfg, trace.clone())
        })
        .collect()
}

/// Runs the benchmark and prints its figures; the last line is machine-readable.
pub async fn run(opts: StorageBenchOptions) -> anyhow::Result<StorageBenchResult> {
    anyhow::ensure!(opts.gpus >= GPUS_PER_NODE as usize, "--gpus must be at least {GPUS_PER_NODE}");
    anyhow::ensure!((1..=7 * 24).contains(&opts.hours), "--hours must be 1 to 168");
    anyhow::ensure!((1..=60).contains(&opts.batch_secs), "--batch-secs must be 1 to 60");
    anyhow::ensure!(opts.baseline_minutes >= 1, "--baseline-minutes must be at least 1");
    anyhow::ensure!(opts.runs >= 1, "--runs must be at least 1");
    let nodes = (opts.gpus / GPUS_PER_NODE as usize) as u32;
    let gpus = nodes as usize * GPUS_PER_NODE as usize;
    // Durable settings, like production.
    let (mut pg, url, setup_pool) = super::fresh_database(&opts.data_dir, false).await?;
    setup_pool.close().await;
    let pool = db::connect(&url, 8).await?;
    let end: DateTime<Utc> = Utc::now().duration_trunc(Duration::seconds(1))?;
    let start = end - Duration::hours(opts.hours);
    let (start_ms, end_ms) = (start.timestamp_millis(), end.timestamp_millis());
    println!("simulating {gpus} GPUs on {nodes} nodes, {} h at 1 s, {} s per agent batch", opts.hours, opts.batch_secs);

    let partitions = Arc::new(Partitions::default());
    let in_flight = 4 * nodes as usize;
    let limits = QueueLimits {
        max_queued_rows: 2 * (in_flight + nodes as usize) * (GPUS_PER_NODE as usize * opts.batch_secs as usize + 1),
        max_group_rows: 20_000,
        writers: 2,
    };
    let (queue, writers) = IngestQueue::start(pool.clone(), partitions.clone(), Metrics::new(), limits);

    // The server's background jobs, at the simulated clock (the newest sample submitted).
    let frontier = Arc::new(AtomicI64::new(start_ms));
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (pool, partitions, frontier, stop) = (pool.clone(), partitions.clone(), frontier.clone(), stop.clone());
        tokio::spawn(async move {
            let mut packed = db::pack::PackStats::default();
            let mut pack_secs = 0.0;
            while !stop.load(Ordering::Relaxed) {
                let now = db::ingest::ts(frontier.load(Ordering::Relaxed));
                let t = Instant::now();
                let s = db::pack::run(&pool, now, &partitions).await?;
                pack_secs += t.elapsed().as_secs_f64();
                packed.partitions += s.partitions;
                packed.chunks += s.chunks;
                packed.samples += s.samples;
                db::rollups::run(&pool, now).await?;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Ok::<_, sqlx::Error>((packed, pack_secs))
        })
    };

    let mut sims = sims(nodes, start_ms);
    let mut pending: VecDeque<oneshot::Receiver<StoreResult>> = VecDeque::new();
    let total_rows = gpus as u64 * (opts.hours * 3600) as u64;
    let pb = indicatif::ProgressBar::new(total_rows);
    let ingest_started = Instant::now();
    let mut seq = 0u64;
    let mut serving_total = 0u64;
    let mut t = start_ms;
    while t < end_ms {
        let window_end = (t + opts.batch_secs * 1000).min(end_ms);
        seq += 1;
        for (i, sim) in sims.iter_mut().enumerate() {
            let mut gpus_rows: Vec<GpuSample> = Vec::with_capacity(GPUS_PER_NODE as usize * opts.batch_secs as usize);
            let mut serving_rows: Vec<ServingSample> = Vec::new();
            let mut s = t;
            while s < window_end {
                let (g, sv) = sim.sample(s);
                gpus_rows.extend(g);
                serving_rows.extend(sv);
                s += 1000;
            }
            serving_total += serving_rows.len() as u64;
            let rows = gpus_rows.len() as u64;
            let batch = Batch {
                version: PROTOCOL_VERSION,
                agent_id: node_name(i as u32),
                seq,
                node: NodeInfo {
                    hostname: node_name(i as u32),
                    agent_version: "bench".into(),
                    gpu_source: "simulated".into(),
                    group: None,
                    deployment: Some("bench/storage".into()),
                },
                gpus: gpus_rows,
                serving: serving_rows,
                command_results: Vec::new(),
                probes: Vec::new(),
                sent_at_ms: window_end,
            };
            // The queue holds more rows than the batches kept in flight here (below), so it never answers busy.
            pending.push_back(queue.submit(batch).map_err(|e| anyhow::anyhow!("ingest refused a batch: {e}"))?);
            pb.inc(rows);
        }
        while pending.len() > in_flight {
            if let Some(rx) = pending.pop_front() {
                rx.await?.map_err(|e| anyhow::anyhow!("a batch was not stored: {e}"))?;
            }
        }
        frontier.store(window_end, Ordering::Relaxed);
        t = window_end;
    }
    while let Some(rx) = pending.pop_front() {
        rx.await?.map_err(|e| anyhow::anyhow!("a batch was not stored: {e}"))?;
    }
    let ingest_secs = ingest_started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    let (mut packed, pack_secs) = background.await??;
    drop(queue);
    for w in writers {
        w.await?;
    }
    // A last pass at the end of the simulated day, as the next minute of the server would run.
    let last = db::pack::run(&pool, end, &partitions).await?;
    packed.partitions += last.partitions;
    packed.chunks += last.chunks;
    packed.samples += last.samples;
    db::rollups::run(&pool, end).await?;
    let rows_per_s = total_rows as f64 / ingest_secs.max(1e-9);
    println!(
        "packing while ingesting: {} samples in {pack_secs:.1} s of pack passes ({:.0} samples/s packed)",
        packed.samples,
        packed.samples as f64 / pack_secs.max(1e-9)
    );
    println!(
        "ingested {total_rows} GPU samples in {ingest_secs:.1} s: {rows_per_s:.0} rows/s ({:.0} metric values/s) while packing ran; \
         packed {} hours into {} chunks",
        rows_per_s * GPU_METRICS_PER_SAMPLE as f64,
        packed.partitions,
        packed.chunks
    );

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM gpu_samples").fetch_one(&pool).await?;
    anyhow::ensure!(stored as u64 == total_rows, "{stored} samples readable, {total_rows} ingested");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM serving_samples").fetch_one(&pool).await?;
    anyhow::ensure!(stored as u64 == serving_total, "{stored} serving samples readable, {serving_total} ingested");
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    let size = db::pack::raw_sizes(&pool).await?;
    let values = total_rows as f64 * GPU_METRICS_PER_SAMPLE as f64;
    let bytes_per_sample = size.total() as f64 / values;
    println!(
        "at rest: {:.1} MiB ({:.1} MiB hot rows, {:.1} MiB chunks, {:.2} MiB GPU identities): {bytes_per_sample:.2} bytes per metric value",
        size.total() as f64 / 1_048_576.0,
        size.hot as f64 / 1_048_576.0,
        size.chunks as f64 / 1_048_576.0,
        size.dimensions as f64 / 1_048_576.0,
    );
    let serving_values = serving_total as f64 * SERVING_METRICS_PER_SAMPLE as f64;
    let serving_bytes_per_sample = size.serving_total() as f64 / serving_values.max(1.0);
    println!(
        "serving samples at rest: {serving_total} samples, {:.1} MiB ({:.1} MiB hot rows, {:.1} MiB chunks, {:.2} MiB replica identities): \
         {serving_bytes_per_sample:.2} bytes per metric value",
        size.serving_total() as f64 / 1_048_576.0,
        size.serving_hot as f64 / 1_048_576.0,
        size.serving_chunks as f64 / 1_048_576.0,
        size.serving_dimensions as f64 / 1_048_576.0,
    );

    let baseline_bytes_per_sample = baseline(&pool, nodes, start_ms, opts.baseline_minutes).await?;
    let ratio = bytes_per_sample / baseline_bytes_per_sample;
    println!(
        "old layout (one row per GPU-second with identity strings), first {} min of the same samples: \
         {baseline_bytes_per_sample:.2} bytes per metric value; ratio {ratio:.3}",
        opts.baseline_minutes
    );

    // Chart reads, as the dashboard and the API make them.
    let mut reads: Vec<(&str, Vec<f64>)> =
        vec![("gpu_1h_newest", vec![]), ("gpu_1h_packed", vec![]), ("gpu_24h", vec![])];
    let ranges = [
        (end - Duration::hours(1), end),
        (end - Duration::hours(opts.hours.min(3)), end - Duration::hours(opts.hours.min(3) - 1)),
        (end - Duration::hours(24), end),
    ];
    for run in 0..opts.runs {
        let n = (run as u32 * 7919) % nodes;
        let g = (run as i32 * 3) % GPUS_PER_NODE as i32;
        for (k, (from, to)) in ranges.iter().enumerate() {
            let t = Instant::now();
            let (_, points) = series::gpu_series(&pool, &node_name(n), g, *from, *to).await?;
            reads[k].1.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(!points.is_empty(), "{} read no points", reads[k].0);
        }
    }
    let mut chart_p99_ms: f64 = 0.0;
    for (label, v) in &mut reads {
        let (p50, p99) = (quantile(v, 0.5), quantile(v, 0.99));
        println!("{label:<14} median {p50:7.2} ms   p99 {p99:7.2} ms   ({} runs)", v.len());
        chart_p99_ms = chart_p99_ms.max(p99);
    }
    pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    let _ = std::fs::remove_dir_all(&opts.data_dir);
    println!(
        "bytes_per_sample={bytes_per_sample:.3} ratio={ratio:.3} rows_per_s={rows_per_s:.0} chart_p99_ms={chart_p99_ms:.2} \
         baseline_bytes_per_sample={baseline_bytes_per_sample:.2} gpus={gpus} hours={} \
         serving_bytes_per_sample={serving_bytes_per_sample:.3}",
        opts.hours
    );
    Ok(StorageBenchResult {
        bytes_per_sample,
        baseline_bytes_per_sample,
        ratio,
        rows_per_s,
        chart_p99_ms,
        serving_bytes_per_sample,
    })
}

/// The layout before packing (migration `20261124000001_init`): one row per GPU-second carrying node, UUID and
/// model as text, indexed on (node, GPU, time). Filled with the first `minutes` of the same simulated samples;
/// returns bytes per metric value.
async fn baseline(pool: &sqlx::PgPool, nodes: u32, start_ms: i64, minutes: i64) -> anyhow::Result<f64> {
    sqlx::query(
        "CREATE TABLE baseline_gpu_samples (node_id text NOT NULL, gpu_index integer NOT NULL, ts timestamptz NOT NULL, \
         uuid text NOT NULL, model text NOT NULL, util_pct real, mem_used_bytes bigint, mem_total_bytes bigint, \
         power_w real, temp_c real, sm_clock_mhz integer, mem_clock_mhz integer, throttle_reasons bigint, \
         ecc_dbe_total bigint, xid_last integer, sm_active real, tensor_active real)",
    )
    .execute(pool)
    .await?;
    sqlx::query("CREATE INDEX baseline_gpu_samples_node_gpu_ts ON baseline_gpu_samples (node_id, gpu_index, ts)")
        .execute(pool)
        .await?;
    let mut conn = pool.acquire().await?;
    let mut sims = sims(nodes, start_ms);
    let mut rows = 0u64;
    for m in 0..minutes {
        let mut c = CopyBinary::with_capacity(nodes as usize * 8 * 60 * 200);
        for (i, sim) in sims.iter_mut().enumerate() {
            let node = node_name(i as u32);
            for s in 0..60 {
                for g in sim.sample(start_ms + (m * 60 + s) * 1000).0 {
                    c.row(17);
                    c.text(&node);
                    c.i32(g.gpu_index as i32);
                    c.ts_ms(g.ts_ms);
                    c.text(&g.uuid);
                    c.text(&g.model);
                    c.opt_f32(g.util_pct.map(|v| v as f32));
                    c.opt_i64(g.mem_used_bytes.map(|v| v as i64));
                    c.opt_i64(g.mem_total_bytes.map(|v| v as i64));
                    c.opt_f32(g.power_w.map(|v| v as f32));
                    c.opt_f32(g.temp_c.map(|v| v as f32));
                    c.opt_i32(g.sm_clock_mhz.map(|v| v as i32));
                    c.opt_i32(g.mem_clock_mhz.map(|v| v as i32));
                    c.opt_i64(g.throttle_reasons.map(|v| v as i64));
                    c.opt_i64(g.ecc_dbe_total.map(|v| v as i64));
                    c.opt_i32(g.xid_last.map(|v| v as i32));
                    c.opt_f32(g.sm_active.map(|v| v as f32));
                    c.opt_f32(g.tensor_active.map(|v| v as f32));
                    rows += 1;
                }
            }
        }
        db::ingest::copy_in(
            &mut conn,
            "COPY baseline_gpu_samples (node_id, gpu_index, ts, uuid, model, util_pct, mem_used_bytes, \
             mem_total_bytes, power_w, temp_c, sm_clock_mhz, mem_clock_mhz, throttle_reasons, ecc_dbe_total, \
             xid_last, sm_active, tensor_active) FROM STDIN (FORMAT binary)",
            c.finish(),
        )
        .await?;
    }
    drop(conn);
    sqlx::query("VACUUM ANALYZE baseline_gpu_samples").execute(pool).await?;
    let bytes: i64 =
        sqlx::query_scalar("SELECT pg_total_relation_size('baseline_gpu_samples')").fetch_one(pool).await?;
    sqlx::query("DROP TABLE baseline_gpu_samples").execute(pool).await?;
    Ok(bytes as f64 / (rows as f64 * GPU_METRICS_PER_SAMPLE as f64))
}
