//! Optimization opportunities with money attached: pure detectors over one window of fleet data.
//!
//! Input is a [`FleetWindow`]: per GPU and per deployment, series aligned on one bucket grid (NaN marks a
//! missing bucket), plus what the control plane knows besides (SLO, batch bounds, forecast peak). Each
//! detector is a function from the window to zero or more [`Opportunity`]s; [`detect`] runs them all and
//! ranks the result by expected value (`usd_per_week * confidence`).
//!
//! Every opportunity has a stable identity key (`idle_gpu:<node>:<gpu>`, `consolidate:<deployment>`, ...)
//! so the server can upsert it across refreshes, evidence (series, time range, key numbers), an estimated
//! saving in GPU-hours per week and money (priced per GPU model by the [`PriceTable`] passed in [`Config::pricing`]), the latency/SLO effect in
//! words and numbers, a confidence in `[0, 1]` and the concrete action (one click where fleetpilot can act:
//! a replica change or a rebatch command; the bandwidth probe for stragglers).
//!
//! Savings are extrapolated from the window to a week (the window is assumed representative; confidence
//! grows with how much of [`Config::full_confidence_secs`] the window covers). Opportunities that fix a
//! risk rather than save money (KV-cache saturation costs a replica, draining a node saves nothing) carry
//! a zero or negative saving and rank below the savings, as expected value says they should; filter by
//! kind to see them.
//!
//! Pure code: no IO, no panics on NaN or empty input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::latency_model::{self, BatchObservation, LatencyModel};
use crate::peers::{PeerConfig, score_peers};
use crate::pricing::PriceTable;

/// Hours in a week.
pub const HOURS_PER_WEEK: f64 = 168.0;

/// NVML clock-event reasons that cost performance: software power cap, hardware slowdown, software and
/// hardware thermal slowdown, hardware power brake. (Idle, application clocks, sync boost and display
/// clock are not a problem.)
pub const THROTTLE_POWER_MASK: u64 = 0x04 | 0x80;
/// Thermal and hardware slowdown reasons.
pub const THROTTLE_THERMAL_MASK: u64 = 0x08 | 0x20 | 0x40;

/// XIDs that mean hardware trouble (double-bit ECC, row remapping, NVLink, fell off the bus, ...), after
/// NVIDIA's XID catalogue; others (13, 31, 43: application faults) are weaker evidence.
pub const HARDWARE_XIDS: [u32; 12] = [48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120];

/// The share of a physical GPU a device of `model` is: 1 for a whole GPU; for a MIG slice (NVML names it
/// `<parent> MIG <profile>`, e.g. `NVIDIA H100 80GB HBM3 MIG 1g.10gb` or `... MIG 1c.2g.20gb`) its GPU
/// instance's compute slices over the parent's (7, or 4 on an A30). A slice's GPU-hours and money are this
/// fraction of the parent's, so an idle `1g` slice is never priced as a whole H100.
pub fn gpu_fraction(model: &str) -> f64 {
    let upper = model.to_ascii_uppercase();
    let Some(at) = upper.find(" MIG ") else { return 1.0 };
    let profile = &upper[at + 5..];
    // The GPU-instance part of the profile is the `<n>G` between dots (`1G.10GB`, `1C.2G.20GB`).
    let slices = profile
        .split(|c: char| c == '.' || c.is_whitespace() || c == '+')
        .find_map(|part| part.strip_suffix('G').and_then(|n| n.parse::<u32>().ok()));
    let total = if upper.contains("A30") { 4.0 } else { 7.0 };
    match slices {
        Some(n) if n >= 1 => (f64::from(n) / total).min(1.0),
        // A MIG name without a readable profile: a slice of unknown size; the smallest slice is the
        // conservative saving.
        _ => 1.0 / total,
    }
}

/// Detector thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Utilisation (%) under which a bucket counts as idle.
    pub idle_util_pct: f64,
    /// Fraction of observed buckets that must be idle for an idle or memory-only GPU.
    pub idle_fraction: f64,
    /// Memory used (fraction of total) from which a GPU counts as having a model loaded.
    pub loaded_mem_fraction: f64,
    /// Headroom kept over the forecast peak when sizing a deployment (0.2 = 20 %).
    pub consolidation_headroom: f64,
    /// KV-cache use (%) from which a bucket counts as saturated.
    pub kv_saturated_pct: f64,
    /// Fraction of buckets saturated for a KV-cache opportunity.
    pub kv_saturated_fraction: f64,
    /// Fraction of buckets with a performance throttle reason for a throttling opportunity.
    pub throttle_fraction: f64,
    /// Relative batch-size change below which batching is left alone (hysteresis).
    pub batch_hysteresis: f64,
    /// Window length (seconds) from which the evidence counts as complete (confidence is scaled down below).
    pub full_confidence_secs: f64,
    /// Peer-outlier settings for stragglers.
    pub peers: PeerConfig,
    /// Prices per GPU-hour (configuration: the server passes its own).
    pub pricing: PriceTable,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_util_pct: 5.0,
            idle_fraction: 0.9,
            loaded_mem_fraction: 0.1,
            consolidation_headroom: 0.2,
            kv_saturated_pct: 90.0,
            kv_saturated_fraction: 0.25,
            throttle_fraction: 0.1,
            batch_hysteresis: 0.1,
            full_confidence_secs: 6.0 * 3600.0,
            peers: PeerConfig::default(),
            pricing: PriceTable::default(),
        }
    }
}

impl Config {
    /// Checks that thresholds are in range.
    pub fn validate(&self) -> Result<(), Error> {
        let frac = |name: &'static str, v: f64| {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::InvalidArgument { name, reason: format!("{v} is not within [0, 1]") })
            }
        };
        frac("idle_fraction", self.idle_fraction)?;
        frac("loaded_mem_fraction", self.loaded_mem_fraction)?;
        frac("kv_saturated_fraction", self.kv_saturated_fraction)?;
        frac("throttle_fraction", self.throttle_fraction)?;
        let pos = |name: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::InvalidArgument { name, reason: format!("{v} is not >= 0") })
            }
        };
        pos("idle_util_pct", self.idle_util_pct)?;
        pos("consolidation_headroom", self.consolidation_headroom)?;
        pos("kv_saturated_pct", self.kv_saturated_pct)?;
        pos("batch_hysteresis", self.batch_hysteresis)?;
        if !(self.full_confidence_secs.is_finite() && self.full_confidence_secs > 0.0) {
            return Err(Error::InvalidArgument { name: "full_confidence_secs", reason: "must be > 0".into() });
        }
        self.peers.validate()?;
        self.pricing.validate()
    }
}

/// One GPU over the window; every series has one value per bucket (NaN = missing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuWindow {
    /// Node id.
    pub node: String,
    /// GPU index on the node.
    pub gpu_index: u32,
    /// Model name (`NVIDIA H100 80GB HBM3`), for pricing.
    pub model: String,
    /// Deployment the node serves, if known.
    pub deployment: Option<String>,
    /// Utilisation %, mean per bucket.
    pub util_pct: Vec<f64>,
    /// SM active fraction 0..=1, mean per bucket (NaN where the GPU does not report it).
    pub sm_active: Vec<f64>,
    /// Memory used, bytes (max per bucket).
    pub mem_used_bytes: Vec<f64>,
    /// Memory total, bytes.
    pub mem_total_bytes: f64,
    /// Power, W (mean per bucket).
    pub power_w: Vec<f64>,
    /// SM clock, MHz (min per bucket).
    pub sm_clock_mhz: Vec<f64>,
    /// Throttle reasons seen in the bucket (OR).
    pub throttle_reasons: Vec<u64>,
    /// Highest XID seen in the window (0 = none).
    pub xid_max: u32,
    /// Uncorrectable ECC errors added during the window.
    pub ecc_dbe_new: u64,
}

