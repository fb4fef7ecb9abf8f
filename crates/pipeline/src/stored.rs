//! A run kept in the artifact store: what every orchestrator whose steps run in processes of
//! the platform's own engine (SageMaker Pipelines' step containers, Airflow's workers) shares.
//! Such a step process has no connection to the `galley run` that started it; the artifact
//! store is the one place both reach, so records, logs, outputs and the step cache live there:
//!
//! ```text
//! galley/pipelines/runs/<run>/run.json           the run record (runs in Galley's process)
//! galley/pipelines/runs/<run>/outputs/<step>.json how a step ended and what it handed on
//! galley/pipelines/runs/<run>/logs/<step>.log     the step's log
//! galley/pipelines/<pipeline>/cache/<step>.json   the step's last successful output
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use galley_core::stages::{ArtifactKey, ArtifactStore, ArtifactStoreExt, PipelineRun, PipelineSpec, RunState, StepExecutor, StepLogger, StepOutput, StepRun};
use galley_core::{Error, ErrorKind, Result};

use crate::{CacheEntry, RunJournal, RunnerOptions, dag};

const ROOT: &str = "galley/pipelines";

/// The record of a run (`run` is a storage id: ASCII letters, digits and `-`).
pub fn run_key(run: &str) -> Result<ArtifactKey> {
    check_id(run)?;
    ArtifactKey::new(format!("{ROOT}/runs/{run}/run.json"))
}

/// How a step of a run on the platform's engine ended and what it handed on, written by the
/// step's process (the engine's own record of a step has neither Galley's cache hit nor the output).
pub fn output_key(run: &str, step: &str) -> Result<ArtifactKey> {
    check_id(run)?;
    ArtifactKey::new(format!("{ROOT}/runs/{run}/outputs/{step}.json"))
}

pub fn log_key(run: &str, step: &str) -> Result<ArtifactKey> {
    check_id(run)?;
    ArtifactKey::new(format!("{ROOT}/runs/{run}/logs/{step}.log"))
}

fn cache_key(pipeline: &str, step: &str) -> Result<ArtifactKey> {
    ArtifactKey::new(format!("{ROOT}/{pipeline}/cache/{step}.json"))
}

fn check_id(run: &str) -> Result<()> {
    if run.is_empty() || !run.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::not_found(format!("run `{run}` does not exist (not a galley run id)")));
    }
    Ok(())
}

/// Collects a step's log lines; objects cannot be appended to, so the log is stored once the
/// step ends.
struct BufferLogger(Mutex<Vec<String>>);

impl StepLogger for BufferLogger {
    fn line(&self, message: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(message.to_owned());
    }
}

/// The [`RunJournal`] of runs kept in an artifact store.
pub struct StoredJournal {
    store: Arc<dyn ArtifactStore>,
    logs: Mutex<HashMap<String, Arc<BufferLogger>>>,
}

impl StoredJournal {
    pub fn new(store: Arc<dyn ArtifactStore>) -> Self {
        StoredJournal { store, logs: Mutex::default() }
    }
}

#[async_trait]
impl RunJournal for StoredJournal {
    async fn save(&self, run: &PipelineRun) -> Result<()> {
        self.store.put_bytes(&run_key(&run.id)?, bytes::Bytes::from(serde_json::to_vec(run)?)).await?;
        Ok(())
    }

    fn step_log(&self, _run: &str, step: &str) -> Arc<dyn StepLogger> {
        let log = Arc::new(BufferLogger(Mutex::new(Vec::new())));
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).insert(step.to_owned(), log.clone());
        log
    }

    async fn step_done(&self, run: &str, step: &str) {
        let log = self.logs.lock().unwrap_or_else(|p| p.into_inner()).remove(step);
        if let (Some(log), Ok(key)) = (log, log_key(run, step)) {
            let text = log.0.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
            if let Err(e) = self.store.put_bytes(&key, bytes::Bytes::from(text)).await {
                tracing::warn!(%run, %step, error = %e, "could not store the step's log");
            }
        }
    }

    async fn cache_get(&self, pipeline: &str, step: &str) -> Result<Option<CacheEntry>> {
        match self.store.get_bytes(&cache_key(pipeline, step)?).await {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(format!("cache entry of `{step}`: {e}")))?)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn cache_put(&self, pipeline: &str, step: &str, entry: &CacheEntry) -> Result<()> {
        self.store.put_bytes(&cache_key(pipeline, step)?, bytes::Bytes::from(serde_json::to_vec(entry)?)).await?;
        Ok(())
    }
}

/// The record `step` of `run` left in `store` (`None`: it has not ended yet, or never ran).
pub async fn step_record(store: &dyn ArtifactStore, run: &str, step: &str) -> Result<Option<StepRun>> {
    match store.get_bytes(&output_key(run, step)?).await {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::corrupt(format!("the record of step `{step}` of run `{run}` is damaged ({e})"))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The body of `galley container step` for a run kept in `store`: reads the outputs of the
/// step's ancestors, runs it here with Galley's retries and cache ([`crate::execute_step`]),
/// and records how it ended, with its output for the steps after it.
pub async fn run_stored_step(
    store: Arc<dyn ArtifactStore>,
    spec: &PipelineSpec,
    run: &str,
    step: &str,
    executor: Arc<dyn StepExecutor>,
    options: &RunnerOptions,
) -> Result<StepRun> {
    let mut upstream = BTreeMap::new();
    for ancestor in dag::ancestors(spec, step) {
        // A missing one is reported by execute_step, naming every one.
        if let Some(done) = step_record(&*store, run, &ancestor).await?.filter(|d| d.state == RunState::Succeeded) {
            upstream.insert(ancestor, StepOutput { values: done.output.unwrap_or_default() });
        }
    }
    let journal = Arc::new(StoredJournal::new(store.clone()));
    let done = crate::execute_step(spec, run, step, upstream, executor, journal, options).await?;
    // A failure too, so the engine's status can say why.
    store.put_bytes(&output_key(run, step)?, bytes::Bytes::from(serde_json::to_vec(&done)?)).await?;
    Ok(done)
}

/// The stored logs of `run`'s `steps` (only `only`'s when given), each under a `== step`
/// header when there are several; steps that left no log are left out.
pub async fn run_logs(store: &dyn ArtifactStore, run: &str, steps: &[&str], only: Option<&str>) -> Result<String> {
    let mut out = String::new();
    for step in steps {
        if only.is_some_and(|want| want != *step) {
            continue;
        }
        match store.get_bytes(&log_key(run, step)?).await {
            Ok(b) => {
                if only.is_none() {
                    out.push_str(&format!("== {step}\n"));
                }
                out.push_str(&String::from_utf8_lossy(&b));
                out.push('\n');
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
