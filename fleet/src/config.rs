//! The `[fleet]` section of the daemon's configuration file.
//!
//! Architecture Invariant: the default is `role = "standalone"`, which is today's single-host daemon:
//! no bus, no PostgreSQL, nothing of this crate runs. Secrets are never written in the config file
//! itself: passwords and nkey seeds are read from files named here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::FleetError;

/// What this process is in a fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// One host on its own: SQLite store, no bus (today's behaviour).
    #[default]
    Standalone,
    /// A host's daemon that also publishes its events and alerts to the bus.
    Edge,
    /// Stateless network listeners that publish what agents send to the bus.
    Gateway,
    /// A correlator of the fleet's events, writing alerts to PostgreSQL.
    Central,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Edge => "edge",
            Role::Gateway => "gateway",
            Role::Central => "central",
        }
    }

    /// Whether this role talks to the bus.
    pub fn uses_bus(self) -> bool {
        self != Role::Standalone
    }

    /// Whether this role talks to PostgreSQL.
    pub fn uses_postgres(self) -> bool {
        self == Role::Central
    }
}

/// `[fleet]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    pub role: Role,
    /// How many partitions the event stream is cut into (by host). Every edge, gateway and central
    /// node of one fleet must use the same number: it decides which subject an event goes to.
    pub partitions: u32,
    /// The fields whose first present value is an event's partition key (see
    /// [`crate::partition::partition_key_by`]). Default: the host (`host.id`, `host.name`,
    /// `agent.id`). A cross-host rule sees only the events of one partition: a fleet with rules
    /// joining hosts on a user puts `user.id` (or `user.name`) first. Same on every node.
    pub partition_by: Vec<String>,
    pub nats: NatsConfig,
    pub postgres: PostgresConfig,
}

impl Default for FleetConfig {
    fn default() -> FleetConfig {
        FleetConfig {
            role: Role::Standalone,
            partitions: 16,
            partition_by: crate::partition::DEFAULT_KEY
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
            nats: NatsConfig::default(),
            postgres: PostgresConfig::default(),
        }
    }
}

/// `[fleet.nats]`: the bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs, e.g. `tls://nats-0.nats:4222`; several for a cluster.
    pub urls: Vec<String>,
    /// User name for user/password authentication (with `password_file`).
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// An nkey seed file (`SU...`), the alternative to user/password.
    pub nkey_seed_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// Prefix of the stream subjects and names: `<prefix>.events.<partition>`.
    pub subject_prefix: String,
    /// How long JetStream remembers message ids to drop a republished message (seconds).
    pub dedup_window_secs: u64,
    /// How many journal records the edge reads per round, packed into batches of up to 256 events
    /// per partition, before waiting for their acknowledgements.
    pub publish_window: usize,
    /// How long a round that found fewer than `publish_window` records waits for more (ms): longer
    /// makes fuller batches (fewer bus messages) from quiet edges, and adds up to that much latency.
    pub publish_linger_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> NatsConfig {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            user: None,
            password_file: None,
            nkey_seed_file: None,
            tls: None,
            subject_prefix: "sensor".to_string(),
            dedup_window_secs: 600,
            publish_window: 4096,
            publish_linger_ms: 10,
        }
    }
}

/// `[fleet.postgres]`: the fleet alert store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// A libpq-style URL or key=value string without the password, e.g.
    /// `postgresql://sensor@db.example:5432/sensor`.
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// A repeat of the same rule and key within this many seconds is folded into the open alert.
    pub dedup_window_secs: u64,
    /// Alerts last seen longer ago than this many days are deleted by retention (0: never).
    pub max_age_days: u64,
    /// Most alerts kept; the oldest go first (0: no limit).
    pub max_alerts: u64,
    /// Evidence events kept per alert.
    pub max_evidence: usize,
}

impl Default for PostgresConfig {
    fn default() -> PostgresConfig {
        PostgresConfig {
            url: "postgresql://sensor@127.0.0.1:5432/sensor".to_string(),
            password_file: None,
            tls: None,
            dedup_window_secs: 600,
            max_age_days: 90,
            max_alerts: 0,
            max_evidence: 32,
        }
    }
}

