//! Peer outliers: which GPUs (or replicas) of one deployment depart from their peers over a window.
//!
//! Input: for one deployment and one time window, the aligned series of the same metric for `N`
//! members (row `t` of every series is the same instant; NaN marks a missing sample). Per member the
//! output is a verdict, a score in `[0, 1]` and the evidence behind it.
//!
//! How it works (robust, median/MAD based):
//! 1. At every instant with at least [`PeerConfig::min_members`] finite values, each member's residual
//!    is its value minus the median of all members at that instant. Subtracting the fleet median per
//!    instant removes whatever moves the whole deployment (load, a fleet-wide shift, a daily cycle), so
//!    only departures from the peers remain.
//! 2. A member's *offset* is the median of its residuals over the window: a sustained departure (more
//!    than half of the window) moves it, a short spike does not (that is the per-series detector's job).
//! 3. The offsets are compared with their own spread: `distance = (offset - median offset) / scale`,
//!    where `scale = 1.4826 * MAD(offsets)` (a standard deviation under normality), floored at
//!    [`PeerConfig::rel_floor`] times the fleet's typical absolute level (plus a tiny absolute floor) so
//!    that peers agreeing exactly (quantised metrics, idle GPUs) do not make every tiny difference
//!    infinite.
//! 4. `score = d^2 / (d^2 + threshold^2)` for `d = |distance|`: 0.5 exactly at the threshold, so a
//!    member is an outlier iff its score is at least 0.5.
//!
//! Why not `augurs::outlier::MADDetector` (which is built): it pools every value of every series into
//! one global double median, so a fleet-wide level shift inside the window makes every member an
//! outlier on one side of it; it fails with a division by zero whenever either half-MAD is 0 (the usual
//! case for seven GPUs pinned at 100 % utilisation and one that is not, exactly the case to catch); and
//! its per-point scores are unbounded z values. The residual-to-fleet-median step above is what makes
//! the verdict shift-invariant, and the floored scale keeps the degenerate cases answerable.
//! `augurs::outlier::DbscanDetector` is per-instant and binary, with a distance parameter in the
//! metric's units, so it gives no graded score either.

use crate::Error;
use serde::{Deserialize, Serialize};

/// MAD-to-standard-deviation factor under normality.
const MAD_K: f64 = 1.4826;

/// Settings of the peer detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Robust distance (in standard deviations of the peers' offsets) at which a member is an outlier.
    pub threshold: f64,
    /// Members with a finite value needed at an instant (and in total) for a verdict (at least 3).
    pub min_members: usize,
    /// Floor of the scale, as a fraction of the fleet's median absolute level.
    pub rel_floor: f64,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self { threshold: 3.5, min_members: 3, rel_floor: 0.01 }
    }
}

impl PeerConfig {
    /// Checks that the settings are usable.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(Error::InvalidArgument { name: "threshold", reason: format!("{} is not > 0", self.threshold) });
        }
        if self.min_members < 3 {
            return Err(Error::InvalidArgument {
                name: "min_members",
                reason: format!("{} is below 3 (two members cannot outvote each other)", self.min_members),
            });
        }
        if !(self.rel_floor.is_finite() && self.rel_floor >= 0.0) {
            return Err(Error::InvalidArgument {
                name: "rel_floor",
                reason: format!("{} is not >= 0", self.rel_floor),
            });
        }
        Ok(())
    }
}

/// The verdict on one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The member departs from its peers.
    Outlier,
    /// The member is in line with its peers.
    Normal,
    /// Too few members (or samples of this member) to judge.
    NoVerdict,
}

/// Why a member was (or was not) flagged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PeerEvidence {
    /// The member's typical value over the window (median of its finite samples).
    pub value: f64,
    /// The peers' typical value over the window (median over instants of the fleet median).
    pub peer_median: f64,
    /// The member's median departure from the fleet median (in the metric's units).
    pub offset: f64,
    /// Signed robust distance of the offset from the other offsets, in scale units.
    pub mad_distance: f64,
    /// Instants at which the member was compared with its peers.
    pub samples: usize,
}

/// Result for one member (in input order).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemberScore {
    /// Outlier, normal or no verdict.
    pub verdict: Verdict,
    /// Departure score in `[0, 1]` (0.5 at the threshold; 0 without a verdict).
    pub score: f64,
    /// The numbers behind the verdict (`None` without a verdict).
    pub evidence: Option<PeerEvidence>,
}

impl MemberScore {
    /// True when the member departs from its peers.
    pub fn is_outlier(&self) -> bool {
        self.verdict == Verdict::Outlier
    }

