//! Bayesian online changepoint detection (Adams & MacKay 2007), used as a surprise signal.
//!
//! **Assumption**: the series is a sequence of segments, each i.i.d. Gaussian with its own unknown mean
//! and variance (Normal-Gamma prior), and a new segment begins at every row with the constant
//! probability `1 / hazard_rows` (a geometric prior on segment lengths, fixed a priori, not fitted).
//! Under that model the predictive distribution of the next value is a mixture of Student-t laws over
//! the current run length, and the two-sided predictive tail probability of each new value (its
//! probability integral transform) is uniform; the raw signal is `1 - tail`, so it is as calibrated as
//! the model is, and the anomaly likelihood downstream absorbs the model's misfit on each series.
//!
//! The prior of a new segment is centred on the median of the recent window with its robust spread
//! (interquartile range / 1.349), an empirical-Bayes choice that keeps the prior on the series' own
//! scale. Run lengths are truncated at [`RUNS`]: the longest keeps absorbing mass (and data), so the
//! state is fixed (about 1 KB) and one update costs `O(RUNS)`.

/// Run lengths tracked; the last one absorbs all longer runs.
pub(super) const RUNS: usize = 32;

/// Prior pseudo-observations of a new segment's mean (`kappa_0`) and the Gamma shape (`alpha_0`).
const KAPPA0: f64 = 1.0;
const ALPHA0: f64 = 1.0;

/// Streaming run-length posterior with Normal-Gamma segment statistics.
#[derive(Debug, Clone)]
pub(super) struct Bocpd {
    /// Posterior probability of each run length (sums to 1 once started).
    weight: [f64; RUNS],
    /// Observations in the segment of each run length.
    n: [f64; RUNS],
    /// Running mean of those observations (Welford).
    mean: [f64; RUNS],
    /// Running sum of squared deviations (Welford).
    m2: [f64; RUNS],
    started: bool,
}

impl Default for Bocpd {
    fn default() -> Self {
        Self { weight: [0.0; RUNS], n: [0.0; RUNS], mean: [0.0; RUNS], m2: [0.0; RUNS], started: false }
    }
}

/// `ln Gamma(a + 1/2) - ln Gamma(a)` by its asymptotic series (error below 1e-3 for `a >= 1`).
fn ln_gamma_half_ratio(a: f64) -> f64 {
    0.5 * a.ln() - 1.0 / (8.0 * a) + 1.0 / (192.0 * a * a * a)
}

/// Predictive Student-t of one run length: `(log density of x, two-sided tail probability of x)`.
fn predictive(n: f64, mean: f64, m2: f64, x: f64, mu0: f64, beta0: f64) -> (f64, f64) {
    let kappa = KAPPA0 + n;
    let mu = (KAPPA0 * mu0 + n * mean) / kappa;
    let alpha = ALPHA0 + 0.5 * n;
    let beta = beta0 + 0.5 * m2 + KAPPA0 * n * (mean - mu0) * (mean - mu0) / (2.0 * kappa);
    let nu = 2.0 * alpha;
    let scale2 = (beta * (kappa + 1.0) / (alpha * kappa)).max(1e-300);
    let z2 = (x - mu) * (x - mu) / scale2;
    let log1p = (z2 / nu).ln_1p();
    let ln_pdf = ln_gamma_half_ratio(alpha) - 0.5 * (nu * std::f64::consts::PI * scale2).ln() - (alpha + 0.5) * log1p;
    // Normal equivalent deviate of the t statistic (sqrt(nu ln(1 + t^2 / nu)), exact as nu grows):
    // a monotone, cheap stand-in for the t tail that the likelihood downstream recalibrates anyway.
    let z = (nu * log1p).sqrt();
    let tail = super::likelihood::erfc(z / std::f64::consts::SQRT_2);
    (ln_pdf, tail.clamp(0.0, 1.0))
}

