//! The container metadata helper's protocol: a strict, bounded, line-based exchange over a Unix
//! socket pair between the daemon (which drops every capability, see the `sensor` crate's
//! `daemon/privilege.rs`) and a helper process started before the drop, which keeps only what reading
//! the runtimes' root-only files and API sockets needs (`daemon/meta_helper.rs` confines it).
//!
//! Request (daemon -> helper), one line of at most [`MAX_REQUEST`] bytes:
//! `<runtime>\t<container id>\t<pod uid or nothing>\n`. The runtime is one of the names
//! [`super::parse_cgroup_path`] gives; the id is 64 hex digits for every runtime whose files are read
//! (so an id can never name another path), or a plain machine name (`[A-Za-z0-9_.@-]`, no leading
//! dot) for systemd-nspawn and LXC, for which nothing is read. Anything else is refused with an
//! error line, and the helper goes on with the next request.
//!
//! Answer (helper -> daemon), one line of JSON of at most [`MAX_ANSWER`] bytes: [`Answer`], the
//! metadata found (or the reason the request was refused) and the runtime API sockets the helper
//! could not reach (for `sensor status`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::meta::MetaReader;
use super::{CgroupMatch, Container};

/// Longest request line, newline included.
pub const MAX_REQUEST: usize = 256;
/// Longest answer line, newline included.
pub const MAX_ANSWER: usize = 256 << 10;

/// Runtimes a request may name (what [`super::parse_cgroup_path`] gives).
const RUNTIMES: [&str; 8] = [
    "docker",
    "podman",
    "containerd",
    "cri",
    "cri-o",
    "unknown",
    "systemd-nspawn",
    "lxc",
];

/// What the helper says about one container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub runtime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_container_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// API sockets not reachable now, with the error.
    #[serde(default)]
    pub unreachable: BTreeMap<String, String>,
}

impl Answer {
    fn from_container(c: &Container) -> Answer {
        Answer {
            error: None,
            runtime: c.runtime.clone(),
            name: c.name.clone(),
            image_name: c.image_name.clone(),
            image_tag: c.image_tag.clone(),
            image_digest: c.image_digest.clone(),
            pod_name: c.pod_name.clone(),
            pod_uid: c.pod_uid.clone(),
            namespace: c.namespace.clone(),
            k8s_container_name: c.k8s_container_name.clone(),
            labels: c.labels.clone(),
            unreachable: BTreeMap::new(),
        }
    }

    /// The container `m` names, with what this answer says (the id is the request's, never the
    /// answer's), its event fields built.
    pub fn into_container(self, m: &CgroupMatch) -> Container {
        let mut c = Container {
            id: m.id.clone(),
            runtime: if self.runtime.is_empty() {
                m.runtime.to_string()
            } else {
                self.runtime
            },
            name: self.name,
            image_name: self.image_name,
            image_tag: self.image_tag,
            image_digest: self.image_digest,
            pod_name: self.pod_name,
            pod_uid: self.pod_uid.or_else(|| m.pod_uid.clone()),
            namespace: self.namespace,
            k8s_container_name: self.k8s_container_name,
            labels: self.labels,
            fields: Vec::new(),
        };
        c.build_fields();
        c
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The request line for `m` (without checks: the daemon only sends what the cgroup parser gave).
pub fn encode_request(m: &CgroupMatch) -> String {
    format!(
        "{}\t{}\t{}\n",
        m.runtime,
        m.id,
        m.pod_uid.as_deref().unwrap_or("")
    )
}

/// A request line checked field by field; the error names what was wrong.
pub fn parse_request(line: &str) -> Result<CgroupMatch, String> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let mut it = line.split('\t');
    let (Some(runtime), Some(id), Some(pod), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err("a request is `<runtime>\\t<id>\\t<pod uid>`".into());
    };
    let runtime = RUNTIMES
        .iter()
        .find(|r| **r == runtime)
        .ok_or_else(|| format!("unknown runtime `{}`", runtime.escape_debug()))?;
    let named = matches!(*runtime, "systemd-nspawn" | "lxc");
    let id_ok = if named {
        !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b))
    } else {
        is_hex64(id)
    };
    if !id_ok {
        return Err(format!(
            "container id `{}` is not valid for runtime {runtime}",
            id.escape_debug()
        ));
    }
    if pod.len() > 64 || !pod.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(format!("pod uid `{}` is not a uid", pod.escape_debug()));
    }
    Ok(CgroupMatch {
        id: id.to_string(),
        runtime,
        pod_uid: (!pod.is_empty()).then(|| pod.to_string()),
    })
}

