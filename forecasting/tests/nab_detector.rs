//! The detector's NAB scores on the 44 development files (a regression guard, not a tuning loop).

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
