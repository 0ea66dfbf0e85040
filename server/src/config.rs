//! Typed configuration: defaults, then an optional TOML file, then `FLEETPILOT_*` environment variables
//! (nested fields with `__`, e.g. `FLEETPILOT_PAGERDUTY__ROUTING_KEY`), then `DATABASE_URL`.
//! Unknown fields are rejected so a typo fails at start instead of being ignored.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use forecasting::pricing::PriceTable;
use serde::{Deserialize, Serialize};

use crate::domain::alert::AnomalyLevel;

/// Secrets are a domain type (alert webhooks carry one too); the configuration re-exports it.
pub use crate::domain::secret::Secret;

/// Everything the control plane can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on, e.g. `127.0.0.1:8080` (port 0 picks a free one).
    pub listen: String,
    /// URL operators reach the dashboard at (used in alert links); defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// PostgreSQL URL; without it a private cluster is started under `data_dir`.
    pub database_url: Option<String>,
    /// Working directory for the private cluster and other state.
    pub data_dir: PathBuf,
    /// Bearer token for the REST API (`Authorization: Bearer ...`).
    pub api_token: Secret,
    /// Shared bearer token for agents. Every node would hold the same token, so it cannot prove which node
    /// writes: it is refused for writes unless `agent_token_can_write` is set. Nodes enroll instead
    /// (`POST /api/v1/enroll`) and write with their own credential.
    pub agent_token: Secret,
    /// Trusts the shared `agent_token` to write any node's and deployment's data (demo fleets, simulators,
    /// benchmarks on one machine). Off by default; never turn it on where nodes are not trusted.
    pub agent_token_can_write: bool,
    /// Ingest settings.
    pub ingest: IngestSettings,
    /// Control-loop settings.
    pub control: ControlSettings,
    /// Kubernetes access.
    pub kube: KubeSettings,
    /// Alert rules and delivery.
    pub alerts: AlertSettings,
    /// PagerDuty Events API v2 delivery.
    pub pagerduty: PagerDutySettings,
    /// Optimization opportunities and the anomaly sweep.
    pub opportunities: OpportunitySettings,
    /// Generic JSON webhook receivers (more can be added through the API).
    pub webhooks: Vec<WebhookSettings>,
    /// Agent binary served to installers (`/download/fleetpilot-agent`); default: `fleetpilot-agent` next
    /// to this executable.
    pub agent_binary: Option<PathBuf>,
    /// The operator's dashboard: bootstrap account, sessions, prices.
    pub dashboard: DashboardSettings,
    /// How long each history table keeps its rows (telemetry's own retention is under `ingest`).
    pub retention: RetentionSettings,
    /// Native TLS for the HTTP server (off unless a certificate and key are given).
    pub tls: TlsSettings,
    /// Seconds a stop (SIGTERM or SIGINT) may take to drain: stop accepting, finish in-flight requests,
    /// group commits and deliveries, release leadership. Keep it below Kubernetes'
    /// `terminationGracePeriodSeconds` (30 by default).
    pub shutdown_grace_secs: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            database_url: None,
            data_dir: PathBuf::from(".fleetpilot"),
            api_token: Secret::default(),
            agent_token: Secret::default(),
            agent_token_can_write: false,
            ingest: IngestSettings::default(),
            control: ControlSettings::default(),
            kube: KubeSettings::default(),
            alerts: AlertSettings::default(),
            pagerduty: PagerDutySettings::default(),
            opportunities: OpportunitySettings::default(),
            webhooks: Vec::new(),
            agent_binary: None,
            dashboard: DashboardSettings::default(),
            retention: RetentionSettings::default(),
            tls: TlsSettings::default(),
            shutdown_grace_secs: 25.0,
        }
    }
}

/// Native TLS (rustls). With `cert_file` and `key_file` set the server speaks only HTTPS on `listen`, marks its
/// cookies `Secure`, and reloads the pair when either file changes (checked every `reload_secs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Seconds between checks of the files for a renewal.
    pub reload_secs: f64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self { cert_file: None, key_file: None, reload_secs: 10.0 }
    }
}

