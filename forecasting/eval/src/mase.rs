//! Rolling-origin load-forecast evaluation with MASE (EVAL.md section 2).
//!
//! For a series y with seasonal period m, horizon h, warm-up W and stride s, every origin o = W, W + s, ... with
//! o + h <= N is fitted on `y[0..o)` and forecasts `y[o..o+h)`. The report gives the MAE of the model, of the
//! seasonal-naive forecast `y_hat[o+k] = y[o+k-m*ceil((k+1)/m)]` and of the last-value forecast `y[o-1]`, each
//! divided by the scale = mean |y_t - y_{t-m}| over the training part `y[0..W)` (the prefix no origin forecasts;
//! m = 1 for a series without season), and the empirical coverage of the model's 80% and 95% intervals.

use std::fmt;

/// A forecast of `horizon` steps with central 80% and 95% prediction intervals (all vectors of length `horizon`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IntervalForecast {
    pub point: Vec<f64>,
    pub lo80: Vec<f64>,
    pub hi80: Vec<f64>,
    pub lo95: Vec<f64>,
    pub hi95: Vec<f64>,
}

impl IntervalForecast {
    /// A point forecast whose intervals are the point itself (zero width).
    pub fn point_only(point: Vec<f64>) -> Self {
        Self { lo80: point.clone(), hi80: point.clone(), lo95: point.clone(), hi95: point.clone(), point }
    }
}

/// Anything that forecasts `horizon` steps after a training prefix. Implemented for closures
/// `FnMut(&[f64], usize) -> IntervalForecast`.
pub trait Forecaster {
    fn forecast(&mut self, train: &[f64], horizon: usize) -> IntervalForecast;
}

impl<F: FnMut(&[f64], usize) -> IntervalForecast> Forecaster for F {
    fn forecast(&mut self, train: &[f64], horizon: usize) -> IntervalForecast {
        self(train, horizon)
    }
}

/// Rolling-origin settings (all in steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingOrigin {
    /// Seasonal period m; 0 or 1 means no season (m = 1).
    pub season: usize,
    /// Horizon h >= 1.
    pub horizon: usize,
    /// Warm-up W: the first origin, and the training part the scale is computed on (needs W > m).
    pub warmup: usize,
    /// Stride s >= 1 between origins (e.g. s = h).
    pub stride: usize,
}

/// Errors of [`evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub enum MaseError {
    /// horizon or stride is 0, or the warm-up does not exceed the season.
    InvalidSettings(&'static str),
    /// A series value is not finite.
    NonFinite { index: usize },
    /// No origin o >= W with o + h <= N.
    NoOrigin { len: usize },
    /// The forecaster returned a vector of the wrong length or a non-finite value at this origin.
    BadForecast { origin: usize, what: &'static str },
}

impl fmt::Display for MaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidSettings(what) => write!(f, "invalid rolling-origin settings: {what}"),
            Self::NonFinite { index } => write!(f, "series value {index} is not finite"),
            Self::NoOrigin { len } => write!(f, "series of {len} values leaves no forecast origin"),
            Self::BadForecast { origin, what } => write!(f, "forecast at origin {origin}: {what}"),
        }
    }
}

impl std::error::Error for MaseError {}

/// Results of a rolling-origin evaluation. MASE values are `None` when the scale is 0 (flat training part).
#[derive(Debug, Clone, PartialEq)]
pub struct MaseReport {
    pub origins: usize,
    /// Forecast points scored (origins x horizon).
    pub points: usize,
    pub mae_model: f64,
    pub mae_seasonal_naive: f64,
    pub mae_last_value: f64,
    /// Mean |y_t - y_{t-m}| over `y[0..W)`.
    pub scale: f64,
    pub mase_model: Option<f64>,
    pub mase_seasonal_naive: Option<f64>,
    pub mase_last_value: Option<f64>,
    /// Fraction of actual values inside the model's 80% interval (bounds included).
    pub coverage80: f64,
    /// Fraction of actual values inside the model's 95% interval (bounds included).
    pub coverage95: f64,
}

/// Seasonal-naive forecast of step `o + k`: `y[o + k - m * ceil((k + 1) / m)]` (m >= 1, o >= m).
pub fn seasonal_naive(y: &[f64], origin: usize, k: usize, season: usize) -> Option<f64> {
    let m = season.max(1);
    let back = m.checked_mul((k + 1).div_ceil(m))?;
    let idx = origin.checked_add(k)?.checked_sub(back)?;
    if idx < origin { y.get(idx).copied() } else { None }
}

