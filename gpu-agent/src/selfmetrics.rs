//! The agent's own telemetry: counters kept in atomics by the loop and the sender, rendered as Prometheus
//! text on a small localhost `/metrics` listener.
//!
//! The atomics are the single source of truth (tests and the bench read them directly); the Prometheus
//! registry is rebuilt on each scrape, which costs microseconds every scrape interval instead of a lock on
//! every sample.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::Collector;
use prometheus::{Encoder as _, Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

/// An NVML reading that can fail on its own; the `field` label of
/// `fleetpilot_agent_nvml_read_failures_total` (a fixed set, so the series count stays bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmlField {
    /// GPU utilisation (`util_pct`).
    Util,
    /// Framebuffer used and total (one NVML call: `mem_used_bytes`, `mem_total_bytes`).
    Memory,
    /// Board power (`power_w`).
    Power,
    /// GPU temperature (`temp_c`).
    Temperature,
    /// SM clock (`sm_clock_mhz`).
    SmClock,
    /// Memory clock (`mem_clock_mhz`).
    MemClock,
    /// Clock-event reasons (`throttle_reasons`).
    ThrottleReasons,
    /// Volatile uncorrectable ECC errors (`ecc_dbe_total`).
    Ecc,
}

impl NvmlField {
    /// Every field, in label order.
    pub const ALL: [NvmlField; 8] = [
        Self::Util,
        Self::Memory,
        Self::Power,
        Self::Temperature,
        Self::SmClock,
        Self::MemClock,
        Self::ThrottleReasons,
        Self::Ecc,
    ];

    /// The `field` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Util => "util",
            Self::Memory => "memory",
            Self::Power => "power",
            Self::Temperature => "temperature",
            Self::SmClock => "sm_clock",
            Self::MemClock => "mem_clock",
            Self::ThrottleReasons => "throttle_reasons",
            Self::Ecc => "ecc",
        }
    }
}

/// NVML readings that failed (and were sent as absent), per field.
#[derive(Debug, Default)]
pub struct NvmlReadFailures([AtomicU64; NvmlField::ALL.len()]);

impl NvmlReadFailures {
    /// Counts one failed reading of `field`.
    pub fn record(&self, field: NvmlField) {
        self.0[field as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed readings of `field` so far.
    pub fn get(&self, field: NvmlField) -> u64 {
        self.0[field as usize].load(Ordering::Relaxed)
    }
}

/// Counters and gauges the agent keeps about itself.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Batches acknowledged by the control plane (live or replayed).
    pub batches_acked: AtomicU64,
    /// GPU samples collected.
    pub gpu_samples: AtomicU64,
    /// Serving samples collected.
    pub serving_samples: AtomicU64,
    /// Samples in acknowledged batches.
    pub samples_sent: AtomicU64,
    /// Samples written to the spool because a live send failed (or older batches were waiting).
    pub samples_spooled: AtomicU64,
    /// Batches written to the spool.
    pub batches_spooled: AtomicU64,
    /// Samples dropped because the spool was full (oldest first).
    pub samples_dropped_spool_full: AtomicU64,
    /// Batches dropped because the spool was full.
    pub batches_dropped_spool_full: AtomicU64,
    /// Samples in batches the server refused (4xx other than 429).
    pub samples_dropped_refused: AtomicU64,
    /// Batches the server refused.
    pub batches_refused: AtomicU64,
    /// Samples dropped because the spool could not be written (I/O error, batch larger than the spool).
    pub samples_dropped_spool_error: AtomicU64,
    /// Failed send attempts (network errors, 5xx, 429).
    pub send_failures: AtomicU64,
    /// Torn or corrupt spool records skipped.
    pub spool_torn_records: AtomicU64,
    /// Bytes in the spool now.
    pub spool_bytes: AtomicU64,
    /// Batches in the spool now.
    pub spool_batches: AtomicU64,
    /// Scrape errors (request failures and unreadable lines).
    pub scrape_errors: AtomicU64,
    /// Commands applied successfully.
    pub commands_ok: AtomicU64,
    /// Commands rejected or failed.
    pub commands_failed: AtomicU64,
    /// Unix ms of the last acknowledged send; 0 before the first.
    pub last_send_ms: AtomicU64,
    /// Commands received through the long poll.
    pub commands_polled: AtomicU64,
    /// Long polls that failed (network, 5xx, auth) and were retried after a backoff.
    pub command_poll_errors: AtomicU64,
    /// NVML readings that failed, by field: each one went out as an absent reading, never as 0.
    pub nvml_read_failures: NvmlReadFailures,
}

impl AgentStats {
    /// Samples collected, GPU and serving together.
    pub fn samples_collected(&self) -> u64 {
        self.gpu_samples.load(Ordering::Relaxed) + self.serving_samples.load(Ordering::Relaxed)
    }

