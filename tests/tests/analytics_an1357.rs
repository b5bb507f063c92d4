//! AN1357's branches and their settings, end to end through the real binary: Windows records as
//! event XML (several per line, and spanning lines) and NXLog JSON, decoded by `sensor ingest
//! --format windows`, replayed by `sensor replay` with default settings and with overrides.
//! The real recordings (fire and silent) are in docs/analytics.md "Real recordings".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn sysmon_xml(id: u32, time: &str, data: &[(&str, &str)]) -> String {
    let mut d = String::new();
    for (k, v) in data {
        let v = v
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        d.push_str(&format!("<Data Name='{k}'>{v}</Data>"));
    }
    format!(
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Sysmon' Guid='{{5770385f-c22a-43e0-bf4c-06f5698ffbd9}}'/><EventID>{id}</EventID><TimeCreated SystemTime='{time}'/><Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>WS7.corp.example</Computer><Security UserID='S-1-5-18'/></System><EventData><Data Name='UtcTime'>{}</Data>{d}</EventData></Event>",
        time.replace('T', " ").trim_end_matches('Z')
    )
}

/// Decodes `input` (`--format windows`) and replays it with `config` (TOML, may be empty); the
/// alerts' reasons.
fn run(dir: &Path, name: &str, input: &str, config: &str) -> Vec<String> {
    let raw = dir.join(format!("{name}.xml"));
    std::fs::write(&raw, input).unwrap();
    let out = Command::new(tests::sensor_bin())
        .args(["ingest", "--strict", "--format", "windows", "--input"])
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = dir.join(format!("{name}.ndjson"));
    std::fs::write(&events, &out.stdout).unwrap();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let out = Command::new(tests::sensor_bin())
        .args(["replay", "--analytics", "--config"])
        .arg(&cfg)
        .arg("--input")
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["rule_id"] == "AN1357")
        .map(|a| a["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pipes_every_host_makes_stay_silent_even_with_a_broad_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for (i, pipe) in [
        r"\srvsvc",
        r"\wkssvc",
        r"\ntsvcs",
        "<Anonymous Pipe>",
        r"\Winsock2\CatalogChangeListener-554-0",
        r"\PSHost.132450586680245921.1152.DefaultAppDomain.powershell",
        r"\evil_pipe",
    ]
    .iter()
    .enumerate()
    {
        input.push_str(&sysmon_xml(
            17,
            &format!("2024-05-01T10:00:0{i}.000Z"),
            &[
                ("PipeName", pipe),
                ("Image", r"C:\Windows\System32\svchost.exe"),
                ("ProcessId", "700"),
            ],
        ));
        // Two events share the first line; the rest span lines.
        if i > 0 {
            input.push('\n');
        }
    }
    let input = input.replace("<EventData>", "\n  <EventData>\n  ");
    let broad = "[analytics.AN1357.settings]\nPipeNamePattern = [\"*\"]\n";
    let got = run(dir.path(), "broad", &input, broad);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains(r"\evil_pipe"), "{got:#?}");
    // Defaults: none of these names is a known offensive one.
    assert!(run(dir.path(), "default", &input, "").is_empty());
}

fn getsystem(pipe_in_cmd: &str, pipe_connected: &str) -> String {
    let cmd = format!(r"cmd.exe /c echo ab12cd > \\.\pipe\{pipe_in_cmd}");
    [
        sysmon_xml(
            17,
            "2024-05-01T10:00:00.000Z",
            &[
                ("PipeName", &format!(r"\{pipe_in_cmd}")),
                ("Image", r"C:\Users\u\AppData\Local\Temp\beacon.exe"),
                ("ProcessId", "4242"),
            ],
        ),
        sysmon_xml(
            1,
            "2024-05-01T10:00:01.000Z",
            &[
                ("Image", r"C:\Windows\System32\cmd.exe"),
                ("CommandLine", &cmd),
                ("ProcessId", "5000"),
                ("ParentImage", r"C:\Windows\System32\services.exe"),
                ("ParentProcessId", "640"),
                ("User", r"NT AUTHORITY\SYSTEM"),
            ],
        ),
        sysmon_xml(
            18,
            "2024-05-01T10:00:01.100Z",
            &[
                ("PipeName", &format!(r"\{pipe_connected}")),
                ("Image", r"C:\Windows\System32\cmd.exe"),
                ("ProcessId", "5000"),
            ],
        ),
    ]
    .join("\n")
}

#[test]
fn getsystem_service_pipe_fires_and_is_a_setting() {
    let dir = tempfile::tempdir().unwrap();
    let got = run(dir.path(), "gs", &getsystem("ab12cd", "ab12cd"), "");
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0]
            .starts_with("[service-pipe-impersonation] getsystem named-pipe impersonation on ws7")
            && got[0].contains(r"\ab12cd")
            && got[0].contains("pipe-created=1"),
        "{}",
        got[0]
    );
    // cmd.exe connecting to another pipe than its service command names: not the pattern.
    assert!(run(dir.path(), "other", &getsystem("ab12cd", "zz99"), "").is_empty());
    let off = "[analytics.AN1357.settings]\nServicePipeImpersonation = false\n";
    assert!(run(dir.path(), "off", &getsystem("ab12cd", "ab12cd"), off).is_empty());
}

#[test]
fn office_started_by_dcom_needs_a_network_logon_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let excel = sysmon_xml(
        1,
        "2024-05-01T10:00:05.000Z",
        &[
            (
                "Image",
                r"C:\Program Files\Microsoft Office\root\Office16\EXCEL.EXE",
            ),
            (
                "CommandLine",
                r#""C:\Program Files\Microsoft Office\root\Office16\EXCEL.EXE" /automation -Embedding"#,
            ),
            ("ProcessId", "3000"),
            ("ParentImage", r"C:\Windows\System32\svchost.exe"),
            (
                "ParentCommandLine",
                r"C:\windows\system32\svchost.exe -k DcomLaunch -p",
            ),
            ("User", r"CORP\alice"),
        ],
    );
    // A local user opening an embedded workbook: no network logon, silent by default.
    assert!(run(dir.path(), "local", &excel, "").is_empty());
    let loose = "[analytics.AN1357.settings]\nDCOMRequireRemoteLogon = false\n";
    let got = run(dir.path(), "loose", &excel, loose);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("[dcom-office] EXCEL.EXE started by DCOM on ws7 for CORP\\alice"));
    // With the network logon of alice from another host (NXLog JSON, Security 4624 type 3) first.
    let logon = r#"{"EventID":4624,"SourceName":"Microsoft-Windows-Security-Auditing","Channel":"Security","Hostname":"WS7","EventTime":"2024-05-01T10:00:04Z","TargetUserName":"alice","TargetDomainName":"CORP","LogonType":"3","IpAddress":"10.1.2.3","IpPort":"50000"}"#;
    let got = run(dir.path(), "remote", &format!("{logon}\n{excel}\n"), "");
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains("network-logon=1"), "{}", got[0]);
    // A logon from loopback is no remote activation.
    let local_logon = logon.replace("10.1.2.3", "127.0.0.1");
    assert!(run(dir.path(), "lo", &format!("{local_logon}\n{excel}\n"), "").is_empty());
}
