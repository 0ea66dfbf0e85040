//! Demand forecasts with prediction intervals: a one-call wrapper of [`crate::model::Fitted`] (an MSTL seasonal
//! level, seasonal-naive, last-value and their median, chosen per series by their own rolling-origin errors, with
//! split-conformal intervals), plus the season detection it uses. The model that produced the forecast is
//! reported so a decision can say what it was based on.

use augurs::seasons::{Detector as _, PeriodogramDetector};

use crate::Error;
use crate::model::{Fitted, ModelConfig};

/// Which model produced a [`DemandForecast`].
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

/// A forecast of the next `horizon` steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DemandForecast {
    /// Point forecasts, one per step ahead.
    pub point: Vec<f64>,
    /// Lower bound of the prediction interval.
    pub lower: Vec<f64>,
    /// Upper bound of the prediction interval.
    pub upper: Vec<f64>,
    /// Interval level, e.g. 0.9.
    pub level: f64,
    /// The model used.
    pub model: ModelKind,
    /// The seasonal period used, in steps, if any.
    pub period: Option<usize>,
}

/// Settings of [`forecast`].
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastConfig {
    /// Shortest season considered, in steps.
    pub min_period: u32,
    /// Longest season considered, in steps (0 = no limit besides half the series).
    pub max_period: u32,
    /// Fewer points than this: no season or smoothing is fitted (the level model is the last value).
    pub min_points_ets: usize,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self { min_period: 4, max_period: 0, min_points_ets: 10 }
    }
}

/// Forecasts `horizon` steps after `y` with intervals at `level` (in (0, 1)), using [`Fitted`] with its default
/// candidates: whichever of the (MSTL) smoothed level, seasonal-naive, last-value and their median has had the
/// least error over this horizon on the recent past of `y`, with intervals from that candidate's own recent
/// k-step errors (see [`crate::model`]).
///
/// Demand is never negative: non-negative history gives non-negative forecasts and bounds.
pub fn forecast(y: &[f64], horizon: usize, level: f64, cfg: &ForecastConfig) -> Result<DemandForecast, Error> {
    validate(y, horizon, level)?;
    let mcfg = ModelConfig {
        min_period: cfg.min_period,
        max_period: cfg.max_period,
        min_points: cfg.min_points_ets,
        ..ModelConfig::default()
    };
    let f = Fitted::fit(y, &mcfg)?.forecast(horizon, &[level])?;
    let Some(iv) = f.intervals.into_iter().next() else {
        return Err(Error::Model("no interval returned".into()));
    };
    Ok(DemandForecast { point: f.point, lower: iv.lower, upper: iv.upper, level, model: f.model, period: f.period })
}

fn validate(y: &[f64], horizon: usize, level: f64) -> Result<(), Error> {
    if y.is_empty() {
        return Err(Error::TooShort { len: 0, need: 1 });
    }
    if let Some(index) = y.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { index });
    }
    if horizon == 0 {
        return Err(Error::InvalidArgument { name: "horizon", reason: "must be at least 1".into() });
    }
    if !(level > 0.0 && level < 1.0) {
        return Err(Error::InvalidArgument { name: "level", reason: format!("must be in (0, 1), got {level}") });
    }
    Ok(())
}

/// The dominant seasonal period of `y`, if the periodogram finds one with two full seasons of data.
pub fn detect_period(y: &[f64], cfg: &ForecastConfig) -> Option<usize> {
    let max = if cfg.max_period == 0 { (y.len() / 2) as u32 } else { cfg.max_period.min((y.len() / 2) as u32) };
    if max < cfg.min_period || max < 2 {
        return None;
    }
    let detector = PeriodogramDetector::builder().min_period(cfg.min_period).max_period(max).build();
    // The periodogram proposes; the autocorrelation at each proposed lag decides (spectral leakage on short
    // series can rank a spurious period first).
    let proposed = detector
        .detect(y)
        .into_iter()
        .map(|p| p as usize)
        .filter(|&p| p >= 2 && y.len() >= 2 * p)
        .map(|p| (p, autocorrelation(y, p)))
        .filter(|&(_, r)| r >= 0.3)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(p, _)| p);
    if proposed.is_some() || y.len() > 4096 {
        return proposed;
    }
    // Short series: the periodogram's resolution is coarse, so fall back to the first autocorrelation peak.
    let lags = (cfg.min_period.max(2) as usize)..=(max as usize);
    let acf: Vec<(usize, f64)> = lags.map(|l| (l, autocorrelation(y, l))).collect();
    acf.windows(3).find(|w| w[1].1 >= 0.5 && w[1].1 >= w[0].1 && w[1].1 >= w[2].1).map(|w| w[1].0)
}

