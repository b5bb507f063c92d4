//! Container identity: a process's cgroup resolved to a container id, the runtime's metadata for it
//! (name, image, Kubernetes pod), and the ECS field values every event of the process carries.
//!
//! The kernel programs put the cgroup v2 id (`bpf_get_current_cgroup_id()`: the inode number of the
//! cgroup's directory under the unified mount) in the lifecycle records only; the process table
//! keeps one [`Container`] per process, inherited on fork and looked at again on exec when the
//! cgroup id changed. Resolution reads `/proc/<pid>/cgroup` (checked against the cgroup id with a
//! `stat` of the directory under the unified mount, or found by a walk of that mount when the
//! process is gone), then parses the path ([`parse_cgroup_path`]). Results are cached per cgroup id
//! (bounded); a new cgroup (a container started) is resolved afresh. A new container gets its id
//! at once; its metadata is asked for on the [`worker`] thread (a bounded queue) and put on its
//! processes when the answer arrives ([`Containers::poll`]), so a slow runtime never holds up the
//! ring buffer's consumer.
//!
//! Every read of a runtime's files or sockets is in [`meta`] (what the daemon needs to be allowed
//! to read is listed there).

pub mod helper;
pub mod meta;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use correlator::{Field, Value};
use serde::{Deserialize, Serialize};

/// Container settings (the `[kernel.containers]` table of the daemon config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerConfig {
    /// Resolve cgroups to containers at all.
    pub enabled: bool,
    /// Podman's API socket (labels are only there); absent: name and image from podman's files.
    pub podman_socket: PathBuf,
    /// Docker's API socket (used when `/var/lib/docker/containers/<id>/config.v2.json` is not readable).
    pub docker_socket: PathBuf,
    /// Timeout of one API request, in milliseconds (resolution happens once per new container).
    pub api_timeout_ms: u64,
    /// Cgroups kept in the cache; the cache is emptied when it is full.
    pub max_cgroups: usize,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        ContainerConfig {
            enabled: true,
            podman_socket: PathBuf::from("/run/podman/podman.sock"),
            docker_socket: PathBuf::from("/run/docker.sock"),
            api_timeout_ms: 500,
            max_cgroups: 4096,
        }
    }
}

/// What the cgroup path says: the container id and the runtime that named the cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMatch {
    pub id: String,
    pub runtime: &'static str,
    /// Kubernetes pod uid, when the path has a `pod<uid>` (cgroupfs) or `-pod<uid>.slice` part.
    pub pod_uid: Option<String>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container id in one path component, with the runtime its prefix names.
