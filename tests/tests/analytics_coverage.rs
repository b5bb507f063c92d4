//! `sensor coverage` on the real ATT&CK v18.1 data, the Navigator layer it writes (validated against the
//! layer format 4.5's required fields and types), and `sensor analytics list/show/check`, including the
//! clear errors for bad overrides.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

fn sensor(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tests::sensor_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn scratch(name: &str) -> std::path::PathBuf {
    tests::scratch(&format!("analytics-cov-{name}"))
}

#[test]
fn coverage_names_det0493_with_an1358_covered() {
    let bundle = tests::shared_dir().join("attack/enterprise-attack-18.1-detection.json");
    let layer_path = scratch("layer").join("layer.json");
    let (ok, out, err) = sensor(&[
        "coverage",
        "--attack",
        bundle.to_str().unwrap(),
        "--navigator",
        layer_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    println!("{out}");
    let det = out
        .lines()
        .find(|l| l.trim_start().starts_with("DET0493"))
        .expect("DET0493 listed");
    assert!(
        det.contains("AN1358 covered")
            && det.contains("AN1357 covered")
            && det.contains("AN1359 covered")
            && det.contains("3/3"),
        "{det}"
    );
    assert!(det.contains("T1559"), "{det}");
    let an1358 = out
        .lines()
        .find(|l| l.trim_start().starts_with("AN1358"))
        .unwrap();
    assert!(
        an1358.contains("[in ATT&CK data]") && an1358.contains("DET0493"),
        "{an1358}"
    );
    assert!(
        out.contains("DC0055 File Access"),
        "data components of AN1358 are listed"
    );

    // JSON report: the same facts, machine-readable.
    let (ok, out, _) = sensor(&[
        "coverage",
        "--json",
        "--attack",
        bundle.to_str().unwrap(),
        "--sources",
        "kernel",
    ]);
    assert!(ok);
    let cov: Value = serde_json::from_str(&out).unwrap();
    let s = cov["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "DET0493")
        .unwrap();
    assert!(s["covered"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "AN1358"));
    let a = cov["analytics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule_id"] == "AN1358")
        .unwrap();
    assert_eq!(a["in_attack_data"], true);
    assert!(a["problems"].as_array().unwrap().is_empty(), "{a}");
    // With only the kernel source, AN1358's File Access (DC0055) is provided by it; AN1357's Sysmon pipes are not.
    let dc = a["data_components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "DC0055")
        .unwrap();
    assert_eq!(dc["provided_by"], serde_json::json!(["kernel"]));
    let w = cov["analytics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule_id"] == "AN1357")
        .unwrap();
    let pipes = w["data_components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "DC0048")
        .unwrap();
    assert_eq!(pipes["provided_by"], serde_json::json!([]));

    // The layer validates against the 4.5 format and carries what the brief asks for.
    let layer: Value =
        serde_json::from_str(&std::fs::read_to_string(&layer_path).unwrap()).unwrap();
    let problems = correlator::attack::validate_layer(&layer);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(layer["versions"]["layer"], "4.5");
    assert_eq!(layer["versions"]["attack"], "18");
    assert!(layer["versions"]["navigator"]
        .as_str()
        .unwrap()
        .starts_with("5."));
    assert_eq!(layer["domain"], "enterprise-attack");
    let techs = layer["techniques"].as_array().unwrap();
    let t1559 = techs.iter().find(|t| t["techniqueID"] == "T1559").unwrap();
    assert_eq!(t1559["score"], 3);
    assert!(t1559["comment"]
        .as_str()
        .unwrap()
        .contains("AN1358 (DET0493)"));
    assert!(techs.iter().any(|t| t["techniqueID"] == "T1559.003"));
    assert!(
        !techs.iter().any(|t| t["techniqueID"] == "T1521.003"),
        "mobile techniques stay out of the enterprise layer"
    );
}

#[test]
fn coverage_mobile_layer_and_bad_input() {
    let bundle = tests::shared_dir().join("attack/mobile-attack-18.1-detection.json");
    let layer_path = scratch("mobile").join("layer.json");
    let (ok, out, err) = sensor(&[
        "coverage",
        "--attack",
        bundle.to_str().unwrap(),
        "--domain",
        "mobile-attack",
        "--navigator",
        layer_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("DET0646") && l.contains("AN1726 covered")),
        "{out}"
    );
    let layer: Value =
        serde_json::from_str(&std::fs::read_to_string(&layer_path).unwrap()).unwrap();
    assert!(correlator::attack::validate_layer(&layer).is_empty());
    assert!(layer["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["techniqueID"] == "T1521.003"));
    // A file that is not ATT&CK data is a clear error.
    let bad = scratch("bad").join("x.json");
    std::fs::write(&bad, "{\"type\": \"bundle\", \"objects\": []}").unwrap();
    let (ok, _, err) = sensor(&["coverage", "--attack", bad.to_str().unwrap()]);
    assert!(
        !ok && err.contains("holds no ATT&CK objects") && err.contains("x.json"),
        "{err}"
    );
    let (ok, _, err) = sensor(&["coverage", "--sources", "kernel,syslog"]);
    assert!(!ok && err.contains("unknown source `syslog`"), "{err}");
}

#[test]
fn analytics_list_shows_settings_with_current_values() {
    let (ok, out, err) = sensor(&["analytics", "list"]);
    assert!(ok, "{err}");
    for id in [
        "AN1358",
        "AN1357",
        "AN1359",
        "AN0948",
        "AN0082",
        "AN1726",
        "99239e7d-b0d4-46e3-8609-acafcf99f68c",
    ] {
        assert!(out.contains(id), "{id} missing from:\n{out}");
    }
    assert!(
        out.contains("InspectionFailureThreshold [threshold] = 3"),
        "{out}"
    );
    let cfg = scratch("list").join("sensor.toml");
    std::fs::write(&cfg, "[analytics.AN1726.settings]\nInspectionFailureThreshold = 5\nAllowedAppList = [\"com.bank.app\"]\n[analytics.AN1357]\nenabled = false\n").unwrap();
    let (ok, out, err) = sensor(&[
        "analytics",
        "list",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let a = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "AN1726")
        .unwrap();
    let s = a["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "InspectionFailureThreshold")
        .unwrap();
    assert_eq!(
        (
            s["value"].clone(),
            s["default"].clone(),
            s["overridden"].clone()
        ),
        (
            serde_json::json!(5),
            serde_json::json!(3),
            serde_json::json!(true)
        )
    );
    assert!(!s["description"].as_str().unwrap().is_empty());
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == "AN1357")
            .unwrap()["enabled"],
        false
    );
    assert_eq!(a["platform"], "ios");
    assert!(a["log_sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "iOS:MDMLog"));

    let (ok, out, _) = sensor(&["analytics", "show", "AN0082"]);
    assert!(
        ok && out.contains("DataRateThreshold") && out.contains("notes:"),
        "{out}"
    );
    let (ok, out, _) = sensor(&["analytics", "check"]);
    assert!(ok && out.starts_with("ok: 7 analytics"), "{out}");
}

#[test]
fn bad_overrides_are_clear_errors() {
    let dir = scratch("bad");
    let cases = [
        (
            "[analytics.AN1358.settings]\nSocketPathBaselines = {}\n",
            "`SocketPathBaselines` is not one of its settings",
        ),
        (
            "[analytics.AN1726.settings]\nTimeWindow = 600\n",
            "expected a duration string",
        ),
        (
            "[analytics.AN1726.settings]\nAllowedAppList = \"com.x\"\n",
            "expected an array of strings",
        ),
        (
            "[analytics.AN0948.settings]\nUnsignedBinaryAlertLevel = \"loud\"\n",
            "one of \"low\", \"medium\", \"high\", \"critical\"",
        ),
        (
            "[analytics.AN4242]\nenabled = false\n",
            "names no loaded analytic",
        ),
    ];
    for (i, (cfg, want)) in cases.iter().enumerate() {
        let p = dir.join(format!("c{i}.toml"));
        std::fs::write(&p, cfg).unwrap();
        let (ok, _, err) = sensor(&["analytics", "check", "--config", p.to_str().unwrap()]);
        assert!(!ok, "accepted: {cfg}");
        assert!(
            err.contains(want),
            "error for {cfg:?} should say {want:?}: {err}"
        );
        // replay refuses the same config the same way, before reading any event.
        let (ok, _, err2) = sensor(&[
            "replay",
            "--input",
            "/nonexistent",
            "--config",
            p.to_str().unwrap(),
        ]);
        assert!(!ok && err2.contains(want), "{err2}");
    }
}
