//! The `windows` decoder over real Windows event log recordings (OTRF Security-Datasets, NXLog
//! `im_msvistalog` JSON as shipped, some through Logstash): at least 99% of the records of each file
//! accepted, every reject named with its line and reason, nothing accepted lost, and the mapping
//! facts an analytic relies on (event time from `UtcTime`, one host name, pipe names, unescaped
//! values) checked on every event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use correlator::{Event, Value};
use ingest::{decode_reader, Format};

/// The real recordings: zip archives of one JSON file each.
fn recordings() -> Vec<PathBuf> {
    let shared = tests::shared_dir().join("corpora/real/windows-sysmon");
    let repo = tests::workspace_root().join("tests/data/real/otrf-security-datasets");
    let mut out = Vec::new();
    for dir in [shared, repo] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            panic!("{} is missing", dir.display());
        };
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "zip") {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn unzip(path: &PathBuf) -> Vec<u8> {
    let out = Command::new("unzip")
        .arg("-p")
        .arg(path)
        .output()
        .expect("unzip must be installed (cargo xtask setup installs it)");
    assert!(out.status.success(), "unzip -p {}", path.display());
    out.stdout
}

fn text<'a>(ev: &'a Event, p: &str) -> Option<&'a str> {
    ev.get_path(p).and_then(Value::as_str)
}

#[test]
fn real_windows_recordings_decode() {
    let files = recordings();
    assert!(
        files.len() >= 4,
        "expected the four recordings, found {files:?}"
    );
    for path in files {
        let data = unzip(&path);
        let records = data
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count();
        let mut events = Vec::new();
        let mut rejects = Vec::new();
        decode_reader(Format::Windows, "corpus", &data[..], &mut |r| match r {
            Ok(ev) => events.push(ev),
            Err(e) => rejects.push(e),
        });
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        println!(
            "{name}: {records} records, {} events, {} rejected",
            events.len(),
            rejects.len()
        );
        for r in &rejects {
            println!("  rejected: line {}: {}", r.line, r.message);
            assert!(r.line >= 1 && r.line as usize <= records && !r.message.is_empty());
        }
        // Nothing lost: every record is an event or a named reject.
        assert_eq!(events.len() + rejects.len(), records, "{name}");
        assert!(
            events.len() * 100 >= records * 99,
            "{name}: {} of {records} accepted (< 99%)",
            events.len()
        );
        let (mut sysmon, mut pipes, mut hosts) = (0, 0, std::collections::BTreeSet::new());
        for ev in &events {
            let code = text(ev, "event.code").expect("event.code");
            assert!(code.parse::<u32>().is_ok(), "{name}: event.code {code}");
            assert_eq!(text(ev, "event.module"), Some("windows"));
            if let Some(h) = text(ev, "host.name") {
                assert!(
                    !h.contains('.') && h == h.to_ascii_lowercase(),
                    "{name}: host.name `{h}` is not a lower-case short name"
                );
                hosts.insert(h.to_string());
            }
            // No value keeps the shipper's XML escapes.
            for (f, v) in ev.fields() {
                if let Value::Str(s) = v {
                    if &*f.name() != "event.original" {
                        assert!(!s.contains("&lt;"), "{name}: {} = {s}", f.name());
                    }
                }
            }
            if text(ev, "event.dataset") == Some("windows.sysmon_operational") {
                sysmon += 1;
                // Event time is Sysmon's UtcTime, not the shipper's local stamps.
                if let Some(utc) = text(ev, "winlog.event_data.UtcTime") {
                    let ts = text(ev, "@timestamp").unwrap();
                    assert_eq!(
                        ts.get(..19).map(|t| t.replace('T', " ")),
                        utc.get(..19).map(str::to_string),
                        "{name}: @timestamp {ts} vs UtcTime {utc}"
                    );
                }
                if matches!(code, "17" | "18") {
                    pipes += 1;
                    let pipe = text(ev, "file.name").expect("pipe events name the pipe");
                    assert_eq!(Some(pipe), text(ev, "winlog.event_data.PipeName"));
                    assert!(
                        pipe.starts_with('\\') || pipe == "<Anonymous Pipe>",
                        "{pipe}"
                    );
                    assert!(ev.get_path("event.category").is_some());
                }
                if code == "1" {
                    for f in ["process.executable", "process.name", "process.parent.name"] {
                        assert!(ev.get_path(f).is_some(), "{name}: Sysmon 1 without {f}");
                    }
                }
            }
        }
        println!("  {sysmon} Sysmon events, {pipes} pipe events, hosts {hosts:?}");
        assert!(sysmon > 0 && pipes > 0, "{name}");
    }
}
