//! The ECS mapping shared by every provider: event kinds, field setters, and the dispatch to the
//! provider's own mapping (System, PowerShell here; Sysmon and Security in files of their own).

use correlator::{Event, Value};

use super::super::util::{self, fields, s, strs};
use super::security::{map_security, security_kind};
use super::sysmon::{map_sysmon, sysmon_kind};
use super::{parse_int, HostName, Record};

pub(super) struct Kind {
    pub(super) category: &'static [&'static str],
    pub(super) kind: &'static [&'static str],
    pub(super) action: &'static str,
}

pub(super) const fn k(
    category: &'static [&'static str],
    kind: &'static [&'static str],
    action: &'static str,
) -> Option<Kind> {
    Some(Kind {
        category,
        kind,
        action,
    })
}

pub(super) fn system_kind(provider: &str, id: i64) -> Option<Kind> {
    match (provider, id) {
        ("service control manager", 7045) => k(
            &["iam", "configuration"],
            &["admin", "change"],
            "service-installed",
        ),
        ("service control manager", 7036) => k(&["process"], &["change"], "service-state-changed"),
        ("service control manager", 7040) => k(
            &["configuration"],
            &["change"],
            "service-start-type-changed",
        ),
        ("microsoft-windows-eventlog", 104) => {
            k(&["iam"], &["admin", "change"], "audit-log-cleared")
        }
        _ => None,
    }
}

pub(super) fn powershell_kind(id: i64) -> Option<Kind> {
    match id {
        4103 => k(&["process"], &["info"], "Executing Pipeline"),
        4104 => k(&["process"], &["info"], "Execute a Remote Command"),
        400 => k(
            &["process"],
            &["start"],
            "Engine state is changed from None to Available",
        ),
        403 => k(
            &["process"],
            &["end"],
            "Engine state is changed from Available to Stopped",
        ),
        800 => k(&["process"], &["info"], "Pipeline execution details"),
        _ => None,
    }
}

pub(super) fn put(ev: &mut Event, path: &str, v: Option<&str>) {
    if let Some(v) = v {
        ev.insert(path, s(v));
    }
}

pub(super) fn put_int(ev: &mut Event, path: &str, v: Option<&str>) {
    if let Some(i) = v.and_then(parse_int) {
        ev.insert(path, Value::Int(i));
    }
}

pub(super) fn put_ip(ev: &mut Event, path: &str, v: Option<&str>) {
    if let Some(v) = v {
        let v = v.trim().trim_start_matches("::ffff:");
        match v.parse::<std::net::IpAddr>() {
            Ok(ip) => ev.insert(path, Value::Ip(ip)),
            Err(_) => ev.insert(path, s(v)),
        }
    }
}

/// `process.*` (or `process.parent.*` with `prefix`) from an image path, pid, guid and command line.
pub(super) fn put_process(
    ev: &mut Event,
    prefix: &str,
    image: Option<&str>,
    pid: Option<&str>,
    guid: Option<&str>,
    cmd: Option<&str>,
) {
    if let Some(img) = image {
        ev.insert(&format!("{prefix}.executable"), s(img));
        ev.insert(&format!("{prefix}.name"), s(util::basename(img)));
    }
    put_int(ev, &format!("{prefix}.pid"), pid);
    put(ev, &format!("{prefix}.entity_id"), guid);
    if let Some(c) = cmd.map(str::trim).filter(|c| !c.is_empty()) {
        ev.insert(&format!("{prefix}.command_line"), s(c));
        let args = split_command_line(c);
        if !args.is_empty() {
            ev.insert(
                &format!("{prefix}.args"),
                Value::Array(args.iter().map(|a| s(a)).collect()),
            );
            ev.insert(
                &format!("{prefix}.args_count"),
                Value::Int(args.len() as i64),
            );
        }
    }
}

/// `DOMAIN\name` to `user.domain`/`user.name`.
pub(super) fn put_user(ev: &mut Event, prefix: &str, v: Option<&str>) {
    if let Some(u) = v {
        match u.split_once('\\') {
            Some((d, n)) => {
                ev.insert(&format!("{prefix}.domain"), s(d));
                ev.insert(&format!("{prefix}.name"), s(n));
            }
            None => ev.insert(&format!("{prefix}.name"), s(u)),
        }
    }
}

