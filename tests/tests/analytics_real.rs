//! Real recordings: the table "Real recordings" in docs/analytics.md says, for each recording as a real
//! agent sent it, what each shipped analytic must do on it with default settings (fire, stay silent, or
//! stay at or below a severity) and why. This test reads that table, decodes every recording with the
//! real `sensor ingest --format F` (all files of a recording in one call; zip archives are unpacked with `unzip`), replays the events through
//! the shipped analytics with `sensor replay`, and checks every row. A row the data does not bear out
//! fails with the recording, the analytic, what was expected and the alerts that came.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What an analytic must do on a recording.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// At least one alert.
    Fire,
    /// At least one alert of this severity or above.
    FireAtLeast(u8),
    /// No alert.
    Silent,
    /// Every alert (there may be none) at this severity or below.
    AtMost(u8),
}

fn severity_rank(s: &str) -> Option<u8> {
    match s {
        "low" => Some(1),
        "medium" => Some(2),
        "high" => Some(3),
        "critical" => Some(4),
        _ => None,
    }
}

fn parse_expect(s: &str) -> Result<Expect, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    match words.as_slice() {
        ["fire"] => Ok(Expect::Fire),
        ["silent"] => Ok(Expect::Silent),
        ["fire", sev] => severity_rank(sev)
            .map(Expect::FireAtLeast)
            .ok_or_else(|| format!("unknown severity `{sev}`")),
        ["at", "most", sev] => severity_rank(sev)
            .map(Expect::AtMost)
            .ok_or_else(|| format!("unknown severity `{sev}`")),
        _ => Err(format!(
            "expect `{s}`: use `fire`, `fire <severity>`, `silent` or `at most <severity>`"
        )),
    }
}

#[derive(Debug)]
struct Row {
    recording: String,
    format: String,
    analytic: String,
    expect: Expect,
    why: String,
}

