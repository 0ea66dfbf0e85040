//! Alert rules and their lifecycle.
//!
//! Each evaluation computes the conditions that hold now (built-in rules plus user rules), marks the
//! suppressed ones (a silent node inhibits its other alerts; silences match labels), and moves each
//! condition's instance pending -> firing (after the rule's for-duration) -> resolved. Firing instances are
//! grouped by node or deployment: a group's incident opens once its first paging member has fired for
//! `group_wait_secs`, is triggered again every `repeat_interval_secs` while it is open, and resolves when
//! none of its members fires any more. Each incident change writes its deliveries, one per receiver
//! (PagerDuty, webhooks), into the outbox in the same transaction (see [`outbox`]).
//!
//! An alert that joins a group whose incident is already open pages no more: the incident's stored members
//! (`GET /api/v1/alerts`) are refreshed when their number changes, and the next repeat trigger carries them.
//!
//! Silences mute: a silenced (or inhibited) instance opens no incident and causes no repeat, but a group
//! whose members all stop firing still resolves, so nothing stays open at the receiver.
//!
//! Two built-in rules read what the opportunity refresher stores: `anomaly-high` (an open anomaly event at
//! or above `alerts.anomaly_min_severity`, grouped like the other rules by node or deployment, so a silent
//! node inhibits it) and `opportunity-value` (an open opportunity saving at least
//! `alerts.opportunity_min_money_per_week`; severity `info`, in its own `opportunity/...` group so that a
//! long-open cost incident never absorbs a later page about the same node).
pub mod outbox;
pub mod rules;
pub mod silence_from;
pub mod targets;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use crate::config::AlertSettings;
use crate::db;
use crate::db::alerts::{IncidentFields, InstanceChange, Outgoing};
use rules::{Condition, IncidentView, Severity, labels};

/// Hours after which a GPU that stopped reporting no longer fires `gpu-missing` (it was removed for good).
pub const MISSING_GPU_FORGET_HOURS: i64 = 24;

/// NVML throttle reasons that mean heat: software (0x20) and hardware (0x40) thermal slowdown.
pub const THERMAL_THROTTLE_MASK: i64 = 0x20 | 0x40;

/// What one evaluation changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalOutcome {
    /// Instances that started firing (fingerprints).
    pub fired: Vec<String>,
    /// Instances that stopped firing (fingerprints).
    pub resolved: Vec<String>,
    /// Incidents opened (dedup keys).
    pub opened: Vec<String>,
    /// Incidents triggered again (dedup keys).
    pub repeated: Vec<String>,
    /// Incidents resolved (dedup keys).
    pub closed: Vec<String>,
}

/// Where deliveries go, as far as the engine knows at start (API webhooks are read at each change).
#[derive(Debug, Clone, Default)]
pub struct Receivers {
    /// A PagerDuty routing key is configured.
    pub pagerduty: bool,
    /// Names of the webhooks in the settings.
    pub webhooks: Vec<String>,
}

/// Evaluates the rules and keeps instances, incidents and the outbox in step.
pub struct AlertEngine {
    pool: PgPool,
    settings: AlertSettings,
    receivers: Receivers,
    public_url: String,
    wake: Arc<Notify>,
}

fn node_group(node: &str) -> String {
    format!("node/{node}")
}

fn deployment_group(d: &str) -> String {
    format!("deployment/{d}")
}

/// A built-in GPU rule's condition: `(rule, severity, for_secs)`, grouped by node.
fn gpu_condition(
    (rule, severity, for_secs): (&str, Severity, f64),
    node: &str,
    gpu: i32,
    deployment: Option<&str>,
    summary: String,
    details: serde_json::Value,
) -> Condition {
    let group = node_group(node);
    let gpu_s = gpu.to_string();
    let mut extra = vec![("node", node), ("gpu", gpu_s.as_str())];
    if let Some(d) = deployment {
        extra.push(("deployment", d));
    }
    Condition {
        fingerprint: format!("{rule}/{node}/{gpu}"),
        rule: rule.into(),
        rule_id: None,
        severity,
        labels: labels(rule, severity, &group, &extra),
        group,
        source: node.to_string(),
        component: format!("gpu {gpu}"),
        summary,
        details,
        for_secs,
        suppressed: None,
    }
}

