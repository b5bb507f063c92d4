//! The container metadata helper: a separate process, started (as root) just before the daemon
//! drops its privileges, that reads the container runtimes' root-only files and API sockets for
//! the daemon, which has no capability left (see `privilege.rs`).
//!
//! Why a process and not a thread that keeps a capability: capabilities are per thread, but every
//! thread shares the address space, so code running in any thread of the daemon (which parses
//! network input) could use a capability another thread kept. A process has its own. It is the
//! `sensor` binary itself (`sensor container-meta-helper`, hidden), exec'd fresh (not a bare fork
//! of a multi-threaded process), talking over a socket pair on its stdin with the strict, bounded
//! line protocol of `sensor_kernel::container::helper`: requests carry a runtime name, a container
//! id (64 hex digits, so it can never name another path) and a pod uid, nothing else; it reads no
//! network input and has no socket but that one.
//!
//! What it keeps, once confined ([`confine`]), before reading its first request:
//! - the daemon's user and group (no root uid: root-owned files it could write by ownership are
//!   out of reach);
//! - `CAP_DAC_READ_SEARCH` (read the runtimes' 0600/0700 files and directories) and
//!   `CAP_DAC_OVERRIDE` (connect(2) to a root-only API socket needs write permission on the socket
//!   file, which DAC_READ_SEARCH does not give), nothing else, and a bounding set of those two;
//! - a Landlock domain that refuses every filesystem change (write, truncate, create, remove,
//!   rename, link, device ioctl) and exec, every TCP bind/connect, and signals and abstract Unix
//!   sockets outside itself, so that DAC_OVERRIDE can only open for reading and connect to Unix
//!   sockets. Where Landlock is not available DAC_OVERRIDE is dropped as well (the API sockets are
//!   then reachable only if the user may write them; `sensor status` names those that are not);
//! - `no_new_privs` (inherited from `sensor run`, set again).

use std::collections::HashSet;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid};
use sensor_kernel::container::{helper, meta::MetaReader, ContainerConfig, SharedStatus};

/// Starts the helper as root, for a daemon that will become `uid`/`gid`, and installs its
/// connection for the kernel sensor's resolver. Failing to start is not fatal: containers are
/// then named by id alone (warned).
pub(crate) fn start(cfg: &ContainerConfig, uid: Uid, gid: Gid) {
    match spawn(cfg, uid, gid) {
        Ok(conn) => helper::install(conn),
        Err(e) => tracing::warn!(
            message = "cannot start the container metadata helper: containers first seen after the privilege drop are named by id only",
            error = %e
        ),
    }
}

fn spawn(cfg: &ContainerConfig, uid: Uid, gid: Gid) -> Result<helper::HelperConn, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let child = Command::new(exe)
        .arg("container-meta-helper")
        .arg("--uid")
        .arg(uid.to_string())
        .arg("--gid")
        .arg(gid.to_string())
        .arg("--podman-socket")
        .arg(&cfg.podman_socket)
        .arg("--docker-socket")
        .arg(&cfg.docker_socket)
        .arg("--api-timeout-ms")
        .arg(cfg.api_timeout_ms.to_string())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(std::env::var_os("SENSOR_LOG").map(|v| ("SENSOR_LOG", v)))
        .envs(std::env::var_os("NO_COLOR").map(|v| ("NO_COLOR", v)))
        .spawn()
        .map_err(|e| format!("starting `sensor container-meta-helper`: {e}"))?;
    // One answer: the files, then at most two API requests of `api_timeout_ms` each.
    let timeout =
        Duration::from_millis(cfg.api_timeout_ms.saturating_mul(4)) + Duration::from_secs(5);
    helper::HelperConn::new(ours, timeout, Some(child)).map_err(|e| format!("socket pair: {e}"))
}

/// The helper's arguments (from the daemon, never from a user).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    uid: u32,
    #[arg(long)]
    gid: u32,
    #[arg(long)]
    podman_socket: std::path::PathBuf,
    #[arg(long)]
    docker_socket: std::path::PathBuf,
    #[arg(long, default_value_t = 500)]
    api_timeout_ms: u64,
}