impl TlsSettings {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// Days each history table keeps its rows; 0 keeps them forever. The hourly maintenance deletes older rows in
/// bounded batches. Open things are never deleted (an open incident, an open anomaly event or opportunity),
/// nor an opportunity whose one-click action is still on record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Scaling decisions (`decisions`), with their reasons.
    pub decisions_days: u32,
    /// Stored forecasts (`forecasts`).
    pub forecasts_days: u32,
    /// Agent commands and their results (`commands`).
    pub commands_days: u32,
    /// Ended anomaly events (`anomalies`).
    pub anomalies_days: u32,
    /// Resolved incidents and their deliveries (`alerts`, `alert_deliveries`).
    pub incidents_days: u32,
    /// Resolved alert instances (`alert_instances`).
    pub alert_instances_days: u32,
    /// Closed or dismissed opportunities (`opportunities`).
    pub opportunities_days: u32,
    /// One-click actions on opportunities (`opportunity_actions`).
    pub opportunity_actions_days: u32,
    /// Enrollment history (`enrollment_events`).
    pub enrollment_events_days: u32,
    /// GPU probe results (`gpu_probes`).
    pub gpu_probes_days: u32,
    /// Operator overrides (`policy_overrides`), counted from the end of their hold.
    pub overrides_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            decisions_days: 30,
            forecasts_days: 7,
            commands_days: 14,
            anomalies_days: 90,
            incidents_days: 90,
            alert_instances_days: 30,
            opportunities_days: 90,
            opportunity_actions_days: 365,
            enrollment_events_days: 365,
            gpu_probes_days: 30,
            overrides_days: 90,
        }
    }
}

impl RetentionSettings {
    /// Every table with its timestamp rule and its retention: (setting, table, days).
    pub fn tables(&self) -> [(&'static str, u32); 11] {
        [
            ("decisions_days", self.decisions_days),
            ("forecasts_days", self.forecasts_days),
            ("commands_days", self.commands_days),
            ("anomalies_days", self.anomalies_days),
            ("incidents_days", self.incidents_days),
            ("alert_instances_days", self.alert_instances_days),
            ("opportunity_actions_days", self.opportunity_actions_days),
            ("opportunities_days", self.opportunities_days),
            ("enrollment_events_days", self.enrollment_events_days),
            ("gpu_probes_days", self.gpu_probes_days),
            ("overrides_days", self.overrides_days),
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, days) in self.tables() {
            if days > 36_500 {
                return Err(ConfigError::Invalid(format!(
                    "retention.{name}: must be at most 36500 (100 years); 0 keeps rows forever"
                )));
            }
        }
        Ok(())
    }
}

/// Ingest settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Samples (GPU + serving rows) queued or being written at most; beyond it ingest answers 429 with
    /// Retry-After (memory stays bounded).
    pub max_queued_rows: usize,
    /// Rows written per transaction at most (group commit).
    pub max_group_rows: usize,
    /// Writer tasks draining the queue.
    pub writers: usize,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Days of raw samples kept (older daily partitions are dropped).
    pub retention_days: u32,
    /// Days of 1-minute rollups kept.
    pub rollup_1m_retention_days: u32,
    /// Days of 1-hour rollups kept.
    pub rollup_1h_retention_days: u32,
    /// Seconds between rollup runs.
    pub rollup_secs: f64,
    /// Seconds a sample's timestamp may lie ahead of the server clock (agent clock skew); later samples
    /// are refused with a 400. Samples older than `retention_days` are refused too: their partition is
    /// (or will soon be) dropped.
    pub max_future_secs: u32,
    /// Distinct (deployment, replica) serving series one node may report over its lifetime; a batch with a
    /// new series beyond it is refused with a 400 naming the series.
    pub max_serving_series_per_node: usize,
    /// Largest body of the unauthenticated, small routes (`/api/v1/enroll`, `/login`), bytes.
    pub small_body_bytes: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_queued_rows: 250_000,
            max_group_rows: 20_000,
            // Group commit is latency-bound (COPY + commit per group): a few writers overlap them.
            writers: 4,
            max_body_bytes: 32 * 1024 * 1024,
            retention_days: 7,
            rollup_1m_retention_days: 35,
            rollup_1h_retention_days: 400,
            rollup_secs: 30.0,
            max_future_secs: 300,
            max_serving_series_per_node: 1024,
            small_body_bytes: 16 * 1024,
        }
    }
}

