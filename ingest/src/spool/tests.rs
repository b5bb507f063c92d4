//! The spool's tests: the happy paths, then each failure of a full or failing disk injected
//! through the [`WriterIo`] seam.
#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn append_read_commit_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SpoolLimits {
        segment_bytes: 200,
        ..SpoolLimits::default()
    };
    let sp = Spool::open(dir.path(), limits.clone()).unwrap();
    let recs: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("record {i}").into_bytes())
        .collect();
    assert_eq!(sp.append_batch(&recs[..20]).unwrap(), 20);
    assert_eq!(sp.append_batch(&recs[20..]).unwrap(), 50);
    let mut r = sp.reader(0);
    let mut got = Vec::new();
    loop {
        let b = r.next_batch(7).unwrap();
        if b.is_empty() {
            break;
        }
        got.extend(b);
    }
    assert_eq!(got.len(), 50);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, (s, p))| *s == i as u64 + 1 && p == &recs[i]));
    sp.commit(30).unwrap();
    drop(sp);
    let sp = Spool::open(dir.path(), limits).unwrap();
    assert_eq!(sp.committed(), 30);
    assert_eq!(sp.durable(), 50);
    let b = sp.reader(sp.committed()).next_batch(100).unwrap();
    assert_eq!(b.first().map(|(s, _)| *s), Some(31));
    assert_eq!(b.len(), 20);
    assert_eq!(sp.append_batch(&[b"x"]).unwrap(), 51);
}

#[test]
fn append_with_header_frames_header_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let sp = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
    assert_eq!(sp.append_batch(&[b"plain"]).unwrap(), 1);
    let body = b"first\nsecond";
    assert_eq!(
        sp.append_with_header(b"HDR:", &[&body[..5], &body[6..]])
            .unwrap(),
        3
    );
    let empty: [&[u8]; 0] = [];
    assert_eq!(sp.append_with_header(b"HDR:", &empty).unwrap(), 3);
    let want = vec![
        (1, b"plain".to_vec()),
        (2, b"HDR:first".to_vec()),
        (3, b"HDR:second".to_vec()),
    ];
    assert_eq!(sp.reader(0).next_batch(10).unwrap(), want);
    drop(sp);
    // The frames (and their checksums) survive the scan on open.
    let sp = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
    assert_eq!(sp.durable(), 3);
    assert_eq!(sp.reader(0).next_batch(10).unwrap(), want);
    // The record limit counts the header.
    let small = tempfile::tempdir().unwrap();
    let sp = Spool::open(
        small.path(),
        SpoolLimits {
            max_record_bytes: 8,
            ..SpoolLimits::default()
        },
    )
    .unwrap();
    assert!(matches!(
        sp.append_with_header(b"HDR:", &[b"12345"]),
        Err(SpoolError::RecordTooLarge { size: 9, .. })
    ));
    assert_eq!(sp.append_with_header(b"HDR:", &[b"1234"]).unwrap(), 1);
}

