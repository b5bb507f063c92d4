//! End-to-end network ingest over loopback: the real `sensor ingest-server` process, real clients
//! (curl, Debian's audisp-remote, a raw HTTP/1.1 client), a test CA for mutual TLS, and kill -9.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use tests::process::{wait_until, Process};
use tests::{free_port, sha256_hex};

const TOKEN: &str = "test-token-4f1c9a";

struct Server {
    process: Option<Process>,
    config: PathBuf,
    output: PathBuf,
    port: u16,
}

impl Server {
    fn start(dir: &Path, port: u16, extra: &str) -> Server {
        let config = dir.join("ingest.toml");
        let output = dir.join("out.ndjson");
        let cfg = format!(
            "spool_dir = \"{}\"\ngroup_idle_secs = 1\n{extra}\n[[ingest.agents]]\nid = \"agent-a\"\ntoken_sha256 = \"{}\"\n",
            dir.join("spool").display(),
            sha256_hex(TOKEN)
        );
        std::fs::write(&config, cfg).unwrap();
        let mut s = Server {
            process: None,
            config,
            output,
            port,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(tests::sensor_bin());
        cmd.args(["ingest-server", "--config"])
            .arg(&self.config)
            .arg("--output")
            .arg(&self.output);
        let mut p = Process::spawn(cmd, &self.config.with_extension("log"));
        let port = self.port;
        p.wait_ready(Duration::from_secs(20), "ingest-server to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        self.process = Some(p);
    }

    fn log(&self) -> String {
        self.process.as_ref().map(Process::log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(15));
        }
    }

    fn events(&self) -> Vec<Value> {
        let Ok(f) = std::fs::File::open(&self.output) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    fn wait_events(&self, pred: &dyn Fn(&[Value]) -> bool, what: &str) -> Vec<Value> {
        wait_until(
            Duration::from_secs(30),
            what,
            || {
                let ev = self.events();
                pred(&ev).then_some(ev)
            },
            || format!("have {} events; log:\n{}", self.events().len(), self.log()),
        )
    }
}

/// Runs curl; returns (HTTP status, body). Status 0 when curl itself failed (e.g. TLS refused).
fn curl(args: &[&str], body: &[u8]) -> (u16, String) {
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--data-binary",
            "@-",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl must be installed");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn http_token_auth_bad_lines_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(
        dir.path(),
        port,
        &format!("[ingest.http]\nlisten = \"127.0.0.1:{port}\"\nplaintext_loopback = true\n"),
    );
    let url = format!("http://127.0.0.1:{port}/v1/ingest/ecs");
    let auth = format!("Authorization: Bearer {TOKEN}");

    let good = b"{\"@timestamp\":\"2024-05-01T10:00:00Z\",\"process\":{\"name\":\"a\"},\"n\":1}\n{\"@timestamp\":\"2024-05-01T10:00:01Z\",\"process\":{\"name\":\"b\"},\"n\":2}\n";
    let (code, body) = curl(&["-H", &auth, &url], good);
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["accepted"], 2);
    assert_eq!(reply["rejected"], serde_json::json!([]));

    let (code, body) = curl(&[&url], good);
    assert_eq!(code, 401, "{body}");
    let (code, _) = curl(&["-H", "Authorization: Bearer wrong", &url], good);
    assert_eq!(code, 401);

    let mixed = b"{\"n\":3}\n{\"n\": oops}\n{\"n\":4}\n";
    let (code, body) = curl(&["-H", &auth, &url], mixed);
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["accepted"], 2, "{body}");
    assert_eq!(reply["rejected"][0]["line"], 2, "{body}");
    assert!(
        reply["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{body}"
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"n\":5}\n").unwrap();
    let (code, body) = curl(
        &["-H", &auth, "-H", "Content-Encoding: gzip", &url],
        &gz.finish().unwrap(),
    );
    assert_eq!(code, 200, "{body}");

    let (code, body) = curl(
        &[
            "-H",
            &auth,
            &format!("http://127.0.0.1:{port}/v1/ingest/nope"),
        ],
        good,
    );
    assert_eq!(code, 404, "{body}");

    let evs = server.wait_events(&|e| e.len() >= 5, "5 events");
    let mut ns: Vec<i64> = evs.iter().filter_map(|e| e["n"].as_i64()).collect();
    ns.sort_unstable();
    assert_eq!(ns, vec![1, 2, 3, 4, 5]);
    assert!(evs
        .iter()
        .all(|e| e["agent"]["id"] == "agent-a" && e["event"]["original"].is_string()));
    server.stop();
}

