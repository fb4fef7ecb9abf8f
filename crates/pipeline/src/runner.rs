//! Executes one run: launches steps whose dependencies succeeded (bounded), retries, caching,
//! failure propagation and cancellation. The run task is the only writer of its record; the
//! platform decides where records, logs and the cache live through its [`RunJournal`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use galley_core::stages::{PipelineRun, PipelineSpec, RunState, StepExecutor, StepLogger, StepOutput, StepSpec, TimestampMs, now_ms};
use galley_core::{Error, Result, RetryPolicy};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dag;

/// A step's last successful, executed (not cached) output, keyed by what it read.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CacheEntry {
    pub fingerprint: String,
    pub output: StepOutput,
    pub run_id: String,
    pub ended_ms: TimestampMs,
}

/// Where a platform keeps what the runner writes: the run record (saved after every change,
/// so another process can follow the run), each step's log, the step cache, and cancel
/// requests from other processes.
#[async_trait]
pub trait RunJournal: Send + Sync {
    /// Persists the run as it is now. A failure is logged, never fatal to the run.
    async fn save(&self, run: &PipelineRun) -> Result<()>;
    /// The log of one step of one run.
    fn step_log(&self, run: &str, step: &str) -> Arc<dyn StepLogger>;
    /// Called once a step has ended, so a journal that buffers a log can store it.
    async fn step_done(&self, run: &str, step: &str) {
        let _ = (run, step);
    }
    async fn cache_get(&self, pipeline: &str, step: &str) -> Result<Option<CacheEntry>>;
    async fn cache_put(&self, pipeline: &str, step: &str, entry: &CacheEntry) -> Result<()>;
    /// Whether another process asked this run to stop.
    async fn cancel_requested(&self, run: &str) -> bool {
        let _ = run;
        false
    }
}

/// Tuning of a run.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Steps of one run executing at the same time.
    pub max_parallel: usize,
    /// Backoff between attempts; `max_attempts` is replaced by each step's `retries + 1`.
    pub retry: RetryPolicy,
    /// How often the journal is asked for a cancel request from another process.
    pub cancel_poll: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            max_parallel: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2),
            retry: RetryPolicy::default(),
            cancel_poll: Duration::from_millis(500),
        }
    }
}

/// A new run of `spec`, every step pending.
pub fn new_run(spec: &PipelineSpec, id: &str, trigger: Option<galley_core::stages::Trigger>, params: &BTreeMap<String, String>, started_ms: TimestampMs) -> PipelineRun {
    PipelineRun {
        id: id.to_owned(),
        pipeline: spec.name.clone(),
        state: RunState::Pending,
        trigger,
        started_ms,
        ended_ms: None,
        steps: spec.steps.iter().map(|s| galley_core::stages::StepRun::pending(&s.name)).collect(),
        params: params.clone(),
    }
}

/// What a step task reports back to the run loop.
struct StepOutcome {
    result: std::result::Result<StepOutput, String>,
    attempts: u32,
    cached: bool,
    fingerprint: Option<String>,
}

