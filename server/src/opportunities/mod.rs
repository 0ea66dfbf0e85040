//! The opportunity refresher: every `refresh_secs`, on the control-loop leader, read the fleet's recent
//! window through `db::opportunities`, run `forecasting::opportunities::detect`, and upsert the result by
//! stable key; then sweep the same window for anomaly events ([`sweep`]).
//!
//! [`refresh_once`] is the one testable step for opportunities (stateless; `now` injected);
//! [`Refresher::tick`] adds the workload grouping of nodes ([`group_nodes`], k-means over per-node profiles
//! of the same window, stored in `node_groups`) and the anomaly sweep, whose streaming detectors live in
//! memory on the leader and whose peer comparison uses the groups for nodes without a deployment.

pub mod act;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use forecasting::clustering::{GpuProfile, board_power_w, cluster_profiles, profile_from_series};
use forecasting::forecast::{ForecastConfig, forecast};
use forecasting::opportunities::{Config, DeploymentWindow, FleetWindow, GpuWindow, detect};
use sqlx::PgPool;
use tokio::sync::{Mutex, watch};
use tracing::Instrument as _;

use crate::config::OpportunitySettings;
use crate::db;
use crate::db::opportunities::UpsertOutcome;

/// A refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Reading or writing the database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The detectors refused their input.
    #[error("detectors: {0}")]
    Detect(#[from] forecasting::Error),
}

/// The detectors' settings from the server's.
pub fn detector_config(s: &OpportunitySettings) -> Config {
    Config {
        idle_util_pct: s.idle_util_pct,
        idle_fraction: s.idle_fraction,
        full_confidence_secs: s.full_confidence_secs,
        pricing: s.prices.clone(),
        ..Config::default()
    }
}

/// The window as read, plus series the detectors do not take but the anomaly sweep does.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What the opportunity detectors see.
    pub window: FleetWindow,
    /// GPU temperature, C, per GPU in `window.gpus` order.
    pub gpu_temp_c: Vec<Vec<f64>>,
}

