//! Alerting's plain vocabulary, below the configuration, the store and the rules that use it: severities,
//! labels, comparison operators, the metrics a user rule can watch, silence matchers, the parsed API bodies
//! (user rules, silences, webhooks, each validated at the edge) and the conditions rules produce.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::Invalid;

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

/// Labels of an alert instance (sorted, so fingerprints and payloads are stable).
pub type Labels = BTreeMap<String, String>;

/// PagerDuty's severities, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs a look.
    Warning,
    /// Something is broken.
    Error,
    /// Page now.
    Critical,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// A comparison of a metric value with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Op {
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
    /// The symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// A stored metric a user rule can watch: per GPU (latest reading) or per deployment (latest reading of
/// each replica, aggregated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AlertMetric)]
pub enum Metric {
    /// GPU utilisation, percent.
    UtilPct,
    /// GPU memory used, bytes.
    MemUsedBytes,
    /// GPU power draw, watts.
    PowerW,
    /// GPU temperature, Celsius.
    TempC,
    /// SM clock, MHz.
    SmClockMhz,
    /// Requests waiting in a replica's queue.
    QueueDepth,
    /// Requests running in a replica.
    Running,
    /// KV-cache use, percent.
    KvCachePct,
    /// Time to first token, p95, seconds.
    TtftP95S,
    /// Inter-token latency, p95, seconds.
    ItlP95S,
    /// Requests per second.
    RequestsPerS,
    /// Generated tokens per second.
    GenerationTokensPerS,
    /// Mean batch size.
    BatchSizeMean,
}

impl Metric {
    /// The column of `gpu_latest` or `serving_latest` holding it (a fixed whitelist: safe to splice).
    pub fn column(self) -> &'static str {
        match self {
            Metric::UtilPct => "util_pct",
            Metric::MemUsedBytes => "mem_used_bytes",
            Metric::PowerW => "power_w",
            Metric::TempC => "temp_c",
            Metric::SmClockMhz => "sm_clock_mhz",
            Metric::QueueDepth => "queue_depth",
            Metric::Running => "running",
            Metric::KvCachePct => "kv_cache_pct",
            Metric::TtftP95S => "ttft_p95_s",
            Metric::ItlP95S => "itl_p95_s",
            Metric::RequestsPerS => "requests_per_s",
            Metric::GenerationTokensPerS => "generation_tokens_per_s",
            Metric::BatchSizeMean => "batch_size_mean",
        }
    }
    /// Whether it is a per-GPU metric (else per deployment).
    pub fn is_gpu(self) -> bool {
        matches!(self, Metric::UtilPct | Metric::MemUsedBytes | Metric::PowerW | Metric::TempC | Metric::SmClockMhz)
    }
}

/// How replicas' values of a deployment metric are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// The worst (highest) replica.
    #[default]
    Max,
    /// The lowest replica.
    Min,
    /// The mean over replicas.
    Avg,
}

impl Aggregate {
    /// The SQL aggregate function (a fixed whitelist).
    pub fn sql(self) -> &'static str {
        match self {
            Aggregate::Max => "max",
            Aggregate::Min => "min",
            Aggregate::Avg => "avg",
        }
    }
}

/// What a user rule looks at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Scope {
    /// Only this deployment (serving metrics: the deployment; GPU metrics: nodes serving it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200)]
    pub deployment: Option<String>,
    /// Only this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200)]
    pub node: Option<String>,
}

fn yes() -> bool {
    true
}

/// A user rule: `metric op threshold` holding for `for_secs` fires an alert of `severity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name (letters, digits, `.`, `_`, `-`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
    /// The metric watched.
    pub metric: Metric,
    /// Comparison.
    pub op: Op,
    /// Threshold, in the metric's unit.
    #[schema(minimum = -1e15, maximum = 1e15)]
    pub threshold: f64,
    /// Seconds the condition must hold before the alert fires (pending meanwhile).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86400)]
    pub for_secs: f64,
    /// Severity of the alert.
    pub severity: Severity,
    /// Which deployment / node.
    #[serde(default)]
    pub scope: Scope,
    /// How a deployment's replicas are combined (serving metrics).
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Extra labels (for silences and receivers).
    #[serde(default)]
    pub labels: Labels,
    /// Whether the rule is evaluated.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn valid_label_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Labels every instance gets from its rule; user labels may not override them.
