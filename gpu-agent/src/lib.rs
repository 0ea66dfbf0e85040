//! fleetpilot's per-node agent. `protocol` (the wire types shared with the control plane) is always built;
//! everything else (collectors, simulator, sender, commands) is behind the `agent` feature so the server
//! never links NVML or CUDA.

pub mod protocol;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "agent")]
pub mod bench;
#[cfg(feature = "agent")]
pub mod commands;
#[cfg(feature = "agent")]
pub mod config;
#[cfg(feature = "agent")]
pub mod cuda;
#[cfg(feature = "agent")]
pub mod fakes;
#[cfg(feature = "agent")]
pub mod faults;
#[cfg(feature = "agent")]
pub mod nvml;
#[cfg(feature = "agent")]
pub mod scrape;
#[cfg(feature = "agent")]
pub mod selfmetrics;
#[cfg(feature = "agent")]
pub mod sender;
#[cfg(feature = "agent")]
pub mod sim;
#[cfg(feature = "agent")]
pub mod spool;
#[cfg(feature = "agent")]
pub mod testkit;
#[cfg(feature = "agent")]
pub mod tls;
#[cfg(feature = "agent")]
pub mod triton;
