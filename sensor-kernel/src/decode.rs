//! Kernel records to ECS events. Field names and the `event.action` vocabulary are documented in
//! docs/events.md; keep the two in step.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use correlator::{ecs, Event, Field, Value};
use sensor_common::{
    flags, kind, op, ExecRecord, ExitRecord, FifoRecord, ForkRecord, Header, Lineage, SocketRecord,
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

/// An interned field, looked up once per call site.
macro_rules! fld {
    ($p:literal) => {{
        static F: std::sync::OnceLock<Field> = std::sync::OnceLock::new();
        *F.get_or_init(|| Field::intern($p))
    }};
}

/// A constant string value, built once per call site (cloning it is one reference count).
macro_rules! cs {
    ($s:expr) => {{
        static V: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        V.get_or_init(|| s($s)).clone()
    }};
}

/// The `(event.category, event.type, event.action)` values of an `ecs` action, built once per call
/// site.
macro_rules! act {
    ($a:expr) => {{
        static V: std::sync::OnceLock<(Value, Value, Value)> = std::sync::OnceLock::new();
        let a: correlator::ecs::Action = $a;
        V.get_or_init(|| (strs(a.category), strs(a.kind), s(a.name)))
            .clone()
    }};
}

fn s(v: impl AsRef<str>) -> Value {
    Value::Str(v.as_ref().into())
}

fn strs(v: &[&str]) -> Value {
    Value::Array(v.iter().map(s).collect())
}

fn int(v: impl Into<i64>) -> Value {
    Value::Int(v.into())
}

/// Socket family names (the ones a rule is likely to name; others print as numbers).
/// `socket.family` (`ecs::socket_family`, else `AF_<n>`).
fn family_value(f: u32) -> Value {
    ecs::socket_family(u64::from(f)).map_or_else(|| s(format!("AF_{f}")), s)
}

/// `socket.type` (`ecs::socket_type`, else `SOCK_<n>`).
fn socket_type_value(t: u32) -> Value {
    ecs::socket_type(u64::from(t)).map_or_else(|| s(format!("SOCK_{}", t & 0xf)), s)
}

/// The fields of one event under construction, in any order (sorted once by [`Event::from_fields`]).
struct EventDraft {
    ts: i64,
    f: Vec<(Field, Value)>,
}

impl EventDraft {
    fn set(&mut self, f: Field, v: Value) {
        self.f.push((f, v));
    }

    fn build(self) -> Event {
        Event::from_fields(self.ts, self.f)
    }
}

/// `@timestamp` text (RFC 3339, nanoseconds, UTC) with the date-time part cached per second.
#[derive(Default)]
struct TimestampFormatter {
    second: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SS.` of `second`.
    prefix: String,
}

impl TimestampFormatter {
    fn format(&mut self, ts: i64) -> Option<Value> {
        use std::fmt::Write;
        let secs = ts.div_euclid(1_000_000_000);
        let nanos = ts.rem_euclid(1_000_000_000);
        if self.second != Some(secs) {
            self.prefix = correlator::ecs::rfc3339_seconds(secs);
            self.prefix.push('.');
            self.second = Some(secs);
        }
        let mut text = String::with_capacity(self.prefix.len() + 10);
        text.push_str(&self.prefix);
        let _ = write!(text, "{nanos:09}Z");
        Some(Value::Str(text.into()))
    }
}

/// Per-host values, built once.
struct HostValues {
    id: Value,
    name: Value,
    kernel: Value,
}

/// Turns records into events, keeping the process table.
pub struct Decoder {
    host: HostInfo,
    host_values: HostValues,
    table: ProcessTable,
    users: HashMap<u32, Arc<str>>,
    /// `user.id` and `user.name` values by uid, `group.id` by gid (bounded: cleared when large).
    uid_values: HashMap<u32, (Value, Option<Value>)>,
    gid_values: HashMap<u32, Value>,
    timestamps: TimestampFormatter,
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

/// Bound of the per-uid and per-gid value caches.
const ID_CACHE_MAX: usize = 4096;

impl Decoder {
    pub fn new(host: HostInfo, table: ProcessTable) -> Decoder {
        let wall_offset_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME);
        let host_values = HostValues {
            id: s(&host.id),
            name: s(&host.name),
            kernel: s(&host.kernel),
        };
        Decoder {
            host,
            host_values,
            table,
            users: load_users(),
            uid_values: HashMap::new(),
            gid_values: HashMap::new(),
            timestamps: TimestampFormatter::default(),
            wall_offset_ns,
        }
    }

    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    pub fn table_mut(&mut self) -> &mut ProcessTable {
        &mut self.table
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
            kind::FIFO_CREATE | kind::FIFO_OPEN => self.fifo(&read::<FifoRecord>(b, h.kind)?),
            kind::TCP => self.tcp(&read::<TcpRecord>(b, h.kind)?),
            k => return Err(DecodeError::UnknownKind(k)),
        };
        Ok(ev.map(|e| (h.kind, e.build())))
    }

    fn user_values(&mut self, uid: u32) -> (Value, Option<Value>) {
        if let Some(v) = self.uid_values.get(&uid) {
            return v.clone();
        }
        if self.uid_values.len() >= ID_CACHE_MAX {
            self.uid_values.clear();
        }
        let v = (
            s(uid.to_string()),
            self.users.get(&uid).map(|n| Value::Str(n.into())),
        );
        self.uid_values.insert(uid, v.clone());
        v
    }

    fn group_value(&mut self, gid: u32) -> Value {
        if self.gid_values.len() >= ID_CACHE_MAX {
            self.gid_values.clear();
        }
        self.gid_values
            .entry(gid)
            .or_insert_with(|| s(gid.to_string()))
            .clone()
    }

    /// The common part: time, host, process, parent, user. `lin`: what a lifecycle record says of
    /// the parent and the name (the process table supplies them otherwise).
    fn base(
        &mut self,
        h: &Header,
        lin: Option<&Lineage>,
        (category, ty, action): (Value, Value, Value),
    ) -> EventDraft {
        let ts = i64::try_from(h.ktime_ns)
            .unwrap_or(i64::MAX)
            .saturating_add(self.wall_offset_ns);
        let mut e = EventDraft {
            ts,
            f: Vec::with_capacity(40),
        };
        if let Some(t) = self.timestamps.format(ts) {
            e.set(fld!("@timestamp"), t);
        }
        e.set(fld!("event.kind"), cs!("event"));
        e.set(fld!("event.module"), cs!("sensor"));
        e.set(fld!("event.dataset"), cs!("sensor.kernel"));
        e.set(fld!("event.category"), category);
        e.set(fld!("event.type"), ty);
        e.set(fld!("event.action"), action);
        e.set(fld!("host.id"), self.host_values.id.clone());
        e.set(fld!("host.name"), self.host_values.name.clone());
        e.set(fld!("host.hostname"), self.host_values.name.clone());
        e.set(fld!("host.os.type"), cs!("linux"));
        e.set(fld!("host.os.family"), cs!("linux"));
        e.set(fld!("host.os.kernel"), self.host_values.kernel.clone());
        if h.flags & flags::IO_URING != 0 {
            e.set(fld!("sensor.via"), cs!("io_uring"));
        }
        if h.flags & flags::NO_PROCESS != 0 || h.pid == 0 {
            return e;
        }
        let (uid, uname) = self.user_values(h.uid);
        e.set(fld!("user.id"), uid);
        if let Some(n) = uname {
            e.set(fld!("user.name"), n);
        }
        e.set(fld!("group.id"), self.group_value(h.gid));
        e.set(fld!("process.pid"), int(h.pid));
        e.set(fld!("process.thread.id"), int(h.tid));
        let mut ppid = lin.map_or(0, |l| l.ppid);
        let mut started = u64::MAX;
        match self.table.get_or_load(h.pid) {
            Some(p) => {
                if ppid == 0 {
                    ppid = p.ppid;
                }
                started = p.start_ns;
                put_process(&mut e, false, p);
                if let Some(c) = &p.container {
                    // Prebuilt once per container: clones of inline strings and reference counts.
                    e.f.extend(c.fields.iter().cloned());
                }
            }
            None => {
                if let Some(l) = lin {
                    e.set(fld!("process.name"), s(cstr(&l.comm)));
                }
            }
        }
        if ppid != 0 {
            match self.table.get_or_load(ppid) {
                // A "parent" that started after the child is another process that reused the pid
                // of the real one, which has exited.
                Some(pp) if pp.start_ns <= started => put_process(&mut e, true, pp),
                _ => e.set(fld!("process.parent.pid"), int(ppid)),
            }
        }
        e
    }

    fn exec(&mut self, r: &ExecRecord) -> Option<EventDraft> {
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
        self.table.exec(
            h.pid,
            r.lin.ppid,
            &executable,
            args,
            h.ktime_ns,
            r.lin.cgroup_id,
        );
        let mut e = self.base(&h, Some(&r.lin), act!(ecs::EXEC));
        if truncated {
            e.set(fld!("process.args_truncated"), Value::Bool(true));
            e.set(fld!("process.args_total_bytes"), int(r.args_total));
        }
        if r.old_pid != h.pid {
            e.set(fld!("process.previous_thread_id"), int(r.old_pid));
        }
        Some(e)
    }

    fn fork(&mut self, r: &ForkRecord) -> Option<EventDraft> {
        let h = r.hdr;
        self.table.fork(
            h.pid,
            r.child_pid,
            h.ktime_ns,
            &cstr(&r.lin.comm),
            r.lin.cgroup_id,
        );
        // The event is about the child; the actor (the parent) is its process.parent.
        let mut child_hdr = h;
        child_hdr.pid = r.child_pid;
        child_hdr.tid = r.child_pid;
        let child_lin = Lineage {
            ppid: h.pid,
            ..r.lin
        };
        let e = self.base(&child_hdr, Some(&child_lin), act!(ecs::FORK));
        Some(e)
    }

    fn exit(&mut self, r: &ExitRecord) -> Option<EventDraft> {
        let h = r.hdr;
        let mut e = self.base(&h, Some(&r.lin), act!(ecs::EXIT));
        // Wait status: exit code in bits 8..16, terminating signal in bits 0..7.
        let code = r.exit_code;
        if code & 0x7f == 0 {
            e.set(fld!("process.exit_code"), int((code >> 8) & 0xff));
        } else {
            e.set(fld!("process.exit_code"), int(128 + (code & 0x7f)));
            e.set(fld!("process.exit_signal"), int(code & 0x7f));
        }
        self.table.exit(h.pid);
        Some(e)
    }

    fn socket(&mut self, r: &SocketRecord) -> Option<EventDraft> {
        let kind = if r.op == op::SOCKETPAIR {
            act!(ecs::SOCKETPAIR_CREATED)
        } else {
            act!(ecs::SOCKET_CREATED)
        };
        let mut e = self.base(&r.hdr, None, kind);
        e.set(fld!("socket.family"), family_value(r.family));
        e.set(fld!("socket.type"), socket_type_value(r.sock_type));
        e.set(fld!("socket.protocol"), int(r.protocol));
        if r.family == 1 {
            e.set(fld!("network.transport"), cs!(ecs::TRANSPORT_UNIX));
        }
        Some(e)
    }

    fn unix_addr(&mut self, r: &UnixAddrRecord) -> Option<EventDraft> {
        let kind = if r.op == op::BIND {
            act!(ecs::UNIX_BIND)
        } else {
            act!(ecs::UNIX_CONNECT)
        };
        let mut e = self.base(&r.hdr, None, kind);
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
        e.set(fld!("socket.family"), cs!("AF_UNIX"));
        e.set(fld!("network.transport"), cs!(ecs::TRANSPORT_UNIX));
        e.set(fld!("socket.path"), s(&path));
        e.set(fld!("socket.abstract"), Value::Bool(abstract_ns));
        e.set(fld!("socket.fd"), int(r.fd));
        e.set(
            fld!("event.outcome"),
            if r.ret == 0 {
                cs!("success")
            } else {
                cs!("failure")
            },
        );
        if r.ret != 0 {
            e.set(
                fld!("error.code"),
                s(std::io::Error::from_raw_os_error(-r.ret).to_string()),
            );
            e.set(fld!("error.errno"), int(-r.ret));
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

    fn fifo(&mut self, r: &FifoRecord) -> Option<EventDraft> {
        let raw = cstr(&r.path);
        let path = Self::resolve(r.hdr.pid, r.dfd, &raw);
        let mut e = if r.op == op::FIFO_CREATE {
            let mut e = self.base(&r.hdr, None, act!(ecs::FIFO_CREATE));
            e.set(fld!("file.mode"), s(format!("{:o}", r.flags & 0o7777)));
            e
        } else {
            let mut e = self.base(&r.hdr, None, act!(ecs::FIFO_OPEN));
            let access = match r.flags & 3 {
                0 => cs!("read"),
                1 => cs!("write"),
                _ => cs!("read_write"),
            };
            e.set(fld!("file.access_mode"), access);
            e.set(fld!("file.open_flags"), int(r.flags));
            e.set(fld!("file.fd"), int(r.ret));
            e
        };
        e.set(fld!("file.type"), cs!("fifo"));
        e.set(
            fld!("file.name"),
            s(path.rsplit('/').next().unwrap_or(&path)),
        );
        if let Some((dir, _)) = path.rsplit_once('/') {
            e.set(
                fld!("file.directory"),
                s(if dir.is_empty() { "/" } else { dir }),
            );
        }
        e.set(fld!("file.path"), s(&path));
        Some(e)
    }

    fn tcp(&mut self, r: &TcpRecord) -> Option<EventDraft> {
        let kind = match r.op {
            op::TCP_CONNECT => act!(ecs::TCP_CONNECT),
            op::TCP_ACCEPT => act!(ecs::TCP_ACCEPT),
            _ => act!(ecs::TCP_CLOSE),
        };
        let mut e = self.base(&r.hdr, None, kind);
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
        e.set(fld!("network.transport"), cs!("tcp"));
        e.set(
            fld!("network.type"),
            if r.family == 2 {
                cs!("ipv4")
            } else {
                cs!("ipv6")
            },
        );
        e.set(
            fld!("network.direction"),
            if outbound {
                cs!("egress")
            } else {
                cs!("ingress")
            },
        );
        e.set(fld!("source.ip"), Value::Ip(src.0));
        e.set(fld!("source.port"), int(src.1));
        e.set(fld!("destination.ip"), Value::Ip(dst.0));
        e.set(fld!("destination.port"), int(dst.1));
        if r.op == op::TCP_CLOSE {
            let to_i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            e.set(fld!("event.duration"), int(to_i(r.duration_ns)));
            e.set(fld!("source.bytes"), int(to_i(src_bytes)));
            e.set(fld!("destination.bytes"), int(to_i(dst_bytes)));
            e.set(
                fld!("network.bytes"),
                int(to_i(r.bytes_sent.saturating_add(r.bytes_received))),
            );
        }
        Some(e)
    }
}

fn put_process(e: &mut EventDraft, parent: bool, p: &ProcessInfo) {
    let [pid, eid, name, exe, args, argc, cl] = if parent {
        [
            fld!("process.parent.pid"),
            fld!("process.parent.entity_id"),
            fld!("process.parent.name"),
            fld!("process.parent.executable"),
            fld!("process.parent.args"),
            fld!("process.parent.args_count"),
            fld!("process.parent.command_line"),
        ]
    } else {
        [
            fld!("process.pid"),
            fld!("process.entity_id"),
            fld!("process.name"),
            fld!("process.executable"),
            fld!("process.args"),
            fld!("process.args_count"),
            fld!("process.command_line"),
        ]
    };
    if parent {
        // The actor's own pid is already set from the record.
        e.set(pid, int(p.pid));
    }
    e.set(eid, Value::Str((&p.entity_id).into()));
    if !p.name.is_empty() {
        e.set(name, Value::Str((&p.name).into()));
    }
    if !p.executable.is_empty() {
        e.set(exe, Value::Str((&p.executable).into()));
    }
    if !p.args.is_empty() {
        e.set(args, p.args_value.clone());
        e.set(argc, int(i64::try_from(p.args.len()).unwrap_or(i64::MAX)));
        e.set(cl, p.command_line.clone());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn decoder() -> Decoder {
        let host = HostInfo {
            id: "host-1".into(),
            name: "h".into(),
            kernel: "6.0".into(),
        };
        Decoder::new(host.clone(), ProcessTable::new(&host.id))
    }

    /// A pid that cannot exist, so that nothing is read from /proc.
    const PID: u32 = 4_000_000_001;

    fn hdr(kind: u16) -> Header {
        Header {
            kind,
            flags: 0,
            pid: PID,
            tid: PID,
            uid: 0,
            gid: 0,
            _pad: 0,
            ktime_ns: 1_000,
        }
    }

    fn lin() -> Lineage {
        Lineage {
            ppid: 0,
            _pad: 0,
            cgroup_id: 0,
            comm: *b"comm\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn bytes<T>(r: &T) -> Vec<u8> {
        // SAFETY: plain-old-data records.
        unsafe {
            std::slice::from_raw_parts((r as *const T).cast::<u8>(), std::mem::size_of::<T>())
                .to_vec()
        }
    }

    fn str_of<'a>(e: &'a Event, p: &str) -> &'a str {
        e.get_path(p)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{p} missing in {:?}", e.to_json()))
    }

    #[test]
    fn exec_sets_the_image_and_keeps_the_entity() {
        let mut d = decoder();
        let mut r = ExecRecord {
            hdr: hdr(kind::EXEC),
            lin: lin(),
            old_pid: PID,
            args_len: 0,
            args_total: 0,
            _pad: 0,
            filename: [0; 256],
            args: [0; 1024],
        };
        r.filename[..9].copy_from_slice(b"/bin/true");
        let args = b"/bin/true\0two words\0\0";
        r.args[..args.len()].copy_from_slice(args);
        r.args_len = u32::try_from(args.len()).unwrap();
        r.args_total = r.args_len;
        let (k, e) = d.decode(&bytes(&r)).unwrap().unwrap();
        assert_eq!(k, kind::EXEC);
        assert_eq!(str_of(&e, "event.action"), "exec");
        assert_eq!(str_of(&e, "process.name"), "true");
        let args: Vec<_> = match e.get_path("process.args") {
            Some(Value::Array(a)) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(args, ["/bin/true", "two words", ""]);
        assert!(e.get_path("process.args_truncated").is_none());
        let id = str_of(&e, "process.entity_id").to_string();
        // A later event of the same process carries the same entity id.
        let s = SocketRecord {
            hdr: hdr(kind::SOCKET),
            op: op::SOCKET,
            family: 1,
            sock_type: 0x80001,
            protocol: 0,
        };
        let (_, e2) = d.decode(&bytes(&s)).unwrap().unwrap();
        assert_eq!(str_of(&e2, "process.entity_id"), id);
        assert_eq!(str_of(&e2, "socket.family"), "AF_UNIX");
        assert_eq!(str_of(&e2, "socket.type"), "SOCK_STREAM");
        assert!(str_of(&e2, "@timestamp").ends_with('Z'));
    }

    #[test]
    fn abstract_unix_paths_are_marked() {
        let mut d = decoder();
        let mut r = UnixAddrRecord {
            hdr: hdr(kind::UNIX_ADDR),
            op: op::CONNECT,
            fd: 3,
            ret: -111,
            path_len: 5,
            path: [0; 108],
            _pad: 0,
        };
        r.path[1..5].copy_from_slice(b"name");
        let (_, e) = d.decode(&bytes(&r)).unwrap().unwrap();
        assert_eq!(str_of(&e, "socket.path"), "@name");
        assert_eq!(e.get_path("socket.abstract"), Some(&Value::Bool(true)));
        assert_eq!(str_of(&e, "event.outcome"), "failure");
        assert_eq!(e.get_path("error.errno"), Some(&Value::Int(111)));
    }

    /// A socket record carries no parent: the process table names it, unless the table's "parent"
    /// started after the process (the real parent exited and its pid was reused).
    #[test]
    fn parent_of_a_lean_record_comes_from_the_table_and_not_from_a_reused_pid() {
        const CHILD: u32 = PID + 1;
        const PARENT: u32 = PID + 2;
        const SECOND: u64 = 1_000_000_000;
        let socket = SocketRecord {
            hdr: Header {
                pid: CHILD,
                tid: CHILD,
                ..hdr(kind::SOCKET)
            },
            op: op::SOCKET,
            family: 1,
            sock_type: 1,
            protocol: 0,
        };
        let mut d = decoder();
        d.table.fork(PID, PARENT, SECOND, "sh", 0);
        d.table.fork(PARENT, CHILD, 5 * SECOND, "sh", 0);
        let (_, e) = d.decode(&bytes(&socket)).unwrap().unwrap();
        assert_eq!(
            e.get_path("process.parent.pid"),
            Some(&Value::Int(i64::from(PARENT)))
        );
        assert!(e.get_path("process.parent.entity_id").is_some());

        // The parent exits; a new process gets its pid, later than the child started.
        d.table.exit(PARENT);
        d.table.fork(PID, PARENT, 9 * SECOND, "sh", 0);
        let (_, e) = d.decode(&bytes(&socket)).unwrap().unwrap();
        assert_eq!(
            e.get_path("process.parent.pid"),
            Some(&Value::Int(i64::from(PARENT)))
        );
        assert!(
            e.get_path("process.parent.entity_id").is_none(),
            "a process that started after the child is not its parent: {:?}",
            e.to_json()
        );
    }

    #[test]
    fn inbound_tcp_close_puts_the_peer_in_source() {
        let mut d = decoder();
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let r = TcpRecord {
            hdr: hdr(kind::TCP),
            op: op::TCP_CLOSE,
            family: 2,
            sport: 80,
            dport: 5555,
            direction: 2,
            saddr,
            daddr,
            _pad: 0,
            start_ns: 1,
            duration_ns: 99,
            bytes_sent: 300,
            bytes_received: 1000,
        };
        let (_, e) = d.decode(&bytes(&r)).unwrap().unwrap();
        assert_eq!(str_of(&e, "network.direction"), "ingress");
        assert_eq!(
            e.get_path("source.ip"),
            Some(&Value::Ip("10.0.0.2".parse().unwrap()))
        );
        assert_eq!(e.get_path("source.port"), Some(&Value::Int(5555)));
        assert_eq!(e.get_path("source.bytes"), Some(&Value::Int(1000)));
        assert_eq!(e.get_path("destination.bytes"), Some(&Value::Int(300)));
        assert_eq!(e.get_path("event.duration"), Some(&Value::Int(99)));
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let mut d = decoder();
        let h = hdr(kind::TCP);
        assert!(matches!(
            d.decode(&bytes(&h)),
            Err(DecodeError::Short { .. })
        ));
        assert!(matches!(
            d.decode(&bytes(&hdr(99))),
            Err(DecodeError::UnknownKind(99))
        ));
        assert!(matches!(d.decode(&[1, 2]), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn fifo_open_access_modes() {
        let mut d = decoder();
        let mut r = FifoRecord {
            hdr: hdr(kind::FIFO_OPEN),
            op: op::FIFO_OPEN,
            flags: 1,
            ret: 4,
            dfd: -100,
            path: [0; 256],
        };
        r.path[..13].copy_from_slice(b"/dev/shm/pipe");
        let (k, e) = d.decode(&bytes(&r)).unwrap().unwrap();
        assert_eq!(k, kind::FIFO_OPEN);
        assert_eq!(str_of(&e, "file.access_mode"), "write");
        assert_eq!(str_of(&e, "file.type"), "fifo");
        assert_eq!(str_of(&e, "file.directory"), "/dev/shm");
        assert_eq!(str_of(&e, "file.name"), "pipe");
    }
}
