#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::event::Event;

fn ev(j: serde_json::Value) -> Event {
    Event::from_json(&j).unwrap()
}

fn m(q: &str, e: &Event) -> bool {
    compile(q, &Options::elastic())
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .matches(e)
}

#[test]
fn basics() {
    let e = ev(
        serde_json::json!({"event": {"category": ["process"], "type": ["start"]}, "process": {"name": "Bash", "args": ["bash", "-c", "id"], "pid": 42}, "source": {"ip": "10.1.2.3"}}),
    );
    assert!(m("process where process.name == \"Bash\"", &e));
    assert!(!m("process where process.name == \"bash\"", &e));
    assert!(m("process where process.name : \"bash\"", &e));
    assert!(m("process where process.name : (\"zsh\", \"ba*\")", &e));
    assert!(m("process where process.name like~ \"BA?H\"", &e));
    assert!(!m("process where process.name like \"ba?h\"", &e));
    assert!(m("process where process.name regex~ \"b.sh\"", &e));
    assert!(m("process where process.args : \"-c\"", &e));
    assert!(m("process where process.pid > 40 and process.pid < 43", &e));
    assert!(m("process where process.pid + 1 == 43", &e));
    assert!(m("any where process.name in~ (\"BASH\")", &e));
    assert!(!m("file where true", &e));
    assert!(m("process where ?process.missing == null", &e));
    assert!(!m("process where process.missing != \"x\"", &e));
    assert!(m("process where not process.missing : \"x\" or true", &e));
    assert!(m("process where cidrMatch(source.ip, \"10.0.0.0/8\")", &e));
    assert!(m("process where startsWith~(process.name, \"ba\")", &e));
    assert!(!m("process where startsWith(process.name, \"ba\")", &e));
    assert!(m("process where process.name not in (\"sh\", \"zsh\")", &e));
    assert!(m(
        "process where length(process.name) == 4 and process.args[1] == \"-c\"",
        &e
    ));
    assert!(m("process where process.pid == process.pid", &e));
}

#[test]
fn errors_point_at_line_and_column() {
    let e = compile("process where\n  process.name == ", &Options::elastic()).unwrap_err();
    assert_eq!((e.line, e.column), (2, 19), "{e}");
    assert!(e.to_string().contains("expected"), "{e}");
    let e = compile("process where foo(x)", &Options::elastic()).unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    let e = compile("process where a = 1", &Options::elastic()).unwrap_err();
    assert!(e.to_string().contains("=="), "{e}");
}

#[test]
fn sequence_api() {
    let q = compile(
        "sequence by host.id with maxspan=30s [process where true] [network where true]",
        &Options::elastic(),
    )
    .unwrap();
    assert!(q.is_sequence());
    assert_eq!(
        q.categories(),
        Some(vec!["process".to_string(), "network".to_string()])
    );
    let QueryKind::Sequence {
        maxspan_ns, steps, ..
    } = q.kind()
    else {
        panic!()
    };
    assert_eq!(*maxspan_ns, Some(30_000_000_000));
    assert_eq!(steps.len(), 2);
}
