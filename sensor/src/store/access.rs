//! The SQLite store as an [`AlertStore`]: queries run on the store's thread (through its
//! [`StoreHandle`]), new alerts come from the broadcast the store thread publishes what it
//! committed on.

use std::sync::Arc;

use alert_store::{
    AccessError, AlertDetail, AlertFilter, AlertStore, AlertStream, StatusChange, StoreStats,
    StoredAlert,
};
use tokio::sync::broadcast;

use super::{AlertUpdate, StoreError, StoreHandle};

/// The daemon's SQLite store, served by the control API.
#[derive(Clone, Debug)]
pub struct LocalAlerts {
    handle: StoreHandle,
    /// Weak, so that open `alerts tail` connections never keep the outputs from finishing at shutdown.
    updates: broadcast::WeakSender<Arc<AlertUpdate>>,
}

impl LocalAlerts {
    pub fn new(handle: StoreHandle, updates: broadcast::WeakSender<Arc<AlertUpdate>>) -> Self {
        LocalAlerts { handle, updates }
    }
}

fn gone() -> AccessError {
    AccessError::Unavailable("the alert store is shutting down".into())
}

fn access(e: StoreError) -> AccessError {
    match e {
        StoreError::NotFound(id) => AccessError::NotFound(id),
        StoreError::Locked { .. } => AccessError::Unavailable(e.to_string()),
        _ => AccessError::Failed(e.to_string()),
    }
}

#[async_trait::async_trait]
impl AlertStore for LocalAlerts {
    async fn list(&self, filter: AlertFilter) -> Result<Vec<StoredAlert>, AccessError> {
        self.handle
            .call(move |st| st.list(&filter))
            .await
            .ok_or_else(gone)?
            .map_err(access)
    }

    async fn get(&self, id: i64) -> Result<AlertDetail, AccessError> {
        self.handle
            .call(move |st| st.get(id))
            .await
            .ok_or_else(gone)?
            .map_err(access)
    }

    async fn set_status(&self, id: i64, c: StatusChange) -> Result<StoredAlert, AccessError> {
        self.handle
            .call(move |st| st.set_status(id, c.status, &c.actor, &c.reason, c.now_ns))
            .await
            .ok_or_else(gone)?
            .map_err(access)
    }

    async fn stats(&self) -> Result<StoreStats, AccessError> {
        self.handle
            .call(|st| st.stats())
            .await
            .ok_or_else(gone)?
            .map_err(access)
    }

    async fn ready(&self) -> Result<(), AccessError> {
        self.handle.call(|_| ()).await.ok_or_else(gone)
    }

    async fn tail(&self) -> Result<AlertStream, AccessError> {
        let tx = self.updates.upgrade().ok_or_else(gone)?;
        let rx = tx.subscribe();
        drop(tx);
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(u) if u.new => return Some((u.alert.clone(), rx)),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )))
    }
}
