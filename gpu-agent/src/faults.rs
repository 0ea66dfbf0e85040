//! Fault injection for the simulator: a seeded schedule of GPU-fleet faults with ground truth, and the
//! injector that rewrites a simulated node's samples while a fault is active.
//!
//! Each fault kind has the signature it has on real hardware (../shared/EVAL.md section 1b):
//! - thermal throttling: temperature climbs towards 93 °C (first-order, 30 s time constant); from the
//!   slowdown temperature (85 °C) the SM clock falls and the thermal slowdown bits (0x20 | 0x40) are set;
//! - power-cap throttling: a power limit far below the board power (250 W on a 700 W part): power is pinned
//!   at the cap, the SM clock falls in proportion and the software power-cap bit (0x04) is set while the cap
//!   binds;
//! - XID burst: the GPU reports a run of XID errors (13, 31, 43 in turn);
//! - stuck reading: the exporter repeats the GPU's last reading (every field frozen, timestamps advancing);
//! - dropout: the GPU disappears from the node's samples (and its replica from the serving samples);
//! - memory leak: memory used creeps up linearly from its normal level until it reaches the board's memory,
//!   where the process is killed (out of memory) and the fault ends;
//! - straggler: a degraded GPU needs 1 / 0.6 of the time for the same work, so its utilisation departs
//!   upwards from its peers' and its bandwidth probe measures 40 % less;
//! - latency regression: one replica's TTFT and inter-token latency triple, its GPU telemetry unchanged.
//!
//! The schedule gives every GPU at most one fault at a time and leaves a fault-free gap after each, so
//! detections can be attributed (EVAL.md counts an event within a fault's window plus 10 minutes).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::protocol::{GpuSample, ProbeSample, ServingSample};

/// NVML throttle reason: software power cap.
pub const THROTTLE_SW_POWER_CAP: u64 = 0x04;
/// NVML throttle reasons: software and hardware thermal slowdown.
pub const THROTTLE_THERMAL: u64 = 0x20 | 0x40;
/// Temperature at which an H100 starts its thermal slowdown, Celsius.
pub const SLOWDOWN_TEMP_C: f64 = 85.0;
/// Temperature a GPU with failed cooling heads for, Celsius.
const THERMAL_TARGET_C: f64 = 93.0;
/// Time constant of the temperature climb, seconds (a heatsink's order of magnitude).
const THERMAL_TAU_S: f64 = 30.0;
/// The mistaken power limit of a power-cap fault, watts.
pub const POWER_CAP_W: f64 = 250.0;
/// Relative speed of a straggling GPU (its work takes 1 / this as long).
pub const STRAGGLER_SPEED: f64 = 0.6;
/// Latency factor of a regressed replica.
pub const LATENCY_FACTOR: f64 = 3.0;
/// XID codes of a burst, reported in turn.
const XID_CODES: [u32; 3] = [13, 31, 43];
/// Nominal SM clock of the simulated GPU, MHz.
const NOMINAL_SM_CLOCK_MHZ: f64 = 1980.0;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SM clock falls while temperature rises; thermal slowdown bits set.
    Thermal,
    /// Power pinned at a low cap; power-cap bit set.
    PowerCap,
    /// A run of XID errors.
    XidBurst,
    /// Every field of the GPU's reading frozen at its last value.
    StuckReading,
    /// The GPU stops reporting.
    Dropout,
    /// Memory used creeps up until out of memory.
    MemoryLeak,
    /// Utilisation and probe bandwidth depart from the peers'.
    Straggler,
    /// One replica's latency triples.
    LatencyRegression,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Thermal,
        FaultKind::PowerCap,
        FaultKind::XidBurst,
        FaultKind::StuckReading,
        FaultKind::Dropout,
        FaultKind::MemoryLeak,
        FaultKind::Straggler,
        FaultKind::LatencyRegression,
    ];

    /// Stable name (CSV, command line).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Thermal => "thermal",
            FaultKind::PowerCap => "power_cap",
            FaultKind::XidBurst => "xid_burst",
            FaultKind::StuckReading => "stuck_reading",
            FaultKind::Dropout => "dropout",
            FaultKind::MemoryLeak => "memory_leak",
            FaultKind::Straggler => "straggler",
            FaultKind::LatencyRegression => "latency_regression",
        }
    }

    /// Range of durations, seconds (a leak's is its time to out-of-memory).
    fn duration_secs(self) -> (f64, f64) {
        match self {
            FaultKind::Thermal | FaultKind::PowerCap | FaultKind::StuckReading => (600.0, 1800.0),
            FaultKind::XidBurst => (60.0, 180.0),
            FaultKind::Dropout => (300.0, 1200.0),
            FaultKind::MemoryLeak => (1200.0, 2400.0),
            FaultKind::Straggler => (1200.0, 2400.0),
            FaultKind::LatencyRegression => (900.0, 1800.0),
        }
    }
}

