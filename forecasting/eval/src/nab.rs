//! Numenta Anomaly Benchmark (NAB v1.1) scoring, as defined in `EVAL.md` section 1.
//!
//! Pure functions over parsed input: per file the per-row anomaly scores (their count is the number of
//! rows) and the label windows as inclusive row ranges. Reading the CSV/JSON files is left to the caller;
//! [`parse_timestamp_micros`] and [`window_rows`] help map NAB's window timestamps to row indices the way
//! NAB does (a window holds the rows whose timestamp lies within `[start, end]`).
//!
//! Scoring rules (NAB v1.1):
//! - the first `min(floor(0.15 * N), 750)` rows of a file (the probationary period) are ignored;
//! - a detection is a row whose score is `>= threshold`;
//! - inside a window `[l, r]` (width `W`) a detection at row `i` is worth
//!   `A_TP * sigma(-(r - i + 1) / W) / sigma(-1)`, only the earliest detection of a window counts, and a
//!   window without detection costs `-A_FN`;
//! - a detection outside every window is worth `A_FP * sigma(|i - r_p| / (W_p - 1))` when a window (right
//!   edge `r_p`, width `W_p`) ended before it, `-A_FP` otherwise;
//! - one threshold per profile, shared by all files, maximises the corpus raw score (every distinct score
//!   value is a candidate; ties go to the highest threshold, as NAB's `max` over a descending sweep does);
//! - normalised score `100 * (raw - raw_null) / (raw_perfect - raw_null)`.
//!
//! The sweep over thresholds is a single pass over all scorable rows sorted by descending score, so the
//! whole optimisation costs `O(P log P)` for `P` scorable rows.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Errors for inputs the scorer cannot interpret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NabError {
    /// A window's start row is after its end row.
    #[error("file `{file}`: window {index} starts at row {start} after its end row {end}")]
    InvertedWindow { file: String, index: usize, start: usize, end: usize },
    /// A window reaches past the last row of its file.
    #[error("file `{file}`: window {index} ends at row {end} but the file has {rows} rows")]
    WindowOutOfRange { file: String, index: usize, end: usize, rows: usize },
    /// Two windows of one file share rows (NAB windows never overlap).
    #[error("file `{file}`: windows {first} and {second} overlap")]
    OverlappingWindows { file: String, first: usize, second: usize },
    /// Columns of different lengths were given to [`format_results_csv`].
    #[error("column lengths differ: {timestamps} timestamps, {values} values, {scores} scores")]
    LengthMismatch { timestamps: usize, values: usize, scores: usize },
    /// Cross-validation was given no candidate setting.
    #[error("cross-validation needs at least one candidate")]
    NoCandidate,
    /// A cross-validation candidate does not score the same files, in the same order, as the first.
    #[error("candidate {index} does not score the same files as candidate 0")]
    CandidateMismatch { index: usize },
}

/// A NAB cost profile: weights of true positives, false positives and false negatives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub a_tp: f64,
    pub a_fp: f64,
    pub a_fn: f64,
}

/// NAB's `standard` profile.
pub const STANDARD: Profile = Profile { name: "standard", a_tp: 1.0, a_fp: 0.11, a_fn: 1.0 };

/// NAB's `reward_low_FP_rate` profile.
pub const REWARD_LOW_FP_RATE: Profile = Profile { name: "reward_low_FP_rate", a_tp: 1.0, a_fp: 0.22, a_fn: 1.0 };

/// NAB's `reward_low_FN_rate` profile.
pub const REWARD_LOW_FN_RATE: Profile = Profile { name: "reward_low_FN_rate", a_tp: 1.0, a_fp: 0.11, a_fn: 2.0 };

/// The three NAB profiles in NAB's usual order.
pub const PROFILES: [Profile; 3] = [STANDARD, REWARD_LOW_FP_RATE, REWARD_LOW_FN_RATE];

/// Threshold reported when the best choice is to never fire (NAB's initial sweep threshold).
pub const NO_DETECTION_THRESHOLD: f64 = 1.1;

