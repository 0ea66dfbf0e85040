//! The alerting vocabulary, pure and synchronous: severities, labels, comparison operators, metrics a user
//! rule can watch, silence matchers, the parsed API bodies (user rules, silences, webhooks), the conditions
//! rules produce, suppression (inhibition and silences) and the view of a group incident.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

pub use crate::domain::alert::{AnomalyLevel, valid_name};
use crate::error::ApiError;

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
    pub fn validate(&self) -> Result<(), ApiError> {
        valid_name(&self.name).map_err(|e| ApiError::field("name", e))?;
        if !(self.threshold.is_finite() && self.threshold.abs() <= 1e15) {
            return Err(ApiError::field("threshold", "must be a number in -1e15..=1e15"));
        }
        if !(self.for_secs.is_finite() && (0.0..=86_400.0).contains(&self.for_secs)) {
            return Err(ApiError::field("for_secs", "must be in 0..=86400"));
        }
        for (f, v) in [("scope.deployment", &self.scope.deployment), ("scope.node", &self.scope.node)] {
            if let Some(v) = v
                && (v.is_empty() || v.chars().count() > 200)
            {
                return Err(ApiError::field(f, "must be 1-200 characters"));
            }
        }
        if self.labels.len() > 20 {
            return Err(ApiError::field("labels", "at most 20 labels"));
        }
        for (k, v) in &self.labels {
            if !valid_label_name(k) || RESERVED_LABELS.contains(&k.as_str()) {
                return Err(ApiError::field(
                    format!("labels.{k}"),
                    "label names are 1-64 letters, digits or '_', and not one of the built-in labels",
                ));
            }
            if v.chars().count() > 200 {
                return Err(ApiError::field(format!("labels.{k}"), "must be at most 200 characters"));
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
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        if self.matchers.is_empty() || self.matchers.len() > 20 {
            return Err(ApiError::field("matchers", "give 1-20 matchers"));
        }
        for (i, m) in self.matchers.iter().enumerate() {
            if !valid_label_name(&m.label) {
                return Err(ApiError::field(format!("matchers[{i}].label"), "must be 1-64 letters, digits or '_'"));
            }
            if m.value.chars().count() > 200 {
                return Err(ApiError::field(format!("matchers[{i}].value"), "must be at most 200 characters"));
            }
        }
        // A value of only `*` (or nothing) matches every instance: it selects nothing in particular.
        if !self.matchers.iter().any(|m| m.op != MatchOp::Ne && m.value.chars().any(|c| c != '*')) {
            return Err(ApiError::field(
                "matchers",
                "at least one matcher must select something (= or =~ with a value)",
            ));
        }
        if self.comment.trim().is_empty() || self.comment.chars().count() > 1000 {
            return Err(ApiError::field("comment", "must be 1-1000 characters"));
        }
        if let Some(c) = &self.created_by
            && c.chars().count() > 200
        {
            return Err(ApiError::field("created_by", "must be at most 200 characters"));
        }
        let start = self.starts_at.unwrap_or(now);
        let end = match (self.ends_at, self.duration_secs) {
            (Some(_), Some(_)) => {
                return Err(ApiError::field("duration_secs", "give ends_at or duration_secs, not both"));
            }
            (None, None) => return Err(ApiError::field("ends_at", "give ends_at or duration_secs")),
            (Some(e), None) => e,
            (None, Some(d)) => {
                if !(d.is_finite() && (0.001..=90.0 * 86_400.0).contains(&d)) {
                    return Err(ApiError::field(
                        "duration_secs",
                        "must be in 0.001..=7776000 (a millisecond at least)",
                    ));
                }
                start + chrono::Duration::milliseconds((d * 1000.0) as i64)
            }
        };
        // A window that has ended already, or an empty one, is kept as a record and silences nothing (listed
        // with `?all=true`); without `starts_at`, one whose `ends_at` has passed starts (and ends) then.
        let start = if self.starts_at.is_none() { start.min(end) } else { start };
        if end < start {
            return Err(ApiError::field("ends_at", "must not be before starts_at"));
        }
        if end - start > chrono::Duration::days(90) {
            return Err(ApiError::field("ends_at", "a silence lasts at most 90 days"));
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
    pub secret: crate::config::Secret,
}

impl WebhookSpec {
    /// Checks it; the error names the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        valid_name(&self.name).map_err(|e| ApiError::field("name", e))?;
        let ok_url = (self.url.starts_with("http://") || self.url.starts_with("https://"))
            && rfc3986_chars(&self.url)
            && self.url.chars().count() <= 2000
            && reqwest::Url::parse(&self.url).is_ok();
        if !ok_url {
            return Err(ApiError::field("url", "must be an http(s) URL"));
        }
        if !(16..=512).contains(&self.secret.expose().chars().count()) {
            return Err(ApiError::field("secret", "must be 16-512 characters"));
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

/// Builds a condition's labels: `alertname`, `severity`, `group` and the given ones.
pub fn labels(rule: &str, severity: Severity, group: &str, extra: &[(&str, &str)]) -> Labels {
    let mut l = Labels::new();
    l.insert("alertname".into(), rule.into());
    l.insert("severity".into(), severity.as_str().into());
    l.insert("group".into(), group.into());
    for (k, v) in extra {
        l.insert((*k).into(), (*v).into());
    }
    l
}

/// The rule whose firing on a node inhibits every other alert on that node.
pub const NODE_SILENT: &str = "node-silent";

/// Marks suppressed conditions: first inhibition (a silent node inhibits the other alerts carrying its
/// `node` label, whose data is stale), then silences (all of a silence's matchers match the labels).
pub fn suppress(conditions: &mut [Condition], silences: &[(Uuid, Vec<Matcher>)]) {
    let silent: HashSet<String> =
        conditions.iter().filter(|c| c.rule == NODE_SILENT).filter_map(|c| c.labels.get("node").cloned()).collect();
    for c in conditions.iter_mut() {
        c.suppressed = None;
        if c.rule != NODE_SILENT
            && let Some(node) = c.labels.get("node")
            && silent.contains(node)
        {
            c.suppressed = Some(format!("inhibited by {NODE_SILENT} on {node}"));
            continue;
        }
        if let Some((id, _)) = silences.iter().find(|(_, ms)| ms.iter().all(|m| m.matches(&c.labels))) {
            c.suppressed = Some(format!("silenced by {id}"));
        }
    }
}

/// The built-in rule of a GPU that stopped reporting while its node still reports.
pub const GPU_MISSING: &str = "gpu-missing";
/// The built-in rule of a GPU whose whole reading repeats unchanged for `alerts.stuck_reading_secs`.
pub const GPU_STUCK_READING: &str = "gpu-stuck-reading";

/// The built-in rule of open anomaly events at or above `alerts.anomaly_min_severity`.
pub const ANOMALY_HIGH: &str = "anomaly-high";
/// The built-in rule of open opportunities worth at least `alerts.opportunity_min_money_per_week`.
pub const OPPORTUNITY_VALUE: &str = "opportunity-value";

impl AnomalyLevel {
    /// The alert severity of an event at this level. A critical event is an `error` (PagerDuty's default
    /// routing makes it high urgency); a statistical warning should not wake anyone, so it stays a warning.
    pub fn alert_severity(self) -> Severity {
        match self {
            AnomalyLevel::Info => Severity::Info,
            AnomalyLevel::Warning => Severity::Warning,
            AnomalyLevel::Critical => Severity::Error,
        }
    }
}

/// Whether an opportunity worth `saving` per week holds: it starts at `threshold` and, once active, holds
/// until it falls below `threshold * resolve_fraction` (hysteresis: a saving hovering at the threshold
/// neither flaps nor re-pages). A non-finite saving never holds.
pub fn opportunity_holds(saving: f64, threshold: f64, resolve_fraction: f64, active: bool) -> bool {
    let bar = if active { threshold * resolve_fraction.clamp(0.0, 1.0) } else { threshold };
    saving.is_finite() && saving >= bar
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn fmt_num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 1.0 => format!("{x:.2}"),
        Some(x) => format!("{x:.4}"),
        None => "?".into(),
    }
}

/// One line saying why an anomaly event is anomalous, from its stored evidence: the streaming detector's
/// peak row (`source = detector`), the peer comparison (`source = peers`) or the leak verdict
/// (`source = leak`). Unknown shapes get a generic line rather than an error: the evidence is written by this server, but old rows may differ.
pub fn explain_anomaly(metric: &str, source: &str, score: f64, evidence: &Value) -> String {
    if source == "peers"
        && let Some(e) = evidence.get("evidence").filter(|e| e.is_object())
    {
        let peers = evidence.get("peers").and_then(Value::as_u64).unwrap_or(0);
        return format!(
            "{metric} departs from its {peers} peers: typical {} vs the peers' {} (offset {}, {} robust deviations over {} samples)",
            fmt_num(num(e, "value")),
            fmt_num(num(e, "peer_median")),
            fmt_num(num(e, "offset")),
            fmt_num(num(e, "mad_distance")),
            e.get("samples").and_then(Value::as_u64).unwrap_or(0),
        );
    }
    if source == "leak"
        && let Some(e) = evidence.get("evidence").filter(|e| e.is_object())
    {
        const GIB: f64 = 1_073_741_824.0;
        let n = |k: &str| num(e, k).unwrap_or(f64::NAN);
        return format!(
            "memory used grows {:.2} GiB/min faster than its peers' ({:.1} GiB over the last buckets, now {:.1} GiB): \
             full in about {:.0} min",
            n("slope_bytes_per_s") * 60.0 / GIB,
            n("rise_bytes") / GIB,
            n("mem_used_bytes") / GIB,
            n("seconds_to_full") / 60.0,
        );
    }
    let Some(peak) = evidence.get("peak").filter(|p| p.is_object()) else {
        return format!("{metric}: anomalous (score {score:.2})");
    };
    let (observed, expected) = (fmt_num(num(peak, "observed")), fmt_num(num(peak, "expected")));
    // `Component` serialises as a bare name, or `{"Seasonal": {"period": n}}`.
    let component = match peak.get("component") {
        Some(Value::String(c)) => c.clone(),
        Some(Value::Object(o)) => o.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let what = match component.as_str() {
        "OutOfRange" => format!("value {observed} beyond the range edge {expected} seen so far"),
        "Level" => format!("value {observed} held at the extremes of the recent window (median {expected})"),
        "Seasonal" => {
            let period = peak.pointer("/component/Seasonal/period").and_then(Value::as_u64).unwrap_or(0);
            format!("value {observed} vs {expected} at the same time on a recent day (period {period} buckets)")
        }
        "Novelty" => format!("value {observed} continues a burst of never-seen transitions"),
        _ => format!("value {observed}"),
    };
    let tail = num(peak, "tail").map_or(String::new(), |t| format!(", tail probability {t:.1e}"));
    format!("{metric}: {what} (peak score {score:.2}{tail})")
}

/// What a group incident says: computed from its paging members.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentView {
    /// The group.
    pub group: String,
    /// Most severe member's severity.
    pub severity: Severity,
    /// Most severe member's summary, plus how many more.
    pub summary: String,
    /// Node or deployment.
    pub source: String,
    /// The component, or how many.
    pub component: String,
    /// The rules involved (PagerDuty `class`).
    pub class: String,
    /// Members with their evidence.
    pub details: Value,
}

/// The view of a group incident from its members (most severe first). None without members.
pub fn incident_view(group: &str, members: &[&Condition], dashboard_url: &str) -> Option<IncidentView> {
    let mut sorted: Vec<&Condition> = members.to_vec();
    sorted.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
    let top = *sorted.first()?;
    let mut summary = top.summary.clone();
    if sorted.len() > 1 {
        summary.push_str(&format!(" (+{} more in {group})", sorted.len() - 1));
    }
    // PagerDuty truncates summaries at 1024 characters; cut on a character boundary first.
    if summary.len() > 1000 {
        summary = summary.chars().take(1000).collect();
    }
    let components: BTreeSet<&str> = sorted.iter().map(|c| c.component.as_str()).collect();
    let component =
        if components.len() == 1 { top.component.clone() } else { format!("{} components", components.len()) };
    let rules: BTreeSet<&str> = sorted.iter().map(|c| c.rule.as_str()).collect();
    // Keep the evidence bounded: PagerDuty accepts at most 512 KB per event.
    let shown: Vec<Value> = sorted
        .iter()
        .take(50)
        .map(|c| {
            json!({ "rule": c.rule, "severity": c.severity, "summary": c.summary, "labels": c.labels, "evidence": c.details })
        })
        .collect();
    Some(IncidentView {
        group: group.to_string(),
        severity: top.severity,
        summary,
        source: top.source.clone(),
        component,
        class: rules.into_iter().collect::<Vec<_>>().join(","),
        details: json!({
            "group": group,
            "alerts": sorted.len(),
            "members": shown,
            "dashboard": dashboard_url,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(rule: &str, node: &str, sev: Severity) -> Condition {
        let group = format!("node/{node}");
        Condition {
            fingerprint: format!("{rule}/{node}"),
            rule: rule.into(),
            rule_id: None,
            severity: sev,
            labels: labels(rule, sev, &group, &[("node", node)]),
            group,
            source: node.into(),
            component: "gpu 0".into(),
            summary: format!("{rule} on {node}"),
            details: json!({}),
            for_secs: 0.0,
            suppressed: None,
        }
    }

    #[test]
    fn globs_match_like_shells_do() {
        assert!(glob("gpu-*", "gpu-7"));
        assert!(glob("*-7", "gpu-7"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c"));
        assert!(glob("*", ""));
        assert!(!glob("node", "node-a"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn a_silent_node_inhibits_its_other_alerts_and_silences_match_all_matchers() {
        let mut c = vec![
            cond(NODE_SILENT, "a", Severity::Critical),
            cond("gpu-temperature", "a", Severity::Error),
            cond("gpu-temperature", "b", Severity::Error),
            cond("gpu-temperature", "c", Severity::Error),
        ];
        let sid = Uuid::nil();
        let m = vec![
            Matcher { label: "node".into(), value: "b".into(), op: MatchOp::Eq },
            Matcher { label: "alertname".into(), value: "gpu-*".into(), op: MatchOp::Glob },
        ];
        suppress(&mut c, &[(sid, m)]);
        assert_eq!(c[0].suppressed, None);
        assert!(c[1].suppressed.as_deref().unwrap_or("").starts_with("inhibited"));
        assert!(c[2].suppressed.as_deref().unwrap_or("").starts_with("silenced"));
        assert_eq!(c[3].suppressed, None);
    }

    #[test]
    fn an_incident_takes_its_most_severe_member() {
        let a = cond("gpu-temperature", "a", Severity::Warning);
        let b = cond(NODE_SILENT, "a", Severity::Critical);
        let v = incident_view("node/a", &[&a, &b], "http://x/").unwrap();
        assert_eq!(v.severity, Severity::Critical);
        assert!(v.summary.starts_with("node-silent on a (+1 more"));
        assert_eq!(v.class, "gpu-temperature,node-silent");
        assert_eq!(v.details["alerts"], 2);
    }

    #[test]
    fn anomaly_levels_select_themselves_and_above_and_map_to_alert_severities() {
        assert_eq!(AnomalyLevel::Critical.at_or_above(), vec!["critical"]);
        assert_eq!(AnomalyLevel::Warning.at_or_above(), vec!["warning", "critical"]);
        assert_eq!(AnomalyLevel::Info.at_or_above().len(), 3);
        assert_eq!(AnomalyLevel::parse("warning"), Some(AnomalyLevel::Warning));
        assert_eq!(AnomalyLevel::parse("high"), None);
        assert_eq!(AnomalyLevel::Critical.alert_severity(), Severity::Error);
        assert!(AnomalyLevel::Warning.alert_severity() < Severity::Error, "a warning event does not page high");
        let parsed: AnomalyLevel = serde_json::from_value(json!("critical")).unwrap();
        assert_eq!(parsed, AnomalyLevel::Critical);
    }

    #[test]
    fn an_opportunity_starts_at_the_threshold_and_resolves_below_the_hysteresis_band() {
        // Inactive: needs the full threshold.
        assert!(opportunity_holds(500.0, 500.0, 0.9, false));
        assert!(!opportunity_holds(499.0, 500.0, 0.9, false));
        // Active: holds down to 90 %, resolves below.
        assert!(opportunity_holds(460.0, 500.0, 0.9, true));
        assert!(opportunity_holds(450.0, 500.0, 0.9, true));
        assert!(!opportunity_holds(449.0, 500.0, 0.9, true));
        // A fraction out of range is clamped; non-finite savings never hold.
        assert!(!opportunity_holds(400.0, 500.0, 7.0, true));
        assert!(!opportunity_holds(f64::NAN, 500.0, 0.9, true));
        assert!(!opportunity_holds(f64::INFINITY, 500.0, 0.9, false));
    }

    #[test]
    fn anomaly_explanations_read_the_detector_and_peer_evidence() {
        let detector = json!({"bucket_secs": 60, "rows": 3, "peak": {"timestamp_secs": 1, "score": 0.95,
            "component": "OutOfRange", "observed": 97.0, "expected": 60.0, "tail": 1.2e-5}});
        let e = explain_anomaly("util_pct", "detector", 0.95, &detector);
        assert_eq!(
            e,
            "util_pct: value 97.00 beyond the range edge 60.00 seen so far (peak score 0.95, tail probability 1.2e-5)"
        );
        let seasonal =
            json!({"peak": {"component": {"Seasonal": {"period": 1440}}, "observed": 3.0, "expected": null}});
        let e = explain_anomaly("queue_depth", "detector", 0.9, &seasonal);
        assert!(e.contains("vs ? at the same time") && e.contains("period 1440"), "{e}");
        let peers = json!({"peers": 3, "evidence": {"value": 20.0, "peer_median": 75.0, "offset": -55.0,
            "mad_distance": -6.2, "samples": 60}});
        let e = explain_anomaly("peer:util_pct", "peers", 0.9, &peers);
        assert!(e.starts_with("peer:util_pct departs from its 3 peers: typical 20.00 vs the peers' 75.00"), "{e}");
        assert_eq!(explain_anomaly("temp_c", "detector", 0.5, &json!(null)), "temp_c: anomalous (score 0.50)");
    }

    #[test]
    fn operators_compare_as_written() {
        assert!(Op::Gt.holds(2.0, 1.0) && !Op::Gt.holds(1.0, 1.0));
        assert!(Op::Ge.holds(1.0, 1.0) && Op::Le.holds(1.0, 1.0));
        assert!(Op::Lt.holds(0.5, 1.0) && Op::Ne.holds(0.5, 1.0) && Op::Eq.holds(1.0, 1.0));
    }

    #[test]
    fn a_leak_is_explained_with_its_slope_and_time_to_full() {
        let gib = 1_073_741_824.0;
        let ev = json!({"evidence": {"slope_bytes_per_s": 0.5 * gib / 60.0, "rise_bytes": 4.5 * gib,
                                     "mem_used_bytes": 70.0 * gib, "seconds_to_full": 1200.0}});
        assert_eq!(
            explain_anomaly("mem_used_bytes", "leak", 0.8, &ev),
            "memory used grows 0.50 GiB/min faster than its peers' (4.5 GiB over the last buckets, now 70.0 GiB): full in about 20 min"
        );
    }
}
