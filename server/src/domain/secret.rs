//! A secret string, for the configuration and for webhook specs alike.

use serde::{Deserialize, Serialize};

/// A secret string: never printed by `Debug`, never serialised back out in clear.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The clear value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "<unset>" } else { "<redacted>" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Serialising is only used to seed figment with defaults; secrets have none worth leaking.
        s.serialize_str(&self.0)
    }
}
