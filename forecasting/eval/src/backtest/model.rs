//! The deterministic fluid fleet model v1 of EVAL.md section 3.
//!
//! The queue itself is [`crate::queue::FluidQueue`], the one the agent's simulator steps too; this module adds
//! the fleet around it (cold starts, cancellations), the observations and the results.
//!
//! Everything here is pure: the caller reads the trace and parses it (see [`parse_trace_csv`]) and receives per-step rows and a
//! summary, which [`format_steps_csv`] / [`format_summary_csv`] turn into the CSV files the backtest command writes.

use std::collections::VecDeque;
use std::fmt;

use crate::queue::{FluidQueue, queue_delay_s};
pub use crate::trace::TraceStep;
use crate::trace::{CsvError, parse_buckets, timestamp_secs};

/// Upper bound on the replica count of every reference policy (EVAL.md: "none goes ... above 100,000").
pub const MAX_REPLICAS: u32 = 100_000;

/// Errors of the backtest model. Every public entry point validates its input instead of panicking.
#[derive(Debug, Clone, PartialEq)]
pub enum BacktestError {
    /// A profile field is not finite or out of its domain.
    InvalidProfile(&'static str),
    /// A trace value is negative or not finite.
    InvalidTrace { step: usize, field: &'static str },
    /// The trace CSV could not be parsed ([`crate::trace::parse_buckets`]).
    Csv(CsvError),
    /// A replayed `desired` column does not have one entry per trace step.
    LengthMismatch { trace: usize, desired: usize },
    /// The trace's timestamps do not give one step: unparsable, not increasing, or unevenly spaced
    /// (`line` is the CSV line, header = 1).
    Timestamps { line: usize, message: String },
}

impl fmt::Display for BacktestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidProfile(what) => write!(f, "invalid replica profile: {what}"),
            Self::InvalidTrace { step, field } => {
                write!(f, "invalid trace value at step {step}: {field} must be finite and >= 0")
            }
            Self::Csv(e) => write!(f, "trace CSV {e}"),
            Self::LengthMismatch { trace, desired } => {
                write!(f, "desired column has {desired} entries but the trace has {trace} steps")
            }
            Self::Timestamps { line, message } => write!(f, "trace CSV line {line}: {message}"),
        }
    }
}

impl std::error::Error for BacktestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Csv(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CsvError> for BacktestError {
    fn from(e: CsvError) -> Self {
        Self::Csv(e)
    }
}

/// Replica profile and SLO: P, D, C, g, L and the step Δ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// P: prefill rate of one replica, prompt tokens per second.
    pub prefill_rate: f64,
    /// D: decode rate of one replica, output tokens per second.
    pub decode_rate: f64,
    /// C: cold start of a replica, seconds.
    pub cold_start_s: f64,
    /// g: GPUs per replica.
    pub gpus_per_replica: f64,
    /// L: SLO on the queueing delay, seconds.
    pub slo_s: f64,
    /// Δ: step of the trace, seconds.
    pub step_s: f64,
}

impl Profile {
    /// The standard profile for the traces in `data/traces/` (10 s steps).
    pub const STANDARD: Profile = Profile {
        prefill_rate: 1000.0,
        decode_rate: 100.0,
        cold_start_s: 120.0,
        gpus_per_replica: 1.0,
        slo_s: 2.0,
        step_s: 10.0,
    };

    /// Checks that every field is finite, rates and step positive, the others non-negative.
    pub fn validate(&self) -> Result<(), BacktestError> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !positive(self.prefill_rate) {
            return Err(BacktestError::InvalidProfile("prefill_rate must be finite and > 0"));
        }
        if !positive(self.decode_rate) {
            return Err(BacktestError::InvalidProfile("decode_rate must be finite and > 0"));
        }
        if !positive(self.step_s) {
            return Err(BacktestError::InvalidProfile("step_s must be finite and > 0"));
        }
        if !non_negative(self.cold_start_s) {
            return Err(BacktestError::InvalidProfile("cold_start_s must be finite and >= 0"));
        }
        if !non_negative(self.gpus_per_replica) {
            return Err(BacktestError::InvalidProfile("gpus_per_replica must be finite and >= 0"));
        }
        if !non_negative(self.slo_s) {
            return Err(BacktestError::InvalidProfile("slo_s must be finite and >= 0"));
        }
        Ok(())
    }

    /// k = ceil(C / Δ): a replica started after step t is ready at step t + 1 + k.
    pub fn cold_start_steps(&self) -> usize {
        steps_for(self.cold_start_s, self.step_s).max(0.0) as usize
    }

    /// Work of one step in replica-seconds: `prompt / P + output / D`.
    pub fn work(&self, prompt_tokens: f64, output_tokens: f64) -> f64 {
        prompt_tokens / self.prefill_rate + output_tokens / self.decode_rate
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self::STANDARD
    }
}

