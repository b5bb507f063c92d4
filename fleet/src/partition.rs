//! Which partition an event belongs to.
//!
//! The event stream is cut into `partitions` subjects, `<prefix>.events.<n>`, by a stable hash of the
//! event's partition key (its host: `host.id`, else `host.name`, else the agent that sent it). Every
//! event of one host lands in one partition, so per-host sequences stay in order, and one
//! correlator at a time owns a partition. The hash is FNV-1a 64 (fixed here, never a std hasher,
//! whose output may change between releases): all edges must agree on it.

/// FNV-1a, 64 bits.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of a key among `partitions` (at least 1).
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let n = u64::from(partitions.max(1));
    u32::try_from(fnv1a64(key.as_bytes()) % n).unwrap_or(0)
}

/// The default partition key fields (`fleet.partition_by`): the host.
pub const DEFAULT_KEY: [&str; 3] = ["host.id", "host.name", "agent.id"];

/// The partition key of an ECS event by `fields` (`fleet.partition_by`): the first of them present
/// as a non-empty string or a number (nested or dotted), else "".
pub fn partition_key_by(ev: &serde_json::Value, fields: &[String]) -> String {
    for f in fields {
        let v = ev
            .get(f.as_str())
            .or_else(|| f.split('.').try_fold(ev, |o, part| o.get(part)));
        match v {
            Some(serde_json::Value::String(s)) if !s.is_empty() => return s.clone(),
            Some(serde_json::Value::Number(n)) => return n.to_string(),
            _ => {}
        }
    }
    String::new()
}

/// The partition key of an ECS event: `host.id`, else `host.name`, else `agent.id`, else "".
pub fn partition_key(ev: &serde_json::Value) -> &str {
    let get = |a: &str, b: &str| {
        ev.get(a)
            .and_then(|o| o.get(b))
            .or_else(|| ev.get(format!("{a}.{b}")))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    get("host", "id")
        .or_else(|| get("host", "name"))
        .or_else(|| get("agent", "id"))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_in_range() {
        // Fixed values: a change here would send a host's events to another partition mid-fleet.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        for i in 0..1000 {
            assert!(partition_of(&format!("host-{i}"), 7) < 7);
        }
        assert_eq!(partition_of("x", 0), 0);
    }

    #[test]
    fn key_from_nested_or_dotted() {
        let e = serde_json::json!({"host": {"name": "web-1"}});
        assert_eq!(partition_key(&e), "web-1");
        let e = serde_json::json!({"host": {"name": "web-1", "id": "abc"}});
        assert_eq!(partition_key(&e), "abc");
        let e = serde_json::json!({"host.name": "db"});
        assert_eq!(partition_key(&e), "db");
        let e = serde_json::json!({"agent": {"id": "ag"}});
        assert_eq!(partition_key(&e), "ag");
    }

    #[test]
    fn key_by_configured_fields() {
        let host: Vec<String> = DEFAULT_KEY.iter().map(|s| (*s).to_string()).collect();
        let user = vec!["user.id".to_string(), "host.name".to_string()];
        let e = serde_json::json!({"host": {"name": "web-1"}, "user": {"id": "0"}});
        assert_eq!(partition_key_by(&e, &host), "web-1");
        assert_eq!(partition_key_by(&e, &user), "0");
        let e = serde_json::json!({"host": {"name": "web-1"}, "user.id": 1000});
        assert_eq!(partition_key_by(&e, &user), "1000");
        let e = serde_json::json!({"host": {"name": "web-1"}});
        assert_eq!(partition_key_by(&e, &user), "web-1");
        assert_eq!(partition_key_by(&serde_json::json!({}), &user), "");
    }
}
