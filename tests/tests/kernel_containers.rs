//! Containers end to end: real Podman containers (runc, image built here from busybox, no registry)
//! started with Kubernetes pod labels; the kernel events of processes inside them, and the alerts
//! they raise, name the container and the pod; a second container and a host process keep their own
//! identities; a process started before the sensor inside a running container is identified.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kernel_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kernel_support::{action, get, start};
use serde_json::Value;
use tests::process::Process;

const RUNC: &str = "/usr/sbin/runc";
/// What a container's script does first: wait for the test's go.
const GATE: &str = "while [ ! -e /tmp/go ]; do sleep 0.1; done; ";
/// `sensor events` logs each container it has described (at info), the rest at warn.
const DESCRIBED_LOG: &str = "warn,sensor_kernel::container=info";

/// Podman and runc are there (installed by `cargo xtask setup`); a skip is loud, and a failure
/// under CI=true.
fn require_podman(test: &str) -> bool {
    if !tests::require_root(test) {
        return false;
    }
    let ok = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new(RUNC).exists();
    if !ok {
        let msg = format!("SKIPPED: podman or {RUNC} missing (cargo xtask setup installs them): `{test}` did not run");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg}; under CI=true this is a failure"
        );
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
    }
    ok
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{}", std::process::id(), nanos % 1_000_000)
}