#[test]
fn mutual_tls_with_a_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA, a server certificate for 127.0.0.1, and a client certificate, all made here.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ingest test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let srv_key = rcgen::KeyPair::generate().unwrap();
    let srv = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&srv_key, &ca, &ca_key)
        .unwrap();
    let cli_key = rcgen::KeyPair::generate().unwrap();
    let mut cli_params = rcgen::CertificateParams::new(vec!["agent-a".to_string()]).unwrap();
    cli_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agent-a");
    let cli = cli_params.signed_by(&cli_key, &ca, &ca_key).unwrap();
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", srv.pem()),
        ("server.key", srv_key.serialize_pem()),
        ("client.pem", cli.pem()),
        ("client.key", cli_key.serialize_pem()),
    ] {
        std::fs::write(d.join(name), pem).unwrap();
        // Keys must be private to their owner (the server refuses group/other access).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let port = free_port();
    let mut server = Server::start(
        d,
        port,
        &format!(
            "[ingest.http]\nlisten = \"127.0.0.1:{port}\"\n[ingest.http.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            d.join("server.pem").display(),
            d.join("server.key").display(),
            d.join("ca.pem").display()
        ),
    );
    let url = format!("https://127.0.0.1:{port}/v1/ingest/ecs");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let ca_path = d.join("ca.pem").display().to_string();
    let cert = d.join("client.pem").display().to_string();
    let key = d.join("client.key").display().to_string();
    let (code, body) = curl(
        &[
            "--cacert", &ca_path, "--cert", &cert, "--key", &key, "-H", &auth, &url,
        ],
        b"{\"n\":1}\n",
    );
    assert_eq!(code, 200, "with a client certificate: {body}");
    let (code, body) = curl(&["--cacert", &ca_path, "-H", &auth, &url], b"{\"n\":2}\n");
    assert_ne!(
        code, 200,
        "without a client certificate the server must refuse: {body}"
    );
    let evs = server.wait_events(&|e| !e.is_empty(), "the mTLS event");
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["n"], 1);
    server.stop();
}

/// Restores a file on drop.
struct Restore(PathBuf, Option<Vec<u8>>);

