//! The fleet alert store: PostgreSQL, shared by every central correlator.
//!
//! The alert model is the SQLite store's (sensor/src/store): alerts folded by rule and dedup key
//! within a window, evidence events, a history of status changes, retention by age and by count.
//! What a shared, at-least-once fed store adds:
//!
//! - a **uniqueness key** per recorded alert, `sha256(rule id, identities of its evidence events)`,
//!   kept in `sightings`. An event redelivered by the bus (a correlator that dies before acknowledging
//!   it, a takeover that replays from the last checkpoint) produces the same alert with the same
//!   evidence, hence the same key, and is recognised as already recorded: it changes nothing.
//! - an **advisory lock** per (rule, dedup key) for the length of the transaction, so that two
//!   correlators recording sightings of the same alert fold them into one row instead of racing.
//! - **durable writes that wait out an outage**: [`FleetStore::record_batch_durable`] reconnects and
//!   retries while PostgreSQL is down or restarting; since recording is idempotent, retrying a batch
//!   whose commit was not confirmed can never double it.
//!
//! Architecture Invariant: dedup decisions use event time (`Alert::timestamp_ns`), never the wall
//! clock; only bookkeeping columns and age retention read the clock, passed in by the caller.

mod access;
mod schema;

use std::fmt;
use std::time::Duration;

use alert_store::{severity_code, severity_from_code};
use correlator::Alert;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row, Transaction};

use crate::{FleetError, PostgresConfig};

pub use access::FleetAlerts;
/// The alert model (one for both stores, see the `alert-store` crate), and its fold rule.
pub use alert_store::{
    container_of, dedup_key, source_of, AlertDetail, AlertFilter, HistoryEntry, Recorded, Status,
    StoreStats, StoredAlert,
};

/// What retention removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub deleted_by_age: u64,
    pub deleted_by_count: u64,
}

/// Whether a PostgreSQL error may go away by retrying: the connection broke or could not be made, the
/// server is shutting down or starting, or a transaction lost a serialization race.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08")
            || code.starts_with("57P")
            || matches!(code, "53300" | "40001" | "40P01");
    }
    // Not from the server: I/O (refused, reset, timed out) is transient; anything else (a value that
    // does not convert) is a fault in the data and must not be retried forever.
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.is::<std::io::Error>() {
            return true;
        }
        src = s.source();
    }
    e.to_string().contains("timeout") || e.to_string().contains("connection")
}

/// The field an event's fleet identity is read from when it has one: the edge's message id
/// (`<edge id>:<sequence>`), stamped by the central consumer on every event taken from the bus.
pub const EVENT_ID_FIELD: &str = "sensor.fleet_id";

/// The identity of one evidence event: its fleet message id when it carries one, else the SHA-256 of
/// its JSON (a redelivered event decodes to the same JSON, so the same identity).
pub fn event_identity(ev: &serde_json::Value) -> String {
    let id = ev
        .get("sensor")
        .and_then(|s| s.get("fleet_id"))
        .or_else(|| ev.get(EVENT_ID_FIELD))
        .and_then(|v| v.as_str());
    match id {
        Some(id) => format!("id:{id}"),
        None => format!("sha256:{}", hex::encode(Sha256::digest(ev.to_string()))),
    }
}

/// The uniqueness key of an alert: its rule and the identities of its evidence events, in order.
pub fn uniqueness_key(alert: &Alert) -> String {
    let mut h = Sha256::new();
    h.update(alert.rule_id.as_bytes());
    for ev in &alert.evidence {
        h.update([0u8]);
        h.update(event_identity(ev).as_bytes());
    }
    if alert.evidence.is_empty() {
        // No evidence to tell sightings apart: the closing time and the keys must do.
        h.update([1u8]);
        h.update(alert.timestamp_ns.to_le_bytes());
        h.update(dedup_key(alert).as_bytes());
    }
    hex::encode(h.finalize())
}

