//! Alerting's plain vocabulary, below both the configuration and the rules that use it.

use serde::{Deserialize, Serialize};

/// Severity of an anomaly event (the `anomalies.severity` column), ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyLevel {
    /// The event's peak reached the open threshold.
    Info,
    /// The peak reached the warning threshold.
    Warning,
    /// The peak reached the critical threshold.
    Critical,
}

impl AnomalyLevel {
    /// Every level, least severe first.
    pub const ALL: [AnomalyLevel; 3] = [AnomalyLevel::Info, AnomalyLevel::Warning, AnomalyLevel::Critical];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyLevel::Info => "info",
            AnomalyLevel::Warning => "warning",
            AnomalyLevel::Critical => "critical",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// The stored names of this level and the more severe ones.
    pub fn at_or_above(self) -> Vec<&'static str> {
        Self::ALL.into_iter().filter(|l| *l >= self).map(Self::as_str).collect()
    }
}

/// Checks a name: 1-64 letters, digits, `.`, `_` or `-`.
pub fn valid_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 64 {
        return Err("must be 1-64 characters");
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err("may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
}
