//! A simulated GPU node: N GPUs and a serving engine whose load follows a replayed request trace.
//!
//! Every simulated node of an agent group replays the same trace on the same clock (a shared epoch), and
//! the group's replicas are spread round-robin over its nodes, so each node derives its share of the load
//! from the group's replica count alone: when the control plane sends `set_replicas`, every node agrees on
//! who serves what. New replicas take a cold start before they serve (their GPUs load the model meanwhile);
//! the backlog is the fluid queue of ../shared/EVAL.md section 3 ([`FluidQueue`], the backtest's own), so fewer replicas visibly mean queueing
//! and latency, more replicas lower utilisation, and larger batches raise throughput and inter-token latency.

use fleetpilot_eval::queue::FluidQueue;
use fleetpilot_eval::trace::{CsvError, parse_buckets, timestamp_secs};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::protocol::{GpuSample, ServingSample};

/// One trace step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRow {
    /// Requests arriving in the step.
    pub requests: f64,
    /// Prompt tokens arriving in the step.
    pub prompt_tokens: f64,
    /// Output tokens to generate for the step's requests.
    pub output_tokens: f64,
}

/// A demand trace at a fixed step.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Seconds per row.
    pub step_secs: f64,
    /// Rows.
    pub rows: Vec<TraceRow>,
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Not a bucketed trace (the one reader's error: header, fields, counts).
    #[error(transparent)]
    Csv(#[from] CsvError),
    /// Nothing in it.
    #[error("trace has no rows")]
    Empty,
}

impl Trace {
    /// Parses the bucketed trace format of `../shared/data/traces/*_10s.csv` with the one trace reader
    /// ([`fleetpilot_eval::trace::parse_buckets`]); the step is taken from the first two timestamps, 10 s if
    /// there is only one row or they do not give a positive step.
    pub fn parse_csv(text: &str) -> Result<Trace, TraceError> {
        let steps = parse_buckets(text)?;
        if steps.is_empty() {
            return Err(TraceError::Empty);
        }
        let stamp = |i: usize| steps.get(i).and_then(|s| timestamp_secs(&s.timestamp));
        let step_secs = match (stamp(0), stamp(1)) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => 10.0,
        };
        let rows = steps
            .iter()
            .map(|s| TraceRow { requests: s.requests, prompt_tokens: s.prompt_tokens, output_tokens: s.output_tokens })
            .collect();
        Ok(Trace { step_secs, rows })
    }

    /// A synthetic diurnal load with bursts, for when no trace file is at hand.
    pub fn synthetic(step_secs: f64, steps: usize, seed: u64) -> Trace {
        let mut rng = StdRng::seed_from_u64(seed);
        let rows = (0..steps)
            .map(|i| {
                let phase = i as f64 / steps.max(1) as f64 * std::f64::consts::TAU;
                let burst = if rng.random_bool(0.03) { rng.random_range(1.5..3.0) } else { 1.0 };
                let requests = (30.0 + 20.0 * phase.sin()) * burst * rng.random_range(0.85..1.15);
                TraceRow { requests, prompt_tokens: requests * 900.0, output_tokens: requests * 220.0 }
            })
            .collect();
        Trace { step_secs, rows }
    }

    /// Duration of one pass, seconds.
    pub fn duration_secs(&self) -> f64 {
        self.step_secs * self.rows.len() as f64
    }
}

/// Simulation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Node name (used in replica names).
    pub node: String,
    /// GPUs on this node.
    pub gpus: u32,
    /// This node's position in the group (0-based).
    pub node_index: u32,
    /// Nodes in the group.
    pub nodes_total: u32,
    /// Trace seconds per wall-clock second.
    pub speedup: f64,
    /// Wall-clock Unix ms at which the trace starts (shared by the group).
    pub epoch_ms: i64,
    /// Group replicas at start.
    pub initial_replicas: u32,
    /// Cold start of a new replica, trace seconds.
    pub cold_start_secs: f64,
    /// Prefill rate of one replica, prompt tokens/s (EVAL.md's P).
    pub prefill_tps: f64,
    /// Decode rate of one replica at the reference batch, output tokens/s (EVAL.md's D).
    pub decode_tps: f64,
    /// A GPU index that runs hot now and then (to exercise temperature alerts).
    pub hot_gpu: Option<u32>,
    /// Deployment served, `namespace/name`.
    pub deployment: String,
    /// RNG seed.
    pub seed: u64,
}

