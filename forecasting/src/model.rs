//! The demand model: an MSTL seasonal profile, a robust exponentially smoothed level on the deseasonalised series,
//! and prediction intervals from the model's own recent k-step errors (conformal-style empirical quantiles, one
//! set per step ahead).
//!
//! Fitting is cheap by construction (about 6 ms for a week of 1-minute points, one core, release; twice that with
//! the second fit for honest errors):
//! - the season is detected on a rollup of at most 2048 buckets (augurs periodogram, confirmed and refined by the
//!   autocorrelation); the MSTL decomposition (augurs' `stlrs`) runs at full resolution up to
//!   [`ModelConfig::max_fit_points`] points, else on the rollup with the profile interpolated back;
//! - instead of AutoETS (hundreds of ms per fit on long series), the level is exponential smoothing with clipped
//!   innovations (robust to spikes), its weight and clipping chosen from a small grid by the mean absolute error
//!   over the first [`ModelConfig::tune_horizon`] steps ahead on the recent history, with and without the seasonal
//!   profile;
//! - the point forecast is shifted by the median of the recent k-step errors (conditional median, which is what
//!   MASE rewards, and a drift term), and the interval bounds come from their empirical quantiles.
//!
//! That smoothed level is one of four candidates ([`Candidate`]): besides it, the seasonal-naive forecast (the
//! detected period), the last value, and the point-wise median of those three. Every candidate's k-step errors are
//! tracked on the series' own past as it arrives (rolling origin: the forecast made k steps before each point,
//! scored when the point comes). The level's (and so the median's) errors on the most recent points come from a
//! second fit that did not see them ([`ModelConfig::honest_errors`], recentred on this fit's own median error), so
//! every candidate is judged out of sample. The last value is the default; another candidate takes over only when
//! its recent losses over the requested horizon, paired point by point with the last value's, are lower by
//! [`ModelConfig::switch_z`] standard errors (blocks of the horizon, since neighbouring errors share forecasts),
//! and among those the least recent error wins. The intervals are the chosen candidate's own recent k-step
//! errors' split-conformal quantiles, one set per step ahead, each tail's quantile level moved by adaptive
//! conformal inference ([`ModelConfig::aci_gamma`]) replayed over those errors, so coverage follows a change in
//! the spread or a bias. A step-like series (set by another autoscaler) ends up on the last value, a smooth
//! seasonal one on the seasonal level, with no per-series setting. Why this rule and its settings:
//! `forecasting/eval/tests/forecast_selection.rs`.
//!
//! After a fit, [`Fitted::update`] absorbs new points in O(max_horizon) each, reusing the seasonal profile and the
//! level parameters (warm start) and scoring every candidate on them, so the choice follows the data between
//! refits; refit when the seasonal profile may have drifted (e.g. hourly or daily).

use std::collections::VecDeque;

use augurs::mstl::stlrs;

use crate::Error;
use crate::season::{autocorrelation, detect_period, normal_quantile};

/// Which model produced a [`crate::forecast::DemandForecast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// MSTL decomposition with an AutoETS trend (no longer produced; kept so stored forecasts still parse).
    MstlEts,
    /// Non-seasonal AutoETS (no longer produced; kept so stored forecasts still parse).
    Ets,
    /// Last observed value (shifted by the median of its recent k-step errors), empirical intervals.
    LastValue,
    /// MSTL seasonal profile plus a robust exponentially smoothed level, empirical intervals.
    MstlLevel,
    /// Robust exponentially smoothed level, empirical intervals.
    Level,
    /// The value one detected season back, empirical intervals.
    SeasonalNaive,
    /// Point-wise median of the level, seasonal-naive and last-value forecasts, empirical intervals.
    Median,
}

/// Settings of [`Fitted::fit`]. One default configuration is meant to serve every series.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// Shortest season considered, in steps of the series.
    pub min_period: u32,
    /// Longest season considered, in steps (0 = no limit besides half the series).
    pub max_period: u32,
    /// Fewer points than this: last-value forecast.
    pub min_points: usize,
    /// Longer series are averaged into buckets of `ceil(len / max_fit_points)` steps for the season detection and
    /// the MSTL decomposition.
    pub max_fit_points: usize,
    /// Recent points the level model is tuned on.
    pub tune_window: usize,
    /// Steps ahead whose mean absolute error tunes the level model.
    pub tune_horizon: usize,
    /// Recent k-step errors kept per step ahead for the intervals.
    pub residual_window: usize,
    /// Steps ahead with empirically calibrated intervals; further steps widen like a random walk.
    pub max_horizon: usize,
    /// The candidates a forecast may choose among (an empty list means the smoothed level alone).
    pub candidates: Vec<Candidate>,
    /// Most recent k-step errors per step ahead that choose the candidate (at most `residual_window`).
    pub selection_window: usize,
    /// Relative handicap on the recent error of the candidates fitted on the points they are scored on (the level
    /// model's smoothing and profile, and the median that contains it): without `honest_errors` their errors there
    /// are in-sample, so optimistic, while the naive candidates' are out-of-sample.
    pub fitted_penalty: f64,
    /// How clearly another candidate must beat the last value to be chosen over it: its recent per-point losses
    /// (after `fitted_penalty`), paired with the last value's at the same points and averaged over blocks as long
    /// as the horizon (so autocorrelated errors are not counted as independent), must be lower by this many
    /// standard errors of the mean difference. 0 (or no last value among the candidates) = the least recent error
    /// wins outright.
    pub switch_z: f64,
    /// Length of the blocks `switch_z`'s standard error is estimated from, in horizons (at least 1).
    pub switch_block: usize,
    /// Most recent k-step errors per step ahead whose quantiles are the interval bounds (at most
    /// `residual_window`; the point forecast's median shift uses all `residual_window`).
    pub interval_window: usize,
    /// Most recent points the level model (seasonal profile and smoothing) is not fitted on, so that its errors
    /// there are out-of-sample like the naive candidates' (at most `residual_window`; the fit keeps two seasons
    /// and 16 points at least). 0 = fitted on every point: a held-out fit is a stale one, which cost more than
    /// the honest errors gained (forecasting/eval/tests/forecast_selection.rs).
    pub holdout: usize,
    /// Most recent points whose errors of the level (and median) candidates come from a second fit that did not
    /// see them (at most a quarter of the series), while the forecasts come from the fit on every point: honest
    /// errors for the choice and the intervals without a stale forecast, at twice the refit cost. 0 = one fit,
    /// in-sample errors.
    pub honest_errors: usize,
    /// Step of adaptive conformal inference (Gibbs and Candès, 2021) on each tail's quantile level, replayed over
    /// the more recent half of the interval window: an error beyond a bound that the errors before it gave moves
    /// that tail's level out by `aci_gamma` x (1 - its miss share), any other in by `aci_gamma` x its miss share
    /// ((1 - level) / 2), so coverage follows a change in the spread or a bias of the errors. 0 = the plain
    /// split-conformal quantiles.
    pub aci_gamma: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            min_period: 4,
            max_period: 0,
            min_points: 10,
            max_fit_points: 10_080,
            tune_window: 2016,
            tune_horizon: 12,
            residual_window: 300,
            max_horizon: 64,
            candidates: Candidate::ALL.to_vec(),
            selection_window: 300,
            // The level's and the median's errors are out-of-sample (`honest_errors`): no handicap.
            fitted_penalty: 0.0,
            switch_z: 2.0,
            switch_block: 1,
            interval_window: 300,
            holdout: 0,
            honest_errors: 300,
            aci_gamma: 0.01,
        }
    }
}

