//! Demand forecasts with prediction intervals: a one-call wrapper of [`crate::model::Fitted`] (an MSTL seasonal
//! level, seasonal-naive, last-value and their median, chosen per series by their own rolling-origin errors, with
//! split-conformal intervals), plus the season detection it uses. The model that produced the forecast is
//! reported so a decision can say what it was based on.

use crate::Error;
pub use crate::model::ModelKind;
use crate::model::{Fitted, ModelConfig};
pub use crate::season::{autocorrelation, normal_quantile};

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

/// The dominant seasonal period of `y` within `cfg`'s bounds (see [`crate::season::detect_period`]).
pub fn detect_period(y: &[f64], cfg: &ForecastConfig) -> Option<usize> {
    crate::season::detect_period(y, cfg.min_period, cfg.max_period)
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
