//! The scaling decision: one pure function over what the control loop observed, with every proposal and the
//! reason recorded in words.
//!
//! In order:
//! 1. **Reactive**, one proposal per metric (the HPA formula `ceil(current x observed / target)`, nothing inside
//!    the tolerance), the largest wins, as in HPA with several metrics.
//! 2. **Panic**: when a metric runs at `panic.threshold` times its target or more (a burst), the fleet goes
//!    straight to what the observed load needs, past the scale-up rate limits, and does not scale down until
//!    `panic.window_secs` passed without such a burst (Knative's panic mode).
//! 3. **Predictive**: the upper interval bound of the demand forecast over the next cold start, divided by the
//!    target: capacity started now is ready only then. `forecast_only` records it without acting.
//! 4. **SLO feedback**: a latency SLO (TTFT or inter-token p95) above its target asks for more replicas in
//!    proportion to the breach (at most double) and forbids scaling down while it lasts.
//! 5. **Anomaly gating**: data flagged anomalous never triggers a scale-down, and a scale-up driven by a single
//!    node's fault (one replica departing from its peers) is not read as fleet demand.
//! 6. **Scale to zero** only when `min_replicas` is 0, after `scale_to_zero_idle_secs` without demand and with
//!    no demand forecast within the cold start; any demand (or forecast demand) wakes the fleet.
//! 7. **Stabilization** (HPA `behavior`): a scale-up goes to the lowest recommendation of the scale-up window,
//!    a scale-down to the highest of the scale-down window; nothing scales down before the loop has watched a
//!    whole scale-down window (e.g. right after a start or a leadership change); then
//!    **hysteresis**: a scale-down that removes less than `down_hysteresis` of the fleet is not made.
//! 8. **Rate limits** (HPA `behavior.policies`): at most `value` pods or percent per `period_secs`, measured
//!    from the replica count at the start of the period; `select_policy` picks the most (`max`) or least
//!    (`min`) permissive, `disabled` forbids that direction.
//! 9. **Bounds**: never outside `[min_replicas, max_replicas]`.

use serde::{Deserialize, Serialize};

/// One metric the policy holds at a target per replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricObservation {
    /// Metric name, for the record.
    pub name: String,
    /// Latest value summed over replicas, if observed recently.
    pub total: Option<f64>,
    /// Target per replica.
    pub target_per_replica: f64,
}

/// A latency SLO and what was observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloObservation {
    /// e.g. `itl_p95_ms`.
    pub name: String,
    /// Latest observed value (same unit as `target`), if any.
    pub observed: Option<f64>,
    /// The SLO.
    pub target: f64,
}

/// Which of several rate policies applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SelectPolicy {
    /// The one allowing the largest change (HPA's default).
    #[default]
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// Unit of a rate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    /// Replicas.
    Pods,
    /// Percent of the replicas at the start of the period.
    Percent,
}

/// At most `value` pods or percent per `period_secs` (HPA `HPAScalingPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePolicy {
    /// Unit.
    #[serde(rename = "type")]
    pub kind: RateKind,
    /// Amount.
    pub value: u32,
    /// Period, seconds.
    pub period_secs: u32,
}

/// One direction of [`Behavior`] (HPA `HPAScalingRules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingRules {
    /// Stabilization window, seconds.
    pub stabilization_window_secs: u32,
    /// Which policy applies.
    #[serde(default)]
    pub select_policy: SelectPolicy,
    /// Rate policies; none means unlimited.
    #[serde(default)]
    pub policies: Vec<RatePolicy>,
}

/// HPA-compatible scaling behavior.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behavior {
    /// Scale-up rules.
    pub scale_up: ScalingRules,
    /// Scale-down rules.
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// HPA's defaults: up at once by 100 % or 4 pods per 15 s (whichever is more); down by up to 100 % per 15 s
    /// after a 300 s stabilization window.
    fn default() -> Self {
        Self {
            scale_up: ScalingRules {
                stabilization_window_secs: 0,
                select_policy: SelectPolicy::Max,
                policies: vec![
                    RatePolicy { kind: RateKind::Percent, value: 100, period_secs: 15 },
                    RatePolicy { kind: RateKind::Pods, value: 4, period_secs: 15 },
                ],
            },
            scale_down: ScalingRules {
                stabilization_window_secs: 300,
                select_policy: SelectPolicy::Max,
                policies: vec![RatePolicy { kind: RateKind::Percent, value: 100, period_secs: 15 }],
            },
        }
    }
}

