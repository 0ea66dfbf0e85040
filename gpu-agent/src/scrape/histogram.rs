//! Histogram arithmetic on cumulative buckets: `sum by (le)` and PromQL's `histogram_quantile`.

/// Cumulative counts by upper bound (`le`), one entry per bound.
pub(crate) type Buckets = Vec<(f64, f64)>;

/// Adds `other` into `acc` bound by bound, like PromQL's `sum by (le)`.
pub(crate) fn merge(acc: &mut Buckets, other: &[(f64, f64)]) {
    for &(le, n) in other {
        match acc.iter_mut().find(|(b, _)| *b == le) {
            Some(slot) => slot.1 += n,
            None => acc.push((le, n)),
        }
    }
}

/// The `q` quantile of the observations in `buckets`, interpolated linearly inside its bucket exactly like PromQL's
/// `histogram_quantile`; None without a `+Inf` bucket, without a finite bucket, or without observations.
pub(crate) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut sorted: Buckets = buckets.iter().copied().filter(|(le, n)| !le.is_nan() && n.is_finite()).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Buckets are scraped one by one, not atomically, so counts can dip; PromQL takes the running maximum.
    let mut max = 0.0_f64;
    for (_, n) in &mut sorted {
        max = max.max(*n);
        *n = max;
    }
    let (&(last_le, observations), finite) = sorted.split_last()?;
    if last_le != f64::INFINITY || finite.is_empty() || observations <= 0.0 {
        return None;
    }
    let rank = q * observations;
    let Some(b) = finite.iter().position(|&(_, n)| n >= rank) else {
        // The quantile lies in the +Inf bucket: PromQL answers with the highest finite bound.
        return finite.last().map(|&(le, _)| le);
    };
    let (end, n) = *finite.get(b)?;
    let (start, below) = match b.checked_sub(1) {
        Some(prev) => *finite.get(prev)?,
        // The first bucket starts at 0, unless its bound is not positive: then the bound is the answer.
        None if end <= 0.0 => return Some(end),
        None => (0.0, 0.0),
    };
    let in_bucket = n - below;
    if in_bucket <= 0.0 {
        return Some(end);
    }
    Some(start + (end - start) * ((rank - below) / in_bucket))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn interpolates_inside_the_bucket() {
        // 10 in (0,1], 30 in (1,2], 60 in (2,4]: p50 is rank 50, 10 into the (2,4] bucket of 60.
        let b = vec![(1.0, 10.0), (2.0, 40.0), (4.0, 100.0), (INF, 100.0)];
        assert_eq!(quantile(0.5, &b), Some(2.0 + 2.0 * (10.0 / 60.0)));
        assert_eq!(quantile(0.1, &b), Some(1.0));
        assert_eq!(quantile(0.05, &b), Some(0.5));
        assert_eq!(quantile(1.0, &b), Some(4.0));
    }

    #[test]
    fn inf_bucket_answers_highest_finite_bound() {
        let b = vec![(1.0, 10.0), (INF, 20.0)];
        assert_eq!(quantile(0.99, &b), Some(1.0));
    }

    #[test]
    fn none_without_observations_or_inf() {
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (INF, 0.0)]), None);
        assert_eq!(quantile(0.5, &[(1.0, 3.0), (2.0, 5.0)]), None);
        assert_eq!(quantile(0.5, &[(INF, 5.0)]), None);
        assert_eq!(quantile(0.5, &[]), None);
        assert_eq!(quantile(f64::NAN, &[(1.0, 3.0), (INF, 3.0)]), None);
    }

    #[test]
    fn unsorted_and_non_monotonic_input() {
        let b = vec![(INF, 10.0), (2.0, 9.0), (1.0, 10.0)];
        // After the running max, (2.0, 10.0): everything is in the first bucket.
        assert_eq!(quantile(0.5, &b), Some(0.5));
    }

    #[test]
    fn merge_sums_by_bound() {
        let mut acc = vec![(1.0, 1.0), (INF, 2.0)];
        merge(&mut acc, &[(1.0, 3.0), (2.0, 4.0), (INF, 5.0)]);
        assert_eq!(acc, vec![(1.0, 4.0), (INF, 7.0), (2.0, 4.0)]);
    }
}
