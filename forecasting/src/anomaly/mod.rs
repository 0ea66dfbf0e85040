//! Streaming, causal, explainable anomaly detector for one time series.
//!
//! [`Detector::update`] consumes one `(timestamp, value)` at a time and returns a [`Score`] in `[0, 1]`
//! computed from the rows seen so far only (causal). The state is a bounded window of recent values
//! (the last two days in arrival order when that fits, at most 1024), a small bitset and a handful
//! of scalars (about 6 KB at 5-minute sampling, at most about 7.6 KB); one update costs a small
//! bounded amount of work (binary searches and a memmove in a 512-value sorted window).
//!
//! How a score is formed:
//! 1. **Raw surprise signals**, each in `[0, 1]` per row:
//!    - *novelty*: values are quantised on a grid fixed from the range seen at warm-up (re-gridded
//!      only when the range grows four-fold); the raw score is 1 when the transition (previous bin,
//!      current bin) has never been seen before (a 8192-bit hashed set), else 0. This is a cheap
//!      stand-in for the sequence memory of HTM / contextual detectors (CAD OSE): a new regime
//!      produces a burst of new transitions once, and is learned afterwards;
//!    - *level*: two-sided extremeness `|2 rank - 1|` of the value within the recent window;
//!    - *seasonal* (when the sampling interval divides a day): `|x - x_ref|` in units of its running
//!      mean absolute size (`/ seasonal_scale`, capped at 1), where `x_ref` is the closer of the
//!      values one and two days earlier (so a one-off event yesterday does not echo today), compared
//!      on a square-root scale while the series has been non-negative (variance-stabilising for
//!      counts and other heavy-tailed positive metrics);
//!    - *changepoint* ([`Config::bocpd`], module `bocpd`): `1 -` the predictive tail probability of the
//!      value under Bayesian online changepoint detection (Gaussian segments, constant hazard);
//!    - *neighbours* ([`Config::knn`], module `knn`): `1 -` the conformal p-value of the shape of the
//!      last few values among recent shapes (k nearest neighbours).
//!
//!    Each signal's module or paragraph states the assumption under which it is calibrated.
//! 2. **Anomaly likelihood** (Numenta, Ahmad et al. 2017), per signal: the mean of the last
//!    [`Config::short`] raw values is compared with the long-run mean and variance of that mean
//!    (exponentially weighted over [`Config::lik_window`] rows, floored), and the Gaussian tail
//!    probability `q` is turned into the log score `ln(q + 1e-10) / ln(1e-10)` (0.5 = `q` of 1e-5).
//!    A tail that stays in the red zone (`q < 1e-5`) on consecutive rows is reported as `q = 1e-3`
//!    from its second row on, so one change raises one alert (Numenta's likelihood filter).
//! 3. **Out of range**: a value beyond the range seen so far by more than [`Config::range_tol`] of
//!    that range scores 1 (as in NAB's HTM detector).
//! 4. The signals are combined by a rule fixed in advance ([`Combine`]): the maximum (the smallest tail
//!    probability decides) or the harmonic mean of the tail probabilities; out of range overrides both.
//!    The score names the strongest signal.
//! 5. **Refractory period**: after a score `s`, for [`Config::refractory`] rows a new score is only
//!    reported when it exceeds `s * (1 - age / refractory)^refractory_power` (a bar that decays to 0
//!    over that period, quickly at first with the default power 2, so a second distinct event soon
//!    after the first can still be reported); smaller ones are reported as 0 (flagged `suppressed`).
//!
//! Non-finite input values are ignored (score 0, [`Component::InvalidInput`], state unchanged).

mod bocpd;
mod knn;
mod likelihood;
pub mod selection;
mod window;

use bocpd::Bocpd;
use knn::ConformalKnn;
use likelihood::{Likelihood, SHORT_MAX};
use serde::{Deserialize, Serialize};
use std::fmt;
use window::SortedWindow;

