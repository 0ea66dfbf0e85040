//! The detector settings that model selection chooses among (`EVAL.md` section 1).
//!
//! Leave-one-category-out cross-validation must re-make, on the other categories, every choice that was
//! made by looking at scores rather than fixed in advance. The shipped configuration was chosen among
//! these alternatives (each one tried on the development files and recorded in
//! `forecasting/eval/tests/nab_detector.rs`), so the grid lists them all and the cross-validation picks one
//! per fold together with the threshold. The grid is fixed here, in code, before any fold is scored;
//! adding a candidate because it wins a fold would defeat it.

use super::{Combine, Config, Detector};

/// One named setting of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Short name for reports (no spaces).
    pub name: &'static str,
    /// The detector settings.
    pub config: Config,
}

/// The grid: the shipped configuration first, then each alternative that was tried against it.
pub fn grid() -> Vec<Candidate> {
    let base = Config::default();
    let with = |name: &'static str, f: &dyn Fn(&mut Config)| {
        let mut config = base.clone();
        f(&mut config);
        Candidate { name, config }
    };
    vec![
        Candidate { name: "shipped", config: base.clone() },
        // Settings of the original detector, each an alternative once rejected on the dev scores.
        with("mean-floor-0.03", &|c| c.mean_floor = 0.03),
        with("linear-refractory", &|c| c.refractory_power = 1.0),
        with("seasonal-raw-scale", &|c| c.seasonal_sqrt = false),
        with("one-seasonal-day", &|c| c.seasonal_days = 1),
        with("seasonal-scale-5", &|c| c.seasonal_scale = 5.0),
        with("short-5", &|c| c.short = 5),
        with("no-level", &|c| c.level = false),
        with("no-seasonal", &|c| c.seasonal = false),
        with("no-novelty", &|c| c.novelty = false),
        // Issue #17: the combination rule and the components with settings fixed a priori.
        with("max", &|c| c.combine = Combine::Max),
        with("bocpd", &|c| c.bocpd = true),
        with("knn", &|c| c.knn = true),
        with("bocpd+knn", &|c| {
            c.bocpd = true;
            c.knn = true;
        }),
        with("max+bocpd", &|c| {
            c.bocpd = true;
            c.combine = Combine::Max;
        }),
    ]
}

/// Scores one series from its start with a fresh detector: one score per row (`timestamps_secs` and
/// `values` pair up; the shorter one bounds the output).
pub fn score_series(config: &Config, timestamps_secs: &[i64], values: &[f64]) -> Vec<f64> {
    let mut d = Detector::new(config.clone());
    timestamps_secs.iter().zip(values).map(|(&t, &v)| d.update(t, v).score).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_starts_with_the_shipped_configuration_and_names_are_unique() {
        let g = grid();
        assert_eq!(g[0].config, Config::default());
        let mut names: Vec<&str> = g.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), g.len());
        assert!(names.iter().all(|n| !n.contains(' ')));
        for c in g.iter().skip(1) {
            assert_ne!(c.config, g[0].config, "{} repeats the shipped setting", c.name);
        }
    }

    #[test]
    fn score_series_scores_every_row() {
        let ts: Vec<i64> = (0..500).map(|i| i * 300).collect();
        let vs: Vec<f64> = (0..500).map(|i| (i % 7) as f64).collect();
        for c in grid() {
            let s = score_series(&c.config, &ts, &vs);
            assert_eq!(s.len(), 500);
            assert!(s.iter().all(|x| (0.0..=1.0).contains(x)), "{}", c.name);
        }
    }
}
