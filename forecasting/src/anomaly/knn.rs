//! Conformal k-nearest-neighbour surprise on lagged windows (KNN-CAD, Burnaev & Ishimtsev 2016).
//!
//! **Assumption**: in normal operation the shape of the last [`LAG`] values (each expressed as its
//! rank in the recent window, so the signal is free of scale and units) is exchangeable with the
//! shapes seen over the previous [`REFERENCE`] rows. The nonconformity of a shape is its mean
//! Euclidean distance to its [`K`] nearest earlier shapes; the conformal p-value is the fraction of the
//! last [`REFERENCE`] nonconformities at least as large. Under exchangeability that p-value is uniform
//! whatever the distribution of the data, so the raw signal `1 - p` needs no scale parameter, and a
//! pattern never seen in the recent past (not only a value) raises it.
//!
//! Reference shapes do not overlap the current one (their lags start at [`LAG`]), so a smooth series
//! is not trivially close to itself. State: about 1 KB; one update is `O(REFERENCE * LAG)`.

/// Values in one shape.
pub(super) const LAG: usize = 8;
/// Earlier shapes compared with the current one, and nonconformities in the conformal calibration set.
pub(super) const REFERENCE: usize = 96;
/// Neighbours averaged in the nonconformity.
pub(super) const K: usize = 3;

const RANKS: usize = REFERENCE + 2 * LAG;

/// Ring of recent ranks and of recent nonconformities.
#[derive(Debug, Clone)]
pub(super) struct ConformalKnn {
    ranks: [f32; RANKS],
    rank_len: usize,
    rank_head: usize,
    scores: [f32; REFERENCE],
    score_len: usize,
    score_head: usize,
}

impl Default for ConformalKnn {
    fn default() -> Self {
        Self { ranks: [0.0; RANKS], rank_len: 0, rank_head: 0, scores: [0.0; REFERENCE], score_len: 0, score_head: 0 }
    }
}

impl ConformalKnn {
    /// Rank `k` rows before the latest (0 = latest).
    fn ago(&self, k: usize) -> f32 {
        self.ranks[(self.rank_head + RANKS - 1 - k) % RANKS]
    }

    /// Folds in the latest value's rank in `[0, 1]`; returns the conformal p-value of the current shape
    /// (1 until enough history exists).
    pub(super) fn update(&mut self, rank: f64) -> f64 {
        let rank = if rank.is_finite() { rank.clamp(0.0, 1.0) as f32 } else { 0.5 };
        self.ranks[self.rank_head] = rank;
        self.rank_head = (self.rank_head + 1) % RANKS;
        self.rank_len = (self.rank_len + 1).min(RANKS);
        // Reference shapes end at lags LAG ..= LAG + REFERENCE - 1 and need LAG values each.
        let available = self.rank_len.saturating_sub(2 * LAG - 1);
        if available < K {
            return 1.0;
        }
        let mut nearest = [f32::INFINITY; K];
        for lag in LAG..LAG + available.min(REFERENCE) {
            let mut d = 0.0f32;
            for j in 0..LAG {
                let e = self.ago(j) - self.ago(lag + j);
                d += e * e;
            }
            if d < nearest[K - 1] {
                let mut i = K - 1;
                while i > 0 && nearest[i - 1] > d {
                    nearest[i] = nearest[i - 1];
                    i -= 1;
                }
                nearest[i] = d;
            }
        }
        let score = nearest.iter().map(|d| d.sqrt()).sum::<f32>() / K as f32;
        let n = self.score_len;
        let p = if n == 0 {
            1.0
        } else {
            let at_least = self.scores[..n].iter().filter(|&&s| s >= score).count();
            (at_least + 1) as f64 / (n + 1) as f64
        };
        self.scores[self.score_head] = score;
        self.score_head = (self.score_head + 1) % REFERENCE;
        self.score_len = (self.score_len + 1).min(REFERENCE);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_shape_gets_a_small_p_value() {
        let mut c = ConformalKnn::default();
        for i in 0..400 {
            // A repeating saw-tooth of ranks, then a shape never seen (a flat run at the top).
            let r = if i < 380 { (i % 10) as f64 / 10.0 } else { 1.0 };
            let p = c.update(r);
            if i == 300 {
                assert!(p > 0.05, "familiar shape p {p}");
            }
            if i == 385 {
                assert!(p < 0.05, "new shape p {p}");
            }
            if i == 399 {
                // The flat run is now its own nearest earlier shape: learned.
                assert!(p > 0.05, "repeated new shape p {p}");
            }
        }
    }
}
