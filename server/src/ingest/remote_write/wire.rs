//! A borrowing reader of remote-write 1.0's `prometheus.WriteRequest`: label names and values are `&str` slices of
//! the decompressed body instead of one `String` each, and a request's series, labels and samples live in three
//! flat vectors instead of two vectors per series.
//!
//! It accepts and refuses exactly what prost's decoding of [`super::WriteRequest`] accepts and refuses (the tests
//! compare both on valid requests and on mutated ones): the same varint limits, wire-type checks, UTF-8 checks,
//! unknown fields skipped (groups included) and prost's recursion limit; a scalar field seen twice keeps the last
//! value. Only the error messages differ.

use super::PromSample;

/// prost's default recursion limit (`DecodeContext`): nested messages and groups deeper than this are refused.
const RECURSION_LIMIT: u32 = 100;

/// Why a body is not a `WriteRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body ends inside a field.
    #[error("truncated field")]
    Truncated,
    /// A varint longer than 10 bytes or larger than 64 bits.
    #[error("invalid varint")]
    Varint,
    /// A field key larger than 32 bits, with tag 0 or an unknown wire type.
    #[error("invalid field key")]
    Key,
    /// A known field with the wrong wire type.
    #[error("field {0} has the wrong wire type")]
    WireType(u32),
    /// A string that is not UTF-8.
    #[error("a label is not UTF-8")]
    Utf8,
    /// A group's end does not match its start, or an end without a start.
    #[error("unbalanced group")]
    Group,
    /// Nested deeper than the recursion limit.
    #[error("nested too deeply")]
    Depth,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// One series of a [`WriteRequestRef`].
#[derive(Debug, Clone, Copy)]
pub struct SeriesRef<'r, 'a> {
    /// Labels in the order sent, `__name__` included.
    pub labels: &'r [(&'a str, &'a str)],
    /// Samples in the order sent.
    pub samples: &'r [PromSample],
}

/// Where one series' labels and samples are in the request's flat vectors.
#[derive(Debug, Clone, Copy)]
struct Span {
    labels: (usize, usize),
    samples: (usize, usize),
}

/// A decoded `WriteRequest` borrowing its strings from the decompressed body.
#[derive(Debug, Default)]
pub struct WriteRequestRef<'a> {
    spans: Vec<Span>,
    labels: Vec<(&'a str, &'a str)>,
    samples: Vec<PromSample>,
}

impl<'a> WriteRequestRef<'a> {
    /// Decodes an uncompressed `WriteRequest`.
    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        // Series are ~10 labels and one sample each, about 250 bytes of protobuf: size the vectors once.
        let guess = buf.len() / 256 + 1;
        let mut req = WriteRequestRef {
            spans: Vec::with_capacity(guess),
            labels: Vec::with_capacity(guess * 10),
            samples: Vec::with_capacity(guess),
        };
        let mut r = Reader { buf, pos: 0 };
        while !r.at_end() {
            let (tag, wire) = r.key()?;
            if tag == 1 {
                if wire != LEN {
                    return Err(WireError::WireType(tag));
                }
                let body = r.len_delimited(RECURSION_LIMIT - 1)?;
                req.series(body)?;
            } else {
                r.skip(wire, tag, RECURSION_LIMIT)?;
            }
        }
        Ok(req)
    }

    /// Reads one `TimeSeries`.
    fn series(&mut self, buf: &'a [u8]) -> Result<(), WireError> {
        let depth = RECURSION_LIMIT - 1;
        let (l0, s0) = (self.labels.len(), self.samples.len());
        let mut r = Reader { buf, pos: 0 };
        while !r.at_end() {
            let (tag, wire) = r.key()?;
            match tag {
                1 | 2 => {
                    if wire != LEN {
                        return Err(WireError::WireType(tag));
                    }
                    let body = r.len_delimited(depth - 1)?;
                    if tag == 1 {
                        self.labels.push(label(body, depth - 1)?);
                    } else {
                        self.samples.push(sample(body, depth - 1)?);
                    }
                }
                _ => r.skip(wire, tag, depth)?,
            }
        }
        self.spans.push(Span { labels: (l0, self.labels.len()), samples: (s0, self.samples.len()) });
        Ok(())
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the request has no series.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The series in the order sent.
    pub fn series_iter(&self) -> impl Iterator<Item = SeriesRef<'_, 'a>> {
        self.spans.iter().map(|s| SeriesRef {
            labels: &self.labels[s.labels.0..s.labels.1],
            samples: &self.samples[s.samples.0..s.samples.1],
        })
    }
}

