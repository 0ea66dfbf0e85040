//! The scaling engine: one per policy, used alike by the server's control loop, the policy preview and
//! `fleetpilot backtest`.
//!
//! It owns everything a decision needs: the demand estimate derived from what a live fleet reports, the demand
//! history and its forecaster ([`crate::model::Fitted`], refitted every [`EngineSpec::refit_secs`] and updated
//! with each new bucket in between), a streaming anomaly detector on that history, the capacity proposals of
//! [`sizing`] and the per-policy state of [`crate::decision`] (stabilisation history, panic, rate-limit periods,
//! scale-to-zero idle time). Callers hand it one [`Observation`] per step and get a [`Decision`] back; the clock is
//! the observation's `now_secs`, so a backtest or a replay drives it exactly as the live loop does.
//!
//! Two ways to size a fleet, chosen by the spec:
//! - **Capacity sizing** ([`EngineSpec::capacity`], the default LLM policy, see [`EngineSpec::llm_default`]):
//!   demand in busy replicas is estimated from the served work (GPU busy fraction, or tokens/s over a replica's
//!   rates) plus the growth of the queued work (queue depth x work per request); the fleet is sized for the tail of
//!   recent demand, the forecast's upper quantile over the next cold start and the backlog to drain, and scaled
//!   down cautiously (stabilisation window, hysteresis, at most a fraction per period).
//! - **Metric targets** (HPA-style): each configured metric held at a target per replica; the forecast is of the
//!   first metric.
//!
//! Both go through [`crate::decision::decide`] for the gates (anomaly, SLO, panic), stabilisation, rate limits
//! and bounds, so every decision carries its proposals and its reason in words.

pub mod sizing;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::anomaly::{Detector, Score};
use crate::decision::{
    Behavior, Decision, DecisionInput, DecisionState, MetricObservation, PanicSettings, PredictiveMode, Proposal,
    RateKind, RatePolicy, ScalingRules, SelectPolicy, SloObservation, decide,
};
use crate::model::{Fitted, ModelConfig};

pub use sizing::{CapacitySpec, TailFit};

/// Anomaly score at or above which the latest bucket counts as anomalous (no scale-down on it).
pub const ANOMALY_THRESHOLD: f64 = 0.7;
/// Buckets of history needed before the forecast is computed and acted on: a forecast from a handful of points
/// has intervals too wide to act on.
pub const MIN_FORECAST_POINTS: usize = 12;
/// Seconds between full refits of the forecaster (about one cold start: the profile and intervals behind a
/// scale-up are never older than the capacity it starts); between refits it absorbs each new bucket (level and
/// errors), and only the seasonal profile waits.
pub const DEFAULT_REFIT_SECS: f64 = 120.0;
/// Horizons of history needed before the forecast is acted on.
pub const MIN_FORECAST_HORIZONS: usize = 3;
/// Longest demand history kept for the forecaster (a week of 1-minute buckets).
pub const MAX_HISTORY: usize = 10_080;

/// One metric held at a target per replica (HPA style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricTarget {
    /// Name, for the record (e.g. `gpu_utilization`).
    pub name: String,
    /// Target per replica.
    pub target_per_replica: f64,
}

/// A latency SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloTarget {
    /// e.g. `ttft_p95_ms`.
    pub name: String,
    /// The objective, in the unit of the observation.
    pub target: f64,
}

