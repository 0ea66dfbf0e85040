//! The shipped scaling engine as a backtest policy: each step's fluid-model [`super::model::Telemetry`] becomes the
//! [`forecasting::engine::Observation`] the live loop would build from the agents' metrics, and the engine decides
//! exactly as it does in the server (same spec, same code path, the clock simulated).

use super::model::{Decision, MAX_REPLICAS, Observation, Policy, Profile, Proposal};
use forecasting::engine::{EngineSpec, Load, Observation as EngineObservation, ScalingEngine};

/// The engine under a name, driven by the fluid model.
#[derive(Debug, Clone)]
pub struct EnginePolicy {
    name: String,
    engine: ScalingEngine,
}

impl EnginePolicy {
    /// `spec` driven by the model; the name goes into the summary.
    pub fn new(name: impl Into<String>, spec: EngineSpec) -> Self {
        Self { name: name.into(), engine: ScalingEngine::new(spec) }
    }

    /// The default LLM policy for `profile` (its step, cold start and delay budget; bounds 1..=100,000), as
    /// `fleetpilot backtest` runs it and `POST /api/v1/policies` creates it.
    pub fn llm_default(profile: &Profile) -> Self {
        let mut spec =
            EngineSpec::llm_default(1, MAX_REPLICAS, profile.step_s, profile.cold_start_s.ceil().max(0.0) as u32);
        if let Some(c) = spec.capacity.as_mut() {
            c.queue_delay_slo_secs = profile.slo_s;
            c.gpus_per_replica = profile.gpus_per_replica.max(0.01);
        }
        Self::new("fleetpilot", spec)
    }

    /// The engine (its spec and history).
    pub fn engine(&self) -> &ScalingEngine {
        &self.engine
    }

    fn observation(obs: &Observation<'_>) -> EngineObservation {
        let p = obs.profile;
        let tm = obs.telemetry;
        let gpus = if p.gpus_per_replica > 0.0 { p.gpus_per_replica } else { 1.0 };
        EngineObservation {
            // Seconds since the trace started, at the end of step t.
            now_secs: ((obs.t as f64 + 1.0) * p.step_s).round() as i64,
            ready: obs.ready,
            pending: obs.pending,
            metrics: vec![],
            slos: vec![],
            load: Load {
                busy_replicas: Some(tm.gpu_utilization_pct_total / 100.0 / gpus),
                queue_depth: Some(tm.queue_depth),
                requests_per_s: Some(tm.requests_per_s),
            },
            single_node_fault: None,
            bucket_complete: true,
        }
    }
}

impl Policy for EnginePolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn bounds(&self) -> (u32, u32) {
        let s = self.engine.spec();
        (s.min_replicas, s.max_replicas.max(s.min_replicas))
    }

    fn decide(&mut self, obs: &Observation<'_>) -> u32 {
        self.decide_explained(obs).replicas
    }

    fn decide_explained(&mut self, obs: &Observation<'_>) -> Decision {
        let eo = Self::observation(obs);
        let step = self.engine.step(&eo);
        let d = step.decision;
        // The model applies R_{t+1} at once, as a successful PATCH would.
        self.engine.applied(eo.now_secs, step.current, d.desired);
        Decision {
            replicas: d.desired,
            proposals: d
                .proposals
                .into_iter()
                .map(|p| Proposal { source: p.source, replicas: p.replicas, detail: p.detail })
                .collect(),
            reason: format!("{}: {}", d.winner, d.reason),
        }
    }
}
