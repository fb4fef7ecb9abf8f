//! onprem pipelines on Airflow 3. Two ways a run goes, as on aws:
//! - on Airflow (`galley run`, schedules): the pipeline is a DAG file Galley writes into
//!   Airflow's DAGs folder ([`dag`]); `galley run` writes the run bundle into the shared
//!   artifact store and starts a DAG run over the REST API with the bundle's `file://` URI in
//!   its `conf`; each task runs `galley container step NAME` on an Airflow worker, which keeps
//!   the step's record, log and cache in the artifact store ([`galley_pipeline::stored`]).
//!   Status is Airflow's DAG run and task instances merged with those records; cancel marks
//!   the DAG run failed (Airflow stops its running tasks) with a note saying Galley cancelled it.
//!   Workers must see the shared directory at the same path and run the same galley: Celery
//!   or Kubernetes executors work unchanged when they do.
//! - in this process (`galley run --local-steps`, `galley watch`'s launches when so asked):
//!   the shared directory's DAG runner, as before Airflow was configured.
//!
//! `new_data` and `drift` triggers are `galley watch`'s probes (the local watcher), which
//! start a DAG run through the REST API like `galley run` does: Airflow has no view of
//! Galley's monitor, and a sensor polling it would hold a worker slot forever.

pub mod client;
pub mod dag;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use galley_core::stages::{
    ArtifactKey, ArtifactStore, Described, Launch, Orchestrator, PARAM_BUNDLE, PARAM_TRIGGER, PipelineRun, PipelineSpec, Probes, RunState,
    StepExecutor, StepRun, Trigger, TriggerWatch, bundle_key,
};
use galley_core::{Capabilities, Error, ErrorKind, Result};
use galley_local::orchestrator::LocalOrchestrator;
use galley_pipeline::{RunnerOptions, stored};
use serde_json::{Value as Json, json};
use sha2::Digest;

pub use client::{AirflowClient, AirflowCredentials};

/// Where Galley reaches Airflow and what the workers run.
#[derive(Debug, Clone)]
pub struct AirflowConfig {
    /// The api-server, `http(s)://host:port`.
    pub api_url: String,
    /// The DAGs folder Airflow's dag-processor reads.
    pub dags_folder: PathBuf,
    /// The galley the workers run (an absolute path on them).
    pub galley: PathBuf,
    /// How long a new or changed DAG file may take to show up in Airflow's API.
    pub parse_timeout: Duration,
    /// The Prometheus whose drift alert retrains a pipeline retrained on drift (the drift-check
    /// DAG, [`dag::drift_dag_id`]); without one, drift retrains come from `galley watch`.
    pub prometheus_url: Option<String>,
}

/// The note on a DAG run Galley cancelled: Airflow has no cancelled state, only failed.
const CANCEL_NOTE: &str = "cancelled by galley";

pub struct AirflowOrchestrator {
    client: AirflowClient,
    config: AirflowConfig,
    /// The shared artifact store: run bundles, step records, logs, the cache.
    store: Arc<dyn ArtifactStore>,
    /// The store's `file://` URI of a key, which the workers open.
    uri_of: Box<dyn Fn(&ArtifactKey) -> String + Send + Sync>,
    /// In-process runs and `galley watch`.
    local: LocalOrchestrator,
    /// Pipelines whose runs go in this process (an executor is attached).
    in_process: Mutex<BTreeSet<String>>,
    runner: RunnerOptions,
    declared: Capabilities,
}

impl std::fmt::Debug for AirflowOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AirflowOrchestrator({})", self.client.url())
    }
}

impl AirflowOrchestrator {
    pub fn new(
        config: AirflowConfig,
        credentials: AirflowCredentials,
        store: Arc<dyn ArtifactStore>,
        uri_of: Box<dyn Fn(&ArtifactKey) -> String + Send + Sync>,
        local: LocalOrchestrator,
        declared: Capabilities,
    ) -> Result<Self> {
        Ok(AirflowOrchestrator {
            client: AirflowClient::new(&config.api_url, credentials)?,
            config,
            store,
            uri_of,
            local,
            in_process: Default::default(),
            runner: RunnerOptions::default(),
            declared,
        })
    }

    pub fn client(&self) -> &AirflowClient {
        &self.client
    }

    fn dag_file(&self, pipeline: &str) -> PathBuf {
        self.config.dags_folder.join(dag::file_name(pipeline))
    }

