//! The Security log (`Microsoft-Windows-Security-Auditing`): event kinds and the ECS mapping.

use correlator::Event;

use super::super::util::{self, fields, s};
use super::ecs::{k, logon_type, put, put_file, put_int, put_ip, put_process, transport, Kind};
use super::Record;

/// The kind of Security event `id`; for the object-access events (4656, 4658, 4660, 4663) the
/// record's `ObjectType` decides between a file and a registry key.
pub(super) fn security_kind(id: i64, object_type: Option<&str>) -> Option<Kind> {
    if matches!(id, 4656 | 4658 | 4660 | 4663) {
        return object_kind(id, object_type == Some("Key"));
    }
    match id {
        4688 => k(&["process"], &["start"], "created-process"),
        4689 => k(&["process"], &["end"], "exited-process"),
        4624 => k(&["authentication"], &["start"], "logged-in"),
        4625 => k(&["authentication"], &["start"], "logon-failed"),
        4634 | 4647 => k(&["authentication"], &["end"], "logged-out"),
        4648 => k(&["authentication"], &["start"], "logged-in-explicit"),
        4672 => k(&["iam"], &["admin"], "logged-in-special"),
        4697 => k(
            &["iam", "configuration"],
            &["admin", "change"],
            "service-installed",
        ),
        4698 => k(
            &["iam", "configuration"],
            &["creation", "admin"],
            "scheduled-task-created",
        ),
        4702 => k(
            &["iam", "configuration"],
            &["change", "admin"],
            "scheduled-task-updated",
        ),
        4720 => k(&["iam"], &["user", "creation"], "added-user-account"),
        4726 => k(&["iam"], &["user", "deletion"], "deleted-user-account"),
        4728 | 4732 | 4756 => k(&["iam"], &["group", "change"], "added-member-to-group"),
        4768 | 4769 | 4771 | 4776 => k(&["authentication"], &["start"], "credential-validated"),
        4670 => k(&["iam"], &["admin", "change"], "permissions-changed"),
        4673 => k(&["iam"], &["admin"], "privileged-service-called"),
        4674 => k(&["iam"], &["admin"], "privileged-object-operation"),
        4703 => k(&["iam"], &["admin", "change"], "token-right-adjusted"),
        4799 => k(&["iam"], &["group", "info"], "user-member-enumerated"),
        5140 => k(
            &["network", "file"],
            &["info", "access"],
            "network-share-object-accessed",
        ),
        5145 => k(
            &["network", "file"],
            &["info", "access"],
            "network-share-object-access-checked",
        ),
        5156 => k(
            &["network"],
            &["connection", "allowed"],
            "windows-firewall-connection-allowed",
        ),
        5157 => k(
            &["network"],
            &["connection", "denied"],
            "windows-firewall-connection-blocked",
        ),
        5154 => k(
            &["network"],
            &["connection", "allowed"],
            "windows-firewall-listen-permitted",
        ),
        5158 => k(
            &["network"],
            &["connection", "allowed"],
            "windows-firewall-bind-permitted",
        ),
        5159 => k(
            &["network"],
            &["connection", "denied"],
            "windows-firewall-bind-blocked",
        ),
        5447 => k(
            &["configuration"],
            &["change"],
            "windows-firewall-filter-changed",
        ),
        1102 => k(&["iam"], &["admin", "change"], "audit-log-cleared"),
        _ => None,
    }
}

/// Object access: a handle requested (4656) or closed (4658), an object deleted (4660) or an access
/// attempted (4663), on a file or, with `ObjectType` `Key`, a registry key.
fn object_kind(id: i64, registry: bool) -> Option<Kind> {
    let category: &'static [&'static str] = if registry { &["registry"] } else { &["file"] };
    let (kind, action): (&'static [&'static str], _) = match id {
        4656 => (&["access"], "object-handle-requested"),
        4658 => (&["access"], "object-handle-closed"),
        4660 => (&["deletion"], "object-deleted"),
        _ => (&["access"], "object-access-attempt"),
    };
    k(category, kind, action)
}

pub(super) fn map_security(ev: &mut Event, rec: &Record, event_id: i64) {
    let d = |k: &str| rec.get(k);
    let subject = |ev: &mut Event| {
        put(ev, "user.name", d("SubjectUserName"));
        put(ev, "user.domain", d("SubjectDomainName"));
        put(ev, "user.id", d("SubjectUserSid"));
    };
    let target = |ev: &mut Event| {
        put(ev, "user.name", d("TargetUserName"));
        put(ev, "user.domain", d("TargetDomainName"));
        put(ev, "user.id", d("TargetUserSid"));
    };
    match event_id {
        4688 => {
            put_process(
                ev,
                "process",
                d("NewProcessName"),
                d("NewProcessId"),
                None,
                d("CommandLine"),
            );
            put_int(ev, "process.parent.pid", d("ProcessId"));
            if let Some(p) = d("ParentProcessName") {
                ev.insert("process.parent.executable", s(p));
                ev.insert("process.parent.name", s(util::basename(p)));
            }
            subject(ev);
        }
        4689 => {
            put_process(ev, "process", d("ProcessName"), d("ProcessId"), None, None);
            subject(ev);
        }
        4624 | 4625 | 4634 | 4647 | 4648 => {
            target(ev);
            put_ip(ev, "source.ip", d("IpAddress"));
            put_int(ev, "source.port", d("IpPort"));
            put(ev, "source.domain", d("WorkstationName"));
            if let Some(t) = d("LogonType").and_then(logon_type) {
                ev.insert("winlog.logon.type", s(t));
            }
            put(ev, "winlog.logon.id", d("TargetLogonId"));
            if d("ProcessName").is_some() {
                put_process(ev, "process", d("ProcessName"), d("ProcessId"), None, None);
            }
            let outcome = if event_id == 4625 {
                "failure"
            } else {
                "success"
            };
            ev.set(fields().event_outcome, s(outcome));
        }
        4697 => {
            subject(ev);
            put(ev, "service.name", d("ServiceName"));
            put(ev, "service.type", d("ServiceType"));
        }
        5140 | 5145 => {
            subject(ev);
            put_ip(ev, "source.ip", d("IpAddress"));
            put_int(ev, "source.port", d("IpPort"));
            if let Some(t) = d("RelativeTargetName") {
                ev.insert("file.name", s(util::basename(t)));
                ev.insert("file.path", s(t));
            }
            put(ev, "file.directory", d("ShareName"));
        }
        5156 | 5157 => {
            put_ip(ev, "source.ip", d("SourceAddress"));
            put_int(ev, "source.port", d("SourcePort"));
            put_ip(ev, "destination.ip", d("DestAddress"));
            put_int(ev, "destination.port", d("DestPort"));
            if let Some(p) = d("Protocol") {
                ev.insert("network.transport", s(&transport(p)));
            }
            if let Some(a) = d("Application") {
                ev.insert("process.executable", s(a));
                ev.insert("process.name", s(util::basename(a)));
            }
            put_int(ev, "process.pid", d("ProcessID").or(d("ProcessId")));
        }
        4663 | 4656 | 4658 | 4660 => {
            subject(ev);
            match d("ObjectType") {
                Some("File") => put_file(ev, d("ObjectName")),
                Some("Key") => put(ev, "registry.path", d("ObjectName")),
                _ => {}
            }
            put_process(ev, "process", d("ProcessName"), d("ProcessId"), None, None);
        }
        _ => subject(ev),
    }
}