/// The rows of the "Real recordings" table in docs/analytics.md.
fn rows() -> Vec<Row> {
    let doc = std::fs::read_to_string(tests::workspace_root().join("docs/analytics.md")).unwrap();
    let section = doc
        .split("\n## Real recordings")
        .nth(1)
        .expect("docs/analytics.md has a `## Real recordings` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = Vec::new();
    for line in section.lines() {
        let line = line.trim();
        if !line.starts_with('|') || line.starts_with("| recording") || line.starts_with("| ---") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(
            cells.len(),
            5,
            "docs/analytics.md real recordings: a row needs 5 cells: {line}"
        );
        let unquote = |s: &str| s.trim_matches('`').to_string();
        rows.push(Row {
            recording: unquote(cells[0]),
            format: unquote(cells[1]),
            analytic: unquote(cells[2]),
            expect: parse_expect(cells[3]).unwrap_or_else(|e| panic!("{e}: {line}")),
            why: cells[4].to_string(),
        });
    }
    rows
}

/// A recording's path: `corpora/...` under ../shared, anything else under the repository root.
fn resolve(rel: &str) -> PathBuf {
    if rel.starts_with("corpora/") {
        tests::shared_dir().join(rel)
    } else {
        tests::workspace_root().join(rel)
    }
}

/// The recording's files as `sensor ingest` reads them: zip archives unpacked into `dir`.
fn input_files(recording: &str, dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for part in recording.split(" + ") {
        let path = resolve(part.trim());
        assert!(path.exists(), "recording {} not found", path.display());
        if path.extension().is_some_and(|e| e == "zip") {
            let out_dir = dir.join(path.file_stem().unwrap());
            std::fs::create_dir_all(&out_dir).unwrap();
            let st = Command::new("unzip")
                .args(["-o", "-q"])
                .arg(&path)
                .arg("-d")
                .arg(&out_dir)
                .status()
                .expect("unzip must be installed (cargo xtask setup installs it)");
            assert!(st.success(), "unzip {} failed", path.display());
            let mut inner: Vec<PathBuf> = walk(&out_dir);
            inner.sort();
            files.extend(inner);
        } else {
            files.push(path);
        }
    }
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Alerts by analytic id, each as (severity rank, reason).
type Alerts = BTreeMap<String, Vec<(u8, String)>>;

/// Decodes the recording and replays it: (events decoded, records rejected, alerts, the branches
/// `sensor coverage --events` finds no input for, as `ANxxxx/detect[ branch]`).
fn replay(recording: &str, format: &str, dir: &Path) -> (usize, usize, Alerts, Vec<String>) {
    // All files of a recording go to one `sensor ingest`, decoded in order by one decoder (a Zeek
    // x509.log joins the ssl.log beside it).
    let mut cmd = Command::new(tests::sensor_bin());
    cmd.args(["ingest", "--format", format]);
    for f in input_files(recording, dir) {
        cmd.arg("--input").arg(f);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "ingest --format {format} {recording}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rejected records are reported on stderr, one line each, naming the file, line and reason.
    let rejected = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("rejected: "))
        .count();
    let all = String::from_utf8(out.stdout).unwrap();
    let events = all.lines().count();
    // Cut to stay under NAME_MAX for recordings of several files (one replay at a time uses it).
    let name: String = sanitize(recording).chars().take(150).collect();
    let input = dir.join(format!("events-{name}.ndjson"));
    std::fs::write(&input, all).unwrap();
    let out = Command::new(tests::sensor_bin())
        .args(["replay", "--analytics", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay {recording}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut alerts = Alerts::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let a: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = a["rule_id"].as_str().unwrap_or_default().to_string();
        let sev = severity_rank(a["severity"].as_str().unwrap_or_default()).unwrap_or(0);
        let reason = a["reason"].as_str().unwrap_or_default().to_string();
        alerts.entry(id).or_default().push((sev, reason));
    }
    (events, rejected, alerts, lacking(&input))
}

/// The branches `sensor coverage --events` says the recording gives no input.
fn lacking(events: &Path) -> Vec<String> {
    let out = Command::new(tests::sensor_bin())
        .args(["coverage", "--json", "--events"])
        .arg(events)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "coverage --events {}: {}",
        events.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["branches"]
        .as_array()
        .expect("coverage --json has `branches`")
        .iter()
        .filter(|b| b["in_recording"] == false)
        .map(|b| {
            let mut name = format!(
                "{}/{}",
                b["analytic"].as_str().unwrap(),
                b["detect"].as_str().unwrap()
            );
            if let Some(br) = b["branch"].as_str() {
                name.push_str(&format!(" [{br}]"));
            }
            name
        })
        .collect()
}

/// The table "## What the recordings lack" in docs/analytics.md: per (recording, format), the
/// branches of the analytics its rows name that it gives no input (`-` for none).
fn lacking_rows() -> BTreeMap<(String, String), Vec<String>> {
    let doc = std::fs::read_to_string(tests::workspace_root().join("docs/analytics.md")).unwrap();
    let section = doc
        .split("\n## What the recordings lack")
        .nth(1)
        .expect("docs/analytics.md has a `## What the recordings lack` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines().map(str::trim) {
        if !line.starts_with('|') || line.starts_with("| recording") || line.starts_with("| ---") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "a row needs 4 cells: {line}");
        let branches: Vec<String> = cells[2]
            .split(", ")
            .map(|b| b.trim_matches('`').to_string())
            .filter(|b| b != "-")
            .collect();
        rows.insert(
            (
                cells[0].trim_matches('`').to_string(),
                cells[1].trim_matches('`').to_string(),
            ),
            branches,
        );
    }
    rows
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[test]
fn real_recordings_meet_the_table() {
    let rows = rows();
    assert!(
        !rows.is_empty(),
        "docs/analytics.md: the real recordings table has no rows"
    );
    let dir = tests::scratch("analytics-real");
    // One replay per (recording, format); every row about it is checked against that replay.
    let mut replays = BTreeMap::new();
    let mut failures = Vec::new();
    for row in &rows {
        let key = (row.recording.clone(), row.format.clone());
        let (events, rejected, alerts, _) = replays
            .entry(key)
            .or_insert_with(|| replay(&row.recording, &row.format, &dir));
        let got = alerts.get(&row.analytic).cloned().unwrap_or_default();
        let top = got.iter().map(|(s, _)| *s).max().unwrap_or(0);
        let ok = match row.expect {
            Expect::Fire => !got.is_empty(),
            Expect::FireAtLeast(s) => top >= s,
            Expect::Silent => got.is_empty(),
            Expect::AtMost(s) => top <= s,
        };
        println!(
            "{} {} ({} --format {}: {events} events, {rejected} rejected): {:?} -> {} alerts",
            if ok { "ok  " } else { "FAIL" },
            row.analytic,
            row.recording,
            row.format,
            row.expect,
            got.len()
        );
        for (s, r) in got.iter().take(5) {
            println!("      [{s}] {r}");
        }
        if !ok {
            failures.push(format!(
                "{} on {} ({}): expected {:?} ({}), got {} alerts {:?}",
                row.analytic,
                row.recording,
                row.format,
                row.expect,
                row.why,
                got.len(),
                got.iter().take(5).collect::<Vec<_>>()
            ));
        }
    }
    // Where a branch of an analytic the table names has no input in a recording, the docs say so.
    let documented = lacking_rows();
    for ((recording, format), (_, _, _, lacks)) in &replays {
        let analytics: Vec<&str> = rows
            .iter()
            .filter(|r| &r.recording == recording && &r.format == format)
            .map(|r| r.analytic.as_str())
            .collect();
        let got: Vec<String> = lacks
            .iter()
            .filter(|b| analytics.iter().any(|a| b.starts_with(&format!("{a}/"))))
            .cloned()
            .collect();
        let key = (recording.clone(), format.clone());
        match documented.get(&key) {
            Some(doc) if *doc == got => {}
            Some(doc) => failures.push(format!(
                "docs \"What the recordings lack\" for {recording} ({format}): says {doc:?}, coverage --events finds {got:?}"
            )),
            None => failures.push(format!(
                "docs \"What the recordings lack\" has no row for {recording} ({format}); coverage --events finds {got:?}"
            )),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn expect_cells_parse() {
    assert_eq!(parse_expect("fire").unwrap(), Expect::Fire);
    assert_eq!(parse_expect("fire high").unwrap(), Expect::FireAtLeast(3));
    assert_eq!(parse_expect("silent").unwrap(), Expect::Silent);
    assert_eq!(parse_expect("at most low").unwrap(), Expect::AtMost(1));
    assert!(parse_expect("sometimes").is_err());
    assert!(parse_expect("fire loud").is_err());
}
