//! Batches waiting for the control plane: a bounded, crash-safe, append-only spool on disk (or in memory).
//!
//! Layout of a spool directory:
//! - `<first-seq, 20 digits>.seg`: segment files of length-prefixed records, appended in sequence order and
//!   fsynced after each append. A new segment starts when the active one reaches `max_bytes / 16` (so dropping
//!   the oldest segment frees a small slice of the budget, not half of it), and after every restart (so a
//!   torn tail is never appended after).
//! - `acked`: the highest sequence number the control plane acknowledged, 20 digits and a newline,
//!   overwritten in place. Records at or below it are done; a segment whose records are all done is deleted.
//!
//! A record is `magic "FPS1" | body length u32 | crc32 u32 | samples u32 | seq u64 | body` (little endian); the
//! CRC covers `samples | seq | body`. Reading stops at the first record that is short or fails its CRC (a write
//! torn by a crash or a full disk): it is counted, the segment is cut there, and replay goes on with the next
//! segment. Nothing here panics on bad input.
//!
//! Delivery is at least once: a record leaves the spool only after [`Spool::ack`], and a crash between the
//! server's acknowledgement and the `acked` write re-sends a batch the server recognises by `(agent_id, seq)`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"FPS1";
const HEADER_BYTES: u64 = 24;
const SEGMENT_SUFFIX: &str = ".seg";
const ACKED_FILE: &str = "acked";
const MAX_SEGMENT_BYTES: u64 = 8 << 20;

/// Where and how much to spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Spool directory; `None` keeps batches in memory only (lost on restart).
    pub dir: Option<PathBuf>,
    /// Upper bound of the spool's size, bytes (segment files on disk, record bytes in memory).
    pub max_bytes: u64,
    /// Upper bound of batches held; only the in-memory spool uses it (the disk spool is bounded by bytes).
    pub max_batches: usize,
}

/// Why the spool could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file-system operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// One batch is larger than the whole spool.
    #[error("a batch of {size} bytes does not fit in a spool of {limit} bytes")]
    TooLarge {
        /// Record size, bytes.
        size: u64,
        /// The spool's limit, bytes.
        limit: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The batch's sequence number.
    pub seq: u64,
    /// GPU plus serving samples in the batch (kept so drops and replays are counted without parsing).
    pub samples: u32,
    /// The batch, JSON-encoded exactly as it is sent.
    pub body: Vec<u8>,
}

/// What an append had to drop to make room, oldest first.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Batches dropped.
    pub batches: u64,
    /// Samples in them.
    pub samples: u64,
}

/// What opening a spool found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Unacknowledged batches waiting for replay.
    pub batches: usize,
    /// Torn or corrupt records skipped (each one ends its segment).
    pub torn_records: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    offset: u64,
    len: u64,
    samples: u32,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Records not yet acknowledged, in order.
    entries: VecDeque<Entry>,
}

#[derive(Debug)]
enum Store {
    Disk { dir: PathBuf, segments: VecDeque<Segment>, active: Option<File>, acked_file: File },
    Memory { records: VecDeque<Record> },
}

/// The spool: append at the tail, replay from the head, remove on acknowledgement.
#[derive(Debug)]
pub struct Spool {
    store: Store,
    max_bytes: u64,
    max_batches: usize,
    segment_bytes: u64,
    bytes: u64,
    acked: u64,
    torn: u64,
}

