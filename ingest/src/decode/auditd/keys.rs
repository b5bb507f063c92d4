//! The cache of `auditd.log.<key>` fields, bounded in count and bytes.

use correlator::Field;

/// The interned `auditd.log.<key>` field of each record key met, without formatting the path
/// for every key of every record. Bounded in count and in bytes (keys come from outside): past
/// either bound the cache starts over; a key too long to be a field name is never cached (it
/// interns as the overflow field, counted there).
#[derive(Default)]
pub(super) struct KeyFields {
    map: std::collections::HashMap<Box<str>, Field, ahash::RandomState>,
    bytes: usize,
}

/// Most keys [`KeyFields`] holds.
const MAX_KEY_FIELDS: usize = 4096;
/// Most bytes of keys [`KeyFields`] holds.
const MAX_KEY_FIELD_BYTES: usize = 256 << 10;
const KEY_PREFIX: &str = "auditd.log.";

impl KeyFields {
    pub(super) fn get(&mut self, key: &str) -> Field {
        if let Some(&f) = self.map.get(key) {
            return f;
        }
        let f = Field::intern(&format!("{KEY_PREFIX}{key}"));
        if KEY_PREFIX.len() + key.len() > correlator::MAX_FIELD_PATH_BYTES {
            return f;
        }
        if self.map.len() >= MAX_KEY_FIELDS || self.bytes + key.len() > MAX_KEY_FIELD_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        self.bytes += key.len();
        self.map.insert(Box::from(key), f);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_cache_is_bounded_in_bytes_and_skips_keys_too_long_to_be_fields() {
        let mut k = KeyFields::default();
        // A key too long for a field name is the overflow field and is not kept.
        let long = "k".repeat(100_000);
        assert_eq!(&*k.get(&long).name(), Field::OVERFLOW_NAME);
        assert_eq!((k.map.len(), k.bytes), (0, 0));
        // Distinct keys of 400 bytes: the cache never holds more than its byte budget.
        for i in 0..5_000 {
            let key = format!("{i:06}{}", "x".repeat(394));
            let f = k.get(&key);
            assert_eq!(*f.name(), *format!("{KEY_PREFIX}{key}"));
            assert!(k.bytes <= MAX_KEY_FIELD_BYTES, "{} bytes cached", k.bytes);
            assert!(k.map.len() <= MAX_KEY_FIELDS);
        }
        // A cached key gives the same field.
        assert_eq!(k.get("pid"), k.get("pid"));
    }
}
