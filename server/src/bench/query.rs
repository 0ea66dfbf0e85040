//! `fleetpilot bench query`: the read path at fleet scale. Loads 10,000 GPUs' latest readings, 24 hours of
//! 1-minute rollups for all of them, 24 hours of raw 1 s samples for the GPU that is queried and the last
//! `--raw-minutes` of raw samples for every GPU, then times the fleet overview and one GPU's 24-hour and
//! 1-hour series (medians and p99 of repeated runs). Raw 1 s data for all 10,000 GPUs over 24 hours would
//! be 864 M rows (~100 GB): more than these machines hold, and not what the 24-hour query reads.

use std::time::Instant;

use chrono::{Duration, DurationRound as _, Utc};

use super::quantile;
use crate::db::{self, copy::CopyBinary, series};

/// Options of the query benchmark.
#[derive(Debug, Clone)]
pub struct QueryBenchOptions {
    /// GPUs in the fleet.
    pub gpus: usize,
    /// Minutes of raw 1 s samples loaded for every GPU.
    pub raw_minutes: i64,
    /// Timed runs per query.
    pub runs: usize,
    /// Working directory (wiped).
    pub data_dir: std::path::PathBuf,
}

const GPUS_PER_NODE: usize = 8;

fn node(g: usize) -> String {
    format!("node-{:05}", g / GPUS_PER_NODE)
}

async fn copy(conn: &mut sqlx::PgConnection, sql: &str, c: CopyBinary) -> anyhow::Result<()> {
    db::ingest::copy_in(conn, sql, c.finish()).await?;
    Ok(())
}

