//! The durable alert store: SQLite in WAL mode, owned by one daemon at a time.
//!
//! Alerts from the engine are deduplicated by rule and key within a window (a repeat bumps `count` and
//! `last_seen` instead of adding a row), carry their evidence events and a history of status changes,
//! and are pruned by age and by size.
//!
//! Architecture Invariant: one process owns a store file (`locking_mode=EXCLUSIVE`); everyone else
//! (the CLI, outputs) goes through the daemon's control API. A second daemon on the same file gets
//! [`StoreError::Locked`] naming the file, never a silently shared database.
//!
//! Architecture Invariant: dedup decisions use event time (`Alert::timestamp_ns`), never the wall
//! clock, so a replay deduplicates the same way as the live run. Only bookkeeping columns
//! (`created_ns`, `updated_ns`, history `at_ns`) and age retention read the clock, passed in by the caller.

mod access;
mod resume;
mod row;
mod schema;
mod task;

pub use access::LocalAlerts;
/// The alert model (one for both stores, see the `alert-store` crate).
pub use alert_store::{
    container_of, dedup_key, source_of, AlertDetail, AlertFilter, ContainerSummary, HistoryEntry,
    Recorded, Status, StoreStats, StoredAlert,
};

use std::fmt;
use std::path::{Path, PathBuf};

use correlator::Alert;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

pub use resume::ResumePoint;
use row::{raw_alert, record_in, severity_code, ALERT_COLUMNS};
pub(crate) use task::spawn;
pub use task::{AckFn, StoreHandle};

/// An alert the store committed, on its way to the outputs (and to `sensor alerts tail`).
#[derive(Clone, Debug)]
pub struct AlertUpdate {
    pub alert: StoredAlert,
    /// True for a new alert, false for a repeat folded into an existing one.
    pub new: bool,
    pub evidence: Vec<serde_json::Value>,
}

/// Errors of the alert store. Every variant that concerns the file names it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open alert store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "alert store {path} is corrupted or not a sensor database ({detail}); move it aside to start a new one"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("alert store {path} is locked by another process (is another `sensor run` using it?)")]
    Locked { path: PathBuf },
    #[error("alert store {path} has schema version {found}, newer than this sensor understands ({supported}); upgrade the sensor")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("alert store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("alert store {path}: cannot create its directory: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no alert with id {0}")]
    NotFound(i64),
    #[error("alert store {path}: row {id} holds invalid data: {detail}")]
    BadRow {
        path: PathBuf,
        id: i64,
        detail: String,
    },
}

/// How the store behaves. Built from the `[store]` config section.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// A repeat of the same rule and key within this many ns of the last one is folded into it.
    pub dedup_window_ns: i64,
    /// Alerts whose `last_seen` is older than this (ns) are deleted by [`Store::apply_retention`].
    pub max_age_ns: Option<i64>,
    /// The database is pruned, oldest alerts first, until its live pages fit in this many bytes.
    pub max_bytes: Option<u64>,
    /// Evidence events kept per alert (repeats add evidence until this many).
    pub max_evidence: usize,
    /// How long to wait for a lock before reporting [`StoreError::Locked`].
    pub busy_timeout_ms: u64,
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            dedup_window_ns: 600 * 1_000_000_000,
            max_age_ns: Some(90 * 86_400 * 1_000_000_000),
            max_bytes: Some(1 << 30),
            max_evidence: 32,
            busy_timeout_ms: 1000,
        }
    }
}

/// What retention removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub deleted_by_age: u64,
    pub deleted_by_size: u64,
}

/// The alert store. Not `Sync`: the daemon keeps it on one thread.
pub struct Store {
    conn: Connection,
    cfg: StoreConfig,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.cfg.path)
            .finish_non_exhaustive()
    }
}

fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return StoreError::Locked {
                    path: path.to_path_buf(),
                };
            }
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                return StoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail: msg.clone().unwrap_or_else(|| f.to_string()),
                };
            }
            _ => {}
        }
    }
    StoreError::Sqlite {
        path: path.to_path_buf(),
        source: e,
    }
}

