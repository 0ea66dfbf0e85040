//! Prices replica paths against an observed demand: the counterfactual behind shadow policies.
//!
//! A shadow policy decides every tick on live data without acting; what its decisions would have cost is not
//! observable, so it is estimated with the same fluid model v1 the backtest uses (EVAL.md section 3), fed by
//! the demand the fleet actually saw (in busy replicas per step) instead of a trace. Every path (the active
//! policy's and each shadow's) goes through the same model with the same demand, so the comparison is like for
//! like: replicas it asked for become ready one cold start later, work it cannot serve queues, and the SLO
//! counts the work that waited longer than the delay budget.

use super::model::{BacktestError, BacktestResult, Profile, TraceStep, replay_from};

/// One replica path: what a policy asked for at the end of each step (entry t is R_{t+1}) and what ran at
/// step 0.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaPath {
    /// Name in the summary.
    pub name: String,
    /// Replicas in force at the start of the window (ready at step 0).
    pub initial: u32,
    /// The replicas asked for at the end of each step, one entry per demand step.
    pub desired: Vec<u32>,
}

/// Replays `path` against `demand` (busy replicas per step: replica-seconds of work per second, so a step's
/// work is `demand × Δ`; non-finite or negative entries count as 0) through the fluid model with `profile`'s
/// step, cold start, GPUs per replica and delay budget. Replica speed is 1: the demand is already in replicas.
pub fn price_path(demand: &[f64], profile: &Profile, path: &ReplicaPath) -> Result<BacktestResult, BacktestError> {
    profile.validate()?;
    let trace: Vec<TraceStep> = demand
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let d = if d.is_finite() { d.max(0.0) } else { 0.0 };
            // `Profile::work` is prompt / P + output / D: prompt tokens of `work × P` are exactly `work`.
            TraceStep {
                timestamp: i.to_string(),
                requests: 0.0,
                prompt_tokens: d * profile.step_s * profile.prefill_rate,
                output_tokens: 0.0,
            }
        })
        .collect();
    replay_from(&trace, profile, &path.name, &path.desired, Some(path.initial))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(cold_start_s: f64) -> Profile {
        Profile { step_s: 60.0, cold_start_s, ..Profile::STANDARD }
    }

    fn path(initial: u32, desired: Vec<u32>) -> ReplicaPath {
        ReplicaPath { name: "p".into(), initial, desired }
    }

    #[test]
    fn enough_replicas_meet_the_slo_and_cost_replica_hours() {
        let demand = vec![3.0; 60];
        let r = price_path(&demand, &profile(120.0), &path(4, vec![4; 60])).unwrap();
        assert_eq!(r.summary.slo_attainment, 1.0);
        assert!((r.summary.gpu_hours - 4.0).abs() < 1e-9, "{}", r.summary.gpu_hours);
        assert_eq!(r.summary.scale_actions, 0);
    }

    #[test]
    fn too_few_replicas_queue_work_and_miss_the_slo() {
        let demand = vec![3.0; 60];
        let r = price_path(&demand, &profile(120.0), &path(2, vec![2; 60])).unwrap();
        assert!(r.summary.slo_attainment < 0.1, "{}", r.summary.slo_attainment);
        assert!((r.summary.gpu_hours - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_late_scale_up_pays_the_cold_start() {
        // Demand doubles at step 10; one path had asked for the capacity before, one asks at step 10.
        let demand: Vec<f64> = (0..40).map(|t| if t < 10 { 2.0 } else { 4.0 }).collect();
        let early: Vec<u32> = (0..40).map(|t| if t < 6 { 3 } else { 5 }).collect();
        let late: Vec<u32> = (0..40).map(|t| if t < 10 { 3 } else { 5 }).collect();
        let p = profile(180.0);
        let e = price_path(&demand, &p, &path(3, early)).unwrap().summary;
        let l = price_path(&demand, &p, &path(3, late)).unwrap().summary;
        assert_eq!(e.slo_attainment, 1.0);
        assert!(l.slo_attainment < e.slo_attainment, "{} vs {}", l.slo_attainment, e.slo_attainment);
        assert!(l.gpu_hours < e.gpu_hours);
        assert_eq!((e.scale_actions, l.scale_actions), (1, 1));
    }

    #[test]
    fn bad_demand_counts_as_nothing_and_a_short_path_is_an_error() {
        let r = price_path(&[f64::NAN, -1.0, f64::INFINITY], &profile(0.0), &path(1, vec![1; 3])).unwrap();
        assert_eq!(r.summary.total_work, 0.0);
        assert!(matches!(
            price_path(&[1.0; 3], &profile(0.0), &path(1, vec![1; 2])),
            Err(BacktestError::LengthMismatch { .. })
        ));
    }
}