/// One deployment over the window; every series has one value per bucket (NaN = missing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentWindow {
    /// Deployment as `namespace/name`.
    pub deployment: String,
    /// GPU model its replicas run on, for pricing.
    pub gpu_model: String,
    /// Replicas serving now.
    pub replicas: u32,
    /// Fewest replicas allowed (scaling policy minimum, else 1).
    pub min_replicas: u32,
    /// GPUs per replica.
    pub gpus_per_replica: f64,
    /// Replicas reporting, per bucket.
    pub replicas_series: Vec<f64>,
    /// Demand: generated tokens per second over all replicas, per bucket.
    pub demand_tokens_per_s: Vec<f64>,
    /// Forecast peak of the demand over the coming period (same unit), if a forecast exists.
    pub forecast_peak: Option<f64>,
    /// Tokens per second one replica sustains at the SLO, if known (otherwise the best observed at the SLO).
    pub per_replica_capacity: Option<f64>,
    /// Inter-token latency p95, seconds (worst replica), per bucket.
    pub itl_p95_s: Vec<f64>,
    /// Inter-token latency SLO, seconds.
    pub itl_slo_s: Option<f64>,
    /// Mean batch size, per bucket.
    pub batch_size: Vec<f64>,
    /// Batch-size bounds allowed (policy), inclusive.
    pub batch_bounds: (u32, u32),
    /// Batching delay in use, microseconds, if known.
    pub max_queue_delay_us: Option<u64>,
    /// KV-cache use %, mean over replicas, per bucket.
    pub kv_cache_pct: Vec<f64>,
    /// Requests waiting, summed over replicas, per bucket.
    pub queue_depth: Vec<f64>,
}

/// The window every series is aligned on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetWindow {
    /// Start of the first bucket, Unix seconds.
    pub start_secs: i64,
    /// Bucket width, seconds.
    pub bucket_secs: i64,
    /// Buckets in the window (every series has this length).
    pub buckets: usize,
    /// GPUs.
    pub gpus: Vec<GpuWindow>,
    /// Deployments.
    pub deployments: Vec<DeploymentWindow>,
}

impl FleetWindow {
    /// End of the last bucket, Unix seconds.
    pub fn end_secs(&self) -> i64 {
        self.start_secs.saturating_add(self.bucket_secs.saturating_mul(self.buckets as i64))
    }

    /// Checks the grid and that every series has one value per bucket.
    pub fn validate(&self) -> Result<(), Error> {
        if self.bucket_secs <= 0 {
            return Err(Error::InvalidArgument { name: "bucket_secs", reason: "must be > 0".into() });
        }
        let n = self.buckets;
        let bad = |what: String, len: usize| Error::InvalidArgument {
            name: "series",
            reason: format!("{what} has {len} values, the window has {n} buckets"),
        };
        for g in &self.gpus {
            let who = format!("gpu {}:{}", g.node, g.gpu_index);
            for (name, len) in [
                ("util_pct", g.util_pct.len()),
                ("sm_active", g.sm_active.len()),
                ("mem_used_bytes", g.mem_used_bytes.len()),
                ("power_w", g.power_w.len()),
                ("sm_clock_mhz", g.sm_clock_mhz.len()),
                ("throttle_reasons", g.throttle_reasons.len()),
            ] {
                if len != n {
                    return Err(bad(format!("{who} {name}"), len));
                }
            }
        }
        for d in &self.deployments {
            for (name, len) in [
                ("replicas_series", d.replicas_series.len()),
                ("demand_tokens_per_s", d.demand_tokens_per_s.len()),
                ("itl_p95_s", d.itl_p95_s.len()),
                ("batch_size", d.batch_size.len()),
                ("kv_cache_pct", d.kv_cache_pct.len()),
                ("queue_depth", d.queue_depth.len()),
            ] {
                if len != n {
                    return Err(bad(format!("deployment {} {name}", d.deployment), len));
                }
            }
        }
        Ok(())
    }
}

/// What kind of opportunity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A GPU with nothing loaded and nothing to do.
    IdleGpu,
    /// A GPU with a model loaded and no traffic.
    MemoryOnly,
    /// A deployment's demand fits on fewer replicas at its SLO.
    Consolidation,
    /// A larger batch fits in the latency headroom.
    Batching,
    /// KV cache full: requests queue or get preempted.
    KvCacheSaturation,
    /// Thermal or power throttling costs clock speed.
    Throttling,
    /// A GPU departs from its peers in the same deployment.
    Straggler,
    /// A node reports XID or ECC errors.
    DrainNode,
}

impl Kind {
    /// The kind's name as used in keys and the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::IdleGpu => "idle_gpu",
            Kind::MemoryOnly => "memory_only",
            Kind::Consolidation => "consolidation",
            Kind::Batching => "batching",
            Kind::KvCacheSaturation => "kv_cache_saturation",
            Kind::Throttling => "throttling",
            Kind::Straggler => "straggler",
            Kind::DrainNode => "drain_node",
        }
    }

    /// Every kind.
    pub const ALL: [Kind; 8] = [
        Kind::IdleGpu,
        Kind::MemoryOnly,
        Kind::Consolidation,
        Kind::Batching,
        Kind::KvCacheSaturation,
        Kind::Throttling,
        Kind::Straggler,
        Kind::DrainNode,
    ];

    /// Parses a kind name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What an opportunity is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Deployment, if any.
    pub deployment: Option<String>,
    /// Node, if any.
    pub node: Option<String>,
    /// GPU index on the node, if one GPU.
    pub gpu_index: Option<u32>,
}

/// The data behind an opportunity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Series looked at (`gpu_util_pct`, `deployment_kv_cache_pct`, ...).
    pub series: String,
    /// Start of the range, Unix seconds.
    pub from_secs: i64,
    /// End of the range, Unix seconds.
    pub to_secs: i64,
    /// Key numbers, by name with units in the name.
    pub numbers: BTreeMap<String, f64>,
}

/// Effect on latency and the SLO.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyEffect {
    /// In words.
    pub summary: String,
    /// Latency metric named by `summary` now, seconds, if known.
    pub before_s: Option<f64>,
    /// Predicted after the action, seconds, if known.
    pub after_s: Option<f64>,
    /// The SLO, seconds, if known.
    pub slo_s: Option<f64>,
}

/// A command fleetpilot can issue itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Set a deployment's replicas.
    Scale {
        /// Deployment.
        deployment: String,
        /// Replicas to run.
        replicas: u32,
    },
    /// Rebatch a deployment's engines.
    Rebatch {
        /// Deployment.
        deployment: String,
        /// Maximum batch size.
        max_batch_size: u32,
        /// Batching delay, microseconds.
        max_queue_delay_us: Option<u64>,
    },
    /// Run the GPU bandwidth probe on a node.
    Probe {
        /// Node.
        node: String,
    },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionPlan {
    /// The action in words.
    pub description: String,
    /// Whether fleetpilot can do it with one click (then `command` says how).
    pub one_click: bool,
    /// The command behind the click.
    pub command: Option<Command>,
}

/// One optimization opportunity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opportunity {
    /// Kind.
    pub kind: Kind,
    /// Stable identity across refreshes (`idle_gpu:<node>:<gpu>`).
    pub key: String,
    /// What it is about.
    pub target: Target,
    /// One line for a person.
    pub title: String,
    /// The data behind it.
    pub evidence: Evidence,
    /// GPU-hours saved (negative: spent) per week.
    pub gpu_hours_per_week: f64,
    /// Money saved (negative: spent) per week, in `currency`.
    pub saving_per_week: f64,
    /// Currency of `saving_per_week`.
    pub currency: String,
    /// Effect on latency and the SLO.
    pub latency: LatencyEffect,
    /// How sure the detector is, `[0, 1]`.
    pub confidence: f64,
    /// What to do.
    pub action: ActionPlan,
    /// `saving_per_week * confidence`: the ranking key.
    pub expected_value: f64,
}

/// Runs every detector on `w` and ranks the result by expected value (highest first; ties by confidence,
/// then key).
pub fn detect(w: &FleetWindow, cfg: &Config) -> Result<Vec<Opportunity>, Error> {
    cfg.validate()?;
    w.validate()?;
    let mut out = Vec::new();
    out.extend(idle_gpus(w, cfg));
    out.extend(memory_only_gpus(w, cfg));
    out.extend(consolidation(w, cfg));
    out.extend(batching(w, cfg));
    out.extend(kv_cache_saturation(w, cfg));
    out.extend(throttling(w, cfg));
    out.extend(stragglers(w, cfg)?);
    out.extend(drain_nodes(w, cfg));
    rank(&mut out);
    Ok(out)
}

