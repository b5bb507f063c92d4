//! Forced ring-buffer loss: a one-page ring buffer and a storm of FIFO creations. Every FIFO the
//! workload made is either printed or counted as lost, exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kernel_support;

use kernel_support::{by, get, start, workload};

/// The loss counters are per kind for the whole machine: tests that compare them with what their
/// workload made run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `sensor events` with `extra` around a storm of `n` FIFO creations; returns how many of
/// them were printed and the sensor's final status. With `frozen`, the sensor is stopped
/// (SIGSTOP) for the storm, so that nothing drains the ring buffer meanwhile.
fn fifo_storm(tag: &str, n: usize, extra: &[&str], frozen: bool) -> (usize, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!("kernel-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = vec!["--status"];
    args.extend_from_slice(extra);
    let cap = start(&args);
    if frozen {
        cap.freeze(true);
    }
    let pid = workload(&["fifo-storm", dir.to_str().unwrap(), &n.to_string()]);
    if frozen {
        cap.freeze(false);
    }
    let (events, stderr) = cap.stop();
    std::fs::remove_dir_all(&dir).unwrap();
    let status: serde_json::Value = stderr
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no status JSON on stderr: {stderr:?}"));
    let prefix = dir.to_str().unwrap();
    let seen = by(&events, pid, "fifo_create")
        .iter()
        .filter(|e| {
            get(e, "file.path")
                .as_str()
                .is_some_and(|p| p.starts_with(prefix))
        })
        .count();
    (seen, status)
}

fn lost(status: &serde_json::Value) -> (u64, u64) {
    (
        status["lost_kernel"]["fifo_create"].as_u64().unwrap(),
        status["lost_queue"]["fifo_create"].as_u64().unwrap(),
    )
}

#[test]
fn losses_are_counted_and_add_up() {
    if !tests::require_root("losses_are_counted_and_add_up") {
        return;
    }
    let _serial = serial();
    const N: usize = 5_000;
    let (seen, status) = fifo_storm("loss", N, &["--ring-buffer-bytes", "4096"], true);
    let (lost_kernel, lost_queue) = lost(&status);
    let delivered = status["events"]["fifo_create"].as_u64().unwrap();
    eprintln!(
        "generated {N}, seen {seen}, lost in kernel {lost_kernel}, lost in queue {lost_queue}"
    );
    assert!(
        lost_kernel > 0,
        "a one-page ring buffer, unread under a {N}-FIFO storm, should overflow"
    );
    assert!(seen > 0, "some events should get through");
    assert_eq!(
        seen as u64 + lost_kernel + lost_queue,
        N as u64,
        "seen + lost != generated; status {status}"
    );
    assert!(delivered >= seen as u64);
}

/// A queue of four events and a workload that makes thousands at once: the reader must leave what
/// the queue cannot take in the ring buffer (which has room) and deliver it later, not drop it.
#[test]
fn a_full_queue_holds_records_back_instead_of_dropping_them() {
    if !tests::require_root("a_full_queue_holds_records_back_instead_of_dropping_them") {
        return;
    }
    let _serial = serial();
    const N: usize = 3_000;
    let (seen, status) = fifo_storm(
        "backpressure",
        N,
        &["--queue-capacity", "4", "--ring-buffer-bytes", "16777216"],
        false,
    );
    let (lost_kernel, lost_queue) = lost(&status);
    eprintln!(
        "generated {N}, seen {seen}, lost in kernel {lost_kernel}, lost in queue {lost_queue}"
    );
    assert_eq!(
        (seen, lost_kernel, lost_queue),
        (N, 0, 0),
        "every FIFO creation should be delivered through a 4-event queue; status {status}"
    );
}
