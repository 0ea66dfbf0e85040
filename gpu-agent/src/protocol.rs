//! The wire protocol between `fleetpilot-agent` and the control plane (version 1, JSON over HTTP).
//!
//! This module is the single definition both sides compile against; `docs/protocol.md` describes it for
//! other implementations. Every struct rejects unknown fields so a typo in a hand-written client is a 400,
//! not silently dropped data. `validate()` checks ranges and is what the server runs before storing anything.

use serde::{Deserialize, Serialize};

/// Protocol version carried in every batch; the server refuses versions it does not know.
pub const PROTOCOL_VERSION: u32 = 1;

/// Media type of a JSON-encoded [`Batch`].
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Limits that keep one batch from monopolising the server.
pub const MAX_GPU_SAMPLES_PER_BATCH: usize = 100_000;
/// See [`MAX_GPU_SAMPLES_PER_BATCH`].
pub const MAX_SERVING_SAMPLES_PER_BATCH: usize = 100_000;
/// Largest GPU index on a node: no server holds more than 256 GPUs, and the dashboard lays GPUs out by
/// index, so an unbounded index is a memory bomb for every page that draws the node.
pub const MAX_GPU_INDEX: u32 = 255;
/// `gpu_index` of MIG instance `i` (0..100) of physical GPU `parent` is `MIG_INDEX_BASE + parent * 100 + i`
/// (see the agent's `nvml` module): above every physical index, so the two cannot collide.
pub const MIG_INDEX_BASE: u32 = 1000;
/// Largest `gpu_index` of a MIG instance: instance 99 of GPU [`MAX_GPU_INDEX`].
pub const MAX_MIG_INDEX: u32 = MIG_INDEX_BASE + MAX_GPU_INDEX * 100 + 99;

/// Whether `i` is a physical GPU's index (`0..=MAX_GPU_INDEX`) or a MIG instance's
/// (`MIG_INDEX_BASE..=MAX_MIG_INDEX`). Pages that lay GPUs out by index draw physical GPUs only.
pub fn valid_gpu_index(i: u32) -> bool {
    i <= MAX_GPU_INDEX || (MIG_INDEX_BASE..=MAX_MIG_INDEX).contains(&i)
}
/// Most distinct serving series (`deployment`, `replica`) one batch may carry: a node runs a handful of
/// replicas, and each new pair is a new row in `serving_latest` and a new series for the control loop.
pub const MAX_SERVING_SERIES_PER_BATCH: usize = 256;
/// Longest GPU model name accepted.
pub const MAX_MODEL_LEN: usize = 128;

/// One upload from one agent: everything it sampled since its previous upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Stable identity of the node (one agent per node).
    pub agent_id: String,
    /// Strictly increasing per agent; with `agent_id` it makes a re-sent batch idempotent.
    pub seq: u64,
    /// Agent wall clock when the batch was sealed, Unix milliseconds.
    pub sent_at_ms: i64,
    /// Node facts, sent with every batch so a restarted server learns them without a handshake.
    pub node: NodeInfo,
    /// Per-GPU samples.
    #[serde(default)]
    pub gpus: Vec<GpuSample>,
    /// Per-replica serving-engine samples.
    #[serde(default)]
    pub serving: Vec<ServingSample>,
    /// Results of commands the agent executed since its previous batch.
    #[serde(default)]
    pub command_results: Vec<CommandResult>,
    /// Results of GPU health probes run since the previous batch (at start and on command).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeSample>,
}

/// One run of the active health probe on one GPU: the memory bandwidth a small nvrtc-compiled kernel achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProbeSample {
    /// Unix milliseconds when the probe finished.
    pub ts_ms: i64,
    /// CUDA ordinal of the GPU.
    pub gpu_index: u32,
    /// GPU UUID when known (matches [`GpuSample::uuid`]).
    #[serde(default)]
    pub uuid: Option<String>,
    /// Achieved device-memory bandwidth, GB/s; `None` when the probe could not run.
    pub bandwidth_gb_s: Option<f64>,
    /// Why the probe could not run (no CUDA, compile or launch failure).
    #[serde(default)]
    pub error: Option<String>,
}

