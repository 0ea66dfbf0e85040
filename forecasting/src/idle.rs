//! Idle capacity: how much of the fleet sat allocated but unused over a window, in GPU-equivalents,
//! GPU-hours per week and money.
//!
//! The idle-GPU opportunity only names a GPU that was idle nearly all the time (`idle_fraction`), because
//! that is the one an operator can release today. Capacity that is idle part of the time (the night-time
//! trough of a fleet sized for its peak, the GPUs an autoscaler has scaled off but the node pool still
//! pays for) is waste too, and it is what autoscaling recovers: this module adds it up, GPU by GPU, bucket
//! by bucket, so the figure can be compared with a backtest's static-peak versus autoscaled GPU-hours.
//!
//! A bucket counts as idle when the GPU's utilisation is under `idle_util_pct` **and** no model is loaded
//! (memory under `loaded_mem_fraction`; unknown memory counts as not loaded), the same test as the
//! idle-GPU detector. A loaded replica without traffic (memory-only) or a replica starting up is not idle
//! capacity here: the backtest counts those as GPU-hours the autoscaler pays for.
//!
//! Pure code: no IO, no panics on NaN or empty input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::opportunities::{Config, FleetWindow, HOURS_PER_WEEK};

/// Idle capacity of one GPU model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelIdle {
    /// GPUs of this model with at least one observed bucket.
    pub gpus: usize,
    /// Sum over those GPUs of their idle share of observed buckets (GPU-equivalents idle on average).
    pub idle_gpu_equivalent: f64,
    /// Price per GPU-hour used.
    pub price_per_gpu_hour: f64,
}

/// Idle capacity of the fleet over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleCapacity {
    /// Window start, Unix seconds.
    pub from_secs: i64,
    /// Window end, Unix seconds.
    pub to_secs: i64,
    /// GPUs with at least one observed bucket.
    pub gpus_observed: usize,
    /// GPUs idle on average over the window (sum of idle shares).
    pub idle_gpu_equivalent: f64,
    /// `idle_gpu_equivalent / gpus_observed` (0 without GPUs).
    pub idle_share: f64,
    /// Idle GPU-hours per week at this rate.
    pub gpu_hours_per_week: f64,
    /// Their price per week.
    pub money_per_week: f64,
    /// Currency of `money_per_week`.
    pub currency: String,
    /// Per GPU model name.
    pub by_model: BTreeMap<String, ModelIdle>,
}

