//! Rows and alerts: the column list, severity codes, writing an alert (dedup, evidence) and reading
//! a row back into a [`StoredAlert`].

use std::path::Path;

use alert_store::{severity_from_code, source_of};
use correlator::Alert;
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

pub(super) use alert_store::severity_code;

use super::{
    container_of, dedup_key, ContainerSummary, Recorded, Status, StoreConfig, StoreError,
    StoredAlert,
};

pub(super) const ALERT_COLUMNS: &str =
    "id, rule_id, rule_name, severity, risk_score, status, first_seen_ns, last_seen_ns, \
     count, host, user_name, process, attack, reason, settings, join_keys, created_ns, updated_ns, \
     container_id, container_name, container_image, k8s_namespace, k8s_pod, source";

pub(super) fn record_in(
    tx: &Transaction<'_>,
    cfg: &StoreConfig,
    a: &Alert,
    now_ns: i64,
) -> rusqlite::Result<Recorded> {
    let key = dedup_key(a);
    let ctr = container_of(a);
    let window_start = a.timestamp_ns.saturating_sub(cfg.dedup_window_ns);
    let existing: Option<(i64, String, i64)> = tx
        .prepare_cached(
            "SELECT id, status, count FROM alerts
             WHERE rule_id = ?1 AND dedup_key = ?2
               AND (status = 'suppressed' OR (status IN ('open', 'acknowledged') AND last_seen_ns >= ?3))
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![a.rule_id, key, window_start], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let max_ev = i64::try_from(cfg.max_evidence).unwrap_or(i64::MAX);
    if let Some((id, status, count)) = existing {
        tx.prepare_cached(
            "UPDATE alerts SET count = count + 1, last_seen_ns = max(last_seen_ns, ?2),
             first_seen_ns = min(first_seen_ns, ?3), updated_ns = ?4 WHERE id = ?1",
        )?
        .execute(params![
            id,
            a.timestamp_ns,
            a.first_event_ns.min(a.timestamp_ns),
            now_ns
        ])?;
        let have: i64 = tx
            .prepare_cached("SELECT count(*) FROM evidence WHERE alert_id = ?1")?
            .query_row([id], |r| r.get(0))?;
        insert_evidence(tx, id, have, max_ev, &a.evidence)?;
        let status = status.parse().unwrap_or(Status::Open);
        return Ok(Recorded {
            id,
            new: false,
            duplicate: false,
            count: u64::try_from(count + 1).unwrap_or(0),
            status,
        });
    }
    tx.prepare_cached(
        "INSERT INTO alerts (rule_id, rule_name, dedup_key, severity, risk_score, status, first_seen_ns, last_seen_ns,
         created_ns, updated_ns, count, host, user_name, process, attack, reason, settings, join_keys,
         container_id, container_name, container_image, k8s_namespace, k8s_pod, source)
         VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, ?7, ?8, ?8, 1, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
         ?16, ?17, ?18, ?19, ?20, ?21)",
    )?
    .execute(params![
        a.rule_id,
        a.rule_name,
        key,
        severity_code(a.severity),
        a.risk_score,
        a.first_event_ns.min(a.timestamp_ns),
        a.timestamp_ns,
        now_ns,
        a.host,
        a.user,
        a.process,
        json(&a.attack),
        a.reason,
        json(&a.settings),
        json(&a.join_keys),
        ctr.as_ref().map(|c| c.id.clone()),
        ctr.as_ref().and_then(|c| c.name.clone()),
        ctr.as_ref().and_then(|c| c.image.clone()),
        ctr.as_ref().and_then(|c| c.namespace.clone()),
        ctr.as_ref().and_then(|c| c.pod.clone()),
        source_of(a),
    ])?;
    let id = tx.last_insert_rowid();
    tx.prepare_cached(
        "INSERT INTO history (alert_id, at_ns, actor, from_status, to_status, reason) VALUES (?1, ?2, 'sensor', NULL, 'open', ?3)",
    )?
    .execute(params![id, now_ns, format!("raised by rule {}", a.rule_id)])?;
    insert_evidence(tx, id, 0, max_ev, &a.evidence)?;
    Ok(Recorded {
        id,
        new: true,
        duplicate: false,
        count: 1,
        status: Status::Open,
    })
}

fn insert_evidence(
    tx: &Transaction<'_>,
    id: i64,
    have: i64,
    max: i64,
    evidence: &[serde_json::Value],
) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT INTO evidence (alert_id, seq, event) VALUES (?1, ?2, ?3)")?;
    for (seq, ev) in (have..max).zip(evidence) {
        stmt.execute(params![id, seq, ev.to_string()])?;
    }
    Ok(())
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

pub(super) struct RawAlert {
    id: i64,
    rule_id: String,
    rule_name: String,
    severity: i64,
    risk_score: i64,
    status: String,
    first_seen_ns: i64,
    last_seen_ns: i64,
    count: i64,
    host: Option<String>,
    user: Option<String>,
    process: Option<String>,
    attack: String,
    reason: String,
    settings: String,
    join_keys: String,
    created_ns: i64,
    updated_ns: i64,
    container: [Option<String>; 5],
    source: Option<String>,
}

pub(super) fn raw_alert(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAlert> {
    Ok(RawAlert {
        id: r.get(0)?,
        rule_id: r.get(1)?,
        rule_name: r.get(2)?,
        severity: r.get(3)?,
        risk_score: r.get(4)?,
        status: r.get(5)?,
        first_seen_ns: r.get(6)?,
        last_seen_ns: r.get(7)?,
        count: r.get(8)?,
        host: r.get(9)?,
        user: r.get(10)?,
        process: r.get(11)?,
        attack: r.get(12)?,
        reason: r.get(13)?,
        settings: r.get(14)?,
        join_keys: r.get(15)?,
        created_ns: r.get(16)?,
        updated_ns: r.get(17)?,
        container: [r.get(18)?, r.get(19)?, r.get(20)?, r.get(21)?, r.get(22)?],
        source: r.get(23)?,
    })
}

impl RawAlert {
    pub(super) fn decode(self, path: &Path) -> Result<StoredAlert, StoreError> {
        let id = self.id;
        let bad = |detail: String| StoreError::BadRow {
            path: path.to_path_buf(),
            id,
            detail,
        };
        Ok(StoredAlert {
            id,
            rule_id: self.rule_id,
            rule_name: self.rule_name,
            severity: severity_from_code(self.severity)
                .ok_or_else(|| bad(format!("severity {}", self.severity)))?,
            risk_score: u32::try_from(self.risk_score).unwrap_or(0),
            status: self.status.parse().map_err(bad)?,
            first_seen_ns: self.first_seen_ns,
            last_seen_ns: self.last_seen_ns,
            count: u64::try_from(self.count).unwrap_or(0),
            host: self.host,
            user: self.user,
            process: self.process,
            source: self.source,
            attack: serde_json::from_str(&self.attack).map_err(|e| bad(format!("attack: {e}")))?,
            reason: self.reason,
            settings: serde_json::from_str(&self.settings)
                .map_err(|e| bad(format!("settings: {e}")))?,
            join_keys: serde_json::from_str(&self.join_keys)
                .map_err(|e| bad(format!("join_keys: {e}")))?,
            container: {
                let [id, name, image, namespace, pod] = self.container;
                id.map(|id| ContainerSummary {
                    id,
                    name,
                    image,
                    namespace,
                    pod,
                })
            },
            created_ns: self.created_ns,
            updated_ns: self.updated_ns,
        })
    }
}
