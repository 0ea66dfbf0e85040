//! Each proposal and gate, driven through the engine as the control loop, the preview and the backtest drive it.

use super::*;

const B: i64 = 10;

fn obs(now: i64, ready: u32, busy: f64, queue: f64) -> Observation {
    Observation {
        now_secs: now,
        ready,
        pending: 0,
        metrics: vec![],
        slos: vec![],
        load: Load { busy_replicas: Some(busy), queue_depth: Some(queue), requests_per_s: Some(busy * 2.0) },
        single_node_fault: None,
        bucket_complete: true,
    }
}

fn llm() -> ScalingEngine {
    ScalingEngine::new(EngineSpec::llm_default(1, 100, B as f64, 120))
}

/// Steps `n` buckets of steady demand from `t0`, applying each decision as the backtest does; returns the
/// last step and the replica count reached.
fn run_steady(e: &mut ScalingEngine, t0: i64, n: i64, mut ready: u32, busy: f64) -> (Step, u32) {
    let mut last = None;
    for i in 0..n {
        let now = t0 + i * B;
        let s = e.step(&obs(now, ready, busy, 0.0));
        e.applied(now, ready, s.decision.desired);
        ready = s.decision.desired;
        last = Some(s);
    }
    (last.expect("at least one step"), ready)
}

fn proposal<'a>(s: &'a Step, source: &str) -> &'a Proposal {
    s.decision.proposals.iter().find(|p| p.source == source).unwrap_or_else(|| panic!("no {source}: {s:?}"))
}

#[test]
fn demand_counts_queue_growth_as_hidden_demand() {
    let mut e = llm();
    let s = e.step(&obs(10, 4, 4.0, 0.0));
    assert_eq!(s.demand, Some(4.0));
    // Saturated at 4 busy replicas, 20 more requests queued at 0.5 replica-s each: 10 replica-s more work
    // arrived over the 10 s bucket than was served, so demand is 5 busy replicas.
    let s = e.step(&obs(20, 4, 4.0, 20.0));
    assert!((s.demand.unwrap_or_default() - 5.0).abs() < 1e-9, "{:?}", s.demand);
    // The queue drains: served work exceeds arrivals.
    let s = e.step(&obs(30, 4, 4.0, 10.0));
    assert!((s.demand.unwrap_or_default() - 3.5).abs() < 1e-9, "{:?}", s.demand);
}

#[test]
fn several_observations_in_one_bucket_count_once() {
    let mut e = llm();
    e.step(&Observation { bucket_complete: false, ..obs(10, 4, 4.0, 0.0) });
    // Queue growth is measured from the end of the previous bucket, not from the previous observation.
    e.step(&Observation { bucket_complete: false, ..obs(21, 4, 4.0, 10.0) });
    let s = e.step(&Observation { bucket_complete: false, ..obs(25, 4, 4.0, 20.0) });
    assert!((s.demand.unwrap_or_default() - 5.0).abs() < 1e-9, "{:?}", s.demand);
    // Only complete buckets enter the history: bucket 1 completes when bucket 3 is observed.
    assert_eq!(e.history().count(), 1);
    e.step(&Observation { bucket_complete: false, ..obs(31, 4, 4.0, 20.0) });
    assert_eq!(e.history().collect::<Vec<_>>(), vec![4.0, 5.0]);
}

#[test]
fn the_peak_proposal_sizes_for_the_tail_of_recent_demand() {
    let mut e = llm();
    let (s, r) = run_steady(&mut e, B, 60, 10, 12.0);
    let peak = proposal(&s, "peak");
    // 12 busy replicas, no tail, 3 % margin, 1.2 busy per replica (a replica absorbs a bucket's spike of 2 s
    // more work within the 2 s budget): 10.3 -> 11.
    assert_eq!(peak.replicas, 11, "{}", peak.detail);
    // Sustained demand needs its full count, which the drain proposal asks for (no queue: the demand itself).
    assert_eq!(proposal(&s, "drain").replicas, 12);
    assert_eq!(r, 12, "{}", s.decision.reason);
    // A spike raises the peak and stays in the window.
    let s = e.step(&obs(61 * B, r, 30.0, 0.0));
    assert!(proposal(&s, "peak").replicas >= 26, "{:?}", s.decision);
    assert!(s.decision.desired >= 26, "a scale-up happens at once: {}", s.decision.reason);
}

