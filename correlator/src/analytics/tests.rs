#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::Alert;

/// Accepts every query; records them so tests can see the substituted text.
#[derive(Default)]
struct RecordingEql {
    seen: std::sync::Mutex<Vec<String>>,
}

struct Nop(String);

impl Detector for Nop {
    fn id(&self) -> &str {
        &self.0
    }
    fn on_event(&mut self, _event: &Event, _out: &mut Vec<Alert>) {}
}

impl EqlCompiler for RecordingEql {
    fn filter(&self, query: &str) -> Result<Filter, String> {
        self.seen.lock().unwrap().push(query.to_string());
        Ok(crate::detect::any())
    }
    fn rule(&self, id: &str, query: &str) -> Result<Box<dyn Detector>, String> {
        self.seen.lock().unwrap().push(query.to_string());
        Ok(Box::new(Nop(id.to_string())))
    }
}

#[test]
fn bundled_analytics_parse_and_build() {
    let set = AnalyticSet::load(&[], &Overrides::default()).unwrap();
    let ids: Vec<&str> = set
        .entries
        .iter()
        .map(|e| e.analytic.meta.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "AN1358",
            "AN1357",
            "AN1359",
            "AN0948",
            "AN0082",
            "AN1726",
            "99239e7d-b0d4-46e3-8609-acafcf99f68c"
        ]
    );
    let eql = RecordingEql::default();
    let dets = set.detectors(&eql).unwrap();
    assert!(dets.iter().any(|d| d.id() == "AN1358/socket-path"));
    assert!(dets
        .iter()
        .any(|d| d.id() == "AN1726/pinning-under-inspection"));
    let seen = eql.seen.lock().unwrap();
    assert!(
        seen.iter().all(|q| !q.contains("${")),
        "unsubstituted: {seen:?}"
    );
    assert!(seen
        .iter()
        .any(|q| q.contains(r#"file.path like~ ("/tmp/*", "/dev/shm/*", "/var/tmp/*")"#)));
    // The Elastic rule's query reaches the engine unchanged.
    let elastic = include_str!("../../analytics/elastic-macos-installer-network.toml");
    let q = elastic.split("'''").nth(1).unwrap();
    assert!(seen.iter().any(|s| s.trim() == q.trim()));
    assert!(q.contains(
        r#"sequence by host.id, user.id with maxspan=30s [process where host.os.type == "macos""#
    ));
    for e in &set.entries {
        if e.analytic.meta.id.starts_with("AN") {
            assert!(e.analytic.meta.strategy.is_some());
            assert!(!e.analytic.settings.is_empty());
            assert!(e
                .analytic
                .settings
                .iter()
                .all(|s| !s.description.is_empty()));
        }
    }
}

#[test]
fn overrides_apply_without_touching_the_rule() {
    let cfg = r#"
        [analytics.AN1358.settings]
        FIFOAccessPatterns = ["/opt/app/*"]
        SocketPathBaseline = { learning_period = "0s" }
        [analytics.AN1357]
        enabled = false
    "#;
    let o = Overrides::from_config_text(cfg).unwrap();
    let set = AnalyticSet::load(&[], &o).unwrap();
    let e = set.get("AN1358").unwrap();
    assert_eq!(
        e.values["FIFOAccessPatterns"],
        SettingValue::PatternList(vec!["/opt/app/*".into()])
    );
    match &e.values["SocketPathBaseline"] {
        SettingValue::Baseline { learning_ns, allow } => {
            assert_eq!(*learning_ns, 0);
            assert!(!allow.is_empty(), "allow list kept from the default");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.overridden.len(), 2);
    assert!(!set.get("AN1357").unwrap().enabled);
    let eql = RecordingEql::default();
    let dets = set.detectors(&eql).unwrap();
    assert!(!dets.iter().any(|d| d.id().starts_with("AN1357/")));
    assert!(eql
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|q| q.contains(r#"like~ ("/opt/app/*")"#)));
}

#[test]
fn bad_overrides_are_clear_errors() {
    let err = |cfg: &str| match Overrides::from_config_text(cfg)
        .and_then(|o| AnalyticSet::load(&[], &o))
    {
        Ok(_) => panic!("accepted: {cfg}"),
        Err(e) => e.to_string(),
    };
    let e = err("[analytics.AN1358.settings]\nSocketPathBaselin = {}\n");
    assert!(
        e.contains("`SocketPathBaselin`") && e.contains("SocketPathBaseline"),
        "{e}"
    );
    let e = err("[analytics.AN1726.settings]\nInspectionFailureThreshold = \"three\"\n");
    assert!(
        e.contains("InspectionFailureThreshold")
            && e.contains("non-negative integer")
            && e.contains("\"three\""),
        "{e}"
    );
    let e = err("[analytics.AN1726.settings]\nTimeWindow = 10\n");
    assert!(e.contains("duration"), "{e}");
    let e = err("[analytics.AN9999.settings]\nX = 1\n");
    assert!(e.contains("AN9999") && e.contains("AN1358"), "{e}");
    let e = err("[analytics.AN1358]\nenable = true\n");
    assert!(e.contains("unknown key `enable`"), "{e}");
}

#[test]
fn bad_rule_files_are_clear_errors() {
    let base = include_str!("../../analytics/AN1358.toml");
    let e = Analytic::parse("x.toml", &base.replace("${SharedDirs}", "${SharedDir}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`${SharedDir}` names no setting"), "{e}");
    let e = Analytic::parse(
        "x.toml",
        &base.replace("kind = \"ipc_wiring\"", "kind = \"ipc_wirng\""),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x.toml") && e.contains("ipc_wirng"), "{e}");
    let e = Analytic::parse(
        "x.toml",
        &base.replace("default = [\"/tmp/*\"", "default = [1, \"/tmp/*\""),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("SharedDirs") && e.contains("bad default"), "{e}");
}

#[test]
fn disk_files_replace_bundled_ones() {
    let text =
        include_str!("../../analytics/AN1358.toml").replace("risk_score = 73", "risk_score = 99");
    let set = AnalyticSet::load(&[("AN1358.toml".into(), text)], &Overrides::default()).unwrap();
    assert_eq!(set.get("AN1358").unwrap().analytic.meta.risk_score, 99);
    assert_eq!(set.entries.len(), 7);
}

#[test]
fn bundled_analytics_compile_with_the_eql_engine() {
    let set = AnalyticSet::load(&[], &Overrides::default()).unwrap();
    let dets = set.detectors(&Eql).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dets.len(), 25);
}

fn ev(doc: serde_json::Value) -> Event {
    Event::from_json(&doc).unwrap()
}

#[test]
fn an1358_fifo_and_socket_end_to_end_in_the_library() {
    let o = Overrides::from_config_text(
        "[analytics.AN1358.settings]\nSocketPathBaseline = { learning_period = \"0s\" }\n",
    )
    .unwrap();
    let set = AnalyticSet::load(&[], &o).unwrap();
    let mut dets = set
        .get("AN1358")
        .unwrap()
        .analytic
        .build(&set.get("AN1358").unwrap().values, &Eql)
        .unwrap();
    let evs = [
        ev(
            serde_json::json!({"@timestamp": "2026-01-01T00:00:00Z", "host": {"id": "h1"}, "event": {"category": "file", "action": "fifo_create"}, "file": {"path": "/tmp/f", "type": "fifo"}, "process": {"executable": "/usr/bin/mkfifo", "pid": 10}}),
        ),
        ev(
            serde_json::json!({"@timestamp": "2026-01-01T00:00:01Z", "host": {"id": "h1"}, "event": {"category": "file", "action": "fifo_open"}, "file": {"path": "/tmp/f", "type": "fifo"}, "process": {"executable": "/usr/bin/cat", "pid": 11}}),
        ),
        ev(
            serde_json::json!({"@timestamp": "2026-01-01T00:00:02Z", "host": {"id": "h1"}, "event": {"category": "file", "action": "fifo_open"}, "file": {"path": "/run/x/f", "type": "fifo"}, "process": {"executable": "/usr/bin/cat", "pid": 11}}),
        ),
        ev(
            serde_json::json!({"@timestamp": "2026-01-01T00:00:03Z", "host": {"id": "h1"}, "event": {"category": "network", "action": "unix_connect"}, "network": {"transport": "unix"}, "file": {"path": "/run/systemd/private"}, "process": {"executable": "/usr/bin/systemctl"}}),
        ),
        ev(
            serde_json::json!({"@timestamp": "2026-01-01T00:00:04Z", "host": {"id": "h1"}, "event": {"category": "network", "action": "unix_bind"}, "network": {"transport": "unix"}, "file": {"path": "/dev/shm/.x"}, "process": {"executable": "/tmp/implant"}}),
        ),
    ];
    let mut out = Vec::new();
    for e in &evs {
        for d in &mut dets {
            d.on_event(e, &mut out);
        }
    }
    // The FIFO has no wiring (no shell, no network peer): its low alert comes once the decision
    // delay (30s) has passed in event time.
    let later = evs[4].timestamp_ns + 31_000_000_000;
    for d in &mut dets {
        d.on_watermark(later, &mut out);
    }
    assert_eq!(out.len(), 2, "{out:#?}");
    assert!(out.iter().all(|a| a.rule_id == "AN1358"
        && a.attack.analytic.as_deref() == Some("AN1358")
        && a.attack.strategy.as_deref() == Some("DET0493")));
    assert!(
        out[0]
            .reason
            .starts_with("[socket-path] /tmp/implant used AF_UNIX socket /dev/shm/.x"),
        "{}",
        out[0].reason
    );
    assert_eq!(out[0].severity, crate::Severity::High);
    assert!(
        out[1]
            .reason
            .starts_with("[fifo-wiring] FIFO /tmp/f passes data between local processes"),
        "{}",
        out[1].reason
    );
    // The detector's own severity and risk survive the analytic's stamping.
    assert_eq!(out[1].severity, crate::Severity::Low);
    assert_eq!(out[1].risk_score, 21);
    assert!(out[1].settings.contains_key("FIFOAccessPatterns"));
}

#[test]
fn daemon_rules_section_form() {
    let cfg = "[rules]\ndisabled = [\"AN1357\"]\n[rules.settings.AN1726]\nInspectionFailureThreshold = 7\n";
    let set = AnalyticSet::load(&[], &Overrides::from_config_text(cfg).unwrap()).unwrap();
    assert!(!set.get("AN1357").unwrap().enabled);
    assert_eq!(
        set.get("AN1726").unwrap().values["InspectionFailureThreshold"],
        SettingValue::Threshold(7)
    );
    let bad = "[rules.settings.AN1726]\nInspectionFailureTreshold = 7\n";
    let e = AnalyticSet::load(&[], &Overrides::from_config_text(bad).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("InspectionFailureTreshold"), "{e}");
}

#[test]
fn disabled_list_may_name_eql_rules() {
    let cfg = "[rules]\ndisabled = [\"some-eql-rule-id\", \"AN1358\"]\n";
    let set = AnalyticSet::load(&[], &Overrides::from_config_text(cfg).unwrap()).unwrap();
    assert!(!set.get("AN1358").unwrap().enabled);
}

/// The detectors of an analytic with `lineage = true` share one process table: under fake pids
/// with 1 MiB command lines it sheds as one table would (counted once, not once per detector).
#[test]
fn an_analytics_detectors_share_one_lineage_table() {
    let set = AnalyticSet::load(&[], &Overrides::default()).unwrap();
    let entry = set.get("AN1359").unwrap();
    assert!(entry.analytic.meta.lineage);
    let mut dets = entry.analytic.build(&entry.values, &Eql).unwrap();
    assert!(dets.len() > 1, "AN1359 has several detectors");
    let mut alone = crate::detect::lineage::Lineage::default();
    let cmd = "c".repeat(1 << 20);
    let mut out = Vec::new();
    for pid in 0..3_000 {
        let e = ev(serde_json::json!({"@timestamp": "2026-01-01T00:00:00Z",
            "event": {"category": ["process"], "type": ["start"]}, "host": {"id": "h1"},
            "process": {"pid": pid, "executable": "/bin/x", "command_line": cmd, "parent": {"pid": pid - 1}}}));
        alone.observe(&e);
        for d in &mut dets {
            d.on_event(&e, &mut out);
        }
    }
    assert!(alone.shed() > 0, "the flood overflowed a table");
    let shed: u64 = dets.iter().map(|d| d.shed()).sum();
    assert_eq!(shed, alone.shed());
}