/// The forecasts a [`Fitted`] model chooses among, each scored by its own rolling-origin errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidate {
    /// The robust exponentially smoothed level, plus the MSTL seasonal profile when that tuned better.
    Level,
    /// The value one detected season back (absent when no season is detected).
    SeasonalNaive,
    /// The last observed value.
    LastValue,
    /// The point-wise median of the three above (their mean when there is no season).
    Median,
}

impl Candidate {
    /// Every candidate, in the order ties are broken.
    pub const ALL: [Candidate; 4] =
        [Candidate::Level, Candidate::SeasonalNaive, Candidate::LastValue, Candidate::Median];

    /// A short stable name (`level`, `seasonal_naive`, `last_value`, `median`).
    pub fn name(self) -> &'static str {
        match self {
            Candidate::Level => "level",
            Candidate::SeasonalNaive => "seasonal_naive",
            Candidate::LastValue => "last_value",
            Candidate::Median => "median",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether the forecast is shifted by the median of the candidate's recent k-step errors. The naive candidates
    /// are not: they stay exactly the baselines they stand for (a shift by the median recent change is a drift
    /// that hurts where the direction of change varies over the day, as on a daily fleet).
    fn shifted(self) -> bool {
        matches!(self, Candidate::Level | Candidate::Median)
    }
}

/// A forecast with one central interval per requested level.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MultiForecast {
    /// Point forecasts (conditional medians), one per step ahead.
    pub point: Vec<f64>,
    /// One interval per requested level, in the order requested.
    pub intervals: Vec<Interval>,
    /// The model used (the chosen candidate; [`Candidate::Level`] reports the level model's own kind).
    pub model: ModelKind,
    /// The seasonal period used, in steps, if any.
    pub period: Option<usize>,
    /// The candidate chosen for this forecast.
    pub candidate: Candidate,
}

/// A central prediction interval.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// Nominal coverage, in (0, 1).
    pub level: f64,
    /// Lower bounds, one per step ahead.
    pub lower: Vec<f64>,
    /// Upper bounds, one per step ahead.
    pub upper: Vec<f64>,
}

/// Smoothing weights tried for the level.
const ALPHAS: [f64; 9] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0];
/// Innovation clipping tried, in robust standard deviations (infinite = plain exponential smoothing).
const CLIPS: [f64; 3] = [1.5, 3.0, f64::INFINITY];
/// Fewer errors than this at a step ahead: Gaussian random-walk interval from the one-step scale instead.
const MIN_ERRORS: usize = 8;

/// A fitted demand model, ready to forecast and to absorb new points.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The kind of the [`Candidate::Level`] model.
    kind: ModelKind,
    /// Seasonal profile at the series' resolution; value for absolute step t is `profile[t % period]`.
    profile: Vec<f64>,
    /// Points seen so far (the absolute index of the next point).
    n: usize,
    alpha: f64,
    /// Clipping bound on one-step innovations (absolute units; infinite = none).
    clip: f64,
    level: f64,
    /// Robust one-step scale (for fallback intervals).
    sigma: f64,
    /// Levels after each of the last `max_horizon` points, newest last.
    levels: VecDeque<f64>,
    /// `errors[c][k - 1]`: the last `residual_window` errors (actual minus forecast) of candidate `c`'s
    /// (k)-step-ahead forecast, oldest first. Empty for a candidate that is not enabled.
    errors: Vec<Vec<VecDeque<f64>>>,
    /// The candidates enabled, in tie-breaking order.
    candidates: Vec<Candidate>,
    selection_window: usize,
    fitted_penalty: f64,
    switch_z: f64,
    switch_block: usize,
    interval_window: usize,
    aci_gamma: f64,
    residual_window: usize,
    max_h: usize,
    /// The detected season (steps) the seasonal-naive candidate repeats, even if the level model did not use it.
    naive_period: Option<usize>,
    /// The last `history_cap` observations, newest last (the naive candidates' memory).
    history: VecDeque<f64>,
    history_cap: usize,
    last: f64,
    non_negative: bool,
    /// The last `residual_window` observations, and how many of them are zero.
    recent: VecDeque<f64>,
    recent_zeros: usize,
    /// Variance inflation of the level model's empirical errors: the in-sample errors of a seasonal model are
    /// measured against a profile fitted on the same points, so they understate the out-of-sample spread by about
    /// 1 + 1/cycles. The naive candidates' errors are out-of-sample already.
    inflation: f64,
}

/// What [`Fitted::new_state`] needs besides the configuration.
struct LevelModel {
    kind: ModelKind,
    profile: Vec<f64>,
    alpha: f64,
    clip: f64,
    level: f64,
    sigma: f64,
    naive_period: Option<usize>,
}

impl Fitted {
    /// Fits the model to `y` (oldest first). Errors only on invalid input (empty or non-finite); a series too
    /// short or too flat for the model gets a last-value level model (the naive candidates still compete).
    pub fn fit(y: &[f64], cfg: &ModelConfig) -> Result<Self, Error> {
        if y.is_empty() {
            return Err(Error::TooShort { len: 0, need: 1 });
        }
        if let Some(index) = y.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        let mut fitted = Self::fit_without(y, cfg, cfg.holdout);
        // At most a quarter of the series, so that a short one keeps most of its points for the second fit.
        let honest = cfg.honest_errors.min(cfg.residual_window.max(MIN_ERRORS)).min(y.len() / 4);
        if honest > 0 && fitted.kind != ModelKind::LastValue {
            // The level's (and the median's) recent errors from a second fit that did not see the recent points.
            let second = Self::fit_without(y, cfg, honest);
            if second.kind != ModelKind::LastValue {
                for c in [Candidate::Level, Candidate::Median] {
                    let (own, honest) = (&fitted.errors[c.index()], &second.errors[c.index()]);
                    if own.is_empty() || honest.is_empty() {
                        continue;
                    }
                    // The second fit's spread around this fit's own bias: the median shift of the forecast must
                    // stay this model's (the second one, fitted on older points, lags).
                    let recentred: Vec<VecDeque<f64>> = own
                        .iter()
                        .zip(honest)
                        .map(|(o, h)| {
                            let centre = median(&mut o.iter().copied().collect::<Vec<_>>())
                                - median(&mut h.iter().copied().collect::<Vec<_>>());
                            h.iter().map(|e| e + centre).collect()
                        })
                        .collect();
                    fitted.errors[c.index()] = recentred;
                }
                fitted.inflation = second.inflation;
            }
        }
        Ok(fitted)
    }

