//! The `apple-mdm` and `mtd` decoders over real payloads as MDM servers and mobile-threat-defence APIs
//! emit them (../shared/corpora/real and tests/data/real, sources in their SOURCES.md / README.md):
//! at least 99% of every file's records accepted, every rejected record named with its line and
//! reason, nothing accepted lost (each accepted record's text is in the file, and its events are all
//! there), and the device identity mapped so that records of one device from different messages join.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use correlator::{Event, Value};
use ingest::server::process_body;
use ingest::{decode_reader, DecodeError, Format};

struct Outcome {
    events: Vec<Event>,
    rejects: Vec<DecodeError>,
}

fn decode(format: Format, bytes: &[u8]) -> Outcome {
    let mut out = Outcome {
        events: Vec::new(),
        rejects: Vec::new(),
    };
    decode_reader(format, "real", bytes, &mut |r| match r {
        Ok(ev) => out.events.push(ev),
        Err(e) => out.rejects.push(e),
    });
    out
}

fn s<'a>(ev: &'a Event, k: &str) -> Option<&'a str> {
    ev.get_path(k).and_then(Value::as_str)
}

fn real(rel: &str) -> PathBuf {
    tests::shared_dir().join("corpora/real").join(rel)
}

fn repo(rel: &str) -> PathBuf {
    tests::workspace_root().join(rel)
}

/// One real file: how many records it holds (counted from its own shape: one plist document, one
/// JSON document, or one JSON object per line) and how many events they give.
struct Case {
    path: PathBuf,
    format: Format,
    records: usize,
    events: usize,
}

fn cases() -> Vec<Case> {
    let mdm = |p: &str, events| Case {
        path: real(&format!("apple-mdm/{p}")),
        format: Format::AppleMdm,
        records: 1,
        events,
    };
    vec![
        // NanoMDM's check-in and command-result plists: one document each.
        mdm("nanomdm/mdm/testdata/Authenticate.1.plist", 1),
        mdm("nanomdm/mdm/testdata/Authenticate.2.plist", 1),
        mdm("nanomdm/mdm/testdata/TokenUpdate.1.plist", 1),
        mdm("nanomdm/mdm/testdata/TokenUpdate.2.plist", 1),
        mdm("nanomdm/mdm/testdata/DeviceInformation.1.plist", 1),
        // NanoMDM's webhook bodies: one JSON object on one line, the plist base64 inside.
        mdm("nanomdm/service/webhook/testdata/Authenticate.2.json", 1),
        mdm(
            "nanomdm/service/webhook/testdata/DeviceInformation.1.json",
            1,
        ),
        // MicroMDM's DEP API responses: one indented JSON document, one device each.
        mdm("micromdm/dep/testdata/device_response.json", 1),
        mdm("micromdm/dep/testdata/device_details_response.json", 1),
        // Zimperium v2 threat search: one indented JSON response with two threats.
        Case {
            path: real("mtd/zimperium-v2-threat-search.json"),
            format: Format::Mtd,
            records: 1,
            events: 2,
        },
        // Lookout Mobile Risk API v2 stream batch: one line, a DEVICE and a THREAT event.
        Case {
            path: repo("tests/data/real/lookout/events-stream-v2.json"),
            format: Format::Mtd,
            records: 1,
            events: 2,
        },
    ]
}

