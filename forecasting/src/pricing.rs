//! What a GPU-hour costs: product configuration, passed to the detectors ([`crate::opportunities::Config`],
//! [`crate::idle`]) rather than written into them.
//!
//! [`PriceTable::default`] holds on-demand cloud list prices (late 2025, rounded); the server overrides them from
//! its configuration file (`[opportunities.prices]`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Price per GPU-hour by GPU model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceTable {
    /// Price for models no entry matches, per GPU-hour.
    pub default_per_gpu_hour: f64,
    /// Price per GPU-hour by a case-insensitive substring of the model name (`"H100"`); the longest
    /// matching key wins (`"A100"` over `"A10"`).
    pub per_gpu_hour: BTreeMap<String, f64>,
    /// Currency label, e.g. `USD`.
    pub currency: String,
}

impl Default for PriceTable {
    /// On-demand cloud list prices per GPU-hour, rounded (late 2025), in USD; 2.5 for a model not listed.
    fn default() -> Self {
        let per_gpu_hour =
            [("H200", 5.0), ("H100", 4.0), ("A100", 2.5), ("L40S", 1.6), ("A10", 1.0), ("L4", 0.8), ("T4", 0.5)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        Self { default_per_gpu_hour: 2.5, per_gpu_hour, currency: "USD".into() }
    }
}

impl PriceTable {
    /// Price per GPU-hour of `model`.
    pub fn price(&self, model: &str) -> f64 {
        let m = model.to_ascii_uppercase();
        self.per_gpu_hour
            .iter()
            .filter(|(k, v)| !k.is_empty() && m.contains(&k.to_ascii_uppercase()) && v.is_finite() && **v >= 0.0)
            .max_by_key(|(k, _)| k.len())
            .map_or(self.default_per_gpu_hour, |(_, v)| *v)
    }

    /// Checks that every price is finite and non-negative.
    pub fn validate(&self) -> Result<(), Error> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.default_per_gpu_hour) || self.per_gpu_hour.values().any(|v| !ok(*v)) {
            return Err(Error::InvalidArgument { name: "pricing", reason: "prices must be finite and >= 0".into() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pricing_picks_the_longest_matching_model_and_falls_back_to_the_default() {
        let p = PriceTable::default();
        assert_eq!(p.price("NVIDIA H100 80GB HBM3"), 4.0);
        assert_eq!(p.price("NVIDIA A100-SXM4-80GB"), 2.5);
        assert_eq!(p.price("NVIDIA A10G"), 1.0);
        assert_eq!(p.price("Mystery GPU"), 2.5);
        assert_eq!(p.currency, "USD");
    }

    #[test]
    fn prices_are_overridable_and_validated() {
        let p: PriceTable =
            serde_json::from_str(r#"{"per_gpu_hour": {"H100": 2.0}, "currency": "EUR"}"#).expect("partial table");
        assert_eq!((p.price("NVIDIA H100 80GB HBM3"), p.price("NVIDIA L4"), p.currency.as_str()), (2.0, 2.5, "EUR"));
        assert!(p.validate().is_ok());
        assert!(PriceTable { default_per_gpu_hour: f64::NAN, ..PriceTable::default() }.validate().is_err());
        let negative = PriceTable { per_gpu_hour: [("T4".to_string(), -1.0)].into(), ..PriceTable::default() };
        assert!(negative.validate().is_err());
        assert!(serde_json::from_str::<PriceTable>(r#"{"per_gpu_hours": {}}"#).is_err(), "unknown keys are refused");
    }
}
