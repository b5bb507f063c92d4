//! deploy/: the systemd unit passes `systemd-analyze verify` without a warning, the Kubernetes manifests
//! (each file and the kustomize build) validate against the Kubernetes schemas offline
//! (PyPI `kubernetes-validate --strict`), and every shipped config passes `sensor config check`.
//!
//! Tools (installed by `cargo xtask setup`): apt `systemd` (systemd-analyze), pip `kubernetes-validate`,
//! and optionally `kubectl` for the kustomize build. Missing tools fail under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    tests::workspace_root().join("deploy")
}

fn have(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let msg = format!("SKIPPED: `{tool}` is not installed; test `{test}` did not run (cargo xtask setup installs it)");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg}; under CI=true this is a failure"
        );
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
    }
    found
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    if !have("systemd-analyze", "the_systemd_unit_verifies_cleanly") {
        return;
    }
    let unit = std::fs::read_to_string(deploy().join("systemd/sensor.service")).unwrap();
    // The unit's capabilities are exactly what loading the kernel sensor and dropping privileges need;
    // CAP_SYS_ADMIN is not among them.
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap();
    let mut caps: Vec<&str> = caps.split_whitespace().collect();
    caps.sort_unstable();
    assert_eq!(
        caps,
        [
            "CAP_BPF",
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_DAC_READ_SEARCH",
            "CAP_PERFMON",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SYS_PTRACE",
        ]
    );
    for want in [
        "ProtectSystem=strict",
        "StateDirectory=sensor",
        "RuntimeDirectory=sensor",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(want), "unit lacks {want}");
    }
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/sensor",
            tests::sensor_bin().to_str().unwrap(),
        ),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {}\n{err}",
        o.status
    );
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("{}", line.trim());
    // The figure docs/operations.md gives; it was 3.6 before the privilege drop.
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure level in `{line}`"));
    assert!(
        score <= 3.0,
        "exposure {score} (was 3.6; docs say 3.0): {line}"
    );
    let ops = std::fs::read_to_string(tests::workspace_root().join("docs/operations.md")).unwrap();
    assert!(
        ops.contains(&format!("rates it {score:.1}")),
        "docs/operations.md does not give the unit's exposure {score:.1}"
    );
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy().join("kubernetes/base"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    v.sort();
    v
}

fn validate(files: &[PathBuf]) {
    let o = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(files)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "kubernetes-validate failed:\n{out}");
    assert!(!out.contains("ERROR") && !out.contains("WARN"), "{out}");
    assert!(out.contains("passed"), "{out}");
}

