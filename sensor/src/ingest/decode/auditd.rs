//! `auditd`: raw Linux audit records (`[node=N ]type=T msg=audit(SEC.MS:SERIAL): k=v ...`).
//!
//! Records of one event (the same `msg=audit(ts:serial)`, and the same `node`) are coalesced into a
//! single event: SYSCALL + EXECVE + PATH + CWD + SOCKADDR + PROCTITLE (+ anything else with that
//! serial). A group closes on its EOE record, when a record with another serial arrives, or at end of
//! input. Hex-encoded values (exe, comm, cwd, name, proctitle, EXECVE arguments, saddr...) are
//! decoded; syscall numbers are named for x86_64, aarch64 and i386. The mapping to ECS is in
//! docs/formats/auditd.md.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use correlator::{Event, Field, Value};

use super::util::{self, fields, s, strs};
use super::{Ctx, DecodeError, Decoder, Sink};

/// Most records one group may hold; a group that grows beyond is closed (bounded memory).
const MAX_GROUP_RECORDS: usize = 4096;
/// Most bytes of record text one group may hold.
const MAX_GROUP_BYTES: usize = 1 << 20;

/// The coalescing auditd decoder.
pub struct AuditdDecoder {
    ctx: Ctx,
    group: Option<Group>,
    /// The buffers of the last group, reused by the next one.
    spare: Option<(String, Vec<Line>)>,
    /// `auditd.log.<key>` fields by key.
    keys: KeyFields,
}

struct Group {
    serial: u64,
    ts_ns: i64,
    node: Option<String>,
    bytes: usize,
    /// The records' text, joined by newlines: the event's `event.original`.
    text: String,
    /// Where each record, its type and its body are in `text`.
    lines: Vec<Line>,
}

struct Line {
    end: usize,
    rtype: (usize, usize),
    body: usize,
}

impl Group {
    fn rtype(&self, l: &Line) -> &str {
        self.text.get(l.rtype.0..l.rtype.1).unwrap_or_default()
    }
    fn body(&self, l: &Line) -> &str {
        self.text.get(l.body..l.end).unwrap_or_default()
    }
}

/// Largest buffer kept from one group to the next.
const MAX_SPARE_BYTES: usize = 64 << 10;

/// The interned `auditd.log.<key>` field of each record key met, without formatting the path
/// for every key of every record.
#[derive(Default)]
struct KeyFields(std::collections::HashMap<Box<str>, Field, ahash::RandomState>);

impl KeyFields {
    fn get(&mut self, key: &str) -> Field {
        if let Some(&f) = self.0.get(key) {
            return f;
        }
        // Bounded: keys come from outside.
        if self.0.len() >= 4096 {
            self.0.clear();
        }
        let f = Field::intern(&format!("auditd.log.{key}"));
        self.0.insert(Box::from(key), f);
        f
    }
}

/// The fields of the event being built, in the order they are set; the last value of a field
/// wins, as with successive [`Event::set`] calls ([`Event::from_fields`] sorts once at the end).
struct Out {
    fields: Vec<(Field, Value)>,
}

impl Out {
    fn set(&mut self, f: Field, v: Value) {
        self.fields.push((f, v));
    }
    fn insert(&mut self, path: &str, v: Value) {
        self.fields.push((Field::intern(path), v));
    }
}

/// The parsed header of one record.
struct Header<'a> {
    node: Option<&'a str>,
    rtype: &'a str,
    ts_ns: i64,
    serial: u64,
    body: &'a str,
}

impl AuditdDecoder {
    pub(crate) fn new(ctx: Ctx) -> AuditdDecoder {
        AuditdDecoder {
            ctx,
            group: None,
            spare: None,
            keys: KeyFields::default(),
        }
    }

    fn flush(&mut self, sink: &mut Sink<'_>) {
        if let Some(g) = self.group.take() {
            sink(Ok(build(&self.ctx, &mut self.keys, &g)));
            let (mut text, mut lines) = (g.text, g.lines);
            if text.capacity() <= MAX_SPARE_BYTES {
                text.clear();
                lines.clear();
                self.spare = Some((text, lines));
            }
        }
    }
}

