//! The listeners' edge counters (`ingest::edge`): connections open, refused and why, accept errors,
//! auditd lines discarded. Rendered by [`super::Metrics::render`].

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use ingest::edge::{listeners, Refusal};

/// Appends the `sensor_listener_*` families to `out`.
pub(super) fn render(out: &mut String) {
    let all = listeners();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    family(
        "sensor_listener_connections",
        "gauge",
        "Connections open now, per listener (ingest-http, ingest-auditd, api-socket, api-tcp, metrics).",
        all.iter()
            .map(|(n, s)| (format!("{{listener=\"{n}\"}}"), s.open.load(Relaxed).to_string()))
            .collect(),
    );
    family(
        "sensor_listener_accepted_total",
        "counter",
        "Connections accepted, refused ones included, per listener.",
        all.iter()
            .map(|(n, s)| {
                (
                    format!("{{listener=\"{n}\"}}"),
                    s.accepted.load(Relaxed).to_string(),
                )
            })
            .collect(),
    );
    family(
        "sensor_listener_refused_total",
        "counter",
        "Connections closed at the edge, per listener and reason (max_connections, max_connections_per_peer, unknown_peer, unprivileged_port, handshake_timeout, handshake_failed, header_timeout).",
        all.iter()
            .flat_map(|(n, s)| {
                Refusal::ALL.iter().map(move |r| {
                    (
                        format!("{{listener=\"{n}\",reason=\"{}\"}}", r.as_str()),
                        s.refused_count(*r).to_string(),
                    )
                })
            })
            .collect(),
    );
    family(
        "sensor_listener_accept_errors_total",
        "counter",
        "accept() failures (EMFILE, ENFILE...), each followed by a pause, per listener.",
        all.iter()
            .map(|(n, s)| {
                (
                    format!("{{listener=\"{n}\"}}"),
                    s.accept_errors.load(Relaxed).to_string(),
                )
            })
            .collect(),
    );
    family(
        "sensor_listener_lines_discarded_total",
        "counter",
        "auditd lines over the record limit, discarded up to their end.",
        all.iter()
            .filter(|(n, _)| *n == "ingest-auditd")
            .map(|(n, s)| {
                (
                    format!("{{listener=\"{n}\"}}"),
                    s.lines_discarded.load(Relaxed).to_string(),
                )
            })
            .collect(),
    );
}
