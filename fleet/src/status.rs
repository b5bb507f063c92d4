//! What a central node reports in `sensor status`: the bus connection, the partitions with their
//! owners (the lease bucket) and each partition consumer's lag (JetStream consumer info).

use std::collections::BTreeSet;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::bus::{Bus, Kind};
use crate::central::{consumer_name, owners};

/// The fleet as one central node sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// This node's id (its lease value).
    pub node: String,
    pub bus: BusStatus,
    /// Central nodes alive now (heartbeats in the lease bucket).
    pub nodes: Vec<String>,
    pub partitions: Vec<PartitionStatus>,
    /// Messages waiting in all partitions (sum of `pending`).
    pub pending: u64,
    /// What could not be read (the status is still given with what could).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The connection to NATS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BusStatus {
    pub urls: Vec<String>,
    /// `connected`, `disconnected` or `pending` (not connected yet).
    pub state: String,
    /// The server this node is connected to: `name version` as it announced itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The events stream and how many messages it holds.
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_messages: Option<u64>,
}

/// One partition: who owns it and how far its consumer is behind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub partition: u32,
    /// The node holding its lease (none: free, a node will take it within a lease TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Messages of the partition not yet delivered to its consumer (JetStream `num_pending`).
    pub pending: u64,
    /// Messages delivered and not yet acknowledged (`num_ack_pending`).
    pub ack_pending: u64,
    /// Stream sequence up to which everything is acknowledged.
    pub ack_floor: u64,
    /// False when the partition's consumer does not exist yet (no owner ever took it).
    pub consumer: bool,
}

/// Reads the status. Never fails: what cannot be read is said in `errors`.
pub async fn central_status(
    bus: &Bus,
    leases: &kv::Store,
    node: &str,
    urls: &[String],
) -> FleetStatus {
    let mut st = FleetStatus {
        node: node.to_string(),
        ..FleetStatus::default()
    };
    let info = bus.client.server_info();
    st.bus = BusStatus {
        urls: urls.to_vec(),
        state: match bus.client.connection_state() {
            async_nats::connection::State::Connected => "connected",
            async_nats::connection::State::Disconnected => "disconnected",
            async_nats::connection::State::Pending => "pending",
        }
        .to_string(),
        server: (!info.server_name.is_empty() || !info.version.is_empty())
            .then(|| format!("{} {}", info.server_name, info.version)),
        stream: bus.names.stream(Kind::Event),
        stream_messages: None,
    };
    let owned = match owners(leases, bus.names.partitions).await {
        Ok(o) => o,
        Err(e) => {
            st.errors.push(format!("partition owners: {e}"));
            Default::default()
        }
    };
    match leases.keys().await {
        Ok(mut keys) => {
            let mut nodes = BTreeSet::new();
            while let Some(k) = keys.next().await {
                match k {
                    Ok(k) => {
                        if let Some(n) = k.strip_prefix("node.") {
                            nodes.insert(n.to_string());
                        }
                    }
                    Err(e) => {
                        st.errors.push(format!("live nodes: {e}"));
                        break;
                    }
                }
            }
            st.nodes = nodes.into_iter().collect();
        }
        Err(e) => st.errors.push(format!("live nodes: {e}")),
    }
    let stream = match bus.js.get_stream(bus.names.stream(Kind::Event)).await {
        Ok(mut s) => {
            match s.info().await {
                Ok(i) => st.bus.stream_messages = Some(i.state.messages),
                Err(e) => st.errors.push(format!("stream {}: {e}", st.bus.stream)),
            }
            Some(s)
        }
        Err(e) => {
            st.errors.push(format!("stream {}: {e}", st.bus.stream));
            None
        }
    };
    for p in 0..bus.names.partitions {
        let mut ps = PartitionStatus {
            partition: p,
            owner: owned.get(&p).cloned(),
            ..PartitionStatus::default()
        };
        if let Some(stream) = &stream {
            match stream.consumer_info(consumer_name(p)).await {
                Ok(i) => {
                    ps.consumer = true;
                    ps.pending = i.num_pending;
                    ps.ack_pending = u64::try_from(i.num_ack_pending).unwrap_or(u64::MAX);
                    ps.ack_floor = i.ack_floor.stream_sequence;
                }
                Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {}
                Err(e) => st.errors.push(format!("partition {p} consumer: {e}")),
            }
        }
        st.pending += ps.pending;
        st.partitions.push(ps);
    }
    st
}
