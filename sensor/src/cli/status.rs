use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    conn: super::alerts::Conn,
    /// The whole status as JSON (every detail of every source).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let v = args.conn.call("GET", "/v1/status", None)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    writeln!(
        out,
        "sensor {} (pid {}), up {}s",
        s(&v["version"]),
        v["pid"],
        v["uptime_secs"]
    )?;
    writeln!(out, "sources:")?;
    for src in v["sources"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:<20} {:>10.1} ev/s  in {:>10}  lost {:>6}  rejected {:>6}  {}",
            s(&src["name"]),
            src["events_per_sec"].as_f64().unwrap_or(0.0),
            src["events_in"],
            src["lost"],
            src["rejected"],
            s(&src["detail"])
        )?;
        if let Some(st) = src.get("status") {
            detail_lines(&mut out, st, 4)?;
            let containers = st.get("containers").filter(|c| c["enabled"] == true);
            for (sock, why) in containers
                .and_then(|c| c["unreachable"].as_object())
                .into_iter()
                .flatten()
            {
                writeln!(
                    out,
                    "    container runtime not reachable: {sock}: {} (events carry the container id alone)",
                    s(why)
                )?;
            }
        }
    }
    for r in v["refused"].as_array().into_iter().flatten() {
        writeln!(out, "  {:<20} refused: {}", s(&r["name"]), s(&r["detail"]))?;
    }
    writeln!(out, "rules loaded:   {}", v["rules_loaded"])?;
    writeln!(out, "pending state:  {} partial match(es)", v["pending"])?;
    writeln!(
        out,
        "ingest clients: {} (rejected records {})",
        v["ingest_clients"], v["ingest_rejects"]
    )?;
    if let Some(n) = v["ingest_ecs_uncategorized"].as_u64().filter(|n| *n > 0) {
        writeln!(out, "ingest warning: {}", ingest::uncategorized_warning(n))?;
    }
    print_agents(&mut out, &v["ingest_agents"])?;
    let st = &v["store"];
    writeln!(
        out,
        "alert store:    {} {} ({} bytes): {} alerts ({} open, {} acknowledged, {} closed, {} suppressed)",
        st["engine"].as_str().unwrap_or("sqlite"),
        s(&st["path"]),
        st["file_bytes"],
        st["alerts"],
        st["open"],
        st["acknowledged"],
        st["closed"],
        st["suppressed"]
    )?;
    if v["fleet"].is_object() {
        print_fleet(&mut out, &v["fleet"])?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A central node's view of the fleet: the bus, the live nodes, each partition's owner and lag.
fn print_fleet(out: &mut impl Write, f: &Value) -> anyhow::Result<()> {
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let bus = &f["bus"];
    writeln!(
        out,
        "fleet:          central node {}; bus {} ({}) via {}; stream {} holds {} message(s)",
        s(&f["node"]),
        s(&bus["state"]),
        bus["server"].as_str().unwrap_or("no server yet"),
        bus["urls"]
            .as_array()
            .map(|u| u.iter().map(s).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        s(&bus["stream"]),
        bus["stream_messages"]
            .as_u64()
            .map_or_else(|| "?".to_string(), |n| n.to_string()),
    )?;
    let nodes: Vec<String> = f["nodes"].as_array().into_iter().flatten().map(s).collect();
    writeln!(
        out,
        "central nodes:  {} alive: {}",
        nodes.len(),
        if nodes.is_empty() {
            "none".to_string()
        } else {
            nodes.join(", ")
        }
    )?;
    if f.get("events").is_some() {
        writeln!(
            out,
            "this node:      {} event(s) taken, {} alert(s) recorded, {} bad event(s)",
            f["events"], f["alerts"], f["bad_events"]
        )?;
    }
    writeln!(
        out,
        "  {:>9}  {:<36}  {:>10}  {:>11}  {:>10}",
        "PARTITION", "OWNER", "PENDING", "ACK PENDING", "ACK FLOOR"
    )?;
    for p in f["partitions"].as_array().into_iter().flatten() {
        let consumer = p["consumer"].as_bool().unwrap_or(false);
        let n = |k: &str| {
            if consumer {
                p[k].as_u64().unwrap_or(0).to_string()
            } else {
                "-".to_string()
            }
        };
        writeln!(
            out,
            "  {:>9}  {:<36}  {:>10}  {:>11}  {:>10}",
            p["partition"].as_u64().unwrap_or(0),
            p["owner"].as_str().unwrap_or("(free)"),
            n("pending"),
            n("ack_pending"),
            n("ack_floor"),
        )?;
    }
    writeln!(
        out,
        "lag:            {} message(s) pending in all partitions",
        f["pending"]
    )?;
    for e in f["errors"].as_array().into_iter().flatten() {
        writeln!(out, "fleet warning:  {}", s(e))?;
    }
    Ok(())
}

/// A JSON scalar as text (strings without quotes).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some("-".into()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// `a=1 b=2` for an object of scalars, `a, b` for an array of scalars (`none` when empty).
fn flat(v: &Value) -> Option<String> {
    let parts: Option<Vec<String>> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| scalar(v).map(|s| format!("{k}={s}")))
            .collect(),
        Value::Array(a) => a.iter().map(scalar).collect(),
        _ => return scalar(v),
    };
    let parts = parts?;
    Some(if parts.is_empty() {
        "none".into()
    } else if v.is_object() {
        parts.join(" ")
    } else {
        parts.join(", ")
    })
}