/// How the forecast is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PredictiveMode {
    /// Not computed.
    Off,
    /// Computed and recorded, never acted on.
    ForecastOnly,
    /// Acted on.
    #[default]
    On,
}

/// Burst handling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PanicSettings {
    /// Observed / target ratio that starts panic mode; 0 disables it.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::panic_threshold))]
    pub threshold: f64,
    /// Seconds without a burst before panic mode ends.
    #[cfg_attr(feature = "openapi", schema(maximum = 3600))]
    pub window_secs: u32,
}

impl Default for PanicSettings {
    fn default() -> Self {
        Self { threshold: 2.0, window_secs: 60 }
    }
}

/// What the decision sees for one target at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInput {
    /// Now, Unix seconds.
    pub now_secs: i64,
    /// Replicas currently running (or requested by the previous decision).
    pub current_replicas: u32,
    /// Policy lower bound (0 allows scale to zero).
    pub min_replicas: u32,
    /// Policy upper bound.
    pub max_replicas: u32,
    /// Metric targets and observations; the first drives the forecast.
    pub metrics: Vec<MetricObservation>,
    /// Latency SLOs.
    pub slos: Vec<SloObservation>,
    /// Forecast use.
    pub predictive: PredictiveMode,
    /// Upper interval bound of the first metric's total over the next cold start.
    pub forecast_total_upper: Option<f64>,
    /// Whether the latest observation was flagged anomalous.
    pub latest_anomalous: bool,
    /// Set when one node departs from its peers: its description (a fault, not demand).
    pub single_node_fault: Option<String>,
    /// HPA tolerance: no reactive change while |observed/target - 1| <= tolerance.
    pub tolerance: f64,
    /// Stabilization and rate limits.
    pub behavior: Behavior,
    /// Burst handling.
    pub panic: PanicSettings,
    /// Idle seconds before scaling to zero (with `min_replicas` 0); `None` never scales to zero.
    pub scale_to_zero_idle_secs: Option<u32>,
    /// Seconds a new replica needs before it serves.
    pub cold_start_secs: u32,
    /// Further proposals computed by the caller (the engine's capacity sizing: `peak`, `drain`), acting unless
    /// marked advisory.
    #[serde(default)]
    pub extra_proposals: Vec<Proposal>,
    /// A scale-down happens only when it removes at least this fraction of the current count (0: any).
    #[serde(default)]
    pub down_hysteresis: f64,
}

/// What the caller keeps between decisions of one target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionState {
    /// When this decider started watching (stabilization needs a whole window of evidence).
    pub watching_since: Option<i64>,
    /// Recent `(seconds, recommendation)`.
    pub recommendations: Vec<(i64, u32)>,
    /// Recent applied changes `(seconds, from, to)`, for the rate limits.
    pub changes: Vec<(i64, u32, u32)>,
    /// Panic mode lasts until then.
    pub panic_until: Option<i64>,
    /// Without demand since then.
    pub idle_since: Option<i64>,
}

impl DecisionState {
    /// Records that the target was moved from `from` to `to` at `now_secs` (only applied changes count).
    pub fn applied(&mut self, now_secs: i64, from: u32, to: u32) {
        if from != to {
            self.changes.push((now_secs, from, to));
        }
    }
}

/// One candidate replica count and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// `reactive:<metric>`, `panic`, `predictive`, `slo:<name>`, `hold`, `scale-to-zero`.
    pub source: String,
    /// Proposed replicas before stabilization, limits and bounds.
    pub replicas: u32,
    /// How it was computed, in words.
    pub detail: String,
    /// Recorded only (forecast-only mode, or discounted as a single-node fault).
    #[serde(default)]
    pub advisory: bool,
}

/// The decided replica count with its proposals and a sentence a person can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Replicas to run.
    pub desired: u32,
    /// The recommendation before stabilization and rate limits.
    pub recommended: u32,
    /// All proposals considered.
    pub proposals: Vec<Proposal>,
    /// What decided: the winning proposal's source, or `hold`, `anomaly-gate`, `slo-gate`, `panic-hold`,
    /// `stabilization`, `rate-limit`, with `+clamp` when a bound applied.
    pub winner: String,
    /// Explanation.
    pub reason: String,
    /// Whether panic mode is on after this decision.
    pub panic: bool,
}

