//! Reference policies of EVAL.md section 3: `static-peak`, `static-best`, `hpa`, `kpa`.

use std::collections::VecDeque;

use super::model::{
    BacktestError, MAX_REPLICAS, Observation, Policy, Profile, TraceStep, clamp_to_u32, simulate, steps_for, trace_work,
};

/// Target utilisation of the reference policies.
pub const TARGET_UTILISATION: f64 = 0.7;

/// SLO attainment `static-best` must reach.
pub const STATIC_BEST_ATTAINMENT: f64 = 0.995;

/// A constant fleet of `replicas` at every step.
#[derive(Debug, Clone)]
pub struct StaticPolicy {
    name: String,
    replicas: u32,
}

impl StaticPolicy {
    pub fn new(name: impl Into<String>, replicas: u32) -> Self {
        Self { name: name.into(), replicas }
    }

    pub fn replicas(&self) -> u32 {
        self.replicas
    }
}

impl Policy for StaticPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn decide(&mut self, _obs: &Observation<'_>) -> u32 {
        self.replicas
    }
}

/// `static-peak`: `ceil(max_t(w_t / Δ) / 0.7)`, within [1, 100,000].
pub fn static_peak_replicas(trace: &[TraceStep], profile: &Profile) -> Result<u32, BacktestError> {
    let work = trace_work(trace, profile)?;
    let peak = work.iter().map(|w| w / profile.step_s).fold(0.0_f64, f64::max);
    Ok(clamp_to_u32((peak / TARGET_UTILISATION).ceil()).clamp(1, MAX_REPLICAS))
}

/// The `static-peak` policy for a trace (hindsight peak provisioning).
pub fn static_peak(trace: &[TraceStep], profile: &Profile) -> Result<StaticPolicy, BacktestError> {
    Ok(StaticPolicy::new("static-peak", static_peak_replicas(trace, profile)?))
}

/// `static-best`: the smallest constant R in [1, 100,000] whose SLO attainment is at least 99.5%, by linear search
/// from 1 (so it is the smallest even if attainment were not monotone in R). If none reaches it, 100,000.
pub fn static_best_replicas(trace: &[TraceStep], profile: &Profile) -> Result<u32, BacktestError> {
    trace_work(trace, profile)?;
    for r in 1..=MAX_REPLICAS {
        let mut p = StaticPolicy::new("static-best", r);
        let res = simulate(trace, profile, &mut p)?;
        if res.summary.slo_attainment >= STATIC_BEST_ATTAINMENT {
            return Ok(r);
        }
    }
    Ok(MAX_REPLICAS)
}

/// The `static-best` policy for a trace (a fixed fleet sized by an oracle).
pub fn static_best(trace: &[TraceStep], profile: &Profile) -> Result<StaticPolicy, BacktestError> {
    Ok(StaticPolicy::new("static-best", static_best_replicas(trace, profile)?))
}

/// `hpa`: the Kubernetes horizontal pod autoscaler as modelled by EVAL.md.
///
/// Evaluations happen every p = `ceil(15 / Δ)` steps, at t = 0, p, 2p, ... (t % p == 0). At an evaluation,
/// ratio = u_t / 0.7 and the recommendation is `ready_t` ("keep the count") when |ratio - 1| <= 0.1, else
/// `ceil(ready_t * ratio)`; a recommendation above `ready_t` is capped at `max(2 ready_t, ready_t + 4)`. Every
/// recommendation (kept counts included) is remembered for 300 s. If the recommendation is below the current
/// count `ready_t + pending_t` (a scale-down), R_{t+1} is the maximum recommendation of the evaluations at steps s
/// with t - ceil(300 / Δ) < s <= t; otherwise R_{t+1} is the recommendation. Between evaluations R_{t+1} =
/// `ready_t + pending_t` (no action).
///
/// These readings reproduce the independent implementation's numbers (see the crate tests); in particular the
/// kept count and the base of the ratio are `ready_t`, while "scale-down" is judged against `ready_t + pending_t`.
#[derive(Debug, Clone)]
pub struct HpaPolicy {
    history: VecDeque<(usize, u32)>,
}

