//! Shared by the fleet tests: the real ingest spool as an edge journal.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicBool, Ordering};

use fleet::edge::{Journal, JournalReader};
use fleet::FleetError;
use ingest::{Spool, SpoolReader};

/// The ingest spool as the edge's journal. `commit_enabled = false` plays an edge that dies after
/// publishing and before committing: its checkpoint never moves.
pub struct SpoolJournal {
    pub spool: Spool,
    pub commit_enabled: AtomicBool,
}

pub struct Reader<'a>(SpoolReader<'a>);

impl JournalReader for Reader<'_> {
    fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, FleetError> {
        self.0
            .next_batch(max)
            .map_err(|e| FleetError::Spool(e.to_string()))
    }
}

impl Journal for SpoolJournal {
    type Reader<'a> = Reader<'a>;
    fn reader(&self, after: u64) -> Reader<'_> {
        Reader(self.spool.reader(after))
    }
    fn committed(&self) -> u64 {
        self.spool.committed()
    }
    fn commit(&self, seq: u64) -> Result<(), FleetError> {
        if self.commit_enabled.load(Ordering::SeqCst) {
            self.spool
                .commit(seq)
                .map_err(|e| FleetError::Spool(e.to_string()))?;
        }
        Ok(())
    }
    fn wait_beyond(&self, seq: u64) -> impl std::future::Future<Output = ()> + Send {
        self.spool.wait_beyond(seq)
    }
}

impl SpoolJournal {
    pub fn open(dir: &std::path::Path) -> anyhow::Result<SpoolJournal> {
        Ok(SpoolJournal {
            spool: Spool::open(dir, ingest::SpoolLimits::default())?,
            commit_enabled: AtomicBool::new(true),
        })
    }
}
