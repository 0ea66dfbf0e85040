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

mod common;

use forecasting::anomaly::{Config, Detector};
use forecasting::nab::{PROFILES, leave_one_category_out, score_corpus};

/// Scores reached by the default configuration (standard, reward_low_FP_rate, reward_low_FN_rate).
const REACHED: [f64; 3] = [75.62, 71.36, 78.93];
/// Leave-one-category-out means reached by the default configuration (same order).
const CV_REACHED: [f64; 3] = [74.77, 67.76, 77.58];
const MARGIN: f64 = 0.5;

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