/// A source's status detail (the kernel sensor's programs, losses per kind...) as readable lines,
/// one per key, indented by nesting; `--json` prints it whole.
fn detail_lines(out: &mut impl Write, v: &Value, indent: usize) -> std::io::Result<()> {
    let pad = " ".repeat(indent);
    let Value::Object(m) = v else {
        return writeln!(out, "{pad}{}", flat(v).unwrap_or_else(|| v.to_string()));
    };
    for (k, v) in m {
        if let Some(line) = flat(v) {
            writeln!(out, "{pad}{k}: {line}")?;
        } else if let Value::Array(items) = v {
            writeln!(out, "{pad}{k}:")?;
            for item in items {
                match flat(item) {
                    Some(line) => writeln!(out, "{pad}  - {line}")?,
                    None => detail_lines(out, item, indent + 4)?,
                }
            }
        } else {
            writeln!(out, "{pad}{k}:")?;
            detail_lines(out, v, indent + 2)?;
        }
    }
    Ok(())
}

/// One line per remote agent and protocol: connections, records, last record (seconds ago).
fn print_agents(out: &mut impl Write, agents: &Value) -> anyhow::Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    for a in agents.as_array().into_iter().flatten() {
        let ago = |k: &str| {
            a[k].as_u64().map_or_else(
                || "never".to_string(),
                |t| format!("{}s ago", now_ms.saturating_sub(t) / 1000),
            )
        };
        writeln!(
            out,
            "  agent {:<16} {:<14} connections {:>3}  records {:>10} (rejected {})  last record {}  peer {}",
            a["agent"].as_str().unwrap_or("?"),
            a["protocol"].as_str().unwrap_or("?"),
            a["connections"],
            a["records_accepted"],
            a["records_rejected"],
            ago("last_record_ms"),
            a["peer"].as_str().unwrap_or("-"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fleet_section_names_owners_and_lag() {
        let f = serde_json::json!({
            "node": "n1", "role": "central",
            "bus": {"urls": ["nats://127.0.0.1:4222"], "state": "connected", "server": "srv 2.9.11",
                    "stream": "SENSOR_EVENTS", "stream_messages": 40},
            "nodes": ["n1", "n2"],
            "partitions": [
                {"partition": 0, "owner": "n1", "pending": 3, "ack_pending": 1, "ack_floor": 17, "consumer": true},
                {"partition": 1, "pending": 0, "ack_pending": 0, "ack_floor": 0, "consumer": false}
            ],
            "pending": 3,
            "errors": ["partition 1 consumer: timed out"]
        });
        let mut out = Vec::new();
        print_fleet(&mut out, &f).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("central node n1; bus connected (srv 2.9.11) via nats://127.0.0.1:4222; stream SENSOR_EVENTS holds 40"), "{text}");
        assert!(text.contains("2 alive: n1, n2"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["0", "n1", "3", "1", "17"]),
            "{text}"
        );
        assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "(free)", "-", "-", "-"]), "{text}");
        assert!(text.contains("3 message(s) pending"), "{text}");
        assert!(
            text.contains("fleet warning:  partition 1 consumer: timed out"),
            "{text}"
        );
    }

    #[test]
    fn kernel_detail_is_readable_lines() {
        let st = serde_json::json!({
            "attached": ["sys_enter_socket", "sched_process_exec"],
            "refused": [{"program": "floor_socket", "reason": "not requested"}],
            "events": {"socket": 12, "exec": 3},
            "lost_kernel": {},
            "decode_errors": 0,
        });
        let mut out = Vec::new();
        detail_lines(&mut out, &st, 4).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "    attached: sys_enter_socket, sched_process_exec\n    refused:\n      - program=floor_socket reason=not requested\n    events: socket=12 exec=3\n    lost_kernel: none\n    decode_errors: 0\n"
        );
    }
}