/// A label window as an inclusive range of row indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: usize,
    pub end: usize,
}

impl Window {
    /// Number of rows in the window (`end - start + 1`).
    pub fn width(&self) -> usize {
        self.end.saturating_sub(self.start) + 1
    }
}

/// One scored file of the corpus: its name (for reports), its windows and one score per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredFile {
    pub name: String,
    pub windows: Vec<Window>,
    pub scores: Vec<f64>,
}

impl ScoredFile {
    /// Number of rows of the file.
    pub fn rows(&self) -> usize {
        self.scores.len()
    }

    /// Checks that windows are in range, not inverted and do not overlap.
    pub fn validate(&self) -> Result<(), NabError> {
        let rows = self.rows();
        let mut order: Vec<usize> = (0..self.windows.len()).collect();
        order.sort_by_key(|&k| self.windows[k].start);
        for (index, w) in self.windows.iter().enumerate() {
            if w.start > w.end {
                return Err(NabError::InvertedWindow { file: self.name.clone(), index, start: w.start, end: w.end });
            }
            if w.end >= rows {
                return Err(NabError::WindowOutOfRange { file: self.name.clone(), index, end: w.end, rows });
            }
        }
        for pair in order.windows(2) {
            if self.windows[pair[1]].start <= self.windows[pair[0]].end {
                return Err(NabError::OverlappingWindows { file: self.name.clone(), first: pair[0], second: pair[1] });
            }
        }
        Ok(())
    }
}

/// Length of NAB's probationary period for a file of `rows` rows: `min(floor(0.15 * rows), 750)`.
pub fn probationary_length(rows: usize) -> usize {
    // floor(0.15 * n) computed exactly in integers.
    (rows.saturating_mul(15) / 100).min(750)
}

/// NAB's scaled sigmoid: `2 / (1 + exp(5y)) - 1`, and `-1` when `y > 3`.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 { -1.0 } else { 2.0 / (1.0 + (5.0 * y).exp()) - 1.0 }
}

/// What a detection at one row would be worth, before profile weights.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowKind {
    /// Inside window `window` (index into the file's sorted windows); unit TP value `sigma(..)/sigma(-1)`.
    InWindow { window: usize, unit: f64 },
    /// Outside all windows; unit FP value (`-1` to `+1`), multiplied by `A_FP`.
    Outside { unit: f64 },
}

/// Per-row detection values of a validated file (rows after the probationary period only), plus its
/// windows sorted by start. `scorable_windows[k]` is false for windows entirely inside the probation.
struct FileLayout {
    probation: usize,
    kinds: Vec<RowKind>,
    scorable_windows: Vec<bool>,
}

fn layout(file: &ScoredFile) -> Result<FileLayout, NabError> {
    file.validate()?;
    let rows = file.rows();
    let probation = probationary_length(rows);
    let mut windows = file.windows.clone();
    windows.sort_by_key(|w| w.start);
    let max_tp = scaled_sigmoid(-1.0);
    let mut kinds = Vec::with_capacity(rows.saturating_sub(probation));
    let mut next = 0usize; // next window not yet finished
    let mut prev: Option<Window> = None; // latest window that ended before the row
    for i in probation..rows {
        while next < windows.len() && windows[next].end < i {
            prev = Some(windows[next]);
            next += 1;
        }
        let kind = match windows.get(next) {
            Some(w) if w.start <= i => {
                let width = w.width() as f64;
                let pos = -((w.end - i + 1) as f64) / width;
                RowKind::InWindow { window: next, unit: scaled_sigmoid(pos) / max_tp }
            }
            _ => match prev {
                None => RowKind::Outside { unit: -1.0 },
                Some(p) => {
                    let distance = i.abs_diff(p.end) as f64;
                    let denom = (p.width() - 1) as f64;
                    // A one-row window leaves the NAB formula undefined (division by zero): treat
                    // every later row as far behind it.
                    let pos = if denom > 0.0 { distance / denom } else { f64::INFINITY };
                    RowKind::Outside { unit: scaled_sigmoid(pos) }
                }
            },
        };
        kinds.push(kind);
    }
    let scorable_windows = windows.iter().map(|w| w.end >= probation).collect();
    Ok(FileLayout { probation, kinds, scorable_windows })
}

