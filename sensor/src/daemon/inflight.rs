//! A byte budget for events on their way from network ingest to the correlator.
//!
//! The queues between them are bounded in events (8,192 each), but a remote agent's event may
//! weigh up to `max_record_bytes` (1 MiB) and more once decoded: counted in events alone, the
//! queues could hold gigabytes. The ingest consumer takes the bytes of each event
//! ([`correlator::eql::sequence::event_bytes`]) from this budget before it hands the event over and
//! waits while the budget is spent; the guard travels with the event and gives the bytes back once
//! the correlator has processed it. The spool keeps everything that waits (nothing is dropped).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Bytes of ingested events held between the ingest consumer and the correlator.
pub(crate) const INGEST_INFLIGHT_BYTES: usize = 64 << 20;

/// A byte budget shared by one producer thread and the consumer of its events.
pub(crate) struct InFlight {
    used: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

/// Bytes taken from a source's in-flight budget, given back on drop.
pub struct InFlightGuard {
    budget: Arc<InFlight>,
    bytes: usize,
}

impl std::fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InFlightGuard({} bytes)", self.bytes)
    }
}

impl InFlight {
    pub(crate) fn new(limit: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            used: Mutex::new(0),
            freed: Condvar::new(),
            limit,
        })
    }

    /// Takes `bytes` (at most the whole budget: one event bigger than it passes alone), blocking
    /// while they do not fit. `stop` is checked every 100 ms; when it turns true the bytes are
    /// taken anyway so that shutdown never waits on the budget.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        bytes: usize,
        stop: impl Fn() -> bool,
    ) -> InFlightGuard {
        let bytes = bytes.min(self.limit);
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used > 0 && *used + bytes > self.limit && !stop() {
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *used += bytes;
        InFlightGuard {
            budget: self.clone(),
            bytes,
        }
    }

    /// Bytes taken now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut used = self
            .budget
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *used = used.saturating_sub(self.bytes);
        drop(used);
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_waits_while_the_budget_is_spent_and_goes_on_when_bytes_come_back() {
        let b = InFlight::new(1000);
        let g1 = b.acquire(600, || false);
        let g2 = b.acquire(400, || false);
        assert_eq!(b.used(), 1000);
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || {
            let g = b2.acquire(300, || false);
            b2.used() + g.bytes - g.bytes
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "took bytes the budget did not have");
        drop(g1);
        assert_eq!(waiter.join().ok(), Some(700));
        drop(g2);
        // One event larger than the whole budget passes alone.
        let big = b.acquire(5000, || false);
        assert_eq!(b.used(), 1000);
        drop(big);
        assert_eq!(b.used(), 0);
        // A stop never waits.
        let _full = b.acquire(1000, || false);
        let _more = b.acquire(10, || true);
    }
}
