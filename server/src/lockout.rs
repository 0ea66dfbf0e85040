//! Brute-force limits for the unauthenticated routes (login, enroll): failures are counted per client IP
//! and per user name; past a threshold the key is locked for a backoff that doubles with each further
//! failure (capped), and attempts meanwhile get 429 with Retry-After before any password hashing happens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked; past it the oldest entries are forgotten (bounded memory under a spray of names).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// Failure counts and lockouts by key (`ip:...`, `user:...`, `enroll-ip:...`).
#[derive(Debug)]
pub struct Lockout {
    free_failures: u32,
    base: Duration,
    max: Duration,
    map: Mutex<HashMap<String, Entry>>,
}

impl Lockout {
    /// `free_failures` failures per key are free; the next locks it for `base`, doubling up to `max`.
    pub fn new(free_failures: u32, base: Duration, max: Duration) -> Self {
        Self { free_failures, base, max, map: Mutex::new(HashMap::new()) }
    }

    /// Seconds until the first of `keys` that is locked opens again, or None when none is locked.
    pub fn locked(&self, keys: &[&str]) -> Option<u64> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        keys.iter()
            .filter_map(|k| map.get(*k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| (until - now).as_secs_f64().ceil() as u64)
            .max()
            .map(|s| s.max(1))
    }

    /// Records a failure for each key.
    pub fn failure(&self, keys: &[&str]) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_KEYS {
            // Forget entries idle for longer than the longest lockout first; if that frees nothing, all.
            let max = self.max;
            map.retain(|_, e| now.duration_since(e.last) < max);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        for k in keys {
            let e = map.entry((*k).to_string()).or_insert(Entry { failures: 0, locked_until: None, last: now });
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            if e.failures > self.free_failures {
                let doublings = (e.failures - self.free_failures - 1).min(20);
                let lock = self.base.saturating_mul(1u32 << doublings).min(self.max);
                e.locked_until = Some(now + lock);
            }
        }
    }

    /// Forgets the keys' failures (a successful login).
    pub fn success(&self, keys: &[&str]) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            map.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_lock_with_a_growing_backoff() {
        let l = Lockout::new(2, Duration::from_secs(2), Duration::from_secs(60));
        l.failure(&["k"]);
        l.failure(&["k"]);
        assert_eq!(l.locked(&["k"]), None);
        l.failure(&["k"]);
        assert_eq!(l.locked(&["k"]), Some(2));
        l.failure(&["k"]);
        assert_eq!(l.locked(&["k"]), Some(4));
        for _ in 0..10 {
            l.failure(&["k"]);
        }
        assert_eq!(l.locked(&["k", "other"]), Some(60));
        l.success(&["k"]);
        assert_eq!(l.locked(&["k"]), None);
    }
}
