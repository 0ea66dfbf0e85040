//! The control loop's errors.

/// Why a tick, or one policy's step within it, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The store could not be read or written.
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
}