/// Reads one `Label`.
fn label(buf: &[u8], depth: u32) -> Result<(&str, &str), WireError> {
    let (mut name, mut value) = ("", "");
    let mut r = Reader { buf, pos: 0 };
    while !r.at_end() {
        let (tag, wire) = r.key()?;
        match tag {
            1 | 2 => {
                if wire != LEN {
                    return Err(WireError::WireType(tag));
                }
                let n = r.varint()?;
                let bytes = r.take(n)?;
                let s = std::str::from_utf8(bytes).map_err(|_| WireError::Utf8)?;
                if tag == 1 {
                    name = s;
                } else {
                    value = s;
                }
            }
            _ => r.skip(wire, tag, depth)?,
        }
    }
    Ok((name, value))
}

/// Reads one `Sample`.
fn sample(buf: &[u8], depth: u32) -> Result<PromSample, WireError> {
    let mut s = PromSample { value: 0.0, timestamp: 0 };
    let mut r = Reader { buf, pos: 0 };
    while !r.at_end() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                if wire != FIXED64 {
                    return Err(WireError::WireType(tag));
                }
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                s.value = f64::from_le_bytes(a);
            }
            2 => {
                if wire != VARINT {
                    return Err(WireError::WireType(tag));
                }
                // int64 is the varint's bits reinterpreted (negative numbers are 10-byte varints).
                s.timestamp = r.varint()? as i64;
            }
            _ => r.skip(wire, tag, depth)?,
        }
    }
    Ok(s)
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// LEB128, at most 10 bytes, the tenth at most 1 (prost's and Go protobuf's overflow check).
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
            self.pos += 1;
            if i == 9 && b >= 2 {
                return Err(WireError::Varint);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError::Varint)
    }

    /// A field key: (tag, wire type).
    #[inline]
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let k = self.varint()?;
        let k = u32::try_from(k).map_err(|_| WireError::Key)?;
        let wire = (k & 7) as u8;
        let tag = k >> 3;
        if wire > FIXED32 || tag == 0 {
            return Err(WireError::Key);
        }
        Ok((tag, wire))
    }

    /// The next `n` bytes.
    #[inline]
    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(n).map_err(|_| WireError::Truncated)?;
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(WireError::Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The body of an embedded message read at recursion budget `depth`.
    fn len_delimited(&mut self, depth: u32) -> Result<&'a [u8], WireError> {
        if depth == 0 {
            return Err(WireError::Depth);
        }
        let n = self.varint()?;
        self.take(n)
    }

    /// Skips an unknown field (prost's `skip_field`, recursion budget included).
    fn skip(&mut self, wire: u8, tag: u32, depth: u32) -> Result<(), WireError> {
        if depth == 0 {
            return Err(WireError::Depth);
        }
        match wire {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.take(8)?;
            }
            FIXED32 => {
                self.take(4)?;
            }
            LEN => {
                let n = self.varint()?;
                self.take(n)?;
            }
            START_GROUP => loop {
                let (inner, w) = self.key()?;
                if w == END_GROUP {
                    if inner != tag {
                        return Err(WireError::Group);
                    }
                    break;
                }
                self.skip(w, inner, depth - 1)?;
            },
            _ => return Err(WireError::Group),
        }
        Ok(())
    }
}