impl Spool {
    /// Opens (creating it if needed) the spool and indexes what a previous run left; torn tails are cut.
    pub fn open(cfg: &SpoolConfig) -> Result<(Self, Recovered), SpoolError> {
        let max_bytes = cfg.max_bytes.max(1);
        let segment_bytes = (max_bytes / 16).clamp(1, MAX_SEGMENT_BYTES);
        let Some(dir) = &cfg.dir else {
            let spool = Spool {
                store: Store::Memory { records: VecDeque::new() },
                max_bytes,
                max_batches: cfg.max_batches.max(1),
                segment_bytes,
                bytes: 0,
                acked: 0,
                torn: 0,
            };
            return Ok((spool, Recovered::default()));
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let acked_path = dir.join(ACKED_FILE);
        let acked_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&acked_path)
            .map_err(io_err(&acked_path))?;
        let acked = read_acked(&acked_file, &acked_path);

        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(SEGMENT_SUFFIX) {
                names.push(name);
            }
        }
        // Zero-padded first sequence numbers sort by name in sequence order.
        names.sort();
        let mut segments = VecDeque::new();
        let mut bytes = 0;
        let mut torn = 0;
        for name in names {
            let path = dir.join(&name);
            let (entries, valid_len, was_torn) = index_segment(&path)?;
            if was_torn {
                torn += 1;
                tracing::warn!(segment = %path.display(), valid_bytes = valid_len, "spool: torn or corrupt record skipped; segment cut there");
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                f.set_len(valid_len).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            let entries: VecDeque<Entry> = entries.into_iter().filter(|e| e.seq > acked).collect();
            if entries.is_empty() {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            bytes += valid_len;
            segments.push_back(Segment { path, bytes: valid_len, entries });
        }
        let recovered = Recovered { batches: segments.iter().map(|s| s.entries.len()).sum(), torn_records: torn };
        let spool = Spool {
            store: Store::Disk { dir: dir.clone(), segments, active: None, acked_file },
            max_bytes,
            max_batches: usize::MAX,
            segment_bytes,
            bytes,
            acked,
            torn,
        };
        Ok((spool, recovered))
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Disk { segments, .. } => segments.iter().map(|s| s.entries.len()).sum(),
            Store::Memory { records } => records.len(),
        }
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        match &self.store {
            Store::Disk { segments, .. } => segments.iter().all(|s| s.entries.is_empty()),
            Store::Memory { records } => records.is_empty(),
        }
    }

    /// Bytes the spool occupies (segment files, including acknowledged records not yet reclaimed).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Torn or corrupt records skipped since the spool was opened (at open or while replaying).
    pub fn torn_records(&self) -> u64 {
        self.torn
    }

    /// The highest sequence number known to this spool (acknowledged or waiting): new batches must exceed it.
    pub fn max_seq(&self) -> u64 {
        let waiting = match &self.store {
            Store::Disk { segments, .. } => segments.back().and_then(|s| s.entries.back()).map_or(0, |e| e.seq),
            Store::Memory { records } => records.back().map_or(0, |r| r.seq),
        };
        waiting.max(self.acked)
    }

