//! Per-series model choice and calibrated intervals (issue 20): the forecaster must not lose to a naive forecast
//! (MASE at most 2 % above the better of seasonal-naive and last-value on every series) and its 80 % / 95 %
//! intervals must cover within 5 points of nominal, on smooth seasonal series and on step-like ones (replica
//! counts set by someone else's autoscaler).
//!
//! The step-like series stand in for the long real series the issue names (10-minute replica counts, season 144,
//! horizon 6), which do not ship here: [`forecast_data::step_series`] builds them, seeded, from a seasonal demand
//! and a threshold autoscaler.
//!
//! # What was tried, and how it was chosen
//!
//! Options (all on one fit per origin, [`Fitted::restrict`]): the candidate set the forecast chooses among, and
//! how many recent k-step errors choose (the intervals always use the last 300):
//! `level` (the model before issue 20: the MSTL / robust smoothed level alone), `level+last`,
//! `level+naive+last`, `all` (plus the point-wise median) choosing on the last 300, 100 or 50 errors, and
//! `median` (the combination alone).
//!
//! Judged by leave-one-series-out over the dev series (EVAL.md §1's rule applied to series): for each series,
//! the option with the least mean ratio MASE_model / min(MASE_seasonal_naive, MASE_last_value) on the other
//! series is scored on the held series. Dev series: the 8 NAB EC2 CPU series (m = 288, h = 12, W = 576, s = 12),
//! the work of the 3 10-second traces (m = 1, h = 12, W = 60, s = 12), and the 5 step-like series (14 days,
//! m = 144, h = 6, W = 288, s = 6). Figures: `cargo test --release -p forecasting --test forecast_selection --
//! --ignored --nocapture` (see [`leave_one_series_out`]; the table it printed is in RESULTS below).
//!
//! RESULTS
//! (filled in from the run)

mod forecast_data;

use forecasting::mase::{seasonal_naive, seasonal_scale};
use forecasting::model::{Candidate, Fitted, ModelConfig};

/// One way to choose among the candidates.
#[derive(Debug, Clone, Copy)]
struct Opt {
    name: &'static str,
    candidates: &'static [Candidate],
    window: usize,
    penalty: f64,
}

const ALL: &[Candidate] = &Candidate::ALL;
const LEVEL_LAST: &[Candidate] = &[Candidate::Level, Candidate::LastValue];
const NO_MEDIAN: &[Candidate] = &[Candidate::Level, Candidate::SeasonalNaive, Candidate::LastValue];
const OPTIONS: [Opt; 10] = [
    Opt { name: "level", candidates: &[Candidate::Level], window: 300, penalty: 0.0 },
    Opt { name: "median", candidates: &[Candidate::Median], window: 300, penalty: 0.0 },
    Opt { name: "level+last", candidates: LEVEL_LAST, window: 300, penalty: 0.0 },
    Opt { name: "no-median/300/0.1", candidates: NO_MEDIAN, window: 300, penalty: 0.1 },
    Opt { name: "all/300/0", candidates: ALL, window: 300, penalty: 0.0 },
    Opt { name: "all/300/0.05", candidates: ALL, window: 300, penalty: 0.05 },
    Opt { name: "all/300/0.1", candidates: ALL, window: 300, penalty: 0.1 },
    Opt { name: "all/300/0.2", candidates: ALL, window: 300, penalty: 0.2 },
    Opt { name: "all/100/0.1", candidates: ALL, window: 100, penalty: 0.1 },
    Opt { name: "all/100/0", candidates: ALL, window: 100, penalty: 0.0 },
];

/// Rolling-origin settings (EVAL.md section 2).
#[derive(Debug, Clone, Copy)]
struct Ro {
    season: usize,
    horizon: usize,
    warmup: usize,
    stride: usize,
}

/// EVAL.md section 2's figures of one option on one series, and the share of origins per chosen candidate.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    mase: f64,
    mase_naive: f64,
    mase_last: f64,
    cov80: f64,
    cov95: f64,
    shares: [f64; 4],
}

impl Figures {
    /// MASE of the model over the better baseline.
    fn ratio(&self) -> f64 {
        self.mase / self.mase_naive.min(self.mase_last)
    }

    fn meets_targets(&self) -> bool {
        self.ratio() <= 1.02 && (self.cov80 - 0.80).abs() <= 0.05 && (self.cov95 - 0.95).abs() <= 0.05
    }