/// Reads the window ending with the bucket that holds `now`.
pub async fn load(pool: &PgPool, s: &OpportunitySettings, now: DateTime<Utc>) -> Result<Loaded, sqlx::Error> {
    let bucket = i64::from(s.bucket_secs.max(1));
    let buckets = (i64::from(s.window_secs) / bucket).max(1);
    let end = now.timestamp().div_euclid(bucket) * bucket + bucket;
    let start = end - buckets * bucket;
    let n = buckets as usize;
    let (Some(from), Some(to)) = (DateTime::from_timestamp(start, 0), DateTime::from_timestamp(end, 0)) else {
        return Err(sqlx::Error::Protocol(format!("window {start}..{end} is out of range")));
    };
    let idx = |b: i64| usize::try_from((b - start) / bucket).ok().filter(|i| *i < n);

    let node_dep: HashMap<String, String> = db::opportunities::node_deployments(pool).await?.into_iter().collect();
    // A GPU that never reported XIDs or ECC counts has none to act on: 0 here means "nothing to report".
    let errors: HashMap<(String, i32), (i32, i64)> = db::opportunities::gpu_errors(pool, from, to)
        .await?
        .into_iter()
        .map(|(node, gpu, xid, ecc)| ((node, gpu), (xid.unwrap_or(0), ecc.unwrap_or(0))))
        .collect();

    let mut gpus: BTreeMap<(String, i32), (GpuWindow, Vec<f64>)> = BTreeMap::new();
    for r in db::opportunities::gpu_buckets(pool, from, to, bucket).await? {
        let Some(i) = idx(r.b) else { continue };
        let key = (r.node_id.clone(), r.gpu_index);
        let (g, temp) = gpus.entry(key).or_insert_with(|| {
            let (xid, ecc) = errors.get(&(r.node_id.clone(), r.gpu_index)).copied().unwrap_or((0, 0));
            (
                GpuWindow {
                    node: r.node_id.clone(),
                    gpu_index: u32::try_from(r.gpu_index).unwrap_or(0),
                    model: String::new(),
                    deployment: node_dep.get(&r.node_id).cloned(),
                    util_pct: vec![f64::NAN; n],
                    sm_active: vec![f64::NAN; n],
                    mem_used_bytes: vec![f64::NAN; n],
                    mem_total_bytes: 0.0,
                    power_w: vec![f64::NAN; n],
                    sm_clock_mhz: vec![f64::NAN; n],
                    throttle_reasons: vec![0; n],
                    xid_max: u32::try_from(xid).unwrap_or(0),
                    ecc_dbe_new: u64::try_from(ecc).unwrap_or(0),
                },
                vec![f64::NAN; n],
            )
        });
        if !r.model.is_empty() {
            g.model = r.model;
        }
        // An unknown reading is a gap (NaN) in the window, as a bucket without samples is: never 0, which
        // would read as an idle GPU.
        g.util_pct[i] = r.util.unwrap_or(f64::NAN);
        g.sm_active[i] = r.sm_active.unwrap_or(f64::NAN);
        g.mem_used_bytes[i] = r.mem_used.unwrap_or(f64::NAN);
        if let Some(total) = r.mem_total {
            g.mem_total_bytes = g.mem_total_bytes.max(total);
        }
        g.power_w[i] = r.power.unwrap_or(f64::NAN);
        g.sm_clock_mhz[i] = r.clock.unwrap_or(f64::NAN);
        g.throttle_reasons[i] = r.throttle.and_then(|t| u64::try_from(t).ok()).unwrap_or(0);
        temp[i] = r.temp.unwrap_or(f64::NAN);
    }

    // Per deployment: the GPU model of the nodes serving it, and what its policy says.
    let mut dep_model: HashMap<&str, &str> = HashMap::new();
    for (g, _) in gpus.values() {
        if let Some(d) = &g.deployment {
            dep_model.entry(d.as_str()).or_insert(g.model.as_str());
        }
    }
    let policies: HashMap<String, crate::domain::policy::PolicySpec> = db::policies::list(pool)
        .await?
        .into_iter()
        .filter(|p| !p.spec.is_shadow())
        .map(|p| (p.spec.deployment(), p.spec))
        .collect();
    let mut deployments: BTreeMap<String, DeploymentWindow> = BTreeMap::new();
    for r in db::opportunities::deployment_buckets(pool, from, to, bucket).await? {
        let Some(i) = idx(r.b) else { continue };
        let d = deployments.entry(r.deployment.clone()).or_insert_with(|| {
            let policy = policies.get(&r.deployment);
            let rebatch = policy.and_then(|p| p.rebatch.as_ref());
            let slo_ms = rebatch.map_or(s.default_itl_slo_ms, |r| r.itl_slo_ms);
            DeploymentWindow {
                deployment: r.deployment.clone(),
                gpu_model: dep_model.get(r.deployment.as_str()).map(|m| m.to_string()).unwrap_or_default(),
                replicas: 0,
                min_replicas: policy.map_or(1, |p| p.min_replicas.max(1)),
                // Serving engines do not report GPUs per replica; one is the common case for the engines we scrape.
                gpus_per_replica: 1.0,
                replicas_series: vec![f64::NAN; n],
                demand_tokens_per_s: vec![f64::NAN; n],
                forecast_peak: None,
                per_replica_capacity: None,
                itl_p95_s: vec![f64::NAN; n],
                itl_slo_s: (slo_ms > 0.0).then_some(slo_ms / 1000.0),
                batch_size: vec![f64::NAN; n],
                batch_bounds: rebatch.map_or((1, 256), |r| (r.min_batch_size, r.max_batch_size)),
                max_queue_delay_us: rebatch.map(|r| r.max_queue_delay_us),
                kv_cache_pct: vec![f64::NAN; n],
                queue_depth: vec![f64::NAN; n],
            }
        });
        d.replicas_series[i] = r.replicas as f64;
        d.demand_tokens_per_s[i] = r.demand;
        d.itl_p95_s[i] = r.itl.unwrap_or(f64::NAN);
        d.batch_size[i] = r.batch.unwrap_or(f64::NAN);
        d.kv_cache_pct[i] = r.kv.unwrap_or(f64::NAN);
        d.queue_depth[i] = r.queue;
    }
    for d in deployments.values_mut() {
        // Replicas now: those reporting in the newest bucket with data.
        d.replicas = d.replicas_series.iter().rev().find(|x| x.is_finite()).map_or(0, |x| *x as u32);
        d.forecast_peak = forecast_peak(&d.demand_tokens_per_s, n);
    }

    let (gpus, gpu_temp_c): (Vec<GpuWindow>, Vec<Vec<f64>>) = gpus.into_values().unzip();
    Ok(Loaded {
        window: FleetWindow {
            start_secs: start,
            bucket_secs: bucket,
            buckets: n,
            gpus,
            deployments: deployments.into_values().collect(),
        },
        gpu_temp_c,
    })
}

