//! The daemon's configuration file: one TOML file with sections `[kernel]`, `[ingest]`, `[rules]`,
//! `[store]`, `[api]`, `[outputs]`, `[metrics]`, `[[sources.file]]`, `[privileges]` and `[fleet]`.
//!
//! Architecture Invariant: the embedded default ([`DEFAULT_TOML`]) is the documentation of every key
//! and parses to [`Config::default`]; a test holds them equal. Unknown keys are errors naming the key.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// The documented default configuration, printed by `sensor config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A span of time written as `"500ms"`, `"30s"`, `"10m"`, `"12h"`, `"30d"` (or a number of seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn as_nanos_i64(self) -> i64 {
        i64::try_from(self.0.as_nanos()).unwrap_or(i64::MAX)
    }

    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (e.g. \"30s\", \"10m\", \"7d\")"))?;
        let mult = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "" | "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 7.0 * 86400.0,
            u => {
                return Err(format!(
                    "`{s}`: unknown duration unit `{u}` (ns, us, ms, s, m, h, d, w)"
                ))
            }
        };
        std::time::Duration::try_from_secs_f64(n * mult)
            .map(Duration)
            .map_err(|e| format!("`{s}`: {e}"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let secs = self.0.as_secs();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if secs.is_multiple_of(86400) && secs > 0 {
            write!(f, "{}d", secs / 86400)
        } else if secs.is_multiple_of(3600) && secs > 0 {
            write!(f, "{}h", secs / 3600)
        } else if secs.is_multiple_of(60) && secs > 0 {
            write!(f, "{}m", secs / 60)
        } else {
            write!(f, "{secs}s")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration(std::time::Duration::from_secs(n))),
            Raw::Text(s) => Duration::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A size in bytes written as `"512KiB"`, `"64MiB"`, `"1GiB"` (or `"10MB"`, or a number of bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (e.g. \"64MiB\", \"1GiB\")"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            u => {
                return Err(format!(
                    "`{s}`: unknown size unit `{u}` (B, KiB, MiB, GiB, kB, MB, GB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n > 0 && n.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", n >> 30)
        } else if n > 0 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n > 0 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The typed `[ingest]` section (see [`Config::ingest_config`]).
#[derive(Clone, Debug)]
pub struct IngestSection {
    pub listeners: ingest::IngestConfig,
    pub spool_dir: PathBuf,
    pub spool: ingest::SpoolLimits,
    pub group_idle_secs: u64,
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub state_dir: PathBuf,
    /// The kernel sensor: `enabled` plus [`sensor_kernel::KernelConfig`] (see [`Config::kernel_config`]).
    pub kernel: toml::Table,
    /// Network ingest: `enabled` plus [`IngestSection`] (see [`Config::ingest_config`]).
    pub ingest: toml::Table,
    pub rules: RulesConfig,
    pub store: StoreSection,
    pub api: ApiConfig,
    pub outputs: OutputsConfig,
    pub metrics: MetricsConfig,
    pub sources: SourcesConfig,
    pub privileges: PrivilegesConfig,
    /// `[fleet]`: the role of this process in a fleet (default `standalone`: none; docs/fleet.md).
    pub fleet: fleet::FleetConfig,
}

/// `[privileges]`: the user the daemon becomes once the kernel programs are attached and every
/// listener is bound (see `sensor::daemon::privilege` and docs/operations.md, "Security model").
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivilegesConfig {
    /// A user name or numeric uid. Unset: `sensor` when that user exists, else the daemon stays root
    /// and says so. `"root"` (or `"0"`): never drop (not recommended with network ingest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group (name or gid); unset: the user's primary group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        let mut kernel = toml::Table::new();
        kernel.insert("enabled".into(), toml::Value::Boolean(true));
        let mut ingest = toml::Table::new();
        ingest.insert("enabled".into(), toml::Value::Boolean(false));
        let state_dir = PathBuf::from("/var/lib/sensor");
        Config {
            rules: RulesConfig {
                state_file: Some(state_dir.join("analytics-state.json")),
                ..RulesConfig::default()
            },
            state_dir,
            kernel,
            ingest,
            store: StoreSection::default(),
            api: ApiConfig::default(),
            outputs: OutputsConfig::default(),
            metrics: MetricsConfig::default(),
            sources: SourcesConfig::default(),
            privileges: PrivilegesConfig::default(),
            fleet: fleet::FleetConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub shipped: bool,
    pub paths: Vec<PathBuf>,
    pub disabled: Vec<String>,
    pub lateness: Duration,
    /// Bytes of events one EQL sequence rule may hold in pending partial matches; past it the
    /// oldest partials are dropped and counted (`sensor_pending_shed`).
    pub max_pending_bytes: ByteSize,
    /// Per-analytic settings, passed to the rule loader as they are.
    pub settings: toml::Table,
    /// Where detector state (learned baselines) is kept: `<state_dir>/analytics-state.json`.
    #[serde(skip)]
    pub state_file: Option<PathBuf>,
}

impl Default for RulesConfig {
    fn default() -> RulesConfig {
        RulesConfig {
            shipped: true,
            paths: Vec::new(),
            disabled: Vec::new(),
            lateness: Duration(std::time::Duration::from_secs(2)),
            max_pending_bytes: ByteSize(64 << 20),
            settings: toml::Table::new(),
            state_file: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub path: PathBuf,
    pub dedup_window: Duration,
    pub max_age: Duration,
    pub max_size: ByteSize,
    pub max_evidence: usize,
    pub retention_interval: Duration,
}

impl Default for StoreSection {
    fn default() -> StoreSection {
        StoreSection {
            path: PathBuf::new(),
            dedup_window: Duration(std::time::Duration::from_secs(600)),
            max_age: Duration(std::time::Duration::from_secs(90 * 86400)),
            max_size: ByteSize(1 << 30),
            max_evidence: 32,
            retention_interval: Duration(std::time::Duration::from_secs(3600)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub socket: PathBuf,
    pub allow_uids: Vec<u32>,
    /// Octal file mode of the socket, as a string (`"0600"`).
    pub socket_mode: String,
    /// Connections open at once on each of the control socket, `[api.tcp]` and `[metrics]`;
    /// beyond, new ones are closed at once (counted in `sensor_listener_refused_total`).
    pub max_connections: usize,
    /// Connections open at once from one address on `[api.tcp]` and `[metrics]` (0: no cap).
    pub max_connections_per_peer: usize,
    /// Time allowed for a client to send a request's headers (also closes idle keep-alive
    /// connections), on every control API and metrics listener.
    pub header_timeout: Duration,
    /// Time allowed for the TLS handshake on `[api.tcp]`.
    pub handshake_timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpApiConfig>,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            socket: PathBuf::from("/run/sensor/control.sock"),
            allow_uids: Vec::new(),
            socket_mode: "0600".into(),
            max_connections: 256,
            max_connections_per_peer: 32,
            header_timeout: Duration(std::time::Duration::from_secs(10)),
            handshake_timeout: Duration(std::time::Duration::from_secs(10)),
            tcp: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpApiConfig {
    pub listen: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub token_file: PathBuf,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    pub stdout: bool,
    pub repeats: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileOutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog: Option<SyslogOutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookOutputConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutputConfig {
    pub path: PathBuf,
    #[serde(default = "default_rotate_size")]
    pub max_size: ByteSize,
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_rotate_size() -> ByteSize {
    ByteSize(100 << 20)
}
fn default_keep() -> u32 {
    5
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogOutputConfig {
    /// `unix:/dev/log` (datagram socket) or `udp:HOST:PORT`.
    pub target: String,
    #[serde(default = "default_app_name")]
    pub app_name: String,
    #[serde(default = "default_facility")]
    pub facility: String,
}

impl SyslogOutputConfig {
    /// `target` parsed.
    pub fn parsed_target(&self) -> Result<SyslogTarget, String> {
        SyslogTarget::parse(&self.target)
    }
    /// `facility` as its RFC 5424 code (`None`: not a facility name).
    pub fn facility_code(&self) -> Option<u8> {
        facility_code(&self.facility)
    }
}

/// Where syslog messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTarget {
    Unix(PathBuf),
    Udp(String),
}

impl SyslogTarget {
    pub fn parse(s: &str) -> Result<SyslogTarget, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("empty socket path".into());
            }
            Ok(SyslogTarget::Unix(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("udp:") {
            if a.rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(format!("`{a}` is not HOST:PORT"));
            }
            Ok(SyslogTarget::Udp(a.to_string()))
        } else {
            Err(format!("`{s}` must be unix:PATH or udp:HOST:PORT"))
        }
    }
}

/// RFC 5424 facility codes by name.
fn facility_code(name: &str) -> Option<u8> {
    let names = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| u8::try_from(i).ok())
}

fn default_app_name() -> String {
    "sensor".into()
}
fn default_facility() -> String {
    "auth".into()
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookOutputConfig {
    pub url: String,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    #[serde(default)]
    pub token_file: PathBuf,
}

fn default_retries() -> u32 {
    5
}
fn default_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            enabled: false,
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    pub file: Vec<FileSourceConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// A file of ECS NDJSON (`-` for standard input).
    pub path: PathBuf,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_true")]
    pub follow: bool,
}

fn default_true() -> bool {
    true
}

impl FileSourceConfig {
    /// The source's name in metrics and status.
    pub fn source_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let f = self.path.file_name().map_or_else(
                || self.path.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            );
            format!("file:{f}")
        })
    }
}

impl Config {
    /// Parses a config from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut cfg = cfg;
        cfg.validate(origin)?;
        cfg.rules.state_file = Some(cfg.state_dir.join("analytics-state.json"));
        Ok(cfg)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// The embedded default.
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_TOML, Path::new("<embedded default>")).unwrap_or_default()
    }

    fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| {
            Err(ConfigError::Invalid {
                path: origin.to_path_buf(),
                message,
            })
        };
        for (section, table) in [("kernel", &self.kernel), ("ingest", &self.ingest)] {
            if let Some(v) = table.get("enabled") {
                if !v.is_bool() {
                    return bad(format!(
                        "[{section}] enabled must be true or false, found {v}"
                    ));
                }
            }
        }
        if let Err(message) = self.kernel_config() {
            return bad(message);
        }
        if let Err(message) = self.ingest_config() {
            return bad(message);
        }
        if self.api.socket.as_os_str().is_empty() {
            return bad("[api] socket must not be empty".into());
        }
        if u32::from_str_radix(self.api.socket_mode.trim_start_matches("0o"), 8)
            .map_or(true, |m| m > 0o777)
        {
            return bad(format!(
                "[api] socket_mode `{}` is not an octal file mode like \"0600\"",
                self.api.socket_mode
            ));
        }
        if let Some(tcp) = &self.api.tcp {
            if tcp.listen.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!(
                    "[api.tcp] listen `{}` is not an address like \"0.0.0.0:7443\"",
                    tcp.listen
                ));
            }
        }
        if self.metrics.enabled && self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "[metrics] listen `{}` is not an address like \"127.0.0.1:9464\"",
                self.metrics.listen
            ));
        }
        if let Some(s) = &self.outputs.syslog {
            if s.parsed_target().is_err() {
                return bad(format!(
                    "[outputs.syslog] target `{}` must be `unix:PATH` or `udp:HOST:PORT`",
                    s.target
                ));
            }
            if s.facility_code().is_none() {
                return bad(format!(
                    "[outputs.syslog] facility `{}` is not an RFC 5424 facility name",
                    s.facility
                ));
            }
        }
        if let Some(w) = &self.outputs.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return bad(format!(
                    "[outputs.webhook] url `{}` must start with http:// or https://",
                    w.url
                ));
            }
        }
        if let Err(e) = self.fleet.validate() {
            return bad(e.to_string());
        }
        let mut names = std::collections::HashSet::new();
        for f in &self.sources.file {
            if !names.insert(f.source_name()) {
                return bad(format!(
                    "[[sources.file]] name `{}` is used twice",
                    f.source_name()
                ));
            }
        }
        Ok(())
    }

    /// The `[kernel]` table as the kernel sensor's typed settings (`enabled` aside).
    pub fn kernel_config(&self) -> Result<sensor_kernel::KernelConfig, String> {
        let mut t = self.kernel.clone();
        t.remove("enabled");
        sensor_kernel::KernelConfig::deserialize(toml::Value::Table(t))
            .map_err(|e| format!("[kernel] {e}"))
    }

    /// The `[ingest]` table as network ingest settings: the listeners, the spool directory
    /// (`spool_dir`, default `<state_dir>/spool`), the spool limits (`[ingest.spool]`) and
    /// `group_idle_secs` (how long an auditd record group may stay open without its closing record).
    pub fn ingest_config(&self) -> Result<IngestSection, String> {
        let mut t = self.ingest.clone();
        t.remove("enabled");
        let spool_dir = match t.remove("spool_dir") {
            None => self.state_dir.join("spool"),
            Some(toml::Value::String(s)) => PathBuf::from(s),
            Some(v) => {
                return Err(format!(
                    "[ingest] spool_dir must be a path string, found {v}"
                ))
            }
        };
        let mut spool = match t.remove("spool") {
            None => ingest::SpoolLimits::default(),
            Some(v) => {
                if v.get("max_record_bytes").is_some() {
                    return Err("[ingest.spool] max_record_bytes: the record limit is set once, as [ingest.limits] max_record_bytes (it counts the record as spooled: line plus envelope)".into());
                }
                ingest::SpoolLimits::deserialize(v).map_err(|e| format!("[ingest.spool] {e}"))?
            }
        };
        let group_idle_secs = match t.remove("group_idle_secs") {
            None => 2,
            Some(toml::Value::Integer(n)) if n > 0 => n.unsigned_abs(),
            Some(v) => {
                return Err(format!(
                    "[ingest] group_idle_secs must be a positive integer, found {v}"
                ))
            }
        };
        let listeners = ingest::IngestConfig::deserialize(toml::Value::Table(t))
            .map_err(|e| format!("[ingest] {e}"))?;
        // One record limit: the edge checks envelope plus line against it, the spool enforces it.
        spool.max_record_bytes = listeners.limits.max_record_bytes;
        let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
        for a in &listeners.agents {
            if let Some(other) = seen.insert(a.token_sha256.trim().to_ascii_lowercase(), &a.id) {
                return Err(format!(
                    "[[ingest.agents]] `{other}` and `{}` have the same token (token_sha256): each agent needs a token of its own, or records could not be told apart",
                    a.id
                ));
            }
        }
        Ok(IngestSection {
            listeners,
            spool_dir,
            spool,
            group_idle_secs,
        })
    }

    /// Whether the kernel sensor is enabled.
    pub fn kernel_enabled(&self) -> bool {
        self.kernel
            .get("enabled")
            .and_then(toml::Value::as_bool)
            .unwrap_or(true)
    }

    /// Whether network ingest is enabled.
    pub fn ingest_enabled(&self) -> bool {
        self.ingest
            .get("enabled")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    }

    /// The alert store path (`store.path`, or `<state_dir>/alerts.db`).
    pub fn store_path(&self) -> PathBuf {
        if self.store.path.as_os_str().is_empty() {
            self.state_dir.join("alerts.db")
        } else {
            self.store.path.clone()
        }
    }

    /// The store settings for [`crate::store::Store::open`].
    pub fn store_config(&self) -> crate::store::StoreConfig {
        let mut c = crate::store::StoreConfig::new(self.store_path());
        c.dedup_window_ns = self.store.dedup_window.as_nanos_i64();
        c.max_age_ns = (self.store.max_age.0 > std::time::Duration::ZERO)
            .then(|| self.store.max_age.as_nanos_i64());
        c.max_bytes = (self.store.max_size.0 > 0).then_some(self.store.max_size.0);
        c.max_evidence = self.store.max_evidence;
        c
    }

    /// The socket's file mode.
    pub fn socket_mode(&self) -> u32 {
        u32::from_str_radix(self.api.socket_mode.trim_start_matches("0o"), 8).unwrap_or(0o600)
    }
}
