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

mod common;

use forecasting::anomaly::{Config, Detector};
use forecasting::nab::{PROFILES, score_corpus};

/// Scores reached by the default configuration (standard, reward_low_FP_rate, reward_low_FN_rate).
const REACHED: [f64; 3] = [75.62, 71.36, 78.93];
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
}