/// A path segment with everything but unreserved characters percent-encoded (node and deployment names
/// come from agents).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The dashboard page of what an alert is about: the GPU, else the node, else the deployment
/// (`<namespace>/<name>`), else the overview.
fn dashboard_link(public_url: &str, node: Option<&str>, gpu: Option<i32>, deployment: Option<&str>) -> String {
    let base = public_url.trim_end_matches('/');
    match (node.filter(|n| !n.is_empty()), gpu, deployment.filter(|d| !d.is_empty())) {
        (Some(n), Some(g), _) => format!("{base}/nodes/{}/gpus/{g}", segment(n)),
        (Some(n), None, _) => format!("{base}/nodes/{}", segment(n)),
        (None, _, Some(d)) => {
            let path: Vec<String> = d.splitn(2, '/').map(segment).collect();
            format!("{base}/deployments/{}", path.join("/"))
        }
        (None, _, None) => format!("{base}/"),
    }
}

/// The `node`, `gpu` and `deployment` labels of what an alert is about, those that are known.
fn place_labels<'a>(
    node: Option<&'a str>,
    gpu: Option<&'a str>,
    deployment: Option<&'a str>,
) -> impl Iterator<Item = (&'static str, &'a str)> {
    [("node", node), ("gpu", gpu), ("deployment", deployment)].into_iter().filter_map(|(k, v)| Some((k, v?)))
}

/// The GPU index of an anomaly target `gpu:<node>:<index>`.
fn target_gpu(target: &str) -> Option<i32> {
    target.strip_prefix("gpu:")?.rsplit_once(':')?.1.parse().ok()
}

fn secs(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1000.0) as i64)
}

impl AlertEngine {
    /// An engine; `wake` is notified when deliveries are queued (the outbox worker waits on it).
    pub fn new(
        pool: PgPool,
        settings: AlertSettings,
        receivers: Receivers,
        public_url: String,
        wake: Arc<Notify>,
    ) -> Self {
        Self { pool, settings, receivers, public_url, wake }
    }

