//! The demand model beats both naive forecasts (at most 2 % above the better) with calibrated intervals on real
//! data (EVAL.md section 2, issues 5 and 20):
//! rolling-origin MASE on the NAB EC2 CPU series (m = 288, h = 12, W = 576, s = 12) and on the work series of the
//! 10-second traces (prompt_tokens / 1000 + output_tokens / 100; m = 1, h = 12, W = 60, s = 12).

mod forecast_data;

use fleetpilot_eval::mase::{IntervalForecast, MaseReport, RollingOrigin, evaluate};
use forecasting::model::{Fitted, ModelConfig};

fn forecaster(train: &[f64], h: usize) -> IntervalForecast {
    let f = Fitted::fit(train, &ModelConfig::default()).and_then(|m| m.forecast(h, &[0.8, 0.95]));
    match f {
        Ok(mut f) if f.intervals.len() == 2 => {
            let i95 = f.intervals.pop().expect("two intervals");
            let i80 = f.intervals.pop().expect("two intervals");
            IntervalForecast { point: f.point, lo80: i80.lower, hi80: i80.upper, lo95: i95.lower, hi95: i95.upper }
        }
        _ => IntervalForecast::point_only(vec![train[train.len() - 1]; h]),
    }
}

fn check(name: &str, r: &MaseReport) -> Option<String> {
    let (model, naive, last) = (r.mase_model?, r.mase_seasonal_naive?, r.mase_last_value?);
    // Issue 20: never more than 2 % worse than the better naive forecast, coverage within 5 points of nominal.
    let ok = model <= 1.02 * naive.min(last)
        && (0.75..=0.85).contains(&r.coverage80)
        && (0.90..=1.0).contains(&r.coverage95);
    let line = format!(
        "{name}: MASE {model:.3} vs seasonal naive {naive:.3}, last value {last:.3}, coverage 80% {:.1}, 95% {:.1} ({} origins)",
        100.0 * r.coverage80,
        100.0 * r.coverage95,
        r.origins
    );
    println!("{line}");
    (!ok).then_some(line)
}

fn run(ec2_filter: &dyn Fn(&str) -> bool) {
    let mut failures = Vec::new();
    let ec2 = forecast_data::ec2_cpu();
    assert_eq!(ec2.len(), 8, "expected the 8 NAB EC2 CPU series");
    for (name, y) in ec2.iter().filter(|(n, _)| ec2_filter(n)) {
        let ro = RollingOrigin { season: 288, horizon: 12, warmup: 576, stride: 12 };
        let r = evaluate(y, &ro, &mut forecaster).expect("evaluation");
        failures.extend(check(name, &r));
    }
    for name in forecast_data::TRACES {
        let y = forecast_data::trace_work(name);
        let ro = RollingOrigin { season: 1, horizon: 12, warmup: 60, stride: 12 };
        let r = evaluate(&y, &ro, &mut forecaster).expect("evaluation");
        failures.extend(check(name, &r));
    }
    assert!(failures.is_empty(), "targets missed:\n{}", failures.join("\n"));
}

/// Every origin of two EC2 series (the strongly seasonal 53ea38 and the spiky fe7f93, the two with the least
/// coverage margin) and of the three traces; fast enough for a debug build.
#[test]
fn beats_the_naive_forecasts_with_calibrated_intervals_on_real_series() {
    run(&|n: &str| n.ends_with("53ea38") || n.ends_with("fe7f93"));
}

/// All eight EC2 series, every origin (about 1 minute in debug, 5 s in release):
/// `cargo test --release --test forecast_accuracy -- --ignored`.
#[test]
#[ignore = "slow in debug; run with --release -- --ignored"]
fn all_ec2_series() {
    run(&|_: &str| true);
}