/// In-sample seasonal-naive scale: mean |y_t - y_{t-m}| for m <= t < len(train). `None` if train has <= m values.
pub fn seasonal_scale(train: &[f64], season: usize) -> Option<f64> {
    let m = season.max(1);
    if train.len() <= m {
        return None;
    }
    let sum: f64 = (m..train.len()).map(|t| (train[t] - train[t - m]).abs()).sum();
    Some(sum / (train.len() - m) as f64)
}

/// Runs the rolling-origin evaluation of `forecaster` on `series`.
pub fn evaluate(
    series: &[f64],
    settings: &RollingOrigin,
    forecaster: &mut dyn Forecaster,
) -> Result<MaseReport, MaseError> {
    let m = settings.season.max(1);
    let h = settings.horizon;
    let w = settings.warmup;
    if h == 0 {
        return Err(MaseError::InvalidSettings("horizon must be >= 1"));
    }
    if settings.stride == 0 {
        return Err(MaseError::InvalidSettings("stride must be >= 1"));
    }
    if w <= m {
        return Err(MaseError::InvalidSettings("warm-up must exceed the seasonal period"));
    }
    if let Some(index) = series.iter().position(|v| !v.is_finite()) {
        return Err(MaseError::NonFinite { index });
    }
    let n = series.len();
    if w.checked_add(h).is_none_or(|end| end > n) {
        return Err(MaseError::NoOrigin { len: n });
    }
    let scale = seasonal_scale(&series[..w], m).unwrap_or(0.0);

    let (mut err_model, mut err_sn, mut err_lv) = (0.0, 0.0, 0.0);
    let (mut in80, mut in95, mut points, mut origins) = (0usize, 0usize, 0usize, 0usize);
    let mut o = w;
    while o + h <= n {
        let fc = forecaster.forecast(&series[..o], h);
        let vectors = [&fc.point, &fc.lo80, &fc.hi80, &fc.lo95, &fc.hi95];
        if vectors.iter().any(|v| v.len() != h) {
            return Err(MaseError::BadForecast { origin: o, what: "a vector's length differs from the horizon" });
        }
        if vectors.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
            return Err(MaseError::BadForecast { origin: o, what: "non-finite value" });
        }
        let last = series[o - 1];
        for k in 0..h {
            let actual = series[o + k];
            err_model += (actual - fc.point[k]).abs();
            let sn = seasonal_naive(series, o, k, m).unwrap_or(last);
            err_sn += (actual - sn).abs();
            err_lv += (actual - last).abs();
            if fc.lo80[k] <= actual && actual <= fc.hi80[k] {
                in80 += 1;
            }
            if fc.lo95[k] <= actual && actual <= fc.hi95[k] {
                in95 += 1;
            }
            points += 1;
        }
        origins += 1;
        o = match o.checked_add(settings.stride) {
            Some(next) => next,
            None => break,
        };
    }
    let pts = points.max(1) as f64;
    let (mae_model, mae_sn, mae_lv) = (err_model / pts, err_sn / pts, err_lv / pts);
    let mase = |mae: f64| if scale > 0.0 { Some(mae / scale) } else { None };
    Ok(MaseReport {
        origins,
        points,
        mae_model,
        mae_seasonal_naive: mae_sn,
        mae_last_value: mae_lv,
        scale,
        mase_model: mase(mae_model),
        mase_seasonal_naive: mase(mae_sn),
        mase_last_value: mase(mae_lv),
        coverage80: in80 as f64 / pts,
        coverage95: in95 as f64 / pts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_forecaster(train: &[f64], h: usize) -> IntervalForecast {
        let mean = train.iter().sum::<f64>() / train.len() as f64;
        IntervalForecast {
            point: vec![mean; h],
            lo80: vec![mean - 1.0; h],
            hi80: vec![mean + 1.0; h],
            lo95: vec![mean - 3.0; h],
            hi95: vec![mean + 3.0; h],
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_linear_series() {
        // y = 1..=8, m = 2, h = 2, W = 4, s = 2: origins 4 and 6.
        let y: Vec<f64> = (1..=8).map(f64::from).collect();
        let settings = RollingOrigin { season: 2, horizon: 2, warmup: 4, stride: 2 };
        let mut f = mean_forecaster;
        let r = evaluate(&y, &settings, &mut f).expect("valid");
        assert_eq!((r.origins, r.points), (2, 4));
        // model: means 2.5 and 3.5 -> errors 2.5, 3.5, 3.5, 4.5
        assert!(close(r.mae_model, 3.5));
        // seasonal naive: y[2], y[3] for o = 4 and y[4], y[5] for o = 6 -> all errors 2
        assert!(close(r.mae_seasonal_naive, 2.0));
        // last value: y[3] = 4 and y[5] = 6 -> errors 1, 2, 1, 2
        assert!(close(r.mae_last_value, 1.5));
        // scale over y[0..4): |3 - 1|, |4 - 2|
        assert!(close(r.scale, 2.0));
        assert!(close(r.mase_model.expect("scale > 0"), 1.75));
        assert!(close(r.mase_seasonal_naive.expect("scale > 0"), 1.0));
        assert!(close(r.mase_last_value.expect("scale > 0"), 0.75));
        assert!(close(r.coverage80, 0.0));
        assert!(close(r.coverage95, 0.25));
    }

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        let y = [10.0, 20.0, 30.0, 40.0, 50.0];
        // o = 4, m = 2: k = 0 -> y[2], k = 1 -> y[3], k = 2 -> y[2], k = 3 -> y[3]
        let got: Vec<Option<f64>> = (0..4).map(|k| seasonal_naive(&y, 4, k, 2)).collect();
        assert_eq!(got, vec![Some(30.0), Some(40.0), Some(30.0), Some(40.0)]);
        // m = 1 is the last value
        assert_eq!(seasonal_naive(&y, 3, 2, 1), Some(30.0));
        assert_eq!(seasonal_naive(&y, 1, 0, 2), None);
    }

    #[test]
    fn seasonal_series_with_three_step_horizon() {
        // Period-2 series; seasonal naive is perfect, last value is off by 1 at every other step.
        let y = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let settings = RollingOrigin { season: 2, horizon: 3, warmup: 4, stride: 1 };
        let mut perfect = |train: &[f64], h: usize| {
            let o = train.len();
            IntervalForecast::point_only((0..h).map(|k| ((o + k) % 2) as f64).collect())
        };
        let r = evaluate(&y, &settings, &mut perfect).expect("valid");
        // origins 4, 5: o + 3 <= 8
        assert_eq!((r.origins, r.points), (2, 6));
        assert!(close(r.mae_model, 0.0));
        assert!(close(r.mae_seasonal_naive, 0.0));
        // o = 4: last = y[3] = 1, actual 0, 1, 0 -> 1, 0, 1; o = 5: last = 0, actual 1, 0, 1 -> 1, 0, 1
        assert!(close(r.mae_last_value, 4.0 / 6.0));
        // scale over y[0..4) with m = 2 is 0 -> no MASE
        assert!(close(r.scale, 0.0));
        assert_eq!(r.mase_model, None);
        assert!(close(r.coverage80, 1.0) && close(r.coverage95, 1.0));
    }

    #[test]
    fn non_seasonal_uses_lag_one() {
        let y = [1.0, 3.0, 2.0, 4.0, 4.0, 6.0];
        let settings = RollingOrigin { season: 0, horizon: 1, warmup: 3, stride: 1 };
        let mut lv = |train: &[f64], h: usize| IntervalForecast::point_only(vec![train[train.len() - 1]; h]);
        let r = evaluate(&y, &settings, &mut lv).expect("valid");
        // scale over [1, 3, 2]: (2 + 1) / 2
        assert!(close(r.scale, 1.5));
        // origins 3, 4, 5: errors |4-2|, |4-4|, |6-4| = 2, 0, 2
        assert!(close(r.mae_model, 4.0 / 3.0));
        assert!(close(r.mae_model, r.mae_last_value));
        assert!(close(r.mae_model, r.mae_seasonal_naive));
        assert!(close(r.mase_model.expect("scale"), (4.0 / 3.0) / 1.5));
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let y = [1.0, 2.0, 3.0, 4.0];
        let mut f = mean_forecaster;
        let ok = RollingOrigin { season: 1, horizon: 1, warmup: 2, stride: 1 };
        assert!(evaluate(&y, &RollingOrigin { horizon: 0, ..ok }, &mut f).is_err());
        assert!(evaluate(&y, &RollingOrigin { stride: 0, ..ok }, &mut f).is_err());
        assert!(evaluate(&y, &RollingOrigin { warmup: 1, ..ok }, &mut f).is_err());
        assert!(evaluate(&y, &RollingOrigin { horizon: 3, ..ok }, &mut f).is_err());
        assert!(evaluate(&y, &RollingOrigin { warmup: usize::MAX, ..ok }, &mut f).is_err());
        assert!(evaluate(&[1.0, f64::NAN, 3.0, 4.0], &ok, &mut f).is_err());
        let mut short = |_: &[f64], _: usize| IntervalForecast::default();
        assert!(matches!(evaluate(&y, &ok, &mut short), Err(MaseError::BadForecast { origin: 2, .. })));
        let mut nan = |_: &[f64], h: usize| IntervalForecast::point_only(vec![f64::NAN; h]);
        assert!(evaluate(&y, &ok, &mut nan).is_err());
        let mut big_stride = mean_forecaster;
        let r = evaluate(&y, &RollingOrigin { stride: usize::MAX, ..ok }, &mut big_stride).expect("one origin");
        assert_eq!(r.origins, 1);
    }
}
