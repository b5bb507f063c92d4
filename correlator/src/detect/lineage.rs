//! Parent lineage from a process table: sources such as eslogger name a new process's parent only by pid.
//! [`Lineage`] remembers the executable of every process start it sees, keyed by host and pid, and fills
//! `process.parent.executable` / `process.parent.name` into later events that have `process.parent.pid`
//! but no parent image, so rules written against the Elastic shape (`process.parent.name`) work on them.
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
});

fn has(ev: &Event, f: Field, want: &str) -> bool {
    match ev.get(f) {
        Some(Value::Str(s)) => &**s == want,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
        _ => false,
    }
}

#[derive(Default)]
pub struct Lineage {
    procs: BTreeMap<(String, i64), (Value, Option<Value>)>,
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
                self.procs
                    .insert(key, (exe.clone(), ev.get(f.name).cloned()));
            }
        }
        if ev.get(f.pexe).is_some() && ev.get(f.pname).is_some() {
            return None;
        }
        let ppid = ev.get(f.ppid).and_then(Value::as_i64)?;
        let (exe, name) = self.procs.get(&(Lineage::host(ev), ppid))?;
        let mut out = ev.clone();
        if out.get(f.pexe).is_none() {
            out.set(f.pexe, exe.clone());
        }
        if out.get(f.pname).is_none() {
            let n = name.clone().or_else(|| {
                exe.as_str()
                    .map(|p| Value::Str(p.rsplit('/').next().unwrap_or(p).into()))
            });
            if let Some(n) = n {
                out.set(f.pname, n);
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
}