/// One injected fault: the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// Node's position in the fleet (0-based).
    pub node_index: u32,
    /// GPU index on the node (its replica is the one on that GPU).
    pub gpu_index: u32,
    /// Start, Unix ms (simulated clock).
    pub start_ms: i64,
    /// End, Unix ms (exclusive).
    pub end_ms: i64,
}

impl Fault {
    /// Whether the fault is active at `ts_ms`.
    pub fn active(&self, ts_ms: i64) -> bool {
        (self.start_ms..self.end_ms).contains(&ts_ms)
    }
}

/// Why a schedule could not be drawn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// No GPU, or an empty or reversed time range.
    #[error("fault plan needs at least one GPU and a time range, got {gpus} GPUs over {secs} s")]
    Empty {
        /// GPUs in the fleet.
        gpus: u32,
        /// Seconds available.
        secs: i64,
    },
    /// The faults asked for do not fit on the GPUs over the time range.
    #[error("could not place {kind} fault {n}: the fleet has no free GPU slot long enough; ask for fewer faults")]
    NoRoom {
        /// Kind being placed.
        kind: &'static str,
        /// Which of its faults (0-based).
        n: usize,
    },
}

/// A seeded schedule of faults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultPlan {
    /// Faults, ordered by start.
    pub faults: Vec<Fault>,
}

/// Fault-free time kept after every fault on its GPU, ms: EVAL.md's 10-minute grace plus 10 minutes, so an
/// event on that GPU is attributed to one fault or to none.
pub const GAP_AFTER_MS: i64 = 20 * 60 * 1000;

impl FaultPlan {
    /// Draws `per_kind` faults of every kind at random start times in `[start_ms, end_ms)` (each fault ends
    /// before `end_ms`) on random GPUs of `nodes` x `gpus_per_node`, at most one fault per GPU at a time, and
    /// [`GAP_AFTER_MS`] of fault-free time on that GPU after each.
    pub fn random(
        seed: u64,
        nodes: u32,
        gpus_per_node: u32,
        start_ms: i64,
        end_ms: i64,
        per_kind: usize,
    ) -> Result<FaultPlan, PlanError> {
        let gpus = nodes.saturating_mul(gpus_per_node);
        if gpus == 0 || end_ms <= start_ms {
            return Err(PlanError::Empty { gpus, secs: (end_ms - start_ms) / 1000 });
        }
        let mut rng = StdRng::seed_from_u64(seed);
        // Busy intervals per GPU, [from, to) including the gap.
        let mut busy: HashMap<(u32, u32), Vec<(i64, i64)>> = HashMap::new();
        let mut faults = Vec::new();
        // Interleave kinds so that no kind systematically gets the leftovers.
        for n in 0..per_kind {
            for kind in FaultKind::ALL {
                let (lo, hi) = kind.duration_secs();
                let mut placed = false;
                for _ in 0..1000 {
                    let dur_ms = (rng.random_range(lo..=hi) * 1000.0) as i64;
                    let latest = end_ms - dur_ms;
                    if latest <= start_ms {
                        break;
                    }
                    let s = rng.random_range(start_ms..latest);
                    let node_index = rng.random_range(0..nodes);
                    let gpu_index = rng.random_range(0..gpus_per_node);
                    let slot = (s, s + dur_ms + GAP_AFTER_MS);
                    let list = busy.entry((node_index, gpu_index)).or_default();
                    // A fault's gap also protects the one before it: keep GAP_AFTER_MS before the start.
                    if list.iter().any(|(a, b)| slot.0 - GAP_AFTER_MS < *b && *a < slot.1) {
                        continue;
                    }
                    list.push(slot);
                    faults.push(Fault { kind, node_index, gpu_index, start_ms: s, end_ms: s + dur_ms });
                    placed = true;
                    break;
                }
                if !placed {
                    return Err(PlanError::NoRoom { kind: kind.name(), n });
                }
            }
        }
        faults.sort_by_key(|f| (f.start_ms, f.node_index, f.gpu_index));
        Ok(FaultPlan { faults })
    }

