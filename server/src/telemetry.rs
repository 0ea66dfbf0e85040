//! The control plane's own Prometheus metrics (`fleetpilot_<thing>_<unit>`, low-cardinality labels) and
//! the tracing subscriber.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Metrics of one server process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Batches by outcome: stored, duplicate, rejected, busy, error.
    pub ingest_batches: IntCounterVec,
    /// Metric values stored.
    pub ingest_samples: IntCounter,
    /// Seconds to store one batch.
    pub ingest_seconds: Histogram,
    /// Control-loop ticks run as leader.
    pub control_ticks: IntCounter,
    /// Seconds per control-loop tick.
    pub control_tick_seconds: Histogram,
    /// Decisions by outcome: applied, unchanged, dry_run, failed.
    pub decisions: IntCounterVec,
    /// 1 while this replica leads the control loop.
    pub leader: IntGauge,
    /// Alert deliveries by outcome: delivered, retry, failed.
    pub alert_deliveries: IntCounterVec,
    /// Commands handed to agents, by path: poll (long poll) or upload (upload acknowledgement).
    pub commands_delivered: IntCounterVec,
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
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 9] = [
            Box::new(m.ingest_batches.clone()),
            Box::new(m.ingest_samples.clone()),
            Box::new(m.ingest_seconds.clone()),
            Box::new(m.control_ticks.clone()),
            Box::new(m.control_tick_seconds.clone()),
            Box::new(m.decisions.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.alert_deliveries.clone()),
            Box::new(m.commands_delivered.clone()),
        ];
        for c in collectors {
            // Names are unique constants: registration cannot fail.
            let _ = m.registry.register(c);
        }
        // Expose every outcome from the start, so rates work before the first event.
        for o in ["stored", "duplicate", "rejected", "busy"] {
            m.ingest_batches.with_label_values(&[o]);
        }
        for o in ["applied", "unchanged", "dry_run", "failed"] {
            m.decisions.with_label_values(&[o]);
        }
        for o in ["delivered", "retry", "failed"] {
            m.alert_deliveries.with_label_values(&[o]);
        }
        for p in ["poll", "upload"] {
            m.commands_delivered.with_label_values(&[p]);
        }
        m
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
