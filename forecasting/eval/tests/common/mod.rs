//! Test-only loading of the NAB development corpus (IO lives here, never in the library).
#![allow(dead_code)]

use fleetpilot_eval::nab::{ScoredFile, parse_timestamp_micros, window_rows};
use std::collections::BTreeMap;

pub const NAB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/nab");

/// One NAB data file: `category/file.csv`, raw timestamp strings, parsed instants, values and windows.
pub struct NabSeries {
    pub key: String,
    pub timestamps: Vec<String>,
    pub micros: Vec<i64>,
    pub values: Vec<f64>,
    pub windows: Vec<fleetpilot_eval::nab::Window>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Parses a `timestamp,value[,...]` CSV into (timestamps, values of the column `col`) with the one trace reader.
pub fn parse_csv(text: &str, col: usize) -> (Vec<String>, Vec<f64>) {
    let s = fleetpilot_eval::trace::parse_series(text, col).unwrap_or_else(|e| panic!("NAB CSV: {e}"));
    (s.timestamps, s.values)
}

/// Loads all files listed in `labels/combined_windows.json`, sorted by key.
pub fn load_corpus() -> Vec<NabSeries> {
    let labels: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&read(&format!("{NAB_DIR}/labels/combined_windows.json"))).expect("windows json");
    labels
        .into_iter()
        .map(|(key, wins)| {
            let (timestamps, values) = parse_csv(&read(&format!("{NAB_DIR}/data/{key}")), 1);
            let micros: Vec<i64> = timestamps.iter().map(|t| parse_timestamp_micros(t).expect("timestamp")).collect();
            let spans: Vec<(i64, i64)> = wins
                .iter()
                .map(|(a, b)| {
                    (parse_timestamp_micros(a).expect("window start"), parse_timestamp_micros(b).expect("window end"))
                })
                .collect();
            let windows = window_rows(&micros, &spans);
            assert_eq!(windows.len(), spans.len(), "{key}: every window maps to rows");
            NabSeries { key, timestamps, micros, values, windows }
        })
        .collect()
}

/// Numenta HTM's published scores for one series.
pub fn numenta_scores(key: &str) -> Vec<f64> {
    let (cat, file) = key.split_once('/').expect("category/file");
    parse_csv(&read(&format!("{NAB_DIR}/results/numenta/{cat}/numenta_{file}")), 2).1
}

pub fn scored(series: &NabSeries, scores: Vec<f64>) -> ScoredFile {
    ScoredFile { name: series.key.clone(), windows: series.windows.clone(), scores }
}
