//! Delivery from the outbox to PagerDuty Events API v2 and generic JSON webhooks: at-least-once, in order
//! per receiver and dedup key, exponential backoff with jitter, `Retry-After` honoured on 429, other 4xx
//! recorded as permanent. Secrets (the routing key, webhook secrets) are added at send time: they are never
//! stored in the outbox, logged, or kept in a recorded error.
//!
//! Webhooks get `X-Fleetpilot-Timestamp: <unix seconds>` and
//! `X-Fleetpilot-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use super::rules::IncidentView;
use crate::config::{AlertSettings, Secret, Settings};
use crate::db;
use crate::db::alerts::Delivery;
use crate::telemetry::Metrics;

/// The PagerDuty receiver's name in the outbox.
pub const PAGERDUTY: &str = "pagerduty";
/// Prefix of a webhook receiver's name in the outbox (`webhook:<name>`).
pub const WEBHOOK_PREFIX: &str = "webhook:";
/// Header carrying the webhook signature.
pub const SIGNATURE_HEADER: &str = "x-fleetpilot-signature";
/// Header carrying the signed timestamp.
pub const TIMESTAMP_HEADER: &str = "x-fleetpilot-timestamp";

/// The PagerDuty `trigger` event of an incident (without the routing key).
pub fn trigger_payload(dedup_key: &str, v: &IncidentView, public_url: &str) -> Value {
    let dashboard = format!("{}/", public_url.trim_end_matches('/'));
    json!({
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": v.summary,
            "source": v.source,
            "severity": v.severity.as_str(),
            "component": v.component,
            "group": v.group,
            "class": v.class,
            "custom_details": v.details,
        },
        "client": "fleetpilot",
        "client_url": dashboard,
        "links": [{ "href": dashboard, "text": "fleetpilot dashboard" }],
    })
}

/// The PagerDuty `resolve` event of a dedup key (without the routing key).
pub fn resolve_payload(dedup_key: &str) -> Value {
    json!({ "event_action": "resolve", "dedup_key": dedup_key })
}

/// The generic webhook event: `trigger` with the incident, or `resolve`.
pub fn webhook_payload(action: &str, dedup_key: &str, v: Option<&IncidentView>, public_url: &str) -> Value {
    let dashboard = format!("{}/", public_url.trim_end_matches('/'));
    let mut body = json!({
        "version": 1,
        "event": action,
        "dedup_key": dedup_key,
        "dashboard_url": dashboard,
        "at": chrono::Utc::now(),
    });
    if let Some(v) = v {
        body["incident"] = json!({
            "group": v.group,
            "severity": v.severity.as_str(),
            "summary": v.summary,
            "source": v.source,
            "component": v.component,
            "class": v.class,
            "details": v.details,
        });
    }
    body
}

/// HMAC-SHA256 (RFC 2104) over `msg` with `key` (the `hmac` crate; any key length is valid).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    match hmac::Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(msg);
            mac.finalize().into_bytes().into()
        }
        // HMAC takes keys of every length; this arm is unreachable in practice.
        Err(_) => [0; 32],
    }
}

/// The signature header value of a webhook body sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut msg = format!("{timestamp}.").into_bytes();
    msg.extend_from_slice(body);
    format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), &msg)))
}

/// Sends due deliveries.
pub struct OutboxWorker {
    pool: PgPool,
    http: reqwest::Client,
    pagerduty_url: String,
    routing_key: Secret,
    webhooks: HashMap<String, (String, Secret)>,
    settings: AlertSettings,
    metrics: Metrics,
    wake: Arc<Notify>,
}

/// What one send attempt came to.
enum Sent {
    Ok(u16),
    Retry { after_secs: f64, error: String, status: Option<u16> },
    Permanent { error: String, status: Option<u16> },
}

/// Deliveries claimed per round (sent concurrently: at most one per receiver and dedup key).
const BATCH: i64 = 64;