impl Decoder for AuditdDecoder {
    fn line(&mut self, line_no: u64, line: &str, sink: &mut Sink<'_>) {
        let h = match parse_header(line) {
            Ok(h) => h,
            Err(m) => return sink(Err(DecodeError::new(line_no, m))),
        };
        if let Some(g) = &self.group {
            if g.serial != h.serial || g.node.as_deref() != h.node || g.ts_ns != h.ts_ns {
                self.flush(sink);
            }
        }
        let is_eoe = h.rtype == "EOE";
        if is_eoe && self.group.is_none() {
            return; // a stray end-of-event marker closes nothing
        }
        if !is_eoe {
            let base = line.as_ptr() as usize;
            let rtype = (
                h.rtype.as_ptr() as usize - base,
                h.rtype.as_ptr() as usize - base + h.rtype.len(),
            );
            let body = h.body.as_ptr() as usize - base;
            let spare = &mut self.spare;
            let g = self.group.get_or_insert_with(|| {
                let (text, lines) = spare.take().unwrap_or_default();
                Group {
                    serial: h.serial,
                    ts_ns: h.ts_ns,
                    node: h.node.map(str::to_string),
                    bytes: 0,
                    text,
                    lines,
                }
            });
            g.bytes += line.len();
            if !g.lines.is_empty() {
                g.text.push('\n');
            }
            let start = g.text.len();
            g.text.push_str(line);
            g.lines.push(Line {
                end: g.text.len(),
                rtype: (start + rtype.0, start + rtype.1),
                body: start + body,
            });
            if g.lines.len() < MAX_GROUP_RECORDS && g.bytes < MAX_GROUP_BYTES {
                return;
            }
        }
        self.flush(sink);
    }

    fn finish(&mut self, sink: &mut Sink<'_>) {
        self.flush(sink);
    }

    fn pending(&self) -> bool {
        self.group.is_some()
    }
}

fn parse_header(line: &str) -> Result<Header<'_>, String> {
    let mut rest = line.trim_start();
    let mut node = None;
    if let Some(r) = rest.strip_prefix("node=") {
        let end = r.find(' ').ok_or("`node=` is not followed by a record")?;
        node = Some(&r[..end]);
        rest = r[end..].trim_start();
    }
    let r = rest
        .strip_prefix("type=")
        .ok_or("not an audit record: expected `type=` at the start")?;
    let end = r.find(' ').ok_or("audit record has no `msg=audit(...)`")?;
    let rtype = &r[..end];
    if rtype.is_empty() {
        return Err("empty record type".into());
    }
    let r = r[end..].trim_start();
    let r = r
        .strip_prefix("msg=audit(")
        .ok_or("expected `msg=audit(` after the record type")?;
    let close = r.find(')').ok_or("unterminated `msg=audit(`")?;
    let stamp = &r[..close];
    let (ts, serial) = stamp
        .split_once(':')
        .ok_or("`msg=audit(...)` lacks `:serial`")?;
    let serial: u64 = serial
        .parse()
        .map_err(|_| format!("bad serial `{serial}` in msg=audit(...)"))?;
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    let secs: i64 = secs
        .parse()
        .map_err(|_| format!("bad timestamp `{ts}` in msg=audit(...)"))?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad timestamp `{ts}` in msg=audit(...)"));
    }
    let mut nanos: i64 = frac.parse().map_err(|_| format!("bad timestamp `{ts}`"))?;
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    let ts_ns = secs
        .checked_mul(1_000_000_000)
        .and_then(|v| v.checked_add(nanos))
        .ok_or("timestamp out of range")?;
    let body = r[close + 1..].strip_prefix(':').unwrap_or(&r[close + 1..]);
    Ok(Header {
        node,
        rtype,
        ts_ns,
        serial,
        body,
    })
}

/// A value as it appears in the record.
#[derive(Clone, Copy)]
enum Val<'a> {
    Quoted(&'a str),
    Raw(&'a str),
}

impl<'a> Val<'a> {
    fn raw(self) -> &'a str {
        match self {
            Val::Quoted(v) | Val::Raw(v) => v,
        }
    }
}

/// Splits a record body into key/value pairs. A `msg='...'` value's own pairs are included.
/// Interpretations that auditd appends after a 0x1d byte (upper-case keys) are skipped.
fn pairs<'a>(body: &'a str, out: &mut Vec<(&'a str, Val<'a>)>) {
    let body = body.split('\x1d').next().unwrap_or(body);
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] == b' ' {
            continue; // a token without `=`
        }
        let key = &body[start..i];
        i += 1;
        match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let vstart = i + 1;
                let vend = body[vstart..]
                    .find(q as char)
                    .map_or(b.len(), |p| vstart + p);
                let v = &body[vstart..vend];
                i = (vend + 1).min(b.len());
                if q == b'\'' {
                    if key == "msg" {
                        pairs(v, out);
                    } else {
                        out.push((key, Val::Quoted(v)));
                    }
                } else {
                    out.push((key, Val::Quoted(v)));
                }
            }
            _ => {
                let vstart = i;
                while i < b.len() && b[i] != b' ' {
                    i += 1;
                }
                out.push((key, Val::Raw(&body[vstart..i])));
            }
        }
    }
}

fn is_hex(v: &str) -> bool {
    !v.is_empty() && v.len() & 1 == 0 && v.bytes().all(|c| c.is_ascii_hexdigit())
}

