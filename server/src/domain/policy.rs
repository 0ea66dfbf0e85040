//! Scaling policies: what a platform team declares for one deployment.

use forecasting::decision::{
    Behavior, PanicSettings, PredictiveMode, RateKind, RatePolicy, ScalingRules, SelectPolicy,
};
pub use forecasting::engine::CapacitySpec;
use forecasting::engine::{EngineSpec, MetricTarget as EngineMetric, SloTarget};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Invalid;

/// What fleetpilot reports on a [`ScalingPolicy`] (its `status` subresource).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The stored policy it is (absent while the spec is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// Replicas the target had at the latest decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<u32>,
    /// Replicas the latest decision wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    /// The latest decision's reason, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    /// When it was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision_time: Option<String>,
    /// `Accepted`: whether the spec is valid and stored (with the validation message when not).
    #[serde(default)]
    pub conditions: Vec<PolicyCondition>,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason (`Stored`, `InvalidSpec`, `NameTaken`).
    pub reason: String,
    /// In words; for an invalid spec, the field and what is wrong with it.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation it was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Whether a policy acts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// The leader acts on its decisions (unless `dry_run`).
    #[default]
    Active,
    /// The leader runs it through the same engine every tick on live data and records its decisions, but never
    /// acts: a candidate priced against the active policy of the same target (`/shadow-report`) before anyone
    /// switches to it. A shadow never rebatches and is never the deployment's policy.
    Shadow,
}

/// What a policy scales.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `deployment`, `statefulset` (Kubernetes, through the scale subresource) or `agent_group`
    /// (fleetpilot agents that follow `set_replicas` commands, e.g. the simulated fleet).
    pub kind: TargetKind,
    /// Kubernetes namespace (required for Kubernetes kinds).
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", max_length = 253)]
    pub namespace: Option<String>,
    /// Deployment / StatefulSet name, or the agent group.
    #[schema(pattern = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", max_length = 253)]
    pub name: String,
    /// The serving deployment (`namespace/name`) whose metrics drive an `agent_group` target; defaults to
    /// `namespace/name` for Kubernetes kinds.
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9.]([a-z0-9.-]{0,251}[a-z0-9.])?/[a-z0-9.]([a-z0-9.-]{0,251}[a-z0-9.])?$")]
    pub deployment: Option<String>,
}

/// Kinds of [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
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
    /// The name decisions and charts use.
    pub fn name(self) -> &'static str {
        match self {
            Metric::GpuUtilization => "gpu_utilization",
            Metric::QueueDepthPerReplica => "queue_depth_per_replica",
            Metric::KvCachePct => "kv_cache_pct",
            Metric::TokensPerSecPerReplica => "tokens_per_sec_per_replica",
        }
    }

    /// Largest sensible target value.
    fn max_target(self) -> f64 {
        match self {
            Metric::GpuUtilization | Metric::KvCachePct => 100.0,
            Metric::QueueDepthPerReplica => 1e6,
            Metric::TokensPerSecPerReplica => 1e9,
        }
    }
}

/// One metric held at a target value per replica.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricTarget {
    /// The metric.
    pub metric: Metric,
    /// Target per replica.
    #[schema(exclusive_minimum = 0, maximum = 1000000000)]
    pub target: f64,
}

/// Latency SLOs; a breach scales up and forbids scaling down.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// Time-to-first-token p95 target, milliseconds.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 600000)]
    pub ttft_p95_ms: Option<f64>,
    /// Inter-token latency p95 target, milliseconds.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 600000)]
    pub itl_p95_ms: Option<f64>,
}

/// How the forecast is used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictiveSpec {
    /// `off`, `forecast_only` (computed and recorded, never acted on) or `on`.
    #[serde(default)]
    pub mode: PredictiveMode,
    /// Interval quantile used as headroom (0.5..=0.99; 0.9 = the upper bound of the 80 % interval).
    #[serde(default = "default_quantile")]
    #[schema(minimum = 0.5, maximum = 0.99)]
    pub quantile: f64,
    /// How far ahead to look, seconds; defaults to the cold start (capacity started now serves only then).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub horizon_secs: Option<u32>,
}

fn default_quantile() -> f64 {
    0.9
}

impl Default for PredictiveSpec {
    fn default() -> Self {
        Self { mode: PredictiveMode::On, quantile: default_quantile(), horizon_secs: None }
    }
}