/// Upper bound (90 %) of the demand forecast over the next window, from the window's history (gaps carry
/// the last value); `None` with fewer than 12 points or when the model fails.
fn forecast_peak(demand: &[f64], horizon: usize) -> Option<f64> {
    let first = demand.iter().position(|x| x.is_finite())?;
    let mut last = demand[first];
    let history: Vec<f64> = demand[first..]
        .iter()
        .map(|x| {
            if x.is_finite() {
                last = *x;
            }
            last
        })
        .collect();
    if history.len() < 12 {
        return None;
    }
    let f = forecast(&history, horizon.clamp(1, 288), 0.9, &ForecastConfig::default()).ok()?;
    f.upper.iter().copied().filter(|x| x.is_finite()).reduce(f64::max)
}

/// One opportunity refresh at `now`: read, detect, upsert by key (closing what disappeared).
pub async fn refresh_once(
    pool: &PgPool,
    settings: &OpportunitySettings,
    now: DateTime<Utc>,
) -> Result<UpsertOutcome, RefreshError> {
    let loaded = load(pool, settings, now).await?;
    refresh_loaded(pool, settings, &loaded, now).await
}

async fn refresh_loaded(
    pool: &PgPool,
    settings: &OpportunitySettings,
    loaded: &Loaded,
    now: DateTime<Utc>,
) -> Result<UpsertOutcome, RefreshError> {
    let cfg = detector_config(settings);
    let ops = detect(&loaded.window, &cfg)?;
    let out = db::opportunities::upsert(pool, &ops, now).await?;
    // The fleet's idle capacity over the same window, next to the opportunities that would recover it.
    db::idle::record(pool, &forecasting::idle::idle_capacity(&loaded.window, &cfg), now).await?;
    for k in &out.opened {
        tracing::info!(key = %k, "opportunity opened");
    }
    for k in &out.closed {
        tracing::info!(key = %k, "opportunity closed");
    }
    Ok(out)
}

/// Seed of the node grouping's k-means (fixed: the same window gives the same groups on every leader).
pub const GROUPING_SEED: u64 = 0x6E6F_6465_6772_7570;

/// Node -> (cluster, label) of the latest grouping.
pub type NodeGroups = HashMap<String, (i32, String)>;

/// Per-node workload profiles of the window (the mean of each node's GPU profiles), by node, with the
/// number of GPUs. Power is a fraction of the model's board power, else of the highest mean power any GPU
/// of that model drew in the window.
pub fn node_profiles(w: &FleetWindow) -> BTreeMap<String, (usize, GpuProfile)> {
    let mut model_max: HashMap<&str, f64> = HashMap::new();
    for g in &w.gpus {
        let finite: Vec<f64> = g.power_w.iter().copied().filter(|p| p.is_finite()).collect();
        if !finite.is_empty() {
            let mean = finite.iter().sum::<f64>() / finite.len() as f64;
            let m = model_max.entry(g.model.as_str()).or_insert(0.0);
            *m = m.max(mean);
        }
    }
    let mut per_node: BTreeMap<String, Vec<GpuProfile>> = BTreeMap::new();
    for g in &w.gpus {
        let power_ref =
            board_power_w(&g.model).or_else(|| model_max.get(g.model.as_str()).copied()).unwrap_or(f64::NAN);
        let p =
            profile_from_series(&g.util_pct, &g.sm_active, &g.mem_used_bytes, g.mem_total_bytes, &g.power_w, power_ref);
        per_node.entry(g.node.clone()).or_default().push(p);
    }
    per_node.into_iter().map(|(n, ps)| (n, (ps.len(), GpuProfile::mean_of(&ps)))).collect()
}

