//! Least privilege for `sensor run`.
//!
//! Only loading and attaching the kernel programs (and mounting tracefs, binding a port below
//! 1024, reading root-only key files) needs root. So the daemon does all of that first, while every
//! listener is bound but not yet accepting, and then, once, for the whole process:
//!
//! 1. gives the target user the directories it will write (state, spool, store, control socket,
//!    file output) and checks that it can reach them;
//! 2. sets `no_new_privs` (no exec can ever gain privileges back; `sensor run` already set it before
//!    its first thread, since the flag is per thread and only inherited by threads made after it);
//! 3. `setgroups`, `setresgid`, `setresuid` to the target user. glibc applies these to every
//!    thread of the process, and a change from uid 0 to a non-zero uid clears the permitted,
//!    effective and ambient capability sets of each thread, so no thread keeps any capability;
//! 4. checks every thread in `/proc/self/task` (uid, `CapEff`, `CapPrm`) and refuses to go on if
//!    one still has a capability or uid 0;
//! 5. opens the gate (`api::accepts_released`) that the listeners wait on before their first `accept`.
//!
//! Why no capability is kept (not even `CAP_DAC_READ_SEARCH`): capabilities are per thread, and
//! the only process-wide way to change them is the uid change itself, which clears them all. Keeping
//! one would mean `PR_SET_KEEPCAPS` and `capset` on each thread, which cannot be done for threads
//! that already exist (tokio workers, the store thread), so some threads would keep more than
//! intended. What works without any: the ring buffer and map fds stay open (reads and map lookups on
//! an fd need no capability on kernels >= 6.5), the kernel programs stay attached, `/proc/<pid>/stat`,
//! `status`, `cmdline` and `cgroup` stay readable. What does not: `/proc/<pid>/exe` of another user's
//! process loaded lazily after the drop (the table is seeded before it, and exec records carry the
//! path), and root-only files (a 0600 config file cannot be re-read on SIGHUP; the error says so).
//! Container runtimes' root-only files and sockets are read by a separate, confined helper process
//! started before the drop (`meta_helper.rs`), not by a thread of this one.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::Config;

/// The default user: used when it exists and `[privileges] user` is unset.
pub const DEFAULT_USER: &str = "sensor";

/// Closes the accept gate: a drop is coming.
fn hold() {
    crate::api::hold_accepts();
}

/// Opens the accept gate: listeners may accept.
pub(crate) fn release() {
    crate::api::release_accepts();
}

/// Who the daemon becomes, and what it must own and reach once it has.
#[derive(Debug)]
pub(crate) struct Plan {
    user: String,
    uid: Uid,
    gid: Gid,
    /// Directories given to the user with everything in them.
    trees: Vec<(&'static str, PathBuf)>,
    /// Directories given to the user (not their contents).
    dirs: Vec<(&'static str, PathBuf)>,
    /// Files given to the user when they exist.
    files: Vec<PathBuf>,
    /// Files the daemon re-reads later (config on reload, rule files, file sources): only warned
    /// about when the user cannot read them.
    reads: Vec<(&'static str, PathBuf)>,
}

impl Plan {
    pub(crate) fn uid(&self) -> Uid {
        self.uid
    }

    pub(crate) fn gid(&self) -> Gid {
        self.gid
    }
}

/// What the daemon does about privileges, decided before anything starts: `None` when it is not
/// root, when `[privileges] user` is root, or when the default user does not exist (warned). Errors
/// name the setting.
pub(crate) fn plan(cfg: &Config, config_path: Option<&Path>) -> Result<Option<Plan>, String> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let (user, uid, primary_gid) = match cfg.privileges.user.as_deref() {
        None => match User::from_name(DEFAULT_USER) {
            Ok(Some(u)) => (u.name, u.uid, u.gid),
            Ok(None) => {
                tracing::warn!(
                    "user `{DEFAULT_USER}` does not exist: the daemon keeps running as root with every capability; create it (`useradd --system --no-create-home --shell /usr/sbin/nologin {DEFAULT_USER}`, or deploy/systemd/sensor.sysusers) or set [privileges] user"
                );
                return Ok(None);
            }
            Err(e) => {
                return Err(format!(
                    "[privileges] cannot look up user `{DEFAULT_USER}`: {e}"
                ))
            }
        },
        Some("root" | "0") => {
            tracing::warn!("[privileges] user = root: the daemon, network listeners included, keeps running as root");
            return Ok(None);
        }
        Some(name) => lookup_user(name)?,
    };
    if uid.is_root() {
        return Err(format!(
            "[privileges] user `{user}` has uid 0; name an unprivileged user (or \"root\" to keep root)"
        ));
    }
    let gid = match cfg.privileges.group.as_deref() {
        None => primary_gid,
        Some(g) => lookup_group(g)?,
    };
    if gid.as_raw() == 0 {
        return Err(format!(
            "[privileges] group of `{user}` is gid 0 (root); set [privileges] group to an unprivileged group"
        ));
    }
    let mut trees = vec![("state_dir", cfg.state_dir.clone())];
    if cfg.ingest_enabled() {
        let sec = cfg.ingest_config()?;
        trees.push(("[ingest] spool_dir", sec.spool_dir));
    }
    let store = cfg.store_path();
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut add_parent = |what: &'static str, p: &Path| {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            dirs.push((what, d.to_path_buf()));
        }
    };
    add_parent("[store] path", &store);
    add_parent("[api] socket", &cfg.api.socket);
    if let Some(f) = &cfg.outputs.file {
        add_parent("[outputs.file] path", &f.path);
        files.push(f.path.clone());
    }
    if let Some(s) = &cfg.rules.state_file {
        add_parent("the analytics state file", s);
        files.push(s.clone());
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut s = store.clone().into_os_string();
        s.push(suffix);
        files.push(PathBuf::from(s));
    }
    let mut reads = Vec::new();
    if let Some(p) = config_path {
        reads.push(("the config file (re-read on reload)", p.to_path_buf()));
    }
    for p in &cfg.rules.paths {
        reads.push(("[rules] paths", p.clone()));
    }
    for f in &cfg.sources.file {
        if f.path != Path::new("-") {
            reads.push(("[[sources.file]] path", f.path.clone()));
        }
    }
    for (what, d) in trees.iter().chain(dirs.iter()) {
        refuse_shared(what, d)?;
    }
    hold();
    Ok(Some(Plan {
        user,
        uid,
        gid,
        trees,
        dirs,
        files,
        reads,
    }))
}