/// The helper's loop: one answer per request line until the daemon closes its end. Returns when
/// the peer is gone (or writes fail).
pub fn serve(stream: UnixStream, reader: &mut MetaReader) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream).take(0);
    loop {
        let mut line = Vec::new();
        input.set_limit(MAX_REQUEST as u64);
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let answer = if line.last() != Some(&b'\n') {
            // Too long: skip to the end of the line, then refuse it.
            input.set_limit(u64::MAX);
            let mut rest = Vec::new();
            input.read_until(b'\n', &mut rest)?;
            if rest.is_empty() {
                return Ok(());
            }
            Answer {
                error: Some(format!("request longer than {MAX_REQUEST} bytes")),
                ..Answer::default()
            }
        } else {
            match std::str::from_utf8(&line)
                .map_err(|_| "request is not UTF-8".to_string())
                .and_then(parse_request)
            {
                Ok(m) => {
                    let mut a = Answer::from_container(&reader.describe(&m));
                    a.unreachable = reader.unreachable();
                    a
                }
                Err(e) => Answer {
                    error: Some(e),
                    ..Answer::default()
                },
            }
        };
        let mut text = serde_json::to_string(&answer).map_err(std::io::Error::other)?;
        if text.len() >= MAX_ANSWER {
            let mut small = Answer::from_container(&Container {
                runtime: answer.runtime.clone(),
                name: answer.name.clone(),
                image_name: answer.image_name.clone(),
                ..Container::default()
            });
            small.error = Some("answer too large: labels left out".into());
            text = serde_json::to_string(&small).map_err(std::io::Error::other)?;
        }
        text.push('\n');
        out.write_all(text.as_bytes())?;
    }
}

/// The daemon's end of a running helper.
pub struct HelperConn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The helper process, waited for when the connection is dropped.
    pub child: Option<std::process::Child>,
}

impl HelperConn {
    /// `stream`: the daemon's end of the socket pair; `timeout`: the longest one answer may take.
    pub fn new(
        stream: UnixStream,
        timeout: Duration,
        child: Option<std::process::Child>,
    ) -> std::io::Result<HelperConn> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(HelperConn {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            child,
        })
    }

    /// One request and its answer. An error means the helper is unusable (gone, too slow, or it
    /// broke the protocol): the caller stops using it.
    pub fn ask(&mut self, m: &CgroupMatch) -> Result<Answer, String> {
        self.writer
            .write_all(encode_request(m).as_bytes())
            .map_err(|e| format!("writing to the helper: {e}"))?;
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_ANSWER as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading the helper's answer: {e}"))?;
        if n == 0 {
            return Err("the helper closed its end".into());
        }
        if line.last() != Some(&b'\n') {
            return Err(format!(
                "the helper's answer is longer than {MAX_ANSWER} bytes"
            ));
        }
        serde_json::from_slice(&line).map_err(|e| format!("the helper's answer is not valid: {e}"))
    }
}

