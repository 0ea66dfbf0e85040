//! The evaluation commands run from the binary, write EVAL.md's formats, and fail clearly on bad input.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data");

fn fleetpilot(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetpilot")).args(args).env("RUST_LOG", "error").output().unwrap()
}

#[test]
fn backtest_writes_the_per_policy_csvs_the_summary_and_a_plot() {
    let out = tempfile::tempdir().unwrap();
    let trace = format!("{SHARED}/traces/azure_conv_10s.csv");
    let o = fleetpilot(&["backtest", "--trace", &trace, "--out", out.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for p in ["fleetpilot", "static-peak", "static-best", "hpa", "kpa"] {
        let csv = std::fs::read_to_string(out.path().join(format!("{p}.csv"))).unwrap();
        assert!(csv.starts_with("step,timestamp,work,ready,pending,desired,backlog,violation\n"), "{p}");
        assert_eq!(csv.lines().count(), 352, "{p}: one row per step");
    }
    let summary = std::fs::read_to_string(out.path().join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 6);
    let svg = std::fs::read_to_string(out.path().join("backtest.svg")).unwrap();
    assert!(svg.contains("<polyline") || svg.contains("<path"), "the plot has lines");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("static-best") && stdout.contains("25.4"), "{stdout}");
}

#[test]
fn eval_nab_writes_results_in_the_eval_format_and_prints_the_three_profiles() {
    let out = tempfile::tempdir().unwrap();
    let o = fleetpilot(&["eval", "nab", "--data", &format!("{SHARED}/nab"), "--out", out.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("standard=") && last.contains("reward_low_FP_rate=") && last.contains("reward_low_FN_rate="),
        "{last}"
    );
    let f = std::fs::read_to_string(out.path().join("realTweets/fleetpilot_Twitter_volume_AAPL.csv")).unwrap();
    assert!(f.starts_with("timestamp,value,anomaly_score\n"));
    let files = walk(out.path());
    assert_eq!(files, 44);
}

fn walk(p: &std::path::Path) -> usize {
    std::fs::read_dir(p).unwrap().flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
}

#[test]
fn bad_input_is_a_clear_error_and_a_non_zero_exit() {
    let o = fleetpilot(&["backtest", "--trace", "/nonexistent/trace.csv", "--out", "/tmp/x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/trace.csv"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "timestamp,requests,prompt_tokens,output_tokens\n2024-01-01 00:00:00,1,x,3\n").unwrap();
    let o = fleetpilot(&["backtest", "--trace", bad.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    let o = fleetpilot(&["eval", "forecast", "--series", bad.to_str().unwrap(), "--horizon", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("horizon"));
    let o = fleetpilot(&["backtest", "--trace", bad.to_str().unwrap(), "--out", "/tmp/x", "--slo-delay-s", "-1"]);
    assert!(!o.status.success());
}