/// Sorts by expected value, then confidence, then key (deterministic).
pub fn rank(ops: &mut [Opportunity]) {
    ops.sort_by(|a, b| {
        b.expected_value
            .total_cmp(&a.expected_value)
            .then(b.confidence.total_cmp(&a.confidence))
            .then_with(|| a.key.cmp(&b.key))
    });
}

fn finite(xs: &[f64]) -> impl Iterator<Item = f64> + '_ {
    xs.iter().copied().filter(|x| x.is_finite())
}

fn mean(xs: &[f64]) -> Option<f64> {
    let (s, n) = finite(xs).fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

fn max(xs: &[f64]) -> Option<f64> {
    finite(xs).reduce(f64::max)
}

fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = finite(xs).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    v.get(i).copied()
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// Share of the window the evidence covers, scaled by how long that is: `[0, 1]`.
fn coverage(w: &FleetWindow, observed_buckets: usize, cfg: &Config) -> f64 {
    if w.buckets == 0 {
        return 0.0;
    }
    let observed_secs = observed_buckets as f64 * w.bucket_secs as f64;
    (observed_secs / cfg.full_confidence_secs).clamp(0.0, 1.0).sqrt()
}

#[allow(clippy::too_many_arguments)]
fn make(
    kind: Kind,
    key: String,
    target: Target,
    title: String,
    evidence: Evidence,
    gpu_hours_per_week: f64,
    price: f64,
    cfg: &Config,
    latency: LatencyEffect,
    confidence: f64,
    action: ActionPlan,
) -> Opportunity {
    let gpu_hours_per_week = if gpu_hours_per_week.is_finite() { round(gpu_hours_per_week, 2) } else { 0.0 };
    let saving = round(gpu_hours_per_week * price, 2);
    let confidence = if confidence.is_finite() { round(confidence.clamp(0.0, 1.0), 3) } else { 0.0 };
    Opportunity {
        kind,
        key,
        target,
        title,
        evidence,
        gpu_hours_per_week,
        saving_per_week: saving,
        currency: cfg.pricing.currency.clone(),
        latency,
        confidence,
        action,
        expected_value: round(saving * confidence, 2),
    }
}

fn numbers<const N: usize>(pairs: [(&str, f64); N]) -> BTreeMap<String, f64> {
    pairs.into_iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| (k.to_string(), round(v, 4))).collect()
}

fn gpu_target(g: &GpuWindow) -> Target {
    Target { deployment: g.deployment.clone(), node: Some(g.node.clone()), gpu_index: Some(g.gpu_index) }
}

/// How idle a GPU was: (idle fraction of observed buckets, observed buckets, mean util, p95 util, max memory
/// fraction). `None` without data.
fn idleness(g: &GpuWindow, cfg: &Config) -> Option<(f64, usize, f64, f64, f64)> {
    let observed = finite(&g.util_pct).count();
    if observed == 0 {
        return None;
    }
    let idle = finite(&g.util_pct).filter(|u| *u < cfg.idle_util_pct).count();
    let mem_frac = if g.mem_total_bytes.is_finite() && g.mem_total_bytes > 0.0 {
        max(&g.mem_used_bytes).map_or(f64::NAN, |m| m / g.mem_total_bytes)
    } else {
        f64::NAN
    };
    Some((
        idle as f64 / observed as f64,
        observed,
        mean(&g.util_pct).unwrap_or(f64::NAN),
        quantile(&g.util_pct, 0.95).unwrap_or(f64::NAN),
        mem_frac,
    ))
}

/// GPUs idle (under `idle_util_pct`) for at least `idle_fraction` of the window with no model loaded:
/// release them.
pub fn idle_gpus(w: &FleetWindow, cfg: &Config) -> Vec<Opportunity> {
    let mut out = Vec::new();
    for g in &w.gpus {
        let Some((frac, observed, mean_util, p95, mem_frac)) = idleness(g, cfg) else { continue };
        // A GPU with a model in memory is the memory-only detector's (NaN memory counts as not loaded).
        if frac < cfg.idle_fraction || mem_frac >= cfg.loaded_mem_fraction {
            continue;
        }
        // A MIG slice frees its share of the board, not a whole GPU.
        let share = gpu_fraction(&g.model);
        let hours = HOURS_PER_WEEK * frac * share;
        let price = cfg.pricing.price(&g.model);
        let confidence = frac * coverage(w, observed, cfg);
        out.push(make(
            Kind::IdleGpu,
            format!("idle_gpu:{}:{}", g.node, g.gpu_index),
            gpu_target(g),
            format!("GPU {} on {} was idle {:.0} % of the time with nothing loaded", g.gpu_index, g.node, frac * 100.0),
            Evidence {
                series: "gpu_util_pct".into(),
                from_secs: w.start_secs,
                to_secs: w.end_secs(),
                numbers: numbers([
                    ("idle_fraction", frac),
                    ("util_mean_pct", mean_util),
                    ("util_p95_pct", p95),
                    ("mem_used_fraction", mem_frac),
                    ("observed_secs", observed as f64 * w.bucket_secs as f64),
                    ("gpu_fraction", share),
                    ("price_per_gpu_hour", price),
                ]),
            },
            hours,
            price,
            cfg,
            LatencyEffect { summary: "none: the GPU serves no traffic".into(), ..LatencyEffect::default() },
            confidence,
            ActionPlan {
                description: format!(
                    "release GPU {} on {} (shrink the node pool or schedule other work on it)",
                    g.gpu_index, g.node
                ),
                one_click: false,
                command: None,
            },
        ));
    }
    out
}

/// GPUs with a model loaded (memory at least `loaded_mem_fraction`) but idle for at least
/// `idle_fraction` of the window: a replica nobody sends traffic to.
pub fn memory_only_gpus(w: &FleetWindow, cfg: &Config) -> Vec<Opportunity> {
    let mut out = Vec::new();
    for g in &w.gpus {
        let Some((frac, observed, mean_util, p95, mem_frac)) = idleness(g, cfg) else { continue };
        // NaN memory (not reported) is not evidence of a loaded model.
        let loaded = mem_frac.is_finite() && mem_frac >= cfg.loaded_mem_fraction;
        if frac < cfg.idle_fraction || !loaded {
            continue;
        }
        let share = gpu_fraction(&g.model);
        let hours = HOURS_PER_WEEK * frac * share;
        let price = cfg.pricing.price(&g.model);
        let sm = mean(&g.sm_active);
        // SM activity confirms the absence of work where the GPU reports it.
        let sm_factor = match sm {
            Some(s) if s > 0.1 => 0.5,
            _ => 1.0,
        };
        let confidence = frac * coverage(w, observed, cfg) * sm_factor;
        let deployment = g.deployment.clone().unwrap_or_else(|| "its deployment".into());
        out.push(make(
            Kind::MemoryOnly,
            format!("memory_only:{}:{}", g.node, g.gpu_index),
            gpu_target(g),
            format!(
                "GPU {} on {} holds {:.0} % of its memory but was idle {:.0} % of the time",
                g.gpu_index,
                g.node,
                mem_frac * 100.0,
                frac * 100.0
            ),
            Evidence {
                series: "gpu_util_pct, gpu_mem_used_bytes".into(),
                from_secs: w.start_secs,
                to_secs: w.end_secs(),
                numbers: numbers([
                    ("idle_fraction", frac),
                    ("util_mean_pct", mean_util),
                    ("util_p95_pct", p95),
                    ("mem_used_fraction", mem_frac),
                    ("sm_active_mean", sm.unwrap_or(f64::NAN)),
                    ("price_per_gpu_hour", price),
                ]),
            },
            hours,
            price,
            cfg,
            LatencyEffect {
                summary: "none expected: the loaded replica serves no traffic".into(),
                ..LatencyEffect::default()
            },
            confidence,
            ActionPlan {
                description: format!(
                    "unload the model on GPU {} of {} (remove the replica from {deployment}) and release the GPU",
                    g.gpu_index, g.node
                ),
                one_click: false,
                command: None,
            },
        ));
    }
    out
}

