//! Anomaly events: the list (filters, time range, sorting, paging), and their words and links, which the
//! node and GPU pages reuse for their chart markers.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get};
use askama::Template;
use chrono::{DateTime, Utc};

use super::chart::{Marker, Panel, Span, num};
use super::session::WebUser;
use super::{Chrome, Listing, Params, RANGES, State, WebError, ago, render, url_encode};
use crate::db::anomalies::{self as store, Filter, PageQuery, Sort, StoredAnomaly};

const PER_PAGE: i64 = 50;
const SORTS: &[&str] = &["newest", "oldest", "score"];
const SEVERITIES: &[&str] = &["any", "critical", "warning", "info"];
const STATES: &[&str] = &["all", "open", "closed"];

/// The unit a metric's name ends in, for numbers in words.
fn unit(metric: &str) -> &'static str {
    let m = metric.rsplit(':').next().unwrap_or(metric);
    if m.ends_with("_pct") {
        "%"
    } else if m.ends_with("_c") {
        " °C"
    } else if m.ends_with("_s") {
        " s"
    } else if m.ends_with("_w") {
        " W"
    } else {
        ""
    }
}

/// `OutOfRange` -> "out of range"; `{"Seasonal": {"period": 288}}` -> "seasonal (period 288)".
fn component_words(c: &serde_json::Value) -> String {
    let words = |s: &str| {
        let mut o = String::new();
        for (i, ch) in s.chars().enumerate() {
            if ch.is_uppercase() && i > 0 {
                o.push(' ');
            }
            o.extend(ch.to_lowercase());
        }
        o
    };
    match c {
        serde_json::Value::String(s) => words(s),
        serde_json::Value::Object(m) => m
            .iter()
            .next()
            .map(|(k, v)| match v.get("period").and_then(|p| p.as_u64()) {
                Some(p) => format!("{} (period {p})", words(k)),
                None => words(k),
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// What the detector saw, in a sentence: the peak against what was expected (streaming detector), or the
/// member against its peers (peer outliers).
pub fn evidence_words(a: &StoredAnomaly) -> String {
    let u = unit(&a.metric);
    let e = &a.evidence;
    let f = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_f64()).filter(|v| v.is_finite());
    if let Some(p) = e.get("evidence").filter(|_| a.source == "peers") {
        let (value, median) = (f(p.get("value")), f(p.get("peer_median")));
        let distance = f(p.get("mad_distance"));
        let peers = e.get("peers").and_then(|v| v.as_u64()).unwrap_or(0);
        return match (value, median) {
            (Some(v), Some(m)) => format!(
                "typically {}{u} while its {peers} peers sit at {}{u}{}",
                num(v),
                num(m),
                distance.map(|d| format!(" ({d:.1} robust deviations)")).unwrap_or_default()
            ),
            _ => format!("departs from its {peers} peers"),
        };
    }
    if a.source == "leak" {
        // The leak verdict's own sentence (slope, rise, time to full), as the alert carries it.
        return crate::alerts::rules::explain_anomaly(&a.metric, &a.source, a.score, e);
    }
    if let Some(peak) = e.get("peak") {
        let observed = f(peak.get("observed"));
        let expected = f(peak.get("expected"));
        let component = peak.get("component").map(component_words).unwrap_or_default();
        let tail = f(peak.get("tail"));
        let mut s = match (observed, expected) {
            (Some(o), Some(x)) => format!("peak {}{u} where about {}{u} was expected", num(o), num(x)),
            (Some(o), None) => format!("peak {}{u}", num(o)),
            _ => "unusual values".to_string(),
        };
        if !component.is_empty() {
            s.push_str(&format!(" ({component}"));
            if let Some(t) = tail {
                s.push_str(&format!(", tail probability {t:.1e}"));
            }
            s.push(')');
        }
        return s;
    }
    format!("score {:.2}", a.score)
}

/// Anomaly events drawn on a chart at most (the newest; the list below the chart says how many there are).
pub const MAX_MARKED: i64 = 100;

/// Shades an event's interval on `panel` (the range's end while it is ongoing) and marks its start; the
/// tooltip carries the evidence.
pub fn mark(panel: &mut Panel, a: &StoredAnomaly, v: &AnomalyView, to_ms: i64) {
    let label = format!("{} {} from {} ({}): {}", a.severity, v.series, v.start_at, v.end, v.evidence);
    panel.spans.push(Span {
        from_ms: a.started_at.timestamp_millis(),
        to_ms: a.ended_at.map_or(to_ms, |t| t.timestamp_millis()),
        label: label.clone(),
        class: span_class(&a.severity),
    });
    panel.markers.push(Marker { at_ms: a.started_at.timestamp_millis(), label, class: "anomaly" });
}

/// The series in words and the page that shows it: `node-1 GPU 3 util_pct` -> its GPU page.
pub fn series_words(a: &StoredAnomaly) -> (String, String) {
    if let Some(rest) = a.target.strip_prefix("gpu:")
        && let Some((node, gpu)) = rest.rsplit_once(':')
    {
        return (format!("{node} GPU {gpu} · {}", a.metric), format!("/nodes/{}/gpus/{gpu}", url_encode(node)));
    }
    if let Some(dep) = a.target.strip_prefix("deployment:") {
        let link = if dep.contains('/') { format!("/deployments/{}", url_encode(dep)) } else { String::new() };
        return (format!("{dep} · {}", a.metric), link);
    }
    let link = if a.node_id.is_empty() { String::new() } else { format!("/nodes/{}", url_encode(&a.node_id)) };
    (format!("{} · {}", a.target, a.metric), link)
}

/// The CSS classes of an anomaly's chart band, by severity.
pub fn span_class(severity: &str) -> &'static str {
    match severity {
        "critical" => "anomaly critical",
        "warning" => "anomaly warning",
        _ => "anomaly info",
    }
}

/// An anomaly as a row (the list, and under the node and GPU charts).
pub struct AnomalyView {
    /// Id.
    pub id: i64,
    /// Start, relative.
    pub start: String,
    /// Start, UTC.
    pub start_at: String,
    /// End, relative, or "ongoing".
    pub end: String,
    /// Whether still open.
    pub ongoing: bool,
    /// `info`, `warning`, `critical`.
    pub severity: String,
    /// Series in words.
    pub series: String,
    /// Its page, with the range that shows the event.
    pub link: String,
    /// Peak score.
    pub score: String,
    /// `detector` or `peers`.
    pub source: String,
    /// Evidence in words.
    pub evidence: String,
}

/// A stored event as shown; `range` is appended to the link (`?range=`).
pub fn anomaly_view(now: DateTime<Utc>, a: &StoredAnomaly, range: &str) -> AnomalyView {
    let (series, link) = series_words(a);
    AnomalyView {
        id: a.id,
        start: ago(now, a.started_at),
        start_at: a.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        end: a.ended_at.map(|t| ago(now, t)).unwrap_or_else(|| "ongoing".into()),
        ongoing: a.ended_at.is_none(),
        severity: a.severity.clone(),
        link: if link.is_empty() { link } else { format!("{link}?range={range}") },
        series,
        score: format!("{:.2}", a.score),
        source: a.source.clone(),
        evidence: evidence_words(a),
    }
}

/// `templates/anomalies.html`.
#[derive(Template)]
#[template(path = "anomalies.html")]
pub struct AnomaliesTemplate {
    chrome: Chrome,
    node: String,
    gpu: String,
    deployment: String,
    severities: Vec<super::Opt>,
    states: Vec<super::Opt>,
    ranges: Vec<super::Opt>,
    list: Listing<AnomalyView>,
}

/// `GET /anomalies?node=&gpu=&deployment=&severity=&state=&range=&sort=&page=` (default: the last 24 hours).
#[get("/anomalies")]
pub async fn list(state: State, user: WebUser, p: Params) -> Result<HttpResponse, WebError> {
    let node = p.text("node")?;
    let gpu = match p.text("gpu")? {
        None => None,
        Some(g) => Some(
            g.parse::<i32>()
                .ok()
                .filter(|g| (0..=1024).contains(g))
                .ok_or_else(|| WebError::field("gpu", "must be a GPU index (a whole number from 0 to 1024)"))?,
        ),
    };
    let target = match (&node, gpu) {
        (Some(n), Some(g)) => Some(format!("gpu:{n}:{g}")),
        (None, Some(_)) => return Err(WebError::field("gpu", "needs a node: a GPU index is per node")),
        _ => None,
    };
    let deployment = p.text("deployment")?;
    let severity = p.choice("severity", SEVERITIES)?;
    let open = p.choice("state", STATES)?;
    let range = p.range_or("24h")?;
    let sort = p.choice("sort", SORTS)?;
    let paging = p.paging(PER_PAGE)?;
    let query = PageQuery {
        filter: Filter {
            node: node.clone(),
            deployment: deployment.clone(),
            severity: (severity != "any").then(|| severity.to_string()),
            open: match open {
                "open" => Some(true),
                "closed" => Some(false),
                _ => None,
            },
            limit: PER_PAGE,
            offset: paging.offset(),
        },
        target,
        from: range.from,
        to: range.to,
        sort: match sort {
            "oldest" => Sort::Oldest,
            "score" => Sort::Score,
            _ => Sort::Newest,
        },
    };
    let (rows, total) = store::page(&state.pool, &query).await?;
    let now = Utc::now();
    let (node, deployment) = (node.unwrap_or_default(), deployment.unwrap_or_default());
    let gpu = gpu.map(|g| g.to_string()).unwrap_or_default();
    let filters = [
        ("node", node.as_str()),
        ("gpu", gpu.as_str()),
        ("deployment", deployment.as_str()),
        ("severity", severity),
        ("state", open),
        ("range", range.key),
    ];
    let t = AnomaliesTemplate {
        chrome: user.list_chrome(&state, "Anomalies", "anomalies", &p),
        severities: super::options(SEVERITIES, severity),
        states: super::options(STATES, open),
        ranges: super::options(RANGES, range.key),
        list: paging.listing(
            (SORTS, sort),
            rows.iter().map(|a| anomaly_view(now, a, range.key)).collect(),
            total,
            &filters,
        ),
        node,
        gpu,
        deployment,
    };
    render(&t, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(source: &str, target: &str, metric: &str, evidence: serde_json::Value) -> StoredAnomaly {
        StoredAnomaly {
            id: 1,
            node_id: "n1".into(),
            deployment: String::new(),
            target: target.into(),
            metric: metric.into(),
            source: source.into(),
            started_at: Utc::now(),
            ended_at: None,
            severity: "warning".into(),
            score: 0.8,
            evidence,
        }
    }

    #[test]
    fn detector_and_peer_evidence_read_as_sentences_with_units() {
        let a = event(
            "detector",
            "gpu:n1:3",
            "temp_c",
            json!({"peak": {"observed": 91.0, "expected": 70.0, "component": "OutOfRange", "tail": 0.0001}}),
        );
        assert_eq!(
            evidence_words(&a),
            "peak 91 °C where about 70 °C was expected (out of range, tail probability 1.0e-4)"
        );
        assert_eq!(series_words(&a), ("n1 GPU 3 · temp_c".into(), "/nodes/n1/gpus/3".into()));
        let p = event(
            "peers",
            "gpu:n1:0",
            "peer:util_pct",
            json!({"peers": 7, "evidence": {"value": 20.0, "peer_median": 80.0, "mad_distance": -6.5}}),
        );
        assert_eq!(evidence_words(&p), "typically 20% while its 7 peers sit at 80% (-6.5 robust deviations)");
        let s = event(
            "detector",
            "gpu:n1:0",
            "util_pct",
            json!({"peak": {"observed": 5.0, "expected": null, "component": {"Seasonal": {"period": 288}}}}),
        );
        assert_eq!(evidence_words(&s), "peak 5.0% (seasonal (period 288))");
        assert_eq!(evidence_words(&event("detector", "x", "m", json!({}))), "score 0.80");
    }
}