/// Score of one file at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileScore {
    pub name: String,
    /// Raw (weighted) score of the file.
    pub raw: f64,
    /// Windows with at least one detection.
    pub true_positives: usize,
    /// Detections outside every window.
    pub false_positives: usize,
    /// Windows without detection.
    pub false_negatives: usize,
    /// Scorable windows (not entirely inside the probationary period).
    pub windows: usize,
}

/// Scores one file at a fixed threshold.
pub fn score_file(file: &ScoredFile, profile: &Profile, threshold: f64) -> Result<FileScore, NabError> {
    let lay = layout(file)?;
    let mut best: Vec<Option<f64>> = vec![None; lay.scorable_windows.len()];
    let mut raw = 0.0;
    let mut false_positives = 0;
    for (k, kind) in lay.kinds.iter().enumerate() {
        let s = file.scores[lay.probation + k];
        // NaN scores never count as detections.
        let detected = s >= threshold;
        if !detected {
            continue;
        }
        match *kind {
            RowKind::InWindow { window, unit } => {
                let v = profile.a_tp * unit;
                let slot = &mut best[window];
                *slot = Some(slot.map_or(v, |b: f64| b.max(v)));
            }
            RowKind::Outside { unit } => {
                raw += profile.a_fp * unit;
                false_positives += 1;
            }
        }
    }
    let mut true_positives = 0;
    let mut false_negatives = 0;
    let mut windows = 0;
    for (w, scorable) in lay.scorable_windows.iter().enumerate() {
        if !scorable {
            continue;
        }
        windows += 1;
        match best[w] {
            Some(v) => {
                raw += v;
                true_positives += 1;
            }
            None => {
                raw -= profile.a_fn;
                false_negatives += 1;
            }
        }
    }
    Ok(FileScore { name: file.name.clone(), raw, true_positives, false_positives, false_negatives, windows })
}

/// Result of scoring a corpus with one profile and its optimised threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusScore {
    pub profile: Profile,
    /// The optimised threshold ([`NO_DETECTION_THRESHOLD`] when never firing is best).
    pub threshold: f64,
    pub raw: f64,
    pub raw_null: f64,
    pub raw_perfect: f64,
    /// `100 * (raw - raw_null) / (raw_perfect - raw_null)` (0 when the corpus has no window).
    pub normalized: f64,
    pub windows: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub files: Vec<FileScore>,
}

/// One candidate of the threshold sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdScore {
    pub threshold: f64,
    pub raw: f64,
}

