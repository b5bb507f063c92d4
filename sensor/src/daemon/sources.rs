//! Event sources the daemon runs itself: `[[sources.file]]` (tailing ECS NDJSON) and the forwarder that
//! puts the seams' event streams (kernel sensor, network ingest) onto the correlator's input.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use correlator::Event;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncSeekExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::{Cover, Input, SourceEvents, SourceItem};
use crate::config::FileSourceConfig;
use crate::metrics::SourceCounters;
use crate::store::ResumePoint;

/// Moves events from a seam's channel to the correlator. At shutdown a plain source's queue is drained;
/// a positioned source is followed until it closes its channel, so that the position it sends last
/// (covering the last events it handed over) reaches the store.
pub(crate) async fn forward(
    src: usize,
    rx: SourceEvents,
    tx: mpsc::Sender<Input>,
    counters: Arc<SourceCounters>,
    shutdown: watch::Receiver<bool>,
) {
    match rx {
        SourceEvents::Plain(rx) => {
            let wrap = |event| Input {
                src,
                event: Some(event),
                cover: Cover::None,
                held: None,
            };
            pump(rx, wrap, tx, &counters, shutdown).await;
        }
        SourceEvents::Positioned(rx) => {
            let wrap = |item| match item {
                SourceItem::Event(event, held) => Input {
                    src,
                    event: Some(event),
                    cover: Cover::Uncovered,
                    held,
                },
                SourceItem::Resume(p) => Input {
                    src,
                    event: None,
                    cover: Cover::Mark(p),
                    held: None,
                },
            };
            let mut rx = rx;
            let mut last_was_mark = true;
            while let Some(item) = rx.recv().await {
                let inp = wrap(item);
                last_was_mark = inp.event.is_none();
                if !last_was_mark {
                    counters.events_in.fetch_add(1, Relaxed);
                }
                if tx.send(inp).await.is_err() {
                    return;
                }
            }
            if !last_was_mark {
                // It stopped without covering its last events: without this, they would hold
                // back every alert after them until shutdown.
                tracing::warn!(source = src, "a positioned source closed without a last position; its last events may be processed again at the next start");
                let _ = tx
                    .send(Input {
                        src,
                        event: None,
                        cover: Cover::Closed,
                        held: None,
                    })
                    .await;
            }
        }
    }
}

