//! The agent's settings: built-in defaults, then a TOML file (`--config`), then `FLEETPILOT_*` environment
//! variables and command-line flags (clap merges those two, flags winning). Keys of the file are the flag
//! names with underscores (`--spool-max-bytes` is `spool_max_bytes`); unknown keys are an error.
//! [`Settings::resolve`] validates everything at start-up and names the option at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::agent::{AgentConfig, AgentOptions, GpuSourceKind, SimSettings};
use crate::spool::SpoolConfig;

/// Default address of the agent's own `/metrics`.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9478";
/// Default spool size limit: 256 MiB, about a day of 1 s batches from an 8-GPU node with two engines.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 << 20;

/// Every setting of `fleetpilot-agent run`, as the merged file, environment and flags give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Control-plane base URL (required).
    pub server_url: Option<String>,
    /// Agent bearer token (required).
    pub token: Option<String>,
    /// PEM CA bundle the control plane's certificate must chain to (a private CA); only it is trusted. Unset:
    /// the platform's roots.
    pub server_ca_file: Option<PathBuf>,
    /// Node identity; defaults to the host name.
    pub agent_id: Option<String>,
    /// Seconds between samples and uploads; commands reach the agent within one interval.
    pub interval_secs: f64,
    /// Agent group.
    pub group: Option<String>,
    /// Deployment served on this node, `namespace/name`.
    pub deployment: Option<String>,
    /// GPU telemetry source.
    pub gpu_source: GpuSourceKind,
    /// Serving-engine `/metrics` URLs.
    pub engine_urls: Vec<String>,
    /// Shell command applying a rebatch to a real engine.
    pub rebatch_hook: Option<String>,
    /// Triton base URL for rebatching through the model-repository API.
    pub triton_url: Option<String>,
    /// Triton model that rebatch changes.
    pub triton_model: Option<String>,
    /// On-disk spool directory; unset keeps batches in memory only.
    pub spool_dir: Option<PathBuf>,
    /// Spool size limit, bytes.
    pub spool_max_bytes: u64,
    /// Batches held in memory when there is no spool directory.
    pub max_queued: usize,
    /// Address of the agent's own `/metrics`; `"0"` disables it.
    pub metrics_addr: String,
    /// Limit of one upload, seconds.
    pub request_timeout_secs: f64,
    /// Longest wait of one command long poll, seconds; 0 takes commands only from upload replies.
    pub command_poll_secs: u64,
    /// Simulator: GPUs on this node.
    pub sim_gpus: u32,
    /// Simulator: trace CSV.
    pub sim_trace: Option<PathBuf>,
    /// Simulator: trace seconds per wall second.
    pub sim_speedup: f64,
    /// Simulator: this node's index in its group.
    pub sim_node_index: u32,
    /// Simulator: nodes in the group.
    pub sim_nodes: u32,
    /// Simulator: group replicas at start.
    pub sim_replicas: u32,
    /// Simulator: replica cold start, trace seconds.
    pub sim_cold_start_secs: f64,
    /// Simulator: replica speed relative to the reference replica (1000 prompt + 100 output tokens/s).
    pub sim_replica_speed: f64,
    /// Simulator: shared trace start, Unix ms.
    pub sim_epoch_ms: Option<i64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server_url: None,
            server_ca_file: None,
            token: None,
            agent_id: None,
            interval_secs: 1.0,
            group: None,
            deployment: None,
            gpu_source: GpuSourceKind::Auto,
            engine_urls: Vec::new(),
            rebatch_hook: None,
            triton_url: None,
            triton_model: None,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            max_queued: 3600,
            metrics_addr: DEFAULT_METRICS_ADDR.into(),
            request_timeout_secs: 5.0,
            command_poll_secs: 25,
            sim_gpus: 4,
            sim_trace: None,
            sim_speedup: 10.0,
            sim_node_index: 0,
            sim_nodes: 1,
            sim_replicas: 2,
            sim_cold_start_secs: 120.0,
            sim_replica_speed: 1.0,
            sim_epoch_ms: None,
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, is not TOML, has an unknown key or a value of the wrong type.
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    /// The config file does not exist.
    #[error("--config: {0} does not exist")]
    MissingFile(PathBuf),
    /// A value is out of range or malformed.
    #[error("{option}: {reason}")]
    Invalid {
        /// The option, as `file_key (--flag, ENV_VAR)`.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { option, reason: reason.into() }
}