    fn line(&self, name: &str) -> String {
        let shares: Vec<String> =
            Candidate::ALL.iter().zip(&self.shares).map(|(c, s)| format!("{} {:.0}%", c.name(), s * 100.0)).collect();
        format!(
            "{name:<34} MASE {:.3} (naive {:.3}, last {:.3}, ratio {:.3})  cover 80% {:.1} 95% {:.1}  [{}]",
            self.mase,
            self.mase_naive,
            self.mase_last,
            self.ratio(),
            100.0 * self.cov80,
            100.0 * self.cov95,
            shares.join(", ")
        )
    }
}

/// Rolling-origin evaluation of every option in `opts` on `y`, one fit per origin (`Fitted::fit` on `y[..o]`,
/// exactly as `fleetpilot eval forecast` does), each option forecasting from a restricted copy.
fn evaluate(y: &[f64], ro: Ro, opts: &[Opt]) -> Vec<Figures> {
    let m = ro.season.max(1);
    let scale = seasonal_scale(&y[..ro.warmup], m).expect("warm-up longer than the season");
    assert!(scale > 0.0, "flat warm-up");
    let cfg = ModelConfig::default();
    let mut err = vec![0.0; opts.len()];
    let mut in80 = vec![0usize; opts.len()];
    let mut in95 = vec![0usize; opts.len()];
    let mut chosen = vec![[0usize; 4]; opts.len()];
    let (mut err_naive, mut err_last, mut points, mut origins) = (0.0, 0.0, 0usize, 0usize);
    let mut o = ro.warmup;
    while o + ro.horizon <= y.len() {
        let fitted = Fitted::fit(&y[..o], &cfg).expect("fit");
        for (i, opt) in opts.iter().enumerate() {
            let mut model = fitted.clone();
            model.restrict(opt.candidates, opt.window, opt.penalty);
            let f = model.forecast(ro.horizon, &[0.8, 0.95]).expect("forecast");
            chosen[i][f.candidate as usize] += 1;
            for k in 0..ro.horizon {
                let a = y[o + k];
                err[i] += (a - f.point[k]).abs();
                in80[i] += usize::from(f.intervals[0].lower[k] <= a && a <= f.intervals[0].upper[k]);
                in95[i] += usize::from(f.intervals[1].lower[k] <= a && a <= f.intervals[1].upper[k]);
            }
        }
        for k in 0..ro.horizon {
            let a = y[o + k];
            err_naive += (a - seasonal_naive(y, o, k, m).unwrap_or(y[o - 1])).abs();
            err_last += (a - y[o - 1]).abs();
        }
        points += ro.horizon;
        origins += 1;
        o += ro.stride;
    }
    let mase = |e: f64| e / points as f64 / scale;
    (0..opts.len())
        .map(|i| Figures {
            mase: mase(err[i]),
            mase_naive: mase(err_naive),
            mase_last: mase(err_last),
            cov80: in80[i] as f64 / points as f64,
            cov95: in95[i] as f64 / points as f64,
            shares: chosen[i].map(|c| c as f64 / origins as f64),
        })
        .collect()
}

const STEP_RO: Ro = Ro { season: 144, horizon: 6, warmup: 288, stride: 6 };
const EC2_RO: Ro = Ro { season: 288, horizon: 12, warmup: 576, stride: 12 };
const TRACE_RO: Ro = Ro { season: 1, horizon: 12, warmup: 60, stride: 12 };

/// The shipped configuration meets the targets on every step-like series (7 days each, every other origin; the
/// EC2 and trace series are checked by `forecast_accuracy.rs`).
#[test]
fn step_like_series_meet_the_targets() {
    let cfg = ModelConfig::default();
    let default = Opt {
        name: "default",
        candidates: ALL,
        window: cfg.selection_window,
        penalty: cfg.fitted_penalty,
    };
    let mut misses = Vec::new();
    for spec in &forecast_data::STEP_SPECS {
        let y = forecast_data::step_series(spec, 7);
        let f = evaluate(&y, Ro { stride: 12, ..STEP_RO }, &[default])[0];
        let line = f.line(spec.name);
        println!("{line}");
        if !f.meets_targets() {
            misses.push(line);
        }
    }
    assert!(misses.is_empty(), "targets missed:\n{}", misses.join("\n"));
}