pub(super) fn put_file(ev: &mut Event, path: Option<&str>) {
    if let Some(p) = path {
        ev.insert("file.path", s(p));
        let name = util::basename(p);
        ev.insert("file.name", s(name));
        if let Some(dir) = p.len().checked_sub(name.len() + 1).and_then(|i| p.get(..i)) {
            if !dir.is_empty() {
                ev.insert("file.directory", s(dir));
            }
        }
        if let Some((_, ext)) = name.rsplit_once('.') {
            if !ext.is_empty() && ext.len() <= 8 {
                ev.insert("file.extension", s(&ext.to_ascii_lowercase()));
            }
        }
    }
}

/// Sysmon's `Hashes` (`SHA1=..,MD5=..,SHA256=..,IMPHASH=..`) to `<prefix>.hash.*` / `.pe.imphash`.
pub(super) fn put_hashes(ev: &mut Event, prefix: &str, v: Option<&str>) {
    for part in v.unwrap_or("").split(',') {
        if let Some((alg, h)) = part.split_once('=') {
            let alg = alg.trim().to_ascii_lowercase();
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.bytes().all(|b| b == b'0') {
                continue;
            }
            if alg == "imphash" {
                ev.insert(&format!("{prefix}.pe.imphash"), s(&h));
            } else if matches!(
                alg.as_str(),
                "md5" | "sha1" | "sha256" | "sha384" | "sha512"
            ) {
                ev.insert(&format!("{prefix}.hash.{alg}"), s(&h));
            }
        }
    }
}

/// Registry paths as Sysmon writes them (`HKLM\System\...`, `HKU\S-1-...\...`).
pub(super) fn put_registry(ev: &mut Event, rec: &Record, event_id: i64) {
    let Some(path) = rec.get("TargetObject") else {
        return;
    };
    ev.insert("registry.path", s(path));
    let (hive, key) = path.split_once('\\').unwrap_or((path, ""));
    let hive = match hive.to_ascii_uppercase().as_str() {
        "HKLM" | "HKEY_LOCAL_MACHINE" => "HKLM",
        "HKU" | "HKEY_USERS" => "HKU",
        "HKCU" | "HKEY_CURRENT_USER" => "HKCU",
        "HKCR" | "HKEY_CLASSES_ROOT" => "HKCR",
        "HKCC" | "HKEY_CURRENT_CONFIG" => "HKCC",
        _ => "",
    };
    if !hive.is_empty() {
        ev.insert("registry.hive", s(hive));
        if event_id == 13 {
            if let Some((k, v)) = key.rsplit_once('\\') {
                ev.insert("registry.key", s(k));
                ev.insert("registry.value", s(v));
            }
        } else {
            ev.insert("registry.key", s(key));
        }
    }
    if event_id == 13 {
        if let Some(d) = rec.get("Details") {
            ev.insert("registry.data.strings", strs(&[d]));
            let ty = if d.starts_with("DWORD") {
                "SZ_DWORD"
            } else if d.starts_with("QWORD") {
                "SZ_QWORD"
            } else if d.starts_with("Binary Data") {
                "REG_BINARY"
            } else {
                "REG_SZ"
            };
            ev.insert("registry.data.type", s(ty));
        }
    }
}

/// Windows logon types (Security 4624/4625) by number.
pub(super) fn logon_type(v: &str) -> Option<&'static str> {
    Some(match v.trim() {
        "0" => "System",
        "2" => "Interactive",
        "3" => "Network",
        "4" => "Batch",
        "5" => "Service",
        "7" => "Unlock",
        "8" => "NetworkCleartext",
        "9" => "NewCredentials",
        "10" => "RemoteInteractive",
        "11" => "CachedInteractive",
        "12" => "CachedRemoteInteractive",
        "13" => "CachedUnlock",
        _ => return None,
    })
}

pub(super) fn transport(v: &str) -> String {
    match v.trim() {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "1" => "icmp".into(),
        "58" => "ipv6-icmp".into(),
        other => other.to_ascii_lowercase(),
    }
}

