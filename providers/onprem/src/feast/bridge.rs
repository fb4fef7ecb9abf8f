//! The bridge process (`bridge.py`, run by the repository's Python): Feast's SDK, imported once
//! and asked one JSON line at a time. It dies with the store that started it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use galley_core::{Error, ErrorKind, Result};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const SOURCE: &str = include_str!("bridge.py");
/// Importing Feast takes seconds on a quiet machine; a loaded CI runner can take far longer.
const START_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Bridge {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
}

impl Bridge {
    pub async fn start(python: &Path, repo: &Path) -> Result<Bridge> {
        let data = repo.join("data");
        std::fs::create_dir_all(&data).map_err(|e| Error::invalid(format!("creating {}: {e}", data.display())))?;
        let log = data.join("galley-feast-bridge.log");
        let stderr = std::fs::File::create(&log).map_err(|e| Error::invalid(format!("creating {}: {e}", log.display())))?;
        let mut child = Command::new(python)
            .arg("-u")
            .arg("-c")
            .arg(SOURCE)
            .arg(repo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::invalid(format!(
                    "starting Feast's Python `{}`: {e}; set `platforms.onprem.feast_python` (or GALLEY_FEAST_PYTHON) to a \
                     Python that has `feast` installed",
                    python.display()
                ))
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let mut bridge = Bridge { _child: child, stdin, stdout, log };
        match tokio::time::timeout(START_TIMEOUT, bridge.answer("start")).await {
            Ok(Ok(_)) => Ok(bridge),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::new(ErrorKind::Timeout, format!("Feast did not start in {}s ({})", START_TIMEOUT.as_secs(), bridge.tail()))),
        }
    }

    /// One request, one answer. An error from Feast is an answer; a bridge that stopped
    /// answering is an `Unavailable` error, and the caller starts a new one.
    pub async fn call(&mut self, op: &str, mut request: Json) -> Result<Json> {
        request["op"] = json!(op);
        let mut line = serde_json::to_vec(&request).map_err(|e| Error::internal(format!("encoding a Feast request: {e}")))?;
        line.push(b'\n');
        if let Err(e) = self.stdin.write_all(&line).await {
            return Err(Error::new(ErrorKind::Unavailable, format!("Feast's bridge stopped ({op}: {e}; {})", self.tail())));
        }
        self.answer(op).await
    }

    async fn answer(&mut self, op: &str) -> Result<Json> {
        let line = match self.stdout.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) | Err(_) => return Err(Error::new(ErrorKind::Unavailable, format!("Feast's bridge stopped ({op}; {})", self.tail()))),
        };
        let mut answer: Json = serde_json::from_str(&line)
            .map_err(|_| Error::internal(format!("Feast's bridge answered {op} with something that is not JSON: {line:.200}")))?;
        if let Some(err) = answer.get("error").and_then(Json::as_str) {
            return Err(Error::new(ErrorKind::Unavailable, format!("Feast refused {op}: {err}")));
        }
        Ok(answer["ok"].take())
    }

    /// The end of the bridge's log, where Python said why it stopped.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines[lines.len().saturating_sub(3)..].join(" | ");
        if last.is_empty() { format!("log {}", self.log.display()) } else { format!("{last}; log {}", self.log.display()) }
    }
}