    /// [`Fitted::fit`] of a valid series with the level model fitted on all but the last `holdout` points.
    fn fit_without(y: &[f64], cfg: &ModelConfig, holdout: usize) -> Self {
        let window = cfg.residual_window.max(MIN_ERRORS);
        let n = y.len();
        if n < cfg.min_points.max(3) || is_constant(y) {
            return Self::last_value_model(y, cfg);
        }

        // The season is detected on the whole series; the level model (profile and smoothing) is fitted on all but
        // the most recent `holdout` points (as far as two seasons allow; none by default, see ModelConfig::holdout).
        let season = detect_season(y, cfg);
        let naive_period = season.map(|s| s.period());
        let holdout = holdout.min(window);
        let fit_end = n.saturating_sub(holdout).max(naive_period.map_or(16, |p| 2 * p)).min(n);
        let profile = season.and_then(|s| season_profile(&y[..fit_end], s, cfg)).unwrap_or_default();
        let tail_start = fit_end.saturating_sub(cfg.tune_window.max(16));
        let tail = &y[tail_start..fit_end];
        let deseason = |profile: &[f64]| -> Vec<f64> {
            if profile.is_empty() {
                tail.to_vec()
            } else {
                tail.iter().enumerate().map(|(i, v)| v - profile[(tail_start + i) % profile.len()]).collect()
            }
        };
        let k_tune = cfg.tune_horizon.clamp(1, cfg.max_horizon.max(1));

        // Level model: with and without the seasonal profile, each over the smoothing grid.
        let mut best: Option<(f64, bool, f64, f64, f64)> = None; // (score, seasonal, alpha, clip, sigma)
        let seasonal_options: &[bool] = if profile.is_empty() { &[false] } else { &[false, true] };
        let mut series = Vec::with_capacity(2);
        for &seasonal in seasonal_options {
            let d = if seasonal { deseason(&profile) } else { tail.to_vec() };
            let sigma = robust_sigma(&d);
            for &alpha in &ALPHAS {
                for &c in &CLIPS {
                    let clip = if sigma > 0.0 { c * sigma } else { f64::INFINITY };
                    if c.is_finite() && !clip.is_finite() {
                        continue;
                    }
                    let score = tune_score(&d, alpha, clip, k_tune);
                    if best.is_none_or(|b| score < b.0) {
                        best = Some((score, seasonal, alpha, clip, sigma));
                    }
                }
            }
            series.push((seasonal, d));
        }
        let Some((_, seasonal, alpha, clip, sigma)) = best else {
            return Self::last_value_model(y, cfg);
        };
        let d = series.into_iter().find(|(s, _)| *s == seasonal).map(|(_, d)| d).unwrap_or_default();
        let level_model = LevelModel {
            kind: if seasonal { ModelKind::MstlLevel } else { ModelKind::Level },
            profile: if seasonal { profile } else { Vec::new() },
            alpha,
            clip,
            level: initial_level(&d),
            sigma,
            naive_period,
        };
        let mut fitted = Self::new_state(level_model, cfg, &y[..tail_start]);
        if let Some(p) = fitted.period() {
            // Where the fit had to reach into the recent window, those errors are in-sample for the profile.
            let in_sample = (fit_end + window).saturating_sub(n).min(window) as f64 / window as f64;
            fitted.inflation = 1.0 + in_sample / (fit_end / p).clamp(1, 7) as f64;
        }
        fitted.absorb(&y[tail_start..]);
        fitted
    }

    /// A model whose state starts after `before` (only its last points are kept, as the naive candidates'
    /// memory) and has absorbed nothing yet.
    fn new_state(m: LevelModel, cfg: &ModelConfig, before: &[f64]) -> Self {
        let max_h = cfg.max_horizon.max(1);
        let window = cfg.residual_window.max(MIN_ERRORS);
        let mut candidates: Vec<Candidate> = Vec::with_capacity(Candidate::ALL.len());
        for &c in &cfg.candidates {
            if !candidates.contains(&c) && (c != Candidate::SeasonalNaive || m.naive_period.is_some()) {
                candidates.push(c);
            }
        }
        if candidates.is_empty() {
            candidates.push(Candidate::Level);
        }
        let errors = Candidate::ALL
            .iter()
            .map(|c| if candidates.contains(c) { vec![VecDeque::with_capacity(window + 1); max_h] } else { Vec::new() })
            .collect();
        // The seasonal-naive forecast k steps ahead made k steps ago reaches back p * ceil(k / p) points.
        let history_cap = m.naive_period.map_or(0, |p| p * max_h.div_ceil(p)).max(max_h);
        let history: VecDeque<f64> = before[before.len().saturating_sub(history_cap)..].iter().copied().collect();
        Self {
            kind: m.kind,
            profile: m.profile,
            n: before.len(),
            alpha: m.alpha,
            clip: m.clip,
            level: m.level,
            sigma: m.sigma,
            levels: VecDeque::with_capacity(max_h + 1),
            errors,
            candidates,
            selection_window: cfg.selection_window.clamp(MIN_ERRORS, window),
            fitted_penalty: if cfg.fitted_penalty.is_finite() { cfg.fitted_penalty.max(0.0) } else { 0.0 },
            switch_z: if cfg.switch_z.is_finite() { cfg.switch_z.max(0.0) } else { 0.0 },
            switch_block: cfg.switch_block.max(1),
            interval_window: cfg.interval_window.clamp(MIN_ERRORS, window),
            aci_gamma: if cfg.aci_gamma.is_finite() { cfg.aci_gamma.clamp(0.0, 1.0) } else { 0.0 },
            residual_window: window,
            max_h,
            naive_period: m.naive_period,
            history_cap,
            last: history.back().copied().unwrap_or(m.level),
            history,
            non_negative: before.iter().all(|&v| v >= 0.0),
            recent: VecDeque::with_capacity(window + 1),
            recent_zeros: 0,
            inflation: 1.0,
        }
    }

    fn last_value_model(y: &[f64], cfg: &ModelConfig) -> Self {
        let window = cfg.residual_window.max(MIN_ERRORS);
        let split = y.len().saturating_sub(window + 1);
        let tail = &y[split..];
        let level_model = LevelModel {
            kind: ModelKind::LastValue,
            profile: Vec::new(),
            alpha: 1.0,
            clip: f64::INFINITY,
            level: tail[0],
            sigma: robust_sigma(tail),
            naive_period: None,
        };
        let mut fitted = Self::new_state(level_model, cfg, &y[..split]);
        fitted.absorb(tail);
        fitted
    }

    /// Absorbs new observations (oldest first): O(max_horizon) per point, the seasonal profile and the level
    /// parameters are kept, every candidate's errors are updated. Non-finite points are rejected without changing
    /// the model.
    pub fn update(&mut self, new_points: &[f64]) -> Result<(), Error> {
        if let Some(index) = new_points.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        self.absorb(new_points);
        Ok(())
    }

