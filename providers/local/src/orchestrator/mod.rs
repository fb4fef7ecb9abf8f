//! The local platform's pipeline orchestrator: Galley's DAG runner (`galley-pipeline`) over
//! files in a directory.
//!
//! Step bodies come from the caller through a [`StepExecutor`] registered per pipeline; the
//! shared runner owns dependency order, bounded concurrency, retries, skipping the dependents
//! of a failed step, cancellation and caching by fingerprint; this module keeps the run
//! history, step logs and cache on disk ([`LocalJournal`]) and tells live runs from ones a
//! crash interrupted. [`Watcher`] turns schedules, new data and drift into runs for
//! `galley watch` (MLOps level 2).
//!
//! History lives in small JSON files under the directory given to [`LocalOrchestrator::open`]
//! (see the layout in `store.rs`), replaced atomically, so `galley status` in one process can
//! read what `galley watch` in another is running.

mod store;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use galley_core::stages::{
    Described, Launch, Orchestrator, PipelineRun, PipelineSpec, Probes, RunState, Trigger, TriggerWatch, now_ms,
};
use galley_core::{Error, Result};
use galley_pipeline::{CacheEntry, RunJournal, dag};
pub use galley_pipeline::RunnerOptions;
use tokio_util::sync::CancellationToken;

use store::{RunRecord, Store, read_json, write_json_atomic};
pub use watch::{
    DataProbe, Decision, DriftProbe, Observation, TickReport, WatchOptions, WatchState, Watcher,
};

/// The step-body contract, shared by every platform that runs steps in Galley's process;
/// re-exported so callers of this module need only one import.
pub use galley_core::stages::{StepExecutor, StepLogger, StepOutput};

/// The [`StepLogger`] handed to a running step: appends timestamped lines to the step's log
/// file of the run (read back by [`Orchestrator::logs`]).
#[derive(Clone)]
pub struct StepLog {
    inner: Arc<StepLogInner>,
}

struct StepLogInner {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl StepLog {
    pub(crate) fn new(path: PathBuf) -> Self {
        StepLog {
            inner: Arc::new(StepLogInner {
                path,
                file: Mutex::new(None),
            }),
        }
    }

    /// Appends a line, prefixed with an RFC 3339 UTC timestamp, to this step's log. A
    /// multi-line message becomes several timestamped lines. Never fails the step: if the log
    /// file cannot be written the line is reported through `tracing` instead.
    pub fn line(&self, message: impl Display) {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let message = message.to_string();
        let mut text = String::new();
        for l in message.lines() {
            text.push_str(&format!("{ts} {l}\n"));
        }
        if text.is_empty() {
            text.push_str(&format!("{ts}\n"));
        }
        let mut guard = self.inner.file.lock().unwrap_or_else(|p| p.into_inner());
        let result = (|| {
            if guard.is_none() {
                if let Some(dir) = self.inner.path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                *guard = Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.inner.path)?,
                );
            }
            guard
                .as_mut()
                .map_or(Ok(()), |f| f.write_all(text.as_bytes()))
        })();
        if let Err(e) = result {
            tracing::warn!(path = %self.inner.path.display(), error = %e, line = %message, "could not write the step log");
        }
    }
}

impl StepLogger for StepLog {
    fn line(&self, message: &str) {
        StepLog::line(self, message);
    }
}

/// How often a run checks for a cancel request written by another process.
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// The in-process DAG runner. Cheap to clone; clones share runs and executors.
#[derive(Clone)]
pub struct LocalOrchestrator {
    inner: Arc<Inner>,
    /// What it declares: local's features, or those of a platform that runs its pipelines so.
    declared: galley_core::Capabilities,
}

pub(crate) struct Inner {
    store: Store,
    options: RunnerOptions,
    executors: RwLock<HashMap<String, Arc<dyn StepExecutor>>>,
    /// Makes the "is a run active?" check and the start of a new run one step in-process.
    start_lock: tokio::sync::Mutex<()>,
}

/// Runs executing in this process, by run id, across every orchestrator instance: lets an
/// instance tell a run another instance is executing from one left behind by a dead task.
static ACTIVE: LazyLock<Mutex<HashMap<String, ActiveRun>>> = LazyLock::new(Default::default);

