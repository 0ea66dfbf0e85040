//! Anomaly events: per-point detector scores of one series turned into events with a start, an end,
//! a peak severity and the evidence behind them.
//!
//! [`EventTracker::update`] is streaming and causal: it sees one [`Score`] at a time. Hysteresis keeps
//! a noisy score from opening and closing events on every row: an event opens when the score reaches
//! [`EventConfig::open`] and closes once it has stayed below [`EventConfig::close`] (lower) for
//! [`EventConfig::close_after`] consecutive rows. The event's end is the last row that was still at or
//! above the close threshold (when the anomaly stopped), reported `close_after` rows later.
//!
//! By default the detector's score *before* its refractory period ([`Score::raw`]) is tracked: the
//! refractory period silences repeats so that one change raises one NAB alert, but an event should
//! stay open while the evidence lasts. The detector reports a sustained red-zone likelihood as a
//! yellow one (0.3) from its second row on, which stays above the default close threshold.

use crate::Error;
use crate::anomaly::{Component, Score};
use serde::{Deserialize, Serialize};

/// How bad an event is, from its peak score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// At or above the open threshold.
    Info,
    /// At or above [`EventConfig::warning`].
    Warning,
    /// At or above [`EventConfig::critical`].
    Critical,
}

/// Settings of the event tracker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventConfig {
    /// Score at which an event opens.
    pub open: f64,
    /// Score below which a row counts towards closing (at most `open`).
    pub close: f64,
    /// Consecutive rows below `close` that close an event (at least 1).
    pub close_after: usize,
    /// Peak score from which an event is a warning.
    pub warning: f64,
    /// Peak score from which an event is critical.
    pub critical: f64,
    /// Track the score before the refractory period ([`Score::raw`]) instead of [`Score::score`].
    pub use_raw: bool,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self { open: 0.5, close: 0.25, close_after: 12, warning: 0.7, critical: 0.9, use_raw: true }
    }
}

impl EventConfig {
    /// Checks `0 < close <= open <= warning <= critical <= 1` and `close_after >= 1`.
    pub fn validate(&self) -> Result<(), Error> {
        let ordered = [self.close, self.open, self.warning, self.critical];
        if ordered.iter().any(|x| !x.is_finite()) || !(0.0 < self.close && self.critical <= 1.0) {
            return Err(Error::InvalidArgument {
                name: "thresholds",
                reason: format!("{ordered:?} must be finite and within (0, 1]"),
            });
        }
        if ordered.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::InvalidArgument {
                name: "thresholds",
                reason: format!("{ordered:?} must satisfy close <= open <= warning <= critical"),
            });
        }
        if self.close_after == 0 {
            return Err(Error::InvalidArgument { name: "close_after", reason: "must be at least 1".into() });
        }
        Ok(())
    }

    /// The severity of a score at or above `open`.
    pub fn severity(&self, score: f64) -> Severity {
        if score >= self.critical {
            Severity::Critical
        } else if score >= self.warning {
            Severity::Warning
        } else {
            Severity::Info
        }
    }
}

/// What the detector saw at one row of an event.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EventEvidence {
    /// When (seconds since the epoch, as given to the tracker).
    pub timestamp_secs: i64,
    /// The tracked score.
    pub score: f64,
    /// Which detector component fired.
    pub component: Component,
    /// The observed value.
    pub observed: f64,
    /// What was expected (range edge, window median, value one day earlier; NaN for novelty).
    pub expected: f64,
    /// Probability of evidence this strong under the series' own history.
    pub tail: f64,
}

/// One anomaly event of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyEvent {
    /// First row at or above the open threshold.
    pub start_secs: i64,
    /// Last row at or above the close threshold; `None` while the event is open.
    pub end_secs: Option<i64>,
    /// Severity of the peak score.
    pub severity: Severity,
    /// The row that opened the event.
    pub first: EventEvidence,
    /// The row with the highest score so far.
    pub peak: EventEvidence,
    /// Rows consumed while the event was open (including the trailing quiet ones).
    pub rows: usize,
}

impl AnomalyEvent {
    /// True until the event has closed.
    pub fn is_open(&self) -> bool {
        self.end_secs.is_none()
    }
}

