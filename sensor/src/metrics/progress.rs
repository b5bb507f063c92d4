//! Progress for long work (replays of large files): a bar on a terminal, nothing in pipes.
//!
//! ```no_run
//! let p = sensor::metrics::progress::Progress::bytes("replay", 10_000_000);
//! p.inc(4096);
//! p.finish();
//! ```

use std::io::IsTerminal;

/// A progress bar on stderr, drawn only when stderr is a terminal (and `SENSOR_NO_PROGRESS` is unset).
#[derive(Debug)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// Progress over `total` bytes (e.g. the size of the file being replayed).
    pub fn bytes(what: &str, total: u64) -> Progress {
        Progress::new(what, total, "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
    }

    /// Progress over `total` items (events, rules).
    pub fn items(what: &str, total: u64) -> Progress {
        Progress::new(
            what,
            total,
            "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
    }

    fn new(what: &str, total: u64, template: &str) -> Progress {
        if !enabled() {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(what.to_string());
        Progress { bar: Some(bar) }
    }

    /// True when a bar is being drawn.
    pub fn visible(&self) -> bool {
        self.bar.is_some()
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    /// Prints a line above the bar (or plainly to stderr when there is no bar).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn enabled() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("SENSOR_NO_PROGRESS").is_none()
}