/// `ceil(seconds / step)` as f64 (NaN-safe: returns 0 for a non-finite quotient).
pub(crate) fn steps_for(seconds: f64, step_s: f64) -> f64 {
    let q = (seconds / step_s).ceil();
    if q.is_finite() { q } else { 0.0 }
}

/// Parses a bucketed trace CSV (`timestamp,requests,prompt_tokens,output_tokens`, header required, blank lines
/// skipped, counts finite and non-negative) with the one trace reader, [`crate::trace::parse_buckets`]. Pure: the
/// caller reads the file.
pub fn parse_trace_csv(text: &str) -> Result<Vec<TraceStep>, BacktestError> {
    Ok(parse_buckets(text)?)
}

/// The trace's step Δ in seconds, read from its timestamps (EVAL.md: evenly spaced and increasing; a different
/// step is never assumed silently). Row i of `trace` is CSV line i + 2. A single-row trace has no step: `None`.
pub fn trace_step_secs(trace: &[TraceStep]) -> Result<Option<f64>, BacktestError> {
    let mut times = Vec::with_capacity(trace.len());
    for (i, s) in trace.iter().enumerate() {
        let t = timestamp_secs(&s.timestamp).ok_or_else(|| BacktestError::Timestamps {
            line: i + 2,
            message: format!("timestamp {:?} is neither `YYYY-MM-DD HH:MM:SS` nor Unix seconds", s.timestamp),
        })?;
        times.push(t);
    }
    let Some(step) = times.windows(2).next().map(|w| w[1] - w[0]) else { return Ok(None) };
    for (i, w) in times.windows(2).enumerate() {
        let d = w[1] - w[0];
        if d <= 0.0 {
            return Err(BacktestError::Timestamps {
                line: i + 3,
                message: format!(
                    "timestamp {:?} is not after the previous row's {:?} (the trace must be sorted, one row per step)",
                    trace[i + 1].timestamp,
                    trace[i].timestamp
                ),
            });
        }
        if (d - step).abs() > 1e-3 * step.max(1.0) {
            return Err(BacktestError::Timestamps {
                line: i + 3,
                message: format!(
                    "timestamp {:?} is {d} s after the previous row, but the trace's step is {step} s (rows must be \
                     evenly spaced; fill missing steps with zero rows)",
                    trace[i + 1].timestamp
                ),
            });
        }
    }
    Ok(Some(step))
}

/// Work per step `w_t` of a trace, validating that token counts are finite and non-negative.
pub fn trace_work(trace: &[TraceStep], profile: &Profile) -> Result<Vec<f64>, BacktestError> {
    profile.validate()?;
    trace
        .iter()
        .enumerate()
        .map(|(step, s)| {
            if !(s.prompt_tokens.is_finite() && s.prompt_tokens >= 0.0) {
                return Err(BacktestError::InvalidTrace { step, field: "prompt_tokens" });
            }
            if !(s.output_tokens.is_finite() && s.output_tokens >= 0.0) {
                return Err(BacktestError::InvalidTrace { step, field: "output_tokens" });
            }
            Ok(profile.work(s.prompt_tokens, s.output_tokens))
        })
        .collect()
}

/// The warm initial fleet: `ceil(max(w_0 ..= w_k) / (0.7 Δ))` with k = ceil(C / Δ), at least 1.
pub fn initial_ready(work: &[f64], profile: &Profile) -> u32 {
    let k = profile.cold_start_steps();
    let end = k.saturating_add(1).min(work.len());
    let peak = work[..end].iter().copied().fold(0.0_f64, f64::max);
    let r = (peak / (0.7 * profile.step_s)).ceil();
    clamp_to_u32(r).max(1)
}