    /// The conditions that hold at `now`, unsuppressed.
    pub async fn conditions(&self, now: DateTime<Utc>) -> Result<Vec<Condition>, sqlx::Error> {
        let s = &self.settings;
        let fresh = now - chrono::Duration::seconds(i64::from(s.node_silent_secs));
        let mut out = Vec::new();

        for (node, last_seen) in db::alerts::silent_nodes(&self.pool, fresh).await? {
            let group = node_group(&node);
            let sev = Severity::Critical;
            out.push(Condition {
                fingerprint: format!("{}/{node}", rules::NODE_SILENT),
                rule: rules::NODE_SILENT.into(),
                rule_id: None,
                severity: sev,
                labels: labels(rules::NODE_SILENT, sev, &group, &[("node", node.as_str())]),
                group,
                source: node.clone(),
                component: "gpu-agent".into(),
                summary: format!("Node {node} has sent no data for over {}s", s.node_silent_secs),
                details: json!({ "node": node, "last_seen": last_seen, "silent_after_secs": s.node_silent_secs }),
                for_secs: 0.0,
                suppressed: None,
            });
        }

        for (node, gpu, uuid, temp, deployment) in db::alerts::hot_gpus(&self.pool, s.gpu_temp_c, fresh).await? {
            out.push(gpu_condition(
                ("gpu-temperature", Severity::Error, 0.0),
                &node,
                gpu,
                deployment.as_deref(),
                format!("GPU {gpu} on {node} is at {temp:.0} °C (threshold {:.0} °C)", s.gpu_temp_c),
                json!({ "node": node, "gpu_index": gpu, "uuid": uuid, "temp_c": temp, "threshold_c": s.gpu_temp_c }),
            ));
        }

        for (node, gpu, uuid, reasons, temp) in
            db::alerts::throttled_gpus(&self.pool, THERMAL_THROTTLE_MASK, fresh).await?
        {
            out.push(gpu_condition(
                ("gpu-thermal-throttling", Severity::Warning, s.throttle_for_secs),
                &node,
                gpu,
                None,
                match temp {
                    Some(t) => format!("GPU {gpu} on {node} is thermally throttled ({t:.0} °C)"),
                    None => format!("GPU {gpu} on {node} is thermally throttled (temperature unknown)"),
                },
                json!({ "node": node, "gpu_index": gpu, "uuid": uuid, "throttle_reasons": format!("{reasons:#x}"), "temp_c": temp }),
            ));
        }

        let xid_since = now - secs(s.xid_window_secs);
        for (node, gpu, uuid, xid, changed_at) in db::alerts::recent_xids(&self.pool, xid_since, fresh).await? {
            out.push(gpu_condition(
                ("gpu-xid-error", Severity::Critical, 0.0),
                &node,
                gpu,
                None,
                format!("GPU {gpu} on {node} reported XID {xid}"),
                json!({ "node": node, "gpu_index": gpu, "uuid": uuid, "xid": xid, "seen_at": changed_at, "window_secs": s.xid_window_secs }),
            ));
        }

        // A GPU gone from a node that still reports: fell off the bus, driver lost it, or its exporter died.
        let forget = now - chrono::Duration::hours(MISSING_GPU_FORGET_HOURS);
        for (node, gpu, uuid, last, deployment) in db::alerts::missing_gpus(&self.pool, fresh, forget).await? {
            out.push(gpu_condition(
                (rules::GPU_MISSING, Severity::Critical, 0.0),
                &node,
                gpu,
                deployment.as_deref(),
                format!("GPU {gpu} on {node} stopped reporting (last reading {last}) while the node still reports"),
                json!({ "node": node, "gpu_index": gpu, "uuid": uuid, "last_reading": last, "silent_after_secs": s.node_silent_secs }),
            ));
        }

        if s.stuck_reading_secs > 0.0 {
            for (node, gpu, uuid, since, deployment) in
                db::alerts::stuck_gpus(&self.pool, fresh, s.stuck_reading_secs).await?
            {
                out.push(gpu_condition(
                    (rules::GPU_STUCK_READING, Severity::Warning, 0.0),
                    &node,
                    gpu,
                    deployment.as_deref(),
                    format!("GPU {gpu} on {node} repeats the same reading since {since}: its telemetry is stuck"),
                    json!({ "node": node, "gpu_index": gpu, "uuid": uuid, "unchanged_since": since, "after_secs": s.stuck_reading_secs }),
                ));
            }
        }

        for (rule, metric, target, what) in [
            ("slo-ttft", rules::Metric::TtftP95S, s.slo_ttft_p95_s, "TTFT p95"),
            ("slo-itl", rules::Metric::ItlP95S, s.slo_itl_p95_s, "inter-token latency p95"),
        ] {
            if target <= 0.0 {
                continue;
            }
            for (d, value, replicas) in
                db::alerts::serving_metric(&self.pool, metric, rules::Aggregate::Max, fresh, None, None).await?
            {
                if value <= target {
                    continue;
                }
                let (group, sev) = (deployment_group(&d), Severity::Error);
                out.push(Condition {
                    fingerprint: format!("{rule}/{d}"),
                    rule: rule.into(),
                    rule_id: None,
                    severity: sev,
                    labels: labels(rule, sev, &group, &[("deployment", d.as_str())]),
                    group,
                    source: d.clone(),
                    component: what.into(),
                    summary: format!("{d}: {what} is {:.0} ms, above the {:.0} ms target", value * 1e3, target * 1e3),
                    details: json!({ "deployment": d, "metric": metric.column(), "worst_replica_s": value, "target_s": target, "replicas": replicas, "for_secs": s.slo_for_secs }),
                    for_secs: s.slo_for_secs,
                    suppressed: None,
                });
            }
        }

        for (policy, target, error, at) in
            db::alerts::failed_scaling(&self.pool, now - chrono::Duration::hours(1)).await?
        {
            let rule = "scaling-failed";
            let group = match target.strip_prefix("deployment ") {
                Some(d) => deployment_group(d),
                None => format!("policy/{policy}"),
            };
            let sev = Severity::Error;
            out.push(Condition {
                fingerprint: format!("{rule}/{policy}"),
                rule: rule.into(),
                rule_id: None,
                severity: sev,
                labels: labels(rule, sev, &group, &[("policy", policy.as_str())]),
                group,
                source: target.clone(),
                component: "autoscaler".into(),
                summary: format!(
                    "Scaling {target} (policy {policy}) failed: {}",
                    error.chars().take(300).collect::<String>()
                ),
                details: json!({ "policy": policy, "target": target, "error": error, "decided_at": at }),
                for_secs: 0.0,
                suppressed: None,
            });
        }

        if s.anomaly_enabled {
            self.anomaly_conditions(&mut out).await?;
        }
        if s.opportunity_enabled {
            self.opportunity_conditions(&mut out).await?;
        }
        self.user_conditions(fresh, &mut out).await?;
        Ok(out)
    }

