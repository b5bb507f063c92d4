//! Reasons and evidence: lineage of the processes of a channel, the alert text and its documents.

use std::collections::BTreeSet;

use super::decide::{Member, Rel};
use super::model::{text, Channel, Host, Role, F};
use super::{IpcWiring, MAX_EVIDENCE, MAX_LINEAGE};
use crate::detect::evidence_json;
use crate::{Alert, AttackRef, Event, Severity};

impl IpcWiring {
    pub(super) fn lineage(h: &Host, pid: i64) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = pid;
        let mut seen = BTreeSet::new();
        while out.len() < MAX_LINEAGE && seen.insert(cur) {
            let Some(p) = h.procs.get(&cur) else {
                out.push(format!("[{cur}]"));
                break;
            };
            out.push(format!("{}[{cur}]", p.label()));
            match p.ppid {
                Some(pp) if h.procs.contains_key(&pp) => cur = pp,
                Some(pp) => {
                    out.push(format!("{}[{pp}]", p.parent_label.as_deref().unwrap_or("")));
                    break;
                }
                None => break,
            }
        }
        out
    }

    pub(super) fn who(h: &Host, pid: i64) -> String {
        match h.procs.get(&pid) {
            Some(p) => format!("`{}` [{pid}]", p.shown()),
            None => format!("pid {pid}"),
        }
    }

    pub(super) fn participants_text(h: &Host, ch: &Channel) -> String {
        let mut groups: Vec<(Role, Vec<String>)> = Vec::new();
        for p in &ch.parts {
            let w = Self::who(h, p.pid);
            match groups.iter_mut().find(|(r, _)| *r == p.role) {
                Some((_, v)) => v.push(w),
                None => groups.push((p.role, vec![w])),
            }
        }
        let word = |r: Role| match (r, ch.kind) {
            (Role::Create, _) => "created by",
            (Role::Read, _) => "read by",
            (Role::Write, _) => "written by",
            (Role::ReadWrite, _) => "opened read-write by",
            (Role::Bind, _) => "bound by",
            (Role::Connect, _) => "connected to by",
            (Role::Named, _) => "named on the command line of",
        };
        groups
            .iter()
            .map(|(r, v)| format!("{} {}", word(*r), v.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(super) fn lineage_text(h: &Host, pids: &[i64]) -> String {
        let mut seen = BTreeSet::new();
        pids.iter()
            .filter(|p| seen.insert(**p))
            .map(|p| Self::lineage(h, *p).join(" <- "))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(super) fn relation(h: &Host, ch: &Channel, m: &Member) -> String {
        let part = &ch.parts[m.via];
        let verb = part.role.verb(ch.kind);
        match m.rel {
            Rel::Itself => verb.to_string(),
            Rel::Sibling => format!(
                "sits in one pipeline with {}, which {verb}",
                Self::who(h, part.pid)
            ),
            Rel::Child => format!("was started by {}, which {verb}", Self::who(h, part.pid)),
            Rel::Parent => format!("started {}, which {verb}", Self::who(h, part.pid)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn alert(
        &self,
        h: &Host,
        host: &str,
        path: &str,
        ch: &Channel,
        severity: Severity,
        reason: String,
        extra: &[(&'static str, i64, Option<&Event>)],
        main_pid: Option<i64>,
    ) -> Alert {
        let mut evidence: Vec<(i64, &'static str, i64, &Event)> = Vec::new();
        for p in &ch.parts {
            evidence.push((p.event.timestamp_ns, p.role.name(), p.pid, &p.event));
        }
        for (role, pid, ev) in extra {
            if let Some(ev) = ev {
                evidence.push((ev.timestamp_ns, role, *pid, ev));
            }
        }
        evidence.sort_by_key(|(ts, _, pid, _)| (*ts, *pid));
        evidence.truncate(MAX_EVIDENCE);
        let first = evidence.iter().map(|e| e.0).min().unwrap_or(ch.first_ns);
        let last = evidence.iter().map(|e| e.0).max().unwrap_or(ch.last_ns);
        let docs = evidence
            .iter()
            .map(|(_, role, pid, ev)| {
                let mut doc = evidence_json(ev);
                let lineage = Self::lineage(h, *pid);
                let image = h.procs.get(pid).map(|p| p.shown());
                if let serde_json::Value::Object(map) = &mut doc {
                    let sensor = map
                        .entry("sensor")
                        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                    if let serde_json::Value::Object(s) = sensor {
                        let mut ipc = serde_json::Map::new();
                        ipc.insert("role".into(), serde_json::json!(role));
                        ipc.insert("path".into(), serde_json::json!(path));
                        ipc.insert("pid".into(), serde_json::json!(pid));
                        if let Some(i) = image {
                            ipc.insert("process".into(), serde_json::json!(i));
                        }
                        ipc.insert("lineage".into(), serde_json::json!(lineage));
                        s.insert("ipc".into(), serde_json::Value::Object(ipc));
                    }
                }
                doc
            })
            .collect();
        let main = main_pid.and_then(|p| h.procs.get(&p));
        let any_ev = ch.parts.first().map(|p| &p.event);
        let host_name = any_ev
            .and_then(|e| text(e, F.host_name))
            .or_else(|| Some(host.to_string()).filter(|h| !h.is_empty()));
        let user = main_pid
            .and_then(|pid| ch.parts.iter().find(|p| p.pid == pid).map(|p| &p.event))
            .or(any_ev)
            .and_then(|e| text(e, F.user_name).or_else(|| text(e, F.user_id)));
        Alert {
            rule_id: self.cfg.id.clone(),
            rule_name: self.cfg.id.clone(),
            severity,
            risk_score: match severity {
                Severity::Low => 21,
                Severity::Medium => 47,
                Severity::High => 73,
                Severity::Critical => 99,
            },
            attack: AttackRef::default(),
            timestamp_ns: last,
            first_event_ns: first,
            join_keys: vec![serde_json::json!(host), serde_json::json!(path)],
            host: host_name,
            user,
            process: main.and_then(|p| p.exe.clone().or_else(|| p.name.clone())),
            settings: serde_json::Map::new(),
            reason,
            evidence: docs,
        }
    }
}