/// Runs `run` of `spec` to its end and returns it. Steps start as soon as their dependencies
/// succeeded (at most `options.max_parallel` at once); a failed step skips its dependents and
/// independent branches go on; `cancel` (or a cancel request in the journal) stops pending
/// steps and aborts running ones at their next await point.
pub async fn execute(
    spec: &PipelineSpec,
    mut run: PipelineRun,
    exec: Arc<dyn StepExecutor>,
    journal: Arc<dyn RunJournal>,
    options: &RunnerOptions,
    cancel: CancellationToken,
) -> PipelineRun {
    let persist = |run: &PipelineRun| {
        let journal = journal.clone();
        let run = run.clone();
        async move {
            if let Err(e) = journal.save(&run).await {
                tracing::error!(run = %run.id, error = %e, "could not persist the pipeline run record");
            }
        }
    };
    let (pipeline, run_id) = (run.pipeline.clone(), run.id.clone());

    run.state = RunState::Running;
    persist(&run).await;

    let mut outputs: BTreeMap<String, StepOutput> = BTreeMap::new();
    let mut tasks: JoinSet<(String, StepOutcome)> = JoinSet::new();
    let mut task_step: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut poll = tokio::time::interval(options.cancel_poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cancelled = false;

    loop {
        if !cancelled && journal.cancel_requested(&run_id).await {
            cancel.cancel();
        }
        if cancel.is_cancelled() && !cancelled {
            cancelled = true;
            tasks.abort_all();
        }
        if !cancelled {
            let mut launched = false;
            for step in &spec.steps {
                if tasks.len() >= options.max_parallel {
                    break;
                }
                if state_of(&run, &step.name) != RunState::Pending
                    || !step.depends_on.iter().all(|d| state_of(&run, d) == RunState::Succeeded)
                {
                    continue;
                }
                // Every ancestor's output, not only the direct dependencies': a step may read
                // what any step before it in its chain handed on.
                let upstream: BTreeMap<String, StepOutput> = dag::ancestors(spec, &step.name)
                    .into_iter()
                    .filter_map(|a| outputs.get(&a).map(|o| (a, o.clone())))
                    .collect();
                let log = journal.step_log(&run_id, &step.name);
                let cache = if step.cache { load_cache(&*journal, &pipeline, &step.name, &*log).await } else { None };
                let handle = tasks.spawn(run_step(exec.clone(), step.clone(), upstream, log, options.retry.clone(), cache));
                task_step.insert(handle.id(), step.name.clone());
                if let Some(s) = step_mut(&mut run, &step.name) {
                    s.state = RunState::Running;
                    s.started_ms = Some(now_ms());
                }
                launched = true;
            }
            if launched {
                persist(&run).await;
            }
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled(), if !cancelled => {}
            _ = poll.tick() => {}
            joined = tasks.join_next_with_id() => {
                let Some(joined) = joined else { continue };
                let name = match joined {
                    Ok((_, (name, outcome))) => {
                        apply_outcome(spec, &*journal, &mut run, &mut outputs, &name, outcome).await;
                        name
                    }
                    Err(e) => {
                        let name = task_step.get(&e.id()).cloned().unwrap_or_default();
                        if e.is_cancelled() {
                            set_state(&mut run, &name, RunState::Cancelled);
                        } else {
                            let msg = format!("the step panicked: {}", panic_message(e));
                            fail_step(spec, &mut run, &name, msg);
                        }
                        name
                    }
                };
                if let Some(s) = step_mut(&mut run, &name) {
                    s.ended_ms = Some(now_ms());
                }
                journal.step_done(&run_id, &name).await;
                persist(&run).await;
            }
        }
    }

    run.state = if cancelled {
        for step in &mut run.steps {
            if !step.state.is_terminal() {
                step.state = RunState::Cancelled;
            }
        }
        RunState::Cancelled
    } else if run.steps.iter().any(|s| s.state == RunState::Failed) {
        RunState::Failed
    } else {
        RunState::Succeeded
    };
    run.ended_ms = Some(now_ms().max(run.started_ms));
    persist(&run).await;
    run
}

/// Runs one step of `run` of `spec` in this process, as a step container of the platform's
/// engine does (`galley container step`): the step's cache and retries as in [`execute`], its
/// log to `journal`, and a fresh output recorded in the cache. `upstream` holds the outputs of
/// its ancestors, read from wherever the platform keeps them. The platform's engine decides
/// what runs next, so a failure is returned in the [`StepRun`], not propagated.
pub async fn execute_step(
    spec: &PipelineSpec,
    run_id: &str,
    step: &str,
    upstream: BTreeMap<String, StepOutput>,
    exec: Arc<dyn StepExecutor>,
    journal: Arc<dyn RunJournal>,
    options: &RunnerOptions,
) -> Result<galley_core::stages::StepRun> {
    let spec_step = spec
        .steps
        .iter()
        .find(|s| s.name == step)
        .ok_or_else(|| Error::not_found(format!("pipeline `{}` has no step `{step}`", spec.name)))?;
    let missing: Vec<String> = dag::ancestors(spec, step).into_iter().filter(|a| !upstream.contains_key(a)).collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "step `{step}` of run `{run_id}` needs the outputs of {} first; they are not recorded for this run",
            missing.join(", ")
        )));
    }
    let log = journal.step_log(run_id, step);
    let cache = if spec_step.cache { load_cache(&*journal, &spec.name, step, &*log).await } else { None };
    let mut record = galley_core::stages::StepRun::pending(step);
    record.started_ms = Some(now_ms());
    let (_, outcome) = run_step(exec, spec_step.clone(), upstream, log, options.retry.clone(), cache).await;
    let mut run = new_run(spec, run_id, None, &BTreeMap::new(), now_ms());
    let mut outputs = BTreeMap::new();
    apply_outcome(spec, &*journal, &mut run, &mut outputs, step, outcome).await;
    journal.step_done(run_id, step).await;
    let done = run.steps.into_iter().find(|s| s.name == step).unwrap_or(record.clone());
    Ok(galley_core::stages::StepRun { started_ms: record.started_ms, ended_ms: Some(now_ms()), ..done })
}

fn step_mut<'a>(run: &'a mut PipelineRun, step: &str) -> Option<&'a mut galley_core::stages::StepRun> {
    run.steps.iter_mut().find(|s| s.name == step)
}

fn state_of(run: &PipelineRun, step: &str) -> RunState {
    run.steps
        .iter()
        .find(|s| s.name == step)
        .map_or(RunState::Skipped, |s| s.state)
}

fn set_state(run: &mut PipelineRun, step: &str, state: RunState) {
    if let Some(s) = run.steps.iter_mut().find(|s| s.name == step) {
        s.state = state;
    }
}