fn lock_active() -> std::sync::MutexGuard<'static, HashMap<String, ActiveRun>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether some task or process is still executing the run.
fn run_alive(rec: &RunRecord) -> bool {
    if rec.owner_pid == std::process::id() {
        lock_active().contains_key(&rec.run.id)
    } else {
        store::process_alive(rec.owner_pid)
    }
}

struct ActiveRun {
    root: PathBuf,
    pipeline: String,
    cancel: CancellationToken,
    done: tokio::sync::watch::Receiver<Option<PipelineRun>>,
}

impl LocalOrchestrator {
    /// The same object declared as `platform`'s: a platform that keeps this stage the local
    /// way (onprem's shared directory) proves the declaration with its own suite run.
    pub fn declaring(mut self, platform: galley_core::Capabilities) -> Self {
        self.declared = platform;
        self
    }

    /// Opens (creating if needed) the orchestrator rooted at `dir`, with default options.
    pub fn open(dir: PathBuf) -> Result<Self> {
        Self::open_with(dir, RunnerOptions { cancel_poll: CANCEL_POLL, ..RunnerOptions::default() })
    }

    /// Opens the orchestrator; runs left `pending`/`running` by a process that no longer
    /// exists are marked failed ("interrupted") so they don't look alive forever.
    pub fn open_with(dir: PathBuf, options: RunnerOptions) -> Result<Self> {
        if options.max_parallel == 0 {
            return Err(Error::invalid("max_parallel must be at least 1"));
        }
        let store = Store::open(dir)?;
        let orch = LocalOrchestrator {
            inner: Arc::new(Inner {
                store,
                options,
                executors: RwLock::new(HashMap::new()),
                start_lock: tokio::sync::Mutex::new(()),
            }),
            declared: crate::platform::capabilities(),
        };
        orch.reconcile_interrupted()?;
        Ok(orch)
    }

    /// Sets the step bodies of `pipeline` for runs started by this process (the same as
    /// [`Orchestrator::attach_executor`], which never fails here).
    pub fn register_executor(&self, pipeline: &str, exec: Arc<dyn StepExecutor>) {
        self.inner
            .executors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pipeline.to_string(), exec);
    }

    /// Starts a run and waits for it to end (`galley run`).
    pub async fn run_to_completion(
        &self,
        pipeline: &str,
        trigger: Option<Trigger>,
        params: &BTreeMap<String, String>,
    ) -> Result<PipelineRun> {
        let id = self.start(pipeline, trigger, params).await?;
        self.wait(&id).await
    }

    /// Waits until `run` reaches a terminal state and returns it. Works for runs executed by
    /// another process too (by polling the record).
    pub async fn wait(&self, run: &str) -> Result<PipelineRun> {
        let rx = lock_active().get(run).map(|a| a.done.clone());
        if let Some(mut rx) = rx
            && let Ok(done) = rx.wait_for(Option::is_some).await
            && let Some(r) = done.clone()
        {
            return Ok(r);
        }
        loop {
            let rec = self.find(run)?;
            if rec.run.state.is_terminal() || !run_alive(&rec) {
                return Ok(rec.run);
            }
            tokio::time::sleep(CANCEL_POLL).await;
        }
    }

    /// The outputs of the steps of `run` that succeeded (executed or cached).
    pub async fn step_outputs(&self, run: &str) -> Result<BTreeMap<String, StepOutput>> {
        let rec = self.find(run)?;
        Ok(rec
            .run
            .steps
            .into_iter()
            .filter_map(|s| s.output.map(|values| (s.name, StepOutput { values })))
            .collect())
    }

    /// The id of a run of `pipeline` that is pending or running, in this process or in another
    /// live one. Used by [`Watcher`] so a pipeline never runs twice at once.
    pub async fn active_run(&self, pipeline: &str) -> Result<Option<String>> {
        dag::check_name("pipeline", pipeline)?;
        let root = self.inner.store.root();
        if let Some((id, _)) = lock_active()
            .iter()
            .find(|(_, a)| a.pipeline == pipeline && a.root == root)
        {
            return Ok(Some(id.clone()));
        }
        Ok(self
            .inner
            .store
            .list_runs(pipeline)?
            .into_iter()
            .find(|r| !r.run.state.is_terminal() && run_alive(r))
            .map(|r| r.run.id))
    }

    /// Deletes the records and logs of all but the newest `keep` finished runs of `pipeline`
    /// (active runs are never touched); returns how many were removed. The step cache is
    /// separate and unaffected.
    pub async fn prune_runs(&self, pipeline: &str, keep: usize) -> Result<usize> {
        dag::check_name("pipeline", pipeline)?;
        let s = &self.inner.store;
        let finished = s
            .list_runs(pipeline)?
            .into_iter()
            .filter(|r| r.run.state.is_terminal());
        let mut removed = 0;
        for rec in finished.skip(keep) {
            let logs = s.runs_dir(pipeline).join(&rec.run.id);
            match std::fs::remove_dir_all(&logs) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::from(e)
                        .operation("prune_runs")
                        .resource(logs.display().to_string()));
                }
                _ => {}
            }
            let path = s.run_path(pipeline, &rec.run.id);
            std::fs::remove_file(&path).map_err(|e| {
                Error::from(e)
                    .operation("prune_runs")
                    .resource(path.display().to_string())
            })?;
            removed += 1;
        }
        Ok(removed)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    fn find(&self, run: &str) -> Result<RunRecord> {
        dag::check_name("run", run)?;
        self.inner.store.find_run(run)?.ok_or_else(|| {
            Error::not_found(format!(
                "no pipeline run `{run}` in {}; check the id against the pipeline's run history",
                self.inner.store.root().display()
            ))
            .resource(run)
        })
    }

    fn reconcile_interrupted(&self) -> Result<()> {
        for pipeline in self.inner.store.pipeline_names()? {
            for mut rec in self.inner.store.list_runs(&pipeline)? {
                if rec.run.state.is_terminal() || run_alive(&rec) {
                    continue;
                }
                let why = format!(
                    "interrupted: process {} exited before the run finished",
                    rec.owner_pid
                );
                for step in &mut rec.run.steps {
                    match step.state {
                        RunState::Running => {
                            step.state = RunState::Failed;
                            step.error = Some(why.clone());
                        }
                        RunState::Pending => step.state = RunState::Skipped,
                        _ => {}
                    }
                }
                rec.run.state = RunState::Failed;
                rec.run.ended_ms = Some(now_ms());
                self.inner.store.save_run(&rec)?;
            }
        }
        Ok(())
    }
}