    /// The faults of one node.
    pub fn for_node(&self, node_index: u32) -> Vec<Fault> {
        self.faults.iter().filter(|f| f.node_index == node_index).cloned().collect()
    }
}

/// Rewrites one node's samples while its faults are active.
#[derive(Debug)]
pub struct FaultInjector {
    faults: Vec<Fault>,
    /// Last reading of every GPU as sampled, for stuck readings (frozen at the reading before the fault).
    last: HashMap<u32, GpuSample>,
    /// Frozen reading per stuck fault (by index in `faults`).
    frozen: HashMap<usize, GpuSample>,
    /// Memory used at a leak's start, bytes (by index in `faults`).
    leak_base: HashMap<usize, f64>,
}

impl FaultInjector {
    /// An injector for one node's faults (see [`FaultPlan::for_node`]).
    pub fn new(faults: Vec<Fault>) -> Self {
        Self { faults, last: HashMap::new(), frozen: HashMap::new(), leak_base: HashMap::new() }
    }

    /// Applies the active faults to one sampling instant of the node: `gpus` and `serving` as the simulator
    /// produced them at `ts_ms` (serving replicas are named `<node>-gpu<i>`, as the simulator names them).
    pub fn apply(&mut self, ts_ms: i64, gpus: &mut Vec<GpuSample>, serving: &mut Vec<ServingSample>) {
        let mut dropped: Vec<u32> = Vec::new();
        for (fi, f) in self.faults.iter().enumerate() {
            if !f.active(ts_ms) {
                continue;
            }
            let Some(g) = gpus.iter_mut().find(|g| g.gpu_index == f.gpu_index) else { continue };
            let elapsed_s = (ts_ms - f.start_ms) as f64 / 1000.0;
            match f.kind {
                // A fault rewrites the readings the sample has; an absent one stays absent.
                FaultKind::Thermal => {
                    if let Some(base) = g.temp_c {
                        let temp = THERMAL_TARGET_C - (THERMAL_TARGET_C - base) * (-elapsed_s / THERMAL_TAU_S).exp();
                        let temp = (temp.max(base) * 10.0).round() / 10.0;
                        g.temp_c = Some(temp);
                        if temp >= SLOWDOWN_TEMP_C {
                            g.throttle_reasons = Some(g.throttle_reasons.unwrap_or(0) | THROTTLE_THERMAL);
                            // The clock steps down with every degree past the slowdown point.
                            let over = temp - SLOWDOWN_TEMP_C;
                            g.sm_clock_mhz = Some((NOMINAL_SM_CLOCK_MHZ * (0.8 - 0.03 * over).max(0.5)).round() as u32);
                        }
                    }
                }
                FaultKind::PowerCap => {
                    if let Some(power) = g.power_w
                        && power > POWER_CAP_W
                    {
                        let ratio = POWER_CAP_W / power;
                        g.power_w = Some(POWER_CAP_W);
                        g.throttle_reasons = Some(g.throttle_reasons.unwrap_or(0) | THROTTLE_SW_POWER_CAP);
                        // Dynamic power goes roughly with the clock cubed (voltage follows frequency).
                        g.sm_clock_mhz = g.sm_clock_mhz.map(|c| (f64::from(c) * ratio.cbrt()).round() as u32);
                    }
                }
                FaultKind::XidBurst => {
                    let i = (elapsed_s / 10.0).floor() as usize % XID_CODES.len();
                    g.xid_last = Some(XID_CODES[i]);
                }
                FaultKind::StuckReading => {
                    let frozen = self
                        .frozen
                        .entry(fi)
                        .or_insert_with(|| self.last.get(&f.gpu_index).cloned().unwrap_or_else(|| g.clone()));
                    let ts = g.ts_ms;
                    *g = frozen.clone();
                    g.ts_ms = ts;
                }
                FaultKind::Dropout => dropped.push(f.gpu_index),
                FaultKind::MemoryLeak => {
                    if let (Some(used), Some(total)) = (g.mem_used_bytes, g.mem_total_bytes) {
                        let base = *self.leak_base.entry(fi).or_insert(used as f64);
                        let total = total as f64;
                        let dur_s = ((f.end_ms - f.start_ms) as f64 / 1000.0).max(1.0);
                        // Linear creep from the start's level to the whole memory at the fault's end (OOM).
                        let leaked = (total - base).max(0.0) * (elapsed_s / dur_s);
                        g.mem_used_bytes = Some((used as f64 + leaked).min(total) as u64);
                    }
                }
                FaultKind::Straggler => {
                    if let Some(util) = g.util_pct
                        && util > 0.0
                    {
                        g.util_pct = Some(((util / STRAGGLER_SPEED).min(100.0) * 10.0).round() / 10.0);
                        g.sm_active = g.sm_active.map(|a| (a / STRAGGLER_SPEED).min(1.0));
                    }
                }
                FaultKind::LatencyRegression => {
                    let suffix = format!("-gpu{}", f.gpu_index);
                    for s in serving.iter_mut().filter(|s| s.replica.ends_with(&suffix)) {
                        for v in [
                            &mut s.ttft_p50_s,
                            &mut s.ttft_p95_s,
                            &mut s.ttft_p99_s,
                            &mut s.itl_p50_s,
                            &mut s.itl_p95_s,
                            &mut s.itl_p99_s,
                        ] {
                            *v = v.map(|x| x * LATENCY_FACTOR);
                        }
                    }
                }
            }
        }
        // Remember readings as sampled (before faults) so a stuck reading freezes a real one.
        for g in gpus.iter() {
            let stuck = self
                .faults
                .iter()
                .any(|f| f.kind == FaultKind::StuckReading && f.gpu_index == g.gpu_index && f.active(ts_ms));
            if !stuck {
                self.last.insert(g.gpu_index, g.clone());
            }
        }
        if !dropped.is_empty() {
            gpus.retain(|g| !dropped.contains(&g.gpu_index));
            let suffixes: Vec<String> = dropped.iter().map(|i| format!("-gpu{i}")).collect();
            serving.retain(|s| !suffixes.iter().any(|x| s.replica.ends_with(x)));
        }
    }

