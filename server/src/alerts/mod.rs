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
//! TODO(#7, after the opportunities/anomalies branch lands): two more built-in sources, `anomaly-high`
//! (rows of `anomalies` with a high severity, grouped by deployment/node) and `opportunity-value` (rows of
//! `opportunities` above `alerts.opportunity_min_usd_per_month`). They belong in [`AlertEngine::conditions`]
//! as one more block each, guarded by `to_regclass('anomalies')` so they are no-ops where the table is
//! absent; they are not written yet because those tables' columns are not settled on this branch.

pub mod outbox;
pub mod rules;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use crate::config::AlertSettings;
use crate::db;
use crate::db::alerts::{IncidentFields, InstanceChange, Outgoing};
use rules::{Condition, IncidentView, Severity, labels};

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
                format!("GPU {gpu} on {node} is thermally throttled ({temp:.0} °C)"),
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

        self.user_conditions(fresh, &mut out).await?;
        Ok(out)
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
    pub async fn run_until_stopped(self, leading: Arc<AtomicBool>, mut shutdown: watch::Receiver<bool>) {
        let period = Duration::from_secs_f64(self.settings.eval_secs);
        while !*shutdown.borrow() {
            if leading.load(Ordering::Relaxed)
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
