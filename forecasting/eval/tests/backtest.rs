//! Backtests on the real traces (`shared/data/traces`, standard profile).

use fleetpilot_eval::backtest::{
    Decision, EnginePolicy, HpaPolicy, KpaPolicy, Observation, Policy, Profile, StaticPolicy, Summary, Telemetry,
    TraceStep, format_steps_csv, parse_trace_csv, replay, simulate, static_best, static_peak, trace_work,
};

const TRACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/traces");

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
    let below = run(&trace, &mut fleetpilot_eval::backtest::StaticPolicy::new("x", best.replicas() - 1));
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
            Box::new(EnginePolicy::llm_default(&Profile::STANDARD)),
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

/// Issue #14, with the shipped engine under the default LLM policy (`EnginePolicy::llm_default`, the same code
/// and spec the control loop runs): at most 20 scale actions per hour everywhere; on azure_conv and mooncake at
/// least 99.5 % attainment within 1.10x the GPU-hours of `static-best` and at least
/// a third below `static-peak`, and
/// more attainment than `hpa` and `kpa` (a tie only at 100 %). On azure_code a causal policy cannot reach 99.5 %
/// (see `azure_code_target_needs_foresight`); the issue asks for no less than the retired backtest-only policy
/// (86.55 % at 76.8 GPU-h, at most 3 % more GPU-hours): 86.91 % at 75.9 GPU-h when this was written, 0.87 points
/// under the causal ceiling. (It was 85.70 % while a scale-down after a start waited only a cold start rather than
/// the whole scale-down window: the early scale-down from 15 to 13 met the first burst short.)
#[test]
fn fleetpilot_meets_its_targets() {
    for name in ["azure_conv_10s", "azure_code_10s", "mooncake_conversation_10s"] {
        let trace = load(name);
        let r = references(&trace);
        let f = run(&trace, &mut EnginePolicy::llm_default(&Profile::STANDARD));
        println!(
            "{name}: fleetpilot {:.2} GPU-h ({:.3}x static-best, {:.3}x static-peak) {:.3} % {:.1} actions/h",
            f.gpu_hours,
            f.gpu_hours / r.best.gpu_hours,
            f.gpu_hours / r.peak.gpu_hours,
            100.0 * f.slo_attainment,
            f.actions_per_hour
        );
        assert!(f.actions_per_hour <= 20.0, "{name}: {f:?}");
        if name == "azure_code_10s" {
            assert!(f.slo_attainment >= 0.8655, "{name}: {f:?}");
            assert!(f.slo_attainment <= AZURE_CODE_CAUSAL_CEILING, "{name}: {f:?}");
            assert!(f.gpu_hours <= 1.03 * 76.8, "{name}: {f:?}");
        } else {
            assert!(f.slo_attainment >= 0.995, "{name}: {f:?}");
            assert!(f.gpu_hours <= 1.10 * r.best.gpu_hours, "{name}: {f:?}");
            // At least a third below static-peak.
            assert!(f.gpu_hours <= 0.66 * r.peak.gpu_hours, "{name}: {f:?}");
            for other in [&r.hpa, &r.kpa] {
                let tie_at_full = other.slo_attainment >= 1.0 && f.slo_attainment >= 1.0;
                assert!(f.slo_attainment > other.slo_attainment || tie_at_full, "{name}: {f:?} vs {other:?}");
            }
        }
    }
}

/// Attainment ceiling on azure_code for a policy without foresight (derived in
/// `azure_code_target_needs_foresight`).
const AZURE_CODE_CAUSAL_CEILING: f64 = 0.8778;

/// Why 99.5 % on azure_code needs foresight. The target may lose 0.5 % of the work (102.6 replica-s), but steps 23
/// and 86 each carry more than that, so both must be met. Meeting a step of work w with no backlog takes
/// `ceil(w / (Δ + L))` ready replicas, and the replicas ready at step t were started at step t - 1 - ceil(C / Δ) or
/// earlier. At those commit points the largest step seen needed 9 and 41 replicas and the preceding minute was
/// idle; 99.5 % needs 39 and 82 (4.3x and 2.0x). A policy that keeps the initial fleet (15) through the first burst
/// and does not hold 2x its largest observed need through an idle spell loses at least 7.46 % + 4.76 %.
#[test]
fn azure_code_target_needs_foresight() {
    let p = Profile::STANDARD;
    let trace = load("azure_code_10s");
    let work = trace_work(&trace, &p).expect("work");
    let total: f64 = work.iter().sum();
    let need = |w: f64| (w / (p.step_s + p.slo_s)).ceil() as u32;
    let lead = p.cold_start_steps() + 1;
    // (step, replicas needed then, largest need seen at the commit point)
    for (t, needed, seen) in [(23, 39, 9), (86, 82, 41)] {
        assert!(work[t] > 0.005 * total, "step {t}");
        assert_eq!(need(work[t]), needed, "step {t}");
        let committed = t - lead;
        let largest = work[..=committed].iter().copied().fold(0.0, f64::max);
        assert_eq!(need(largest), seen, "step {t}");
        assert!(work[committed - 5..=committed].iter().all(|w| *w == 0.0), "step {t}");
    }
    // The first burst (steps 19-31) is served by what was committed by step 18, when the largest step seen needed
    // 9 replicas; the initial fleet (15) loses 7.46 % of the work there, and step 86 alone is 4.76 %.
    let initial = run(&trace[..32], &mut StaticPolicy::new("initial", 15));
    let early_loss = (1.0 - initial.slo_attainment) * initial.total_work / total;
    let ceiling = 1.0 - early_loss - work[86] / total;
    assert!((early_loss - 0.0746).abs() < 5e-4, "{early_loss}");
    assert!((ceiling - AZURE_CODE_CAUSAL_CEILING).abs() < 5e-4, "{ceiling}");
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
        let f = run(&trace, &mut EnginePolicy::llm_default(&Profile::STANDARD));
        assert!(f.slo_attainment >= 0.995, "{name}: {f:?}");
        assert!(f.gpu_hours <= 0.85 * best.gpu_hours, "{name}: {f:?} vs {best:?}");
        assert!(f.actions_per_hour <= 20.0, "{name}: {f:?}");
    }
}

