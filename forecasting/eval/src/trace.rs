//! The one reader of the CSV files in ../shared/data (see its README.md): the bucketed demand traces
//! (`timestamp,requests,prompt_tokens,output_tokens`, Azure and Mooncake alike) and the `timestamp,value[,...]`
//! series of NAB (data files and published results).
//!
//! Pure: the caller reads the file and passes its text. The backtest ([`crate::backtest::parse_trace_csv`]), the
//! agent's simulator (`gpu_agent::sim::Trace::parse_csv`), the server's evaluation commands and the tests all
//! parse through here, so a file means the same thing to each of them. The module needs nothing beyond `chrono`,
//! which is why it lives in this crate without the `engine` feature: the agent links it without the forecasting
//! stack.

/// The header of a bucketed demand trace.
pub const BUCKET_HEADER: [&str; 4] = ["timestamp", "requests", "prompt_tokens", "output_tokens"];

/// Why a CSV could not be read. Lines are 1-based, the header included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// No header line.
    #[error("empty input")]
    Empty,
    /// The header is not the expected one.
    #[error("line {line}: unexpected header {found:?}, expected `{expected}`")]
    Header {
        /// Line of the header.
        line: usize,
        /// The header found.
        found: String,
        /// The header expected.
        expected: String,
    },
    /// A row has the wrong number of fields.
    #[error("line {line}: expected {expected} fields, got {found}")]
    Fields {
        /// Line of the row.
        line: usize,
        /// Fields expected (at least this many for a series).
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// A field that must be a number is not one.
    #[error("line {line}: {field} {text:?} is not a number")]
    Number {
        /// Line of the row.
        line: usize,
        /// Column name.
        field: String,
        /// The field's text.
        text: String,
    },
    /// A count (requests, tokens) is negative or not finite.
    #[error("line {line}: {field} {text:?} must be a finite number >= 0")]
    Count {
        /// Line of the row.
        line: usize,
        /// Column name.
        field: &'static str,
        /// The field's text.
        text: String,
    },
}

/// One step of a bucketed demand trace (`timestamp,requests,prompt_tokens,output_tokens`).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceStep {
    /// Start of the bucket, as written in the file.
    pub timestamp: String,
    /// Requests arriving in the step.
    pub requests: f64,
    /// Prompt tokens of those requests.
    pub prompt_tokens: f64,
    /// Output tokens of those requests.
    pub output_tokens: f64,
}

/// A `timestamp,value[,...]` series: one column of numbers with its timestamps, in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Timestamps as written in the file (trimmed).
    pub timestamps: Vec<String>,
    /// The chosen column's values.
    pub values: Vec<f64>,
}

/// The header and the rows of a CSV: blank lines are skipped everywhere, fields are split on commas and trimmed
/// (the files of ../shared/data quote nothing). Rows come with their 1-based line number.
struct Records<'a> {
    header_line: usize,
    header: Vec<&'a str>,
    rows: Box<dyn Iterator<Item = (usize, Vec<&'a str>)> + 'a>,
}

fn records(text: &str) -> Result<Records<'_>, CsvError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.split(',').map(str::trim).collect::<Vec<_>>()));
    let Some((header_line, header)) = lines.next() else { return Err(CsvError::Empty) };
    Ok(Records { header_line, header, rows: Box::new(lines) })
}

/// Parses a bucketed demand trace: the header must be [`BUCKET_HEADER`], every row has 4 fields, and the counts
/// are finite and non-negative. A header alone is an empty trace.
pub fn parse_buckets(text: &str) -> Result<Vec<TraceStep>, CsvError> {
    let rec = records(text)?;
    if rec.header != BUCKET_HEADER {
        return Err(CsvError::Header {
            line: rec.header_line,
            found: rec.header.join(","),
            expected: BUCKET_HEADER.join(","),
        });
    }
    rec.rows
        .map(|(line, f)| {
            if f.len() != BUCKET_HEADER.len() {
                return Err(CsvError::Fields { line, expected: BUCKET_HEADER.len(), found: f.len() });
            }
            let count = |i: usize| {
                f[i].parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| CsvError::Count {
                    line,
                    field: BUCKET_HEADER[i],
                    text: f[i].to_string(),
                })
            };
            Ok(TraceStep {
                timestamp: f[0].to_string(),
                requests: count(1)?,
                prompt_tokens: count(2)?,
                output_tokens: count(3)?,
            })
        })
        .collect()
}