#[test]
fn real_files_are_accepted_with_nothing_lost() {
    let mut total = (0usize, 0usize);
    for c in cases() {
        let bytes = std::fs::read(&c.path).unwrap_or_else(|e| panic!("{}: {e}", c.path.display()));
        let text = String::from_utf8_lossy(&bytes);
        let out = decode(c.format, &bytes);
        for e in &out.rejects {
            assert!(e.line >= 1 && !e.message.is_empty(), "{e:?}");
            println!("rejected: {}: {e}", c.path.display());
        }
        // Accepted records: the distinct original texts of the events. Each must be in the file
        // (a batch item is the item, re-serialised compactly: checked by its vendor id instead).
        let mut originals: BTreeMap<String, usize> = BTreeMap::new();
        for ev in &out.events {
            for f in [
                "agent.id",
                "event.module",
                "event.dataset",
                "event.original",
            ] {
                assert!(
                    ev.get_path(f).is_some(),
                    "{}: event without {f}",
                    c.path.display()
                );
            }
            *originals
                .entry(s(ev, "event.original").unwrap().to_string())
                .or_default() += 1;
        }
        let accepted = if c.format == Format::Mtd && c.events > 1 {
            usize::from(!out.events.is_empty())
        } else {
            for o in originals.keys() {
                assert!(
                    text.contains(o.as_str()),
                    "{}: accepted record not in the file",
                    c.path.display()
                );
            }
            originals.len()
        };
        println!(
            "{} ({}): {} records, {accepted} accepted, {} rejected, {} events",
            c.path.display(),
            c.format,
            c.records,
            out.rejects.len(),
            out.events.len()
        );
        assert_eq!(
            accepted + out.rejects.len(),
            c.records,
            "{}",
            c.path.display()
        );
        assert_eq!(out.events.len(), c.events, "{}: events", c.path.display());
        total.0 += c.records;
        total.1 += accepted;
    }
    let rate = total.1 as f64 / total.0 as f64;
    println!(
        "real mobile payloads: {}/{} records accepted ({:.1}%)",
        total.1,
        total.0,
        rate * 100.0
    );
    assert!(rate >= 0.99);
}

#[test]
fn one_device_is_one_identity_across_messages() {
    // The iMac of NanoMDM's test data: Authenticate check-in (plist and webhook), TokenUpdate,
    // DeviceInformation result (plist and webhook).
    let udid = "66ADE930-5FDF-5EC4-8429-15640684C489";
    for p in [
        "nanomdm/mdm/testdata/Authenticate.2.plist",
        "nanomdm/service/webhook/testdata/Authenticate.2.json",
        "nanomdm/mdm/testdata/TokenUpdate.2.plist",
        "nanomdm/mdm/testdata/DeviceInformation.1.plist",
        "nanomdm/service/webhook/testdata/DeviceInformation.1.json",
    ] {
        let out = decode(
            Format::AppleMdm,
            &std::fs::read(real(&format!("apple-mdm/{p}"))).unwrap(),
        );
        assert_eq!(out.events.len(), 1, "{p}");
        let ev = &out.events[0];
        assert_eq!(s(ev, "host.id"), Some(udid), "{p}");
        assert_eq!(s(ev, "device.id"), Some(udid), "{p}");
    }
    let auth = decode(
        Format::AppleMdm,
        &std::fs::read(real("apple-mdm/nanomdm/mdm/testdata/Authenticate.2.plist")).unwrap(),
    );
    let ev = &auth.events[0];
    assert_eq!(s(ev, "event.action"), Some("authenticate"));
    assert_eq!(s(ev, "device.serial_number"), Some("C02MT66KFLHH"));
    assert_eq!(s(ev, "device.model.identifier"), Some("iMac14,2"));
    assert_eq!(s(ev, "device.model.name"), Some("iMac"));
    assert_eq!(s(ev, "host.os.type"), Some("macos"));
    assert_eq!(s(ev, "host.os.version"), Some("10.12.6"));
    assert_eq!(s(ev, "host.os.full"), Some("macOS 10.12.6 (16G2136)"));
    assert_eq!(s(ev, "host.name"), Some("Fruit"));
    // No time in a plist: none invented (the daemon stamps arrival).
    assert_eq!(ev.timestamp_ns, 0);
    let info = decode(
        Format::AppleMdm,
        &std::fs::read(real(
            "apple-mdm/nanomdm/mdm/testdata/DeviceInformation.1.plist",
        ))
        .unwrap(),
    );
    let ev = &info.events[0];
    assert_eq!(s(ev, "event.action"), Some("device_information"));
    assert_eq!(s(ev, "event.outcome"), Some("success"));
    assert_eq!(s(ev, "host.hostname"), Some("fruit.example.com"));
    // The iPad: an iOS device, ipados platform.
    let ipad = decode(
        Format::AppleMdm,
        &std::fs::read(real("apple-mdm/nanomdm/mdm/testdata/Authenticate.1.plist")).unwrap(),
    );
    let ev = &ipad.events[0];
    assert_eq!(s(ev, "host.os.type"), Some("ios"));
    assert_eq!(s(ev, "host.os.platform"), Some("ipados"));
    assert_eq!(
        s(ev, "host.id"),
        Some("663b07bb783e9ade1dae4fbb92ea12afc0ce5b69")
    );
    // DEP: the serial number joins the device record with the check-ins of that Mac.
    let dep = decode(
        Format::AppleMdm,
        &std::fs::read(real("apple-mdm/micromdm/dep/testdata/device_response.json")).unwrap(),
    );
    assert_eq!(
        s(&dep.events[0], "device.serial_number"),
        Some("C02T0HL0GGC0")
    );
    assert_eq!(s(&dep.events[0], "host.os.type"), Some("macos"));
}