/// Marks `step` failed and every step downstream of it skipped; independent branches go on.
fn fail_step(spec: &PipelineSpec, run: &mut PipelineRun, step: &str, error: String) {
    if let Some(s) = run.steps.iter_mut().find(|s| s.name == step) {
        s.state = RunState::Failed;
        s.error = Some(error);
    }
    for d in dag::descendants(spec, step) {
        if let Some(s) = run
            .steps
            .iter_mut()
            .find(|s| s.name == d && s.state == RunState::Pending)
        {
            s.state = RunState::Skipped;
            s.error = Some(format!("not run: upstream step `{step}` failed"));
        }
    }
}

async fn apply_outcome(
    spec: &PipelineSpec,
    journal: &dyn RunJournal,
    run: &mut PipelineRun,
    outputs: &mut BTreeMap<String, StepOutput>,
    name: &str,
    outcome: StepOutcome,
) {
    if let Some(s) = step_mut(run, name) {
        s.attempts = outcome.attempts;
        s.cached = outcome.cached;
    }
    match outcome.result {
        Ok(output) => {
            if let Some(s) = step_mut(run, name) {
                s.output = Some(output.values.clone());
            }
            set_state(run, name, RunState::Succeeded);
            // Only executed outputs refresh the cache; a hit already is the cached entry.
            if let (Some(fingerprint), false) = (outcome.fingerprint, outcome.cached) {
                let entry = CacheEntry { fingerprint, output: output.clone(), run_id: run.id.clone(), ended_ms: now_ms() };
                if let Err(e) = journal.cache_put(&run.pipeline, name, &entry).await {
                    tracing::warn!(step = %name, error = %e, "could not record the step's output in the cache");
                }
            }
            outputs.insert(name.to_string(), output);
        }
        Err(error) => fail_step(spec, run, name, error),
    }
}

async fn load_cache(journal: &dyn RunJournal, pipeline: &str, step: &str, log: &dyn StepLogger) -> Option<CacheEntry> {
    match journal.cache_get(pipeline, step).await {
        Ok(entry) => entry,
        Err(e) => {
            log.line(&format!("ignoring the unreadable cache entry: {e}"));
            None
        }
    }
}

async fn run_step(
    exec: Arc<dyn StepExecutor>,
    step: StepSpec,
    upstream: BTreeMap<String, StepOutput>,
    log: Arc<dyn StepLogger>,
    retry: RetryPolicy,
    cache: Option<CacheEntry>,
) -> (String, StepOutcome) {
    let name = step.name.clone();
    let policy = RetryPolicy {
        max_attempts: step.retries.saturating_add(1),
        ..retry
    };

    let mut fingerprint = None;
    if step.cache {
        let fp = policy
            .run(
                || exec.fingerprint(&name, &upstream),
                |n, e| {
                    log.line(&format!(
                        "computing the fingerprint failed (attempt {n}), retrying: {e}"
                    ))
                },
            )
            .await;
        match fp {
            Ok(fp) => {
                if let Some(hit) = cache.filter(|c| c.fingerprint == fp) {
                    log.line(&format!(
                        "cache hit: inputs unchanged since run {}; reusing its output",
                        hit.run_id
                    ));
                    let outcome = StepOutcome {
                        result: Ok(hit.output),
                        attempts: 0,
                        cached: true,
                        fingerprint: Some(fp),
                    };
                    return (name, outcome);
                }
                fingerprint = Some(fp);
            }
            Err(e) => {
                let msg = format!("computing the step's fingerprint failed: {e}");
                log.line(&msg);
                return (
                    name,
                    StepOutcome {
                        result: Err(msg),
                        attempts: 0,
                        cached: false,
                        fingerprint: None,
                    },
                );
            }
        }
    }

    let mut attempts = 0u32;
    let result: Result<StepOutput> = policy
        .run(
            || {
                attempts += 1;
                log.line(&format!("attempt {attempts} of {}", policy.max_attempts));
                exec.run(&name, &upstream, &*log)
            },
            |n, e| {
                log.line(&format!(
                    "attempt {n} failed with a retryable error, retrying: {e}"
                ))
            },
        )
        .await;
    let result = match result {
        Ok(out) => {
            log.line(&format!("succeeded after {attempts} attempt(s)"));
            Ok(out)
        }
        Err(e) => {
            let kind = if e.is_retryable() {
                "retryable error, attempts exhausted"
            } else {
                "permanent error"
            };
            log.line(&format!("failed ({kind}): {e}"));
            Err(describe_error(&e, attempts))
        }
    };
    (
        name,
        StepOutcome {
            result,
            attempts,
            cached: false,
            fingerprint,
        },
    )
}

fn describe_error(e: &Error, attempts: u32) -> String {
    if e.is_retryable() {
        format!("{e} (gave up after {attempts} attempts)")
    } else {
        e.to_string()
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into()),
        Err(e) => e.to_string(),
    }
}