/// `sensor container-meta-helper`: confine, then answer on stdin until the daemon closes it.
pub fn main(a: &Args) -> Result<(), String> {
    // SAFETY: fd 0 is the socket pair the daemon gave; this process owns it from here on.
    let stream = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(0) };
    let kept = confine(Uid::from_raw(a.uid), Gid::from_raw(a.gid))?;
    tracing::info!(uid = a.uid, capabilities = ?kept, "container metadata helper confined");
    let cfg = ContainerConfig {
        podman_socket: a.podman_socket.clone(),
        docker_socket: a.docker_socket.clone(),
        api_timeout_ms: a.api_timeout_ms,
        ..ContainerConfig::default()
    };
    let mut reader = MetaReader::new(&cfg, SharedStatus::default());
    helper::serve(stream, &mut reader).map_err(|e| format!("talking to the daemon: {e}"))
}

/// Becomes `uid`/`gid` with only the two DAC capabilities (one if Landlock is not there), under a
/// Landlock domain; checks the result from /proc. Returns the capabilities kept.
pub(crate) fn confine(uid: Uid, gid: Gid) -> Result<Vec<Capability>, String> {
    if uid.is_root() || gid.as_raw() == 0 {
        return Err("the helper must run as the daemon's unprivileged user and group".into());
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("prctl(PR_SET_NO_NEW_PRIVS): {e}"))?;
    let landlock = landlock::restrict();
    let mut keep = vec![Capability::CAP_DAC_READ_SEARCH];
    match &landlock {
        Ok(status) => {
            keep.push(Capability::CAP_DAC_OVERRIDE);
            tracing::debug!(?status, "landlock domain in force");
        }
        Err(e) => tracing::warn!(
            message = "Landlock is not available: the container metadata helper keeps CAP_DAC_READ_SEARCH only (root-only runtime API sockets are then not reachable)",
            error = %e
        ),
    }
    let keep_set: HashSet<Capability> = keep.iter().copied().collect();
    // The capabilities this kernel knows (an older kernel refuses to drop one it does not).
    for c in caps::runtime::thread_all_supported() {
        if !keep_set.contains(&c) {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(|e| format!("dropping {c} from the bounding set: {e}"))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("prctl(PR_SET_KEEPCAPS): {e}"))?;
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid({gid}): {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid({uid}): {e}"))?;
    caps::set(None, CapSet::Permitted, &keep_set).map_err(|e| format!("capset: {e}"))?;
    caps::set(None, CapSet::Effective, &keep_set).map_err(|e| format!("capset: {e}"))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| format!("capset: {e}"))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clearing ambient: {e}"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("prctl(PR_SET_KEEPCAPS): {e}"))?;
    // Checked from the kernel's view, not assumed.
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .map_err(|e| format!("/proc/thread-self/status: {e}"))?;
    let want: u64 = keep.iter().map(|c| 1u64 << c.index()).sum();
    for line in status.lines() {
        for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
            if let Some(v) = line.strip_prefix(key) {
                if u64::from_str_radix(v.trim(), 16) != Ok(want) {
                    return Err(format!("after confinement {key} is {}", v.trim()));
                }
            }
        }
        if let Some(ids) = line.strip_prefix("Uid:") {
            if ids.split_whitespace().any(|i| i != uid.to_string()) {
                return Err(format!("after confinement the uids are {}", ids.trim()));
            }
        }
    }
    Ok(keep)
}

/// The Landlock domain, through the `landlock` crate (the uapi's maintained Rust binding), best
/// effort: a kernel with an older ABI enforces what it knows.
mod landlock {
    use ::landlock::{
        Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetStatus, Scope, ABI,
    };

    /// The newest ABI asked for (6: TCP bind/connect since 4, abstract-socket and signal scopes).
    const ABI_WANTED: ABI = ABI::V6;

    /// Restricts this process (and what it may ever start): reading files and directories is
    /// all the filesystem allows (no write, create, remove, exec); no TCP bind or connect; no
    /// signal or abstract socket outside the domain. Returns how fully that is enforced.
    pub(super) fn restrict() -> Result<RulesetStatus, String> {
        let err = |e: ::landlock::RulesetError| format!("landlock: {e}");
        let fs = AccessFs::from_all(ABI_WANTED) & !(AccessFs::ReadFile | AccessFs::ReadDir);
        let status = Ruleset::default()
            .handle_access(fs)
            .map_err(err)?
            .handle_access(AccessNet::from_all(ABI_WANTED))
            .map_err(err)?
            .scope(Scope::from_all(ABI_WANTED))
            .map_err(err)?
            .create()
            .map_err(err)?
            .restrict_self()
            .map_err(err)?;
        match status.ruleset {
            RulesetStatus::NotEnforced => Err("this kernel does not enforce Landlock".into()),
            enforced => Ok(enforced),
        }
    }
}