/// Saturating, NaN-safe conversion of a replica count.
pub(crate) fn clamp_to_u32(x: f64) -> u32 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        x as u32
    }
}

/// What a live fleet would report about step t, derived from the fluid model (EVAL.md: "the observations the
/// live loop would have"): totals over the ready replicas, as the agents' metrics add up.
///
/// The queue is modelled as proportional FIFO: the served fraction `f = min(1, c_t / (b_{t-1} + w_t))` of the
/// waiting work is served, and the same fraction of the waiting requests and tokens, so the queue's mix is the
/// served mix.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Telemetry {
    /// GPU busy fraction summed over the GPUs, percent (`u_t * 100 * ready_t * g`).
    pub gpu_utilization_pct_total: f64,
    /// Requests waiting at the end of the step.
    pub queue_depth: f64,
    /// Requests completed per second.
    pub requests_per_s: f64,
    /// Prompt tokens served per second.
    pub prompt_tokens_per_s: f64,
    /// Output tokens served per second.
    pub output_tokens_per_s: f64,
    /// Queueing delay `d_t = b_t / ready_t` (seconds; infinite with work and no replica).
    pub queue_delay_s: f64,
    /// Time to first token of the step's requests: queueing delay plus the mean prompt's prefill, seconds.
    pub ttft_s: f64,
}

/// What a policy may see after step t (EVAL.md: steps 0..=t only).
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The step just completed.
    pub t: usize,
    /// `w_0 ..= w_t` (replica-seconds per step).
    pub work: &'a [f64],
    /// `b_0 ..= b_t` (replica-seconds of queued work at the end of each step).
    pub backlog: &'a [f64],
    /// `u_0 ..= u_t`.
    pub utilisation: &'a [f64],
    /// `ready_t`.
    pub ready: u32,
    /// `pending_t` (started, not yet ready).
    pub pending: u32,
    pub profile: &'a Profile,
    /// What the fleet reports about step t.
    pub telemetry: Telemetry,
}

impl Observation<'_> {
    /// `ready_t + pending_t`: the count a decision is compared with.
    pub fn current(&self) -> u32 {
        self.ready.saturating_add(self.pending)
    }

    /// `w_t` (0 for an empty history).
    pub fn last_work(&self) -> f64 {
        self.work.last().copied().unwrap_or(0.0)
    }

    /// `b_t` (0 for an empty history).
    pub fn last_backlog(&self) -> f64 {
        self.backlog.last().copied().unwrap_or(0.0)
    }

    /// `b_{t-1}` (0 at t = 0).
    pub fn previous_backlog(&self) -> f64 {
        let n = self.backlog.len();
        if n >= 2 { self.backlog[n - 2] } else { 0.0 }
    }

    /// `u_t` (0 for an empty history).
    pub fn last_utilisation(&self) -> f64 {
        self.utilisation.last().copied().unwrap_or(0.0)
    }
}

/// A candidate replica count a policy considered, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Short machine-readable source, e.g. `forecast`, `drain`, `panic`, `stabilised`.
    pub source: String,
    pub replicas: u32,
    /// Human-readable derivation of the number.
    pub detail: String,
}

/// An explained decision: the replica count returned, the proposals considered, and why the winner won.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub replicas: u32,
    pub proposals: Vec<Proposal>,
    pub reason: String,
}

/// An autoscaling policy. It is called once after every step t and returns R_{t+1}.
pub trait Policy {
    /// Name written to the summary (e.g. `hpa`).
    fn name(&self) -> &str;

    /// `[min, max]` the simulator clamps R_{t+1} to.
    fn bounds(&self) -> (u32, u32) {
        (1, MAX_REPLICAS)
    }

    /// Desired replica count R_{t+1} after observing step t.
    fn decide(&mut self, obs: &Observation<'_>) -> u32;

    /// The same decision with its reasons. The default has no proposals; policies that can explain themselves
    /// override it (and then `decide` must return the same `replicas`).
    fn decide_explained(&mut self, obs: &Observation<'_>) -> Decision {
        let replicas = self.decide(obs);
        Decision { replicas, proposals: Vec::new(), reason: format!("{} policy", self.name()) }
    }
}

/// One row of the per-step CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub step: usize,
    pub timestamp: String,
    pub work: f64,
    pub ready: u32,
    pub pending: u32,
    /// R_{t+1} after clamping.
    pub desired: u32,
    pub backlog: f64,
    pub violation: bool,
}