/// The store's URL as `sensor status` shows it: a password written in it anyway (the config asks for
/// `password_file`) is cut out, in the URL form (`user:secret@`) and the key=value form
/// (`password=secret`).
pub fn redacted_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            let user = auth.split_once(':').map_or(auth, |(u, _)| u);
            return format!("{scheme}://{user}@{host}");
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => "password=***".to_string(),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The advisory lock serialising sightings of one (rule, dedup key): a 63-bit hash (never negative,
/// so never the migration lock).
fn alert_lock_key(rule_id: &str, dedup_key: &str) -> i64 {
    let d = Sha256::new()
        .chain_update(rule_id.as_bytes())
        .chain_update([0u8])
        .chain_update(dedup_key.as_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_le_bytes(b) & i64::MAX
}

const ALERT_COLUMNS: &str =
    "id, rule_id, rule_name, severity, risk_score, status, first_seen_ns, last_seen_ns, \
     count, host, user_name, process, attack, reason, settings, join_keys, created_ns, updated_ns, \
     container_id, container_name, container_image, k8s_namespace, k8s_pod, source";

/// A connection to the fleet alert store. Reconnects by itself after a broken connection.
pub struct FleetStore {
    cfg: PostgresConfig,
    pg: tokio_postgres::Config,
    tls: Option<rustls::ClientConfig>,
    client: Option<Client>,
}

impl fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetStore")
            .field("url", &self.cfg.url)
            .finish_non_exhaustive()
    }
}

