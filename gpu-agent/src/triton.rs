//! `rebatch` for Triton Inference Server through its model-repository API: reload the model with a config
//! override that changes only the dynamic-batching fields.
//!
//! Steps, each of which stops the command with a reason:
//! 1. `GET {triton}/v2/models/{model}/config` — the config in effect.
//! 2. Change `max_batch_size`, `dynamic_batching.max_queue_delay_microseconds` and
//!    `dynamic_batching.preferred_batch_size` (the current preferred sizes that still fit, or the new maximum
//!    when none does); everything else is sent back as read. Refused before any load: a model that does not
//!    batch (`max_batch_size` 0: its inputs have no batch dimension) or uses another scheduler (sequence
//!    batching, ensembles).
//! 3. `POST {triton}/v2/repository/models/{model}/load` with `{"parameters": {"config": "<JSON>"}}` (Triton in
//!    `--model-control-mode=explicit`). A refused load leaves the previous config serving: nothing else is sent.
//! 4. Read the config back; if it is not what was asked, load the previous config again and report that.

use std::time::Duration;

use serde_json::{Map, Value, json};

/// The largest `max_queue_delay_microseconds` accepted (matches the agent's command validation).
pub const MAX_QUEUE_DELAY_US: u64 = 10_000_000;

/// Why a Triton rebatch did not happen (or did not stick).
#[derive(Debug, thiserror::Error)]
pub enum TritonError {
    /// The agent's Triton settings are unusable.
    #[error("triton settings: {0}")]
    Settings(String),
    /// The requested values or the model's current config do not allow the change; nothing was sent.
    #[error("rebatch refused: {0}")]
    Invalid(String),
    /// Triton could not be reached or answered something unexpected.
    #[error("triton {step}: {reason}")]
    Request {
        /// What the agent was doing.
        step: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// Triton refused the load; the previous config stays in effect.
    #[error("triton refused the load (HTTP {status}): {message}; the previous config stays in effect")]
    LoadRefused {
        /// HTTP status.
        status: u16,
        /// Triton's `error` message, or the body.
        message: String,
    },
    /// The load was accepted but the config read back differs; `restored` says whether the previous config
    /// was loaded again.
    #[error("triton loaded the model but reports {found} instead of {wanted}; {restored}")]
    NotApplied {
        /// The batching asked for.
        wanted: String,
        /// The batching read back.
        found: String,
        /// Outcome of restoring the previous config.
        restored: String,
    },
}

/// The batching fields of a Triton model config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batching {
    /// `max_batch_size`.
    pub max_batch_size: u32,
    /// `dynamic_batching.max_queue_delay_microseconds`.
    pub max_queue_delay_us: u64,
    /// `dynamic_batching.preferred_batch_size`.
    pub preferred_batch_sizes: Vec<u32>,
}

impl std::fmt::Display for Batching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max_batch_size {}, max_queue_delay {} us, preferred {:?}",
            self.max_batch_size, self.max_queue_delay_us, self.preferred_batch_sizes
        )
    }
}

