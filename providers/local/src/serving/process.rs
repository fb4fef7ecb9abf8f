//! Starting, finding and stopping the detached model server process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use galley_core::{Error, Result};

/// True when `pid` names a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let exists = unsafe { libc::kill(raw, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // A zombie still answers signal 0; its state letter follows the `(comm)` field.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_none_or(|rest| !rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// True when `pid` is (as far as this OS lets us tell) the server started for `config`,
/// so a recycled pid is never signalled.
pub fn is_our_server(pid: u32, config: &Path) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let needle = config.as_os_str().as_encoded_bytes();
            cmdline.split(|&b| b == 0).any(|arg| arg == needle)
        }
        // No /proc (or no permission): trust the state file.
        Err(_) => alive(pid),
    }
}

/// A spawned server: its pid and whether it has exited (a reaper thread waits on it so it
/// never lingers as a zombie of this process).
pub struct Spawned {
    pub pid: u32,
    pub exited: Arc<AtomicBool>,
}

/// Starts `command --config <config>` detached in its own process group, output to `log`.
pub fn spawn(command: &[OsString], config: &Path, log: &Path) -> Result<Spawned> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::invalid("the model server command is empty"))?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::from(e).resource(log.display().to_string()))?;
    let log_err = log_file.try_clone().map_err(Error::from)?;
    let mut child = Command::new(program)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        // Its own group: a Ctrl-C in the terminal that deployed it does not stop it, and
        // undeploy can signal the server and anything it started at once.
        .process_group(0)
        .spawn()
        .map_err(|e| {
            Error::from(e)
                .operation("start model server")
                .resource(program.to_string_lossy().into_owned())
        })?;
    let pid = child.id();
    let exited = Arc::new(AtomicBool::new(false));
    let flag = exited.clone();
    std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
            flag.store(true, Ordering::SeqCst);
        })
        .map_err(Error::from)?;
    Ok(Spawned { pid, exited })
}

/// Sends `signal` to the process group led by `pid`.
fn signal_group(pid: u32, signal: i32) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 1
    {
        // SAFETY: plain kill(2) on a process group id we started; errors (ESRCH) are fine.
        unsafe {
            libc::kill(-raw, signal);
        }
    }
}

/// SIGTERM to the group, up to `grace` to exit, then SIGKILL. Returns once `pid` is gone.
pub async fn stop(pid: u32, grace: Duration) -> Result<()> {
    signal_group(pid, libc::SIGTERM);
    if wait_gone(pid, grace).await {
        return Ok(());
    }
    signal_group(pid, libc::SIGKILL);
    if wait_gone(pid, Duration::from_secs(5)).await {
        return Ok(());
    }
    Err(Error::new(
        galley_core::ErrorKind::Timeout,
        format!("model server pid {pid} did not exit after SIGKILL; check it with `ps -p {pid}`"),
    ))
}

async fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    !alive(pid)
}

/// The last `max` bytes of a log file, for error messages.
pub fn log_tail(log: &Path, max: usize) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}
