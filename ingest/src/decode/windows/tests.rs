#![allow(clippy::unwrap_used)]
use super::super::testing::{decode_all, text as get};
use super::super::util::strs;
use super::super::Format;
use super::ecs::split_command_line;
use super::*;
use correlator::Value;

fn decode(t: &str) -> (Vec<Event>, Vec<DecodeError>) {
    decode_all(Format::Windows, t)
}

const NXLOG_PIPE: &str = r#"{"EventID":17,"SourceName":"Microsoft-Windows-Sysmon","Channel":"Microsoft-Windows-Sysmon/Operational","Hostname":"WORKSTATION5.theshire.local","host":"wec.internal.cloudapp.net","EventTime":"2020-09-18 15:00:21","@timestamp":"2020-09-18T19:00:21.633Z","@version":"1","tags":["mordorDataset"],"UtcTime":"2020-09-18 19:00:21.120","PipeName":"&lt;Anonymous Pipe&gt;","Image":"C:\\Users\\p\\GruntHTTP.exe","ProcessId":"5780","ProcessGuid":"{a}","RuleName":"-","RecordNumber":7}"#;

#[test]
fn nxlog_sysmon_pipe() {
    let (ok, bad) = decode(NXLOG_PIPE);
    assert!(bad.is_empty(), "{bad:?}");
    let ev = &ok[0];
    assert_eq!(get(ev, "file.name"), Some("<Anonymous Pipe>"));
    assert_eq!(get(ev, "file.path"), None);
    assert_eq!(get(ev, "host.name"), Some("workstation5"));
    assert_eq!(
        get(ev, "host.hostname"),
        Some("workstation5.theshire.local")
    );
    assert_eq!(get(ev, "host.domain"), Some("theshire.local"));
    assert_eq!(get(ev, "event.code"), Some("17"));
    assert_eq!(get(ev, "event.action"), Some("Pipe Created"));
    assert_eq!(get(ev, "process.name"), Some("GruntHTTP.exe"));
    assert_eq!(ev.get_path("process.pid"), Some(&Value::Int(5780)));
    assert_eq!(get(ev, "@timestamp"), Some("2020-09-18T19:00:21.120Z"));
    assert!(ev.get_path("winlog.event_data.host").is_none());
    assert!(ev.get_path("rule.name").is_none());
}

#[test]
fn local_event_time_is_shifted_by_the_learnt_offset() {
    let sec = r#"{"EventID":4688,"SourceName":"Microsoft-Windows-Security-Auditing","Channel":"Security","Hostname":"WORKSTATION5.theshire.local","EventTime":"2020-09-18 15:00:30","@timestamp":"2020-09-18T19:00:33.000Z","NewProcessName":"C:\\Windows\\System32\\cmd.exe","NewProcessId":"0x1a2c","ProcessId":"0x10","CommandLine":"cmd.exe /c \"a b\" c","SubjectUserName":"pgustavo","SubjectDomainName":"THESHIRE"}"#;
    // Before any Sysmon record: Logstash's arrival time.
    let (ok, _) = decode(sec);
    assert_eq!(get(&ok[0], "@timestamp"), Some("2020-09-18T19:00:33.000Z"));
    // After one: EventTime + 4 h.
    let (ok, bad) = decode(&format!("{NXLOG_PIPE}\n{sec}"));
    assert!(bad.is_empty());
    let ev = &ok[1];
    assert_eq!(get(ev, "@timestamp"), Some("2020-09-18T19:00:30.000Z"));
    assert_eq!(ev.get_path("process.pid"), Some(&Value::Int(0x1a2c)));
    assert_eq!(ev.get_path("process.parent.pid"), Some(&Value::Int(16)));
    assert_eq!(get(ev, "event.action"), Some("created-process"));
    let args: Vec<&str> = match ev.get_path("process.args") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    assert_eq!(args, ["cmd.exe", "/c", "a b", "c"]);
}

