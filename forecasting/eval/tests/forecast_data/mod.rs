//! Loads the forecasting evaluation series from `shared/data` (shared by the accuracy test and the examples).
#![allow(dead_code)]

use std::path::Path;

use fleetpilot_eval::trace::{parse_buckets, parse_series};

pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

/// The EC2 CPU series of NAB (5-minute steps, daily season 288), sorted by name: (name, values).
pub fn ec2_cpu() -> Vec<(String, Vec<f64>)> {
    let dir = Path::new(DATA).join("nab/data/realAWSCloudwatch");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("NAB data dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("ec2_cpu_utilization_") && n.ends_with(".csv"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).expect("read NAB csv");
            let values = parse_series(&text, 1).unwrap_or_else(|e| panic!("{n}: {e}")).values;
            (n.trim_end_matches(".csv").to_string(), values)
        })
        .collect()
}

/// Replica-seconds of work per 10-second step: prompt_tokens / 1000 + output_tokens / 100.
pub fn trace_work(name: &str) -> Vec<f64> {
    let path = Path::new(DATA).join("traces").join(format!("{name}.csv"));
    let text = std::fs::read_to_string(&path).expect("read trace csv");
    let steps = parse_buckets(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    steps.iter().map(|s| s.prompt_tokens / 1000.0 + s.output_tokens / 100.0).collect()
}

pub const TRACES: [&str; 3] = ["azure_conv_10s", "azure_code_10s", "mooncake_conversation_10s"];

/// A seeded xorshift64* stream of uniforms in [0, 1) (no rand in this crate's dev-dependencies).
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly standard normal (sum of 4 uniforms, rescaled).
    fn normal(&mut self) -> f64 {
        ((0..4).map(|_| self.next()).sum::<f64>() - 2.0) * 3f64.sqrt()
    }
}

/// The shape of a synthetic step-like series: a demand and the replica count a threshold autoscaler set for it.
#[derive(Debug, Clone, Copy)]
pub struct StepSpec {
    pub name: &'static str,
    pub seed: u64,
    /// Mean demand in units of one replica's capacity.
    pub mean_replicas: f64,
    /// Daily amplitude, relative to the mean (0 = no season).
    pub daily_amp: f64,
    /// Weekly amplitude, relative (weekends lower).
    pub weekly_amp: f64,
    /// Relative growth over the whole series.
    pub growth: f64,
    /// Relative noise per step.
    pub noise: f64,
    /// Random-walk drift of the level per step, relative (a series with no fixed season).
    pub walk: f64,
    /// Steps the autoscaler waits after a change before scaling down.
    pub cooldown: usize,
}

/// Stand-ins for the long real series the issue names (10-minute replica counts of GPU inference services set by
/// someone else's autoscaler, a daily season of 144 steps), seeded: five shapes from a large smooth fleet to a
/// small, mostly flat one and one with no season.
pub const STEP_SPECS: [StepSpec; 5] = [
    StepSpec {
        name: "step_daily_mid",
        seed: 1,
        mean_replicas: 8.0,
        daily_amp: 0.6,
        weekly_amp: 0.0,
        growth: 0.0,
        noise: 0.08,
        walk: 0.0,
        cooldown: 3,
    },
    StepSpec {
        name: "step_daily_large",
        seed: 2,
        mean_replicas: 40.0,
        daily_amp: 0.5,
        weekly_amp: 0.2,
        growth: 0.3,
        noise: 0.05,
        walk: 0.0,
        cooldown: 2,
    },
    StepSpec {
        name: "step_small_flat",
        seed: 3,
        mean_replicas: 1.6,
        daily_amp: 0.3,
        weekly_amp: 0.0,
        growth: 0.0,
        noise: 0.15,
        walk: 0.0,
        cooldown: 6,
    },
    StepSpec {
        name: "step_no_season",
        seed: 4,
        mean_replicas: 12.0,
        daily_amp: 0.0,
        weekly_amp: 0.0,
        growth: 0.0,
        noise: 0.1,
        walk: 0.03,
        cooldown: 3,
    },
    StepSpec {
        name: "step_bursty",
        seed: 5,
        mean_replicas: 6.0,
        daily_amp: 0.4,
        weekly_amp: 0.1,
        growth: -0.2,
        noise: 0.25,
        walk: 0.002,
        cooldown: 1,
    },
];

/// `days` days of 10-minute replica counts for `spec`: demand d (replica-capacities) with a daily (144-step) and
/// weekly shape, growth, a drifting level and noise; an autoscaler that scales up to ceil(d / 0.6) as soon as
/// utilisation d / r exceeds 0.8, and down to that count when it falls below 0.45 and `cooldown` steps passed
/// since its last change (at least 1 replica).
pub fn step_series(spec: &StepSpec, days: usize) -> Vec<f64> {
    let mut u = Uniform(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = days * 144;
    let phase = u.next() * std::f64::consts::TAU;
    let mut walk = 0.0_f64;
    let mut replicas = (spec.mean_replicas / 0.6).ceil().max(1.0);
    let mut since_change = 0usize;
    (0..n)
        .map(|t| {
            let day = (t % 144) as f64 / 144.0 * std::f64::consts::TAU + phase;
            let weekday = (t / 144) % 7;
            let weekly = if weekday >= 5 { 1.0 - spec.weekly_amp } else { 1.0 };
            walk = (walk + spec.walk * u.normal()).clamp(-0.7, 0.7);
            let trend = 1.0 + spec.growth * t as f64 / n as f64;
            let demand = (spec.mean_replicas
                * (1.0 + spec.daily_amp * day.sin())
                * weekly
                * trend
                * (1.0 + walk)
                * (1.0 + spec.noise * u.normal()))
            .max(0.0);
            let want = (demand / 0.6).ceil().max(1.0);
            let util = demand / replicas;
            since_change += 1;
            if (util > 0.8 && want > replicas) || (util < 0.45 && since_change > spec.cooldown && want < replicas) {
                replicas = want;
                since_change = 0;
            }
            replicas
        })
        .collect()
}