#[test]
fn vendors_are_recognised_and_mapped() {
    let z = decode(
        Format::Mtd,
        &std::fs::read(real("mtd/zimperium-v2-threat-search.json")).unwrap(),
    );
    let ev = &z.events[0];
    assert_eq!(s(ev, "observer.vendor"), Some("Zimperium"));
    assert_eq!(s(ev, "event.kind"), Some("alert"));
    assert_eq!(s(ev, "rule.name"), Some("SYSTEM TAMPERING"));
    assert_eq!(s(ev, "mtd.severity"), Some("critical"));
    assert_eq!(ev.get_path("event.severity"), Some(&Value::Int(3)));
    assert_eq!(s(ev, "host.id"), Some("59"));
    assert_eq!(s(ev, "host.os.type"), Some("android"));
    assert_eq!(s(ev, "device.model.identifier"), Some("ONEPLUS A5000"));
    assert_eq!(
        s(ev, "mtd.threat.jailbreak_reasons"),
        Some("SELinux disabled")
    );
    assert_eq!(s(ev, "@timestamp"), Some("2023-12-12T14:59:25.000Z"));
    assert_eq!(s(&z.events[1], "rule.name"), Some("UNKNOWN SOURCES ON"));

    let l = decode(
        Format::Mtd,
        &std::fs::read(repo("tests/data/real/lookout/events-stream-v2.json")).unwrap(),
    );
    assert_eq!(s(&l.events[0], "observer.vendor"), Some("Lookout"));
    assert_eq!(s(&l.events[0], "event.kind"), Some("state"));
    assert_eq!(s(&l.events[0], "host.os.type"), Some("ios"));
    assert_eq!(s(&l.events[0], "host.os.version"), Some("18.3.1"));
    assert_eq!(s(&l.events[1], "event.kind"), Some("alert"));
    assert_eq!(s(&l.events[1], "rule.name"), Some("UNAUTHORIZED_CONTENT"));
    assert_eq!(s(&l.events[1], "mtd.severity"), Some("low"));

    // Jamf Threat Events Stream, one record in the shape the stream documents (written here).
    let jamf = br#"{"event":{"metadata":{"schemaVersion":"1.0","vendor":"Jamf","product":"Threat Events Stream"},"timestamp":"2024-01-10T12:20:37.059Z","alertId":"8cfd4a58","account":{"customerId":"c1","name":"Example"},"device":{"deviceId":"32ce61c6","os":"IOS 17.2.1","deviceName":"Apple iPhone (17.2.1)","userDeviceName":"phone-7"},"eventType":{"id":"303","description":"Risky Host/Domain - Malware","name":"ACCESS_BAD_HOST"},"app":{},"destination":{"ip":"198.51.100.7","name":"bad.example"},"source":{},"severity":8,"user":{"email":"u@example.com","name":"U"},"action":"Blocked"}}"#;
    let j = decode(Format::Mtd, jamf);
    assert!(j.rejects.is_empty(), "{:?}", j.rejects);
    let ev = &j.events[0];
    assert_eq!(s(ev, "observer.vendor"), Some("Jamf"));
    assert_eq!(s(ev, "event.reason"), Some("Risky Host/Domain - Malware"));
    assert_eq!(s(ev, "destination.domain"), Some("bad.example"));
    assert_eq!(s(ev, "host.id"), Some("32ce61c6"));
    assert_eq!(s(ev, "host.name"), Some("phone-7"));

    // Intune diagnostic export record (Azure Monitor shape), jailbroken: an alert.
    let intune = br#"{"time":"2024-05-01T10:00:00Z","operationName":"DeviceComplianceOrg","category":"DeviceComplianceOrg","properties":{"DeviceId":"9b2c","DeviceName":"iPhone-9","OS":"iOS","OSVersion":"17.4","ComplianceState":"Noncompliant","DeviceHealthThreatLevel":"High","JailBroken":"True","UPN":"u@example.com"}}"#;
    let i = decode(Format::Mtd, intune);
    assert!(i.rejects.is_empty(), "{:?}", i.rejects);
    assert_eq!(s(&i.events[0], "observer.vendor"), Some("Microsoft"));
    assert_eq!(s(&i.events[0], "event.kind"), Some("alert"));
    assert_eq!(s(&i.events[0], "host.id"), Some("9b2c"));

    // Check Point Harmony Mobile, one event in the field set its event export documents (written here).
    let harmony = br#"{"attack_vector":"NetworkSecurity","backend_last_updated":"02/02/2025 02:22:20","details":"Domain:phish[.]example","device_id":"2","device_rooted":false,"email":"user@example.com","event":"Info","event_timestamp":"02/22/2023 02:22:20","id":22,"mdm_uuid":"00000000-0000-0000-0000-000000000001","name":"TestDevice","severity":"Critical","threat_factors":"Phishing","device_model":"Android","client_version":"2.73"}"#;
    let h = decode(Format::Mtd, harmony);
    assert!(h.rejects.is_empty(), "{:?}", h.rejects);
    let ev = &h.events[0];
    assert_eq!(s(ev, "observer.vendor"), Some("Check Point"));
    assert_eq!(s(ev, "rule.name"), Some("Phishing"));
    assert_eq!(s(ev, "destination.domain"), Some("phish.example"));
    assert_eq!(s(ev, "mtd.severity"), Some("critical"));
    assert_eq!(s(ev, "host.id"), Some("2"));
    assert_eq!(s(ev, "@timestamp"), Some("2023-02-22T02:22:20.000Z"));

    let unknown = decode(Format::Mtd, br#"{"vendor":"Other","x":1}"#);
    assert_eq!(unknown.rejects.len(), 1);
    assert!(
        unknown.rejects[0].message.contains("no known vendor"),
        "{}",
        unknown.rejects[0].message
    );
}

/// Concatenated plists as one body (a server relaying several), over the HTTP path: each document
/// is one record, judged and kept whole.
#[test]
fn several_plists_in_one_body_are_several_records() {
    let dir = real("apple-mdm/nanomdm/mdm/testdata");
    let mut body = Vec::new();
    let mut names = Vec::new();
    for n in [
        "Authenticate.1.plist",
        "TokenUpdate.1.plist",
        "Authenticate.2.plist",
        "TokenUpdate.2.plist",
        "DeviceInformation.1.plist",
    ] {
        body.extend(std::fs::read(dir.join(n)).unwrap());
        names.push(n);
    }
    // A broken document between them is rejected alone.
    body.extend_from_slice(b"<plist><dict><key>MessageType</key></plist>\n");
    let outcome = process_body(Format::AppleMdm, "a", &body, 1 << 20, &[]);
    assert_eq!(
        outcome.accepted.len(),
        names.len(),
        "{:?}",
        outcome.rejected
    );
    assert_eq!(outcome.rejected.len(), 1);
    for r in &outcome.accepted {
        let rec = &body[r.clone()];
        assert!(rec.starts_with(b"<plist") && rec.ends_with(b"</plist>"));
    }
    let out = decode(Format::AppleMdm, &body);
    assert_eq!(out.events.len(), names.len());
    assert_eq!(out.rejects.len(), 1);
    assert!(out.rejects[0].line > 1);
}
