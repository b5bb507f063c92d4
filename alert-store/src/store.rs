//! [`AlertStore`]: what the control API asks of an alert store, whichever it is.

use futures_util::stream::BoxStream;

use crate::{AlertDetail, AlertFilter, Status, StoreStats, StoredAlert};

/// New alerts as they are stored, oldest first; it ends when the store shuts down.
pub type AlertStream = BoxStream<'static, StoredAlert>;

/// Why a store could not answer. The control API answers 404, 503 and 500 for them.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no alert with id {0}")]
    NotFound(i64),
    /// The store is shutting down, or its server cannot be reached now: retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (bad data in a row, a failed query), with the store's own message.
    #[error("{0}")]
    Failed(String),
}

/// A status change: who, why and when (the caller's wall clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub status: Status,
    pub actor: String,
    pub reason: String,
    pub now_ns: i64,
}

/// An alert store as the control API uses it: the SQLite store of one host
/// (`sensor::store::LocalAlerts`) or the fleet's PostgreSQL store (`fleet::pg::FleetAlerts`).
/// Acknowledging, closing, suppressing and reopening are [`AlertStore::set_status`].
#[async_trait::async_trait]
pub trait AlertStore: Send + Sync + 'static {
    /// Alerts matching `filter`, newest first (by id), or oldest first after `filter.after_id`.
    async fn list(&self, filter: AlertFilter) -> Result<Vec<StoredAlert>, AccessError>;

    /// One alert with its evidence and history.
    async fn get(&self, id: i64) -> Result<AlertDetail, AccessError>;

    /// Changes an alert's status (once for everyone who reads this store) with a history entry.
    async fn set_status(&self, id: i64, change: StatusChange) -> Result<StoredAlert, AccessError>;

    /// Counts and sizes.
    async fn stats(&self) -> Result<StoreStats, AccessError>;

    /// Whether the store answers (the control API's `/readyz`).
    async fn ready(&self) -> Result<(), AccessError>;

    /// New alerts (not repeats folded into one) stored after this call returns, as they are
    /// stored.
    async fn tail(&self) -> Result<AlertStream, AccessError>;
}
