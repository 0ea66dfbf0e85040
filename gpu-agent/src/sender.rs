//! Delivers batches to the control plane in order, spooling them while it is unreachable.
//!
//! While the server answers and nothing waits, a batch is POSTed straight from memory (no disk I/O on the
//! healthy path). When a send fails with a network error, a 5xx or a 429, the batch goes to the
//! [`Spool`] (on disk when a directory is configured), and so does every later batch until the spool is empty
//! again, which keeps delivery in sequence order. The spool is replayed oldest first after an exponential
//! backoff with jitter (or the server's `Retry-After` on 429/503); a batch leaves it only once the server
//! acknowledged it. A 4xx other than 429 means the batch itself is bad: it is dropped with its reason and
//! counted, never retried.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng as _;

use crate::protocol::{Batch, BatchAck, CONTENT_TYPE_JSON};
use crate::selfmetrics::AgentStats;
use crate::spool::{Spool, SpoolConfig, SpoolError};

/// Why a send did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Network trouble, a 5xx or a 429: try again after the delay.
    #[error("server unavailable ({reason}); retrying in {retry_in:?}")]
    Retry {
        /// What happened.
        reason: String,
        /// Wait before the next try.
        retry_in: Duration,
    },
    /// The server refused the batch (4xx other than 429).
    #[error("batch {seq} refused by the server: {status} {body}")]
    Refused {
        /// Sequence number.
        seq: u64,
        /// HTTP status.
        status: u16,
        /// Response body (the server names the field).
        body: String,
    },
}

/// Sender settings.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Control-plane base URL, e.g. `http://127.0.0.1:8080`.
    pub server_url: String,
    /// Agent bearer token.
    pub token: String,
    /// Where batches wait while the server is unavailable.
    pub spool: SpoolConfig,
    /// Limit of one upload, connection included.
    pub request_timeout: Duration,
    /// Waits between failed sends.
    pub backoff: Backoff,
    /// PEM CA bundle the server's certificate must chain to; `None`: the platform's roots.
    pub server_ca: Option<Arc<Vec<u8>>>,
}

/// Exponential backoff with jitter: the n-th consecutive failure waits `min(initial * 2^(n-1), max)`, times
/// a random factor in 0.5..=1 so a fleet that lost its control plane does not come back in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure (before jitter).
    pub initial: Duration,
    /// Longest wait (before jitter).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(30) }
    }
}

/// The sender.
pub struct Sender {
    cfg: SenderConfig,
    url: String,
    http: reqwest::Client,
    spool: Spool,
    failures: u32,
    not_before: Option<Instant>,
    stats: Arc<AgentStats>,
}

impl Sender {
    /// A sender over the configured spool (indexing what a previous run left there); installs the ring crypto
    /// provider for HTTPS if none is installed yet.
    pub fn new(cfg: SenderConfig, stats: Arc<AgentStats>) -> Result<Self, SpoolError> {
        let http = crate::tls::client(
            reqwest::Client::builder()
                .timeout(cfg.request_timeout)
                .connect_timeout(cfg.request_timeout.min(Duration::from_secs(3))),
            cfg.server_ca.as_deref().map(Vec::as_slice),
        );
        let (spool, recovered) = Spool::open(&cfg.spool)?;
        if recovered.batches > 0 || recovered.torn_records > 0 {
            tracing::info!(
                batches = recovered.batches,
                torn_records = recovered.torn_records,
                bytes = spool.bytes(),
                "spool holds batches from a previous run; replaying them first"
            );
        }
        stats.spool_torn_records.fetch_add(recovered.torn_records, Ordering::Relaxed);
        let url = format!("{}/api/v1/ingest", cfg.server_url.trim_end_matches('/'));
        let s = Self { cfg, url, http, spool, failures: 0, not_before: None, stats };
        s.update_gauges();
        Ok(s)
    }

    /// Batches waiting in the spool.
    pub fn queued(&self) -> usize {
        self.spool.len()
    }

    /// The highest sequence number this sender has seen acknowledged or spooled, across restarts.
    pub fn max_seq(&self) -> u64 {
        self.spool.max_seq()
    }

    /// Delivers `batch` (live when possible, else through the spool), then replays the spool for at most
    /// `budget`. Returns the acknowledgements received, oldest first, so their commands can be executed.
    pub async fn deliver(&mut self, batch: &Batch, budget: Duration) -> Vec<BatchAck> {
        let started = Instant::now();
        let samples = u32::try_from(batch.gpus.len() + batch.serving.len()).unwrap_or(u32::MAX);
        let body = match serde_json::to_vec(batch) {
            Ok(b) => b,
            Err(e) => {
                // Not expected (plain data); counted rather than crashing the agent.
                tracing::error!(seq = batch.seq, error = %e, "batch could not be encoded; dropped");
                self.stats.samples_dropped_spool_error.fetch_add(u64::from(samples), Ordering::Relaxed);
                return Vec::new();
            }
        };
        let mut acks = Vec::new();
        if self.spool.is_empty() && self.ready() {
            match self.post(batch.seq, body.clone()).await {
                Ok(ack) => {
                    self.acknowledged(batch.seq, samples);
                    acks.push(ack);
                    return acks;
                }
                Err(e @ SendError::Refused { .. }) => {
                    self.refused(&e, samples);
                    return acks;
                }
                Err(SendError::Retry { reason, retry_in }) => self.backoff(&reason, retry_in),
            }
        }
        self.spool_batch(batch.seq, samples, &body);
        if self.ready() {
            self.replay(started + budget, &mut acks).await;
        }
        acks
    }

