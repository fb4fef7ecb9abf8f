//! Running the real `galley` binary in a throwaway project directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

pub struct Project {
    pub dir: tempfile::TempDir,
    pub blueprint: PathBuf,
    /// Set for every `galley` this project runs.
    pub env: Vec<(String, String)>,
}

impl Project {
    /// A project holding `name` from `blueprints/`, with `edit` applied to its text.
    pub fn from_shipped(name: &str, edit: impl FnOnce(String) -> String) -> Project {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints").join(name);
        let text = std::fs::read_to_string(&src).unwrap();
        Project::with_text(name, &edit(text))
    }

    /// A project that is a copy of `examples/<dir>/`, whose blueprint is `blueprint.yaml`.
    pub fn from_example(dir: &str) -> Project {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(dir);
        let tmp = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
            }
        }
        let blueprint = tmp.path().join("blueprint.yaml");
        Project { dir: tmp, blueprint, env: Vec::new() }
    }

    pub fn with_text(name: &str, text: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let blueprint = dir.path().join(name);
        std::fs::write(&blueprint, text).unwrap();
        Project { dir, blueprint, env: Vec::new() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `galley ARGS… FILE` (the blueprint goes where a command expects it: right after
    /// the subcommand).
    pub fn galley(&self, args: &[&str]) -> Output {
        let (cmd, rest) = args.split_first().unwrap();
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_galley"));
        c.current_dir(self.path()).arg(cmd).arg(&self.blueprint).args(rest).env_remove("GALLEY_OUTPUT").env("NO_COLOR", "1");
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.output().unwrap()
    }

    pub fn galley_json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.galley(&all);
        let code = out.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Commands with progress print one JSON document per event; the last is the result.
        let value = serde_json::Deserializer::from_str(&stdout)
            .into_iter::<Value>()
            .collect::<Result<Vec<Value>, _>>()
            .ok()
            .and_then(|mut docs| docs.pop())
            .unwrap_or_else(|| panic!("not JSON:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr)));
        (code, value)
    }

    pub fn endpoint_pid(&self, endpoint: &str) -> Option<u32> {
        let state = self.path().join(".galley/local/endpoints").join(endpoint).join("state.json");
        let v: Value = serde_json::from_slice(&std::fs::read(state).ok()?).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "galley failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn process_alive(pid: u32) -> bool {
    // /proc/PID exists for zombies too; a zombie's state is `Z`.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A tree of everything under `dir`, for "nothing left behind" assertions.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A plain HTTP/1.1 GET over loopback, without pulling an HTTP client into the tests.
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