fn component_id(c: &str) -> Option<(String, &'static str)> {
    let c = c.strip_suffix(".scope").unwrap_or(c);
    // `<manager>:<prefix>:<id>` (containerd/CRI-O systemd cgroup naming inside a slice).
    let c = c.rsplit(':').next().unwrap_or(c);
    if is_hex64(c) {
        return Some((c.to_string(), ""));
    }
    for (prefix, runtime) in [
        ("docker-", "docker"),
        ("libpod-", "podman"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("containerd-", "containerd"),
    ] {
        if let Some(rest) = c.strip_prefix(prefix) {
            if is_hex64(rest) {
                return Some((rest.to_string(), runtime));
            }
        }
    }
    None
}

/// The container a cgroup path (v1 or v2) belongs to: Docker (`/docker/<id>`,
/// `docker-<id>.scope`), Podman (`libpod-<id>`, `libpod-<id>.scope`; not `libpod-conmon-*`, the
/// monitor outside the container), containerd/CRI (`/kubepods/.../pod<uid>/<id>`,
/// `cri-containerd-<id>.scope`), CRI-O (`crio-<id>.scope`; not `crio-conmon-*`), systemd-nspawn
/// (`systemd-nspawn@<name>.service`, `machine-<name>.scope`), LXC (`/lxc/<name>`,
/// `lxc.payload.<name>`). None for a host cgroup.
pub fn parse_cgroup_path(path: &str) -> Option<CgroupMatch> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let pod_uid = parts.iter().find_map(|p| {
        let p = p.strip_suffix(".slice").unwrap_or(p);
        let uid = p
            .rsplit_once("-pod")
            .map(|(_, u)| u)
            .or_else(|| p.strip_prefix("pod"))?;
        (uid.len() >= 32
            && uid
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_'))
        .then(|| uid.replace('_', "-"))
    });
    let kube = parts.iter().any(|p| p.starts_with("kubepods"));
    // The deepest component that names a container (nested cgroups below it stay in it).
    for (i, c) in parts.iter().enumerate().rev() {
        if let Some((id, mut runtime)) = component_id(c) {
            if runtime.is_empty() {
                let parent = if i > 0 { parts[i - 1] } else { "" };
                runtime = if parent == "docker" {
                    "docker"
                } else if parent == "libpod_parent" {
                    "podman"
                } else if kube {
                    "cri"
                } else {
                    "unknown"
                };
            }
            return Some(CgroupMatch {
                id,
                runtime,
                pod_uid: if kube { pod_uid } else { None },
            });
        }
        if let Some(name) = c
            .strip_prefix("systemd-nspawn@")
            .and_then(|r| r.strip_suffix(".service"))
        {
            return Some(CgroupMatch {
                id: unescape_unit(name),
                runtime: "systemd-nspawn",
                pod_uid: None,
            });
        }
        if let Some(name) = c
            .strip_prefix("machine-")
            .and_then(|r| r.strip_suffix(".scope"))
        {
            // libvirt's virtual machines (machine-qemu-...) are not containers.
            if !name.starts_with("qemu") && !name.starts_with("lxc") {
                return Some(CgroupMatch {
                    id: unescape_unit(name),
                    runtime: "systemd-nspawn",
                    pod_uid: None,
                });
            }
        }
        if let Some(name) = c.strip_prefix("lxc.payload.") {
            return Some(CgroupMatch {
                id: name.to_string(),
                runtime: "lxc",
                pod_uid: None,
            });
        }
        if i > 0 && parts[i - 1] == "lxc" {
            return Some(CgroupMatch {
                id: (*c).to_string(),
                runtime: "lxc",
                pod_uid: None,
            });
        }
    }
    None
}

/// systemd unit-name escaping (`\x2d` for `-` ...) undone.
fn unescape_unit(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(char::from(v));
                i += 4;
                continue;
            }
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

/// One container, with the ECS field values its processes' events carry, built once.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Container {
    pub id: String,
    pub runtime: String,
    pub name: Option<String>,
    pub image_name: Option<String>,
    pub image_tag: Option<String>,
    /// `sha256:...` of the image, when the runtime says it.
    pub image_digest: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub namespace: Option<String>,
    /// `io.kubernetes.container.name`: the container's name in its pod spec.
    pub k8s_container_name: Option<String>,
    /// Pod labels (Kubernetes' own `io.kubernetes.*` bookkeeping keys left out).
    pub labels: BTreeMap<String, String>,
    /// `(field, value)` of every ECS field above, in no particular order.
    pub fields: Vec<(Field, Value)>,
}

/// Splits an image reference into name, tag and digest: `reg:5000/a/b:1.2@sha256:..`.
pub fn split_image(r: &str) -> (String, Option<String>, Option<String>) {
    let (rest, digest) = match r.split_once('@') {
        Some((a, d)) => (a, Some(d.to_string())),
        None => (r, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (
                rest[..at].to_string(),
                Some(rest[at + 1..].to_string()),
                digest,
            )
        }
        None => (rest.to_string(), None, digest),
    }
}

fn sv(s: &str) -> Value {
    Value::Str(s.into())
}