#[test]
fn the_kubernetes_manifests_validate_offline() {
    if !have(
        "kubernetes-validate",
        "the_kubernetes_manifests_validate_offline",
    ) {
        return;
    }
    let files = manifests();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "daemonset.yaml",
        "service.yaml",
        "configmap.yaml",
        "networkpolicy.yaml",
        "serviceaccount.yaml",
        "namespace.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing {want} in {names:?}"
        );
    }
    validate(&files);
    // Every file the kustomization lists exists, and nothing is left out.
    let k = std::fs::read_to_string(deploy().join("kubernetes/base/kustomization.yaml")).unwrap();
    for n in &names {
        assert!(
            k.contains(&format!("- {n}")),
            "kustomization.yaml does not list {n}"
        );
    }
    // What kustomize builds validates too (when kubectl is here to build it).
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let o = Command::new("kubectl")
            .arg("kustomize")
            .arg(deploy().join("kubernetes/base"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let dir = tempfile::tempdir().unwrap();
        let built = dir.path().join("built.yaml");
        std::fs::write(&built, &o.stdout).unwrap();
        validate(&[built]);
    } else {
        eprintln!(
            "note: kubectl not installed; the kustomize build was not validated (each file was)"
        );
    }
    // The DaemonSet has what the kernel sensor needs.
    let ds = std::fs::read_to_string(deploy().join("kubernetes/base/daemonset.yaml")).unwrap();
    for want in [
        "hostPID: true",
        "path: /sys/kernel/tracing",
        "path: /sys/kernel/btf",
        "livenessProbe",
        "readinessProbe",
        "limits:",
        "requests:",
        "automountServiceAccountToken: false",
        "allowPrivilegeEscalation: false",
    ] {
        assert!(ds.contains(want), "daemonset.yaml lacks `{want}`");
    }
    // Least privilege: no SYS_ADMIN, a confined seccomp, no host mount nothing reads, no RBAC
    // (the sensor never calls the Kubernetes API), and the drop to the image's user is configured.
    for unwanted in ["SYS_ADMIN", "/host/proc", "/sys/fs/bpf"] {
        assert!(!ds.contains(unwanted), "daemonset.yaml has `{unwanted}`");
    }
    assert!(
        ds.lines().any(|l| l.trim() == "privileged: false")
            && !ds.lines().any(|l| l.trim() == "privileged: true")
    );
    let seccomp = ds
        .split("seccompProfile:")
        .nth(1)
        .and_then(|r| r.lines().find_map(|l| l.trim().strip_prefix("type:")))
        .map(str::trim);
    assert_eq!(seccomp, Some("RuntimeDefault"));
    assert!(!names.iter().any(|n| n == "rbac.yaml"));
    let sa = std::fs::read_to_string(deploy().join("kubernetes/base/serviceaccount.yaml")).unwrap();
    assert!(sa.contains("automountServiceAccountToken: false"));
    let cm = std::fs::read_to_string(deploy().join("kubernetes/base/configmap.yaml")).unwrap();
    assert!(cm.contains("[privileges]") && cm.contains("user = \"sensor\""));
    let cf = std::fs::read_to_string(deploy().join("container/Containerfile")).unwrap();
    assert!(cf.contains("useradd --system --uid 65532"));
    let np = std::fs::read_to_string(deploy().join("kubernetes/base/networkpolicy.yaml")).unwrap();
    assert!(np.contains("port: 9464") && np.contains("namespaceSelector"));
}