fn hex_bytes(v: &str) -> Option<Vec<u8>> {
    if !is_hex(v) {
        return None;
    }
    hex::decode(v).ok()
}

/// Keys whose unquoted values are hex-encoded strings.
fn is_encoded_key(key: &str) -> bool {
    matches!(
        key,
        "exe"
            | "comm"
            | "cwd"
            | "name"
            | "proctitle"
            | "cmd"
            | "path"
            | "key"
            | "data"
            | "acct"
            | "old-chardev"
            | "new-chardev"
            | "vm"
            | "root_dir"
            | "new-disk"
            | "old-disk"
            | "new-fs"
            | "old-fs"
    )
}

/// The text of a value: quoted values as they are; unquoted hex in an encoded field decoded;
/// `(null)`, `(none)`, `?` as None.
fn text<'a>(key: &str, v: Val<'a>) -> Option<Cow<'a, str>> {
    match v {
        Val::Quoted(q) => Some(Cow::Borrowed(q)),
        Val::Raw(r) => {
            if r.is_empty() || r == "(null)" || r == "(none)" || r == "?" {
                return None;
            }
            if is_encoded_key(key) {
                if let Some(bytes) = hex_bytes(r) {
                    let bytes = match key {
                        "key" => bytes.split(|&c| c == 0x01).next().unwrap_or(&[]).to_vec(),
                        _ => bytes,
                    };
                    return Some(Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()));
                }
            }
            Some(Cow::Borrowed(r))
        }
    }
}

fn int(v: &str) -> Option<Value> {
    v.parse::<i64>().ok().map(Value::Int)
}

/// auditd's unset id (4294967295, and -1) stays a string, as Auditbeat leaves it.
fn id(v: &str) -> Value {
    s(v)
}

/// The syscall name for an audit arch and syscall number.
pub fn syscall_name(arch: &str, nr: u64) -> Option<&'static str> {
    let table: &[(u64, &str)] = match arch {
        "c000003e" => X86_64,
        "c00000b7" => AARCH64,
        "40000003" => I386,
        _ => return None,
    };
    table
        .binary_search_by_key(&nr, |(n, _)| *n)
        .ok()
        .map(|i| table[i].1)
}

fn arch_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "c000003e" => "x86_64",
        "c00000b7" => "aarch64",
        "40000003" => "i386",
        "40000028" => "arm",
        "c0000015" => "ppc64le",
        "80000016" => "s390x",
        "c00000f3" => "riscv64",
        _ => return None,
    })
}

#[rustfmt::skip]
const X86_64: &[(u64, &str)] = &[
    (0, "read"), (1, "write"), (2, "open"), (3, "close"), (4, "stat"), (5, "fstat"), (6, "lstat"), (7, "poll"),
    (8, "lseek"), (9, "mmap"), (10, "mprotect"), (11, "munmap"), (12, "brk"), (13, "rt_sigaction"),
    (14, "rt_sigprocmask"), (15, "rt_sigreturn"), (16, "ioctl"), (17, "pread64"), (18, "pwrite64"), (19, "readv"),
    (20, "writev"), (21, "access"), (22, "pipe"), (23, "select"), (32, "dup"), (33, "dup2"), (39, "getpid"),
    (40, "sendfile"), (41, "socket"), (42, "connect"), (43, "accept"), (44, "sendto"), (45, "recvfrom"),
    (46, "sendmsg"), (47, "recvmsg"), (48, "shutdown"), (49, "bind"), (50, "listen"), (51, "getsockname"),
    (52, "getpeername"), (53, "socketpair"), (54, "setsockopt"), (55, "getsockopt"), (56, "clone"), (57, "fork"),
    (58, "vfork"), (59, "execve"), (60, "exit"), (61, "wait4"), (62, "kill"), (63, "uname"), (72, "fcntl"),
    (76, "truncate"), (77, "ftruncate"), (78, "getdents"), (79, "getcwd"), (80, "chdir"), (81, "fchdir"),
    (82, "rename"), (83, "mkdir"), (84, "rmdir"), (85, "creat"), (86, "link"), (87, "unlink"), (88, "symlink"),
    (89, "readlink"), (90, "chmod"), (91, "fchmod"), (92, "chown"), (93, "fchown"), (94, "lchown"), (95, "umask"),
    (101, "ptrace"), (105, "setuid"), (106, "setgid"), (112, "setsid"), (113, "setreuid"), (114, "setregid"),
    (117, "setresuid"), (119, "setresgid"), (133, "mknod"), (155, "pivot_root"), (157, "prctl"),
    (159, "adjtimex"), (161, "chroot"), (164, "settimeofday"), (165, "mount"), (166, "umount2"), (169, "reboot"),
    (170, "sethostname"), (175, "init_module"), (176, "delete_module"), (188, "setxattr"), (189, "lsetxattr"),
    (190, "fsetxattr"), (200, "tkill"), (227, "clock_settime"), (231, "exit_group"), (234, "tgkill"),
    (257, "openat"), (258, "mkdirat"), (259, "mknodat"), (260, "fchownat"), (262, "newfstatat"), (263, "unlinkat"),
    (264, "renameat"), (265, "linkat"), (266, "symlinkat"), (267, "readlinkat"), (268, "fchmodat"),
    (269, "faccessat"), (272, "unshare"), (288, "accept4"), (292, "dup3"), (293, "pipe2"), (305, "clock_adjtime"),
    (308, "setns"), (310, "process_vm_readv"), (311, "process_vm_writev"), (313, "finit_module"),
    (316, "renameat2"), (319, "memfd_create"), (321, "bpf"), (322, "execveat"), (425, "io_uring_setup"),
    (426, "io_uring_enter"), (427, "io_uring_register"), (435, "clone3"), (437, "openat2"), (439, "faccessat2"),
];