/// HPA's `behavior`, field for field (`scaleUp`/`scaleDown`, `stabilizationWindowSeconds`, `selectPolicy`,
/// `policies: [{type: Pods|Percent, value, periodSeconds}]`), so an HPA's block can be pasted as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BehaviorSpec {
    /// Scale-up rules; HPA's defaults when absent.
    #[serde(default)]
    pub scale_up: Option<RulesSpec>,
    /// Scale-down rules; HPA's defaults when absent.
    #[serde(default)]
    pub scale_down: Option<RulesSpec>,
}

/// HPA's `HPAScalingRules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RulesSpec {
    /// Seconds; HPA's default (0 up, 300 down) when absent.
    #[serde(default)]
    #[schema(maximum = 3600)]
    pub stabilization_window_seconds: Option<u32>,
    /// `Max` (default), `Min` or `Disabled`.
    #[serde(default)]
    pub select_policy: Option<SelectPolicySpec>,
    /// Rate policies; HPA's defaults when absent.
    #[serde(default)]
    pub policies: Option<Vec<RatePolicySpec>>,
}

/// HPA's `selectPolicy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub enum SelectPolicySpec {
    /// The most permissive policy.
    Max,
    /// The least permissive policy.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// HPA's `HPAScalingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RatePolicySpec {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub kind: RateKindSpec,
    /// Amount (at least 1).
    #[schema(minimum = 1)]
    pub value: u32,
    /// Period, 1..=1800 seconds.
    #[schema(minimum = 1, maximum = 1800)]
    pub period_seconds: u32,
}

/// HPA's policy types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub enum RateKindSpec {
    /// Replicas.
    Pods,
    /// Percent.
    Percent,
}

impl BehaviorSpec {
    /// The behavior the decision engine applies, HPA's defaults filling what is absent.
    pub fn resolve(&self) -> Behavior {
        self.resolve_over(Behavior::default())
    }

    /// The behavior with `d` filling what is absent.
    pub fn resolve_over(&self, d: Behavior) -> Behavior {
        let rules = |spec: &Option<RulesSpec>, default: ScalingRules| match spec {
            None => default,
            Some(r) => ScalingRules {
                stabilization_window_secs: r.stabilization_window_seconds.unwrap_or(default.stabilization_window_secs),
                select_policy: match r.select_policy {
                    None => default.select_policy,
                    Some(SelectPolicySpec::Max) => SelectPolicy::Max,
                    Some(SelectPolicySpec::Min) => SelectPolicy::Min,
                    Some(SelectPolicySpec::Disabled) => SelectPolicy::Disabled,
                },
                policies: match &r.policies {
                    None => default.policies,
                    Some(ps) => ps
                        .iter()
                        .map(|p| RatePolicy {
                            kind: match p.kind {
                                RateKindSpec::Pods => RateKind::Pods,
                                RateKindSpec::Percent => RateKind::Percent,
                            },
                            value: p.value,
                            period_secs: p.period_seconds,
                        })
                        .collect(),
                },
            },
        };
        Behavior { scale_up: rules(&self.scale_up, d.scale_up), scale_down: rules(&self.scale_down, d.scale_down) }
    }