/// Forwards until the source's channel closes or shutdown, then drains what is queued.
async fn pump<T>(
    mut rx: mpsc::Receiver<T>,
    wrap: impl Fn(T) -> Input,
    tx: mpsc::Sender<Input>,
    counters: &SourceCounters,
    mut shutdown: watch::Receiver<bool>,
) {
    let send = |inp: Input| {
        if inp.event.is_some() {
            counters.events_in.fetch_add(1, Relaxed);
        }
        tx.send(inp)
    };
    loop {
        tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(item) => {
                    if send(wrap(item)).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            _ = shutdown.changed() => {
                while let Ok(item) = rx.try_recv() {
                    if send(wrap(item)).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
}

/// How often a followed file is checked for growth, truncation and rotation at its end.
const POLL: Duration = Duration::from_millis(200);

/// Reads a file of ECS NDJSON (one event per line; `-` is standard input), from where the store says it
/// stopped. A bad line is logged with its line number and counted, and never stops the source.
pub(crate) async fn file_source(
    cfg: FileSourceConfig,
    src: usize,
    resume: Option<ResumePoint>,
    tx: mpsc::Sender<Input>,
    counters: Arc<SourceCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = cfg.source_name();
    if cfg.path.as_os_str() == "-" {
        let reader = BufReader::new(tokio::io::stdin());
        let _ = read_lines(
            reader,
            &name,
            src,
            None,
            None,
            &tx,
            &counters,
            &mut shutdown,
            false,
        )
        .await;
        return;
    }
    let mut resume = resume;
    loop {
        let file = match tokio::fs::File::open(&cfg.path).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(source = %name, path = %cfg.path.display(), error = %e, "cannot open event file; retrying");
                if !cfg.follow || wait(&mut shutdown, Duration::from_secs(2)).await {
                    return;
                }
                continue;
            }
        };
        let (inode, size) = match file.metadata().await {
            Ok(m) => (m.ino(), m.len()),
            Err(_) => (0, 0),
        };
        let mut start = 0;
        match resume.take() {
            Some(ResumePoint::File { inode: at, offset }) if at == inode && offset <= size => {
                start = offset;
            }
            Some(_) => {
                tracing::info!(source = %name, "event file was replaced since the last run; reading it from the start");
            }
            None => {}
        }
        let mut reader = BufReader::new(file);
        if start > 0 {
            if let Err(e) = reader.seek(std::io::SeekFrom::Start(start)).await {
                tracing::warn!(source = %name, error = %e, "cannot seek to the saved offset; reading from the start");
                start = 0;
            }
        }
        match read_lines(
            reader,
            &name,
            src,
            Some(&cfg.path),
            Some((inode, start)),
            &tx,
            &counters,
            &mut shutdown,
            cfg.follow,
        )
        .await
        {
            Reopen::Stop => return,
            Reopen::Again => {
                // Rotated or truncated: read the new file from its start.
                resume = None;
            }
        }
        if !cfg.follow {
            return;
        }
    }
}

enum Reopen {
    Stop,
    Again,
}

/// Waits `d` or until shutdown; true when shutting down.
async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_lines<R: AsyncRead + Unpin>(
    mut reader: BufReader<R>,
    name: &str,
    src: usize,
    path: Option<&std::path::Path>,
    mut pos: Option<(u64, u64)>,
    tx: &mpsc::Sender<Input>,
    counters: &SourceCounters,
    shutdown: &mut watch::Receiver<bool>,
    follow: bool,
) -> Reopen {
    let mut line = Vec::with_capacity(4096);
    let mut lineno: u64 = 0;
    let mut warned: u64 = 0;
    loop {
        if *shutdown.borrow() {
            return Reopen::Stop;
        }
        let n = match reader.read_until(b'\n', &mut line).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "read error");
                return if follow && !wait(shutdown, Duration::from_secs(1)).await {
                    Reopen::Again
                } else {
                    Reopen::Stop
                };
            }
        };
        let complete = line.last() == Some(&b'\n');
        if n == 0 || (!complete && follow) {
            // At the end (a partial last line waits for its newline while following).
            if !follow {
                if !line.is_empty() {
                    lineno += 1;
                    let l = std::mem::take(&mut line);
                    let _ = emit(&l, name, src, None, lineno, tx, counters, &mut warned).await;
                }
                return Reopen::Stop;
            }
            if wait(shutdown, POLL).await {
                return Reopen::Stop;
            }
            if let (Some(path), Some((inode, offset))) = (path, pos) {
                match std::fs::metadata(path) {
                    Ok(m) if m.ino() != inode => {
                        tracing::info!(source = %name, "event file was rotated; reading the new one");
                        return Reopen::Again;
                    }
                    Ok(m) if m.len() < offset + line.len() as u64 => {
                        tracing::info!(source = %name, "event file was truncated; reading it from the start");
                        return Reopen::Again;
                    }
                    _ => {}
                }
            }
            continue;
        }
        lineno += 1;
        if let Some((_, off)) = &mut pos {
            *off += line.len() as u64;
        }
        let l = std::mem::take(&mut line);
        if !emit(&l, name, src, pos, lineno, tx, counters, &mut warned).await {
            return Reopen::Stop;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn emit(
    line: &[u8],
    name: &str,
    src: usize,
    pos: Option<(u64, u64)>,
    lineno: u64,
    tx: &mpsc::Sender<Input>,
    counters: &SourceCounters,
    warned: &mut u64,
) -> bool {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    let parsed = serde_json::from_slice::<serde_json::Value>(text)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            let mut ev = Event::from_json(&v).map_err(|e| e.to_string())?;
            ev.raw = std::str::from_utf8(text).ok().map(Arc::from);
            Ok(ev)
        });
    match parsed {
        Ok(event) => {
            counters.events_in.fetch_add(1, Relaxed);
            let cover = pos.map_or(Cover::None, |(inode, offset)| {
                Cover::Mark(ResumePoint::File { inode, offset })
            });
            tx.send(Input {
                src,
                event: Some(event),
                cover,
                held: None,
            })
            .await
            .is_ok()
        }
        Err(e) => {
            counters.rejected.fetch_add(1, Relaxed);
            *warned += 1;
            if *warned <= 10 || warned.is_power_of_two() {
                tracing::warn!(source = %name, line = lineno, error = %e, rejected = *warned, "bad event line skipped");
            }
            // The next good line carries the offset past this one.
            true
        }
    }
}