/// A day at one-minute steps built from each dev trace's one-minute version (EVAL.md's other yardstick is long
/// one-minute real-fleet traces; these stand in for them here, they are not tuned on): minute `t` is the
/// trace's minute `t mod 60` scaled by `0.25 + 0.75 (1 - cos 2πt/1440) / 2`. Printed figures are the README's
/// (`cargo test -p fleetpilot-eval --release --test backtest day_long -- --nocapture`); the bounds are loose floors
/// (minute-scale bursts at a 120 s cold start cost attainment here: 98.30 % on azure_code, 98.87 % on mooncake).
#[test]
fn day_long_one_minute_cycles() {
    let p = Profile { step_s: 60.0, ..Profile::STANDARD };
    for name in ["azure_conv_1min", "azure_code_1min", "mooncake_conversation_1min"] {
        let base = load(name);
        let day = 1440usize;
        let trace: Vec<TraceStep> = (0..day)
            .map(|t| {
                let phase = 2.0 * std::f64::consts::PI * t as f64 / day as f64;
                let f = 0.25 + 0.75 * (0.5 - 0.5 * phase.cos());
                let s = &base[t % base.len()];
                TraceStep {
                    timestamp: (t * 60).to_string(),
                    requests: s.requests * f,
                    prompt_tokens: s.prompt_tokens * f,
                    output_tokens: s.output_tokens * f,
                }
            })
            .collect();
        let best = simulate(&trace, &p, &mut static_best(&trace, &p).expect("best")).expect("simulates").summary;
        let f = simulate(&trace, &p, &mut EnginePolicy::llm_default(&p)).expect("simulates").summary;
        println!(
            "{name} day: fleetpilot {:.2} GPU-h ({:.3}x static-best's {:.2}) {:.2} % {:.1} actions/h",
            f.gpu_hours,
            f.gpu_hours / best.gpu_hours,
            best.gpu_hours,
            100.0 * f.slo_attainment,
            f.actions_per_hour
        );
        assert!(f.gpu_hours <= 0.75 * best.gpu_hours, "{name}: {f:?} vs {best:?}");
        assert!(f.slo_attainment >= 0.98, "{name}: {f:?}");
        assert!(f.actions_per_hour <= 20.0, "{name}: {f:?}");
    }
}

/// Records every explained decision the engine makes while the model drives it.
struct Explained {
    inner: EnginePolicy,
    seen: Vec<Decision>,
}

impl Policy for Explained {
    fn name(&self) -> &str {
        "explained"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> u32 {
        let d = self.inner.decide_explained(obs);
        let r = d.replicas;
        self.seen.push(d);
        r
    }
}

#[test]
fn fleetpilot_explains_its_decisions() {
    let trace = load("mooncake_conversation_10s");
    let p = Profile::STANDARD;
    let mut explained = Explained { inner: EnginePolicy::llm_default(&p), seen: vec![] };
    let res = simulate(&trace, &p, &mut explained).expect("simulates");
    let plain = simulate(&trace, &p, &mut EnginePolicy::llm_default(&p)).expect("simulates");
    assert_eq!(res.rows, plain.rows, "explaining changes nothing");
    for (t, (d, row)) in explained.seen.iter().zip(&res.rows).enumerate() {
        assert_eq!(d.replicas, row.desired, "step {t}");
        assert!(!d.reason.is_empty());
        for source in ["reactive:demand", "peak", "drain"] {
            assert!(d.proposals.iter().any(|q| q.source == source && !q.detail.is_empty()), "{source} at {t}");
        }
        // The forecast acts once three cold starts (3 x 13 buckets) of history are there.
        if t >= 39 {
            assert!(d.proposals.iter().any(|q| q.source == "predictive"), "predictive at {t}");
        }
        // The warm fleet is never scaled down before a cold start has been watched.
        if t < 12 {
            assert!(d.replicas >= row.ready, "step {t}: {}", d.reason);
        }
    }
}

#[test]
fn policies_survive_odd_observations() {
    let p = Profile::STANDARD;
    let weird = [f64::NAN, f64::INFINITY, -5.0, 0.0, 1e300];
    let mut policies: Vec<Box<dyn Policy>> = vec![
        Box::new(HpaPolicy::new()),
        Box::new(KpaPolicy::new()),
        Box::new(EnginePolicy::llm_default(&Profile::STANDARD)),
    ];
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
                telemetry: Telemetry {
                    gpu_utilization_pct_total: weird[t % weird.len()],
                    queue_depth: weird[(t + 1) % weird.len()],
                    requests_per_s: weird[(t + 2) % weird.len()],
                    ..Telemetry::default()
                },
            };
            let _ = policy.decide(&obs);
        }
        let empty = Observation {
            t: 0,
            work: &[],
            backlog: &[],
            utilisation: &[],
            ready: 0,
            pending: 0,
            profile: &p,
            telemetry: Telemetry::default(),
        };
        let _ = policy.decide_explained(&empty);
    }
}