/// A start time strictly after every other one handed out by this process, so "newest first"
/// is a total order even for runs started within the same millisecond.
fn next_start_ms() -> i64 {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = now_ms();
    let prev = LAST
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |last| Some(now.max(last + 1)),
        )
        .unwrap_or(now);
    now.max(prev + 1)
}

/// Sortable by start time, unique across processes: `20260101-033000-123-a1b2c3`.
fn new_run_id(started_ms: i64) -> String {
    let started = chrono::DateTime::from_timestamp_millis(started_ms).unwrap_or_default();
    format!(
        "{}-{:06x}",
        started.format("%Y%m%d-%H%M%S-%3f"),
        fastrand::u32(..0x0100_0000)
    )
}

impl Described for LocalOrchestrator {
    fn capabilities(&self) -> galley_core::Capabilities {
        self.declared.clone()
    }
}

#[async_trait]
impl Orchestrator for LocalOrchestrator {
    /// Validates (names, unique steps, known dependencies, no cycle, cron syntax) and stores.
    async fn upsert_pipeline(&self, spec: &PipelineSpec) -> Result<()> {
        dag::validate(spec).map_err(|e| e.operation("upsert_pipeline"))?;
        if let Some(expr) = &spec.schedule {
            watch::parse_schedule(expr).map_err(|e| e.resource(&spec.name))?;
        }
        store::write_json_atomic(&self.inner.store.spec_path(&spec.name), spec)
    }

    async fn describe_pipeline(&self, name: &str) -> Result<Option<PipelineSpec>> {
        dag::check_name("pipeline", name)?;
        self.inner.store.load_spec(name)
    }