/// Results of one backtest run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub policy: String,
    pub steps: usize,
    pub hours: f64,
    pub gpu_hours: f64,
    /// In [0, 1].
    pub slo_attainment: f64,
    pub scale_actions: usize,
    pub actions_per_hour: f64,
    pub violating_steps: usize,
    pub total_work: f64,
    pub peak_replicas: u32,
}

/// Per-step rows and the summary of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestResult {
    pub rows: Vec<StepRow>,
    pub summary: Summary,
}

/// Replicas that were started together and become ready at the same step.
#[derive(Debug, Clone, Copy)]
struct PendingBatch {
    ready_at: usize,
    count: u32,
}

/// The core loop, shared by [`simulate`] and [`replay`]. `decide` returns the (already clamped) R_{t+1}.
/// `initial` is the fleet ready at step 0 (EVAL.md's warm start [`initial_ready`] when `None`).
fn run_model(
    trace: &[TraceStep],
    profile: &Profile,
    name: &str,
    initial: Option<u32>,
    mut decide: impl FnMut(&Observation<'_>) -> u32,
) -> Result<BacktestResult, BacktestError> {
    let work = trace_work(trace, profile)?;
    let n = work.len();
    let k = profile.cold_start_steps();
    let mut ready: u32 = initial.unwrap_or_else(|| initial_ready(&work, profile));
    let mut pending: VecDeque<PendingBatch> = VecDeque::new();
    let mut pending_count: u32 = 0;
    let mut backlog_hist: Vec<f64> = Vec::with_capacity(n);
    let mut util_hist: Vec<f64> = Vec::with_capacity(n);
    let mut rows = Vec::with_capacity(n);
    let mut queue = FluidQueue::new();
    let mut replica_steps = 0.0_f64;
    let mut violating_work = 0.0_f64;
    let mut violating_steps = 0usize;
    let mut actions = 0usize;
    let mut peak_replicas = 0u32;
    // Waiting requests and tokens (the fluid queue's contents).
    let (mut q_req, mut q_prompt, mut q_out) = (0.0_f64, 0.0_f64, 0.0_f64);

    for t in 0..n {
        // Replicas whose cold start ends now join the ready pool (batches are in start order).
        while let Some(front) = pending.front().copied() {
            if front.ready_at > t {
                break;
            }
            ready = ready.saturating_add(front.count);
            pending_count -= front.count.min(pending_count);
            pending.pop_front();
        }
        let w = work[t];
        let q = queue.step(w, f64::from(ready) * profile.step_s);
        let (backlog, util, served) = (q.backlog, q.utilisation, q.served_fraction);
        let delay = queue_delay_s(backlog, ready);
        let violation = delay > profile.slo_s;
        if violation {
            violating_work += w;
            violating_steps += 1;
        }
        backlog_hist.push(backlog);
        util_hist.push(util);
        let step = &trace[t];
        let (in_req, in_prompt, in_out) = (
            q_req + step.requests.max(0.0),
            q_prompt + step.prompt_tokens.max(0.0),
            q_out + step.output_tokens.max(0.0),
        );
        (q_req, q_prompt, q_out) = (in_req * (1.0 - served), in_prompt * (1.0 - served), in_out * (1.0 - served));
        let mean_prompt = if step.requests > 0.0 { step.prompt_tokens / step.requests } else { 0.0 };
        let telemetry = Telemetry {
            gpu_utilization_pct_total: util * 100.0 * f64::from(ready) * profile.gpus_per_replica,
            queue_depth: q_req,
            requests_per_s: in_req * served / profile.step_s,
            prompt_tokens_per_s: in_prompt * served / profile.step_s,
            output_tokens_per_s: in_out * served / profile.step_s,
            queue_delay_s: delay,
            ttft_s: delay + mean_prompt / profile.prefill_rate,
        };
        let current = ready.saturating_add(pending_count);
        replica_steps += f64::from(current);
        peak_replicas = peak_replicas.max(current);

        let obs = Observation {
            t,
            work: &work[..=t],
            backlog: &backlog_hist,
            utilisation: &util_hist,
            ready,
            pending: pending_count,
            profile,
            telemetry,
        };
        let desired = decide(&obs);
        if desired != current {
            actions += 1;
        }
        rows.push(StepRow {
            step: t,
            timestamp: trace[t].timestamp.clone(),
            work: w,
            ready,
            pending: pending_count,
            desired,
            backlog,
            violation,
        });

        // Apply R_{t+1}.
        if desired > current {
            let count = desired - current;
            pending.push_back(PendingBatch { ready_at: t.saturating_add(1).saturating_add(k), count });
            pending_count = pending_count.saturating_add(count);
        } else if desired < current {
            let mut excess = current - desired;
            while excess > 0 {
                let Some(last) = pending.back_mut() else {
                    break;
                };
                let cut = last.count.min(excess);
                last.count -= cut;
                pending_count -= cut;
                excess -= cut;
                if last.count == 0 {
                    pending.pop_back();
                }
            }
            ready -= excess.min(ready);
        }
    }

    let total_work: f64 = work.iter().sum();
    let hours = n as f64 * profile.step_s / 3600.0;
    let summary = Summary {
        policy: name.to_string(),
        steps: n,
        hours,
        gpu_hours: replica_steps * profile.gpus_per_replica * profile.step_s / 3600.0,
        slo_attainment: if total_work > 0.0 { 1.0 - violating_work / total_work } else { 1.0 },
        scale_actions: actions,
        actions_per_hour: if hours > 0.0 { actions as f64 / hours } else { 0.0 },
        violating_steps,
        total_work,
        peak_replicas,
    };
    Ok(BacktestResult { rows, summary })
}

/// Runs `policy` over `trace`; R_{t+1} is clamped to the policy's bounds.
pub fn simulate(
    trace: &[TraceStep],
    profile: &Profile,
    policy: &mut dyn Policy,
) -> Result<BacktestResult, BacktestError> {
    let (lo, hi) = policy.bounds();
    let (lo, hi) = (lo.min(hi), hi.max(lo));
    let name = policy.name().to_string();
    run_model(trace, profile, &name, None, |obs| policy.decide(obs).clamp(lo, hi))
}

/// Replays a recorded `desired` column (entry t is R_{t+1}, used as is) and re-derives rows and summary.
pub fn replay(
    trace: &[TraceStep],
    profile: &Profile,
    name: &str,
    desired: &[u32],
) -> Result<BacktestResult, BacktestError> {
    replay_from(trace, profile, name, desired, None)
}

/// [`replay`] from a given ready fleet at step 0 (`None`: EVAL.md's warm start), for paths recorded live,
/// which start from whatever the fleet ran.
pub fn replay_from(
    trace: &[TraceStep],
    profile: &Profile,
    name: &str,
    desired: &[u32],
    initial: Option<u32>,
) -> Result<BacktestResult, BacktestError> {
    if desired.len() != trace.len() {
        return Err(BacktestError::LengthMismatch { trace: trace.len(), desired: desired.len() });
    }
    run_model(trace, profile, name, initial, |obs| desired[obs.t])
}

/// Per-step CSV with header `step,timestamp,work,ready,pending,desired,backlog,violation` (violation as 0/1,
/// floats in Rust's shortest round-trip form).
pub fn format_steps_csv(rows: &[StepRow]) -> String {
    let mut out = String::from("step,timestamp,work,ready,pending,desired,backlog,violation\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            r.step,
            r.timestamp,
            r.work,
            r.ready,
            r.pending,
            r.desired,
            r.backlog,
            u8::from(r.violation)
        ));
    }
    out
}