/// Everything the engine is told about one policy. Times are in seconds, so one spec serves any bucket size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSpec {
    /// Lower bound (0 allows scale to zero with `scale_to_zero_idle_secs`).
    pub min_replicas: u32,
    /// Upper bound.
    pub max_replicas: u32,
    /// Seconds per observation bucket (Δ).
    pub bucket_secs: f64,
    /// HPA-style metric targets; the first drives the forecast when capacity sizing is off.
    pub metrics: Vec<MetricTarget>,
    /// Latency SLOs.
    pub slos: Vec<SloTarget>,
    /// HPA tolerance.
    pub tolerance: f64,
    /// Stabilisation and rate limits.
    pub behavior: Behavior,
    /// Burst handling.
    pub panic: PanicSettings,
    /// Idle seconds before scaling to zero.
    pub scale_to_zero_idle_secs: Option<u32>,
    /// Seconds a new replica needs before it serves.
    pub cold_start_secs: u32,
    /// Forecast use.
    pub predictive: PredictiveMode,
    /// Quantile of the forecast the predictive proposal provisions for, in (0.5, 1).
    pub quantile: f64,
    /// Forecast horizon (default: the cold start).
    pub horizon_secs: Option<u32>,
    /// Seconds between forecast refits (new buckets update the fitted model in between).
    pub refit_secs: f64,
    /// Capacity sizing (the LLM default); `None`: metric targets only.
    pub capacity: Option<CapacitySpec>,
}

impl EngineSpec {
    /// The default policy for LLM serving: capacity sizing on the demand estimated from served work and queue
    /// growth, the forecast's 90 % quantile over the cold start, immediate scale-up (help arrives only after the
    /// cold start), and a cautious scale-down (a 300 s stabilisation window, at least 5 % below the current count,
    /// then at HPA's default rate of up to 100 % per 15 s): scaling down is instant, undoing it costs a cold start.
    /// The window is the brake (five minutes of lower recommendations, and it keeps their highest); a second one,
    /// at most 10 % per 60 s, used to follow it and only kept idle GPUs longer: on the dev traces, their 1-minute
    /// versions and day-long cycles made of them it cost up to 0.5 % more GPU-hours (nothing on
    /// some) and never saved a violation.
    pub fn llm_default(min_replicas: u32, max_replicas: u32, bucket_secs: f64, cold_start_secs: u32) -> Self {
        Self {
            min_replicas,
            max_replicas,
            bucket_secs,
            metrics: Vec::new(),
            slos: Vec::new(),
            tolerance: 0.1,
            behavior: Self::llm_behavior(),
            panic: PanicSettings::default(),
            scale_to_zero_idle_secs: None,
            cold_start_secs,
            predictive: PredictiveMode::On,
            quantile: 0.9,
            horizon_secs: None,
            refit_secs: DEFAULT_REFIT_SECS,
            capacity: Some(CapacitySpec::default()),
        }
    }

    /// The LLM default's scaling behavior (see [`EngineSpec::llm_default`]).
    pub fn llm_behavior() -> Behavior {
        Behavior {
            scale_up: ScalingRules { stabilization_window_secs: 0, select_policy: SelectPolicy::Max, policies: vec![] },
            scale_down: ScalingRules {
                stabilization_window_secs: 300,
                select_policy: SelectPolicy::Max,
                policies: vec![RatePolicy { kind: RateKind::Percent, value: 100, period_secs: 15 }],
            },
        }
    }

    fn bucket(&self) -> f64 {
        if self.bucket_secs.is_finite() && self.bucket_secs > 0.0 { self.bucket_secs } else { 1.0 }
    }

    /// Forecast horizon in buckets: capacity started now serves only after the cold start, so the horizon covers
    /// it and the bucket in which it becomes ready.
    pub fn horizon_steps(&self) -> usize {
        let secs = f64::from(self.horizon_secs.unwrap_or(self.cold_start_secs));
        ((secs / self.bucket()).ceil().max(0.0) as usize).saturating_add(1).min(4096)
    }
}

/// What a fleet reports about its load in one bucket, summed over its replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Served work in replicas (sum of busy fractions: GPU utilisation / 100 per replica, or tokens/s over a
    /// replica's rates).
    pub busy_replicas: Option<f64>,
    /// Requests waiting for admission, in total.
    pub queue_depth: Option<f64>,
    /// Completed requests per second, in total.
    pub requests_per_s: Option<f64>,
}