    fn absorb(&mut self, points: &[f64]) {
        let level_on = !self.errors[Candidate::Level.index()].is_empty();
        let naive_on = !self.errors[Candidate::SeasonalNaive.index()].is_empty();
        let last_on = !self.errors[Candidate::LastValue.index()].is_empty();
        let median_on = !self.errors[Candidate::Median.index()].is_empty();
        for &y in points {
            let season = self.season_at(self.n);
            // The forecasts of this point made k steps ago (their last observation was k points back), scored.
            let (nl, nh) = (self.levels.len(), self.history.len());
            for k in 1..=self.max_h {
                let level = (k <= nl).then(|| self.levels[nl - k] + season);
                let last = (k <= nh).then(|| self.history[nh - k]);
                let naive = self.naive_period.and_then(|p| {
                    let back = p * k.div_ceil(p);
                    (back <= nh).then(|| self.history[nh - back])
                });
                let mut push = |c: Candidate, forecast: Option<f64>, on: bool| {
                    if let (true, Some(f)) = (on, forecast) {
                        let e = &mut self.errors[c.index()][k - 1];
                        e.push_back(y - f);
                        if e.len() > self.residual_window {
                            e.pop_front();
                        }
                    }
                };
                push(Candidate::Level, level, level_on);
                push(Candidate::SeasonalNaive, naive, naive_on);
                push(Candidate::LastValue, last, last_on);
                if median_on {
                    let m = match (level, last, self.naive_period) {
                        (Some(a), Some(b), None) => Some((a + b) / 2.0),
                        (Some(a), Some(b), Some(_)) => naive.map(|c| median3(a, b, c)),
                        _ => None,
                    };
                    push(Candidate::Median, m, true);
                }
            }
            let e = y - season - self.level;
            self.level += self.alpha * e.clamp(-self.clip, self.clip);
            self.levels.push_back(self.level);
            if self.levels.len() > self.max_h {
                self.levels.pop_front();
            }
            self.history.push_back(y);
            if self.history.len() > self.history_cap {
                self.history.pop_front();
            }
            self.non_negative &= y >= 0.0;
            self.recent.push_back(y);
            self.recent_zeros += usize::from(y == 0.0);
            if self.recent.len() > self.residual_window
                && let Some(old) = self.recent.pop_front()
            {
                self.recent_zeros -= usize::from(old == 0.0);
            }
            self.last = y;
            self.n += 1;
        }
    }

    /// Fraction of exact zeros among the recent observations of a non-negative series.
    fn zero_mass(&self) -> f64 {
        if self.non_negative { self.recent_zeros as f64 / self.recent.len().max(1) as f64 } else { 0.0 }
    }

    fn season_at(&self, t: usize) -> f64 {
        if self.profile.is_empty() { 0.0 } else { self.profile[t % self.profile.len()] }
    }

    /// Which model the [`Candidate::Level`] candidate is (MSTL level, plain level, or last value for a series too
    /// short or flat to fit).
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The seasonal period in steps, if the level model uses one.
    pub fn period(&self) -> Option<usize> {
        if self.profile.is_empty() { None } else { Some(self.profile.len()) }
    }

    /// The season the seasonal-naive candidate repeats, if one was detected.
    pub fn naive_period(&self) -> Option<usize> {
        self.naive_period
    }

    /// Points absorbed so far (fit plus updates).
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether no point was absorbed (never true for a fitted model).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The smoothing weight and the innovation clipping bound of the level (diagnostics).
    pub fn level_params(&self) -> (f64, f64) {
        (self.alpha, self.clip)
    }

    /// The candidates this model chooses among (the seasonal-naive one only when a season was detected).
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// From now on chooses only among `candidates` (those of them this model tracks; the level model if none)
    /// with `cfg`'s `selection_window`, `fitted_penalty`, `switch_z`, `switch_block`, `interval_window` and
    /// `aci_gamma` (the rest of `cfg` is ignored): what-if evaluation of other selection rules on one fit.
    pub fn restrict(&mut self, candidates: &[Candidate], cfg: &ModelConfig) {
        self.fitted_penalty = if cfg.fitted_penalty.is_finite() { cfg.fitted_penalty.max(0.0) } else { 0.0 };
        self.switch_z = if cfg.switch_z.is_finite() { cfg.switch_z.max(0.0) } else { 0.0 };
        self.switch_block = cfg.switch_block.max(1);
        self.candidates = Candidate::ALL
            .iter()
            .copied()
            .filter(|c| candidates.contains(c) && !self.errors[c.index()].is_empty())
            .collect();
        if self.candidates.is_empty() {
            self.candidates.push(Candidate::Level);
        }
        self.selection_window = cfg.selection_window.clamp(MIN_ERRORS, self.residual_window);
        self.interval_window = cfg.interval_window.clamp(MIN_ERRORS, self.residual_window);
        self.aci_gamma = if cfg.aci_gamma.is_finite() { cfg.aci_gamma.clamp(0.0, 1.0) } else { 0.0 };
    }

    /// The recent per-point losses of `candidate` for a forecast of `horizon` steps, newest first: for each of
    /// the last (at most `selection_window`) observed points, the mean over steps k = 1..=min(horizon,
    /// max_horizon) of the absolute error of the forecast made k steps before it (after the candidate's median
    /// shift, level and median candidates). Index j is the same point for every candidate, so losses pair up.
    /// `None` if the candidate is not enabled or has fewer than 8 errors at some step.
    fn recent_losses(&self, candidate: Candidate, horizon: usize) -> Option<Vec<f64>> {
        let per_step = self.errors.get(candidate.index())?;
        let kk = horizon.clamp(1, self.max_h);
        let steps = per_step.get(..kk)?;
        let len = steps.iter().map(VecDeque::len).min()?.min(self.selection_window);
        if len < MIN_ERRORS {
            return None;
        }
        let mut losses = vec![0.0; len];
        let mut buf = Vec::with_capacity(len);
        for errors in steps {
            buf.clear();
            buf.extend(errors.iter().rev().take(len).copied());
            let shift = if candidate.shifted() {
                let mut sorted = buf.clone();
                median(&mut sorted)
            } else {
                0.0
            };
            for (l, e) in losses.iter_mut().zip(&buf) {
                *l += (e - shift).abs() / kk as f64;
            }
        }
        Some(losses)
    }

    /// Mean absolute error of `candidate` over its most recent `selection_window` errors at steps
    /// 1..=min(horizon, max_horizon), after its median shift (level and median candidates); `None` if it is not
    /// enabled or has fewer than 8 errors at some step.
    pub fn recent_error(&self, candidate: Candidate, horizon: usize) -> Option<f64> {
        let losses = self.recent_losses(candidate, horizon)?;
        Some(losses.iter().sum::<f64>() / losses.len() as f64)
    }

