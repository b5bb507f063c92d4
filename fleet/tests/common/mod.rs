//! Shared by the fleet tests: the real ingest spool as an edge journal, with a switch that plays an
//! edge dying between publishing and committing.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicBool, Ordering};

use fleet::edge::Journal;
use fleet::FleetError;
use ingest::{Spool, SpoolReader};

/// The ingest spool as the edge's journal. `commit_enabled = false` plays an edge that dies after
/// publishing and before committing: its checkpoint never moves.
pub struct SpoolJournal {
    pub spool: Spool,
    pub commit_enabled: AtomicBool,
}

impl Journal for SpoolJournal {
    type Reader<'a> = SpoolReader<'a>;
    fn reader(&self, after: u64) -> SpoolReader<'_> {
        Journal::reader(&self.spool, after)
    }
    fn committed(&self) -> u64 {
        Journal::committed(&self.spool)
    }
    fn commit(&self, seq: u64) -> Result<(), FleetError> {
        if self.commit_enabled.load(Ordering::SeqCst) {
            Journal::commit(&self.spool, seq)?;
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

/// A real nats-server and PostgreSQL for a central test: their handles (the servers stop when
/// dropped), the fleet configuration that names them (role central, `partitions`), a bus
/// connection with the streams created, and the alert store.
pub async fn servers(
    partitions: u32,
) -> anyhow::Result<(
    fleet::testing::NatsServer,
    fleet::testing::PgServer,
    fleet::FleetConfig,
    fleet::bus::Bus,
    fleet::pg::FleetStore,
)> {
    let nats = fleet::testing::NatsServer::start();
    let pg = fleet::testing::PgServer::start();
    let cfg = fleet::FleetConfig {
        role: fleet::Role::Central,
        partitions,
        nats: nats.config(),
        postgres: pg.config(),
        ..fleet::FleetConfig::default()
    };
    let bus = fleet::bus::Bus::connect(&cfg, "test").await?;
    bus.ensure_streams(&cfg.nats, 1).await?;
    let store = fleet::pg::FleetStore::connect(&cfg.postgres).await?;
    Ok((nats, pg, cfg, bus, store))
}
