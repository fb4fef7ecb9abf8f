//! The state: what Galley created, where, and what it was asked for — plus the journal of
//! operations in flight, so a crash at any point can be resolved on the next run.
//!
//! The local backend keeps `state.json` next to `state.json.backup` (the state before the last
//! save) and `state.json.lock` (who holds the state). Every save is atomic: a temporary file in
//! the same directory, fsync, rename over the state, fsync the directory. A reader therefore
//! sees the old state or the new one, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use galley_core::fs::write_atomic;
use galley_core::resource::{Address, Observed, ResourceSpec};
use galley_core::{Error, ErrorKind, PlatformId, Result, Stage};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::graph::StageOutputs;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Bumped by every save; a saved plan records it to detect that the state moved.
    pub serial: u64,
    /// Identifies this state's history; a plan made against another lineage is refused.
    pub lineage: String,
    pub resources: BTreeMap<Address, ResourceState>,
    /// Outputs by stage (the union of the stage's resources' outputs), for references.
    #[serde(default)]
    pub outputs: BTreeMap<String, BTreeMap<String, Json>>,
    /// The journal: operations started whose result is not recorded yet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<Address, PendingEntry>,
}

/// One resource Galley manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    pub kind: String,
    pub platform: PlatformId,
    pub stage: Stage,
    pub name: String,
    pub id: String,
    pub attributes: Json,
    pub outputs: BTreeMap<String, Json>,
    #[serde(default)]
    pub protect: bool,
    #[serde(default)]
    pub depends_on: Vec<Address>,
    /// sha256 of the (resolved) spec last applied; equal hashes mean nothing to do.
    pub spec_hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingOp {
    Create,
    Update,
    Delete,
}

/// An operation recorded before its handler call: the next run reads what exists under
/// `spec.name` and adopts it (create), refreshes it (update) or forgets it (delete, if gone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub operation: PendingOp,
    pub spec: ResourceSpec,
    pub started_at: String,
}

