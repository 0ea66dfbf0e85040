//! The detector's NAB scores on the 44 development files (a regression guard, not a tuning loop).
//!
//! Issue #5 asked for reward_low_FN_rate >= 80 without fitting to the labels. Tried on `anomaly-peers`
//! and rejected (all three profiles fell, each with its own optimised threshold):
//! - novelty quantised on a square-root grid for non-negative series: 72.21 / 68.91 / 75.05;
//! - Fisher's combination of the level, seasonal and novelty tail probabilities as an extra signal:
//!   73.05 / 67.40 / 77.21 (correlated signals overstate joint evidence: 116 false positives).
//!
//! Of the 12 missed windows, 3 lie before the likelihood is trusted (about the first 460 rows: iio NetworkIn
//! twice, exchange-2 cpc; Numenta HTM misses them too) and the others peak below 0.45 before the
//! refractory period, so the remaining gap needs a new kind of evidence, not a different threshold.
//!
//! Second attempt (`h-nab`), same protocol; none kept (standard / reward_low_FP / reward_low_FN):
//! - earlier trust (`lik_skip` 50, `lik_warmup` 150): 72.31 / 68.76 / 75.51; (`min_history` 32, 32, 100):
//!   71.31 / 66.73 / 75.65. Immature long-run statistics add false positives; the warm-up windows stay missed;
//! - exact binomial tail for the novelty stream (it is 0/1) instead of the Gaussian one: 68.92 / 64.78 / 72.05.
//!   The floored Gaussian is what lets novelty bursts win windows;
//! - two-sided CUSUM of robust z-scores (k 0.5, h 5) as a fourth likelihood: 75.49 / 71.09 / 78.84 (no new
//!   window, 2 more false positives);
//! - seasonal reference = median of the 3 values around the same time on each of the 2 days: 76.06 / 72.31 /
//!   79.22, but worse on the odd-position half of the files (standard 76.57 -> 75.57) and ±2 rows was worse
//!   (75.20 / 72.29 / 78.25): noise, not an improvement;
//! - out of range of the recent window by twice its span: 76.14 / 71.01 / 79.68, with the median reference
//!   79.92 for reward_low_FN; both margins were picked after looking at the labels, so they were not kept.
//!
//! Missed windows with no visible change in the data: ec2 cpu fe7f93 and rds cpu cc0c53; flat runs (disk write
//! c0d644) are no longer than earlier ones in the same file.
//!
//! Issue #17: from here on every change is judged by leave-one-category-out cross-validation
//! (`fleetpilot eval nab --cv`, [`leave_one_category_out`]) as well as the plain dev score. Figures below are
//! standard dev / CV mean / pooled held-out, then reward_low_FP and reward_low_FN as dev / CV mean; the CV
//! folds are artificialWithAnomaly / realAWSCloudwatch / realAdExchange / realTweets (artificialNoAnomaly has
//! no window). Note how much the 6-window artificialWithAnomaly fold swings (46 to 92 below): the pooled
//! figure is the steadier one.
//! - default configuration (kept): 75.62 / 74.77 / 74.51 (folds 77.2 / 71.5 / 73.0 / 77.4); 71.36 / 67.76;
//!   78.93 / 77.58.
//! - Bayesian online changepoint detection (Adams & MacKay, Normal-Gamma segments, prior centred on the window
//!   median with its robust spread, 32 run lengths, the oldest absorbing; raw signal P(segment began within
//!   the last `short` rows)) as a fourth likelihood signal, combined by the same maximum. Rejected, every
//!   variant lowers both figures. Hazard 1/100: 73.70 / 73.01 / 72.16; 70.25 / 67.61; 77.25 / 75.90.
//!   Hazard 1/288: 72.58 / 69.11 / 70.62; 70.14 / 67.28; 76.17 / 74.74. Hazard 1/1000: 72.05 / 68.83 /
//!   70.19; 69.08 / 66.73; 74.94 / 71.37. On rank-gaussianised input (Φ⁻¹ of the window mid-rank, prior
//!   N(0, 1)): 71.47 / 67.81 / 68.96. Raw = P(began within 3 rows): 72.23 / 72.18 / 70.73 (132 false
//!   positives); both: 69.82 / 66.00 / 67.42. In place of the level signal: 72.08 / 65.03 / 69.33, and with
//!   the 3-row raw 72.23 / 72.22 / 70.80. The segment posterior reacts to the heavy tails and slow drifts of
//!   real series; through the maximum each firing also raises the refractory bar for the next real event.
//! - conformal k-nearest-neighbour signal on lagged windows (KNN-CAD-like: the last 8 values as window
//!   ranks, nonconformity = mean distance to the 3 nearest of the last 96 non-overlapping windows,
//!   conformal p-value among the last 96 nonconformities) as a fourth likelihood signal. With raw `1 - p`
//!   it never reaches the threshold (the short mean of p-values is too autocorrelated for a small tail):
//!   figures identical to the default. With raw 1 when the window is stranger than all 96 before it (a 0/1
//!   stream like novelty): 67.30 / 64.98 / 65.33 (203 false positives); 60.29 / 48.98; 74.55 / 72.80. In
//!   place of the level signal it catches 3 more windows (74 of 83) but with 267 false positives: 67.25 /
//!   61.10 / 64.21. Rejected.
//! - ablations of today's settings (none kept; each is worse on at least two of the six figures):
//!   Numenta's mean floor 0.03: 73.97 / 76.69 / 72.71 (the CV mean rises only through the 6-window fold,
//!   92.5; the pooled figure falls); 69.44 / 65.88; 77.42 / 79.72. Linear refractory bar: 73.63 / 72.43 /
//!   72.52; 69.69 / 65.63; 76.80 / 75.15. Seasonal on the raw scale: 73.96 / 73.57 / 72.65; 69.93 / 66.45;
//!   77.70 / 76.53. One seasonal day: 74.43 / 73.72 / 73.31; 70.96 / 70.87; 77.73 / 76.63. Seasonal scale
//!   5: 74.59 / 69.43 / 71.04; 69.74 / 66.95; 78.24 / 72.88. No level signal: 75.69 / 74.81 / 74.58;
//!   71.49 / 63.87; 78.97 / 77.61. No novelty: 65.86 / 68.53 / 64.69. No seasonal: 73.32 / 66.82 / 71.95.
//!   Short mean of 5 rows: 72.02 / 69.19 / 67.37.
//!
//! Issue #17, `h-det`: the protocol now re-makes every choice per fold. [`grid`] lists the shipped setting
//! and each alternative tried against it (the ablations above, the combination rule, the new components),
//! fixed in code before scoring; `fleetpilot eval nab --cv` and [`model_selection_is_cross_validated`]
//! choose the setting and the threshold on four categories and score the fifth. Figures: dev / CV mean
//! (threshold only) / pooled per profile, then the whole protocol (grid + threshold per fold).
//! - before (`Combine::Max`, the configuration of `main`): standard 75.62 / 74.77 / 74.51, reward_low_FP
//!   71.36 / 67.76 / 69.10, reward_low_FN 78.93 / 77.58 / 77.79; whole protocol over the grid of that day
//!   (the ablations and the max rule as the shipped one): standard 74.08 / 73.52 pooled, reward_low_FP
//!   63.44 / 67.16, reward_low_FN 76.84 / 76.73 (folds pick `hmp` or `hmp+bocpd+knn` on realAWSCloudwatch:
//!   68.63).
//! - harmonic-mean p-value combination of the signals' tails (Wilson 2019; `Combine::HarmonicMean`), kept:
//!   75.79 / 74.86 / 74.64; 71.65 / 67.94 / 69.36; 79.04 / 77.64 / 77.87. It never rewards agreement beyond
//!   the smallest tail, so it is the maximum up to a factor of at most the number of signals: the gain is
//!   small but on all nine figures.
//! - Bayesian online changepoint detection (`bocpd.rs`: Gaussian segments with Normal-Gamma prior on the
//!   window median and robust spread, hazard 1/250 fixed a priori as in Adams & MacKay's examples, 32 run
//!   lengths, the raw signal the surprisal of the predictive two-sided tail). With `1 - tail` as the raw
//!   signal it never reached the threshold (figures identical to the shipped ones: a uniform stream's short
//!   mean barely moves); with the surprisal: under the harmonic mean 73.62 / 73.41 / 72.48; 68.90 / 65.81;
//!   77.19 / 76.40; under the maximum 74.58 / 74.10 / 73.47; 69.75 / 66.41; 78.23 / 77.13. Not kept (off by
//!   default, `Config::bocpd`): its predictive is a Gaussian segment model and real series' spikes and
//!   heavy tails read as changepoints, adding false positives before the novelty signal's detections.
//! - conformal k-NN on lagged windows (`knn.rs`: shapes of the last 8 window ranks, mean distance to the 3
//!   nearest of the 96 earlier non-overlapping shapes, conformal p-value among the last 96): under the
//!   maximum identical to the shipped figures (it never fires first: a new shape coincides with novelty or
//!   out of range); under the harmonic mean 74.67 / 74.08 / 73.52; 70.53 / 67.16; 77.89 / 76.84 (it only
//!   adds one more tail to the mean). Not kept (`Config::knn`). Both together: 73.69 / 73.45 / 72.54;
//!   69.03 / 65.90; 77.24 / 76.43.
//! - the ablations re-run under the harmonic mean: no level signal 75.86 / 74.90 / 74.71; 71.79 / 64.04;
//!   79.09 / 77.67 (better on five figures, 3.9 worse on reward_low_FP's CV mean: not kept); mean floor
//!   0.03 74.23 / 77.18 / 73.37 (CV mean up only through the 6-window fold, pooled down); the others
//!   lower on both.
//! - whole protocol over today's grid (15 settings): standard CV mean 74.90, pooled 74.71 (folds
//!   artificialWithAnomaly 77.17 shipped, realAWSCloudwatch 71.73, realAdExchange 72.99, realTweets 77.71,
//!   the last three `no-level`); reward_low_FP 64.30 / 68.42 (artificialWithAnomaly picks `no-seasonal`
//!   on the others and scores 45.47); reward_low_FN 77.64 / 77.87. Choosing among many settings costs
//!   about what it gains: the threshold-only figures of the shipped setting are as high.