/// Runs podman (with runc) and returns its output, failing with stderr when it fails. Podman can
/// be slow on a loaded machine: every call gets two minutes.
fn podman(args: &[&str]) -> Output {
    let mut child = Command::new("podman")
        .arg("--runtime")
        .arg(RUNC)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning podman");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("podman {args:?} took more than 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn podman_ok(args: &[&str]) -> String {
    let o = podman(args);
    assert!(
        o.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Containers, images and the API service of one test, removed on drop (also when the test fails).
struct Pods {
    dir: tempfile::TempDir,
    containers: Vec<String>,
    images: Vec<String>,
    service: Option<Child>,
}

impl Pods {
    fn new() -> Pods {
        Pods {
            dir: tempfile::tempdir().unwrap(),
            containers: Vec::new(),
            images: Vec::new(),
            service: None,
        }
    }

    /// An image of busybox alone, made from files on this machine (no registry).
    fn image(&mut self, reference: &str) {
        let root = self.dir.path().join("rootfs");
        if !root.exists() {
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::fs::create_dir_all(root.join("tmp")).unwrap();
            std::fs::copy("/bin/busybox", root.join("bin/busybox"))
                .expect("busybox-static (cargo xtask setup installs it)");
            std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
            let st = Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(self.dir.path().join("bb.tar"))
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
        }
        let tar = self.dir.path().join("bb.tar");
        podman_ok(&["import", tar.to_str().unwrap(), reference]);
        self.images.push(reference.to_string());
    }

    /// Podman's API service on a socket of this test (where labels are read).
    fn service(&mut self) -> PathBuf {
        let sock = self.dir.path().join("podman.sock");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.service = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "podman system service did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sock
    }

    /// Starts a container running `script` and returns its full id.
    fn run(&mut self, name: &str, image: &str, labels: &[(&str, &str)], script: &str) -> String {
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.extend([
            image.to_string(),
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
        ]);
        self.containers.push(name.to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = podman_ok(&refs);
        assert_eq!(id.len(), 64, "podman run printed {id:?}, not a full id");
        id
    }

    /// Waits until `path` exists inside the container (the script's end mark).
    fn wait_file(&self, name: &str, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let test = format!("test -e {path}");
            if podman(&["exec", name, "/bin/sh", "-c", &test])
                .status
                .success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never appeared in {name}; logs: {}",
                String::from_utf8_lossy(&podman(&["logs", name]).stdout)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman(&["rm", "-f", "-t", "0", c]);
        }
        for i in &self.images {
            let _ = podman(&["rmi", "-f", i]);
        }
        if let Some(mut s) = self.service.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

struct Daemon {
    process: Process,
    socket: PathBuf,
}

impl Daemon {
    fn start(config: &Path, dir: &Path, socket: &Path) -> Daemon {
        let mut cmd = Command::new(tests::sensor_bin());
        cmd.args(["run", "--config"]).arg(config);
        let log = dir.join("daemon.log");
        let mut process = Process::spawn(cmd, &log);
        process.wait_ready(Duration::from_secs(90), "the daemon to start", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("sensor running")
        });
        Daemon {
            process,
            socket: socket.to_path_buf(),
        }
    }

    /// Waits until the daemon has the metadata of container `id` (its log says it described it).
    fn wait_described(&self, id: &str, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.process.log();
            if text
                .lines()
                .any(|l| l.contains("container described") && l.contains(id) && l.contains(name))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon never described {name} ({id}):\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let o = Command::new(tests::sensor_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "sensor {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn list(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["alerts", "list", "--json"];
        args.extend_from_slice(extra);
        self.cli(&args)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The first alert about the FIFO `path` (its reason names it as the channel: `FIFO <path> `;
    /// a creator's command line quoted in another FIFO's reason may mention the path too).
    fn wait_alert(&self, path: &str) -> Value {
        let needle = about_fifo(path);
        // AN1358 decides an unwired FIFO 30 s of event time after its creation; a loaded machine
        // adds its own delay.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(a) = self
                .list(&[])
                .into_iter()
                .find(|a| a["reason"].as_str().unwrap_or("").contains(&needle))
            {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no alert naming {needle} within 120 s; alerts: {:#?}\nlog:\n{}",
                self.list(&[])
                    .iter()
                    .map(|a| a["reason"].clone())
                    .collect::<Vec<_>>(),
                self.process.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// How an AN1358 alert's reason names the FIFO it is about.
fn about_fifo(path: &str) -> String {
    format!("FIFO {path} ")
}

fn s<'a>(e: &'a Value, path: &str) -> &'a str {
    get(e, path).as_str().unwrap_or("")
}

/// The one event of `act` whose `field` is `value` (with the whole capture in the message when
/// there is none).
fn find<'a>(events: &'a [Value], act: &str, field: &str, value: &str) -> &'a Value {
    events
        .iter()
        .find(|e| action(e) == act && s(e, field) == value)
        .unwrap_or_else(|| {
            let near: Vec<String> = events
                .iter()
                .filter(|e| action(e) == act)
                .map(|e| format!("{} {}", s(e, field), get(e, "container")))
                .collect();
            panic!("no {act} with {field} = {value}; {act} events seen: {near:#?}")
        })
}

struct Who<'a> {
    id: &'a str,
    name: &'a str,
    image: &'a str,
    pod: &'a str,
    namespace: &'a str,
}

fn assert_in(e: &Value, w: &Who<'_>) {
    let ctx = || e.to_string();
    assert_eq!(s(e, "container.id"), w.id, "{}", ctx());
    assert_eq!(s(e, "container.name"), w.name, "{}", ctx());
    assert_eq!(s(e, "container.image.name"), w.image, "{}", ctx());
    assert_eq!(s(e, "container.runtime"), "podman", "{}", ctx());
    assert_eq!(s(e, "kubernetes.pod.name"), w.pod, "{}", ctx());
    assert_eq!(s(e, "kubernetes.namespace"), w.namespace, "{}", ctx());
    assert_eq!(s(e, "orchestrator.type"), "kubernetes", "{}", ctx());
    assert_eq!(s(e, "orchestrator.resource.type"), "pod", "{}", ctx());
    assert_eq!(s(e, "orchestrator.resource.name"), w.pod, "{}", ctx());
    assert_eq!(s(e, "orchestrator.namespace"), w.namespace, "{}", ctx());
}

#[test]
fn kernel_events_and_alerts_name_the_container_and_the_pod() {
    if !require_podman("kernel_events_and_alerts_name_the_container_and_the_pod") {
        return;
    }
    let u = unique();
    let mut pods = Pods::new();
    let image_a = format!("localhost/sensor-ctr-a-{u}");
    let image_b = format!("localhost/sensor-ctr-b-{u}");
    pods.image(&format!("{image_a}:1"));
    pods.image(&format!("{image_b}:2"));
    let api = pods.service();
    let dir = pods.dir.path().to_path_buf();
    let control = dir.join("control.sock");
    let config = dir.join("sensor.toml");
    // Container B's image has its own AN1358 SharedDirs (settings scoped by image): a FIFO in /tmp
    // is expected there, one in /dev/shm is not.
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"
[api]
socket = "{control}"
[kernel.containers]
podman_socket = "{api}"
[rules.settings.AN1358]
[[rules.settings.AN1358.scoped]]
image = "{image_b}*"
SharedDirs = ["/dev/shm/*"]
"#,
            state = dir.join("state").display(),
            control = control.display(),
            api = api.display(),
        ),
    )
    .unwrap();
    let check = Command::new(tests::sensor_bin())
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "config check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let daemon = Daemon::start(&config, &dir, &control);
    let cap = start(&[
        "--podman-socket",
        api.to_str().unwrap(),
        "--log",
        DESCRIBED_LOG,
    ]);

    // Each container waits for /tmp/go, which the test makes once both sensors have the
    // container's metadata (it is read off the kernel reader's path: the first events of a new
    // container carry its id alone, for as long as the runtime takes to answer).
    let script = |tag: &str, fifo: &str| {
        format!(
            "mkfifo {fifo}; syslogd -n -O /tmp/syslog & sleep 1; logger hello-{tag}; \
             /bin/busybox echo exec-marker-{tag}; touch /tmp/done; sleep 600"
        )
    };
    let (name_a, name_b) = (format!("sensor-ctr-a-{u}"), format!("sensor-ctr-b-{u}"));
    let (uid_a, uid_b) = (
        "3f0c6a1e-55f5-4b8e-9d7c-2a8a9d1f4e11",
        "8d2e0b7a-1c3d-4e5f-8a9b-0c1d2e3f4a5b",
    );
    let (ns_a, ns_b) = (format!("ns-a-{u}"), format!("ns-b-{u}"));
    let fifo_a = format!("/tmp/ctr-a-{u}");
    let fifo_b_tmp = format!("/tmp/ctr-b-{u}");
    let fifo_b_shm = format!("/dev/shm/ctr-b-{u}");
    let id_a = pods.run(
        &name_a,
        &format!("{image_a}:1"),
        &[
            ("io.kubernetes.pod.name", "pod-a"),
            ("io.kubernetes.pod.namespace", &ns_a),
            ("io.kubernetes.pod.uid", uid_a),
            ("io.kubernetes.container.name", "app-a"),
            ("app", "web"),
        ],
        &format!("{GATE}{}", script(&format!("a-{u}"), &fifo_a)),
    );
    let id_b = pods.run(
        &name_b,
        &format!("{image_b}:2"),
        &[
            ("io.kubernetes.pod.name", "pod-b"),
            ("io.kubernetes.pod.namespace", &ns_b),
            ("io.kubernetes.pod.uid", uid_b),
            ("io.kubernetes.container.name", "app-b"),
        ],
        &format!(
            "{GATE}mkfifo {fifo_b_tmp}; {}",
            script(&format!("b-{u}"), &fifo_b_shm)
        ),
    );
    for (name, id) in [(&name_a, &id_a), (&name_b, &id_b)] {
        daemon.wait_described(id, name);
        assert!(
            cap.wait_stderr(&["container described", id, name], Duration::from_secs(60)),
            "sensor events never described {name}: {:#?}",
            cap.stderr_so_far()
        );
        podman_ok(&["exec", name, "/bin/sh", "-c", "touch /tmp/go"]);
    }
    // A host process: a FIFO in /tmp and an AF_UNIX bind, outside any container.
    let fifo_host = format!("/tmp/ctr-host-{u}");
    let st = Command::new("mkfifo").arg(&fifo_host).status().unwrap();
    assert!(st.success());
    let sock_host = format!("/tmp/ctr-host-{u}.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_host).unwrap();
    drop(listener);
    pods.wait_file(&name_a, "/tmp/done");
    pods.wait_file(&name_b, "/tmp/done");

    // Alerts: A's FIFO in /tmp, B's in /dev/shm (its /tmp FIFO is allowed in its image's scope),
    // the host's in /tmp.
    let alert_a = daemon.wait_alert(&fifo_a);
    let alert_b = daemon.wait_alert(&fifo_b_shm);
    let alert_host = daemon.wait_alert(&fifo_host);
    let (events, _) = cap.stop();
    let _ = std::fs::remove_file(&fifo_host);
    let _ = std::fs::remove_file(&sock_host);

    let who_a = Who {
        id: &id_a,
        name: &name_a,
        image: &image_a,
        pod: "pod-a",
        namespace: &ns_a,
    };
    let who_b = Who {
        id: &id_b,
        name: &name_b,
        image: &image_b,
        pod: "pod-b",
        namespace: &ns_b,
    };
    // Kernel events inside A: the FIFO, the AF_UNIX bind (syslogd's /dev/log), an exec.
    let fifo_ev = find(&events, "fifo_create", "file.path", &fifo_a);
    assert_in(fifo_ev, &who_a);
    assert_eq!(s(fifo_ev, "kubernetes.pod.uid"), uid_a);
    assert_eq!(s(fifo_ev, "kubernetes.container.name"), "app-a");
    assert_eq!(s(fifo_ev, "kubernetes.labels.app"), "web");
    assert_eq!(get(fifo_ev, "container.image.tag")[0], "1");
    // The image digest, from Podman's API.
    assert!(
        get(fifo_ev, "container.image.hash.all")[0]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{fifo_ev}"
    );
    let binds: Vec<&Value> = events
        .iter()
        .filter(|e| action(e) == "unix_bind" && s(e, "socket.path") == "/dev/log")
        .collect();
    let bind_a = binds
        .iter()
        .find(|e| s(e, "container.id") == id_a)
        .unwrap_or_else(|| panic!("no unix_bind of /dev/log in A: {binds:#?}"));
    assert_in(bind_a, &who_a);
    let marker = |tag: &str| {
        events
            .iter()
            .find(|e| {
                action(e) == "exec"
                    && get(e, "process.args")
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == &format!("exec-marker-{tag}")))
            })
            .unwrap_or_else(|| panic!("no exec with exec-marker-{tag}"))
    };
    assert_in(marker(&format!("a-{u}")), &who_a);
    // B keeps its own identity.
    let fifo_ev_b = find(&events, "fifo_create", "file.path", &fifo_b_shm);
    assert_in(fifo_ev_b, &who_b);
    assert_eq!(get(fifo_ev_b, "container.image.tag")[0], "2");
    assert!(get(fifo_ev_b, "kubernetes.labels").is_null());
    assert_in(marker(&format!("b-{u}")), &who_b);
    let bind_b = binds
        .iter()
        .find(|e| s(e, "container.id") == id_b)
        .unwrap_or_else(|| panic!("no unix_bind of /dev/log in B: {binds:#?}"));
    assert_in(bind_b, &who_b);
    // The host keeps none.
    for e in [
        find(&events, "fifo_create", "file.path", &fifo_host),
        find(&events, "unix_bind", "socket.path", &sock_host),
    ] {
        assert!(
            get(e, "container").is_null() && get(e, "kubernetes").is_null(),
            "a host event with container fields: {e}"
        );
    }

    // EQL rules can use the fields (`sensor query` over the captured events).
    let ndjson = dir.join("events.ndjson");
    std::fs::write(
        &ndjson,
        events.iter().map(|e| format!("{e}\n")).collect::<String>(),
    )
    .unwrap();
    let q = Command::new(tests::sensor_bin())
        .args(["query", "--log", "error", "--eql"])
        .arg(format!(
            r#"file where kubernetes.namespace == "{ns_a}" and container.image.tag == "1" and orchestrator.resource.name == "pod-a""#
        ))
        .arg("--input")
        .arg(&ndjson)
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let hits: Vec<Value> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        hits.iter().any(|e| s(e, "file.path") == fifo_a)
            && hits.iter().all(|e| s(e, "container.id") == id_a),
        "EQL over the container fields: {hits:#?}"
    );

    // The alert raised inside A shows A and its pod in `sensor alerts show`.
    let id = alert_a["id"].as_i64().unwrap().to_string();
    let shown: Value =
        serde_json::from_str(&daemon.cli(&["alerts", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["rule_id"], "AN1358");
    assert_eq!(shown["container"]["id"], id_a.as_str());
    assert_eq!(shown["container"]["name"], name_a.as_str());
    assert_eq!(shown["container"]["image"], format!("{image_a}:1").as_str());
    assert_eq!(shown["container"]["pod"], "pod-a");
    assert_eq!(shown["container"]["namespace"], ns_a.as_str());
    assert_in(&shown["evidence"][0], &who_a);
    let text = daemon.cli(&["alerts", "show", &id]);
    assert!(
        text.contains(&name_a) && text.contains(&id_a) && text.contains(&format!("{ns_a}/pod-a")),
        "alerts show does not name the container and pod:\n{text}"
    );
    assert_eq!(alert_b["container"]["id"], id_b.as_str());
    assert!(alert_host.get("container").is_none(), "{alert_host}");
    // The scope: B's FIFO in /tmp raised nothing; A's did (the unscoped settings).
    if let Some(a) = daemon.list(&[]).iter().find(|a| {
        a["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&about_fifo(&fifo_b_tmp))
    }) {
        let id = a["id"].as_i64().unwrap().to_string();
        panic!(
            "the FIFO in /tmp inside B's image raised an alert despite the scoped SharedDirs: {}",
            daemon.cli(&["alerts", "show", &id, "--json"])
        );
    }
    // Filters.
    let in_a = daemon.list(&["--namespace", &ns_a]);
    assert!(
        !in_a.is_empty()
            && in_a
                .iter()
                .all(|a| a["container"]["namespace"] == ns_a.as_str()),
        "{in_a:#?}"
    );
    let in_b = daemon.list(&["--container", &name_b]);
    assert!(
        !in_b.is_empty() && in_b.iter().all(|a| a["container"]["id"] == id_b.as_str()),
        "{in_b:#?}"
    );
    let by_prefix = daemon.list(&["--container", &id_a[..12]]);
    assert!(
        by_prefix.iter().any(|a| a["id"] == alert_a["id"]),
        "{by_prefix:#?}"
    );
    assert!(by_prefix
        .iter()
        .all(|a| a["container"]["id"] == id_a.as_str()));

    // `sensor status` shows the container resolver.
    let status = daemon.cli(&["status", "--json"]);
    assert!(status.contains("containers_seen"), "{status}");
    let text = daemon.cli(&["status"]);
    assert!(
        text.contains("containers:") && text.contains("containers_seen: "),
        "{text}"
    );
    assert!(!text.contains("container runtime not reachable"), "{text}");
}

/// A process that was already running in a container when the sensor started (it is in the
/// process table from /proc, no exec or fork record of it ever comes) is identified.
#[test]
fn a_process_started_before_the_sensor_is_identified() {
    if !require_podman("a_process_started_before_the_sensor_is_identified") {
        return;
    }
    let u = unique();
    let mut pods = Pods::new();
    let image = format!("localhost/sensor-ctr-pre-{u}");
    pods.image(&format!("{image}:1"));
    let name = format!("sensor-ctr-pre-{u}");
    let ns = format!("ns-pre-{u}");
    // The shell makes a FIFO, waits for /tmp/go, then opens the FIFO itself (a redirection of the
    // shell, so the actor is the process that started before the sensor).
    let id = pods.run(
        &name,
        &format!("{image}:1"),
        &[
            ("io.kubernetes.pod.name", "pod-pre"),
            ("io.kubernetes.pod.namespace", &ns),
        ],
        "mkfifo /tmp/pre; while [ ! -e /tmp/go ]; do sleep 0.2; done; exec 3<>/tmp/pre; \
         echo opened > /tmp/done; sleep 600",
    );
    let pid: i64 = podman_ok(&["inspect", "-f", "{{.State.Pid}}", &name])
        .parse()
        .unwrap();
    // No API socket here: name and image come from podman's files, the pod from nowhere (labels
    // are only in podman's database), which the test also checks.
    let cap = start(&[
        "--podman-socket",
        "/nonexistent/podman.sock",
        "--log",
        DESCRIBED_LOG,
    ]);
    // The table is seeded from /proc at start; the metadata comes a moment later.
    assert!(
        cap.wait_stderr(
            &["container described", &id, &name],
            Duration::from_secs(60)
        ),
        "{:#?}",
        cap.stderr_so_far()
    );
    podman_ok(&["exec", &name, "/bin/sh", "-c", "touch /tmp/go"]);
    pods.wait_file(&name, "/tmp/done");
    let (events, stderr) = cap.stop();
    let open = events
        .iter()
        .find(|e| action(e) == "fifo_open" && get(e, "process.pid").as_i64() == Some(pid))
        .unwrap_or_else(|| panic!("no fifo_open by the pre-started shell {pid}"));
    assert_eq!(s(open, "file.path"), "/tmp/pre");
    assert_eq!(s(open, "container.id"), id, "{open}");
    assert_eq!(s(open, "container.name"), name, "{open}");
    assert_eq!(s(open, "container.image.name"), image, "{open}");
    assert_eq!(s(open, "container.runtime"), "podman");
    // (The shell execs its last command, `sleep`, later; before the open it had not.)
    let at = events.iter().position(|e| std::ptr::eq(e, open)).unwrap();
    assert!(
        !events[..at]
            .iter()
            .any(|e| action(e) == "exec" && get(e, "process.pid").as_i64() == Some(pid)),
        "the shell exec'd after the sensor started and before the open: not the case this test is about"
    );
    // The unreachable API socket is said once.
    let said = stderr
        .iter()
        .filter(|l| l.contains("container runtime API not reachable"))
        .count();
    assert_eq!(said, 1, "{stderr:#?}");
}

/// `/proc/<pid>/status` value of `key`.
fn status_of(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or(String::new(), |v| v.trim().to_string())
}

/// The daemon's container metadata helper: its child whose command line says so.
fn helper_of(daemon: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_string_lossy().parse().ok()?;
        let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
        (status_of(pid, "PPid:") == daemon.to_string()
            && String::from_utf8_lossy(&cmd).contains("container-meta-helper"))
        .then_some(pid)
    })
}

/// The defect this guards against: once the daemon has dropped its privileges (#15), the
/// runtimes' root-only files and API sockets are out of its reach, so a container first seen
/// after the drop was named by its id alone. Here the daemon runs as `nobody` with no capability;
/// a Podman container with Kubernetes pod labels is started after the drop, and its FIFO and exec
/// events (the evidence of the alerts they raise) carry its name, image, pod and namespace, read
/// by the confined helper process.
#[test]
fn a_container_started_after_the_privilege_drop_is_fully_described() {
    const TEST: &str = "a_container_started_after_the_privilege_drop_is_fully_described";
    if !require_podman(TEST) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let u = unique();
    let mut pods = Pods::new();
    // `nobody` must reach its state directory under the test's one.
    std::fs::set_permissions(pods.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = format!("localhost/sensor-ctr-priv-{u}");
    pods.image(&format!("{image}:3"));
    let api = pods.service();
    let dir = pods.dir.path().to_path_buf();
    let control = dir.join("run/control.sock");
    let rules = dir.join("rules.toml");
    let marker = format!("exec-marker-priv-{u}");
    std::fs::write(
        &rules,
        format!(
            "[[rule]]\nid = \"ctr-exec-{u}\"\nname = \"Exec marker in a container\"\nseverity = \"low\"\nrisk_score = 1\nquery = '''process where event.action == \"exec\" and process.command_line : \"*{marker}*\"'''\n"
        ),
    )
    .unwrap();
    let config = dir.join("sensor.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\n[api]\nsocket = \"{c}\"\n[privileges]\nuser = \"nobody\"\n[kernel.containers]\npodman_socket = \"{a}\"\n[rules]\npaths = [\"{r}\"]\n",
            d = dir.display(),
            c = control.display(),
            a = api.display(),
            r = rules.display(),
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&config, &dir, &control);
    let log = || daemon.process.log();
    assert!(log().contains("privileges dropped"), "{}", log());

    // The daemon: uid nobody, no capability in any thread.
    let pid = daemon.process.pid().expect("the daemon runs");
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let get = |k: &str| {
            st.lines()
                .find_map(|l| l.strip_prefix(k))
                .map_or("", str::trim)
                .to_string()
        };
        assert_eq!(get("CapEff:"), "0000000000000000", "daemon thread: {st}");
        assert_eq!(get("CapPrm:"), "0000000000000000", "daemon thread: {st}");
        assert!(get("Uid:").split_whitespace().all(|i| i == "65534"), "{st}");
    }
    // The helper: the same user, CAP_DAC_OVERRIDE (bit 1) and CAP_DAC_READ_SEARCH (bit 2) only.
    let helper = helper_of(pid).unwrap_or_else(|| panic!("no metadata helper:\n{}", log()));
    assert!(
        status_of(helper, "Uid:")
            .split_whitespace()
            .all(|i| i == "65534"),
        "helper uids {}",
        status_of(helper, "Uid:")
    );
    for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(status_of(helper, key), "0000000000000006", "helper {key}");
    }
    assert_eq!(status_of(helper, "NoNewPrivs:"), "1");

    // A container started after the drop, with Kubernetes pod labels.
    let name = format!("sensor-ctr-priv-{u}");
    let ns = format!("ns-priv-{u}");
    let fifo = format!("/tmp/ctr-priv-{u}");
    let id = pods.run(
        &name,
        &format!("{image}:3"),
        &[
            ("io.kubernetes.pod.name", "pod-priv"),
            ("io.kubernetes.pod.namespace", &ns),
            ("app", "priv"),
        ],
        &format!("{GATE}mkfifo {fifo}; /bin/busybox echo {marker}; touch /tmp/done; sleep 600"),
    );
    daemon.wait_described(&id, &name);
    podman_ok(&["exec", &name, "/bin/sh", "-c", "touch /tmp/go"]);
    pods.wait_file(&name, "/tmp/done");

    let who = Who {
        id: &id,
        name: &name,
        image: &image,
        pod: "pod-priv",
        namespace: &ns,
    };
    let fifo_alert = daemon.wait_alert(&fifo);
    let exec_alert = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(a) = daemon
                .list(&[])
                .into_iter()
                .find(|a| a["rule_id"] == format!("ctr-exec-{u}").as_str())
            {
                break a;
            }
            assert!(Instant::now() < deadline, "no exec alert:\n{}", log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    for (what, alert) in [("FIFO", &fifo_alert), ("exec", &exec_alert)] {
        let aid = alert["id"].as_i64().unwrap().to_string();
        let shown: Value =
            serde_json::from_str(&daemon.cli(&["alerts", "show", &aid, "--json"])).unwrap();
        let ev = &shown["evidence"][0];
        assert_in(ev, &who);
        assert_eq!(get(ev, "container.image.tag")[0], "3", "{what}: {ev}");
        assert_eq!(s(ev, "kubernetes.labels.app"), "priv", "{what}: {ev}");
        assert_eq!(shown["container"]["pod"], "pod-priv", "{what}: {shown}");
    }
    assert_eq!(
        s(
            &serde_json::from_str::<Value>(&daemon.cli(&[
                "alerts",
                "show",
                &exec_alert["id"].as_i64().unwrap().to_string(),
                "--json"
            ]))
            .unwrap()["evidence"][0],
            "event.action"
        ),
        "exec"
    );
    // Nothing unreachable: the helper reached Podman's root-owned API socket.
    let status: Value = serde_json::from_str(&daemon.cli(&["status", "--json"])).unwrap();
    let text = status.to_string();
    assert!(
        !text.contains("not reachable") && !text.contains("helper failed"),
        "{status:#}"
    );
}