/// What the agent knows about its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// Host name as the node reports it.
    pub hostname: String,
    /// Agent version string.
    pub agent_version: String,
    /// `"nvml"`, `"simulated"` or `"none"` (no GPU / no driver).
    pub gpu_source: String,
    /// Agent group the node belongs to (the target of agent-group scaling policies), if any.
    #[serde(default)]
    pub group: Option<String>,
    /// Deployment the node's serving engine belongs to, as `namespace/name`, if known.
    #[serde(default)]
    pub deployment: Option<String>,
}

/// One GPU at one instant. Units follow NVIDIA's DCGM exporter where it has a counterpart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GpuSample {
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// Index on the node (DCGM `gpu` label).
    pub gpu_index: u32,
    /// GPU UUID (DCGM `UUID` label), e.g. `GPU-5fd4f087-...`.
    pub uuid: String,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    #[serde(default)]
    pub model: String,
    /// GPU utilisation, percent 0..=100 (DCGM_FI_DEV_GPU_UTIL); `None` when it could not be read (an NVML
    /// call that failed, a MIG slice without per-instance utilisation). Absent is not idle: never read it as 0.
    #[serde(default)]
    pub util_pct: Option<f64>,
    /// Framebuffer used, bytes (DCGM reports MiB); `None` when unreadable.
    #[serde(default)]
    pub mem_used_bytes: Option<u64>,
    /// Framebuffer total, bytes; `None` when unreadable.
    #[serde(default)]
    pub mem_total_bytes: Option<u64>,
    /// Board power draw, watts (DCGM_FI_DEV_POWER_USAGE); `None` when unreadable.
    #[serde(default)]
    pub power_w: Option<f64>,
    /// GPU temperature, Celsius (DCGM_FI_DEV_GPU_TEMP); `None` when unreadable.
    #[serde(default)]
    pub temp_c: Option<f64>,
    /// SM clock, MHz (DCGM_FI_DEV_SM_CLOCK); `None` when unreadable.
    #[serde(default)]
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz (DCGM_FI_DEV_MEM_CLOCK); `None` when unreadable.
    #[serde(default)]
    pub mem_clock_mhz: Option<u32>,
    /// NVML clock-event (throttle) reasons bitmask (DCGM_FI_DEV_CLOCK_THROTTLE_REASONS); `None` when unreadable.
    #[serde(default)]
    pub throttle_reasons: Option<u64>,
    /// Volatile uncorrectable ECC errors, cumulative; `None` when unreadable (ECC off, or the call failed).
    #[serde(default)]
    pub ecc_dbe_total: Option<u64>,
    /// Last XID error seen (0 = none) (DCGM_FI_DEV_XID_ERRORS); `None` when XID events are not watched.
    #[serde(default)]
    pub xid_last: Option<u32>,
    /// Fraction of time SMs were active, 0..=1 (DCGM_FI_PROF_SM_ACTIVE), where available.
    #[serde(default)]
    pub sm_active: Option<f64>,
    /// Fraction of time tensor pipes were active, 0..=1 (DCGM_FI_PROF_PIPE_TENSOR_ACTIVE), where available.
    #[serde(default)]
    pub tensor_active: Option<f64>,
}

impl GpuSample {
    /// A healthy, fully read H100 80GB at `util_pct` (40 GB in use, 400 W, 60 °C, nominal clocks, no
    /// throttling, ECC or XID errors): the sample tests and benchmarks start from, setting what they vary.
    pub fn h100(ts_ms: i64, gpu_index: u32, uuid: impl Into<String>, util_pct: f64) -> Self {
        GpuSample {
            ts_ms,
            gpu_index,
            uuid: uuid.into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            util_pct: Some(util_pct),
            mem_used_bytes: Some(40_000_000_000),
            mem_total_bytes: Some(85_520_809_984),
            power_w: Some(400.0),
            temp_c: Some(60.0),
            sm_clock_mhz: Some(1980),
            mem_clock_mhz: Some(2619),
            throttle_reasons: Some(0),
            ecc_dbe_total: Some(0),
            xid_last: Some(0),
            sm_active: Some(0.5),
            tensor_active: None,
        }
    }
}

