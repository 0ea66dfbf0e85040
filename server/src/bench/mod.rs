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