/// A change in the state of the tracked series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventUpdate {
    /// A new event opened (a snapshot of it).
    Opened(AnomalyEvent),
    /// The open event's severity rose (a snapshot of it).
    Escalated(AnomalyEvent),
    /// The event closed (final).
    Closed(AnomalyEvent),
}

/// Streaming hysteresis over one series' scores.
#[derive(Debug, Clone)]
pub struct EventTracker {
    cfg: EventConfig,
    open: Option<AnomalyEvent>,
    below: usize,
    last_active_secs: i64,
}

impl EventTracker {
    /// A tracker with validated settings.
    pub fn new(cfg: EventConfig) -> Result<Self, Error> {
        cfg.validate()?;
        Ok(Self { cfg, open: None, below: 0, last_active_secs: 0 })
    }

    /// The settings in use.
    pub fn config(&self) -> &EventConfig {
        &self.cfg
    }

    /// The event in progress, if any.
    pub fn open_event(&self) -> Option<&AnomalyEvent> {
        self.open.as_ref()
    }

    /// Consumes the detector's output for the next row; returns what changed, if anything.
    ///
    /// Rows whose input was invalid ([`Component::InvalidInput`]) or whose score is not finite are
    /// ignored (they neither extend nor close an event).
    pub fn update(&mut self, timestamp_secs: i64, score: &Score) -> Option<EventUpdate> {
        let s = if self.cfg.use_raw { score.raw } else { score.score };
        if score.component == Component::InvalidInput || !s.is_finite() {
            return None;
        }
        let s = s.clamp(0.0, 1.0);
        let evidence = EventEvidence {
            timestamp_secs,
            score: s,
            component: score.component,
            observed: score.observed,
            expected: score.expected,
            tail: score.tail,
        };
        let Some(ev) = self.open.as_mut() else {
            if s >= self.cfg.open {
                let ev = AnomalyEvent {
                    start_secs: timestamp_secs,
                    end_secs: None,
                    severity: self.cfg.severity(s),
                    first: evidence,
                    peak: evidence,
                    rows: 1,
                };
                self.below = 0;
                self.last_active_secs = timestamp_secs;
                self.open = Some(ev.clone());
                return Some(EventUpdate::Opened(ev));
            }
            return None;
        };
        ev.rows += 1;
        if s >= self.cfg.close {
            self.below = 0;
            self.last_active_secs = timestamp_secs;
        } else {
            self.below += 1;
        }
        if s > ev.peak.score {
            ev.peak = evidence;
            let severity = self.cfg.severity(s);
            if severity > ev.severity {
                ev.severity = severity;
                return Some(EventUpdate::Escalated(ev.clone()));
            }
        }
        if self.below >= self.cfg.close_after {
            let mut done = self.open.take()?;
            done.end_secs = Some(self.last_active_secs);
            self.below = 0;
            return Some(EventUpdate::Closed(done));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::Detector;

    fn score(raw: f64, component: Component) -> Score {
        Score { score: raw, raw, component, observed: 10.0 * raw, expected: 1.0, tail: 1.0 - raw, suppressed: false }
    }

    fn tracker(close_after: usize) -> EventTracker {
        EventTracker::new(EventConfig { close_after, ..EventConfig::default() }).expect("valid config")
    }

    /// Feeds raw scores at timestamps 0, 60, 120, ...; returns every update with its row.
    fn feed(t: &mut EventTracker, scores: &[f64]) -> Vec<(usize, EventUpdate)> {
        scores
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| t.update(i as i64 * 60, &score(s, Component::Level)).map(|u| (i, u)))
            .collect()
    }

    #[test]
    fn hysteresis_opens_escalates_and_closes() {
        let mut t = tracker(3);
        let ups = feed(&mut t, &[0.1, 0.55, 0.4, 0.2, 0.3, 0.95, 0.6, 0.1, 0.1, 0.1, 0.1]);
        assert_eq!(ups.len(), 3, "{ups:?}");
        let (i, EventUpdate::Opened(ev)) = &ups[0] else { panic!("{ups:?}") };
        assert_eq!((*i, ev.start_secs, ev.severity, ev.end_secs), (1, 60, Severity::Info, None));
        let (i, EventUpdate::Escalated(ev)) = &ups[1] else { panic!("{ups:?}") };
        assert_eq!((*i, ev.severity), (5, Severity::Critical));
        // 0.2 at row 3 is below close (0.25) but 0.3 at row 4 resets the count; three quiet rows
        // after row 6 close the event, which ended at row 6.
        let (i, EventUpdate::Closed(ev)) = &ups[2] else { panic!("{ups:?}") };
        assert_eq!((*i, ev.start_secs, ev.end_secs), (9, 60, Some(360)));
        assert_eq!(ev.peak.timestamp_secs, 300);
        assert_eq!(ev.peak.observed, 9.5);
        assert_eq!(ev.first.score, 0.55);
        assert_eq!(ev.rows, 9);
        assert!(t.open_event().is_none());
    }

    #[test]
    fn scores_between_thresholds_do_not_open_an_event() {
        let mut t = tracker(2);
        assert!(feed(&mut t, &[0.3, 0.49, 0.45, 0.1, 0.4]).is_empty());
    }

    #[test]
    fn two_separate_events() {
        let mut t = tracker(2);
        let ups = feed(&mut t, &[0.8, 0.0, 0.0, 0.0, 0.6, 0.0, 0.0]);
        let kinds: Vec<_> = ups
            .iter()
            .map(|(i, u)| match u {
                EventUpdate::Opened(e) => (*i, 'o', e.severity),
                EventUpdate::Escalated(e) => (*i, 'e', e.severity),
                EventUpdate::Closed(e) => (*i, 'c', e.severity),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, 'o', Severity::Warning),
                (2, 'c', Severity::Warning),
                (4, 'o', Severity::Info),
                (6, 'c', Severity::Info)
            ]
        );
    }

