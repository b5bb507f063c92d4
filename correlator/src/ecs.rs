//! The one ECS vocabulary every source writes: the same behaviour gets the same `event.action`,
//! `event.category` and `event.type` whether the kernel sensor, auditd, eslogger or another decoder
//! saw it, and the same names for socket families, socket types and file types; `@timestamp` text
//! is written by one formatter. docs/events.md has the table of actions and the sources of each.
//!
//! ECS defines the categorisation fields (`event.category`, `event.type`: only the allowed values are
//! used here) but no list of actions. Where Elastic's own integrations name a behaviour the product
//! also sees, their name is used (`exec`, `fork`); where none does (an AF_UNIX bind, a FIFO open),
//! the kernel sensor's specific name is the vocabulary's. Older spellings other ECS senders use
//! (`bind`, `connect`, `socket`, `execve`...) stay accepted by the shipped rules.

/// One behaviour: its `event.action` and the `event.category` / `event.type` that go with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    pub name: &'static str,
    pub category: &'static [&'static str],
    /// `event.type`.
    pub kind: &'static [&'static str],
}

/// A program was executed (execve/execveat).
pub const EXEC: Action = Action {
    name: "exec",
    category: &["process"],
    kind: &["start"],
};
/// A new process (not a thread).
pub const FORK: Action = Action {
    name: "fork",
    category: &["process"],
    kind: &["start"],
};
/// A process ended.
pub const EXIT: Action = Action {
    name: "exit",
    category: &["process"],
    kind: &["end"],
};
/// socket(2), or a socket requested through io_uring.
pub const SOCKET_CREATED: Action = Action {
    name: "socket_created",
    category: &["network"],
    kind: &["start"],
};
/// socketpair(2).
pub const SOCKETPAIR_CREATED: Action = Action {
    name: "socketpair_created",
    category: &["network"],
    kind: &["start"],
};
/// bind(2) to an AF_UNIX address.
pub const UNIX_BIND: Action = Action {
    name: "unix_bind",
    category: &["network"],
    kind: &["start"],
};
/// connect(2) to an AF_UNIX address.
pub const UNIX_CONNECT: Action = Action {
    name: "unix_connect",
    category: &["network"],
    kind: &["connection", "start"],
};
/// A FIFO made with mknod/mknodat (mkfifo).
pub const FIFO_CREATE: Action = Action {
    name: "fifo_create",
    category: &["file"],
    kind: &["creation"],
};
/// An open whose file is a FIFO.
pub const FIFO_OPEN: Action = Action {
    name: "fifo_open",
    category: &["file"],
    kind: &["access"],
};
/// An outbound TCP connection made or attempted.
pub const TCP_CONNECT: Action = Action {
    name: "tcp_connect",
    category: &["network"],
    kind: &["connection", "start"],
};
/// An inbound TCP connection accepted.
pub const TCP_ACCEPT: Action = Action {
    name: "tcp_accept",
    category: &["network"],
    kind: &["connection", "start"],
};
/// A tracked TCP connection ended.
pub const TCP_CLOSE: Action = Action {
    name: "tcp_close",
    category: &["network"],
    kind: &["connection", "end"],
};

/// Every action of the vocabulary (docs/events.md lists them with their sources).
pub const ACTIONS: &[Action] = &[
    EXEC,
    FORK,
    EXIT,
    SOCKET_CREATED,
    SOCKETPAIR_CREATED,
    UNIX_BIND,
    UNIX_CONNECT,
    FIFO_CREATE,
    FIFO_OPEN,
    TCP_CONNECT,
    TCP_ACCEPT,
    TCP_CLOSE,
];

/// `network.transport` of AF_UNIX sockets.
pub const TRANSPORT_UNIX: &str = "unix";

/// `socket.family` of a known address family number (Linux numbering): `AF_UNIX`, `AF_INET`, ...
pub fn socket_family(family: u64) -> Option<&'static str> {
    Some(match family {
        1 => "AF_UNIX",
        2 => "AF_INET",
        10 => "AF_INET6",
        16 => "AF_NETLINK",
        17 => "AF_PACKET",
        40 => "AF_VSOCK",
        _ => return None,
    })
}

/// `socket.type` of a socket type as passed to socket(2) (flags such as `SOCK_CLOEXEC` ignored).
pub fn socket_type(ty: u64) -> Option<&'static str> {
    Some(match ty & 0xf {
        1 => "SOCK_STREAM",
        2 => "SOCK_DGRAM",
        3 => "SOCK_RAW",
        4 => "SOCK_RDM",
        5 => "SOCK_SEQPACKET",
        _ => return None,
    })
}

/// `file.type` of a `st_mode` (the `S_IFMT` bits).
pub fn file_type(mode: u64) -> Option<&'static str> {
    Some(match mode & 0o170_000 {
        0o010_000 => "fifo",
        0o020_000 => "char_device",
        0o040_000 => "dir",
        0o060_000 => "block_device",
        0o100_000 => "file",
        0o120_000 => "symlink",
        0o140_000 => "socket",
        _ => return None,
    })
}

/// The fraction of a second [`rfc3339`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fraction {
    /// 6 digits (alert documents).
    Micros,
    /// 9 digits (kernel events, detector evidence).
    Nanos,
    /// 9 digits with trailing zeros trimmed down to 3 (decoded records: the source's precision).
    Trimmed,
}

/// Epoch nanoseconds as RFC 3339 UTC text: `YYYY-MM-DDTHH:MM:SS.fffZ`. The one formatter of
/// `@timestamp` text (no date library: civil-from-days).
pub fn rfc3339(ns: i64, fraction: Fraction) -> String {
    let mut out = rfc3339_seconds(ns.div_euclid(1_000_000_000));
    let nanos = ns.rem_euclid(1_000_000_000);
    let frac = match fraction {
        Fraction::Micros => format!("{:06}", nanos / 1000),
        Fraction::Nanos => format!("{nanos:09}"),
        Fraction::Trimmed => {
            let mut f = format!("{nanos:09}");
            while f.len() > 3 && f.ends_with('0') {
                f.pop();
            }
            f
        }
    };
    out.push('.');
    out.push_str(&frac);
    out.push('Z');
    out
}

/// Epoch seconds as `YYYY-MM-DDTHH:MM:SS` (the date-time part of [`rfc3339`], which the kernel
/// sensor caches per second).
pub fn rfc3339_seconds(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Howard Hinnant's civil-from-days: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_precisions() {
        let ns = 1_700_000_000_123_450_000;
        assert_eq!(
            rfc3339(ns, Fraction::Nanos),
            "2023-11-14T22:13:20.123450000Z"
        );
        assert_eq!(rfc3339(ns, Fraction::Micros), "2023-11-14T22:13:20.123450Z");
        assert_eq!(rfc3339(ns, Fraction::Trimmed), "2023-11-14T22:13:20.12345Z");
        assert_eq!(rfc3339(0, Fraction::Trimmed), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(-1, Fraction::Nanos),
            "1969-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            crate::event::parse_rfc3339_ns(&rfc3339(ns, Fraction::Nanos)),
            Some(ns)
        );
    }

    #[test]
    fn names() {
        assert_eq!(socket_family(1), Some("AF_UNIX"));
        assert_eq!(socket_type(0o2_000_001), Some("SOCK_STREAM"));
        assert_eq!(file_type(0o010_644), Some("fifo"));
        let mut names: Vec<_> = ACTIONS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len(), "one name per behaviour");
    }
}