/// One serving-engine replica over one sampling interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServingSample {
    /// Unix milliseconds at the end of the interval.
    pub ts_ms: i64,
    /// Deployment as `namespace/name`.
    pub deployment: String,
    /// Replica identity (pod name, or `node/engine-N`).
    pub replica: String,
    /// `vllm`, `triton`, `tgi` or `sim`.
    pub engine: String,
    /// Requests waiting for admission.
    pub queue_depth: f64,
    /// Requests being processed.
    pub running: f64,
    /// KV-cache use, percent 0..=100.
    #[serde(default)]
    pub kv_cache_pct: Option<f64>,
    /// Time to first token over the interval, seconds.
    #[serde(default)]
    pub ttft_p50_s: Option<f64>,
    /// See `ttft_p50_s`.
    #[serde(default)]
    pub ttft_p95_s: Option<f64>,
    /// See `ttft_p50_s`.
    #[serde(default)]
    pub ttft_p99_s: Option<f64>,
    /// Inter-token latency over the interval, seconds.
    #[serde(default)]
    pub itl_p50_s: Option<f64>,
    /// See `itl_p50_s`.
    #[serde(default)]
    pub itl_p95_s: Option<f64>,
    /// See `itl_p50_s`.
    #[serde(default)]
    pub itl_p99_s: Option<f64>,
    /// Completed requests per second.
    #[serde(default)]
    pub requests_per_s: f64,
    /// Prompt (prefill) tokens per second.
    pub prompt_tokens_per_s: f64,
    /// Generated (decode) tokens per second.
    pub generation_tokens_per_s: f64,
    /// Mean batch size over the interval, where the engine exposes it.
    #[serde(default)]
    pub batch_size_mean: Option<f64>,
}

/// The server's answer to an accepted batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchAck {
    /// The acknowledged sequence number: the batch is durably stored (or was already).
    pub seq: u64,
    /// True when this `(agent_id, seq)` had been stored before and the batch was not stored again.
    pub duplicate: bool,
    /// Commands for this agent, oldest first.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Command>))]
    pub commands: Vec<IncomingCommand>,
}

/// A command as it arrives: one this agent understands, or one it must reject with a reason (a newer
/// server, a malformed action). Parsing an acknowledgement or a poll reply never fails because of one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IncomingCommand {
    /// A command of a known kind with valid fields.
    Known(Command),
    /// Anything else that carries an id.
    Unknown {
        /// The command's id, so the rejection can be reported.
        id: String,
        /// The rest, kept for the rejection message.
        #[serde(flatten)]
        rest: serde_json::Map<String, serde_json::Value>,
    },
}

impl From<Command> for IncomingCommand {
    fn from(c: Command) -> Self {
        Self::Known(c)
    }
}

/// `GET /api/v1/commands?agent_id=...&wait_s=...`: the commands waiting for an agent, returned as soon as there
/// are any or after `wait_s` seconds with none (long poll).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandPoll {
    /// Commands for this agent, oldest first.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Command>))]
    pub commands: Vec<IncomingCommand>,
}

/// `POST /api/v1/commands/ack`: the agent confirms it received commands and reports the results of those it
/// executed, without waiting for its next batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandAck {
    /// The agent (its credential must be allowed to write this node).
    pub agent_id: String,
    /// Ids of commands received (executing or about to be).
    #[serde(default)]
    pub received: Vec<String>,
    /// Results of commands executed.
    #[serde(default)]
    pub results: Vec<CommandResult>,
}

/// Most ids or results in one [`CommandAck`].
pub const MAX_ACKS: usize = 1000;

