//! The decision: which side of a channel runs a shell, which drives it, and when a channel alerts.

use std::collections::BTreeSet;

use super::model::{has, text, Channel, Host, Kind, Part, Proc, Role, F};
use super::{IpcWiring, MAX_RELATIVES};
use crate::detect::glob_match;
use crate::Alert;

/// Where a member of a side stands relative to the channel's participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rel {
    Itself,
    Sibling,
    Child,
    Parent,
}

pub(super) struct Member {
    pub(super) pid: i64,
    pub(super) rel: Rel,
    /// The participant it is related to.
    pub(super) via: usize,
}

pub(super) struct Verdict {
    pub(super) shell: Member,
    pub(super) driver: Member,
    pub(super) why: String,
    pub(super) kind_word: &'static str,
}

impl IpcWiring {
    pub(super) fn is_shell(&self, p: &Proc, now: i64) -> bool {
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
    pub(super) fn driver_reason(&self, p: &Proc, now: i64) -> Option<(u8, String, &'static str)> {
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
    pub(super) fn parent_is_shell(&self, h: &Host, p: &Proc, pp: i64) -> bool {
        let matches = |n: &str| self.cfg.shells.iter().any(|g| glob_match(g, n, false));
        match (h.procs.get(&pp), p.parent_label.as_deref()) {
            (Some(parent), _) => parent.names().into_iter().any(matches),
            (None, Some(label)) => matches(label),
            // Nothing is known of the parent (auditd names it by pid only, and it started before the
            // recording): it may be the shell that made the pipeline.
            (None, None) => true,
        }
    }

    pub(super) fn side(&self, h: &Host, parts: &[&Part], span: i64, input: bool) -> Vec<Member> {
        let mut out: Vec<Member> = Vec::new();
        let mut seen = BTreeSet::new();
        // Members judged, at most (the parts themselves always are): see MAX_RELATIVES.
        let cap = parts.len() + MAX_RELATIVES;
        let mut push = |out: &mut Vec<Member>, pid: i64, rel: Rel, via: usize| {
            if out.len() < cap && seen.insert(pid) {
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
                        if after && next.len() < cap {
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

    pub(super) fn verdict(
        &self,
        h: &Host,
        ch: &Channel,
        now: i64,
    ) -> (Option<Verdict>, BTreeSet<i64>) {
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

    pub(super) fn evaluate(
        &mut self,
        host: &str,
        key: &(Kind, String),
        now: i64,
        out: &mut Vec<Alert>,
    ) {
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

    pub(super) fn mark(&mut self, host: &str, key: &(Kind, String), now: i64) {
        if let Some(c) = self
            .hosts
            .get_mut(host)
            .and_then(|h| h.channels.get_mut(key))
        {
            c.eval_ns = c.eval_ns.max(now);
            c.settled_checked = false;
        }
    }

    pub(super) fn low_alert(&self, host: &str, key: &(Kind, String), now: i64) -> Option<Alert> {
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
