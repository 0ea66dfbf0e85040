//! Memory leaks: a GPU whose memory used creeps up steadily, faster than its peers', and will run out.
//!
//! Assumption: serving engines allocate their weights and KV cache up front or grow them with load, and
//! load moves every replica of a deployment together; so per bucket the GPU's memory minus the median of
//! its peers' (when it has at least two peers) removes what load does, and what is left grows steadily only
//! when something leaks. A leak is called when, over the last [`LeakConfig::lookback_buckets`]:
//! 1. the least-squares slope of that excess is positive and it rose in most steps (`min_rising_fraction`:
//!    a leak creeps monotonically, noise goes up and down about equally);
//! 2. the fitted rise over the lookback is at least `min_rise_fraction` of the GPU's memory (above what
//!    KV-cache churn moves between buckets);
//! 3. at that slope the GPU's memory is exhausted within `horizon_secs` (the out-of-memory kill is what
//!    hurts; a slow creep that would take a day is a ticket, not a page).
//!
//! The rules are fixed in advance from those physical statements, not fitted to a benchmark.

use serde::{Deserialize, Serialize};

/// Settings of the leak verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeakConfig {
    /// Complete buckets looked at (the newest ones).
    pub lookback_buckets: usize,
    /// Finite buckets needed among them.
    pub min_buckets: usize,
    /// Share of bucket-to-bucket steps that must rise.
    pub min_rising_fraction: f64,
    /// Fitted rise over the lookback, as a fraction of the GPU's memory, needed.
    pub min_rise_fraction: f64,
    /// Memory must run out within this many seconds at the fitted slope.
    pub horizon_secs: f64,
}

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            lookback_buckets: 10,
            min_buckets: 8,
            min_rising_fraction: 0.7,
            min_rise_fraction: 0.02,
            horizon_secs: 3600.0,
        }
    }
}

/// Why a GPU was called leaking.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LeakEvidence {
    /// Fitted growth of memory beyond the peers', bytes per second.
    pub slope_bytes_per_s: f64,
    /// Fitted rise over the lookback, bytes.
    pub rise_bytes: f64,
    /// Share of steps that rose.
    pub rising_fraction: f64,
    /// Memory used in the newest bucket, bytes.
    pub mem_used_bytes: f64,
    /// Seconds until the memory is full at the fitted slope.
    pub seconds_to_full: f64,
}

/// The verdict for one GPU: `mem` its memory used per bucket, `peer_median` the median of its peers' per
/// bucket (NaN or empty when it has none), `mem_total` its memory, `bucket_secs` the bucket width.
pub fn leak(
    mem: &[f64],
    peer_median: &[f64],
    mem_total: f64,
    bucket_secs: f64,
    cfg: &LeakConfig,
) -> Option<LeakEvidence> {
    if !(mem_total > 0.0 && bucket_secs > 0.0) || mem.is_empty() {
        return None;
    }
    let from = mem.len().saturating_sub(cfg.lookback_buckets);
    let points: Vec<(f64, f64)> = (from..mem.len())
        .filter_map(|i| {
            let m = mem[i];
            let p = peer_median.get(i).copied().unwrap_or(f64::NAN);
            let excess = if p.is_finite() { m - p } else { m };
            m.is_finite().then_some((i as f64 * bucket_secs, excess))
        })
        .collect();
    if points.len() < cfg.min_buckets.max(3) {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let rising = points.windows(2).filter(|w| w[1].1 > w[0].1).count() as f64 / (n - 1.0);
    let span = points.last().map_or(0.0, |p| p.0) - points.first().map_or(0.0, |p| p.0);
    let rise = slope * span;
    let newest = mem.iter().rev().copied().find(|m| m.is_finite())?;
    let to_full = if slope > 0.0 { (mem_total - newest).max(0.0) / slope } else { f64::INFINITY };
    let leaking = slope > 0.0
        && rising >= cfg.min_rising_fraction
        && rise >= cfg.min_rise_fraction * mem_total
        && to_full <= cfg.horizon_secs;
    leaking.then_some(LeakEvidence {
        slope_bytes_per_s: slope,
        rise_bytes: rise,
        rising_fraction: rising,
        mem_used_bytes: newest,
        seconds_to_full: to_full,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1_073_741_824.0;
    const TOTAL: f64 = 80.0 * GIB;

    /// Deterministic noise in [-a, a].
    fn noise(i: usize, a: f64) -> f64 {
        (((i * 7919) % 101) as f64 / 50.0 - 1.0) * a
    }

    #[test]
    fn a_steady_creep_towards_full_memory_is_a_leak() {
        // 0.5 GiB per minute from 60 GiB: full in 40 minutes.
        let peers: Vec<f64> = (0..30).map(|i| 60.0 * GIB + noise(i, 0.2 * GIB)).collect();
        let mem: Vec<f64> =
            (0..30).map(|i| 60.0 * GIB + if i >= 20 { (i - 20) as f64 * 0.5 * GIB } else { 0.0 }).collect();
        let e = leak(&mem, &peers, TOTAL, 60.0, &LeakConfig::default()).expect("leak");
        assert!(e.seconds_to_full < 3600.0 && e.rising_fraction >= 0.7, "{e:?}");
        assert!(
            leak(&mem[..22], &peers[..22], TOTAL, 60.0, &LeakConfig::default()).is_none(),
            "two minutes are too few"
        );
    }

    #[test]
    fn load_that_raises_every_replica_is_not_a_leak() {
        let load: Vec<f64> = (0..30).map(|i| 50.0 * GIB + i as f64 * 0.5 * GIB).collect();
        assert!(leak(&load, &load, TOTAL, 60.0, &LeakConfig::default()).is_none());
        // Without peers the same growth would be called.
        assert!(leak(&load, &[], TOTAL, 60.0, &LeakConfig::default()).is_some());
    }

    #[test]
    fn noise_and_slow_creeps_are_not_leaks() {
        let noisy: Vec<f64> = (0..30).map(|i| 60.0 * GIB + noise(i, 1.0 * GIB)).collect();
        assert!(leak(&noisy, &[], TOTAL, 60.0, &LeakConfig::default()).is_none());
        // 20 MiB per minute: 2 GiB takes 100 minutes, full in 16 hours.
        let slow: Vec<f64> = (0..30).map(|i| 60.0 * GIB + i as f64 * 0.02 * GIB).collect();
        assert!(leak(&slow, &[], TOTAL, 60.0, &LeakConfig::default()).is_none());
        assert!(leak(&[], &[], TOTAL, 60.0, &LeakConfig::default()).is_none());
        assert!(leak(&slow, &[], 0.0, 60.0, &LeakConfig::default()).is_none());
    }
}