mod common;

use fleetpilot_eval::nab::{PROFILES, ScoredFile, leave_one_category_out, score_corpus};
use forecasting::anomaly::selection::{grid, score_series};
use forecasting::anomaly::{Config, Detector};

/// Scores reached by the default configuration (standard, reward_low_FP_rate, reward_low_FN_rate).
const REACHED: [f64; 3] = [75.79, 71.65, 79.04];
/// Leave-one-category-out means reached by the default configuration with only the threshold chosen per
/// fold (same order).
const CV_REACHED: [f64; 3] = [74.86, 67.94, 77.64];
/// Leave-one-category-out means of the whole protocol: the grid's setting and the threshold chosen per fold.
const CV_GRID_REACHED: [f64; 3] = [74.90, 64.30, 77.64];
const MARGIN: f64 = 0.5;

fn score_with(corpus: &[common::NabSeries], config: &Config) -> Vec<ScoredFile> {
    corpus
        .iter()
        .map(|s| {
            let secs: Vec<i64> = s.micros.iter().map(|t| t.div_euclid(1_000_000)).collect();
            common::scored(s, score_series(config, &secs, &s.values))
        })
        .collect()
}

#[test]
fn detector_nab_scores_do_not_regress() {
    let corpus = common::load_corpus();
    let files: Vec<_> = corpus
        .iter()
        .map(|s| {
            let mut d = Detector::new(Config::default());
            let scores =
                s.micros.iter().zip(&s.values).map(|(&t, &v)| d.update(t.div_euclid(1_000_000), v).score).collect();
            common::scored(s, scores)
        })
        .collect();
    for (profile, reached) in PROFILES.iter().zip(REACHED) {
        let c = score_corpus(&files, profile).expect("valid corpus");
        println!(
            "{:<20} {:.2} threshold {:.4} (tp {} fp {} fn {})",
            profile.name, c.normalized, c.threshold, c.true_positives, c.false_positives, c.false_negatives
        );
        assert!(c.normalized >= reached - MARGIN, "{}: {:.2}", profile.name, c.normalized);
    }
    for (profile, reached) in PROFILES.iter().zip(CV_REACHED) {
        let cv = leave_one_category_out(&[&files], profile).expect("valid corpus");
        let folds: Vec<String> = cv
            .folds
            .iter()
            .map(|f| format!("{} {}", f.category, f.normalized().map_or("n/a".into(), |v| format!("{v:.2}"))))
            .collect();
        println!("{:<20} cv mean {:.2} pooled {:.2} ({})", profile.name, cv.mean, cv.pooled, folds.join(", "));
        assert!(cv.mean >= reached - MARGIN, "{} cv: {:.2}", profile.name, cv.mean);
    }
}

