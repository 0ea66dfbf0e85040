//! The evaluation commands of ../shared/EVAL.md: `eval nab`, `eval forecast` and `backtest`. File reading
//! and writing live here; all the arithmetic is in the pure `forecasting` and `fleetpilot-eval` crates.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fleetpilot_eval::backtest::{
    self as bt, EnginePolicy, HpaPolicy, KpaPolicy, Policy, Profile, Summary, TraceStep, format_steps_csv,
    format_summary_csv, simulate,
};
use fleetpilot_eval::mase::{IntervalForecast, MaseReport, RollingOrigin, evaluate};
use fleetpilot_eval::nab::{self, ScoredFile};
use fleetpilot_eval::trace;
use forecasting::anomaly::selection;
use forecasting::model::{Candidate, Fitted, ModelConfig};
use indicatif::{ProgressBar, ProgressStyle};

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b
}

/// Reads `timestamp,value,...` with the one trace reader: (timestamps, values of column `col`). A bad line is an
/// error naming the file and the line.
fn timestamp_value_csv(text: &str, col: usize, path: &Path) -> anyhow::Result<(Vec<String>, Vec<f64>)> {
    let s = trace::parse_series(text, col).with_context(|| path.display().to_string())?;
    Ok((s.timestamps, s.values))
}