impl CommandAck {
    /// Checks every field; the first problem found is returned with its path.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_ident("agent_id", &self.agent_id, 128)?;
        if self.received.len() > MAX_ACKS {
            return Err(err("received", format!("at most {MAX_ACKS} ids")));
        }
        if self.results.len() > MAX_ACKS {
            return Err(err("results", format!("at most {MAX_ACKS} results")));
        }
        for (i, id) in self.received.iter().enumerate() {
            check_ident(|| format!("received[{i}]"), id, 64)?;
        }
        check_results("results", &self.results)
    }
}

fn check_results(field: &str, results: &[CommandResult]) -> Result<(), FieldError> {
    for (i, r) in results.iter().enumerate() {
        check_ident(|| format!("{field}[{i}].id"), &r.id, 64)?;
        check_message(|| format!("{field}[{i}].message"), &r.message, 4096)?;
    }
    Ok(())
}

/// A command from the control plane to one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Unique id; executing the same id twice is a no-op.
    pub id: String,
    /// What to do.
    pub action: CommandAction,
}

/// The actions an agent understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandAction {
    /// Change the serving engine's batching.
    Rebatch {
        /// Deployment as `namespace/name`.
        deployment: String,
        /// Maximum batch size.
        max_batch_size: u32,
        /// Batching delay, microseconds.
        max_queue_delay_us: u64,
    },
    /// The agent group's desired replica count (the simulated fleet follows it; real nodes ignore it).
    SetReplicas {
        /// Agent group.
        group: String,
        /// Desired replicas for the whole group.
        replicas: u32,
    },
    /// Run the GPU health probe (memory bandwidth) on every GPU now; results come back as [`ProbeSample`]s.
    Probe {},
}

/// Outcome of one command, reported in the next batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    /// The command's id.
    pub id: String,
    /// Whether it was applied.
    pub ok: bool,
    /// What happened, for the operator.
    pub message: String,
}

/// A validation failure naming the offending field with its JSON path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `gpus[3].util_pct`.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), reason: reason.into() }
}

/// A field's path, built only when a check fails (validation runs on every sample of every batch, and
/// formatting `gpus[i].name` eagerly would cost more than the checks).
trait FieldPath {
    fn path(self) -> String;
}

impl FieldPath for &str {
    fn path(self) -> String {
        self.to_string()
    }
}

impl<F: FnOnce() -> String> FieldPath for F {
    fn path(self) -> String {
        self()
    }
}

fn check_range(field: impl FnOnce() -> String, v: f64, lo: f64, hi: f64) -> Result<(), FieldError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(err(field(), format!("must be a finite number in {lo}..={hi}, got {v}")))
    }
}

fn check_opt(field: impl FnOnce() -> String, v: Option<f64>, lo: f64, hi: f64) -> Result<(), FieldError> {
    match v {
        Some(v) => check_range(field, v, lo, hi),
        None => Ok(()),
    }
}

/// Free text that may be empty: bounded, and no control characters (NUL cannot be stored in PostgreSQL
/// `text`, and one such row would fail a whole group commit).
fn check_text(field: impl FieldPath, v: &str, max: usize) -> Result<(), FieldError> {
    if v.len() > max {
        return Err(err(field.path(), format!("at most {max} characters")));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(err(field.path(), "must not contain control characters"));
    }
    Ok(())
}

/// A message for people: newlines and tabs are fine, NUL and other control characters are not.
fn check_message(field: impl FieldPath, v: &str, max: usize) -> Result<(), FieldError> {
    if v.len() > max {
        return Err(err(field.path(), format!("at most {max} characters")));
    }
    if v.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(err(field.path(), "must not contain NUL or control characters other than newlines and tabs"));
    }
    Ok(())
}

fn check_ident(field: impl FieldPath, v: &str, max: usize) -> Result<(), FieldError> {
    if v.is_empty() || v.len() > max {
        return Err(err(field.path(), format!("must be 1..={max} characters")));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(err(field.path(), "must not contain control characters"));
    }
    Ok(())
}

/// Milliseconds: year 2000 .. year 2200, which rejects seconds-instead-of-milliseconds mistakes.
const TS_MIN_MS: i64 = 946_684_800_000;
const TS_MAX_MS: i64 = 7_258_118_400_000;
/// Largest latency we accept, seconds (a day); anything above is a unit error.
const MAX_LATENCY_S: f64 = 86_400.0;