    #[test]
    fn invalid_rows_are_ignored() {
        let mut t = tracker(2);
        assert!(t.update(0, &score(0.9, Component::OutOfRange)).is_some());
        for _ in 0..5 {
            assert!(t.update(1, &score(0.0, Component::InvalidInput)).is_none());
            assert!(t.update(1, &score(f64::NAN, Component::Level)).is_none());
        }
        assert!(t.open_event().is_some_and(AnomalyEvent::is_open));
        assert_eq!(t.open_event().map(|e| (e.rows, e.peak.component)), Some((1, Component::OutOfRange)));
    }

    #[test]
    fn bad_config_is_rejected() {
        for cfg in [
            EventConfig { close: 0.6, ..EventConfig::default() },
            EventConfig { close: 0.0, ..EventConfig::default() },
            EventConfig { critical: 1.5, ..EventConfig::default() },
            EventConfig { warning: f64::NAN, ..EventConfig::default() },
            EventConfig { close_after: 0, ..EventConfig::default() },
        ] {
            assert!(EventTracker::new(cfg).is_err());
        }
    }

    #[test]
    fn a_level_shift_seen_by_the_detector_becomes_one_event() {
        // A value that leaves the range seen so far: the detector fires (out of range) and the
        // tracker reports one event carrying that evidence, closed once the series is calm again.
        let mut d = Detector::default();
        let mut t = tracker(12);
        let mut ups = Vec::new();
        for i in 0..3000i64 {
            let v = if (2000..2010).contains(&i) { 500.0 } else { 50.0 + ((i * 7919) % 13) as f64 };
            let s = d.update(i * 300, v);
            if let Some(u) = t.update(i * 300, &s) {
                ups.push(u);
            }
        }
        let opened: Vec<_> = ups.iter().filter(|u| matches!(u, EventUpdate::Opened(_))).collect();
        assert_eq!(opened.len(), 1, "{ups:?}");
        let Some(EventUpdate::Closed(ev)) = ups.iter().find(|u| matches!(u, EventUpdate::Closed(_))) else {
            panic!("{ups:?}")
        };
        assert_eq!(ev.start_secs, 2000 * 300);
        assert_eq!(ev.first.component, Component::OutOfRange);
        assert_eq!(ev.first.observed, 500.0);
        assert_eq!(ev.severity, Severity::Critical);
        assert!(ev.end_secs.is_some_and(|e| e >= 2009 * 300), "{ev:?}");
    }
}
