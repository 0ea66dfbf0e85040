//! Trace-driven autoscaling backtest (EVAL.md section 3): the fluid model v1, the reference policies, and the
//! shipped scaling engine driven through it ([`EnginePolicy`]).

pub mod counterfactual;
#[cfg(feature = "engine")]
pub mod engine;
pub mod model;
pub mod policies;

pub use counterfactual::{ReplicaPath, price_path};
#[cfg(feature = "engine")]
pub use engine::EnginePolicy;
pub use model::{
    BacktestError, BacktestResult, Decision, MAX_REPLICAS, Observation, Policy, Profile, Proposal, StepRow, Summary,
    Telemetry, TraceStep, format_steps_csv, format_summary_csv, initial_ready, parse_trace_csv, replay, replay_from,
    simulate, trace_step_secs, trace_work,
};
pub use policies::{
    HpaPolicy, KpaPolicy, StaticPolicy, static_best, static_best_replicas, static_peak, static_peak_replicas,
};
