//! Partition checkpoints of the central correlators.
//!
//! Per events stream and partition, one row of `partition_checkpoints`: the detector state of the
//! partition's worker (as [`correlator::Detector::export_state`] wrote it), the stream sequence it
//! covers (every message up to it has been fed to that state, none after), and the owner's epoch.
//!
//! - A worker that takes a partition [`FleetStore::claim_partition`]s it: the epoch goes up by one
//!   and the last checkpoint comes back, to restore from.
//! - It records alerts (and, when due, a new checkpoint) with [`FleetStore::record_checkpointed`]:
//!   one transaction that first locks the row and compares the epoch. A worker whose partition was
//!   claimed by another node since (a stalled node past its lease) gets [`FleetError::Fenced`] and
//!   writes nothing; the row lock orders it against the claim, so there is no window between the
//!   check and the write.
//!
//! Alerts and the checkpoint after them commit together; alerts recorded between checkpoints are
//! produced again by the replay after a takeover and recognised by their uniqueness key.

use std::time::Duration;

use correlator::Alert;

use super::{record_in, FleetStore, Recorded};
use crate::FleetError;

/// The schema version this build writes (the number of migrations it knows).
pub fn supported_schema_version() -> i64 {
    super::schema::current_version()
}

/// The detector state of a partition and how far into the stream it reaches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    /// Stream sequence of the last message fed to `state` (0: none).
    pub stream_seq: u64,
    /// Newest event time seen (the worker's watermark reference), if any.
    pub max_event_ns: Option<i64>,
    /// The detectors' exported state (JSON text); empty when there is none yet.
    pub state: Vec<u8>,
}

/// What [`FleetStore::claim_partition`] hands the new owner.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The owner's epoch: every write of this worker is checked against it.
    pub epoch: i64,
    /// The last checkpoint, if the partition ever had one.
    pub checkpoint: Option<PartitionCheckpoint>,
}

