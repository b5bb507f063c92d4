//! Following processes and channels: process starts, participants of FIFOs and sockets, FIFOs
//! named on command lines.

use std::collections::BTreeSet;

use super::model::{basename, has, int, text, Channel, Host, Kind, Part, Proc, Role, F};
use super::{
    IpcWiring, MAX_CHANNELS_PER_HOST, MAX_EVIDENCE_EVENT_BYTES, MAX_PARTS_PER_ROLE, MAX_PROCS,
    MAX_PROC_BYTES,
};
use crate::detect::glob_match;
use crate::{Alert, Event, Value};

impl IpcWiring {
    /// A new process entry (replacing any under that pid), within the cap.
    pub(super) fn insert_proc(&mut self, host: &str, pid: i64, mut p: Proc) {
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
            self.proc_bytes -= old.counted;
        }
        if let Some(pp) = p.ppid {
            h.children.entry(pp).or_default().insert(pid);
        }
        p.counted = p.bytes();
        self.proc_bytes += p.counted;
        h.procs.insert(pid, p);
        self.procs += 1;
        self.order.push_back((host.to_string(), pid, self.gen));
        self.shed_procs();
    }

    /// Brings the table's byte count up to date with one entry after it changed in place.
    pub(super) fn recount(&mut self, host: &str, pid: i64) {
        if let Some(p) = self.hosts.get_mut(host).and_then(|h| h.procs.get_mut(&pid)) {
            let now = p.bytes();
            self.proc_bytes = self.proc_bytes - p.counted + now;
            p.counted = now;
        }
    }

    /// Forgets the oldest inserted processes while the table is over a cap (entries or bytes);
    /// amortised O(1) per insertion (each order slot is popped once).
    pub(super) fn shed_procs(&mut self) {
        while self.procs > MAX_PROCS || self.proc_bytes > MAX_PROC_BYTES {
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
                        self.proc_bytes -= old.counted;
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

    pub(super) fn set_parent(h: &mut Host, pid: i64, ppid: i64) {
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
    pub(super) fn on_process(&mut self, host: &str, ev: &Event, now: i64) -> Vec<i64> {
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
                    p.exec = if crate::eql::sequence::event_bytes(ev) <= MAX_EVIDENCE_EVENT_BYTES {
                        Some(ev.clone())
                    } else {
                        self.dropped_evidence += 1;
                        None
                    };
                }
                if let Some(pp) = ppid {
                    Self::set_parent(h, pid, pp);
                }
                self.recount(host, pid);
                self.shed_procs();
                vec![pid]
            }
        }
    }

    /// Any other event of a process: known processes are refreshed, unknown ones (started before
    /// anything was seen) are added with the image the event names.
    pub(super) fn touch(&mut self, host: &str, pid: i64, ev: &Event, now: i64) {
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
            self.recount(host, pid);
            self.shed_procs();
        }
    }

    pub(super) fn on_channel_event(
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
    // Over 100 lines: one pass that makes the channel, merges the participant and refreshes the
    // related pids, kept together so the per-host cap and the role cap are applied in one place.
    pub(super) fn add_part(
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
    pub(super) fn named_on_command_line(
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
}