/// Decides the replica count and updates `state`; never panics, never leaves `[min, max]` (min is raised to
/// max if inverted).
pub fn decide(input: &DecisionInput, state: &mut DecisionState) -> Decision {
    let now = input.now_secs;
    let max = input.max_replicas.max(input.min_replicas).max(1);
    let min = input.min_replicas.min(max);
    let current = input.current_replicas;
    let tol = if input.tolerance.is_finite() { input.tolerance.clamp(0.0, 1.0) } else { 0.1 };
    let watching_since = *state.watching_since.get_or_insert(now);
    let mut proposals = Vec::new();

    // 1-2. Reactive, per metric; bursts start panic mode.
    let mut max_ratio: f64 = 0.0;
    let mut panic_need = 0u32;
    let mut demand_seen = false;
    let mut observed_any = false;
    for m in &input.metrics {
        let target = positive_or(m.target_per_replica, 1.0);
        let Some(total) = m.total.filter(|v| v.is_finite() && *v >= 0.0) else { continue };
        observed_any = true;
        demand_seen |= total > 0.0;
        let need_now = ceil_u32(total / target);
        let (replicas, detail) = if current == 0 {
            let r = need_now.max(u32::from(total > 0.0));
            (r, format!("{} {total:.1} in total with no replica running / target {target:.1} -> {r}", m.name))
        } else {
            let per = total / f64::from(current);
            let ratio = per / target;
            max_ratio = max_ratio.max(ratio);
            panic_need = panic_need.max(need_now);
            if (ratio - 1.0).abs() <= tol {
                (
                    current,
                    format!(
                        "{} {per:.1} per replica is within {:.0}% of target {target:.1}: keep {current}",
                        m.name,
                        tol * 100.0
                    ),
                )
            } else {
                let r = ceil_u32(f64::from(current) * ratio);
                (
                    r,
                    format!(
                        "{} {per:.1} per replica vs target {target:.1} (ratio {ratio:.2}) x {current} replicas -> {r}",
                        m.name
                    ),
                )
            }
        };
        proposals.push(Proposal { source: format!("reactive:{}", m.name), replicas, detail, advisory: false });
    }
    let threshold = input.panic.threshold;
    if threshold.is_finite() && threshold > 0.0 && current > 0 && max_ratio >= threshold {
        let until = now + i64::from(input.panic.window_secs);
        state.panic_until = Some(state.panic_until.map_or(until, |u| u.max(until)));
        proposals.push(Proposal {
            source: "panic".into(),
            replicas: panic_need,
            detail: format!(
                "burst: load is {max_ratio:.1}x the target (panic at {threshold:.1}x): straight to the {panic_need} replicas it needs, past the rate limits"
            ),
            advisory: false,
        });
    }
    let in_panic = state.panic_until.is_some_and(|u| now < u);
    if !in_panic {
        state.panic_until = None;
    }

    // 3. Predictive: capacity started now serves only after the cold start.
    let target0 = input.metrics.first().map_or(1.0, |m| positive_or(m.target_per_replica, 1.0));
    let forecast = input.forecast_total_upper.filter(|v| v.is_finite() && *v >= 0.0);
    if input.predictive != PredictiveMode::Off
        && let Some(up) = forecast
    {
        let r = ceil_u32(up / target0).max(u32::from(up > 0.0 && current == 0));
        let advisory = input.predictive == PredictiveMode::ForecastOnly;
        proposals.push(Proposal {
            source: "predictive".into(),
            replicas: r,
            detail: format!(
                "forecast upper bound {up:.1} in total over the next {} s (cold start) / target {target0:.1} -> {r}{}",
                input.cold_start_secs,
                if advisory { " (forecast-only: recorded, not acted on)" } else { "" }
            ),
            advisory,
        });
    }

    // 3b. The caller's capacity proposals.
    proposals.extend(input.extra_proposals.iter().cloned());

    // 4. SLO feedback.
    let mut slo_breach: Option<String> = None;
    for s in &input.slos {
        let target = positive_or(s.target, f64::INFINITY);
        let Some(obs) = s.observed.filter(|v| v.is_finite() && *v >= 0.0) else { continue };
        if obs > target {
            let r = ceil_u32(f64::from(current.max(1)) * (obs / target).min(2.0)).max(current + 1);
            proposals.push(Proposal {
                source: format!("slo:{}", s.name),
                replicas: r,
                detail: format!("{} {obs:.1} is above its SLO {target:.1}: {current} -> {r}", s.name),
                advisory: false,
            });
            slo_breach.get_or_insert_with(|| format!("{} {obs:.1} > SLO {target:.1}", s.name));
        }
    }

    // 5. A single node's fault is not fleet demand.
    if let Some(fault) = &input.single_node_fault {
        for p in proposals.iter_mut().filter(|p| p.source.starts_with("reactive") || p.source == "panic") {
            if p.replicas > current {
                p.advisory = true;
                p.detail.push_str(&format!(" (discounted: {fault})"));
            }
        }
    }

    let acting: Vec<&Proposal> = proposals.iter().filter(|p| !p.advisory).collect();
    let Some(best) = acting.iter().max_by_key(|p| p.replicas).map(|p| (*p).clone()) else {
        let desired = current.clamp(min.max(u32::from(current > 0)), max);
        state.recommendations.push((now, desired));
        prune(state, input, now);
        let why = if observed_any { "every proposal is advisory" } else { "no recent data" };
        return Decision {
            desired,
            recommended: desired,
            proposals,
            winner: "hold".into(),
            reason: format!("{why}: hold at {desired} replicas"),
            panic: in_panic,
        };
    };
    let mut winner = best.source.clone();
    let mut rec = best.replicas;
    let mut reason = format!("{} wins with {} replicas: {}", best.source, best.replicas, best.detail);

    // 6. Zero only after the idle period, never against forecast demand.
    let forecast_demand = input.predictive == PredictiveMode::On && forecast.is_some_and(|f| f > 0.0);
    if demand_seen || forecast_demand || !observed_any {
        state.idle_since = None;
    } else {
        state.idle_since.get_or_insert(now);
    }
    if rec == 0 {
        match (min, input.scale_to_zero_idle_secs, state.idle_since) {
            (0, Some(idle), Some(since)) if now - since >= i64::from(idle) => {
                winner = "scale-to-zero".into();
                reason =
                    format!("no demand for {} s (idle period {idle} s) and none forecast: scale to zero", now - since);
            }
            (0, Some(idle), since) => {
                rec = 1;
                reason = format!(
                    "no demand, but idle for {} s of the {idle} s required before scaling to zero: keep 1",
                    since.map_or(0, |s| now - s)
                );
            }
            _ => rec = rec.max(1),
        }
    }

    // 5 (gates on scale-down).
    if rec < current {
        let gate = if input.latest_anomalous {
            Some(("anomaly-gate", "the latest data is anomalous".to_string()))
        } else if let Some(b) = &slo_breach {
            Some(("slo-gate", format!("an SLO is breached ({b})")))
        } else if in_panic {
            Some(("panic-hold", "panic mode is on after a burst".to_string()))
        } else {
            None
        };
        if let Some((w, why)) = gate {
            reason = format!("{why}, so no scale-down: hold {current} ({} wanted {rec})", best.source);
            rec = current;
            winner = w.into();
        }
    }
    let recommended = rec.clamp(min, max);
    if recommended != rec {
        reason.push_str(&format!("; clamped to [{min}, {max}] -> {recommended}"));
        winner = format!("{winner}+clamp");
    }
    state.recommendations.push((now, recommended));
    prune(state, input, now);

    // 7. Stabilization.
    let mut desired = recommended;
    let b = &input.behavior;
    if desired > current {
        let w = i64::from(b.scale_up.stabilization_window_secs);
        let lowest = window_recs(state, now, w).min().unwrap_or(desired).max(current);
        if lowest < desired && !in_panic {
            reason = format!(
                "scale-up stabilized: {} wants {desired}, the lowest recommendation of the last {w} s is {lowest}",
                best.source
            );
            desired = lowest;
            winner = "stabilization".into();
        }
    } else if desired < current {
        let w = i64::from(b.scale_down.stabilization_window_secs);
        // Right after a start (or a leadership change) the window holds few recommendations: a scale-down
        // waits until the loop has watched one whole window, the evidence the window exists to require (the
        // highest recommendation over fewer seconds is not the same rule).
        let wait = w;
        if now - watching_since < wait {
            reason = format!(
                "{} wants {desired}, but the loop has watched for {} s of the {wait} s needed before a scale-down: \
                 hold {current}",
                best.source,
                now - watching_since
            );
            desired = current;
            winner = "stabilization".into();
        } else {
            let highest = window_recs(state, now, w).max().unwrap_or(desired).min(current);
            if highest > desired {
                reason = format!(
                    "scale-down stabilized: {} wants {desired}, the highest recommendation of the last {w} s is {highest}",
                    best.source
                );
                desired = highest;
                winner = "stabilization".into();
            }
        }
    }

    // 7b. Hysteresis: a scale-down too small to matter is not worth the churn (undoing it costs a cold start).
    let hyst = if input.down_hysteresis.is_finite() { input.down_hysteresis.clamp(0.0, 1.0) } else { 0.0 };
    if desired < current && hyst > 0.0 && f64::from(desired) > f64::from(current) * (1.0 - hyst) {
        reason = format!(
            "{} wants {desired}, less than {:.0}% below the current {current}: hold",
            best.source,
            hyst * 100.0
        );
        desired = current;
        winner = "hysteresis".into();
    }

    // 8. Rate limits (panic bypasses them upward: a burst does not wait).
    if desired > current && !in_panic {
        if let Some(limit) = rate_limit(&b.scale_up, state, now, current, true)
            && limit < desired
        {
            reason = format!("{reason}; scale-up limited to {limit} by the rate policy");
            desired = limit.max(current);
            winner = "rate-limit".into();
        }
    } else if desired < current
        && let Some(limit) = rate_limit(&b.scale_down, state, now, current, false)
        && limit > desired
    {
        reason = format!("{reason}; scale-down limited to {limit} by the rate policy");
        desired = limit.min(current);
        winner = "rate-limit".into();
    }

    // 9. Bounds.
    let clamped = desired.clamp(min, max);
    if clamped != desired {
        reason.push_str(&format!("; clamped to [{min}, {max}] -> {clamped}"));
        winner = format!("{winner}+clamp");
    }
    Decision { desired: clamped, recommended, proposals, winner, reason, panic: in_panic }
}

