//! Trace-driven autoscaling backtest (EVAL.md section 3): the fluid model v1, the reference policies and
//! fleetpilot's own policy.

pub mod fleetpilot;
pub mod model;
pub mod policies;

pub use fleetpilot::{FleetpilotConfig, FleetpilotPolicy, TailFit};
pub use model::{
    BacktestError, BacktestResult, Decision, MAX_REPLICAS, Observation, Policy, Profile, Proposal, StepRow, Summary,
    TraceStep, format_steps_csv, format_summary_csv, initial_ready, parse_trace_csv, replay, simulate, trace_work,
};
pub use policies::{
    HpaPolicy, KpaPolicy, StaticPolicy, static_best, static_best_replicas, static_peak, static_peak_replicas,
};