const XML: &str = r#"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Sysmon' Guid='{5770385f-c22a-43e0-bf4c-06f5698ffbd9}'/><EventID>18</EventID><Version>1</Version><Level>4</Level><Task>18</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='2020-09-20T06:57:49.5837000Z'/><EventRecordID>12</EventRecordID><Correlation/><Execution ProcessID='3012' ThreadID='4000'/><Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>WORKSTATION6.theshire.local</Computer><Security UserID='S-1-5-18'/></System><EventData><Data Name='RuleName'>-</Data><Data Name='EventType'>ConnectPipe</Data><Data Name='UtcTime'>2020-09-20 06:57:49.583</Data><Data Name='ProcessGuid'>{b}</Data><Data Name='ProcessId'>4</Data><Data Name='PipeName'>\PSEXESVC</Data><Data Name='Image'>C:\Windows\PSEXESVC.exe &amp; co</Data></EventData></Event>"#;

#[test]
fn xml_one_line_several_events_and_multi_line() {
    let two = format!("<?xml version='1.0'?><Events>{XML}{XML}</Events>");
    let (ok, bad) = decode(&two);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(ok.len(), 2);
    assert_eq!(get(&ok[0], "file.name"), Some(r"\PSEXESVC"));
    assert_eq!(get(&ok[0], "file.path"), Some(r"\\.\pipe\PSEXESVC"));
    assert_eq!(
        get(&ok[0], "process.executable"),
        Some(r"C:\Windows\PSEXESVC.exe & co")
    );
    assert_eq!(get(&ok[0], "host.name"), Some("workstation6"));
    assert_eq!(get(&ok[0], "@timestamp"), Some("2020-09-20T06:57:49.583Z"));
    assert_eq!(get(&ok[0], "event.original"), Some(XML));
    let multi = XML.replace("><", ">\n  <");
    let (ok, bad) = decode(&format!("{multi}\n{NXLOG_PIPE}\n"));
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(ok.len(), 2);
    assert_eq!(get(&ok[0], "file.name"), Some(r"\PSEXESVC"));
}

#[test]
fn winlogbeat_raw_event_data() {
    let doc = r#"{"@timestamp":"2024-05-01T10:00:01.5Z","winlog":{"event_id":"1","provider_name":"Microsoft-Windows-Sysmon","channel":"Microsoft-Windows-Sysmon/Operational","computer_name":"HOST1","event_data":{"Image":"C:\\Windows\\System32\\cmd.exe","ParentImage":"C:\\Windows\\System32\\services.exe","CommandLine":"cmd.exe /c echo a > \\\\.\\pipe\\a","User":"NT AUTHORITY\\SYSTEM","ProcessId":"42"}}}"#;
    let (ok, bad) = decode(doc);
    assert!(bad.is_empty(), "{bad:?}");
    let ev = &ok[0];
    assert_eq!(get(ev, "process.parent.name"), Some("services.exe"));
    assert_eq!(get(ev, "user.name"), Some("SYSTEM"));
    assert_eq!(get(ev, "host.name"), Some("host1"));
    assert_eq!(get(ev, "event.category").or(None), None); // an array
    assert_eq!(ev.get_path("event.category"), Some(&strs(&["process"])));
}

#[test]
fn rejects_name_the_problem() {
    let (ok, bad) = decode("{\"a\":1}\n<Event><System></Event>\nnot json\n<Event>\n");
    assert!(ok.is_empty());
    assert_eq!(bad.len(), 4, "{bad:?}");
    assert_eq!(bad[0].line, 1);
    assert!(bad[0].message.contains("not a Windows event record"));
    assert!(bad[1].message.contains("invalid XML"), "{}", bad[1].message);
    assert_eq!(bad[2].line, 3);
    assert_eq!(bad[3].line, 4);
    assert!(!bad[3].message.is_empty());
}