    /// The candidate a forecast of `horizon` steps uses now. The last value is the default; another candidate (its
    /// error handicapped by [`ModelConfig::fitted_penalty`] for the level and the median) takes over only when it
    /// beats the last value by [`ModelConfig::switch_z`] standard errors on the paired recent losses, and among
    /// those the least recent error wins (with `switch_z` 0, or without the last value among the candidates:
    /// the least recent error outright). Ties go to the earlier in [`Candidate::ALL`]; the level model while none
    /// has enough errors.
    pub fn chosen(&self, horizon: usize) -> Candidate {
        let kk = horizon.clamp(1, self.max_h);
        let scored: Vec<(Candidate, f64, Vec<f64>)> = self
            .candidates
            .iter()
            .filter_map(|&c| {
                let handicap = if c.shifted() { 1.0 + self.fitted_penalty } else { 1.0 };
                let mut losses = self.recent_losses(c, kk)?;
                losses.iter_mut().for_each(|l| *l *= handicap);
                let mean = losses.iter().sum::<f64>() / losses.len() as f64;
                Some((c, mean, losses))
            })
            .collect();
        let Some(best) = least(scored.iter()) else { return Candidate::Level };
        let default = scored.iter().find(|s| s.0 == Candidate::LastValue);
        let Some(default) = default.filter(|_| self.switch_z > 0.0) else { return best.0 };
        // A candidate chosen over the last value on noise costs more than it gains: on a series that mostly holds
        // still a few lucky days make any other candidate look better.
        least(
            scored
                .iter()
                .filter(|s| s.1 < default.1 && clearly_lower(&s.2, &default.2, kk * self.switch_block, self.switch_z)),
        )
        .map_or(default.0, |s| s.0)
    }

    /// The unshifted forecast of `candidate` for the step `k` (1-based) after the last absorbed point.
    fn raw(&self, candidate: Candidate, k: usize) -> f64 {
        let level = self.level + self.season_at(self.n + k - 1);
        // The latest observed point in the same phase of the season as the target step.
        let naive = self.naive_period.map(|p| {
            let back = 1 + (p - k % p) % p;
            self.history.len().checked_sub(back).map_or(self.last, |i| self.history[i])
        });
        match (candidate, naive) {
            (Candidate::Level, _) => level,
            (Candidate::LastValue, _) | (Candidate::SeasonalNaive, None) => self.last,
            (Candidate::SeasonalNaive, Some(v)) => v,
            (Candidate::Median, None) => (level + self.last) / 2.0,
            (Candidate::Median, Some(v)) => median3(level, self.last, v),
        }
    }

    /// Forecasts `horizon` steps with a central interval per level in `levels` (each in (0, 1)), from the
    /// candidate [`Fitted::chosen`] picks for this horizon: its point forecast (for the level and median
    /// candidates shifted by the median of their recent k-step errors), its interval bounds the (finite-sample
    /// corrected) empirical quantiles of its recent k-step errors.
    /// Non-negative training data gives non-negative forecasts and bounds.
    pub fn forecast(&self, horizon: usize, levels: &[f64]) -> Result<MultiForecast, Error> {
        if horizon == 0 {
            return Err(Error::InvalidArgument { name: "horizon", reason: "must be at least 1".into() });
        }
        if let Some(l) = levels.iter().find(|l| !(**l > 0.0 && **l < 1.0)) {
            return Err(Error::InvalidArgument { name: "levels", reason: format!("must be in (0, 1), got {l}") });
        }
        let candidate = self.chosen(horizon);
        let per_step = &self.errors[candidate.index()];
        // The level's errors (and so the median's) are in-sample for the profile; the naive ones are not.
        let inflation = if candidate.shifted() { self.inflation } else { 1.0 };
        let mut point = Vec::with_capacity(horizon);
        let mut intervals: Vec<Interval> = levels
            .iter()
            .map(|&level| Interval { level, lower: Vec::with_capacity(horizon), upper: Vec::with_capacity(horizon) })
            .collect();
        let mut sorted = Vec::new();
        // Adaptive interval levels of the last calibrated step they were computed for (steps beyond max_h share).
        let (mut chrono, mut adapted, mut adapted_for) = (Vec::new(), Vec::new(), 0usize);
        for k in 1..=horizon {
            let center = self.raw(candidate, k);
            // Errors of the largest calibrated step not beyond k, widened like a random walk past max_h.
            let kk = k.min(self.max_h);
            let widen = ((k as f64) / (kk as f64) * inflation).sqrt();
            sorted.clear();
            if let Some(errors) = per_step.get(kk - 1) {
                sorted.extend(errors.iter().copied());
            }
            let empirical = sorted.len() >= MIN_ERRORS;
            if empirical {
                sorted.sort_unstable_by(f64::total_cmp);
            }
            let shift = if empirical && candidate.shifted() { quantile(&sorted, 0.5) } else { 0.0 };
            point.push(center + shift);
            if empirical
                && sorted.len() > self.interval_window
                && let Some(errors) = per_step.get(kk - 1)
            {
                // The bounds from the most recent errors only.
                sorted.clear();
                sorted.extend(errors.iter().skip(errors.len() - self.interval_window).copied());
                sorted.sort_unstable_by(f64::total_cmp);
            }
            if empirical
                && self.aci_gamma > 0.0
                && adapted_for != kk
                && let Some(errors) = per_step.get(kk - 1)
            {
                chrono.clear();
                chrono.extend(errors.iter().skip(errors.len().saturating_sub(self.interval_window)).copied());
                adapted.clear();
                adapted.extend(intervals.iter().map(|iv| adaptive_tails(&chrono, iv.level, self.aci_gamma)));
                adapted_for = kk;
            }
            for (i, iv) in intervals.iter_mut().enumerate() {
                let (lo, hi) = if empirical {
                    // Finite-sample (conformal) correction of the quantile levels. With a point mass at zero that
                    // holds the lower tail, the interval is [0, upper] and the upper bound is the `level` quantile.
                    let m = sorted.len() as f64;
                    let central = (1.0 + iv.level) / 2.0;
                    let target = if self.zero_mass() >= 1.0 - central { iv.level } else { central };
                    // Adaptive conformal offsets of each tail's quantile level (zero when off).
                    let (d_lo, d_hi) =
                        if adapted_for == kk { adapted.get(i).copied().unwrap_or_default() } else { (0.0, 0.0) };
                    let q_hi = ((target + d_hi) * (m + 1.0) / m).clamp(0.5, 1.0);
                    let q_lo = ((target + d_lo) * (m + 1.0) / m).clamp(0.5, 1.0);
                    let lo = quantile(&sorted, 1.0 - q_lo);
                    let hi = quantile(&sorted, q_hi);
                    (shift + (lo - shift) * widen, shift + (hi - shift) * widen)
                } else {
                    let half = normal_quantile(0.5 + iv.level / 2.0) * self.sigma * (k as f64).sqrt();
                    (-half, half)
                };
                iv.lower.push(center + lo);
                iv.upper.push(center + hi);
            }
        }
        if self.non_negative {
            // A point mass at zero (idle periods): a lower quantile inside it is zero.
            for iv in &mut intervals {
                if self.zero_mass() >= (1.0 - iv.level) / 2.0 {
                    iv.lower.iter_mut().for_each(|v| *v = 0.0);
                }
            }
            for v in
                point.iter_mut().chain(intervals.iter_mut().flat_map(|iv| iv.lower.iter_mut().chain(&mut iv.upper)))
            {
                *v = v.max(0.0);
            }
        }
        if point.iter().chain(intervals.iter().flat_map(|iv| iv.lower.iter().chain(&iv.upper))).any(|v| !v.is_finite())
        {
            return Err(Error::Model("non-finite forecast (values too large?)".into()));
        }
        let (model, period) = match candidate {
            Candidate::Level => (self.kind, self.period()),
            Candidate::SeasonalNaive => (ModelKind::SeasonalNaive, self.naive_period),
            Candidate::LastValue => (ModelKind::LastValue, None),
            Candidate::Median => (ModelKind::Median, self.naive_period.or(self.period())),
        };
        Ok(MultiForecast { point, intervals, model, period, candidate })
    }

