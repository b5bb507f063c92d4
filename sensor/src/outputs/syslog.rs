//! Syslog, RFC 5424 framing, over a Unix datagram socket (`unix:/dev/log`) or UDP (`udp:HOST:PORT`).
//! The message is the alert's ECS document as JSON; the severity follows the alert's severity.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use super::OutputError;
use crate::config::{SyslogOutputConfig, SyslogTarget};

enum Sock {
    Unix(UnixDatagram, PathBuf),
    Udp(std::net::UdpSocket),
}

/// A connected syslog sender.
pub struct Syslog {
    sock: Sock,
    target: String,
    facility: u8,
    app_name: String,
    hostname: String,
    pid: u32,
}

impl std::fmt::Debug for Syslog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syslog")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Syslog {
    pub fn new(cfg: &SyslogOutputConfig) -> Result<Syslog, OutputError> {
        let err = |detail: String| OutputError::Syslog {
            target: cfg.target.clone(),
            detail,
        };
        let target = cfg.parsed_target().map_err(err)?;
        let facility = cfg
            .facility_code()
            .ok_or_else(|| err(format!("unknown facility `{}`", cfg.facility)))?;
        let sock = match target {
            SyslogTarget::Unix(p) => {
                Sock::Unix(UnixDatagram::unbound().map_err(|e| err(e.to_string()))?, p)
            }
            SyslogTarget::Udp(a) => {
                let bind = if a.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let s = std::net::UdpSocket::bind(bind).map_err(|e| err(e.to_string()))?;
                s.connect(&a)
                    .map_err(|e| err(format!("connect {a}: {e}")))?;
                Sock::Udp(s)
            }
        };
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "-".into());
        Ok(Syslog {
            sock,
            target: cfg.target.clone(),
            facility,
            app_name: cfg.app_name.clone(),
            hostname,
            pid: std::process::id(),
        })
    }

    /// Sends one alert document.
    pub fn send(&mut self, doc: &serde_json::Value) -> Result<(), OutputError> {
        let msg = self.format(doc);
        let res = match &self.sock {
            Sock::Unix(s, p) => s.send_to(msg.as_bytes(), p),
            Sock::Udp(s) => s.send(msg.as_bytes()),
        };
        res.map(|_| ()).map_err(|e| OutputError::Syslog {
            target: self.target.clone(),
            detail: e.to_string(),
        })
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG`.
    pub fn format(&self, doc: &serde_json::Value) -> String {
        let severity: u8 = match doc["sensor"]["alert"]["severity"].as_str() {
            Some("critical") => 2,
            Some("high") => 3,
            Some("medium") => 4,
            _ => 5,
        };
        let pri = u16::from(self.facility) * 8 + u16::from(severity);
        let ts = doc["@timestamp"].as_str().unwrap_or("-");
        let id = doc["event"]["id"].as_str().unwrap_or("-");
        let rule = sd_escape(doc["rule"]["id"].as_str().unwrap_or("-"));
        format!(
            "<{pri}>1 {ts} {} {} {} ALERT [sensor@32473 alert_id=\"{id}\" rule_id=\"{rule}\"] {doc}",
            self.hostname, self.app_name, self.pid
        )
    }
}

fn sd_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}
