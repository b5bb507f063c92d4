//! The fleet alert store as an [`AlertStore`], for a central node's control API: one connection
//! shared by the API's requests, and `alerts tail` by polling for new rows.
//!
//! New alerts are found by id: each follower asks for the rows above the highest id it has passed.
//! PostgreSQL hands out ids when rows are inserted, not when they commit, so a row may become
//! visible after a higher one; a follower therefore does not pass an id it has not seen until
//! [`GAP_WAIT`] is over (a rolled-back transaction leaves a gap for ever), and it remembers the ids
//! above it that it has already sent.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use alert_store::{
    AccessError, AlertDetail, AlertFilter, AlertStore, AlertStream, StatusChange, StoreStats,
    StoredAlert,
};
use tokio::sync::{mpsc, watch, Mutex};

use super::FleetStore;
use crate::{FleetError, PostgresConfig};

/// How long a follower waits for a missing id below ids it has seen (an insert not yet committed)
/// before it takes the id for a rolled-back one.
pub(crate) const GAP_WAIT: Duration = Duration::from_secs(30);

/// The fleet alert store shared by a control API's requests (cheap to clone).
#[derive(Clone)]
pub struct FleetAlerts {
    store: Arc<Mutex<FleetStore>>,
    poll: Duration,
    closed: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for FleetAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetAlerts")
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl FleetAlerts {
    /// Connects (reading the password and TLS files) and migrates the schema.
    pub async fn connect(cfg: &PostgresConfig) -> Result<FleetAlerts, FleetError> {
        Ok(FleetAlerts::new(FleetStore::connect(cfg).await?))
    }

    pub fn new(store: FleetStore) -> FleetAlerts {
        FleetAlerts {
            store: Arc::new(Mutex::new(store)),
            poll: Duration::from_millis(500),
            closed: Arc::new(watch::Sender::new(false)),
        }
    }

    /// How often a follower asks for new alerts (500 ms by default).
    #[must_use]
    pub fn with_poll_interval(mut self, poll: Duration) -> FleetAlerts {
        self.poll = poll;
        self
    }

    /// Ends every follower's stream (at shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    async fn highest_id(&self) -> Result<i64, FleetError> {
        let mut st = self.store.lock().await;
        let r = async {
            let client = st.client().await?;
            client
                .query_one("SELECT coalesce(max(id), 0) FROM alerts", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .map_err(FleetError::pg("reading the highest alert id"))
        }
        .await;
        if let Err(e) = &r {
            st.forget_on(e);
        }
        r
    }
}

fn access(e: FleetError) -> AccessError {
    match e {
        FleetError::NotFound(id) => AccessError::NotFound(id),
        e if e.is_transient() => {
            AccessError::Unavailable(format!("the fleet alert store is unreachable: {e}"))
        }
        e => AccessError::Failed(e.to_string()),
    }
}

#[async_trait::async_trait]
impl AlertStore for FleetAlerts {
    async fn list(&self, filter: AlertFilter) -> Result<Vec<StoredAlert>, AccessError> {
        self.store.lock().await.list(&filter).await.map_err(access)
    }

    async fn get(&self, id: i64) -> Result<AlertDetail, AccessError> {
        let mut st = self.store.lock().await;
        let r = st.get(id).await;
        if let Err(e) = &r {
            st.forget_on(e);
        }
        r.map_err(access)
    }

    async fn set_status(&self, id: i64, c: StatusChange) -> Result<StoredAlert, AccessError> {
        let mut st = self.store.lock().await;
        let r = st
            .set_status(id, c.status, &c.actor, &c.reason, c.now_ns)
            .await;
        if let Err(e) = &r {
            st.forget_on(e);
        }
        r.map_err(access)
    }

    async fn stats(&self) -> Result<StoreStats, AccessError> {
        let mut st = self.store.lock().await;
        let r = st.stats().await;
        if let Err(e) = &r {
            st.forget_on(e);
        }
        r.map_err(access)
    }

    async fn ready(&self) -> Result<(), AccessError> {
        self.highest_id().await.map(|_| ()).map_err(access)
    }

    async fn tail(&self) -> Result<AlertStream, AccessError> {
        let floor = self.highest_id().await.map_err(access)?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(follow(self.clone(), floor, tx));
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|a| (a, rx)) },
        )))
    }
}

/// Sends every alert with an id above `floor` as it becomes visible, until the receiver goes away
/// or the store is closed.
async fn follow(alerts: FleetAlerts, mut floor: i64, tx: mpsc::Sender<StoredAlert>) {
    let mut closed = alerts.closed.subscribe();
    let mut sent: BTreeSet<i64> = BTreeSet::new();
    let mut gap: Option<(i64, tokio::time::Instant)> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(alerts.poll) => {}
            _ = closed.changed() => {}
            () = tx.closed() => return,
        }
        if *closed.borrow() {
            return;
        }
        let filter = AlertFilter {
            after_id: Some(floor),
            limit: Some(AlertFilter::DEFAULT_LIMIT),
            ..AlertFilter::default()
        };
        let rows = match alerts.store.lock().await.list(&filter).await {
            Ok(rows) => rows,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "alerts tail: cannot read the fleet alert store; retrying");
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        for a in rows {
            if sent.insert(a.id) && tx.send(a).await.is_err() {
                return;
            }
        }
        // Pass every id up to the first one not seen yet; a gap below seen ids is passed only once
        // it has stayed a gap for GAP_WAIT.
        loop {
            if sent.remove(&(floor + 1)) {
                floor += 1;
                continue;
            }
            let Some(&lowest) = sent.first() else {
                gap = None;
                break;
            };
            match gap {
                Some((upto, since)) if since.elapsed() >= GAP_WAIT => {
                    floor = floor.max(upto);
                    sent = sent.split_off(&(floor + 1));
                    gap = None;
                }
                Some(_) => break,
                None => {
                    gap = Some((lowest - 1, tokio::time::Instant::now()));
                    break;
                }
            }
        }
    }
}
