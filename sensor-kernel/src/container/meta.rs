//! Every read of container runtime metadata, in one place. What the daemon reads (root-only files
//! among them: a daemon that drops privileges needs CAP_DAC_READ_SEARCH to keep them):
//!
//! - `/proc/<pid>/cgroup` (the process's cgroup paths);
//! - the OCI bundle's `config.json` (annotations: Kubernetes pod and container names, CRI image
//!   name, CRI-O labels), found at `/run/containers/storage/overlay-containers/<id>/userdata/`,
//!   `/var/lib/containers/storage/overlay-containers/<id>/userdata/` (Podman, CRI-O),
//!   `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/` (containerd, Docker), or
//!   through the `bundle=` label of runc's state (`/run/runc/<id>/state.json`,
//!   `/run/docker/runtime-runc/moby/<id>/state.json`, `/run/containerd/runc/<ns>/<id>/state.json`);
//! - Podman/CRI-O's container store, `/var/lib/containers/storage/overlay-containers/containers.json`
//!   and `/run/containers/storage/overlay-containers/containers.json` (name, image name);
//! - Docker's `/var/lib/docker/containers/<id>/config.v2.json` (name, image, labels);
//! - the runtime API sockets, `podman_socket` (`GET /v4.0.0/libpod/containers/<id>/json`: labels,
//!   image digest) and `docker_socket` (`GET /containers/<id>/json`), HTTP/1.0 over the Unix
//!   socket with a timeout. A socket that cannot be reached is said once in the log and in
//!   `sensor status` (`containers.unreachable`), then tried again after a minute; events carry
//!   what the files gave (at least the container id).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::{split_image, CgroupMatch, Container, ContainerConfig, SharedStatus};