/// Control-loop settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSettings {
    /// Whether this replica runs the control loop at all (it still needs the leader lock).
    pub enabled: bool,
    /// Seconds between ticks.
    pub tick_secs: f64,
    /// Seconds of history each decision looks at.
    pub lookback_secs: u32,
    /// Width of the time buckets the history is aggregated into, seconds.
    pub bucket_secs: u32,
    /// Scale-down stabilization window, seconds (HPA's default is 300): a scale-down never goes below the
    /// highest recommendation of this window, and none happens before the loop has watched that long.
    pub scale_down_stabilization_secs: u32,
    /// Shortest gap between two ticks, seconds: new samples wake the loop (so decisions follow data within
    /// about this gap plus one tick), `tick_secs` is the longest gap.
    pub min_tick_gap_secs: f64,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_secs: 5.0,
            lookback_secs: 1800,
            bucket_secs: 10,
            scale_down_stabilization_secs: 300,
            min_tick_gap_secs: 0.5,
        }
    }
}

/// Kubernetes access: an explicit API server URL, else in-cluster, else kubeconfig; none is fine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeSettings {
    /// API server URL, e.g. `https://10.0.0.1:6443` (or a fake server in tests).
    pub api_url: Option<String>,
    /// Bearer token for `api_url`.
    pub token: Secret,
    /// Use kubeconfig / in-cluster discovery when `api_url` is not set.
    pub discover: bool,
    /// Follow `ScalingPolicy` resources (`deploy/crds/`) on the leader: each becomes a policy owned by it.
    pub scaling_policies: bool,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self { api_url: None, token: Secret::default(), discover: false, scaling_policies: true }
    }
}

/// Alert rule, lifecycle and delivery settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// GPU temperature that fires the `gpu-temperature` rule, Celsius.
    pub gpu_temp_c: f64,
    /// Seconds without data after which a node is `silent` (its GPUs' alerts are then inhibited).
    pub node_silent_secs: u32,
    /// Seconds between evaluations.
    pub eval_secs: f64,
    /// Seconds a group's first firing alert waits before the incident is opened, so alerts that fire
    /// together page once.
    pub group_wait_secs: f64,
    /// Seconds after which a still-open incident is triggered again (same dedup_key); 0 never repeats.
    pub repeat_interval_secs: f64,
    /// Seconds a GPU must be thermally throttled before `gpu-thermal-throttling` fires.
    pub throttle_for_secs: f64,
    /// Seconds a new XID error keeps `gpu-xid-error` firing.
    pub xid_window_secs: f64,
    /// Seconds a GPU's whole reading (utilisation, memory, power, temperature, SM clock) may repeat unchanged
    /// before `gpu-stuck-reading` fires (a live GPU's power reading never repeats to the milliwatt for a
    /// minute: the exporter is stuck); 0 disables the rule.
    pub stuck_reading_secs: f64,
    /// TTFT p95 target of every deployment, seconds (`slo-ttft`); 0 disables the rule.
    pub slo_ttft_p95_s: f64,
    /// Inter-token latency p95 target of every deployment, seconds (`slo-itl`); 0 disables the rule.
    pub slo_itl_p95_s: f64,
    /// Seconds a deployment must miss an SLO target before the SLO rule fires.
    pub slo_for_secs: f64,
    /// First retry delay of a failed delivery, seconds (doubles per attempt, with jitter).
    pub retry_base_secs: f64,
    /// Longest retry delay, seconds.
    pub retry_max_secs: f64,
    /// Timeout of one delivery request, seconds.
    pub delivery_timeout_secs: f64,
    /// A delivery still undelivered this many seconds after it was queued is given up: marked failed (listed
    /// with the failed deliveries, counted in `fleetpilot_alert_deliveries_total{outcome="given_up"}`) and never
    /// sent. A page a day late does more harm than good, and an outbox must not grow without bound.
    pub delivery_give_up_secs: f64,
    /// Allows webhook URLs on loopback, private, link-local (cloud metadata) and other internal addresses.
    /// Off by default: a webhook must not reach into the control plane's own network (SSRF). Redirects
    /// are never followed either way.
    pub webhook_allow_private: bool,
    /// Whether `anomaly-high` fires for open anomaly events (table `anomalies`).
    pub anomaly_enabled: bool,
    /// Lowest anomaly event severity (`info`, `warning`, `critical`) that fires `anomaly-high`.
    pub anomaly_min_severity: AnomalyLevel,
    /// Whether `opportunity-value` fires for open opportunities worth `opportunity_min_money_per_week`.
    pub opportunity_enabled: bool,
    /// Saving per week (in `opportunities.prices.currency`) from which an open opportunity fires
    /// `opportunity-value` (severity `info`: PagerDuty's default routing makes it low urgency).
    pub opportunity_min_money_per_week: f64,
    /// A firing `opportunity-value` resolves below this fraction of `opportunity_min_money_per_week`
    /// (hysteresis, in `(0, 1]`), so a saving hovering at the threshold does not flap.
    pub opportunity_resolve_fraction: f64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            gpu_temp_c: 85.0,
            node_silent_secs: 60,
            eval_secs: 1.0,
            group_wait_secs: 10.0,
            repeat_interval_secs: 4.0 * 3600.0,
            throttle_for_secs: 60.0,
            xid_window_secs: 900.0,
            stuck_reading_secs: 60.0,
            slo_ttft_p95_s: 2.0,
            slo_itl_p95_s: 0.2,
            slo_for_secs: 300.0,
            retry_base_secs: 1.0,
            retry_max_secs: 300.0,
            delivery_timeout_secs: 10.0,
            delivery_give_up_secs: 86_400.0,
            webhook_allow_private: false,
            anomaly_enabled: true,
            anomaly_min_severity: AnomalyLevel::Critical,
            opportunity_enabled: true,
            opportunity_min_money_per_week: 500.0,
            opportunity_resolve_fraction: 0.9,
        }
    }
}

