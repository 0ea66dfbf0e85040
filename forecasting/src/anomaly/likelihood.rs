//! Numenta's anomaly likelihood (Ahmad et al. 2017): how unusual the recent mean of a raw surprise
//! stream is against that stream's own long-run distribution.

use super::Config;

/// Complementary error function (Numerical Recipes `erfcc`, fractional error < 1.2e-7).
pub(super) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

pub(super) const SHORT_MAX: usize = 16;
const RED_TAIL: f64 = 1e-5;
const YELLOW_TAIL: f64 = 1e-3;

/// Numenta-style anomaly likelihood of one raw score stream.
#[derive(Debug, Clone)]
pub(super) struct Likelihood {
    seen: u32,
    n: u32,
    mean: f64,
    var: f64,
    ring: [f32; SHORT_MAX],
    head: usize,
    len: usize,
    sum: f64,
    red: bool,
}

impl Default for Likelihood {
    fn default() -> Self {
        Self { seen: 0, n: 0, mean: 0.0, var: 0.0, ring: [0.0; SHORT_MAX], head: 0, len: 0, sum: 0.0, red: false }
    }
}

impl Likelihood {
    /// Folds in one raw value in `[0, 1]`; returns `(log score in [0, 1], tail probability)`.
    pub(super) fn update(&mut self, raw: f64, cfg: &Config) -> (f64, f64) {
        let raw = if raw.is_finite() { raw.clamp(0.0, 1.0) } else { 1.0 } as f32;
        let k = cfg.short.clamp(1, SHORT_MAX);
        if self.len == k {
            self.sum -= f64::from(self.ring[self.head]);
        } else {
            self.len += 1;
        }
        self.ring[self.head] = raw;
        self.sum += f64::from(raw);
        self.head = (self.head + 1) % k;
        let avg = (self.sum / self.len as f64).clamp(0.0, 1.0);
        self.seen = self.seen.saturating_add(1);
        if self.seen <= cfg.lik_skip {
            return (0.0, 1.0);
        }
        let mut tail = 1.0;
        if self.n >= cfg.lik_warmup {
            let m = self.mean.max(cfg.mean_floor);
            let sd = self.var.max(cfg.var_floor).max(1e-12).sqrt();
            tail = 0.5 * erfc((avg - m) / sd / std::f64::consts::SQRT_2);
        }
        let a = (1.0 / f64::from(self.n + 1)).max(1.0 / cfg.lik_window);
        let d = avg - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
        self.n = self.n.saturating_add(1);
        if cfg.red_filter {
            let red = tail < RED_TAIL;
            if red && self.red {
                tail = tail.max(YELLOW_TAIL);
            }
            self.red = red;
        }
        let s = (tail + 1e-10).ln() / 1e-10f64.ln();
        if s.is_finite() { (s.clamp(0.0, 1.0), tail) } else { (0.0, 1.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [(0.0, 1.0), (1.0, 0.157_299_207), (3.0, 2.209_049_7e-5), (-1.0, 1.842_700_79)] {
            let got = erfc(x);
            assert!(((got - want) / want).abs() < 1e-6, "erfc({x}) = {got}");
        }
    }
}