    fn validate(&self) -> Result<(), Invalid> {
        for (dir, r) in [("scaleUp", &self.scale_up), ("scaleDown", &self.scale_down)] {
            let Some(r) = r else { continue };
            if r.stabilization_window_seconds.is_some_and(|w| w > 3600) {
                return Err(Invalid::field(
                    format!("behavior.{dir}.stabilizationWindowSeconds"),
                    "must be at most 3600",
                ));
            }
            for (i, p) in r.policies.iter().flatten().enumerate() {
                if p.value == 0 {
                    return Err(Invalid::field(format!("behavior.{dir}.policies[{i}].value"), "must be at least 1"));
                }
                if !(1..=1800).contains(&p.period_seconds) {
                    return Err(Invalid::field(
                        format!("behavior.{dir}.policies[{i}].periodSeconds"),
                        "must be in 1..=1800",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Batching the control loop may set on the deployment's engines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebatchSpec {
    /// Smallest batch size allowed.
    #[schema(minimum = 1, maximum = 4096)]
    pub min_batch_size: u32,
    /// Largest batch size allowed.
    #[schema(minimum = 1, maximum = 4096)]
    pub max_batch_size: u32,
    /// Batching delay used, microseconds.
    #[serde(default = "default_delay")]
    #[schema(maximum = 10000000)]
    pub max_queue_delay_us: u64,
    /// Inter-token latency p95 the batch size must keep, milliseconds.
    #[schema(exclusive_minimum = 0, maximum = 600000)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema, kube::CustomResource)]
#[kube(
    group = "fleetpilot.dev",
    version = "v1",
    kind = "ScalingPolicy",
    namespaced,
    status = "ScalingPolicyStatus",
    shortname = "scalpol",
    printcolumn = r#"{"name": "Policy", "type": "string", "jsonPath": ".spec.name"}"#,
    printcolumn = r#"{"name": "Mode", "type": "string", "jsonPath": ".spec.mode"}"#,
    printcolumn = r#"{"name": "Current", "type": "integer", "jsonPath": ".status.currentReplicas"}"#,
    printcolumn = r#"{"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Accepted')].status"}"#,
    doc = "A fleetpilot scaling policy managed with kubectl/GitOps; its spec is the REST API's policy spec"
)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Unique name (`[a-z0-9-]`, 1..=63).
    #[schema(pattern = r"^[a-z0-9-]{1,63}$", min_length = 1, max_length = 63)]
    pub name: String,
    /// What is scaled.
    pub target: Target,
    /// Fewest replicas.
    #[schema(maximum = 10000)]
    pub min_replicas: u32,
    /// Most replicas.
    #[schema(minimum = 1, maximum = 10000)]
    pub max_replicas: u32,
    /// Metric held at `target_value` per replica (shorthand for one entry of `metrics`).
    #[serde(default)]
    pub metric: Option<Metric>,
    /// Target per replica of `metric`.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1000000000)]
    pub target_value: Option<f64>,
    /// Several metric targets; the largest proposal wins (as in HPA). The first drives the forecast.
    #[serde(default)]
    #[schema(max_items = 8)]
    pub metrics: Vec<MetricTarget>,
    /// Latency SLOs (feedback: a breach scales up and forbids scaling down).
    #[serde(default)]
    pub slo: Option<SloSpec>,
    /// HPA-compatible stabilization windows and rate policies.
    #[serde(default)]
    pub behavior: BehaviorSpec,
    /// Forecast use.
    #[serde(default)]
    pub predictive: PredictiveSpec,
    /// Burst handling: observed / target ratio that skips the rate limits, and how long it holds scale-down.
    #[serde(default)]
    pub panic: PanicSettings,
    /// With `min_replicas` 0: seconds without demand (and none forecast) before scaling to zero.
    #[serde(default)]
    #[schema(minimum = 60, maximum = 604800)]
    pub scale_to_zero_idle_secs: Option<u32>,
    /// HPA tolerance around the target (0.1 = 10 %).
    #[serde(default = "default_tolerance")]
    #[schema(minimum = 0, maximum = 1)]
    pub tolerance: f64,
    /// Seconds a new replica needs before it serves; the forecast looks this far ahead.
    #[serde(default = "default_cold_start")]
    #[schema(maximum = 3600)]
    pub cold_start_secs: u32,
    /// Record decisions without acting.
    #[serde(default)]
    pub dry_run: bool,
    /// `active` (default) or `shadow`: decide every tick, record, never act (see [`PolicyMode::Shadow`]).
    #[serde(default)]
    pub mode: PolicyMode,
    /// Optional rebatching.
    #[serde(default)]
    pub rebatch: Option<RebatchSpec>,
    /// Capacity sizing on the demand estimated from served work and queue growth (see
    /// `forecasting::engine::sizing`). A policy with no metric target gets it with its defaults: the default
    /// policy for LLM serving.
    #[serde(default)]
    pub capacity: Option<CapacitySpec>,
}

fn check_target(field: &str, m: Metric, v: f64) -> Result<(), Invalid> {
    if v.is_finite() && v > 0.0 && v <= m.max_target() {
        Ok(())
    } else {
        Err(Invalid::field(field, format!("must be a number in (0, {}] for {m:?}", m.max_target())))
    }
}

fn k8s_name(field: &str, v: &str) -> Result<(), Invalid> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !v.starts_with(['-', '.'])
        && !v.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(Invalid::field(field, "must be a Kubernetes name: lowercase letters, digits, '-' and '.'"))
    }
}

impl PolicySpec {
    /// Checks every constraint serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.name.is_empty()
            || self.name.len() > 63
            || !self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Invalid::field("name", "must be 1..=63 characters of lowercase letters, digits and '-'"));
        }
        k8s_name("target.name", &self.target.name)?;
        match self.target.kind {
            TargetKind::Deployment | TargetKind::Statefulset => match &self.target.namespace {
                Some(ns) => k8s_name("target.namespace", ns)?,
                None => return Err(Invalid::field("target.namespace", "is required for Kubernetes targets")),
            },
            TargetKind::AgentGroup => {
                if let Some(ns) = &self.target.namespace {
                    k8s_name("target.namespace", ns)?;
                }
                if self.target.deployment.is_none() {
                    return Err(Invalid::field(
                        "target.deployment",
                        "is required for agent_group targets (namespace/name)",
                    ));
                }
            }
        }
        if let Some(d) = &self.target.deployment {
            gpu_agent::protocol::parse_deployment(d).map_err(|e| Invalid::field("target.deployment", e))?;
        }
        if self.max_replicas > 10_000 {
            return Err(Invalid::field("max_replicas", "must be at most 10000"));
        }
        if self.min_replicas > self.max_replicas {
            return Err(Invalid::field("min_replicas", "must not exceed max_replicas"));
        }
        if self.max_replicas == 0 {
            return Err(Invalid::field("max_replicas", "must be at least 1"));
        }
        match (self.metric, self.target_value) {
            (Some(m), Some(v)) => check_target("target_value", m, v)?,
            (Some(_), None) => return Err(Invalid::field("target_value", "is required with metric")),
            (None, Some(_)) => return Err(Invalid::field("metric", "is required with target_value")),
            (None, None) => {}
        }
        if self.metrics.len() > 8 {
            return Err(Invalid::field("metrics", "at most 8 metric targets"));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            check_target(&format!("metrics[{i}].target"), m.metric, m.target)?;
        }
        if let Some(slo) = &self.slo {
            for (name, v) in [("slo.ttft_p95_ms", slo.ttft_p95_ms), ("slo.itl_p95_ms", slo.itl_p95_ms)] {
                if let Some(v) = v
                    && !(v.is_finite() && v > 0.0 && v <= 600_000.0)
                {
                    return Err(Invalid::field(name, "must be a number of milliseconds in (0, 600000]"));
                }
            }
        }
        self.behavior.validate()?;
        let q = self.predictive.quantile;
        if !(q.is_finite() && (0.5..=0.99).contains(&q)) {
            return Err(Invalid::field("predictive.quantile", "must be in 0.5..=0.99"));
        }
        if self.predictive.horizon_secs.is_some_and(|h| !(1..=86_400).contains(&h)) {
            return Err(Invalid::field("predictive.horizon_secs", "must be in 1..=86400"));
        }
        let t = self.panic.threshold;
        if !(t.is_finite() && (t == 0.0 || (1.0..=100.0).contains(&t))) {
            return Err(Invalid::field("panic.threshold", "must be 0 (off) or in 1..=100"));
        }
        if self.panic.window_secs > 3600 {
            return Err(Invalid::field("panic.window_secs", "must be at most 3600"));
        }
        match (self.min_replicas, self.scale_to_zero_idle_secs) {
            (0, None) => {
                return Err(Invalid::field(
                    "scale_to_zero_idle_secs",
                    "is required when min_replicas is 0 (seconds without demand before scaling to zero)",
                ));
            }
            (m, Some(_)) if m > 0 => {
                return Err(Invalid::field("scale_to_zero_idle_secs", "needs min_replicas 0"));
            }
            (_, Some(idle)) if !(60..=604_800).contains(&idle) => {
                return Err(Invalid::field("scale_to_zero_idle_secs", "must be in 60..=604800"));
            }
            _ => {}
        }
        if !(self.tolerance.is_finite() && (0.0..=1.0).contains(&self.tolerance)) {
            return Err(Invalid::field("tolerance", "must be in 0..=1"));
        }
        if self.cold_start_secs > 3600 {
            return Err(Invalid::field("cold_start_secs", "must be at most 3600"));
        }
        if let Some(c) = &self.capacity {
            c.validate().map_err(|(f, why)| Invalid::field(format!("capacity.{f}"), why))?;
        }
        if let Some(r) = &self.rebatch {
            if r.min_batch_size == 0 {
                return Err(Invalid::field("rebatch.min_batch_size", "must be at least 1"));
            }
            if r.min_batch_size > r.max_batch_size {
                return Err(Invalid::field("rebatch.min_batch_size", "must not exceed rebatch.max_batch_size"));
            }
            if r.max_batch_size > 4096 {
                return Err(Invalid::field("rebatch.max_batch_size", "must be at most 4096"));
            }
            if !(r.itl_slo_ms.is_finite() && r.itl_slo_ms > 0.0 && r.itl_slo_ms <= 600_000.0) {
                return Err(Invalid::field("rebatch.itl_slo_ms", "must be a number of milliseconds in (0, 600000]"));
            }
            if r.max_queue_delay_us > 10_000_000 {
                return Err(Invalid::field("rebatch.max_queue_delay_us", "must be at most 10000000"));
            }
        }
        Ok(())
    }