/// Reads the batching fields of a config; `None` for a field that is absent or not a number.
pub fn read_batching(config: &Value) -> Option<Batching> {
    let num = |v: &Value| -> Option<u64> {
        // Triton's JSON renders 64-bit fields either as numbers or as strings (protobuf JSON mapping).
        v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    let max_batch_size = u32::try_from(num(config.get("max_batch_size")?)?).ok()?;
    let db = config.get("dynamic_batching")?;
    let max_queue_delay_us = db.get("max_queue_delay_microseconds").map_or(Some(0), num)?;
    let preferred_batch_sizes = match db.get("preferred_batch_size") {
        None => Vec::new(),
        Some(v) => v.as_array()?.iter().map(|x| num(x).and_then(|n| u32::try_from(n).ok())).collect::<Option<_>>()?,
    };
    Some(Batching { max_batch_size, max_queue_delay_us, preferred_batch_sizes })
}

/// Returns `config` with only the batching fields changed, and the batching it asks for; refuses (with a
/// reason) a change Triton could not take or that would change more than batching.
pub fn with_batching(
    config: &Value,
    max_batch_size: u32,
    max_queue_delay_us: u64,
) -> Result<(Value, Batching), TritonError> {
    let invalid = |r: String| Err(TritonError::Invalid(r));
    if max_batch_size < 1 {
        return invalid("max_batch_size must be at least 1".into());
    }
    if max_queue_delay_us > MAX_QUEUE_DELAY_US {
        return invalid(format!("max_queue_delay_us must be at most {MAX_QUEUE_DELAY_US}"));
    }
    let Some(obj) = config.as_object() else {
        return invalid("the model config is not a JSON object".into());
    };
    let current = obj.get("max_batch_size").and_then(Value::as_u64).unwrap_or(0);
    if current == 0 {
        return invalid(
            "the model does not batch (max_batch_size 0: its inputs have no batch dimension); \
             enabling batching would change its input shapes"
                .into(),
        );
    }
    for other in ["sequence_batching", "ensemble_scheduling"] {
        if obj.contains_key(other) {
            return invalid(format!("the model uses {other}, which excludes dynamic batching"));
        }
    }
    let dynamic = match obj.get("dynamic_batching") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return invalid("dynamic_batching in the model config is not an object".into()),
    };
    let mut preferred: Vec<u32> = read_batching(config)
        .map(|b| b.preferred_batch_sizes)
        .unwrap_or_default()
        .into_iter()
        .filter(|&p| (1..=max_batch_size).contains(&p))
        .collect();
    preferred.sort_unstable();
    preferred.dedup();
    if preferred.is_empty() {
        preferred.push(max_batch_size);
    }
    let wanted = Batching { max_batch_size, max_queue_delay_us, preferred_batch_sizes: preferred };
    // The invariants Triton checks at load, checked here so a bad command never reaches the server.
    if wanted.preferred_batch_sizes.iter().any(|&p| p < 1 || p > wanted.max_batch_size) {
        return invalid(format!("preferred batch sizes must be within 1..={max_batch_size}"));
    }
    let mut dynamic = dynamic;
    dynamic.insert("max_queue_delay_microseconds".into(), json!(max_queue_delay_us));
    dynamic.insert("preferred_batch_size".into(), json!(wanted.preferred_batch_sizes));
    let mut out = obj.clone();
    out.insert("max_batch_size".into(), json!(max_batch_size));
    out.insert("dynamic_batching".into(), Value::Object(dynamic));
    Ok((Value::Object(out), wanted))
}

/// A Triton server and the model the agent rebatches.
#[derive(Debug, Clone)]
pub struct TritonClient {
    http: reqwest::Client,
    base: String,
    model: String,
}

/// Limit of one config read.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit of one load: a reload rebuilds the model's instances, which takes a while for large models.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(120);