impl OutboxWorker {
    /// A worker for the receivers in `settings`; `wake` hurries it when the engine queued something.
    pub fn new(pool: PgPool, settings: &Settings, metrics: Metrics, wake: Arc<Notify>) -> Self {
        let a = &settings.alerts;
        // reqwest is built without a default TLS provider; a library caller may not have installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(a.delivery_timeout_secs))
            .connect_timeout(Duration::from_secs_f64(a.delivery_timeout_secs.min(5.0)))
            // A redirect would take a delivery past the target check (e.g. to 169.254.169.254).
            .redirect(reqwest::redirect::Policy::none());
        if !a.webhook_allow_private {
            builder = builder.dns_resolver(Arc::new(super::targets::DenyPrivate));
        }
        // A client without our policies must never be used: fall back to one that does not redirect.
        let http = builder.build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "building the delivery client failed; using a plain one without redirects");
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default()
        });
        let webhooks = settings.webhooks.iter().map(|w| (w.name.clone(), (w.url.clone(), w.secret.clone()))).collect();
        Self {
            pool,
            http,
            pagerduty_url: settings.pagerduty.url.clone(),
            routing_key: settings.pagerduty.routing_key.clone(),
            webhooks,
            settings: a.clone(),
            metrics,
            wake,
        }
    }

    /// Sends what is due once; returns how many deliveries were attempted.
    pub async fn drain_once(&self) -> Result<usize, sqlx::Error> {
        let lease = self.settings.delivery_timeout_secs + 30.0;
        let given_up = db::alerts::give_up_stale(&self.pool, self.settings.delivery_give_up_secs).await?;
        if given_up > 0 {
            self.metrics.alert_deliveries.with_label_values(&["given_up"]).inc_by(given_up);
            tracing::error!(
                deliveries = given_up,
                after_secs = self.settings.delivery_give_up_secs,
                "alert deliveries given up: undelivered for too long"
            );
        }
        let due = db::alerts::claim_due(&self.pool, BATCH, lease).await?;
        let results = futures_util::future::join_all(due.iter().map(|d| self.attempt(d))).await;
        for (d, sent) in due.iter().zip(results) {
            match sent {
                Sent::Ok(status) => {
                    db::alerts::delivered(&self.pool, d.id, status).await?;
                    self.metrics.alert_deliveries.with_label_values(&["delivered"]).inc();
                    tracing::info!(key = %d.dedup_key, receiver = %d.receiver, action = %d.action, "alert delivered");
                }
                Sent::Retry { after_secs, error, status } => {
                    db::alerts::failed(&self.pool, d.id, &error, status, false, after_secs).await?;
                    self.metrics.alert_deliveries.with_label_values(&["retry"]).inc();
                    tracing::warn!(key = %d.dedup_key, receiver = %d.receiver, attempt = d.attempts, retry_in_secs = after_secs, %error, "alert delivery failed; will retry");
                }
                Sent::Permanent { error, status } => {
                    db::alerts::failed(&self.pool, d.id, &error, status, true, 0.0).await?;
                    self.metrics.alert_deliveries.with_label_values(&["failed"]).inc();
                    tracing::error!(key = %d.dedup_key, receiver = %d.receiver, %error, "alert delivery refused; not retrying");
                }
            }
        }
        Ok(due.len())
    }

    async fn attempt(&self, d: &Delivery) -> Sent {
        if d.receiver == PAGERDUTY {
            if self.routing_key.is_empty() {
                return Sent::Permanent { error: "no PagerDuty routing key is configured".into(), status: None };
            }
            let mut body = d.payload.clone();
            body["routing_key"] = Value::String(self.routing_key.expose().to_string());
            let req = self.http.post(&self.pagerduty_url).json(&body);
            return self.send(req, d.attempts, self.routing_key.expose()).await;
        }
        let Some(name) = d.receiver.strip_prefix(WEBHOOK_PREFIX) else {
            return Sent::Permanent { error: format!("unknown receiver {}", d.receiver), status: None };
        };
        let (url, secret) = match self.webhooks.get(name) {
            Some((u, s)) => (u.clone(), s.expose().to_string()),
            None => match db::alerts::webhook_target(&self.pool, name).await {
                Ok(Some(t)) => t,
                Ok(None) => return Sent::Permanent { error: "the webhook receiver was removed".into(), status: None },
                Err(e) => return self.retry(d.attempts, format!("looking up the receiver: {e}"), None),
            },
        };
        // Checked at every delivery (a settings file or an old row may name an internal target).
        if let Err(e) = super::targets::check(&url, self.settings.webhook_allow_private).await {
            return Sent::Permanent { error: format!("webhook target refused: {e}"), status: None };
        }
        let body = match serde_json::to_vec(&d.payload) {
            Ok(b) => b,
            Err(e) => return Sent::Permanent { error: format!("encoding: {e}"), status: None },
        };
        let ts = chrono::Utc::now().timestamp();
        let req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, signature(&secret, ts, &body))
            .header("x-fleetpilot-event", d.action.as_str())
            .header("x-fleetpilot-delivery", d.id.to_string())
            .body(body);
        self.send(req, d.attempts, &secret).await
    }

    fn backoff(&self, attempts: i32) -> f64 {
        let a = &self.settings;
        let base = (a.retry_base_secs * 2f64.powi((attempts - 1).clamp(0, 30))).min(a.retry_max_secs);
        base * rand::rng().random_range(0.5..=1.0)
    }

    fn retry(&self, attempts: i32, error: String, status: Option<u16>) -> Sent {
        Sent::Retry { after_secs: self.backoff(attempts), error, status }
    }

    async fn send(&self, req: reqwest::RequestBuilder, attempts: i32, secret: &str) -> Sent {
        // Receivers may echo what they were sent; keep the secret out of what is stored and logged.
        let redact = |s: String| if secret.is_empty() { s } else { s.replace(secret, "<redacted>") };
        match req.send().await {
            Ok(r) if r.status().is_success() => Sent::Ok(r.status().as_u16()),
            Ok(r) if r.status().as_u16() == 429 => {
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
                    .map(|v| v.min(3600.0))
                    .unwrap_or_else(|| self.backoff(attempts));
                Sent::Retry { after_secs: after, error: "429 Too Many Requests".into(), status: Some(429) }
            }
            Ok(r) if r.status().is_redirection() => Sent::Permanent {
                error: format!("{}: redirects are not followed", r.status()),
                status: Some(r.status().as_u16()),
            },
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let error = redact(format!("{status}: {}", text.chars().take(500).collect::<String>()));
                Sent::Permanent { error, status: Some(status.as_u16()) }
            }
            Ok(r) => self.retry(attempts, r.status().to_string(), Some(r.status().as_u16())),
            // Without the URL: a webhook URL may itself carry a token.
            Err(e) => self.retry(attempts, redact(e.without_url().to_string()), None),
        }
    }

    /// Drains until nothing is due, then waits 250 ms (or a wake-up) until `shutdown` flips.
    pub async fn run_until_stopped(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            match self.drain_once().await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox drain failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// `Retry-After` as seconds: delta-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<f64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then_some(s);
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(((at.timestamp_millis() - chrono::Utc::now().timestamp_millis()) as f64 / 1000.0).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(3.0));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0.0));
    }
}
