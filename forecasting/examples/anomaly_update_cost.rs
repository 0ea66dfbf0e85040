//! Per-update cost of the streaming anomaly detector for a fleet of series, as `fleetpilot bench
//! forecast` measures it (10,000 series warmed for 600 one-minute rows, then the median of 20 rounds of
//! one update each), for the shipped configuration, the maximum rule it replaced, and with each optional
//! component.
//!
//! `cargo run -p forecasting --release --example anomaly_update_cost [series]`; last line
//! `<setting>_ms=... <setting>_min_ms=...` (median and fastest round) per setting.

use forecasting::anomaly::{Combine, Config, Detector};
use std::time::Instant;

fn main() {
    let series: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let settings = [
        ("shipped", Config::default()),
        // The combination rule of the detector before issue #17 (the baseline of the same run).
        ("max", Config { combine: Combine::Max, ..Config::default() }),
        ("bocpd", Config { bocpd: true, ..Config::default() }),
        ("knn", Config { knn: true, ..Config::default() }),
        ("bocpd_knn", Config { bocpd: true, knn: true, ..Config::default() }),
    ];
    let mut last = Vec::new();
    for (name, config) in settings {
        // Deterministic uniform noise in [-5, 5) (xorshift64).
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 10.0 - 5.0
        };
        let mut detectors: Vec<Detector> = (0..series).map(|_| Detector::new(config.clone())).collect();
        let warm = 600;
        for t in 0..warm {
            for d in detectors.iter_mut() {
                d.update(t * 60, 50.0 + noise());
            }
        }
        let mut rounds = Vec::new();
        for r in 0..20 {
            let values: Vec<f64> = (0..series).map(|_| 50.0 + noise()).collect();
            let start = Instant::now();
            let mut flagged = 0usize;
            for (d, v) in detectors.iter_mut().zip(&values) {
                if d.update((warm + r) * 60, *v).score >= 0.56 {
                    flagged += 1;
                }
            }
            rounds.push(start.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(flagged);
        }
        rounds.sort_by(f64::total_cmp);
        let median = rounds[rounds.len() / 2];
        let fastest = rounds[0];
        let bytes = detectors.first().map_or(0, Detector::state_bytes);
        println!(
            "{name:<10} one update of {series} series: median {median:.2} ms, fastest {fastest:.2} ms ({bytes} bytes of state per series)"
        );
        last.push(format!("{name}_ms={median:.2} {name}_min_ms={fastest:.2}"));
    }
    println!("{}", last.join(" "));
}