    /// The `q` quantile (in (0, 1)) of each of the next `horizon` steps, from the same calibrated errors as
    /// [`Fitted::forecast`]: for q > 0.5 the upper bound of the central interval at level 2q - 1, for q < 0.5 the
    /// lower bound at level 1 - 2q, the point forecast (conditional median) at 0.5.
    pub fn quantile(&self, horizon: usize, q: f64) -> Result<Vec<f64>, Error> {
        if !(q > 0.0 && q < 1.0) {
            return Err(Error::InvalidArgument { name: "q", reason: format!("must be in (0, 1), got {q}") });
        }
        let level = (2.0 * q - 1.0).abs();
        if level <= 0.0 {
            return Ok(self.forecast(horizon, &[])?.point);
        }
        let f = self.forecast(horizon, &[level])?;
        let Some(iv) = f.intervals.into_iter().next() else {
            return Err(Error::Model("no interval returned".into()));
        };
        Ok(if q > 0.5 { iv.upper } else { iv.lower })
    }
}

/// Adaptive conformal inference (Gibbs and Candès, 2021), one level per tail, replayed over the more recent half
/// of `errors` (oldest first): each error is checked against the bounds that the errors before it give at the
/// current quantile levels (split-conformal), and a tail's level moves outwards by `gamma` x (1 - miss share)
/// after a miss beyond it and inwards by `gamma` x miss share otherwise, where the miss share of a central
/// `nominal` interval is (1 - nominal) / 2 per tail; so each tail settles where its misses run at that share,
/// whatever the other does (a forecast biased one way gets one bound moved, not both). Returns how far the lower
/// and the upper quantile levels moved outwards.
fn adaptive_tails(errors: &[f64], nominal: f64, gamma: f64) -> (f64, f64) {
    let start = (errors.len() / 2).max(MIN_ERRORS);
    if errors.len() <= start {
        return (0.0, 0.0);
    }
    let share = (1.0 - nominal) / 2.0;
    let mut sorted = errors[..start].to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    // Offsets of the upper level above (1 + nominal) / 2 and of the lower level below (1 - nominal) / 2.
    let (mut d_lo, mut d_hi) = (0.0_f64, 0.0_f64);
    for &e in &errors[start..] {
        let m = sorted.len() as f64;
        let central = 1.0 - share;
        let q_hi = ((central + d_hi) * (m + 1.0) / m).clamp(0.5, 1.0);
        let q_lo = ((central + d_lo) * (m + 1.0) / m).clamp(0.5, 1.0);
        let miss_lo = e < quantile(&sorted, 1.0 - q_lo);
        let miss_hi = e > quantile(&sorted, q_hi);
        d_lo = (d_lo + gamma * (f64::from(u8::from(miss_lo)) - share)).clamp(-0.5 + share, share);
        d_hi = (d_hi + gamma * (f64::from(u8::from(miss_hi)) - share)).clamp(-0.5 + share, share);
        let at = sorted.partition_point(|v| *v < e);
        sorted.insert(at, e);
    }
    (d_lo, d_hi)
}

/// The candidate with the least mean loss, the earlier on ties.
fn least<'a>(scored: impl Iterator<Item = &'a (Candidate, f64, Vec<f64>)>) -> Option<&'a (Candidate, f64, Vec<f64>)> {
    scored.fold(None, |b, s| if b.is_none_or(|b: &(Candidate, f64, Vec<f64>)| s.1 < b.1) { Some(s) } else { b })
}

/// Whether `a` is lower than `b` (paired per-point losses, newest first) by more than `z` standard errors of the
/// mean difference, estimated from the means of consecutive blocks of `block` points (losses a horizon apart
/// share forecasts, so single points are not independent). Fewer than two blocks: never.
fn clearly_lower(a: &[f64], b: &[f64], block: usize, z: f64) -> bool {
    let block = block.max(1);
    let n = a.len().min(b.len());
    let blocks: Vec<f64> =
        (0..n / block).map(|i| (i * block..(i + 1) * block).map(|j| a[j] - b[j]).sum::<f64>() / block as f64).collect();
    if blocks.len() < 2 {
        return false;
    }
    let nb = blocks.len() as f64;
    let mean = blocks.iter().sum::<f64>() / nb;
    let var = blocks.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (nb - 1.0);
    let se = (var / nb).sqrt();
    if se > 0.0 { mean < -z * se } else { mean < 0.0 }
}

fn median3(a: f64, b: f64, c: f64) -> f64 {
    a.max(b).min(a.min(b).max(c))
}

fn is_constant(y: &[f64]) -> bool {
    y.iter().all(|v| (v - y[0]).abs() <= f64::EPSILON * y[0].abs().max(1.0))
}

/// Linear-interpolated quantile of sorted values (non-empty).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(sorted.len() - 1);
    let frac = pos - i as f64;
    sorted[i] + (sorted[j] - sorted[i]) * frac
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(f64::total_cmp);
    quantile(values, 0.5)
}

/// Robust standard deviation of one-step changes / sqrt(2) (MAD-based; mean absolute change if the MAD is 0).
fn robust_sigma(d: &[f64]) -> f64 {
    let mut diffs: Vec<f64> = d.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    if diffs.is_empty() {
        return 0.0;
    }
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let med = median(&mut diffs);
    let s = if med > 0.0 { med } else { mean };
    s / (0.674_489_75 * std::f64::consts::SQRT_2)
}

fn initial_level(d: &[f64]) -> f64 {
    let mut head: Vec<f64> = d.iter().take(10).copied().collect();
    median(&mut head)
}

/// Mean absolute error of the level forecasts 1..=k steps ahead over `d`.
fn tune_score(d: &[f64], alpha: f64, clip: f64, k: usize) -> f64 {
    let mut level = initial_level(d);
    let start = 10.min(d.len() / 4);
    let (mut sum, mut count) = (0.0, 0usize);
    for t in 0..d.len() {
        // Every other origin is scored: half the cost, the same choice in practice.
        if t >= start && (d.len() - t) % 2 == 1 {
            for v in &d[t..(t + k).min(d.len())] {
                sum += (v - level).abs();
                count += 1;
            }
        }
        let e = d[t] - level;
        level += alpha * e.clamp(-clip, clip);
    }
    if count == 0 { f64::INFINITY } else { sum / count as f64 }
}