impl FleetStore {
    /// Reads the configuration (password file, TLS files) and connects, migrating the schema.
    pub async fn connect(cfg: &PostgresConfig) -> Result<FleetStore, FleetError> {
        let mut pg: tokio_postgres::Config = cfg
            .url
            .parse()
            .map_err(|e| FleetError::Config(format!("fleet.postgres.url `{}`: {e}", cfg.url)))?;
        if let Some(p) = &cfg.password_file {
            pg.password(crate::read_secret("PostgreSQL password file", p)?);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        let tls = cfg
            .tls
            .as_ref()
            .map(crate::tls::client_config)
            .transpose()?;
        let mut store = FleetStore {
            cfg: cfg.clone(),
            pg,
            tls,
            client: None,
        };
        store.client().await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn config(&self) -> &PostgresConfig {
        &self.cfg
    }

    async fn open_client(&self) -> Result<Client, FleetError> {
        let ctx = format!("connecting to {}", self.cfg.url);
        let client = match &self.tls {
            Some(tls) => {
                let (client, conn) = self
                    .pg
                    .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()))
                    .await
                    .map_err(FleetError::pg(ctx))?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!(error = %e, "fleet alert store connection ended");
                    }
                });
                client
            }
            None => {
                let (client, conn) = self
                    .pg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(FleetError::pg(ctx))?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!(error = %e, "fleet alert store connection ended");
                    }
                });
                client
            }
        };
        Ok(client)
    }

    /// The live client, reconnecting when the last one broke.
    async fn client(&mut self) -> Result<&mut Client, FleetError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let c = self.open_client().await?;
            self.client = Some(c);
        }
        self.client
            .as_mut()
            .ok_or_else(|| FleetError::Config("no PostgreSQL client".to_string()))
    }

    /// Drops the connection after an error that may have left it unusable.
    fn forget_on(&mut self, e: &FleetError) {
        if e.is_transient() {
            self.client = None;
        }
    }

    async fn migrate(&mut self) -> Result<(), FleetError> {
        let supported = schema::current_version();
        loop {
            let client = self.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(FleetError::pg("migrating: begin"))?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&schema::MIGRATION_LOCK],
            )
            .await
            .map_err(FleetError::pg("migrating: lock"))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS fleet_schema (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .map_err(FleetError::pg("migrating: fleet_schema"))?;
            let version: i64 = tx
                .query_one("SELECT coalesce(max(version), 0) FROM fleet_schema", &[])
                .await
                .map_err(FleetError::pg("migrating: reading the version"))?
                .get(0);
            if version > supported {
                return Err(FleetError::NewerSchema {
                    found: version,
                    supported,
                });
            }
            let Some(sql) = usize::try_from(version)
                .ok()
                .and_then(|v| schema::MIGRATIONS.get(v))
            else {
                tx.commit()
                    .await
                    .map_err(FleetError::pg("migrating: commit"))?;
                return Ok(());
            };
            tx.batch_execute(sql).await.map_err(FleetError::pg(format!(
                "migrating to version {}",
                version + 1
            )))?;
            tx.execute(
                "INSERT INTO fleet_schema (version) VALUES ($1)",
                &[&(version + 1)],
            )
            .await
            .map_err(FleetError::pg("migrating: recording the version"))?;
            tx.commit()
                .await
                .map_err(FleetError::pg("migrating: commit"))?;
            tracing::info!(version = version + 1, "fleet alert store schema migrated");
        }
    }

    /// The schema version of the database.
    pub async fn schema_version(&mut self) -> Result<i64, FleetError> {
        let client = self.client().await?;
        let r = client
            .query_one("SELECT coalesce(max(version), 0) FROM fleet_schema", &[])
            .await
            .map_err(FleetError::pg("reading the schema version"));
        let r = r.map(|row| row.get::<_, i64>(0));
        if let Err(e) = &r {
            self.forget_on(e);
        }
        r
    }

    /// Records alerts in one transaction: all of them are durable, or none. A repeat of an open or
    /// acknowledged alert (same rule and [`dedup_key`]) within the dedup window, or of a suppressed
    /// alert at any distance, is folded into it; an alert whose [`uniqueness_key`] was recorded before
    /// changes nothing.
    pub async fn record_batch(
        &mut self,
        alerts: &[Alert],
        now_ns: i64,
    ) -> Result<Vec<Recorded>, FleetError> {
        let cfg = self.cfg.clone();
        let r = async {
            let client = self.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(FleetError::pg("recording alerts: begin"))?;
            let mut out = Vec::with_capacity(alerts.len());
            for a in alerts {
                out.push(
                    record_in(&tx, &cfg, a, now_ns)
                        .await
                        .map_err(FleetError::pg(format!(
                            "recording an alert of rule {}",
                            a.rule_id
                        )))?,
                );
            }
            tx.commit()
                .await
                .map_err(FleetError::pg("recording alerts: commit"))?;
            Ok(out)
        }
        .await;
        if let Err(e) = &r {
            self.forget_on(e);
        }
        r
    }

    /// [`FleetStore::record_batch`] that waits out an outage: while the error is transient (server
    /// down, restarting, unreachable) it reconnects and retries, backing off up to 2 s between tries,
    /// until the batch is stored or `give_up_after` has passed. Safe because recording is idempotent.
    pub async fn record_batch_durable(
        &mut self,
        alerts: &[Alert],
        now_ns: impl Fn() -> i64,
        give_up_after: Option<Duration>,
    ) -> Result<Vec<Recorded>, FleetError> {
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut tries = 0u64;
        loop {
            match self.record_batch(alerts, now_ns()).await {
                Ok(r) => {
                    if tries > 0 {
                        tracing::info!(
                            tries,
                            alerts = alerts.len(),
                            "fleet alert store reachable again; alerts recorded"
                        );
                    }
                    return Ok(r);
                }
                Err(e) if e.is_transient() => {
                    if give_up_after.is_some_and(|g| start.elapsed() >= g) {
                        return Err(e);
                    }
                    if tries == 0 {
                        tracing::warn!(error = %e, alerts = alerts.len(), "fleet alert store unavailable; alerts wait and are retried");
                    }
                    tries += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Alerts matching `filter`, newest first (by id), or oldest first after `after_id`.
    pub async fn list(&mut self, filter: &AlertFilter) -> Result<Vec<StoredAlert>, FleetError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE true");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut push = |sql: &mut String, cond: &str, v: Box<dyn ToSql + Sync + Send>| {
            args.push(v);
            sql.push_str(&cond.replace("$?", &format!("${}", args.len())));
        };
        if let Some(s) = filter.status {
            push(
                &mut sql,
                " AND status = $?",
                Box::new(s.as_str().to_string()),
            );
        }
        if let Some(s) = filter.severity {
            push(&mut sql, " AND severity >= $?", Box::new(severity_code(s)));
        }
        if let Some(r) = &filter.rule {
            push(
                &mut sql,
                " AND (rule_id = $? OR rule_name = $?)",
                Box::new(r.clone()),
            );
        }
        if let Some(h) = &filter.host {
            push(&mut sql, " AND host = $?", Box::new(h.clone()));
        }
        if let Some(src) = &filter.source {
            push(&mut sql, " AND source = $?", Box::new(src.clone()));
        }
        if let Some(c) = &filter.container {
            if AlertFilter::container_is_prefix(c) {
                push(
                    &mut sql,
                    " AND (container_name = $? OR starts_with(container_id, $?))",
                    Box::new(c.clone()),
                );
            } else {
                push(
                    &mut sql,
                    " AND (container_name = $? OR container_id = $?)",
                    Box::new(c.clone()),
                );
            }
        }
        if let Some(n) = &filter.namespace {
            push(&mut sql, " AND k8s_namespace = $?", Box::new(n.clone()));
        }
        if let Some(t) = filter.since_ns {
            push(&mut sql, " AND last_seen_ns >= $?", Box::new(t));
        }
        if let Some(id) = filter.after_id {
            push(&mut sql, " AND id > $? ORDER BY id ASC", Box::new(id));
        } else {
            sql.push_str(" ORDER BY id DESC");
        }
        push(
            &mut sql,
            " LIMIT $?",
            Box::new(i64::from(
                filter.limit.unwrap_or(AlertFilter::DEFAULT_LIMIT),
            )),
        );
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let r = async {
            let client = self.client().await?;
            client
                .query(&sql, &params)
                .await
                .map_err(FleetError::pg("listing alerts"))
        }
        .await;
        match r {
            Ok(rows) => rows.iter().map(decode_alert).collect(),
            Err(e) => {
                self.forget_on(&e);
                Err(e)
            }
        }
    }

    /// One alert with its evidence and history.
    pub async fn get(&mut self, id: i64) -> Result<AlertDetail, FleetError> {
        let client = self.client().await?;
        get_in(&*client, id).await
    }

    /// Changes an alert's status once for the whole fleet, and records who did it, when and why.
    pub async fn set_status(
        &mut self,
        id: i64,
        status: Status,
        actor: &str,
        reason: &str,
        now_ns: i64,
    ) -> Result<StoredAlert, FleetError> {
        let client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(FleetError::pg("changing a status: begin"))?;
        let from: String = tx
            .query_opt("SELECT status FROM alerts WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(FleetError::pg("changing a status"))?
            .ok_or(FleetError::NotFound(id))?
            .get(0);
        tx.execute(
            "UPDATE alerts SET status = $2, updated_ns = $3 WHERE id = $1",
            &[&id, &status.as_str(), &now_ns],
        )
        .await
        .map_err(FleetError::pg("changing a status"))?;
        tx.execute(
            "INSERT INTO history (alert_id, at_ns, actor, from_status, to_status, reason) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id, &now_ns, &actor, &from, &status.as_str(), &reason],
        )
        .await
        .map_err(FleetError::pg("recording a status change"))?;
        let detail = get_in(&tx, id).await?;
        tx.commit()
            .await
            .map_err(FleetError::pg("changing a status: commit"))?;
        Ok(detail.alert)
    }

    /// Deletes alerts last seen before the configured age, then the oldest alerts beyond the
    /// configured count. Their evidence, history and sightings go with them.
    pub async fn apply_retention(&mut self, now_ns: i64) -> Result<RetentionReport, FleetError> {
        let (max_age_days, max_alerts) = (self.cfg.max_age_days, self.cfg.max_alerts);
        let client = self.client().await?;
        let mut report = RetentionReport::default();
        if max_age_days > 0 {
            let age = i64::try_from(max_age_days)
                .unwrap_or(i64::MAX)
                .saturating_mul(86_400_000_000_000);
            let cutoff = now_ns.saturating_sub(age);
            report.deleted_by_age = client
                .execute("DELETE FROM alerts WHERE last_seen_ns < $1", &[&cutoff])
                .await
                .map_err(FleetError::pg("retention by age"))?;
        }
        if max_alerts > 0 {
            let max = i64::try_from(max_alerts).unwrap_or(i64::MAX);
            report.deleted_by_count = client
                .execute(
                    "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts ORDER BY last_seen_ns DESC, id DESC OFFSET $1)",
                    &[&max],
                )
                .await
                .map_err(FleetError::pg("retention by count"))?;
        }
        Ok(report)
    }

    /// Counts and sizes.
    pub async fn stats(&mut self) -> Result<StoreStats, FleetError> {
        let mut s = StoreStats {
            path: redacted_url(&self.cfg.url),
            engine: "postgresql".to_string(),
            ..StoreStats::default()
        };
        let client = self.client().await?;
        for row in client
            .query("SELECT status, count(*) FROM alerts GROUP BY status", &[])
            .await
            .map_err(FleetError::pg("counting alerts"))?
        {
            let status: String = row.get(0);
            s.count(&status, u64::try_from(row.get::<_, i64>(1)).unwrap_or(0));
        }
        let used: i64 = client
            .query_one(
                "SELECT (pg_total_relation_size('alerts') + pg_total_relation_size('evidence')
                       + pg_total_relation_size('history') + pg_total_relation_size('sightings'))::bigint",
                &[],
            )
            .await
            .map_err(FleetError::pg("measuring the store"))?
            .get(0);
        s.used_bytes = u64::try_from(used).unwrap_or(0);
        s.file_bytes = s.used_bytes;
        s.schema_version = self.schema_version().await?;
        Ok(s)
    }
}

async fn record_in(
    tx: &Transaction<'_>,
    cfg: &PostgresConfig,
    a: &Alert,
    now_ns: i64,
) -> Result<Recorded, tokio_postgres::Error> {
    let key = dedup_key(a);
    let uniq = uniqueness_key(a);
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&alert_lock_key(&a.rule_id, &key)],
    )
    .await?;
    if let Some(row) = tx
        .query_opt(
            "SELECT a.id, a.status, a.count FROM sightings s JOIN alerts a ON a.id = s.alert_id WHERE s.uniq_key = $1",
            &[&uniq],
        )
        .await?
    {
        let status: String = row.get(1);
        return Ok(Recorded {
            id: row.get(0),
            new: false,
            duplicate: true,
            count: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
            status: status.parse().unwrap_or(Status::Open),
        });
    }
    let window = i64::try_from(cfg.dedup_window_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000_000);
    let window_start = a.timestamp_ns.saturating_sub(window);
    let max_ev = i32::try_from(cfg.max_evidence).unwrap_or(i32::MAX);
    let first = a.first_event_ns.min(a.timestamp_ns);
    let existing = tx
        .query_opt(
            "SELECT id, status FROM alerts
             WHERE rule_id = $1 AND dedup_key = $2
               AND (status = 'suppressed' OR (status IN ('open', 'acknowledged') AND last_seen_ns >= $3))
             ORDER BY id DESC LIMIT 1",
            &[&a.rule_id, &key, &window_start],
        )
        .await?;
    let recorded = if let Some(row) = existing {
        let id: i64 = row.get(0);
        let status: String = row.get(1);
        let count: i64 = tx
            .query_one(
                "UPDATE alerts SET count = count + 1, last_seen_ns = GREATEST(last_seen_ns, $2),
                 first_seen_ns = LEAST(first_seen_ns, $3), updated_ns = $4 WHERE id = $1 RETURNING count",
                &[&id, &a.timestamp_ns, &first, &now_ns],
            )
            .await?
            .get(0);
        let have: i64 = tx
            .query_one("SELECT count(*) FROM evidence WHERE alert_id = $1", &[&id])
            .await?
            .get(0);
        insert_evidence(
            tx,
            id,
            i32::try_from(have).unwrap_or(max_ev),
            max_ev,
            &a.evidence,
        )
        .await?;
        Recorded {
            id,
            new: false,
            duplicate: false,
            count: u64::try_from(count).unwrap_or(0),
            status: status.parse().unwrap_or(Status::Open),
        }
    } else {
        let attack = serde_json::to_value(&a.attack).unwrap_or(serde_json::Value::Null);
        let settings = serde_json::Value::Object(a.settings.clone());
        let join_keys = serde_json::Value::Array(a.join_keys.clone());
        let risk = i32::try_from(a.risk_score).unwrap_or(i32::MAX);
        let ctr = container_of(a);
        let source = source_of(a);
        let id: i64 = tx
            .query_one(
                "INSERT INTO alerts (rule_id, rule_name, dedup_key, severity, risk_score, status, first_seen_ns,
                 last_seen_ns, created_ns, updated_ns, count, host, user_name, process, attack, reason, settings, join_keys,
                 container_id, container_name, container_image, k8s_namespace, k8s_pod, source)
                 VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $8, 1, $9, $10, $11, $12, $13, $14, $15,
                 $16, $17, $18, $19, $20, $21) RETURNING id",
                &[
                    &a.rule_id,
                    &a.rule_name,
                    &key,
                    &severity_code(a.severity),
                    &risk,
                    &first,
                    &a.timestamp_ns,
                    &now_ns,
                    &a.host,
                    &a.user,
                    &a.process,
                    &attack,
                    &a.reason,
                    &settings,
                    &join_keys,
                    &ctr.as_ref().map(|c| c.id.clone()),
                    &ctr.as_ref().and_then(|c| c.name.clone()),
                    &ctr.as_ref().and_then(|c| c.image.clone()),
                    &ctr.as_ref().and_then(|c| c.namespace.clone()),
                    &ctr.as_ref().and_then(|c| c.pod.clone()),
                    &source,
                ],
            )
            .await?
            .get(0);
        tx.execute(
            "INSERT INTO history (alert_id, at_ns, actor, from_status, to_status, reason) VALUES ($1, $2, 'sensor', NULL, 'open', $3)",
            &[&id, &now_ns, &format!("raised by rule {}", a.rule_id)],
        )
        .await?;
        insert_evidence(tx, id, 0, max_ev, &a.evidence).await?;
        Recorded {
            id,
            new: true,
            duplicate: false,
            count: 1,
            status: Status::Open,
        }
    };
    tx.execute(
        "INSERT INTO sightings (uniq_key, alert_id, at_ns) VALUES ($1, $2, $3)",
        &[&uniq, &recorded.id, &now_ns],
    )
    .await?;
    Ok(recorded)
}

