//! PostgreSQL's binary `COPY` format, written by hand because it is the ingest hot path: one pass over the
//! rows, no per-value allocation, no text formatting or parsing on either side.
//! Format: <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>.

use chrono::{DateTime, Utc};

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// A binary COPY payload under construction.
#[derive(Debug)]
pub struct CopyBinary {
    buf: Vec<u8>,
    rows: u64,
}

impl CopyBinary {
    /// Starts a payload with the signature and an empty header extension.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 32);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf, rows: 0 }
    }

    /// Starts a row of `fields` values.
    pub fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self.rows += 1;
    }

    fn field(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    /// A NULL.
    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// `text`.
    pub fn text(&mut self, v: &str) {
        self.field(v.as_bytes());
    }

    /// `integer`.
    pub fn i32(&mut self, v: i32) {
        self.field(&v.to_be_bytes());
    }

    /// `bigint`.
    pub fn i64(&mut self, v: i64) {
        self.field(&v.to_be_bytes());
    }

    /// `real`.
    pub fn f32(&mut self, v: f32) {
        self.field(&v.to_be_bytes());
    }

    /// `real` or NULL.
    pub fn opt_f32(&mut self, v: Option<f32>) {
        match v {
            Some(v) => self.f32(v),
            None => self.null(),
        }
    }

    /// `integer` or NULL.
    pub fn opt_i32(&mut self, v: Option<i32>) {
        match v {
            Some(v) => self.i32(v),
            None => self.null(),
        }
    }

    /// `bigint` or NULL.
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.i64(v),
            None => self.null(),
        }
    }

    /// `timestamptz` from Unix milliseconds.
    pub fn ts_ms(&mut self, ms: i64) {
        self.i64_raw_ts(ms.saturating_mul(1000) - PG_EPOCH_OFFSET_US);
    }

    /// `timestamptz`.
    pub fn ts(&mut self, t: DateTime<Utc>) {
        self.i64_raw_ts(t.timestamp_micros() - PG_EPOCH_OFFSET_US);
    }

    fn i64_raw_ts(&mut self, us_since_2000: i64) {
        self.field(&us_since_2000.to_be_bytes());
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends the trailer and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_matches_the_documented_format() {
        let mut c = CopyBinary::with_capacity(0);
        c.row(3);
        c.i32(7);
        c.null();
        c.ts_ms(946_684_800_000); // 2000-01-01: zero in PostgreSQL's epoch
        let b = c.finish();
        assert_eq!(&b[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&b[11..19], &[0; 8]);
        assert_eq!(&b[19..21], &3i16.to_be_bytes());
        assert_eq!(&b[21..29], &[0, 0, 0, 4, 0, 0, 0, 7]);
        assert_eq!(&b[29..33], &(-1i32).to_be_bytes());
        assert_eq!(&b[33..45], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[45..], &(-1i16).to_be_bytes());
    }
}
