//! The per-host model: processes (image, parent, lineage), channels and their participants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use super::{MAX_CMD_CHARS, MAX_IMAGE_BYTES};
use crate::{Event, Field, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Fifo,
    Socket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Create,
    Read,
    Write,
    ReadWrite,
    Bind,
    Connect,
    /// Named the FIFO on its command line (only process starts were seen): either side.
    Named,
}

impl Role {
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Create => "creator",
            Role::Read => "reader",
            Role::Write => "writer",
            Role::ReadWrite => "reader_writer",
            Role::Bind => "binder",
            Role::Connect => "connector",
            Role::Named => "named",
        }
    }

    pub(super) fn verb(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Role::Create, Kind::Fifo) => "created it",
            (Role::Create, Kind::Socket) => "made it",
            (Role::Read, _) => "reads it",
            (Role::Write, _) => "writes it",
            (Role::ReadWrite, _) => "opened it read-write",
            (Role::Bind, _) => "bound it",
            (Role::Connect, _) => "connected to it",
            (Role::Named, _) => "names it on its command line",
        }
    }
}

pub(super) struct Part {
    pub(super) pid: i64,
    pub(super) role: Role,
    pub(super) event: Event,
    /// Known from a command line only; a record of the call itself replaces it.
    pub(super) from_args: bool,
}

pub(super) struct Channel {
    pub(super) kind: Kind,
    pub(super) first_ns: i64,
    pub(super) last_ns: i64,
    pub(super) parts: Vec<Part>,
    /// Pids whose process or network events can change the verdict (members, their parents).
    pub(super) related: BTreeSet<i64>,
    /// Event time of the last evaluation an event caused: verdicts that wait on time (a fork not yet
    /// exec'd, a network tool not yet connected) are re-checked on the watermark only shortly after.
    pub(super) eval_ns: i64,
    /// Re-checked on a watermark past the settling time since `eval_ns`.
    pub(super) settled_checked: bool,
    pub(super) high_sent: bool,
    pub(super) low_sent: bool,
}

pub(super) struct Proc {
    pub(super) gen: u64,
    pub(super) ppid: Option<i64>,
    /// Fork (or first exec) time, when the start was seen.
    pub(super) start_ns: Option<i64>,
    pub(super) last_ns: i64,
    /// Created by a fork and not exec'd since: its image is still its parent's.
    pub(super) forked_only: bool,
    pub(super) exe: Option<String>,
    pub(super) name: Option<String>,
    pub(super) arg0: Option<String>,
    pub(super) cmd: Option<String>,
    /// The parent as the source named it (`process.parent.name`/`executable`).
    pub(super) parent_label: Option<String>,
    pub(super) exec: Option<Event>,
    pub(super) net: Option<Event>,
    /// What this entry counts in the table's bytes (see [`super::MAX_PROC_BYTES`]), as of its last
    /// [`super::IpcWiring::recount`].
    pub(super) counted: usize,
}

#[derive(Default)]
pub(super) struct Host {
    pub(super) procs: BTreeMap<i64, Proc>,
    pub(super) children: BTreeMap<i64, BTreeSet<i64>>,
    pub(super) channels: BTreeMap<(Kind, String), Channel>,
}

pub(super) struct Fields {
    pub(super) host_id: Field,
    pub(super) host_name: Field,
    pub(super) agent_id: Field,
    pub(super) action: Field,
    pub(super) etype: Field,
    pub(super) pid: Field,
    pub(super) ppid: Field,
    pub(super) exe: Field,
    pub(super) name: Field,
    pub(super) args: Field,
    pub(super) cmd: Field,
    pub(super) pname: Field,
    pub(super) pexe: Field,
    pub(super) file_path: Field,
    pub(super) socket_path: Field,
    pub(super) unix_path: Field,
    pub(super) access_mode: Field,
    pub(super) dst_ip: Field,
    pub(super) dst_port: Field,
    pub(super) src_ip: Field,
    pub(super) src_port: Field,
    pub(super) direction: Field,
    pub(super) audit_exit: Field,
    pub(super) user_name: Field,
    pub(super) user_id: Field,
}

pub(super) static F: LazyLock<Fields> = LazyLock::new(|| Fields {
    host_id: Field::intern("host.id"),
    host_name: Field::intern("host.name"),
    agent_id: Field::intern("agent.id"),
    action: Field::intern("event.action"),
    etype: Field::intern("event.type"),
    pid: Field::intern("process.pid"),
    ppid: Field::intern("process.parent.pid"),
    exe: Field::intern("process.executable"),
    name: Field::intern("process.name"),
    args: Field::intern("process.args"),
    cmd: Field::intern("process.command_line"),
    pname: Field::intern("process.parent.name"),
    pexe: Field::intern("process.parent.executable"),
    file_path: Field::intern("file.path"),
    socket_path: Field::intern("socket.path"),
    unix_path: Field::intern("unix.path"),
    access_mode: Field::intern("file.access_mode"),
    dst_ip: Field::intern("destination.ip"),
    dst_port: Field::intern("destination.port"),
    src_ip: Field::intern("source.ip"),
    src_port: Field::intern("source.port"),
    direction: Field::intern("network.direction"),
    audit_exit: Field::intern("auditd.log.exit"),
    user_name: Field::intern("user.name"),
    user_id: Field::intern("user.id"),
});

