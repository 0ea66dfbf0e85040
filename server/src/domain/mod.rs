//! Validated domain types: parsed at the edge, trusted past it.

pub mod alert;
pub mod policy;
pub mod secret;

/// A value the domain refuses, naming the offending field (a JSON path such as `matchers[2].value`).
///
/// The domain knows nothing of HTTP: the API turns this into a 400 with a JSON body naming the field
/// (`From<Invalid> for ApiError`), the web forms into a message next to the field, the CLI into an exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {error}")]
pub struct Invalid {
    /// The offending field (JSON path).
    pub field: String,
    /// What is wrong with it, for a person.
    pub error: String,
}

impl Invalid {
    /// A refusal naming `field`.
    pub fn field(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self { field: field.into(), error: error.into() }
    }
}