/// Leave-one-series-out choice among [`OPTIONS`] over the 16 dev series (slow in debug):
/// `cargo test --release -p forecasting --test forecast_selection -- --ignored --nocapture`.
#[test]
#[ignore = "slow in debug; run with --release -- --ignored --nocapture"]
fn leave_one_series_out() {
    let mut series: Vec<(String, Vec<f64>, Ro)> = Vec::new();
    for (name, y) in forecast_data::ec2_cpu() {
        series.push((name, y, EC2_RO));
    }
    for name in forecast_data::TRACES {
        series.push((name.to_string(), forecast_data::trace_work(name), TRACE_RO));
    }
    for spec in &forecast_data::STEP_SPECS {
        series.push((spec.name.to_string(), forecast_data::step_series(spec, 14), STEP_RO));
    }
    // FORECAST_SERIES=substring restricts the run to matching series (exploration only; the figures above are
    // from all 16).
    if let Ok(only) = std::env::var("FORECAST_SERIES") {
        series.retain(|(name, _, _)| name.contains(&only));
    }
    let table: Vec<Vec<Figures>> = series.iter().map(|(_, y, ro)| evaluate(y, *ro, &OPTIONS)).collect();
    for (i, (name, _, _)) in series.iter().enumerate() {
        for (j, opt) in OPTIONS.iter().enumerate() {
            println!("{}", table[i][j].line(&format!("{name} {}", opt.name)));
        }
    }
    let mean_ratio = |j: usize, skip: Option<usize>| {
        let r: Vec<f64> = (0..series.len()).filter(|&i| Some(i) != skip).map(|i| table[i][j].ratio()).collect();
        r.iter().sum::<f64>() / r.len() as f64
    };
    println!("\nin-sample (all series) mean ratio MASE / better baseline, worst ratio, targets met:");
    for (j, opt) in OPTIONS.iter().enumerate() {
        let worst = table.iter().map(|row| row[j].ratio()).fold(0.0, f64::max);
        let met = table.iter().filter(|row| row[j].meets_targets()).count();
        println!("  {:<18} mean {:.3}  worst {:.3}  targets met {met}/{}", opt.name, mean_ratio(j, None), worst, series.len());
    }
    println!("\nleave one series out: option chosen on the others, scored on the held one:");
    let mut held = Vec::new();
    for (i, (name, _, _)) in series.iter().enumerate() {
        let j = (0..OPTIONS.len())
            .min_by(|&a, &b| mean_ratio(a, Some(i)).total_cmp(&mean_ratio(b, Some(i))))
            .expect("options");
        let f = table[i][j];
        println!("  {}", f.line(&format!("{name} <- {}", OPTIONS[j].name)));
        held.push(f);
    }
    let mean = held.iter().map(Figures::ratio).sum::<f64>() / held.len() as f64;
    let worst = held.iter().map(Figures::ratio).fold(0.0, f64::max);
    let met = held.iter().filter(|f| f.meets_targets()).count();
    println!("held-out mean ratio {mean:.3}, worst {worst:.3}, targets met {met}/{}", held.len());
}

/// Writes the step-like series, 31 days each (as the real series), as `timestamp,value` CSVs for
/// `fleetpilot eval forecast --series DIR/NAME.csv --horizon 6 --season 144 --stride 6`:
/// `STEP_SERIES_DIR=/tmp/step_series cargo test -p forecasting --test forecast_selection write_step_series --
/// --ignored`.
#[test]
#[ignore = "writes files; run on demand"]
fn write_step_series() {
    let dir = std::env::var("STEP_SERIES_DIR").unwrap_or_else(|_| "/tmp/step_series".into());
    std::fs::create_dir_all(&dir).expect("create dir");
    for spec in &forecast_data::STEP_SPECS {
        let y = forecast_data::step_series(spec, 31);
        let mut csv = String::from("timestamp,value\n");
        for (t, v) in y.iter().enumerate() {
            let (day, minute) = (t / 144, (t % 144) * 10);
            csv.push_str(&format!("2024-01-{:02} {:02}:{:02}:00,{v}\n", day + 1, minute / 60, minute % 60));
        }
        std::fs::write(format!("{dir}/{}.csv", spec.name), csv).expect("write csv");
    }
}
