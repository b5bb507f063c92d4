//! Where a source resumes: the one type for it, from the sources through the correlator stage and
//! the store thread to the store's tables.
//!
//! On disk a [`ResumePoint::File`] is a row of `source_offsets` (inode, offset) and a
//! [`ResumePoint::Spool`] a row of `source_positions` (the consumer's [`Position`] as JSON, the
//! same text the daemon wrote when the column held an untyped value).

use ingest::consumer::Position;

/// Where a source stands once every event it handed over before this point is processed: what it
/// resumes from after a restart (committed with the alerts of those events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumePoint {
    /// A file source: the file's inode and the byte offset after the last event read.
    File { inode: u64, offset: u64 },
    /// Network ingest: the spool consumer's position.
    Spool(Position),
}

impl ResumePoint {
    /// The spool sequence number every record up to which is processed, for [`ResumePoint::Spool`].
    pub fn spool_seq(&self) -> Option<u64> {
        match self {
            ResumePoint::Spool(p) => Some(p.seq),
            ResumePoint::File { .. } => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreConfig};

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&StoreConfig::new(dir.path().join("alerts.db"))).unwrap()
    }

    /// Rows exactly as the previous version wrote them (`source_offsets` by inode and offset,
    /// `source_positions` as the untyped JSON of the consumer's position) read back as resume
    /// points, and a resume point written now is the same text.
    #[test]
    fn rows_in_the_old_shape_read_back_as_resume_points() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        let old = r##"{"seq":41,"decoders":[{"format":"auditd","agent":"a1","upto":44}],"contexts":[{"format":"zeek","agent":"z1","lines":["#fields\tts"]}]}"##;
        s.conn
            .execute(
                "INSERT INTO source_positions (name, position) VALUES ('ingest', ?1)",
                [old],
            )
            .unwrap();
        s.conn
            .execute(
                "INSERT INTO source_offsets (name, inode, offset) VALUES ('file:/var/log/e.json', 12, 3456)",
                [],
            )
            .unwrap();
        let Some(ResumePoint::Spool(p)) = s.spool_resume_point("ingest").unwrap() else {
            panic!("the old position row is not read as a spool resume point");
        };
        assert_eq!(p.seq, 41);
        assert_eq!(p.decoders.len(), 1);
        assert_eq!(p.decoders[0].upto, 44);
        assert_eq!(p.contexts[0].lines, vec!["#fields\tts".to_string()]);
        assert_eq!(
            s.file_resume_point("file:/var/log/e.json").unwrap(),
            Some(ResumePoint::File {
                inode: 12,
                offset: 3456
            })
        );
        assert_eq!(s.spool_resume_point("other").unwrap(), None);
        assert_eq!(s.file_resume_point("other").unwrap(), None);
        // One table per kind of source: the file row is not a spool position, nor the reverse.
        assert_eq!(s.spool_resume_point("file:/var/log/e.json").unwrap(), None);
        assert_eq!(s.file_resume_point("ingest").unwrap(), None);

        // Written back now: byte for byte what was there.
        s.record_batch(&[], &[("ingest".into(), ResumePoint::Spool(p))], 1)
            .unwrap();
        let text: String = s
            .conn
            .query_row(
                "SELECT position FROM source_positions WHERE name = 'ingest'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(text, old);
    }

    /// A position row that is JSON but not a consumer position is skipped (the source starts from
    /// its own checkpoint), as before; one that is not JSON is a corrupt store.
    #[test]
    fn unreadable_position_rows() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        s.conn
            .execute(
                "INSERT INTO source_positions (name, position) VALUES ('a', '{\"seq\":\"x\"}'), ('b', 'not json')",
                [],
            )
            .unwrap();
        assert_eq!(s.spool_resume_point("a").unwrap(), None);
        assert!(s.spool_resume_point("b").is_err());
    }
}