/// What the agent binary needs to start.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The agent's core settings.
    pub agent: AgentConfig,
    /// Spool and upload settings.
    pub options: AgentOptions,
    /// Where to serve the agent's own `/metrics`, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Triton base URL for rebatching.
    pub triton_url: Option<String>,
    /// Triton model that rebatch changes.
    pub triton_model: Option<String>,
}

impl Settings {
    /// Defaults, then `file` (if given), then `overrides` (a serialisable struct whose `None` fields are
    /// skipped: the flags and environment variables clap collected).
    pub fn load<O: Serialize>(file: Option<&Path>, overrides: &O) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig.merge(Serialized::globals(overrides)).extract().map_err(|e| ConfigError::Load(Box::new(e)))
    }

    /// Validates the settings and turns them into the agent's configuration; `hostname` is the default
    /// identity.
    pub fn resolve(self, hostname: &str) -> Result<Resolved, ConfigError> {
        let server_url =
            self.server_url.ok_or_else(|| invalid("server_url (--server, FLEETPILOT_SERVER_URL)", "is required"))?;
        if !(server_url.starts_with("http://") || server_url.starts_with("https://")) {
            return Err(invalid(
                "server_url (--server, FLEETPILOT_SERVER_URL)",
                format!("must be an http:// or https:// URL, got {server_url:?}"),
            ));
        }
        let token = self.token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            invalid("token (--token, FLEETPILOT_AGENT_TOKEN)", "is required (the agent token the server issued)")
        })?;
        if !(self.interval_secs.is_finite() && (0.05..=3600.0).contains(&self.interval_secs)) {
            return Err(invalid(
                "interval_secs (--interval-secs, FLEETPILOT_INTERVAL_SECS)",
                "must be between 0.05 and 3600",
            ));
        }
        if self.interval_secs > 1.0 {
            tracing::warn!(
                interval_secs = self.interval_secs,
                "interval above 1 s: commands from the control plane take up to one interval to arrive"
            );
        }
        if let Some(d) = &self.deployment {
            crate::protocol::parse_deployment(d)
                .map_err(|e| invalid("deployment (--deployment, FLEETPILOT_DEPLOYMENT)", e.to_string()))?;
        }
        if self.sim_nodes == 0 || self.sim_node_index >= self.sim_nodes {
            return Err(invalid(
                "sim_node_index (--sim-node-index, FLEETPILOT_SIM_NODE_INDEX)",
                "must be below sim_nodes (which must be at least 1)",
            ));
        }
        if !(self.sim_speedup.is_finite() && self.sim_speedup > 0.0) {
            return Err(invalid("sim_speedup (--sim-speedup, FLEETPILOT_SIM_SPEEDUP)", "must be positive"));
        }
        if !(self.sim_replica_speed.is_finite() && self.sim_replica_speed > 0.0) {
            return Err(invalid(
                "sim_replica_speed (--sim-replica-speed, FLEETPILOT_SIM_REPLICA_SPEED)",
                "must be positive",
            ));
        }
        if !(self.sim_cold_start_secs.is_finite() && self.sim_cold_start_secs >= 0.0) {
            return Err(invalid(
                "sim_cold_start_secs (--sim-cold-start-secs, FLEETPILOT_SIM_COLD_START_SECS)",
                "must be 0 or more",
            ));
        }
        for u in &self.engine_urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid(
                    "engine_urls (--engine-url, FLEETPILOT_ENGINE_URLS)",
                    format!("must be http(s) URLs, got {u:?}"),
                ));
            }
        }
        if self.spool_max_bytes < 64 * 1024 {
            return Err(invalid(
                "spool_max_bytes (--spool-max-bytes, FLEETPILOT_SPOOL_MAX_BYTES)",
                "must be at least 65536",
            ));
        }
        if self.max_queued == 0 {
            return Err(invalid("max_queued (--max-queued, FLEETPILOT_MAX_QUEUED)", "must be at least 1"));
        }
        if !(self.request_timeout_secs.is_finite() && (0.1..=300.0).contains(&self.request_timeout_secs)) {
            return Err(invalid(
                "request_timeout_secs (--request-timeout-secs, FLEETPILOT_REQUEST_TIMEOUT_SECS)",
                "must be between 0.1 and 300",
            ));
        }
        if self.command_poll_secs > 60 {
            return Err(invalid(
                "command_poll_secs (--command-poll-secs, FLEETPILOT_COMMAND_POLL_SECS)",
                "must be between 0 (no long poll) and 60",
            ));
        }
        let metrics_addr = crate::selfmetrics::parse_metrics_addr(&self.metrics_addr).map_err(|e| {
            invalid(
                "metrics_addr (--metrics-addr, FLEETPILOT_METRICS_ADDR)",
                format!("{e}: expected host:port such as {DEFAULT_METRICS_ADDR}, or 0 to disable"),
            )
        })?;
        let spool = match self.spool_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(SpoolConfig { dir: Some(dir), max_bytes: self.spool_max_bytes, max_batches: usize::MAX }),
            None => None,
        };
        let agent = AgentConfig {
            server_url,
            token,
            agent_id: self.agent_id.unwrap_or_else(|| hostname.to_string()),
            hostname: hostname.to_string(),
            interval: Duration::from_secs_f64(self.interval_secs),
            group: self.group,
            deployment: self.deployment,
            gpu_source: self.gpu_source,
            sim: SimSettings {
                gpus: self.sim_gpus,
                trace: self.sim_trace,
                speedup: self.sim_speedup,
                node_index: self.sim_node_index,
                nodes_total: self.sim_nodes,
                initial_replicas: self.sim_replicas,
                cold_start_secs: self.sim_cold_start_secs,
                replica_speed: self.sim_replica_speed,
                epoch_ms: self.sim_epoch_ms,
                hot_gpu: None,
            },
            engine_urls: self.engine_urls,
            max_queued: self.max_queued,
            rebatch_hook: self.rebatch_hook,
        };
        let server_ca = match &self.server_ca_file {
            Some(path) => Some(std::sync::Arc::new(
                crate::tls::read_ca(path)
                    .map_err(|e| invalid("server_ca_file (--server-ca, FLEETPILOT_SERVER_CA_FILE)", e))?,
            )),
            None => None,
        };
        let options = AgentOptions {
            spool,
            request_timeout: Some(Duration::from_secs_f64(self.request_timeout_secs)),
            backoff: None,
            long_poll_wait: Some(Duration::from_secs(self.command_poll_secs)),
            no_long_poll: self.command_poll_secs == 0,
            server_ca,
        };
        Ok(Resolved { agent, options, metrics_addr, triton_url: self.triton_url, triton_model: self.triton_model })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        interval_secs: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let f =
            file("server_url = \"http://cp:8080\"\ntoken = \"file\"\ninterval_secs = 0.5\nspool_dir = \"/tmp/s\"\n");
        let s = Settings::load(Some(f.path()), &Flags { token: Some("flag".into()), ..Flags::default() }).unwrap();
        assert_eq!(s.token.as_deref(), Some("flag"));
        assert_eq!(s.interval_secs, 0.5);
        assert_eq!(s.metrics_addr, DEFAULT_METRICS_ADDR);
        let r = s.resolve("host").unwrap();
        assert_eq!(r.agent.agent_id, "host");
        assert_eq!(r.options.spool.and_then(|s| s.dir), Some(PathBuf::from("/tmp/s")));
    }

    #[test]
    fn an_unknown_key_is_rejected_by_name() {
        let f = file("server_url = \"http://cp\"\nintervall_secs = 1\n");
        let e = Settings::load(Some(f.path()), &Flags::default()).unwrap_err().to_string();
        assert!(e.contains("intervall_secs"), "{e}");
    }

    #[test]
    fn a_missing_server_or_a_bad_value_names_the_option() {
        let e = Settings::default().resolve("h").unwrap_err().to_string();
        assert!(e.starts_with("server_url"), "{e}");
        let s = Settings {
            server_url: Some("http://cp".into()),
            token: Some("t".into()),
            metrics_addr: "localhost".into(),
            ..Settings::default()
        };
        let e = s.resolve("h").unwrap_err().to_string();
        assert!(e.starts_with("metrics_addr"), "{e}");
    }
}
