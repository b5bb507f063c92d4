use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use sensor::client::{self, Endpoint};
use sensor::store::{AlertDetail, StoredAlert};

/// How to reach the daemon's control API.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Conn {
    /// The daemon's control socket.
    #[arg(
        long,
        env = "SENSOR_SOCKET",
        default_value = "/run/sensor/control.sock"
    )]
    pub(crate) socket: PathBuf,
    /// A remote daemon instead, or a central node of a fleet: https://HOST:PORT (needs
    /// --token-file).
    #[arg(long, visible_alias = "url", env = "SENSOR_API_URL")]
    pub(crate) api: Option<String>,
    /// File holding the API token for --api.
    #[arg(long, env = "SENSOR_API_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificate (PEM) to check the remote daemon's certificate.
    #[arg(long, env = "SENSOR_API_CA")]
    pub(crate) ca_file: Option<PathBuf>,
    /// A client config file (TOML: `api`, `token_file`, `ca_file`) naming the API to use, e.g. a
    /// central node of the fleet; the options above win over it.
    #[arg(long, env = "SENSOR_CLIENT_CONFIG")]
    pub(crate) client_config: Option<PathBuf>,
}

/// The client config file (`--client-config`): where the control API is and how to reach it.
#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    api: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

impl Conn {
    /// The options, completed from the client config file when one is given.
    fn resolved(&self) -> anyhow::Result<Conn> {
        let Some(path) = &self.client_config else {
            return Ok(self.clone());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the client config {}", path.display()))?;
        let file: ClientConfig =
            toml::from_str(&text).with_context(|| format!("client config {}", path.display()))?;
        let mut c = self.clone();
        c.api = c.api.or(file.api);
        c.token_file = c.token_file.or(file.token_file);
        c.ca_file = c.ca_file.or(file.ca_file);
        Ok(c)
    }

    fn endpoint(&self) -> anyhow::Result<(Endpoint, Option<String>)> {
        let c = self.resolved()?;
        match &c.api {
            Some(url) => {
                let (ep, _) = Endpoint::from_url(url, c.ca_file.as_deref())?;
                let token = match &c.token_file {
                    Some(p) => Some(sensor::secret::read_token("--token-file", p)?),
                    None => None,
                };
                Ok((ep, token))
            }
            None => Ok((Endpoint::Unix(c.socket.clone()), None)),
        }
    }

    /// Calls the API; a non-2xx answer becomes an error carrying the server's message.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (ep, token) = self.endpoint()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (status, bytes) =
            rt.block_on(client::call(&ep, method, path, body, token.as_deref()))?;
        if !(200..300).contains(&status) {
            anyhow::bail!(
                "the daemon answered {status}: {}",
                sensor::api::error_message(&bytes)
            );
        }
        serde_json::from_slice(&bytes).context("the daemon's answer is not JSON")
    }
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// List alerts, newest first.
    List {
        #[command(flatten)]
        conn: Conn,
        /// open, acknowledged, closed or suppressed.
        #[arg(long)]
        status: Option<String>,
        /// Minimum severity: low, medium, high, critical.
        #[arg(long)]
        severity: Option<String>,
        /// Rule id or name.
        #[arg(long)]
        rule: Option<String>,
        /// Host name (`host.name` of the evidence).
        #[arg(long)]
        host: Option<String>,
        /// What reported the evidence: `sensor` (the kernel sensor), an ingest format's module
        /// (`auditd`, `windows`, `zeek`...), or an agent type.
        #[arg(long)]
        source: Option<String>,
        /// Container id (or a prefix of at least 12 hex digits) or name.
        #[arg(long)]
        container: Option<String>,
        /// Kubernetes namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Seen since: RFC 3339 time or a span back from now (15m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one alert with its evidence and status history.
    Show {
        #[command(flatten)]
        conn: Conn,
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an alert.
    Ack(Change),
    /// Close an alert.
    Close(Change),
    /// Suppress an alert (its later repeats are folded into it silently).
    Suppress(Change),
    /// Reopen an alert.
    Reopen(Change),
    /// Follow new alerts as they are stored.
    Tail {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub(crate) struct Change {
    #[command(flatten)]
    conn: Conn,
    id: i64,
    /// Why (recorded in the alert's history).
    #[arg(long, short)]
    reason: String,
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = String::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            q.push(if q.is_empty() { '?' } else { '&' });
            q.push_str(k);
            q.push('=');
            for b in v.bytes() {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    q.push(char::from(b));
                } else {
                    q.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    q
}

fn when(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn row(a: &StoredAlert) -> String {
    format!(
        "{:>6}  {:<12}  {:<8}  {:>5}  {:<19}  {:<32}  {:<16}  {:<10}  {}",
        a.id,
        a.status.as_str(),
        a.severity.as_str(),
        a.count,
        when(a.last_seen_ns),
        truncate(&a.rule_name, 32),
        truncate(a.host.as_deref().unwrap_or("-"), 16),
        truncate(a.source.as_deref().unwrap_or("-"), 10),
        a.process.as_deref().unwrap_or("-"),
    )
}

fn header() -> String {
    format!(
        "{:>6}  {:<12}  {:<8}  {:>5}  {:<19}  {:<32}  {:<16}  {:<10}  {}",
        "ID", "STATUS", "SEVERITY", "COUNT", "LAST SEEN (UTC)", "RULE", "HOST", "SOURCE", "PROCESS"
    )
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        Command::List {
            conn,
            status,
            severity,
            rule,
            host,
            source,
            container,
            namespace,
            since,
            limit,
            json,
        } => {
            let q = query(&[
                ("status", status),
                ("severity", severity),
                ("rule", rule),
                ("host", host),
                ("source", source),
                ("container", container),
                ("namespace", namespace),
                ("since", since),
                ("limit", Some(limit.to_string())),
            ]);
            let v = conn.call("GET", &format!("/v1/alerts{q}"), None)?;
            let alerts: Vec<StoredAlert> = serde_json::from_value(v["alerts"].clone())?;
            if json {
                for a in &alerts {
                    writeln!(out, "{}", serde_json::to_string(a)?)?;
                }
            } else if alerts.is_empty() {
                eprintln!("no alerts");
            } else {
                writeln!(out, "{}", header())?;
                for a in &alerts {
                    writeln!(out, "{}", row(a))?;
                }
            }
        }
        Command::Show { conn, id, json } => {
            let v = conn.call("GET", &format!("/v1/alerts/{id}"), None)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let d: AlertDetail = serde_json::from_value(v)?;
                print_detail(&mut out, &d)?;
            }
        }
        Command::Ack(c) => change(&mut out, c, "acknowledged")?,
        Command::Close(c) => change(&mut out, c, "closed")?,
        Command::Suppress(c) => change(&mut out, c, "suppressed")?,
        Command::Reopen(c) => change(&mut out, c, "open")?,
        Command::Tail { conn, json } => {
            drop(out);
            tail(&conn, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn change(out: &mut impl Write, c: Change, status: &str) -> anyhow::Result<()> {
    let user = std::env::var("SUDO_USER")
        .ok()
        .or_else(|| std::env::var("USER").ok());
    let body = json!({ "status": status, "reason": c.reason, "user": user });
    let v = c
        .conn
        .call("POST", &format!("/v1/alerts/{}/status", c.id), Some(&body))?;
    let a: StoredAlert = serde_json::from_value(v)?;
    writeln!(out, "alert {} is now {}", a.id, a.status)?;
    Ok(())
}

fn print_detail(out: &mut impl Write, d: &AlertDetail) -> anyhow::Result<()> {
    let a = &d.alert;
    writeln!(
        out,
        "alert {}  [{}]  {}",
        a.id,
        a.status,
        a.severity.as_str()
    )?;
    writeln!(out, "rule:       {} ({})", a.rule_name, a.rule_id)?;
    if !a.attack.techniques.is_empty() || a.attack.analytic.is_some() {
        writeln!(
            out,
            "att&ck:     {} {} {}",
            a.attack.techniques.join(","),
            a.attack.analytic.as_deref().unwrap_or(""),
            a.attack.strategy.as_deref().unwrap_or("")
        )?;
    }
    writeln!(out, "first seen: {} UTC", when(a.first_seen_ns))?;
    writeln!(
        out,
        "last seen:  {} UTC   (seen {} time(s))",
        when(a.last_seen_ns),
        a.count
    )?;
    for (k, v) in [
        ("host", &a.host),
        ("source", &a.source),
        ("user", &a.user),
        ("process", &a.process),
    ] {
        if let Some(v) = v {
            writeln!(out, "{k:<11} {v}")?;
        }
    }
    if let Some(c) = &a.container {
        writeln!(
            out,
            "container:  {}  image {}  id {}",
            c.name.as_deref().unwrap_or("-"),
            c.image.as_deref().unwrap_or("-"),
            c.id
        )?;
        if c.namespace.is_some() || c.pod.is_some() {
            writeln!(
                out,
                "pod:        {}/{}",
                c.namespace.as_deref().unwrap_or("-"),
                c.pod.as_deref().unwrap_or("-")
            )?;
        }
    }
    if !a.reason.is_empty() {
        writeln!(out, "why:        {}", a.reason)?;
    }
    writeln!(out, "history:")?;
    for h in &d.history {
        writeln!(
            out,
            "  {} UTC  {} -> {}  by {}: {}",
            when(h.at_ns),
            h.from.map_or("-", |s| s.as_str()),
            h.to,
            h.actor,
            h.reason
        )?;
    }
    writeln!(out, "evidence ({} event(s)):", d.evidence.len())?;
    for e in &d.evidence {
        writeln!(out, "  {}", serde_json::to_string(e)?)?;
    }
    Ok(())
}

fn tail(conn: &Conn, json: bool) -> anyhow::Result<()> {
    let (ep, token) = conn.endpoint()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let resp = client::send(&ep, "GET", "/v1/alerts/stream", None, token.as_deref()).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if !(200..300).contains(&status) {
            let bytes = body.collect().await?.to_bytes();
            anyhow::bail!(
                "the daemon answered {status}: {}",
                sensor::api::error_message(&bytes)
            );
        }
        if !json {
            println!("{}", header());
        }
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.extend_from_slice(data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let mut out = std::io::stdout().lock();
                if json {
                    out.write_all(&line)?;
                } else if let Ok(a) = serde_json::from_slice::<StoredAlert>(&line) {
                    writeln!(out, "{}", row(&a))?;
                }
                out.flush()?;
            }
        }
        eprintln!("the daemon closed the stream");
        Ok(())
    })
}