#[rustfmt::skip]
const AARCH64: &[(u64, &str)] = &[
    (17, "getcwd"), (23, "dup"), (24, "dup3"), (25, "fcntl"), (29, "ioctl"), (33, "mknodat"), (34, "mkdirat"),
    (35, "unlinkat"), (36, "symlinkat"), (37, "linkat"), (38, "renameat"), (39, "umount2"), (40, "mount"),
    (41, "pivot_root"), (45, "truncate"), (46, "ftruncate"), (48, "faccessat"), (49, "chdir"), (50, "fchdir"),
    (51, "chroot"), (52, "fchmod"), (53, "fchmodat"), (54, "fchownat"), (55, "fchown"), (56, "openat"),
    (57, "close"), (59, "pipe2"), (61, "getdents64"), (62, "lseek"), (63, "read"), (64, "write"),
    (78, "readlinkat"), (79, "newfstatat"), (80, "fstat"), (93, "exit"), (94, "exit_group"), (97, "unshare"),
    (98, "futex"), (105, "init_module"), (106, "delete_module"), (112, "clock_settime"), (117, "ptrace"),
    (129, "kill"), (130, "tkill"), (131, "tgkill"), (142, "reboot"), (144, "setgid"), (146, "setuid"),
    (147, "setresuid"), (149, "setresgid"), (157, "setsid"), (160, "uname"), (161, "sethostname"), (167, "prctl"),
    (170, "settimeofday"), (171, "adjtimex"), (172, "getpid"), (198, "socket"), (199, "socketpair"), (200, "bind"),
    (201, "listen"), (202, "accept"), (203, "connect"), (204, "getsockname"), (205, "getpeername"),
    (206, "sendto"), (207, "recvfrom"), (208, "setsockopt"), (209, "getsockopt"), (210, "shutdown"),
    (211, "sendmsg"), (212, "recvmsg"), (214, "brk"), (215, "munmap"), (216, "mremap"), (220, "clone"),
    (221, "execve"), (222, "mmap"), (226, "mprotect"), (242, "accept4"), (260, "wait4"), (266, "clock_adjtime"),
    (268, "setns"), (270, "process_vm_readv"), (271, "process_vm_writev"), (273, "finit_module"),
    (276, "renameat2"), (279, "memfd_create"), (280, "bpf"), (281, "execveat"), (425, "io_uring_setup"),
    (426, "io_uring_enter"), (427, "io_uring_register"), (435, "clone3"), (437, "openat2"), (439, "faccessat2"),
];

#[rustfmt::skip]
const I386: &[(u64, &str)] = &[
    (1, "exit"), (2, "fork"), (3, "read"), (4, "write"), (5, "open"), (6, "close"), (8, "creat"), (9, "link"),
    (10, "unlink"), (11, "execve"), (12, "chdir"), (14, "mknod"), (15, "chmod"), (26, "ptrace"), (37, "kill"),
    (38, "rename"), (39, "mkdir"), (40, "rmdir"), (102, "socketcall"), (120, "clone"), (190, "vfork"),
    (252, "exit_group"), (295, "openat"), (297, "mknodat"), (301, "unlinkat"), (358, "execveat"), (359, "socket"),
    (360, "socketpair"), (361, "bind"), (362, "connect"),
];

/// `O_ACCMODE` of open flags, named as the kernel sensor names it.
fn access_mode_name(flags: u64) -> &'static str {
    match flags & 0o3 {
        0 => "read",
        1 => "write",
        _ => "read_write",
    }
}

fn file_type(mode: u64) -> Option<&'static str> {
    Some(match mode & 0o170_000 {
        0o010_000 => "fifo",
        0o020_000 => "char_device",
        0o040_000 => "dir",
        0o060_000 => "block_device",
        0o100_000 => "file",
        0o120_000 => "symlink",
        0o140_000 => "socket",
        _ => return None,
    })
}