    /// Replays the spool until it is empty, the server fails, or `deadline` passes.
    pub async fn replay(&mut self, deadline: Instant, acks: &mut Vec<BatchAck>) {
        while Instant::now() < deadline {
            let record = match self.spool.front() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "spool unreadable; will retry");
                    self.backoff("spool read error", Duration::from_secs(1));
                    break;
                }
            };
            self.sync_torn();
            match self.post(record.seq, record.body).await {
                Ok(ack) => {
                    self.acknowledged(record.seq, record.samples);
                    acks.push(ack);
                }
                Err(e @ SendError::Refused { .. }) => {
                    self.refused(&e, record.samples);
                    self.ack_spool(record.seq);
                }
                Err(SendError::Retry { reason, retry_in }) => {
                    self.backoff(&reason, retry_in);
                    break;
                }
            }
        }
        self.update_gauges();
    }

    fn ready(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    fn backoff(&mut self, reason: &str, retry_in: Duration) {
        self.stats.send_failures.fetch_add(1, Ordering::Relaxed);
        self.not_before = Some(Instant::now() + retry_in);
        tracing::warn!(%reason, spooled = self.spool.len(), ?retry_in, "control plane unavailable; spooling batches");
    }

    fn acknowledged(&mut self, seq: u64, samples: u32) {
        self.failures = 0;
        self.not_before = None;
        self.stats.batches_acked.fetch_add(1, Ordering::Relaxed);
        self.stats.samples_sent.fetch_add(u64::from(samples), Ordering::Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.stats.last_send_ms.store(now_ms, Ordering::Relaxed);
        self.ack_spool(seq);
    }

    fn ack_spool(&mut self, seq: u64) {
        if let Err(e) = self.spool.ack(seq) {
            // The batch may be sent again after a restart; the server recognises it by (agent_id, seq).
            tracing::warn!(seq, error = %e, "could not record the acknowledgement in the spool");
        }
        self.update_gauges();
    }

    fn refused(&mut self, e: &SendError, samples: u32) {
        self.stats.batches_refused.fetch_add(1, Ordering::Relaxed);
        self.stats.samples_dropped_refused.fetch_add(u64::from(samples), Ordering::Relaxed);
        tracing::error!(error = %e, "batch dropped");
    }

    fn spool_batch(&mut self, seq: u64, samples: u32, body: &[u8]) {
        match self.spool.append(seq, samples, body) {
            Ok(dropped) => {
                self.stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                self.stats.samples_spooled.fetch_add(u64::from(samples), Ordering::Relaxed);
                if dropped.batches > 0 {
                    let total = self.stats.batches_dropped_spool_full.fetch_add(dropped.batches, Ordering::Relaxed)
                        + dropped.batches;
                    self.stats.samples_dropped_spool_full.fetch_add(dropped.samples, Ordering::Relaxed);
                    tracing::warn!(
                        batches = dropped.batches,
                        samples = dropped.samples,
                        dropped_batches_total = total,
                        limit_bytes = self.cfg.spool.max_bytes,
                        "spool full; dropped the oldest batches"
                    );
                }
            }
            Err(e) => {
                self.stats.samples_dropped_spool_error.fetch_add(u64::from(samples), Ordering::Relaxed);
                tracing::error!(seq, error = %e, "batch could not be spooled; dropped");
            }
        }
        self.update_gauges();
    }

    fn sync_torn(&self) {
        let counted = self.stats.spool_torn_records.load(Ordering::Relaxed);
        let now = self.spool.torn_records();
        if now > counted {
            self.stats.spool_torn_records.store(now, Ordering::Relaxed);
        }
    }

    fn update_gauges(&self) {
        self.stats.spool_bytes.store(self.spool.bytes(), Ordering::Relaxed);
        self.stats.spool_batches.store(self.spool.len() as u64, Ordering::Relaxed);
    }

    fn retry_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let b = self.cfg.backoff;
        let base = b.initial.as_secs_f64() * 2f64.powi(self.failures.saturating_sub(1).min(20) as i32);
        Duration::from_secs_f64(base.min(b.max.as_secs_f64()) * rand::rng().random_range(0.5..=1.0))
    }

    /// POSTs one encoded batch.
    async fn post(&mut self, seq: u64, body: Vec<u8>) -> Result<BatchAck, SendError> {
        let res = self
            .http
            .post(&self.url)
            .bearer_auth(&self.cfg.token)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_JSON)
            .body(body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => match r.json::<BatchAck>().await {
                Ok(ack) => {
                    if ack.seq != seq {
                        tracing::warn!(sent = seq, acked = ack.seq, "acknowledgement names another sequence number");
                    }
                    Ok(ack)
                }
                Err(e) => Err(SendError::Retry {
                    reason: format!("unreadable acknowledgement: {e}"),
                    retry_in: self.retry_delay(),
                }),
            },
            Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {
                let status = r.status();
                let after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(|v| Duration::from_secs_f64(v.min(300.0)));
                let delay = self.retry_delay();
                Err(SendError::Retry { reason: status.to_string(), retry_in: after.unwrap_or(delay) })
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                Err(SendError::Refused { seq, status, body })
            }
            Ok(r) => Err(SendError::Retry { reason: r.status().to_string(), retry_in: self.retry_delay() }),
            Err(e) => Err(SendError::Retry { reason: e.to_string(), retry_in: self.retry_delay() }),
        }
    }
}