/// Parses a `timestamp,...` CSV into its timestamps (column 0) and the numbers of column `column` (1 for NAB's
/// `value`, 2 for the `anomaly_score` of NAB's results, 1 for a bucketed trace's `requests`). The header is
/// skipped; every row needs the column and a number in it.
pub fn parse_series(text: &str, column: usize) -> Result<Series, CsvError> {
    let rec = records(text)?;
    let field = rec.header.get(column).map_or_else(|| format!("column {column}"), |h| (*h).to_string());
    let mut out = Series::default();
    for (line, f) in rec.rows {
        let (Some(t), Some(v)) = (f.first(), f.get(column)) else {
            return Err(CsvError::Fields { line, expected: column + 1, found: f.len() });
        };
        let value =
            v.parse::<f64>().map_err(|_| CsvError::Number { line, field: field.clone(), text: v.to_string() })?;
        out.timestamps.push((*t).to_string());
        out.values.push(value);
    }
    Ok(out)
}

/// Parses a trace timestamp to Unix seconds: `YYYY-MM-DD HH:MM:SS[.frac]`, the same with `T`, RFC 3339, or
/// Unix seconds.
pub fn timestamp_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros() as f64 / 1e6);
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_micros() as f64 / 1e6);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/traces");

    #[test]
    fn buckets_parse_and_validate() {
        let t = parse_buckets("\ntimestamp, requests,prompt_tokens,output_tokens\n2024-01-01 00:00:00,2,100,10\n\n")
            .expect("valid");
        assert_eq!(
            t,
            vec![TraceStep {
                timestamp: "2024-01-01 00:00:00".into(),
                requests: 2.0,
                prompt_tokens: 100.0,
                output_tokens: 10.0
            }]
        );
        assert_eq!(parse_buckets("timestamp,requests,prompt_tokens,output_tokens\n"), Ok(vec![]));
        assert_eq!(parse_buckets(""), Err(CsvError::Empty));
        assert!(matches!(parse_buckets("a,b\n"), Err(CsvError::Header { line: 1, .. })));
        let h = "timestamp,requests,prompt_tokens,output_tokens\n";
        assert!(matches!(parse_buckets(&format!("{h}x,1,2\n")), Err(CsvError::Fields { line: 2, .. })));
        for bad in ["x,1,y,2", "x,1,-2,3", "x,NaN,1,1", "x,1,1,inf"] {
            assert!(matches!(parse_buckets(&format!("{h}{bad}\n")), Err(CsvError::Count { line: 2, .. })), "{bad}");
        }
    }

    #[test]
    fn series_take_one_column() {
        let s =
            parse_series("timestamp,value,anomaly_score\n2014-04-01 00:00:00, 1.5,0\n\n2014-04-01 00:05:00,-2,1\n", 1)
                .expect("valid");
        assert_eq!(s.timestamps, ["2014-04-01 00:00:00", "2014-04-01 00:05:00"]);
        assert_eq!(s.values, [1.5, -2.0]);
        assert_eq!(parse_series("timestamp,value\nx,1\n", 2), Err(CsvError::Fields { line: 2, expected: 3, found: 2 }));
        assert!(matches!(parse_series("timestamp,value\nx,y\n", 1), Err(CsvError::Number { line: 2, .. })));
        assert_eq!(parse_series("", 1), Err(CsvError::Empty));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp_secs("2023-11-16 18:15:50").zip(timestamp_secs("2023-11-16 18:15:40")).map(|(a, b)| a - b),
            Some(10.0)
        );
        assert_eq!(timestamp_secs("2024-01-01T00:00:00Z"), Some(1_704_067_200.0));
        assert_eq!(timestamp_secs(" 12.5 "), Some(12.5));
        assert_eq!(timestamp_secs("yesterday"), None);
    }

    #[test]
    fn every_bucketed_trace_parses() {
        for (name, rows) in [("azure_conv_10s", 351), ("azure_code_10s", 344), ("mooncake_conversation_10s", 354)] {
            let text = std::fs::read_to_string(format!("{TRACES}/{name}.csv")).expect("trace file");
            let t = parse_buckets(&text).expect(name);
            assert_eq!(t.len(), rows, "{name}");
        }
    }
}
