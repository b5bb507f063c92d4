//! `sensor ingest-server`: the ingest listeners, the spool and a consumer that decodes spooled
//! records and appends each event to an NDJSON file, committing the spool checkpoint after the
//! write is on disk. A stand-alone harness for the network ingest (the daemon wires the same
//! parts into `sensor run`); end-to-end and crash tests drive it.
//!
//! Each output line is the event's ECS JSON plus an `ingest` object `{seq, index, last, format}`
//! naming the spool records it came from; on restart the file is read back so that replayed
//! records produce no duplicate (see `ingest::consumer`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use ingest::consumer::{drive, Consumer, DecoderContext, Emitted, Known, Position, Sink};
use ingest::spool::write_atomic;
use ingest::{serve, Format, IngestConfig, Spool, SpoolLimits};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// TOML file: `spool_dir`, optional `[spool]` limits, and the `[ingest]` table.
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// NDJSON file the decoded events are appended to.
    #[arg(long)]
    pub(crate) output: PathBuf,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    spool_dir: PathBuf,
    #[serde(default)]
    spool: SpoolLimits,
    #[serde(default)]
    ingest: IngestConfig,
    /// Seconds an auditd group may stay open without its closing record.
    #[serde(default = "default_idle")]
    group_idle_secs: u64,
}

fn default_idle() -> u64 {
    2
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let cfg: ServerFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    let spool = Arc::new(Spool::open(&cfg.spool_dir, cfg.spool.clone())?);
    let (known, good_len) = read_back(&args.output)?;
    let contexts_path = contexts_path(&args.output);
    let contexts = read_contexts(&contexts_path)?;
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&args.output)?;
    // Cut a line that a crash left half-written.
    out.set_len(good_len)?;
    out.seek(SeekFrom::End(0))?;
    tracing::info!(
        message = "ingest-server: starting",
        committed = spool.committed(),
        durable = spool.durable(),
        known_events = known.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(cfg.ingest.clone(), spool.clone(), rx.clone()));
        let idle = Duration::from_secs(cfg.group_idle_secs);
        let consumer_spool = spool.clone();
        let consumer = tokio::task::spawn_blocking(move || {
            consume(
                &consumer_spool,
                Output {
                    out,
                    contexts_path,
                    contexts,
                },
                known,
                idle,
                rx,
            )
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut server = server;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            r = &mut server => {
                let _ = tx.send(true);
                r??;
                return Ok(ExitCode::SUCCESS);
            }
        }
        let _ = tx.send(true);
        let _ = server.await;
        consumer.await??;
        Ok(ExitCode::SUCCESS)
    })
}

/// Where the decoders' header lines ([`DecoderContext`]) are kept beside the output: a Zeek TSV
/// header can lie before the spool checkpoint, and the rows after it need it after a restart.
fn contexts_path(output: &Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(".contexts.json");
    PathBuf::from(p)
}

fn read_contexts(path: &Path) -> anyhow::Result<Vec<DecoderContext>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{}: not a list of decoder contexts", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The consumer's output: the events file and the decoder contexts beside it.
struct Output {
    out: File,
    contexts_path: PathBuf,
    contexts: Vec<DecoderContext>,
}

/// Reads the events an earlier run wrote; returns them and the length of the well-formed prefix.
fn read_back(path: &Path) -> anyhow::Result<(Vec<Known>, u64)> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut r = BufReader::new(f);
    let mut known = Vec::new();
    let mut good = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            break;
        };
        let ing = &v["ingest"];
        let (Some(seq), Some(index), Some(last), Some(format), Some(agent)) = (
            ing["seq"].as_u64(),
            ing["index"].as_u64(),
            ing["last"].as_u64(),
            ing["format"]
                .as_str()
                .and_then(|f| f.parse::<Format>().ok()),
            v["agent"]["id"].as_str(),
        ) else {
            break;
        };
        known.push(Known {
            format,
            agent: agent.to_string(),
            seq,
            index: u32::try_from(index).unwrap_or(0),
            last,
        });
        good += n as u64;
    }
    Ok((known, good))
}

/// Appends each event (plus an `ingest` object naming its spool records) to the output file.
struct FileSink {
    out: File,
    contexts_path: PathBuf,
    /// The contexts last written to `contexts_path`.
    contexts: Vec<DecoderContext>,
    buf: Vec<u8>,
    counts: HashMap<&'static str, u64>,
}

impl Sink for FileSink {
    fn emit(&mut self, e: Emitted) {
        match e.result {
            Ok(ev) => {
                let mut doc = ev.to_json();
                if let Some(m) = doc.as_object_mut() {
                    m.insert(
                        "ingest".into(),
                        serde_json::json!({"seq": e.seq, "index": e.index, "last": e.last, "format": e.format.as_str()}),
                    );
                }
                if serde_json::to_writer(&mut self.buf, &doc).is_ok() {
                    self.buf.push(b'\n');
                }
                *self.counts.entry("events").or_default() += 1;
            }
            Err(err) => {
                tracing::warn!(message = "ingest-server: spooled record rejected by its decoder", seq = e.seq, error = %err);
                *self.counts.entry("rejected").or_default() += 1;
            }
        }
    }

    fn flush(&mut self, at: &Position) -> std::io::Result<()> {
        // Contexts first: events written after a new header must never be on disk while the old
        // header is what a restart would restore (their header record is skipped on replay).
        if at.contexts != self.contexts {
            let data = serde_json::to_vec(&at.contexts).map_err(std::io::Error::other)?;
            write_atomic(&self.contexts_path, &data)?;
            self.contexts.clone_from(&at.contexts);
        }
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.out.sync_data()?;
            self.buf.clear();
        }
        Ok(())
    }
}

fn consume(
    spool: &Spool,
    output: Output,
    known: Vec<Known>,
    idle: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut consumer = Consumer::new();
    consumer.restore_contexts(&output.contexts);
    consumer.resume(known);
    let mut sink = FileSink {
        out: output.out,
        contexts_path: output.contexts_path,
        contexts: output.contexts,
        buf: Vec::with_capacity(1 << 20),
        counts: HashMap::new(),
    };
    drive(
        &mut consumer,
        spool,
        spool.committed(),
        idle,
        &stop,
        &mut sink,
    )?;
    tracing::info!(message = "ingest-server: consumer stopped", counts = ?sink.counts);
    Ok(())
}
