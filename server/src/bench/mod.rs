//! `fleetpilot bench ...`: benchmarks that print their figures and, last, one line of `key=value` pairs.

pub mod alerts;
pub mod commands;
pub mod dashboard;
pub mod decision;
pub mod fake_kube;
pub mod forecast;
pub mod ingest;
pub mod query;
pub mod remote_write;
pub mod storage;
pub mod tick;

/// A fresh private cluster under `data_dir` (wiped first) with a migrated `bench` database whose partitions
/// around now exist; returns the cluster, the database URL and a pool on it.
pub async fn fresh_database(
    data_dir: &std::path::Path,
    ephemeral: bool,
) -> anyhow::Result<(crate::pg::PrivatePostgres, String, sqlx::PgPool)> {
    let _ = std::fs::remove_dir_all(data_dir);
    let opts = crate::pg::PgOptions { data_dir: data_dir.join("pgdata"), ephemeral };
    let pg = tokio::task::spawn_blocking(move || crate::pg::PrivatePostgres::start(&opts)).await??;
    crate::pg::ensure_database(&pg.url_for("postgres"), "bench").await?;
    let url = pg.url_for("bench");
    let pool = crate::db::connect(&url, 4).await?;
    crate::db::migrate(&pool).await?;
    crate::db::Partitions::default().ensure_around_now(&pool).await?;
    Ok((pg, url, pool))
}

/// Settings of a server a benchmark runs in its own process on port 0 against `database_url`, with the
/// benchmarks' tokens; the benchmark sets what it measures on the result.
pub fn bench_settings(database_url: String) -> crate::config::Settings {
    crate::config::Settings {
        listen: "127.0.0.1:0".into(),
        api_token: crate::config::Secret::new("bench-api"),
        agent_token: crate::config::Secret::new("bench-agent"),
        // One process simulates every node: the shared token is trusted, as in the demo.
        agent_token_can_write: true,
        database_url: Some(database_url),
        ..crate::config::Settings::default()
    }
}

/// A policy holding the GPU utilisation of `target` at 60 % with 1..64 replicas, 10 % tolerance and a
/// 120 s cold start, acting (not a dry run); the benchmark sets what it exercises on the result.
pub fn utilization_policy(name: String, target: crate::domain::policy::Target) -> crate::domain::policy::PolicySpec {
    crate::domain::policy::PolicySpec {
        name,
        target,
        min_replicas: 1,
        max_replicas: 64,
        metric: Some(crate::domain::policy::Metric::GpuUtilization),
        target_value: Some(60.0),
        metrics: Vec::new(),
        slo: None,
        behavior: Default::default(),
        predictive: Default::default(),
        panic: Default::default(),
        scale_to_zero_idle_secs: None,
        tolerance: 0.1,
        cold_start_secs: 120,
        dry_run: false,
        mode: Default::default(),
        rebatch: None,
        capacity: None,
    }
}

/// Posts `body` to `url` as an agent (`token`) with `headers`; the answer and how long it took to come,
/// milliseconds.
pub async fn timed_post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (reqwest::Result<reqwest::Response>, f64) {
    let mut req = http.post(url).bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let t = std::time::Instant::now();
    let r = req.body(body).send().await;
    (r, t.elapsed().as_secs_f64() * 1000.0)
}

/// Peak resident set size of a process, MiB (`VmHWM` from /proc).
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The `q`-quantile (0..=1) of `v` (sorted in place), nearest rank.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let idx = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx]
}
