//! The endgame suite's folding and string-function tables (`test_folding.toml`,
//! `test_string_functions.toml`): every expression must evaluate to its expected value (absent = null).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use correlator::eql::{eval_constant, Options};
use correlator::Value;

fn eql_dir() -> PathBuf {
    let dir = std::env::var_os("SENSOR_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    );
    dir.join("corpora/eql")
}

fn same(got: &Value, want: Option<&toml::Value>) -> bool {
    match (got, want) {
        (Value::Null, None) => true,
        (Value::Bool(a), Some(toml::Value::Boolean(b))) => a == b,
        (Value::Int(a), Some(toml::Value::Integer(b))) => a == b,
        (Value::Str(a), Some(toml::Value::String(b))) => **a == **b,
        (g, Some(toml::Value::Float(b))) => g
            .as_f64()
            .is_some_and(|a| (a - b).abs() < 1e-9 && matches!(g, Value::Float(_))),
        _ => false,
    }
}

fn param_values(types: &[toml::Value]) -> Vec<&'static str> {
    types
        .iter()
        .filter_map(|t| match t.as_str()? {
            "bool" => Some("true"),
            "int" => Some("1"),
            "string" => Some("\"abc\""),
            "float" => Some("1.5"),
            "null" => Some("null"),
            _ => None,
        })
        .collect()
}

/// (name, expression, expected, modes) for every test of a table file.
fn cases(file: &str) -> Vec<(String, String, Option<toml::Value>, Vec<bool>)> {
    let doc: toml::Table = std::fs::read_to_string(eql_dir().join(file))
        .unwrap()
        .parse()
        .unwrap();
    let mut out = Vec::new();
    for (section, body) in &doc {
        let body = body.as_table().unwrap();
        let cs = body.get("case_sensitive").and_then(toml::Value::as_bool) == Some(true);
        let ci = body.get("case_insensitive").and_then(toml::Value::as_bool) == Some(true);
        let modes = match (cs, ci) {
            (true, false) => vec![false],
            (false, true) => vec![true],
            _ => vec![false, true],
        };
        let mut push = |tests: &toml::Value, subst: Option<(&str, &str)>| {
            for t in tests.as_array().unwrap() {
                let t = t.as_table().unwrap();
                let mut e = t["expression"].as_str().unwrap().to_string();
                if let Some((name, v)) = subst {
                    e = e.replace(&format!("${name}"), v);
                }
                out.push((
                    section.clone(),
                    e,
                    t.get("expected").cloned(),
                    modes.clone(),
                ));
            }
        };
        if let Some(tests) = body.get("fold").and_then(|f| f.get("tests")) {
            push(tests, None);
        }
        for lp in body
            .get("loop")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            let param = lp["param"].as_table().unwrap();
            let name = param["name"].as_str().unwrap();
            for v in param_values(param["type"].as_array().unwrap()) {
                push(&lp["fold"]["tests"], Some((name, v)));
            }
        }
    }
    out
}

fn run(file: &str) {
    let (mut pass, mut total) = (0, 0);
    let mut failures = Vec::new();
    for (section, expr, want, modes) in cases(file) {
        for ci in modes {
            total += 1;
            match eval_constant(&expr, &Options::endgame(ci)) {
                Ok(v) if same(&v, want.as_ref()) => pass += 1,
                Ok(v) => failures.push(format!(
                    "[{section}] `{expr}` (ci={ci}): expected {want:?}, got {v:?}"
                )),
                Err(e) => failures.push(format!("[{section}] `{expr}` (ci={ci}): {e}")),
            }
        }
    }
    println!("{file}: {pass}/{total} pass");
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(total > 50, "too few cases read from {file}");
    assert!(
        failures.is_empty(),
        "{} of {total} cases fail in {file}",
        failures.len()
    );
}

#[test]
fn folding_table() {
    run("test_folding.toml");
}

#[test]
fn string_function_table() {
    run("test_string_functions.toml");
}
