//! The platform-neutral part of the [`Orchestrator`] contract: pipeline definitions round-trip,
//! a started run returns at once and reaches a terminal state that respects the DAG, and runs
//! are listed. What a step *does* is platform-specific, so a run may end Succeeded or Failed;
//! the checks are about the states being consistent, not about which one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use galley_core::capability::Feature;
use galley_core::stages::{
    Orchestrator, PipelineRun, PipelineSpec, RunState, StepExecutor, StepLogger, StepOutput, StepSpec, Trigger,
};
use galley_core::{Error, ErrorKind};

use crate::runner::{Case, Report, Skip, TestResult, run_cases};
use crate::support::{expect_kind, unique, wait_for};
use crate::{case, ensure_eq};

type Orch = Arc<dyn Orchestrator>;

/// Long enough for a managed pipeline service to schedule two trivial steps.
const RUN_LIMIT: Duration = Duration::from_secs(600);

pub fn cases() -> Vec<Case<Orch>> {
    vec![
        case!(upsert_then_describe_roundtrips),
        case!(upsert_updates_the_definition),
        case!(schedule_roundtrips, needs = [Feature::Schedules]),
        case!(delete_pipeline_removes_it),
        case!(describe_of_unknown_pipeline_is_none),
        case!(upsert_refuses_unknown_dependency),
        case!(upsert_refuses_a_cycle),
        case!(start_reaches_a_consistent_terminal_state),
        case!(steps_run_in_dependency_order_with_upstream_outputs),
        case!(a_failed_step_skips_its_dependents),
        case!(step_logs_are_kept),
        case!(retryable_failures_are_retried, needs = [Feature::StepRetries]),
        case!(unchanged_steps_are_served_from_cache, needs = [Feature::StepCaching]),
        case!(cancel_stops_a_running_run),
        case!(list_runs_shows_every_run),
        case!(start_of_unknown_pipeline_is_not_found),
        case!(status_of_unknown_run_is_not_found),
    ]
}

pub async fn run_orchestrator(orch: Orch) -> Report {
    let caps = orch.capabilities();
    run_cases("orchestrator", orch, &caps, cases()).await
}

fn pipeline(name: &str) -> PipelineSpec {
    PipelineSpec {
        name: name.to_owned(),
        steps: vec![StepSpec::new("extract", &[]), StepSpec::new("validate", &["extract"]), StepSpec::new("train", &["validate"])],
        schedule: None,
        triggers: vec![],
        monitor: None,
    }
}

/// In-process step bodies that do what a case scripts: fail some steps (for good, or only on
/// their first attempt), log a marker line, and record what each step saw from upstream.
#[derive(Default)]
struct ScriptedExecutor {
    fail: BTreeSet<String>,
    fail_first_attempt: BTreeSet<String>,
    /// Steps that wait until `release` is called (or a generous cap passes).
    hold: BTreeSet<String>,
    released: std::sync::atomic::AtomicBool,
    seen: Mutex<Vec<(String, BTreeSet<String>)>>,
}