#[test]
fn the_drain_proposal_serves_the_backlog_within_a_cold_start() {
    let mut e = llm();
    run_steady(&mut e, B, 30, 10, 10.0);
    // 130 s horizon (cold start + a bucket); 260 requests queued at 0.5 replica-s = 130 replica-s: +1 replica.
    let s = e.step(&obs(31 * B, 10, 10.0, 260.0));
    let drain = proposal(&s, "drain");
    assert!(drain.detail.contains("queued work 130.0"), "{}", drain.detail);
    assert!(drain.replicas >= 11, "{}", drain.detail);
}

#[test]
fn the_predictive_proposal_uses_the_forecasters_quantile_after_enough_history() {
    let mut e = llm();
    // Less than three horizons (3 x 13 buckets) of history: no forecast.
    let (s, _) = run_steady(&mut e, B, 30, 10, 10.0);
    assert!(s.decision.proposals.iter().all(|p| p.source != "predictive"));
    // A steady ramp: the forecast leads the observed demand.
    let mut ready = 10;
    let mut last = None;
    for i in 0..60 {
        let now = (31 + i) * B;
        let s = e.step(&obs(now, ready, 10.0 + 0.5 * i as f64, 0.0));
        e.applied(now, ready, s.decision.desired);
        ready = s.decision.desired;
        last = Some(s);
    }
    let s = last.expect("steps");
    let p = proposal(&s, "predictive");
    assert!(s.forecast_upper.is_some_and(|u| u > 39.5), "{:?}", s.forecast_upper);
    assert!(p.replicas >= 34, "{}", p.detail);
    assert!(s.refit.is_some() || e.fitted.is_some());
}

#[test]
fn forecast_only_records_the_proposal_without_acting() {
    let spec = EngineSpec { predictive: PredictiveMode::ForecastOnly, ..EngineSpec::llm_default(1, 100, 10.0, 120) };
    let mut e = ScalingEngine::new(spec);
    let (s, _) = run_steady(&mut e, B, 50, 10, 10.0);
    assert!(proposal(&s, "predictive").advisory);
}

#[test]
fn a_burst_panics_and_holds_scale_down() {
    let mut e = llm();
    let (_, r) = run_steady(&mut e, B, 30, 10, 10.0);
    let s = e.step(&obs(31 * B, r, 40.0, 0.0));
    assert!(s.decision.panic, "{:?}", s.decision);
    e.applied(31 * B, r, s.decision.desired);
    let up = s.decision.desired;
    assert!(up >= 34, "{}", s.decision.reason);
    // The burst is over: panic mode (and the peak of the window) keep the fleet.
    let s = e.step(&obs(32 * B, up, 5.0, 0.0));
    assert!(s.decision.panic && s.decision.desired == up, "{}", s.decision.reason);
}

#[test]
fn an_slo_breach_scales_up_and_blocks_scale_down() {
    let spec = EngineSpec {
        slos: vec![SloTarget { name: "ttft_p95_ms".into(), target: 500.0 }],
        ..EngineSpec::llm_default(1, 100, 10.0, 120)
    };
    let mut e = ScalingEngine::new(spec);
    let (_, r) = run_steady(&mut e, B, 30, 10, 8.0);
    let s = e.step(&Observation { slos: vec![Some(900.0)], ..obs(31 * B, r, 8.0, 0.0) });
    assert!(s.decision.winner.starts_with("slo:ttft_p95_ms"), "{}", s.decision.reason);
    assert!(s.decision.desired > r);
}

#[test]
fn a_single_node_fault_is_not_fleet_demand() {
    let mut e = llm();
    let (_, r) = run_steady(&mut e, B, 30, 10, 10.0);
    let s = e.step(&Observation {
        single_node_fault: Some("node-3 runs at 100 % while its peers idle".into()),
        ..obs(31 * B, r, 15.0, 0.0)
    });
    let reactive = proposal(&s, "reactive:demand");
    assert!(reactive.advisory && reactive.detail.contains("node-3"), "{}", reactive.detail);
}