/// Sample autocorrelation of `y` at `lag`.
pub fn autocorrelation(y: &[f64], lag: usize) -> f64 {
    if lag == 0 || lag >= y.len() {
        return 0.0;
    }
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let var: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    if var <= 0.0 {
        return 0.0;
    }
    let cov: f64 = y.iter().zip(&y[lag..]).map(|(a, b)| (a - mean) * (b - mean)).sum();
    cov / var
}

/// Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let plow = 0.02425;
    if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seasonal_series_gets_a_seasonal_model_and_tracks_the_season() {
        let p = 12;
        let y: Vec<f64> =
            (0..(p * 8)).map(|i| 100.0 + 30.0 * ((i % p) as f64 / p as f64 * std::f64::consts::TAU).sin()).collect();
        let f = forecast(&y, p, 0.9, &ForecastConfig::default()).expect("forecast");
        // An exactly periodic series: the seasonal level and seasonal-naive are both right; either may win.
        assert!(
            matches!(f.model, ModelKind::MstlLevel | ModelKind::SeasonalNaive | ModelKind::Median),
            "{:?}",
            f.model
        );
        assert_eq!(f.period, Some(p));
        for (k, v) in f.point.iter().enumerate() {
            let truth = y[y.len() - p + k];
            assert!((v - truth).abs() < 5.0, "step {k}: {v} vs {truth}");
        }
        for k in 0..p {
            assert!(f.lower[k] <= f.point[k] && f.point[k] <= f.upper[k]);
        }
    }

    #[test]
    fn a_trend_is_followed() {
        let y: Vec<f64> = (0..40).map(|i| 10.0 + 2.0 * i as f64 + if i % 2 == 0 { 0.3 } else { -0.3 }).collect();
        let f = forecast(&y, 3, 0.9, &ForecastConfig { min_period: 100, ..Default::default() }).expect("forecast");
        // Every candidate's forecast is shifted by the median of its own k-step errors, i.e. follows the drift.
        assert!(matches!(f.model, ModelKind::Level | ModelKind::LastValue | ModelKind::Median), "{:?}", f.model);
        assert!(f.point[2] > 85.0 && f.point[2] < 95.0, "{:?}", f.point);
    }

    #[test]
    fn short_and_constant_series_fall_back_to_last_value() {
        let f = forecast(&[3.0, 4.0], 2, 0.9, &ForecastConfig::default()).expect("forecast");
        assert_eq!(f.model, ModelKind::LastValue);
        assert_eq!(f.point, vec![4.0, 4.0]);
        let f = forecast(&[5.0; 50], 2, 0.9, &ForecastConfig::default()).expect("forecast");
        assert_eq!(f.point, vec![5.0, 5.0]);
        assert_eq!(f.upper, vec![5.0, 5.0]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let cfg = ForecastConfig::default();
        assert!(matches!(forecast(&[], 1, 0.9, &cfg), Err(Error::TooShort { .. })));
        assert!(matches!(forecast(&[1.0, f64::NAN], 1, 0.9, &cfg), Err(Error::NonFinite { index: 1 })));
        assert!(forecast(&[1.0], 0, 0.9, &cfg).is_err());
        assert!(forecast(&[1.0], 1, 1.5, &cfg).is_err());
    }

    #[test]
    fn normal_quantile_matches_known_values() {
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(0.05) + 1.644854).abs() < 1e-5);
    }
}