/// Tokens/s one replica of `d` sustains at its SLO: the given capacity, else the best per-replica
/// throughput observed in a bucket that met the SLO (a lower bound). `None` without either.
fn capacity(d: &DeploymentWindow) -> Option<f64> {
    if let Some(c) = d.per_replica_capacity.filter(|c| c.is_finite() && *c > 0.0) {
        return Some(c);
    }
    let slo = d.itl_slo_s.filter(|s| s.is_finite() && *s > 0.0);
    (0..d.demand_tokens_per_s.len())
        .filter_map(|i| {
            let demand = d.demand_tokens_per_s[i];
            let reps = d.replicas_series[i];
            let itl = d.itl_p95_s[i];
            let meets = match slo {
                Some(s) => itl.is_finite() && itl <= s,
                None => false,
            };
            (meets && demand.is_finite() && reps.is_finite() && reps >= 1.0).then(|| demand / reps)
        })
        .filter(|c| *c > 0.0)
        .reduce(f64::max)
}

/// Deployments whose forecast peak (plus headroom) fits on fewer replicas than run now, at the per-replica
/// capacity that meets the SLO: scale down (one click).
pub fn consolidation(w: &FleetWindow, cfg: &Config) -> Vec<Opportunity> {
    let mut out = Vec::new();
    for d in &w.deployments {
        let Some(cap) = capacity(d) else { continue };
        let Some(observed_peak) = max(&d.demand_tokens_per_s) else { continue };
        let forecast = d.forecast_peak.filter(|f| f.is_finite() && *f >= 0.0);
        let peak = observed_peak.max(forecast.unwrap_or(0.0));
        let needed = ((peak * (1.0 + cfg.consolidation_headroom)) / cap).ceil().max(1.0);
        let needed = (needed.min(f64::from(u32::MAX)) as u32).max(d.min_replicas.max(1));
        if needed >= d.replicas {
            continue;
        }
        let freed = d.replicas - needed;
        let gpr = if d.gpus_per_replica.is_finite() && d.gpus_per_replica > 0.0 { d.gpus_per_replica } else { 1.0 };
        let gpr = gpr * gpu_fraction(&d.gpu_model);
        let hours = f64::from(freed) * gpr * HOURS_PER_WEEK;
        let price = cfg.pricing.price(&d.gpu_model);
        let observed = finite(&d.demand_tokens_per_s).count();
        // A measured capacity and a forecast are stronger evidence than a best-observed bucket alone.
        let basis = match (d.per_replica_capacity.is_some(), forecast.is_some()) {
            (true, true) => 0.9,
            (true, false) | (false, true) => 0.75,
            (false, false) => 0.6,
        };
        let confidence = basis * coverage(w, observed, cfg);
        let util_after = peak / (f64::from(needed) * cap);
        let latest_itl = d.itl_p95_s.iter().rev().copied().find(|x| x.is_finite());
        out.push(make(
            Kind::Consolidation,
            format!("consolidation:{}", d.deployment),
            Target { deployment: Some(d.deployment.clone()), node: None, gpu_index: None },
            format!(
                "{} runs {} replicas; its peak of {:.0} tokens/s fits on {needed} at the SLO",
                d.deployment, d.replicas, peak
            ),
            Evidence {
                series: "deployment_generation_tokens_per_s".into(),
                from_secs: w.start_secs,
                to_secs: w.end_secs(),
                numbers: numbers([
                    ("replicas", f64::from(d.replicas)),
                    ("replicas_needed", f64::from(needed)),
                    ("observed_peak_tokens_per_s", observed_peak),
                    ("forecast_peak_tokens_per_s", forecast.unwrap_or(f64::NAN)),
                    ("per_replica_capacity_tokens_per_s", cap),
                    ("headroom", cfg.consolidation_headroom),
                    ("price_per_gpu_hour", price),
                ]),
            },
            hours,
            price,
            cfg,
            LatencyEffect {
                summary: format!(
                    "replicas at {:.0} % of their SLO capacity at the forecast peak (headroom {:.0} %); ITL p95 should stay under the SLO",
                    util_after * 100.0,
                    cfg.consolidation_headroom * 100.0
                ),
                before_s: latest_itl,
                after_s: None,
                slo_s: d.itl_slo_s,
            },
            confidence,
            ActionPlan {
                description: format!("scale {} from {} to {needed} replicas", d.deployment, d.replicas),
                one_click: true,
                command: Some(Command::Scale { deployment: d.deployment.clone(), replicas: needed }),
            },
        ));
    }
    out
}

/// Deployments whose latency model says a larger batch still meets the ITL SLO: the same demand on fewer
/// replicas (one-click rebatch). Uses [`LatencyModel`] fitted on the window's (batch size, ITL p95,
/// tokens/s per replica) buckets.
pub fn batching(w: &FleetWindow, cfg: &Config) -> Vec<Opportunity> {
    let mut out = Vec::new();
    for d in &w.deployments {
        let Some(slo) = d.itl_slo_s.filter(|s| s.is_finite() && *s > 0.0) else { continue };
        let obs: Vec<BatchObservation> = (0..d.batch_size.len())
            .map(|i| BatchObservation {
                batch_size: d.batch_size[i],
                queue_delay_us: f64::NAN,
                itl_p95_s: d.itl_p95_s[i],
                tokens_per_s: if d.replicas_series[i] >= 1.0 {
                    d.demand_tokens_per_s[i] / d.replicas_series[i]
                } else {
                    f64::NAN
                },
            })
            .collect();
        let Ok(model) = LatencyModel::fit(&obs) else { continue };
        if !model.trusted {
            continue;
        }
        // The batch in use: the median of the last quarter of the window.
        let tail = &d.batch_size[d.batch_size.len().saturating_sub(d.batch_size.len() / 4 + 1)..];
        let Some(current) = quantile(tail, 0.5).filter(|b| *b >= 1.0) else { continue };
        let current = current.round().min(f64::from(latency_model::MAX_BATCH_SEARCH)) as u32;
        let rec = model.recommend(slo, d.batch_bounds, current, cfg.batch_hysteresis);
        if rec.action != latency_model::Action::Increase {
            continue;
        }
        // Decode throughput per replica: the fitted curve where there is one, else batch / ITL.
        let tps = |b: u32| {
            model
                .predict_tokens_per_s(f64::from(b))
                .filter(|t| *t > 0.0)
                .unwrap_or_else(|| f64::from(b) / model.predict_itl(f64::from(b)).max(1e-6))
        };
        let gain = tps(rec.batch_size) / tps(current).max(1e-9);
        if !(gain.is_finite() && gain > 1.0) {
            continue;
        }
        let needed = ((f64::from(d.replicas) / gain).ceil() as u32).max(d.min_replicas.max(1));
        let freed = d.replicas.saturating_sub(needed);
        let gpr = if d.gpus_per_replica.is_finite() && d.gpus_per_replica > 0.0 { d.gpus_per_replica } else { 1.0 };
        let gpr = gpr * gpu_fraction(&d.gpu_model);
        let hours = f64::from(freed) * gpr * HOURS_PER_WEEK;
        let price = cfg.pricing.price(&d.gpu_model);
        let observed = obs.iter().filter(|o| o.batch_size.is_finite() && o.itl_p95_s.is_finite()).count();
        let confidence = model.itl.r_squared.clamp(0.0, 1.0) * 0.8 * coverage(w, observed, cfg);
        let before = model.predict_itl(f64::from(current));
        out.push(make(
            Kind::Batching,
            format!("batching:{}", d.deployment),
            Target { deployment: Some(d.deployment.clone()), node: None, gpu_index: None },
            format!(
                "{} batches {current} sequences with ITL headroom: batch {} meets the {:.0} ms SLO",
                d.deployment,
                rec.batch_size,
                slo * 1e3
            ),
            Evidence {
                series: "deployment_batch_size, deployment_itl_p95_s".into(),
                from_secs: w.start_secs,
                to_secs: w.end_secs(),
                numbers: numbers([
                    ("batch_size_now", f64::from(current)),
                    ("batch_size_recommended", f64::from(rec.batch_size)),
                    ("itl_intercept_s", model.itl.intercept),
                    ("itl_slope_s_per_seq", model.itl.slope),
                    ("itl_r_squared", model.itl.r_squared),
                    ("throughput_gain", gain),
                    ("replicas", f64::from(d.replicas)),
                    ("replicas_needed", f64::from(needed)),
                    ("price_per_gpu_hour", price),
                ]),
            },
            hours,
            price,
            cfg,
            LatencyEffect {
                summary: format!(
                    "ITL p95 rises from {:.1} ms to {:.1} ms (SLO {:.0} ms, {:.0} % headroom left after the margin); throughput per replica x{gain:.2}",
                    before * 1e3,
                    rec.predicted_itl_p95_s * 1e3,
                    slo * 1e3,
                    rec.headroom * 100.0
                ),
                before_s: Some(before),
                after_s: Some(rec.predicted_itl_p95_s),
                slo_s: Some(slo),
            },
            confidence,
            ActionPlan {
                description: format!(
                    "rebatch {} to a maximum batch of {} (then {} replicas carry the same demand)",
                    d.deployment, rec.batch_size, needed
                ),
                one_click: true,
                command: Some(Command::Rebatch {
                    deployment: d.deployment.clone(),
                    max_batch_size: rec.batch_size,
                    max_queue_delay_us: rec
                        .batching_delay_us
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .map(|x| x.round() as u64)
                        .or(d.max_queue_delay_us),
                }),
            },
        ));
    }
    out
}

