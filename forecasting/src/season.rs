//! Series statistics the forecasters share: season detection (periodogram proposes, autocorrelation decides),
//! sample autocorrelation and the standard normal quantile. Below both [`crate::model`] and
//! [`crate::forecast`], so neither imports the other for them.

use augurs::seasons::{Detector as _, PeriodogramDetector};

/// The dominant seasonal period of `y` between `min_period` and `max_period` steps (0: up to half the series), if
/// the periodogram finds one with two full seasons of data.
pub fn detect_period(y: &[f64], min_period: u32, max_period: u32) -> Option<usize> {
    let max = if max_period == 0 { (y.len() / 2) as u32 } else { max_period.min((y.len() / 2) as u32) };
    if max < min_period || max < 2 {
        return None;
    }
    let detector = PeriodogramDetector::builder().min_period(min_period).max_period(max).build();
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
    let lags = (min_period.max(2) as usize)..=(max as usize);
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
