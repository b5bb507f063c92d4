//! The wall clock, for bookkeeping only (store timestamps, API "since" filters, rates); detectors
//! never see it: they decide on event time.

/// The wall clock in ns since the epoch.
pub fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