impl Store {
    /// Opens (creating if needed) the store at `cfg.path`, takes its exclusive lock, checks it and
    /// migrates its schema to the current version.
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let path = cfg.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: path.clone(),
                source,
            })?;
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let err = |e| classify(&path, e);
        conn.busy_timeout(std::time::Duration::from_millis(cfg.busy_timeout_ms))
            .map_err(err)?;
        // Order matters: the lock mode before WAL (so WAL needs no shared memory file), auto_vacuum
        // before the first table exists (size retention hands pages back with incremental_vacuum).
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(err)?;
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                path,
                detail: format!("could not switch to WAL mode (got `{mode}`)"),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // No checkpoint inside a commit: the store thread checkpoints when it is idle (see
        // `checkpoint_passive`), so that an alert never waits behind a WAL checkpoint's fsync.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        // Take the exclusive lock now, so that a second daemon fails at start-up, not at its first alert.
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
            .map_err(err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path,
                detail: check,
            });
        }
        let mut store = Store {
            conn,
            cfg: cfg.clone(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.cfg.path, e)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.cfg.path.clone();
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| classify(&path, e))?;
        let supported = schema::current_version();
        if version > supported {
            return Err(StoreError::NewerSchema {
                path,
                found: version,
                supported,
            });
        }
        if version == 0 {
            // A non-empty database without our version is someone else's file.
            let tables: i64 = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| classify(&path, e))?;
            if tables > 0 {
                return Err(StoreError::Corrupt {
                    path,
                    detail: format!(
                        "it holds {tables} schema objects but no sensor schema version"
                    ),
                });
            }
        }
        for (i, sql) in schema::MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
            tx.execute_batch(sql).map_err(|e| classify(&path, e))?;
            tx.pragma_update(None, "user_version", i + 1)
                .map_err(|e| classify(&path, e))?;
            tx.commit().map_err(|e| classify(&path, e))?;
            tracing::debug!(path = %path.display(), version = i + 1, "alert store schema migrated");
        }
        Ok(())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Records one alert (see [`Store::record_batch`]).
    pub fn record(&mut self, alert: &Alert, now_ns: i64) -> Result<Recorded, StoreError> {
        let mut out = self.record_batch(std::slice::from_ref(alert), &[], now_ns)?;
        out.pop().ok_or(StoreError::NotFound(0))
    }

    /// Records alerts and the sources' resume points in one transaction: either all of them are
    /// durable or none, so after a crash the resume points read back ([`Store::file_resume_point`],
    /// [`Store::spool_resume_point`]) are exactly those of the events whose alerts are stored. A
    /// repeat of an open or acknowledged alert (same rule and [`dedup_key`]) whose last sighting is
    /// within the dedup window, or of a suppressed alert at any distance, is folded into it.
    pub fn record_batch(
        &mut self,
        alerts: &[Alert],
        points: &[(String, ResumePoint)],
        now_ns: i64,
    ) -> Result<Vec<Recorded>, StoreError> {
        let path = self.cfg.path.clone();
        let cfg = self.cfg.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        let mut out = Vec::with_capacity(alerts.len());
        for a in alerts {
            out.push(record_in(&tx, &cfg, a, now_ns).map_err(|e| classify(&path, e))?);
        }
        for (name, point) in points {
            match point {
                ResumePoint::File { inode, offset } => tx.execute(
                    "INSERT INTO source_offsets (name, inode, offset) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET inode = excluded.inode, offset = excluded.offset",
                    params![name, *inode as i64, *offset as i64],
                ),
                // The same JSON text as when this column held an untyped value (field order kept).
                ResumePoint::Spool(p) => {
                    let text = serde_json::to_string(p).map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        detail: format!("position of source `{name}` cannot be written: {e}"),
                    })?;
                    tx.execute(
                        "INSERT INTO source_positions (name, position) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                        params![name, text],
                    )
                }
            }
            .map_err(|e| classify(&path, e))?;
        }
        tx.commit().map_err(|e| classify(&path, e))?;
        Ok(out)
    }

    /// Where a file source stopped (committed together with the alerts its events produced): its
    /// row of `source_offsets`. File sources and positioned sources have a table each, so a file
    /// source may share a name with one ([`Store::spool_resume_point`]).
    pub fn file_resume_point(&self, name: &str) -> Result<Option<ResumePoint>, StoreError> {
        self.conn
            .query_row(
                "SELECT inode, offset FROM source_offsets WHERE name = ?1",
                [name],
                |r| {
                    Ok(ResumePoint::File {
                        inode: r.get::<_, i64>(0)? as u64,
                        offset: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Where a positioned source (network ingest) stopped (committed together with the alerts its
    /// events produced): its row of `source_positions`. A position that is JSON but not a spool
    /// consumer's position is logged and skipped (the source starts from its own checkpoint); one
    /// that is not JSON is a corrupt store.
    pub fn spool_resume_point(&self, name: &str) -> Result<Option<ResumePoint>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT position FROM source_positions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(text) = text else {
            return Ok(None);
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                path: self.cfg.path.clone(),
                detail: format!("position of source `{name}` is not JSON: {e}"),
            })?;
        match serde_json::from_value(value) {
            Ok(p) => Ok(Some(ResumePoint::Spool(p))),
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "the alert store's position of this source is unreadable; it resumes from its own checkpoint");
                Ok(None)
            }
        }
    }

    /// Alerts matching `filter`, newest first (by id).
    pub fn list(&self, filter: &AlertFilter) -> Result<Vec<StoredAlert>, StoreError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(s) = filter.status {
            sql.push_str(" AND status = ?");
            args.push(s.as_str().to_string().into());
        }
        if let Some(s) = filter.severity {
            sql.push_str(" AND severity >= ?");
            args.push(i64::from(severity_code(s)).into());
        }
        if let Some(r) = &filter.rule {
            sql.push_str(" AND (rule_id = ? OR rule_name = ?)");
            args.push(r.clone().into());
            args.push(r.clone().into());
        }
        if let Some(h) = &filter.host {
            sql.push_str(" AND host = ?");
            args.push(h.clone().into());
        }
        if let Some(src) = &filter.source {
            sql.push_str(" AND source = ?");
            args.push(src.clone().into());
        }
        if let Some(c) = &filter.container {
            if AlertFilter::container_is_prefix(c) {
                sql.push_str(" AND (container_name = ? OR substr(container_id, 1, ?) = ?)");
                args.push(c.clone().into());
                args.push(i64::try_from(c.len()).unwrap_or(i64::MAX).into());
                args.push(c.clone().into());
            } else {
                sql.push_str(" AND (container_name = ? OR container_id = ?)");
                args.push(c.clone().into());
                args.push(c.clone().into());
            }
        }
        if let Some(n) = &filter.namespace {
            sql.push_str(" AND k8s_namespace = ?");
            args.push(n.clone().into());
        }
        if let Some(t) = filter.since_ns {
            sql.push_str(" AND last_seen_ns >= ?");
            args.push(t.into());
        }
        if let Some(id) = filter.after_id {
            sql.push_str(" AND id > ?");
            args.push(id.into());
            sql.push_str(" ORDER BY id ASC");
        } else {
            sql.push_str(" ORDER BY id DESC");
        }
        sql.push_str(" LIMIT ?");
        args.push(i64::from(filter.limit.unwrap_or(AlertFilter::DEFAULT_LIMIT)).into());
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), raw_alert)
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(|r| r.decode(&self.cfg.path)).collect()
    }

    /// One alert with its evidence and history.
    pub fn get(&self, id: i64) -> Result<AlertDetail, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"),
                [id],
                raw_alert,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(StoreError::NotFound(id))?;
        let alert = raw.decode(&self.cfg.path)?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT event FROM evidence WHERE alert_id = ?1 ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let evidence = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .map(|r| {
                let s = r.map_err(|e| self.err(e))?;
                serde_json::from_str(&s).map_err(|e| StoreError::BadRow {
                    path: self.cfg.path.clone(),
                    id,
                    detail: format!("evidence: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT at_ns, actor, from_status, to_status, reason FROM history WHERE alert_id = ?1 ORDER BY at_ns, id")
            .map_err(|e| self.err(e))?;
        let history = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?
            .map(|r| {
                let (at_ns, actor, from, to, reason) = r.map_err(|e| self.err(e))?;
                let bad = |d: String| StoreError::BadRow {
                    path: self.cfg.path.clone(),
                    id,
                    detail: d,
                };
                Ok(HistoryEntry {
                    at_ns,
                    actor,
                    from: from.map(|f| f.parse()).transpose().map_err(bad)?,
                    to: to.parse().map_err(|d: String| StoreError::BadRow {
                        path: self.cfg.path.clone(),
                        id,
                        detail: d,
                    })?,
                    reason,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(AlertDetail {
            alert,
            evidence,
            history,
        })
    }

    /// Changes an alert's status and records who did it, when and why.
    pub fn set_status(
        &mut self,
        id: i64,
        status: Status,
        actor: &str,
        reason: &str,
        now_ns: i64,
    ) -> Result<StoredAlert, StoreError> {
        let path = self.cfg.path.clone();
        let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
        let from: String = tx
            .query_row("SELECT status FROM alerts WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| classify(&path, e))?
            .ok_or(StoreError::NotFound(id))?;
        tx.execute(
            "UPDATE alerts SET status = ?2, updated_ns = ?3 WHERE id = ?1",
            params![id, status.as_str(), now_ns],
        )
        .map_err(|e| classify(&path, e))?;
        tx.execute(
            "INSERT INTO history (alert_id, at_ns, actor, from_status, to_status, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, now_ns, actor, from, status.as_str(), reason],
        )
        .map_err(|e| classify(&path, e))?;
        tx.commit().map_err(|e| classify(&path, e))?;
        Ok(self.get(id)?.alert)
    }

    /// Deletes alerts older than the configured age, then the oldest alerts until the live pages fit in
    /// the configured size, and hands freed pages back to the file system.
    pub fn apply_retention(&mut self, now_ns: i64) -> Result<RetentionReport, StoreError> {
        let path = self.cfg.path.clone();
        let e = |x| classify(&path, x);
        let mut report = RetentionReport::default();
        if let Some(age) = self.cfg.max_age_ns {
            let cutoff = now_ns.saturating_sub(age);
            report.deleted_by_age = self
                .conn
                .execute("DELETE FROM alerts WHERE last_seen_ns < ?1", [cutoff])
                .map_err(e)? as u64;
        }
        if let Some(max) = self.cfg.max_bytes {
            loop {
                let used = self.used_bytes()?;
                if used <= max {
                    break;
                }
                let n = self
                    .conn
                    .execute(
                        "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts ORDER BY last_seen_ns, id LIMIT 16)",
                        [],
                    )
                    .map_err(e)? as u64;
                if n == 0 {
                    break;
                }
                report.deleted_by_size += n;
            }
        }
        if report.deleted_by_age + report.deleted_by_size > 0 {
            // Each result row of incremental_vacuum is one page handed back: step through all of them.
            let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum").map_err(e)?;
            let mut rows = stmt.query([]).map_err(e)?;
            while rows.next().map_err(e)?.is_some() {}
            drop(rows);
            drop(stmt);
            self.checkpoint()?;
        }
        Ok(report)
    }

    fn used_bytes(&self) -> Result<u64, StoreError> {
        let q = |p: &str| -> Result<i64, StoreError> {
            self.conn
                .query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        let (pages, free, size) = (q("page_count")?, q("freelist_count")?, q("page_size")?);
        Ok(u64::try_from((pages - free) * size).unwrap_or(0))
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats {
            path: self.cfg.path.display().to_string(),
            engine: "sqlite".to_string(),
            ..StoreStats::default()
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT status, count(*) FROM alerts GROUP BY status")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        for r in rows {
            let (status, n) = r.map_err(|e| self.err(e))?;
            s.count(&status, n as u64);
        }
        let file_len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.cfg.path.clone().into_os_string();
        wal.push("-wal");
        s.file_bytes = file_len(&self.cfg.path) + file_len(Path::new(&wal));
        s.used_bytes = self.used_bytes()?;
        s.schema_version = self.schema_version()?;
        Ok(s)
    }

    /// Moves the WAL into the main file and truncates it (done at clean shutdown).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

    /// Copies committed WAL pages into the database file (and syncs it) without truncating the
    /// WAL; the store thread calls it when no write is waiting.
    pub fn checkpoint_passive(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

    /// Checkpoints and closes the database.
    pub fn close(self) -> Result<(), StoreError> {
        self.checkpoint()?;
        let path = self.cfg.path.clone();
        self.conn.close().map_err(|(_, e)| classify(&path, e))
    }
}
