//! The crate's one error type.

/// Everything that can go wrong in `forecasting`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The series is too short for the requested operation.
    #[error("series too short: {len} points, need at least {need}")]
    TooShort {
        /// Points given.
        len: usize,
        /// Points needed.
        need: usize,
    },
    /// The series contains NaN or infinite values.
    #[error("series contains a non-finite value at index {index}")]
    NonFinite {
        /// First offending index.
        index: usize,
    },
    /// An argument is outside its domain.
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        /// Argument name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The underlying model failed (augurs errors are not `Send + Sync`, so they are kept as text).
    #[error("model error: {0}")]
    Model(String),
}