/// Groups the window's nodes by workload profile, replaces `node_groups` with the result, and returns it.
pub async fn group_nodes(pool: &PgPool, loaded: &Loaded, now: DateTime<Utc>) -> Result<NodeGroups, RefreshError> {
    let profiles = node_profiles(&loaded.window);
    if profiles.is_empty() {
        db::node_groups::replace(pool, &[]).await?;
        return Ok(NodeGroups::new());
    }
    let list: Vec<GpuProfile> = profiles.values().map(|(_, p)| *p).collect();
    let c = cluster_profiles(&list, forecasting::clustering::MAX_K, GROUPING_SEED)?;
    let json = |p: &GpuProfile| serde_json::to_value(p).unwrap_or_default();
    let mut rows = Vec::with_capacity(profiles.len());
    let mut groups = NodeGroups::new();
    // Labels count nodes and GPUs (the clustering's own labels count profiles, here nodes, as "GPUs").
    let mut members = vec![(0usize, 0usize); c.k];
    for ((_, (gpus, _)), &cluster) in profiles.iter().zip(&c.assignments) {
        if let Some(m) = members.get_mut(cluster) {
            *m = (m.0 + 1, m.1 + gpus);
        }
    }
    let labels: Vec<String> = c
        .descriptions
        .iter()
        .zip(&members)
        .map(|(d, (nodes, gpus))| {
            let nodes = if *nodes == 1 { "1 node".to_string() } else { format!("{nodes} nodes") };
            let gpus = if *gpus == 1 { "1 GPU".to_string() } else { format!("{gpus} GPUs") };
            format!("{d} [{nodes}, {gpus}]")
        })
        .collect();
    for ((node, (gpus, profile)), &cluster) in profiles.iter().zip(&c.assignments) {
        let label = labels.get(cluster).cloned().unwrap_or_default();
        let kind = c.kinds.get(cluster).map_or("", |k| k.name());
        let cluster_id = i32::try_from(cluster).unwrap_or(i32::MAX);
        rows.push(db::node_groups::NodeGroup {
            node_id: node.clone(),
            cluster: cluster_id,
            label: label.clone(),
            kind: kind.to_string(),
            gpus: i32::try_from(*gpus).unwrap_or(i32::MAX),
            features: json(profile),
            centroid: c.centroids.get(cluster).map(json).unwrap_or_default(),
            silhouette: c.silhouette,
            computed_at: now,
        });
        groups.insert(node.clone(), (cluster_id, label));
    }
    db::node_groups::replace(pool, &rows).await?;
    tracing::debug!(nodes = rows.len(), groups = c.k, silhouette = c.silhouette, "nodes grouped by workload");
    Ok(groups)
}

/// What one tick did.
#[derive(Debug, Clone, Default)]
pub struct TickOutcome {
    /// Opportunity changes.
    pub opportunities: UpsertOutcome,
    /// Anomaly changes.
    pub anomalies: sweep::SweepOutcome,
}

/// Refreshes opportunities and sweeps anomalies on the leader.
pub struct Refresher {
    pool: PgPool,
    settings: OpportunitySettings,
    sweep: Mutex<sweep::AnomalySweep>,
}

impl Refresher {
    /// A refresher over `pool`.
    pub fn new(pool: PgPool, settings: OpportunitySettings) -> Self {
        let sweep = Mutex::new(sweep::AnomalySweep::new(settings.idle_util_pct));
        Self { pool, settings, sweep }
    }

    /// One refresh and anomaly sweep at `now`.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<TickOutcome, RefreshError> {
        let loaded = load(&self.pool, &self.settings, now).await?;
        let opportunities = refresh_loaded(&self.pool, &self.settings, &loaded, now).await?;
        let groups = group_nodes(&self.pool, &loaded, now).await?;
        let anomalies = self.sweep.lock().await.run(&self.pool, &loaded, &groups, now).await?;
        Ok(TickOutcome { opportunities, anomalies })
    }

    /// Ticks every `refresh_secs` while `leading` is set, until `shutdown` flips.
    /// Each refresh first re-checks the term in the database.
    pub async fn run_until_stopped(
        self,
        leading: Arc<crate::control::leadership::Leadership>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let period = Duration::from_secs_f64(self.settings.refresh_secs);
        while !*shutdown.borrow() {
            if leading.is_leading() && leading.confirm().await {
                let span = tracing::info_span!("opportunities_refresh");
                if let Err(e) = self.tick(Utc::now()).instrument(span).await {
                    tracing::warn!(error = %e, "opportunity refresh failed");
                }
            } else {
                // A replica that is not (or no longer) leading forgets its detectors' state.
                self.sweep.lock().await.reset();
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