/// Socket family names as the kernel sensor writes them (docs/events.md), so that one rule reads
/// both sources.
fn family_name(f: u64) -> Option<&'static str> {
    Some(match f {
        1 => "AF_UNIX",
        2 => "AF_INET",
        10 => "AF_INET6",
        16 => "AF_NETLINK",
        17 => "AF_PACKET",
        40 => "AF_VSOCK",
        _ => return None,
    })
}

fn socket_type_name(t: u64) -> Option<&'static str> {
    Some(match t & 0xf {
        1 => "SOCK_STREAM",
        2 => "SOCK_DGRAM",
        3 => "SOCK_RAW",
        4 => "SOCK_RDM",
        5 => "SOCK_SEQPACKET",
        _ => return None,
    })
}

/// A PATH record's name, nametype, mode, inode and owner.
type PathItem = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A decoded sockaddr.
enum SockAddr {
    Unix(String),
    Inet(IpAddr, u16),
    Other(u64),
}

fn decode_sockaddr(hexstr: &str) -> Option<SockAddr> {
    let b = hex_bytes(hexstr)?;
    if b.len() < 2 {
        return None;
    }
    let le = u64::from(u16::from_le_bytes([b[0], b[1]]));
    let be = u64::from(u16::from_be_bytes([b[0], b[1]]));
    let family = if family_name(le).is_some() { le } else { be };
    match family {
        1 => {
            let p = &b[2..];
            let path = if p.first() == Some(&0) {
                let rest = &p[1..];
                let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                format!("@{}", String::from_utf8_lossy(&rest[..end]))
            } else {
                let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
                String::from_utf8_lossy(&p[..end]).into_owned()
            };
            Some(SockAddr::Unix(path))
        }
        2 if b.len() >= 8 => Some(SockAddr::Inet(
            IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])),
            u16::from_be_bytes([b[2], b[3]]),
        )),
        10 if b.len() >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            let ip = Ipv6Addr::from(a);
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Some(SockAddr::Inet(ip, u16::from_be_bytes([b[2], b[3]])))
        }
        f => Some(SockAddr::Other(f)),
    }
}

fn parse_u64_radix(v: &str, radix: u32) -> Option<u64> {
    u64::from_str_radix(v, radix).ok()
}