/// One step's observation: what the live loop reads from the store, the preview from history, and the backtest
/// from the fluid model's telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Now, Unix seconds.
    pub now_secs: i64,
    /// Replicas serving.
    pub ready: u32,
    /// Replicas started and not yet serving.
    pub pending: u32,
    /// Totals of [`EngineSpec::metrics`], in order (`None`: not observed recently).
    pub metrics: Vec<Option<f64>>,
    /// Observed values of [`EngineSpec::slos`], in order.
    pub slos: Vec<Option<f64>>,
    /// Load, for capacity sizing.
    pub load: Load,
    /// Set when one node departs from its peers: its description (a fault, not demand).
    pub single_node_fault: Option<String>,
    /// The observation covers its whole bucket (a backtest step); otherwise the bucket enters the history when
    /// a later one is observed.
    #[serde(default)]
    pub bucket_complete: bool,
}

/// A forecast the engine refitted on this step (the caller may store it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastRecord {
    /// Model name.
    pub model: String,
    /// The model.
    pub kind: crate::forecast::ModelKind,
    /// Seasonal period in buckets, if any.
    pub period: Option<usize>,
    /// Point forecasts, one per bucket ahead.
    pub point: Vec<f64>,
    /// Lower bound of the central interval.
    pub lower: Vec<f64>,
    /// Upper bound (the engine's quantile).
    pub upper: Vec<f64>,
    /// Central interval level.
    pub level: f64,
    /// The history it was fitted on, oldest first.
    pub history: Vec<f64>,
}

/// What one step decided and what it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The decision.
    pub decision: Decision,
    /// The replica count it was compared with (ready + pending).
    pub current: u32,
    /// Estimated demand in busy replicas (capacity sizing).
    pub demand: Option<f64>,
    /// The forecast's upper bound over the horizon, in the forecast signal's units.
    pub forecast_upper: Option<f64>,
    /// Set when the forecast was refitted on this step.
    pub refit: Option<ForecastRecord>,
    /// Anomaly score of the latest complete bucket.
    pub anomaly: Option<Score>,
    /// The inputs as recorded with the decision.
    pub inputs: serde_json::Value,
}

/// The per-policy scaling engine (see the module documentation).
#[derive(Debug, Clone)]
pub struct ScalingEngine {
    spec: EngineSpec,
    state: DecisionState,
    /// One value of the forecast signal per bucket, newest last, and the bucket index of the newest.
    history: VecDeque<f64>,
    last_bucket: Option<i64>,
    /// The bucket of the latest observation.
    observed_bucket: Option<i64>,
    /// The newest bucket while it is still filling.
    open_bucket: Option<(i64, f64)>,
    fitted: Option<Fitted>,
    fitted_len: usize,
    refitted_at: Option<i64>,
    detector: Detector,
    anomaly: Option<Score>,
    /// Queued work (replica-seconds) at the end of the previous bucket and at the latest observation, and the
    /// latest work per request.
    prev_queue_work: Option<f64>,
    last_queue_work: Option<f64>,
    work_per_request: Option<f64>,
    sizing: sizing::Sizing,
}

impl ScalingEngine {
    /// A fresh engine for `spec`.
    pub fn new(spec: EngineSpec) -> Self {
        let sizing = sizing::Sizing::new(spec.capacity.clone().unwrap_or_default(), spec.bucket());
        Self {
            spec,
            state: DecisionState::default(),
            history: VecDeque::new(),
            last_bucket: None,
            observed_bucket: None,
            open_bucket: None,
            fitted: None,
            fitted_len: 0,
            refitted_at: None,
            detector: Detector::default(),
            anomaly: None,
            prev_queue_work: None,
            last_queue_work: None,
            work_per_request: None,
            sizing,
        }
    }

    /// The spec.
    pub fn spec(&self) -> &EngineSpec {
        &self.spec
    }

