//! Capacity sizing: replica counts that cover the tail of recent demand and drain the backlog.
//!
//! All quantities are in busy replicas (replica-seconds of work per second). A replica absorbs `Δ + L` seconds
//! of work in a bucket of Δ seconds before its queueing delay exceeds the delay budget L, so a demand of `x` busy
//! replicas needs `x / (1 + L / Δ)` replicas when nothing is queued ([`CapacitySpec::busy_per_replica`]).
//!
//! Proposals (each with its derivation in words):
//! - `peak`: the largest demand of the last `peak_window_secs`, extrapolated to the expected maximum over that
//!   window plus the next `return_period_secs` with an exponential tail fitted above the `tail_quantile` of the
//!   window (`max + σ ln((n + N) / n)`, n floored at `min_tail_window_secs` so a short history cannot explode
//!   it), times `1 + margin`. Bursts within a cold start can only be met by capacity already there, so the fleet
//!   is sized for the tail of recent demand, not its mean. Assumption: demand excesses over a high threshold are
//!   roughly exponential (light-tailed), and the next hour resembles the last.
//! - `drain`: the queued work plus the current demand over the next cold start, served within it.
//!
//! The predictive proposal (the forecast's upper quantile over the cold start) and the cautious scale-down
//! (stabilisation, hysteresis, rate limit) are applied by [`crate::decision::decide`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::decision::Proposal;

/// Settings of capacity sizing. Times are in seconds, so they carry over to any bucket size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct CapacitySpec {
    /// Queueing-delay budget L, seconds (the SLO on the wait before a request is served).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3600))]
    pub queue_delay_slo_secs: f64,
    /// Window of recent demand whose peak and tail the fleet is sized for.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 604800))]
    pub peak_window_secs: f64,
    /// Threshold quantile of the exponential tail fit.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub tail_quantile: f64,
    /// The recent peak is extrapolated to the expected maximum over the window plus this period.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 604800))]
    pub return_period_secs: f64,
    /// The tail extrapolation treats a shorter history as this long.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 604800))]
    pub min_tail_window_secs: f64,
    /// Relative headroom on every demand-based proposal.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 10))]
    pub margin: f64,
    /// A scale-down happens only when it removes at least this fraction of the current count.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub down_hysteresis: f64,
    /// GPUs per replica (busy replicas = GPU busy fraction summed over GPUs / this).
    #[cfg_attr(feature = "openapi", schema(minimum = 0.01, maximum = 1024))]
    pub gpus_per_replica: f64,
}

impl Default for CapacitySpec {
    fn default() -> Self {
        Self {
            queue_delay_slo_secs: 2.0,
            peak_window_secs: 3600.0,
            tail_quantile: 0.8,
            return_period_secs: 1200.0,
            min_tail_window_secs: 1200.0,
            margin: 0.03,
            down_hysteresis: 0.05,
            gpus_per_replica: 1.0,
        }
    }
}

impl CapacitySpec {
    /// Busy replicas one replica carries per bucket within the delay budget: `1 + L / Δ`.
    pub fn busy_per_replica(&self, bucket_secs: f64) -> f64 {
        let l = if self.queue_delay_slo_secs.is_finite() { self.queue_delay_slo_secs.max(0.0) } else { 0.0 };
        let d = if bucket_secs.is_finite() && bucket_secs > 0.0 { bucket_secs } else { 1.0 };
        1.0 + l / d
    }

    /// Checks every field; names the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let check = |name: &'static str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((name, format!("must be between {lo} and {hi}, got {v}")))
            }
        };
        check("queue_delay_slo_secs", self.queue_delay_slo_secs, 0.0, 3600.0)?;
        check("peak_window_secs", self.peak_window_secs, 0.0, 7.0 * 86_400.0)?;
        check("tail_quantile", self.tail_quantile, 0.0, 1.0)?;
        check("return_period_secs", self.return_period_secs, 0.0, 7.0 * 86_400.0)?;
        check("min_tail_window_secs", self.min_tail_window_secs, 0.0, 7.0 * 86_400.0)?;
        check("margin", self.margin, 0.0, 10.0)?;
        check("down_hysteresis", self.down_hysteresis, 0.0, 1.0)?;
        check("gpus_per_replica", self.gpus_per_replica, 0.01, 1024.0)?;
        Ok(())
    }
}

/// Exponential-tail (peaks-over-threshold) summary of a sample: the largest value, the `q` quantile u, and the
/// mean excess σ of the values above u.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TailFit {
    /// Sample size.
    pub n: usize,
    /// Largest value.
    pub max: f64,
    /// The `q` quantile.
    pub threshold: f64,
    /// Mean excess over the threshold.
    pub sigma: f64,
}