pub(super) fn map(ev: &mut Event, rec: &Record, event_id: i64, host: Option<&HostName>) {
    let f = fields();
    let provider = rec.provider.as_deref().unwrap_or("").to_ascii_lowercase();
    let channel = rec.channel.as_deref().unwrap_or("").to_ascii_lowercase();
    ev.insert("event.code", s(&event_id.to_string()));
    ev.insert("winlog.event_id", Value::Int(event_id));
    ev.set(f.event_kind, s("event"));
    put(ev, "event.provider", rec.provider.as_deref());
    put(ev, "winlog.provider_name", rec.provider.as_deref());
    put(ev, "winlog.channel", rec.channel.as_deref());
    put(ev, "winlog.computer_name", rec.computer.as_deref());
    if let Some(r) = rec.record_id {
        ev.insert("winlog.record_id", Value::Int(r));
    }
    if let Some(p) = rec.exec_pid {
        ev.insert("winlog.process.pid", Value::Int(p));
    }
    if let Some(t) = rec.exec_tid {
        ev.insert("winlog.process.thread.id", Value::Int(t));
    }
    put(ev, "winlog.user.identifier", rec.user_sid.as_deref());
    put(ev, "winlog.task", rec.task.as_deref());
    put(ev, "winlog.opcode", rec.opcode.as_deref());
    put(ev, "winlog.keywords", rec.keywords.as_deref());
    put(
        ev,
        "log.level",
        rec.level.as_deref().map(str::to_ascii_lowercase).as_deref(),
    );
    put(ev, "message", rec.message.as_deref());
    if let Some(h) = host {
        ev.insert("host.name", s(&h.short));
        ev.insert("host.hostname", s(&h.full));
        put(ev, "host.domain", h.domain.as_deref());
    }
    ev.insert("host.os.type", s("windows"));
    ev.insert("host.os.family", s("windows"));
    for (k, v) in &rec.data {
        ev.insert(&format!("winlog.event_data.{k}"), s(v));
    }
    if let Some(r) = rec.get("RuleName") {
        ev.insert("rule.name", s(r));
    }
    let d = |k: &str| rec.get(k);
    let kind = if provider == "microsoft-windows-sysmon"
        || channel.starts_with("microsoft-windows-sysmon")
    {
        map_sysmon(ev, rec, event_id);
        sysmon_kind(event_id)
    } else if provider == "microsoft-windows-security-auditing" || channel == "security" {
        map_security(ev, rec, event_id);
        security_kind(event_id, d("ObjectType"))
    } else if channel == "system" || provider == "service control manager" {
        if event_id == 7045 {
            put(ev, "service.name", d("ServiceName"));
            put(ev, "service.type", d("ServiceType"));
        }
        system_kind(&provider, event_id)
    } else if provider.contains("powershell") || channel.contains("powershell") {
        put(
            ev,
            "powershell.file.script_block_text",
            d("ScriptBlockText"),
        );
        put(ev, "powershell.file.script_block_id", d("ScriptBlockId"));
        powershell_kind(event_id)
    } else {
        None
    };
    if let Some(kd) = kind {
        ev.set(f.event_category, strs(kd.category));
        ev.set(f.event_type, strs(kd.kind));
        ev.set(f.event_action, s(kd.action));
    }
}

/// Splits a Windows command line as `CommandLineToArgvW` does: the program name ends at the first
/// white space outside quotes (no escapes in it); in the arguments, quotes group, `\"` is a quote,
/// `2n` backslashes before a quote are `n` backslashes, other backslashes are literal.
pub(super) fn split_command_line(cmd: &str) -> Vec<String> {
    let mut args = Vec::new();
    let chars: Vec<char> = cmd.chars().collect();
    let mut i = 0;
    // Program name.
    let mut prog = String::new();
    let mut inq = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            inq = !inq;
        } else if !inq && (c == ' ' || c == '\t') {
            break;
        } else {
            prog.push(c);
        }
        i += 1;
    }
    args.push(prog);
    loop {
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let mut arg = String::new();
        let mut inq = false;
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' {
                let start = i;
                while i < chars.len() && chars[i] == '\\' {
                    i += 1;
                }
                let n = i - start;
                if i < chars.len() && chars[i] == '"' {
                    arg.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        arg.push('"');
                        i += 1;
                    }
                } else {
                    arg.extend(std::iter::repeat_n('\\', n));
                }
                continue;
            }
            if c == '"' {
                if inq && chars.get(i + 1) == Some(&'"') {
                    arg.push('"');
                    i += 2;
                    continue;
                }
                inq = !inq;
                i += 1;
                continue;
            }
            if !inq && (c == ' ' || c == '\t') {
                break;
            }
            arg.push(c);
            i += 1;
        }
        args.push(arg);
    }
    if args.first().is_some_and(String::is_empty) && args.len() == 1 {
        args.clear();
    }
    args
}
