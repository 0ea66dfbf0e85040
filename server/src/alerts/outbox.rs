//! PagerDuty Events API v2 delivery from the outbox: at-least-once, in order per dedup key, with
//! exponential backoff and jitter, `Retry-After` honoured on 429, other 4xx recorded as permanent.
//! The routing key is added at send time: it is never stored in the database or logged.

use std::time::Duration;

use rand::Rng as _;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::config::Secret;
use crate::db;
use crate::db::alerts::Firing;
use crate::telemetry::Metrics;

/// The `trigger` event for a firing condition (without the routing key).
pub fn trigger_payload(f: &Firing, public_url: &str) -> Value {
    json!({
        "event_action": "trigger",
        "dedup_key": f.dedup_key,
        "payload": {
            "summary": f.summary,
            "source": f.source,
            "severity": f.severity,
            "component": f.component,
            "group": f.group,
            "class": f.rule,
            "custom_details": f.details,
        },
        "client": "fleetpilot",
        "client_url": public_url,
        "links": [{ "href": public_url, "text": "fleetpilot dashboard" }],
    })
}

/// The `resolve` event for a dedup key (without the routing key).
pub fn resolve_payload(dedup_key: &str) -> Value {
    json!({ "event_action": "resolve", "dedup_key": dedup_key })
}

/// Sends due deliveries.
pub struct OutboxWorker {
    pool: PgPool,
    http: reqwest::Client,
    url: String,
    routing_key: Secret,
    metrics: Metrics,
}

/// What one send attempt came to.
enum Sent {
    Ok,
    Retry { after_secs: f64, error: String },
    Permanent(String),
}

impl OutboxWorker {
    /// A worker posting to `url` with `routing_key`.
    pub fn new(pool: PgPool, url: String, routing_key: Secret, metrics: Metrics) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self { pool, http, url, routing_key, metrics }
    }

    /// Sends what is due once; returns how many deliveries were attempted.
    pub async fn drain_once(&self) -> Result<usize, sqlx::Error> {
        let due = db::alerts::claim_due(&self.pool, 20, 30).await?;
        let n = due.len();
        for d in due {
            let mut body = d.payload.clone();
            body["routing_key"] = Value::String(self.routing_key.expose().to_string());
            match self.send(&body, d.attempts).await {
                Sent::Ok => {
                    db::alerts::delivered(&self.pool, d.id).await?;
                    self.metrics.alert_deliveries.with_label_values(&["delivered"]).inc();
                    tracing::info!(key = %d.dedup_key, action = %d.action, "alert delivered");
                }
                Sent::Retry { after_secs, error } => {
                    db::alerts::failed(&self.pool, d.id, &error, false, after_secs).await?;
                    self.metrics.alert_deliveries.with_label_values(&["retry"]).inc();
                    tracing::warn!(key = %d.dedup_key, attempt = d.attempts, retry_in_secs = after_secs, %error, "alert delivery failed; will retry");
                }
                Sent::Permanent(error) => {
                    db::alerts::failed(&self.pool, d.id, &error, true, 0.0).await?;
                    self.metrics.alert_deliveries.with_label_values(&["failed"]).inc();
                    tracing::error!(key = %d.dedup_key, %error, "alert delivery refused; not retrying");
                }
            }
        }
        Ok(n)
    }

    async fn send(&self, body: &Value, attempts: i32) -> Sent {
        let backoff = || {
            let base = 2f64.powi(attempts.clamp(0, 8)).min(300.0);
            base * rand::rng().random_range(0.5..=1.0)
        };
        match self.http.post(&self.url).json(body).send().await {
            Ok(r) if r.status().is_success() => Sent::Ok,
            Ok(r) if r.status().as_u16() == 429 => {
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(|v| v.min(3600.0))
                    .unwrap_or_else(backoff);
                Sent::Retry { after_secs: after, error: "429 Too Many Requests".into() }
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                Sent::Permanent(format!("{status}: {}", text.chars().take(500).collect::<String>()))
            }
            Ok(r) => Sent::Retry { after_secs: backoff(), error: format!("{}", r.status()) },
            Err(e) => Sent::Retry { after_secs: backoff(), error: e.to_string() },
        }
    }

    /// Drains every 250 ms until `shutdown` flips.
    pub async fn run_until_stopped(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if let Err(e) = self.drain_once().await {
                tracing::warn!(error = %e, "outbox drain failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