/// Raw corpus score for every candidate threshold, from the highest threshold (no detection,
/// [`NO_DETECTION_THRESHOLD`] or above every score) down to the lowest distinct score.
///
/// NaN scores never count as detections. One pass over the scorable rows sorted by descending score.
pub fn sweep_thresholds(files: &[ScoredFile], profile: &Profile) -> Result<Vec<ThresholdScore>, NabError> {
    // (score, contribution kind) for every scorable row, windows numbered globally.
    let mut points: Vec<(f64, RowKind)> = Vec::new();
    let mut window_base = 0usize;
    let mut total_windows = 0usize;
    let mut scorable_global: Vec<bool> = Vec::new();
    for file in files {
        let lay = layout(file)?;
        for (k, kind) in lay.kinds.iter().enumerate() {
            let s = file.scores[lay.probation + k];
            if s.is_nan() {
                continue;
            }
            let kind = match *kind {
                RowKind::InWindow { window, unit } => RowKind::InWindow { window: window_base + window, unit },
                other => other,
            };
            points.push((s, kind));
        }
        total_windows += lay.scorable_windows.iter().filter(|&&b| b).count();
        window_base += lay.scorable_windows.len();
        scorable_global.extend_from_slice(&lay.scorable_windows);
    }
    points.sort_by(|a, b| b.0.total_cmp(&a.0));

    let mut raw = -profile.a_fn * total_windows as f64;
    let mut best: Vec<f64> = vec![-profile.a_fn; window_base];
    let top = points.first().map_or(f64::NEG_INFINITY, |p| p.0);
    let mut current = if top < NO_DETECTION_THRESHOLD { NO_DETECTION_THRESHOLD } else { f64::INFINITY };
    let mut out = Vec::new();
    for &(s, kind) in &points {
        if s != current {
            out.push(ThresholdScore { threshold: current, raw });
            current = s;
        }
        match kind {
            RowKind::InWindow { window, unit } => {
                let v = profile.a_tp * unit;
                if scorable_global[window] && v > best[window] {
                    raw += v - best[window];
                    best[window] = v;
                }
            }
            RowKind::Outside { unit } => raw += profile.a_fp * unit,
        }
    }
    out.push(ThresholdScore { threshold: current, raw });
    Ok(out)
}

/// The best threshold of a sweep: maximal raw score, ties resolved to the highest threshold.
pub fn best_threshold(sweep: &[ThresholdScore]) -> ThresholdScore {
    let mut best = ThresholdScore { threshold: NO_DETECTION_THRESHOLD, raw: f64::NEG_INFINITY };
    for t in sweep {
        if t.raw > best.raw {
            best = *t;
        }
    }
    best
}

/// Scores a corpus with one profile: optimises the shared threshold, then scores every file with it.
pub fn score_corpus(files: &[ScoredFile], profile: &Profile) -> Result<CorpusScore, NabError> {
    let sweep = sweep_thresholds(files, profile)?;
    let best = best_threshold(&sweep);
    score_corpus_at(files, profile, best.threshold)
}

/// Scores a corpus with one profile at a given threshold (no optimisation).
pub fn score_corpus_at(files: &[ScoredFile], profile: &Profile, threshold: f64) -> Result<CorpusScore, NabError> {
    let per_file = files.iter().map(|f| score_file(f, profile, threshold)).collect::<Result<Vec<_>, _>>()?;
    let windows: usize = per_file.iter().map(|f| f.windows).sum();
    let raw: f64 = per_file.iter().map(|f| f.raw).sum();
    let raw_null = -profile.a_fn * windows as f64;
    let raw_perfect = profile.a_tp * windows as f64;
    let span = raw_perfect - raw_null;
    let normalized = if span > 0.0 { 100.0 * (raw - raw_null) / span } else { 0.0 };
    Ok(CorpusScore {
        profile: *profile,
        threshold,
        raw,
        raw_null,
        raw_perfect,
        normalized,
        windows,
        true_positives: per_file.iter().map(|f| f.true_positives).sum(),
        false_positives: per_file.iter().map(|f| f.false_positives).sum(),
        false_negatives: per_file.iter().map(|f| f.false_negatives).sum(),
        files: per_file,
    })
}

/// The category of a corpus file: its name up to the first `/` (`realTweets/Twitter_volume_AAPL.csv` ->
/// `realTweets`); the whole name when it has none.
pub fn category_of(name: &str) -> &str {
    name.split_once('/').map_or(name, |(c, _)| c)
}

/// One fold of leave-one-category-out cross-validation: the held-out category scored with the setting and
/// threshold chosen on the other categories.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CvFold {
    /// The held-out category.
    pub category: String,
    /// Index of the candidate setting chosen on the other categories.
    pub candidate: usize,
    /// Threshold chosen on the other categories (for that candidate).
    pub threshold: f64,
    /// Normalised score of the training categories at that choice (what was optimised).
    pub train_normalized: f64,
    /// The held-out category scored at that choice. Its `normalized` is meaningless when it has no
    /// window (`windows == 0`: only false positives can happen there); see [`CvFold::normalized`].
    pub held_out: CorpusScore,
}