    /// Every metric target: `metric` + `target_value` first, then `metrics`.
    pub fn targets(&self) -> Vec<MetricTarget> {
        let mut out = Vec::with_capacity(1 + self.metrics.len());
        if let (Some(metric), Some(target)) = (self.metric, self.target_value) {
            out.push(MetricTarget { metric, target });
        }
        out.extend(self.metrics.iter().copied());
        out
    }

    /// Capacity sizing in force: as given, or the defaults when the policy has no metric target (the default
    /// policy for LLM serving).
    pub fn capacity(&self) -> Option<CapacitySpec> {
        match &self.capacity {
            Some(c) => Some(c.clone()),
            None if self.targets().is_empty() => Some(CapacitySpec::default()),
            None => None,
        }
    }

    /// The scaling behavior in force: the spec's `behavior` over HPA's defaults, or over the LLM default's
    /// (immediate scale-up; down after a 300 s window, at HPA's default rate) when capacity sizing is on.
    /// `default_down_window_secs` is the server's scale-down window for specs that set none.
    pub fn resolved_behavior(&self, default_down_window_secs: u32) -> forecasting::decision::Behavior {
        if self.capacity().is_some() {
            return self.behavior.resolve_over(EngineSpec::llm_behavior());
        }
        let mut b = self.behavior.resolve();
        if self.behavior.scale_down.as_ref().and_then(|r| r.stabilization_window_seconds).is_none() {
            b.scale_down.stabilization_window_secs = default_down_window_secs;
        }
        b
    }

