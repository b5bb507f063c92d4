//! The versioned schema of the fleet alert store. `fleet_schema` holds one row per migration applied;
//! each entry of [`MIGRATIONS`] moves the schema one version up and runs in its own transaction, under
//! an advisory lock so that two central nodes starting together migrate once.
//!
//! Architecture Invariant: migrations are append-only. A released entry is never edited; a change to
//! the schema is a new entry at the end.

/// The advisory lock key taken while migrating (any constant the alert locks cannot hit: those
/// are hashes with the top bit clear, see `alert_lock_key`).
pub(crate) const MIGRATION_LOCK: i64 = -0x5e45_0f1e_e700_0001;

pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: alerts, their evidence, their status history (as the SQLite store), and the sightings that
    // make a redelivery idempotent: one row per (rule, evidence identities) ever recorded.
    r"
    CREATE TABLE alerts (
        id            BIGSERIAL PRIMARY KEY,
        rule_id       TEXT     NOT NULL,
        rule_name     TEXT     NOT NULL,
        dedup_key     TEXT     NOT NULL,
        severity      SMALLINT NOT NULL CHECK (severity BETWEEN 1 AND 4),
        risk_score    INTEGER  NOT NULL,
        status        TEXT     NOT NULL CHECK (status IN ('open', 'acknowledged', 'closed', 'suppressed')),
        first_seen_ns BIGINT   NOT NULL,
        last_seen_ns  BIGINT   NOT NULL,
        created_ns    BIGINT   NOT NULL,
        updated_ns    BIGINT   NOT NULL,
        count         BIGINT   NOT NULL DEFAULT 1,
        host          TEXT,
        user_name     TEXT,
        process       TEXT,
        attack        JSONB    NOT NULL,
        reason        TEXT     NOT NULL,
        settings      JSONB    NOT NULL,
        join_keys     JSONB    NOT NULL
    );
    CREATE INDEX alerts_dedup ON alerts (rule_id, dedup_key, last_seen_ns);
    CREATE INDEX alerts_last_seen ON alerts (last_seen_ns);
    CREATE INDEX alerts_host ON alerts (host);
    CREATE TABLE evidence (
        alert_id BIGINT  NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        seq      INTEGER NOT NULL,
        event    JSON    NOT NULL,
        PRIMARY KEY (alert_id, seq)
    );
    CREATE TABLE history (
        id          BIGSERIAL PRIMARY KEY,
        alert_id    BIGINT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        at_ns       BIGINT NOT NULL,
        actor       TEXT   NOT NULL,
        from_status TEXT,
        to_status   TEXT   NOT NULL,
        reason      TEXT   NOT NULL
    );
    CREATE INDEX history_alert ON history (alert_id, at_ns);
    CREATE TABLE sightings (
        uniq_key TEXT   PRIMARY KEY,
        alert_id BIGINT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        at_ns    BIGINT NOT NULL
    );
    CREATE INDEX sightings_alert ON sightings (alert_id);
    ",
    // v2: the columns the SQLite store has beyond v1 (one alert model): the container and Kubernetes
    // pod the evidence names, and what reported it (`event.module`, else `agent.type`), for
    // `alerts list --container/--namespace/--source`. Alerts stored before it have none.
    r"
    ALTER TABLE alerts ADD COLUMN container_id TEXT;
    ALTER TABLE alerts ADD COLUMN container_name TEXT;
    ALTER TABLE alerts ADD COLUMN container_image TEXT;
    ALTER TABLE alerts ADD COLUMN k8s_namespace TEXT;
    ALTER TABLE alerts ADD COLUMN k8s_pod TEXT;
    ALTER TABLE alerts ADD COLUMN source TEXT;
    CREATE INDEX alerts_container ON alerts (container_id);
    CREATE INDEX alerts_namespace ON alerts (k8s_namespace);
    CREATE INDEX alerts_source ON alerts (source);
    ",
];

/// The schema version this build writes.
pub(crate) fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}