impl Drop for Restore {
    fn drop(&mut self) {
        match &self.1 {
            Some(b) => std::fs::write(&self.0, b).unwrap(),
            None => {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }
}

/// Both audisp-remote tests write the one config file it reads: one at a time.
static AUDISP_CONF: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn audisp_remote_delivers(format: &str) {
    if !tests::require_root("audisp_remote_delivers") {
        return;
    }
    let _guard = AUDISP_CONF
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bin = Path::new("/sbin/audisp-remote");
    assert!(
        bin.exists(),
        "Debian's audispd-plugins must be installed (/sbin/audisp-remote)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // audisp-remote sends no node name (no `name_format`): the host is named from the peer's
    // configured `host_name` (managed run), or its agent id (ascii run, none configured).
    let (host_cfg, host_name) = if format == "managed" {
        (", host_name = \"db-01.example.org\"", "db-01.example.org")
    } else {
        ("", "audit-host")
    };
    let mut server = Server::start(
        dir.path(),
        port,
        &format!("[ingest.auditd]\nlisten = \"127.0.0.1:{port}\"\npeers = [{{ addr = \"127.0.0.1\", agent_id = \"audit-host\"{host_cfg} }}]\n"),
    );
    // A privileged source port, as the listener requires by default (auditd's `tcp_client_ports`).
    let local_port = 600
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 400;
    let conf = PathBuf::from("/etc/audit/audisp-remote.conf");
    let _restore = Restore(conf.clone(), std::fs::read(&conf).ok());
    std::fs::create_dir_all("/var/spool/audit").unwrap();
    std::fs::write(
        &conf,
        format!(
            "remote_server = 127.0.0.1\nport = {port}\nlocal_port = {local_port}\ntransport = tcp\nmode = immediate\nformat = {format}\n\
             queue_file = /var/spool/audit/remote-test.log\nqueue_depth = 10240\nnetwork_retry_time = 1\n\
             max_tries_per_record = 5\nmax_time_per_record = 5\nheartbeat_timeout = 0\nnetwork_failure_action = stop\n\
             remote_ending_action = reconnect\n"
        ),
    )
    .unwrap();
    // Real audit records: the laurel connect and perl reverse-shell samples.
    let corpora = tests::shared_dir().join("corpora/auditd/laurel");
    let mut input = String::new();
    for f in [
        "record-connect.txt",
        "record-perl-reverse-shell.txt",
        "record-execve.txt",
    ] {
        input.push_str(&std::fs::read_to_string(corpora.join(f)).unwrap());
    }
    let serials: std::collections::BTreeSet<String> = input
        .lines()
        .filter_map(|l| {
            l.split("msg=audit(")
                .nth(1)?
                .split(')')
                .next()
                .map(str::to_string)
        })
        .collect();
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let evs = server.wait_events(
        &|e| {
            let got: std::collections::BTreeSet<String> = e
                .iter()
                .filter_map(|ev| {
                    ev["event"]["original"]
                        .as_str()?
                        .split("msg=audit(")
                        .nth(1)?
                        .split(')')
                        .next()
                        .map(str::to_string)
                })
                .collect();
            got == serials
        },
        &format!(
            "every audit event ({}) from audisp-remote ({format})",
            serials.len()
        ),
    );
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    let connect = evs
        .iter()
        .find(|e| e["event"]["action"] == "connect")
        .expect("a connect event");
    assert_eq!(connect["agent"]["id"], "audit-host");
    for e in &evs {
        // A record with `node=` names its host itself; the others get the configured name.
        let original = e["event"]["original"].as_str().unwrap_or_default();
        let want = original
            .strip_prefix("node=")
            .and_then(|r| r.split(' ').next())
            .unwrap_or(host_name);
        assert_eq!(e["host"]["name"], want, "every event names its host: {e}");
    }
    assert_eq!(connect["destination"]["port"], 11211);
    assert!(evs
        .iter()
        .any(|e| e["event"]["action"] == "exec" && e["process"]["args"].is_array()));
    println!(
        "audisp-remote ({format}): {} events for {} audit serials",
        evs.len(),
        serials.len()
    );
    server.stop();
}

#[test]
fn audisp_remote_managed_delivers() {
    audisp_remote_delivers("managed");
}

#[test]
fn audisp_remote_ascii_delivers() {
    audisp_remote_delivers("ascii");
}

/// Posts one NDJSON batch with the test token; Some(accepted) on 200.
fn post(port: u16, body: &str) -> Option<u64> {
    tests::post_ecs(port, TOKEN, body)
}

#[test]
fn kill_9_while_streaming_loses_nothing_acknowledged_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(
        dir.path(),
        port,
        &format!("[ingest.http]\nlisten = \"127.0.0.1:{port}\"\nplaintext_loopback = true\n"),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // A client streams batches of 50 numbered events until told to stop; it records what was acknowledged.
    let client = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut next = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let ids: Vec<u64> = (next..next + 50).collect();
            let body: String = ids
                .iter()
                .map(|i| format!("{{\"@timestamp\":\"2024-05-01T10:00:00Z\",\"id\":{i}}}\n"))
                .collect();
            if post(port, &body) == Some(50) {
                acked.extend(ids);
            }
            next += 50;
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(1500));
    server.kill9();
    std::thread::sleep(Duration::from_millis(300));
    server.spawn();
    std::thread::sleep(Duration::from_millis(1000));
    server.kill9();
    server.spawn();
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = client.join().unwrap();
    assert!(
        acked.len() > 500,
        "the client got only {} acknowledgements",
        acked.len()
    );
    let want: std::collections::BTreeSet<u64> = acked.iter().copied().collect();
    let evs = server.wait_events(
        &|e| {
            let have: std::collections::BTreeSet<u64> =
                e.iter().filter_map(|ev| ev["id"].as_u64()).collect();
            want.is_subset(&have)
        },
        "every acknowledged record",
    );
    server.stop();
    let evs_after = server.events();
    assert!(evs_after.len() >= evs.len());
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for e in &evs_after {
        *counts.entry(e["id"].as_u64().unwrap()).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    println!(
        "crash test: {} acknowledged, {} events processed ({} unacknowledged but spooled), duplicates: {}",
        acked.len(),
        counts.len(),
        counts.len() - want.len(),
        dups.len()
    );
    assert!(dups.is_empty(), "events processed twice: {dups:?}");
    assert!(want.iter().all(|i| counts.contains_key(i)));
}

/// A Zeek TSV log posted in two parts with a restart between them: the rows of the second part
/// come after a header that lies before the restored checkpoint, and must still be decoded.
#[test]
fn zeek_tsv_rows_after_a_restart_still_have_their_header() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen =
        format!("[ingest.http]\nlisten = \"127.0.0.1:{port}\"\nplaintext_loopback = true\n");
    let mut server = Server::start(dir.path(), port, &listen);
    let url = format!("http://127.0.0.1:{port}/v1/ingest/zeek");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let header = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\n";
    let rows = |from: u32| -> String {
        (from..from + 3)
            .map(|n| format!("1700000{n}.5\tC{n}\t10.0.0.{n}\t4{n}000\t10.9.9.9\t443\ttcp\n"))
            .collect()
    };
    let (code, body) = curl(
        &["-H", &auth, &url],
        format!("{header}{}", rows(1)).as_bytes(),
    );
    assert_eq!(code, 200, "{body}");
    server.wait_events(&|e| e.len() >= 3, "the first 3 rows");
    server.stop();
    server.spawn();
    let (code, body) = curl(&["-H", &auth, &url], rows(4).as_bytes());
    assert_eq!(code, 200, "{body}");
    let evs = server.wait_events(&|e| e.len() >= 6, "all 6 rows");
    let mut ports: Vec<i64> = evs
        .iter()
        .filter_map(|e| e["source"]["port"].as_i64())
        .collect();
    ports.sort_unstable();
    assert_eq!(
        ports,
        vec![41000, 42000, 43000, 44000, 45000, 46000],
        "{evs:?}"
    );
    assert!(
        !server.log().contains("before any `#fields` header"),
        "rows were rejected after the restart:\n{}",
        server.log()
    );
    server.stop();
}

/// `POST /v1/ingest/windows`: rendered event XML as `wevtutil qe /f:xml /e:Events` prints it (a
/// wrapper, events back to back on one line, one spanning lines) beside an NXLog JSON line; each
/// event is one record, a broken one is rejected with the line it starts on.
#[test]
fn windows_event_xml_and_nxlog_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(
        dir.path(),
        port,
        &format!("[ingest.http]\nlisten = \"127.0.0.1:{port}\"\nplaintext_loopback = true\n"),
    );
    let url = format!("http://127.0.0.1:{port}/v1/ingest/windows");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let ev = |id: u32, pipe: &str| {
        format!("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Sysmon'/><EventID>{id}</EventID><TimeCreated SystemTime='2024-05-01T10:00:00.5Z'/><Computer>DC01.corp.example</Computer></System><EventData><Data Name='PipeName'>{pipe}</Data><Data Name='Image'>C:\\x.exe</Data></EventData></Event>")
    };
    let body = format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n<Events>{}{}\n{}\n<Event><System><EventID>1</Event>\n</Events>\n{}\n",
        ev(17, "\\a"),
        ev(18, "&lt;Anonymous Pipe&gt;"),
        ev(17, "\\b").replace("<EventData>", "\n<EventData>\n"),
        r#"{"EventID":18,"SourceName":"Microsoft-Windows-Sysmon","Hostname":"dc01","UtcTime":"2024-05-01 10:00:01.000","PipeName":"\\c"}"#
    );
    let (code, reply) = curl(&["-H", &auth, &url], body.as_bytes());
    assert_eq!(code, 200, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["accepted"], 4, "{reply}");
    assert_eq!(reply["rejected"][0]["line"], 6, "{reply}");
    let evs = server.wait_events(&|e| e.len() >= 4, "4 windows events");
    let mut pipes: Vec<&str> = evs
        .iter()
        .filter_map(|e| e["file"]["name"].as_str())
        .collect();
    pipes.sort_unstable();
    assert_eq!(pipes, ["<Anonymous Pipe>", "\\a", "\\b", "\\c"]);
    assert!(evs.iter().all(|e| e["host"]["name"] == "dc01"));
    server.stop();
}
