//! Helpers shared by the serving and monitor tests: hand-built model artifacts loaded through
//! galley-ml's real `TrainedModel::from_bytes`, and endpoint specs pointing at them.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use galley_core::stages::{EndpointSpec, Signature, Variant};
use galley_core::table::{Column, DType};
use galley_local::serving::LocalServing;

pub fn signature() -> Signature {
    Signature {
        inputs: vec![
            Column::new("x1", DType::Float),
            Column::new("x2", DType::Float),
            Column::new("n", DType::Int),
        ],
        output: Some(Column::new("y", DType::Float)),
    }
}

/// A linear regression artifact: `intercept + c · x` over [`signature`].
pub fn write_model(dir: &Path, name: &str, intercept: f64, coefficients: [f64; 3]) -> PathBuf {
    let json = serde_json::json!({
        "format": "galley-ml/model",
        "format_version": 1,
        "algorithm": "linear_regression",
        "task": "regression",
        "signature": signature(),
        "classes": [],
        "params": {},
        "fitted": {"kind": "linear", "intercept": intercept, "coefficients": coefficients},
    });
    let bytes = serde_json::to_vec(&json).unwrap();
    // Proves the artifact is one galley-ml accepts.
    galley_ml::model::TrainedModel::from_bytes(&bytes).expect("a valid model artifact");
    let path = dir.join(format!("{name}.model.json"));
    std::fs::write(&path, bytes).unwrap();
    path
}

pub fn variant(name: &str, path: &Path, weight: u32) -> Variant {
    Variant {
        name: name.to_owned(),
        model: "wine".to_owned(),
        version: name.trim_start_matches('v').parse().unwrap_or(1),
        artifact_uri: format!("file://{}", path.display()),
        weight,
    }
}

pub fn spec(name: &str, variants: Vec<Variant>) -> EndpointSpec {
    EndpointSpec {
        name: name.to_owned(),
        variants,
        signature: signature(),
        scaling: None,
    }
}

pub fn server_command() -> Vec<OsString> {
    vec![OsString::from(env!("CARGO_BIN_EXE_galley-local-endpoint"))]
}

pub fn serving(root: &Path) -> LocalServing {
    LocalServing::new(
        root.join("endpoints"),
        root.join("monitors"),
        server_command(),
    )
}

pub fn pid_alive(pid: u32) -> bool {
    // Zombies count as gone: only a live process can still serve.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn state_pid(root: &Path, endpoint: &str) -> u32 {
    let text =
        std::fs::read_to_string(root.join("endpoints").join(endpoint).join("state.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["pid"]
        .as_u64()
        .unwrap() as u32
}

/// Stops every server started under a test root when the test ends, even when it panics
/// before its own `undeploy`, so a failing test never leaves a process behind.
pub struct StopServersOnDrop(pub PathBuf);

impl Drop for StopServersOnDrop {
    fn drop(&mut self) {
        let Ok(dirs) = std::fs::read_dir(self.0.join("endpoints")) else {
            return;
        };
        for dir in dirs.flatten() {
            let Ok(text) = std::fs::read_to_string(dir.path().join("state.json")) else {
                continue;
            };
            let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let Some(pid) = state["pid"].as_i64().filter(|&p| p > 1) {
                // SAFETY: kill(2) on the process group of a server this test started.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGTERM);
                }
            }
        }
    }
}

/// Lints a Prometheus exposition with Prometheus's own `promtool check metrics` (Debian's
/// `prometheus` package; `scripts/stack up local` says how to get it). Missing, the test fails
/// saying so, unless `GALLEY_TEST_SKIP` lists `promtool`.
pub fn promtool_check_metrics(exposition: &str) {
    use std::io::Write;
    let promtool = std::env::var("GALLEY_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("GALLEY_TEST_SKIP").is_ok_and(|s| s.split(',').any(|p| p.trim() == "promtool")) => {
            println!("SKIPPED (GALLEY_TEST_SKIP=promtool): promtool check metrics ({e})");
            return;
        }
        Err(e) => panic!(
            "`{promtool} check metrics` could not start ({e}): install Prometheus's promtool \
             (`apt-get install prometheus`; `scripts/stack up local` checks for it), point \
             GALLEY_PROMTOOL at it, or set GALLEY_TEST_SKIP=promtool"
        ),
    };
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics found problems:\n{report}\nin:\n{exposition}");
}