    fn runs_here(&self, pipeline: &str) -> bool {
        self.in_process.lock().unwrap_or_else(|p| p.into_inner()).contains(pipeline)
    }

    /// What Airflow parsed for `dag_id`: `None` when it has no such DAG, or one Galley did not write.
    async fn parsed_spec(&self, dag_id: &str) -> Result<Option<PipelineSpec>> {
        let Some(details) = self.client.get(&format!("dags/{dag_id}/details")).await? else { return Ok(None) };
        Ok(details.get("doc_md").and_then(Json::as_str).and_then(dag::spec_of))
    }

    /// Airflow's import error for the DAG file, when the dag-processor could not load it.
    async fn import_error(&self, file: &str) -> Option<String> {
        let errors = self.client.get("importErrors?limit=100").await.ok().flatten()?;
        errors["import_errors"]
            .as_array()?
            .iter()
            .find(|e| e["filename"].as_str().is_some_and(|f| f.ends_with(file)))
            .and_then(|e| e["stack_trace"].as_str().map(str::to_owned))
    }

    /// Waits until Airflow's API shows `spec` for its DAG: the dag-processor picks up a new
    /// file at its `refresh_interval` and a changed one at its `min_file_process_interval`.
    async fn await_parsed(&self, spec: &PipelineSpec) -> Result<()> {
        let file = dag::file_name(&spec.name);
        let deadline = tokio::time::Instant::now() + self.config.parse_timeout;
        loop {
            if self.parsed_spec(&spec.name).await?.as_ref() == Some(spec) {
                return Ok(());
            }
            if let Some(trace) = self.import_error(&file).await {
                return Err(Error::invalid(format!("Airflow could not load the DAG file {}: {trace}", self.dag_file(&spec.name).display())));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "Airflow at {} has not loaded {} after {}s: is its dag-processor running and reading {}? \
                         (it looks for new files every `[dag_processor] refresh_interval` seconds)",
                        self.client.url(),
                        file,
                        self.config.parse_timeout.as_secs(),
                        self.config.dags_folder.display()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Whether `spec` gets a drift-check DAG on this Airflow.
    fn drift_checked(&self, spec: &PipelineSpec) -> bool {
        dag::drift_watch(spec, self.config.prometheus_url.as_deref()).is_some()
    }

    /// What Airflow runs for `spec`'s triggers, read back: the schedule is the DAG's (in the
    /// spec its `doc_md` carries), the drift check is listed only while Airflow has its DAG.
    pub async fn triggers_on_airflow(&self, spec: &PipelineSpec) -> Result<Vec<String>> {
        let drift = self.client.get(&format!("dags/{}", dag::drift_dag_id(&spec.name))).await?;
        Ok(dag::triggers(spec, self.config.prometheus_url.as_deref().filter(|_| is_active(drift.as_ref()))))
    }

    /// Deletes `dag_id` (with its runs' history) once its file no longer defines it: Airflow
    /// 3.3's dag-processor exits with a `StaleDataError` when the API deletes a DAG's rows while
    /// it is still re-parsing the file that defined it, so this first waits until it has seen
    /// the DAG go (`is_stale`, or unknown).
    async fn remove_dag(&self, dag_id: &str) -> Result<()> {
        self.await_dag(dag_id, false).await?;
        self.client.delete(&format!("dags/{dag_id}")).await
    }

    /// Waits until Airflow lists `dag_id` as active (`active`: a second DAG of a file just
    /// parsed) or no longer does (its file was removed or rewritten without it).
    async fn await_dag(&self, dag_id: &str, active: bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.parse_timeout;
        loop {
            if is_active(self.client.get(&format!("dags/{dag_id}")).await?.as_ref()) == active {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let (url, secs) = (self.client.url(), self.config.parse_timeout.as_secs());
                let msg = if active {
                    format!("Airflow at {url} has not loaded the DAG `{dag_id}` after {secs}s")
                } else {
                    format!(
                        "Airflow at {url} still lists the DAG `{dag_id}` as active {secs}s after its file changed in {}: is its dag-processor running?",
                        self.config.dags_folder.display()
                    )
                };
                return Err(Error::new(ErrorKind::Timeout, msg));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A DAG run's tasks as Galley's steps, in the pipeline's order, with what each step's
    /// process recorded (output, cache hit, Galley's attempts, the error).
    async fn airflow_status(&self, dag_id: &str, dag_run_id: &str) -> Result<PipelineRun> {
        let run = format!("{dag_id}/{dag_run_id}");
        let Some(r) = self.client.get(&format!("dags/{dag_id}/dagRuns/{dag_run_id}")).await? else {
            return Err(Error::not_found(format!("pipeline run `{run}` does not exist in Airflow at {}", self.client.url())));
        };
        let tasks = self.client.get(&format!("dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances?limit=100")).await?.unwrap_or(Json::Null);
        let by_task: BTreeMap<&str, &Json> = tasks["task_instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["task_id"].as_str().map(|id| (id, t)))
            .collect();
        let order: Vec<String> = match self.parsed_spec(dag_id).await? {
            Some(spec) => spec.steps.into_iter().map(|s| s.name).collect(),
            None => by_task.keys().map(|k| (*k).to_owned()).collect(),
        };
        let id = storage_id(&run);
        let mut steps = Vec::new();
        for name in order {
            let task = by_task.get(name.as_str());
            let recorded = stored::step_record(&*self.store, &id, &name).await?;
            let state = task.map_or(RunState::Pending, |t| task_state(t["state"].as_str()));
            steps.push(StepRun {
                state,
                attempts: recorded.as_ref().map_or_else(|| task.and_then(|t| t["try_number"].as_u64()).unwrap_or(0) as u32, |r| r.attempts),
                cached: recorded.as_ref().is_some_and(|r| r.cached),
                error: recorded.as_ref().and_then(|r| r.error.clone()).or_else(|| {
                    (state == RunState::Failed).then(|| format!("task `{name}` failed on Airflow; its log: `galley logs {run} --step {name}`"))
                }),
                output: recorded.as_ref().and_then(|r| r.output.clone()),
                started_ms: task.and_then(|t| ms(&t["start_date"])),
                ended_ms: task.and_then(|t| ms(&t["end_date"])),
                name,
            });
        }
        let conf = &r["conf"];
        Ok(PipelineRun {
            steps,
            params: conf.as_object().into_iter().flatten().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect(),
            ..dag_run(dag_id, &r)
        })
    }
}

/// Galley's id of a DAG run is `DAG_ID/DAG_RUN_ID`; the run's records in the artifact store
/// are under a key-safe form of it (Airflow's own run ids hold `:` and `+`).
pub fn split_run(run: &str) -> Option<(&str, &str)> {
    run.split_once('/').filter(|(d, r)| !d.is_empty() && !r.is_empty())
}

pub fn storage_id(run: &str) -> String {
    let safe: String = run.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let hash = hex::encode(sha2::Sha256::digest(run.as_bytes()));
    format!("{safe}-{}", &hash[..8])
}

/// Through a sibling file and a rename, so the dag-processor never parses half a file.
fn write_atomically(path: &std::path::Path, body: &str) -> Result<()> {
    let tmp = path.with_extension("py.tmp");
    std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| Error::from(e).resource(path.display().to_string()))
}

/// A DAG run as Galley's run, without its steps and parameters: Airflow has no cancelled
/// state, so a failed run with Galley's cancel note is `Cancelled`; a run Airflow's timetable
/// started is the schedule's.
fn dag_run(dag_id: &str, r: &Json) -> PipelineRun {
    let state = match (r["state"].as_str(), r["note"].as_str()) {
        (Some("failed"), Some(note)) if note.starts_with(CANCEL_NOTE) => RunState::Cancelled,
        (s, _) => run_state(s),
    };
    let trigger = r["conf"][PARAM_TRIGGER]
        .as_str()
        .and_then(Trigger::parse)
        .or_else(|| (r["run_type"].as_str() == Some("scheduled")).then_some(Trigger::Schedule));
    PipelineRun {
        id: format!("{dag_id}/{}", r["dag_run_id"].as_str().unwrap_or_default()),
        pipeline: dag_id.to_owned(),
        state,
        trigger,
        started_ms: ms(&r["start_date"]).or_else(|| ms(&r["queued_at"])).unwrap_or_default(),
        ended_ms: ms(&r["end_date"]),
        steps: Vec::new(),
        params: BTreeMap::new(),
    }
}

fn ms(v: &Json) -> Option<i64> {
    v.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()).map(|t| t.timestamp_millis())
}

fn run_state(s: Option<&str>) -> RunState {
    match s {
        Some("success") => RunState::Succeeded,
        Some("failed") => RunState::Failed,
        Some("running") => RunState::Running,
        _ => RunState::Pending,
    }
}

/// A task instance's state (Airflow's `TaskInstanceState`, `null` before it is scheduled).
fn task_state(s: Option<&str>) -> RunState {
    match s {
        Some("success") => RunState::Succeeded,
        Some("failed") => RunState::Failed,
        Some("upstream_failed" | "skipped" | "removed") => RunState::Skipped,
        Some("running" | "up_for_retry" | "up_for_reschedule" | "restarting" | "deferred") => RunState::Running,
        _ => RunState::Pending,
    }
}

impl Described for AirflowOrchestrator {
    fn capabilities(&self) -> Capabilities {
        self.declared.clone()
    }
}

#[async_trait]
impl Orchestrator for AirflowOrchestrator {
    /// The shared directory's record (for in-process runs) and the DAG file, then waits until
    /// Airflow shows the DAG as written and unpaused. An unchanged DAG is not rewritten.
    async fn upsert_pipeline(&self, spec: &PipelineSpec) -> Result<()> {
        self.local.upsert_pipeline(spec).await?;
        // Signs in before any file is written: wrong credentials or a stopped server leave
        // nothing behind for Airflow to pick up.
        self.parsed_spec(&spec.name).await?;
        let key = ArtifactKey::new(bundle_key(&spec.name))?;
        let body = dag::render(spec, &self.config.galley.display().to_string(), &(self.uri_of)(&key), self.config.prometheus_url.as_deref());
        let path = self.dag_file(&spec.name);
        let previous = std::fs::read_to_string(&path).ok();
        if previous.as_deref() != Some(body.as_str()) {
            std::fs::create_dir_all(&self.config.dags_folder).map_err(|e| Error::from(e).resource(self.config.dags_folder.display().to_string()))?;
            write_atomically(&path, &body)?;
        }
        if let Err(e) = self.await_parsed(spec).await {
            // Airflow did not take it: put back what it had, so no DAG exists that state does not record.
            let _ = match &previous {
                Some(old) => write_atomically(&path, old),
                None => std::fs::remove_file(&path).map_err(Error::from),
            };
            return Err(e);
        }
        self.client.patch(&format!("dags/{}", spec.name), &json!({ "is_paused": false })).await?;
        let drift = dag::drift_dag_id(&spec.name);
        if self.drift_checked(spec) {
            self.await_dag(&drift, true).await?;
            self.client.patch(&format!("dags/{drift}"), &json!({ "is_paused": false })).await?;
        } else if self.client.get(&format!("dags/{drift}")).await?.is_some() {
            // The pipeline is no longer retrained on drift: its drift check goes.
            self.remove_dag(&drift).await?;
        }
        Ok(())
    }

    async fn describe_pipeline(&self, name: &str) -> Result<Option<PipelineSpec>> {
        self.parsed_spec(name).await
    }

    /// Removes the DAG file, then Airflow's record of the DAG (with its runs' history). The
    /// step records and logs in the artifact store stay with the store.
    async fn delete_pipeline(&self, name: &str) -> Result<()> {
        let path = self.dag_file(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::from(e).resource(path.display().to_string())),
        }
        self.remove_dag(name).await?;
        self.remove_dag(&dag::drift_dag_id(name)).await?;
        self.client.delete(&format!("variables/{}", dag::drift_variable(name))).await?;
        self.local.delete_pipeline(name).await
    }

    async fn start(&self, pipeline: &str, trigger: Option<Trigger>, params: &BTreeMap<String, String>) -> Result<String> {
        if self.runs_here(pipeline) {
            return self.local.start(pipeline, trigger, params).await;
        }
        let mut conf = serde_json::Map::new();
        for (k, v) in params {
            let v = match k.as_str() {
                // `galley run` hands over the bundle's key; the workers open the file.
                PARAM_BUNDLE => (self.uri_of)(&ArtifactKey::new(v.clone())?),
                _ => v.clone(),
            };
            conf.insert(k.clone(), json!(v));
        }
        if let Some(t) = trigger {
            conf.insert(PARAM_TRIGGER.into(), json!(t.as_str()));
        }
        let dag_run_id = format!("galley-{}", uuid::Uuid::new_v4().simple());
        let body = json!({ "dag_run_id": dag_run_id, "logical_date": null, "conf": conf });
        self.client.post(&format!("dags/{pipeline}/dagRuns"), &body).await?;
        Ok(format!("{pipeline}/{dag_run_id}"))
    }

    async fn status(&self, run: &str) -> Result<PipelineRun> {
        match split_run(run) {
            Some((dag_id, dag_run_id)) => self.airflow_status(dag_id, dag_run_id).await,
            None => self.local.status(run).await,
        }
    }

    /// Airflow's DAG runs of the pipeline (newest last, without their steps: `status` has
    /// them) and the in-process runs.
    async fn list_runs(&self, pipeline: &str) -> Result<Vec<PipelineRun>> {
        let mut runs = self.local.list_runs(pipeline).await?;
        if let Some(list) = self.client.get(&format!("dags/{pipeline}/dagRuns?limit=100&order_by=-run_after")).await? {
            for r in list["dag_runs"].as_array().into_iter().flatten() {
                if r["dag_run_id"].is_string() {
                    runs.push(dag_run(pipeline, r));
                }
            }
        }
        runs.sort_by_key(|r| r.started_ms);
        Ok(runs)
    }

    /// The logs each step's process kept in the artifact store (Galley's lines, not Airflow's
    /// task-runner preamble, which Airflow's UI shows).
    async fn logs(&self, run: &str, step: Option<&str>) -> Result<String> {
        if split_run(run).is_none() {
            return self.local.logs(run, step).await;
        }
        let record = self.status(run).await?;
        let steps: Vec<&str> = record.steps.iter().map(|s| s.name.as_str()).collect();
        stored::run_logs(&*self.store, &storage_id(run), &steps, step).await
    }

    async fn cancel(&self, run: &str) -> Result<()> {
        let Some((dag_id, dag_run_id)) = split_run(run) else { return self.local.cancel(run).await };
        let current = self.airflow_status(dag_id, dag_run_id).await?;
        if current.state.is_terminal() {
            return Ok(());
        }
        let path = format!("dags/{dag_id}/dagRuns/{dag_run_id}");
        self.client.patch(&format!("{path}?update_mask=note"), &json!({ "note": CANCEL_NOTE })).await?;
        self.client.patch(&format!("{path}?update_mask=state"), &json!({ "state": "failed" })).await?;
        Ok(())
    }

    fn attach_executor(&self, pipeline: &str, executor: Arc<dyn StepExecutor>) -> Result<()> {
        self.local.attach_executor(pipeline, executor)?;
        self.in_process.lock().unwrap_or_else(|p| p.into_inner()).insert(pipeline.to_owned());
        Ok(())
    }

    async fn watch_triggers(&self, pipeline: &str, probes: Probes, launch: Launch) -> Result<Box<dyn TriggerWatch>> {
        self.local.watch_triggers(pipeline, probes, launch).await
    }

    /// The body of an Airflow task: the step here, its upstream outputs and its own record in
    /// the artifact store under the DAG run's storage id.
    async fn run_step_here(&self, spec: &PipelineSpec, run: &str, step: &str, executor: Arc<dyn StepExecutor>) -> Result<StepRun> {
        if split_run(run).is_none() {
            return Err(Error::invalid(format!("`{run}` is not an Airflow DAG run (`DAG_ID/DAG_RUN_ID`)")));
        }
        stored::run_stored_step(self.store.clone(), spec, &storage_id(run), step, executor, &self.runner).await
    }
}

/// Whether Airflow's record of a DAG (`GET /dags/{id}`) says a file defines it now (Airflow 3
/// always reports `is_stale`; without it, the DAG counts as gone).
fn is_active(dag: Option<&Json>) -> bool {
    dag.is_some_and(|d| d["is_stale"].as_bool() == Some(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_ids_are_key_safe_and_distinct() {
        let a = storage_id("churn/scheduled__2026-12-07T03:00:00+00:00");
        let b = storage_id("churn/scheduled__2026-12-07T03-00-00-00-00");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{a}");
        assert_ne!(a, b);
        assert_eq!(split_run("churn/galley-1"), Some(("churn", "galley-1")));
        assert_eq!(split_run("20261207-abc"), None);
    }
}