async fn insert_evidence(
    tx: &Transaction<'_>,
    id: i64,
    have: i32,
    max: i32,
    evidence: &[serde_json::Value],
) -> Result<(), tokio_postgres::Error> {
    if have >= max || evidence.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare("INSERT INTO evidence (alert_id, seq, event) VALUES ($1, $2, $3)")
        .await?;
    for (seq, ev) in (have..max).zip(evidence) {
        tx.execute(&stmt, &[&id, &seq, ev]).await?;
    }
    Ok(())
}

async fn get_in<C: GenericClient>(client: &C, id: i64) -> Result<AlertDetail, FleetError> {
    let row = client
        .query_opt(
            &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(FleetError::pg("reading an alert"))?
        .ok_or(FleetError::NotFound(id))?;
    let alert = decode_alert(&row)?;
    let evidence = client
        .query(
            "SELECT event FROM evidence WHERE alert_id = $1 ORDER BY seq",
            &[&id],
        )
        .await
        .map_err(FleetError::pg("reading evidence"))?
        .iter()
        .map(|r| r.get::<_, serde_json::Value>(0))
        .collect();
    let history = client
        .query(
            "SELECT at_ns, actor, from_status, to_status, reason FROM history WHERE alert_id = $1 ORDER BY at_ns, id",
            &[&id],
        )
        .await
        .map_err(FleetError::pg("reading history"))?
        .iter()
        .map(|r| {
            let bad = |detail: String| FleetError::BadRow { id, detail };
            let from: Option<String> = r.get(2);
            let to: String = r.get(3);
            Ok(HistoryEntry {
                at_ns: r.get(0),
                actor: r.get(1),
                from: from.map(|f| f.parse()).transpose().map_err(bad)?,
                to: to.parse().map_err(bad)?,
                reason: r.get(4),
            })
        })
        .collect::<Result<Vec<_>, FleetError>>()?;
    Ok(AlertDetail {
        alert,
        evidence,
        history,
    })
}

fn decode_alert(r: &Row) -> Result<StoredAlert, FleetError> {
    let id: i64 = r.get(0);
    let bad = |detail: String| FleetError::BadRow { id, detail };
    let severity: i16 = r.get(3);
    let status: String = r.get(5);
    let attack: serde_json::Value = r.get(12);
    let settings: serde_json::Value = r.get(14);
    let join_keys: serde_json::Value = r.get(15);
    let container_id: Option<String> = r.get(18);
    Ok(StoredAlert {
        id,
        rule_id: r.get(1),
        rule_name: r.get(2),
        severity: severity_from_code(i64::from(severity))
            .ok_or_else(|| bad(format!("severity {severity}")))?,
        risk_score: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
        status: status.parse().map_err(bad)?,
        first_seen_ns: r.get(6),
        last_seen_ns: r.get(7),
        count: u64::try_from(r.get::<_, i64>(8)).unwrap_or(0),
        host: r.get(9),
        user: r.get(10),
        process: r.get(11),
        source: r.get(23),
        attack: serde_json::from_value(attack).map_err(|e| bad(format!("attack: {e}")))?,
        reason: r.get(13),
        settings: serde_json::from_value(settings).map_err(|e| bad(format!("settings: {e}")))?,
        join_keys: serde_json::from_value(join_keys).map_err(|e| bad(format!("join_keys: {e}")))?,
        container: container_id.map(|id| alert_store::ContainerSummary {
            id,
            name: r.get(19),
            image: r.get(20),
            namespace: r.get(21),
            pod: r.get(22),
        }),
        created_ns: r.get(16),
        updated_ns: r.get(17),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use correlator::{AttackRef, Severity};

    fn alert(evidence: Vec<serde_json::Value>) -> Alert {
        Alert {
            rule_id: "r1".into(),
            rule_name: "rule one".into(),
            severity: Severity::High,
            risk_score: 73,
            attack: AttackRef::default(),
            timestamp_ns: 10,
            first_event_ns: 5,
            join_keys: vec![],
            host: Some("h".into()),
            user: None,
            process: None,
            settings: serde_json::Map::new(),
            reason: String::new(),
            evidence,
        }
    }

    #[test]
    fn uniqueness_follows_evidence_identity() {
        let a = alert(vec![
            serde_json::json!({"a": 1}),
            serde_json::json!({"b": 2}),
        ]);
        let b = alert(vec![
            serde_json::json!({"a": 1}),
            serde_json::json!({"b": 2}),
        ]);
        let c = alert(vec![
            serde_json::json!({"a": 1}),
            serde_json::json!({"b": 3}),
        ]);
        assert_eq!(uniqueness_key(&a), uniqueness_key(&b));
        assert_ne!(uniqueness_key(&a), uniqueness_key(&c));
        // A fleet id wins over content: two identical events from two messages are two events.
        let d = alert(vec![
            serde_json::json!({"a": 1, "sensor": {"fleet_id": "e1:1"}}),
        ]);
        let e = alert(vec![
            serde_json::json!({"a": 1, "sensor": {"fleet_id": "e1:2"}}),
        ]);
        assert_ne!(uniqueness_key(&d), uniqueness_key(&e));
        assert!(event_identity(&d.evidence[0]).starts_with("id:e1:1"));
    }

    #[test]
    fn passwords_never_reach_the_status() {
        assert_eq!(
            redacted_url("postgresql://sensor:hunter2@db:5432/sensor"),
            "postgresql://sensor@db:5432/sensor"
        );
        assert_eq!(
            redacted_url("postgresql://sensor@db/sensor"),
            "postgresql://sensor@db/sensor"
        );
        assert_eq!(
            redacted_url("host=db user=sensor password=hunter2 dbname=sensor"),
            "host=db user=sensor password=*** dbname=sensor"
        );
    }

    #[test]
    fn lock_keys_are_never_the_migration_lock() {
        for i in 0..1000 {
            let k = alert_lock_key(&format!("r{i}"), "k");
            assert!(k >= 0);
            assert_ne!(k, schema::MIGRATION_LOCK);
        }
    }
}