impl Container {
    /// Fills `fields` from the other members. Called once per container.
    pub fn build_fields(&mut self) {
        let mut f = Vec::with_capacity(16 + self.labels.len());
        f.push((Field::intern("container.id"), sv(&self.id)));
        f.push((Field::intern("container.runtime"), sv(&self.runtime)));
        if let Some(n) = &self.name {
            f.push((Field::intern("container.name"), sv(n)));
        }
        if let Some(n) = &self.image_name {
            f.push((Field::intern("container.image.name"), sv(n)));
        }
        if let Some(t) = &self.image_tag {
            f.push((
                Field::intern("container.image.tag"),
                Value::Array(vec![sv(t)].into()),
            ));
        }
        if let Some(d) = &self.image_digest {
            f.push((
                Field::intern("container.image.hash.all"),
                Value::Array(vec![sv(d)].into()),
            ));
        }
        let kube = self.pod_name.is_some() || self.namespace.is_some() || self.pod_uid.is_some();
        if kube {
            f.push((Field::intern("orchestrator.type"), sv("kubernetes")));
            f.push((Field::intern("orchestrator.resource.type"), sv("pod")));
        }
        if let Some(ns) = &self.namespace {
            f.push((Field::intern("orchestrator.namespace"), sv(ns)));
            f.push((Field::intern("kubernetes.namespace"), sv(ns)));
        }
        if let Some(p) = &self.pod_name {
            f.push((Field::intern("orchestrator.resource.name"), sv(p)));
            f.push((Field::intern("kubernetes.pod.name"), sv(p)));
        }
        if let Some(u) = &self.pod_uid {
            f.push((Field::intern("kubernetes.pod.uid"), sv(u)));
        }
        if let Some(c) = &self.k8s_container_name {
            f.push((Field::intern("kubernetes.container.name"), sv(c)));
        }
        for (k, v) in &self.labels {
            // As Elastic's Kubernetes fields: dots in a label key become underscores.
            let key = k.replace('.', "_");
            f.push((Field::intern(&format!("kubernetes.labels.{key}")), sv(v)));
        }
        self.fields = f;
    }
}

/// The container part of `sensor status`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ContainerStatus {
    pub enabled: bool,
    /// Where cgroup ids are resolved (the cgroup2 mount), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup2_mount: Option<String>,
    /// Cgroups resolved to a container since start.
    pub containers_seen: u64,
    /// Cgroups in the cache now.
    pub cached_cgroups: usize,
    /// Metadata sources that could not be read, with the error (events then carry the id alone,
    /// or what the other sources gave); each is also logged once.
    pub unreachable: BTreeMap<String, String>,
}

/// Shared with the kernel sensor's status.
pub type SharedStatus = Arc<Mutex<ContainerStatus>>;

/// Finds the cgroup2 mount point in /proc/self/mountinfo (`/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split(' ').next()?;
        let mount = pre.split(' ').nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount.replace("\\040", " ")))
    })
}

