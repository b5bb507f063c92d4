//! Periodic work beside the store thread: retention, the store-size gauge, per-source event rates.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::DaemonInfo;
use crate::clock::wall_ns;
use crate::metrics::Metrics;
use crate::store::StoreHandle;

/// Retention on its interval, the store-size gauge and per-source event rates every few seconds.
pub(crate) async fn run(
    store: StoreHandle,
    metrics: Arc<Metrics>,
    info: Arc<DaemonInfo>,
    retention_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let sample = Duration::from_secs(5);
    let mut tick = tokio::time::interval(sample);
    let mut since_retention = Duration::MAX;
    let mut last: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let mut rates = std::collections::BTreeMap::new();
        for (name, c) in metrics.sources() {
            let n = c.events_in.load(Relaxed);
            let prev = last.insert(name.clone(), n).unwrap_or(n);
            #[allow(clippy::cast_precision_loss)]
            rates.insert(name, (n - prev) as f64 / sample.as_secs_f64());
        }
        *info
            .rates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rates;
        let run_retention = since_retention >= retention_every;
        since_retention = if run_retention {
            Duration::ZERO
        } else {
            since_retention + sample
        };
        let res = store
            .call(move |s| {
                let r = if run_retention {
                    Some(s.apply_retention(wall_ns()))
                } else {
                    None
                };
                (r, s.stats())
            })
            .await;
        match res {
            Some((r, stats)) => {
                if let Some(Ok(r)) = r {
                    if r.deleted_by_age + r.deleted_by_size > 0 {
                        tracing::info!(
                            by_age = r.deleted_by_age,
                            by_size = r.deleted_by_size,
                            "retention deleted old alerts"
                        );
                    }
                } else if let Some(Err(e)) = r {
                    tracing::warn!(error = %e, "retention failed");
                }
                if let Ok(s) = stats {
                    metrics.store_bytes.store(s.file_bytes, Relaxed);
                }
            }
            None => return,
        }
    }
}