    fn none() -> Self {
        Self { verdict: Verdict::NoVerdict, score: 0.0, evidence: None }
    }
}

/// Result for the whole group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    /// One entry per input series, in input order.
    pub members: Vec<MemberScore>,
    /// Scale the distances are measured in (metric units; NaN without a verdict).
    pub scale: f64,
}

impl PeerReport {
    /// Indices of the members flagged as outliers.
    pub fn outliers(&self) -> Vec<usize> {
        self.members.iter().enumerate().filter(|(_, m)| m.is_outlier()).map(|(i, _)| i).collect()
    }

    /// True when no member could be judged (too few members or samples).
    pub fn no_verdict(&self) -> bool {
        self.members.iter().all(|m| m.verdict == Verdict::NoVerdict)
    }
}

/// Median of a slice of finite values, reordering it (NaN when empty).
fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    v.sort_unstable_by(f64::total_cmp);
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Scores every member of one group against its peers.
///
/// `series[i][t]` is member `i` at instant `t`; every series must have the same length. NaN and
/// infinite values are skipped. Fewer than [`PeerConfig::min_members`] usable members gives
/// [`Verdict::NoVerdict`] for everyone, never an error.
pub fn score_peers(series: &[&[f64]], cfg: &PeerConfig) -> Result<PeerReport, Error> {
    cfg.validate()?;
    let len = series.first().map_or(0, |s| s.len());
    if let Some((i, s)) = series.iter().enumerate().find(|(_, s)| s.len() != len) {
        return Err(Error::InvalidArgument {
            name: "series",
            reason: format!("member {i} has {} samples, member 0 has {len}", s.len()),
        });
    }
    let n = series.len();
    let mut residuals: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut fleet_medians = Vec::with_capacity(len);
    let mut column = Vec::with_capacity(n);
    for t in 0..len {
        column.clear();
        column.extend(series.iter().map(|s| s[t]).filter(|x| x.is_finite()));
        if column.len() < cfg.min_members {
            continue;
        }
        let m = median_in_place(&mut column);
        fleet_medians.push(m);
        for (r, s) in residuals.iter_mut().zip(series) {
            let x = s[t];
            if x.is_finite() {
                r.push(x - m);
            }
        }
    }
    // Member offsets (median residual), for members compared at least once.
    let offsets: Vec<Option<f64>> =
        residuals.iter_mut().map(|r| if r.is_empty() { None } else { Some(median_in_place(r)) }).collect();
    let mut known: Vec<f64> = offsets.iter().flatten().copied().collect();
    if known.len() < cfg.min_members {
        return Ok(PeerReport { members: vec![MemberScore::none(); n], scale: f64::NAN });
    }
    let centre = median_in_place(&mut known);
    let mut spread: Vec<f64> = known.iter().map(|o| (o - centre).abs()).collect();
    let mad = median_in_place(&mut spread);
    let peer_median = median_in_place(&mut fleet_medians);
    let mut levels: Vec<f64> = fleet_medians.iter().map(|m| m.abs()).collect();
    let level = median_in_place(&mut levels);
    let floor = cfg.rel_floor * level + 1e-12 * (1.0 + level);
    let scale = (MAD_K * mad).max(floor);
    let members = offsets
        .iter()
        .zip(series)
        .zip(&residuals)
        .map(|((offset, s), r)| {
            let Some(offset) = *offset else { return MemberScore::none() };
            let mut own: Vec<f64> = s.iter().copied().filter(|x| x.is_finite()).collect();
            let value = median_in_place(&mut own);
            let distance = (offset - centre) / scale;
            let d2 = if distance.is_finite() { distance * distance } else { f64::INFINITY };
            let t2 = cfg.threshold * cfg.threshold;
            let score = if d2.is_infinite() { 1.0 } else { (d2 / (d2 + t2)).clamp(0.0, 1.0) };
            let verdict = if d2 >= t2 { Verdict::Outlier } else { Verdict::Normal };
            MemberScore {
                verdict,
                score,
                evidence: Some(PeerEvidence { value, peer_median, offset, mad_distance: distance, samples: r.len() }),
            }
        })
        .collect();
    Ok(PeerReport { members, scale })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in `[-1, 1)`.
    fn noise(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    fn fleet(n: usize, len: usize, f: impl Fn(usize, usize) -> f64) -> Vec<Vec<f64>> {
        (0..n).map(|i| (0..len).map(|t| f(i, t)).collect()).collect()
    }

    fn run(data: &[Vec<f64>]) -> PeerReport {
        let refs: Vec<&[f64]> = data.iter().map(Vec::as_slice).collect();
        score_peers(&refs, &PeerConfig::default()).expect("valid input")
    }

    #[test]
    fn one_degraded_gpu_among_eight_is_flagged() {
        let mut g = noise(3);
        let mut data = fleet(8, 60, |_, t| 85.0 + 5.0 * (t as f64 / 10.0).sin());
        for row in &mut data {
            for x in row.iter_mut() {
                *x += 2.0 * g();
            }
        }
        for x in &mut data[5] {
            *x -= 30.0;
        }
        let r = run(&data);
        assert_eq!(r.outliers(), vec![5], "{r:?}");
        let m = r.members[5];
        assert!(m.score > 0.9, "{m:?}");
        let e = m.evidence.expect("evidence");
        assert!(e.value < e.peer_median - 20.0, "{e:?}");
        assert!(e.mad_distance < -3.5, "{e:?}");
        assert_eq!(e.samples, 60);
        for (i, m) in r.members.iter().enumerate().filter(|(i, _)| *i != 5) {
            assert!(m.score < 0.5, "member {i}: {m:?}");
        }
    }

    #[test]
    fn fleet_wide_shift_flags_nobody() {
        let mut g = noise(5);
        let mut data = fleet(8, 80, |_, t| if t < 40 { 40.0 } else { 90.0 });
        for row in &mut data {
            for x in row.iter_mut() {
                *x += 2.0 * g();
            }
        }
        let r = run(&data);
        assert!(r.outliers().is_empty(), "{r:?}");
        assert!(r.members.iter().all(|m| m.verdict == Verdict::Normal));
    }

    #[test]
    fn a_short_spike_is_not_a_peer_departure() {
        let mut data = fleet(6, 50, |i, _| 50.0 + i as f64 * 0.5);
        data[2][30] = 500.0;
        assert!(run(&data).outliers().is_empty());
    }

    #[test]
    fn fewer_than_three_members_gives_no_verdict() {
        for n in 0..3 {
            let data = fleet(n, 10, |i, _| i as f64 * 100.0);
            let r = run(&data);
            assert_eq!(r.members.len(), n);
            assert!(r.no_verdict());
            assert!(r.members.iter().all(|m| m.score == 0.0 && m.evidence.is_none()));
        }
    }

    #[test]
    fn constant_series_are_handled() {
        // All equal: nobody departs.
        let r = run(&fleet(5, 20, |_, _| 100.0));
        assert!(r.outliers().is_empty(), "{r:?}");
        assert!(r.members.iter().all(|m| m.score == 0.0));
        // Seven pinned at 100 and one at 60: zero peer spread, the floor keeps the verdict finite.
        let r = run(&fleet(8, 20, |i, _| if i == 7 { 60.0 } else { 100.0 }));
        assert_eq!(r.outliers(), vec![7]);
        assert!(r.members[7].evidence.is_some_and(|e| e.mad_distance.is_finite()));
        // All zero (idle GPUs) and one slightly busy.
        let r = run(&fleet(4, 20, |i, _| if i == 0 { 1.0 } else { 0.0 }));
        assert_eq!(r.outliers(), vec![0]);
        assert!((0.0..=1.0).contains(&r.members[0].score));
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let mut data = fleet(5, 30, |i, _| if i == 4 { 10.0 } else { 50.0 + i as f64 });
        data[1] = vec![f64::NAN; 30];
        data[0][3] = f64::INFINITY;
        data[4][0] = f64::NAN;
        let r = run(&data);
        assert_eq!(r.members[1].verdict, Verdict::NoVerdict);
        assert_eq!(r.outliers(), vec![4]);
        assert_eq!(r.members[0].evidence.map(|e| e.samples), Some(29));
        // Too many gaps: at no instant are three members present.
        let sparse = fleet(3, 10, |i, t| if t % 3 == i { 1.0 } else { f64::NAN });
        assert!(run(&sparse).no_verdict());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let a: &[f64] = &[1.0, 2.0];
        let b: &[f64] = &[1.0];
        assert!(matches!(
            score_peers(&[a, b], &PeerConfig::default()),
            Err(Error::InvalidArgument { name: "series", .. })
        ));
        let cfg = PeerConfig { min_members: 2, ..PeerConfig::default() };
        assert!(score_peers(&[a, a, a], &cfg).is_err());
        let cfg = PeerConfig { threshold: f64::NAN, ..PeerConfig::default() };
        assert!(score_peers(&[a, a, a], &cfg).is_err());
        assert!(score_peers(&[], &PeerConfig::default()).is_ok_and(|r| r.members.is_empty()));
    }
}
