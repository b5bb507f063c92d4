//! `sensor ingest`: decode a file in a source format and print ECS NDJSON (no daemon needed).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use ingest::{decode_readers, lacks_ecs_category, uncategorized_warning, Format};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Source format: ecs, auditd, eslogger, unifiedlog, osquery, zeek, suricata, mdm, mobile-edr, windows.
    #[arg(long)]
    pub(crate) format: Format,
    /// Input file (`-` for stdin); a `.gz` file is decompressed. Repeatable: the files are decoded
    /// in order by one decoder, so a Zeek x509.log joins the ssl.log given beside it.
    #[arg(long, default_value = "-")]
    pub(crate) input: Vec<PathBuf>,
    /// The agent id stamped on every event (`agent.id`).
    #[arg(long, default_value = "local")]
    pub(crate) agent_id: String,
    /// Exit with status 1 when any record was rejected.
    #[arg(long)]
    pub(crate) strict: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut readers: Vec<Box<dyn BufRead>> = Vec::new();
    for input in &args.input {
        readers.push(open(input)?);
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (mut ok, mut bad, mut uncategorized) = (0u64, 0u64, 0u64);
    let check_ecs = args.format == Format::Ecs;
    let mut write_err: Option<std::io::Error> = None;
    let mut stderr = std::io::stderr().lock();
    decode_readers(args.format, &args.agent_id, readers, &mut |i, r| match r {
        Ok(ev) => {
            ok += 1;
            if check_ecs && lacks_ecs_category(&ev) {
                uncategorized += 1;
            }
            if write_err.is_none() {
                if let Err(e) = serde_json::to_writer(&mut out, &ev.to_json())
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
                {
                    write_err = Some(e);
                }
            }
        }
        Err(e) => {
            bad += 1;
            let name = args.input.get(i).map(|p| p.display().to_string());
            let _ = writeln!(stderr, "rejected: {}: {e}", name.unwrap_or_default());
        }
    });
    out.flush()?;
    if let Some(e) = write_err {
        return Err(e).context("writing events to stdout");
    }
    let _ = writeln!(
        stderr,
        "{} events decoded, {} records rejected ({})",
        ok, bad, args.format
    );
    if uncategorized > 0 {
        let _ = writeln!(stderr, "warning: {}", uncategorized_warning(uncategorized));
    }
    Ok(if args.strict && bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One input: stdin for `-`, a file (gunzipped when it ends in `.gz`).
fn open(input: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if input.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let f = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    Ok(if input.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Box::new(BufReader::new(f))
    })
}