    /// Appends a batch (durably, for the disk spool), first dropping the oldest batches if it would not fit.
    pub fn append(&mut self, seq: u64, samples: u32, body: &[u8]) -> Result<Dropped, SpoolError> {
        let size = HEADER_BYTES + body.len() as u64;
        if size > self.max_bytes {
            return Err(SpoolError::TooLarge { size, limit: self.max_bytes });
        }
        let mut dropped = Dropped::default();
        match &mut self.store {
            Store::Memory { records } => {
                while !records.is_empty() && (self.bytes + size > self.max_bytes || records.len() >= self.max_batches) {
                    if let Some(old) = records.pop_front() {
                        self.bytes -= HEADER_BYTES + old.body.len() as u64;
                        dropped.batches += 1;
                        dropped.samples += u64::from(old.samples);
                    }
                }
                records.push_back(Record { seq, samples, body: body.to_vec() });
                self.bytes += size;
            }
            Store::Disk { dir, segments, active, .. } => {
                while self.bytes + size > self.max_bytes {
                    let Some(old) = segments.pop_front() else { break };
                    if segments.is_empty() {
                        // The oldest segment was the active one.
                        *active = None;
                    }
                    std::fs::remove_file(&old.path).map_err(io_err(&old.path))?;
                    self.bytes -= old.bytes;
                    dropped.batches += old.entries.len() as u64;
                    dropped.samples += old.entries.iter().map(|e| u64::from(e.samples)).sum::<u64>();
                }
                let rotate = match (segments.back(), active.as_ref()) {
                    (Some(s), Some(_)) => s.bytes >= self.segment_bytes,
                    _ => true,
                };
                if rotate {
                    let path = dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"));
                    let f = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
                    // The new name must survive a crash too, or its records would be orphaned.
                    File::open(&*dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
                    let bytes = f.metadata().map_err(io_err(&path))?.len();
                    segments.push_back(Segment { path, bytes, entries: VecDeque::new() });
                    self.bytes += bytes;
                    *active = Some(f);
                }
                let (Some(seg), Some(f)) = (segments.back_mut(), active.as_mut()) else {
                    return Err(SpoolError::Io {
                        path: dir.clone(),
                        source: std::io::Error::other("no active spool segment"),
                    });
                };
                let record = encode(seq, samples, body);
                let written = f.write_all(&record).and_then(|()| f.sync_data());
                if let Err(source) = written {
                    // Cut what was half written so later appends stay readable.
                    let _ = f.set_len(seg.bytes);
                    return Err(SpoolError::Io { path: seg.path.clone(), source });
                }
                seg.entries.push_back(Entry { seq, offset: seg.bytes, len: size, samples });
                seg.bytes += size;
                self.bytes += size;
            }
        }
        Ok(dropped)
    }

    /// The oldest waiting batch, read back from disk; corrupt records met on the way are counted and skipped.
    pub fn front(&mut self) -> Result<Option<Record>, SpoolError> {
        loop {
            let (path, entry) = match &self.store {
                Store::Memory { records } => return Ok(records.front().cloned()),
                Store::Disk { segments, .. } => {
                    let Some(seg) = segments.iter().find(|s| !s.entries.is_empty()) else { return Ok(None) };
                    let Some(e) = seg.entries.front() else { return Ok(None) };
                    (seg.path.clone(), *e)
                }
            };
            let mut f = File::open(&path).map_err(io_err(&path))?;
            f.seek(SeekFrom::Start(entry.offset)).map_err(io_err(&path))?;
            let mut buf = vec![0; usize::try_from(entry.len).unwrap_or(usize::MAX).min(1 << 31)];
            let read = f.read_exact(&mut buf);
            match read.ok().and_then(|()| decode(&buf)) {
                Some((record, _)) if record.seq == entry.seq => return Ok(Some(record)),
                _ => {
                    self.torn += 1;
                    tracing::warn!(segment = %path.display(), seq = entry.seq, "spool: record unreadable on replay; skipped");
                    self.remove_front()?;
                }
            }
        }
    }

    /// Marks `seq` acknowledged: it (and anything older still waiting) leaves the spool. Also records `seq` as
    /// the high-water mark that keeps sequence numbers increasing across restarts, even for batches that
    /// were sent live and never spooled.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        while let Some(front) = self.front_seq() {
            if front > seq {
                break;
            }
            self.remove_front()?;
        }
        if seq > self.acked {
            self.acked = seq;
            if let Store::Disk { dir, acked_file, .. } = &self.store {
                // Fixed width, one write at offset 0: no partially written length to worry about, and no
                // fsync (a lost update only re-sends batches the server recognises as duplicates).
                acked_file.write_all_at(format!("{seq:020}\n").as_bytes(), 0).map_err(io_err(&dir.join(ACKED_FILE)))?;
            }
        }
        Ok(())
    }

    fn front_seq(&self) -> Option<u64> {
        match &self.store {
            Store::Disk { segments, .. } => segments.iter().find_map(|s| s.entries.front()).map(|e| e.seq),
            Store::Memory { records } => records.front().map(|r| r.seq),
        }
    }

    /// Drops the oldest waiting record and deletes segments that have nothing left to send.
    fn remove_front(&mut self) -> Result<(), SpoolError> {
        match &mut self.store {
            Store::Memory { records } => {
                if let Some(r) = records.pop_front() {
                    self.bytes -= HEADER_BYTES + r.body.len() as u64;
                }
            }
            Store::Disk { segments, active, .. } => {
                if let Some(seg) = segments.iter_mut().find(|s| !s.entries.is_empty()) {
                    seg.entries.pop_front();
                }
                while segments.front().is_some_and(|s| s.entries.is_empty()) {
                    let Some(seg) = segments.pop_front() else { break };
                    if segments.is_empty() {
                        *active = None;
                    }
                    std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
                    self.bytes -= seg.bytes;
                }
            }
        }
        Ok(())
    }
}