/// Recommendations of the last `window` seconds (including now).
/// Recommendations made within the last `window` seconds, as Kubernetes' HPA counts them: strictly after
/// `now - window`, so a window of 0 is no stabilization even when several ticks fall in the same second (with
/// `<=`, a tick's own earlier recommendation of that second held back a scale-up for up to a second).
fn window_recs(state: &DecisionState, now: i64, window: i64) -> impl Iterator<Item = u32> + '_ {
    state.recommendations.iter().filter(move |(t, _)| now - t < window).map(|(_, r)| *r)
}

/// The replica count a direction's rate policies allow from `current`; `Some(current)` when disabled, `None`
/// when unlimited.
fn rate_limit(rules: &ScalingRules, state: &DecisionState, now: i64, current: u32, up: bool) -> Option<u32> {
    if rules.select_policy == SelectPolicy::Disabled {
        return Some(current);
    }
    let limits = rules.policies.iter().map(|p| {
        // Replicas at the start of the period: before the earliest change inside it.
        let base = state
            .changes
            .iter()
            .find(|(t, _, _)| now - t < i64::from(p.period_secs))
            .map_or(current, |(_, from, _)| *from);
        let b = f64::from(base);
        match (p.kind, up) {
            (RateKind::Pods, true) => base.saturating_add(p.value),
            (RateKind::Percent, true) => ceil_u32(b * (1.0 + f64::from(p.value) / 100.0)),
            (RateKind::Pods, false) => base.saturating_sub(p.value),
            // As HPA (`int32(base x (1 - value%))`): truncated, so a small fleet can still shrink.
            (RateKind::Percent, false) => (b * (1.0 - f64::from(p.value) / 100.0)).max(0.0).floor() as u32,
        }
    });
    match (rules.select_policy, up) {
        (SelectPolicy::Max, true) | (SelectPolicy::Min, false) => limits.max(),
        (SelectPolicy::Min, true) | (SelectPolicy::Max, false) => limits.min(),
        (SelectPolicy::Disabled, _) => Some(current),
    }
}