#[test]
fn scale_down_waits_a_whole_window_then_follows_its_highest_recommendation() {
    let mut e = llm();
    // A warm fleet of 40 for a demand of 10: held until one whole scale-down window (300 s) has been watched...
    let s = e.step(&obs(B, 40, 10.0, 0.0));
    assert_eq!(s.decision.desired, 40, "{}", s.decision.reason);
    assert_eq!(s.decision.winner, "stabilization");
    let (s, r) = run_steady(&mut e, 2 * B, 29, 40, 10.0);
    assert_eq!(r, 40, "{}", s.decision.reason);
    // ... then to what the window's highest recommendation allows, at once (HPA's default rate).
    let (s, r) = run_steady(&mut e, 31 * B, 1, 40, 10.0);
    assert!(r < 40, "{}", s.decision.reason);
    // Down to what sustained demand needs, no further.
    let (_, r) = run_steady(&mut e, 32 * B, 300, r, 10.0);
    assert_eq!(r, 10);
}

#[test]
fn a_small_scale_down_is_not_worth_the_churn() {
    let mut e = llm();
    // 12 -> 10 is more than 5 %.
    let (_, r) = run_steady(&mut e, B, 80, 12, 10.0);
    assert_eq!(r, 10);
    // With 40 replicas, one less is not.
    let mut e = llm();
    let (s, r) = run_steady(&mut e, B, 80, 40, 39.0);
    assert_eq!(r, 40, "{}", s.decision.reason);
    assert_eq!(s.decision.winner, "hysteresis");
}

#[test]
fn anomalous_data_does_not_scale_down() {
    let mut e = llm();
    let (_, r) = run_steady(&mut e, B, 300, 10, 10.0);
    // A sudden collapse of demand is anomalous: no scale-down on it.
    let s = e.step(&obs(301 * B, r, 0.0, 0.0));
    let s2 = e.step(&obs(302 * B, r, 0.0, 0.0));
    assert!(
        [&s, &s2].iter().any(|s| s.decision.winner == "anomaly-gate" || s.decision.desired >= r),
        "{} / {}",
        s.decision.reason,
        s2.decision.reason
    );
    assert!(s2.anomaly.is_some());
}

#[test]
fn metric_targets_follow_the_hpa_formula_and_forecast_the_first_metric() {
    let spec = EngineSpec {
        metrics: vec![MetricTarget { name: "gpu_utilization".into(), target_per_replica: 70.0 }],
        capacity: None,
        behavior: Behavior::default(),
        ..EngineSpec::llm_default(1, 20, 10.0, 120)
    };
    let mut e = ScalingEngine::new(spec);
    let o = Observation { metrics: vec![Some(4.0 * 105.0)], ..obs(B, 4, 0.0, 0.0) };
    let s = e.step(&o);
    assert_eq!(s.decision.desired, 6, "{}", s.decision.reason);
    assert_eq!(s.decision.winner, "reactive:gpu_utilization");
    assert_eq!(s.demand, None);
    assert_eq!(e.history().collect::<Vec<_>>(), vec![420.0]);
}

#[test]
fn seeding_gives_a_new_leader_its_forecast_at_once() {
    let mut e = llm();
    let history: Vec<f64> = (0..100).map(|i| 10.0 + (i % 7) as f64).collect();
    e.seed(100 * B, &history);
    let s = e.step(&obs(101 * B, 12, 12.0, 0.0));
    assert!(s.forecast_upper.is_some(), "{:?}", s.inputs);
    assert!(s.refit.is_some());
    assert_eq!(e.history().count(), 101);
}

#[test]
fn odd_inputs_never_panic_and_stay_in_bounds() {
    let mut e = ScalingEngine::new(EngineSpec::llm_default(2, 7, 10.0, 120));
    let weird = [f64::NAN, f64::INFINITY, -5.0, 0.0, 1e300, f64::NEG_INFINITY];
    for i in 0..200_i64 {
        let w = weird[(i as usize) % weird.len()];
        let o = Observation {
            now_secs: if i % 17 == 0 { i * B - 1000 } else { i * B },
            ready: (i as u32 * 7) % 11,
            pending: u32::MAX - (i as u32 % 3),
            metrics: vec![Some(w)],
            slos: vec![Some(w)],
            load: Load {
                busy_replicas: Some(w),
                queue_depth: Some(weird[(i as usize + 1) % weird.len()]),
                requests_per_s: Some(weird[(i as usize + 2) % weird.len()]),
            },
            single_node_fault: None,
            bucket_complete: i % 2 == 0,
        };
        let s = e.step(&o);
        assert!((2..=7).contains(&s.decision.desired), "{:?}", s.decision);
    }
}
