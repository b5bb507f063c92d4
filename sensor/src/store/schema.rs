//! The versioned schema. `PRAGMA user_version` holds the number of migrations applied; each entry of
//! [`MIGRATIONS`] moves the schema one version up and runs in its own transaction.
//!
//! Architecture Invariant: migrations are append-only. A released entry is never edited; a change to
//! the schema is a new entry at the end.

pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: alerts, their evidence, their status history.
    r"
    CREATE TABLE alerts (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        rule_id       TEXT    NOT NULL,
        rule_name     TEXT    NOT NULL,
        dedup_key     TEXT    NOT NULL,
        severity      INTEGER NOT NULL,
        risk_score    INTEGER NOT NULL,
        status        TEXT    NOT NULL CHECK (status IN ('open', 'acknowledged', 'closed', 'suppressed')),
        first_seen_ns INTEGER NOT NULL,
        last_seen_ns  INTEGER NOT NULL,
        created_ns    INTEGER NOT NULL,
        updated_ns    INTEGER NOT NULL,
        count         INTEGER NOT NULL DEFAULT 1,
        host          TEXT,
        user_name     TEXT,
        process       TEXT,
        attack        TEXT    NOT NULL,
        reason        TEXT    NOT NULL,
        settings      TEXT    NOT NULL,
        join_keys     TEXT    NOT NULL
    );
    CREATE INDEX alerts_dedup ON alerts (rule_id, dedup_key, last_seen_ns);
    CREATE INDEX alerts_last_seen ON alerts (last_seen_ns);
    CREATE TABLE evidence (
        alert_id INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        seq      INTEGER NOT NULL,
        event    TEXT    NOT NULL,
        PRIMARY KEY (alert_id, seq)
    );
    CREATE TABLE history (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id    INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        at_ns       INTEGER NOT NULL,
        actor       TEXT    NOT NULL,
        from_status TEXT,
        to_status   TEXT    NOT NULL,
        reason      TEXT    NOT NULL
    );
    ",
    // v2: history looked up per alert; file sources remember how far they read.
    r"
    CREATE INDEX history_alert ON history (alert_id, at_ns);
    CREATE TABLE source_offsets (
        name   TEXT PRIMARY KEY,
        inode  INTEGER NOT NULL,
        offset INTEGER NOT NULL
    );
    ",
    // v3: sources that resume from a position of their own (network ingest: its spool consumer's
    // position, JSON), committed in the same transaction as the alerts of the events before it.
    r"
    CREATE TABLE source_positions (
        name     TEXT PRIMARY KEY,
        position TEXT NOT NULL
    );
    ",
    // v4: the container and Kubernetes pod an alert's evidence names (`alerts list --container,
    // --namespace`).
    r"
    ALTER TABLE alerts ADD COLUMN container_id TEXT;
    ALTER TABLE alerts ADD COLUMN container_name TEXT;
    ALTER TABLE alerts ADD COLUMN container_image TEXT;
    ALTER TABLE alerts ADD COLUMN k8s_namespace TEXT;
    ALTER TABLE alerts ADD COLUMN k8s_pod TEXT;
    CREATE INDEX alerts_container ON alerts (container_id);
    CREATE INDEX alerts_namespace ON alerts (k8s_namespace);
    ",
    // v5: what reported an alert's evidence (`alerts list --source`: `event.module`, else
    // `agent.type`), as in the fleet store. Alerts stored before it have none.
    r"
    ALTER TABLE alerts ADD COLUMN source TEXT;
    CREATE INDEX alerts_source ON alerts (source);
    ",
];

/// The schema version this build writes.
pub(crate) fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}