/// A generic JSON webhook receiver configured in the settings file (`[[webhooks]]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Name (unique among receivers; deliveries name their receiver `webhook:<name>`).
    pub name: String,
    /// URL the JSON events are POSTed to.
    pub url: String,
    /// Secret of the `X-Fleetpilot-Signature` HMAC-SHA256 header.
    pub secret: Secret,
}

/// PagerDuty Events API v2 delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagerDutySettings {
    /// Events API endpoint.
    pub url: String,
    /// Integration (routing) key; empty disables delivery.
    pub routing_key: Secret,
}

impl Default for PagerDutySettings {
    fn default() -> Self {
        Self { url: "https://events.pagerduty.com/v2/enqueue".into(), routing_key: Secret::default() }
    }
}

/// Optimization opportunities (issue #7) and the anomaly sweep, refreshed by the control-loop leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpportunitySettings {
    /// Whether the leader refreshes opportunities and sweeps anomalies (needs `control.enabled`).
    pub enabled: bool,
    /// Seconds between refreshes.
    pub refresh_secs: f64,
    /// Seconds of history each refresh looks at (raw samples up to 2 hours, 1-minute rollups beyond).
    pub window_secs: u32,
    /// Width of the buckets the window is aggregated into, seconds (a whole number of minutes for windows
    /// over 2 hours).
    pub bucket_secs: u32,
    /// Utilisation (%) under which a GPU counts as idle in a bucket.
    pub idle_util_pct: f64,
    /// Fraction of the window a GPU must be idle for an idle-GPU or memory-only opportunity.
    pub idle_fraction: f64,
    /// Inter-token latency p95 SLO (ms) for deployments without a rebatch policy (0: none, then batching
    /// and SLO-based consolidation are not scored for them).
    pub default_itl_slo_ms: f64,
    /// Window length (seconds) from which evidence counts in full; shorter windows lower the confidence.
    pub full_confidence_secs: f64,
    /// What a GPU-hour costs (`[opportunities.prices]`): `default_per_gpu_hour` for models no key matches,
    /// `per_gpu_hour` by a case-insensitive substring of the GPU model name (the longest match wins), e.g.
    /// `{ H100 = 4.0, A100 = 2.5 }`, and the `currency` of both. Defaults: [`PriceTable::default`].
    pub prices: PriceTable,
    /// Deprecated spelling of `prices.default_per_gpu_hour` (kept so older config files still load; it wins
    /// over `prices` when both are set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_price_per_gpu_hour: Option<f64>,
    /// Deprecated spelling of `prices.per_gpu_hour` (merged over it key by key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_per_gpu_hour: Option<std::collections::BTreeMap<String, f64>>,
    /// Deprecated spelling of `prices.currency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

