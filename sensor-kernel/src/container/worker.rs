//! Metadata off the kernel reader's path: the resolver gives a new container its id at once and
//! queues a request here (a bounded queue); this thread asks the runtimes (in this process, or
//! through the privileged helper when the daemon dropped its privileges) and sends the answer
//! back, which the process table puts on the container's processes at its next drain. A slow or
//! unreachable runtime therefore never holds up the ring buffer's consumer.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

use super::helper::HelperConn;
use super::meta::MetaReader;
use super::{CgroupMatch, Container, ContainerConfig, SharedStatus};

/// Requests waiting for the worker at most.
pub const QUEUE: usize = 256;

/// Where the worker gets metadata.
enum Source {
    /// This process reads the runtimes' files and sockets itself.
    Local(MetaReader),
    /// The privileged helper does (the daemon dropped its privileges).
    Helper(HelperConn),
    /// The helper failed: ids only from then on.
    Gone,
}

/// The resolver's end.
pub struct Worker {
    requests: SyncSender<CgroupMatch>,
    answers: Receiver<Container>,
}

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: try again later.
    Full,
    /// The worker is gone.
    Gone,
}

impl Worker {
    /// Starts the worker thread, with the installed helper (see [`super::helper::install`]) when
    /// there is one, else reading in this process.
    pub fn start(cfg: &ContainerConfig, status: SharedStatus) -> Option<Worker> {
        let source = match super::helper::take() {
            Some(h) => {
                tracing::info!(
                    "container metadata read by the privileged helper process (the daemon has no capability)"
                );
                Source::Helper(h)
            }
            None => Source::Local(MetaReader::new(cfg, status.clone())),
        };
        let (req_tx, req_rx) = mpsc::sync_channel::<CgroupMatch>(QUEUE);
        let (ans_tx, ans_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("container-meta".into())
            .spawn(move || run(source, &req_rx, &ans_tx, &status));
        match spawned {
            Ok(_) => Some(Worker {
                requests: req_tx,
                answers: ans_rx,
            }),
            Err(e) => {
                tracing::warn!(message = "cannot start the container metadata thread: containers are named by id only", error = %e);
                None
            }
        }
    }

    /// Queues a request for the container `m` names, without waiting.
    pub fn request(&self, m: &CgroupMatch) -> Result<(), Refused> {
        match self.requests.try_send(m.clone()) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Gone),
        }
    }

    /// An answer that arrived, if any.
    pub fn answer(&self) -> Option<Container> {
        self.answers.try_recv().ok()
    }
}

const HELPER_KEY: &str = "container metadata helper";

fn run(
    mut source: Source,
    requests: &Receiver<CgroupMatch>,
    answers: &mpsc::Sender<Container>,
    status: &SharedStatus,
) {
    while let Ok(m) = requests.recv() {
        let c = match &mut source {
            Source::Local(r) => r.describe(&m),
            Source::Helper(h) => match h.ask(&m) {
                Ok(a) => {
                    if let Some(e) = &a.error {
                        tracing::warn!(message = "the container metadata helper refused a request", id = %m.id, error = %e);
                    }
                    set_unreachable(status, a.unreachable.clone());
                    a.into_container(&m)
                }
                Err(e) => {
                    tracing::warn!(message = "the container metadata helper failed: containers seen from now on are named by id only", error = %e);
                    if let Ok(mut s) = status.lock() {
                        s.unreachable.insert(HELPER_KEY.into(), e);
                    }
                    source = Source::Gone;
                    id_only(&m)
                }
            },
            Source::Gone => id_only(&m),
        };
        tracing::info!(
            message = "container described",
            id = %c.id,
            runtime = %c.runtime,
            name = c.name.as_deref().unwrap_or(""),
            image = c.image_name.as_deref().unwrap_or(""),
            pod = c.pod_name.as_deref().unwrap_or(""),
            namespace = c.namespace.as_deref().unwrap_or(""),
        );
        if answers.send(c).is_err() {
            return;
        }
    }
}

/// The helper's view of the API sockets replaces ours (the helper is the one that reads them).
fn set_unreachable(status: &SharedStatus, now: BTreeMap<String, String>) {
    if let Ok(mut s) = status.lock() {
        let helper = s.unreachable.remove(HELPER_KEY);
        s.unreachable = now;
        if let Some(h) = helper {
            s.unreachable.insert(HELPER_KEY.into(), h);
        }
    }
}

/// A container known by its id and runtime alone.
pub fn id_only(m: &CgroupMatch) -> Container {
    let mut c = Container {
        id: m.id.clone(),
        runtime: m.runtime.to_string(),
        pod_uid: m.pod_uid.clone(),
        ..Container::default()
    };
    if matches!(m.runtime, "systemd-nspawn" | "lxc") {
        c.name = Some(m.id.clone());
    }
    c.build_fields();
    c
}