fn prune(state: &mut DecisionState, input: &DecisionInput, now: i64) {
    let b = &input.behavior;
    let keep_recs = i64::from(b.scale_up.stabilization_window_secs.max(b.scale_down.stabilization_window_secs));
    state.recommendations.retain(|(t, _)| now - t <= keep_recs);
    let keep_changes =
        b.scale_up.policies.iter().chain(&b.scale_down.policies).map(|p| i64::from(p.period_secs)).max().unwrap_or(0);
    state.changes.retain(|(t, _, _)| now - t < keep_changes);
}

fn positive_or(v: f64, fallback: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { fallback }
}

fn ceil_u32(v: f64) -> u32 {
    if !v.is_finite() || v <= 0.0 {
        0
    } else if v >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        v.ceil() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn metric(total: f64) -> Vec<MetricObservation> {
        vec![MetricObservation { name: "gpu_utilization".into(), total: Some(total), target_per_replica: 70.0 }]
    }

    fn input() -> DecisionInput {
        DecisionInput {
            now_secs: NOW,
            current_replicas: 4,
            min_replicas: 1,
            max_replicas: 10,
            metrics: metric(4.0 * 70.0),
            slos: vec![],
            predictive: PredictiveMode::On,
            forecast_total_upper: None,
            latest_anomalous: false,
            single_node_fault: None,
            tolerance: 0.1,
            behavior: Behavior::default(),
            panic: PanicSettings::default(),
            scale_to_zero_idle_secs: None,
            cold_start_secs: 120,
            extra_proposals: vec![],
            down_hysteresis: 0.0,
        }
    }

    /// A state that has watched long enough for scale-downs.
    fn watched() -> DecisionState {
        DecisionState { watching_since: Some(NOW - 10_000), ..DecisionState::default() }
    }

    fn run(i: &DecisionInput) -> Decision {
        decide(i, &mut watched())
    }

    #[test]
    fn reactive_follows_the_hpa_formula() {
        let d = run(&DecisionInput { metrics: metric(4.0 * 105.0), ..input() });
        assert_eq!(d.desired, 6);
        assert_eq!(d.winner, "reactive:gpu_utilization");
    }

    #[test]
    fn within_tolerance_nothing_changes() {
        assert_eq!(run(&DecisionInput { metrics: metric(4.0 * 75.0), ..input() }).desired, 4);
    }

    #[test]
    fn the_largest_metric_proposal_wins() {
        let mut metrics = metric(4.0 * 35.0);
        metrics.push(MetricObservation { name: "queue_depth".into(), total: Some(30.0), target_per_replica: 5.0 });
        let d = run(&DecisionInput { metrics, ..input() });
        assert_eq!(d.desired, 6);
        assert_eq!(d.winner, "reactive:queue_depth");
    }

    #[test]
    fn the_forecast_can_scale_ahead_of_load_and_forecast_only_just_records_it() {
        let d = run(&DecisionInput { forecast_total_upper: Some(500.0), ..input() });
        assert_eq!(d.desired, 8);
        assert_eq!(d.winner, "predictive");
        let d = run(&DecisionInput {
            forecast_total_upper: Some(500.0),
            predictive: PredictiveMode::ForecastOnly,
            ..input()
        });
        assert_eq!(d.desired, 4);
        assert!(d.proposals.iter().any(|p| p.source == "predictive" && p.advisory && p.replicas == 8));
    }

    #[test]
    fn a_burst_panics_past_the_rate_limits_and_holds_scale_down_for_the_window() {
        let mut s = watched();
        // 4 replicas at 3.5x the target need 14; the default rate limit would allow 8.
        let d = decide(&DecisionInput { metrics: metric(4.0 * 245.0), ..input() }, &mut s);
        assert_eq!(d.desired, 10, "{}", d.reason); // 14, clamped to max 10
        assert!(d.panic);
        s.applied(NOW, 4, 10);
        // The burst is over 30 s later: still in panic, so no scale-down.
        let d = decide(
            &DecisionInput { now_secs: NOW + 30, current_replicas: 10, metrics: metric(10.0 * 10.0), ..input() },
            &mut s,
        );
        assert_eq!(d.desired, 10);
        assert_eq!(d.winner, "panic-hold");
        // Without panic the same burst is rate limited to 8.
        let d = run(&DecisionInput {
            metrics: metric(4.0 * 245.0),
            panic: PanicSettings { threshold: 0.0, window_secs: 60 },
            ..input()
        });
        assert_eq!(d.desired, 8);
        assert_eq!(d.winner, "rate-limit");
    }

    #[test]
    fn an_slo_breach_scales_up_and_blocks_scale_down() {
        let slos = vec![SloObservation { name: "itl_p95_ms".into(), observed: Some(90.0), target: 60.0 }];
        let d = run(&DecisionInput { slos: slos.clone(), ..input() });
        assert_eq!(d.desired, 6);
        assert_eq!(d.winner, "slo:itl_p95_ms");
        let d = run(&DecisionInput {
            slos: vec![SloObservation { name: "ttft_p95_ms".into(), observed: Some(900.0), target: 500.0 }],
            metrics: metric(4.0 * 10.0),
            ..input()
        });
        assert_eq!(d.desired, 8);
        let met = vec![SloObservation { name: "itl_p95_ms".into(), observed: Some(30.0), target: 60.0 }];
        assert_eq!(run(&DecisionInput { slos: met, metrics: metric(4.0 * 10.0), ..input() }).desired, 1);
    }

    #[test]
    fn anomalous_data_does_not_scale_down() {
        let d = run(&DecisionInput { metrics: metric(40.0), latest_anomalous: true, ..input() });
        assert_eq!(d.desired, 4);
        assert_eq!(d.winner, "anomaly-gate");
    }

    #[test]
    fn a_single_node_fault_is_not_fleet_demand() {
        let d = run(&DecisionInput {
            metrics: metric(4.0 * 105.0),
            single_node_fault: Some("node-3 GPU 2 departs from its peers".into()),
            ..input()
        });
        assert_eq!(d.desired, 4);
        assert!(d.proposals[0].advisory && d.proposals[0].detail.contains("node-3"));
    }

    #[test]
    fn bounds_are_respected_even_when_inverted() {
        let d = run(&DecisionInput { metrics: metric(4.0 * 700.0), panic: PanicSettings::default(), ..input() });
        assert_eq!(d.desired, 10);
        assert!(d.reason.contains("clamped"));
        let d = run(&DecisionInput { min_replicas: 5, max_replicas: 3, metrics: metric(1.0), ..input() });
        assert_eq!(d.desired, 5);
    }

    #[test]
    fn scale_down_waits_for_the_whole_window_and_its_highest_recommendation() {
        let mut s = DecisionState::default();
        let d = decide(&DecisionInput { metrics: metric(40.0), ..input() }, &mut s);
        assert_eq!(d.desired, 4, "no scale-down before a window of evidence");
        let mut s = watched();
        s.recommendations.push((NOW - 100, 3));
        let d = decide(&DecisionInput { metrics: metric(40.0), ..input() }, &mut s);
        assert_eq!(d.desired, 3);
        assert_eq!(d.recommended, 1);
        assert_eq!(d.winner, "stabilization");
        // A recommendation older than the window no longer counts.
        let mut s = watched();
        s.recommendations.push((NOW - 400, 3));
        assert_eq!(decide(&DecisionInput { metrics: metric(40.0), ..input() }, &mut s).desired, 1);
    }

    #[test]
    fn a_zero_window_never_holds_a_scale_up_back_even_within_one_second() {
        let up_now = Behavior {
            scale_up: ScalingRules { stabilization_window_secs: 0, ..Behavior::default().scale_up },
            ..Behavior::default()
        };
        let mut s = watched();
        // A tick earlier in this second saw the steady load ...
        let d = decide(&DecisionInput { metrics: metric(4.0 * 60.0), behavior: up_now.clone(), ..input() }, &mut s);
        assert_eq!(d.desired, 4);
        // ... and the next one, in the same second, sees the step: it scales at once.
        let d = decide(&DecisionInput { metrics: metric(4.0 * 95.0), behavior: up_now, ..input() }, &mut s);
        assert_eq!(d.desired, 6, "{}", d.reason);
        assert_ne!(d.winner, "stabilization");
        // A 60 s window still holds it to the lowest recommendation of the last 60 s, and no older one.
        let up_60 = Behavior {
            scale_up: ScalingRules { stabilization_window_secs: 60, ..Behavior::default().scale_up },
            ..Behavior::default()
        };
        let mut s = watched();
        s.recommendations.push((NOW - 59, 4));
        let d = decide(&DecisionInput { metrics: metric(4.0 * 95.0), behavior: up_60.clone(), ..input() }, &mut s);
        assert_eq!((d.desired, d.winner.as_str()), (4, "stabilization"));
        let mut s = watched();
        s.recommendations.push((NOW - 60, 4));
        let d = decide(&DecisionInput { metrics: metric(4.0 * 95.0), behavior: up_60, ..input() }, &mut s);
        assert_eq!(d.desired, 6);
    }

    #[test]
    fn rate_limits_count_changes_within_the_period() {
        let behavior = Behavior {
            scale_up: ScalingRules {
                stabilization_window_secs: 0,
                select_policy: SelectPolicy::Max,
                policies: vec![RatePolicy { kind: RateKind::Pods, value: 2, period_secs: 60 }],
            },
            ..Behavior::default()
        };
        let mut s = watched();
        s.applied(NOW - 30, 2, 4);
        // From 2 at the start of the period, 2 more pods: 4 is the limit, already reached.
        let d = decide(&DecisionInput { metrics: metric(4.0 * 105.0), behavior: behavior.clone(), ..input() }, &mut s);
        assert_eq!(d.desired, 4);
        assert_eq!(d.winner, "rate-limit");
        let mut s = watched();
        let d = decide(&DecisionInput { metrics: metric(4.0 * 105.0), behavior: behavior.clone(), ..input() }, &mut s);
        assert_eq!(d.desired, 6);
        let disabled = Behavior {
            scale_down: ScalingRules {
                stabilization_window_secs: 0,
                select_policy: SelectPolicy::Disabled,
                policies: vec![],
            },
            ..Behavior::default()
        };
        assert_eq!(run(&DecisionInput { metrics: metric(40.0), behavior: disabled, ..input() }).desired, 4);
    }

    #[test]
    fn scale_to_zero_waits_for_the_idle_period_and_forecast_demand_wakes_the_fleet() {
        let zero = |now: i64, current: u32| DecisionInput {
            now_secs: now,
            current_replicas: current,
            min_replicas: 0,
            metrics: metric(0.0),
            scale_to_zero_idle_secs: Some(600),
            behavior: Behavior {
                scale_down: ScalingRules { stabilization_window_secs: 0, ..Behavior::default().scale_down },
                ..Behavior::default()
            },
            ..input()
        };
        let mut s = watched();
        assert_eq!(decide(&zero(NOW, 2), &mut s).desired, 1);
        let d = decide(&zero(NOW + 300, 1), &mut s);
        assert_eq!(d.desired, 1);
        assert!(d.reason.contains("300 s of the 600 s"), "{}", d.reason);
        let d = decide(&zero(NOW + 600, 1), &mut s);
        assert_eq!(d.desired, 0);
        assert_eq!(d.winner, "scale-to-zero");
        // Demand forecast within the cold start wakes it before requests arrive.
        let d = decide(&DecisionInput { forecast_total_upper: Some(20.0), ..zero(NOW + 700, 0) }, &mut s);
        assert_eq!(d.desired, 1);
        assert_eq!(d.winner, "predictive");
        // Demand with nothing running: replicas for all of it.
        let d = decide(&DecisionInput { metrics: metric(150.0), ..zero(NOW + 800, 0) }, &mut s);
        assert_eq!(d.desired, 3);
        // Without scale-to-zero settings, min 0 still keeps one replica.
        let d = decide(&DecisionInput { scale_to_zero_idle_secs: None, ..zero(NOW + 900, 1) }, &mut watched());
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn no_data_holds() {
        let d = run(&DecisionInput { metrics: vec![], ..input() });
        assert_eq!(d.desired, 4);
        assert_eq!(d.winner, "hold");
        let nan = vec![MetricObservation { name: "x".into(), total: Some(f64::NAN), target_per_replica: f64::NAN }];
        assert_eq!(run(&DecisionInput { metrics: nan, ..input() }).desired, 4);
    }
}