    /// Applies the active faults to probe results: a straggler's bandwidth drops to [`STRAGGLER_SPEED`] of
    /// what it measured; a dropped-out GPU cannot be probed.
    pub fn apply_probes(&self, ts_ms: i64, probes: &mut Vec<ProbeSample>) {
        for f in self.faults.iter().filter(|f| f.active(ts_ms)) {
            match f.kind {
                FaultKind::Straggler => {
                    for p in probes.iter_mut().filter(|p| p.gpu_index == f.gpu_index) {
                        p.bandwidth_gb_s = p.bandwidth_gb_s.map(|b| (b * STRAGGLER_SPEED).round());
                    }
                }
                FaultKind::Dropout => probes.retain(|p| p.gpu_index != f.gpu_index),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(i: u32, ts_ms: i64, util: f64) -> GpuSample {
        GpuSample {
            ts_ms,
            gpu_index: i,
            uuid: format!("GPU-{i}"),
            model: "NVIDIA H100 80GB HBM3 (simulated)".into(),
            util_pct: Some(util),
            mem_used_bytes: Some(50_000_000_000),
            mem_total_bytes: Some(85_520_809_984),
            power_w: Some(70.0 + 6.3 * util),
            temp_c: Some(32.0 + 0.45 * util),
            sm_clock_mhz: Some(1980),
            mem_clock_mhz: Some(2619),
            throttle_reasons: Some(0),
            ecc_dbe_total: Some(0),
            xid_last: Some(0),
            sm_active: Some(util / 100.0 * 0.92),
            tensor_active: Some(util / 100.0 * 0.55),
        }
    }

    fn serving(i: u32, ts_ms: i64) -> ServingSample {
        ServingSample {
            ts_ms,
            deployment: "ml/llama".into(),
            replica: format!("n0-gpu{i}"),
            engine: "sim".into(),
            queue_depth: 0.0,
            running: 10.0,
            kv_cache_pct: Some(50.0),
            ttft_p50_s: Some(0.2),
            ttft_p95_s: Some(0.4),
            ttft_p99_s: Some(0.5),
            itl_p50_s: Some(0.02),
            itl_p95_s: Some(0.03),
            itl_p99_s: Some(0.04),
            requests_per_s: 1.0,
            prompt_tokens_per_s: 100.0,
            generation_tokens_per_s: 50.0,
            batch_size_mean: Some(10.0),
        }
    }

    fn one(kind: FaultKind) -> FaultInjector {
        FaultInjector::new(vec![Fault { kind, node_index: 0, gpu_index: 1, start_ms: 100_000, end_ms: 700_000 }])
    }

    fn at(inj: &mut FaultInjector, ts_ms: i64, util: f64) -> (Vec<GpuSample>, Vec<ServingSample>) {
        let mut g = vec![gpu(0, ts_ms, util), gpu(1, ts_ms, util)];
        let mut s = vec![serving(0, ts_ms), serving(1, ts_ms)];
        inj.apply(ts_ms, &mut g, &mut s);
        (g, s)
    }

    #[test]
    fn the_plan_is_seeded_within_range_and_one_fault_per_gpu_at_a_time() {
        let (start, end) = (0, 24 * 3_600_000);
        let a = FaultPlan::random(7, 8, 8, start, end, 3).unwrap();
        let b = FaultPlan::random(7, 8, 8, start, end, 3).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, FaultPlan::random(8, 8, 8, start, end, 3).unwrap());
        assert_eq!(a.faults.len(), 3 * FaultKind::ALL.len());
        for k in FaultKind::ALL {
            assert_eq!(a.faults.iter().filter(|f| f.kind == k).count(), 3);
        }
        for f in &a.faults {
            assert!(f.start_ms >= start && f.end_ms <= end && f.start_ms < f.end_ms);
            for o in a.faults.iter().filter(|o| *o != f && o.node_index == f.node_index && o.gpu_index == f.gpu_index) {
                assert!(o.start_ms >= f.end_ms + GAP_AFTER_MS || f.start_ms >= o.end_ms + GAP_AFTER_MS, "{f:?} {o:?}");
            }
        }
        assert!(FaultPlan::random(1, 1, 1, 0, 3_600_000, 3).is_err(), "24 faults do not fit on one GPU in an hour");
        assert!(FaultPlan::random(1, 0, 8, 0, 1, 1).is_err());
    }

    #[test]
    fn thermal_throttling_raises_temperature_then_lowers_the_clock_with_the_thermal_bits() {
        let mut inj = one(FaultKind::Thermal);
        let (g, _) = at(&mut inj, 50_000, 60.0);
        assert_eq!((g[1].throttle_reasons.unwrap(), g[1].sm_clock_mhz.unwrap()), (0, 1980), "before the fault");
        let (early, _) = at(&mut inj, 105_000, 60.0);
        assert!(early[1].temp_c.unwrap() > 59.0 && early[1].temp_c.unwrap() < SLOWDOWN_TEMP_C);
        assert_eq!(early[1].throttle_reasons.unwrap(), 0);
        let (late, _) = at(&mut inj, 220_000, 60.0);
        assert!(late[1].temp_c.unwrap() >= 90.0, "{}", late[1].temp_c.unwrap());
        assert_eq!(late[1].throttle_reasons.unwrap() & THROTTLE_THERMAL, THROTTLE_THERMAL);
        assert!(late[1].sm_clock_mhz.unwrap() < 1600);
        assert_eq!(late[0], gpu(0, 220_000, 60.0), "other GPUs untouched");
        let (after, _) = at(&mut inj, 700_000, 60.0);
        assert_eq!(after[1].throttle_reasons.unwrap(), 0, "the fault ends");
    }

    #[test]
    fn a_power_cap_pins_power_and_sets_the_power_cap_bit_while_it_binds() {
        let mut inj = one(FaultKind::PowerCap);
        let (g, _) = at(&mut inj, 200_000, 80.0);
        assert_eq!(g[1].power_w.unwrap(), POWER_CAP_W);
        assert_eq!(g[1].throttle_reasons.unwrap(), THROTTLE_SW_POWER_CAP);
        assert!(g[1].sm_clock_mhz.unwrap() < 1600);
        let (idle, _) = at(&mut inj, 210_000, 10.0);
        assert_eq!(idle[1].throttle_reasons.unwrap(), 0, "a cap above the draw does not bind");
    }

    #[test]
    fn an_xid_burst_reports_changing_codes_then_stops() {
        let mut inj = one(FaultKind::XidBurst);
        let codes: Vec<u32> =
            [100_000, 110_000, 120_000].iter().map(|t| at(&mut inj, *t, 50.0).0[1].xid_last.unwrap()).collect();
        assert_eq!(codes, vec![13, 31, 43]);
        assert_eq!(at(&mut inj, 800_000, 50.0).0[1].xid_last.unwrap(), 0);
    }

    #[test]
    fn a_stuck_reading_repeats_the_last_reading_with_fresh_timestamps() {
        let mut inj = one(FaultKind::StuckReading);
        let (before, _) = at(&mut inj, 90_000, 42.0);
        let (s1, _) = at(&mut inj, 100_000, 60.0);
        let (s2, _) = at(&mut inj, 400_000, 70.0);
        for s in [&s1[1], &s2[1]] {
            assert_eq!(GpuSample { ts_ms: 90_000, ..s.clone() }, before[1]);
        }
        assert_eq!(s2[1].ts_ms, 400_000);
        assert_eq!(s2[0].util_pct.unwrap(), 70.0, "other GPUs move on");
    }

    #[test]
    fn a_dropout_removes_the_gpu_and_its_replica() {
        let mut inj = one(FaultKind::Dropout);
        let (g, s) = at(&mut inj, 300_000, 50.0);
        assert_eq!(g.iter().map(|g| g.gpu_index).collect::<Vec<_>>(), vec![0]);
        assert_eq!(s.iter().map(|s| s.replica.as_str()).collect::<Vec<_>>(), vec!["n0-gpu0"]);
        let mut probes =
            vec![ProbeSample { ts_ms: 0, gpu_index: 1, uuid: None, bandwidth_gb_s: Some(2900.0), error: None }];
        inj.apply_probes(300_000, &mut probes);
        assert!(probes.is_empty());
    }

    #[test]
    fn a_memory_leak_creeps_up_to_the_whole_memory_at_the_end() {
        let mut inj = one(FaultKind::MemoryLeak);
        let m = |t: i64, inj: &mut FaultInjector| at(inj, t, 50.0).0[1].mem_used_bytes.unwrap();
        let start = m(100_000, &mut inj);
        let mid = m(400_000, &mut inj);
        let end = m(699_999, &mut inj);
        assert_eq!(start, 50_000_000_000);
        assert!(mid > start && end > mid);
        assert!(end as f64 > 0.999 * 85_520_809_984.0);
        assert_eq!(m(700_000, &mut inj), 50_000_000_000, "out of memory: the process restarts");
    }

    #[test]
    fn a_straggler_works_harder_and_probes_slower() {
        let mut inj = one(FaultKind::Straggler);
        let (g, _) = at(&mut inj, 200_000, 45.0);
        assert_eq!(g[1].util_pct.unwrap(), 75.0);
        assert_eq!(g[0].util_pct.unwrap(), 45.0);
        let mut probes: Vec<ProbeSample> = (0..2)
            .map(|i| ProbeSample { ts_ms: 0, gpu_index: i, uuid: None, bandwidth_gb_s: Some(2900.0), error: None })
            .collect();
        inj.apply_probes(200_000, &mut probes);
        assert_eq!(probes[1].bandwidth_gb_s, Some(1740.0));
        assert_eq!(probes[0].bandwidth_gb_s, Some(2900.0));
    }

    #[test]
    fn a_latency_regression_triples_one_replicas_latency_only() {
        let mut inj = one(FaultKind::LatencyRegression);
        let (g, s) = at(&mut inj, 200_000, 50.0);
        assert_eq!(s[1].itl_p95_s, Some(0.03 * LATENCY_FACTOR));
        assert_eq!(s[1].ttft_p95_s, Some(0.4 * LATENCY_FACTOR));
        assert_eq!(s[0].itl_p95_s, Some(0.03));
        assert_eq!(g[1], gpu(1, 200_000, 50.0));
    }
}
