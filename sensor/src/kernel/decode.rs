//! Kernel records to ECS events. Field names and the `event.action` vocabulary are documented in
//! docs/events.md; keep the two in step.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use correlator::{Event, Value};
use sensor_common::{
    flags, kind, op, ExecRecord, ExitRecord, FifoRecord, ForkRecord, Header, SocketRecord,
    TcpRecord, UnixAddrRecord,
};

use super::proctable::{ProcessInfo, ProcessTable};

/// A record the decoder cannot read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its kind {kind} needs ({need})")]
    Short { kind: u16, len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
}

/// Identity of this host.
#[derive(Clone, Debug)]
pub struct HostInfo {
    /// `/etc/machine-id` (falls back to the host name).
    pub id: String,
    pub name: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
}

impl HostInfo {
    pub fn from_system() -> HostInfo {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let name = read("/proc/sys/kernel/hostname");
        let mut id = read("/etc/machine-id");
        if id.is_empty() {
            id = name.clone();
        }
        HostInfo {
            id,
            name,
            kernel: read("/proc/sys/kernel/osrelease"),
        }
    }
}

/// Reads a `#[repr(C)]` record of plain integers from the front of `b`.
fn read<T: Copy>(b: &[u8], k: u16) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if b.len() < need {
        return Err(DecodeError::Short {
            kind: k,
            len: b.len(),
            need,
        });
    }
    // SAFETY: length checked; every record type is plain integers and byte arrays, valid for any bits.
    Ok(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn s(v: impl AsRef<str>) -> Value {
    Value::Str(Arc::from(v.as_ref()))
}

fn strs(v: &[&str]) -> Value {
    Value::Array(v.iter().map(s).collect())
}

fn int(v: impl Into<i64>) -> Value {
    Value::Int(v.into())
}

/// Socket family names (the ones a rule is likely to name; others print as numbers).
pub(crate) fn family_name(f: u32) -> String {
    match f {
        1 => "AF_UNIX".into(),
        2 => "AF_INET".into(),
        10 => "AF_INET6".into(),
        16 => "AF_NETLINK".into(),
        17 => "AF_PACKET".into(),
        40 => "AF_VSOCK".into(),
        n => format!("AF_{n}"),
    }
}

pub(crate) fn socket_type_name(t: u32) -> String {
    match t & 0xf {
        1 => "SOCK_STREAM".into(),
        2 => "SOCK_DGRAM".into(),
        3 => "SOCK_RAW".into(),
        4 => "SOCK_RDM".into(),
        5 => "SOCK_SEQPACKET".into(),
        n => format!("SOCK_{n}"),
    }
}

/// Turns records into events, keeping the process table.
pub struct Decoder {
    host: HostInfo,
    table: ProcessTable,
    users: HashMap<u32, Arc<str>>,
    /// Wall clock minus boot clock, in ns: added to a record's boot time to get `@timestamp`.
    wall_offset_ns: i64,
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn load_users() -> HashMap<u32, Arc<str>> {
    let mut m = HashMap::new();
    if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
        for line in text.lines() {
            let mut it = line.split(':');
            if let (Some(name), _, Some(uid)) = (it.next(), it.next(), it.next()) {
                if let Ok(uid) = uid.parse::<u32>() {
                    m.entry(uid).or_insert_with(|| Arc::from(name));
                }
            }
        }
    }
    m
}

impl Decoder {
    pub fn new(host: HostInfo, table: ProcessTable) -> Decoder {
        let wall_offset_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME);
        Decoder {
            host,
            table,
            users: load_users(),
            wall_offset_ns,
        }
    }

    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    /// Decodes one ring buffer record. `Ok(None)`: a record that updates state only.
    pub fn decode(&mut self, b: &[u8]) -> Result<Option<(u16, Event)>, DecodeError> {
        let h: Header = read(b, 0)?;
        let ev = match h.kind {
            kind::EXEC => self.exec(&read::<ExecRecord>(b, h.kind)?),
            kind::FORK => self.fork(&read::<ForkRecord>(b, h.kind)?),
            kind::EXIT => self.exit(&read::<ExitRecord>(b, h.kind)?),
            kind::SOCKET => self.socket(&read::<SocketRecord>(b, h.kind)?),
            kind::UNIX_ADDR => self.unix_addr(&read::<UnixAddrRecord>(b, h.kind)?),
            kind::FIFO => self.fifo(&read::<FifoRecord>(b, h.kind)?),
            kind::TCP => self.tcp(&read::<TcpRecord>(b, h.kind)?),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        Ok(ev.map(|e| (h.kind, e)))
    }

    /// The common part: time, host, process, parent, user.
    fn base(&mut self, h: &Header, category: &[&str], ty: &[&str], action: &str) -> Event {
        let ts = i64::try_from(h.ktime_ns)
            .unwrap_or(i64::MAX)
            .saturating_add(self.wall_offset_ns);
        let mut e = Event::new(ts);
        let secs = ts.div_euclid(1_000_000_000);
        let nanos = u32::try_from(ts.rem_euclid(1_000_000_000)).unwrap_or(0);
        if let Some(dt) = chrono::DateTime::from_timestamp(secs, nanos) {
            e.insert(
                "@timestamp",
                s(dt.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
            );
        }
        e.insert("event.kind", s("event"));
        e.insert("event.module", s("sensor"));
        e.insert("event.dataset", s("sensor.kernel"));
        e.insert("event.category", strs(category));
        e.insert("event.type", strs(ty));
        e.insert("event.action", s(action));
        e.insert("host.id", s(&self.host.id));
        e.insert("host.name", s(&self.host.name));
        e.insert("host.hostname", s(&self.host.name));
        e.insert("host.os.type", s("linux"));
        e.insert("host.os.family", s("linux"));
        e.insert("host.os.kernel", s(&self.host.kernel));
        if h.flags & flags::NO_PROCESS != 0 || h.pid == 0 {
            return e;
        }
        e.insert("user.id", s(h.uid.to_string()));
        if let Some(n) = self.users.get(&h.uid) {
            e.insert("user.name", Value::Str(n.clone()));
        }
        e.insert("group.id", s(h.gid.to_string()));
        e.insert("process.pid", int(h.pid));
        e.insert("process.thread.id", int(h.tid));
        let proc_info = self.table.get_or_load(h.pid).cloned();
        let ppid = if h.ppid != 0 {
            h.ppid
        } else {
            proc_info.as_ref().map_or(0, |p| p.ppid)
        };
        match &proc_info {
            Some(p) => self.put_process(&mut e, "process", p),
            None => e.insert("process.name", s(cstr(&h.comm))),
        }
        if ppid != 0 {
            e.insert("process.parent.pid", int(ppid));
            if let Some(pp) = self.table.get_or_load(ppid).cloned() {
                self.put_process(&mut e, "process.parent", &pp);
            }
        }
        e
    }

    fn put_process(&self, e: &mut Event, prefix: &str, p: &ProcessInfo) {
        e.insert(&format!("{prefix}.pid"), int(p.pid));
        e.insert(
            &format!("{prefix}.entity_id"),
            Value::Str(p.entity_id.clone()),
        );
        if !p.name.is_empty() {
            e.insert(&format!("{prefix}.name"), Value::Str(p.name.clone()));
        }
        if !p.executable.is_empty() {
            e.insert(
                &format!("{prefix}.executable"),
                Value::Str(p.executable.clone()),
            );
        }
        if !p.args.is_empty() {
            e.insert(
                &format!("{prefix}.args"),
                Value::Array(p.args.iter().map(|a| Value::Str(a.clone())).collect()),
            );
            e.insert(
                &format!("{prefix}.args_count"),
                int(i64::try_from(p.args.len()).unwrap_or(i64::MAX)),
            );
            let cl = p
                .args
                .iter()
                .map(|a| a.as_ref())
                .collect::<Vec<_>>()
                .join(" ");
            e.insert(&format!("{prefix}.command_line"), s(cl));
        }
    }

    fn exec(&mut self, r: &ExecRecord) -> Option<Event> {
        let h = r.hdr;
        let file = cstr(&r.filename);
        let n = (r.args_len as usize).min(r.args.len());
        let mut args: Vec<Arc<str>> = r.args[..n]
            .split(|&c| c == 0)
            .map(|a| Arc::from(String::from_utf8_lossy(a).as_ref()))
            .collect();
        // The area ends with a NUL: drop the empty piece after it (but not a real empty argument).
        if n > 0 && r.args[n - 1] == 0 {
            args.pop();
        }
        let truncated = h.flags & flags::ARGS_TRUNCATED != 0;
        let executable = if file.starts_with('/') {
            file.clone()
        } else {
            std::fs::read_link(format!("/proc/{}/exe", h.pid))
                .map_or(file.clone(), |p| p.to_string_lossy().into_owned())
        };
        self.table
            .exec(h.pid, h.ppid, &executable, args, h.ktime_ns);
        let mut e = self.base(&h, &["process"], &["start"], "exec");
        if truncated {
            e.insert("process.args_truncated", Value::Bool(true));
            e.insert("process.args_total_bytes", int(r.args_total));
        }
        if r.old_pid != h.pid {
            e.insert("process.previous_thread_id", int(r.old_pid));
        }
        Some(e)
    }

    fn fork(&mut self, r: &ForkRecord) -> Option<Event> {
        let h = r.hdr;
        self.table
            .fork(h.pid, r.child_pid, h.ktime_ns, &cstr(&h.comm));
        // The event is about the child; the actor (the parent) is its process.parent.
        let mut child_hdr = h;
        child_hdr.pid = r.child_pid;
        child_hdr.tid = r.child_pid;
        child_hdr.ppid = h.pid;
        let e = self.base(&child_hdr, &["process"], &["start"], "fork");
        Some(e)
    }

    fn exit(&mut self, r: &ExitRecord) -> Option<Event> {
        let h = r.hdr;
        let mut e = self.base(&h, &["process"], &["end"], "exit");
        // Wait status: exit code in bits 8..16, terminating signal in bits 0..7.
        let code = r.exit_code;
        if code & 0x7f == 0 {
            e.insert("process.exit_code", int((code >> 8) & 0xff));
        } else {
            e.insert("process.exit_code", int(128 + (code & 0x7f)));
            e.insert("process.exit_signal", int(code & 0x7f));
        }
        self.table.exit(h.pid);
        Some(e)
    }

    fn socket(&mut self, r: &SocketRecord) -> Option<Event> {
        let action = if r.op == op::SOCKETPAIR {
            "socketpair_created"
        } else {
            "socket_created"
        };
        let mut e = self.base(&r.hdr, &["network"], &["creation"], action);
        e.insert("socket.family", s(family_name(r.family)));
        e.insert("socket.type", s(socket_type_name(r.sock_type)));
        e.insert("socket.protocol", int(r.protocol));
        if r.family == 1 {
            e.insert("network.transport", s("unix"));
        }
        Some(e)
    }

    fn unix_addr(&mut self, r: &UnixAddrRecord) -> Option<Event> {
        let (action, ty): (&str, &[&str]) = if r.op == op::BIND {
            ("unix_bind", &["creation"])
        } else {
            ("unix_connect", &["connection", "start"])
        };
        let mut e = self.base(&r.hdr, &["network"], ty, action);
        let n = (r.path_len as usize).min(r.path.len());
        let raw = &r.path[..n];
        let abstract_ns = raw.first() == Some(&0) && n > 0;
        let path = if abstract_ns {
            // Abstract names are shown with a leading '@' (as ss and lsof do); NULs inside stay as \0.
            let name: String = String::from_utf8_lossy(&raw[1..]).replace('\0', "\\0");
            format!("@{name}")
        } else {
            cstr(raw)
        };
        e.insert("socket.family", s("AF_UNIX"));
        e.insert("network.transport", s("unix"));
        e.insert("socket.path", s(&path));
        e.insert("socket.abstract", Value::Bool(abstract_ns));
        e.insert("socket.fd", int(r.fd));
        e.insert(
            "event.outcome",
            s(if r.ret == 0 { "success" } else { "failure" }),
        );
        if r.ret != 0 {
            e.insert(
                "error.code",
                s(std::io::Error::from_raw_os_error(-r.ret).to_string()),
            );
            e.insert("error.errno", int(-r.ret));
        }
        Some(e)
    }

    /// Makes a relative path absolute from the process's cwd or directory fd, while it still lives.
    fn resolve(pid: u32, dfd: i32, path: &str) -> String {
        if path.starts_with('/') || path.is_empty() {
            return path.to_string();
        }
        let base = if dfd == -100 {
            format!("/proc/{pid}/cwd")
        } else {
            format!("/proc/{pid}/fd/{dfd}")
        };
        match std::fs::read_link(base) {
            Ok(dir) => dir.join(path).to_string_lossy().into_owned(),
            Err(_) => path.to_string(),
        }
    }

    fn fifo(&mut self, r: &FifoRecord) -> Option<Event> {
        let raw = cstr(&r.path);
        let path = Self::resolve(r.hdr.pid, r.dfd, &raw);
        let mut e = if r.op == op::FIFO_CREATE {
            let mut e = self.base(&r.hdr, &["file"], &["creation"], "fifo_create");
            e.insert("file.mode", s(format!("{:o}", r.flags & 0o7777)));
            e
        } else {
            let mut e = self.base(&r.hdr, &["file"], &["access"], "fifo_open");
            let access = match r.flags & 3 {
                0 => "read",
                1 => "write",
                _ => "read_write",
            };
            e.insert("file.access_mode", s(access));
            e.insert("file.open_flags", int(r.flags));
            e.insert("file.fd", int(r.ret));
            e
        };
        e.insert("file.type", s("fifo"));
        e.insert("file.name", s(path.rsplit('/').next().unwrap_or(&path)));
        if let Some((dir, _)) = path.rsplit_once('/') {
            e.insert("file.directory", s(if dir.is_empty() { "/" } else { dir }));
        }
        e.insert("file.path", s(&path));
        Some(e)
    }

    fn tcp(&mut self, r: &TcpRecord) -> Option<Event> {
        let (action, ty): (&str, &[&str]) = match r.op {
            op::TCP_CONNECT => ("tcp_connect", &["connection", "start"]),
            op::TCP_ACCEPT => ("tcp_accept", &["connection", "start"]),
            _ => ("tcp_close", &["connection", "end"]),
        };
        let mut e = self.base(&r.hdr, &["network"], ty, action);
        let ip = |a: &[u8; 16]| -> IpAddr {
            if r.family == 2 {
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(*a))
            }
        };
        let (local, remote) = ((ip(&r.saddr), r.sport), (ip(&r.daddr), r.dport));
        let outbound = r.direction != 2;
        // ECS: source is the side that opened the connection.
        let (src, dst, src_bytes, dst_bytes) = if outbound {
            (local, remote, r.bytes_sent, r.bytes_received)
        } else {
            (remote, local, r.bytes_received, r.bytes_sent)
        };
        e.insert("network.transport", s("tcp"));
        e.insert(
            "network.type",
            s(if r.family == 2 { "ipv4" } else { "ipv6" }),
        );
        e.insert(
            "network.direction",
            s(if outbound { "egress" } else { "ingress" }),
        );
        e.insert("source.ip", Value::Ip(src.0));
        e.insert("source.port", int(src.1));
        e.insert("destination.ip", Value::Ip(dst.0));
        e.insert("destination.port", int(dst.1));
        if r.op == op::TCP_CLOSE {
            let to_i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            e.insert("event.duration", int(to_i(r.duration_ns)));
            e.insert("source.bytes", int(to_i(src_bytes)));
            e.insert("destination.bytes", int(to_i(dst_bytes)));
            e.insert(
                "network.bytes",
                int(to_i(r.bytes_sent.saturating_add(r.bytes_received))),
            );
        }
        Some(e)
    }
}
