//! fleetpilot's evaluation harnesses, apart from the product logic they measure (../shared/EVAL.md).
//!
//! - [`nab`]: the Numenta Anomaly Benchmark scorer (section 1);
//! - [`mase`]: rolling-origin MASE of a forecaster (section 2);
//! - [`trace`]: the one reader of the trace CSVs in ../shared/data (bucketed demand traces, NAB series);
//! - [`queue`]: the fluid queue of a replica group, the world both the backtest and the agent's simulator step;
//! - [`backtest`]: the trace-driven autoscaling backtest, model v1, its reference policies, the counterfactual
//!   pricing of a recorded replica path, and the shipped engine driven through it (section 3; the engine needs
//!   the `engine` feature).
//!
//! Pure and synchronous like the `forecasting` crate it measures: the binaries read and write the files.

pub mod backtest;
pub mod mase;
pub mod nab;
pub mod queue;
pub mod trace;