impl State {
    pub fn new() -> Self {
        State {
            version: STATE_VERSION,
            serial: 0,
            lineage: uuid::Uuid::new_v4().to_string(),
            resources: BTreeMap::new(),
            outputs: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Outputs by stage, for resolving `${stages.X.outputs.Y}`. When two resources of a stage
    /// have the same output name, the first by address wins.
    pub fn stage_outputs(&self) -> StageOutputs {
        let mut out = StageOutputs::new();
        for r in self.resources.values() {
            let m = out.entry(r.stage).or_default();
            for (k, v) in &r.outputs {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        out
    }

    /// Outputs by resource address.
    pub fn resource_outputs(&self) -> BTreeMap<Address, BTreeMap<String, Json>> {
        self.resources.iter().map(|(a, r)| (a.clone(), r.outputs.clone())).collect()
    }

    /// Records what a handler observed for `spec`, stripping secret-looking keys first.
    pub fn record(&mut self, spec: &ResourceSpec, observed: Observed, spec_hash: String) {
        let mut attributes = observed.attributes;
        let mut stripped = crate::secrets::strip_secrets(&mut attributes);
        let mut outputs_json = Json::Object(observed.outputs.into_iter().collect());
        stripped.extend(crate::secrets::strip_secrets(&mut outputs_json));
        if !stripped.is_empty() {
            tracing::warn!(resource = %spec.address, keys = ?stripped, "not recording secret-looking attributes in state");
        }
        let outputs = match outputs_json {
            Json::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        self.resources.insert(
            spec.address.clone(),
            ResourceState {
                kind: spec.kind.clone(),
                platform: spec.platform,
                stage: spec.stage,
                name: spec.name.clone(),
                id: observed.id,
                attributes,
                outputs,
                protect: spec.protect,
                depends_on: spec.depends_on.clone(),
                spec_hash,
            },
        );
    }

    pub(crate) fn refresh_outputs(&mut self) {
        self.outputs = self
            .stage_outputs()
            .into_iter()
            .map(|(s, m)| (s.to_string(), m))
            .collect();
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceState {
    /// The spec this entry was made from, as far as state knows it (for deleting resources the
    /// blueprint no longer declares).
    pub fn to_spec(&self, address: &str) -> ResourceSpec {
        ResourceSpec {
            address: address.to_string(),
            kind: self.kind.clone(),
            platform: self.platform,
            stage: self.stage,
            name: self.name.clone(),
            desired: self.attributes.clone(),
            depends_on: self.depends_on.clone(),
            protect: self.protect,
        }
    }

    pub fn observed(&self) -> Observed {
        Observed { id: self.id.clone(), attributes: self.attributes.clone(), outputs: self.outputs.clone() }
    }
}

/// sha256 over a spec's identity and desired attributes (canonical JSON).
pub fn spec_hash(spec: &ResourceSpec) -> String {
    let mut h = Sha256::new();
    h.update(spec.kind.as_bytes());
    h.update([0]);
    h.update(spec.name.as_bytes());
    h.update([0]);
    h.update(crate::plan::canonical_json(&spec.desired).as_bytes());
    hex::encode(h.finalize())
}

/// Who holds the state, written into the lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: String,
    pub owner: String,
    pub pid: u32,
    pub host: String,
    pub created: String,
    pub operation: String,
}

impl LockInfo {
    pub fn new(operation: &str) -> Self {
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            owner: std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into()),
            pid: std::process::id(),
            host: this_host(),
            created: chrono::Utc::now().to_rfc3339(),
            operation: operation.to_string(),
        }
    }

    /// A human description of the holder, with a hint when the holder is evidently dead.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} (pid {} on {}) since {} for `{}`, lock id {}",
            self.owner, self.pid, self.host, self.created, self.operation, self.id
        );
        if self.host == this_host() && !pid_alive(self.pid) {
            s.push_str(&format!(
                ". That process is no longer running on this host, so the lock is probably stale (a crash or kill); if no galley is running, release it with `galley force-unlock {}`",
                self.id
            ));
        }
        s
    }
}

fn this_host() -> String {
    hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "unknown".into())
}

fn pid_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // Signal 0 checks existence without delivering anything; EPERM means it exists.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Where state lives. Implementations: [`LocalBackend`] (a file), [`MemoryBackend`] (tests and
/// benchmarks); S3/GCS/Azure later.
pub trait StateBackend: Send + Sync {
    /// For messages: `.galley/state.json`, `s3://bucket/key`, …
    fn describe(&self) -> String;
    /// `None` when no state exists yet. A damaged state is an error, never `None`.
    fn load(&self) -> Result<Option<State>>;
    /// Atomically replaces the state, keeping the previous one as a backup.
    fn save(&self, state: &State) -> Result<()>;
    /// Takes the lock, or fails at once with [`ErrorKind::Conflict`] naming the holder.
    fn lock(&self, info: &LockInfo) -> Result<()>;
    /// Releases the lock `id`; fails if someone else holds it.
    fn unlock(&self, id: &str) -> Result<()>;
    /// The current holder, if any.
    fn lock_holder(&self) -> Result<Option<LockInfo>>;
    /// Makes the place state lives ready before the first save (`galley init`): a remote
    /// backend's bucket, say. Idempotent; says what it did or found.
    fn init(&self) -> Result<String> {
        Ok(format!("{}: nothing to set up (it is created by the first save)", self.describe()))
    }
}

/// State in a local file (default `.galley/state.json`).
#[derive(Debug, Clone)]
pub struct LocalBackend {
    path: PathBuf,
}

impl LocalBackend {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalBackend { path: path.into() }
    }
    /// `.galley/state.json` under `project_dir`.
    pub fn in_project(project_dir: &Path) -> Self {
        Self::new(project_dir.join(".galley").join("state.json"))
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn backup_path(&self) -> PathBuf {
        sibling(&self.path, ".backup")
    }
    pub fn lock_path(&self) -> PathBuf {
        sibling(&self.path, ".lock")
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io_err(e: io::Error, what: &str, path: &Path) -> Error {
    Error::from(e).operation(format!("{what} {}", path.display()))
}


fn parse_state(bytes: &[u8], path: &Path, backup: &Path) -> Result<State> {
    let restore = format!(
        "Nothing was changed. The state before the last save is in {b}: check it (`galley state show --file {b}`), then restore it with `cp {b} {p}`",
        b = backup.display(),
        p = path.display()
    );
    let value: Json = serde_json::from_slice(bytes).map_err(|e| {
        Error::corrupt(format!(
            "state file {} is truncated or corrupted ({e}). {restore}",
            path.display()
        ))
    })?;
    let version = value.get("version").and_then(Json::as_u64);
    match version {
        Some(v) if v == u64::from(STATE_VERSION) => {}
        Some(v) if v > u64::from(STATE_VERSION) => {
            return Err(Error::unsupported(format!(
                "state file {} has format version {v}, written by a newer galley; this galley reads version {STATE_VERSION}: upgrade galley",
                path.display()
            )));
        }
        _ => {
            return Err(Error::corrupt(format!(
                "state file {} has no valid `version` field: it is not a galley state or it is damaged. {restore}",
                path.display()
            )));
        }
    }
    serde_json::from_value(value).map_err(|e| {
        Error::corrupt(format!("state file {} does not match the state format ({e}). {restore}", path.display()))
    })
}

impl StateBackend for LocalBackend {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&self) -> Result<Option<State>> {
        match fs::read(&self.path) {
            Ok(bytes) => parse_state(&bytes, &self.path, &self.backup_path()).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e, "reading state", &self.path)),
        }
    }

