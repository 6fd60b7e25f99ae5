//! Shared by the tool's tests: running `tmctl` and reading what it prints.

#![allow(dead_code)] // Each test file uses a part.

use std::process::{Command, Output};

/// Runs `tmctl` with `args`.
pub fn tmctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tmctl")).args(args).output().unwrap()
}

/// Runs `tmctl`, expecting success; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = tmctl(args);
    assert!(out.status.success(), "tmctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `tmctl`, expecting failure; its one-line stderr.
pub fn fails(args: &[&str], code: i32) -> String {
    let out = tmctl(args);
    assert_eq!(out.status.code(), Some(code), "tmctl {args:?}: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

pub fn json(args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&ok(&args)).unwrap()
}

/// `(id, state)` of each transaction in a `list --json` document.
pub fn states(list: &serde_json::Value) -> Vec<(String, String)> {
    list["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_string(), t["state"].as_str().unwrap().to_string()))
        .collect()
}
