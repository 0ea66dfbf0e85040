//! The scaling decision: reactive (HPA formula), predictive (forecast upper bound) and anomaly gating,
//! combined into one replica count with every proposal and the reason recorded.

use serde::{Deserialize, Serialize};

/// What the decision sees for one deployment at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInput {
    /// Replicas currently running (or requested by the previous decision).
    pub current_replicas: u32,
    /// Policy lower bound.
    pub min_replicas: u32,
    /// Policy upper bound.
    pub max_replicas: u32,
    /// Target value of the metric per replica (e.g. 70 % GPU utilisation).
    pub target_per_replica: f64,
    /// Current metric averaged over replicas, if observed.
    pub observed_per_replica: Option<f64>,
    /// Upper bound of the forecast of the metric summed over replicas, over the cold-start horizon.
    pub forecast_total_upper: Option<f64>,
    /// Whether the latest observation was flagged anomalous.
    pub latest_anomalous: bool,
    /// HPA tolerance: no reactive change while |observed/target - 1| <= tolerance.
    pub tolerance: f64,
    /// Highest recommendation over the scale-down stabilization window (HPA's `stabilizationWindowSeconds`);
    /// a scale-down never goes below it.
    pub stabilization_floor: Option<u32>,
}

/// One candidate replica count and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// `reactive`, `predictive`, `hold`.
    pub source: String,
    /// Proposed replicas before clamping.
    pub replicas: u32,
    /// How it was computed.
    pub detail: String,
}

/// The decided replica count with its proposals and a sentence a person can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Replicas to run.
    pub desired: u32,
    /// The recommendation before stabilization (what later decisions' stabilization window remembers).
    pub recommended: u32,
    /// All proposals considered.
    pub proposals: Vec<Proposal>,
    /// Source of the winning proposal (or `clamp` / `anomaly-gate`).
    pub winner: String,
    /// Explanation.
    pub reason: String,
}

/// Decides the replica count; never panics, never leaves `[min, max]` (min is raised to max if inverted).
pub fn decide(input: &DecisionInput) -> Decision {
    let min = input.min_replicas;
    let max = input.max_replicas.max(min);
    let current = input.current_replicas;
    let target = if input.target_per_replica.is_finite() && input.target_per_replica > 0.0 {
        input.target_per_replica
    } else {
        1.0
    };
    let mut proposals = Vec::new();

    if let Some(obs) = input.observed_per_replica.filter(|v| v.is_finite() && *v >= 0.0) {
        let ratio = obs / target;
        let (replicas, detail) = if (ratio - 1.0).abs() <= input.tolerance {
            (
                current,
                format!(
                    "observed {obs:.1} per replica is within {:.0}% of target {target:.1}: keep {current}",
                    input.tolerance * 100.0
                ),
            )
        } else {
            let r = ceil_u32(f64::from(current.max(1)) * ratio);
            (
                r,
                format!(
                    "observed {obs:.1} per replica vs target {target:.1} (ratio {ratio:.2}) x {current} replicas -> {r}"
                ),
            )
        };
        proposals.push(Proposal { source: "reactive".into(), replicas, detail });
    }
    if let Some(up) = input.forecast_total_upper.filter(|v| v.is_finite() && *v >= 0.0) {
        let r = ceil_u32(up / target);
        proposals.push(Proposal {
            source: "predictive".into(),
            replicas: r,
            detail: format!(
                "forecast upper bound {up:.1} in total over the cold-start horizon / target {target:.1} -> {r}"
            ),
        });
    }
    let Some(best) = proposals.iter().max_by_key(|p| p.replicas).cloned() else {
        let desired = current.clamp(min, max);
        return Decision {
            desired,
            recommended: desired,
            proposals,
            winner: "hold".into(),
            reason: format!("no recent data: hold at {desired} replicas"),
        };
    };
    let mut winner = best.source.clone();
    let mut desired = best.replicas;
    let mut reason = format!("{} proposal wins with {} replicas ({})", best.source, best.replicas, best.detail);
    if desired < current && input.latest_anomalous {
        reason = format!(
            "latest data is anomalous, so no scale-down: hold {current} (the {} proposal wanted {desired})",
            best.source
        );
        desired = current;
        winner = "anomaly-gate".into();
    }
    let recommended = desired;
    if let Some(floor) = input.stabilization_floor.filter(|f| desired < current && *f > desired) {
        let held = floor.min(current);
        reason = format!(
            "scale-down stabilized: the {} proposal wants {desired}, but the highest recommendation in the stabilization window is {floor}, so {held}",
            best.source
        );
        desired = held;
        winner = "stabilization".into();
    }
    let clamped = desired.clamp(min, max);
    if clamped != desired {
        reason.push_str(&format!("; clamped to [{min}, {max}] -> {clamped}"));
        winner = format!("{winner}+clamp");
    }
    Decision { desired: clamped, recommended, proposals, winner, reason }
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

    fn input() -> DecisionInput {
        DecisionInput {
            current_replicas: 4,
            min_replicas: 1,
            max_replicas: 10,
            target_per_replica: 70.0,
            observed_per_replica: Some(70.0),
            forecast_total_upper: None,
            latest_anomalous: false,
            tolerance: 0.1,
            stabilization_floor: None,
        }
    }

    #[test]
    fn reactive_follows_the_hpa_formula() {
        let d = decide(&DecisionInput { observed_per_replica: Some(105.0), ..input() });
        assert_eq!(d.desired, 6);
        assert_eq!(d.winner, "reactive");
    }

    #[test]
    fn within_tolerance_nothing_changes() {
        assert_eq!(decide(&DecisionInput { observed_per_replica: Some(75.0), ..input() }).desired, 4);
    }

    #[test]
    fn the_forecast_can_scale_ahead_of_load() {
        let d = decide(&DecisionInput { forecast_total_upper: Some(500.0), ..input() });
        assert_eq!(d.desired, 8);
        assert_eq!(d.winner, "predictive");
        assert_eq!(d.proposals.len(), 2);
    }

    #[test]
    fn anomalous_data_does_not_scale_down() {
        let d = decide(&DecisionInput { observed_per_replica: Some(10.0), latest_anomalous: true, ..input() });
        assert_eq!(d.desired, 4);
        assert_eq!(d.winner, "anomaly-gate");
    }

    #[test]
    fn bounds_are_respected_even_when_inverted() {
        let d = decide(&DecisionInput { observed_per_replica: Some(700.0), ..input() });
        assert_eq!(d.desired, 10);
        assert!(d.reason.contains("clamped"));
        let d = decide(&DecisionInput { min_replicas: 5, max_replicas: 3, observed_per_replica: Some(1.0), ..input() });
        assert_eq!(d.desired, 5);
    }

    #[test]
    fn scale_down_is_held_by_the_stabilization_window() {
        let d = decide(&DecisionInput { observed_per_replica: Some(10.0), stabilization_floor: Some(3), ..input() });
        assert_eq!(d.desired, 3);
        assert_eq!(d.recommended, 1);
        assert_eq!(d.winner, "stabilization");
        // Scale-up is never held back.
        let d = decide(&DecisionInput { observed_per_replica: Some(140.0), stabilization_floor: Some(3), ..input() });
        assert_eq!(d.desired, 8);
    }

    #[test]
    fn no_data_holds() {
        let d = decide(&DecisionInput { observed_per_replica: None, ..input() });
        assert_eq!(d.desired, 4);
        assert_eq!(d.winner, "hold");
    }
}
