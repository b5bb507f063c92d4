//! The alert store on real on-disk SQLite files: dedup, status history, retention, survival across
//! reopen, migrations, corrupted and locked files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use correlator::{Alert, AttackRef, Severity};
use sensor::store::{AlertFilter, ResumePoint, Status, Store, StoreConfig, StoreError};

const SEC: i64 = 1_000_000_000;
const T0: i64 = 1_780_000_000 * SEC;

fn alert(rule: &str, key: &str, ts: i64) -> Alert {
    Alert {
        rule_id: rule.into(),
        rule_name: format!("Rule {rule}"),
        severity: Severity::High,
        risk_score: 73,
        attack: AttackRef {
            techniques: vec!["T1559".into()],
            analytic: Some("AN1358".into()),
            ..AttackRef::default()
        },
        timestamp_ns: ts,
        first_event_ns: ts - SEC,
        join_keys: vec![serde_json::json!(key)],
        host: Some("web-1".into()),
        user: Some("alice".into()),
        process: Some("/usr/bin/socat".into()),
        settings: serde_json::Map::new(),
        reason: format!("{rule} fired for {key}"),
        evidence: vec![
            serde_json::json!({"@timestamp": ts, "event": {"action": "connect"}, "user": {"name": key}}),
        ],
    }
}

fn cfg(dir: &tempfile::TempDir) -> StoreConfig {
    let mut c = StoreConfig::new(dir.path().join("alerts.db"));
    c.dedup_window_ns = 60 * SEC;
    c.max_evidence = 3;
    c
}

#[test]
fn dedup_folds_repeats_within_the_window_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&cfg(&dir)).unwrap();
    let a = s.record(&alert("r1", "k1", T0), T0).unwrap();
    assert!(a.new);
    // Same rule and key 30 s later: folded.
    let b = s.record(&alert("r1", "k1", T0 + 30 * SEC), T0).unwrap();
    assert_eq!((b.id, b.new, b.count), (a.id, false, 2));
    // Another key, another rule: new alerts.
    assert!(s.record(&alert("r1", "k2", T0 + 31 * SEC), T0).unwrap().new);
    assert!(s.record(&alert("r2", "k1", T0 + 31 * SEC), T0).unwrap().new);
    // The window runs from the last sighting: 30 + 59 s is still inside, 30 + 59 + 61 is not.
    assert!(!s.record(&alert("r1", "k1", T0 + 89 * SEC), T0).unwrap().new);
    let late = s.record(&alert("r1", "k1", T0 + 150 * SEC), T0).unwrap();
    assert!(late.new, "a repeat after the window is a new alert");
    let d = s.get(a.id).unwrap();
    assert_eq!(d.alert.count, 3);
    assert_eq!(d.alert.first_seen_ns, T0 - SEC);
    assert_eq!(d.alert.last_seen_ns, T0 + 89 * SEC);
    assert_eq!(
        d.evidence.len(),
        3,
        "evidence is appended by repeats up to max_evidence"
    );
    assert_eq!(s.list(&AlertFilter::default()).unwrap().len(), 4);
}

#[test]
fn closed_alerts_are_not_reused_and_suppressed_ones_absorb_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&cfg(&dir)).unwrap();
    let a = s.record(&alert("r1", "k1", T0), T0).unwrap();
    s.set_status(a.id, Status::Closed, "tester", "handled", T0)
        .unwrap();
    let b = s.record(&alert("r1", "k1", T0 + SEC), T0).unwrap();
    assert!(b.new, "a repeat of a closed alert opens a new one");
    s.set_status(b.id, Status::Suppressed, "tester", "known noisy job", T0)
        .unwrap();
    // Suppressed absorbs repeats even long after the window.
    let c = s.record(&alert("r1", "k1", T0 + 3600 * SEC), T0).unwrap();
    assert_eq!((c.id, c.new, c.status), (b.id, false, Status::Suppressed));
}