/// Adds up the idle capacity of `w` (see the module documentation for what counts as idle).
pub fn idle_capacity(w: &FleetWindow, cfg: &Config) -> IdleCapacity {
    let mut by_model: BTreeMap<String, ModelIdle> = BTreeMap::new();
    for g in &w.gpus {
        let mut observed = 0usize;
        let mut idle = 0usize;
        let loaded_at = if g.mem_total_bytes.is_finite() && g.mem_total_bytes > 0.0 {
            g.mem_total_bytes * cfg.loaded_mem_fraction
        } else {
            f64::INFINITY
        };
        for (i, u) in g.util_pct.iter().enumerate() {
            if !u.is_finite() {
                continue;
            }
            observed += 1;
            let mem = g.mem_used_bytes.get(i).copied().unwrap_or(f64::NAN);
            let loaded = mem.is_finite() && mem >= loaded_at;
            if *u < cfg.idle_util_pct && !loaded {
                idle += 1;
            }
        }
        if observed == 0 {
            continue;
        }
        let entry = by_model.entry(g.model.clone()).or_insert_with(|| ModelIdle {
            gpus: 0,
            idle_gpu_equivalent: 0.0,
            price_per_gpu_hour: cfg.pricing.price(&g.model),
        });
        entry.gpus += 1;
        // A MIG slice is its share of a board, not a whole idle GPU.
        entry.idle_gpu_equivalent += idle as f64 / observed as f64 * crate::opportunities::gpu_fraction(&g.model);
    }
    let gpus_observed = by_model.values().map(|m| m.gpus).sum::<usize>();
    let idle_gpu_equivalent = by_model.values().map(|m| m.idle_gpu_equivalent).sum::<f64>();
    let money_per_week =
        by_model.values().map(|m| m.idle_gpu_equivalent * HOURS_PER_WEEK * m.price_per_gpu_hour).sum::<f64>();
    IdleCapacity {
        from_secs: w.start_secs,
        to_secs: w.end_secs(),
        gpus_observed,
        idle_gpu_equivalent,
        idle_share: if gpus_observed > 0 { idle_gpu_equivalent / gpus_observed as f64 } else { 0.0 },
        gpu_hours_per_week: idle_gpu_equivalent * HOURS_PER_WEEK,
        money_per_week,
        currency: cfg.pricing.currency.clone(),
        by_model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opportunities::GpuWindow;

    const GIB: f64 = 1_073_741_824.0;

    fn gpu(node: &str, model: &str, util: Vec<f64>, mem_gib: Vec<f64>) -> GpuWindow {
        let n = util.len();
        GpuWindow {
            node: node.into(),
            gpu_index: 0,
            model: model.into(),
            deployment: None,
            util_pct: util,
            sm_active: vec![f64::NAN; n],
            mem_used_bytes: mem_gib.into_iter().map(|m| m * GIB).collect(),
            mem_total_bytes: 80.0 * GIB,
            power_w: vec![f64::NAN; n],
            sm_clock_mhz: vec![f64::NAN; n],
            throttle_reasons: vec![0; n],
            xid_max: 0,
            ecc_dbe_new: 0,
        }
    }

    fn window(gpus: Vec<GpuWindow>) -> FleetWindow {
        let buckets = gpus.first().map_or(0, |g| g.util_pct.len());
        FleetWindow { start_secs: 1_000, bucket_secs: 60, buckets, gpus, deployments: Vec::new() }
    }

    #[test]
    fn idle_shares_add_up_per_gpu_and_are_priced_per_model() {
        // A: idle 3 of 4 buckets with nothing loaded; B: busy; C: idle but a model is loaded (memory-only,
        // not idle capacity); D: half its buckets missing, idle in 1 of the 2 observed.
        let w = window(vec![
            gpu("a", "NVIDIA H100 80GB HBM3", vec![0.0, 1.0, 80.0, 2.0], vec![0.5; 4]),
            gpu("b", "NVIDIA H100 80GB HBM3", vec![70.0; 4], vec![40.0; 4]),
            gpu("c", "NVIDIA A100-SXM4-80GB", vec![0.0; 4], vec![38.0; 4]),
            gpu("d", "NVIDIA A100-SXM4-80GB", vec![f64::NAN, 0.0, f64::NAN, 50.0], vec![0.5, 0.5, f64::NAN, 40.0]),
        ]);
        let idle = idle_capacity(&w, &Config::default());
        assert_eq!(idle.gpus_observed, 4);
        assert!((idle.idle_gpu_equivalent - 1.25).abs() < 1e-12, "{idle:?}");
        assert!((idle.idle_share - 1.25 / 4.0).abs() < 1e-12);
        assert!((idle.gpu_hours_per_week - 1.25 * 168.0).abs() < 1e-9);
        // 0.75 H100 at 4.0 and 0.5 A100 at 2.5 per GPU-hour.
        assert!((idle.money_per_week - (0.75 * 4.0 + 0.5 * 2.5) * 168.0).abs() < 1e-9, "{idle:?}");
        assert_eq!(idle.by_model["NVIDIA H100 80GB HBM3"].gpus, 2);
        assert_eq!((idle.from_secs, idle.to_secs), (1_000, 1_240));
    }

    #[test]
    fn empty_and_all_missing_windows_are_zero_not_nan() {
        let idle = idle_capacity(&window(Vec::new()), &Config::default());
        assert_eq!((idle.gpus_observed, idle.idle_gpu_equivalent, idle.idle_share), (0, 0.0, 0.0));
        let idle =
            idle_capacity(&window(vec![gpu("x", "T4", vec![f64::NAN; 3], vec![f64::NAN; 3])]), &Config::default());
        assert_eq!(idle.gpus_observed, 0);
        assert!(idle.money_per_week == 0.0);
    }

    #[test]
    fn unknown_memory_counts_as_nothing_loaded() {
        let mut g = gpu("x", "L4", vec![0.0, 0.0], vec![f64::NAN, f64::NAN]);
        g.mem_total_bytes = f64::NAN;
        let idle = idle_capacity(&window(vec![g]), &Config::default());
        assert!((idle.idle_gpu_equivalent - 1.0).abs() < 1e-12);
    }
}