/// `/proc/<pid>/cgroup`.
pub fn proc_cgroup(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// Reads runtimes' metadata; remembers which API sockets failed.
pub struct MetaReader {
    podman_socket: PathBuf,
    docker_socket: PathBuf,
    timeout: Duration,
    /// Socket -> when it may be tried again.
    down: BTreeMap<PathBuf, Instant>,
    status: SharedStatus,
}

fn read_json(p: &Path) -> Option<Json> {
    let text = std::fs::read(p).ok()?;
    serde_json::from_slice(&text).ok()
}

fn str_at<'a>(v: &'a Json, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

const STORES: [&str; 2] = [
    "/run/containers/storage/overlay-containers",
    "/var/lib/containers/storage/overlay-containers",
];

impl MetaReader {
    pub fn new(cfg: &ContainerConfig, status: SharedStatus) -> MetaReader {
        MetaReader {
            podman_socket: cfg.podman_socket.clone(),
            docker_socket: cfg.docker_socket.clone(),
            timeout: Duration::from_millis(cfg.api_timeout_ms.max(1)),
            down: BTreeMap::new(),
            status,
        }
    }

    /// Everything the runtimes say about the container `m` names.
    pub fn describe(&mut self, m: &CgroupMatch) -> Container {
        let mut c = Container {
            id: m.id.clone(),
            runtime: m.runtime.to_string(),
            pod_uid: m.pod_uid.clone(),
            ..Container::default()
        };
        if m.runtime != "systemd-nspawn" && m.runtime != "lxc" {
            if let Some(cfg) = bundle_config(&m.id) {
                apply_annotations(&mut c, &cfg);
            }
            self.podman_store(&mut c);
            docker_files(&mut c);
            let api = match c.runtime.as_str() {
                "podman" => Some((
                    self.podman_socket.clone(),
                    format!("/v4.0.0/libpod/containers/{}/json", m.id),
                )),
                "docker" => Some((
                    self.docker_socket.clone(),
                    format!("/containers/{}/json", m.id),
                )),
                _ => None,
            };
            if let Some((sock, path)) = api {
                // Docker's files give labels already; Podman's labels are only in its database.
                if c.runtime == "podman" || c.name.is_none() {
                    if let Some(doc) = self.api_get(&sock, &path) {
                        apply_inspect(&mut c, &doc);
                    }
                }
            }
        } else {
            c.name = Some(m.id.clone());
        }
        c.build_fields();
        c
    }

    /// API sockets not reachable now, with the error (the status' view).
    pub fn unreachable(&self) -> BTreeMap<String, String> {
        self.status
            .lock()
            .map(|s| s.unreachable.clone())
            .unwrap_or_default()
    }

    fn podman_store(&self, c: &mut Container) {
        for dir in STORES {
            let Some(Json::Array(list)) = read_json(&Path::new(dir).join("containers.json")) else {
                continue;
            };
            let Some(entry) = list
                .iter()
                .find(|e| str_at(e, &["id"]) == Some(c.id.as_str()))
            else {
                continue;
            };
            if c.runtime == "unknown" {
                c.runtime = "podman".into();
            }
            if c.name.is_none() {
                c.name = entry
                    .get("names")
                    .and_then(|n| n.get(0))
                    .and_then(Json::as_str)
                    .map(str::to_string);
            }
            if let Some(md) =
                str_at(entry, &["metadata"]).and_then(|t| serde_json::from_str::<Json>(t).ok())
            {
                if c.image_name.is_none() {
                    if let Some(img) = str_at(&md, &["image-name"]) {
                        set_image(c, img);
                    }
                }
            }
            return;
        }
    }

    /// One GET over a Unix socket; None (and the socket marked down, said once) when it fails.
    fn api_get(&mut self, sock: &Path, path: &str) -> Option<Json> {
        if !sock.exists() {
            self.mark_down(sock, "the socket does not exist".into());
            return None;
        }
        if self.down.get(sock).is_some_and(|t| Instant::now() < *t) {
            return None;
        }
        match http_get(sock, path, self.timeout) {
            Ok(doc) => {
                if self.down.remove(sock).is_some() {
                    tracing::info!(message = "container runtime API reachable again", socket = %sock.display());
                    if let Ok(mut s) = self.status.lock() {
                        s.unreachable.remove(&sock.display().to_string());
                    }
                }
                Some(doc)
            }
            Err(e) => {
                self.mark_down(sock, e);
                None
            }
        }
    }

    fn mark_down(&mut self, sock: &Path, error: String) {
        let first = !self.down.contains_key(sock);
        self.down
            .insert(sock.to_path_buf(), Instant::now() + Duration::from_secs(60));
        let key = sock.display().to_string();
        if let Ok(mut s) = self.status.lock() {
            if first && !s.unreachable.contains_key(&key) {
                tracing::warn!(message = "container runtime API not reachable: container events carry what the runtime's files say (at least the id)", socket = %key, %error);
            }
            s.unreachable.insert(key, error);
        }
    }
}

fn set_image(c: &mut Container, reference: &str) {
    let (name, tag, digest) = split_image(reference);
    c.image_name = Some(name);
    if tag.is_some() {
        c.image_tag = tag;
    }
    if digest.is_some() {
        c.image_digest = digest;
    }
}

/// The OCI bundle `config.json` of container `id`, wherever its runtime keeps it.
fn bundle_config(id: &str) -> Option<Json> {
    for dir in STORES {
        if let Some(j) = read_json(&Path::new(dir).join(id).join("userdata/config.json")) {
            return Some(j);
        }
    }
    let tasks = Path::new("/run/containerd/io.containerd.runtime.v2.task");
    if let Ok(rd) = std::fs::read_dir(tasks) {
        for ns in rd.flatten() {
            if let Some(j) = read_json(&ns.path().join(id).join("config.json")) {
                return Some(j);
            }
        }
    }
    let mut states = vec![
        PathBuf::from("/run/runc").join(id).join("state.json"),
        PathBuf::from("/run/docker/runtime-runc/moby")
            .join(id)
            .join("state.json"),
    ];
    if let Ok(rd) = std::fs::read_dir("/run/containerd/runc") {
        states.extend(rd.flatten().map(|ns| ns.path().join(id).join("state.json")));
    }
    for st in states {
        let Some(state) = read_json(&st) else {
            continue;
        };
        let bundle = state
            .get("config")
            .and_then(|c| c.get("labels"))
            .and_then(Json::as_array)
            .and_then(|l| {
                l.iter()
                    .filter_map(Json::as_str)
                    .find_map(|s| s.strip_prefix("bundle="))
            });
        if let Some(b) = bundle {
            if let Some(j) = read_json(&Path::new(b).join("config.json")) {
                return Some(j);
            }
        }
    }
    None
}

/// Kubernetes identity from labels or annotations (the same keys in both).
fn apply_kube_keys(c: &mut Container, get: &dyn Fn(&str) -> Option<String>) {
    let first = |keys: &[&str]| keys.iter().find_map(|k| get(k));
    if c.pod_name.is_none() {
        c.pod_name = first(&["io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"]);
    }
    if c.namespace.is_none() {
        c.namespace = first(&[
            "io.kubernetes.pod.namespace",
            "io.kubernetes.cri.sandbox-namespace",
        ]);
    }
    if let Some(u) = first(&["io.kubernetes.pod.uid", "io.kubernetes.cri.sandbox-uid"]) {
        c.pod_uid = Some(u);
    }
    if c.k8s_container_name.is_none() {
        c.k8s_container_name = first(&[
            "io.kubernetes.container.name",
            "io.kubernetes.cri.container-name",
        ]);
    }
}

fn add_labels(c: &mut Container, labels: &serde_json::Map<String, Json>) {
    for (k, v) in labels {
        if let Some(v) = v.as_str() {
            if !k.starts_with("io.kubernetes.") && c.labels.len() < 64 {
                c.labels.insert(k.clone(), v.to_string());
            }
        }
    }
}

fn apply_annotations(c: &mut Container, cfg: &Json) {
    let Some(ann) = cfg.get("annotations").and_then(Json::as_object) else {
        return;
    };
    let get = |k: &str| {
        ann.get(k)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    apply_kube_keys(c, &get);
    if ann.get("io.container.manager").and_then(Json::as_str) == Some("libpod") {
        c.runtime = "podman".into();
    }
    if let Some(img) =
        get("io.kubernetes.cri.image-name").or_else(|| get("io.kubernetes.cri-o.ImageName"))
    {
        set_image(c, &img);
    }
    if let Some(labels) =
        get("io.kubernetes.cri-o.Labels").and_then(|t| serde_json::from_str::<Json>(&t).ok())
    {
        if let Some(m) = labels.as_object() {
            let lget = |k: &str| m.get(k).and_then(Json::as_str).map(str::to_string);
            apply_kube_keys(c, &lget);
            add_labels(c, m);
        }
    }
    if c.name.is_none() {
        c.name = c.k8s_container_name.clone();
    }
}

/// Docker's `config.v2.json` (root-only).
fn docker_files(c: &mut Container) {
    if c.runtime != "docker" && c.runtime != "unknown" {
        return;
    }
    let p = Path::new("/var/lib/docker/containers")
        .join(&c.id)
        .join("config.v2.json");
    if let Some(doc) = read_json(&p) {
        c.runtime = "docker".into();
        apply_inspect(c, &doc);
    }
}

/// A Docker/Podman inspect document (`config.v2.json` has the same members).
fn apply_inspect(c: &mut Container, doc: &Json) {
    if let Some(n) = str_at(doc, &["Name"]) {
        c.name = Some(n.trim_start_matches('/').to_string());
    }
    if let Some(img) = str_at(doc, &["ImageName"]).or_else(|| str_at(doc, &["Config", "Image"])) {
        set_image(c, img);
    }
    if let Some(d) = str_at(doc, &["ImageDigest"]) {
        c.image_digest = Some(d.to_string());
    }
    if let Some(labels) = doc
        .get("Config")
        .and_then(|x| x.get("Labels"))
        .and_then(Json::as_object)
    {
        let lget = |k: &str| {
            labels
                .get(k)
                .and_then(Json::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        apply_kube_keys(c, &lget);
        add_labels(c, labels);
    }
}

/// `GET path` over the Unix socket `sock` (HTTP/1.0: the server closes after the answer).
fn http_get(sock: &Path, path: &str, timeout: Duration) -> Result<Json, String> {
    let mut s =
        std::os::unix::net::UnixStream::connect(sock).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut body = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                body.extend_from_slice(&buf[..n]);
                if body.len() > 4 << 20 {
                    return Err("answer larger than 4 MiB".into());
                }
            }
            Err(e) => return Err(format!("read: {e}")),
        }
        if Instant::now() > deadline {
            return Err("timed out".into());
        }
    }
    let split = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header in the answer")?;
    let head = String::from_utf8_lossy(&body[..split]);
    let status = head.lines().next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if code == "404" {
        // Not this runtime's container: a valid answer, not an unreachable runtime.
        return Ok(Json::Null);
    }
    if code != "200" {
        return Err(format!("HTTP answer `{status}`"));
    }
    let payload = &body[split + 4..];
    // A chunked answer is not expected for HTTP/1.0; accept it anyway.
    serde_json::from_slice(payload)
        .or_else(|_| dechunk(payload).ok_or_else(|| "the answer is not JSON".to_string()))
}

fn dechunk(b: &[u8]) -> Option<Json> {
    let mut out = Vec::new();
    let mut rest = b;
    loop {
        let nl = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).ok()?.trim(), 16).ok()?;
        rest = &rest[nl + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
    serde_json::from_slice(&out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn annotations_of_cri_o_and_containerd() {
        let mut c = Container {
            id: "x".into(),
            runtime: "cri-o".into(),
            ..Container::default()
        };
        let cfg = serde_json::json!({"annotations": {
            "io.kubernetes.cri-o.ImageName": "registry.k8s.io/pause:3.9",
            "io.kubernetes.cri-o.Labels": "{\"io.kubernetes.pod.name\":\"web-0\",\"io.kubernetes.pod.namespace\":\"shop\",\"io.kubernetes.container.name\":\"nginx\",\"app\":\"web\"}",
            "io.kubernetes.pod.uid": "0c9f2a1e-55f5-4b8e-9d7c-2a8a9d1f4e11"
        }});
        apply_annotations(&mut c, &cfg);
        assert_eq!(c.pod_name.as_deref(), Some("web-0"));
        assert_eq!(c.namespace.as_deref(), Some("shop"));
        assert_eq!(c.k8s_container_name.as_deref(), Some("nginx"));
        assert_eq!(c.name.as_deref(), Some("nginx"));
        assert_eq!(c.image_name.as_deref(), Some("registry.k8s.io/pause"));
        assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
        assert!(!c.labels.contains_key("io.kubernetes.pod.name"));

        let mut c = Container::default();
        let cfg = serde_json::json!({"annotations": {
            "io.kubernetes.cri.sandbox-name": "api-7d9",
            "io.kubernetes.cri.sandbox-namespace": "prod",
            "io.kubernetes.cri.sandbox-uid": "u-1",
            "io.kubernetes.cri.container-name": "api",
            "io.kubernetes.cri.image-name": "ghcr.io/acme/api:v2"
        }});
        apply_annotations(&mut c, &cfg);
        assert_eq!(
            (
                c.pod_name.as_deref(),
                c.namespace.as_deref(),
                c.pod_uid.as_deref()
            ),
            (Some("api-7d9"), Some("prod"), Some("u-1"))
        );
        assert_eq!(c.image_tag.as_deref(), Some("v2"));
    }

    #[test]
    fn chunked_bodies() {
        let b = b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(dechunk(b), Some(serde_json::json!({"a": 1})));
        assert_eq!(dechunk(b"zz\r\n"), None);
    }
}