impl HpaPolicy {
    pub fn new() -> Self {
        Self { history: VecDeque::new() }
    }
}

impl Default for HpaPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy for HpaPolicy {
    fn name(&self) -> &str {
        "hpa"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> u32 {
        let profile = obs.profile;
        let period = (steps_for(15.0, profile.step_s) as usize).max(1);
        let window = steps_for(300.0, profile.step_s) as usize;
        let current = obs.current();
        if !obs.t.is_multiple_of(period) {
            return current;
        }
        let ready = obs.ready;
        let ratio = obs.last_utilisation() / TARGET_UTILISATION;
        let mut rec = if (ratio - 1.0).abs() <= 0.1 { ready } else { clamp_to_u32((f64::from(ready) * ratio).ceil()) };
        if rec > ready {
            rec = rec.min(ready.saturating_mul(2).max(ready.saturating_add(4)));
        }
        while let Some(&(s, _)) = self.history.front() {
            if s.saturating_add(window) <= obs.t {
                self.history.pop_front();
            } else {
                break;
            }
        }
        self.history.push_back((obs.t, rec));
        if rec < current { self.history.iter().map(|&(_, r)| r).fold(rec, u32::max) } else { rec }
    }
}

/// `kpa`: the Knative pod autoscaler as modelled by EVAL.md.
///
/// `a_s = (b_{s-1} + w_s) / Δ`; stable = ceil(mean of a over the last ceil(60 / Δ) steps / 0.7) and panic =
/// ceil(mean of a over the last max(1, ceil(6 / Δ)) steps / 0.7), both over the steps available at the start.
/// Panic mode starts when panic >= 2 ready_t (the rounded panic count) and ends at the first step t with
/// t - (last step that held) >= ceil(60 / Δ). In panic, R_{t+1} = max(stable, panic, ready_t + pending_t) (never
/// down); otherwise R_{t+1} = max(stable, ceil((ready_t + pending_t) / 2)) ("at most halve per step", judged on
/// the current count, as the independent implementation does).
#[derive(Debug, Clone)]
pub struct KpaPolicy {
    last_over: Option<usize>,
}

impl KpaPolicy {
    pub fn new() -> Self {
        Self { last_over: None }
    }
}

impl Default for KpaPolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// Mean of `a_s = (b_{s-1} + w_s) / Δ` over the last `len` observed steps (at least one, fewer at the start).
fn mean_busy(obs: &Observation<'_>, len: usize) -> f64 {
    let n = obs.work.len();
    let len = len.clamp(1, n.max(1));
    let start = n.saturating_sub(len);
    let mut sum = 0.0;
    let mut count = 0usize;
    for s in start..n {
        let prev_b = if s == 0 { 0.0 } else { obs.backlog.get(s - 1).copied().unwrap_or(0.0) };
        sum += prev_b + obs.work[s];
        count += 1;
    }
    if count == 0 { 0.0 } else { sum / count as f64 / obs.profile.step_s }
}

impl Policy for KpaPolicy {
    fn name(&self) -> &str {
        "kpa"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> u32 {
        let profile = obs.profile;
        let stable_steps = steps_for(60.0, profile.step_s) as usize;
        let panic_steps = (steps_for(6.0, profile.step_s) as usize).max(1);
        let stable = clamp_to_u32((mean_busy(obs, stable_steps) / TARGET_UTILISATION).ceil());
        let panic = clamp_to_u32((mean_busy(obs, panic_steps) / TARGET_UTILISATION).ceil());
        let t = obs.t;
        let current = obs.current();
        if u64::from(panic) >= 2 * u64::from(obs.ready) {
            self.last_over = Some(t);
        } else if let Some(last) = self.last_over
            && t.saturating_sub(last) >= stable_steps
        {
            self.last_over = None;
        }
        if self.last_over.is_some() { stable.max(panic).max(current) } else { stable.max(current.div_ceil(2)) }
    }
}