fn lookup_user(name: &str) -> Result<(String, Uid, Gid), String> {
    if let Ok(n) = name.parse::<u32>() {
        let uid = Uid::from_raw(n);
        return Ok(match User::from_uid(uid) {
            Ok(Some(u)) => (u.name, u.uid, u.gid),
            // A bare uid without an entry: its group is the same number unless `group` says.
            _ => (name.to_string(), uid, Gid::from_raw(n)),
        });
    }
    match User::from_name(name) {
        Ok(Some(u)) => Ok((u.name, u.uid, u.gid)),
        Ok(None) => Err(format!("[privileges] user `{name}` does not exist")),
        Err(e) => Err(format!("[privileges] cannot look up user `{name}`: {e}")),
    }
}

fn lookup_group(name: &str) -> Result<Gid, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!("[privileges] group `{name}` does not exist")),
        Err(e) => Err(format!("[privileges] cannot look up group `{name}`: {e}")),
    }
}

/// Directories that other programs share are never handed to the daemon's user.
fn refuse_shared(what: &str, dir: &Path) -> Result<(), String> {
    const SHARED: &[&str] = &[
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/var/lib",
        "/var/log",
        "/var/run",
        "/var/tmp",
        "/var/cache",
        "/var/spool",
    ];
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if SHARED.iter().any(|s| canon == Path::new(s)) {
        return Err(format!(
            "{what}: {} is a shared system directory; the daemon would have to own it to write there after dropping privileges: use a directory of its own (e.g. /var/lib/sensor, /var/log/sensor, /run/sensor)",
            canon.display()
        ));
    }
    if let Ok(m) = std::fs::metadata(&canon) {
        if m.permissions().mode() & 0o002 != 0 {
            return Err(format!(
                "{what}: {} is writable by every user; use a directory of the daemon's own",
                canon.display()
            ));
        }
    }
    Ok(())
}

/// What the drop did, for the start-up line and the status.
#[derive(Debug)]
pub(crate) struct Dropped {
    pub(crate) user: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) threads: usize,
}

