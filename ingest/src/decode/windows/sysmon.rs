//! Sysmon (`Microsoft-Windows-Sysmon`): event kinds and the ECS mapping by event id.

use correlator::{Event, Value};

use super::super::util::{self, s};
use super::ecs::{
    k, put, put_file, put_hashes, put_int, put_ip, put_process, put_registry, put_user, transport,
    Kind,
};
use super::Record;

pub(super) fn sysmon_kind(id: i64) -> Option<Kind> {
    match id {
        1 => k(&["process"], &["start"], "Process Create"),
        2 => k(&["file"], &["change"], "File creation time changed"),
        3 => k(
            &["network"],
            &["connection", "start"],
            "Network connection detected",
        ),
        4 => k(&["process"], &["change"], "Sysmon service state changed"),
        5 => k(&["process"], &["end"], "Process terminated"),
        6 => k(&["driver"], &["start"], "Driver loaded"),
        7 => k(&["process"], &["change"], "Image loaded"),
        8 => k(&["process"], &["change"], "CreateRemoteThread detected"),
        9 => k(&["file"], &["access"], "RawAccessRead detected"),
        10 => k(&["process"], &["access"], "Process accessed"),
        11 => k(&["file"], &["creation"], "File created"),
        12 => k(
            &["configuration", "registry"],
            &["change"],
            "Registry object added or deleted",
        ),
        13 => k(
            &["configuration", "registry"],
            &["change"],
            "Registry value set",
        ),
        14 => k(
            &["configuration", "registry"],
            &["change"],
            "Registry object renamed",
        ),
        15 => k(&["file"], &["access"], "File stream created"),
        16 => k(
            &["configuration"],
            &["change"],
            "Sysmon config state changed",
        ),
        17 => k(&["file"], &["creation"], "Pipe Created"),
        18 => k(&["file"], &["access"], "Pipe Connected"),
        19..=21 => k(&["configuration"], &["change"], "WMI event"),
        22 => k(
            &["network"],
            &["connection", "protocol", "info"],
            "Dns query",
        ),
        23 => k(&["file"], &["deletion"], "File Delete archived"),
        24 => k(&["host"], &["change"], "Clipboard changed"),
        25 => k(&["process"], &["change"], "Process Tampering"),
        26 => k(&["file"], &["deletion"], "File Delete logged"),
        27..=29 => k(&["file"], &["info"], "File executable detected"),
        _ => None,
    }
}

// Over 100 lines: one arm per Sysmon event id, a table kept in one match.
pub(super) fn map_sysmon(ev: &mut Event, rec: &Record, event_id: i64) {
    let d = |k: &str| rec.get(k);
    match event_id {
        8 | 10 => {
            put_process(
                ev,
                "process",
                d("SourceImage"),
                d("SourceProcessId"),
                d("SourceProcessGuid").or(d("SourceProcessGUID")),
                None,
            );
            put_int(ev, "process.thread.id", d("SourceThreadId"));
            put_user(ev, "user", d("SourceUser"));
            put_user(ev, "user.target", d("TargetUser"));
        }
        _ => {
            put_process(
                ev,
                "process",
                d("Image"),
                d("ProcessId"),
                d("ProcessGuid"),
                d("CommandLine"),
            );
            put_user(ev, "user", d("User"));
        }
    }
    match event_id {
        1 => {
            put_process(
                ev,
                "process.parent",
                d("ParentImage"),
                d("ParentProcessId"),
                d("ParentProcessGuid"),
                d("ParentCommandLine"),
            );
            put_user(ev, "process.parent.user", d("ParentUser"));
            put(ev, "process.working_directory", d("CurrentDirectory"));
            put(ev, "process.pe.original_file_name", d("OriginalFileName"));
            put(ev, "process.pe.description", d("Description"));
            put(ev, "process.pe.product", d("Product"));
            put(ev, "process.pe.company", d("Company"));
            put(ev, "process.pe.file_version", d("FileVersion"));
            put(ev, "winlog.event_data.IntegrityLevel", d("IntegrityLevel"));
            put_hashes(ev, "process", d("Hashes"));
        }
        3 => {
            put_ip(ev, "source.ip", d("SourceIp"));
            put_int(ev, "source.port", d("SourcePort"));
            put(ev, "source.domain", d("SourceHostname"));
            put_ip(ev, "destination.ip", d("DestinationIp"));
            put_int(ev, "destination.port", d("DestinationPort"));
            put(ev, "destination.domain", d("DestinationHostname"));
            if let Some(p) = d("Protocol") {
                ev.insert("network.transport", s(&transport(p)));
            }
            match d("Initiated") {
                Some("true") => ev.insert("network.direction", s("egress")),
                Some("false") => ev.insert("network.direction", s("ingress")),
                _ => {}
            }
            match d("SourceIsIpv6") {
                Some("true") => ev.insert("network.type", s("ipv6")),
                Some("false") => ev.insert("network.type", s("ipv4")),
                _ => {}
            }
        }
        6 | 7 => {
            put_file(ev, d("ImageLoaded"));
            if event_id == 7 {
                put(ev, "dll.path", d("ImageLoaded"));
                put(ev, "dll.name", d("ImageLoaded").map(util::basename));
            }
            put(ev, "file.code_signature.subject_name", d("Signature"));
            put(ev, "file.code_signature.status", d("SignatureStatus"));
            if let Some(sg) = d("Signed") {
                ev.insert(
                    "file.code_signature.signed",
                    Value::Bool(sg.eq_ignore_ascii_case("true")),
                );
            }
            put(ev, "file.pe.original_file_name", d("OriginalFileName"));
            put_hashes(ev, "file", d("Hashes"));
        }
        2 | 11 | 15 | 23 | 26..=29 => put_file(ev, d("TargetFilename")),
        9 => put(ev, "file.path", d("Device")),
        12..=14 => put_registry(ev, rec, event_id),
        17 | 18 => {
            if let Some(p) = d("PipeName") {
                ev.insert("file.name", s(p));
                if !p.starts_with('<') {
                    let name = p.trim_start_matches('\\');
                    ev.insert("file.path", s(&format!(r"\\.\pipe\{name}")));
                }
            }
        }
        22 => {
            put(ev, "dns.question.name", d("QueryName"));
            if let Some(st) = d("QueryStatus") {
                ev.insert(
                    "dns.response_code",
                    s(if st == "0" { "NOERROR" } else { st }),
                );
            }
            if let Some(res) = d("QueryResults") {
                let ips: Vec<Value> = res
                    .split(';')
                    .map(|a| a.trim().trim_start_matches("::ffff:"))
                    .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
                    .map(Value::Ip)
                    .collect();
                if !ips.is_empty() {
                    ev.insert("dns.resolved_ip", Value::Array(ips.into()));
                }
            }
        }
        _ => {}
    }
}
