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
}