fn read_acked(f: &File, path: &Path) -> u64 {
    let mut buf = [0u8; 21];
    let n = f.read_at(&mut buf, 0).unwrap_or(0);
    if n == 0 {
        return 0;
    }
    match std::str::from_utf8(&buf[..n]).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(v) => v,
        None => {
            // Replay then starts from the oldest spooled batch; the server drops what it already has.
            tracing::warn!(path = %path.display(), "spool: unreadable acknowledgement mark; replaying everything spooled");
            0
        }
    }
}

/// Indexes one segment: its valid records, the length of the valid prefix, and whether a bad record ended it.
fn index_segment(path: &Path) -> Result<(Vec<Entry>, u64, bool), SpoolError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    let mut entries = Vec::new();
    let mut offset = 0usize;
    while offset < data.len() {
        match decode(&data[offset..]) {
            Some((r, len)) => {
                entries.push(Entry { seq: r.seq, offset: offset as u64, len: len as u64, samples: r.samples });
                offset += len;
            }
            None => return Ok((entries, offset as u64, true)),
        }
    }
    Ok((entries, offset as u64, false))
}

fn encode(seq: u64, samples: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES as usize + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&samples.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the record at the start of `data` and its total length; `None` when it is short or corrupt.
fn decode(data: &[u8]) -> Option<(Record, usize)> {
    let header = data.get(..HEADER_BYTES as usize)?;
    if header[..4] != MAGIC {
        return None;
    }
    let word = |at: usize| header.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes);
    let body_len = usize::try_from(word(4)?).ok()?;
    let crc = word(8)?;
    let samples = word(12)?;
    let seq = u64::from_le_bytes(<[u8; 8]>::try_from(header.get(16..24)?).ok()?);
    let total = HEADER_BYTES as usize + body_len;
    let covered = data.get(12..total)?;
    if crc32(covered) != crc {
        return None;
    }
    let body = data.get(HEADER_BYTES as usize..total)?.to_vec();
    Some((Record { seq, samples, body }, total))
}