impl Batch {
    /// Checks every field; the first problem found is returned with its path.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.version != PROTOCOL_VERSION {
            return Err(err(
                "version",
                format!("unsupported protocol version {}, this server speaks {PROTOCOL_VERSION}", self.version),
            ));
        }
        check_ident("agent_id", &self.agent_id, 128)?;
        check_ident("node.hostname", &self.node.hostname, 255)?;
        check_text("node.agent_version", &self.node.agent_version, 64)?;
        check_text("node.gpu_source", &self.node.gpu_source, 32)?;
        if let Some(g) = &self.node.group {
            check_ident("node.group", g, 64)?;
        }
        if self.gpus.len() > MAX_GPU_SAMPLES_PER_BATCH {
            return Err(err("gpus", format!("at most {MAX_GPU_SAMPLES_PER_BATCH} samples per batch")));
        }
        if self.serving.len() > MAX_SERVING_SAMPLES_PER_BATCH {
            return Err(err("serving", format!("at most {MAX_SERVING_SAMPLES_PER_BATCH} samples per batch")));
        }
        if let Some(d) = &self.node.deployment {
            parse_deployment(d).map_err(|r| err("node.deployment", r))?;
        }
        for (i, g) in self.gpus.iter().enumerate() {
            let f = |name: &str| format!("gpus[{i}].{name}");
            if !(TS_MIN_MS..=TS_MAX_MS).contains(&g.ts_ms) {
                return Err(err(f("ts_ms"), "must be Unix milliseconds between 2000 and 2200"));
            }
            if !valid_gpu_index(g.gpu_index) {
                return Err(err(
                    f("gpu_index"),
                    format!(
                        "must be in 0..={MAX_GPU_INDEX} (a GPU) or {MIG_INDEX_BASE}..={MAX_MIG_INDEX} (a MIG instance)"
                    ),
                ));
            }
            check_ident(|| f("uuid"), &g.uuid, 96)?;
            check_text(|| f("model"), &g.model, MAX_MODEL_LEN)?;
            check_opt(|| f("util_pct"), g.util_pct, 0.0, 100.0)?;
            check_opt(|| f("power_w"), g.power_w, 0.0, 100_000.0)?;
            check_opt(|| f("temp_c"), g.temp_c, -50.0, 200.0)?;
            if let (Some(used), Some(total)) = (g.mem_used_bytes, g.mem_total_bytes)
                && used > total
            {
                return Err(err(f("mem_used_bytes"), "must not exceed mem_total_bytes"));
            }
            check_opt(|| f("sm_active"), g.sm_active, 0.0, 1.0)?;
            check_opt(|| f("tensor_active"), g.tensor_active, 0.0, 1.0)?;
        }
        for (i, s) in self.serving.iter().enumerate() {
            let f = |name: &str| format!("serving[{i}].{name}");
            if !(TS_MIN_MS..=TS_MAX_MS).contains(&s.ts_ms) {
                return Err(err(f("ts_ms"), "must be Unix milliseconds between 2000 and 2200"));
            }
            parse_deployment(&s.deployment).map_err(|r| err(f("deployment"), r))?;
            check_ident(|| f("replica"), &s.replica, 253)?;
            check_ident(|| f("engine"), &s.engine, 32)?;
            check_range(|| f("queue_depth"), s.queue_depth, 0.0, 1e9)?;
            check_range(|| f("running"), s.running, 0.0, 1e9)?;
            check_opt(|| f("kv_cache_pct"), s.kv_cache_pct, 0.0, 100.0)?;
            for (name, v) in [
                ("ttft_p50_s", s.ttft_p50_s),
                ("ttft_p95_s", s.ttft_p95_s),
                ("ttft_p99_s", s.ttft_p99_s),
                ("itl_p50_s", s.itl_p50_s),
                ("itl_p95_s", s.itl_p95_s),
                ("itl_p99_s", s.itl_p99_s),
            ] {
                check_opt(|| f(name), v, 0.0, MAX_LATENCY_S)?;
            }
            check_range(|| f("requests_per_s"), s.requests_per_s, 0.0, 1e9)?;
            check_range(|| f("prompt_tokens_per_s"), s.prompt_tokens_per_s, 0.0, 1e12)?;
            check_range(|| f("generation_tokens_per_s"), s.generation_tokens_per_s, 0.0, 1e12)?;
            check_opt(|| f("batch_size_mean"), s.batch_size_mean, 0.0, 1e6)?;
        }
        check_results("command_results", &self.command_results)?;
        if self.probes.len() > MAX_PROBES_PER_BATCH {
            return Err(err("probes", format!("at most {MAX_PROBES_PER_BATCH} probe results per batch")));
        }
        for (i, p) in self.probes.iter().enumerate() {
            let f = |name: &str| format!("probes[{i}].{name}");
            if !(TS_MIN_MS..=TS_MAX_MS).contains(&p.ts_ms) {
                return Err(err(f("ts_ms"), "must be Unix milliseconds between 2000 and 2200"));
            }
            if p.gpu_index > MAX_GPU_INDEX {
                return Err(err(f("gpu_index"), format!("must be in 0..={MAX_GPU_INDEX}")));
            }
            if let Some(u) = &p.uuid {
                check_ident(|| f("uuid"), u, 96)?;
            }
            check_opt(|| f("bandwidth_gb_s"), p.bandwidth_gb_s, 0.0, 1e6)?;
            if let Some(e) = &p.error {
                check_message(|| f("error"), e, 1024)?;
            }
        }
        let series: std::collections::HashSet<(&str, &str)> =
            self.serving.iter().map(|s| (s.deployment.as_str(), s.replica.as_str())).collect();
        if series.len() > MAX_SERVING_SERIES_PER_BATCH {
            return Err(err(
                "serving",
                format!("at most {MAX_SERVING_SERIES_PER_BATCH} distinct (deployment, replica) series per batch"),
            ));
        }
        Ok(())
    }

    /// Checks that every sample's timestamp lies in `min_ms..=max_ms` (the server's accepted window: no
    /// older than raw retention, no further ahead than a few minutes of clock skew). A sample outside it
    /// would create partitions that are never dropped, or pin a "latest" row forever.
    pub fn validate_window(&self, min_ms: i64, max_ms: i64) -> Result<(), FieldError> {
        let check = |field: &dyn Fn() -> String, ts: i64| {
            if ts < min_ms {
                Err(err(field(), format!("older than the server accepts ({ts} < {min_ms} ms)")))
            } else if ts > max_ms {
                Err(err(field(), format!("too far in the future ({ts} > {max_ms} ms; check the node's clock)")))
            } else {
                Ok(())
            }
        };
        for (i, g) in self.gpus.iter().enumerate() {
            check(&|| format!("gpus[{i}].ts_ms"), g.ts_ms)?;
        }
        for (i, s) in self.serving.iter().enumerate() {
            check(&|| format!("serving[{i}].ts_ms"), s.ts_ms)?;
        }
        for (i, p) in self.probes.iter().enumerate() {
            check(&|| format!("probes[{i}].ts_ms"), p.ts_ms)?;
        }
        Ok(())
    }

    /// Number of metric values carried (one GPU sample carries [`GPU_METRICS_PER_SAMPLE`]).
    pub fn metric_values(&self) -> usize {
        self.gpus.len() * GPU_METRICS_PER_SAMPLE + self.serving.len() * SERVING_METRICS_PER_SAMPLE
    }
}