    fn save(&self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state)?;
        match fs::read(&self.path) {
            Ok(previous) => write_atomic(&self.backup_path(), &previous)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e, "reading state", &self.path)),
        }
        write_atomic(&self.path, &bytes)
    }

    fn lock(&self, info: &LockInfo) -> Result<()> {
        let lock_path = self.lock_path();
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| io_err(e, "creating directory", dir))?;
        }
        match OpenOptions::new().write(true).create_new(true).open(&lock_path) {
            Ok(mut f) => {
                let bytes = serde_json::to_vec_pretty(info)?;
                f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(|e| io_err(e, "writing lock", &lock_path))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let holder = match self.lock_holder() {
                    Ok(Some(h)) => h.describe(),
                    Ok(None) => "someone who released it just now; try again".to_string(),
                    Err(e) => format!("an unknown holder ({e})"),
                };
                Err(Error::conflict(format!("state {} is locked by {holder}", self.path.display())))
            }
            Err(e) => Err(io_err(e, "creating lock", &lock_path)),
        }
    }

    fn unlock(&self, id: &str) -> Result<()> {
        match self.lock_holder()? {
            Some(h) if h.id == id => {
                fs::remove_file(self.lock_path()).map_err(|e| io_err(e, "removing lock", &self.lock_path()))
            }
            Some(h) => Err(Error::conflict(format!(
                "cannot unlock state {}: lock id {id} does not match the current lock, held by {}",
                self.path.display(),
                h.describe()
            ))),
            None => Ok(()),
        }
    }

    fn lock_holder(&self) -> Result<Option<LockInfo>> {
        let lock_path = self.lock_path();
        match fs::read(&lock_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::corrupt(format!(
                    "lock file {} is unreadable ({e}); if no galley is running, delete it",
                    lock_path.display()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e, "reading lock", &lock_path)),
        }
    }
}

/// Releases the lock on the local state at `state_path` if its id is `id` (`galley
/// force-unlock`). Use only when the holder is known to be gone.
pub fn force_unlock(state_path: &Path, id: &str) -> Result<()> {
    let backend = LocalBackend::new(state_path);
    match backend.lock_holder()? {
        None => Err(Error::not_found(format!("state {} is not locked", state_path.display()))),
        Some(_) => backend.unlock(id),
    }
}

/// State in memory: for tests and benchmarks (no backup: nothing outlives the process).
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<Option<State>>,
    lock: Mutex<Option<LockInfo>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateBackend for MemoryBackend {
    fn describe(&self) -> String {
        "in-memory state".into()
    }
    fn load(&self) -> Result<Option<State>> {
        Ok(self.state.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
    fn save(&self, state: &State) -> Result<()> {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(state.clone());
        Ok(())
    }
    fn lock(&self, info: &LockInfo) -> Result<()> {
        let mut l = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = l.as_ref() {
            return Err(Error::conflict(format!("in-memory state is locked by {}", h.describe())));
        }
        *l = Some(info.clone());
        Ok(())
    }
    fn unlock(&self, id: &str) -> Result<()> {
        let mut l = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match l.as_ref() {
            Some(h) if h.id != id => Err(Error::new(ErrorKind::Conflict, format!("lock id {id} does not match {}", h.id))),
            _ => {
                *l = None;
                Ok(())
            }
        }
    }
    fn lock_holder(&self) -> Result<Option<LockInfo>> {
        Ok(self.lock.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_is_atomic_with_backup_and_lock_names_owner() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("s/state.json"));
        assert!(b.load().unwrap().is_none());
        let mut s = State::new();
        b.save(&s).unwrap();
        s.serial = 1;
        b.save(&s).unwrap();
        assert_eq!(b.load().unwrap().unwrap().serial, 1);
        let backup: State = serde_json::from_slice(&fs::read(b.backup_path()).unwrap()).unwrap();
        assert_eq!(backup.serial, 0);

        let info = LockInfo::new("apply");
        b.lock(&info).unwrap();
        let e = b.lock(&LockInfo::new("apply")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.message().contains(&info.owner) && e.message().contains(&info.id), "{e}");
        assert!(b.unlock("other").is_err());
        force_unlock(b.path(), &info.id).unwrap();
        assert!(b.lock_holder().unwrap().is_none());
    }

    #[test]
    fn dead_pid_gets_stale_hint() {
        let mut info = LockInfo::new("apply");
        info.pid = 0x7fff_fff0;
        assert!(info.describe().contains("stale"));
        assert!(!LockInfo::new("apply").describe().contains("stale"));
    }
}