impl CvFold {
    /// Normalised held-out score, `None` for a category without scorable windows (NAB's normalisation is
    /// `0 / 0` there; its false positives still count in [`CvReport::pooled`]).
    pub fn normalized(&self) -> Option<f64> {
        (self.held_out.windows > 0).then_some(self.held_out.normalized)
    }
}

/// Leave-one-category-out cross-validation of one profile (`EVAL.md` section 1, model selection).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CvReport {
    pub profile: Profile,
    /// One fold per category, in order of first appearance in the corpus.
    pub folds: Vec<CvFold>,
    /// Mean of the folds' normalised held-out scores over the folds that have windows (`NaN` if none).
    pub mean: f64,
    /// All held-out raw scores summed and normalised over all windows of the corpus: every file scored
    /// only by a choice made without its category, including the false positives of window-free categories.
    pub pooled: f64,
}

/// Leave-one-category-out cross-validation over a corpus, for one profile.
///
/// `candidates` are the same corpus scored by each setting under consideration (same files, same order;
/// one candidate when nothing but the threshold is chosen). For each category, the candidate and threshold
/// that maximise the raw score of the other categories together (ties: the first candidate, the highest
/// threshold, as in [`best_threshold`]) score the held-out category.
pub fn leave_one_category_out(candidates: &[&[ScoredFile]], profile: &Profile) -> Result<CvReport, NabError> {
    let Some(first) = candidates.first() else { return Err(NabError::NoCandidate) };
    for (index, c) in candidates.iter().enumerate().skip(1) {
        if c.len() != first.len() || c.iter().zip(first.iter()).any(|(a, b)| a.name != b.name) {
            return Err(NabError::CandidateMismatch { index });
        }
    }
    let mut categories: Vec<&str> = Vec::new();
    for f in first.iter() {
        let c = category_of(&f.name);
        if !categories.contains(&c) {
            categories.push(c);
        }
    }
    let split = |files: &[ScoredFile], held: &str| -> (Vec<ScoredFile>, Vec<ScoredFile>) {
        files.iter().cloned().partition(|f| category_of(&f.name) != held)
    };
    let mut folds = Vec::with_capacity(categories.len());
    let mut pooled_raw = 0.0;
    let mut pooled_windows = 0usize;
    for held in &categories {
        let mut chosen: Option<(usize, ThresholdScore, f64)> = None;
        for (k, files) in candidates.iter().enumerate() {
            let (train, _) = split(files, held);
            let best = best_threshold(&sweep_thresholds(&train, profile)?);
            if chosen.as_ref().is_none_or(|(_, b, _)| best.raw > b.raw) {
                let train_score = score_corpus_at(&train, profile, best.threshold)?;
                chosen = Some((k, best, train_score.normalized));
            }
        }
        // `candidates` is non-empty, so a choice exists.
        let Some((candidate, best, train_normalized)) = chosen else { return Err(NabError::NoCandidate) };
        let (_, test) = split(candidates[candidate], held);
        let held_out = score_corpus_at(&test, profile, best.threshold)?;
        pooled_raw += held_out.raw;
        pooled_windows += held_out.windows;
        folds.push(CvFold {
            category: (*held).to_string(),
            candidate,
            threshold: best.threshold,
            train_normalized,
            held_out,
        });
    }
    let scored: Vec<f64> = folds.iter().filter_map(CvFold::normalized).collect();
    let mean = if scored.is_empty() { f64::NAN } else { scored.iter().sum::<f64>() / scored.len() as f64 };
    let span = (profile.a_tp + profile.a_fn) * pooled_windows as f64;
    let pooled = if span > 0.0 { 100.0 * (pooled_raw + profile.a_fn * pooled_windows as f64) / span } else { f64::NAN };
    Ok(CvReport { profile: *profile, folds, mean, pooled })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 12 {
        return None;
    }
    s.parse().ok()
}