/// Builds one event from a group of records.
fn build(ctx: &Ctx, keys: &mut KeyFields, g: &Group) -> Event {
    let f = fields();
    let (base, raw) = ctx.base_fields("auditd.log", &g.text);
    let mut ev = Out { fields: base };
    ev.set(f.timestamp, util::rfc3339_value(g.ts_ns));
    ev.set(f.event_kind, s("event"));
    ev.insert(
        "auditd.log.sequence",
        Value::Int(i64::try_from(g.serial).unwrap_or(i64::MAX)),
    );
    if let Some(node) = &g.node {
        ev.insert("host.name", s(node));
    }
    let mut kv = Vec::new();
    let mut types = Vec::with_capacity(g.lines.len());
    let mut args: Vec<(u64, String)> = Vec::new();
    let mut chunks: Vec<(u64, u64, String)> = Vec::new();
    let mut argc: Option<u64> = None;
    let mut paths: Vec<PathItem> = Vec::new();
    let mut cwd: Option<String> = None;
    let mut sockaddr: Option<SockAddr> = None;
    let mut proctitle: Option<Vec<String>> = None;
    let mut syscall = false;
    // The SYSCALL record's pairs, mapped after the other records'.
    let mut sc_kv = Vec::new();
    for l in &g.lines {
        let rtype = g.rtype(l);
        types.push(rtype);
        let body = g.body(l);
        kv.clear();
        pairs(body, &mut kv);
        match rtype {
            "SYSCALL" => {
                syscall = true;
                sc_kv.clear();
                sc_kv.extend_from_slice(&kv);
            }
            "EXECVE" => {
                for &(k, v) in &kv {
                    if k == "argc" {
                        argc = v.raw().parse().ok();
                    } else if let Some(n) = k.strip_prefix('a') {
                        if let Some((n, rest)) = n.split_once('[') {
                            if let (Ok(n), Ok(c)) =
                                (n.parse::<u64>(), rest.trim_end_matches(']').parse::<u64>())
                            {
                                chunks.push((n, c, v.raw().to_string()));
                            }
                        } else if let Ok(n) = n.parse::<u64>() {
                            let t = match v {
                                Val::Quoted(q) => q.to_string(),
                                Val::Raw(r) => hex_bytes(r).map_or_else(
                                    || r.to_string(),
                                    |b| String::from_utf8_lossy(&b).into_owned(),
                                ),
                            };
                            args.push((n, t));
                        }
                    }
                }
            }
            "PATH" => {
                let get = |key: &str| {
                    kv.iter()
                        .find(|(k, _)| *k == key)
                        .and_then(|&(k, v)| text(k, v))
                        .map(Cow::into_owned)
                };
                paths.push((
                    get("name"),
                    get("nametype"),
                    get("mode"),
                    get("inode"),
                    get("ouid"),
                ));
            }
            "CWD" => {
                cwd = kv
                    .iter()
                    .find(|(k, _)| *k == "cwd")
                    .and_then(|&(k, v)| text(k, v))
                    .map(Cow::into_owned)
            }
            "SOCKADDR" => {
                sockaddr = kv
                    .iter()
                    .find(|(k, _)| *k == "saddr")
                    .and_then(|(_, v)| decode_sockaddr(v.raw()));
            }
            "PROCTITLE" => {
                if let Some(&(_, v)) = kv.iter().find(|(k, _)| *k == "proctitle") {
                    proctitle = Some(match v {
                        Val::Quoted(q) => vec![q.to_string()],
                        Val::Raw(r) => match hex_bytes(r) {
                            Some(b) => b
                                .split(|&c| c == 0)
                                .filter(|p| !p.is_empty())
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .collect(),
                            None => vec![r.to_string()],
                        },
                    });
                }
            }
            _ => {
                if !syscall {
                    generic(&mut ev, keys, &kv);
                }
            }
        }
    }
    ev.insert("auditd.log.record_types", strs(&types));
    let first_type = types.first().copied().unwrap_or("UNKNOWN");
    let mut action = first_type.to_ascii_lowercase();
    let mut category: &[&str] = &[];
    let mut etype: &[&str] = &["info"];
    let mut sc_name: Option<String> = None;
    let mut sc_args: [Option<u64>; 4] = [None; 4];
    let mut open_flags: Option<u64> = None;
    if syscall {
        let kv = &sc_kv;
        generic(&mut ev, keys, kv);
        let get = |key: &str| kv.iter().find(|(k, _)| *k == key).map(|(_, v)| v.raw());
        let arch = get("arch").unwrap_or("");
        if let Some(a) = arch_name(arch) {
            ev.insert("auditd.log.arch", s(a));
            ev.insert("host.architecture", s(a));
        }
        if let Some(nr) = get("syscall") {
            let name = nr
                .parse::<u64>()
                .ok()
                .and_then(|n| syscall_name(arch, n))
                .map_or_else(|| nr.to_string(), str::to_string);
            ev.insert("auditd.log.syscall", s(&name));
            sc_name = Some(name);
        }
        for (i, key) in ["a0", "a1", "a2", "a3"].iter().enumerate() {
            sc_args[i] = get(key).and_then(|v| parse_u64_radix(v, 16));
        }
        if let Some(name) = &sc_name {
            action = name.clone();
        }
    }
    // EXECVE arguments, reassembling chunked ones.
    if !chunks.is_empty() {
        chunks.sort_by_key(|(n, c, _)| (*n, *c));
        let mut i = 0;
        while i < chunks.len() {
            let n = chunks[i].0;
            let mut hexs = String::new();
            while i < chunks.len() && chunks[i].0 == n {
                hexs.push_str(&chunks[i].2);
                i += 1;
            }
            let t = hex_bytes(&hexs).map_or(hexs, |b| String::from_utf8_lossy(&b).into_owned());
            args.push((n, t));
        }
    }
    if !args.is_empty() {
        args.sort_by_key(|(n, _)| *n);
        args.dedup_by_key(|(n, _)| *n);
        let list: Vec<Value> = args.iter().map(|(_, a)| s(a)).collect();
        ev.insert(
            "process.args_count",
            Value::Int(i64::try_from(argc.unwrap_or(list.len() as u64)).unwrap_or(0)),
        );
        let cmd = args
            .iter()
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        ev.insert("process.command_line", s(&cmd));
        ev.insert("process.args", Value::Array(list.into()));
    } else if let Some(pt) = &proctitle {
        ev.insert("process.command_line", s(&pt.join(" ")));
        ev.insert(
            "process.args",
            Value::Array(pt.iter().map(|a| s(a)).collect()),
        );
    }
    if let Some(pt) = &proctitle {
        ev.insert("process.title", s(&pt.join(" ")));
    }
    if let Some(c) = &cwd {
        ev.insert("process.working_directory", s(c));
    }
    // The PATH item the event is about: the first that is not a PARENT.
    let item = paths
        .iter()
        .find(|p| p.1.as_deref() != Some("PARENT"))
        .or(paths.first());
    let mut ftype: Option<&str> = None;
    if let Some((name, nametype, mode, inode, ouid)) = item {
        if let Some(n) = name {
            let full = match &cwd {
                Some(c) if !n.starts_with('/') => format!("{}/{}", c.trim_end_matches('/'), n),
                _ => n.clone(),
            };
            ev.insert("file.name", s(util::basename(&full)));
            ev.insert("file.path", s(&full));
        }
        if let Some(m) = mode.as_deref().and_then(|m| parse_u64_radix(m, 8)) {
            ftype = file_type(m);
            ev.insert("file.mode", s(&format!("{:04o}", m & 0o7777)));
        }
        if let Some(i) = inode {
            ev.insert("file.inode", s(i));
        }
        if let Some(u) = ouid {
            ev.insert("file.uid", s(u));
        }
        if nametype.as_deref() == Some("CREATE") {
            etype = &["creation"];
        }
    }
    if let Some(name) = sc_name.as_deref() {
        match name {
            "execve" | "execveat" => {
                category = &["process"];
                etype = &["start"];
            }
            "socket" | "socketpair" => {
                category = &["network"];
                etype = &["start"];
                if let Some(fam) = sc_args[0].and_then(family_name) {
                    ev.insert("socket.family", s(fam));
                }
                if let Some(t) = sc_args[1].and_then(socket_type_name) {
                    ev.insert("socket.type", s(t));
                }
            }
            "connect" | "bind" | "accept" | "accept4" | "sendto" | "sendmsg" => {
                category = &["network"];
                etype = if name == "connect" {
                    &["connection", "start"]
                } else {
                    &["start"]
                };
            }
            "open" | "openat" | "openat2" | "creat" => {
                category = &["file"];
                if etype != ["creation"] {
                    etype = &["access"];
                }
                // The open flags are a syscall argument (openat2 passes them in a struct the record
                // does not show): the access mode, as the kernel sensor's `file.access_mode`.
                open_flags = match name {
                    "open" => sc_args[1],
                    "openat" => sc_args[2],
                    "creat" => Some(0o1),
                    _ => None,
                };
            }
            "mknod" | "mknodat" => {
                category = &["file"];
                etype = &["creation"];
                let mode = if name == "mknod" {
                    sc_args[1]
                } else {
                    sc_args[2]
                };
                if let Some(t) = mode.and_then(file_type) {
                    ftype = Some(t);
                }
            }
            "unlink" | "unlinkat" | "rmdir" => {
                category = &["file"];
                etype = &["deletion"];
            }
            "rename" | "renameat" | "renameat2" | "chmod" | "fchmod" | "fchmodat" | "chown"
            | "fchown" | "fchownat" | "lchown" | "link" | "linkat" | "symlink" | "symlinkat"
            | "truncate" | "ftruncate" | "setxattr" => {
                category = &["file"];
                etype = &["change"];
            }
            "mkdir" | "mkdirat" => {
                category = &["file"];
                etype = &["creation"];
            }
            "ptrace" | "kill" | "tkill" | "tgkill" | "clone" | "clone3" | "fork" | "vfork" => {
                category = &["process"];
            }
            "init_module" | "finit_module" | "delete_module" => {
                category = &["driver"];
            }
            _ => {}
        }
    } else {
        (category, etype) = record_category(first_type);
    }
    if let Some(t) = ftype {
        ev.insert("file.type", s(t));
        if let (Some(flags), "fifo") = (open_flags, t) {
            ev.insert("file.access_mode", s(access_mode_name(flags)));
            ev.insert(
                "file.open_flags",
                Value::Int(i64::try_from(flags).unwrap_or(i64::MAX)),
            );
        }
    }
    match sockaddr {
        Some(SockAddr::Unix(path)) => {
            ev.insert("socket.family", s("AF_UNIX"));
            ev.insert("network.transport", s("unix"));
            ev.insert("socket.path", s(&path));
            ev.insert("file.path", s(&path));
            ev.insert("file.name", s(util::basename(&path)));
            ev.insert("file.type", s("socket"));
        }
        Some(SockAddr::Inet(ip, port)) => {
            let side = if sc_name.as_deref() == Some("bind") {
                "source"
            } else {
                "destination"
            };
            ev.insert(
                "socket.family",
                s(if ip.is_ipv4() { "AF_INET" } else { "AF_INET6" }),
            );
            ev.insert(
                "network.type",
                s(if ip.is_ipv4() { "ipv4" } else { "ipv6" }),
            );
            ev.insert(&format!("{side}.ip"), Value::Ip(ip));
            ev.insert(&format!("{side}.address"), s(&ip.to_string()));
            ev.insert(&format!("{side}.port"), Value::Int(i64::from(port)));
        }
        Some(SockAddr::Other(fam)) => {
            if let Some(n) = family_name(fam) {
                ev.insert("socket.family", s(n));
            }
        }
        None => {}
    }
    ev.set(f.event_action, s(&action));
    if !category.is_empty() {
        ev.set(f.event_category, strs(category));
        ev.set(f.event_type, strs(etype));
    }
    let mut event = Event::from_fields(g.ts_ns, ev.fields);
    event.raw = Some(raw);
    event
}

