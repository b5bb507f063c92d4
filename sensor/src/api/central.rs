//! The control API of a central node: the same routes, served from the fleet's PostgreSQL store,
//! with the fleet's state (bus, partitions, owners, consumer lag) in `/v1/status`.
//!
//! API Boundary: [`serve_central`] is what `sensor run` calls for `fleet.role = "central"`, next to
//! the node's correlators (`fleet::central::run_node`); it needs `[api.tcp]` for remote CLIs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet::bus::Bus;
use fleet::central::{CentralStats, Leases};
use fleet::pg::FleetAlerts;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::state::{Control, DaemonInfo, Shared};
use crate::config::Config;
use crate::metrics::Metrics;

/// What a central node's control API serves.
pub struct CentralApi {
    /// The fleet alert store (`FleetAlerts::connect(&fleet.postgres)`).
    pub store: FleetAlerts,
    /// The node's bus connection (`Bus::connect`).
    pub bus: Bus,
    /// The lease TTL of the node's `CentralConfig` (the lease bucket is opened with it).
    pub lease_ttl: Duration,
    /// The node's id, as in its leases.
    pub node_id: String,
    /// `fleet.nats.urls`, shown in the status.
    pub nats_urls: Vec<String>,
    /// The node's counters (events taken, alerts recorded), when it runs correlators.
    pub stats: Option<Arc<CentralStats>>,
    pub metrics: Arc<Metrics>,
    pub config_path: Option<PathBuf>,
    /// The rule ids the node's correlators run.
    pub rules: Vec<String>,
}

/// The fleet's part of a central node's `/v1/status`.
pub(crate) struct FleetView {
    bus: Bus,
    leases: Leases,
    node_id: String,
    urls: Vec<String>,
    stats: Option<Arc<CentralStats>>,
}

impl FleetView {
    pub(crate) async fn status(&self) -> serde_json::Value {
        let st =
            fleet::status::central_status(&self.bus, &self.leases, &self.node_id, &self.urls).await;
        let mut v = serde_json::to_value(&st).unwrap_or(serde_json::Value::Null);
        v["role"] = "central".into();
        if let Some(s) = &self.stats {
            let owned: Vec<u32> = s
                .owned
                .lock()
                .map(|o| o.iter().copied().collect())
                .unwrap_or_default();
            v["events"] = s.events.load(Relaxed).into();
            v["alerts"] = s.alerts.load(Relaxed).into();
            v["bad_events"] = s.bad_events.load(Relaxed).into();
            v["bad_messages"] = s.bad_messages.load(Relaxed).into();
            v["replayed_skipped"] = s.replayed_skipped.load(Relaxed).into();
            v["owned"] = owned.into();
        }
        v
    }
}

/// Serves the control API of a central node (the Unix socket, `[api.tcp]` with TLS and a token,
/// metrics) until `shutdown` turns true; then every `alerts tail` stream ends. A reload request is
/// refused: a central node takes new rules when it restarts.
pub async fn serve_central(
    cfg: &Config,
    node: CentralApi,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinSet<()>, String> {
    let leases = fleet::central::lease_bucket(&node.bus, node.lease_ttl)
        .await
        .map_err(|e| format!("central node status: {e}"))?;
    let info = Arc::new(DaemonInfo {
        started: Instant::now(),
        sources: Vec::new(),
        source_status: BTreeMap::new(),
        refused: Vec::new(),
        rules: Mutex::new(node.rules),
        rates: Mutex::new(BTreeMap::new()),
        config_path: node.config_path,
        privileges: Mutex::new(serde_json::json!({
            "uid": nix::unistd::Uid::effective().as_raw(),
        })),
    });
    let (control, mut requests) = mpsc::channel::<Control>(4);
    tokio::spawn(async move {
        while let Some(Control::Reload(reply)) = requests.recv().await {
            let _ = reply.send(Err(
                "a central node does not reload its rules yet: restart it to load new rules"
                    .to_string(),
            ));
        }
    });
    let store = node.store.clone();
    let shared = Shared {
        store: Arc::new(node.store),
        metrics: node.metrics,
        control,
        info,
        fleet: Some(Arc::new(FleetView {
            bus: node.bus,
            leases,
            node_id: node.node_id,
            urls: node.nats_urls,
            stats: node.stats,
        })),
    };
    let mut set = super::serve(cfg, shared, shutdown.clone()).await?;
    let mut sd = shutdown;
    set.spawn(async move {
        let _ = sd.wait_for(|stop| *stop).await;
        store.close();
    });
    Ok(set)
}
