//! The durable spool: an embedded write-ahead log on disk between the listeners and the consumer.
//!
//! Layout of the spool directory:
//! - `seg-<first seq, 20 digits>.wal`: segment files of framed records;
//! - `checkpoint`: the highest sequence number the consumer has committed (text, replaced atomically).
//!
//! A frame is `len: u32 LE | crc32: u32 LE | seq: u64 LE | payload[len]`, the CRC (crc32fast,
//! IEEE) covering the sequence number and the payload. [`Spool::append_batch`] writes every frame
//! of a batch, then `fdatasync`s the segment, and only then returns the last sequence number: a
//! record is acknowledged only once it is on disk. On open, segments are scanned; a torn or
//! corrupt tail of the last segment (a crash during a write that was never acknowledged) is cut
//! off; corruption anywhere else is an error, never silently skipped.
//!
//! Architecture Invariant: sequence numbers are dense and increasing (first record is 1); a
//! reader sees only records that [`Spool::append_batch`] has made durable; [`Spool::commit`] is
//! the only thing that deletes data, and only whole segments at or below the checkpoint.
//!
//! Error paths (each has a test that injects it through the [`WriterIo`] seam):
//! - a write or `fdatasync` that fails: the batch is not acknowledged and its bytes are cut off
//!   the segment; if that truncate fails too, the writer refuses every append until a truncate
//!   succeeds, so no acknowledged frame is ever written after a torn one;
//! - a rotation (new segment, directory `fsync`) that fails after the batch was made durable: the
//!   batch is still acknowledged (it is on disk; reporting it failed would make the agent send it
//!   twice), the writer stays on the current segment and tries again after the next batch; a
//!   segment whose directory entry was not made durable takes no record until it is.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

const HEADER: usize = 16;
const CHECKPOINT: &str = "checkpoint";
/// Largest write buffer kept between batches.
const MAX_KEPT_BUFFER: usize = 32 << 20;
/// Most payload bytes one [`SpoolReader::next_batch`] reads: a backlog of large records is read a
/// bounded slice at a time (8,192 records of 1 MiB would otherwise be 8 GiB at once).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Limits of a spool.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolLimits {
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Most bytes of uncommitted records kept; beyond, appends fail with [`SpoolError::Full`].
    pub max_bytes: u64,
    /// Largest single record.
    pub max_record_bytes: usize,
}

