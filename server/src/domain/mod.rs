//! Validated domain types: parsed at the edge, trusted past it.

pub mod alert;
pub mod policy;