#[test]
fn torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let sp = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
    sp.append_batch(&[b"a", b"b"]).unwrap();
    drop(sp);
    let seg = dir.path().join(seg_name(1));
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap(); // half a header: a write cut by a crash
    drop(f);
    let sp = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
    assert_eq!(sp.durable(), 2);
    assert_eq!(sp.append_batch(&[b"c"]).unwrap(), 3);
    let all = sp.reader(0).next_batch(10).unwrap();
    assert_eq!(
        all.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn limits() {
    let dir = tempfile::tempdir().unwrap();
    let sp = Spool::open(
        dir.path(),
        SpoolLimits {
            max_bytes: 100,
            max_record_bytes: 10,
            ..SpoolLimits::default()
        },
    )
    .unwrap();
    assert!(matches!(
        sp.append_batch(&[vec![0u8; 11]]),
        Err(SpoolError::RecordTooLarge { .. })
    ));
    sp.append_batch(&[[0u8; 10]; 3]).unwrap();
    assert!(matches!(
        sp.append_batch(&[[0u8; 10]; 3]),
        Err(SpoolError::Full { .. })
    ));
    assert!(matches!(
        sp.commit(4),
        Err(SpoolError::CommitBeyondEnd { .. })
    ));
}

/// A [`WriterIo`] that fails the operations it is told to, once each (the next call works
/// again), over the real file system. A failing write first writes half of its buffer: a
/// torn frame on disk, as a full disk or a crash mid-write leaves.
#[derive(Default)]
struct Faulty {
    write: std::sync::atomic::AtomicU32,
    sync: std::sync::atomic::AtomicU32,
    set_len: std::sync::atomic::AtomicU32,
    create: std::sync::atomic::AtomicU32,
    sync_dir: std::sync::atomic::AtomicU32,
}

fn take(n: &std::sync::atomic::AtomicU32) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
        .is_ok()
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

impl WriterIo for std::sync::Arc<Faulty> {
    fn write_all(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        if take(&self.write) {
            file.write_all(&buf[..buf.len() / 2])?;
            return Err(enospc());
        }
        file.write_all(buf)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        if take(&self.sync) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        file.sync_data()
    }
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        if take(&self.set_len) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        file.set_len(len)
    }
    fn create_segment(&self, path: &Path) -> io::Result<File> {
        if take(&self.create) {
            return Err(enospc());
        }
        RealIo.create_segment(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if take(&self.sync_dir) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        RealIo.sync_dir(dir)
    }
}

fn faulty(dir: &Path, segment_bytes: u64) -> (Spool, std::sync::Arc<Faulty>) {
    let f = std::sync::Arc::new(Faulty::default());
    let limits = SpoolLimits {
        segment_bytes,
        ..SpoolLimits::default()
    };
    (
        Spool::open_with_io(dir, limits, Box::new(f.clone())).unwrap(),
        f,
    )
}

/// Every record the spool holds, after a reopen (what a restart finds), as text.
fn reopened(dir: &Path) -> Vec<(u64, String)> {
    let sp = Spool::open(dir, SpoolLimits::default()).unwrap();
    let mut r = sp.reader(0);
    let mut all = Vec::new();
    loop {
        let b = r.next_batch(1000).unwrap();
        if b.is_empty() {
            return all;
        }
        all.extend(
            b.into_iter()
                .map(|(s, p)| (s, String::from_utf8(p).unwrap())),
        );
    }
}

fn recs(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn a_failed_write_whose_truncate_also_fails_never_leaves_a_torn_frame_before_acknowledged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (sp, f) = faulty(dir.path(), 1 << 20);
    assert_eq!(sp.append_batch(&recs("a", 3)).unwrap(), 3);
    // The write tears (half the batch reaches the file) and the cut fails as well.
    f.write.store(1, Ordering::Release);
    f.set_len.store(1, Ordering::Release);
    let e = sp.append_batch(&recs("b", 3)).unwrap_err();
    assert!(
        matches!(&e, SpoolError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
        "{e}"
    );
    assert_eq!(sp.durable(), 3, "a failed batch is not acknowledged");
    // While the cut keeps failing, nothing is appended after the torn bytes.
    f.set_len.store(1, Ordering::Release);
    assert!(sp.append_batch(&recs("c", 2)).is_err());
    assert_eq!(sp.durable(), 3);
    // Once the cut works, the next batch follows the last acknowledged record directly.
    assert_eq!(sp.append_batch(&recs("d", 2)).unwrap(), 5);
    let live: Vec<_> = sp.reader(0).next_batch(100).unwrap();
    assert_eq!(live.len(), 5);
    drop(sp);
    let want: Vec<(u64, String)> = [("a0", 1), ("a1", 2), ("a2", 3), ("d0", 4), ("d1", 5)]
        .iter()
        .map(|(p, s)| (*s, (*p).to_string()))
        .collect();
    assert_eq!(
        reopened(dir.path()),
        want,
        "every acknowledged record, once"
    );
}

#[test]
fn a_failed_fsync_is_not_acknowledged_and_its_bytes_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (sp, f) = faulty(dir.path(), 1 << 20);
    assert_eq!(sp.append_batch(&recs("a", 2)).unwrap(), 2);
    f.sync.store(1, Ordering::Release);
    assert!(sp.append_batch(&recs("x", 2)).is_err());
    assert_eq!(sp.durable(), 2);
    assert_eq!(sp.append_batch(&recs("b", 1)).unwrap(), 3);
    drop(sp);
    let got: Vec<String> = reopened(dir.path()).into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, ["a0", "a1", "b0"]);
}

#[test]
fn a_failed_rotation_still_acknowledges_the_durable_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    // Every batch of 4 small records passes the 64-byte segment size: each append rotates.
    let (sp, f) = faulty(dir.path(), 64);
    assert_eq!(sp.append_batch(&recs("a", 4)).unwrap(), 4);
    // The new segment cannot be created: the batch is durable and says so.
    f.create.store(1, Ordering::Release);
    assert_eq!(sp.append_batch(&recs("b", 4)).unwrap(), 8);
    // The directory fsync after the next rotation fails: the batch is still acknowledged; the
    // new segment takes nothing until the directory fsync works.
    f.sync_dir.store(1, Ordering::Release);
    assert_eq!(sp.append_batch(&recs("c", 4)).unwrap(), 12);
    f.sync_dir.store(1, Ordering::Release);
    assert!(
        sp.append_batch(&recs("x", 4)).is_err(),
        "appended into a segment whose name may not be durable"
    );
    assert_eq!(sp.durable(), 12);
    assert_eq!(sp.append_batch(&recs("d", 4)).unwrap(), 16);
    let mut r = sp.reader(0);
    let mut live = Vec::new();
    loop {
        let b = r.next_batch(3).unwrap();
        if b.is_empty() {
            break;
        }
        live.extend(b.into_iter().map(|(s, _)| s));
    }
    assert_eq!(live, (1..=16).collect::<Vec<u64>>());
    drop(sp);
    let got = reopened(dir.path());
    let want: Vec<(u64, String)> = ["a", "b", "c", "d"]
        .iter()
        .flat_map(|p| recs(p, 4))
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, p))
        .collect();
    assert_eq!(got, want, "every acknowledged record, once, in order");
}

#[test]
fn a_batch_reads_a_bounded_number_of_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sp = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
    let rec = vec![b'r'; 1 << 20];
    for _ in 0..40 {
        sp.append_batch(&[&rec]).unwrap();
    }
    let mut r = sp.reader(0);
    let first = r.next_batch(8192).unwrap();
    assert_eq!(first.len(), MAX_BATCH_BYTES >> 20);
    let mut n = first.len();
    loop {
        let b = r.next_batch(8192).unwrap();
        if b.is_empty() {
            break;
        }
        assert!(b.iter().map(|(_, p)| p.len()).sum::<usize>() <= MAX_BATCH_BYTES);
        n += b.len();
    }
    assert_eq!(n, 40);
}