/// Which mechanism produced a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Component {
    /// Not enough history yet (fewer than [`Config::min_history`] values).
    WarmUp,
    /// No signal is unusual.
    Normal,
    /// The value lies outside the range seen so far (plus a tolerance).
    OutOfRange,
    /// Recent values sit unusually often at the extremes of the recent window.
    Level,
    /// Recent values differ unusually from the same time one (or two) days (`period` rows) earlier.
    Seasonal { period: usize },
    /// Recent values made unusually many never-seen transitions between value bins.
    Novelty,
    /// Recent values were unusually improbable under the Bayesian online changepoint model's predictive.
    Changepoint,
    /// Recent shapes of the series were unusually far from their nearest earlier shapes (conformal k-NN).
    Neighbours,
    /// The input was NaN or infinite and was ignored.
    InvalidInput,
}

/// One detector output, with the evidence behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Anomaly score in `[0, 1]` after the refractory period (what to threshold).
    pub score: f64,
    /// Score before the refractory period.
    pub raw: f64,
    /// The strongest evidence.
    pub component: Component,
    /// The observed value.
    pub observed: f64,
    /// What was expected (range edge, window median, value one day earlier; NaN for novelty).
    pub expected: f64,
    /// Probability of evidence this strong under the series' own history (after the red filter).
    pub tail: f64,
    /// True when a positive raw score was silenced by the refractory period.
    pub suppressed: bool,
}

impl Score {
    fn quiet(component: Component) -> Self {
        Self { score: 0.0, raw: 0.0, component, observed: f64::NAN, expected: f64::NAN, tail: 1.0, suppressed: false }
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.component {
            Component::WarmUp => return write!(f, "warming up"),
            Component::InvalidInput => return write!(f, "non-finite input ignored"),
            Component::Normal => return write!(f, "normal (score {:.3})", self.score),
            Component::OutOfRange => {
                format!(
                    "out of range: value {:.4} beyond the range edge {:.4} seen so far",
                    self.observed, self.expected
                )
            }
            Component::Level => format!(
                "level: value {:.4} and its predecessors at the extremes of the window (median {:.4})",
                self.observed, self.expected
            ),
            Component::Seasonal { period } => format!(
                "seasonal: value {:.4} vs {:.4} at the same time on a recent day (period {period} rows), recently unusually different",
                self.observed, self.expected
            ),
            Component::Novelty => {
                format!("novelty: value {:.4} continues a burst of never-seen transitions", self.observed)
            }
            Component::Changepoint => format!(
                "changepoint: value {:.4} and its predecessors improbable under the segment model (prior centre {:.4})",
                self.observed, self.expected
            ),
            Component::Neighbours => {
                format!("neighbours: the shape ending at value {:.4} is far from every recent shape", self.observed)
            }
        };
        write!(
            f,
            "{what} (tail probability {:.1e}) -> score {:.3}{}",
            self.tail,
            self.score,
            if self.suppressed { " (suppressed: refractory)" } else { "" }
        )
    }
}

/// How the signals' tail probabilities become one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Combine {
    /// The smallest tail probability (the strongest single signal) decides.
    Max,
    /// The harmonic mean of the signals' tail probabilities (Wilson 2019): valid under arbitrary
    /// dependence between the signals up to a small factor, dominated by the smallest tails, and it
    /// needs no weights. One strong signal costs at most a factor of the number of signals.
    HarmonicMean,
}