impl Drop for HelperConn {
    fn drop(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// A helper started by the daemon, waiting for the kernel sensor's resolver to take it.
static INSTALLED: Mutex<Option<HelperConn>> = Mutex::new(None);

/// Hands a running helper to the next [`super::Containers`] made in this process.
pub fn install(conn: HelperConn) {
    if let Ok(mut g) = INSTALLED.lock() {
        *g = Some(conn);
    }
}

/// The installed helper, if any (taken: one resolver uses it).
pub(crate) fn take() -> Option<HelperConn> {
    INSTALLED.lock().ok().and_then(|mut g| g.take())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const ID: &str = "a46fa0a71e9cadf67074a312f675e7e06bb616e8cb8f14f5b6a84b4b1b597ea8";

    #[test]
    fn requests_are_checked_field_by_field() {
        let m = CgroupMatch {
            id: ID.into(),
            runtime: "podman",
            pod_uid: Some("0c9f2a1e-55f5-4b8e-9d7c-2a8a9d1f4e11".into()),
        };
        assert_eq!(parse_request(&encode_request(&m)).unwrap(), m);
        let named = parse_request("systemd-nspawn\tdeb12\t\n").unwrap();
        assert_eq!((named.id.as_str(), named.pod_uid), ("deb12", None));
        for (line, want) in [
            (
                "podman\t../../etc/shadow\t\n".to_string(),
                "is not valid for runtime podman",
            ),
            (format!("docker\t{}\t\n", &ID[..63]), "is not valid"),
            ("lxc\t../x\t\n".to_string(), "is not valid for runtime lxc"),
            ("lxc\ta/b\t\n".to_string(), "is not valid"),
            (format!("rkt\t{ID}\t\n"), "unknown runtime `rkt`"),
            (format!("podman\t{ID}\tpod/../x\n"), "is not a uid"),
            (format!("podman\t{ID}\n"), "a request is"),
            (format!("podman\t{ID}\t\textra\n"), "a request is"),
        ] {
            let e = parse_request(&line).unwrap_err();
            assert!(e.contains(want), "{line:?}: {e}");
        }
    }

    /// A real helper loop over a real socket pair: valid requests answered, bad ones refused with
    /// an error line and the loop goes on, an over-long line refused, the end on EOF.
    #[test]
    fn the_loop_answers_refuses_and_goes_on() {
        let (daemon, helper) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let cfg = super::super::ContainerConfig {
                podman_socket: "/nonexistent/podman.sock".into(),
                docker_socket: "/nonexistent/docker.sock".into(),
                ..Default::default()
            };
            let mut r = MetaReader::new(&cfg, super::super::SharedStatus::default());
            serve(helper, &mut r)
        });
        let mut conn = HelperConn::new(daemon, Duration::from_secs(10), None).unwrap();
        let m = CgroupMatch {
            id: ID.into(),
            runtime: "podman",
            pod_uid: None,
        };
        let a = conn.ask(&m).unwrap();
        assert_eq!(a.error, None);
        assert_eq!(a.runtime, "podman");
        assert!(
            a.unreachable.contains_key("/nonexistent/podman.sock"),
            "{a:?}"
        );
        let c = a.into_container(&m);
        assert_eq!(c.id, ID);
        assert!(!c.fields.is_empty());
        // Raw lines: a path in place of an id, then an over-long line, then a valid one again.
        conn.writer.write_all(b"podman\t/etc/shadow\t\n").unwrap();
        let mut line = String::new();
        conn.reader.read_line(&mut line).unwrap();
        assert!(line.contains("is not valid for runtime podman"), "{line}");
        conn.writer
            .write_all(format!("{}\n", "x".repeat(5000)).as_bytes())
            .unwrap();
        line.clear();
        conn.reader.read_line(&mut line).unwrap();
        assert!(line.contains("request longer than 256 bytes"), "{line}");
        let nspawn = CgroupMatch {
            id: "deb12".into(),
            runtime: "systemd-nspawn",
            pod_uid: None,
        };
        assert_eq!(conn.ask(&nspawn).unwrap().name.as_deref(), Some("deb12"));
        drop(conn);
        t.join().unwrap().unwrap();
    }
}