/// Parses a NAB timestamp `YYYY-MM-DD HH:MM:SS[.ffffff]` (a `T` separator is accepted too) into
/// microseconds since the Unix epoch (UTC, no time zone). Returns `None` on malformed input.
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-');
    let (y, mo, da) = (parse_digits(d.next()?)?, parse_digits(d.next()?)?, parse_digits(d.next()?)?);
    if d.next().is_some() || !(0..=9999).contains(&y) || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (time, None),
    };
    let mut t = hms.split(':');
    let (h, mi, se) = (parse_digits(t.next()?)?, parse_digits(t.next()?)?, parse_digits(t.next()?)?);
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let micros = match frac {
        None => 0,
        Some(f) => {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let padded = format!("{f:0<6}");
            padded[..6].parse::<i64>().ok()?
        }
    };
    let days = days_from_civil(y, mo, da);
    Some(((days * 86_400 + h * 3_600 + mi * 60 + se) * 1_000_000) + micros)
}

/// Maps windows given as `[start, end]` instants to inclusive row ranges: a window holds the rows whose
/// instant lies within `[start, end]` (rows in time order; any consistent unit). Windows containing no
/// row are dropped.
pub fn window_rows(row_instants: &[i64], windows: &[(i64, i64)]) -> Vec<Window> {
    windows
        .iter()
        .filter_map(|&(start, end)| {
            let first = row_instants.partition_point(|&t| t < start);
            let past = row_instants.partition_point(|&t| t <= end);
            (past > first).then(|| Window { start: first, end: past - 1 })
        })
        .collect()
}