    /// `anomaly-high`: one condition per open anomaly event at or above the configured severity, grouped by
    /// its node (GPU series, peer outliers) or deployment (serving series).
    async fn anomaly_conditions(&self, out: &mut Vec<Condition>) -> Result<(), sqlx::Error> {
        let rule = rules::ANOMALY_HIGH;
        let levels = self.settings.anomaly_min_severity.at_or_above();
        for a in db::alerts::open_anomalies(&self.pool, &levels).await? {
            let Some(level) = rules::AnomalyLevel::parse(&a.severity) else { continue };
            let sev = level.alert_severity();
            let gpu = target_gpu(&a.target);
            let (node, dep) = (
                Some(a.node_id.as_str()).filter(|n| !n.is_empty()),
                Some(a.deployment.as_str()).filter(|d| !d.is_empty()),
            );
            let (group, source) = match (node, dep) {
                (Some(n), _) => (node_group(n), n.to_string()),
                (None, Some(d)) => (deployment_group(d), d.to_string()),
                (None, None) => (format!("anomaly/{}", a.target), a.target.clone()),
            };
            let gpu_s = gpu.map(|g| g.to_string());
            let mut extra = vec![("metric", a.metric.as_str()), ("anomaly_source", a.source.as_str())];
            extra.extend(place_labels(node, gpu_s.as_deref(), dep));
            let explanation = rules::explain_anomaly(&a.metric, &a.source, a.score, &a.evidence);
            let what = match gpu {
                Some(g) => format!("GPU {g} on {}", node.unwrap_or_default()),
                None => source.clone(),
            };
            out.push(Condition {
                fingerprint: format!("{rule}/{}/{}/{}", a.target, a.metric, a.id),
                rule: rule.into(),
                rule_id: None,
                severity: sev,
                labels: labels(rule, sev, &group, &extra),
                group,
                source,
                component: gpu.map_or_else(|| a.metric.clone(), |g| format!("gpu {g}")),
                summary: format!("{} anomaly on {what}: {explanation}", a.severity),
                details: json!({
                    "anomaly_id": a.id, "series": { "target": a.target, "metric": a.metric },
                    "node": a.node_id, "deployment": a.deployment, "source": a.source,
                    "anomaly_severity": a.severity, "score": a.score, "started_at": a.started_at,
                    "explanation": explanation, "evidence": a.evidence,
                    "dashboard": dashboard_link(&self.public_url, node, gpu, dep),
                }),
                for_secs: 0.0,
                suppressed: None,
            });
        }
        Ok(())
    }

    /// `opportunity-value`: one `info` condition per open opportunity saving at least the threshold per week
    /// (down to `opportunity_resolve_fraction` of it while already active).
    async fn opportunity_conditions(&self, out: &mut Vec<Condition>) -> Result<(), sqlx::Error> {
        let rule = rules::OPPORTUNITY_VALUE;
        let s = &self.settings;
        let (threshold, fraction) = (s.opportunity_min_money_per_week, s.opportunity_resolve_fraction);
        let candidates = db::alerts::open_opportunities_worth(&self.pool, threshold * fraction).await?;
        if candidates.is_empty() {
            return Ok(());
        }
        let active = db::alerts::active_instances(&self.pool).await?;
        for o in candidates {
            let fingerprint = format!("{rule}/{}", o.key);
            if !rules::opportunity_holds(o.saving_per_week, threshold, fraction, active.contains_key(&fingerprint)) {
                continue;
            }
            let sev = Severity::Info;
            let (node, dep) =
                (o.node_id.as_deref().filter(|n| !n.is_empty()), o.deployment.as_deref().filter(|d| !d.is_empty()));
            let (group, source) = match (node, dep) {
                (Some(n), _) => (format!("opportunity/{}", node_group(n)), n.to_string()),
                (None, Some(d)) => (format!("opportunity/{}", deployment_group(d)), d.to_string()),
                (None, None) => ("opportunity/fleet".to_string(), "fleet".to_string()),
            };
            let gpu_s = o.gpu_index.map(|g| g.to_string());
            let mut extra = vec![("kind", o.kind.as_str())];
            extra.extend(place_labels(node, gpu_s.as_deref(), dep));
            let base = self.public_url.trim_end_matches('/');
            out.push(Condition {
                labels: labels(rule, sev, &group, &extra),
                fingerprint,
                rule: rule.into(),
                rule_id: None,
                severity: sev,
                group,
                source,
                component: o.kind.clone(),
                summary: format!(
                    "{}: saves {:.0} {}/week (alert at {:.0})",
                    o.title, o.saving_per_week, o.currency, threshold
                ),
                details: json!({
                    "opportunity_id": o.id, "key": o.key, "kind": o.kind, "title": o.title,
                    "saving_per_week": o.saving_per_week, "currency": o.currency,
                    "gpu_hours_per_week": o.gpu_hours_per_week, "confidence": o.confidence,
                    "expected_value": o.expected_value, "threshold_per_week": threshold,
                    "resolves_below_per_week": threshold * fraction, "first_seen": o.first_seen,
                    "evidence": o.evidence, "action": o.action, "latency": o.latency,
                    "dashboard": dashboard_link(&self.public_url, node, o.gpu_index, dep),
                    "api": format!("{base}/api/v1/opportunities/{}", o.id),
                }),
                for_secs: 0.0,
                suppressed: None,
            });
        }
        Ok(())
    }