/// Deployments whose KV cache sits at or above `kv_saturated_pct` for `kv_saturated_fraction` of the
/// window while requests queue: add a replica (one click) or resize. Costs GPU-hours (negative saving).
pub fn kv_cache_saturation(w: &FleetWindow, cfg: &Config) -> Vec<Opportunity> {
    let mut out = Vec::new();
    for d in &w.deployments {
        let observed = finite(&d.kv_cache_pct).count();
        if observed == 0 {
            continue;
        }
        let saturated: Vec<usize> = (0..d.kv_cache_pct.len())
            .filter(|&i| d.kv_cache_pct[i].is_finite() && d.kv_cache_pct[i] >= cfg.kv_saturated_pct)
            .collect();
        let frac = saturated.len() as f64 / observed as f64;
        if frac < cfg.kv_saturated_fraction || saturated.is_empty() {
            continue;
        }
        let queued = saturated.iter().filter(|&&i| d.queue_depth[i].is_finite() && d.queue_depth[i] > 0.0).count();
        let queued_frac = queued as f64 / saturated.len() as f64;
        let gpr = if d.gpus_per_replica.is_finite() && d.gpus_per_replica > 0.0 { d.gpus_per_replica } else { 1.0 };
        let gpr = gpr * gpu_fraction(&d.gpu_model);
        // One more replica while saturated (an autoscaler adds it only then).
        let hours = -(gpr * HOURS_PER_WEEK * frac);
        let price = cfg.pricing.price(&d.gpu_model);
        let confidence = (0.5 + 0.5 * queued_frac) * coverage(w, observed, cfg);
        let itl_sat = mean(&saturated.iter().map(|&i| d.itl_p95_s[i]).collect::<Vec<_>>());
        let replicas = d.replicas.max(1).saturating_add(1);
        out.push(make(
            Kind::KvCacheSaturation,
            format!("kv_cache_saturation:{}", d.deployment),
            Target { deployment: Some(d.deployment.clone()), node: None, gpu_index: None },
            format!(
                "{}'s KV cache was at or above {:.0} % for {:.0} % of the time",
                d.deployment,
                cfg.kv_saturated_pct,
                frac * 100.0
            ),
            Evidence {
                series: "deployment_kv_cache_pct, deployment_queue_depth".into(),
                from_secs: w.start_secs,
                to_secs: w.end_secs(),
                numbers: numbers([
                    ("saturated_fraction", frac),
                    ("kv_cache_mean_pct", mean(&d.kv_cache_pct).unwrap_or(f64::NAN)),
                    ("kv_cache_max_pct", max(&d.kv_cache_pct).unwrap_or(f64::NAN)),
                    ("queued_while_saturated_fraction", queued_frac),
                    ("queue_depth_max", max(&d.queue_depth).unwrap_or(f64::NAN)),
                    ("replicas", f64::from(d.replicas)),
                    ("price_per_gpu_hour", price),
                ]),
            },
            hours,
            price,
            cfg,
            LatencyEffect {
                summary: format!(
                    "a full KV cache queues or preempts requests ({:.0} % of saturated buckets had a queue); another replica relieves TTFT and ITL",
                    queued_frac * 100.0
                ),
                before_s: itl_sat,
                after_s: None,
                slo_s: d.itl_slo_s,
            },
            confidence,
            ActionPlan {
                description: format!(
                    "scale {} to {replicas} replicas, or give each replica more KV-cache memory (fewer max sequences, larger GPU)",
                    d.deployment
                ),
                one_click: true,
                command: Some(Command::Scale { deployment: d.deployment.clone(), replicas }),
            },
        ));
    }
    out
}

/// GPUs with a thermal or power throttle reason in at least `throttle_fraction` of the buckets: the clock
/// lost is capacity lost (compared with the GPU's own, else its model's best clock in the fleet).
pub fn throttling(w: &FleetWindow, cfg: &Config) -> Vec<Opportunity> {
    let mask = THROTTLE_POWER_MASK | THROTTLE_THERMAL_MASK;
    // The best clock per model across the fleet, for GPUs throttled all the time.
    let mut fleet_clock: BTreeMap<&str, f64> = BTreeMap::new();
    for g in &w.gpus {
        if let Some(c) = max(&g.sm_clock_mhz) {
            let e = fleet_clock.entry(g.model.as_str()).or_insert(c);
            *e = e.max(c);
        }
    }
    let mut out = Vec::new();
    for g in &w.gpus {
        let observed = finite(&g.util_pct).count().max(finite(&g.sm_clock_mhz).count());
        if observed == 0 {
            continue;
        }
        let throttled: Vec<usize> =
            (0..g.throttle_reasons.len()).filter(|&i| g.throttle_reasons[i] & mask != 0).collect();
        let frac = (throttled.len() as f64 / observed as f64).min(1.0);
        if throttled.is_empty() || frac < cfg.throttle_fraction {
            continue;
        }
        let reasons = throttled.iter().fold(0u64, |a, &i| a | g.throttle_reasons[i]);
        let thermal = reasons & THROTTLE_THERMAL_MASK != 0;
        let power = reasons & THROTTLE_POWER_MASK != 0;
        let cause = match (thermal, power) {
            (true, true) => "thermal and power",
            (true, false) => "thermal",
            _ => "power",
        };
        let clock_throttled = mean(&throttled.iter().map(|&i| g.sm_clock_mhz[i]).collect::<Vec<_>>());
        let clock_free: Vec<f64> = (0..g.sm_clock_mhz.len())
            .filter(|i| g.throttle_reasons[*i] & mask == 0)
            .map(|i| g.sm_clock_mhz[i])
            .collect();
        let nominal = max(&clock_free).or_else(|| fleet_clock.get(g.model.as_str()).copied());
        let loss = match (clock_throttled, nominal) {
            (Some(t), Some(n)) if n > 0.0 && t < n => 1.0 - t / n,
            _ => 0.0,
        };
        // Throttling only costs while the GPU works; with its utilisation unknown while throttled (failed
        // readings), what it costs is unknown too, and an unknown reading prices nothing.
        let Some(busy) = mean(&throttled.iter().map(|&i| g.util_pct[i]).collect::<Vec<_>>()).map(|u| u / 100.0) else {
            continue;
        };
        let hours = HOURS_PER_WEEK * frac * loss * busy.clamp(0.0, 1.0) * gpu_fraction(&g.model);
        let price = cfg.pricing.price(&g.model);
        let confidence = if loss > 0.0 { 0.8 } else { 0.4 } * coverage(w, observed, cfg);
        let remedy = if thermal {
            "check cooling and airflow on the node (fans, inlet temperature, blocked slots)"
        } else {
            "raise the power limit or spread the load (power cap reached)"
        };
        out.push(make(
            Kind::Throttling,
            format!("throttling:{}:{}", g.node, g.gpu_index),
            gpu_target(g),
            format!(
                "GPU {} on {} was {cause} throttled {:.0} % of the time, losing {:.0} % of its clock",
                g.gpu_index,
                g.node,
                frac * 100.0,
                loss * 100.0
            ),
            Evidence {
                series: "gpu_throttle_reasons, gpu_sm_clock_mhz".into(),
                from_secs: w.start_secs,
                to_secs: w.end_secs(),
                numbers: numbers([
                    ("throttled_fraction", frac),
                    ("throttle_reasons_mask", reasons as f64),
                    ("sm_clock_throttled_mhz", clock_throttled.unwrap_or(f64::NAN)),
                    ("sm_clock_unthrottled_mhz", nominal.unwrap_or(f64::NAN)),
                    ("clock_loss_fraction", loss),
                    ("util_while_throttled_pct", busy * 100.0),
                    ("power_mean_w", mean(&g.power_w).unwrap_or(f64::NAN)),
                    ("price_per_gpu_hour", price),
                ]),
            },
            hours,
            price,
            cfg,
            LatencyEffect {
                summary: format!(
                    "requests on this GPU run up to {:.0} % slower while throttled; fixing it restores the clock",
                    if loss < 1.0 { 100.0 * loss / (1.0 - loss) } else { 100.0 }
                ),
                ..LatencyEffect::default()
            },
            confidence,
            ActionPlan { description: remedy.to_string(), one_click: false, command: None },
        ));
    }
    out
}

