//! Executes one run: launches steps whose dependencies succeeded (bounded), retries, caching,
//! failure propagation and cancellation. The run task is the only writer of its record.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use galley_core::stages::{RunState, StepSpec, now_ms};
use galley_core::{Error, Result, RetryPolicy};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::store::{CacheEntry, RunRecord, read_json, write_json_atomic};
use super::{CANCEL_POLL, Inner, StepExecutor, StepLog, StepOutput, dag};

/// What a step task reports back to the run loop.
struct StepOutcome {
    result: std::result::Result<StepOutput, String>,
    attempts: u32,
    cached: bool,
    fingerprint: Option<String>,
}

pub(crate) async fn execute(
    inner: &Arc<Inner>,
    mut rec: RunRecord,
    exec: Arc<dyn StepExecutor>,
    cancel: CancellationToken,
) -> RunRecord {
    let store = &inner.store;
    let spec = rec.spec.clone();
    let (pipeline, run_id) = (rec.run.pipeline.clone(), rec.run.id.clone());
    let cancel_file = store.cancel_path(&pipeline, &run_id);
    let persist = |rec: &RunRecord| {
        if let Err(e) = store.save_run(rec) {
            tracing::error!(run = %rec.run.id, error = %e, "could not persist the pipeline run record");
        }
    };

    rec.run.state = RunState::Running;
    persist(&rec);

    let mut outputs: BTreeMap<String, StepOutput> = BTreeMap::new();
    let mut tasks: JoinSet<(String, StepOutcome)> = JoinSet::new();
    let mut task_step: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut poll = tokio::time::interval(CANCEL_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cancelled = false;

    loop {
        if !cancelled && cancel_file.exists() {
            cancel.cancel();
        }
        if cancel.is_cancelled() && !cancelled {
            cancelled = true;
            tasks.abort_all();
        }
        if !cancelled {
            let mut launched = false;
            for step in &spec.steps {
                if tasks.len() >= inner.options.max_parallel {
                    break;
                }
                if state_of(&rec, &step.name) != RunState::Pending
                    || !step
                        .depends_on
                        .iter()
                        .all(|d| state_of(&rec, d) == RunState::Succeeded)
                {
                    continue;
                }
                let upstream: BTreeMap<String, StepOutput> = dag::ancestors(&spec, &step.name)
                    .into_iter()
                    .filter_map(|a| outputs.get(&a).map(|o| (a, o.clone())))
                    .collect();
                let log = StepLog::new(store.log_path(&pipeline, &run_id, &step.name));
                let cache = if step.cache {
                    load_cache(inner, &pipeline, &step.name, &log)
                } else {
                    None
                };
                let handle = tasks.spawn(run_step(
                    exec.clone(),
                    step.clone(),
                    upstream,
                    log,
                    inner.options.retry.clone(),
                    cache,
                ));
                task_step.insert(handle.id(), step.name.clone());
                set_state(&mut rec, &step.name, RunState::Running);
                rec.details.entry(step.name.clone()).or_default().started_ms = Some(now_ms());
                launched = true;
            }
            if launched {
                persist(&rec);
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
                match joined {
                    Ok((_, (name, outcome))) => {
                        apply_outcome(inner, &mut rec, &mut outputs, &name, outcome);
                    }
                    Err(e) => {
                        let name = task_step.get(&e.id()).cloned().unwrap_or_default();
                        if e.is_cancelled() {
                            set_state(&mut rec, &name, RunState::Cancelled);
                        } else {
                            let msg = format!("the step panicked: {}", panic_message(e));
                            fail_step(&spec, &mut rec, &name, msg);
                        }
                        rec.details.entry(name).or_default().ended_ms = Some(now_ms());
                    }
                }
                persist(&rec);
            }
        }
    }

    rec.run.state = if cancelled {
        for step in &mut rec.run.steps {
            if !step.state.is_terminal() {
                step.state = RunState::Cancelled;
            }
        }
        RunState::Cancelled
    } else if rec.run.steps.iter().any(|s| s.state == RunState::Failed) {
        RunState::Failed
    } else {
        RunState::Succeeded
    };
    rec.run.ended_ms = Some(now_ms());
    persist(&rec);
    let _ = std::fs::remove_file(&cancel_file);
    rec
}

fn state_of(rec: &RunRecord, step: &str) -> RunState {
    rec.run
        .steps
        .iter()
        .find(|s| s.name == step)
        .map_or(RunState::Skipped, |s| s.state)
}

fn set_state(rec: &mut RunRecord, step: &str, state: RunState) {
    if let Some(s) = rec.run.steps.iter_mut().find(|s| s.name == step) {
        s.state = state;
    }
}

/// Marks `step` failed and every step downstream of it skipped; independent branches go on.
fn fail_step(
    spec: &galley_core::stages::PipelineSpec,
    rec: &mut RunRecord,
    step: &str,
    error: String,
) {
    if let Some(s) = rec.run.steps.iter_mut().find(|s| s.name == step) {
        s.state = RunState::Failed;
        s.error = Some(error);
    }
    for d in dag::descendants(spec, step) {
        if let Some(s) = rec
            .run
            .steps
            .iter_mut()
            .find(|s| s.name == d && s.state == RunState::Pending)
        {
            s.state = RunState::Skipped;
            s.error = Some(format!("not run: upstream step `{step}` failed"));
        }
    }
}

fn apply_outcome(
    inner: &Arc<Inner>,
    rec: &mut RunRecord,
    outputs: &mut BTreeMap<String, StepOutput>,
    name: &str,
    outcome: StepOutcome,
) {
    let spec = rec.spec.clone();
    if let Some(s) = rec.run.steps.iter_mut().find(|s| s.name == name) {
        s.attempts = outcome.attempts;
        s.cached = outcome.cached;
    }
    let detail = rec.details.entry(name.to_string()).or_default();
    detail.ended_ms = Some(now_ms());
    detail.fingerprint = outcome.fingerprint.clone();
    match outcome.result {
        Ok(output) => {
            if let Some(s) = rec.run.steps.iter_mut().find(|s| s.name == name) {
                s.output = Some(output.values.clone());
            }
            set_state(rec, name, RunState::Succeeded);
            // Only executed outputs refresh the cache; a hit already is the cached entry.
            if let (Some(fingerprint), false) = (outcome.fingerprint, outcome.cached) {
                let entry = CacheEntry {
                    fingerprint,
                    output: output.clone(),
                    run_id: rec.run.id.clone(),
                    ended_ms: now_ms(),
                };
                let path = inner.store.cache_path(&rec.run.pipeline, name);
                if let Err(e) = write_json_atomic(&path, &entry) {
                    tracing::warn!(step = %name, error = %e, "could not record the step's output in the cache");
                }
            }
            outputs.insert(name.to_string(), output);
        }
        Err(error) => fail_step(&spec, rec, name, error),
    }
}

fn load_cache(inner: &Arc<Inner>, pipeline: &str, step: &str, log: &StepLog) -> Option<CacheEntry> {
    match read_json::<CacheEntry>(&inner.store.cache_path(pipeline, step)) {
        Ok(entry) => entry,
        Err(e) => {
            log.line(format!("ignoring the unreadable cache entry: {e}"));
            None
        }
    }
}

async fn run_step(
    exec: Arc<dyn StepExecutor>,
    step: StepSpec,
    upstream: BTreeMap<String, StepOutput>,
    log: StepLog,
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
                    log.line(format!(
                        "computing the fingerprint failed (attempt {n}), retrying: {e}"
                    ))
                },
            )
            .await;
        match fp {
            Ok(fp) => {
                if let Some(hit) = cache.filter(|c| c.fingerprint == fp) {
                    log.line(format!(
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
                log.line(format!("attempt {attempts} of {}", policy.max_attempts));
                exec.run(&name, &upstream, &log)
            },
            |n, e| {
                log.line(format!(
                    "attempt {n} failed with a retryable error, retrying: {e}"
                ))
            },
        )
        .await;
    let result = match result {
        Ok(out) => {
            log.line(format!("succeeded after {attempts} attempt(s)"));
            Ok(out)
        }
        Err(e) => {
            let kind = if e.is_retryable() {
                "retryable error, attempts exhausted"
            } else {
                "permanent error"
            };
            log.line(format!("failed ({kind}): {e}"));
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