/// Runs the benchmark and prints its figures; the last line is machine-readable.
pub async fn run(opts: QueryBenchOptions) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    anyhow::ensure!(opts.gpus >= 1 && opts.runs >= 1, "--gpus and --runs must be at least 1");
    let (mut pg, url, pool) = super::fresh_database(&opts.data_dir, true).await?;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    let now = Utc::now().duration_trunc(Duration::minutes(1))?;
    let load = Instant::now();

    // Nodes and latest readings.
    let nodes: Vec<String> = (0..opts.gpus.div_ceil(GPUS_PER_NODE)).map(|n| format!("node-{n:05}")).collect();
    db::seed::nodes(&mut conn, &nodes).await?;
    let mut c = CopyBinary::with_capacity(opts.gpus * 120);
    for g in 0..opts.gpus {
        c.row(13);
        c.text(&node(g));
        c.i32((g % GPUS_PER_NODE) as i32);
        c.ts(now);
        c.text(&format!("GPU-{g:08}"));
        c.text("NVIDIA H100 80GB HBM3");
        c.f32((g % 100) as f32);
        c.i64(40_000_000_000);
        c.i64(85_520_809_984);
        c.f32(400.0);
        c.f32(60.0);
        c.i32(1980);
        c.i64(if g % 97 == 0 { 32 } else { 0 });
        c.i32(0);
    }
    copy(&mut conn, db::seed::GPU_LATEST_COPY, c).await?;

    // 24 h of 1-minute rollups for every GPU, in chunks.
    let minutes = 24 * 60;
    let mut rollup_rows = 0u64;
    for chunk in (0..opts.gpus).collect::<Vec<_>>().chunks(200) {
        let mut c = CopyBinary::with_capacity(chunk.len() * minutes * 110);
        for &g in chunk {
            let n = node(g);
            for m in 0..minutes {
                let u = ((g * 7 + m) % 100) as f32;
                c.row(18);
                c.text(&n);
                c.i32((g % GPUS_PER_NODE) as i32);
                c.ts(now - Duration::minutes((minutes - m) as i64));
                c.i32(60);
                c.f32(u * 0.8);
                c.f32(u);
                c.f32((u * 1.1).min(100.0));
                c.f32((u * 1.05).min(100.0));
                c.i64(40_000_000_000);
                c.i64(85_520_809_984);
                c.f32(380.0);
                c.f32(420.0);
                c.f32(60.0);
                c.f32(64.0);
                c.i32(1950);
                c.i64(0);
                c.i32(0);
                c.f32(u / 100.0);
                rollup_rows += 1;
            }
        }
        copy(&mut conn, db::seed::GPU_ROLLUP_1M_COPY, c).await?;
    }

    // Raw samples: the last `raw_minutes` for every GPU, 24 h for the queried one.
    let mut raw_rows = 0u64;
    let target = (node(0), 0);
    let sample = |g: usize, t_ms: i64| {
        let util = ((t_ms / 1000) % 100) as f64;
        gpu_agent::protocol::GpuSample::h100(t_ms, (g % GPUS_PER_NODE) as u32, format!("GPU-{g:08}"), util)
    };
    let now_ms = now.timestamp_millis();
    let raw_secs = opts.raw_minutes.max(0) * 60;
    let keys = db::dimensions::GpuKeys::default();
    let partitions = db::Partitions::default();
    partitions.ensure(&pool, [(now - Duration::days(1)).date_naive(), now.date_naive()]).await?;
    partitions.ensure_hours(&pool, (0..=25).map(|h| now - Duration::hours(h))).await?;
    for chunk in (0..opts.gpus).collect::<Vec<_>>().chunks(100) {
        let rows: Vec<(String, gpu_agent::protocol::GpuSample)> = chunk
            .iter()
            .flat_map(|&g| (0..raw_secs).map(move |s| (node(g), sample(g, now_ms - (raw_secs - s) * 1000))))
            .collect();
        raw_rows += rows.len() as u64;
        if !rows.is_empty() {
            let ids: Vec<db::dimensions::GpuRef<'_>> =
                rows.iter().map(|(n, s)| db::dimensions::GpuRef::of(n, s)).collect();
            keys.resolve(&pool, &ids).await?;
            let payload = db::ingest::encode_gpu_rows(&keys, rows.iter().map(|(n, s)| (n.as_str(), s)), rows.len());
            db::ingest::copy_in(&mut conn, db::ingest::GPU_COPY, payload).await?;
        }
    }
    let day_secs = 24 * 3600 - raw_secs;
    let rows: Vec<gpu_agent::protocol::GpuSample> =
        (0..day_secs).map(|s| sample(0, now_ms - (24 * 3600 - s) * 1000)).collect();
    raw_rows += rows.len() as u64;
    let ids: Vec<db::dimensions::GpuRef<'_>> =
        rows.iter().take(1).map(|s| db::dimensions::GpuRef::of(&target.0, s)).collect();
    keys.resolve(&pool, &ids).await?;
    let payload = db::ingest::encode_gpu_rows(&keys, rows.iter().map(|s| (target.0.as_str(), s)), rows.len());
    db::ingest::copy_in(&mut conn, db::ingest::GPU_COPY, payload).await?;
    // As in production: every complete hour past the grace period is packed into chunks.
    let packed = db::pack::run(&pool, now, &partitions).await?;
    println!("packed {} hot hours into {} chunks ({} samples)", packed.partitions, packed.chunks, packed.samples);
    let db_mb = db::seed::settle(&mut conn).await?;
    println!(
        "loaded {} GPUs: {rollup_rows} 1-minute rollup rows (24 h), {raw_rows} raw 1 s rows ({} min for every GPU, 24 h for {}/{}), database {db_mb:.0} MiB, in {:.0}s",
        opts.gpus,
        opts.raw_minutes,
        target.0,
        target.1,
        load.elapsed().as_secs_f64()
    );
    conn.close().await?;

    let time = |label: &'static str| (label, Vec::with_capacity(opts.runs));
    let (mut ov, mut day, mut hour) = (time("overview"), time("gpu_24h"), time("gpu_1h_raw"));
    for _ in 0..opts.runs {
        let t = Instant::now();
        let o = series::fleet_overview(&pool, 3600 * 24).await?;
        ov.1.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(o.gpus_reporting as usize == opts.gpus, "overview saw {} GPUs", o.gpus_reporting);
        let t = Instant::now();
        let (r, p) = series::gpu_series(&pool, &target.0, 0, now - Duration::hours(24), now).await?;
        day.1.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            r == series::Resolution::Minute && p.len() == minutes,
            "24 h series: {r:?}, {} points",
            p.len()
        );
        let t = Instant::now();
        let (r, p) = series::gpu_series(&pool, &target.0, 0, now - Duration::hours(1), now).await?;
        hour.1.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(r == series::Resolution::Raw && p.len() == 3600, "1 h series: {r:?}, {} points", p.len());
    }
    let mut figures = Vec::new();
    for (label, mut v) in [ov, day, hour] {
        let (p50, p99) = (quantile(&mut v, 0.5), quantile(&mut v, 0.99));
        println!("{label:<12} median {p50:7.2} ms   p99 {p99:7.2} ms   ({} runs)", v.len());
        figures.push((label, p50));
    }
    pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    let _ = std::fs::remove_dir_all(&opts.data_dir);
    println!(
        "overview_ms={:.2} gpu_24h_ms={:.2} gpu_1h_raw_ms={:.2} gpus={} rollup_rows={rollup_rows} raw_rows={raw_rows} db_mb={db_mb:.0}",
        figures[0].1, figures[1].1, figures[2].1, opts.gpus
    );
    Ok(())
}