/// Detector settings. The defaults are the ones evaluated on NAB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Number of recent values kept (rank window and one-day lag; bounds the state size).
    pub window: usize,
    /// Values needed before scoring starts.
    pub min_history: usize,
    /// Raw values of each signal ignored before its long-run statistics start (its own warm-up).
    pub lik_skip: u32,
    /// Raw values folded into the long-run statistics before the likelihood is trusted.
    pub lik_warmup: u32,
    /// Effective length (rows) of the long-run mean and variance of the short-term mean.
    pub lik_window: f64,
    /// Rows in the short-term mean of each raw signal (at most 16).
    pub short: usize,
    /// Floor of the long-run mean (Numenta uses 0.03).
    pub mean_floor: f64,
    /// Floor of the long-run variance (Numenta uses 0.0003).
    pub var_floor: f64,
    /// Out-of-range tolerance as a fraction of the range seen so far (negative disables).
    pub range_tol: f64,
    /// Rows during which a new alert must beat the previous one (decaying to 0; 0 disables).
    pub refractory: usize,
    /// Shape of the refractory bar `peak * (1 - age / refractory)^refractory_power` (1 = linear).
    pub refractory_power: f64,
    /// Report consecutive red-zone likelihoods once (Numenta's filter).
    pub red_filter: bool,
    /// Use the level (rank extremeness) signal.
    pub level: bool,
    /// Use the one-day seasonal signal when the sampling interval divides a day.
    pub seasonal: bool,
    /// Seasonal difference scale, in running mean absolute differences, that saturates its raw score.
    pub seasonal_scale: f64,
    /// Days compared by the seasonal signal (1 or 2): the difference is taken to the closer of the
    /// values at the same time of day on each of those days, so a one-off event does not echo a day later.
    pub seasonal_days: usize,
    /// Compare seasonal values on a square-root scale while the series has been non-negative
    /// (variance-stabilising for counts and other heavy-tailed positive metrics).
    pub seasonal_sqrt: bool,
    /// Use the transition novelty signal.
    pub novelty: bool,
    /// Bins across the range seen at warm-up for the novelty grid.
    pub bins: usize,
    /// Use the Bayesian online changepoint predictive signal.
    pub bocpd: bool,
    /// Expected segment length in rows of the changepoint model (its constant hazard is the inverse).
    pub hazard_rows: f64,
    /// Use the conformal k-nearest-neighbour shape signal.
    pub knn: bool,
    /// How the signals' tail probabilities are combined.
    pub combine: Combine,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window: 512,
            min_history: 64,
            lik_skip: 100,
            lik_warmup: 300,
            lik_window: 8640.0,
            short: 10,
            mean_floor: 0.05,
            var_floor: 0.0003,
            range_tol: 0.05,
            refractory: 1500,
            refractory_power: 2.0,
            red_filter: true,
            level: true,
            seasonal: true,
            seasonal_scale: 4.0,
            seasonal_days: 2,
            seasonal_sqrt: true,
            novelty: true,
            bins: 16,
            bocpd: false,
            hazard_rows: 250.0,
            knn: false,
            combine: Combine::HarmonicMean,
        }
    }
}

const NOVELTY_WORDS: usize = 128;

/// Positive sampling intervals at the start of a series whose median sets the seasonal period.
const PERIOD_INTERVALS: usize = 15;

/// Surprisal `-ln p` of a per-row p-value on the same log scale as the score (`ln(p + 1e-10) / ln(1e-10)`,
/// in `[0, 1]`). Under a calibrated model `-ln p` is exponential with mean 1, so the short mean the
/// likelihood watches is a log-loss, sensitive to a few very improbable rows, where `1 - p` would
/// saturate at 1 and stay indistinguishable from ordinary variation.
fn surprisal(p: f64) -> f64 {
    let s = (p.clamp(0.0, 1.0) + 1e-10).ln() / 1e-10f64.ln();
    if s.is_finite() { s.clamp(0.0, 1.0) } else { 0.0 }
}