    async fn user_conditions(&self, fresh: DateTime<Utc>, out: &mut Vec<Condition>) -> Result<(), sqlx::Error> {
        for r in db::alerts::rules(&self.pool).await? {
            let spec = &r.spec;
            if !spec.enabled {
                continue;
            }
            let (node, dep) = (spec.scope.node.as_deref(), spec.scope.deployment.as_deref());
            let id = r.id.to_string();
            let extra_labels = |l: &mut rules::Labels| {
                for (k, v) in &spec.labels {
                    l.insert(k.clone(), v.clone());
                }
                l.insert("rule_id".into(), id.clone());
            };
            let what = format!("{} {} {}", spec.metric.column(), spec.op.symbol(), spec.threshold);
            if spec.metric.is_gpu() {
                for (n, gpu, uuid, d, value) in
                    db::alerts::gpu_metric(&self.pool, spec.metric, fresh, node, dep).await?
                {
                    if !spec.op.holds(value, spec.threshold) {
                        continue;
                    }
                    let group = node_group(&n);
                    let gpu_s = gpu.to_string();
                    let mut extra = vec![("node", n.as_str()), ("gpu", gpu_s.as_str())];
                    if let Some(d) = &d {
                        extra.push(("deployment", d.as_str()));
                    }
                    let mut l = labels(&spec.name, spec.severity, &group, &extra);
                    extra_labels(&mut l);
                    out.push(Condition {
                        fingerprint: format!("rule/{id}/{n}/{gpu}"),
                        rule: spec.name.clone(),
                        rule_id: Some(r.id),
                        severity: spec.severity,
                        labels: l,
                        group,
                        source: n.clone(),
                        component: format!("gpu {gpu}"),
                        summary: format!("{}: GPU {gpu} on {n}: {} = {value} ({what})", spec.name, spec.metric.column()),
                        details: json!({ "rule_id": id, "node": n, "gpu_index": gpu, "uuid": uuid, "value": value, "condition": what }),
                        for_secs: spec.for_secs,
                        suppressed: None,
                    });
                }
            } else {
                for (d, value, replicas) in
                    db::alerts::serving_metric(&self.pool, spec.metric, spec.aggregate, fresh, node, dep).await?
                {
                    if !spec.op.holds(value, spec.threshold) {
                        continue;
                    }
                    let group = deployment_group(&d);
                    let mut l = labels(&spec.name, spec.severity, &group, &[("deployment", d.as_str())]);
                    extra_labels(&mut l);
                    out.push(Condition {
                        fingerprint: format!("rule/{id}/{d}"),
                        rule: spec.name.clone(),
                        rule_id: Some(r.id),
                        severity: spec.severity,
                        labels: l,
                        group,
                        source: d.clone(),
                        component: spec.metric.column().into(),
                        summary: format!("{}: {d}: {} {} = {value} ({what})", spec.name, spec.aggregate.sql(), spec.metric.column()),
                        details: json!({ "rule_id": id, "deployment": d, "value": value, "aggregate": spec.aggregate, "replicas": replicas, "condition": what }),
                        for_secs: spec.for_secs,
                        suppressed: None,
                    });
                }
            }
        }
        Ok(())
    }

