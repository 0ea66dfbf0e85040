//! Loads the forecasting evaluation series from `shared/data` (shared by the accuracy test and the examples).
#![allow(dead_code)]

use std::path::Path;

pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data");

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
            let values = text.lines().skip(1).filter_map(|l| l.split(',').nth(1)?.trim().parse::<f64>().ok()).collect();
            (n.trim_end_matches(".csv").to_string(), values)
        })
        .collect()
}

/// Replica-seconds of work per 10-second step: prompt_tokens / 1000 + output_tokens / 100.
pub fn trace_work(name: &str) -> Vec<f64> {
    let path = Path::new(DATA).join("traces").join(format!("{name}.csv"));
    let text = std::fs::read_to_string(&path).expect("read trace csv");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',').skip(2);
            let p: f64 = f.next()?.trim().parse().ok()?;
            let o: f64 = f.next()?.trim().parse().ok()?;
            Some(p / 1000.0 + o / 100.0)
        })
        .collect()
}

pub const TRACES: [&str; 3] = ["azure_conv_10s", "azure_code_10s", "mooncake_conversation_10s"];