impl TailFit {
    /// Fits the sample's finite values; `None` when there are none.
    pub fn fit(sample: impl IntoIterator<Item = f64>, q: f64) -> Option<Self> {
        let mut v: Vec<f64> = sample.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let q = if q.is_finite() { q.clamp(0.0, 1.0) } else { 0.8 };
        let idx = ((q * n as f64).floor() as usize).min(n - 1);
        let threshold = v[idx];
        let (sum, count) =
            v[idx..].iter().map(|x| x - threshold).filter(|e| *e > 0.0).fold((0.0, 0usize), |(s, c), e| (s + e, c + 1));
        let sigma = if count == 0 { 0.0 } else { sum / count as f64 };
        Some(Self { n, max: v[n - 1], threshold, sigma: finite_or(sigma, 0.0) })
    }

    /// Expected largest value among the n observed and `future` further draws: for an exponential tail the
    /// expected maximum grows by `σ ln((n + future) / n)` over the observed one. `min_n` floors the sample size
    /// so that a handful of samples cannot explode the extrapolation.
    pub fn extrapolated_max(&self, future: f64, min_n: usize) -> f64 {
        let n = self.n.max(min_n).max(1) as f64;
        let future = finite_or(future, 0.0).max(0.0);
        finite_or(self.max + self.sigma * ((n + future) / n).ln(), self.max)
    }
}

fn finite_or(x: f64, default: f64) -> f64 {
    if x.is_finite() { x } else { default }
}

fn steps(seconds: f64, bucket: f64) -> usize {
    let s = (seconds / bucket).ceil();
    if s.is_finite() && s >= 1.0 { (s as usize).min(1 << 20) } else { 1 }
}

fn to_replicas(busy: f64) -> u32 {
    let r = finite_or(busy, 0.0).max(0.0).ceil();
    if r >= f64::from(u32::MAX) { u32::MAX } else { r as u32 }
}

/// The sizing state of one policy: recent demand, one value per call.
#[derive(Debug, Clone)]
pub(crate) struct Sizing {
    spec: CapacitySpec,
    bucket: f64,
    recent: VecDeque<f64>,
    last_bucket: Option<i64>,
    backlog: f64,
}

impl Sizing {
    pub(crate) fn new(spec: CapacitySpec, bucket: f64) -> Self {
        Self { spec, bucket, recent: VecDeque::new(), last_bucket: None, backlog: 0.0 }
    }

    /// Demand `x` in bucket `b`: a later value in the same bucket replaces the earlier one.
    pub(crate) fn observe(&mut self, b: i64, x: f64) {
        let x = finite_or(x, 0.0).max(0.0);
        match self.last_bucket {
            Some(last) if b <= last => {
                if let Some(v) = self.recent.back_mut() {
                    *v = x;
                }
            }
            _ => {
                self.recent.push_back(x);
                self.last_bucket = Some(b);
            }
        }
        let window_n = steps(self.spec.peak_window_secs, self.bucket);
        while self.recent.len() > window_n {
            self.recent.pop_front();
        }
    }

    /// Queued work now, replica-seconds.
    pub(crate) fn set_backlog(&mut self, work: f64) {
        self.backlog = finite_or(work, 0.0).max(0.0);
    }

    pub(crate) fn backlog(&self) -> f64 {
        self.backlog
    }

    /// The capacity proposals for the current demand `x` (busy replicas), after [`Sizing::observe`]; the backlog
    /// drains on top of the forecaster's largest point forecast over the cold start when there is one.
    pub(crate) fn proposals(&self, x: f64, forecast_max: Option<f64>, cold_start_secs: u32) -> Vec<Proposal> {
        let s = &self.spec;
        let per_replica = s.busy_per_replica(self.bucket);
        let margin = 1.0 + finite_or(s.margin, 0.0).max(0.0);
        let period = (finite_or(s.return_period_secs, 0.0) / self.bucket).ceil().max(0.0);
        let min_n = steps(s.min_tail_window_secs, self.bucket);
        let fit = TailFit::fit(self.recent.iter().copied(), s.tail_quantile);
        let (n, peak, sigma) = fit.map_or((0, x, 0.0), |f| (f.n, f.max, f.sigma));
        let peak_ext = fit.map_or(x, |f| f.extrapolated_max(period, min_n)).max(0.0);
        let h = (f64::from(cold_start_secs) / self.bucket).ceil().max(0.0) + 1.0;
        let horizon_s = h * self.bucket;
        let level = forecast_max.filter(|f| f.is_finite() && *f >= 0.0).unwrap_or(x);
        let drain = (self.backlog + level * horizon_s) / horizon_s;
        vec![
            Proposal {
                source: "peak".into(),
                replicas: to_replicas(peak_ext * margin / per_replica),
                detail: format!(
                    "recent peak {peak:.2} busy replicas ({n} buckets) + tail σ {sigma:.2} x ln((n + {period:.0}) / n) \
                     = {peak_ext:.2}, x {margin:.2} margin, / {per_replica:.2} busy per replica"
                ),
                advisory: false,
            },
            Proposal {
                source: "drain".into(),
                replicas: to_replicas(drain),
                detail: format!(
                    "queued work {:.1} replica-s + demand {level:.2} x {horizon_s:.0} s (cold start), served within it",
                    self.backlog
                ),
                advisory: false,
            },
        ]
    }
}