const RESERVED_LABELS: [&str; 7] = ["alertname", "severity", "group", "node", "gpu", "deployment", "rule_id"];

impl RuleSpec {
    /// Range and shape checks serde cannot express; the error names the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        valid_name(&self.name).map_err(|e| Invalid::field("name", e))?;
        if !(self.threshold.is_finite() && self.threshold.abs() <= 1e15) {
            return Err(Invalid::field("threshold", "must be a number in -1e15..=1e15"));
        }
        if !(self.for_secs.is_finite() && (0.0..=86_400.0).contains(&self.for_secs)) {
            return Err(Invalid::field("for_secs", "must be in 0..=86400"));
        }
        for (f, v) in [("scope.deployment", &self.scope.deployment), ("scope.node", &self.scope.node)] {
            if let Some(v) = v
                && (v.is_empty() || v.chars().count() > 200)
            {
                return Err(Invalid::field(f, "must be 1-200 characters"));
            }
        }
        if self.labels.len() > 20 {
            return Err(Invalid::field("labels", "at most 20 labels"));
        }
        for (k, v) in &self.labels {
            if !valid_label_name(k) || RESERVED_LABELS.contains(&k.as_str()) {
                return Err(Invalid::field(
                    format!("labels.{k}"),
                    "label names are 1-64 letters, digits or '_', and not one of the built-in labels",
                ));
            }
            if v.chars().count() > 200 {
                return Err(Invalid::field(format!("labels.{k}"), "must be at most 200 characters"));
            }
        }
        Ok(())
    }
}

/// How a silence matcher compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum MatchOp {
    /// Equal.
    #[default]
    #[serde(rename = "=")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
    /// Glob: `*` matches any run of characters.
    #[serde(rename = "=~")]
    Glob,
}

/// One condition of a silence on an instance's labels (a missing label reads as "").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Label name.
    #[schema(pattern = r"^[A-Za-z0-9_]{1,64}$", min_length = 1, max_length = 64)]
    pub label: String,
    /// Value (a glob with `=~`).
    #[schema(max_length = 200)]
    pub value: String,
    /// Comparison, `=` by default.
    #[serde(default)]
    pub op: MatchOp,
}

impl Matcher {
    /// Whether `labels` satisfy it.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.label).map(String::as_str).unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Glob => glob(&self.value, v),
        }
    }
}

/// `*`-glob matching (no other metacharacters).
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// A silence as created through the API.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceSpec {
    /// All must match for an instance to be silenced; at least one must select something (`=` or `=~` with
    /// a value other than `*`).
    #[schema(min_items = 1, max_items = 20)]
    pub matchers: Vec<Matcher>,
    /// Why (shown to whoever looks later).
    #[schema(
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$",
        min_length = 1,
        max_length = 1000
    )]
    pub comment: String,
    /// Who.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub created_by: Option<String>,
    /// Start (default: now, or `ends_at` when that has passed).
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// End; or give `duration_secs`.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Length from the start, seconds; or give `ends_at`.
    #[serde(default)]
    #[schema(minimum = 0.001, maximum = 7776000)]
    pub duration_secs: Option<f64>,
}