/// Carries out a [`plan`]: ownership, reachability, no_new_privs, the uid/gid change, then the
/// check of every thread. On error the caller must stop (the gate stays closed).
pub(crate) fn apply(plan: &Plan) -> Result<Dropped, String> {
    for (what, dir) in &plan.trees {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{what}: cannot create {}: {e}", dir.display()))?;
        chown_tree(dir, plan.uid, plan.gid).map_err(|e| format!("{what}: {e}"))?;
    }
    for (what, dir) in &plan.dirs {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{what}: cannot create {}: {e}", dir.display()))?;
        chown_one(dir, plan.uid, plan.gid).map_err(|e| format!("{what}: {e}"))?;
    }
    for f in &plan.files {
        if f.symlink_metadata().is_ok() {
            chown_one(f, plan.uid, plan.gid)?;
        }
    }
    for (what, dir) in plan.trees.iter().chain(plan.dirs.iter()) {
        reachable(dir, plan.uid, plan.gid, true).map_err(|e| {
            format!(
                "{what}: user `{}` (uid {}) could not reach {} after dropping privileges: {e}",
                plan.user,
                plan.uid,
                dir.display()
            )
        })?;
    }
    for (what, p) in &plan.reads {
        if let Err(e) = reachable(p, plan.uid, plan.gid, false) {
            tracing::warn!(
                "{what}: user `{}` cannot read {} ({e}): a reload or reopen will fail until it can",
                plan.user,
                p.display()
            );
        }
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("prctl(PR_SET_NO_NEW_PRIVS): {e}"))?;
    nix::unistd::setgroups(&[plan.gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(plan.gid, plan.gid, plan.gid)
        .map_err(|e| format!("setresgid({}): {e}", plan.gid))?;
    nix::unistd::setresuid(plan.uid, plan.uid, plan.uid)
        .map_err(|e| format!("setresuid({}): {e}", plan.uid))?;
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Ambient,
    ] {
        let held = caps::read(None, set).map_err(|e| format!("reading capabilities: {e}"))?;
        if !held.is_empty() {
            return Err(format!(
                "after the uid change this thread still holds {held:?} in its {set:?} set"
            ));
        }
    }
    let threads = check_threads(plan.uid.as_raw())?;
    Ok(Dropped {
        user: plan.user.clone(),
        uid: plan.uid.as_raw(),
        gid: plan.gid.as_raw(),
        threads,
    })
}

/// Every thread of this process has the uid `uid` (real, effective, saved, fs) and no capability.
fn check_threads(uid: u32) -> Result<usize, String> {
    let tasks =
        std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    let mut n = 0;
    for t in tasks {
        let t = t.map_err(|e| format!("/proc/self/task: {e}"))?;
        let status = match std::fs::read_to_string(t.path().join("status")) {
            Ok(s) => s,
            // A thread that ended meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", t.path().display())),
        };
        let thread = t.file_name().to_string_lossy().into_owned();
        for line in status.lines() {
            if let Some(ids) = line.strip_prefix("Uid:") {
                if ids.split_whitespace().any(|i| i != uid.to_string()) {
                    return Err(format!("thread {thread} still has uids {}", ids.trim()));
                }
            }
            if let Some(v) = line.strip_prefix("NoNewPrivs:") {
                if v.trim() != "1" {
                    return Err(format!("thread {thread} does not have no_new_privs"));
                }
            }
            for key in ["CapEff:", "CapPrm:", "CapAmb:"] {
                if let Some(v) = line.strip_prefix(key) {
                    if u64::from_str_radix(v.trim(), 16) != Ok(0) {
                        return Err(format!("thread {thread} still has {key} {}", v.trim()));
                    }
                }
            }
        }
        n += 1;
    }
    Ok(n)
}

fn chown_one(p: &Path, uid: Uid, gid: Gid) -> Result<(), String> {
    nix::unistd::fchownat(
        None,
        p,
        Some(uid),
        Some(gid),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("cannot give {} to uid {uid}: {e}", p.display()))
}

/// Gives `dir` and everything under it to the user (symbolic links themselves, never their targets).
fn chown_tree(dir: &Path, uid: Uid, gid: Gid) -> Result<(), String> {
    chown_one(dir, uid, gid)?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let ft = e
            .file_type()
            .map_err(|err| format!("{}: {err}", e.path().display()))?;
        if ft.is_dir() {
            chown_tree(&e.path(), uid, gid)?;
        } else {
            chown_one(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Whether `uid`/`gid` may search every directory above `p` (and write `p` when `write`, else read it).
fn reachable(p: &Path, uid: Uid, gid: Gid, write: bool) -> Result<(), String> {
    let may = |m: &std::fs::Metadata, bits: u32| {
        let mode = m.permissions().mode();
        let shift = if m.uid() == uid.as_raw() {
            6
        } else if m.gid() == gid.as_raw() {
            3
        } else {
            0
        };
        (mode >> shift) & bits == bits
    };
    let abs = p
        .canonicalize()
        .map_err(|e| format!("{}: {e}", p.display()))?;
    for a in abs.ancestors().skip(1) {
        let m = std::fs::metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
        if !may(&m, 0o1) {
            return Err(format!(
                "{} is mode {:04o} owned by uid {}",
                a.display(),
                m.permissions().mode() & 0o7777,
                m.uid()
            ));
        }
    }
    let m = std::fs::metadata(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
    let need = match (m.is_dir(), write) {
        (true, true) => 0o3,
        (true, false) => 0o5,
        (false, true) => 0o2,
        (false, false) => 0o4,
    };
    if may(&m, need) {
        Ok(())
    } else {
        Err(format!(
            "{} is mode {:04o} owned by uid {}",
            abs.display(),
            m.permissions().mode() & 0o7777,
            m.uid()
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn shared_directories_are_refused_by_name() {
        let e = refuse_shared("[outputs.file] path", Path::new("/var/log")).unwrap_err();
        assert!(e.contains("/var/log is a shared system directory"), "{e}");
        assert!(e.starts_with("[outputs.file] path"), "{e}");
        let e = refuse_shared("state_dir", Path::new("/tmp")).unwrap_err();
        assert!(e.contains("shared system directory"), "{e}");
    }

    #[test]
    fn a_world_writable_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path().join("w");
        std::fs::create_dir(&w).unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = refuse_shared("state_dir", &w).unwrap_err();
        assert!(e.contains("writable by every user"), "{e}");
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
        refuse_shared("state_dir", &w).unwrap();
    }

    #[test]
    fn reachability_names_the_directory_that_blocks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let inner = d.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(d.path().join("a"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        // An unrelated uid/gid: only the "other" bits apply to it.
        let e = reachable(&inner, Uid::from_raw(54_321), Gid::from_raw(54_321), true).unwrap_err();
        assert!(e.contains("/a is mode 0700"), "{e}");
    }
}