/// Formats the per-file results CSV of `EVAL.md` (`timestamp,value,anomaly_score`, one row per input row).
pub fn format_results_csv<T: AsRef<str>>(timestamps: &[T], values: &[f64], scores: &[f64]) -> Result<String, NabError> {
    if timestamps.len() != values.len() || values.len() != scores.len() {
        return Err(NabError::LengthMismatch {
            timestamps: timestamps.len(),
            values: values.len(),
            scores: scores.len(),
        });
    }
    let mut out = String::with_capacity(32 + timestamps.len() * 40);
    out.push_str("timestamp,value,anomaly_score\n");
    for ((t, v), s) in timestamps.iter().zip(values).zip(scores) {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{},{},{}", t.as_ref(), v, s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rows: usize, windows: &[(usize, usize)], hits: &[(usize, f64)]) -> ScoredFile {
        let mut scores = vec![0.0; rows];
        for &(i, s) in hits {
            scores[i] = s;
        }
        ScoredFile {
            name: "f".into(),
            windows: windows.iter().map(|&(start, end)| Window { start, end }).collect(),
            scores,
        }
    }

    #[test]
    fn probation_and_sigmoid() {
        assert_eq!(probationary_length(0), 0);
        assert_eq!(probationary_length(100), 15);
        assert_eq!(probationary_length(4032), 604);
        assert_eq!(probationary_length(22_695), 750);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
        assert!((scaled_sigmoid(0.0)).abs() < 1e-15);
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_151_430_3).abs() < 1e-12);
    }

    #[test]
    fn no_windows_only_false_positives() {
        let f = file(100, &[], &[(50, 1.0), (60, 1.0), (5, 1.0)]);
        let s = score_file(&f, &STANDARD, 0.5).unwrap();
        // Row 5 is in the probation; two FPs at -A_FP each.
        assert_eq!(s.false_positives, 2);
        assert!((s.raw + 0.22).abs() < 1e-12);
        let c = score_corpus(&[f], &STANDARD).unwrap();
        assert_eq!(c.threshold, NO_DETECTION_THRESHOLD);
        assert_eq!(c.raw, 0.0);
        assert_eq!(c.normalized, 0.0);
    }

    #[test]
    fn detection_at_window_edges() {
        // Window rows 40..=49 (W = 10).
        let first = file(100, &[(40, 49)], &[(40, 1.0)]);
        let s = score_file(&first, &STANDARD, 1.0).unwrap();
        assert_eq!(s.true_positives, 1);
        assert!((s.raw - 1.0).abs() < 1e-12, "earliest row is worth A_TP");
        let last = file(100, &[(40, 49)], &[(49, 1.0)]);
        let s = score_file(&last, &STANDARD, 1.0).unwrap();
        let expected = scaled_sigmoid(-0.1) / scaled_sigmoid(-1.0);
        assert!((s.raw - expected).abs() < 1e-12);
        // Just before the window: a FP with no earlier window.
        let before = file(100, &[(40, 49)], &[(39, 1.0)]);
        let s = score_file(&before, &STANDARD, 1.0).unwrap();
        assert_eq!((s.false_positives, s.false_negatives), (1, 1));
        assert!((s.raw - (-0.11 - 1.0)).abs() < 1e-12);
        // Threshold equality counts as a detection.
        let s = score_file(&first, &STANDARD, 1.0).unwrap();
        assert_eq!(s.true_positives, 1);
    }

    #[test]
    fn false_positive_after_window() {
        let f = file(200, &[(40, 49)], &[(45, 1.0), (50, 1.0), (150, 1.0)]);
        let s = score_file(&f, &STANDARD, 0.5).unwrap();
        assert_eq!((s.true_positives, s.false_positives), (1, 2));
        let tp = scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0);
        let fp_near = 0.11 * scaled_sigmoid(1.0 / 9.0); // right after: positive but small
        let fp_far = -0.11; // 101 rows after, position > 3
        assert!(fp_near < 0.0);
        assert!((s.raw - (tp + fp_near + fp_far)).abs() < 1e-12);
    }

    #[test]
    fn only_earliest_detection_counts_and_sweep_matches_direct_scoring() {
        let f = file(300, &[(100, 119), (200, 219)], &[(105, 0.9), (110, 0.95), (150, 0.8), (210, 0.7), (250, 0.6)]);
        let g = file(120, &[], &[(60, 0.85), (70, 0.7)]);
        let files = vec![f, g];
        for p in PROFILES {
            let sweep = sweep_thresholds(&files, &p).unwrap();
            for t in &sweep {
                let direct = score_corpus_at(&files, &p, t.threshold).unwrap();
                assert!((direct.raw - t.raw).abs() < 1e-9, "{p:?} {t:?}");
            }
        }
    }

    #[test]
    fn rejects_bad_windows() {
        assert!(matches!(
            score_file(&file(10, &[(5, 12)], &[]), &STANDARD, 0.5),
            Err(NabError::WindowOutOfRange { .. })
        ));
        let mut f = file(10, &[], &[]);
        f.windows.push(Window { start: 6, end: 4 });
        assert!(matches!(score_file(&f, &STANDARD, 0.5), Err(NabError::InvertedWindow { .. })));
        assert!(matches!(
            score_file(&file(20, &[(2, 8), (8, 9)], &[]), &STANDARD, 0.5),
            Err(NabError::OverlappingWindows { .. })
        ));
    }

    #[test]
    fn empty_and_nan_inputs() {
        let e = file(0, &[], &[]);
        let c = score_corpus(&[e], &STANDARD).unwrap();
        assert_eq!(c.raw, 0.0);
        let c = score_corpus(&[], &REWARD_LOW_FN_RATE).unwrap();
        assert_eq!(c.windows, 0);
        let mut f = file(100, &[(50, 59)], &[]);
        f.scores[55] = f64::NAN;
        f.scores[56] = f64::INFINITY;
        let c = score_corpus(&[f], &STANDARD).unwrap();
        assert_eq!(c.true_positives, 1);
        assert_eq!(c.threshold, f64::INFINITY);
    }

    #[test]
    fn timestamps_and_windows() {
        assert_eq!(parse_timestamp_micros("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp_micros("2014-04-10 07:15:00.000000"), parse_timestamp_micros("2014-04-10 07:15:00"));
        assert_eq!(parse_timestamp_micros("2000-03-01 00:00:01.5"), Some((951_868_800 + 1) * 1_000_000 + 500_000));
        assert_eq!(parse_timestamp_micros("garbage"), None);
        assert_eq!(parse_timestamp_micros("2014-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp_micros("999999999999-01-01 00:00:00"), None);
        let rows = [0, 10, 20, 30, 40];
        assert_eq!(
            window_rows(&rows, &[(10, 30), (31, 39), (35, 100)]),
            vec![Window { start: 1, end: 3 }, Window { start: 4, end: 4 }]
        );
    }

    fn named(name: &str, windows: &[(usize, usize)], hits: &[(usize, f64)]) -> ScoredFile {
        ScoredFile { name: name.into(), ..file(100, windows, hits) }
    }

    #[test]
    fn leave_one_category_out_scores_each_category_at_the_others_choice() {
        assert_eq!(category_of("realTweets/x.csv"), "realTweets");
        assert_eq!(category_of("plain"), "plain");
        let a = named("a/1.csv", &[(50, 59)], &[(50, 0.9)]);
        // b: a false positive at 0.8 before its window, then a detection at 0.6 inside it.
        let b = named("b/1.csv", &[(50, 59)], &[(30, 0.8), (52, 0.6)]);
        // c: no window, one false positive.
        let c = named("c/1.csv", &[], &[(40, 0.95)]);
        let corpus = vec![a.clone(), b, c.clone()];
        let r = leave_one_category_out(&[&corpus], &STANDARD).unwrap();
        let cats: Vec<&str> = r.folds.iter().map(|f| f.category.as_str()).collect();
        assert_eq!(cats, ["a", "b", "c"]);
        // Held a: b and c choose 0.6 (below c's false positive too), which catches a's window at its start.
        assert_eq!(r.folds[0].threshold, 0.6);
        assert!((r.folds[0].normalized().unwrap() - 100.0).abs() < 1e-9);
        // Held b: a and c choose 0.9 (a's detection, paying c's false positive at 0.95): b is missed.
        assert_eq!(r.folds[1].held_out.true_positives, 0);
        assert_eq!(r.folds[1].normalized(), Some(0.0));
        // Held c: no window, so no normalised score, but its false positive at 0.6 counts in the pooled score.
        assert_eq!(r.folds[2].normalized(), None);
        assert_eq!(r.folds[2].held_out.false_positives, 1);
        assert!((r.mean - 50.0).abs() < 1e-9);
        let pooled_raw: f64 = r.folds.iter().map(|f| f.held_out.raw).sum();
        assert!((r.pooled - 100.0 * (pooled_raw + 2.0) / 4.0).abs() < 1e-9);
        assert!(r.pooled < r.mean);

        // A second candidate that is better on b (no false positive) but blind on a is chosen for the fold
        // holding a out, and scores a at 0.
        let blind = vec![named("a/1.csv", &[(50, 59)], &[]), named("b/1.csv", &[(50, 59)], &[(52, 0.6)]), c];
        let r = leave_one_category_out(&[&corpus, &blind], &STANDARD).unwrap();
        assert_eq!(r.folds[0].candidate, 1);
        assert_eq!(r.folds[0].normalized(), Some(0.0));
        assert_eq!(r.folds[1].candidate, 0);

        assert_eq!(leave_one_category_out(&[], &STANDARD), Err(NabError::NoCandidate));
        let short = vec![a];
        assert_eq!(
            leave_one_category_out(&[&corpus, &short], &STANDARD),
            Err(NabError::CandidateMismatch { index: 1 })
        );
    }

    #[test]
    fn results_csv() {
        let csv = format_results_csv(&["a", "b"], &[1.5, 2.0], &[0.0, 0.25]).unwrap();
        assert_eq!(csv, "timestamp,value,anomaly_score\na,1.5,0\nb,2,0.25\n");
        assert!(format_results_csv(&["a"], &[], &[]).is_err());
    }
}