    /// The stats in the Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let r = Registry::new();
        let counter = |name: &str, help: &str, v: u64| -> Result<(), prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            c.inc_by(v);
            register(&r, c)
        };
        let labelled = |name: &str, help: &str, label: &str, values: &[(&str, u64)]| -> Result<(), prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            for (l, v) in values {
                c.with_label_values(&[*l]).inc_by(*v);
            }
            register(&r, c)
        };
        let gauge = |name: &str, help: &str, v: u64| -> Result<(), prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            register(&r, g)
        };
        labelled(
            "fleetpilot_agent_samples_collected_total",
            "Samples collected, by kind.",
            "kind",
            &[("gpu", get(&self.gpu_samples)), ("serving", get(&self.serving_samples))],
        )?;
        counter(
            "fleetpilot_agent_samples_sent_total",
            "Samples in batches the control plane acknowledged.",
            get(&self.samples_sent),
        )?;
        counter(
            "fleetpilot_agent_samples_spooled_total",
            "Samples written to the spool while the control plane was unavailable.",
            get(&self.samples_spooled),
        )?;
        labelled(
            "fleetpilot_agent_samples_dropped_total",
            "Samples dropped, by reason.",
            "reason",
            &[
                ("spool_full", get(&self.samples_dropped_spool_full)),
                ("refused", get(&self.samples_dropped_refused)),
                ("spool_error", get(&self.samples_dropped_spool_error)),
            ],
        )?;
        counter(
            "fleetpilot_agent_batches_sent_total",
            "Batches the control plane acknowledged.",
            get(&self.batches_acked),
        )?;
        counter("fleetpilot_agent_batches_spooled_total", "Batches written to the spool.", get(&self.batches_spooled))?;
        labelled(
            "fleetpilot_agent_batches_dropped_total",
            "Batches dropped, by reason.",
            "reason",
            &[("spool_full", get(&self.batches_dropped_spool_full)), ("refused", get(&self.batches_refused))],
        )?;
        counter(
            "fleetpilot_agent_send_failures_total",
            "Send attempts that failed and will be retried.",
            get(&self.send_failures),
        )?;
        counter(
            "fleetpilot_agent_spool_torn_records_total",
            "Torn or corrupt spool records skipped.",
            get(&self.spool_torn_records),
        )?;
        gauge("fleetpilot_agent_spool_bytes", "Bytes in the spool.", get(&self.spool_bytes))?;
        gauge("fleetpilot_agent_spool_batches", "Batches waiting in the spool.", get(&self.spool_batches))?;
        counter("fleetpilot_agent_scrape_errors_total", "Serving-engine scrape errors.", get(&self.scrape_errors))?;
        counter(
            "fleetpilot_agent_commands_polled_total",
            "Commands received through the long poll.",
            get(&self.commands_polled),
        )?;
        counter(
            "fleetpilot_agent_command_poll_errors_total",
            "Long polls for commands that failed and were retried.",
            get(&self.command_poll_errors),
        )?;
        labelled(
            "fleetpilot_agent_command_results_total",
            "Commands executed, by result.",
            "result",
            &[("ok", get(&self.commands_ok)), ("failed", get(&self.commands_failed))],
        )?;
        let failures: Vec<(&str, u64)> =
            NvmlField::ALL.iter().map(|f| (f.label(), self.nvml_read_failures.get(*f))).collect();
        labelled(
            "fleetpilot_agent_nvml_read_failures_total",
            "NVML readings that failed and were reported as absent, by field.",
            "field",
            &failures,
        )?;
        let last = Gauge::new(
            "fleetpilot_agent_last_successful_send_timestamp_seconds",
            "Unix time of the last acknowledged batch (0 before the first).",
        )?;
        last.set(get(&self.last_send_ms) as f64 / 1000.0);
        register(&r, last)?;
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

fn register<C: Collector + 'static>(r: &Registry, c: C) -> Result<(), prometheus::Error> {
    r.register(Box::new(c))
}

/// Parses the `metrics_addr` setting: `"0"` (or empty) disables the listener.
pub fn parse_metrics_addr(s: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
    let s = s.trim();
    if s.is_empty() || s == "0" { Ok(None) } else { s.parse().map(Some) }
}

/// Binds the `/metrics` listener now (so a taken port fails start-up) and serves it until `shutdown` flips.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<AgentStats>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((conn, _)) = accepted else { continue };
                    tokio::spawn(answer(conn, stats.clone()));
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break; }
                }
            }
        }
    });
    Ok((local, handle))
}

/// One HTTP/1.x exchange; a hand-rolled listener keeps a web framework's threads and buffers out of an agent
/// whose budget is 20 MB.
async fn answer(mut conn: tokio::net::TcpStream, stats: Arc<AgentStats>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => match stats.render() {
            Ok(text) => ("200 OK", "text/plain; version=0.0.4", text),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        },
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        _ => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}
