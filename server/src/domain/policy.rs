//! Scaling policies: what a platform team declares for one deployment.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What a policy scales.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `deployment`, `statefulset` (Kubernetes, through the scale subresource) or `agent_group`
    /// (fleetpilot agents that follow `set_replicas` commands, e.g. the simulated fleet).
    pub kind: TargetKind,
    /// Kubernetes namespace (required for Kubernetes kinds).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Deployment / StatefulSet name, or the agent group.
    pub name: String,
    /// The serving deployment (`namespace/name`) whose metrics drive an `agent_group` target; defaults to
    /// `namespace/name` for Kubernetes kinds.
    #[serde(default)]
    pub deployment: Option<String>,
}

/// Kinds of [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    Statefulset,
    /// A group of fleetpilot agents.
    AgentGroup,
}

/// The metric a policy holds at its target value per replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// GPU utilisation, percent per replica's GPU.
    GpuUtilization,
    /// Requests waiting, per replica.
    QueueDepthPerReplica,
    /// KV-cache use, percent per replica.
    KvCachePct,
    /// Generated tokens per second per replica.
    TokensPerSecPerReplica,
}

impl Metric {
    /// Largest sensible target value.
    fn max_target(self) -> f64 {
        match self {
            Metric::GpuUtilization | Metric::KvCachePct => 100.0,
            Metric::QueueDepthPerReplica => 1e6,
            Metric::TokensPerSecPerReplica => 1e9,
        }
    }
}

/// Batching the control loop may set on the deployment's engines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebatchSpec {
    /// Smallest batch size allowed.
    pub min_batch_size: u32,
    /// Largest batch size allowed.
    pub max_batch_size: u32,
    /// Batching delay used, microseconds.
    #[serde(default = "default_delay")]
    pub max_queue_delay_us: u64,
    /// Inter-token latency p95 the batch size must keep, milliseconds.
    pub itl_slo_ms: f64,
}

fn default_delay() -> u64 {
    2_000
}

fn default_cold_start() -> u32 {
    120
}

fn default_tolerance() -> f64 {
    0.1
}

/// A scaling policy as the API accepts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Unique name (`[a-z0-9-]`, 1..=63).
    pub name: String,
    /// What is scaled.
    pub target: Target,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// Metric held at `target_value` per replica.
    pub metric: Metric,
    /// Target per replica.
    pub target_value: f64,
    /// HPA tolerance around the target (0.1 = 10 %).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Seconds a new replica needs before it serves; the forecast looks this far ahead.
    #[serde(default = "default_cold_start")]
    pub cold_start_secs: u32,
    /// Record decisions without acting.
    #[serde(default)]
    pub dry_run: bool,
    /// Optional rebatching.
    #[serde(default)]
    pub rebatch: Option<RebatchSpec>,
}

fn k8s_name(field: &str, v: &str) -> Result<(), ApiError> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !v.starts_with(['-', '.'])
        && !v.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(field, "must be a Kubernetes name: lowercase letters, digits, '-' and '.'"))
    }
}