/// GPUs whose utilisation departs from their peers' in the same deployment (via
/// [`crate::peers::score_peers`]; idle GPUs are not peers): a slow or starved GPU. One-click bandwidth
/// probe, then drain and replace if degraded.
pub fn stragglers(w: &FleetWindow, cfg: &Config) -> Result<Vec<Opportunity>, Error> {
    let mut groups: BTreeMap<&str, Vec<&GpuWindow>> = BTreeMap::new();
    for g in &w.gpus {
        let Some(dep) = g.deployment.as_deref() else { continue };
        // Only GPUs that serve: an idle GPU is the idle detectors' business, not a straggler.
        if idleness(g, cfg).is_some_and(|(frac, ..)| frac < 0.5) {
            groups.entry(dep).or_default().push(g);
        }
    }
    let mut out = Vec::new();
    for (dep, members) in groups {
        if members.len() < cfg.peers.min_members {
            continue;
        }
        // Buckets where a GPU sat idle (not serving yet, or drained) are not comparable: left out.
        let masked: Vec<Vec<f64>> = members
            .iter()
            .map(|g| g.util_pct.iter().map(|u| if *u >= cfg.idle_util_pct { *u } else { f64::NAN }).collect())
            .collect();
        let series: Vec<&[f64]> = masked.iter().map(Vec::as_slice).collect();
        let report = score_peers(&series, &cfg.peers)?;
        for i in report.outliers() {
            let (Some(g), Some(m)) = (members.get(i), report.members.get(i)) else { continue };
            let Some(ev) = m.evidence else { continue };
            let slower = ev.offset > 0.0;
            let denom = ev.value.max(ev.peer_median);
            let lost = if denom > 0.0 { (ev.offset.abs() / denom).min(1.0) } else { 0.0 };
            let hours = HOURS_PER_WEEK * lost * gpu_fraction(&g.model);
            let price = cfg.pricing.price(&g.model);
            let confidence = m.score * coverage(w, ev.samples, cfg);
            let what = if slower {
                "works harder than its peers for the same routing: likely slower (degraded memory, clocks or PCIe)"
            } else {
                "gets less work than its peers: routing imbalance or a degraded replica"
            };
            out.push(make(
                Kind::Straggler,
                format!("straggler:{}:{}", g.node, g.gpu_index),
                gpu_target(g),
                format!(
                    "GPU {} on {} runs at {:.0} % while its {} peers in {dep} run at {:.0} %",
                    g.gpu_index,
                    g.node,
                    ev.value,
                    members.len() - 1,
                    ev.peer_median
                ),
                Evidence {
                    series: "gpu_util_pct".into(),
                    from_secs: w.start_secs,
                    to_secs: w.end_secs(),
                    numbers: numbers([
                        ("util_pct", ev.value),
                        ("peer_median_util_pct", ev.peer_median),
                        ("offset_pct", ev.offset),
                        ("mad_distance", ev.mad_distance),
                        ("peer_score", m.score),
                        ("peers", (members.len() - 1) as f64),
                        ("price_per_gpu_hour", price),
                    ]),
                },
                hours,
                price,
                cfg,
                LatencyEffect {
                    summary: format!("this GPU {what}; requests it serves see the worst latency of the deployment"),
                    ..LatencyEffect::default()
                },
                confidence,
                ActionPlan {
                    description: format!(
                        "run the bandwidth probe on {} (one click), then drain and replace GPU {} if it is degraded",
                        g.node, g.gpu_index
                    ),
                    one_click: true,
                    command: Some(Command::Probe { node: g.node.clone() }),
                },
            ));
        }
    }
    Ok(out)
}