impl OpportunitySettings {
    /// Folds the deprecated flat price keys into `prices`, saying which were used (for a warning).
    fn fold_deprecated_prices(&mut self) -> Vec<&'static str> {
        let mut used = Vec::new();
        if let Some(v) = self.default_price_per_gpu_hour.take() {
            self.prices.default_per_gpu_hour = v;
            used.push("opportunities.default_price_per_gpu_hour");
        }
        if let Some(m) = self.price_per_gpu_hour.take() {
            self.prices.per_gpu_hour.extend(m);
            used.push("opportunities.price_per_gpu_hour");
        }
        if let Some(c) = self.currency.take() {
            self.prices.currency = c;
            used.push("opportunities.currency");
        }
        used
    }
}

impl Default for OpportunitySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            refresh_secs: 60.0,
            window_secs: 3600,
            bucket_secs: 60,
            idle_util_pct: 5.0,
            idle_fraction: 0.9,
            default_itl_slo_ms: 0.0,
            full_confidence_secs: 6.0 * 3600.0,
            prices: PriceTable::default(),
            default_price_per_gpu_hour: None,
            price_per_gpu_hour: None,
            currency: None,
        }
    }
}

/// The operator's dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSettings {
    /// User name of the bootstrap operator, created (or its password reset) at start when
    /// `admin_password` is set.
    pub admin_user: String,
    /// Password of the bootstrap operator (`FLEETPILOT_DASHBOARD__ADMIN_PASSWORD`); empty: none is created.
    pub admin_password: Secret,
    /// Seconds a login lasts.
    pub session_ttl_secs: u32,
    /// Price of one GPU-hour, for the money idle GPUs cost (overview tile).
    pub price_per_gpu_hour: f64,
    /// Currency symbol shown with prices.
    pub currency: String,
    /// Seconds between live refreshes of pages (0: off).
    pub refresh_secs: u32,
    /// Failed logins (per client IP and per user name; failed enrollments per client IP) before a lockout;
    /// each further failure doubles the lockout, starting at one second. Locked attempts get 429 with
    /// Retry-After before any password is hashed.
    pub login_free_failures: u32,
    /// Longest lockout, seconds.
    pub login_lockout_max_secs: u32,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            admin_user: "admin".into(),
            admin_password: Secret::default(),
            session_ttl_secs: 12 * 3600,
            price_per_gpu_hour: 2.5,
            currency: "$".into(),
            refresh_secs: 5,
            login_free_failures: 5,
            login_lockout_max_secs: 900,
        }
    }
}

/// Configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Parsing or merging failed (the message names the field and the source).
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Defaults <- file (if given) <- `FLEETPILOT_*` <- `DATABASE_URL`, then validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Invalid(format!("config file {} does not exist", f.display())));
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(Env::prefixed("FLEETPILOT_").split("__").ignore(&["pg_bin"]));
        if let Ok(url) = std::env::var("DATABASE_URL") {
            fig = fig.merge(Serialized::default("database_url", url));
        }
        let mut s: Settings = fig.extract().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for key in s.opportunities.fold_deprecated_prices() {
            tracing::warn!(key, "deprecated configuration key; use [opportunities.prices] instead");
        }
        s.validate()?;
        Ok(s)
    }

    /// Range checks figment cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |f: &str, why: &str| Err(ConfigError::Invalid(format!("{f}: {why}")));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("listen", "must be an address like 127.0.0.1:8080");
        }
        if self.ingest.max_queued_rows < 200_002 {
            return bad("ingest.max_queued_rows", "must hold at least one maximal batch (200002 rows)");
        }
        if self.ingest.max_group_rows == 0 || self.ingest.writers == 0 {
            return bad("ingest.max_group_rows/writers", "must be at least 1");
        }
        if self.ingest.retention_days == 0 {
            return bad("ingest.retention_days", "must be at least 1");
        }
        if self.ingest.max_future_secs > 86_400 {
            return bad("ingest.max_future_secs", "must be at most 86400 (future partitions are never dropped early)");
        }
        if !(1..=1_000_000).contains(&self.ingest.max_serving_series_per_node) {
            return bad("ingest.max_serving_series_per_node", "must be between 1 and 1000000");
        }
        if !(256..=1024 * 1024).contains(&self.ingest.small_body_bytes) {
            return bad("ingest.small_body_bytes", "must be between 256 and 1048576");
        }
        if !(self.control.tick_secs.is_finite() && self.control.tick_secs >= 0.05) {
            return bad("control.tick_secs", "must be at least 0.05");
        }
        let gap = self.control.min_tick_gap_secs;
        if !(gap.is_finite() && (0.0..=self.control.tick_secs).contains(&gap)) {
            return bad("control.min_tick_gap_secs", "must be between 0 and control.tick_secs");
        }
        if self.control.bucket_secs == 0 || self.control.lookback_secs < self.control.bucket_secs * 4 {
            return bad("control.lookback_secs", "must cover at least 4 buckets");
        }
        if !(self.alerts.eval_secs.is_finite() && self.alerts.eval_secs >= 0.05) {
            return bad("alerts.eval_secs", "must be at least 0.05");
        }
        let o = &self.opportunities;
        if !(o.refresh_secs.is_finite() && o.refresh_secs >= 0.05) {
            return bad("opportunities.refresh_secs", "must be at least 0.05");
        }
        if o.bucket_secs == 0 || o.window_secs < o.bucket_secs * 4 || o.window_secs / o.bucket_secs > 20_000 {
            return bad("opportunities.window_secs", "must cover 4 to 20000 buckets");
        }
        if o.window_secs > 7200 && !o.bucket_secs.is_multiple_of(60) {
            return bad("opportunities.bucket_secs", "must be a whole number of minutes for windows over 2 hours");
        }
        if !(o.idle_fraction.is_finite() && (0.0..=1.0).contains(&o.idle_fraction)) {
            return bad("opportunities.idle_fraction", "must be within [0, 1]");
        }
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if !nonneg(o.idle_util_pct) || !nonneg(o.default_itl_slo_ms) {
            return bad("opportunities.idle_util_pct/default_itl_slo_ms", "must be finite and >= 0");
        }
        if !(o.full_confidence_secs.is_finite() && o.full_confidence_secs > 0.0) {
            return bad("opportunities.full_confidence_secs", "must be > 0");
        }
        if o.prices.validate().is_err() {
            return bad("opportunities.prices", "prices must be finite and >= 0");
        }
        let a = &self.alerts;
        for (f, v) in [
            ("alerts.group_wait_secs", a.group_wait_secs),
            ("alerts.repeat_interval_secs", a.repeat_interval_secs),
            ("alerts.throttle_for_secs", a.throttle_for_secs),
            ("alerts.xid_window_secs", a.xid_window_secs),
            ("alerts.stuck_reading_secs", a.stuck_reading_secs),
            ("alerts.slo_ttft_p95_s", a.slo_ttft_p95_s),
            ("alerts.slo_itl_p95_s", a.slo_itl_p95_s),
            ("alerts.slo_for_secs", a.slo_for_secs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(f, "must be a finite number >= 0");
            }
        }
        if !(a.retry_base_secs.is_finite() && a.retry_base_secs > 0.0 && a.retry_max_secs >= a.retry_base_secs) {
            return bad("alerts.retry_base_secs", "must be > 0 and at most alerts.retry_max_secs");
        }
        if !(a.delivery_timeout_secs.is_finite() && a.delivery_timeout_secs >= 0.1) {
            return bad("alerts.delivery_timeout_secs", "must be at least 0.1");
        }
        if !(a.delivery_give_up_secs.is_finite() && a.delivery_give_up_secs >= 60.0) {
            return bad("alerts.delivery_give_up_secs", "must be at least 60");
        }
        self.retention.validate()?;
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return bad("tls.key_file", "tls.cert_file and tls.key_file go together");
        }
        if !(self.tls.reload_secs.is_finite() && (0.1..=86_400.0).contains(&self.tls.reload_secs)) {
            return bad("tls.reload_secs", "must be between 0.1 and 86400");
        }
        if !(a.opportunity_min_money_per_week.is_finite() && a.opportunity_min_money_per_week > 0.0) {
            return bad("alerts.opportunity_min_money_per_week", "must be a finite number > 0");
        }
        let f = a.opportunity_resolve_fraction;
        if !(f.is_finite() && f > 0.0 && f <= 1.0) {
            return bad("alerts.opportunity_resolve_fraction", "must be within (0, 1]");
        }
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            if crate::domain::alert::valid_name(&w.name).is_err() || !names.insert(w.name.as_str()) {
                return bad(
                    &format!("webhooks[{i}].name"),
                    "must be a unique name of 1-64 letters, digits, '.', '_' or '-'",
                );
            }
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return bad(&format!("webhooks[{i}].url"), "must be an http(s) URL");
            }
            if w.secret.is_empty() {
                return bad(&format!("webhooks[{i}].secret"), "must be set");
            }
        }
        let d = &self.dashboard;
        if d.admin_user.is_empty()
            || d.admin_user.len() > 64
            || !d.admin_user.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
        {
            return bad("dashboard.admin_user", "must be 1..=64 letters, digits, '.', '-', '_' or '@'");
        }
        if !d.admin_password.is_empty() && d.admin_password.expose().len() < 8 {
            return bad("dashboard.admin_password", "must be at least 8 characters");
        }
        if !(60..=30 * 86_400).contains(&d.session_ttl_secs) {
            return bad("dashboard.session_ttl_secs", "must be between 60 and 2592000");
        }
        if !(d.price_per_gpu_hour.is_finite() && d.price_per_gpu_hour >= 0.0) {
            return bad("dashboard.price_per_gpu_hour", "must be a non-negative number");
        }
        if d.login_free_failures > 1000 || !(1..=86_400).contains(&d.login_lockout_max_secs) {
            return bad("dashboard.login_free_failures/login_lockout_max_secs", "at most 1000 / 1..=86400");
        }
        if d.refresh_secs > 3600 {
            return bad("dashboard.refresh_secs", "must be at most 3600");
        }
        if !(self.shutdown_grace_secs.is_finite() && (1.0..=3600.0).contains(&self.shutdown_grace_secs)) {
            return bad("shutdown_grace_secs", "must be between 1 and 3600");
        }
        if self.api_token.is_empty() {
            return bad("api_token", "must be set (FLEETPILOT_API_TOKEN)");
        }
        if self.agent_token_can_write && self.agent_token.is_empty() {
            return bad("agent_token", "must be set when agent_token_can_write is on (FLEETPILOT_AGENT_TOKEN)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[opportunities.prices]` overrides the default price table key by key, the way `Settings::load` layers a
    /// file over the defaults.
    #[test]
    fn prices_come_from_the_config_file_over_the_defaults() {
        let toml = "[opportunities.prices]\ncurrency = \"EUR\"\n[opportunities.prices.per_gpu_hour]\nH100 = 3.0\n";
        let s: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(toml))
            .extract()
            .expect("valid configuration");
        let p = &s.opportunities.prices;
        assert_eq!(p.price("NVIDIA H100 80GB HBM3"), 3.0);
        assert_eq!(p.price("NVIDIA L4"), 0.8, "keys not set keep their default");
        assert_eq!((p.currency.as_str(), p.default_per_gpu_hour), ("EUR", 2.5));
        assert_eq!(Settings::default().opportunities.prices, PriceTable::default());
        let unknown = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string("[opportunities.prices]\nper_gpu = 1\n"))
            .extract::<Settings>();
        assert!(unknown.is_err(), "unknown price keys are refused");
    }

    /// Config files written before `[opportunities.prices]` still load: the flat keys land in the table.
    #[test]
    fn the_older_flat_price_keys_still_load() {
        let toml = "[opportunities]\ndefault_price_per_gpu_hour = 3.5\ncurrency = \"EUR\"\n\
                    [opportunities.price_per_gpu_hour]\nH100 = 3.0\n";
        let mut s: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(toml))
            .extract()
            .expect("an older configuration still parses");
        let used = s.opportunities.fold_deprecated_prices();
        assert_eq!(used.len(), 3, "{used:?}");
        let p = &s.opportunities.prices;
        assert_eq!(p.price("NVIDIA H100 80GB HBM3"), 3.0);
        assert_eq!(p.price("NVIDIA L4"), 0.8, "the other defaults stay");
        assert_eq!((p.currency.as_str(), p.default_per_gpu_hour), ("EUR", 3.5));
        assert_eq!(p.price("Some Future GPU"), 3.5);
    }
}