/// TLS to a server: the CA that signs its certificate, and optionally a client certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl FleetConfig {
    /// Checks what serde cannot: counts in range, credentials that go together, TLS off loopback.
    pub fn validate(&self) -> Result<(), FleetError> {
        let bad = |m: String| Err(FleetError::Config(m));
        if self.partitions == 0 || self.partitions > 4096 {
            return bad(format!(
                "fleet.partitions = {} is out of range (1 to 4096)",
                self.partitions
            ));
        }
        if self.partition_by.is_empty() || self.partition_by.iter().any(String::is_empty) {
            return bad(
                "fleet.partition_by must name at least one field, none empty (e.g. [\"host.id\", \"host.name\"])"
                    .to_string(),
            );
        }
        if !self.role.uses_bus() {
            return Ok(());
        }
        let n = &self.nats;
        if n.urls.is_empty() {
            return bad("fleet.nats.urls is empty: name at least one server".to_string());
        }
        if n.user.is_some() != n.password_file.is_some() {
            return bad("fleet.nats.user and fleet.nats.password_file go together".to_string());
        }
        if n.user.is_some() && n.nkey_seed_file.is_some() {
            return bad(
                "fleet.nats: choose user/password_file or nkey_seed_file, not both".to_string(),
            );
        }
        if n.subject_prefix.is_empty() || n.subject_prefix.contains(['.', '*', '>', ' ']) {
            return bad(format!(
                "fleet.nats.subject_prefix `{}` must be one subject token (no `.`, `*`, `>` or space)",
                n.subject_prefix
            ));
        }
        if n.publish_window == 0 {
            return bad("fleet.nats.publish_window must be at least 1".to_string());
        }
        for u in &n.urls {
            if n.tls.is_none() && !is_loopback_url(u) {
                return bad(format!(
                    "fleet.nats.urls: `{u}` is not on loopback and fleet.nats.tls is not set; plaintext is allowed only on loopback"
                ));
            }
        }
        if self.role.uses_postgres() {
            let p = &self.postgres;
            if p.tls.is_none() && !is_loopback_url(&p.url) {
                return bad(format!(
                    "fleet.postgres.url: `{}` is not on loopback and fleet.postgres.tls is not set; plaintext is allowed only on loopback",
                    p.url
                ));
            }
            if p.max_evidence == 0 {
                return bad("fleet.postgres.max_evidence must be at least 1".to_string());
            }
        }
        Ok(())
    }
}

/// Whether a URL (`scheme://[user@]host[:port][/...]`) or `host=...` string names a loopback host.
pub fn is_loopback_url(url: &str) -> bool {
    let host = if let Some(i) = url.find("host=") {
        url[i + 5..].split_whitespace().next().unwrap_or("")
    } else {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let hostport = rest.split(['/', '?']).next().unwrap_or("");
        if let Some(v6) = hostport.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            hostport.split(':').next().unwrap_or("")
        }
    };
    host == "localhost"
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FleetConfig, String> {
        toml::from_str::<FleetConfig>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn default_is_standalone_and_valid() {
        let c = parse("").unwrap_or_default();
        assert_eq!(c, FleetConfig::default());
        assert_eq!(c.role, Role::Standalone);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn edge_with_password_parses() {
        let c = parse(
            r#"role = "edge"
               partitions = 8
               [nats]
               urls = ["nats://127.0.0.1:4222"]
               user = "edge"
               password_file = "/etc/sensor/nats.pw"
            "#,
        );
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.role, Role::Edge);
        assert_eq!(c.partitions, 8);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("role = \"boss\"").err().unwrap_or_default();
        assert!(e.contains("boss"), "{e}");
        let e = parse("[nats]\nurl = \"x\"").err().unwrap_or_default();
        assert!(e.contains("url"), "{e}");
        let mut c = FleetConfig {
            role: Role::Edge,
            ..FleetConfig::default()
        };
        c.nats.urls = vec!["nats://nats.example:4222".into()];
        let e = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("plaintext") && e.contains("nats.example"), "{e}");
        c.nats.urls = vec!["nats://127.0.0.1:4222".into()];
        c.nats.user = Some("u".into());
        let e = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("password_file"), "{e}");
        c.nats.user = None;
        c.partitions = 0;
        let e = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("fleet.partitions"), "{e}");
    }

    #[test]
    fn loopback_urls() {
        for u in [
            "nats://127.0.0.1:4222",
            "postgresql://sensor@localhost/sensor",
            "postgresql://u@[::1]:5432/db",
            "host=127.0.0.1 port=5432 user=x",
            "host=/run/postgresql user=x",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in [
            "tls://nats.example:4222",
            "postgresql://u@10.0.0.1/db",
            "host=db.example user=x",
        ] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }
}
