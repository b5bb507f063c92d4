use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    conn: super::alerts::Conn,
    /// The raw JSON status.
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
            writeln!(out, "    {st}")?;
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
    let st = &v["store"];
    writeln!(
        out,
        "alert store:    {} ({} bytes): {} alerts ({} open, {} acknowledged, {} closed, {} suppressed)",
        s(&st["path"]),
        st["file_bytes"],
        st["alerts"],
        st["open"],
        st["acknowledged"],
        st["closed"],
        st["suppressed"]
    )?;
    Ok(ExitCode::SUCCESS)
}
