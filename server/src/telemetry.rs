//! The control plane's own Prometheus metrics (`fleetpilot_<thing>_<unit>`, low-cardinality labels) and
//! the tracing subscriber.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder as _, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Metrics of one server process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Batches by outcome: stored, duplicate, rejected, busy, error, isolated (written alone after their group
    /// was refused).
    pub ingest_batches: IntCounterVec,
    /// Metric values stored.
    pub ingest_samples: IntCounter,
    /// Seconds to store one batch.
    pub ingest_seconds: Histogram,
    /// Control-loop ticks run as leader.
    pub control_ticks: IntCounter,
    /// Seconds per control-loop tick.
    pub control_tick_seconds: Histogram,
    /// Decisions by outcome: applied, unchanged, dry_run, shadow, failed.
    pub decisions: IntCounterVec,
    /// 1 while this replica leads the control loop.
    pub leader: IntGauge,
    /// Alert deliveries by outcome: delivered, retry, failed.
    pub alert_deliveries: IntCounterVec,
    /// Commands handed to agents, by path: poll (long poll) or upload (upload acknowledgement).
    pub commands_delivered: IntCounterVec,
    /// Kubernetes API requests sent, by verb: get, list, watch, patch, ... (see [`kube_verb`]).
    pub kube_requests: IntCounterVec,
    /// Pod-deletion-cost annotations before a scale-down, by outcome: patched, unchanged, failed.
    pub kube_drain_annotations: IntCounterVec,
    /// Per policy: the replicas its latest decision wants.
    policy_desired: IntGaugeVec,
    /// Per policy: the replicas its target had when it decided.
    policy_current: IntGaugeVec,
    /// Per policy: the forecast's upper bound over the cold start, in demand units of its first metric.
    policy_forecast_upper: GaugeVec,
    /// Per policy: 1 on the series of the proposal (normalised) that won its latest decision.
    policy_winner: IntGaugeVec,
    /// Per policy and shadow policy: the replicas the shadow would have set.
    policy_shadow_desired: IntGaugeVec,
    /// Which label values each policy has series under, so they can be removed (the vectors cannot be
    /// queried by a partial label set).
    policy_series: Arc<Mutex<HashMap<String, PolicySeries>>>,
    /// Fleet gauges, read from the store when scraped (see [`Metrics::record_fleet`]).
    fleet: FleetSeries,
}

/// Fleet-wide gauges: every replica reads them from the store, so any replica's scrape tells the same.
#[derive(Clone)]
struct FleetSeries {
    gpus_reporting: IntGauge,
    gpus_idle_allocated: IntGauge,
    gpus_throttled: IntGauge,
    gpus_xid: IntGauge,
    nodes_silent: IntGauge,
    idle_gpu_equivalent: prometheus::Gauge,
    opportunity_money: GaugeVec,
    alerts_firing: IntGaugeVec,
    /// When they were last read.
    read_at: Arc<Mutex<Option<std::time::Instant>>>,
}

/// Opportunity kinds with a `fleetpilot_opportunities_open_saving_per_week` series (a fixed set: bounded
/// labels).
const OPPORTUNITY_KINDS: [&str; 8] = [
    "idle_gpu",
    "memory_only",
    "consolidation",
    "batching",
    "kv_cache_saturation",
    "throttling",
    "straggler",
    "drain_node",
];
/// Alert severities with a `fleetpilot_alerts_firing` series; anything else counts as `other`.
const SEVERITIES: [&str; 5] = ["critical", "error", "warning", "info", "other"];

/// What [`Metrics::record_fleet`] publishes.
#[derive(Debug, Clone, Default)]
pub struct FleetReading {
    /// GPUs with a fresh reading.
    pub gpus_reporting: i64,
    /// Of those, allocated GPUs under 5 % utilisation.
    pub gpus_idle_allocated: i64,
    /// Reporting GPUs throttled for a reason other than idle.
    pub gpus_throttled: i64,
    /// Reporting GPUs whose last XID is not 0.
    pub gpus_xid: i64,
    /// Nodes not heard from within the freshness window.
    pub nodes_silent: i64,
    /// GPU-equivalents idle over the latest idle-capacity window (absent before the first refresh).
    pub idle_gpu_equivalent: Option<f64>,
    /// Open opportunities' saving per week, by kind.
    pub opportunity_money: Vec<(String, f64)>,
    /// Firing incidents, by severity.
    pub firing: Vec<(String, i64)>,
}