fn record_category(rtype: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match rtype {
        "USER_AUTH" | "USER_LOGIN" | "USER_LOGOUT" | "LOGIN" | "CRED_ACQ" | "CRED_DISP"
        | "CRED_REFR" | "USER_ERR" => (&["authentication"], &["info"]),
        "ADD_USER" | "DEL_USER" | "USER_MGMT" | "USER_CHAUTHTOK" | "ADD_GROUP" | "DEL_GROUP"
        | "GRP_MGMT" | "ROLE_ASSIGN" | "ROLE_REMOVE" | "USER_ROLE_CHANGE" => (&["iam"], &["info"]),
        "SERVICE_START" | "SERVICE_STOP" | "DAEMON_START" | "DAEMON_END" | "DAEMON_ABORT"
        | "SYSTEM_BOOT" | "SYSTEM_SHUTDOWN" | "SYSTEM_RUNLEVEL" => (&["process"], &["info"]),
        "USER_CMD" | "EXECVE" => (&["process"], &["start"]),
        "CONFIG_CHANGE" | "USYS_CONFIG" | "NETFILTER_CFG" | "MAC_POLICY_LOAD" => {
            (&["configuration"], &["change"])
        }
        "AVC" | "USER_AVC" | "SELINUX_ERR" | "ANOM_ABEND" | "ANOM_PROMISCUOUS" => {
            (&["intrusion_detection"], &["info"])
        }
        "KERN_MODULE" => (&["driver"], &["info"]),
        "SOCKADDR" => (&["network"], &["info"]),
        _ => (&[], &[]),
    }
}