    /// Replaces the spec (a new policy version); the history, forecaster and decision state carry over.
    pub fn set_spec(&mut self, spec: EngineSpec) {
        if spec.capacity != self.spec.capacity || spec.bucket_secs != self.spec.bucket_secs {
            self.sizing = sizing::Sizing::new(spec.capacity.clone().unwrap_or_default(), spec.bucket());
        }
        if spec.capacity.is_some() != self.spec.capacity.is_some() {
            // The forecast signal changed units.
            self.history.clear();
            self.fitted = None;
            self.last_bucket = None;
        }
        self.spec = spec;
    }

    /// Records that the target was moved (only applied changes count for the rate limits).
    pub fn applied(&mut self, now_secs: i64, from: u32, to: u32) {
        self.state.applied(now_secs, from, to);
    }

    /// Demand history of the forecast signal, oldest first.
    pub fn history(&self) -> impl Iterator<Item = f64> + '_ {
        self.history.iter().copied()
    }

    /// Bucket index of `now_secs`.
    fn bucket_of(&self, now_secs: i64) -> i64 {
        (now_secs as f64 / self.spec.bucket()).floor() as i64
    }

    /// Estimated demand in busy replicas: served work plus the growth of the queued work since the end of the
    /// previous bucket (so demand hidden by a saturated fleet shows in its queue). The queued work is the queue
    /// depth times the work per request, learned from served work over completed requests.
    fn demand(&mut self, load: &Load) -> Option<f64> {
        let busy = load.busy_replicas.filter(|v| v.is_finite() && *v >= 0.0)?;
        if let Some(r) = load.requests_per_s.filter(|r| r.is_finite() && *r > 0.0)
            && busy > 0.0
        {
            self.work_per_request = Some(busy / r);
        }
        let queue = load.queue_depth.filter(|q| q.is_finite() && *q >= 0.0).unwrap_or(0.0);
        let queue_work = queue * self.work_per_request.unwrap_or(0.0);
        let growth = queue_work - self.prev_queue_work.unwrap_or(0.0);
        self.last_queue_work = Some(queue_work);
        self.sizing.set_backlog(queue_work);
        let x = busy + growth / self.spec.bucket();
        if x.is_finite() { Some(x.max(0.0)) } else { Some(busy) }
    }

    /// Starts the engine on stored history: one value of the forecast signal per bucket (demand in busy
    /// replicas with capacity sizing, else the first metric's total), oldest first, the last one in the bucket
    /// containing `last_secs`. A new leader or a replay gets its forecast and recent-demand window at once.
    pub fn seed(&mut self, last_secs: i64, values: &[f64]) {
        let values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite() && *v >= 0.0).collect();
        if values.is_empty() || self.last_bucket.is_some() {
            return;
        }
        let last = self.bucket_of(last_secs);
        let first = last - values.len() as i64 + 1;
        let bucket_len = self.spec.bucket();
        let keep = values.len().saturating_sub(MAX_HISTORY);
        for (i, v) in values.iter().enumerate() {
            let b = first + i as i64;
            if i + 1 < values.len() {
                self.anomaly = Some(self.detector.update((b as f64 * bucket_len) as i64, *v));
            }
            if i >= keep {
                self.history.push_back(*v);
            }
            if self.spec.capacity.is_some() {
                self.sizing.observe(b, *v);
            }
        }
        self.last_bucket = Some(last);
    }

    /// Takes the bucket's value of the forecast signal. A bucket enters the history (and the anomaly detector)
    /// once it is complete: when a later bucket is observed, or at once when the caller says it is complete (the
    /// backtest's steps are whole buckets). Skipped buckets carry the last value.
    fn record(&mut self, bucket: i64, value: f64, complete: bool) {
        if let Some((b, v)) = self.open_bucket
            && b < bucket
        {
            self.commit(b, v);
            self.open_bucket = None;
        }
        if self.last_bucket.is_some_and(|l| bucket <= l) {
            return;
        }
        if complete {
            self.commit(bucket, value);
            self.open_bucket = None;
        } else {
            self.open_bucket = Some((bucket, value));
        }
    }

    fn commit(&mut self, b: i64, value: f64) {
        let bucket_len = self.spec.bucket();
        if let Some(last) = self.last_bucket {
            if b <= last {
                return;
            }
            let gap = (b - last - 1).clamp(0, 10_000) as usize;
            let fill = self.history.back().copied().unwrap_or(value);
            for _ in 0..gap {
                self.history.push_back(fill);
            }
        }
        self.anomaly = Some(self.detector.update((b as f64 * bucket_len) as i64, value));
        self.history.push_back(value);
        self.last_bucket = Some(b);
        while self.history.len() > MAX_HISTORY {
            self.history.pop_front();
            self.fitted = None;
        }
    }

    /// The forecast over the horizon from the complete buckets: refitted every `refit_secs`, updated with new
    /// buckets in between. Returns (largest point forecast, largest upper bound) and the record of a refit made
    /// now.
    fn forecast(&mut self, now_secs: i64) -> (Option<(f64, f64)>, Option<ForecastRecord>) {
        let horizon = self.spec.horizon_steps();
        // A forecast over a horizon needs several horizons of history behind it: from less, its trend and its
        // intervals rest on a handful of points and would hold a needless scale-up for a whole window.
        let need = MIN_FORECAST_POINTS.max(MIN_FORECAST_HORIZONS * horizon);
        if self.spec.predictive == PredictiveMode::Off || self.history.len() < need {
            return (None, None);
        }
        let q = if self.spec.quantile.is_finite() { self.spec.quantile.clamp(0.5, 0.99) } else { 0.9 };
        // The upper bound of the central interval at level l is the (1 + l) / 2 quantile.
        let level = (2.0 * q - 1.0).clamp(0.01, 0.98);
        let due = self.fitted.is_none()
            || self.refitted_at.is_none_or(|t| (now_secs - t) as f64 >= self.spec.refit_secs.max(0.0));
        let mut refit = false;
        if due {
            let history: Vec<f64> = self.history.iter().copied().collect();
            // Errors are kept per step ahead up to the horizon only: a policy's model stays small (500 policies
            // keep 500 of them in the leader).
            let cfg = ModelConfig { max_horizon: horizon.clamp(1, 64), ..ModelConfig::default() };
            match Fitted::fit(&history, &cfg) {
                Ok(f) => {
                    self.fitted = Some(f);
                    self.fitted_len = history.len();
                    self.refitted_at = Some(now_secs);
                    refit = true;
                }
                Err(_) => return (None, None),
            }
        } else if let Some(f) = self.fitted.as_mut()
            && self.history.len() > self.fitted_len
        {
            let new: Vec<f64> = self.history.iter().skip(self.fitted_len).copied().collect();
            let _ = f.update(&new);
            self.fitted_len = self.history.len();
        }
        let Some(f) = self.fitted.as_ref() else { return (None, None) };
        let Ok(mf) = f.forecast(horizon, &[level]) else { return (None, None) };
        let Some(iv) = mf.intervals.first() else { return (None, None) };
        let finite_max = |v: &[f64]| v.iter().copied().filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
        let (point, upper) = (finite_max(&mf.point), finite_max(&iv.upper));
        let record = refit.then(|| ForecastRecord {
            model: format!("{:?}", mf.model),
            kind: mf.model,
            period: mf.period,
            point: mf.point.clone(),
            lower: iv.lower.clone(),
            upper: iv.upper.clone(),
            level,
            history: self.history.iter().copied().collect(),
        });
        (Some((point, upper)), record)
    }

    /// One step: estimate demand, update history, forecast and anomaly state, and decide.
    pub fn step(&mut self, obs: &Observation) -> Step {
        let spec = self.spec.clone();
        let current = obs.ready.saturating_add(obs.pending);
        let bucket = self.bucket_of(obs.now_secs);
        if self.observed_bucket.is_none_or(|l| bucket > l) {
            // A new bucket: queue growth is measured from the end of the previous one.
            self.prev_queue_work = self.last_queue_work;
            self.observed_bucket = Some(bucket);
        }
        let demand = if spec.capacity.is_some() { self.demand(&obs.load) } else { None };
        let signal = if spec.capacity.is_some() { demand } else { obs.metrics.first().copied().flatten() };
        if let Some(v) = signal.filter(|v| v.is_finite() && *v >= 0.0) {
            self.record(bucket, v, obs.bucket_complete);
        }
        let (forecast, refit) = self.forecast(obs.now_secs);
        let forecast_upper = forecast.map(|(_, u)| u);
        let latest_anomalous = self.anomaly.as_ref().is_some_and(|s| s.score >= ANOMALY_THRESHOLD);

        let mut metrics: Vec<MetricObservation> = Vec::with_capacity(spec.metrics.len() + 1);
        let mut extra: Vec<Proposal> = Vec::new();
        let forecast_total_upper = forecast_upper;
        if let Some(cap) = &spec.capacity {
            let per_replica = cap.busy_per_replica(spec.bucket());
            // Reactive on the demand itself (HPA formula, and panic on a burst), sized per replica as the
            // capacity proposals are.
            metrics.push(MetricObservation {
                name: "demand".into(),
                total: demand,
                target_per_replica: per_replica / (1.0 + cap.margin.max(0.0)),
            });
            if let Some(x) = demand {
                self.sizing.observe(bucket, x);
                extra = self.sizing.proposals(x, forecast.map(|(p, _)| p), spec.cold_start_secs);
            }
        }
        for (m, total) in spec.metrics.iter().zip(obs.metrics.iter().chain(std::iter::repeat(&None))) {
            metrics.push(MetricObservation {
                name: m.name.clone(),
                total: *total,
                target_per_replica: m.target_per_replica,
            });
        }
        let slos: Vec<SloObservation> = spec
            .slos
            .iter()
            .zip(obs.slos.iter().chain(std::iter::repeat(&None)))
            .map(|(s, o)| SloObservation { name: s.name.clone(), observed: *o, target: s.target })
            .collect();
        let input = DecisionInput {
            now_secs: obs.now_secs,
            current_replicas: current,
            min_replicas: spec.min_replicas,
            max_replicas: spec.max_replicas,
            metrics,
            slos,
            predictive: spec.predictive,
            forecast_total_upper,
            latest_anomalous,
            single_node_fault: obs.single_node_fault.clone(),
            tolerance: spec.tolerance,
            behavior: spec.behavior.clone(),
            panic: spec.panic,
            scale_to_zero_idle_secs: spec.scale_to_zero_idle_secs,
            cold_start_secs: spec.cold_start_secs,
            extra_proposals: extra,
            down_hysteresis: spec.capacity.as_ref().map_or(0.0, |c| c.down_hysteresis),
        };
        let decision = decide(&input, &mut self.state);
        let inputs = serde_json::json!({
            "ready": obs.ready,
            "pending": obs.pending,
            "metrics": input.metrics,
            "slos": input.slos,
            "load": obs.load,
            "demand": demand,
            "backlog_replica_s": spec.capacity.as_ref().map(|_| self.sizing.backlog()),
            "history_points": self.history.len(),
            "forecast_upper": forecast_upper,
            "anomaly": self.anomaly.as_ref().map(|s| serde_json::json!({
                "score": s.score, "component": s.component, "explanation": s.to_string()
            })),
            "single_node_fault": obs.single_node_fault,
            "panic": decision.panic,
        });
        Step { decision, current, demand, forecast_upper, refit, anomaly: self.anomaly, inputs }
    }
}

#[cfg(test)]
mod tests;
