//! fleetpilot's intelligence, as pure functions: time series in, numbers out.
//!
//! No IO, no async, no clocks: the server's control loop, the backtest and the evaluation commands all call
//! the same code, and it can be tested and benchmarked alone. The evaluation harnesses that measure it (NAB,
//! MASE, the backtest) live in the `fleetpilot-eval` crate (`forecasting/eval/`), which depends on this one.

pub mod anomaly;
pub mod clustering;
pub mod decision;
pub mod engine;
pub mod error;
pub mod events;
pub mod forecast;
pub mod idle;
pub mod latency_model;
pub mod leak;
pub mod model;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod opportunities;
pub mod peers;
pub mod pricing;
pub mod season;

pub use error::Error;