impl SilenceSpec {
    /// Checks the silence and returns its `[starts_at, ends_at)`; the error names the field.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), Invalid> {
        if self.matchers.is_empty() || self.matchers.len() > 20 {
            return Err(Invalid::field("matchers", "give 1-20 matchers"));
        }
        for (i, m) in self.matchers.iter().enumerate() {
            if !valid_label_name(&m.label) {
                return Err(Invalid::field(format!("matchers[{i}].label"), "must be 1-64 letters, digits or '_'"));
            }
            if m.value.chars().count() > 200 {
                return Err(Invalid::field(format!("matchers[{i}].value"), "must be at most 200 characters"));
            }
        }
        // A value of only `*` (or nothing) matches every instance: it selects nothing in particular.
        if !self.matchers.iter().any(|m| m.op != MatchOp::Ne && m.value.chars().any(|c| c != '*')) {
            return Err(Invalid::field(
                "matchers",
                "at least one matcher must select something (= or =~ with a value)",
            ));
        }
        if self.comment.trim().is_empty() || self.comment.chars().count() > 1000 {
            return Err(Invalid::field("comment", "must be 1-1000 characters"));
        }
        if let Some(c) = &self.created_by
            && c.chars().count() > 200
        {
            return Err(Invalid::field("created_by", "must be at most 200 characters"));
        }
        let start = self.starts_at.unwrap_or(now);
        let end = match (self.ends_at, self.duration_secs) {
            (Some(_), Some(_)) => {
                return Err(Invalid::field("duration_secs", "give ends_at or duration_secs, not both"));
            }
            (None, None) => return Err(Invalid::field("ends_at", "give ends_at or duration_secs")),
            (Some(e), None) => e,
            (None, Some(d)) => {
                if !(d.is_finite() && (0.001..=90.0 * 86_400.0).contains(&d)) {
                    return Err(Invalid::field("duration_secs", "must be in 0.001..=7776000 (a millisecond at least)"));
                }
                start + chrono::Duration::milliseconds((d * 1000.0) as i64)
            }
        };
        // A window that has ended already, or an empty one, is kept as a record and silences nothing (listed
        // with `?all=true`); without `starts_at`, one whose `ends_at` has passed starts (and ends) then.
        let start = if self.starts_at.is_none() { start.min(end) } else { start };
        if end < start {
            return Err(Invalid::field("ends_at", "must not be before starts_at"));
        }
        if end - start > chrono::Duration::days(90) {
            return Err(Invalid::field("ends_at", "a silence lasts at most 90 days"));
        }
        Ok((start, end))
    }
}

/// Whether `s` uses only the characters of RFC 3986 with well-formed percent escapes (the document's
/// `format: uri`; the URL parser alone would also take spaces and non-ASCII text).
fn rfc3986_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().all(|(i, &c)| match c {
        b'%' => b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
        c => c.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&c),
    })
}

/// A webhook receiver as created through the API.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Unique name (letters, digits, `.`, `_`, `-`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
    /// URL events are POSTed to (http or https; its host must not be internal unless
    /// `alerts.webhook_allow_private`).
    #[schema(pattern = r"^https?://[^\x00]*$", max_length = 2000)]
    pub url: String,
    /// HMAC-SHA256 signing secret (never returned or printed).
    #[schema(value_type = String, min_length = 16, max_length = 512, write_only)]
    pub secret: super::secret::Secret,
}

impl WebhookSpec {
    /// Checks it; the error names the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        valid_name(&self.name).map_err(|e| Invalid::field("name", e))?;
        let ok_url = (self.url.starts_with("http://") || self.url.starts_with("https://"))
            && rfc3986_chars(&self.url)
            && self.url.chars().count() <= 2000
            && reqwest::Url::parse(&self.url).is_ok();
        if !ok_url {
            return Err(Invalid::field("url", "must be an http(s) URL"));
        }
        if !(16..=512).contains(&self.secret.expose().chars().count()) {
            return Err(Invalid::field("secret", "must be 16-512 characters"));
        }
        Ok(())
    }
}

/// A condition that holds now, as a rule produced it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    /// Stable identity: rule plus what it is about.
    pub fingerprint: String,
    /// Rule name.
    pub rule: String,
    /// The user rule's id (None for built-in rules).
    pub rule_id: Option<Uuid>,
    /// Severity.
    pub severity: Severity,
    /// Group: `node/<id>` or `deployment/<name>` (one incident per group).
    pub group: String,
    /// Labels (silences match on them).
    pub labels: Labels,
    /// Affected system (node or deployment).
    pub source: String,
    /// Affected component (e.g. `gpu 3`).
    pub component: String,
    /// One line for a person.
    pub summary: String,
    /// Evidence.
    pub details: Value,
    /// Seconds it must hold before it fires.
    pub for_secs: f64,
    /// Why it does not page, if it does not.
    pub suppressed: Option<String>,
}