/// Summary CSV, one row per run:
/// `policy,steps,hours,gpu_hours,slo_attainment,actions_per_hour,scale_actions,violating_steps`.
pub fn format_summary_csv(summaries: &[Summary]) -> String {
    let mut out =
        String::from("policy,steps,hours,gpu_hours,slo_attainment,actions_per_hour,scale_actions,violating_steps\n");
    for s in summaries {
        out.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{},{}\n",
            s.policy,
            s.steps,
            s.hours,
            s.gpu_hours,
            s.slo_attainment,
            s.actions_per_hour,
            s.scale_actions,
            s.violating_steps
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work = prompt + output (P = D = 1), Δ = 10, C = 20 (k = 2), L = 2, g = 1.
    const UNIT: Profile = Profile {
        prefill_rate: 1.0,
        decode_rate: 1.0,
        cold_start_s: 20.0,
        gpus_per_replica: 1.0,
        slo_s: 2.0,
        step_s: 10.0,
    };

    fn trace(work: &[f64]) -> Vec<TraceStep> {
        work.iter()
            .enumerate()
            .map(|(i, w)| TraceStep {
                timestamp: format!("t{i}"),
                requests: 1.0,
                prompt_tokens: *w,
                output_tokens: 0.0,
            })
            .collect()
    }

    #[test]
    fn hand_computed_run() {
        // ready_0 = ceil(max(w_0..=w_2) / 7) = ceil(50 / 7) = 8.
        let tr = trace(&[10.0, 10.0, 50.0, 0.0, 0.0, 0.0]);
        let res = replay(&tr, &UNIT, "script", &[3, 3, 1, 1, 2, 2]).expect("valid");
        let got: Vec<(u32, u32, u32, f64, bool)> =
            res.rows.iter().map(|r| (r.ready, r.pending, r.desired, r.backlog, r.violation)).collect();
        assert_eq!(
            got,
            vec![
                (8, 0, 3, 0.0, false),
                (3, 0, 3, 0.0, false),
                (3, 0, 1, 20.0, true), // 50 - 30 = 20 queued, 20 / 3 s > 2 s
                (1, 0, 1, 10.0, true), // 20 - 10 = 10 queued, 10 s > 2 s (w = 0 adds nothing to violating work)
                (1, 0, 2, 0.0, false),
                (1, 1, 2, 0.0, false), // started after step 4, ready at 4 + 1 + 2 = 7
            ]
        );
        let s = &res.summary;
        assert!((s.gpu_hours - 18.0 * 10.0 / 3600.0).abs() < 1e-12);
        assert!((s.slo_attainment - (1.0 - 50.0 / 70.0)).abs() < 1e-12);
        assert_eq!(s.scale_actions, 3);
        assert!((s.actions_per_hour - 3.0 / (60.0 / 3600.0)).abs() < 1e-9);
        assert_eq!((s.violating_steps, s.peak_replicas), (2, 8));
    }

    #[test]
    fn pending_become_ready_after_cold_start_and_cancel_latest_first() {
        let tr = trace(&[0.0; 6]);
        // ready_0 = 1 (no work). Start 2 after step 0 (ready at 3), 2 after step 1 (ready at 4), cancel 1 after
        // step 2 (from the later batch), after step 3 drop to 2: the last pending first, then one ready replica.
        let res = replay(&tr, &UNIT, "script", &[3, 5, 4, 2, 2, 2]).expect("valid");
        let got: Vec<(u32, u32)> = res.rows.iter().map(|r| (r.ready, r.pending)).collect();
        assert_eq!(got, vec![(1, 0), (1, 2), (1, 4), (3, 1), (2, 0), (2, 0)]);
    }

    #[test]
    fn zero_cold_start_is_ready_next_step() {
        let p = Profile { cold_start_s: 0.0, ..UNIT };
        let res = replay(&trace(&[0.0; 3]), &p, "s", &[4, 4, 4]).expect("valid");
        let got: Vec<(u32, u32)> = res.rows.iter().map(|r| (r.ready, r.pending)).collect();
        assert_eq!(got, vec![(1, 0), (4, 0), (4, 0)]);
    }

    struct Recorder(Vec<(usize, f64, f64, u32, u32, usize)>);
    impl Policy for Recorder {
        fn name(&self) -> &str {
            "rec"
        }
        fn decide(&mut self, obs: &Observation<'_>) -> u32 {
            self.0.push((obs.t, obs.last_utilisation(), obs.last_backlog(), obs.ready, obs.pending, obs.work.len()));
            2
        }
    }

    #[test]
    fn observation_is_causal_and_utilisation_is_capped() {
        // ready_0 = ceil(35 / 7) = 5; then 2 replicas.
        let tr = trace(&[35.0, 30.0, 10.0]);
        let mut rec = Recorder(Vec::new());
        let res = simulate(&tr, &UNIT, &mut rec).expect("valid");
        assert_eq!(rec.0.len(), 3);
        assert_eq!(rec.0[0], (0, 0.7, 0.0, 5, 0, 1));
        // step 1: inflow 30, capacity 20 -> u = 1, backlog 10 (delay 5 s: violation)
        assert_eq!(rec.0[1], (1, 1.0, 10.0, 2, 0, 2));
        // step 2: inflow 10 + 10 = 20, capacity 20 -> u = 1, backlog 0
        assert_eq!(rec.0[2], (2, 1.0, 0.0, 2, 0, 3));
        assert_eq!(res.rows.iter().filter(|r| r.violation).count(), 1);
    }

    #[test]
    fn zero_ready_with_work_violates() {
        let p = Profile { cold_start_s: 100.0, ..UNIT };
        let res = replay(&trace(&[1.0, 5.0, 5.0]), &p, "s", &[0, 0, 0]).expect("valid");
        assert!(!res.rows[0].violation);
        assert!(res.rows[1].violation && res.rows[1].ready == 0);
        assert!(res.summary.slo_attainment < 0.1);
    }

    #[test]
    fn csv_formats() {
        let res = replay(&trace(&[1.5, 0.0]), &UNIT, "x", &[1, 1]).expect("valid");
        assert_eq!(
            format_steps_csv(&res.rows),
            "step,timestamp,work,ready,pending,desired,backlog,violation\n0,t0,1.5,1,0,1,0,0\n1,t1,0,1,0,1,0,0\n"
        );
        let summary = format_summary_csv(std::slice::from_ref(&res.summary));
        assert!(summary.starts_with("policy,steps,hours,gpu_hours,slo_attainment,actions_per_hour,"));
        assert!(summary.contains("\nx,2,0.005556,0.005556,1.000000,0.000000,0,0\n"));
    }

    #[test]
    fn parse_and_validate() {
        let t = parse_trace_csv("timestamp,requests,prompt_tokens,output_tokens\n2024-01-01 00:00:00,2,100,10\n\n")
            .expect("valid");
        assert_eq!(t.len(), 1);
        assert!((trace_work(&t, &Profile::STANDARD).expect("ok")[0] - 0.2).abs() < 1e-12);
        assert!(parse_trace_csv("").is_err());
        assert!(parse_trace_csv("a,b\n").is_err());
        assert!(parse_trace_csv("timestamp,requests,prompt_tokens,output_tokens\nx,1,2\n").is_err());
        assert!(parse_trace_csv("timestamp,requests,prompt_tokens,output_tokens\nx,1,y,2\n").is_err());
        let bad = trace(&[f64::NAN]);
        assert!(trace_work(&bad, &UNIT).is_err());
        assert!(simulate(&bad, &UNIT, &mut Recorder(Vec::new())).is_err());
        for p in [
            Profile { prefill_rate: 0.0, ..UNIT },
            Profile { decode_rate: f64::NAN, ..UNIT },
            Profile { step_s: -1.0, ..UNIT },
            Profile { cold_start_s: f64::INFINITY, ..UNIT },
            Profile { slo_s: -1.0, ..UNIT },
            Profile { gpus_per_replica: -1.0, ..UNIT },
        ] {
            assert!(p.validate().is_err());
        }
        assert!(matches!(replay(&trace(&[1.0]), &UNIT, "s", &[]), Err(BacktestError::LengthMismatch { .. })));
    }

    #[test]
    fn empty_trace_and_extreme_desired() {
        let res = replay(&[], &UNIT, "s", &[]).expect("valid");
        assert_eq!(res.summary.steps, 0);
        assert_eq!(res.summary.slo_attainment, 1.0);
        assert_eq!(res.summary.actions_per_hour, 0.0);
        let res = replay(&trace(&[1.0, 1.0, 1.0]), &UNIT, "s", &[u32::MAX, 0, u32::MAX]).expect("no panic");
        assert_eq!(res.rows[1].pending, u32::MAX - 1);
        let huge = Profile { cold_start_s: 1e300, step_s: 1e-300, ..UNIT };
        assert!(replay(&trace(&[1.0, 2.0]), &huge, "s", &[3, 3]).is_ok());
    }
}
