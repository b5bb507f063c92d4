//! The field interner under a flood of distinct field names (its own test binary, so the process-wide
//! table it fills is no other test's): long paths never enter the table, the table stops at
//! MAX_FIELD_BYTES, every refused path is counted, and resident memory stays bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use correlator::{Field, MAX_FIELD_BYTES, MAX_FIELD_PATH_BYTES};

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn distinct_field_floods_are_bounded_in_bytes_and_counted() {
    let overflow = Field::intern(Field::OVERFLOW_NAME);
    let before = rss_bytes();

    // 2,000 distinct 100 kB names (200 MB of names): none is kept.
    let o0 = Field::overflowed();
    for i in 0..2_000 {
        let name = format!("{i:06}{}", "k".repeat(100_000));
        assert_eq!(Field::intern(&name), overflow);
    }
    assert_eq!(Field::overflowed() - o0, 2_000);
    // A path at the limit is kept.
    let at_limit = "p".repeat(MAX_FIELD_PATH_BYTES);
    assert_ne!(Field::intern(&at_limit), overflow);
    assert_eq!(&*Field::intern(&at_limit).name(), at_limit.as_str());

    // Distinct 500-byte names until the table's bytes run out: past MAX_FIELD_BYTES every new one is
    // the overflow field, and counted.
    let o1 = Field::overflowed();
    let n = MAX_FIELD_BYTES / 500 + 5_000;
    let mut kept = 0usize;
    for i in 0..n {
        let name = format!("{i:08}.{}", "x".repeat(491));
        if Field::intern(&name) != overflow {
            kept += 1;
        }
    }
    assert!(kept <= MAX_FIELD_BYTES / 500, "{kept} names kept");
    assert!(
        Field::overflowed() - o1 >= 5_000,
        "{}",
        Field::overflowed() - o1
    );
    // Known fields still resolve.
    assert_eq!(&*Field::intern(&at_limit).name(), at_limit.as_str());

    let grown = rss_bytes().saturating_sub(before);
    // The table's names (16 MiB) plus its maps and the per-thread cache: far below the 200 MB sent.
    assert!(
        grown < 96 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
}