#[test]
fn status_history_records_who_when_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&cfg(&dir)).unwrap();
    let id = s.record(&alert("r1", "k1", T0), T0).unwrap().id;
    s.set_status(
        id,
        Status::Acknowledged,
        "alice (uid 0)",
        "looking",
        T0 + SEC,
    )
    .unwrap();
    s.set_status(
        id,
        Status::Closed,
        "bob (uid 0)",
        "false positive: backup job",
        T0 + 2 * SEC,
    )
    .unwrap();
    let d = s.get(id).unwrap();
    assert_eq!(d.alert.status, Status::Closed);
    let h: Vec<_> = d
        .history
        .iter()
        .map(|h| (h.from, h.to, h.actor.as_str(), h.reason.as_str(), h.at_ns))
        .collect();
    assert_eq!(h[0].0, None);
    assert_eq!(h[0].1, Status::Open);
    assert_eq!(
        h[1],
        (
            Some(Status::Open),
            Status::Acknowledged,
            "alice (uid 0)",
            "looking",
            T0 + SEC
        )
    );
    assert_eq!(
        h[2],
        (
            Some(Status::Acknowledged),
            Status::Closed,
            "bob (uid 0)",
            "false positive: backup job",
            T0 + 2 * SEC
        )
    );
    assert!(matches!(
        s.set_status(9999, Status::Closed, "x", "y", T0),
        Err(StoreError::NotFound(9999))
    ));
}