fn inode_of(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

/// Resolves processes to containers, caching per cgroup id.
pub struct Containers {
    cfg: ContainerConfig,
    unified: Option<PathBuf>,
    /// Cgroup id -> its container (None: a host cgroup).
    by_cgroup: HashMap<u64, Option<Arc<Container>>>,
    /// When the last walk of the cgroup2 tree happened (walks are at most one per second), and
    /// what it found (inode -> path).
    last_walk: Option<std::time::Instant>,
    walked: HashMap<u64, String>,
    /// Containers by container id: described, or id-only while their metadata is asked for.
    by_id: HashMap<String, Arc<Container>>,
    /// Container ids whose metadata was asked for and has not come yet.
    asked: HashSet<String>,
    /// Requests the full queue did not take, asked again at the next [`Containers::poll`].
    unqueued: Vec<CgroupMatch>,
    worker: Option<worker::Worker>,
    status: SharedStatus,
}

impl Containers {
    pub fn new(cfg: &ContainerConfig, status: SharedStatus) -> Containers {
        let unified = if cfg.enabled { cgroup2_mount() } else { None };
        if let Ok(mut s) = status.lock() {
            s.enabled = cfg.enabled;
            s.cgroup2_mount = unified.as_ref().map(|p| p.display().to_string());
        }
        Containers {
            cfg: cfg.clone(),
            unified,
            by_cgroup: HashMap::new(),
            last_walk: None,
            walked: HashMap::new(),
            by_id: HashMap::new(),
            asked: HashSet::new(),
            unqueued: Vec::new(),
            worker: if cfg.enabled {
                worker::Worker::start(cfg, status.clone())
            } else {
                None
            },
            status,
        }
    }

    /// A resolver that resolves nothing (tests, `enabled = false`).
    pub fn disabled() -> Containers {
        Containers::new(
            &ContainerConfig {
                enabled: false,
                ..ContainerConfig::default()
            },
            SharedStatus::default(),
        )
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// The container of process `pid`, whose cgroup v2 id is `cgroup_id` when a kernel record said
    /// it (0: unknown, e.g. when the table is seeded from /proc). Returns the container and the
    /// cgroup id the process table should remember: 0 when the cgroup could not be resolved (the
    /// process is gone), so that its next exec or fork tries again.
    pub fn for_pid(&mut self, pid: u32, cgroup_id: u64) -> (Option<Arc<Container>>, u64) {
        self.for_pids(&[pid], cgroup_id)
    }

    /// [`Containers::for_pid`] trying each of `pids` in turn for the cgroup's path (for a fork:
    /// the child, then the parent, which the record says was in that cgroup).
    pub fn for_pids(&mut self, pids: &[u32], cgroup_id: u64) -> (Option<Arc<Container>>, u64) {
        if !self.cfg.enabled {
            return (None, cgroup_id);
        }
        if cgroup_id != 0 {
            if let Some(c) = self.by_cgroup.get(&cgroup_id) {
                return (c.clone(), cgroup_id);
            }
        }
        let mut best = (None, 0);
        for &pid in pids {
            let (c, id, sure) = self.resolve(pid, cgroup_id);
            if sure {
                return (c, id);
            }
            if best.0.is_none() && c.is_some() {
                best = (c, 0);
            }
        }
        if best.0.is_none() && cgroup_id != 0 {
            // Every process is gone: find the cgroup by its inode.
            if let Some(path) = self.walk_for(cgroup_id) {
                let c = self.finish(cgroup_id, Some(path), &[]);
                return (c, cgroup_id);
            }
        }
        best
    }

    /// One process: (container, cgroup id, whether the cgroup was found for sure).
    fn resolve(&mut self, pid: u32, cgroup_id: u64) -> (Option<Arc<Container>>, u64, bool) {
        let Some(text) = meta::proc_cgroup(pid) else {
            return (None, 0, false);
        };
        let mut v2: Option<&str> = None;
        let mut v1: Vec<&str> = Vec::new();
        for line in text.lines() {
            let mut it = line.splitn(3, ':');
            let (Some(h), Some(_), Some(path)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if h == "0" {
                v2 = Some(path);
            } else {
                v1.push(path);
            }
        }
        // The cgroup v2 path of this id: /proc's when its directory has that inode.
        let mut id = cgroup_id;
        let mut path: Option<String> = None;
        if let (Some(root), Some(p)) = (&self.unified, v2) {
            let ino = inode_of(&root.join(p.trim_start_matches('/')));
            if id == 0 {
                id = ino.unwrap_or(0);
            }
            if ino.is_some() && ino == Some(id) {
                path = Some(p.to_string());
            }
        }
        if self.unified.is_some() && path.is_none() {
            // The process is in another cgroup than the record said (it moved since).
            return (None, 0, false);
        }
        // Only a cgroup of its own identifies the process's container for later records: the
        // root cgroup (hybrid hosts whose runtime joins v1 controllers only, processes outside any
        // slice) and v1-only hosts (where every task has the same v2 id) give 0, so the next exec
        // or fork of the process reads /proc again.
        let keep = if path.as_deref().is_some_and(|p| p != "/") {
            id
        } else {
            0
        };
        let c = self.finish(id, path, &v1);
        (c, keep, true)
    }

    /// The container of a cgroup v2 `path` (or of the v1 controllers' paths), cached under `id`.
    fn finish(&mut self, id: u64, path: Option<String>, v1: &[&str]) -> Option<Arc<Container>> {
        // The v2 path first (exact for this id), then the v1 controllers' paths (cgroup v1 hosts,
        // and hybrid hosts whose runtime made only v1 cgroups).
        let found = path
            .as_deref()
            .and_then(parse_cgroup_path)
            .or_else(|| v1.iter().find_map(|p| parse_cgroup_path(p)));
        let container = found.map(|m| self.container_of(&m));
        // Cache by cgroup id only where the id names a cgroup of its own: the root cgroup is shared
        // by every process of a host whose runtime uses v1 controllers only.
        if id > 1 && path.as_deref().is_some_and(|p| p != "/") {
            if self.by_cgroup.len() >= self.cfg.max_cgroups.max(1) {
                self.by_cgroup.clear();
            }
            self.by_cgroup.insert(id, container.clone());
            if let Ok(mut s) = self.status.lock() {
                s.cached_cgroups = self.by_cgroup.len();
            }
        }
        container
    }

    /// The container `m` names: known already, or new (its id now, its metadata asked for).
    fn container_of(&mut self, m: &CgroupMatch) -> Arc<Container> {
        if let Some(c) = self.by_id.get(&m.id) {
            return c.clone();
        }
        let c = Arc::new(worker::id_only(m));
        if self.by_id.len() >= self.cfg.max_cgroups.max(1) {
            self.by_id.clear();
        }
        self.by_id.insert(m.id.clone(), c.clone());
        if let Ok(mut s) = self.status.lock() {
            s.containers_seen += 1;
        }
        self.ask(m.clone());
        c
    }

    fn ask(&mut self, m: CgroupMatch) {
        let Some(w) = &self.worker else { return };
        if self.asked.contains(&m.id) {
            return;
        }
        match w.request(&m) {
            Ok(()) => {
                self.asked.insert(m.id);
            }
            Err(worker::Refused::Full) => {
                if self.unqueued.len() < 4 * worker::QUEUE {
                    self.unqueued.push(m);
                }
            }
            Err(worker::Refused::Gone) => {}
        }
    }

    /// Metadata that arrived since the last call: each described container (the process table
    /// replaces the id-only one its processes carry). Also asks again what the full queue refused.
    pub fn poll(&mut self) -> Vec<Arc<Container>> {
        let mut out = Vec::new();
        let answers: Vec<Container> = match &self.worker {
            Some(w) => std::iter::from_fn(|| w.answer()).collect(),
            None => return out,
        };
        for c in answers {
            self.asked.remove(&c.id);
            let c = Arc::new(c);
            if self.by_id.contains_key(&c.id) {
                self.by_id.insert(c.id.clone(), c.clone());
            }
            for v in self.by_cgroup.values_mut() {
                if v.as_ref().is_some_and(|old| old.id == c.id) {
                    *v = Some(c.clone());
                }
            }
            out.push(c);
        }
        for m in std::mem::take(&mut self.unqueued) {
            self.ask(m);
        }
        out
    }

    /// The path (relative to the cgroup2 mount, with a leading `/`) of the directory whose inode
    /// is `id`: for a process that is gone before it was resolved. At most one walk per second,
    /// at most 65,536 directories.
    fn walk_for(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.walked.get(&id) {
            return Some(p.clone());
        }
        let root = self.unified.clone()?;
        let now = std::time::Instant::now();
        if self
            .last_walk
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            return None;
        }
        self.last_walk = Some(now);
        self.walked.clear();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                if self.walked.len() >= 65_536 {
                    break;
                }
                let Ok(ft) = e.file_type() else { continue };
                if !ft.is_dir() {
                    continue;
                }
                let p = e.path();
                if let (Some(ino), Ok(rel)) = (inode_of(&p), p.strip_prefix(&root)) {
                    self.walked.insert(ino, format!("/{}", rel.display()));
                }
                stack.push(p);
            }
        }
        self.walked.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const ID: &str = "a46fa0a71e9cadf67074a312f675e7e06bb616e8cb8f14f5b6a84b4b1b597ea8";

    #[test]
    fn runtimes_from_cgroup_paths() {
        let cases: Vec<(String, Option<(&str, &str)>)> = vec![
            (format!("/libpod_parent/libpod-{ID}"), Some((ID, "podman"))),
            (format!("/machine.slice/libpod-{ID}.scope"), Some((ID, "podman"))),
            (format!("/machine.slice/libpod-{ID}.scope/container"), Some((ID, "podman"))),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
            (format!("/docker/{ID}"), Some((ID, "docker"))),
            (format!("/system.slice/docker-{ID}.scope"), Some((ID, "docker"))),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0c9f2a1e_55f5_4b8e_9d7c_2a8a9d1f4e11.slice/cri-containerd-{ID}.scope"),
                Some((ID, "containerd")),
            ),
            (format!("/kubepods/burstable/pod0c9f2a1e-55f5-4b8e-9d7c-2a8a9d1f4e11/{ID}"), Some((ID, "cri"))),
            (
                format!("/kubepods.slice/kubepods-pod0c9f2a1e_55f5_4b8e_9d7c_2a8a9d1f4e11.slice/crio-{ID}.scope"),
                Some((ID, "cri-o")),
            ),
            (format!("/kubepods.slice/kubepods-pod0c9f2a1e_55f5_4b8e_9d7c_2a8a9d1f4e11.slice/crio-conmon-{ID}.scope"), None),
            (format!("/system.slice/containerd.service/kubepods-besteffort-pod0c9f2a1e_55f5_4b8e_9d7c_2a8a9d1f4e11.slice:cri-containerd:{ID}"), Some((ID, "cri"))),
            ("/machine.slice/systemd-nspawn@deb12.service".into(), Some(("deb12", "systemd-nspawn"))),
            ("/machine.slice/machine-deb\\x2dtest.scope/payload".into(), Some(("deb-test", "systemd-nspawn"))),
            ("/machine.slice/machine-qemu\\x2d1\\x2dvm.scope".into(), None),
            ("/lxc.payload.web1".into(), Some(("web1", "lxc"))),
            ("/user.slice/user-1000.slice/session-2.scope".into(), None),
            ("/".into(), None),
            ("/system.slice/ssh.service".into(), None),
        ];
        for (path, want) in cases {
            let got = parse_cgroup_path(&path);
            assert_eq!(
                got.as_ref().map(|m| (m.id.as_str(), m.runtime)),
                want,
                "{path}"
            );
        }
        let m = parse_cgroup_path(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0c9f2a1e_55f5_4b8e_9d7c_2a8a9d1f4e11.slice/cri-containerd-{ID}.scope"
        ))
        .unwrap();
        assert_eq!(
            m.pod_uid.as_deref(),
            Some("0c9f2a1e-55f5-4b8e-9d7c-2a8a9d1f4e11")
        );
    }

    /// This test process, resolved for real: on a host with a cgroup2 mount its cgroup id is the
    /// inode of its directory there, and it is in no container (the tests run on the host).
    #[test]
    fn this_process_is_resolved_to_its_cgroup_and_no_container() {
        let mut c = Containers::new(&ContainerConfig::default(), SharedStatus::default());
        let pid = std::process::id();
        let (ctr, id) = c.for_pid(pid, 0);
        let Some(root) = cgroup2_mount() else {
            assert_eq!(id, 0);
            return;
        };
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let v2 = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line when cgroup2 is mounted");
        if parse_cgroup_path(v2).is_some() {
            return; // running inside a container: nothing to say about the host case
        }
        assert!(ctr.is_none());
        let ino = inode_of(&root.join(v2.trim_start_matches('/'))).unwrap();
        if v2 == "/" {
            // The root cgroup names no one: not remembered, read again at the next exec/fork.
            assert_eq!(id, 0);
            assert_eq!(c.for_pid(pid, ino), (None, 0));
        } else {
            assert_eq!(id, ino);
            // The same id from a kernel record gives the same answer.
            assert_eq!(c.for_pid(pid, id).1, id);
        }
        // A wrong id for a live process is not taken for its cgroup.
        assert_eq!(c.for_pid(pid, u64::MAX - 7), (None, 0));
        let disabled = Containers::disabled().for_pid(pid, 5);
        assert_eq!(disabled, (None, 5));
    }

    /// A new container is given at once (id only), its metadata comes from the worker thread and
    /// replaces it for later lookups; the same container is asked for once.
    #[test]
    fn metadata_arrives_after_the_id() {
        let cfg = ContainerConfig {
            docker_socket: "/nonexistent/docker.sock".into(),
            podman_socket: "/nonexistent/podman.sock".into(),
            ..ContainerConfig::default()
        };
        let status = SharedStatus::default();
        let mut c = Containers::new(&cfg, status.clone());
        let m = CgroupMatch {
            id: ID.into(),
            runtime: "docker",
            pod_uid: Some("0c9f2a1e-55f5-4b8e-9d7c-2a8a9d1f4e11".into()),
        };
        let first = c.container_of(&m);
        assert_eq!(first.id, ID);
        assert!(first.name.is_none());
        assert!(first
            .fields
            .iter()
            .any(|(f, v)| *f == Field::intern("kubernetes.pod.uid")
                && *v == Value::Str("0c9f2a1e-55f5-4b8e-9d7c-2a8a9d1f4e11".into())));
        // Asked once, however often it is met before the answer.
        assert!(Arc::ptr_eq(&c.container_of(&m), &first));
        assert_eq!(c.asked.len(), 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let described = loop {
            let got = c.poll();
            if let Some(d) = got.into_iter().find(|d| d.id == ID) {
                break d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no answer from the worker"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(!Arc::ptr_eq(&described, &first));
        assert!(Arc::ptr_eq(&c.container_of(&m), &described));
        assert!(c.asked.is_empty());
        // The unreachable Docker socket is in the status (the worker asked it).
        assert!(status
            .lock()
            .unwrap()
            .unreachable
            .contains_key("/nonexistent/docker.sock"));
        assert_eq!(status.lock().unwrap().containers_seen, 1);
    }

    #[test]
    fn image_references() {
        assert_eq!(
            split_image("localhost/bb:1"),
            ("localhost/bb".into(), Some("1".into()), None)
        );
        assert_eq!(
            split_image("reg:5000/a/b"),
            ("reg:5000/a/b".into(), None, None)
        );
        assert_eq!(
            split_image("reg:5000/a/b:2.1@sha256:ab"),
            (
                "reg:5000/a/b".into(),
                Some("2.1".into()),
                Some("sha256:ab".into())
            )
        );
    }

    #[test]
    fn fields_are_ecs() {
        let mut c = Container {
            id: ID.into(),
            runtime: "podman".into(),
            name: Some("web".into()),
            image_name: Some("localhost/bb".into()),
            image_tag: Some("1".into()),
            pod_name: Some("p".into()),
            namespace: Some("ns".into()),
            labels: [("app.kubernetes.io/name".to_string(), "x".to_string())].into(),
            ..Container::default()
        };
        c.build_fields();
        let ev = correlator::Event::from_fields(0, c.fields.clone());
        let j = ev.to_json();
        assert_eq!(j["container"]["id"], ID);
        assert_eq!(j["container"]["image"]["tag"][0], "1");
        assert_eq!(j["orchestrator"]["resource"]["name"], "p");
        assert_eq!(j["orchestrator"]["type"], "kubernetes");
        assert_eq!(j["kubernetes"]["namespace"], "ns");
        assert_eq!(j["kubernetes"]["labels"]["app_kubernetes_io/name"], "x");
    }
}