#[test]
fn command_lines_split_like_windows() {
    assert_eq!(
        split_command_line(r#""C:\a b\x.exe" /c "q\"r" s\\"t u""#),
        [r"C:\a b\x.exe", "/c", "q\"r", r"s\t u"]
    );
    assert_eq!(
        split_command_line(r"cmd.exe /c echo x > \\.\pipe\x"),
        ["cmd.exe", "/c", "echo", "x", ">", r"\\.\pipe\x"]
    );
    assert!(split_command_line("").is_empty());
}

#[test]
fn unescapes_entities() {
    assert_eq!(
        unescape("&lt;a&gt; &amp;amp; &#65;&#x42; &bogus; &"),
        "<a> &amp; AB &bogus; &"
    );
}

proptest::proptest! {
    /// A value survives either shape: XML-escaped in `<Data>`, or a JSON string in an NXLog
    /// record (values with `&` aside: NXLog's escapes are undone there by design).
    #[test]
    fn values_survive_xml_and_json(v in "[ -~\u{e9}\u{4e2d}]{1,40}", id in 1u32..30) {
        proptest::prop_assume!(v.trim() != "-" && !v.trim().is_empty());
        let esc = v.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let xml = format!("<Event><System><Provider Name='Microsoft-Windows-Sysmon'/><EventID>{id}</EventID><TimeCreated SystemTime='2024-01-01T00:00:00Z'/><Computer>h</Computer></System><EventData><Data Name='Image'>{esc}</Data></EventData></Event>");
        let (ok, bad) = decode(&xml);
        proptest::prop_assert!(bad.is_empty(), "{:?}", bad);
        proptest::prop_assert_eq!(get(&ok[0], "winlog.event_data.Image"), Some(v.as_str()));
        if !v.contains('&') && !matches!(id, 8 | 10) {
            let json = serde_json::json!({"EventID": id, "SourceName": "Microsoft-Windows-Sysmon", "UtcTime": "2024-01-01 00:00:00", "Image": v}).to_string();
            let (ok, bad) = decode(&json);
            proptest::prop_assert!(bad.is_empty(), "{:?}", bad);
            proptest::prop_assert_eq!(get(&ok[0], "process.executable"), Some(v.as_str()));
        }
    }
}

/// A UtcTime near the end of i64 nanoseconds (1681) beside an ordinary local stamp: the two are
/// not a time zone apart, so nothing is learnt and nothing overflows (a fuzzer found the panic).
#[test]
fn absurd_stamps_teach_no_offset_and_do_not_overflow() {
    let rec = r#"{"EventID":1,"SourceName":"Microsoft-Windows-Sysmon","Hostname":"H","UtcTime":"1681-09-18 18:59:58.557","EventTime":"2020-09-18 14:59:58","Image":"C:\\a.exe"}"#;
    let (evs, errs) = decode(&format!("{rec}\n{rec}\n"));
    assert_eq!(evs.len() + errs.len(), 2, "{errs:?}");
}

/// NXLog without `ExecutionProcessID` names the logging process `ProcessID`; its field names are
/// case-insensitive, so Sysmon's own `ProcessId` and `EventType` are lost from the data and only
/// the rendered `Message` keeps them (as in OTRF Security-Datasets recordings of 2019).
#[test]
fn nxlog_name_collisions_are_recovered_from_the_message() {
    let rec = r#"{"EventID":12,"SourceName":"Microsoft-Windows-Sysmon","Channel":"Microsoft-Windows-Sysmon/Operational","Hostname":"IT001.shire.com","ProcessID":3168,"ThreadID":4760,"EventType":"INFO","UtcTime":"2019-12-25 04:52:00.957","Image":"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe","TargetObject":"HKU\\S-1-5-21-1\\Software\\X","Message":"Registry object added or deleted:\r\nRuleName: \r\nEventType: CreateKey\r\nUtcTime: 2019-12-25 04:52:00.957\r\nProcessId: 716\r\nImage: C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\r\nTargetObject: HKU\\S-1-5-21-1\\Software\\X"}"#;
    let (ok, bad) = decode(rec);
    assert!(bad.is_empty(), "{bad:?}");
    let ev = &ok[0];
    assert_eq!(ev.get_path("process.pid"), Some(&Value::Int(716)));
    assert_eq!(ev.get_path("winlog.process.pid"), Some(&Value::Int(3168)));
    assert_eq!(get(ev, "winlog.event_data.EventType"), Some("CreateKey"));
    assert!(ev.get_path("winlog.event_data.ProcessID").is_none());
    // A value the data has is never replaced by the message's.
    let rec2 = rec.replace(r#""Image":"C:"#, r#""ProcessId":"9","Image":"C:"#);
    let (ok, _) = decode(&rec2);
    assert_eq!(ok[0].get_path("process.pid"), Some(&Value::Int(9)));
    // Security messages are prose, not `Name: value` lines: nothing is taken from them.
    let sec = r#"{"EventID":4688,"SourceName":"Microsoft-Windows-Security-Auditing","Channel":"Security","Hostname":"h","EventTime":"2020-01-01 00:00:00","Message":"A new process has been created.\r\nFoo: bar"}"#;
    let (ok, _) = decode(sec);
    assert!(ok[0].get_path("winlog.event_data.Foo").is_none());
}

/// Winlogbeat / Elastic Agent documents as Elastic's pipeline tests keep them: `event_id` a
/// string, `winlog.time_created` the event's time while `@timestamp` is when it was shipped.
#[test]
fn winlogbeat_time_created_and_string_event_id() {
    let rec = r#"{"@timestamp":"2021-05-05T15:30:51.692Z","winlog":{"channel":"Security","event_id":"4625","provider_name":"Microsoft-Windows-Security-Auditing","computer_name":"DC01.corp.example","time_created":"2019-07-18T03:34:02.025Z","event_data":{"TargetUserName":"administrator","IpAddress":"10.0.0.5","LogonType":"3"}}}"#;
    let (ok, bad) = decode(rec);
    assert!(bad.is_empty(), "{bad:?}");
    let ev = &ok[0];
    assert_eq!(get(ev, "event.code"), Some("4625"));
    assert_eq!(get(ev, "@timestamp"), Some("2019-07-18T03:34:02.025Z"));
    assert_eq!(get(ev, "host.name"), Some("dc01"));
    assert_eq!(get(ev, "event.outcome"), Some("failure"));
}

/// Sysmon writes the all-zero GUID for a process it does not know; mapped as `entity_id` it would
/// make every such process one entity (OTRF recordings: 37 `ProcessGuid`, 6 `ParentProcessGuid`).
#[test]
fn null_guid_is_no_entity_id() {
    let rec = r#"{"EventID":1,"SourceName":"Microsoft-Windows-Sysmon","Hostname":"h","UtcTime":"2020-01-01 00:00:00.000","Image":"C:\\a.exe","ProcessId":"4","ProcessGuid":"{00000000-0000-0000-0000-000000000000}","ParentProcessGuid":"{00000000-0000-0000-0000-000000000000}","ParentImage":"C:\\p.exe","ParentProcessId":"3"}"#;
    let (ok, bad) = decode(rec);
    assert!(bad.is_empty(), "{bad:?}");
    let ev = &ok[0];
    assert!(ev.get_path("process.entity_id").is_none());
    assert!(ev.get_path("process.parent.entity_id").is_none());
    assert_eq!(ev.get_path("process.parent.pid"), Some(&Value::Int(3)));
    assert_eq!(
        get(ev, "winlog.event_data.ProcessGuid"),
        Some("{00000000-0000-0000-0000-000000000000}")
    );
}

/// Azure Monitor / Sentinel Log Analytics rows (OTRF's Log4Shell recordings are in these shapes):
/// `WindowsEvent` with `EventData` a JSON string, `Event` with an `<EventData>` XML string,
/// `SecurityEvent` with the data fields as columns.
#[test]
fn log_analytics_rows() {
    let we = r#"{"TenantId":"t","SourceSystem":"OpsManager","TimeGenerated":"2022-05-13T08:54:06.347Z","Provider":"Microsoft-Windows-Sysmon","Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"WORKSTATION5","Task":3,"EventData":"{\"UtcTime\":\"2022-05-13T08:54:05.1230000Z\",\"ProcessId\":\"3936\",\"Image\":\"C:\\\\t\\\\tomcat9.exe\",\"DestinationIp\":\"192.168.2.5\",\"DestinationPort\":\"8080\"}","EventID":3,"Type":"WindowsEvent"}"#;
    let ev_xml = r#"{"TenantId":"t","TimeGenerated":"2022-05-13T08:54:05.21Z","SourceSystem":"OpsManager","Computer":"WORKSTATION5","EventSourceName":"Microsoft-Windows-Security-Auditing","Channel":"Security","EventData":"<EventData xmlns=\"http://schemas.microsoft.com/win/2004/08/events/event\">\r\n  <Data Name=\"ProcessID\">3936</Data>\r\n  <Data Name=\"Application\">C:\\t\\tomcat9.exe</Data>\r\n  <Data Name=\"DestAddress\">192.168.2.5</Data>\r\n  <Data Name=\"DestPort\">8080</Data>\r\n  <Data Name=\"Protocol\">6</Data>\r\n</EventData>","EventID":5156,"TimeCollected":"2022-05-13T08:54:38.145Z","Type":"Event"}"#;
    let sec = r#"{"TimeGenerated":"2024-02-01T10:00:00Z","Computer":"DC01.corp.example","EventSourceName":"Microsoft-Windows-Security-Auditing","Channel":"Security","EventID":4688,"NewProcessName":"C:\\Windows\\System32\\cmd.exe","NewProcessId":"0x1a2c","ParentProcessName":"C:\\Windows\\explorer.exe","CommandLine":"cmd.exe /c whoami","SubjectUserName":"alice","SubjectDomainName":"CORP","Type":"SecurityEvent"}"#;
    let (ok, bad) = decode(&format!("{we}\n{ev_xml}\n{sec}\n"));
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(ok.len(), 3);
    assert_eq!(get(&ok[0], "@timestamp"), Some("2022-05-13T08:54:05.123Z"));
    assert_eq!(
        get(&ok[0], "event.action"),
        Some("Network connection detected")
    );
    assert_eq!(ok[0].get_path("process.pid"), Some(&Value::Int(3936)));
    assert_eq!(get(&ok[0], "host.name"), Some("workstation5"));
    assert_eq!(get(&ok[1], "event.code"), Some("5156"));
    assert_eq!(ok[1].get_path("destination.port"), Some(&Value::Int(8080)));
    assert_eq!(get(&ok[1], "@timestamp"), Some("2022-05-13T08:54:05.210Z"));
    assert!(ok[1].get_path("winlog.event_data.TimeCollected").is_none());
    assert!(ok[1].get_path("winlog.event_data.TenantId").is_none());
    assert_eq!(
        get(&ok[2], "process.executable"),
        Some("C:\\Windows\\System32\\cmd.exe")
    );
    assert_eq!(ok[2].get_path("process.pid"), Some(&Value::Int(0x1a2c)));
    assert_eq!(get(&ok[2], "host.name"), Some("dc01"));
    assert_eq!(get(&ok[2], "event.action"), Some("created-process"));
    // A bad `EventData` is named.
    let (_, bad) = decode(&we.replace(r#""EventData":"{"#, r#""EventData":"{x"#));
    assert!(bad[0].to_string().contains("EventData"), "{bad:?}");
}

/// Security object access: a key's handle is registry, a file's is file; the object's name lands
/// where ECS rules look for each.
#[test]
fn security_object_access_is_file_or_registry_by_object_type() {
    let rec = |id: u32, ty: &str, name: &str| {
        format!(
            r#"{{"EventID":{id},"SourceName":"Microsoft-Windows-Security-Auditing","Channel":"Security","Hostname":"WKS1","EventTime":"2020-09-18 15:00:21","ObjectType":"{ty}","ObjectName":"{name}","ProcessName":"C:\\Windows\\regedit.exe","ProcessId":"0x1a4","SubjectUserName":"bob"}}"#
        )
    };
    let text = [
        rec(4656, "Key", r"\\REGISTRY\\MACHINE\\SOFTWARE\\Run"),
        rec(4663, "File", r"C:\\Users\\bob\\secret.txt"),
        rec(4660, "File", r"C:\\Users\\bob\\secret.txt"),
        rec(5158, "", ""),
    ]
    .join("\n");
    let (ok, bad) = decode(&text);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(ok[0].get_path("event.category"), Some(&strs(&["registry"])));
    assert_eq!(get(&ok[0], "event.action"), Some("object-handle-requested"));
    assert_eq!(
        get(&ok[0], "registry.path"),
        Some(r"\REGISTRY\MACHINE\SOFTWARE\Run")
    );
    assert_eq!(ok[1].get_path("event.category"), Some(&strs(&["file"])));
    assert_eq!(get(&ok[1], "file.path"), Some(r"C:\Users\bob\secret.txt"));
    assert_eq!(ok[2].get_path("event.type"), Some(&strs(&["deletion"])));
    assert_eq!(get(&ok[2], "event.action"), Some("object-deleted"));
    assert_eq!(ok[3].get_path("event.category"), Some(&strs(&["network"])));
    assert_eq!(
        get(&ok[3], "event.action"),
        Some("windows-firewall-bind-permitted")
    );
}
