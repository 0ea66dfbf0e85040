//! The window of recent values every signal reads: arrival order for lags, sorted for ranks.

/// Window of recent values kept in arrival order (a ring of `ring_cap` values, at least `cap`) and,
/// for the latest `cap` of them, sorted (stored as `f32`).
#[derive(Debug, Clone)]
pub(super) struct SortedWindow {
    pub(super) ring: Vec<f32>,
    head: usize,
    pub(super) ring_cap: usize,
    pub(super) sorted: Vec<f32>,
    cap: usize,
}

impl SortedWindow {
    pub(super) fn new(cap: usize) -> Self {
        let cap = cap.max(4);
        Self { ring: Vec::with_capacity(cap), head: 0, ring_cap: cap, sorted: Vec::with_capacity(cap), cap }
    }

    pub(super) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Keeps at least `n` values in arrival order (only before the ring has wrapped).
    pub(super) fn keep_at_least(&mut self, n: usize) {
        if n > self.ring_cap && self.ring.len() < self.ring_cap {
            self.ring_cap = n;
            self.ring.reserve_exact(n.saturating_sub(self.ring.len()));
        }
    }

    pub(super) fn push(&mut self, x: f32) {
        if self.sorted.len() >= self.cap
            && let Some(old) = self.ago(self.cap - 1)
        {
            let old = old as f32;
            let i = self.sorted.partition_point(|&v| v < old);
            if i < self.sorted.len() {
                self.sorted.remove(i);
            }
        }
        if self.ring.len() < self.ring_cap {
            self.ring.push(x);
        } else {
            self.ring[self.head] = x;
            self.head = (self.head + 1) % self.ring_cap;
        }
        let j = self.sorted.partition_point(|&v| v < x);
        self.sorted.insert(j, x);
    }

    /// Linearly interpolated quantile of the window (0 when empty).
    pub(super) fn quantile(&self, q: f64) -> f64 {
        let n = self.sorted.len();
        if n == 0 {
            return 0.0;
        }
        let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let lo = (pos.floor() as usize).min(n - 1);
        let hi = (lo + 1).min(n - 1);
        let frac = pos - lo as f64;
        f64::from(self.sorted[lo]) * (1.0 - frac) + f64::from(self.sorted[hi]) * frac
    }

    /// Mid-rank of `x` in the window as a fraction in `[0, 1]`.
    pub(super) fn rank(&self, x: f32) -> f64 {
        let n = self.sorted.len();
        if n == 0 {
            return 0.5;
        }
        let lo = self.sorted.partition_point(|&v| v < x);
        let hi = self.sorted.partition_point(|&v| v <= x);
        (lo + hi) as f64 / (2.0 * n as f64)
    }

    /// Value `k` rows before the latest one (0 = latest).
    pub(super) fn ago(&self, k: usize) -> Option<f64> {
        let n = self.ring.len();
        if k >= n {
            return None;
        }
        let latest = if n < self.ring_cap { n - 1 } else { (self.head + self.ring_cap - 1) % self.ring_cap };
        Some(f64::from(self.ring[(latest + n - k) % n]))
    }
}