impl Bocpd {
    /// Folds in `x` with a new-segment prior centred on `mu0` with spread `sigma0`; returns the
    /// predictive two-sided tail probability of `x` given the rows before it (1 for the first row).
    pub(super) fn update(&mut self, x: f64, mu0: f64, sigma0: f64, hazard_rows: f64) -> f64 {
        let sigma0 = if sigma0.is_finite() && sigma0 > 0.0 { sigma0 } else { 1e-9 * mu0.abs().max(1.0) };
        let beta0 = ALPHA0 * sigma0 * sigma0;
        let h = (1.0 / hazard_rows.max(1.0)).clamp(1e-9, 1.0);
        if !self.started {
            self.started = true;
            self.weight[0] = 1.0;
            self.n[0] = 1.0;
            self.mean[0] = x;
            self.m2[0] = 0.0;
            return 1.0;
        }
        // Predictive of x under each run length (a new segment uses the prior alone).
        let mut ln_pred = [0.0; RUNS];
        let mut tail = 0.0;
        let mut max_ln = f64::NEG_INFINITY;
        for (r, slot) in ln_pred.iter_mut().enumerate() {
            if self.weight[r] <= 0.0 {
                *slot = f64::NEG_INFINITY;
                continue;
            }
            let (lp, t) = predictive(self.n[r], self.mean[r], self.m2[r], x, mu0, beta0);
            *slot = lp;
            max_ln = max_ln.max(lp);
            tail += self.weight[r] * t;
        }
        let (prior_lp, prior_tail) = predictive(0.0, 0.0, 0.0, x, mu0, beta0);
        max_ln = max_ln.max(prior_lp);
        // Changepoint mass: every run ends with probability h, and the new segment predicts x by its prior.
        let prior_mass: f64 = h; // weights sum to 1
        tail = (1.0 - h) * tail + h * prior_tail;
        // Growth (scaled by exp(-max_ln) against underflow): run r becomes r + 1; the last absorbs.
        let mut grown = [0.0; RUNS];
        for r in 0..RUNS {
            if ln_pred[r].is_finite() {
                let g = self.weight[r] * (ln_pred[r] - max_ln).exp() * (1.0 - h);
                grown[(r + 1).min(RUNS - 1)] += g;
            }
        }
        grown[0] = prior_mass * (prior_lp - max_ln).exp();
        let total: f64 = grown.iter().sum();
        if !(total.is_finite() && total > 0.0) {
            // Every run length found x impossible: restart from x.
            *self = Self::default();
            self.started = true;
            self.weight[0] = 1.0;
            self.n[0] = 1.0;
            self.mean[0] = x;
            return 0.0;
        }
        // Statistics move with their run length; the absorbing one keeps its own (a longer run's data).
        let last = RUNS - 1;
        let (keep_n, keep_mean, keep_m2) = (self.n[last], self.mean[last], self.m2[last]);
        let absorbing_had_mass = self.weight[last] > 0.0;
        for r in (1..RUNS).rev() {
            self.n[r] = self.n[r - 1];
            self.mean[r] = self.mean[r - 1];
            self.m2[r] = self.m2[r - 1];
        }
        if absorbing_had_mass && self.weight[last] >= self.weight[last - 1] {
            self.n[last] = keep_n;
            self.mean[last] = keep_mean;
            self.m2[last] = keep_m2;
        }
        self.n[0] = 0.0;
        self.mean[0] = 0.0;
        self.m2[0] = 0.0;
        for (r, g) in grown.iter().enumerate() {
            self.weight[r] = g / total;
            if self.weight[r] > 0.0 || r == 0 {
                let n = self.n[r] + 1.0;
                let d = x - self.mean[r];
                self.mean[r] += d / n;
                self.m2[r] += d * (x - self.mean[r]);
                self.n[r] = n;
            }
        }
        tail.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_is_surprising_and_then_learned() {
        let mut b = Bocpd::default();
        let mut tails = Vec::new();
        for i in 0..400 {
            let x = if i < 200 { 10.0 + ((i * 7) % 5) as f64 * 0.1 } else { 20.0 + ((i * 7) % 5) as f64 * 0.1 };
            tails.push(b.update(x, 10.2, 0.2, 250.0));
        }
        assert!(tails[200] < 1e-4, "jump tail {}", tails[200]);
        assert!(tails[230] > 0.01, "after the jump {}", tails[230]);
        let w: f64 = b.weight.iter().sum();
        assert!((w - 1.0).abs() < 1e-9);
    }

    #[test]
    fn degenerate_inputs_stay_finite() {
        let mut b = Bocpd::default();
        for i in 0..100 {
            let t = b.update(if i % 2 == 0 { 1e300 } else { -1e300 }, 0.0, 0.0, f64::NAN);
            assert!((0.0..=1.0).contains(&t), "{t}");
        }
        let mut b = Bocpd::default();
        for _ in 0..100 {
            let t = b.update(5.0, 5.0, 0.0, 100.0);
            assert!((0.0..=1.0).contains(&t), "{t}");
        }
    }
}