/// The whole model-selection protocol of issue #17 on the grid ([`grid`]): per candidate its dev score and
/// threshold-only cross-validation, then the cross-validation that chooses the candidate per fold too.
#[test]
fn model_selection_is_cross_validated() {
    let corpus = common::load_corpus();
    let candidates = grid();
    let scored: Vec<Vec<ScoredFile>> = candidates.iter().map(|c| score_with(&corpus, &c.config)).collect();
    for (c, files) in candidates.iter().zip(&scored) {
        let mut line = format!("{:<20}", c.name);
        for p in &PROFILES {
            let dev = score_corpus(files, p).expect("valid corpus").normalized;
            let cv = leave_one_category_out(&[files], p).expect("valid corpus");
            line += &format!("  {} {dev:.2} / {:.2} / {:.2}", &p.name[..p.name.len().min(13)], cv.mean, cv.pooled);
        }
        println!("{line}");
    }
    let refs: Vec<&[ScoredFile]> = scored.iter().map(Vec::as_slice).collect();
    for (p, reached) in PROFILES.iter().zip(CV_GRID_REACHED) {
        let cv = leave_one_category_out(&refs, p).expect("valid corpus");
        let folds: Vec<String> = cv
            .folds
            .iter()
            .map(|f| {
                format!(
                    "{} {} ({})",
                    f.category,
                    f.normalized().map_or("n/a".into(), |v| format!("{v:.2}")),
                    candidates[f.candidate].name
                )
            })
            .collect();
        println!("{:<20} grid cv mean {:.2} pooled {:.2} ({})", p.name, cv.mean, cv.pooled, folds.join(", "));
        assert!(cv.mean >= reached - MARGIN, "{} grid cv: {:.2}", p.name, cv.mean);
    }
}