    /// The receivers a delivery is queued for now: PagerDuty (if configured), the settings' webhooks and
    /// the API's.
    async fn receivers(&self) -> Result<Vec<String>, sqlx::Error> {
        let mut out = Vec::new();
        if self.receivers.pagerduty {
            out.push(outbox::PAGERDUTY.to_string());
        }
        let mut names: Vec<String> = self.receivers.webhooks.clone();
        for w in db::alerts::webhooks(&self.pool).await? {
            if !names.contains(&w.name) {
                names.push(w.name);
            }
        }
        out.extend(names.into_iter().map(|n| format!("{}{n}", outbox::WEBHOOK_PREFIX)));
        Ok(out)
    }

    fn outgoing(
        &self,
        receivers: &[String],
        action: &'static str,
        key: &str,
        view: Option<&IncidentView>,
    ) -> Vec<Outgoing> {
        receivers
            .iter()
            .map(|r| Outgoing {
                receiver: r.clone(),
                action,
                payload: if r == outbox::PAGERDUTY {
                    match view {
                        Some(v) => outbox::trigger_payload(key, v, &self.public_url),
                        None => outbox::resolve_payload(key),
                    }
                } else {
                    outbox::webhook_payload(action, key, view, &self.public_url)
                },
            })
            .collect()
    }

    /// One evaluation at `now`.
    pub async fn evaluate(&self, now: DateTime<Utc>) -> Result<EvalOutcome, sqlx::Error> {
        let mut conds = self.conditions(now).await?;
        let silences = db::alerts::active_silences(&self.pool, now).await?;
        rules::suppress(&mut conds, &silences);
        let active = db::alerts::active_instances(&self.pool).await?;
        let mut out = EvalOutcome::default();

        // Instances.
        let mut changes = Vec::new();
        let mut firing_since: HashMap<&str, DateTime<Utc>> = HashMap::new();
        for c in &conds {
            match active.get(&c.fingerprint) {
                None => {
                    let firing = c.for_secs <= 0.0;
                    changes.push(InstanceChange::Insert { cond: c, firing });
                    if firing {
                        firing_since.insert(&c.fingerprint, now);
                        out.fired.push(c.fingerprint.clone());
                    }
                }
                Some(i) if i.state == "pending" => {
                    if now - i.active_since >= secs(c.for_secs) {
                        changes.push(InstanceChange::Fire { id: i.id, cond: c });
                        firing_since.insert(&c.fingerprint, now);
                        out.fired.push(c.fingerprint.clone());
                    } else if i.suppressed != c.suppressed || i.severity != c.severity.as_str() {
                        changes.push(InstanceChange::Update { id: i.id, cond: c });
                    }
                }
                Some(i) => {
                    firing_since.insert(&c.fingerprint, i.fired_at.unwrap_or(i.active_since));
                    if i.suppressed != c.suppressed || i.severity != c.severity.as_str() {
                        changes.push(InstanceChange::Update { id: i.id, cond: c });
                    }
                }
            }
        }
        let holding: HashSet<&str> = conds.iter().map(|c| c.fingerprint.as_str()).collect();
        for (fp, i) in &active {
            if holding.contains(fp.as_str()) {
                continue;
            }
            if i.state == "pending" {
                changes.push(InstanceChange::Drop { id: i.id });
            } else {
                changes.push(InstanceChange::Resolve { id: i.id });
                out.resolved.push(fp.clone());
            }
        }
        db::alerts::apply_instance_changes(&self.pool, &changes, now).await?;
        for fp in &out.fired {
            tracing::info!(alert = %fp, "alert firing");
        }

        // Incidents, one per group.
        let mut groups: BTreeMap<&str, Vec<&Condition>> = BTreeMap::new();
        for c in conds.iter().filter(|c| firing_since.contains_key(c.fingerprint.as_str())) {
            groups.entry(c.group.as_str()).or_default().push(c);
        }
        let open = db::alerts::open_incidents(&self.pool).await?;
        let mut receivers: Option<Vec<String>> = None;
        let dashboard = format!("{}/", self.public_url.trim_end_matches('/'));
        for (&group, members) in &groups {
            let paging: Vec<&Condition> = members.iter().copied().filter(|c| c.suppressed.is_none()).collect();
            let Some(view) = rules::incident_view(group, &paging, &dashboard) else { continue };
            let fields = IncidentFields {
                group,
                rule: &view.class,
                severity: view.severity.as_str(),
                source: &view.source,
                component: &view.component,
                summary: &view.summary,
                details: &view.details,
            };
            match open.get(group) {
                None => {
                    let first = paging.iter().filter_map(|c| firing_since.get(c.fingerprint.as_str())).min();
                    if first.is_none_or(|t| now - *t < secs(self.settings.group_wait_secs)) {
                        continue;
                    }
                    if receivers.is_none() {
                        receivers = Some(self.receivers().await?);
                    }
                    let rx = receivers.as_deref().unwrap_or_default();
                    let opened = db::alerts::open_incident(&self.pool, &fields, now, |key| {
                        self.outgoing(rx, "trigger", key, Some(&view))
                    })
                    .await?;
                    if let Some(key) = opened {
                        tracing::warn!(key = %key, summary = %view.summary, severity = view.severity.as_str(), "incident opened");
                        out.opened.push(key);
                    }
                }
                Some(inc) => {
                    let repeat = self.settings.repeat_interval_secs;
                    let last = inc.last_notified_at.unwrap_or(inc.started_at);
                    if repeat <= 0.0 || now - last < secs(repeat) {
                        if inc.details.get("alerts") != view.details.get("alerts") {
                            db::alerts::refresh_incident(&self.pool, inc.id, &fields).await?;
                        }
                        continue;
                    }
                    if receivers.is_none() {
                        receivers = Some(self.receivers().await?);
                    }
                    let rx = receivers.as_deref().unwrap_or_default();
                    let o = self.outgoing(rx, "trigger", &inc.dedup_key, Some(&view));
                    if db::alerts::retrigger(&self.pool, inc.id, &inc.dedup_key, &fields, now, &o).await? {
                        tracing::warn!(key = %inc.dedup_key, summary = %view.summary, "incident still open; triggered again");
                        out.repeated.push(inc.dedup_key.clone());
                    }
                }
            }
        }
        for (group, inc) in &open {
            if groups.contains_key(group.as_str()) {
                continue;
            }
            if receivers.is_none() {
                receivers = Some(self.receivers().await?);
            }
            let rx = receivers.as_deref().unwrap_or_default();
            let o = self.outgoing(rx, "resolve", &inc.dedup_key, None);
            if db::alerts::resolve_incident(&self.pool, inc.id, &inc.dedup_key, now, &o).await? {
                tracing::info!(key = %inc.dedup_key, "incident resolved");
                out.closed.push(inc.dedup_key.clone());
            }
        }
        if !(out.opened.is_empty() && out.repeated.is_empty() && out.closed.is_empty()) {
            self.wake.notify_one();
        }
        Ok(out)
    }