    /// Removes the definition, its cache and trigger state; run history and logs are kept.
    /// Refuses while a run is active. Deleting a missing pipeline succeeds.
    async fn delete_pipeline(&self, name: &str) -> Result<()> {
        dag::check_name("pipeline", name)?;
        if let Some(run) = self.active_run(name).await? {
            return Err(Error::conflict(format!(
                "pipeline `{name}` has an active run `{run}`; wait for it to finish or cancel it before deleting"
            ))
            .resource(name));
        }
        let s = &self.inner.store;
        for path in [s.spec_path(name), s.watch_path(name)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::from(e)
                        .operation("delete_pipeline")
                        .resource(path.display().to_string()));
                }
                _ => {}
            }
        }
        let cache = s.pipeline_dir(name).join("cache");
        match std::fs::remove_dir_all(&cache) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::from(e)
                .operation("delete_pipeline")
                .resource(cache.display().to_string())),
            _ => Ok(()),
        }
    }

    async fn start(
        &self,
        pipeline: &str,
        trigger: Option<Trigger>,
        params: &BTreeMap<String, String>,
    ) -> Result<String> {
        dag::check_name("pipeline", pipeline)?;
        let spec = self.inner.store.load_spec(pipeline)?.ok_or_else(|| {
            Error::not_found(format!(
                "pipeline `{pipeline}` does not exist; `galley apply` creates it"
            ))
            .resource(pipeline)
        })?;
        let exec = self
            .inner
            .executors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(pipeline)
            .cloned()
            .ok_or_else(|| {
                Error::invalid(format!(
                    "no step executor is registered for pipeline `{pipeline}` in this process; call register_executor before start"
                ))
                .resource(pipeline)
            })?;
        // One run per pipeline at a time: steps of a retraining pipeline share state (the
        // experiment run, the model being promoted), so overlapping runs would interleave it.
        let _guard = self.inner.start_lock.lock().await;
        if let Some(active) = self.active_run(pipeline).await? {
            return Err(Error::conflict(format!(
                "pipeline `{pipeline}` is already running (run `{active}`); wait for it to finish or cancel it"
            ))
            .resource(pipeline));
        }
        let started_ms = next_start_ms();
        let id = new_run_id(started_ms);
        let rec = RunRecord {
            run: galley_pipeline::new_run(&spec, &id, trigger, params, started_ms),
            spec,
            owner_pid: std::process::id(),
        };
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::watch::channel(None);
        // Registered before the record exists, so no other instance ever sees a pending record
        // of this process that is not active and declares it interrupted.
        lock_active().insert(
            id.clone(),
            ActiveRun {
                root: self.inner.store.root().to_path_buf(),
                pipeline: pipeline.to_string(),
                cancel: cancel.clone(),
                done: rx,
            },
        );
        if let Err(e) = self.inner.store.save_run(&rec) {
            lock_active().remove(&id);
            return Err(e.operation("start"));
        }
        let inner = self.inner.clone();
        let run_id = id.clone();
        tokio::spawn(async move {
            let journal = Arc::new(LocalJournal { store: inner.store.clone(), spec: rec.spec.clone(), owner_pid: rec.owner_pid });
            let cancel_file = inner.store.cancel_path(&rec.run.pipeline, &run_id);
            let run = galley_pipeline::execute(&rec.spec, rec.run, exec, journal, &inner.options, cancel).await;
            let _ = std::fs::remove_file(&cancel_file);
            let _ = tx.send(Some(run));
            lock_active().remove(&run_id);
        });
        Ok(id)
    }

    async fn status(&self, run: &str) -> Result<PipelineRun> {
        Ok(self.find(run)?.run)
    }

    /// Newest first.
    async fn list_runs(&self, pipeline: &str) -> Result<Vec<PipelineRun>> {
        dag::check_name("pipeline", pipeline)?;
        let s = &self.inner.store;
        if !s.pipeline_dir(pipeline).exists() {
            return Err(Error::not_found(format!(
                "pipeline `{pipeline}` does not exist; `galley apply` creates it"
            ))
            .resource(pipeline));
        }
        Ok(s.list_runs(pipeline)?.into_iter().map(|r| r.run).collect())
    }

    /// One step's log, or with `step = None` every step's log in pipeline order, each under a
    /// `==> step <==` header. A step that has not written anything yet has an empty log.
    async fn logs(&self, run: &str, step: Option<&str>) -> Result<String> {
        let rec = self.find(run)?;
        let read = |name: &str| -> Result<String> {
            let path = self
                .inner
                .store
                .log_path(&rec.run.pipeline, &rec.run.id, name);
            match std::fs::read(&path) {
                Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(Error::from(e)
                    .operation("logs")
                    .resource(path.display().to_string())),
            }
        };
        match step {
            Some(name) => {
                if !rec.spec.steps.iter().any(|s| s.name == name) {
                    let names: Vec<&str> = rec.spec.steps.iter().map(|s| s.name.as_str()).collect();
                    return Err(Error::not_found(format!(
                        "run `{run}` of pipeline `{}` has no step `{name}` (steps: {})",
                        rec.run.pipeline,
                        names.join(", ")
                    )));
                }
                read(name)
            }
            None => {
                let mut out = String::new();
                for s in &rec.spec.steps {
                    let text = read(&s.name)?;
                    if !text.is_empty() {
                        out.push_str(&format!("==> {} <==\n{text}", s.name));
                        if !text.ends_with('\n') {
                            out.push('\n');
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// Stops a run: pending steps never start, running ones are aborted at their next await
    /// point (a step that completes first keeps its result), and the run ends `cancelled`.
    /// Waits for that when the run executes in this process; for a run executed by another
    /// live process it leaves a cancel request that process picks up within a second.
    /// Cancelling a cancelled run is a no-op; cancelling a finished one is a conflict.
    async fn cancel(&self, run: &str) -> Result<()> {
        self.cancel_run(run).await
    }

    fn attach_executor(&self, pipeline: &str, executor: Arc<dyn StepExecutor>) -> Result<()> {
        dag::check_name("pipeline", pipeline)?;
        self.register_executor(pipeline, executor);
        Ok(())
    }

    /// The local [`Watcher`]: schedules in UTC, new data and drift by the probes, runs started
    /// through `launch`; its state survives restarts in the pipeline's directory.
    async fn watch_triggers(&self, pipeline: &str, probes: Probes, launch: Launch) -> Result<Box<dyn TriggerWatch>> {
        let watcher = Watcher::new(self.clone(), pipeline, probes, WatchOptions::default()).await?.with_launcher(launch);
        Ok(Box::new(watcher))
    }
}

/// Run records, step logs, the cache and cancel requests as files under the orchestrator's
/// directory (the layout in `store.rs`).
struct LocalJournal {
    store: Store,
    spec: PipelineSpec,
    owner_pid: u32,
}

#[async_trait]
impl RunJournal for LocalJournal {
    async fn save(&self, run: &PipelineRun) -> Result<()> {
        self.store.save_run(&RunRecord { run: run.clone(), spec: self.spec.clone(), owner_pid: self.owner_pid })
    }

    fn step_log(&self, run: &str, step: &str) -> Arc<dyn galley_core::stages::StepLogger> {
        Arc::new(StepLog::new(self.store.log_path(&self.spec.name, run, step)))
    }

    async fn cache_get(&self, pipeline: &str, step: &str) -> Result<Option<CacheEntry>> {
        read_json(&self.store.cache_path(pipeline, step))
    }

    async fn cache_put(&self, pipeline: &str, step: &str, entry: &CacheEntry) -> Result<()> {
        write_json_atomic(&self.store.cache_path(pipeline, step), entry)
    }

    async fn cancel_requested(&self, run: &str) -> bool {
        self.store.cancel_path(&self.spec.name, run).exists()
    }
}

impl LocalOrchestrator {
    async fn cancel_run(&self, run: &str) -> Result<()> {
        dag::check_name("run", run)?;
        let active = lock_active()
            .get(run)
            .map(|a| (a.cancel.clone(), a.done.clone()));
        if let Some((token, mut done)) = active {
            token.cancel();
            let _ = done.wait_for(Option::is_some).await;
            return Ok(());
        }
        let mut rec = self.find(run)?;
        match rec.run.state {
            RunState::Cancelled => Ok(()),
            s if s.is_terminal() => Err(Error::conflict(format!(
                "run `{run}` already ended ({}); there is nothing to cancel",
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            ))
            .resource(run)),
            _ if run_alive(&rec) => {
                let path = self.inner.store.cancel_path(&rec.run.pipeline, run);
                std::fs::write(&path, b"cancel requested\n").map_err(|e| {
                    Error::from(e)
                        .operation("cancel")
                        .resource(path.display().to_string())
                })
            }
            _ => {
                for step in &mut rec.run.steps {
                    if !step.state.is_terminal() {
                        step.state = RunState::Cancelled;
                    }
                }
                rec.run.state = RunState::Cancelled;
                rec.run.ended_ms = Some(now_ms());
                self.inner.store.save_run(&rec)
            }
        }
    }
}