/// Nodes with a GPU reporting an XID or new uncorrectable ECC errors: drain them before they fail requests.
/// Saves nothing directly (saving 0), so it ranks by confidence among its peers.
pub fn drain_nodes(w: &FleetWindow, cfg: &Config) -> Vec<Opportunity> {
    let mut nodes: BTreeMap<&str, Vec<&GpuWindow>> = BTreeMap::new();
    for g in &w.gpus {
        if g.xid_max != 0 || g.ecc_dbe_new > 0 {
            nodes.entry(g.node.as_str()).or_default().push(g);
        }
    }
    let mut out = Vec::new();
    for (node, bad) in nodes {
        let gpus_on_node = w.gpus.iter().filter(|g| g.node == node).count();
        let hardware = bad.iter().any(|g| g.ecc_dbe_new > 0 || HARDWARE_XIDS.contains(&g.xid_max));
        let confidence = if hardware { 0.9 } else { 0.4 };
        let xids: Vec<String> =
            bad.iter().filter(|g| g.xid_max != 0).map(|g| format!("GPU {}: XID {}", g.gpu_index, g.xid_max)).collect();
        let ecc: u64 = bad.iter().map(|g| g.ecc_dbe_new).sum();
        let deployment = bad.iter().find_map(|g| g.deployment.clone());
        let model = bad.first().map_or("", |g| g.model.as_str());
        out.push(make(
            Kind::DrainNode,
            format!("drain_node:{node}"),
            Target { deployment, node: Some(node.to_string()), gpu_index: None },
            format!(
                "{node} reports {}{}{}",
                xids.join(", "),
                if !xids.is_empty() && ecc > 0 { " and " } else { "" },
                if ecc > 0 { format!("{ecc} new uncorrectable ECC errors") } else { String::new() }
            ),
            Evidence {
                series: "gpu_xid_last, gpu_ecc_dbe_total".into(),
                from_secs: w.start_secs,
                to_secs: w.end_secs(),
                numbers: numbers([
                    ("gpus_with_errors", bad.len() as f64),
                    ("gpus_on_node", gpus_on_node as f64),
                    ("ecc_dbe_new", ecc as f64),
                    ("xid_max", bad.iter().map(|g| g.xid_max).max().unwrap_or(0) as f64),
                    ("hardware_error", if hardware { 1.0 } else { 0.0 }),
                ]),
            },
            0.0,
            cfg.pricing.price(model),
            cfg,
            LatencyEffect {
                summary: format!(
                    "avoids failed and retried requests; capacity drops by {gpus_on_node} GPUs while the node is drained"
                ),
                ..LatencyEffect::default()
            },
            confidence,
            ActionPlan {
                description: format!("cordon and drain {node}, then reset or replace the failing GPUs"),
                one_click: false,
                command: None,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 60;
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    fn gpu(node: &str, i: u32, util: f64) -> GpuWindow {
        GpuWindow {
            node: node.into(),
            gpu_index: i,
            model: "NVIDIA H100 80GB HBM3".into(),
            deployment: Some("ml/llama".into()),
            util_pct: vec![util; N],
            sm_active: vec![util / 100.0; N],
            mem_used_bytes: vec![if util > 0.0 { 60.0 * GIB } else { 0.5 * GIB }; N],
            mem_total_bytes: 80.0 * GIB,
            power_w: vec![70.0 + 6.0 * util; N],
            sm_clock_mhz: vec![1980.0; N],
            throttle_reasons: vec![0; N],
            xid_max: 0,
            ecc_dbe_new: 0,
        }
    }

    fn window(gpus: Vec<GpuWindow>, deployments: Vec<DeploymentWindow>) -> FleetWindow {
        FleetWindow { start_secs: 1_700_000_000, bucket_secs: 360, buckets: N, gpus, deployments }
    }

    fn deployment(replicas: u32, demand: f64) -> DeploymentWindow {
        DeploymentWindow {
            deployment: "ml/llama".into(),
            gpu_model: "NVIDIA H100 80GB HBM3".into(),
            replicas,
            min_replicas: 1,
            gpus_per_replica: 1.0,
            replicas_series: vec![f64::from(replicas); N],
            demand_tokens_per_s: vec![demand; N],
            forecast_peak: None,
            per_replica_capacity: Some(1000.0),
            itl_p95_s: vec![0.03; N],
            itl_slo_s: Some(0.06),
            batch_size: vec![16.0; N],
            batch_bounds: (4, 128),
            max_queue_delay_us: Some(2000),
            kv_cache_pct: vec![50.0; N],
            queue_depth: vec![0.0; N],
        }
    }

    #[test]
    fn a_mig_slice_is_its_share_of_the_parent_gpu() {
        assert_eq!(gpu_fraction("NVIDIA H100 80GB HBM3"), 1.0);
        assert_eq!(gpu_fraction("NVIDIA H100 80GB HBM3 MIG 1g.10gb"), 1.0 / 7.0);
        assert_eq!(gpu_fraction("NVIDIA H100 80GB HBM3 MIG 3g.40gb"), 3.0 / 7.0);
        assert_eq!(gpu_fraction("NVIDIA A100-SXM4-80GB MIG 1c.2g.20gb"), 2.0 / 7.0);
        assert_eq!(gpu_fraction("NVIDIA A100-SXM4-40GB MIG 7g.40gb"), 1.0);
        assert_eq!(gpu_fraction("NVIDIA A30 MIG 2g.12gb+me"), 0.5);
        assert_eq!(gpu_fraction("NVIDIA H100 MIG weird"), 1.0 / 7.0);
    }

    #[test]
    fn an_idle_mig_slice_saves_its_share_not_a_whole_gpu() {
        let mut slice = gpu("n1", 1001, 0.0);
        slice.model = "NVIDIA H100 80GB HBM3 MIG 1g.10gb".into();
        let w = window(vec![gpu("n1", 0, 0.0), slice], vec![]);
        let ops = idle_gpus(&w, &Config::default());
        let whole = ops.iter().find(|o| o.key == "idle_gpu:n1:0").unwrap();
        let part = ops.iter().find(|o| o.key == "idle_gpu:n1:1001").unwrap();
        assert!((part.gpu_hours_per_week * 7.0 - whole.gpu_hours_per_week).abs() < 0.1, "{part:?} {whole:?}");
        assert!((part.saving_per_week * 7.0 - whole.saving_per_week).abs() < 0.5);
        assert_eq!(part.evidence.numbers["gpu_fraction"], round(1.0 / 7.0, 4));
    }

    #[test]
    fn a_gpu_whose_utilisation_is_unknown_is_never_called_idle() {
        // Unknown readings are NaN in the window (absent on the wire, NULL in the store), never 0.
        let unknown = gpu("n1", 0, f64::NAN);
        let w = window(vec![unknown], vec![]);
        assert!(idle_gpus(&w, &Config::default()).is_empty());
        assert!(memory_only_gpus(&w, &Config::default()).is_empty());
    }

    #[test]
    fn an_idle_gpu_is_found_and_a_busy_one_is_not() {
        let w = window(vec![gpu("n1", 0, 0.0), gpu("n1", 1, 70.0)], vec![]);
        let ops = idle_gpus(&w, &Config::default());
        assert_eq!(ops.len(), 1);
        let o = &ops[0];
        assert_eq!(o.key, "idle_gpu:n1:0");
        assert_eq!(o.gpu_hours_per_week, 168.0);
        assert_eq!(o.saving_per_week, 672.0);
        assert!(o.confidence > 0.9, "{}", o.confidence);
        assert_eq!(o.expected_value, (672.0 * o.confidence * 100.0).round() / 100.0);
        assert!(memory_only_gpus(&w, &Config::default()).is_empty(), "nothing loaded: idle, not memory-only");
    }

    #[test]
    fn a_gpu_idle_only_part_of_the_time_stays_quiet() {
        let mut g = gpu("n1", 0, 0.0);
        for u in g.util_pct.iter_mut().step_by(3) {
            *u = 80.0;
        }
        assert!(idle_gpus(&window(vec![g], vec![]), &Config::default()).is_empty());
    }

    #[test]
    fn a_loaded_gpu_without_traffic_is_memory_only() {
        let mut g = gpu("n1", 2, 0.0);
        g.mem_used_bytes = vec![60.0 * GIB; N];
        let w = window(vec![g, gpu("n1", 1, 70.0)], vec![]);
        let ops = memory_only_gpus(&w, &Config::default());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].key, "memory_only:n1:2");
        assert!(ops[0].evidence.numbers["mem_used_fraction"] > 0.7);
        assert!(idle_gpus(&w, &Config::default()).is_empty(), "memory-only GPUs are not also idle GPUs");
    }

    #[test]
    fn an_over_provisioned_deployment_consolidates_and_a_right_sized_one_does_not() {
        // Peak 2,000 tokens/s + 20 % on replicas of 1,000 tokens/s: 3 needed, 8 running.
        let mut d = deployment(8, 1500.0);
        d.demand_tokens_per_s[10] = 2000.0;
        let ops = consolidation(&window(vec![], vec![d.clone()]), &Config::default());
        assert_eq!(ops.len(), 1);
        let o = &ops[0];
        assert_eq!(o.key, "consolidation:ml/llama");
        assert_eq!(o.evidence.numbers["replicas_needed"], 3.0);
        assert_eq!(o.gpu_hours_per_week, 5.0 * 168.0);
        assert!(o.action.one_click);
        assert_eq!(o.action.command, Some(Command::Scale { deployment: "ml/llama".into(), replicas: 3 }));

        // A forecast peak above the observed one sizes for the forecast.
        d.forecast_peak = Some(6000.0);
        assert!(consolidation(&window(vec![], vec![d.clone()]), &Config::default()).is_empty());
        // Right-sized: 3 replicas for a 2,000 peak.
        let mut d = deployment(3, 1500.0);
        d.demand_tokens_per_s[10] = 2000.0;
        assert!(consolidation(&window(vec![], vec![d]), &Config::default()).is_empty());
    }

    #[test]
    fn consolidation_falls_back_to_the_best_throughput_seen_at_the_slo() {
        let mut d = deployment(6, 1200.0);
        d.per_replica_capacity = None;
        // Only one bucket met the SLO: 3,600 tokens/s on the 2 replicas reporting then, 1,800 each.
        d.itl_p95_s = vec![0.08; N];
        d.demand_tokens_per_s[5] = 3600.0;
        d.replicas_series[5] = 2.0;
        d.itl_p95_s[5] = 0.04;
        let ops = consolidation(&window(vec![], vec![d.clone()]), &Config::default());
        assert_eq!(ops[0].evidence.numbers["per_replica_capacity_tokens_per_s"], 1800.0);
        assert_eq!(ops[0].evidence.numbers["replicas_needed"], 3.0);
        // Without an SLO there is no capacity to size by.
        d.itl_slo_s = None;
        assert!(consolidation(&window(vec![], vec![d]), &Config::default()).is_empty());
    }

    fn batch_deployment(itl_per_seq: f64) -> DeploymentWindow {
        let mut d = deployment(8, 8000.0);
        // Batches 8..24 observed; ITL = 10 ms + itl_per_seq per sequence.
        // The last quarter runs at batch 16 (the batch in use).
        for i in 0..N {
            let b = if i >= N - N / 4 - 1 { 16.0 } else { 8.0 + (i % 5) as f64 * 4.0 };
            d.batch_size[i] = b;
            d.itl_p95_s[i] = 0.010 + itl_per_seq * b + if i % 2 == 0 { 0.0002 } else { -0.0002 };
            d.demand_tokens_per_s[i] = 8.0 * b / d.itl_p95_s[i];
        }
        d
    }

    #[test]
    fn a_small_batch_with_latency_headroom_is_a_rebatch_opportunity() {
        let d = batch_deployment(0.0005);
        let ops = batching(&window(vec![], vec![d]), &Config::default());
        assert_eq!(ops.len(), 1, "{ops:?}");
        let o = &ops[0];
        assert_eq!(o.key, "batching:ml/llama");
        let Some(Command::Rebatch { max_batch_size, .. }) = &o.action.command else { panic!("{o:?}") };
        assert!(*max_batch_size > 16, "{max_batch_size}");
        assert!(o.latency.after_s.unwrap() <= 0.06);
        assert!(o.gpu_hours_per_week > 0.0);
    }

    #[test]
    fn a_batch_already_at_the_slo_is_left_alone() {
        // ITL = 10 ms + 3 ms/seq: batch 16 predicts 58 ms against a 60 ms SLO.
        let d = batch_deployment(0.003);
        assert!(batching(&window(vec![], vec![d]), &Config::default()).is_empty());
        // No SLO, no opinion.
        let mut d = batch_deployment(0.0005);
        d.itl_slo_s = None;
        assert!(batching(&window(vec![], vec![d]), &Config::default()).is_empty());
    }

    #[test]
    fn a_saturated_kv_cache_with_a_queue_asks_for_a_replica() {
        let mut d = deployment(2, 1000.0);
        for i in 0..N / 2 {
            d.kv_cache_pct[i] = 97.0;
            d.queue_depth[i] = 12.0;
        }
        let ops = kv_cache_saturation(&window(vec![], vec![d]), &Config::default());
        assert_eq!(ops.len(), 1);
        let o = &ops[0];
        assert!(o.gpu_hours_per_week < 0.0, "costs GPU-hours");
        assert_eq!(o.action.command, Some(Command::Scale { deployment: "ml/llama".into(), replicas: 3 }));
        assert!(kv_cache_saturation(&window(vec![], vec![deployment(2, 1000.0)]), &Config::default()).is_empty());
    }

    #[test]
    fn a_thermally_throttled_gpu_is_found_with_its_clock_loss() {
        let mut hot = gpu("n1", 1, 80.0);
        for i in 0..N / 2 {
            hot.throttle_reasons[i] = 0x20;
            hot.sm_clock_mhz[i] = 1485.0;
        }
        let w = window(vec![hot, gpu("n1", 0, 80.0)], vec![]);
        let ops = throttling(&w, &Config::default());
        assert_eq!(ops.len(), 1);
        let o = &ops[0];
        assert_eq!(o.key, "throttling:n1:1");
        assert!((o.evidence.numbers["clock_loss_fraction"] - 0.25).abs() < 1e-9);
        // Half the week, a quarter of the clock, 80 % busy.
        assert!((o.gpu_hours_per_week - 168.0 * 0.5 * 0.25 * 0.8).abs() < 0.01, "{}", o.gpu_hours_per_week);
        assert!(o.title.contains("thermal"));
    }

    #[test]
    fn throttling_with_unknown_utilisation_is_not_priced() {
        let mut hot = gpu("n1", 1, 80.0);
        for i in 0..N / 2 {
            hot.throttle_reasons[i] = 0x20;
            hot.sm_clock_mhz[i] = 1485.0;
            // Every utilisation read failed while it throttled.
            hot.util_pct[i] = f64::NAN;
        }
        assert!(throttling(&window(vec![hot], vec![]), &Config::default()).is_empty());
    }

    #[test]
    fn idle_clock_reasons_are_not_throttling() {
        let mut g = gpu("n1", 0, 0.0);
        g.throttle_reasons = vec![0x01; N];
        assert!(throttling(&window(vec![g], vec![]), &Config::default()).is_empty());
    }

    #[test]
    fn a_straggler_departs_from_its_peers() {
        let mut gpus: Vec<GpuWindow> = (0..6).map(|i| gpu("n1", i, 60.0 + f64::from(i))).collect();
        gpus[3].util_pct = vec![95.0; N];
        let ops = stragglers(&window(gpus, vec![]), &Config::default()).unwrap();
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert_eq!(ops[0].key, "straggler:n1:3");
        assert_eq!(ops[0].action.command, Some(Command::Probe { node: "n1".into() }));
        let calm: Vec<GpuWindow> = (0..6).map(|i| gpu("n1", i, 60.0 + f64::from(i))).collect();
        assert!(stragglers(&window(calm, vec![]), &Config::default()).unwrap().is_empty());
    }

    #[test]
    fn a_node_with_a_hardware_xid_is_drained() {
        let mut bad = gpu("n2", 0, 50.0);
        bad.xid_max = 79;
        let ops = drain_nodes(&window(vec![bad, gpu("n2", 1, 50.0), gpu("n1", 0, 50.0)], vec![]), &Config::default());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].key, "drain_node:n2");
        assert_eq!(ops[0].confidence, 0.9);
        assert!(drain_nodes(&window(vec![gpu("n1", 0, 50.0)], vec![]), &Config::default()).is_empty());
    }

    #[test]
    fn detect_ranks_by_expected_value_and_survives_nan_and_empty_input() {
        let mut hot = gpu("n1", 1, 80.0);
        hot.throttle_reasons = vec![0x20; N];
        hot.sm_clock_mhz = vec![1485.0; N];
        let w = window(vec![gpu("n1", 0, 0.0), hot, gpu("n1", 2, 80.0)], vec![deployment(2, 1000.0)]);
        let ops = detect(&w, &Config::default()).unwrap();
        assert!(ops.len() >= 2);
        assert!(ops.windows(2).all(|p| p[0].expected_value >= p[1].expected_value));
        assert_eq!(ops[0].key, "idle_gpu:n1:0");

        let empty = FleetWindow { start_secs: 0, bucket_secs: 60, buckets: 0, gpus: vec![], deployments: vec![] };
        assert!(detect(&empty, &Config::default()).unwrap().is_empty());
        let mut nan = gpu("n1", 0, f64::NAN);
        nan.sm_clock_mhz = vec![f64::NAN; N];
        let mut d = deployment(2, f64::NAN);
        d.itl_p95_s = vec![f64::NAN; N];
        d.kv_cache_pct = vec![f64::NAN; N];
        assert!(detect(&window(vec![nan], vec![d]), &Config::default()).unwrap().is_empty());
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut g = gpu("n1", 0, 0.0);
        g.util_pct.pop();
        assert!(matches!(detect(&window(vec![g], vec![]), &Config::default()), Err(Error::InvalidArgument { .. })));
        let w = FleetWindow { start_secs: 0, bucket_secs: 0, buckets: 0, gpus: vec![], deployments: vec![] };
        assert!(detect(&w, &Config::default()).is_err());
        let cfg = Config { idle_fraction: f64::NAN, ..Config::default() };
        assert!(detect(&window(vec![], vec![]), &cfg).is_err());
    }
}