    /// The engine's view of this policy with observations bucketed every `bucket_secs`.
    pub fn engine_spec(&self, bucket_secs: f64, default_down_window_secs: u32) -> EngineSpec {
        let mut slos = Vec::new();
        if let Some(slo) = &self.slo {
            if let Some(t) = slo.ttft_p95_ms {
                slos.push(SloTarget { name: "ttft_p95_ms".into(), target: t });
            }
            if let Some(t) = slo.itl_p95_ms {
                slos.push(SloTarget { name: "itl_p95_ms".into(), target: t });
            }
        }
        EngineSpec {
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            bucket_secs,
            metrics: self
                .targets()
                .iter()
                .map(|t| EngineMetric { name: t.metric.name().into(), target_per_replica: t.target })
                .collect(),
            slos,
            tolerance: self.tolerance,
            behavior: self.resolved_behavior(default_down_window_secs),
            panic: self.panic,
            scale_to_zero_idle_secs: self.scale_to_zero_idle_secs,
            cold_start_secs: self.cold_start_secs,
            predictive: self.predictive.mode,
            quantile: self.predictive.quantile,
            horizon_secs: self.predictive.horizon_secs,
            refit_secs: forecasting::engine::DEFAULT_REFIT_SECS,
            capacity: self.capacity(),
        }
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

    /// Whether the leader never acts on this policy (see [`PolicyMode::Shadow`]).
    pub fn is_shadow(&self) -> bool {
        self.mode == PolicyMode::Shadow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/crds/scalingpolicies.fleetpilot.dev.json` is the CRD derived from [`PolicySpec`] (run with
    /// `FLEETPILOT_WRITE_CRD=1` to rewrite it after changing the spec).
    #[test]
    fn the_crd_in_deploy_is_generated_from_the_spec_type() {
        use kube::CustomResourceExt as _;
        let crd = ScalingPolicy::crd();
        let mut text = serde_json::to_string_pretty(&crd).unwrap();
        text.push('\n');
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/scalingpolicies.fleetpilot.dev.json");
        if std::env::var_os("FLEETPILOT_WRITE_CRD").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is stale: run FLEETPILOT_WRITE_CRD=1 cargo test -p fleetpilot crd",
            path.display()
        );
        // What the API server requires of it: the status subresource, a structural schema with the spec's
        // required fields.
        assert_eq!(crd.spec.group, "fleetpilot.dev");
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let schema = serde_json::to_value(&v.schema).unwrap();
        let required = &schema["openAPIV3Schema"]["properties"]["spec"]["required"];
        for f in ["name", "target", "min_replicas", "max_replicas"] {
            assert!(required.as_array().unwrap().iter().any(|r| r == f), "{f}: {required}");
        }
    }

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
        assert_eq!(s.validate().unwrap_err().field, "min_replicas");
    }

    #[test]
    fn utilization_target_above_100_is_refused() {
        let s = PolicySpec { target_value: Some(120.0), ..spec() };
        assert_eq!(s.validate().unwrap_err().field, "target_value");
    }

    #[test]
    fn an_hpa_behavior_block_pastes_as_it_is_and_bad_values_name_their_field() {
        let s: PolicySpec = crate::error::parse_json(
            br#"{"name":"llama","target":{"kind":"deployment","namespace":"ml","name":"llama"},
                "min_replicas":0,"max_replicas":8,"scale_to_zero_idle_secs":900,
                "metrics":[{"metric":"queue_depth_per_replica","target":4}],"slo":{"itl_p95_ms":60},
                "predictive":{"mode":"forecast_only","quantile":0.95},"panic":{"threshold":3,"window_secs":30},
                "behavior":{"scaleDown":{"stabilizationWindowSeconds":600,
                  "policies":[{"type":"Pods","value":2,"periodSeconds":60}],"selectPolicy":"Min"}}}"#,
        )
        .unwrap();
        assert_eq!(s.validate().map_err(|e| e.error), Ok(()));
        let b = s.behavior.resolve();
        assert_eq!(b.scale_down.stabilization_window_secs, 600);
        assert_eq!(b.scale_down.select_policy, SelectPolicy::Min);
        assert_eq!(b.scale_up, Behavior::default().scale_up);
        assert_eq!(s.targets().len(), 1);
        let mut bad = s.clone();
        bad.behavior.scale_down.as_mut().unwrap().policies.as_mut().unwrap()[0].period_seconds = 0;
        assert_eq!(bad.validate().unwrap_err().field, "behavior.scaleDown.policies[0].periodSeconds");
        let bad = PolicySpec { scale_to_zero_idle_secs: None, ..s.clone() };
        assert_eq!(bad.validate().unwrap_err().field, "scale_to_zero_idle_secs");
        // Without metric targets a policy is the default policy for LLM serving: capacity sizing.
        let llm = PolicySpec { metrics: vec![], ..s.clone() };
        assert_eq!(llm.validate().map_err(|e| e.error), Ok(()));
        assert_eq!(llm.capacity(), Some(CapacitySpec::default()));
        assert_eq!(llm.resolved_behavior(300).scale_up.policies, vec![]);
        assert!(s.capacity().is_none(), "metric targets alone: HPA-style");
        let bad = PolicySpec { capacity: Some(CapacitySpec { margin: f64::NAN, ..CapacitySpec::default() }), ..s };
        assert_eq!(bad.validate().unwrap_err().field, "capacity.margin");
    }

    #[test]
    fn the_readme_example_policy_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("A scaling policy:").and_then(|i| readme[i..].find("```json").map(|j| i + j + 7));
        let block = start.and_then(|s| readme[s..].find("```").map(|e| &readme[s..s + e])).unwrap();
        let spec: PolicySpec = crate::error::parse_json(block.as_bytes()).unwrap();
        assert_eq!(spec.validate().map_err(|e| e.error), Ok(()));
        assert_eq!(spec.targets().len(), 2);
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
