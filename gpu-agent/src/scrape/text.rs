//! The exposition-format parser: one line at a time, no regex, total over any input.

use serde::{Deserialize, Serialize};

/// Characters of offending input kept in an error, so a hostile scrape cannot balloon the error list.
const MAX_ERROR_TEXT: usize = 120;

/// One sample, i.e. one sample line of the exposition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Metric name as written, suffix included (`vllm:num_requests_waiting`, `x_bucket`, `x_created`).
    pub name: String,
    /// Labels, unescaped, sorted by name; names are unique.
    pub labels: Vec<(String, String)>,
    /// The value; `NaN` and `±Inf` are kept as such.
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries a timestamp.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// Value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        let i = self.labels.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok()?;
        self.labels.get(i).map(|(_, v)| v.as_str())
    }
}

/// Everything read from one scrape: the samples, and one error per sample line that yielded none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Samples in input order.
    pub samples: Vec<Sample>,
    /// Sample lines that yielded no sample, in input order.
    pub errors: Vec<LineError>,
    /// Lines in the input, comments and blanks included.
    pub lines_total: usize,
    /// Lines that are neither blank nor comments; always `samples.len() + errors.len()`.
    pub sample_lines: usize,
    /// The input carries OpenMetrics' `# EOF`, so timestamps were read as seconds rather than milliseconds.
    pub openmetrics: bool,
}

impl Scrape {
    /// Samples named exactly `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

/// A sample line that yielded no sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {kind}: {text:?}")]
pub struct LineError {
    /// 1-based line number in the scraped text.
    pub line: usize,
    /// What is wrong with it.
    pub kind: ParseError,
    /// The line, clipped to a bounded length.
    pub text: String,
}

/// Why a sample line could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// The metric name is empty, starts with a digit or contains a character outside `[a-zA-Z0-9_:]`.
    #[error("invalid metric name {0:?}")]
    InvalidName(String),
    /// A label name is empty, starts with a digit or contains a character outside `[a-zA-Z0-9_]`.
    #[error("invalid label name at byte {pos}")]
    InvalidLabelName {
        /// Byte offset in the line.
        pos: usize,
    },
    /// A character that the grammar does not allow here.
    #[error("expected {expected}, found {found:?} at byte {pos}")]
    Unexpected {
        /// What the grammar wanted.
        expected: &'static str,
        /// What was there.
        found: char,
        /// Byte offset in the line.
        pos: usize,
    },
    /// The line ends early (truncated scrape).
    #[error("line ends where {expected} was expected")]
    UnexpectedEnd {
        /// What the grammar wanted.
        expected: &'static str,
    },
    /// A backslash in a label value followed by anything but `\`, `"` or `n`.
    #[error("invalid escape \\{0} in label value")]
    InvalidEscape(char),
    /// The same label name twice in one label set.
    #[error("duplicate label {0:?}")]
    DuplicateLabel(String),
    /// The value is not a float (`NaN`, `+Inf`, `-Inf` and exponents are floats).
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    /// The timestamp is not integer milliseconds (text format) or float seconds (OpenMetrics).
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    /// The OpenMetrics exemplar after `#` is malformed.
    #[error("invalid exemplar: {0}")]
    InvalidExemplar(Box<ParseError>),
    /// Text after the timestamp that is not an exemplar.
    #[error("unexpected text after the sample: {0:?}")]
    TrailingText(String),
    /// A sample after OpenMetrics' `# EOF`, which must be the last line.
    #[error("sample after # EOF")]
    AfterEof,
}

/// Parses a scrape in the Prometheus text format or OpenMetrics; never fails as a whole.
///
/// Every line that is neither blank nor a comment yields exactly one [`Sample`] or one [`LineError`]. Errors are
/// logged: each at debug, and one warning per scrape with the count and the first.
pub fn parse(text: &str) -> Scrape {
    // OpenMetrics timestamps are seconds, text-format ones milliseconds; only the final `# EOF` tells them apart.
    let openmetrics = text.lines().any(|l| l.trim() == "# EOF");
    let mut scrape = Scrape { openmetrics, ..Scrape::default() };
    let mut after_eof = false;
    for (idx, raw) in text.lines().enumerate() {
        scrape.lines_total += 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            after_eof |= line == "# EOF";
            continue;
        }
        scrape.sample_lines += 1;
        let parsed = if after_eof { Err(ParseError::AfterEof) } else { parse_line(line, openmetrics) };
        match parsed {
            Ok(sample) => scrape.samples.push(sample),
            Err(kind) => {
                let err = LineError { line: idx + 1, kind, text: clip(line) };
                tracing::debug!(%err, "metrics line yielded no sample");
                scrape.errors.push(err);
            }
        }
    }
    if let Some(first) = scrape.errors.first() {
        tracing::warn!(
            errors = scrape.errors.len(),
            sample_lines = scrape.sample_lines,
            %first,
            "metrics lines yielded no sample"
        );
    }
    scrape
}

