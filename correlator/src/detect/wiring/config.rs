//! The detector's settings: what [`super::IpcWiring`] is built from.

use crate::detect::Filter;
use crate::Severity;

/// What the detector is built from (the analytic's `ipc_wiring` block with its settings).
pub struct WiringConfig {
    pub id: String,
    /// FIFO creations and opens to follow (already restricted to shared directories).
    pub fifo_events: Filter,
    /// AF_UNIX binds and connects to follow.
    pub socket_events: Filter,
    /// Process starts (fork, exec; auditd execve and clone).
    pub process_events: Filter,
    /// Network activity that shows a peer: TCP connects and accepts.
    pub network_events: Filter,
    /// Shell and interpreter image names (globs).
    pub shells: Vec<String>,
    /// Network tool image names (globs): a driver by name when no connection was seen.
    pub network_tools: Vec<String>,
    /// Executable path globs of writable directories.
    pub writable_dirs: Vec<String>,
    /// Shared-directory path globs and ignored path globs, for FIFOs named on command lines (sources
    /// that record only process starts: `mkfifo /tmp/f`, `cat /tmp/f`).
    pub shared_dirs: Vec<String>,
    pub ignored_paths: Vec<String>,
    pub window_ns: i64,
    pub pipeline_span_ns: i64,
    pub decision_delay_ns: i64,
    pub wired_severity: Severity,
    /// `None`: a FIFO that is not wired raises nothing.
    pub unwired_severity: Option<Severity>,
}