/// Maps the fields common to most records; the rest go under `auditd.log.<key>`.
fn generic(ev: &mut Out, keys: &mut KeyFields, kv: &[(&str, Val<'_>)]) {
    let f = fields();
    for &(k, v) in kv {
        let Some(t) = text(k, v) else { continue };
        let t = t.as_ref();
        match k {
            "pid" => ev.insert("process.pid", int(t).unwrap_or_else(|| s(t))),
            "ppid" => ev.insert("process.parent.pid", int(t).unwrap_or_else(|| s(t))),
            "uid" => ev.insert("user.id", id(t)),
            "auid" => ev.insert("user.audit.id", id(t)),
            "euid" => ev.insert("user.effective.id", id(t)),
            "suid" => ev.insert("user.saved.id", id(t)),
            "fsuid" => ev.insert("user.filesystem.id", id(t)),
            "gid" => ev.insert("group.id", id(t)),
            "egid" => ev.insert("group.effective.id", id(t)),
            "sgid" => ev.insert("group.saved.id", id(t)),
            "fsgid" => ev.insert("group.filesystem.id", id(t)),
            "comm" => ev.insert("process.name", s(t)),
            "exe" => ev.insert("process.executable", s(t)),
            "acct" => ev.insert("user.name", s(t)),
            "cwd" => ev.insert("process.working_directory", s(t)),
            "success" => ev.set(
                f.event_outcome,
                s(if t == "yes" { "success" } else { "failure" }),
            ),
            "res" | "result" => {
                let o = match t {
                    "success" | "1" | "yes" => "success",
                    "failed" | "0" | "no" | "failure" => "failure",
                    _ => "unknown",
                };
                ev.set(f.event_outcome, s(o));
            }
            "addr" | "saddr_fam" => {
                if let Ok(ip) = t.parse::<IpAddr>() {
                    ev.insert("source.ip", Value::Ip(ip));
                    ev.insert("source.address", s(t));
                }
            }
            "src" => {
                if let Ok(ip) = t.parse::<IpAddr>() {
                    ev.insert("source.ip", Value::Ip(ip));
                }
                ev.insert("source.address", s(t));
            }
            "dst" => {
                if let Ok(ip) = t.parse::<IpAddr>() {
                    ev.insert("destination.ip", Value::Ip(ip));
                }
                ev.insert("destination.address", s(t));
            }
            "hostname" => ev.insert("source.domain", s(t)),
            "key" => {
                ev.insert("auditd.log.key", s(t));
                ev.insert("tags", Value::Array(Arc::from([s(t)])));
            }
            "type" | "msg" | "arch" | "syscall" | "a0" | "a1" | "a2" | "a3" => {
                if matches!(k, "a0" | "a1" | "a2" | "a3") {
                    ev.set(keys.get(k), s(t));
                }
            }
            _ => {
                if k.len() <= 64
                    && k.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                {
                    ev.set(keys.get(k), s(t));
                }
            }
        }
    }
}
