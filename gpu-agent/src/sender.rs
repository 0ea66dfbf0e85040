//! Delivers batches to the control plane in order, holding them while it is unreachable.
//!
//! Batches wait in a bounded queue (oldest dropped first, counted and logged, when full); each is retried
//! until acknowledged, with exponential backoff and jitter on errors and the server's `Retry-After` honoured
//! on 429/503. A 4xx other than 429 means the batch itself is bad: it is dropped with its reason.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng as _;

use crate::protocol::{Batch, BatchAck};

/// Why a send did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Network trouble or a 5xx: try again after the delay.
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
    /// Batches held while the server is unreachable.
    pub max_queued: usize,
}

/// The sender.
pub struct Sender {
    cfg: SenderConfig,
    http: reqwest::Client,
    queue: VecDeque<Batch>,
    failures: u32,
    /// Batches dropped because the queue was full.
    pub dropped: u64,
}

impl Sender {
    /// A sender; installs the ring crypto provider for HTTPS if none is installed yet.
    pub fn new(cfg: SenderConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Self { cfg, http, queue: VecDeque::new(), failures: 0, dropped: 0 }
    }

    /// Queues a batch for delivery.
    pub fn push(&mut self, b: Batch) {
        if self.queue.len() >= self.cfg.max_queued.max(1)
            && let Some(old) = self.queue.pop_front()
        {
            self.dropped += 1;
            tracing::warn!(seq = old.seq, dropped_total = self.dropped, "send queue full; dropped the oldest batch");
        }
        self.queue.push_back(b);
    }

    /// Batches waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Sends the oldest waiting batch; `Ok(None)` when nothing waits.
    pub async fn send_next(&mut self) -> Result<Option<BatchAck>, SendError> {
        let Some(batch) = self.queue.front() else { return Ok(None) };
        let url = format!("{}/api/v1/ingest", self.cfg.server_url.trim_end_matches('/'));
        let res = self.http.post(&url).bearer_auth(&self.cfg.token).json(batch).send().await;
        let backoff = |failures: u32| {
            let base = 0.5 * 2f64.powi(failures.min(6) as i32);
            Duration::from_secs_f64(base.min(30.0) * rand::rng().random_range(0.5..=1.0))
        };
        match res {
            Ok(r) if r.status().is_success() => match r.json::<BatchAck>().await {
                Ok(ack) => {
                    self.queue.pop_front();
                    self.failures = 0;
                    Ok(Some(ack))
                }
                Err(e) => {
                    self.failures += 1;
                    Err(SendError::Retry {
                        reason: format!("unreadable acknowledgement: {e}"),
                        retry_in: backoff(self.failures),
                    })
                }
            },
            Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {
                self.failures += 1;
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(|v| Duration::from_secs_f64(v.min(300.0)))
                    .unwrap_or_else(|| backoff(self.failures));
                Err(SendError::Retry { reason: format!("{}", r.status()), retry_in: after })
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                let seq = self.queue.pop_front().map_or(0, |b| b.seq);
                Err(SendError::Refused { seq, status, body })
            }
            Ok(r) => {
                self.failures += 1;
                Err(SendError::Retry { reason: format!("{}", r.status()), retry_in: backoff(self.failures) })
            }
            Err(e) => {
                self.failures += 1;
                Err(SendError::Retry { reason: e.to_string(), retry_in: backoff(self.failures) })
            }
        }
    }
}