/// One partition as the checkpoint table says (for status output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRow {
    pub partition: u32,
    pub owner: String,
    pub epoch: i64,
    pub stream_seq: u64,
    pub state_bytes: u64,
    pub claimed_ns: i64,
    pub updated_ns: i64,
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl FleetStore {
    /// Takes `partition` of `stream` for `owner`: raises its epoch (fencing out the previous owner)
    /// and returns the last checkpoint.
    pub async fn claim_partition(
        &mut self,
        stream: &str,
        partition: u32,
        owner: &str,
        now_ns: i64,
    ) -> Result<Claim, FleetError> {
        let p = i32::try_from(partition)
            .map_err(|_| FleetError::Config(format!("partition {partition} out of range")))?;
        let r = async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "INSERT INTO partition_checkpoints AS c (stream, partition, epoch, owner, claimed_ns, updated_ns)
                     VALUES ($1, $2, 1, $3, $4, $4)
                     ON CONFLICT (stream, partition) DO UPDATE
                       SET epoch = c.epoch + 1, owner = EXCLUDED.owner, claimed_ns = EXCLUDED.claimed_ns
                     RETURNING epoch, stream_seq, max_event_ns, state",
                    &[&stream, &p, &owner, &now_ns],
                )
                .await
                .map_err(FleetError::pg(format!("claiming partition {partition}")))?;
            let seq: i64 = row.get(1);
            let state: Option<Vec<u8>> = row.get(3);
            let checkpoint = (seq > 0 || state.is_some()).then(|| PartitionCheckpoint {
                stream_seq: u64::try_from(seq).unwrap_or(0),
                max_event_ns: row.get(2),
                state: state.unwrap_or_default(),
            });
            Ok(Claim {
                epoch: row.get(0),
                checkpoint,
            })
        }
        .await;
        if let Err(e) = &r {
            self.forget_on(e);
        }
        r
    }

    /// Records `alerts` and, if given, the partition's new checkpoint, in one transaction, provided
    /// `epoch` is still the partition's epoch ([`FleetError::Fenced`] otherwise, nothing written).
    pub async fn record_checkpointed(
        &mut self,
        stream: &str,
        partition: u32,
        epoch: i64,
        alerts: &[Alert],
        checkpoint: Option<&PartitionCheckpoint>,
        now_ns: i64,
    ) -> Result<Vec<Recorded>, FleetError> {
        let p = i32::try_from(partition)
            .map_err(|_| FleetError::Config(format!("partition {partition} out of range")))?;
        let cfg = self.cfg.clone();
        let r = async {
            let client = self.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(FleetError::pg("recording a checkpoint: begin"))?;
            let current: i64 = tx
                .query_opt(
                    "SELECT epoch FROM partition_checkpoints WHERE stream = $1 AND partition = $2 FOR UPDATE",
                    &[&stream, &p],
                )
                .await
                .map_err(FleetError::pg("recording a checkpoint: reading the epoch"))?
                .map_or(0, |r| r.get(0));
            if current != epoch {
                return Err(FleetError::Fenced {
                    partition,
                    ours: epoch,
                    current,
                });
            }
            let mut out = Vec::with_capacity(alerts.len());
            for a in alerts {
                out.push(
                    record_in(&tx, &cfg, a, now_ns)
                        .await
                        .map_err(FleetError::pg(format!(
                            "recording an alert of rule {}",
                            a.rule_id
                        )))?,
                );
            }
            if let Some(c) = checkpoint {
                tx.execute(
                    "UPDATE partition_checkpoints SET stream_seq = $3, max_event_ns = $4, state = $5, updated_ns = $6
                     WHERE stream = $1 AND partition = $2",
                    &[&stream, &p, &seq_i64(c.stream_seq), &c.max_event_ns, &c.state, &now_ns],
                )
                .await
                .map_err(FleetError::pg("recording a checkpoint"))?;
            }
            tx.commit()
                .await
                .map_err(FleetError::pg("recording a checkpoint: commit"))?;
            Ok(out)
        }
        .await;
        if let Err(e) = &r {
            self.forget_on(e);
        }
        r
    }

    /// [`FleetStore::record_checkpointed`] that waits out an outage of PostgreSQL (reconnecting
    /// and retrying with backoff up to 2 s, as [`FleetStore::record_batch_durable`]); a fence or a
    /// fault in the data is returned at once.
    pub async fn record_checkpointed_durable(
        &mut self,
        stream: &str,
        partition: u32,
        epoch: i64,
        alerts: &[Alert],
        checkpoint: Option<&PartitionCheckpoint>,
        now_ns: impl Fn() -> i64,
    ) -> Result<Vec<Recorded>, FleetError> {
        let mut delay = Duration::from_millis(50);
        let mut tries = 0u64;
        loop {
            match self
                .record_checkpointed(stream, partition, epoch, alerts, checkpoint, now_ns())
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) if e.is_transient() => {
                    if tries == 0 {
                        tracing::warn!(error = %e, partition, alerts = alerts.len(), "fleet alert store unavailable; alerts and checkpoint wait and are retried");
                    }
                    tries += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every partition of `stream` in the checkpoint table, by partition.
    pub async fn partition_rows(&mut self, stream: &str) -> Result<Vec<PartitionRow>, FleetError> {
        let r = async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT partition, owner, epoch, stream_seq, coalesce(octet_length(state), 0)::BIGINT, claimed_ns, updated_ns
                     FROM partition_checkpoints WHERE stream = $1 ORDER BY partition",
                    &[&stream],
                )
                .await
                .map_err(FleetError::pg("reading partition checkpoints"))?;
            Ok(rows
                .iter()
                .map(|r| PartitionRow {
                    partition: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
                    owner: r.get(1),
                    epoch: r.get(2),
                    stream_seq: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                    state_bytes: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
                    claimed_ns: r.get(5),
                    updated_ns: r.get(6),
                })
                .collect())
        }
        .await;
        if let Err(e) = &r {
            self.forget_on(e);
        }
        r
    }
}