/// Reference batch size at which `decode_tps` holds.
const REFERENCE_BATCH: f64 = 32.0;
const GIB: f64 = 1_073_741_824.0;
const MEM_TOTAL: u64 = 85_520_809_984; // H100 80GB HBM3 as NVML reports it
const MODEL_BYTES: f64 = 38.0 * GIB;

/// The simulated node.
#[derive(Debug)]
pub struct NodeSim {
    cfg: SimConfig,
    trace: Trace,
    rng: StdRng,
    /// Replicas the group should run (the last `set_replicas`).
    desired: u32,
    /// Replicas serving.
    ready: u32,
    /// Replicas starting: (trace time when ready, count).
    pending: Vec<(f64, u32)>,
    /// The group's fluid queue (its backlog, replica-seconds of work).
    queue: FluidQueue,
    last_trace_secs: Option<f64>,
    temps: Vec<f64>,
    batch: u32,
    queue_delay_us: u64,
}

/// The group's state at one instant (what every node of the group agrees on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupState {
    /// Replicas serving.
    pub ready: u32,
    /// Replicas starting.
    pub pending: u32,
    /// Utilisation of serving replicas, 0..=1.
    pub util: f64,
    /// Backlog, replica-seconds.
    pub backlog: f64,
    /// Current trace row.
    pub row: TraceRow,
}