/// Averages `y` into buckets of `b` steps aligned to the end of the series; returns the buckets and the number of
/// leading points dropped.
fn rollup(y: &[f64], b: usize) -> (Vec<f64>, usize) {
    let nb = y.len() / b;
    let offset = y.len() - nb * b;
    ((0..nb).map(|j| y[offset + j * b..offset + (j + 1) * b].iter().sum::<f64>() / b as f64).collect(), offset)
}

/// Points the season detection runs on at most (longer series are averaged into buckets first).
const DETECT_POINTS: usize = 2048;

/// A detected season: `coarse` steps of buckets of `bucket` steps (the rollup it was detected on).
#[derive(Debug, Clone, Copy)]
struct Season {
    coarse: usize,
    bucket: usize,
}

impl Season {
    fn period(self) -> usize {
        self.coarse * self.bucket
    }
}

/// The season of `y`, if one is detected: on a rollup of at most [`DETECT_POINTS`] buckets (periodogram, refined
/// to the local autocorrelation maximum).
fn detect_season(y: &[f64], cfg: &ModelConfig) -> Option<Season> {
    let n = y.len();
    let b = n.div_ceil(DETECT_POINTS).max(1);
    let (coarse, _) = rollup(y, b);
    let min_period = (cfg.min_period as usize).div_ceil(b).max(2) as u32;
    let max_period = if cfg.max_period == 0 { 0 } else { (cfg.max_period as usize / b).max(2) as u32 };
    if coarse.len() < 8 || is_constant(&coarse) {
        return None;
    }
    let detected = detect_period(&coarse, min_period, max_period)?;
    // The periodogram's frequency grid is coarse for long periods: move to the autocorrelation peak nearby.
    let spread = (detected / 33).max(1);
    let pc = (detected.saturating_sub(spread).max(2)..=detected + spread)
        .filter(|&p| coarse.len() >= 2 * p)
        .map(|p| (p, autocorrelation(&coarse, p)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(p, _)| p)?;
    Some(Season { coarse: pc, bucket: b })
}

/// The seasonal profile of `y` for `season` (length = period, indexed by absolute step modulo period): the MSTL
/// decomposition at full resolution up to `max_fit_points` points, else on the season's rollup with the profile
/// interpolated back to the series' resolution.
fn season_profile(y: &[f64], season: Season, cfg: &ModelConfig) -> Option<Vec<f64>> {
    let n = y.len();
    let (pc, b) = (season.coarse, season.bucket);
    let p = season.period();
    if n <= cfg.max_fit_points.max(16) {
        return stl_profile(y, p);
    }
    let (coarse, offset) = rollup(y, b);
    let coarse_profile = stl_profile(&coarse, pc)?;
    // Bucket j covers steps offset + j*b .. offset + (j+1)*b and its centre is offset + j*b + (b-1)/2; coarse
    // phase of bucket j is j % pc. Interpolate linearly (circularly) between bucket centres.
    let mut profile = vec![0.0; p];
    for t in offset..offset + p {
        let pos = ((t - offset) as f64 - (b as f64 - 1.0) / 2.0) / b as f64;
        let j0 = pos.floor();
        let frac = pos - j0;
        let at = |j: f64| coarse_profile[(j as i64).rem_euclid(pc as i64) as usize];
        profile[t % p] = at(j0) * (1.0 - frac) + at(j0 + 1.0) * frac;
    }
    Some(profile)
}

/// MSTL (one period) seasonal component of `y`, last full cycle, indexed by step modulo `period`.
fn stl_profile(y: &[f64], period: usize) -> Option<Vec<f64>> {
    let n = y.len();
    if period < 2 || n < 2 * period {
        return None;
    }
    let y32: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    let fit = stlrs::MstlParams::new().fit(&y32, &[period]).ok()?;
    let seasonal = fit.seasonal().first()?;
    if seasonal.len() != n || seasonal.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut profile = vec![0.0; period];
    for t in n - period..n {
        profile[t % period] = f64::from(seasonal[t]);
    }
    Some(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy_daily(len: usize, period: usize) -> Vec<f64> {
        let mut s: u64 = 0x2545_F491_4F6C_DD1D;
        (0..len)
            .map(|t| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let noise = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                50.0 + 20.0 * ((t % period) as f64 / period as f64 * std::f64::consts::TAU).sin() + 4.0 * noise
            })
            .collect()
    }

    #[test]
    fn seasonal_series_uses_the_season_and_covers() {
        let y = noisy_daily(24 * 10, 24);
        let m = Fitted::fit(&y[..24 * 9], &ModelConfig::default()).expect("fit");
        assert_eq!(m.kind(), ModelKind::MstlLevel);
        assert_eq!(m.period(), Some(24));
        let f = m.forecast(24, &[0.8, 0.95]).expect("forecast");
        let mut inside = 0;
        for k in 0..24 {
            assert!((f.point[k] - y[24 * 9 + k]).abs() < 6.0, "step {k}: {} vs {}", f.point[k], y[24 * 9 + k]);
            assert!(f.intervals[1].lower[k] <= f.intervals[0].lower[k]);
            assert!(f.intervals[0].upper[k] <= f.intervals[1].upper[k]);
            let a = y[24 * 9 + k];
            inside += usize::from(f.intervals[1].lower[k] <= a && a <= f.intervals[1].upper[k]);
        }
        assert!(inside >= 20, "{inside}");
    }

    #[test]
    fn update_matches_its_own_bookkeeping() {
        let y = noisy_daily(300, 24);
        let mut m = Fitted::fit(&y[..250], &ModelConfig::default()).expect("fit");
        let before = m.clone();
        m.update(&y[250..]).expect("update");
        assert_eq!(m.len(), 300);
        assert_eq!(m.period(), before.period());
        assert_eq!(m.level_params(), before.level_params());
        let f = m.forecast(5, &[0.9]).expect("forecast");
        assert!(f.point.iter().all(|v| (v - 50.0).abs() < 30.0));
        // Non-finite points are rejected and leave the model unchanged.
        let snapshot = m.clone();
        assert!(m.update(&[1.0, f64::NAN]).is_err());
        assert_eq!(m, snapshot);
    }

    #[test]
    fn idle_periods_give_a_zero_lower_bound() {
        // Irregular idle steps (about a third), busy steps around 10..20.
        let y: Vec<f64> =
            noisy_daily(200, 24).iter().map(|v| if (v * 1000.0) % 3.0 < 1.0 { 0.0 } else { v / 4.0 }).collect();
        let f = Fitted::fit(&y, &ModelConfig::default()).and_then(|m| m.forecast(3, &[0.8])).expect("forecast");
        assert!(f.intervals[0].lower.iter().all(|&v| v == 0.0));
        assert!(f.intervals[0].upper.iter().all(|&v| v >= 5.0), "{:?}", f.intervals[0].upper);
    }

    #[test]
    fn horizons_beyond_the_calibrated_ones_widen() {
        let y = noisy_daily(200, 24);
        let cfg = ModelConfig { max_horizon: 4, ..ModelConfig::default() };
        let f = Fitted::fit(&y, &cfg).and_then(|m| m.forecast(16, &[0.8])).expect("forecast");
        let width = |k: usize| f.intervals[0].upper[k] - f.intervals[0].lower[k];
        assert!(width(15) > width(3));
    }

    /// Replica-count-like steps: holds a value for a while, then jumps.
    fn steps(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut v = 6.0_f64;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                if u < 0.06 {
                    v = (v + if u < 0.03 { 1.0 } else { -1.0 } * (1.0 + (u * 1000.0) % 3.0).floor()).max(1.0);
                }
                v
            })
            .collect()
    }

    #[test]
    fn a_step_series_is_forecast_by_its_last_value() {
        let y = steps(800, 0x9E37_79B9_7F4A_7C15);
        let m = Fitted::fit(&y, &ModelConfig::default()).expect("fit");
        let f = m.forecast(6, &[0.8]).expect("forecast");
        assert!(f.point.iter().all(|&v| (v - y[y.len() - 1]).abs() < 1e-9), "{:?} vs {}", f.point, y[y.len() - 1]);
        assert!(f.intervals[0].lower[0] <= f.point[0] && f.point[0] <= f.intervals[0].upper[0]);
    }

    #[test]
    fn the_choice_follows_the_data_through_updates() {
        let y = noisy_daily(24 * 20, 24);
        let mut m = Fitted::fit(&y, &ModelConfig::default()).expect("fit");
        assert_eq!(m.candidates(), &Candidate::ALL);
        let before = m.chosen(6);
        assert!(matches!(before, Candidate::Level | Candidate::SeasonalNaive | Candidate::Median), "{before:?}");
        // The series turns into steps: the seasonal profile no longer applies and the last value takes over.
        m.update(&steps(600, 42).iter().map(|v| v * 10.0).collect::<Vec<_>>()).expect("update");
        assert_eq!(m.chosen(6), Candidate::LastValue);
        let q = m.quantile(6, 0.9).expect("quantile");
        let f = m.forecast(6, &[0.8]).expect("forecast");
        assert_eq!(q, f.intervals[0].upper);
        assert_eq!(m.quantile(6, 0.5).expect("median"), f.point);
        assert!(m.quantile(6, 1.0).is_err());
    }

    #[test]
    fn a_candidate_replaces_the_last_value_only_when_clearly_better() {
        // Paired losses: a lower by 0.1 everywhere (no noise) is clearly lower; lower on average by 0.02 with a
        // spread of 1 over 50 blocks is not, at 2 standard errors.
        let b: Vec<f64> = (0..300).map(|i| 1.0 + (i % 7) as f64).collect();
        let a: Vec<f64> = b.iter().map(|v| v - 0.1).collect();
        assert!(clearly_lower(&a, &b, 6, 2.0));
        let noisy: Vec<f64> =
            b.iter().enumerate().map(|(i, v)| v - 0.02 + if i % 12 < 6 { 1.0 } else { -1.0 }).collect();
        assert!(!clearly_lower(&noisy, &b, 6, 2.0));
        assert!(!clearly_lower(&a[..6], &b[..6], 6, 2.0), "one block is no evidence");
        // On a step series the level model does not take over from the last value on noise.
        let y = steps(800, 7);
        let m = Fitted::fit(&y, &ModelConfig::default()).expect("fit");
        assert_eq!(m.chosen(6), Candidate::LastValue);
    }

    #[test]
    fn adaptive_tails_follow_a_change_in_spread_and_bias() {
        let noise = |i: usize| ((i * 7919) % 101) as f64 / 100.0 - 0.5;
        // The same spread throughout: the levels hardly move.
        let steady: Vec<f64> = (0..300).map(noise).collect();
        let (lo, hi) = adaptive_tails(&steady, 0.8, 0.01);
        assert!(lo.abs() < 0.05 && hi.abs() < 0.05, "{lo} {hi}");
        // Twice the spread in the recent half: both tails move out.
        let wider: Vec<f64> = (0..300).map(|i| noise(i) * if i >= 150 { 2.0 } else { 1.0 }).collect();
        let (lo, hi) = adaptive_tails(&wider, 0.8, 0.01);
        assert!(lo > 0.03 && hi > 0.03, "{lo} {hi}");
        // Biased upwards in the recent half: the upper tail moves out, the lower one in.
        let biased: Vec<f64> = (0..300).map(|i| noise(i) + if i >= 150 { 0.3 } else { 0.0 }).collect();
        let (lo, hi) = adaptive_tails(&biased, 0.8, 0.01);
        assert!(hi > 0.05 && lo < 0.0, "{lo} {hi}");
        // Too few errors to replay: no adaptation.
        assert_eq!(adaptive_tails(&steady[..8], 0.8, 0.01), (0.0, 0.0));
    }

    #[test]
    fn restricting_to_one_candidate_uses_it() {
        let y = noisy_daily(24 * 12, 24);
        let mut m = Fitted::fit(&y, &ModelConfig::default()).expect("fit");
        let what_if =
            ModelConfig { selection_window: 100, fitted_penalty: 0.0, switch_z: 0.0, ..ModelConfig::default() };
        m.restrict(&[Candidate::SeasonalNaive], &what_if);
        let f = m.forecast(3, &[0.8]).expect("forecast");
        assert_eq!((f.candidate, f.model, f.period), (Candidate::SeasonalNaive, ModelKind::SeasonalNaive, Some(24)));
        m.restrict(&[], &what_if);
        assert_eq!(m.chosen(3), Candidate::Level);
        let cfg = ModelConfig { candidates: vec![Candidate::LastValue], ..ModelConfig::default() };
        let only_last = Fitted::fit(&y, &cfg).expect("fit");
        assert_eq!(only_last.candidates(), &[Candidate::LastValue]);
        assert_eq!(only_last.chosen(3), Candidate::LastValue);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let cfg = ModelConfig::default();
        assert!(Fitted::fit(&[], &cfg).is_err());
        assert!(Fitted::fit(&[1.0, f64::INFINITY], &cfg).is_err());
        let zero_cfg = ModelConfig {
            min_points: 0,
            max_fit_points: 0,
            tune_window: 0,
            tune_horizon: 0,
            residual_window: 0,
            max_horizon: 0,
            ..ModelConfig::default()
        };
        let inputs: Vec<Vec<f64>> = vec![
            vec![7.0],
            vec![1.0, 2.0],
            vec![0.0; 100],
            (0..50).map(|i| -(i as f64)).collect(),
            (0..300).map(|i| if i % 2 == 0 { 1e300 } else { -1e300 }).collect(),
            (0..300).map(|i| f64::MAX / (1.0 + i as f64)).collect(),
            (0..5000).map(|i| ((i * 7919) % 97) as f64).collect(),
        ];
        for y in &inputs {
            for c in [&cfg, &zero_cfg] {
                let Ok(mut m) = Fitted::fit(y, c) else { continue };
                let _ = m.forecast(3, &[0.5, 0.99]);
                let _ = m.update(&[1.0, 2.0]);
                assert!(m.forecast(0, &[0.8]).is_err());
                assert!(m.forecast(2, &[1.0]).is_err());
            }
        }
    }
}
