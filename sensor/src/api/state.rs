//! What the control API shares with the daemon's main loop: the handles it reads (store, metrics,
//! alert stream, daemon info) and the requests it sends back ([`Control`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use alert_store::AlertStore;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;

/// Open (true) unless a privilege drop is pending (`daemon::privilege`): every listener, the
/// control API's and network ingest's, waits on it before its first `accept`.
static ACCEPT_GATE: std::sync::LazyLock<watch::Sender<bool>> =
    std::sync::LazyLock::new(|| watch::Sender::new(true));

/// Returns once listeners may accept (at once unless a privilege drop is pending).
pub(crate) async fn accepts_released() {
    let mut rx = ACCEPT_GATE.subscribe();
    let _ = rx.wait_for(|open| *open).await;
}

/// Closes the gate: a privilege drop is coming.
pub(crate) fn hold_accepts() {
    ACCEPT_GATE.send_replace(false);
}

/// Opens the gate.
pub(crate) fn release_accepts() {
    ACCEPT_GATE.send_replace(true);
}

/// Requests from the control API to the main loop.
#[derive(Debug)]
pub(crate) enum Control {
    Reload(oneshot::Sender<Result<ReloadReport, String>>),
}

/// What a reload changed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadReport {
    /// Detectors kept with their pending state (same id and version).
    pub kept: Vec<String>,
    /// New or changed detectors (a changed detector starts empty).
    pub loaded: Vec<String>,
    pub removed: Vec<String>,
    /// Sections that changed but take effect only at restart.
    pub restart_needed: Vec<String>,
}

/// How a source is doing, for `sensor status`.
#[derive(Clone, Debug, Serialize)]
pub struct SourceInfo {
    pub name: String,
    pub detail: String,
}

/// State the control API reads.
pub(crate) struct DaemonInfo {
    pub(crate) started: Instant,
    pub(crate) sources: Vec<SourceInfo>,
    pub(crate) source_status: BTreeMap<String, Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    pub(crate) refused: Vec<SourceInfo>,
    pub(crate) rules: Mutex<Vec<String>>,
    pub(crate) rates: Mutex<BTreeMap<String, f64>>,
    pub(crate) config_path: Option<PathBuf>,
    /// Who the daemon runs as after start-up (`sensor status`).
    pub(crate) privileges: Mutex<serde_json::Value>,
}

impl DaemonInfo {
    pub(crate) fn rules(&self) -> Vec<String> {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    pub(crate) fn rates(&self) -> BTreeMap<String, f64> {
        self.rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Shared between the main loop and the control API.
#[derive(Clone)]
pub(crate) struct Shared {
    /// The alert store the API serves: the daemon's SQLite store, or the fleet's PostgreSQL store.
    pub(crate) store: Arc<dyn AlertStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) control: mpsc::Sender<Control>,
    pub(crate) info: Arc<DaemonInfo>,
    /// On a central node: the fleet's state for `/v1/status` (partitions, owners, lag, bus).
    pub(crate) fleet: Option<Arc<super::central::FleetView>>,
}