/// `fleetpilot eval nab --data DIR --out DIR [--cv]`: runs the detector on every file of a NAB-layout
/// directory, writes `<out>/<category>/fleetpilot_<file>.csv`, and prints the NAB score of each profile;
/// with `cv`, also scores the corpus with every setting of the model-selection grid
/// ([`selection::grid`]) and prints the leave-one-category-out cross-validation of each profile
/// ([`print_cv`]).
pub fn nab(data: &Path, out: &Path, cv: bool) -> anyhow::Result<Vec<nab::CorpusScore>> {
    let labels_path = data.join("labels/combined_windows.json");
    let labels: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&read(&labels_path)?).with_context(|| format!("parsing {}", labels_path.display()))?;
    let progress = bar(labels.len() as u64, "detecting");
    let mut files = Vec::with_capacity(labels.len());
    // (seconds, values) of every file, kept to score the grid's other settings.
    let mut series: Vec<(Vec<i64>, Vec<f64>)> = Vec::with_capacity(if cv { labels.len() } else { 0 });
    for (key, windows) in &labels {
        let path = data.join("data").join(key);
        let (timestamps, values) = timestamp_value_csv(&read(&path)?, 1, &path)?;
        let micros: Vec<i64> = timestamps
            .iter()
            .map(|t| nab::parse_timestamp_micros(t).with_context(|| format!("{}: bad timestamp {t:?}", path.display())))
            .collect::<anyhow::Result<_>>()?;
        let spans: Vec<(i64, i64)> = windows
            .iter()
            .map(|(a, b)| {
                Ok((
                    nab::parse_timestamp_micros(a).context("window start")?,
                    nab::parse_timestamp_micros(b).context("window end")?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let secs: Vec<i64> = micros.iter().map(|t| t.div_euclid(1_000_000)).collect();
        let scores = selection::score_series(&Default::default(), &secs, &values);
        let (category, file) =
            key.split_once('/').with_context(|| format!("label key {key:?} is not category/file"))?;
        let dir = out.join(category);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let csv = nab::format_results_csv(&timestamps, &values, &scores).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        std::fs::write(dir.join(format!("fleetpilot_{file}")), csv)?;
        files.push(ScoredFile { name: key.clone(), windows: nab::window_rows(&micros, &spans), scores });
        if cv {
            series.push((secs, values));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let windows: usize = files.iter().map(|f| f.windows.len()).sum();
    println!("NAB v1.1, detector `fleetpilot`, {} files, {windows} windows; results in {}", files.len(), out.display());
    let mut out_scores = Vec::new();
    for p in nab::PROFILES {
        let s = nab::score_corpus(&files, &p).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "  {:<20} score {:6.2}  threshold {:.6}  TP {} FP {} FN {}",
            p.name, s.normalized, s.threshold, s.true_positives, s.false_positives, s.false_negatives
        );
        out_scores.push(s);
    }
    let line =
        out_scores.iter().map(|s| format!("{}={:.2}", s.profile.name, s.normalized)).collect::<Vec<_>>().join(" ");
    println!("{line}");
    if cv {
        let grid = selection::grid();
        let progress = bar(grid.len() as u64, "model-selection grid");
        let mut scored: Vec<Vec<ScoredFile>> = Vec::with_capacity(grid.len());
        for c in &grid {
            // The grid's first setting is the shipped one, already scored above.
            if scored.is_empty() && c.config == Default::default() {
                scored.push(files.clone());
            } else {
                let with_c = files
                    .iter()
                    .zip(&series)
                    .map(|(f, (secs, values))| ScoredFile {
                        scores: selection::score_series(&c.config, secs, values),
                        ..f.clone()
                    })
                    .collect();
                scored.push(with_c);
            }
            progress.inc(1);
        }
        progress.finish_and_clear();
        print_cv(&grid, &scored, &out_scores)?;
    }
    Ok(out_scores)
}

/// Prints leave-one-category-out cross-validation (EVAL.md section 1, model selection) next to the plain dev
/// scores: `scored[k]` is the corpus scored with `grid[k]` (the shipped setting first). Per profile, each
/// held-out category is scored with the setting and threshold chosen on the other categories (the whole
/// protocol), then the same with only the threshold chosen for the shipped setting. Reports the mean over
/// the folds with windows and the pooled held-out score. Last line, per profile:
/// `cv_mean_<p>= cv_pooled_<p>=` (whole protocol), `cv_threshold_mean_<p>= cv_threshold_pooled_<p>=`,
/// `dev_<p>=`, then `cv_candidates=`.
pub fn print_cv(
    grid: &[selection::Candidate],
    scored: &[Vec<ScoredFile>],
    dev: &[nab::CorpusScore],
) -> anyhow::Result<Vec<nab::CvReport>> {
    let err = |e: nab::NabError| anyhow::anyhow!("{e}");
    anyhow::ensure!(!grid.is_empty() && grid.len() == scored.len(), "one scored corpus per grid setting");
    let refs: Vec<&[ScoredFile]> = scored.iter().map(Vec::as_slice).collect();
    let reports = nab::PROFILES
        .iter()
        .map(|p| nab::leave_one_category_out(&refs, p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let threshold_only = nab::PROFILES
        .iter()
        .map(|p| nab::leave_one_category_out(&refs[..1], p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    println!(
        "leave-one-category-out cross-validation: each category scored with the setting (of {} in the grid) and \
         the threshold chosen on the other categories",
        grid.len()
    );
    for (r, t) in reports.iter().zip(&threshold_only) {
        let plain = dev.iter().find(|d| d.profile.name == r.profile.name).map_or(f64::NAN, |d| d.normalized);
        println!(
            "  {:<20} dev {:6.2}  cv mean {:6.2} (folds with windows)  pooled {:6.2}   threshold only: mean {:6.2} pooled {:6.2}",
            r.profile.name, plain, r.mean, r.pooled, t.mean, t.pooled
        );
        for f in &r.folds {
            let h = &f.held_out;
            let score = f.normalized().map_or_else(|| "   n/a".to_string(), |v| format!("{v:6.2}"));
            let name = grid.get(f.candidate).map_or("?", |c| c.name);
            println!(
                "    {:<22} {score}  {name:<20} threshold {:.6} (train {:6.2})  windows {:>2} TP {:>2} FP {:>3} FN {:>2}  raw {:8.3}",
                f.category,
                f.threshold,
                f.train_normalized,
                h.windows,
                h.true_positives,
                h.false_positives,
                h.false_negatives,
                h.raw
            );
        }
    }
    let mut line = reports
        .iter()
        .zip(&threshold_only)
        .map(|(r, t)| {
            let plain = dev.iter().find(|d| d.profile.name == r.profile.name).map_or(f64::NAN, |d| d.normalized);
            format!(
                "cv_mean_{0}={1:.2} cv_pooled_{0}={2:.2} cv_threshold_mean_{0}={3:.2} cv_threshold_pooled_{0}={4:.2} dev_{0}={5:.2}",
                r.profile.name, r.mean, r.pooled, t.mean, t.pooled, plain
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    line += &format!(" cv_candidates={}", grid.len());
    println!("{line}");
    Ok(reports)
}

/// The production forecaster as a rolling-origin forecaster, with the candidate it chose (`None` if it failed and
/// the last value stood in).
fn model_forecaster(train: &[f64], h: usize) -> (IntervalForecast, Option<Candidate>) {
    match Fitted::fit(train, &ModelConfig::default()).and_then(|m| m.forecast(h, &[0.8, 0.95])) {
        Ok(f) if f.intervals.len() == 2 => {
            let (i80, i95) = (&f.intervals[0], &f.intervals[1]);
            let fc = IntervalForecast {
                point: f.point.clone(),
                lo80: i80.lower.clone(),
                hi80: i80.upper.clone(),
                lo95: i95.lower.clone(),
                hi95: i95.upper.clone(),
            };
            (fc, Some(f.candidate))
        }
        _ => (IntervalForecast::point_only(vec![train.last().copied().unwrap_or(0.0); h]), None),
    }
}

/// Which column of the CSV is the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeriesColumn {
    /// The second column (`timestamp,value`, e.g. NAB).
    Value,
    /// Replica-seconds of work from a trace (`prompt_tokens/1000 + output_tokens/100`).
    Work,
    /// A trace's `requests` column.
    Requests,
}

/// `fleetpilot eval forecast`: rolling-origin MASE (EVAL.md section 2) of the model and both baselines.
pub fn forecast(
    series: &Path,
    horizon: usize,
    season: usize,
    warmup: Option<usize>,
    stride: Option<usize>,
    column: SeriesColumn,
) -> anyhow::Result<MaseReport> {
    let text = read(series)?;
    let y: Vec<f64> = match column {
        SeriesColumn::Value => timestamp_value_csv(&text, 1, series)?.1,
        SeriesColumn::Requests => timestamp_value_csv(&text, 1, series)?.1,
        SeriesColumn::Work => {
            let trace = bt::parse_trace_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", series.display()))?;
            trace.iter().map(|s| s.prompt_tokens / 1000.0 + s.output_tokens / 100.0).collect()
        }
    };
    let m = season.max(1);
    let warmup = warmup.unwrap_or(if m > 1 { 2 * m } else { 60 });
    let settings = RollingOrigin { season: m, horizon, warmup, stride: stride.unwrap_or(horizon) };
    let origins = y.len().saturating_sub(warmup + horizon) / settings.stride + 1;
    let progress = bar(origins as u64, "origins");
    // Which candidate each origin's forecast used (the model chooses by its own errors on the training part).
    let mut chosen: BTreeMap<Candidate, usize> = BTreeMap::new();
    let mut f = |train: &[f64], h: usize| {
        progress.inc(1);
        let (fc, candidate) = model_forecaster(train, h);
        if let Some(c) = candidate {
            *chosen.entry(c).or_default() += 1;
        }
        fc
    };
    let r = evaluate(&y, &settings, &mut f).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    progress.finish_and_clear();
    let fitted_origins = chosen.values().sum::<usize>().max(1) as f64;
    let share = |c: Candidate| chosen.get(&c).copied().unwrap_or(0) as f64 / fitted_origins;
    let fmt = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
    println!(
        "{}: {} points, m={m} h={horizon} W={warmup} stride={}, {} origins",
        series.display(),
        y.len(),
        settings.stride,
        r.origins
    );
    println!(
        "  MASE model {}   seasonal-naive {}   last-value {}",
        fmt(r.mase_model),
        fmt(r.mase_seasonal_naive),
        fmt(r.mase_last_value)
    );
    println!("  interval coverage: 80% -> {:.1}%, 95% -> {:.1}%", r.coverage80 * 100.0, r.coverage95 * 100.0);
    println!(
        "mase_model={} mase_seasonal_naive={} mase_last_value={} coverage80={:.3} coverage95={:.3}",
        fmt(r.mase_model),
        fmt(r.mase_seasonal_naive),
        fmt(r.mase_last_value),
        r.coverage80,
        r.coverage95
    );
    let shares: Vec<(Candidate, f64)> = Candidate::ALL.iter().map(|&c| (c, share(c))).collect();
    println!(
        "  chosen candidate (share of origins): {}",
        shares.iter().map(|(c, s)| format!("{} {:.1}%", c.name(), s * 100.0)).collect::<Vec<_>>().join(", ")
    );
    println!("{}", shares.iter().map(|(c, s)| format!("share_{}={s:.3}", c.name())).collect::<Vec<_>>().join(" "));
    Ok(r)
}

/// `fleetpilot backtest`: replays a trace through EVAL.md's model v1 for the shipped scaling engine (the default
/// LLM policy, [`EnginePolicy::llm_default`]) and the reference policies; writes `<out>/<policy>.csv`,
/// `<out>/summary.csv` and `<out>/backtest.svg`.
///
/// The step comes from the trace's timestamps; `step_overridden` means `profile.step_s` was given on the command
/// line, which wins (with a warning when it disagrees with the timestamps).
pub fn backtest(
    trace_path: &Path,
    out: &Path,
    mut profile: Profile,
    step_overridden: bool,
) -> anyhow::Result<Vec<Summary>> {
    let trace: Vec<TraceStep> =
        bt::parse_trace_csv(&read(trace_path)?).map_err(|e| anyhow::anyhow!("{}: {e}", trace_path.display()))?;
    let from_trace = bt::trace_step_secs(&trace).map_err(|e| anyhow::anyhow!("{}: {e}", trace_path.display()))?;
    match (from_trace, step_overridden) {
        (Some(t), true) if (t - profile.step_s).abs() > 1e-9 * t.max(1.0) => eprintln!(
            "warning: --step-s {} overrides the trace's step of {t} s read from its timestamps",
            profile.step_s
        ),
        (Some(t), false) => profile.step_s = t,
        (None, false) => anyhow::bail!(
            "{}: the trace has fewer than two rows, so its step cannot be read from the timestamps; pass --step-s",
            trace_path.display()
        ),
        _ => {}
    }
    profile.validate().map_err(|e| anyhow::anyhow!("profile: {e}"))?;
    println!(
        "trace {}: {} steps of {} s ({:.2} h)",
        trace_path.display(),
        trace.len(),
        profile.step_s,
        trace.len() as f64 * profile.step_s / 3600.0
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let bad = |e: bt::BacktestError| anyhow::anyhow!("{e}");
    let mut policies: Vec<Box<dyn Policy>> = vec![
        Box::new(EnginePolicy::llm_default(&profile)),
        Box::new(bt::static_peak(&trace, &profile).map_err(bad)?),
        Box::new(bt::static_best(&trace, &profile).map_err(bad)?),
        Box::new(HpaPolicy::new()),
        Box::new(KpaPolicy::new()),
    ];
    let progress = bar(policies.len() as u64, "policies");
    let mut summaries = Vec::new();
    let mut runs = Vec::new();
    for p in policies.iter_mut() {
        let r = simulate(&trace, &profile, p.as_mut()).map_err(bad)?;
        std::fs::write(out.join(format!("{}.csv", r.summary.policy)), format_steps_csv(&r.rows))?;
        summaries.push(r.summary.clone());
        runs.push(r);
        progress.inc(1);
    }
    progress.finish_and_clear();
    std::fs::write(out.join("summary.csv"), format_summary_csv(&summaries))?;
    plot(&runs, &profile, &out.join("backtest.svg"))?;
    let mut table = String::new();
    let _ = writeln!(table, "{:<12} {:>10} {:>14} {:>16}", "policy", "GPU-hours", "SLO attain.", "actions/hour");
    for s in &summaries {
        let _ = writeln!(
            table,
            "{:<12} {:>10.1} {:>13.2}% {:>16.1}",
            s.policy,
            s.gpu_hours,
            s.slo_attainment * 100.0,
            s.actions_per_hour
        );
    }
    print!("{table}");
    println!("wrote {}/<policy>.csv, summary.csv, backtest.svg", out.display());
    Ok(summaries)
}

fn plot(runs: &[bt::BacktestResult], profile: &Profile, path: &PathBuf) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let steps = runs.first().map_or(0, |r| r.rows.len());
    let max_r = runs.iter().flat_map(|r| r.rows.iter().map(|x| f64::from(x.ready + x.pending))).fold(1.0, f64::max);
    let max_d = runs.first().map_or(1.0, |r| r.rows.iter().map(|x| x.work / profile.step_s).fold(1.0, f64::max));
    let root = SVGBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("demand (busy replicas) and replicas per policy; dots: SLO violations", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0..steps.max(1), 0.0..(max_r.max(max_d) * 1.1))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.configure_mesh().x_desc("step").y_desc("replicas").draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(r) = runs.first() {
        chart
            .draw_series(LineSeries::new(
                r.rows.iter().map(|x| (x.step, x.work / profile.step_s)),
                BLACK.stroke_width(1),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("demand")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK));
    }
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN];
    for (run, color) in runs.iter().zip(colors.iter().cycle()) {
        let c = *color;
        chart
            .draw_series(LineSeries::new(
                run.rows.iter().map(|x| (x.step, f64::from(x.ready + x.pending))),
                c.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(run.summary.policy.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c));
        chart
            .draw_series(
                run.rows
                    .iter()
                    .filter(|x| x.violation)
                    .map(|x| Circle::new((x.step, f64::from(x.ready + x.pending)), 2, c.filled())),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
