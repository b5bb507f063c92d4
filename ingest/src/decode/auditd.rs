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

use correlator::{ecs, Event, Field, Value};

use super::util::{self, fields, s, strs};
use super::{Ctx, DecodeError, Decoder, Sink};

mod keys;
mod syscalls;

use keys::KeyFields;

use syscalls::arch_name;
pub use syscalls::syscall_name;

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

/// `O_ACCMODE` of open flags, named as the kernel sensor names it.
fn access_mode_name(flags: u64) -> &'static str {
    match flags & 0o3 {
        0 => "read",
        1 => "write",
        _ => "read_write",
    }
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
    let family = if ecs::socket_family(le).is_some() {
        le
    } else {
        be
    };
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

/// The pairs of one record: `(key, value)` in record order.
type Pairs<'a> = Vec<(&'a str, Val<'a>)>;

/// What the records of one group say, gathered record by record (one method per record type)
/// before the event is built from them.
#[derive(Default)]
struct Records<'a> {
    /// Record types in group order.
    types: Vec<&'a str>,
    /// The SYSCALL record's pairs, mapped after the other records'.
    syscall: Option<Pairs<'a>>,
    /// EXECVE arguments by index, and the hex chunks of long ones (index, chunk, hex).
    args: Vec<(u64, String)>,
    chunks: Vec<(u64, u64, String)>,
    argc: Option<u64>,
    paths: Vec<PathItem>,
    cwd: Option<String>,
    sockaddr: Option<SockAddr>,
    proctitle: Option<Vec<String>>,
}

impl<'a> Records<'a> {
    fn execve(&mut self, kv: &Pairs<'a>) {
        for &(k, v) in kv {
            if k == "argc" {
                self.argc = v.raw().parse().ok();
            } else if let Some(n) = k.strip_prefix('a') {
                if let Some((n, rest)) = n.split_once('[') {
                    if let (Ok(n), Ok(c)) =
                        (n.parse::<u64>(), rest.trim_end_matches(']').parse::<u64>())
                    {
                        self.chunks.push((n, c, v.raw().to_string()));
                    }
                } else if let Ok(n) = n.parse::<u64>() {
                    let t = match v {
                        Val::Quoted(q) => q.to_string(),
                        Val::Raw(r) => hex_bytes(r).map_or_else(
                            || r.to_string(),
                            |b| String::from_utf8_lossy(&b).into_owned(),
                        ),
                    };
                    self.args.push((n, t));
                }
            }
        }
    }

    fn path(&mut self, kv: &Pairs<'a>) {
        let get = |key: &str| {
            kv.iter()
                .find(|(k, _)| *k == key)
                .and_then(|&(k, v)| text(k, v))
                .map(Cow::into_owned)
        };
        self.paths.push((
            get("name"),
            get("nametype"),
            get("mode"),
            get("inode"),
            get("ouid"),
        ));
    }

    fn cwd(&mut self, kv: &Pairs<'a>) {
        self.cwd = kv
            .iter()
            .find(|(k, _)| *k == "cwd")
            .and_then(|&(k, v)| text(k, v))
            .map(Cow::into_owned);
    }

    fn sockaddr(&mut self, kv: &Pairs<'a>) {
        self.sockaddr = kv
            .iter()
            .find(|(k, _)| *k == "saddr")
            .and_then(|(_, v)| decode_sockaddr(v.raw()));
    }