    /// Evaluates every `eval_secs` while `leading` is set, until `shutdown` flips.
    /// Each pass first re-checks the term in the database, so a replica that lost its lock does not page.
    pub async fn run_until_stopped(
        self,
        leading: Arc<crate::control::leadership::Leadership>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let period = Duration::from_secs_f64(self.settings.eval_secs);
        while !*shutdown.borrow() {
            if leading.is_leading()
                && leading.confirm().await
                && let Err(e) = self.evaluate(Utc::now()).await
            {
                tracing::warn!(error = %e, "alert evaluation failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_links_point_at_the_most_specific_page_and_encode_names() {
        let u = "http://fp.example/";
        assert_eq!(
            dashboard_link(u, Some("node-a"), Some(3), Some("ml/llama")),
            "http://fp.example/nodes/node-a/gpus/3"
        );
        assert_eq!(dashboard_link(u, Some("node a"), None, None), "http://fp.example/nodes/node%20a");
        assert_eq!(dashboard_link(u, None, None, Some("ml/llama")), "http://fp.example/deployments/ml/llama");
        assert_eq!(dashboard_link(u, Some(""), None, Some("")), "http://fp.example/");
    }

    #[test]
    fn gpu_targets_name_their_index() {
        assert_eq!(target_gpu("gpu:node-a:3"), Some(3));
        assert_eq!(target_gpu("gpu:host:with:colons:12"), Some(12));
        assert_eq!(target_gpu("deployment:ml/llama"), None);
        assert_eq!(target_gpu("gpu:node-a:x"), None);
    }
}