#[test]
fn filters_select_by_status_severity_rule_host_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&cfg(&dir)).unwrap();
    let mut low = alert("low-rule", "k", T0);
    low.severity = Severity::Low;
    low.host = Some("db-2".into());
    s.record(&low, T0).unwrap();
    let id = s.record(&alert("r1", "k1", T0 + 100 * SEC), T0).unwrap().id;
    s.set_status(id, Status::Acknowledged, "t", "r", T0)
        .unwrap();
    let n = |f: AlertFilter| s.list(&f).unwrap().len();
    assert_eq!(
        n(AlertFilter {
            status: Some(Status::Acknowledged),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        n(AlertFilter {
            severity: Some(Severity::Medium),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        n(AlertFilter {
            rule: Some("low-rule".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        n(AlertFilter {
            rule: Some("Rule r1".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        n(AlertFilter {
            host: Some("db-2".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        n(AlertFilter {
            since_ns: Some(T0 + 50 * SEC),
            ..Default::default()
        }),
        1
    );
    assert_eq!(n(AlertFilter::default()), 2);
}

#[test]
fn retention_by_age_and_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(&dir);
    c.max_age_ns = Some(3600 * SEC);
    c.max_bytes = None;
    let mut s = Store::open(&c).unwrap();
    s.record(&alert("old", "k", T0 - 7200 * SEC), T0).unwrap();
    let keep = s.record(&alert("new", "k", T0 - 60 * SEC), T0).unwrap().id;
    let r = s.apply_retention(T0).unwrap();
    assert_eq!(r.deleted_by_age, 1);
    let left = s.list(&AlertFilter::default()).unwrap();
    assert_eq!(left.iter().map(|a| a.id).collect::<Vec<_>>(), vec![keep]);
    drop(s);

    // Size: fill with alerts carrying 4 KiB of evidence, then cap at 256 KiB.
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(&dir);
    c.max_age_ns = None;
    c.max_bytes = Some(256 * 1024);
    let mut s = Store::open(&c).unwrap();
    let big = "x".repeat(4096);
    let batch: Vec<Alert> = (0..400)
        .map(|i| {
            let mut a = alert("bulk", &format!("k{i}"), T0 + i * SEC);
            a.evidence = vec![serde_json::json!({ "blob": big })];
            a
        })
        .collect();
    s.record_batch(&batch, &[], T0).unwrap();
    let before = s.stats().unwrap();
    assert!(before.used_bytes > 1024 * 1024, "{before:?}");
    let r = s.apply_retention(T0).unwrap();
    let after = s.stats().unwrap();
    assert!(r.deleted_by_size > 300, "{r:?}");
    assert!(after.used_bytes <= 256 * 1024, "{after:?}");
    // The oldest went first: the newest alert is still there.
    let newest = s
        .list(&AlertFilter {
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(newest[0].last_seen_ns, T0 + 399 * SEC);
    assert!(
        after.file_bytes < before.file_bytes,
        "freed pages go back to the file system: {before:?} -> {after:?}"
    );
}

#[test]
fn alerts_and_history_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(&dir);
    let id = {
        let mut s = Store::open(&c).unwrap();
        let id = s.record(&alert("r1", "k1", T0), T0).unwrap().id;
        s.set_status(id, Status::Acknowledged, "alice", "mine", T0)
            .unwrap();
        s.close().unwrap();
        id
    };
    let s = Store::open(&c).unwrap();
    let d = s.get(id).unwrap();
    assert_eq!(d.alert.status, Status::Acknowledged);
    assert_eq!(d.history.len(), 2);
    assert_eq!(d.evidence.len(), 1);
    assert_eq!(s.schema_version().unwrap(), 5);
}

#[test]
fn an_old_schema_is_migrated_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(&dir);
    {
        // A version-1 database, as the first release wrote it.
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute_batch(
            "CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, rule_id TEXT NOT NULL, rule_name TEXT NOT NULL,
             dedup_key TEXT NOT NULL, severity INTEGER NOT NULL, risk_score INTEGER NOT NULL, status TEXT NOT NULL,
             first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL, created_ns INTEGER NOT NULL,
             updated_ns INTEGER NOT NULL, count INTEGER NOT NULL DEFAULT 1, host TEXT, user_name TEXT, process TEXT,
             attack TEXT NOT NULL, reason TEXT NOT NULL, settings TEXT NOT NULL, join_keys TEXT NOT NULL);
             CREATE TABLE evidence (alert_id INTEGER NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, PRIMARY KEY (alert_id, seq));
             CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER NOT NULL, at_ns INTEGER NOT NULL,
             actor TEXT NOT NULL, from_status TEXT, to_status TEXT NOT NULL, reason TEXT NOT NULL);
             INSERT INTO alerts VALUES (7, 'r1', 'Rule r1', '[]', 3, 50, 'open', 1, 2, 3, 4, 1, 'h', 'u', 'p', '{}', 'why', '{}', '[]');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    {
        let mut s = Store::open(&c).unwrap();
        assert_eq!(s.schema_version().unwrap(), 5);
        assert_eq!(s.get(7).unwrap().alert.reason, "why");
        // v4's and v5's columns are there (empty for an alert stored before them).
        assert_eq!(s.get(7).unwrap().alert.container, None);
        assert_eq!(s.get(7).unwrap().alert.source, None);
        // v2's table works.
        s.record_batch(
            &[],
            &[(
                "f".into(),
                ResumePoint::File {
                    inode: 1,
                    offset: 10,
                },
            )],
            T0,
        )
        .unwrap();
        assert_eq!(
            s.file_resume_point("f").unwrap(),
            Some(ResumePoint::File {
                inode: 1,
                offset: 10
            })
        );
        s.close().unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&c.path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99;").unwrap();
    }
    let e = Store::open(&c).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, StoreError::NewerSchema { found: 99, .. }),
        "{msg}"
    );
    assert!(msg.contains(&c.path.display().to_string()), "{msg}");
}

#[test]
fn a_corrupted_file_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(&dir);
    std::fs::write(
        &c.path,
        b"this is not a database, it is a text file that got in the way\n".repeat(100),
    )
    .unwrap();
    let e = Store::open(&c).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains(&c.path.display().to_string()) && msg.contains("corrupted"),
        "{msg}"
    );

    // A real database whose pages were damaged after it was written.
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(&dir);
    {
        let mut s = Store::open(&c).unwrap();
        let batch: Vec<Alert> = (0..200)
            .map(|i| alert("r", &format!("k{i}"), T0 + i))
            .collect();
        s.record_batch(&batch, &[], T0).unwrap();
        s.close().unwrap();
    }
    let mut bytes = std::fs::read(&c.path).unwrap();
    assert!(bytes.len() > 16 * 4096);
    for b in &mut bytes[4096..12 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&c.path, bytes).unwrap();
    let e = Store::open(&c).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains(&c.path.display().to_string()), "{e}");

    // Someone else's SQLite database.
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(&dir);
    rusqlite::Connection::open(&c.path)
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    let e = Store::open(&c).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
}

#[test]
fn a_store_in_use_is_locked_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(&dir);
    c.busy_timeout_ms = 100;
    let first = Store::open(&c).unwrap();
    let e = Store::open(&c).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Locked { .. }), "{msg}");
    assert!(
        msg.contains(&c.path.display().to_string()) && msg.contains("locked"),
        "{msg}"
    );
    drop(first);
    Store::open(&c).unwrap();
}

#[test]
fn source_positions_commit_with_their_alerts_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(&dir);
    let pos = |seq: u64| {
        (
            "ingest".to_string(),
            ResumePoint::Spool(ingest::consumer::Position {
                seq,
                decoders: Vec::new(),
                contexts: Vec::new(),
            }),
        )
    };
    {
        let mut s = Store::open(&c).unwrap();
        assert_eq!(s.spool_resume_point("ingest").unwrap(), None);
        s.record_batch(&[alert("r1", "k1", T0)], &[pos(7)], T0)
            .unwrap();
        s.record_batch(&[alert("r1", "k2", T0)], &[pos(9)], T0)
            .unwrap();
        assert_eq!(s.spool_resume_point("ingest").unwrap(), Some(pos(9).1));
        s.close().unwrap();
    }
    // The store file as another process finds it after a crash: positions and alerts agree.
    let conn = rusqlite::Connection::open(&c.path).unwrap();
    let (alerts, position): (i64, String) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM alerts), (SELECT position FROM source_positions WHERE name = 'ingest')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((alerts, position.as_str()), (2, r#"{"seq":9}"#));
    drop(conn);
    let s = Store::open(&c).unwrap();
    assert_eq!(s.spool_resume_point("ingest").unwrap(), Some(pos(9).1));
    assert_eq!(s.spool_resume_point("other").unwrap(), None);
}

/// An alert whose evidence names a container keeps it (columns of v4): `alerts list --container`
/// (name, full id, 12-digit prefix) and `--namespace` find it; the same detection in two
/// containers is two alerts, repeats in one container fold.
#[test]
fn container_of_an_alert_is_kept_filtered_on_and_part_of_the_dedup_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&cfg(&dir)).unwrap();
    let in_ctr = |id: &str, name: &str, ns: &str, ts: i64| {
        let mut a = alert("r1", "k1", ts);
        a.evidence = vec![serde_json::json!({
            "event": {"action": "fifo_create"},
            "container": {"id": id, "name": name, "image": {"name": "localhost/bb", "tag": ["1"]}},
            "kubernetes": {"namespace": ns, "pod": {"name": format!("{name}-pod")}},
        })];
        a
    };
    let id_a = "a".repeat(64);
    let id_b = "b".repeat(64);
    let a1 = s.record(&in_ctr(&id_a, "web", "shop", T0), T0).unwrap();
    let a2 = s
        .record(&in_ctr(&id_a, "web", "shop", T0 + SEC), T0)
        .unwrap();
    assert!(a1.new && !a2.new, "a repeat in one container folds");
    let b = s
        .record(&in_ctr(&id_b, "db", "data", T0 + SEC), T0)
        .unwrap();
    assert!(b.new, "the same key in another container is another alert");
    let host = s.record(&alert("r1", "k1", T0 + SEC), T0).unwrap();
    assert!(host.new);
    let stored = s.get(a1.id).unwrap().alert.container.unwrap();
    assert_eq!(stored.id, id_a);
    assert_eq!(stored.name.as_deref(), Some("web"));
    assert_eq!(stored.image.as_deref(), Some("localhost/bb:1"));
    assert_eq!(stored.namespace.as_deref(), Some("shop"));
    assert_eq!(stored.pod.as_deref(), Some("web-pod"));
    let ids = |f: AlertFilter| -> Vec<i64> { s.list(&f).unwrap().iter().map(|a| a.id).collect() };
    let by = |c: Option<&str>, ns: Option<&str>| AlertFilter {
        container: c.map(str::to_string),
        namespace: ns.map(str::to_string),
        ..AlertFilter::default()
    };
    assert_eq!(ids(by(Some("web"), None)), vec![a1.id]);
    assert_eq!(ids(by(Some(&id_b), None)), vec![b.id]);
    assert_eq!(ids(by(Some(&id_b[..12]), None)), vec![b.id]);
    assert_eq!(
        ids(by(Some(&id_b[..8]), None)),
        Vec::<i64>::new(),
        "short prefixes are not ids"
    );
    assert_eq!(ids(by(None, Some("data"))), vec![b.id]);
    assert_eq!(ids(by(Some("web"), Some("data"))), Vec::<i64>::new());
    assert!(s.get(host.id).unwrap().alert.container.is_none());
}

#[test]
fn source_of_an_alert_is_kept_and_filtered_on_with_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&cfg(&dir)).unwrap();
    let with = |module: Option<&str>, agent_type: Option<&str>, host: &str, key: &str| {
        let mut a = alert("r1", key, T0);
        a.host = Some(host.into());
        let mut ev = serde_json::json!({"@timestamp": T0, "host": {"name": host}});
        if let Some(m) = module {
            ev["event"] = serde_json::json!({"module": m});
        }
        if let Some(t) = agent_type {
            ev["agent"] = serde_json::json!({"type": t});
        }
        a.evidence = vec![ev];
        a
    };
    let kernel = s
        .record(&with(Some("sensor"), None, "web-1", "k1"), T0)
        .unwrap()
        .id;
    let auditd = s
        .record(&with(Some("auditd"), Some("auditbeat"), "web-1", "k2"), T0)
        .unwrap()
        .id;
    let beat = s
        .record(&with(None, Some("filebeat"), "db-1", "k3"), T0)
        .unwrap()
        .id;
    let none = s.record(&with(None, None, "db-1", "k4"), T0).unwrap().id;
    let src = |s: &Store, id| s.get(id).unwrap().alert.source;
    assert_eq!(src(&s, kernel).as_deref(), Some("sensor"));
    assert_eq!(
        src(&s, auditd).as_deref(),
        Some("auditd"),
        "event.module wins over agent.type"
    );
    assert_eq!(src(&s, beat).as_deref(), Some("filebeat"));
    assert_eq!(src(&s, none), None);
    let ids = |f: AlertFilter| -> Vec<i64> { s.list(&f).unwrap().iter().map(|a| a.id).collect() };
    let f = |host: Option<&str>, source: Option<&str>| AlertFilter {
        host: host.map(str::to_string),
        source: source.map(str::to_string),
        ..AlertFilter::default()
    };
    assert_eq!(ids(f(None, Some("auditd"))), [auditd]);
    assert_eq!(ids(f(Some("web-1"), None)), [auditd, kernel]);
    assert_eq!(ids(f(Some("web-1"), Some("sensor"))), [kernel]);
    assert_eq!(ids(f(Some("db-1"), Some("sensor"))), Vec::<i64>::new());
    assert_eq!(ids(f(Some("db-1"), Some("filebeat"))), [beat]);
    // A repeat keeps the source of the alert it folds into.
    let r = s
        .record(&with(Some("zeek"), None, "web-1", "k1"), T0 + SEC)
        .unwrap();
    assert_eq!((r.id, r.new), (kernel, false));
    assert_eq!(src(&s, kernel).as_deref(), Some("sensor"));
}