impl ScriptedExecutor {
    fn failing(steps: &[&str]) -> Self {
        ScriptedExecutor { fail: steps.iter().map(|s| (*s).to_owned()).collect(), ..Default::default() }
    }
    fn flaky(steps: &[&str]) -> Self {
        ScriptedExecutor { fail_first_attempt: steps.iter().map(|s| (*s).to_owned()).collect(), ..Default::default() }
    }
    fn holding(steps: &[&str]) -> Self {
        ScriptedExecutor { hold: steps.iter().map(|s| (*s).to_owned()).collect(), ..Default::default() }
    }
    fn release(&self) {
        self.released.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    /// (step, upstream output names) in the order the steps ran.
    fn seen(&self) -> Vec<(String, BTreeSet<String>)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn marker(step: &str) -> String {
        format!("galley-testkit step {step} ran")
    }
}

#[async_trait]
impl StepExecutor for ScriptedExecutor {
    /// Depends only on the step and its inputs, so an unchanged step can be served from cache.
    async fn fingerprint(&self, step: &str, upstream: &BTreeMap<String, StepOutput>) -> galley_core::Result<String> {
        Ok(format!("{step}:{}", serde_json::to_string(upstream)?))
    }
    async fn run(
        &self,
        step: &str,
        upstream: &BTreeMap<String, StepOutput>,
        log: &dyn StepLogger,
    ) -> galley_core::Result<StepOutput> {
        let attempt = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.push((step.to_owned(), upstream.keys().cloned().collect()));
            seen.iter().filter(|(s, _)| s == step).count()
        };
        log.line(&Self::marker(step));
        if self.hold.contains(step) {
            // Bounded, so a platform that ignores cancellation cannot hang the suite.
            for _ in 0..1200 {
                if self.released.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if self.fail.contains(step) {
            return Err(Error::invalid(format!("step `{step}` failed as the test scripted")));
        }
        if attempt == 1 && self.fail_first_attempt.contains(step) {
            return Err(Error::new(ErrorKind::Unavailable, format!("step `{step}`: a scripted transient failure")));
        }
        Ok(StepOutput { values: serde_json::json!({ "step": step }) })
    }
}

/// Upserts a fresh pipeline, attaches `exec` where the platform runs in-process steps, runs
/// `body` (told whether it attached), then deletes the pipeline whatever the outcome.
async fn with_pipeline_exec<F: Future<Output = TestResult>>(
    o: Orch,
    spec: PipelineSpec,
    exec: Arc<ScriptedExecutor>,
    body: impl FnOnce(Orch, PipelineSpec, bool) -> F,
) -> TestResult {
    o.upsert_pipeline(&spec).await?;
    let out = async {
        let attached = match o.attach_executor(&spec.name, exec) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::Unsupported => false,
            Err(e) => anyhow::bail!("attach_executor failed: {e}"),
        };
        body(o.clone(), spec.clone(), attached).await
    }
    .await;
    let _ = o.delete_pipeline(&spec.name).await;
    out
}

async fn with_pipeline<F: Future<Output = TestResult>>(o: Orch, body: impl FnOnce(Orch, PipelineSpec) -> F) -> TestResult {
    let spec = pipeline(&unique("gtk-pipe-"));
    with_pipeline_exec(o, spec, Arc::new(ScriptedExecutor::default()), |o, spec, _| body(o, spec)).await
}

fn in_process_only() -> anyhow::Error {
    Skip("the platform runs no in-process steps (attach_executor is Unsupported)".into()).into()
}

/// Polls `status` until the run is terminal.
async fn finish(o: &Orch, run: &str) -> anyhow::Result<PipelineRun> {
    wait_for(&format!("run {run} reaching a terminal state"), RUN_LIMIT, || async {
        let r = o.status(run).await?;
        Ok(r.state.is_terminal().then_some(r))
    })
    .await
}

/// The DAG invariants every terminal run keeps, whatever its steps did.
fn check_consistent(run: &PipelineRun, spec: &PipelineSpec) -> TestResult {
    anyhow::ensure!(run.state.is_terminal(), "run {} is {:?}, not terminal", run.id, run.state);
    match run.ended_ms {
        Some(end) => anyhow::ensure!(end >= run.started_ms, "run ended at {end}, before it started at {}", run.started_ms),
        None => anyhow::bail!("terminal run {} has no ended_ms", run.id),
    }
    let mut names: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    let mut want: Vec<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
    want.sort();
    ensure_eq!(names, want, "steps reported by the run");
    let state_of = |n: &str| run.steps.iter().find(|s| s.name == n).map(|s| s.state);
    for s in &run.steps {
        anyhow::ensure!(s.state.is_terminal(), "step `{}` is {:?} in a terminal run", s.name, s.state);
        let spec_step = spec.steps.iter().find(|x| x.name == s.name).expect("names checked above");
        for dep in &spec_step.depends_on {
            if state_of(dep) != Some(RunState::Succeeded) {
                anyhow::ensure!(
                    matches!(s.state, RunState::Skipped | RunState::Cancelled),
                    "step `{}` is {:?} although its dependency `{dep}` is {:?}; it must not run",
                    s.name,
                    s.state,
                    state_of(dep)
                );
            }
        }
        if s.state == RunState::Succeeded {
            anyhow::ensure!(s.attempts >= 1 || s.cached, "step `{}` succeeded with 0 attempts and no cache hit", s.name);
        }
    }
    if run.state == RunState::Succeeded {
        anyhow::ensure!(
            run.steps.iter().all(|s| s.state == RunState::Succeeded),
            "the run Succeeded but its steps are {:?}",
            run.steps.iter().map(|s| (&s.name, s.state)).collect::<Vec<_>>()
        );
    }
    if run.steps.iter().any(|s| s.state == RunState::Failed) {
        anyhow::ensure!(run.state != RunState::Succeeded, "a step Failed but the run Succeeded");
    }
    Ok(())
}

pub async fn upsert_then_describe_roundtrips(o: Orch) -> TestResult {
    with_pipeline(o, |o, spec| async move {
        ensure_eq!(o.describe_pipeline(&spec.name).await?, Some(spec.clone()), "describe after upsert");
        o.upsert_pipeline(&spec).await.map_err(|e| anyhow::anyhow!("upserting the same spec again: {e}"))?;
        ensure_eq!(o.describe_pipeline(&spec.name).await?, Some(spec), "describe after a repeated upsert");
        Ok(())
    })
    .await
}

pub async fn upsert_updates_the_definition(o: Orch) -> TestResult {
    with_pipeline(o, |o, spec| async move {
        let mut changed = spec.clone();
        changed.steps.push(StepSpec::new("evaluate", &["train"]));
        changed.steps[2].retries = 2;
        o.upsert_pipeline(&changed).await?;
        ensure_eq!(o.describe_pipeline(&spec.name).await?, Some(changed), "describe after an update");
        Ok(())
    })
    .await
}

pub async fn schedule_roundtrips(o: Orch) -> TestResult {
    with_pipeline(o, |o, spec| async move {
        let scheduled = PipelineSpec {
            schedule: Some("0 3 * * 1".into()),
            triggers: vec![Trigger::Schedule],
            ..spec.clone()
        };
        o.upsert_pipeline(&scheduled).await?;
        ensure_eq!(o.describe_pipeline(&spec.name).await?, Some(scheduled), "describe of a scheduled pipeline");
        Ok(())
    })
    .await
}

pub async fn delete_pipeline_removes_it(o: Orch) -> TestResult {
    let spec = pipeline(&unique("gtk-pipe-"));
    o.upsert_pipeline(&spec).await?;
    o.delete_pipeline(&spec.name).await?;
    ensure_eq!(o.describe_pipeline(&spec.name).await?, None, "describe after delete");
    Ok(())
}

pub async fn describe_of_unknown_pipeline_is_none(o: Orch) -> TestResult {
    ensure_eq!(o.describe_pipeline(&unique("gtk-pipe-")).await?, None, "describe of a pipeline never created");
    Ok(())
}

pub async fn upsert_refuses_unknown_dependency(o: Orch) -> TestResult {
    let mut spec = pipeline(&unique("gtk-pipe-"));
    spec.steps.push(StepSpec::new("deploy", &["regsiter"]));
    let out = expect_kind(o.upsert_pipeline(&spec).await, ErrorKind::InvalidInput, "a step depending on an unknown step");
    let _ = o.delete_pipeline(&spec.name).await;
    out?;
    ensure_eq!(o.describe_pipeline(&spec.name).await?, None, "a refused pipeline must not be stored");
    Ok(())
}

pub async fn upsert_refuses_a_cycle(o: Orch) -> TestResult {
    let mut spec = pipeline(&unique("gtk-pipe-"));
    spec.steps[0].depends_on.push("train".into());
    let out = expect_kind(o.upsert_pipeline(&spec).await, ErrorKind::InvalidInput, "extract → validate → train → extract");
    let _ = o.delete_pipeline(&spec.name).await;
    out
}

pub async fn start_reaches_a_consistent_terminal_state(o: Orch) -> TestResult {
    with_pipeline(o, |o, spec| async move {
        let params = BTreeMap::from([("data_version".to_owned(), "2026-01".to_owned())]);
        let id = o.start(&spec.name, Some(Trigger::NewData), &params).await?;
        let first = o.status(&id).await?;
        ensure_eq!(first.id, id, "status().id");
        ensure_eq!(first.pipeline, spec.name, "status().pipeline");
        let run = finish(&o, &id).await?;
        ensure_eq!(run.trigger, Some(Trigger::NewData), "the trigger the run was started with");
        ensure_eq!(run.params, params, "the params the run was started with");
        check_consistent(&run, &spec)?;
        // The record of a finished run stays put.
        let again = o.status(&id).await?;
        ensure_eq!(again.state, run.state, "state of a finished run read again");
        Ok(())
    })
    .await
}

pub async fn list_runs_shows_every_run(o: Orch) -> TestResult {
    with_pipeline(o, |o, spec| async move {
        // One after the other: a platform may refuse overlapping runs of one pipeline.
        let a = o.start(&spec.name, None, &BTreeMap::new()).await?;
        check_consistent(&finish(&o, &a).await?, &spec)?;
        let b = o.start(&spec.name, None, &BTreeMap::new()).await?;
        check_consistent(&finish(&o, &b).await?, &spec)?;
        anyhow::ensure!(a != b, "two starts returned the same run id {a}");
        let runs = o.list_runs(&spec.name).await?;
        for id in [&a, &b] {
            anyhow::ensure!(runs.iter().any(|r| &r.id == id), "list_runs does not show run {id}");
        }
        anyhow::ensure!(
            runs.iter().all(|r| r.pipeline == spec.name),
            "list_runs({}) shows runs of other pipelines",
            spec.name
        );
        ensure_eq!(runs.len(), 2, "runs listed for a pipeline started twice");
        Ok(())
    })
    .await
}

pub async fn start_of_unknown_pipeline_is_not_found(o: Orch) -> TestResult {
    expect_kind(
        o.start(&unique("gtk-pipe-"), None, &BTreeMap::new()).await,
        ErrorKind::NotFound,
        "start of a pipeline never created",
    )
}

pub async fn status_of_unknown_run_is_not_found(o: Orch) -> TestResult {
    expect_kind(o.status(&unique("gtkrun")).await, ErrorKind::NotFound, "status of a run never started")
}

fn step_state(run: &PipelineRun, step: &str) -> Option<RunState> {
    run.steps.iter().find(|s| s.name == step).map(|s| s.state)
}

pub async fn steps_run_in_dependency_order_with_upstream_outputs(o: Orch) -> TestResult {
    let exec = Arc::new(ScriptedExecutor::default());
    let spec = pipeline(&unique("gtk-pipe-"));
    with_pipeline_exec(o, spec, exec.clone(), |o, spec, attached| async move {
        if !attached {
            return Err(in_process_only());
        }
        let run = finish(&o, &o.start(&spec.name, None, &BTreeMap::new()).await?).await?;
        check_consistent(&run, &spec)?;
        ensure_eq!(run.state, RunState::Succeeded, "state of a run whose steps all succeed");
        let seen = exec.seen();
        let order: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
        ensure_eq!(order, vec!["extract", "validate", "train"], "order the steps ran in");
        for step in &spec.steps {
            let (_, upstream) = seen.iter().find(|(s, _)| *s == step.name).expect("every step ran");
            for dep in &step.depends_on {
                anyhow::ensure!(upstream.contains(dep), "step `{}` did not get the output of its dependency `{dep}`; it got {upstream:?}", step.name);
            }
        }
        Ok(())
    })
    .await
}

pub async fn a_failed_step_skips_its_dependents(o: Orch) -> TestResult {
    let exec = Arc::new(ScriptedExecutor::failing(&["validate"]));
    let spec = pipeline(&unique("gtk-pipe-"));
    with_pipeline_exec(o, spec, exec.clone(), |o, spec, attached| async move {
        if !attached {
            return Err(in_process_only());
        }
        let run = finish(&o, &o.start(&spec.name, None, &BTreeMap::new()).await?).await?;
        check_consistent(&run, &spec)?;
        ensure_eq!(run.state, RunState::Failed, "state of a run with a failed step");
        ensure_eq!(step_state(&run, "extract"), Some(RunState::Succeeded), "state of `extract`");
        ensure_eq!(step_state(&run, "validate"), Some(RunState::Failed), "state of `validate`");
        ensure_eq!(step_state(&run, "train"), Some(RunState::Skipped), "state of `train`, after a failed dependency");
        let failed = run.steps.iter().find(|s| s.name == "validate").expect("checked above");
        anyhow::ensure!(
            failed.error.as_deref().is_some_and(|e| e.contains("failed as the test scripted")),
            "the failed step's error does not carry the step's message: {:?}",
            failed.error
        );
        anyhow::ensure!(!exec.seen().iter().any(|(s, _)| s == "train"), "`train` ran although `validate` failed");
        Ok(())
    })
    .await
}

pub async fn step_logs_are_kept(o: Orch) -> TestResult {
    let spec = pipeline(&unique("gtk-pipe-"));
    with_pipeline_exec(o, spec, Arc::new(ScriptedExecutor::default()), |o, spec, attached| async move {
        if !attached {
            return Err(in_process_only());
        }
        let id = o.start(&spec.name, None, &BTreeMap::new()).await?;
        finish(&o, &id).await?;
        let extract = o.logs(&id, Some("extract")).await?;
        anyhow::ensure!(extract.contains(&ScriptedExecutor::marker("extract")), "logs of `extract` lack its line: {extract:?}");
        anyhow::ensure!(!extract.contains(&ScriptedExecutor::marker("train")), "logs of `extract` hold `train`'s line");
        let all = o.logs(&id, None).await?;
        for step in ["extract", "validate", "train"] {
            anyhow::ensure!(all.contains(&ScriptedExecutor::marker(step)), "the run's logs lack `{step}`'s line");
        }
        Ok(())
    })
    .await
}

pub async fn retryable_failures_are_retried(o: Orch) -> TestResult {
    let exec = Arc::new(ScriptedExecutor::flaky(&["validate"]));
    let mut spec = pipeline(&unique("gtk-pipe-"));
    spec.steps[1].retries = 2;
    with_pipeline_exec(o, spec, exec, |o, spec, attached| async move {
        if !attached {
            return Err(in_process_only());
        }
        let run = finish(&o, &o.start(&spec.name, None, &BTreeMap::new()).await?).await?;
        check_consistent(&run, &spec)?;
        ensure_eq!(run.state, RunState::Succeeded, "state of a run whose step failed once, retryably, with 2 retries");
        let validate = run.steps.iter().find(|s| s.name == "validate").expect("checked above");
        ensure_eq!(validate.attempts, 2, "attempts of the step that failed once");
        Ok(())
    })
    .await
}

pub async fn unchanged_steps_are_served_from_cache(o: Orch) -> TestResult {
    let exec = Arc::new(ScriptedExecutor::default());
    let mut spec = pipeline(&unique("gtk-pipe-"));
    for step in &mut spec.steps {
        step.cache = true;
    }
    with_pipeline_exec(o, spec, exec.clone(), |o, spec, attached| async move {
        if !attached {
            return Err(in_process_only());
        }
        let first = finish(&o, &o.start(&spec.name, None, &BTreeMap::new()).await?).await?;
        ensure_eq!(first.state, RunState::Succeeded, "state of the first run");
        anyhow::ensure!(first.steps.iter().all(|s| !s.cached), "the first run reports cache hits: {:?}", first.steps);
        let ran_before = exec.seen().len();
        let second = finish(&o, &o.start(&spec.name, None, &BTreeMap::new()).await?).await?;
        check_consistent(&second, &spec)?;
        ensure_eq!(second.state, RunState::Succeeded, "state of the cached run");
        let cached: Vec<(&str, bool)> = second.steps.iter().map(|s| (s.name.as_str(), s.cached)).collect();
        anyhow::ensure!(cached.iter().all(|(_, c)| *c), "unchanged steps were not served from cache: {cached:?}");
        ensure_eq!(exec.seen().len(), ran_before, "step bodies run by the second, fully cached run");
        Ok(())
    })
    .await
}

pub async fn cancel_stops_a_running_run(o: Orch) -> TestResult {
    let exec = Arc::new(ScriptedExecutor::holding(&["validate"]));
    let spec = pipeline(&unique("gtk-pipe-"));
    with_pipeline_exec(o, spec, exec.clone(), |o, spec, attached| async move {
        if !attached {
            return Err(in_process_only());
        }
        let id = o.start(&spec.name, None, &BTreeMap::new()).await?;
        // Wait until the held step is running, so the cancel lands mid-run.
        let probe = exec.clone();
        wait_for("the held step starting", RUN_LIMIT, || {
            let probe = probe.clone();
            async move { Ok(probe.seen().iter().any(|(s, _)| s == "validate").then_some(())) }
        })
        .await?;
        let cancelled = o.cancel(&id).await;
        exec.release();
        cancelled?;
        let run = finish(&o, &id).await?;
        check_consistent(&run, &spec)?;
        ensure_eq!(run.state, RunState::Cancelled, "state of a cancelled run");
        anyhow::ensure!(
            step_state(&run, "train") != Some(RunState::Succeeded) && !exec.seen().iter().any(|(s, _)| s == "train"),
            "`train` ran after the run was cancelled: {:?}",
            run.steps
        );
        Ok(())
    })
    .await
}