    fn proctitle(&mut self, kv: &Pairs<'a>) {
        if let Some(&(_, v)) = kv.iter().find(|(k, _)| *k == "proctitle") {
            self.proctitle = Some(match v {
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

    /// `process.args` (EXECVE arguments, chunked ones reassembled; else the PROCTITLE), the
    /// command line, title and working directory.
    fn process_fields(&mut self, ev: &mut Out) {
        if !self.chunks.is_empty() {
            self.chunks.sort_by_key(|(n, c, _)| (*n, *c));
            let mut i = 0;
            while i < self.chunks.len() {
                let n = self.chunks[i].0;
                let mut hexs = String::new();
                while i < self.chunks.len() && self.chunks[i].0 == n {
                    hexs.push_str(&self.chunks[i].2);
                    i += 1;
                }
                let t = hex_bytes(&hexs).map_or(hexs, |b| String::from_utf8_lossy(&b).into_owned());
                self.args.push((n, t));
            }
        }
        if !self.args.is_empty() {
            self.args.sort_by_key(|(n, _)| *n);
            self.args.dedup_by_key(|(n, _)| *n);
            let list: Vec<Value> = self.args.iter().map(|(_, a)| s(a)).collect();
            ev.insert(
                "process.args_count",
                Value::Int(i64::try_from(self.argc.unwrap_or(list.len() as u64)).unwrap_or(0)),
            );
            let cmd = self
                .args
                .iter()
                .map(|(_, a)| a.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            ev.insert("process.command_line", s(&cmd));
            ev.insert("process.args", Value::Array(list.into()));
        } else if let Some(pt) = &self.proctitle {
            ev.insert("process.command_line", s(&pt.join(" ")));
            ev.insert(
                "process.args",
                Value::Array(pt.iter().map(|a| s(a)).collect()),
            );
        }
        if let Some(pt) = &self.proctitle {
            ev.insert("process.title", s(&pt.join(" ")));
        }
        if let Some(c) = &self.cwd {
            ev.insert("process.working_directory", s(c));
        }
    }

    /// `file.*` from the PATH item the event is about (the first that is not a PARENT). Returns
    /// the file type from its mode, and whether the item was created.
    fn file_fields(&self, ev: &mut Out) -> (Option<&'static str>, bool) {
        let item = self
            .paths
            .iter()
            .find(|p| p.1.as_deref() != Some("PARENT"))
            .or(self.paths.first());
        let Some((name, nametype, mode, inode, ouid)) = item else {
            return (None, false);
        };
        let mut ftype = None;
        if let Some(n) = name {
            let full = match &self.cwd {
                Some(c) if !n.starts_with('/') => format!("{}/{}", c.trim_end_matches('/'), n),
                _ => n.clone(),
            };
            ev.insert("file.name", s(util::basename(&full)));
            ev.insert("file.path", s(&full));
        }
        if let Some(m) = mode.as_deref().and_then(|m| parse_u64_radix(m, 8)) {
            ftype = ecs::file_type(m);
            ev.insert("file.mode", s(&format!("{:04o}", m & 0o7777)));
        }
        if let Some(i) = inode {
            ev.insert("file.inode", s(i));
        }
        if let Some(u) = ouid {
            ev.insert("file.uid", s(u));
        }
        (ftype, nametype.as_deref() == Some("CREATE"))
    }
}

/// The SYSCALL record: its name (or number when unknown) and its first four arguments.
struct Syscall {
    name: Option<String>,
    args: [Option<u64>; 4],
}

/// Maps the SYSCALL record's pairs (generic fields, architecture, syscall name).
fn syscall_fields(ev: &mut Out, keys: &mut KeyFields, kv: &[(&str, Val<'_>)]) -> Syscall {
    generic(ev, keys, kv);
    let get = |key: &str| kv.iter().find(|(k, _)| *k == key).map(|(_, v)| v.raw());
    let arch = get("arch").unwrap_or("");
    if let Some(a) = arch_name(arch) {
        ev.insert("auditd.log.arch", s(a));
        ev.insert("host.architecture", s(a));
    }
    let mut sc = Syscall {
        name: None,
        args: [None; 4],
    };
    if let Some(nr) = get("syscall") {
        let name = nr
            .parse::<u64>()
            .ok()
            .and_then(|n| syscall_name(arch, n))
            .map_or_else(|| nr.to_string(), str::to_string);
        ev.insert("auditd.log.syscall", s(&name));
        sc.name = Some(name);
    }
    for (i, key) in ["a0", "a1", "a2", "a3"].iter().enumerate() {
        sc.args[i] = get(key).and_then(|v| parse_u64_radix(v, 16));
    }
    sc
}

/// `event.category` and `event.type` of a syscall, plus what its arguments say (socket family and
/// type, the file type of a mknod). `etype` comes in as what the PATH records said.
fn syscall_category(
    ev: &mut Out,
    name: &str,
    args: &[Option<u64>; 4],
    mut etype: &'static [&'static str],
    ftype: &mut Option<&'static str>,
) -> (&'static [&'static str], &'static [&'static str]) {
    let mut category: &'static [&'static str] = &[];
    match name {
        "execve" | "execveat" => {
            category = &["process"];
            etype = &["start"];
        }
        "socket" | "socketpair" => {
            category = &["network"];
            etype = &["start"];
            if let Some(fam) = args[0].and_then(ecs::socket_family) {
                ev.insert("socket.family", s(fam));
            }
            if let Some(t) = args[1].and_then(ecs::socket_type) {
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
        }
        "mknod" | "mknodat" => {
            category = &["file"];
            etype = &["creation"];
            let mode = if name == "mknod" { args[1] } else { args[2] };
            if let Some(t) = mode.and_then(ecs::file_type) {
                *ftype = Some(t);
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
    (category, etype)
}

/// `socket.*`, `file.*` and `source`/`destination` from a SOCKADDR record.
fn sockaddr_fields(ev: &mut Out, sockaddr: Option<SockAddr>, syscall: Option<&str>) {
    match sockaddr {
        Some(SockAddr::Unix(path)) => {
            ev.insert("socket.family", s("AF_UNIX"));
            ev.insert("network.transport", s(ecs::TRANSPORT_UNIX));
            ev.insert("socket.path", s(&path));
            ev.insert("socket.abstract", Value::Bool(path.starts_with('@')));
            ev.insert("file.path", s(&path));
            ev.insert("file.name", s(util::basename(&path)));
            ev.insert("file.type", s("socket"));
        }
        Some(SockAddr::Inet(ip, port)) => {
            let side = if syscall == Some("bind") {
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
            if let Some(n) = ecs::socket_family(fam) {
                ev.insert("socket.family", s(n));
            }
        }
        None => {}
    }
}

/// Builds one event from a group of records: each record type is gathered by its own method of
/// [`Records`], then mapped (SYSCALL last, so its fields win).
// Over 100 lines on purpose: gathers, then maps, the record types of one event; each type's reading is already a Records method.
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
    let mut rec = Records {
        types: Vec::with_capacity(g.lines.len()),
        ..Records::default()
    };
    let mut kv = Vec::new();
    for l in &g.lines {
        let rtype = g.rtype(l);
        rec.types.push(rtype);
        kv.clear();
        pairs(g.body(l), &mut kv);
        match rtype {
            "SYSCALL" => rec.syscall = Some(kv.clone()),
            "EXECVE" => rec.execve(&kv),
            "PATH" => rec.path(&kv),
            "CWD" => rec.cwd(&kv),
            "SOCKADDR" => rec.sockaddr(&kv),
            "PROCTITLE" => rec.proctitle(&kv),
            // The kernel audit container id (`contid=`) of the event's task, where the kernel
            // and the orchestrator set one: the event's `container.id`.
            "CONTAINER_ID" => {
                if let Some(id) = kv
                    .iter()
                    .find(|(k, _)| *k == "contid")
                    .and_then(|&(k, v)| text(k, v))
                    .filter(|c| !c.is_empty() && c.as_ref() != "18446744073709551615")
                {
                    ev.insert("container.id", s(&id));
                }
            }
            // Records after the SYSCALL add nothing of their own.
            _ if rec.syscall.is_none() => generic(&mut ev, keys, &kv),
            _ => {}
        }
    }
    ev.insert("auditd.log.record_types", strs(&rec.types));
    let first_type = rec.types.first().copied().unwrap_or("UNKNOWN");
    let sc = rec
        .syscall
        .take()
        .map(|kv| syscall_fields(&mut ev, keys, &kv));
    let sc_name = sc.as_ref().and_then(|sc| sc.name.as_deref());
    let action = sc_name.map_or_else(|| first_type.to_ascii_lowercase(), str::to_string);
    rec.process_fields(&mut ev);
    let (mut ftype, created) = rec.file_fields(&mut ev);
    let etype: &'static [&'static str] = if created { &["creation"] } else { &["info"] };
    let (category, etype) = match (&sc, sc_name) {
        (Some(sc), Some(name)) => syscall_category(&mut ev, name, &sc.args, etype, &mut ftype),
        _ => record_category(first_type),
    };
    if let Some(t) = ftype {
        ev.insert("file.type", s(t));
        // A FIFO open's access mode, as the kernel sensor's `file.access_mode`: the flags are a
        // syscall argument (openat2 passes them in a struct the record does not show).
        let flags = match (&sc, sc_name) {
            (Some(sc), Some("open")) => sc.args[1],
            (Some(sc), Some("openat")) => sc.args[2],
            (Some(_), Some("creat")) => Some(0o1),
            _ => None,
        };
        if let (Some(flags), "fifo") = (flags, t) {
            ev.insert("file.access_mode", s(access_mode_name(flags)));
            ev.insert(
                "file.open_flags",
                Value::Int(i64::try_from(flags).unwrap_or(i64::MAX)),
            );
        }
    }
    // The behaviours the vocabulary names (correlator::ecs) get its action, category and type,
    // whichever source saw them.
    let unix = matches!(rec.sockaddr, Some(SockAddr::Unix(_)));
    let vocab = match sc_name {
        Some("execve" | "execveat") => Some(ecs::EXEC),
        Some("socket") => Some(ecs::SOCKET_CREATED),
        Some("socketpair") => Some(ecs::SOCKETPAIR_CREATED),
        Some("bind") if unix => Some(ecs::UNIX_BIND),
        Some("connect") if unix => Some(ecs::UNIX_CONNECT),
        Some("mknod" | "mknodat") if ftype == Some("fifo") => Some(ecs::FIFO_CREATE),
        Some("open" | "openat" | "openat2") if ftype == Some("fifo") => Some(ecs::FIFO_OPEN),
        _ => None,
    };
    if unix && matches!(sc_name, Some("bind" | "connect")) {
        if let Some(fd) = sc.as_ref().and_then(|sc| sc.args[0]) {
            ev.insert(
                "socket.fd",
                Value::Int(i64::try_from(fd).unwrap_or(i64::MAX)),
            );
        }
    }
    sockaddr_fields(&mut ev, rec.sockaddr.take(), sc_name);
    let (action, category, etype) = match vocab {
        Some(a) => (a.name.to_string(), a.category, a.kind),
        None => (action, category, etype),
    };
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
