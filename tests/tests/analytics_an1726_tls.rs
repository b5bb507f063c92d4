//! AN1726's TLS-inspection branches, end to end with the real binary (`sensor ingest` then `sensor
//! replay --analytics`): a network sensor's TLS session answered by a non-public issuer, an MDM
//! ProfileList / CertificateList that lets a third party read the device's TLS, and both joined on the
//! device. The payloads are written here in the shapes Apple's MDM protocol reference and Zeek document
//! (the real recordings, all negatives, are in docs/analytics.md "Real recordings"); the certificates
//! are generated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

fn encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn tmp(name: &str) -> PathBuf {
    tests::scratch(&format!("an1726-tls-{name}"))
}

/// Decodes each (format, text) input and replays all events; the AN1726 alerts.
fn alerts(dir: &Path, inputs: &[(&str, &str)], config: Option<&str>) -> Vec<Value> {
    let mut events = String::new();
    for (i, (format, text)) in inputs.iter().enumerate() {
        let f = dir.join(format!("in-{i}"));
        std::fs::write(&f, text).unwrap();
        let out = Command::new(tests::sensor_bin())
            .args(["ingest", "--strict", "--format", format, "--input"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ingest {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        events.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    let ev = dir.join("events.ndjson");
    std::fs::write(&ev, events).unwrap();
    let mut cmd = Command::new(tests::sensor_bin());
    cmd.args(["replay", "--analytics", "--input"]).arg(&ev);
    if let Some(c) = config {
        let p = dir.join("sensor.toml");
        std::fs::write(&p, c).unwrap();
        cmd.arg("--config").arg(&p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|a| a["rule_id"] == "AN1726")
        .collect()
}

fn detector(a: &Value) -> &str {
    let r = a["reason"].as_str().unwrap();
    &r[1..r.find(']').unwrap()]
}

fn profile(identifier: &str, name: &str, managed: bool, types: &[&str]) -> String {
    let payloads: String = types
        .iter()
        .map(|t| format!("<dict><key>PayloadType</key><string>{t}</string><key>PayloadDisplayName</key><string>{t} payload</string></dict>"))
        .collect();
    format!(
        "<dict><key>HasRemovalPasscode</key><false/><key>IsEncrypted</key><false/><key>IsManaged</key><{managed}/>\
         <key>PayloadContent</key><array>{payloads}</array><key>PayloadDisplayName</key><string>{name}</string>\
         <key>PayloadIdentifier</key><string>{identifier}</string><key>PayloadRemovalDisallowed</key><false/>\
         <key>PayloadUUID</key><string>a96f429c-d881-47e7-ad07-eeca163976fb</string></dict>"
    )
}

fn profile_list(udid: &str, profiles: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n<key>CommandUUID</key><string>0001_ProfileList</string>\n<key>ProfileList</key>\n<array>\n{}\n</array>\n\
         <key>Status</key><string>Acknowledged</string>\n<key>UDID</key><string>{udid}</string>\n</dict>\n</plist>\n",
        profiles.join("\n")
    )
}

fn ca_der(cn: &str, ca: bool) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    if ca {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.self_signed(&key).unwrap().der().to_vec()
}

fn cert_item(cn: &str, der: &[u8], managed: Option<bool>) -> String {
    let m = managed.map_or_else(String::new, |m| format!("<key>IsManaged</key><{m}/>"));
    format!(
        "<dict><key>CommonName</key><string>{cn}</string><key>Data</key><data>{}</data><key>IsIdentity</key><false/>{m}</dict>",
        encode(der)
    )
}

fn certificate_list(udid: &str, items: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">\n<dict>\n<key>CertificateList</key>\n<array>\n{}\n</array>\n\
         <key>CommandUUID</key><string>c-certs</string>\n<key>Status</key><string>Acknowledged</string>\n<key>UDID</key><string>{udid}</string>\n</dict>\n</plist>\n",
        items.join("\n")
    )
}

#[test]
fn device_side_user_installed_root_ca_and_proxy_fire_enrollment_and_managed_stay_silent() {
    let dir = tmp("profiles");
    let list = profile_list(
        "00008020-000915083C80012E",
        &[
            // A user installed an interception proxy's root CA with a global HTTP proxy: fires.
            profile(
                "com.example.proxy-ca",
                "Proxy CA",
                false,
                &["com.apple.security.root", "com.apple.proxy.http.global"],
            ),
            // The MDM enrollment profile: installed by the user, carries the organisation's CA: silent.
            profile(
                "com.acme.mdm.mdm",
                "Python MDM",
                false,
                &[
                    "com.apple.security.root",
                    "com.apple.security.scep",
                    "com.apple.mdm",
                ],
            ),
            // A VPN the MDM installed: the organisation's own, silent by default.
            profile("com.acme.vpn", "Corp VPN", true, &["com.apple.vpn.managed"]),
            // A user-installed Wi-Fi profile: no interception payload, silent.
            profile(
                "com.example.wifi",
                "Home Wi-Fi",
                false,
                &["com.apple.wifi.managed"],
            ),
        ],
    );
    let got = alerts(&dir, &[("apple-mdm", &list)], None);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(detector(&got[0]), "tls-inspection-profile");
    let reason = got[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("Proxy CA")
            && reason.contains("com.example.proxy-ca")
            && reason.contains("00008020-000915083C80012E"),
        "{reason}"
    );
    // Managed profiles judged too: the VPN fires as well.
    let got = alerts(
        &dir,
        &[("apple-mdm", &list)],
        Some("[analytics.AN1726.settings]\nManagedProfilesAlert = true\n"),
    );
    assert_eq!(got.len(), 2, "{got:#?}");
    // The branch off: silent.
    let got = alerts(
        &dir,
        &[("apple-mdm", &list)],
        Some("[analytics.AN1726.settings]\nDeviceInspectionBranch = false\n"),
    );
    assert!(got.is_empty(), "{got:#?}");
    // An allowed profile: silent.
    let got = alerts(
        &dir,
        &[("apple-mdm", &list)],
        Some("[analytics.AN1726.settings]\nAllowedProfiles = [\"com.example.*\"]\n"),
    );
    assert!(got.is_empty(), "{got:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shape of a ProfileList sniffed from a real device (Jamf School, published in a write-up of
/// the MDM protocol): the user installed mitmproxy's CA by hand, which iOS keeps as a profile of its
/// own with one `com.apple.security.pem` payload (not `.root`), IsManaged false: fires. The
/// enrollment profile beside it (a `.pkcs12` identity and `com.apple.mdm`) stays silent.
#[test]
fn device_side_hand_installed_pem_ca_fires() {
    let dir = tmp("pem-profile");
    let list = profile_list(
        "00008112-000E19103607401E",
        &[
            profile(
                "9056de87bb3c875200e6a282301ea3f9a146f37009472dbef94a1116009d81a2a",
                "mitmproxy",
                false,
                &["com.apple.security.pem"],
            ),
            profile(
                "com.apple.mdm",
                "Jamf School MDM Profile (version:1)",
                true,
                &["com.apple.security.pkcs12", "com.apple.mdm"],
            ),
        ],
    );
    let got = alerts(&dir, &[("apple-mdm", &list)], None);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(detector(&got[0]), "tls-inspection-profile");
    let reason = got[0]["reason"].as_str().unwrap();
    assert!(reason.contains("mitmproxy"), "{reason}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn device_side_self_signed_ca_the_user_installed_fires() {
    let dir = tmp("certs");
    let list = certificate_list(
        "U-CERTS",
        &[
            cert_item(
                "Interceptor Root",
                &ca_der("Interceptor Root", true),
                Some(false),
            ),
            cert_item(
                "Acme Corp Root",
                &ca_der("Acme Corp Root", true),
                Some(true),
            ),
            cert_item("leaf", &ca_der("leaf", false), Some(false)),
            cert_item(
                "Unknown provenance Root",
                &ca_der("Unknown provenance Root", true),
                None,
            ),
        ],
    );
    let got = alerts(&dir, &[("apple-mdm", &list)], None);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(detector(&got[0]), "tls-inspection-root-ca");
    assert!(
        got[0]["reason"]
            .as_str()
            .unwrap()
            .contains("CN=Interceptor Root"),
        "{:#?}",
        got[0]
    );
    let got = alerts(
        &dir,
        &[("apple-mdm", &list)],
        Some("[analytics.AN1726.settings]\nAllowedRootCAs = [\"CN=Interceptor*\"]\n"),
    );
    assert!(got.is_empty(), "{got:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

const ZEEK: &str = r#"{"_path":"ssl","ts":1714557600.1,"uid":"C1","id.orig_h":"10.0.0.5","id.orig_p":50000,"id.resp_h":"93.184.216.34","id.resp_p":443,"version":"TLSv12","server_name":"www.example.com","established":true,"subject":"CN=www.example.com","issuer":"CN=Corp Inspection CA,O=Example Security Appliance","validation_status":"unable to get local issuer certificate"}
{"_path":"ssl","ts":1714557601.1,"uid":"C2","id.orig_h":"10.0.0.6","id.orig_p":50001,"id.resp_h":"93.184.216.35","id.resp_p":443,"version":"TLSv12","server_name":"a.example.com","established":true,"subject":"CN=a.example.com","issuer":"CN=Corp Inspection CA,O=Example Security Appliance","validation_status":"certificate is not yet valid"}
{"_path":"ssl","ts":1714557602.1,"uid":"C3","id.orig_h":"10.0.0.7","id.orig_p":50002,"id.resp_h":"93.184.216.36","id.resp_p":443,"version":"TLSv12","server_name":"b.example.com","established":true,"subject":"CN=b.example.com","issuer":"CN=R3,O=Let's Encrypt,C=US","validation_status":"unable to get local issuer certificate"}
{"_path":"ssl","ts":1714557603.1,"uid":"C4","id.orig_h":"10.0.0.8","id.orig_p":50003,"id.resp_h":"192.168.50.1","id.resp_p":443,"version":"TLSv12","established":true,"subject":"CN=nas","issuer":"CN=CA,O=Example Corp","validation_status":"self signed certificate in certificate chain"}
{"_path":"ssl","ts":1714557604.1,"uid":"C5","id.orig_h":"10.0.0.9","id.orig_p":50004,"id.resp_h":"93.184.216.37","id.resp_p":443,"version":"TLSv12","established":true,"subject":"CN=device.example","issuer":"CN=device.example","validation_status":"self signed certificate"}
"#;

#[test]
fn network_side_non_public_issuer_to_an_external_address_fires_clock_store_and_private_stay_silent()
{
    let dir = tmp("zeek");
    let got = alerts(&dir, &[("zeek", ZEEK)], None);
    // Only C1: C2 blames the clock, C3 is a public issuer Zeek's store could not chain, C4 is a
    // private address, C5 a server's own self-signed certificate.
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(detector(&got[0]), "tls-inspection-network");
    let reason = got[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("93.184.216.34") && reason.contains("Corp Inspection CA"),
        "{reason}"
    );
    let got = alerts(
        &dir,
        &[("zeek", ZEEK)],
        Some("[analytics.AN1726.settings]\nNetworkInspectionBranch = false\n"),
    );
    assert!(got.is_empty(), "{got:#?}");
    let got = alerts(&dir, &[("zeek", ZEEK)], Some("[analytics.AN1726.settings]\nPublicIssuerPatterns = [\"*O=Example Security Appliance*\", \"*O=Let's Encrypt*\"]\n"));
    assert!(got.is_empty(), "{got:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn device_and_wire_join_on_the_device() {
    let dir = tmp("join");
    let udid = "00008110-001A2B3C4D5E801E";
    let list = profile_list(
        udid,
        &[profile(
            "com.example.proxy-ca",
            "Proxy CA",
            false,
            &["com.apple.security.root"],
        )],
    );
    // As NanoMDM's webhook relays it: the plist base64 in raw_payload, the time in created_at.
    let webhook = format!(
        "{{\"topic\":\"mdm.Connect\",\"event_id\":\"e1\",\"created_at\":\"2024-05-01T10:00:00Z\",\"acknowledge_event\":{{\"udid\":\"{udid}\",\"status\":\"Acknowledged\",\"command_uuid\":\"0001_ProfileList\",\"raw_payload\":\"{}\"}}}}\n",
        encode(list.as_bytes())
    );
    // The device's own TLS record (the product's mobile EDR schema) answered by the proxy's CA.
    let edr = format!(
        "{{\"timestamp\":\"2024-05-01T10:05:00Z\",\"device\":{{\"id\":\"{udid}\",\"platform\":\"ios\"}},\"app\":{{\"bundle_id\":\"com.example.bank\"}},\"kind\":\"tls\",\"network\":{{\"dst_ip\":\"93.184.216.34\",\"dst_port\":443}},\"tls\":{{\"outcome\":\"established\",\"server_name\":\"bank.example\",\"issuer\":\"CN=Proxy CA,O=Example Proxy\"}}}}\n"
    );
    let got = alerts(&dir, &[("apple-mdm", &webhook), ("mobile-edr", &edr)], None);
    let joined: Vec<&Value> = got
        .iter()
        .filter(|a| detector(a) == "tls-inspection-device-and-wire")
        .collect();
    assert_eq!(joined.len(), 1, "{got:#?}");
    assert_eq!(joined[0]["join_keys"], serde_json::json!([udid]));
    let ds: Vec<&str> = joined[0]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["dataset"].as_str().unwrap())
        .collect();
    assert!(
        ds.contains(&"apple_mdm.message") && ds.contains(&"mobile_edr.telemetry"),
        "{ds:?}"
    );
    // Another device's TLS does not join.
    let other = edr.replace(udid, "OTHER-DEVICE");
    let got = alerts(
        &dir,
        &[("apple-mdm", &webhook), ("mobile-edr", &other)],
        None,
    );
    assert!(
        got.iter()
            .all(|a| detector(a) != "tls-inspection-device-and-wire"),
        "{got:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