/// CRC-32 (IEEE 802.3), table driven; enough to tell a torn or bit-rotted record from a good one.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig { dir: Some(dir.to_path_buf()), max_bytes, max_batches: usize::MAX }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_survive_a_reopen_in_order_and_acked_ones_do_not_come_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut s, rec) = Spool::open(&disk(tmp.path(), 1 << 20)).unwrap();
        assert_eq!(rec, Recovered::default());
        for seq in 1..=5 {
            s.append(seq, 2, format!("batch {seq}").as_bytes()).unwrap();
        }
        s.ack(2).unwrap();
        drop(s);
        let (mut s, rec) = Spool::open(&disk(tmp.path(), 1 << 20)).unwrap();
        assert_eq!(rec.batches, 3);
        assert_eq!(s.max_seq(), 5);
        let mut seen = Vec::new();
        while let Some(r) = s.front().unwrap() {
            seen.push(r.seq);
            s.ack(r.seq).unwrap();
        }
        assert_eq!(seen, vec![3, 4, 5]);
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0, "fully acknowledged segments are deleted");
    }

    /// A batch as agents before absent readings spooled it: every NVML reading a plain number.
    const OLD_AGENT_BATCH: &str = r#"{"version":1,"agent_id":"node-1","seq":41,"sent_at_ms":1700000000000,
        "node":{"hostname":"node-1","agent_version":"0.1.0","gpu_source":"nvml","group":null,"deployment":null},
        "gpus":[{"ts_ms":1700000000000,"gpu_index":0,"uuid":"GPU-1","model":"NVIDIA H100 80GB HBM3",
        "util_pct":0.0,"mem_used_bytes":1024,"mem_total_bytes":2048,"power_w":71.5,"temp_c":33.0,
        "sm_clock_mhz":1980,"mem_clock_mhz":2619,"throttle_reasons":0,"ecc_dbe_total":0,"xid_last":0,
        "sm_active":null,"tensor_active":null}],"serving":[],"command_results":[]}"#;

    #[test]
    fn a_spool_written_by_the_previous_agent_version_replays_with_its_readings() {
        let tmp = tempfile::tempdir().unwrap();
        // The segment exactly as the previous version left it on disk (the record format did not change).
        std::fs::write(
            tmp.path().join(format!("{:020}{SEGMENT_SUFFIX}", 41)),
            encode(41, 1, OLD_AGENT_BATCH.as_bytes()),
        )
        .unwrap();
        let (mut s, rec) = Spool::open(&disk(tmp.path(), 1 << 20)).unwrap();
        assert_eq!(rec.batches, 1);
        let r = s.front().unwrap().unwrap();
        assert_eq!(r.seq, 41);
        let b: crate::protocol::Batch = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(b.validate(), Ok(()));
        let g = &b.gpus[0];
        // Old numbers stay numbers: a real 0 % from an old agent is still a reading, not an absent one.
        assert_eq!(
            (g.util_pct, g.power_w, g.mem_total_bytes, g.xid_last),
            (Some(0.0), Some(71.5), Some(2048), Some(0))
        );
        // A new record with absent readings spools and replays beside it.
        let mut new = b.clone();
        new.seq = 42;
        new.gpus[0].util_pct = None;
        s.append(42, 1, &serde_json::to_vec(&new).unwrap()).unwrap();
        s.ack(41).unwrap();
        let r = s.front().unwrap().unwrap();
        let replayed: crate::protocol::Batch = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(replayed.gpus[0].util_pct, None);
        assert_eq!(replayed, new);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_records_before_it_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(&disk(tmp.path(), 1 << 20)).unwrap();
        s.append(10, 1, b"ten").unwrap();
        s.append(11, 1, b"eleven").unwrap();
        drop(s);
        let seg = tmp.path().join(format!("{:020}.seg", 10));
        let mut data = std::fs::read(&seg).unwrap();
        let torn = encode(12, 1, b"twelve");
        data.extend_from_slice(&torn[..torn.len() - 3]);
        std::fs::write(&seg, &data).unwrap();
        let (mut s, rec) = Spool::open(&disk(tmp.path(), 1 << 20)).unwrap();
        assert_eq!(rec, Recovered { batches: 2, torn_records: 1 });
        s.append(13, 1, b"thirteen").unwrap();
        let mut seen = Vec::new();
        while let Some(r) = s.front().unwrap() {
            seen.push(r.seq);
            s.ack(r.seq).unwrap();
        }
        assert_eq!(seen, vec![10, 11, 13]);
    }

    #[test]
    fn a_full_disk_spool_drops_the_oldest_batches_first() {
        let tmp = tempfile::tempdir().unwrap();
        let body = [b'x'; 100];
        // 124-byte records, a 500-byte spool: four fit (segments of 31 bytes hold one record each).
        let (mut s, _) = Spool::open(&disk(tmp.path(), 500)).unwrap();
        let mut dropped = Dropped::default();
        for seq in 1..=6 {
            let d = s.append(seq, 3, &body).unwrap();
            dropped.batches += d.batches;
            dropped.samples += d.samples;
        }
        assert_eq!(dropped, Dropped { batches: 2, samples: 6 });
        assert!(s.bytes() <= 500);
        assert_eq!(s.front().unwrap().map(|r| r.seq), Some(3));
        assert!(matches!(s.append(7, 1, &[0; 600]), Err(SpoolError::TooLarge { .. })));
    }

    #[test]
    fn the_memory_spool_is_bounded_by_count() {
        let (mut s, _) = Spool::open(&SpoolConfig { dir: None, max_bytes: u64::MAX, max_batches: 2 }).unwrap();
        let mut dropped = 0;
        for seq in 1..=4 {
            dropped += s.append(seq, 1, b"b").unwrap().batches;
        }
        assert_eq!(dropped, 2);
        assert_eq!(s.front().unwrap().map(|r| r.seq), Some(3));
    }
}