impl Default for SpoolLimits {
    fn default() -> SpoolLimits {
        SpoolLimits {
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            max_record_bytes: 1 << 20,
        }
    }
}

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool is full: {used} bytes uncommitted, limit {limit}")]
    Full { used: u64, limit: u64 },
    #[error("record of {size} bytes is larger than the limit of {limit}")]
    RecordTooLarge { size: usize, limit: usize },
    #[error("spool segment {path} is corrupt at byte {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("commit of sequence {seq} beyond the last durable record {durable}")]
    CommitBeyondEnd { seq: u64, durable: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Segment {
    path: PathBuf,
    bytes: u64,
}

/// The file operations of the spool's writer: the seam through which tests inject the failures of
/// a full or failing disk. [`RealIo`] is the only implementation outside tests.
pub trait WriterIo: Send + Sync {
    /// Writes all of `buf` at the end of the (append-mode) segment.
    fn write_all(&self, file: &mut File, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync` of the segment.
    fn sync_data(&self, file: &File) -> io::Result<()>;
    /// Cuts the segment to `len` bytes.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()>;
    /// Creates a new, empty segment file for appending.
    fn create_segment(&self, path: &Path) -> io::Result<File>;
    /// `fsync` of the spool directory (makes a new segment's name durable).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
pub struct RealIo;

impl WriterIo for RealIo {
    fn write_all(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        file.write_all(buf)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
    fn create_segment(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().create_new(true).append(true).open(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

struct Writer {
    file: File,
    /// First sequence number of the active segment.
    active: u64,
    active_bytes: u64,
    next_seq: u64,
    /// Every segment by its first sequence number (the active one included).
    segments: BTreeMap<u64, Segment>,
    /// The frames of the batch being written, kept between batches.
    buf: Vec<u8>,
    /// Bytes of a failed batch may lie past `active_bytes` in the active segment (its truncate
    /// failed): nothing is appended until a truncate to `active_bytes` succeeds.
    torn: bool,
    /// The active segment's name is not known to be durable (the directory `fsync` after its
    /// creation failed): nothing is appended to it until a directory `fsync` succeeds.
    dir_unsynced: bool,
}

/// A durable, append-only, crash-safe record log with a consumer checkpoint.
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    io: Box<dyn WriterIo>,
    writer: Mutex<Writer>,
    durable: AtomicU64,
    committed: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Spool {
    /// The spool's directory (small state files of the ingest server live beside the segments).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn seg_name(first: u64) -> String {
    format!("seg-{first:020}.wal")
}

fn frame_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Replaces `path` with `data` atomically and durably: `<path>.tmp` written and fsynced, renamed
/// over `path`, then the directory fsynced. The spool checkpoint and the ingest server's small
/// state files are written this way.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Scans a segment; returns the last valid sequence number and the length of the valid prefix,
/// or the first problem found.
fn scan(path: &Path, first: u64) -> Result<(Option<u64>, u64, Option<String>), SpoolError> {
    let data = fs::read(path).map_err(io_err(path))?;
    let mut off = 0usize;
    let mut expect = first;
    let mut last = None;
    while off < data.len() {
        if data.len() - off < HEADER {
            return Ok((last, off as u64, Some("truncated frame header".into())));
        }
        let len =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        let crc = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        let mut seqb = [0u8; 8];
        seqb.copy_from_slice(&data[off + 8..off + 16]);
        let seq = u64::from_le_bytes(seqb);
        if data.len() - off - HEADER < len {
            return Ok((last, off as u64, Some("truncated frame payload".into())));
        }
        let payload = &data[off + HEADER..off + HEADER + len];
        if frame_crc(seq, payload) != crc {
            return Ok((last, off as u64, Some("checksum mismatch".into())));
        }
        if seq != expect {
            return Ok((
                last,
                off as u64,
                Some(format!("sequence {seq} where {expect} was expected")),
            ));
        }
        last = Some(seq);
        expect += 1;
        off += HEADER + len;
    }
    Ok((last, off as u64, None))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering from a crash: a torn tail of the last
    /// segment is cut off, everything before it is kept.
    // Over 100 lines on purpose: crash recovery in order: segment scan, torn-tail cut, index rebuild.
    pub fn open(dir: impl AsRef<Path>, limits: SpoolLimits) -> Result<Spool, SpoolError> {
        Spool::open_with_io(dir, limits, Box::new(RealIo))
    }

    /// As [`Spool::open`], the writer's file operations going through `io` (tests inject
    /// failures this way).
    pub fn open_with_io(
        dir: impl AsRef<Path>,
        limits: SpoolLimits,
        io: Box<dyn WriterIo>,
    ) -> Result<Spool, SpoolError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let cp_path = dir.join(CHECKPOINT);
        let committed = match fs::read_to_string(&cp_path) {
            Ok(t) => t.trim().parse::<u64>().map_err(|_| SpoolError::Corrupt {
                path: cp_path.clone(),
                offset: 0,
                what: format!("checkpoint `{}` is not a number", t.trim()),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(SpoolError::Io {
                    path: cp_path,
                    source: e,
                })
            }
        };
        let mut firsts = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix("seg-")
                .and_then(|n| n.strip_suffix(".wal"))
            {
                if let Ok(first) = n.parse::<u64>() {
                    firsts.push(first);
                }
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        firsts.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut next_seq = committed + 1;
        let count = firsts.len();
        for (i, first) in firsts.iter().copied().enumerate() {
            let path = dir.join(seg_name(first));
            if i > 0 && first != next_seq {
                return Err(SpoolError::Corrupt {
                    path,
                    offset: 0,
                    what: format!("segment starts at {first}, expected {next_seq}"),
                });
            }
            let (last, valid, problem) = scan(&path, first)?;
            if let Some(what) = problem {
                if i + 1 != count {
                    return Err(SpoolError::Corrupt {
                        path,
                        offset: valid,
                        what,
                    });
                }
                tracing::warn!(message = "spool: cutting a torn tail off the last segment", path = %path.display(), offset = valid, %what);
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(valid).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            next_seq = last.map_or(first, |l| l + 1);
            segments.insert(first, Segment { path, bytes: valid });
        }
        let next_seq = next_seq.max(committed + 1);
        let (active, file, active_bytes) = match segments.iter().next_back() {
            Some((&first, seg)) => {
                let f = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(io_err(&seg.path))?;
                (first, f, seg.bytes)
            }
            None => {
                let path = dir.join(seg_name(next_seq));
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                sync_dir(&dir)?;
                segments.insert(next_seq, Segment { path, bytes: 0 });
                (next_seq, f, 0)
            }
        };
        let durable = next_seq - 1;
        Ok(Spool {
            dir,
            limits,
            io,
            writer: Mutex::new(Writer {
                file,
                active,
                active_bytes,
                next_seq,
                segments,
                buf: Vec::new(),
                torn: false,
                dir_unsynced: false,
            }),
            durable: AtomicU64::new(durable),
            committed: AtomicU64::new(committed.min(durable)),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The limits this spool was opened with.
    pub fn limits(&self) -> &SpoolLimits {
        &self.limits
    }

    /// Appends `records` as one batch and makes them durable (written and `fdatasync`ed) before
    /// returning the sequence number of the last one. An empty batch returns the last durable
    /// sequence number. Either every record of the batch is acknowledged or none is.
    pub fn append_batch<B: AsRef<[u8]>>(&self, records: &[B]) -> Result<u64, SpoolError> {
        self.append_with_header(&[], records)
    }

    /// As [`Spool::append_batch`], each record stored as `header` followed by the record: the
    /// listeners frame a request's lines this way straight from the request body, one write and
    /// one `fdatasync` for the whole batch, without building each record first.
    pub fn append_with_header<B: AsRef<[u8]>>(
        &self,
        header: &[u8],
        records: &[B],
    ) -> Result<u64, SpoolError> {
        let mut size = 0u64;
        for r in records {
            let len = header.len() + r.as_ref().len();
            if len > self.limits.max_record_bytes || u32::try_from(len).is_err() {
                return Err(SpoolError::RecordTooLarge {
                    size: len,
                    limit: self.limits.max_record_bytes,
                });
            }
            size += (HEADER + len) as u64;
        }
        if records.is_empty() {
            return Ok(self.durable());
        }
        let mut w = self.lock();
        let used: u64 = w.segments.values().map(|s| s.bytes).sum();
        if used + size > self.limits.max_bytes {
            return Err(SpoolError::Full {
                used,
                limit: self.limits.max_bytes,
            });
        }
        self.ready_to_append(&mut w)?;
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        buf.reserve(usize::try_from(size).unwrap_or(0));
        let mut seq = w.next_seq;
        for r in records {
            let p = r.as_ref();
            let len = header.len() + p.len();
            let mut crc = crc32fast::Hasher::new();
            crc.update(&seq.to_le_bytes());
            crc.update(header);
            crc.update(p);
            buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
            buf.extend_from_slice(&crc.finalize().to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(header);
            buf.extend_from_slice(p);
            seq += 1;
        }
        let res = {
            let Writer { file, .. } = &mut *w;
            self.io
                .write_all(file, &buf)
                .and_then(|()| self.io.sync_data(file))
        };
        // Keep the buffer for the next batch, unless it grew unusually large.
        if buf.capacity() <= MAX_KEPT_BUFFER {
            w.buf = buf;
        }
        if let Err(e) = res {
            // Cut whatever part of the batch reached the file so that the next append is framed
            // right after the last acknowledged record; if the cut fails, appends wait for one
            // that succeeds (see `ready_to_append`).
            let path = self.dir.join(seg_name(w.active));
            if let Err(cut) = self.io.set_len(&w.file, w.active_bytes) {
                tracing::error!(message = "spool: could not cut a failed batch off the segment; appends are refused until it can be", path = %path.display(), error = %cut);
                w.torn = true;
            }
            return Err(SpoolError::Io { path, source: e });
        }
        let last = seq - 1;
        w.next_seq = seq;
        w.active_bytes += size;
        let active = w.active;
        if let Some(s) = w.segments.get_mut(&active) {
            s.bytes += size;
        }
        if w.active_bytes >= self.limits.segment_bytes {
            // The batch is durable whatever happens here: a failed rotation is logged and tried
            // again after the next batch, never reported as a failure of this one.
            self.rotate(&mut w, seq);
        }
        drop(w);
        self.durable.store(last, Ordering::Release);
        self.notify.notify_waiters();
        Ok(last)
    }

    /// Clears what an earlier failure left before a batch is written: a torn tail to cut, or a
    /// directory `fsync` to redo for a new segment. Nothing is written when this fails.
    fn ready_to_append(&self, w: &mut Writer) -> Result<(), SpoolError> {
        if w.torn {
            let path = self.dir.join(seg_name(w.active));
            self.io
                .set_len(&w.file, w.active_bytes)
                .map_err(|source| SpoolError::Io { path, source })?;
            w.torn = false;
        }
        if w.dir_unsynced {
            self.io.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
            w.dir_unsynced = false;
        }
        Ok(())
    }

    /// Starts a new segment at `first`. On failure the writer stays on the active segment (which
    /// grows past `segment_bytes` until a rotation succeeds).
    fn rotate(&self, w: &mut Writer, first: u64) {
        let path = self.dir.join(seg_name(first));
        let f = match self.io.create_segment(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(message = "spool: could not start a new segment; staying on the current one", path = %path.display(), error = %e);
                return;
            }
        };
        // The new (empty) segment is used even when its name is not durable yet: the next append
        // makes it durable first, or fails without writing.
        if let Err(e) = self.io.sync_dir(&self.dir) {
            tracing::warn!(message = "spool: directory fsync after a new segment failed; retried before the next append", dir = %self.dir.display(), error = %e);
            w.dir_unsynced = true;
        }
        w.file = f;
        w.active = first;
        w.active_bytes = 0;
        w.segments.insert(first, Segment { path, bytes: 0 });
    }

    /// The last durable (acknowledged) sequence number; 0 when nothing was ever appended.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// The consumer's last committed sequence number.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Bytes held in segments (committed whole segments are deleted).
    pub fn used_bytes(&self) -> u64 {
        self.lock().segments.values().map(|s| s.bytes).sum()
    }

    /// Records that the consumer has processed everything up to `seq` (durably, before
    /// returning), and deletes segments that hold nothing newer.
    pub fn commit(&self, seq: u64) -> Result<(), SpoolError> {
        let durable = self.durable();
        if seq > durable {
            return Err(SpoolError::CommitBeyondEnd { seq, durable });
        }
        if seq <= self.committed() {
            return Ok(());
        }
        let dst = self.dir.join(CHECKPOINT);
        write_atomic(&dst, format!("{seq}\n").as_bytes()).map_err(io_err(&dst))?;
        self.committed.fetch_max(seq, Ordering::AcqRel);
        // Delete whole segments whose successor starts at or below seq + 1.
        let mut w = self.lock();
        let firsts: Vec<u64> = w.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            let (first, next_first) = (pair[0], pair[1]);
            if next_first <= seq + 1 && first != w.active {
                if let Some(seg) = w.segments.remove(&first) {
                    if let Err(e) = fs::remove_file(&seg.path) {
                        tracing::warn!(message = "spool: could not delete a committed segment", path = %seg.path.display(), error = %e);
                    }
                }
            }
        }
        Ok(())
    }

    /// A reader of the records after sequence number `after` (usually [`Spool::committed`]).
    pub fn reader(&self, after: u64) -> SpoolReader<'_> {
        SpoolReader {
            spool: self,
            next: after + 1,
            pos: None,
        }
    }

    /// Waits until a record after `seq` is durable (returns at once if one already is).
    pub async fn wait_beyond(&self, seq: u64) {
        loop {
            let notified = self.notify.notified();
            if self.durable() > seq {
                return;
            }
            notified.await;
        }
    }
}

/// Reads durable records in sequence order.
pub struct SpoolReader<'a> {
    spool: &'a Spool,
    next: u64,
    /// The segment (by first seq) and byte offset of `next`, once known.
    pos: Option<(u64, u64)>,
}

impl SpoolReader<'_> {
    /// The sequence number the next record will have.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Up to `max` durable records (sequence number, payload), in order, and no more than
    /// [`MAX_BATCH_BYTES`] of payload (at least one record); empty when none is available yet.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max && bytes < MAX_BATCH_BYTES && self.next <= self.spool.durable() {
            let durable = self.spool.durable();
            let (first, offset, path, seg_end_known) = {
                let w = self.spool.lock();
                let Some((&first, seg)) = w.segments.range(..=self.next).next_back() else {
                    return Err(SpoolError::Corrupt {
                        path: self.spool.dir.clone(),
                        offset: 0,
                        what: format!("no segment holds sequence {}", self.next),
                    });
                };
                let offset = match self.pos {
                    Some((f, o)) if f == first => o,
                    _ => 0,
                };
                (
                    first,
                    offset,
                    seg.path.clone(),
                    w.segments.range(first + 1..).next().map(|(&n, _)| n),
                )
            };
            let mut f = File::open(&path).map_err(io_err(&path))?;
            f.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
            let mut r = io::BufReader::with_capacity(256 << 10, f);
            let mut off = offset;
            let mut progressed = false;
            while out.len() < max && bytes < MAX_BATCH_BYTES && self.next <= durable {
                let mut h = [0u8; HEADER];
                match r.read_exact(&mut h) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(SpoolError::Io { path, source: e }),
                }
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
                let mut sb = [0u8; 8];
                sb.copy_from_slice(&h[8..16]);
                let seq = u64::from_le_bytes(sb);
                let mut payload = vec![0u8; len];
                r.read_exact(&mut payload).map_err(io_err(&path))?;
                if frame_crc(seq, &payload) != crc {
                    return Err(SpoolError::Corrupt {
                        path,
                        offset: off,
                        what: "checksum mismatch".into(),
                    });
                }
                off += (HEADER + len) as u64;
                if seq < self.next {
                    continue; // skipping to the reader's start
                }
                if seq != self.next {
                    return Err(SpoolError::Corrupt {
                        path,
                        offset: off,
                        what: format!("sequence {seq} where {} was expected", self.next),
                    });
                }
                bytes += payload.len();
                out.push((seq, payload));
                self.next += 1;
                progressed = true;
            }
            self.pos = Some((first, off));
            if !progressed {
                match seg_end_known {
                    // This segment is exhausted; continue in the next one.
                    Some(n) if n <= self.next => self.pos = Some((n, 0)),
                    _ => break,
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