/// Streaming anomaly detector for one series. See the module documentation.
#[derive(Debug, Clone)]
pub struct Detector {
    cfg: Config,
    win: SortedWindow,
    seen: u64,
    last_ts: Option<i64>,
    intervals: [u32; PERIOD_INTERVALS],
    intervals_seen: u8,
    period: usize,
    min: f64,
    max: f64,
    lik: [Likelihood; 5],
    bocpd: Option<Box<Bocpd>>,
    knn: Option<Box<ConformalKnn>>,
    season_mad: f64,
    season_n: f64,
    novel: Box<[u64; NOVELTY_WORDS]>,
    prev_bin: i64,
    grid_w: f64,
    grid_range: f64,
    peak: f64,
    peak_age: usize,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl Detector {
    /// Creates a detector; nonsensical settings are clamped to usable ones.
    pub fn new(mut cfg: Config) -> Self {
        cfg.window = cfg.window.clamp(8, 1 << 16);
        cfg.min_history = cfg.min_history.clamp(4, cfg.window);
        cfg.short = cfg.short.clamp(1, SHORT_MAX);
        cfg.bins = cfg.bins.clamp(1, 1 << 16);
        if !cfg.lik_window.is_finite() || cfg.lik_window < 1.0 {
            cfg.lik_window = 8640.0;
        }
        for (v, d) in [(&mut cfg.mean_floor, 0.03), (&mut cfg.var_floor, 0.0003)] {
            if !v.is_finite() || *v < 0.0 {
                *v = d;
            }
        }
        if !cfg.range_tol.is_finite() {
            cfg.range_tol = -1.0;
        }
        if !cfg.refractory_power.is_finite() || cfg.refractory_power <= 0.0 {
            cfg.refractory_power = 2.0;
        }
        if !cfg.seasonal_scale.is_finite() || cfg.seasonal_scale <= 0.0 {
            cfg.seasonal_scale = 5.0;
        }
        if !cfg.hazard_rows.is_finite() || cfg.hazard_rows < 1.0 {
            cfg.hazard_rows = 250.0;
        }
        let (bocpd, knn) = (cfg.bocpd.then(Box::default), cfg.knn.then(Box::default));
        Self {
            win: SortedWindow::new(cfg.window),
            cfg,
            seen: 0,
            last_ts: None,
            intervals: [0; PERIOD_INTERVALS],
            intervals_seen: 0,
            period: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            lik: Default::default(),
            bocpd,
            knn,
            season_mad: 0.0,
            season_n: 0.0,
            novel: Box::new([0; NOVELTY_WORDS]),
            prev_bin: 0,
            grid_w: 0.0,
            grid_range: 0.0,
            peak: 0.0,
            peak_age: usize::MAX,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Approximate memory held by this detector (inline plus heap), in bytes.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + (self.win.ring_cap.max(self.win.ring.capacity()) + self.win.sorted.capacity())
                * std::mem::size_of::<f32>()
            + NOVELTY_WORDS * std::mem::size_of::<u64>()
            + self.bocpd.as_ref().map_or(0, |_| std::mem::size_of::<Bocpd>())
            + self.knn.as_ref().map_or(0, |_| std::mem::size_of::<ConformalKnn>())
    }

    /// Number of valid values consumed so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Daily period in rows inferred from the median of the first sampling intervals (0 = none).
    pub fn period(&self) -> usize {
        self.period
    }

    /// Consumes the next value of the series and scores it against the past.
    pub fn update(&mut self, timestamp_secs: i64, value: f64) -> Score {
        if !value.is_finite() {
            return Score::quiet(Component::InvalidInput);
        }
        self.learn_period(timestamp_secs);
        let hist = self.win.len();
        let mut out =
            if hist >= self.cfg.min_history { self.assess(value, hist) } else { Score::quiet(Component::WarmUp) };
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.win.push(value as f32);
        self.seen += 1;
        let (score, suppressed) = self.refractory(out.raw);
        out.score = score;
        out.suppressed = suppressed;
        out
    }

    /// Infers the sampling interval as the median of the first [`PERIOD_INTERVALS`] positive intervals
    /// (one late or duplicated row at the start must not halve or double the seasonal lag), and from it
    /// the daily period in rows; fixed afterwards (the lags it sizes are fixed once the ring wraps).
    fn learn_period(&mut self, ts: i64) {
        let Some(prev) = self.last_ts.replace(ts) else { return };
        let n = usize::from(self.intervals_seen);
        let dt = ts.saturating_sub(prev);
        if n >= PERIOD_INTERVALS || dt <= 0 {
            return;
        }
        self.intervals[n] = u32::try_from(dt).unwrap_or(u32::MAX);
        self.intervals_seen += 1;
        let mut sorted = self.intervals;
        let sorted = &mut sorted[..=n];
        sorted.sort_unstable();
        let dt = i64::from(sorted[n / 2]);
        self.period = 0;
        if 86_400 % dt == 0 {
            let p = (86_400 / dt) as usize;
            if p >= 4 && p < self.cfg.window {
                self.period = p;
                let days = self.cfg.seasonal_days.clamp(1, 2);
                self.win.keep_at_least(days * p + 1);
            }
        }
    }

    /// Scores `x` given `hist >= min_history` past values (before the refractory period).
    fn assess(&mut self, x: f64, hist: usize) -> Score {
        let cfg = &self.cfg;
        let mut best = Score::quiet(Component::Normal);
        // Every likelihood signal's (tail, component, expected) of this row, for the combination.
        let mut signals = [(1.0, Component::Normal, f64::NAN); 5];
        let mut n_signals = 0usize;
        let mut consider = |s: f64, tail: f64, component: Component, expected: f64| {
            if component != Component::OutOfRange && n_signals < signals.len() {
                signals[n_signals] = (tail, component, expected);
                n_signals += 1;
            }
            if s > best.raw {
                best = Score {
                    score: 0.0,
                    raw: s.clamp(0.0, 1.0),
                    component,
                    observed: x,
                    expected,
                    tail,
                    suppressed: false,
                };
            }
        };

        // Out of range.
        let range = self.max - self.min;
        if cfg.range_tol >= 0.0 && range > 0.0 {
            let tol = range * cfg.range_tol;
            if x > self.max + tol {
                consider(1.0, 0.0, Component::OutOfRange, self.max);
            } else if x < self.min - tol {
                consider(1.0, 0.0, Component::OutOfRange, self.min);
            }
        }

        // Level: rank extremeness within the window.
        if cfg.level {
            let raw = (2.0 * self.win.rank(x as f32) - 1.0).abs();
            let (s, tail) = self.lik[0].update(raw, cfg);
            consider(s, tail, Component::Level, self.win.quantile(0.5));
        }

        // Seasonal: difference from one day earlier.
        let p = self.period;
        if cfg.seasonal && p > 0 && hist >= p {
            // Compare at the stored (f32) precision so exact repeats give exactly 0.
            let xf = f64::from(x as f32);
            let mut then = self.win.ago(p - 1).unwrap_or(x);
            if cfg.seasonal_days >= 2
                && let Some(before) = self.win.ago(2 * p - 1)
                && (xf - before).abs() < (xf - then).abs()
            {
                then = before;
            }
            let (res, floor) = if cfg.seasonal_sqrt && self.min >= 0.0 && xf >= 0.0 {
                ((xf.sqrt() - then.max(0.0).sqrt()).abs(), 1e-4 * range.abs().sqrt() + 1e-9)
            } else {
                ((xf - then).abs(), 1e-4 * range.abs() + 1e-9)
            };
            let mad = self.season_mad.max(floor);
            let raw = (res / (cfg.seasonal_scale * mad)).min(1.0);
            self.season_n += 1.0;
            let a = (1.0 / self.season_n).max(0.01);
            if res.is_finite() {
                self.season_mad += a * (res - self.season_mad);
            }
            let (s, tail) = self.lik[1].update(raw, cfg);
            consider(s, tail, Component::Seasonal { period: p }, then);
        }

        // Novelty: never-seen transitions between value bins.
        if cfg.novelty {
            if self.grid_w <= 0.0 || range > 4.0 * self.grid_range {
                self.grid_w = (range / cfg.bins as f64).max(1e-9 * self.max.abs()).max(1e-12);
                self.grid_range = range.max(1e-12);
                self.novel.fill(0);
            }
            let b = ((x - self.min) / self.grid_w).floor().clamp(-1e9, 1e9) as i64;
            let key = (self.prev_bin as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
                ^ (b as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
            let h = key.wrapping_mul(0x1656_67b1_9e37_79f9) >> 40;
            let idx = (h as usize) % (NOVELTY_WORDS * 64);
            let (word, bit) = (idx / 64, 1u64 << (idx % 64));
            let known = self.novel[word] & bit != 0;
            self.novel[word] |= bit;
            self.prev_bin = b;
            let (s, tail) = self.lik[2].update(if known { 0.0 } else { 1.0 }, cfg);
            consider(s, tail, Component::Novelty, f64::NAN);
        }

        // Changepoint: predictive tail of x under the run-length mixture, prior on the window's scale.
        if let Some(b) = self.bocpd.as_mut() {
            let centre = self.win.quantile(0.5);
            let spread = ((self.win.quantile(0.75) - self.win.quantile(0.25)) / 1.349)
                .max(1e-4 * range.abs())
                .max(1e-9 * (1.0 + centre.abs()));
            let tail = b.update(x, centre, spread, cfg.hazard_rows);
            let (s, tail) = self.lik[3].update(surprisal(tail), cfg);
            consider(s, tail, Component::Changepoint, centre);
        }

        // Neighbours: conformal p-value of the latest shape among recent shapes.
        if let Some(k) = self.knn.as_mut() {
            let p = k.update(self.win.rank(x as f32));
            let (s, tail) = self.lik[4].update(surprisal(p), cfg);
            consider(s, tail, Component::Neighbours, f64::NAN);
        }

        if cfg.combine == Combine::HarmonicMean && n_signals > 0 && best.component != Component::OutOfRange {
            let signals = &signals[..n_signals];
            let inverse: f64 = signals.iter().map(|s| 1.0 / s.0.max(1e-300)).sum();
            let p = (n_signals as f64 / inverse).clamp(0.0, 1.0);
            let score = ((p + 1e-10).ln() / 1e-10f64.ln()).clamp(0.0, 1.0);
            let strongest =
                signals.iter().copied().fold((2.0, Component::Normal, f64::NAN), |a, b| if b.0 < a.0 { b } else { a });
            best = Score {
                score: 0.0,
                raw: score,
                component: if score > 0.0 { strongest.1 } else { Component::Normal },
                observed: x,
                expected: strongest.2,
                tail: p,
                suppressed: false,
            };
        }
        best
    }

    /// Applies the refractory period to a raw score: `(reported score, suppressed)`.
    fn refractory(&mut self, raw: f64) -> (f64, bool) {
        let raw = if raw.is_finite() { raw.clamp(0.0, 1.0) } else { 0.0 };
        if self.cfg.refractory == 0 {
            return (raw, false);
        }
        let horizon = self.cfg.refractory as f64;
        let left = 1.0 - self.peak_age as f64 / horizon;
        let bar = if left > 0.0 { self.peak * left.powf(self.cfg.refractory_power) } else { 0.0 };
        if raw > 0.0 && raw > bar {
            self.peak = raw;
            self.peak_age = 0;
            (raw, false)
        } else {
            self.peak_age = self.peak_age.saturating_add(1);
            (0.0, raw > 0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic standard-normal noise (xorshift + Box-Muller).
    fn gaussian(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed | 1;
        let mut uniform = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        move || {
            let (u, v) = (uniform(), uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    fn run(values: &[f64]) -> Vec<Score> {
        let mut d = Detector::default();
        values.iter().enumerate().map(|(i, &v)| d.update(i as i64 * 300, v)).collect()
    }

    fn max_score(scores: &[Score]) -> f64 {
        scores.iter().map(|s| s.score).fold(0.0, f64::max)
    }

    /// Number of rows at or above `t`.
    fn alerts(scores: &[Score], t: f64) -> usize {
        scores.iter().filter(|s| s.score >= t).count()
    }

    #[test]
    fn scores_stay_in_unit_interval() {
        let mut g = gaussian(7);
        let values: Vec<f64> = (0..3000)
            .map(|i| {
                let base = 100.0 + 20.0 * (i as f64 / 40.0).sin() + 5.0 * g();
                if i % 397 == 0 { base * 8.0 } else { base }
            })
            .collect();
        for s in run(&values) {
            assert!((0.0..=1.0).contains(&s.score), "{s:?}");
            assert!((0.0..=1.0).contains(&s.raw), "{s:?}");
        }
    }

    #[test]
    fn clear_spike_is_detected() {
        let mut g = gaussian(11);
        let mut values: Vec<f64> = (0..2000).map(|_| 50.0 + 2.0 * g()).collect();
        values[1500] = 90.0;
        let scores = run(&values);
        let before = max_score(&scores[600..1500]);
        let at = scores[1500];
        assert!(at.score >= 0.9, "{at:?}");
        assert!(at.score > before + 0.3, "spike {} vs before {before}", at.score);
        assert_eq!(at.component, Component::OutOfRange);
        assert!(at.to_string().contains("out of range"), "{at}");
    }

    #[test]
    fn level_shift_is_detected_once() {
        let mut g = gaussian(13);
        // A shift that stays inside the range seen before (no out-of-range shortcut).
        let values: Vec<f64> = (0..2500)
            .map(|i| {
                if i == 300 {
                    60.0
                } else if i < 1500 {
                    20.0 + 3.0 * g()
                } else {
                    40.0 + 3.0 * g()
                }
            })
            .collect();
        let scores = run(&values);
        let before = max_score(&scores[600..1500]);
        let after = &scores[1500..1560];
        let best =
            after.iter().copied().fold(Score::quiet(Component::Normal), |a, b| if b.score > a.score { b } else { a });
        assert!(best.score >= 0.6, "{best:?}");
        assert!(best.score > before + 0.3, "{} vs before {before}", best.score);
        assert!(alerts(&scores[1500..], 0.5) <= 3, "{}", alerts(&scores[1500..], 0.5));
        assert!(best.to_string().contains("score"), "{best}");
    }

    #[test]
    fn constant_series_is_quiet() {
        // The likelihood of a flat raw signal sits at the centre of its distribution: a score ~0.
        assert!(max_score(&run(&vec![42.0; 3000])) < 0.01);
        assert!(max_score(&run(&vec![0.0; 500])) < 0.01);
    }

    #[test]
    fn pure_noise_stays_quiet() {
        let mut g = gaussian(3);
        let values: Vec<f64> = (0..5000).map(|_| 10.0 + g()).collect();
        let scores = run(&values);
        let n = alerts(&scores[750..], 0.5);
        assert!(n <= 2, "noise alerts {n}");
    }

    #[test]
    fn non_finite_input_is_ignored() {
        let mut d = Detector::default();
        for i in 0..200 {
            d.update(i * 60, (i % 5) as f64);
        }
        let seen = d.seen();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let s = d.update(0, v);
            assert_eq!(s.score, 0.0);
            assert_eq!(s.component, Component::InvalidInput);
        }
        assert_eq!(d.seen(), seen);
        for (i, v) in [1e300, -1e300, f64::MAX, f64::MIN, 0.0, 1e-300].into_iter().enumerate() {
            let s = d.update(200 * 60 + i as i64, v);
            assert!((0.0..=1.0).contains(&s.score), "{s:?}");
            let _ = s.to_string();
        }
    }

    #[test]
    fn warm_up_and_degenerate_config() {
        let mut d = Detector::new(Config {
            window: 0,
            min_history: 0,
            lik_window: f64::NAN,
            short: 0,
            mean_floor: f64::NAN,
            var_floor: -1.0,
            range_tol: f64::INFINITY,
            refractory: 0,
            refractory_power: f64::NAN,
            seasonal_scale: 0.0,
            bins: 0,
            ..Config::default()
        });
        let first = d.update(0, 1.0);
        assert_eq!(first.component, Component::WarmUp);
        assert_eq!(first.to_string(), "warming up");
        for i in 1..2000 {
            let s = d.update(i, (i * 7 % 13) as f64);
            assert!((0.0..=1.0).contains(&s.score));
        }
    }

    #[test]
    fn refractory_suppresses_repeated_alerts() {
        let mut g = gaussian(5);
        let mut values: Vec<f64> = (0..2000).map(|_| 50.0 + g()).collect();
        values[1500] = 80.0;
        values[1510] = 75.0;
        let scores = run(&values);
        assert!(scores[1500].score > 0.5);
        assert_eq!(scores[1510].score, 0.0);
        assert!(scores[1510].suppressed);
    }

    #[test]
    fn refractory_bar_decays_quickly_at_first() {
        for (power, reported) in [(1.0, false), (2.0, true)] {
            let mut d = Detector::new(Config { refractory: 1500, refractory_power: power, ..Config::default() });
            assert_eq!(d.refractory(1.0), (1.0, false));
            for _ in 0..299 {
                assert_eq!(d.refractory(0.3), (0.0, true));
            }
            // Bar after 300 rows: 0.8 (linear) or 0.64 (quadratic).
            assert_eq!(d.refractory(0.7).0 > 0.0, reported, "power {power}");
        }
    }

    #[test]
    fn daily_period_is_inferred() {
        let mut d = Detector::default();
        d.update(0, 1.0);
        d.update(300, 1.0);
        assert_eq!(d.period(), 288);
        let mut d = Detector::default();
        d.update(0, 1.0);
        d.update(7, 1.0);
        assert_eq!(d.period(), 0);
        // A late second row (or a duplicated timestamp) does not set the period: the median interval does.
        let mut d = Detector::default();
        for (i, t) in [0, 600, 600, 900, 1200, 1500, 1800].into_iter().enumerate() {
            d.update(t, i as f64);
        }
        assert_eq!(d.period(), 288);
    }

    #[test]
    fn state_is_small() {
        let d = Detector::default();
        assert!(d.state_bytes() <= 6 * 1024, "{}", d.state_bytes());
        // The two-day seasonal lag grows the arrival-order ring once the period is known; the
        // largest period below the window (480 rows at 3-minute sampling) is the worst case.
        for dt in [300, 180, 60] {
            let mut d = Detector::default();
            for i in 0..1200 {
                d.update(i * dt, (i % 17) as f64);
            }
            assert!(d.state_bytes() <= 8 * 1024, "dt {dt}: {}", d.state_bytes());
        }
    }

    #[test]
    fn one_off_event_does_not_echo_a_day_later() {
        // A daily pattern with one bump inside the range on day 3: the seasonal signal compares
        // day 4 with the closer of days 3 and 2, so the bump is not reported again on day 4.
        let mut g = gaussian(17);
        let p = 288;
        let values: Vec<f64> = (0..6 * p)
            .map(|i| {
                let base = 50.0 + 30.0 * (2.0 * std::f64::consts::PI * i as f64 / p as f64).sin();
                let bump = if (3 * p + 100..3 * p + 130).contains(&i) { -25.0 } else { 0.0 };
                base + bump + g()
            })
            .collect();
        let scores = run(&values);
        let echo = max_score(&scores[4 * p + 95..4 * p + 140]);
        assert!(echo < 0.3, "echo {echo}");
    }
}