fn config_check(path: &Path) {
    let o = Command::new(tests::sensor_bin())
        .args(["config", "check"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_shipped_configs_pass_config_check() {
    config_check(&deploy().join("config/sensor.toml"));
    // The TOML inside the ConfigMap.
    let cm = std::fs::read_to_string(deploy().join("kubernetes/base/configmap.yaml")).unwrap();
    let start = cm.find("sensor.toml: |").unwrap();
    let body: String = cm[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
        .collect();
    assert!(body.contains("[metrics]"), "{body}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("configmap-sensor.toml");
    std::fs::write(&p, body).unwrap();
    config_check(&p);
}

// ---- The fleet's deploy files: central (StatefulSet, systemd unit) and gateway (Deployment). ----

fn fleet_dir() -> PathBuf {
    deploy().join("kubernetes/fleet")
}

#[test]
fn the_central_unit_verifies_cleanly_with_no_privilege() {
    if !have(
        "systemd-analyze",
        "the_central_unit_verifies_cleanly_with_no_privilege",
    ) {
        return;
    }
    let unit = std::fs::read_to_string(deploy().join("systemd/sensor-central.service")).unwrap();
    // Not a capability, not root, secrets from systemd's credentials.
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "User=sensor",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectProc=invisible",
        "PrivateUsers=yes",
        "ExecStart=/usr/local/bin/sensor run --config /etc/sensor/central.toml",
    ] {
        assert!(
            lines.contains(&want),
            "sensor-central.service lacks `{want}`"
        );
    }
    let cfg = std::fs::read_to_string(deploy().join("config/central.toml")).unwrap();
    for cred in unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
    {
        let name = cred.split(':').next().unwrap();
        assert!(
            cfg.contains(&format!("/run/credentials/sensor-central.service/{name}\"")),
            "central.toml does not read the credential {name}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sensor-central.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/sensor",
            tests::sensor_bin().to_str().unwrap(),
        ),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {}\n{err}",
        o.status
    );
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("{}", line.trim());
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure level in `{line}`"));
    assert!(score <= 1.5, "exposure {score}: {line}");
    let doc = std::fs::read_to_string(tests::workspace_root().join("docs/fleet.md")).unwrap();
    assert!(
        doc.contains(&format!("rates it {score:.1}")),
        "docs/fleet.md does not give the central unit's exposure {score:.1}"
    );
}

/// The documents of a YAML file, as JSON (PyYAML: kubernetes-validate's own YAML reader).
fn yaml_docs(path: &Path) -> Vec<serde_json::Value> {
    let o = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

// Long, as the base manifests' test is: one pass over the built manifests checks every workload,
// Service and policy against the same decoded documents.
#[test]
fn the_fleet_manifests_validate_offline_and_grant_nothing() {
    if !have(
        "kubernetes-validate",
        "the_fleet_manifests_validate_offline_and_grant_nothing",
    ) || !have(
        "python3",
        "the_fleet_manifests_validate_offline_and_grant_nothing",
    ) {
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(fleet_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    files.sort();
    validate(&files);
    // The kustomization lists every manifest but the example Secrets (created by the operator).
    let k = std::fs::read_to_string(fleet_dir().join("kustomization.yaml")).unwrap();
    for f in &files {
        let n = f.file_name().unwrap().to_string_lossy();
        let listed = k.contains(&format!("- {n}"));
        assert_eq!(
            listed,
            n != "secrets.example.yaml",
            "kustomization.yaml and {n}"
        );
    }
    let mut docs: Vec<serde_json::Value> = files.iter().flat_map(|f| yaml_docs(f)).collect();
    if Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let o = Command::new("kubectl")
            .arg("kustomize")
            .arg(fleet_dir())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let dir = tempfile::tempdir().unwrap();
        let built = dir.path().join("built.yaml");
        std::fs::write(&built, &o.stdout).unwrap();
        validate(std::slice::from_ref(&built));
        // What is applied is what is checked below (plus the example Secrets).
        let secrets = yaml_docs(&fleet_dir().join("secrets.example.yaml"));
        docs = yaml_docs(&built);
        docs.extend(secrets);
    }
    let kind =
        |k: &str| -> Vec<&serde_json::Value> { docs.iter().filter(|d| d["kind"] == k).collect() };
    let ns = kind("Namespace");
    assert_eq!(ns.len(), 1);
    assert_eq!(
        ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let secret_names: Vec<&str> = kind("Secret")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    let secret_keys = |name: &str| -> Vec<String> {
        kind("Secret")
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .and_then(|s| s["stringData"].as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    // Least privilege in every pod: non-root, no host namespaces, no token, RuntimeDefault seccomp;
    // in every container: no capability, no escalation, read-only root file system.
    let mut workloads = Vec::new();
    for w in kind("StatefulSet").into_iter().chain(kind("Deployment")) {
        let name = w["metadata"]["name"].as_str().unwrap().to_string();
        let pod = &w["spec"]["template"]["spec"];
        for host in ["hostPID", "hostNetwork", "hostIPC"] {
            assert!(pod[host].is_null() || pod[host] == false, "{name}: {host}");
        }
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{name}");
        assert!(psc["runAsUser"].as_u64().unwrap() > 0, "{name}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let containers = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(pod["initContainers"].as_array().into_iter().flatten());
        for c in containers {
            let sc = &c["securityContext"];
            let cname = c["name"].as_str().unwrap();
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}/{cname}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}/{cname}");
            assert_eq!(sc["privileged"], false, "{name}/{cname}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}/{cname}"
            );
            assert!(
                sc["capabilities"]["add"].is_null(),
                "{name}/{cname} adds capabilities"
            );
            assert!(
                sc["runAsUser"].is_null() || sc["runAsUser"].as_u64() > Some(0),
                "{name}/{cname}"
            );
            assert!(
                !c["resources"]["limits"].is_null(),
                "{name}/{cname} has no limits"
            );
        }
        // Every Secret a pod mounts is declared, with the keys its containers read.
        for v in pod["volumes"].as_array().unwrap() {
            if let Some(s) = v["secret"]["secretName"].as_str() {
                assert!(
                    secret_names.contains(&s),
                    "{name} mounts undeclared Secret {s}"
                );
            }
        }
        let script = pod["initContainers"][0]["args"][0].as_str().unwrap_or("");
        for word in script.split_whitespace() {
            if let Some(key) = word.strip_prefix("/secrets/credentials/") {
                let secret = pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == "credentials-secret")
                    .and_then(|v| v["secret"]["secretName"].as_str())
                    .unwrap();
                assert!(
                    secret_keys(secret).iter().any(|k| k == key),
                    "{name} reads {key} from {secret}, which does not declare it"
                );
            }
        }
        workloads.push((name, w["kind"].as_str().unwrap().to_string()));
    }
    workloads.sort();
    assert_eq!(
        workloads,
        [
            ("sensor-central".to_string(), "StatefulSet".to_string()),
            ("sensor-gateway".to_string(), "Deployment".to_string())
        ]
    );
    for sa in kind("ServiceAccount") {
        assert_eq!(sa["automountServiceAccountToken"], false);
    }
    assert!(
        kind("Role").is_empty() && kind("ClusterRole").is_empty(),
        "no RBAC"
    );
    // Services: the central API and the gateway's ingest port.
    let port_of = |svc: &str| -> Vec<u64> {
        kind("Service")
            .iter()
            .find(|s| s["metadata"]["name"] == svc)
            .map(|s| {
                s["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["port"].as_u64().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(port_of("sensor-central"), [9443]);
    assert_eq!(port_of("sensor-gateway"), [8443]);
    // Network: deny by default; central reaches NATS and PostgreSQL, a gateway NATS only.
    let policies = kind("NetworkPolicy");
    assert!(policies
        .iter()
        .any(|p| p["spec"]["podSelector"] == serde_json::json!({})
            && p["spec"]["policyTypes"] == serde_json::json!(["Ingress", "Egress"])
            && p["spec"]["ingress"].is_null()
            && p["spec"]["egress"].is_null()));
    let egress_ports = |component: &str| -> Vec<u64> {
        let p = policies
            .iter()
            .find(|p| {
                p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
            })
            .unwrap_or_else(|| panic!("no NetworkPolicy for {component}"));
        let mut v: Vec<u64> = p["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["port"].as_u64().unwrap())
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    assert_eq!(egress_ports("central"), [53, 4222, 5432]);
    assert_eq!(egress_ports("gateway"), [53, 4222]);
}

/// A fleet config split in two: the `[fleet]` table, checked as `fleet::FleetConfig` (unknown keys
/// refused, then `validate`), and the rest, checked by `sensor config check`.
fn check_fleet_config(text: &str, origin: &str, role: fleet::Role) {
    let mut doc: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{origin}: {e}"));
    let fleet_table = doc
        .remove("fleet")
        .unwrap_or_else(|| panic!("{origin} has no [fleet]"));
    let fleet_cfg: fleet::FleetConfig = fleet_table
        .try_into()
        .unwrap_or_else(|e| panic!("{origin} [fleet]: {e}"));
    fleet_cfg
        .validate()
        .unwrap_or_else(|e| panic!("{origin} [fleet]: {e}"));
    assert_eq!(fleet_cfg.role, role, "{origin}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(origin.replace('/', "-"));
    std::fs::write(&p, toml::to_string(&doc).unwrap()).unwrap();
    config_check(&p);
}

fn configmap_toml(file: &str) -> String {
    let cm = std::fs::read_to_string(fleet_dir().join(file)).unwrap();
    let start = cm.find("sensor.toml: |").unwrap();
    cm[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
        .collect()
}

#[test]
fn the_fleet_configs_pass_config_check() {
    let central = std::fs::read_to_string(deploy().join("config/central.toml")).unwrap();
    check_fleet_config(&central, "config/central.toml", fleet::Role::Central);
    check_fleet_config(
        &configmap_toml("configmap-central.yaml"),
        "configmap-central.yaml",
        fleet::Role::Central,
    );
    check_fleet_config(
        &configmap_toml("configmap-gateway.yaml"),
        "configmap-gateway.yaml",
        fleet::Role::Gateway,
    );
    // The central's API is where the CLI reaches the fleet: TCP with TLS and a token.
    for text in [central, configmap_toml("configmap-central.yaml")] {
        let t: toml::Table = toml::from_str(&text).unwrap();
        let tcp = t["api"]["tcp"].as_table().unwrap();
        for k in ["listen", "cert", "key", "token_file"] {
            assert!(tcp.contains_key(k), "[api.tcp] {k}");
        }
        assert_eq!(t["kernel"]["enabled"].as_bool(), Some(false));
    }
}