impl PolicySpec {
    /// Checks every constraint serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.name.is_empty()
            || self.name.len() > 63
            || !self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ApiError::field("name", "must be 1..=63 characters of lowercase letters, digits and '-'"));
        }
        k8s_name("target.name", &self.target.name)?;
        match self.target.kind {
            TargetKind::Deployment | TargetKind::Statefulset => match &self.target.namespace {
                Some(ns) => k8s_name("target.namespace", ns)?,
                None => return Err(ApiError::field("target.namespace", "is required for Kubernetes targets")),
            },
            TargetKind::AgentGroup => {
                if let Some(ns) = &self.target.namespace {
                    k8s_name("target.namespace", ns)?;
                }
                if self.target.deployment.is_none() {
                    return Err(ApiError::field(
                        "target.deployment",
                        "is required for agent_group targets (namespace/name)",
                    ));
                }
            }
        }
        if let Some(d) = &self.target.deployment {
            gpu_agent::protocol::parse_deployment(d).map_err(|e| ApiError::field("target.deployment", e))?;
        }
        if self.max_replicas > 10_000 {
            return Err(ApiError::field("max_replicas", "must be at most 10000"));
        }
        if self.min_replicas > self.max_replicas {
            return Err(ApiError::field("min_replicas", "must not exceed max_replicas"));
        }
        if self.max_replicas == 0 {
            return Err(ApiError::field("max_replicas", "must be at least 1"));
        }
        if !(self.target_value.is_finite() && self.target_value > 0.0 && self.target_value <= self.metric.max_target())
        {
            return Err(ApiError::field(
                "target_value",
                format!("must be a number in (0, {}] for {:?}", self.metric.max_target(), self.metric),
            ));
        }
        if !(self.tolerance.is_finite() && (0.0..=1.0).contains(&self.tolerance)) {
            return Err(ApiError::field("tolerance", "must be in 0..=1"));
        }
        if self.cold_start_secs > 3600 {
            return Err(ApiError::field("cold_start_secs", "must be at most 3600"));
        }
        if let Some(r) = &self.rebatch {
            if r.min_batch_size == 0 {
                return Err(ApiError::field("rebatch.min_batch_size", "must be at least 1"));
            }
            if r.min_batch_size > r.max_batch_size {
                return Err(ApiError::field("rebatch.min_batch_size", "must not exceed rebatch.max_batch_size"));
            }
            if r.max_batch_size > 4096 {
                return Err(ApiError::field("rebatch.max_batch_size", "must be at most 4096"));
            }
            if !(r.itl_slo_ms.is_finite() && r.itl_slo_ms > 0.0) {
                return Err(ApiError::field("rebatch.itl_slo_ms", "must be a positive number"));
            }
            if r.max_queue_delay_us > 10_000_000 {
                return Err(ApiError::field("rebatch.max_queue_delay_us", "must be at most 10000000"));
            }
        }
        Ok(())
    }

    /// The serving deployment (`namespace/name`) whose metrics drive this policy.
    pub fn deployment(&self) -> String {
        match (&self.target.deployment, &self.target.namespace) {
            (Some(d), _) => d.clone(),
            (None, Some(ns)) => format!("{ns}/{}", self.target.name),
            (None, None) => self.target.name.clone(),
        }
    }

    /// Short label of the target for logs and the dashboard.
    pub fn target_label(&self) -> String {
        match self.target.kind {
            TargetKind::Deployment => {
                format!("deployment {}/{}", self.target.namespace.as_deref().unwrap_or(""), self.target.name)
            }
            TargetKind::Statefulset => {
                format!("statefulset {}/{}", self.target.namespace.as_deref().unwrap_or(""), self.target.name)
            }
            TargetKind::AgentGroup => format!("agent group {}", self.target.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PolicySpec {
        crate::error::parse_json(
            br#"{"name":"llama","target":{"kind":"deployment","namespace":"ml","name":"llama"},
                "min_replicas":1,"max_replicas":8,"metric":"gpu_utilization","target_value":70}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_valid_spec_passes_with_defaults() {
        let s = spec();
        assert_eq!(s.validate().map_err(|e| e.error), Ok(()));
        assert_eq!(s.cold_start_secs, 120);
        assert_eq!(s.deployment(), "ml/llama");
    }

    #[test]
    fn min_above_max_names_min_replicas() {
        let s = PolicySpec { min_replicas: 9, ..spec() };
        assert_eq!(s.validate().unwrap_err().field.as_deref(), Some("min_replicas"));
    }

    #[test]
    fn utilization_target_above_100_is_refused() {
        let s = PolicySpec { target_value: 120.0, ..spec() };
        assert_eq!(s.validate().unwrap_err().field.as_deref(), Some("target_value"));
    }

    #[test]
    fn negative_replicas_fail_to_parse_with_the_field_named() {
        let e = crate::error::parse_json::<PolicySpec>(
            br#"{"name":"x","target":{"kind":"deployment","namespace":"a","name":"b"},"min_replicas":-1,
                "max_replicas":2,"metric":"gpu_utilization","target_value":50}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("min_replicas"));
    }

    #[test]
    fn unknown_nested_fields_are_named() {
        let e = crate::error::parse_json::<PolicySpec>(
            br#"{"name":"x","target":{"kind":"deployment","namespace":"a","name":"b","bogus":1},"min_replicas":1,
                "max_replicas":2,"metric":"gpu_utilization","target_value":50}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("target.bogus"));
    }
}