pub(super) fn text(ev: &Event, f: Field) -> Option<String> {
    match ev.get(f)? {
        Value::Str(s) => Some(s.to_string()),
        Value::Ip(ip) => Some(ip.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(super) fn int(ev: &Event, f: Field) -> Option<i64> {
    match ev.get(f)? {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn has(ev: &Event, f: Field, want: &str) -> bool {
    match ev.get(f) {
        Some(Value::Str(s)) => &**s == want,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
        _ => false,
    }
}

/// What a process entry costs besides its strings and events.
const PROC_OVERHEAD: usize = 256;

/// A string from an event cut to [`MAX_IMAGE_BYTES`] (at a character boundary): executables, names
/// and parent labels come from remote agents, which may send any length.
fn capped(mut s: String) -> String {
    if s.len() > MAX_IMAGE_BYTES {
        let mut end = MAX_IMAGE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

pub(super) fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

pub(super) fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_CMD_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_CMD_CHARS).collect();
        t.push_str("...");
        t
    }
}

impl Proc {
    pub(super) fn new(gen: u64, ev: &Event, now: i64) -> Proc {
        let mut p = Proc {
            gen,
            ppid: None,
            start_ns: None,
            last_ns: now,
            forked_only: false,
            exe: None,
            name: None,
            arg0: None,
            cmd: None,
            parent_label: None,
            exec: None,
            net: None,
            counted: 0,
        };
        p.take_image(ev);
        p
    }

    /// What the entry holds, approximately: its strings, its evidence events and a fixed overhead
    /// (the entry, its map node, its order slot and child links).
    pub(super) fn bytes(&self) -> usize {
        let s = |x: &Option<String>| x.as_ref().map_or(0, String::len);
        let e = |x: &Option<Event>| x.as_ref().map_or(0, crate::eql::sequence::event_bytes);
        PROC_OVERHEAD
            + s(&self.exe)
            + s(&self.name)
            + s(&self.arg0)
            + s(&self.cmd)
            + s(&self.parent_label)
            + e(&self.exec)
            + e(&self.net)
    }

    /// Image and parent from an event's process fields (those present).
    pub(super) fn take_image(&mut self, ev: &Event) {
        let f = &*F;
        if let Some(x) = text(ev, f.exe) {
            self.exe = Some(capped(x));
        }
        if let Some(x) = text(ev, f.name) {
            self.name = Some(capped(x));
        }
        if let Some(Value::Array(a)) = ev.get(f.args) {
            self.arg0 = a
                .first()
                .and_then(Value::as_str)
                .map(|x| capped(x.to_string()));
            let joined = a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            self.cmd = Some(clip(&joined));
        } else if let Some(c) = text(ev, f.cmd) {
            self.cmd = Some(clip(&c));
        }
        if let Some(pp) = int(ev, f.ppid) {
            self.ppid = Some(pp);
        }
        let plabel = text(ev, f.pname).or_else(|| text(ev, f.pexe).map(|e| basename(&e).into()));
        if plabel.is_some() {
            self.parent_label = plabel.map(capped);
        }
    }

    /// Names the image goes by: the executable's basename, the process name, argv\[0\]'s basename
    /// (busybox applets are told apart by argv\[0\]).
    pub(super) fn names(&self) -> Vec<&str> {
        let mut v = Vec::new();
        if let Some(e) = &self.exe {
            v.push(basename(e));
        }
        if let Some(n) = &self.name {
            v.push(n.as_str());
        }
        if let Some(a) = &self.arg0 {
            v.push(basename(a).trim_start_matches('-'));
        }
        v
    }

    pub(super) fn label(&self) -> String {
        let exe_base = self.exe.as_deref().map(basename);
        let arg0 = self.arg0.as_deref().map(basename);
        match (exe_base, arg0, &self.name) {
            (Some("busybox"), Some(a), _) if a != "busybox" => a.to_string(),
            (Some(e), _, _) => e.to_string(),
            (None, _, Some(n)) => n.clone(),
            (None, Some(a), None) => a.to_string(),
            (None, None, None) => "?".to_string(),
        }
    }

    pub(super) fn shown(&self) -> String {
        self.cmd.clone().unwrap_or_else(|| self.label())
    }
}