/// The labelled series one policy currently has.
#[derive(Debug, Default)]
struct PolicySeries {
    /// The normalised winner whose series is set to 1.
    winner: Option<&'static str>,
    /// Shadow policy names with a series.
    shadows: BTreeSet<String>,
}

/// One decision of one policy, as the per-policy gauges show it.
#[derive(Debug, Clone, Copy)]
pub struct PolicyGauges<'a> {
    /// The policy's name (the `policy` label).
    pub policy: &'a str,
    /// Replicas the target had when the policy decided.
    pub current: u32,
    /// Replicas the decision wants.
    pub desired: u32,
    /// The forecast's upper bound (demand units of the policy's first metric); `None` removes the series.
    pub forecast_upper: Option<f64>,
    /// The decision's winner as the engine names it (`reactive:queue_depth`, `rate-limit`, ...): normalised
    /// with [`winner_label`].
    pub winner: &'a str,
}

/// The values the `winner` label can take: a fixed vocabulary, so the series per policy stay bounded.
pub const WINNER_LABELS: [&str; 13] = [
    "reactive",
    "predictive",
    "panic",
    "panic-hold",
    "slo",
    "slo-gate",
    "anomaly-gate",
    "hold",
    "stabilization",
    "rate-limit",
    "scale-to-zero",
    "override",
    "other",
];

/// Normalises a decision's winner to [`WINNER_LABELS`]: the per-metric or per-SLO detail after `:` and a
/// `+clamp` suffix are dropped (`reactive:queue_depth+clamp` is `reactive`), anything unknown is `other`.
pub fn winner_label(winner: &str) -> &'static str {
    let base = winner.split(['+', ':']).next().unwrap_or("").trim();
    WINNER_LABELS.iter().copied().find(|w| *w == base).unwrap_or("other")
}