impl NodeSim {
    /// A node over `trace`.
    pub fn new(cfg: SimConfig, trace: Trace) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed ^ u64::from(cfg.node_index).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let initial = cfg.initial_replicas.max(1);
        let temps = vec![32.0; cfg.gpus as usize];
        Self {
            desired: initial,
            ready: initial,
            pending: Vec::new(),
            queue: FluidQueue::new(),
            last_trace_secs: None,
            temps,
            batch: REFERENCE_BATCH as u32,
            queue_delay_us: 2_000,
            rng,
            trace,
            cfg,
        }
    }

    /// Group capacity in replicas (every GPU of every node).
    pub fn capacity(&self) -> u32 {
        self.cfg.gpus.saturating_mul(self.cfg.nodes_total.max(1))
    }

    /// Follows a new desired replica count for the group (capped by the group's GPUs).
    pub fn set_replicas(&mut self, replicas: u32, now_ms: i64) {
        let want = replicas.clamp(1, self.capacity().max(1));
        let t = self.trace_secs(now_ms);
        let starting: u32 = self.pending.iter().map(|(_, n)| n).sum();
        let have = self.ready + starting;
        if want > have {
            self.pending.push((t + self.cfg.cold_start_secs, want - have));
        } else if want < have {
            // Cancel starting replicas first (latest first), then stop serving ones.
            let mut drop = have - want;
            while drop > 0 {
                let Some(last) = self.pending.last_mut() else { break };
                let d = drop.min(last.1);
                last.1 -= d;
                drop -= d;
                if last.1 == 0 {
                    self.pending.pop();
                }
            }
            self.ready = self.ready.saturating_sub(drop).max(1);
        }
        self.desired = want;
    }

    /// Applies new batching.
    pub fn set_batching(&mut self, max_batch_size: u32, max_queue_delay_us: u64) {
        self.batch = max_batch_size.max(1);
        self.queue_delay_us = max_queue_delay_us;
    }

    /// Current batch size.
    pub fn batch_size(&self) -> u32 {
        self.batch
    }

    /// Desired group replicas.
    pub fn desired(&self) -> u32 {
        self.desired
    }

    fn trace_secs(&self, now_ms: i64) -> f64 {
        ((now_ms - self.cfg.epoch_ms).max(0) as f64 / 1000.0) * self.cfg.speedup
    }

    fn row_at(&self, trace_secs: f64) -> TraceRow {
        let n = self.trace.rows.len().max(1);
        let idx = (trace_secs / self.trace.step_secs).floor() as usize % n;
        self.trace.rows.get(idx).copied().unwrap_or(TraceRow { requests: 0.0, prompt_tokens: 0.0, output_tokens: 0.0 })
    }

    /// Throughput multiplier of a batch size: bigger batches amortise weights reads, with diminishing returns.
    fn batch_efficiency(&self) -> f64 {
        let b = f64::from(self.batch);
        (b / (b + 8.0)) / (REFERENCE_BATCH / (REFERENCE_BATCH + 8.0))
    }

    /// Advances the group model to `now_ms`.
    pub fn advance(&mut self, now_ms: i64) -> GroupState {
        let t = self.trace_secs(now_ms);
        let prev = self.last_trace_secs.unwrap_or(t);
        let dt = (t - prev).clamp(0.0, 3600.0);
        self.last_trace_secs = Some(t);
        let mut became_ready = 0;
        self.pending.retain(|(at, n)| {
            if *at <= t {
                became_ready += n;
                false
            } else {
                true
            }
        });
        self.ready += became_ready;
        let row = self.row_at(t);
        let step = self.trace.step_secs.max(1e-9);
        let work_rate = (row.prompt_tokens / self.cfg.prefill_tps + row.output_tokens / self.cfg.decode_tps) / step;
        let arrivals = work_rate * dt;
        let capacity = f64::from(self.ready) * dt * self.batch_efficiency();
        let q = self.queue.step(arrivals, capacity);
        // No time elapsed (the first sample, or two at one instant): there is no interval to measure, so the
        // utilisation is the arrival rate over the serving rate instead of the queue's busy fraction.
        let util = if capacity > 0.0 {
            q.utilisation
        } else if work_rate > 0.0 {
            (work_rate / (f64::from(self.ready) * self.batch_efficiency())).min(1.0)
        } else {
            0.0
        };
        let pending = self.pending.iter().map(|(_, n)| n).sum();
        GroupState { ready: self.ready, pending, util, backlog: q.backlog, row }
    }

    /// The health probe's answer for each simulated GPU: an H100's achievable copy bandwidth (about 2.9 TB/s)
    /// with a little noise; the hot GPU (`hot_gpu`) measures 40 % lower, a degraded part that still reports
    /// normal utilisation.
    pub fn probe(&mut self, now_ms: i64) -> Vec<crate::protocol::ProbeSample> {
        (0..self.cfg.gpus)
            .map(|i| {
                let nominal: f64 = if self.cfg.hot_gpu == Some(i) { 0.6 * 2900.0 } else { 2900.0 };
                crate::protocol::ProbeSample {
                    ts_ms: now_ms,
                    gpu_index: i,
                    uuid: Some(format!("GPU-sim-{}-{i:02}", self.cfg.node)),
                    bandwidth_gb_s: Some((nominal + self.rng.random_range(-30.0..30.0)).round()),
                    error: None,
                }
            })
            .collect()
    }
    /// Samples every GPU of this node and every replica it serves at `now_ms`.
    pub fn sample(&mut self, now_ms: i64) -> (Vec<GpuSample>, Vec<ServingSample>) {
        let g = self.advance(now_ms);
        let nodes = self.cfg.nodes_total.max(1);
        let hot_phase = (now_ms / 1000) % 180 < 60;
        let mut gpus = Vec::with_capacity(self.cfg.gpus as usize);
        let mut serving = Vec::new();
        let step = self.trace.step_secs.max(1e-9);
        let speedup = if self.cfg.speedup.is_finite() && self.cfg.speedup > 0.0 { self.cfg.speedup } else { 1.0 };
        let work_per_req = if g.row.requests > 0.0 {
            (g.row.prompt_tokens / self.cfg.prefill_tps + g.row.output_tokens / self.cfg.decode_tps) / g.row.requests
        } else {
            1.0
        };
        for i in 0..self.cfg.gpus {
            // Replica r lives on node r % nodes, slot r / nodes.
            let replica = i * nodes + self.cfg.node_index;
            let (state, util) = if replica < g.ready {
                ("ready", (g.util * 100.0 + self.rng.random_range(-3.0..3.0)).clamp(0.0, 100.0))
            } else if replica < g.ready + g.pending {
                ("starting", self.rng.random_range(2.0..12.0))
            } else {
                ("idle", 0.0)
            };
            let u = util / 100.0;
            let kv = if state == "ready" {
                (20.0 + 75.0 * g.util + self.rng.random_range(-2.0..2.0)).clamp(0.0, 100.0)
            } else {
                0.0
            };
            let mem_used = match state {
                "ready" => MODEL_BYTES + kv / 100.0 * 30.0 * GIB,
                "starting" => MODEL_BYTES * self.rng.random_range(0.3..1.0),
                _ => 0.45 * GIB,
            };
            let hot = self.cfg.hot_gpu == Some(i) && hot_phase && state == "ready";
            let target_temp = 32.0 + 45.0 * u + if hot { 22.0 } else { 0.0 };
            let temp = &mut self.temps[i as usize];
            *temp += (target_temp - *temp) * 0.3;
            let throttled = *temp >= 87.0;
            gpus.push(GpuSample {
                ts_ms: now_ms,
                gpu_index: i,
                uuid: format!("GPU-sim-{}-{i:02}", self.cfg.node),
                model: "NVIDIA H100 80GB HBM3 (simulated)".into(),
                util_pct: Some((util * 10.0).round() / 10.0),
                mem_used_bytes: Some(mem_used as u64),
                mem_total_bytes: Some(MEM_TOTAL),
                power_w: Some(((70.0 + 630.0 * u + self.rng.random_range(-5.0..5.0)).max(50.0) * 10.0).round() / 10.0),
                temp_c: Some((*temp * 10.0).round() / 10.0),
                sm_clock_mhz: Some(if throttled { 1605 } else { 1980 }),
                mem_clock_mhz: Some(2619),
                throttle_reasons: Some(if throttled { 0x20 } else { 0 }),
                ecc_dbe_total: Some(0),
                xid_last: Some(0),
                sm_active: Some((u * 0.92).clamp(0.0, 1.0)),
                tensor_active: Some((u * 0.55).clamp(0.0, 1.0)),
            });
            if state == "ready" {
                let ready = f64::from(g.ready.max(1));
                let queue_s = g.backlog / ready;
                let batch = f64::from(self.batch);
                let itl = 0.008 + 0.0006 * batch * g.util.max(0.05);
                let ttft = 0.05 + g.row.prompt_tokens / g.row.requests.max(1.0) / self.cfg.prefill_tps + queue_s;
                serving.push(ServingSample {
                    ts_ms: now_ms,
                    deployment: self.cfg.deployment.clone(),
                    replica: format!("{}-gpu{i}", self.cfg.node),
                    engine: "sim".into(),
                    queue_depth: (queue_s / work_per_req.max(1e-6)).max(0.0).round(),
                    running: (batch * g.util).round(),
                    kv_cache_pct: Some(kv),
                    ttft_p50_s: Some(ttft),
                    ttft_p95_s: Some(ttft * 1.8),
                    ttft_p99_s: Some(ttft * 2.6),
                    itl_p50_s: Some(itl),
                    itl_p95_s: Some(itl * 1.4),
                    itl_p99_s: Some(itl * 1.9),
                    // Per wall-clock second, as a real engine counts: a trace replayed `speedup` times faster
                    // serves that many more requests each second.
                    requests_per_s: g.row.requests / step / ready * speedup,
                    prompt_tokens_per_s: g.row.prompt_tokens / step / ready * speedup,
                    generation_tokens_per_s: g.row.output_tokens / step / ready * speedup,
                    batch_size_mean: Some((batch * g.util).max(1.0)),
                });
            }
        }
        (gpus, serving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SimConfig {
        SimConfig {
            node: "n0".into(),
            gpus: 4,
            node_index: 0,
            nodes_total: 2,
            speedup: 10.0,
            epoch_ms: 0,
            initial_replicas: 4,
            cold_start_secs: 120.0,
            prefill_tps: 1000.0,
            decode_tps: 100.0,
            hot_gpu: None,
            deployment: "demo/llama".into(),
            seed: 7,
        }
    }

    fn flat(requests: f64) -> Trace {
        Trace {
            step_secs: 10.0,
            rows: vec![TraceRow { requests, prompt_tokens: requests * 1000.0, output_tokens: requests * 100.0 }; 100],
        }
    }

    #[test]
    fn the_bucketed_trace_format_parses() {
        let t = Trace::parse_csv("timestamp,requests,prompt_tokens,output_tokens\n2023-11-16 18:15:40,1,374,44\n2023-11-16 18:15:50,20,11363,1782\n").unwrap();
        assert_eq!(t.step_secs, 10.0);
        assert_eq!(t.rows.len(), 2);
        assert!(Trace::parse_csv("a,b\n").is_err());
        assert!(Trace::parse_csv("timestamp,requests,prompt_tokens,output_tokens\nx,1,2\n").is_err());
        assert!(Trace::parse_csv("timestamp,requests,prompt_tokens,output_tokens\nx,1,-2,3\n").is_err());
    }

    #[test]
    fn the_real_azure_trace_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/traces/azure_conv_10s.csv");
        let t = Trace::parse_csv(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(t.step_secs, 10.0);
        assert_eq!(t.rows.len(), 351);
    }

    #[test]
    fn more_replicas_lower_per_gpu_load_after_the_cold_start() {
        // 3 requests per 10 s = 0.3 req/s x 2 replica-s each = 0.6 replicas busy per second... scaled up:
        let mut s = NodeSim::new(cfg(), flat(12.0)); // 12 req/step -> 12*(1+1)/10 = 2.4 replicas busy
        let (g1, _) = s.sample(0);
        let (g1b, _) = s.sample(1_000);
        let busy_before: f64 = g1b.iter().filter_map(|g| g.util_pct).sum();
        assert_eq!(g1.len(), 4);
        s.set_replicas(8, 1_000);
        // Before the cold start (120 trace-s = 12 wall-s) nothing changes for serving replicas.
        let (_, serving) = s.sample(5_000);
        assert_eq!(serving.len(), 2, "node 0 serves replicas 0 and 2 of 4");
        let (gpus, serving) = s.sample(20_000);
        assert_eq!(serving.len(), 4, "after the cold start node 0 serves 4 of 8");
        let per_gpu_after = gpus.iter().filter_map(|g| g.util_pct).sum::<f64>() / 4.0;
        let per_gpu_before = busy_before / 2.0;
        assert!(per_gpu_after < per_gpu_before * 0.75, "{per_gpu_before} -> {per_gpu_after}");
    }

    #[test]
    fn too_few_replicas_build_a_queue() {
        let mut s = NodeSim::new(SimConfig { initial_replicas: 1, ..cfg() }, flat(30.0));
        s.sample(0);
        let (_, serving) = s.sample(10_000);
        assert!(serving[0].queue_depth > 0.0);
        assert!(serving[0].ttft_p50_s.unwrap() > 1.0);
    }

    #[test]
    fn larger_batches_raise_throughput_and_latency() {
        let mut small = NodeSim::new(cfg(), flat(20.0));
        small.set_batching(8, 1000);
        let mut large = NodeSim::new(cfg(), flat(20.0));
        large.set_batching(128, 1000);
        assert!(large.batch_efficiency() > small.batch_efficiency());
        small.sample(0);
        large.sample(0);
        let (_, s) = small.sample(30_000);
        let (_, l) = large.sample(30_000);
        assert!(l[0].itl_p50_s > s[0].itl_p50_s);
    }

    #[test]
    fn scale_down_cancels_pending_first_and_never_below_one() {
        let mut s = NodeSim::new(cfg(), flat(1.0));
        s.set_replicas(6, 0);
        s.set_replicas(4, 0);
        assert!(s.pending.is_empty());
        s.set_replicas(0, 0);
        assert_eq!(s.advance(0).ready, 1);
    }
}
