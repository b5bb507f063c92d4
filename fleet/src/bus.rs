//! The bus: a NATS connection with JetStream, and the fleet's streams.
//!
//! Streams (one per kind of message, subjects cut by partition):
//! - `<PREFIX>_EVENTS`: `<prefix>.events.<partition>`, normalised ECS events from edges and gateways;
//! - `<PREFIX>_ALERTS`: `<prefix>.alerts.<partition>`, the alerts edges raised locally.
//!
//! Every message carries a `Nats-Msg-Id` (`<edge id>:<journal sequence>`), so a message republished
//! after a lost acknowledgement within the stream's duplicate window is stored once.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::{FleetConfig, FleetError, NatsConfig};

/// The state of a bus connection (`bus.client.connection_state()`).
pub use async_nats::connection::State as ConnectionState;

/// What a message on the bus is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Event,
    Alert,
}

impl Kind {
    pub fn token(self) -> &'static str {
        match self {
            Kind::Event => "events",
            Kind::Alert => "alerts",
        }
    }

    /// The journal record tag of this kind (see [`crate::edge`]).
    pub fn tag(self) -> u8 {
        match self {
            Kind::Event => b'E',
            Kind::Alert => b'A',
        }
    }

    pub fn from_tag(t: u8) -> Option<Kind> {
        match t {
            b'E' => Some(Kind::Event),
            b'A' => Some(Kind::Alert),
            _ => None,
        }
    }
}

/// Subject and stream names of one fleet.
#[derive(Clone, Debug)]
pub struct Names {
    pub prefix: String,
    pub partitions: u32,
}

impl Names {
    pub fn new(cfg: &FleetConfig) -> Names {
        Names {
            prefix: cfg.nats.subject_prefix.clone(),
            partitions: cfg.partitions,
        }
    }

    pub fn subject(&self, kind: Kind, partition: u32) -> String {
        format!("{}.{}.{partition}", self.prefix, kind.token())
    }

    pub fn stream(&self, kind: Kind) -> String {
        format!(
            "{}_{}",
            self.prefix.to_ascii_uppercase(),
            kind.token().to_ascii_uppercase()
        )
    }

    /// The KV bucket of partition leases (used by central correlators).
    pub fn lease_bucket(&self) -> String {
        format!("{}_leases", self.prefix)
    }
}

/// A connection to the bus.
#[derive(Clone, Debug)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub names: Names,
}

/// The connect options for `cfg`: credentials and TLS read from their files.
pub fn connect_options(
    cfg: &NatsConfig,
    name: &str,
) -> Result<async_nats::ConnectOptions, FleetError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None);
    if let (Some(user), Some(pw)) = (&cfg.user, &cfg.password_file) {
        opts = opts.user_and_password(user.clone(), crate::read_secret("NATS password file", pw)?);
    }
    if let Some(seed) = &cfg.nkey_seed_file {
        opts = opts.nkey(crate::read_secret("NATS nkey seed file", seed)?);
    }
    if let Some(tls) = &cfg.tls {
        opts = opts
            .tls_client_config(crate::tls::client_config(tls)?)
            .require_tls(true);
    }
    Ok(opts)
}

impl Bus {
    /// Connects. Returns at once even when no server is reachable yet: the client connects and
    /// reconnects in the background, and publishes wait for it (the edge keeps its journal meanwhile).
    pub async fn connect(cfg: &FleetConfig, name: &str) -> Result<Bus, FleetError> {
        cfg.validate()?;
        let opts = connect_options(&cfg.nats, name)?;
        let client = opts
            .connect(cfg.nats.urls.join(","))
            .await
            .map_err(FleetError::nats(format!(
                "connecting to {}",
                cfg.nats.urls.join(",")
            )))?;
        let js = jetstream::new(client.clone());
        Ok(Bus {
            client,
            js,
            names: Names::new(cfg),
        })
    }

    /// Creates the streams when they do not exist (central nodes and tests; edges only publish).
    pub async fn ensure_streams(
        &self,
        cfg: &NatsConfig,
        replicas: usize,
    ) -> Result<(), FleetError> {
        for kind in [Kind::Event, Kind::Alert] {
            let name = self.names.stream(kind);
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.{}.*", self.names.prefix, kind.token())],
                storage: stream::StorageType::File,
                num_replicas: replicas.max(1),
                duplicate_window: Duration::from_secs(cfg.dedup_window_secs),
                retention: stream::RetentionPolicy::Limits,
                ..stream::Config::default()
            };
            self.js
                .get_or_create_stream(config)
                .await
                .map_err(FleetError::nats(format!("creating stream {name}")))?;
        }
        Ok(())
    }
}
