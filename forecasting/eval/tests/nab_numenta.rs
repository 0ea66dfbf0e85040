//! The scorer reproduces EVAL.md's published numbers for Numenta HTM on the 44 development files.

mod common;

use fleetpilot_eval::nab::{PROFILES, score_corpus};

#[test]
fn numenta_htm_scores_match_eval_md() {
    let corpus = common::load_corpus();
    assert_eq!(corpus.len(), 44);
    let files: Vec<_> = corpus
        .iter()
        .map(|s| {
            let scores = common::numenta_scores(&s.key);
            assert_eq!(scores.len(), s.values.len(), "{}", s.key);
            common::scored(s, scores)
        })
        .collect();
    let expected = [(71.36, 0.544450), (65.37, 0.629761), (75.28, 0.544450)];
    for (profile, (score, threshold)) in PROFILES.iter().zip(expected) {
        let c = score_corpus(&files, profile).expect("valid corpus");
        println!(
            "{:<20} {:.2} threshold {:.6} raw {:.4} tp {} fp {} fn {}",
            profile.name, c.normalized, c.threshold, c.raw, c.true_positives, c.false_positives, c.false_negatives
        );
        assert_eq!(c.windows, 83);
        assert_eq!(format!("{:.2}", c.normalized), format!("{score:.2}"), "{}", profile.name);
        assert_eq!(format!("{:.6}", c.threshold), format!("{threshold:.6}"), "{}", profile.name);
    }
}
