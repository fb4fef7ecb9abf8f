//! On-disk layout of the local orchestrator. Everything is a small JSON file replaced
//! atomically (write to a temporary sibling, fsync, rename), so a crash never leaves a torn
//! record and several processes (`galley watch`, `galley run`, `galley status`) can share one
//! directory:
//!
//! ```text
//! <dir>/<pipeline>/pipeline.json          the PipelineSpec
//! <dir>/<pipeline>/runs/<run>.json        one RunRecord per run
//! <dir>/<pipeline>/runs/<run>/<step>.log  step logs
//! <dir>/<pipeline>/runs/<run>.cancel      a cancel request from another process
//! <dir>/<pipeline>/cache/<step>.json      the step's last successful output
//! <dir>/<pipeline>/watch.json             trigger state of `galley watch`
//! ```

use std::path::{Path, PathBuf};

use galley_core::stages::{PipelineRun, PipelineSpec};
use galley_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize, de::DeserializeOwned};


/// What is persisted per run: the neutral [`PipelineRun`] plus what the local runner needs to
/// resume reasoning about it (the spec it ran and its owner).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub run: PipelineRun,
    /// The pipeline as it was when the run started; later upserts don't rewrite history.
    pub spec: PipelineSpec,
    /// The process executing the run, so another process can tell a live run from one
    /// interrupted by a crash.
    pub owner_pid: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| {
            Error::from(e)
                .operation("open")
                .resource(root.display().to_string())
        })?;
        // Canonical, so two handles on one directory compare equal (see `active_run`).
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn pipeline_dir(&self, pipeline: &str) -> PathBuf {
        self.root.join(pipeline)
    }
    pub fn spec_path(&self, pipeline: &str) -> PathBuf {
        self.pipeline_dir(pipeline).join("pipeline.json")
    }
    pub fn runs_dir(&self, pipeline: &str) -> PathBuf {
        self.pipeline_dir(pipeline).join("runs")
    }
    pub fn run_path(&self, pipeline: &str, run: &str) -> PathBuf {
        self.runs_dir(pipeline).join(format!("{run}.json"))
    }
    pub fn cancel_path(&self, pipeline: &str, run: &str) -> PathBuf {
        self.runs_dir(pipeline).join(format!("{run}.cancel"))
    }
    pub fn log_path(&self, pipeline: &str, run: &str, step: &str) -> PathBuf {
        self.runs_dir(pipeline)
            .join(run)
            .join(format!("{step}.log"))
    }
    pub fn cache_path(&self, pipeline: &str, step: &str) -> PathBuf {
        self.pipeline_dir(pipeline)
            .join("cache")
            .join(format!("{step}.json"))
    }
    pub fn watch_path(&self, pipeline: &str) -> PathBuf {
        self.pipeline_dir(pipeline).join("watch.json")
    }

    pub fn load_spec(&self, pipeline: &str) -> Result<Option<PipelineSpec>> {
        read_json(&self.spec_path(pipeline))
    }

    /// Names of every pipeline directory (including deleted pipelines that kept history).
    pub fn pipeline_names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in read_dir_or_empty(&self.root)? {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
                && let Some(name) = entry.file_name().to_str()
            {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Finds a run by id alone (the neutral API does not pass the pipeline).
    pub fn find_run(&self, run: &str) -> Result<Option<RunRecord>> {
        for pipeline in self.pipeline_names()? {
            if let Some(rec) = read_json(&self.run_path(&pipeline, run))? {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    pub fn list_runs(&self, pipeline: &str) -> Result<Vec<RunRecord>> {
        let mut out = Vec::new();
        for entry in read_dir_or_empty(&self.runs_dir(pipeline))? {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            // One damaged record must not block every run of the pipeline: it is reported and
            // left out (`status` on that run still names the file). A file that vanished
            // between listing and reading (deleted history) is simply gone.
            match read_json::<RunRecord>(&path) {
                Ok(Some(rec)) => out.push(rec),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable pipeline run record"),
            }
        }
        out.sort_by(|a, b| {
            b.run
                .started_ms
                .cmp(&a.run.started_ms)
                .then_with(|| b.run.id.cmp(&a.run.id))
        });
        Ok(out)
    }

    pub fn save_run(&self, rec: &RunRecord) -> Result<()> {
        write_json_atomic(&self.run_path(&rec.run.pipeline, &rec.run.id), rec)
    }
}

fn read_dir_or_empty(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.collect::<std::io::Result<Vec<_>>>().map_err(|e| {
            Error::from(e)
                .operation("list")
                .resource(dir.display().to_string())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::from(e)
            .operation("list")
            .resource(dir.display().to_string())),
    }
}

/// Reads a JSON file; `None` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::from(e)
                .operation("read")
                .resource(path.display().to_string()));
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "{} is not a valid orchestrator record; restore it from a backup or delete it",
                path.display()
            ),
        )
        .with_source(e)
    })
}

/// Replaces `path` atomically: readers see the old or the new content, never a mix.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    galley_core::fs::write_atomic(path, &serde_json::to_vec_pretty(value)?)
}

/// Whether the process that owns a run is still alive. Unknown → assumed alive, so a live
/// run is never declared interrupted by mistake.
pub(crate) fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        // Signal 0 checks existence without delivering anything; EPERM means it exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true
    }
}