/// Parses one trimmed, non-comment line: `name[{labels}] value [timestamp] [# {labels} value [timestamp]]`.
fn parse_line(line: &str, openmetrics: bool) -> Result<Sample, ParseError> {
    let mut c = Cursor { s: line, pos: 0 };
    let name = c.take_while(is_name_byte);
    if name.is_empty() || name.starts_with(|ch: char| ch.is_ascii_digit()) {
        return Err(ParseError::InvalidName(clip(Cursor { s: line, pos: 0 }.token())));
    }
    let braces = c.peek() == Some(b'{');
    let labels = if braces { parse_labels(&mut c)? } else { Vec::new() };
    // A blank must separate a bare name from the value; anything else glued to the name is an illegal name char.
    if !c.skip_blank() && !braces && c.peek().is_some() {
        return Err(ParseError::InvalidName(clip(Cursor { s: line, pos: 0 }.token())));
    }
    let token = c.token();
    if token.is_empty() {
        return Err(ParseError::UnexpectedEnd { expected: "value" });
    }
    let value = parse_value(token).ok_or_else(|| ParseError::InvalidValue(clip(token)))?;
    c.skip_blank();
    let mut timestamp_ms = None;
    if c.peek().is_some_and(|b| b != b'#') {
        timestamp_ms = Some(parse_timestamp(c.token(), openmetrics)?);
        c.skip_blank();
    }
    if c.peek() == Some(b'#') {
        // Exemplars are validated, not kept: nothing downstream uses them yet.
        parse_exemplar(&mut c).map_err(|e| ParseError::InvalidExemplar(Box::new(e)))?;
    }
    if c.peek().is_some() {
        return Err(ParseError::TrailingText(clip(c.rest())));
    }
    Ok(Sample { name: name.to_owned(), labels, value, timestamp_ms })
}

/// Parses `{name="value", ...}` (blanks and a trailing comma allowed), unescaping values; returns labels sorted.
fn parse_labels(c: &mut Cursor<'_>) -> Result<Vec<(String, String)>, ParseError> {
    c.expect(b'{', "'{'")?;
    let mut labels: Vec<(String, String)> = Vec::new();
    loop {
        c.skip_blank();
        if c.eat(b'}') {
            break;
        }
        let pos = c.pos;
        let name = c.take_while(is_label_byte);
        if name.is_empty() || name.starts_with(|ch: char| ch.is_ascii_digit()) {
            return Err(match c.peek() {
                None => ParseError::UnexpectedEnd { expected: "label name" },
                Some(_) => ParseError::InvalidLabelName { pos },
            });
        }
        c.skip_blank();
        c.expect(b'=', "'='")?;
        c.skip_blank();
        c.expect(b'"', "'\"'")?;
        let value = c.quoted()?;
        labels.push((name.to_owned(), value));
        c.skip_blank();
        if c.eat(b',') {
            continue;
        }
        c.expect(b'}', "',' or '}'")?;
        break;
    }
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    let duplicate = labels.windows(2).find_map(|w| match w {
        [a, b] if a.0 == b.0 => Some(a.0.clone()),
        _ => None,
    });
    match duplicate {
        Some(name) => Err(ParseError::DuplicateLabel(name)),
        None => Ok(labels),
    }
}

/// Checks an OpenMetrics exemplar: `# {labels} value [timestamp]`.
fn parse_exemplar(c: &mut Cursor<'_>) -> Result<(), ParseError> {
    c.expect(b'#', "'#'")?;
    c.skip_blank();
    parse_labels(c)?;
    c.skip_blank();
    let value = c.token();
    if value.is_empty() {
        return Err(ParseError::UnexpectedEnd { expected: "exemplar value" });
    }
    parse_value(value).ok_or_else(|| ParseError::InvalidValue(clip(value)))?;
    c.skip_blank();
    if c.peek().is_some() {
        // Exemplar timestamps only exist in OpenMetrics, where they are float seconds.
        let ts = c.token();
        ts.parse::<f64>().ok().filter(|t| t.is_finite()).ok_or_else(|| ParseError::InvalidTimestamp(clip(ts)))?;
        c.skip_blank();
    }
    Ok(())
}

/// Parses a sample value. Rust's float grammar covers what exporters print (Go's `strconv`, Python's `repr`):
/// `NaN`, `+Inf`, `-Inf`, `1.75e+09`; Go's hex floats are not accepted, and no exporter emits them.
fn parse_value(token: &str) -> Option<f64> {
    token.parse().ok()
}

/// Parses a timestamp into milliseconds: integer milliseconds in the text format, float seconds in OpenMetrics.
fn parse_timestamp(token: &str, openmetrics: bool) -> Result<i64, ParseError> {
    let bad = || ParseError::InvalidTimestamp(clip(token));
    if !openmetrics {
        return token.parse().map_err(|_| bad());
    }
    let ms = (token.parse::<f64>().map_err(|_| bad())? * 1000.0).round();
    // i64 holds ±9.22e18 ms; anything near that is garbage, and `as` must not saturate silently.
    if ms.is_finite() && ms.abs() < 9.0e18 { Ok(ms as i64) } else { Err(bad()) }
}

/// `[a-zA-Z0-9_:]`: metric name characters (the leading digit is checked separately).
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// `[a-zA-Z0-9_]`: label name characters (the leading digit is checked separately).
fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `s`, cut to [`MAX_ERROR_TEXT`] characters.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// A read position in one line. It only stops on ASCII bytes, so every slice it takes is on a char boundary.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    /// Consumes `b` or reports what is there instead.
    fn expect(&mut self, b: u8, expected: &'static str) -> Result<(), ParseError> {
        if self.eat(b) {
            return Ok(());
        }
        Err(match self.rest().chars().next() {
            None => ParseError::UnexpectedEnd { expected },
            Some(found) => ParseError::Unexpected { expected, found, pos: self.pos },
        })
    }

    /// Skips spaces and tabs; true if there were any.
    fn skip_blank(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// The run of non-blank characters at the cursor.
    fn token(&mut self) -> &'a str {
        self.take_while(|b| b != b' ' && b != b'\t')
    }

    /// Reads the rest of a quoted label value (the opening `"` already consumed), unescaping `\\`, `\"`, `\n`.
    fn quoted(&mut self) -> Result<String, ParseError> {
        let rest = self.rest();
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, other)) => return Err(ParseError::InvalidEscape(other)),
                    None => break,
                },
                _ => out.push(ch),
            }
        }
        Err(ParseError::UnexpectedEnd { expected: "closing '\"'" })
    }
}