/// Most probe results in one batch.
pub const MAX_PROBES_PER_BATCH: usize = 1024;

/// Metric values in one [`GpuSample`] (for throughput accounting).
pub const GPU_METRICS_PER_SAMPLE: usize = 12;
/// Metric values in one [`ServingSample`].
pub const SERVING_METRICS_PER_SAMPLE: usize = 13;

/// Splits `namespace/name`, checking both halves are Kubernetes-style names.
pub fn parse_deployment(s: &str) -> Result<(&str, &str), String> {
    let Some((ns, name)) = s.split_once('/') else {
        return Err(format!("must be `namespace/name`, got {s:?}"));
    };
    for part in [ns, name] {
        let ok = !part.is_empty()
            && part.len() <= 253
            && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !part.starts_with('-')
            && !part.ends_with('-');
        if !ok {
            return Err(format!("{part:?} is not a valid Kubernetes name (lowercase letters, digits, '-', '.')"));
        }
    }
    Ok((ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch {
            version: PROTOCOL_VERSION,
            agent_id: "node-1".into(),
            seq: 1,
            sent_at_ms: 1_700_000_000_000,
            node: NodeInfo {
                hostname: "node-1".into(),
                agent_version: "0.1.0".into(),
                gpu_source: "simulated".into(),
                group: Some("sim".into()),
                deployment: Some("default/llama".into()),
            },
            gpus: vec![GpuSample {
                model: "H100".into(),
                mem_used_bytes: Some(1),
                mem_total_bytes: Some(2),
                power_w: Some(300.0),
                ..GpuSample::h100(1_700_000_000_000, 0, "GPU-1", 50.0)
            }],
            serving: vec![],
            command_results: vec![],
            probes: vec![],
        }
    }

    #[test]
    fn a_valid_batch_passes() {
        assert_eq!(batch().validate(), Ok(()));
    }

    #[test]
    fn utilization_above_100_names_the_field() {
        let mut b = batch();
        b.gpus[0].util_pct = Some(101.0);
        let e = b.validate().unwrap_err();
        assert_eq!(e.field, "gpus[0].util_pct");
    }

    #[test]
    fn nan_is_rejected() {
        let mut b = batch();
        b.gpus[0].temp_c = Some(f64::NAN);
        assert_eq!(b.validate().unwrap_err().field, "gpus[0].temp_c");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v = serde_json::to_value(batch()).unwrap();
        v["gpus"][0]["bogus"] = serde_json::json!(1);
        let e = serde_json::from_value::<Batch>(v).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn absent_readings_are_valid_and_round_trip_as_null() {
        let mut b = batch();
        let g = &mut b.gpus[0];
        (g.util_pct, g.power_w, g.temp_c, g.mem_used_bytes) = (None, None, None, None);
        assert_eq!(b.validate(), Ok(()));
        let v = serde_json::to_value(&b).unwrap();
        assert!(v["gpus"][0]["util_pct"].is_null(), "{v}");
        assert!(v["gpus"][0]["power_w"].is_null(), "{v}");
        assert_eq!(serde_json::from_value::<Batch>(v).unwrap(), b);
    }

    #[test]
    fn a_sample_from_an_older_agent_with_plain_numbers_still_parses() {
        // What agents before absent readings sent: every NVML reading a plain number.
        let old = r#"{"ts_ms":1700000000000,"gpu_index":0,"uuid":"GPU-1","model":"H100","util_pct":50.0,
            "mem_used_bytes":1,"mem_total_bytes":2,"power_w":300.0,"temp_c":60.0,"sm_clock_mhz":1980,
            "mem_clock_mhz":2619,"throttle_reasons":0,"ecc_dbe_total":0,"xid_last":0,"sm_active":0.5,
            "tensor_active":null}"#;
        let g: GpuSample = serde_json::from_str(old).unwrap();
        assert_eq!(g, batch().gpus[0]);
        // And one that leaves readings out entirely.
        let sparse = r#"{"ts_ms":1700000000000,"gpu_index":0,"uuid":"GPU-1"}"#;
        let g: GpuSample = serde_json::from_str(sparse).unwrap();
        assert_eq!((g.util_pct, g.power_w, g.xid_last), (None, None, None));
    }

    #[test]
    fn deployment_names_are_checked() {
        assert!(parse_deployment("ns/name").is_ok());
        assert!(parse_deployment("ns").is_err());
        assert!(parse_deployment("NS/x").is_err());
        assert!(parse_deployment("/x").is_err());
    }

    #[test]
    fn commands_round_trip_with_a_kind_tag() {
        let c = Command { id: "c1".into(), action: CommandAction::SetReplicas { group: "g".into(), replicas: 3 } };
        let s = serde_json::to_string(&c).unwrap();
        assert!(s.contains(r#""kind":"set_replicas""#), "{s}");
        assert_eq!(serde_json::from_str::<Command>(&s).unwrap(), c);
        let p = serde_json::to_string(&Command { id: "c2".into(), action: CommandAction::Probe {} }).unwrap();
        assert_eq!(p, r#"{"id":"c2","action":{"kind":"probe"}}"#);
    }

    #[test]
    fn an_unknown_command_kind_does_not_make_the_reply_unreadable() {
        let text = r#"{"seq":1,"duplicate":false,"commands":[
            {"id":"a","action":{"kind":"set_replicas","group":"g","replicas":2}},
            {"id":"b","action":{"kind":"reboot_the_node"}},
            {"id":"c","action":{"kind":"rebatch","deployment":"ns/x","max_batch_size":"lots","max_queue_delay_us":1}}]}"#;
        let ack: BatchAck = serde_json::from_str(text).unwrap();
        assert!(matches!(&ack.commands[0], IncomingCommand::Known(c) if c.id == "a"));
        assert!(matches!(&ack.commands[1], IncomingCommand::Unknown { id, .. } if id == "b"));
        assert!(matches!(&ack.commands[2], IncomingCommand::Unknown { id, .. } if id == "c"));
    }

    #[test]
    fn a_gpu_index_beyond_the_largest_node_is_refused() {
        let mut b = batch();
        b.gpus[0].gpu_index = MAX_GPU_INDEX;
        assert_eq!(b.validate(), Ok(()));
        // MIG instances, as the agent numbers them, are accepted; the gap between the two ranges is not.
        b.gpus[0].gpu_index = MIG_INDEX_BASE + 3 * 100 + 6;
        assert_eq!(b.validate(), Ok(()));
        b.gpus[0].gpu_index = MAX_GPU_INDEX + 1;
        assert_eq!(b.validate().unwrap_err().field, "gpus[0].gpu_index");
        b.gpus[0].gpu_index = MAX_MIG_INDEX + 1;
        assert_eq!(b.validate().unwrap_err().field, "gpus[0].gpu_index");
        b.gpus[0].gpu_index = 2_000_000_000;
        assert_eq!(b.validate().unwrap_err().field, "gpus[0].gpu_index");
    }

    #[test]
    fn nul_and_oversized_text_fields_are_refused() {
        let mut b = batch();
        b.gpus[0].model = "H100\u{0}".into();
        assert_eq!(b.validate().unwrap_err().field, "gpus[0].model");
        let mut b = batch();
        b.gpus[0].model = "x".repeat(MAX_MODEL_LEN + 1);
        assert_eq!(b.validate().unwrap_err().field, "gpus[0].model");
        let mut b = batch();
        b.node.agent_version = "1\u{0}".into();
        assert_eq!(b.validate().unwrap_err().field, "node.agent_version");
        let mut b = batch();
        b.command_results.push(CommandResult { id: "c".into(), ok: true, message: "a\u{0}b".into() });
        assert_eq!(b.validate().unwrap_err().field, "command_results[0].message");
        b.command_results[0].message = "line one\nline two".into();
        assert_eq!(b.validate(), Ok(()));
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let b = batch();
        let ts = b.gpus[0].ts_ms;
        assert_eq!(b.validate_window(ts - 1, ts + 1), Ok(()));
        assert_eq!(b.validate_window(ts + 1, ts + 2).unwrap_err().field, "gpus[0].ts_ms");
        assert_eq!(b.validate_window(ts - 2, ts - 1).unwrap_err().field, "gpus[0].ts_ms");
    }

    #[test]
    fn acks_are_validated() {
        let mut a = CommandAck { agent_id: "n".into(), received: vec!["x".into()], results: vec![] };
        assert_eq!(a.validate(), Ok(()));
        a.received.push(String::new());
        assert_eq!(a.validate().unwrap_err().field, "received[1]");
    }
}
