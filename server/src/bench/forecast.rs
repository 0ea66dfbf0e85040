//! `fleetpilot bench forecast`: refits the demand forecasts of N deployments (one week of 1-minute history
//! each) on one core, and runs one streaming anomaly update for M GPU series. The history is synthetic
//! (seeded): a daily shape with noise, bursts and drift, since no week of real 1-minute data ships here.

use std::time::Instant;

use forecasting::anomaly::Detector;
use forecasting::model::{Fitted, ModelConfig};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::quantile;

/// One week of 1-minute demand for deployment `i`.
fn week(i: usize) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(i as u64);
    let base = rng.random_range(20.0..200.0);
    let amp = rng.random_range(0.2..0.8);
    let drift = rng.random_range(-0.2..0.2) / 10_080.0;
    (0..10_080)
        .map(|t| {
            let day = (t % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
            let burst = if rng.random_bool(0.002) { rng.random_range(1.5..3.0) } else { 1.0 };
            (base * (1.0 + amp * day.sin()) * (1.0 + drift * t as f64) * burst * rng.random_range(0.9..1.1)).max(0.0)
        })
        .collect()
}

/// Runs the benchmark (blocking: one core) and prints its figures; the last line is machine-readable.
pub fn run(deployments: usize, gpus: usize) -> anyhow::Result<()> {
    anyhow::ensure!(deployments >= 1 && gpus >= 1, "--deployments and --gpus must be at least 1");
    let series: Vec<Vec<f64>> = (0..deployments).map(week).collect();
    let cfg = ModelConfig::default();
    let start = Instant::now();
    let mut fitted = Vec::with_capacity(deployments);
    for y in &series {
        fitted.push(Fitted::fit(y, &cfg).map_err(|e| anyhow::anyhow!("fit: {e}"))?);
    }
    let refit_total_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for (f, y) in fitted.iter_mut().zip(&series) {
        f.update(&[y[y.len() - 1]]).map_err(|e| anyhow::anyhow!("update: {e}"))?;
        f.forecast(15, &[0.8, 0.95]).map_err(|e| anyhow::anyhow!("forecast: {e}"))?;
    }
    let update_total_ms = start.elapsed().as_secs_f64() * 1000.0;
    println!(
        "refit: {deployments} deployments x 10,080 points (1 week at 1 min, daily season) in {refit_total_s:.2} s on one core ({:.1} ms each); cheap update + 15-step forecast for all: {update_total_ms:.1} ms",
        refit_total_s * 1000.0 / deployments as f64
    );

    // Streaming anomaly scores: warm every detector past its warm-up, then time whole rounds.
    let mut rng = StdRng::seed_from_u64(7);
    let mut detectors: Vec<Detector> = (0..gpus).map(|_| Detector::default()).collect();
    let warm = 600;
    for t in 0..warm {
        for d in detectors.iter_mut() {
            d.update(t * 60, 50.0 + rng.random_range(-5.0..5.0));
        }
    }
    let mut rounds = Vec::new();
    for r in 0..20 {
        let values: Vec<f64> = (0..gpus).map(|_| 50.0 + rng.random_range(-5.0..5.0)).collect();
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
    let anomaly_update_ms = quantile(&mut rounds, 0.5);
    println!("anomaly: one streaming update of {gpus} GPU series, median of 20 rounds: {anomaly_update_ms:.2} ms");
    println!(
        "deployments={deployments} refit_total_s={refit_total_s:.2} gpus={gpus} anomaly_update_ms={anomaly_update_ms:.2}"
    );
    Ok(())
}
