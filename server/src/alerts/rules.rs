//! What the alert rules do with the vocabulary of [`crate::domain::alert`], pure and synchronous: condition
//! labels, suppression (inhibition and silences), built-in rule names, anomaly explanations and the view of a
//! group incident. The vocabulary itself (severities, operators, metrics, matchers, the parsed API bodies) is
//! re-exported from the domain, so callers keep naming it `alerts::rules::…`.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Value, json};
use uuid::Uuid;

pub use crate::domain::alert::*;

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