impl TritonClient {
    /// A client for `model` on the Triton at `base_url` (`http://host:8000`); `load_timeout` bounds one load.
    pub fn new(base_url: &str, model: &str, load_timeout: Duration) -> Result<Self, TritonError> {
        let base = base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TritonError::Settings(format!("triton_url {base_url:?} must start with http:// or https://")));
        }
        if model.is_empty() || !model.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(TritonError::Settings(format!(
                "triton_model {model:?} must be a non-empty name of letters, digits, '-', '_' and '.'"
            )));
        }
        // reqwest is built without a default TLS provider and panics without one; installing ring is a no-op
        // when the sender (or anything else) already did.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(load_timeout)
            .build()
            .map_err(|e| TritonError::Settings(format!("HTTP client: {e}")))?;
        Ok(Self { http, base: base.to_string(), model: model.to_string() })
    }

    /// The model this client rebatches.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The model's config in effect.
    pub async fn config(&self) -> Result<Value, TritonError> {
        let url = format!("{}/v2/models/{}/config", self.base, self.model);
        let req = |reason: String| TritonError::Request { step: "reading the model config", reason };
        let resp = self.http.get(&url).timeout(READ_TIMEOUT).send().await.map_err(|e| req(e.to_string()))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| req(e.to_string()))?;
        if !status.is_success() {
            return Err(req(format!("HTTP {}: {}", status.as_u16(), error_message(&body))));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| req(format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(req("not a JSON object".into()));
        }
        Ok(v)
    }

    async fn load(&self, config: &Value) -> Result<(), TritonError> {
        let url = format!("{}/v2/repository/models/{}/load", self.base, self.model);
        let body = json!({ "parameters": { "config": config.to_string() } });
        let resp = self.http.post(&url).json(&body).send().await.map_err(|e| TritonError::Request {
            step: "loading the model",
            // A timeout leaves the outcome unknown: Triton may still finish the load.
            reason: format!("{e} (the load may still complete; the next rebatch reads the config again)"),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(TritonError::LoadRefused { status: status.as_u16(), message: error_message(&text) })
    }

    /// Applies the batching (see the module docs for the steps); the message says what changed.
    pub async fn rebatch(&self, max_batch_size: u32, max_queue_delay_us: u64) -> Result<String, TritonError> {
        let before = self.config().await?;
        let (after, wanted) = with_batching(&before, max_batch_size, max_queue_delay_us)?;
        let previous = read_batching(&before).map_or_else(|| "default batching".to_string(), |b| b.to_string());
        self.load(&after).await?;
        let found = self.config().await.map(|c| read_batching(&c));
        match found {
            Ok(Some(b)) if b == wanted => {
                Ok(format!("triton model {} now batches with {wanted} (was {previous})", self.model))
            }
            other => {
                let found = match other {
                    Ok(Some(b)) => b.to_string(),
                    Ok(None) => "no dynamic batching".into(),
                    Err(e) => format!("an unreadable config ({e})"),
                };
                let restored = match self.load(&before).await {
                    Ok(()) => format!("restored the previous config ({previous})"),
                    Err(e) => format!("restoring the previous config failed: {e}"),
                };
                Err(TritonError::NotApplied { wanted: wanted.to_string(), found, restored })
            }
        }
    }
}

/// Triton answers errors as `{"error": "..."}`; anything else is shown as it came (shortened).
fn error_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => match v.get("error").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => body.chars().take(500).collect(),
        },
        Err(_) => body.chars().take(500).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Value {
        json!({
            "name": "llama",
            "platform": "tensorrt_llm",
            "max_batch_size": 8,
            "input": [{"name": "input_ids", "data_type": "TYPE_INT32", "dims": ["-1"]}],
            "dynamic_batching": {
                "preferred_batch_size": [2, 4, 8],
                "max_queue_delay_microseconds": "100",
                "preserve_ordering": true
            },
            "instance_group": [{"count": 1, "kind": "KIND_GPU"}]
        })
    }

    #[test]
    fn only_the_batching_fields_change() {
        let before = config();
        let (after, wanted) = with_batching(&before, 4, 2500).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wanted, Batching { max_batch_size: 4, max_queue_delay_us: 2500, preferred_batch_sizes: vec![2, 4] });
        assert_eq!(read_batching(&after), Some(wanted));
        let mut expected = before.clone();
        expected["max_batch_size"] = json!(4);
        expected["dynamic_batching"]["max_queue_delay_microseconds"] = json!(2500);
        expected["dynamic_batching"]["preferred_batch_size"] = json!([2, 4]);
        assert_eq!(after, expected);
    }

    #[test]
    fn preferred_sizes_fall_back_to_the_maximum_when_none_fits() {
        let (_, wanted) = with_batching(&config(), 1, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wanted.preferred_batch_sizes, vec![1]);
        let mut no_db = config();
        no_db.as_object_mut().map(|o| o.remove("dynamic_batching"));
        let (after, wanted) = with_batching(&no_db, 16, 50).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wanted.preferred_batch_sizes, vec![16]);
        assert_eq!(
            after["dynamic_batching"],
            json!({"max_queue_delay_microseconds": 50, "preferred_batch_size": [16]})
        );
    }

    #[test]
    fn a_change_triton_could_not_take_is_refused_with_a_reason() {
        let reason = |r: Result<(Value, Batching), TritonError>| match r {
            Err(TritonError::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(reason(with_batching(&config(), 0, 100)).contains("at least 1"));
        assert!(reason(with_batching(&config(), 4, MAX_QUEUE_DELAY_US + 1)).contains("at most"));
        let mut unbatched = config();
        unbatched["max_batch_size"] = json!(0);
        assert!(reason(with_batching(&unbatched, 4, 100)).contains("does not batch"));
        let mut seq = config();
        seq["sequence_batching"] = json!({});
        assert!(reason(with_batching(&seq, 4, 100)).contains("sequence_batching"));
        assert!(reason(with_batching(&json!([1]), 4, 100)).contains("not a JSON object"));
    }

    #[test]
    fn settings_are_checked() {
        assert!(TritonClient::new("localhost:8000", "m", DEFAULT_LOAD_TIMEOUT).is_err());
        assert!(TritonClient::new("http://t:8000", "a/b", DEFAULT_LOAD_TIMEOUT).is_err());
        assert!(TritonClient::new("http://t:8000/", "llama-3.1_8b", DEFAULT_LOAD_TIMEOUT).is_ok());
    }

    #[test]
    fn triton_error_bodies_are_unwrapped() {
        assert_eq!(error_message(r#"{"error":"failed to load 'm'"}"#), "failed to load 'm'");
        assert_eq!(error_message("plain"), "plain");
    }
}