/// The verb of one Kubernetes API request, Kubernetes' own `RequestInfo` vocabulary: a GET of a collection is
/// `list` (`watch` with `watch=true`), of one object (or its subresource) `get`; other methods lower-cased.
pub fn kube_verb(method: &str, path: &str, query: Option<&str>) -> &'static str {
    match method {
        "GET" => {}
        "PATCH" => return "patch",
        "PUT" => return "update",
        "POST" => return "create",
        "DELETE" => return "delete",
        _ => return "other",
    }
    if query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")) {
        return "watch";
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    // `/api/v1/...` or `/apis/{group}/{version}/...`.
    let rest = match segs.first() {
        Some(&"api") => segs.get(2..),
        Some(&"apis") => segs.get(3..),
        _ => None,
    }
    .unwrap_or(&[]);
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    if rest.len() <= 1 { "list" } else { "get" }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            ingest_batches: IntCounterVec::new(
                Opts::new("fleetpilot_ingest_batches_total", "Ingest batches by outcome"),
                &["outcome"],
            )
            .expect("static metric definition is valid"),
            ingest_samples: IntCounter::new("fleetpilot_ingest_samples_total", "Metric values stored")
                .expect("static metric definition is valid"),
            ingest_seconds: Histogram::with_opts(
                HistogramOpts::new("fleetpilot_ingest_duration_seconds", "Time to store one batch")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            )
            .expect("static metric definition is valid"),
            control_ticks: IntCounter::new("fleetpilot_control_ticks_total", "Control-loop ticks run as leader")
                .expect("static metric definition is valid"),
            control_tick_seconds: Histogram::with_opts(
                HistogramOpts::new("fleetpilot_control_tick_duration_seconds", "Time per control-loop tick")
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )
            .expect("static metric definition is valid"),
            decisions: IntCounterVec::new(
                Opts::new("fleetpilot_decisions_total", "Scaling decisions by outcome"),
                &["outcome"],
            )
            .expect("static metric definition is valid"),
            leader: IntGauge::new("fleetpilot_leader", "1 while this replica leads the control loop")
                .expect("static metric definition is valid"),
            alert_deliveries: IntCounterVec::new(
                Opts::new("fleetpilot_alert_deliveries_total", "Alert delivery attempts by outcome"),
                &["outcome"],
            )
            .expect("static metric definition is valid"),
            commands_delivered: IntCounterVec::new(
                Opts::new("fleetpilot_commands_delivered_total", "Commands handed to agents, by path"),
                &["path"],
            )
            .expect("static metric definition is valid"),
            kube_requests: IntCounterVec::new(
                Opts::new("fleetpilot_kube_requests_total", "Kubernetes API requests sent, by verb"),
                &["verb"],
            )
            .expect("static metric definition is valid"),
            kube_drain_annotations: IntCounterVec::new(
                Opts::new(
                    "fleetpilot_kube_drain_annotations_total",
                    "Pod-deletion-cost annotations before a scale-down, by outcome",
                ),
                &["outcome"],
            )
            .expect("static metric definition is valid"),
            policy_desired: IntGaugeVec::new(
                Opts::new("fleetpilot_policy_desired_replicas", "Replicas the policy's latest decision wants"),
                &["policy"],
            )
            .expect("static metric definition is valid"),
            policy_current: IntGaugeVec::new(
                Opts::new("fleetpilot_policy_current_replicas", "Replicas the policy's target had when it decided"),
                &["policy"],
            )
            .expect("static metric definition is valid"),
            policy_forecast_upper: GaugeVec::new(
                Opts::new(
                    "fleetpilot_policy_forecast_upper",
                    "Upper bound of the policy's demand forecast, in units of its first metric",
                ),
                &["policy"],
            )
            .expect("static metric definition is valid"),
            policy_winner: IntGaugeVec::new(
                Opts::new(
                    "fleetpilot_policy_decision_winner",
                    "1 for the proposal that won the policy's latest decision",
                ),
                &["policy", "winner"],
            )
            .expect("static metric definition is valid"),
            policy_shadow_desired: IntGaugeVec::new(
                Opts::new(
                    "fleetpilot_policy_shadow_desired_replicas",
                    "Replicas a shadow policy would have set for the policy's target",
                ),
                &["policy", "shadow"],
            )
            .expect("static metric definition is valid"),
            policy_series: Arc::default(),
            fleet: FleetSeries {
                gpus_reporting: IntGauge::new("fleetpilot_fleet_gpus_reporting", "GPUs with a fresh reading")
                    .expect("static metric definition is valid"),
                gpus_idle_allocated: IntGauge::new(
                    "fleetpilot_fleet_gpus_idle_allocated",
                    "GPUs serving a deployment or group that run under 5 % utilisation now",
                )
                .expect("static metric definition is valid"),
                gpus_throttled: IntGauge::new(
                    "fleetpilot_fleet_gpus_throttled",
                    "GPUs throttled for a reason other than idle now",
                )
                .expect("static metric definition is valid"),
                gpus_xid: IntGauge::new("fleetpilot_fleet_gpus_xid", "GPUs whose last reading carries an XID error")
                    .expect("static metric definition is valid"),
                nodes_silent: IntGauge::new(
                    "fleetpilot_fleet_nodes_silent",
                    "Nodes not heard from within the freshness window",
                )
                .expect("static metric definition is valid"),
                idle_gpu_equivalent: prometheus::Gauge::new(
                    "fleetpilot_fleet_idle_gpu_equivalent",
                    "GPUs idle on average over the latest idle-capacity window",
                )
                .expect("static metric definition is valid"),
                opportunity_money: GaugeVec::new(
                    Opts::new(
                        "fleetpilot_opportunities_open_saving_per_week",
                        "Money per week the open optimization opportunities would save, by kind",
                    ),
                    &["kind"],
                )
                .expect("static metric definition is valid"),
                alerts_firing: IntGaugeVec::new(
                    Opts::new("fleetpilot_alerts_firing", "Firing alert incidents, by severity"),
                    &["severity"],
                )
                .expect("static metric definition is valid"),
                read_at: Arc::default(),
            },
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 24] = [
            Box::new(m.fleet.gpus_reporting.clone()),
            Box::new(m.fleet.gpus_idle_allocated.clone()),
            Box::new(m.fleet.gpus_throttled.clone()),
            Box::new(m.fleet.gpus_xid.clone()),
            Box::new(m.fleet.nodes_silent.clone()),
            Box::new(m.fleet.idle_gpu_equivalent.clone()),
            Box::new(m.fleet.opportunity_money.clone()),
            Box::new(m.fleet.alerts_firing.clone()),
            Box::new(m.ingest_batches.clone()),
            Box::new(m.ingest_samples.clone()),
            Box::new(m.ingest_seconds.clone()),
            Box::new(m.control_ticks.clone()),
            Box::new(m.control_tick_seconds.clone()),
            Box::new(m.decisions.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.alert_deliveries.clone()),
            Box::new(m.commands_delivered.clone()),
            Box::new(m.kube_requests.clone()),
            Box::new(m.kube_drain_annotations.clone()),
            Box::new(m.policy_desired.clone()),
            Box::new(m.policy_current.clone()),
            Box::new(m.policy_forecast_upper.clone()),
            Box::new(m.policy_winner.clone()),
            Box::new(m.policy_shadow_desired.clone()),
        ];
        for c in collectors {
            // Names are unique constants: registration cannot fail.
            let _ = m.registry.register(c);
        }
        // Expose every outcome from the start, so rates work before the first event.
        for o in ["stored", "duplicate", "rejected", "busy", "isolated"] {
            m.ingest_batches.with_label_values(&[o]);
        }
        for k in OPPORTUNITY_KINDS {
            m.fleet.opportunity_money.with_label_values(&[k]);
        }
        for s in SEVERITIES {
            m.fleet.alerts_firing.with_label_values(&[s]);
        }
        for o in ["applied", "unchanged", "dry_run", "shadow", "failed"] {
            m.decisions.with_label_values(&[o]);
        }
        for o in ["delivered", "retry", "failed", "given_up"] {
            m.alert_deliveries.with_label_values(&[o]);
        }
        for p in ["poll", "upload"] {
            m.commands_delivered.with_label_values(&[p]);
        }
        for o in ["patched", "unchanged", "failed"] {
            m.kube_drain_annotations.with_label_values(&[o]);
        }
        m
    }

    /// Sets a policy's gauges from its latest decision; the previous winner's series is removed, so exactly
    /// one `fleetpilot_policy_decision_winner` series per policy is 1.
    pub fn record_policy(&self, g: &PolicyGauges<'_>) {
        let policy = g.policy;
        self.policy_desired.with_label_values(&[policy]).set(i64::from(g.desired));
        self.policy_current.with_label_values(&[policy]).set(i64::from(g.current));
        match g.forecast_upper.filter(|v| v.is_finite()) {
            Some(v) => self.policy_forecast_upper.with_label_values(&[policy]).set(v),
            None => {
                let _ = self.policy_forecast_upper.remove_label_values(&[policy]);
            }
        }
        let winner = winner_label(g.winner);
        let mut series = self.policy_series.lock().unwrap_or_else(|e| e.into_inner());
        let entry = series.entry(policy.to_string()).or_default();
        if let Some(old) = entry.winner.filter(|old| *old != winner) {
            let _ = self.policy_winner.remove_label_values(&[policy, old]);
        }
        entry.winner = Some(winner);
        self.policy_winner.with_label_values(&[policy, winner]).set(1);
    }

    /// Sets what shadow policy `shadow` would have set for `policy`'s target.
    pub fn record_shadow(&self, policy: &str, shadow: &str, desired: u32) {
        self.policy_shadow_desired.with_label_values(&[policy, shadow]).set(i64::from(desired));
        let mut series = self.policy_series.lock().unwrap_or_else(|e| e.into_inner());
        series.entry(policy.to_string()).or_default().shadows.insert(shadow.to_string());
    }

    /// Removes a shadow policy's series (the shadow was deleted or detached while `policy` lives on).
    pub fn forget_shadow(&self, policy: &str, shadow: &str) {
        let _ = self.policy_shadow_desired.remove_label_values(&[policy, shadow]);
        let mut series = self.policy_series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = series.get_mut(policy) {
            e.shadows.remove(shadow);
        }
    }

    /// Removes every series of `policy` (deleted or renamed), so `/metrics` does not keep reporting it.
    pub fn forget_policy(&self, policy: &str) {
        let _ = self.policy_desired.remove_label_values(&[policy]);
        let _ = self.policy_current.remove_label_values(&[policy]);
        let _ = self.policy_forecast_upper.remove_label_values(&[policy]);
        let gone = self.policy_series.lock().unwrap_or_else(|e| e.into_inner()).remove(policy);
        if let Some(gone) = gone {
            if let Some(w) = gone.winner {
                let _ = self.policy_winner.remove_label_values(&[policy, w]);
            }
            for s in gone.shadows {
                let _ = self.policy_shadow_desired.remove_label_values(&[policy, s.as_str()]);
            }
        }
    }

    /// Whether the fleet gauges are older than `max_age` (or were never read), marking them read now if so:
    /// of concurrent scrapes, one reads the store.
    pub fn fleet_due(&self, max_age: std::time::Duration) -> bool {
        let mut at = self.fleet.read_at.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if at.is_some_and(|t| now.duration_since(t) < max_age) {
            return false;
        }
        *at = Some(now);
        true
    }

    /// Publishes the fleet gauges. Kinds and severities outside the fixed sets are not published (kinds) or
    /// count as `other` (severities), so the label sets stay bounded.
    pub fn record_fleet(&self, r: &FleetReading) {
        let f = &self.fleet;
        f.gpus_reporting.set(r.gpus_reporting);
        f.gpus_idle_allocated.set(r.gpus_idle_allocated);
        f.gpus_throttled.set(r.gpus_throttled);
        f.gpus_xid.set(r.gpus_xid);
        f.nodes_silent.set(r.nodes_silent);
        match r.idle_gpu_equivalent.filter(|v| v.is_finite()) {
            Some(v) => f.idle_gpu_equivalent.set(v),
            None => f.idle_gpu_equivalent.set(0.0),
        }
        for k in OPPORTUNITY_KINDS {
            let v = r.opportunity_money.iter().filter(|(kind, _)| kind == k).fold(0.0, |acc, (_, v)| acc + v);
            f.opportunity_money.with_label_values(&[k]).set(if v.is_finite() { v } else { 0.0 });
        }
        for s in SEVERITIES {
            let n: i64 = r
                .firing
                .iter()
                .filter(|(sev, _)| {
                    let known = SEVERITIES[..4].contains(&sev.as_str());
                    if s == "other" { !known } else { sev == s }
                })
                .map(|(_, n)| *n)
                .sum();
            f.alerts_firing.with_label_values(&[s]).set(n);
        }
    }

    /// Shadow policies with a series beside `policy`.
    pub fn recorded_shadows(&self, policy: &str) -> Vec<String> {
        let series = self.policy_series.lock().unwrap_or_else(|e| e.into_inner());
        series.get(policy).map(|e| e.shadows.iter().cloned().collect()).unwrap_or_default()
    }

    /// Names of the policies that have per-policy series (so a loop can forget those it no longer runs).
    pub fn recorded_policies(&self) -> Vec<String> {
        self.policy_series.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    /// Kubernetes API requests counted so far, all verbs together.
    pub fn kube_requests_total(&self) -> u64 {
        use prometheus::core::Collector as _;
        let families = self.kube_requests.collect();
        families.iter().flat_map(|f| f.get_metric()).map(|m| m.get_counter().get_value() as u64).sum()
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Installs the global tracing subscriber (`RUST_LOG`, default `info`); a second call is a no-op.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,kube=warn,actix_server=warn,actix_web=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of `name` in the exposition text (comments excluded).
    fn lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name)).collect()
    }

    fn gauges<'a>(policy: &'a str, winner: &'a str, upper: Option<f64>) -> PolicyGauges<'a> {
        PolicyGauges { policy, current: 3, desired: 5, forecast_upper: upper, winner }
    }

    #[test]
    fn winners_are_normalised_to_a_fixed_vocabulary() {
        assert_eq!(winner_label("reactive:queue_depth_per_replica"), "reactive");
        assert_eq!(winner_label("reactive:gpu_utilization+clamp"), "reactive");
        assert_eq!(winner_label("slo:itl_p95_ms"), "slo");
        assert_eq!(winner_label("predictive"), "predictive");
        assert_eq!(winner_label("rate-limit+clamp"), "rate-limit");
        assert_eq!(winner_label("anomaly-gate"), "anomaly-gate");
        assert_eq!(winner_label("something-new:with/any {chars}"), "other");
        assert_eq!(winner_label(""), "other");
    }

    #[test]
    fn a_policys_decision_renders_its_gauges_with_one_winner() {
        let m = Metrics::new();
        m.record_policy(&gauges("llama", "reactive:queue_depth", Some(41.5)));
        let text = m.render();
        assert_eq!(
            lines(&text, "fleetpilot_policy_desired_replicas"),
            ["fleetpilot_policy_desired_replicas{policy=\"llama\"} 5"]
        );
        assert_eq!(
            lines(&text, "fleetpilot_policy_current_replicas"),
            ["fleetpilot_policy_current_replicas{policy=\"llama\"} 3"]
        );
        assert_eq!(
            lines(&text, "fleetpilot_policy_forecast_upper"),
            ["fleetpilot_policy_forecast_upper{policy=\"llama\"} 41.5"]
        );
        assert_eq!(
            lines(&text, "fleetpilot_policy_decision_winner"),
            ["fleetpilot_policy_decision_winner{policy=\"llama\",winner=\"reactive\"} 1"]
        );
        assert!(text.contains("# TYPE fleetpilot_policy_desired_replicas gauge"), "{text}");

        // The next decision's winner replaces the old one; no forecast removes the upper bound.
        m.record_policy(&gauges("llama", "stabilization", None));
        let text = m.render();
        assert_eq!(
            lines(&text, "fleetpilot_policy_decision_winner"),
            ["fleetpilot_policy_decision_winner{policy=\"llama\",winner=\"stabilization\"} 1"]
        );
        assert!(lines(&text, "fleetpilot_policy_forecast_upper").is_empty(), "{text}");
    }

    #[test]
    fn forgetting_a_policy_removes_all_its_series_and_only_its_own() {
        let m = Metrics::new();
        m.record_policy(&gauges("llama", "predictive", Some(10.0)));
        m.record_policy(&gauges("mistral", "panic", Some(3.0)));
        m.record_shadow("llama", "llama-cheap", 4);
        m.record_shadow("llama", "llama-fast", 7);
        m.record_shadow("mistral", "mistral-cheap", 2);
        let text = m.render();
        assert_eq!(lines(&text, "fleetpilot_policy_shadow_desired_replicas").len(), 3, "{text}");
        assert!(
            text.contains("fleetpilot_policy_shadow_desired_replicas{policy=\"llama\",shadow=\"llama-fast\"} 7"),
            "{text}"
        );

        m.forget_policy("llama");
        let text = m.render();
        assert!(!text.contains("policy=\"llama\""), "{text}");
        for name in [
            "fleetpilot_policy_desired_replicas",
            "fleetpilot_policy_current_replicas",
            "fleetpilot_policy_forecast_upper",
            "fleetpilot_policy_decision_winner",
            "fleetpilot_policy_shadow_desired_replicas",
        ] {
            assert_eq!(lines(&text, name).len(), 1, "{name} keeps mistral's series: {text}");
        }
        assert_eq!(m.recorded_policies(), ["mistral"]);
        m.forget_shadow("mistral", "mistral-cheap");
        assert!(lines(&m.render(), "fleetpilot_policy_shadow_desired_replicas").is_empty());
        // Forgetting twice, or a policy never seen, is harmless.
        m.forget_policy("llama");
        m.forget_policy("never-seen");
    }

    #[test]
    fn fleet_gauges_keep_bounded_labels_whatever_the_store_says() {
        let m = Metrics::new();
        m.record_fleet(&FleetReading {
            gpus_reporting: 12,
            idle_gpu_equivalent: Some(f64::NAN),
            opportunity_money: vec![("idle_gpu".into(), 10.0), ("idle_gpu".into(), 5.5), ("made_up".into(), 1.0)],
            firing: vec![("critical".into(), 2), ("page-me".into(), 3), ("weird".into(), 1)],
            ..FleetReading::default()
        });
        let text = m.render();
        assert!(text.contains("fleetpilot_fleet_gpus_reporting 12"), "{text}");
        assert!(text.contains("fleetpilot_fleet_idle_gpu_equivalent 0"), "{text}");
        assert!(text.contains("fleetpilot_opportunities_open_saving_per_week{kind=\"idle_gpu\"} 15.5"), "{text}");
        assert!(!text.contains("made_up"), "{text}");
        assert_eq!(lines(&text, "fleetpilot_opportunities_open_saving_per_week").len(), 8, "{text}");
        assert!(text.contains("fleetpilot_alerts_firing{severity=\"critical\"} 2"), "{text}");
        assert!(text.contains("fleetpilot_alerts_firing{severity=\"other\"} 4"), "{text}");
        assert_eq!(lines(&text, "fleetpilot_alerts_firing").len(), 5, "{text}");
        // Read once per period, whoever scrapes.
        assert!(m.fleet_due(std::time::Duration::from_secs(60)));
        assert!(!m.clone().fleet_due(std::time::Duration::from_secs(60)));
    }

    #[test]
    fn the_winner_label_stays_bounded_whatever_the_engine_calls_it() {
        let m = Metrics::new();
        for (i, w) in
            ["reactive:a", "reactive:b", "slo:ttft_p95_ms", "brand-new-1", "brand-new-2", "hold"].iter().enumerate()
        {
            m.record_policy(&PolicyGauges {
                policy: "p",
                current: 1,
                desired: i as u32,
                forecast_upper: None,
                winner: w,
            });
        }
        let text = m.render();
        assert_eq!(
            lines(&text, "fleetpilot_policy_decision_winner"),
            ["fleetpilot_policy_decision_winner{policy=\"p\",winner=\"hold\"} 1"]
        );
    }

    #[test]
    fn kube_requests_are_classified_by_verb() {
        assert_eq!(kube_verb("GET", "/apis/apps/v1/namespaces/ml/deployments/llama/scale", None), "get");
        assert_eq!(kube_verb("GET", "/apis/apps/v1/namespaces/ml/deployments/llama", None), "get");
        assert_eq!(kube_verb("GET", "/apis/apps/v1/namespaces/ml/deployments", Some("limit=500")), "list");
        assert_eq!(kube_verb("GET", "/apis/apps/v1/deployments", None), "list");
        assert_eq!(
            kube_verb("GET", "/apis/apps/v1/namespaces/ml/deployments", Some("watch=true&resourceVersion=5")),
            "watch"
        );
        assert_eq!(kube_verb("GET", "/api/v1/namespaces/ml/pods", Some("labelSelector=app%3Dllama")), "list");
        assert_eq!(kube_verb("GET", "/api/v1/namespaces/ml", None), "get");
        assert_eq!(kube_verb("PATCH", "/api/v1/namespaces/ml/pods/llama-1", None), "patch");
        let m = Metrics::new();
        m.kube_requests.with_label_values(&["get"]).inc();
        m.kube_requests.with_label_values(&["patch"]).inc_by(2);
        assert_eq!(m.kube_requests_total(), 3);
        assert!(m.render().contains("fleetpilot_kube_requests_total{verb=\"patch\"} 2"));
    }

    /// `promtool check metrics` (Debian's `prometheus` package) accepts the exposition, per-policy series
    /// included; skipped with a note where promtool is not installed.
    #[test]
    fn promtool_accepts_the_exposition() {
        let m = Metrics::new();
        m.record_policy(&gauges("llama", "reactive:queue_depth", Some(41.5)));
        m.record_shadow("llama", "llama-cheap", 4);
        m.kube_requests.with_label_values(&["get"]).inc();
        let text = m.render();
        let child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("note: promtool not found; `promtool check metrics` skipped (apt-get install prometheus)");
            return;
        };
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin.write_all(text.as_bytes()).expect("writing to promtool");
        }
        let out = child.wait_with_output().expect("promtool runs");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // promtool's lint also flags style (e.g. counters without `_total`); any problem is a failure here.
        assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
    }
}
