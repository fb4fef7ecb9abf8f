//! The local DAG runner and its triggers, through the public API only. Concurrency is
//! observed with barriers and gates, never with sleeps or timing assertions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use galley_core::stages::{
    Launch, Orchestrator, PipelineRun, PipelineSpec, Probes, RunState, StepLogger, StepSpec, Trigger,
};
use galley_core::{Error, ErrorKind, Result, RetryPolicy};
use galley_local::orchestrator::{
    LocalOrchestrator, Observation, RunnerOptions, StepExecutor, StepOutput, WatchOptions,
    WatchState, Watcher,
};
use serde_json::json;
use tokio::sync::{Barrier, Semaphore};

/// Safety net so a broken implementation fails the test instead of hanging it; never an
/// assertion about how long something took.
const HANG_GUARD: Duration = Duration::from_secs(60);

async fn guard<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} never completed"))
}

#[derive(Clone, Default)]
struct Plan {
    /// Fail this many attempts with a retryable error first.
    retryable_failures: u32,
    permanent_failure: bool,
    /// Wait at this barrier while running (to prove overlap).
    barrier: Option<Arc<Barrier>>,
    /// Wait for a permit while running (the test holds the step open).
    gate: Option<Arc<Semaphore>>,
}

/// A recording executor. Its fingerprint folds a per-step "config" with the upstream outputs,
/// the way a real executor folds data hashes and upstream artifacts.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    calls: Mutex<BTreeMap<String, u32>>,
    config: Mutex<BTreeMap<String, String>>,
    /// Part of the output; changing it changes what dependents see.
    salt: Mutex<BTreeMap<String, String>>,
    plans: Mutex<BTreeMap<String, Plan>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    started: Mutex<Option<tokio::sync::watch::Sender<usize>>>,
}

impl Recorder {
    fn plan(&self, step: &str, plan: Plan) {
        self.plans.lock().unwrap().insert(step.into(), plan);
    }
    fn calls(&self, step: &str) -> u32 {
        self.calls.lock().unwrap().get(step).copied().unwrap_or(0)
    }
    fn total_calls(&self) -> u32 {
        self.calls.lock().unwrap().values().sum()
    }
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
    fn started_counter(&self) -> tokio::sync::watch::Receiver<usize> {
        let (tx, rx) = tokio::sync::watch::channel(0);
        *self.started.lock().unwrap() = Some(tx);
        rx
    }
}

#[async_trait]
impl StepExecutor for Recorder {
    async fn fingerprint(
        &self,
        step: &str,
        upstream: &BTreeMap<String, StepOutput>,
    ) -> Result<String> {
        let config = self
            .config
            .lock()
            .unwrap()
            .get(step)
            .cloned()
            .unwrap_or_default();
        Ok(format!(
            "{step}|{config}|{}",
            serde_json::to_string(upstream).unwrap()
        ))
    }

    async fn run(
        &self,
        step: &str,
        upstream: &BTreeMap<String, StepOutput>,
        log: &dyn StepLogger,
    ) -> Result<StepOutput> {
        let attempt = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(step.to_string()).or_default();
            *n += 1;
            *n
        };
        self.events.lock().unwrap().push(format!("start:{step}"));
        if let Some(tx) = &*self.started.lock().unwrap() {
            tx.send_modify(|n| *n += 1);
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        log.line(&format!("hello from {step}, attempt {attempt}"));
        let plan = self
            .plans
            .lock()
            .unwrap()
            .get(step)
            .cloned()
            .unwrap_or_default();
        if let Some(b) = &plan.barrier {
            b.wait().await;
        }
        if let Some(g) = &plan.gate {
            let _permit = g.acquire().await.unwrap();
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if attempt <= plan.retryable_failures {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("{step}: service busy"),
            ));
        }
        if plan.permanent_failure {
            return Err(Error::invalid(format!("{step}: bad input")));
        }
        self.events.lock().unwrap().push(format!("end:{step}"));
        let salt = self
            .salt
            .lock()
            .unwrap()
            .get(step)
            .cloned()
            .unwrap_or_default();
        Ok(StepOutput {
            values: json!({ "step": step, "salt": salt, "upstream": upstream.keys().collect::<Vec<_>>() }),
        })
    }
}

fn pipeline(name: &str, steps: Vec<StepSpec>) -> PipelineSpec {
    PipelineSpec {
        name: name.into(),
        steps,
        schedule: None,
        triggers: vec![],
        monitor: None,
    }
}

fn options() -> RunnerOptions {
    RunnerOptions {
        max_parallel: 4,
        retry: RetryPolicy {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..Default::default()
        },
        cancel_poll: Duration::from_millis(500),
    }
}

async fn setup(dir: &std::path::Path, spec: &PipelineSpec) -> (LocalOrchestrator, Arc<Recorder>) {
    let orch = LocalOrchestrator::open_with(dir.to_path_buf(), options()).unwrap();
    orch.upsert_pipeline(spec).await.unwrap();
    let rec = Arc::new(Recorder::default());
    orch.register_executor(&spec.name, rec.clone());
    (orch, rec)
}

async fn run(orch: &LocalOrchestrator, name: &str) -> PipelineRun {
    guard("run", orch.run_to_completion(name, None, &BTreeMap::new()))
        .await
        .unwrap()
}

fn step_of<'a>(run: &'a PipelineRun, name: &str) -> &'a galley_core::stages::StepRun {
    run.steps.iter().find(|s| s.name == name).unwrap()
}

fn position(events: &[String], e: &str) -> usize {
    events
        .iter()
        .position(|x| x == e)
        .unwrap_or_else(|| panic!("{e} not in {events:?}"))
}

#[tokio::test]
async fn steps_run_after_their_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        "order",
        vec![
            StepSpec::new("train", &["prepare"]),
            StepSpec::new("prepare", &["extract", "validate"]),
            StepSpec::new("validate", &["extract"]),
            StepSpec::new("extract", &[]),
            StepSpec::new("deploy", &["train", "validate"]),
        ],
    );
    let (orch, rec) = setup(dir.path(), &spec).await;
    let r = run(&orch, "order").await;
    assert_eq!(r.state, RunState::Succeeded);
    let events = rec.events();
    for s in &spec.steps {
        for d in &s.depends_on {
            assert!(
                position(&events, &format!("end:{d}"))
                    < position(&events, &format!("start:{}", s.name)),
                "{events:?}"
            );
        }
    }
    // Upstream holds every transitive ancestor's output.
    let outputs = orch.step_outputs(&r.id).await.unwrap();
    assert_eq!(
        outputs["deploy"].values["upstream"],
        json!(["extract", "prepare", "train", "validate"])
    );
    assert!(
        r.steps
            .iter()
            .all(|s| s.attempts == 1 && !s.cached && s.output.is_some())
    );
}

#[tokio::test]
async fn independent_steps_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        "fan",
        vec![
            StepSpec::new("a", &[]),
            StepSpec::new("b", &["a"]),
            StepSpec::new("c", &["a"]),
            StepSpec::new("d", &["b", "c"]),
        ],
    );
    let (orch, rec) = setup(dir.path(), &spec).await;
    // b and c each wait for the other: the run can only finish if they run at the same time.
    let barrier = Arc::new(Barrier::new(2));
    rec.plan(
        "b",
        Plan {
            barrier: Some(barrier.clone()),
            ..Default::default()
        },
    );
    rec.plan(
        "c",
        Plan {
            barrier: Some(barrier),
            ..Default::default()
        },
    );
    let r = run(&orch, "fan").await;
    assert_eq!(r.state, RunState::Succeeded);
    assert!(rec.max_in_flight.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let orch = LocalOrchestrator::open_with(
        dir.path().into(),
        RunnerOptions {
            max_parallel: 2,
            ..options()
        },
    )
    .unwrap();
    let spec = pipeline(
        "wide",
        (0..6).map(|i| StepSpec::new(&format!("s{i}"), &[])).collect(),
    );
    orch.upsert_pipeline(&spec).await.unwrap();
    let rec = Arc::new(Recorder::default());
    orch.register_executor("wide", rec.clone());
    let gate = Arc::new(Semaphore::new(0));
    for i in 0..6 {
        rec.plan(
            &format!("s{i}"),
            Plan {
                gate: Some(gate.clone()),
                ..Default::default()
            },
        );
    }
    let mut started = rec.started_counter();
    let id = orch.start("wide", None, &BTreeMap::new()).await.unwrap();
    guard("two steps start", started.wait_for(|n| *n >= 2))
        .await
        .unwrap();
    gate.add_permits(100);
    let r = guard("wait", orch.wait(&id)).await.unwrap();
    assert_eq!(r.state, RunState::Succeeded);
    assert_eq!(rec.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retryable_failures_are_retried_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let mut flaky = StepSpec::new("flaky", &[]);
    flaky.retries = 3;
    let mut exhausted = StepSpec::new("exhausted", &[]);
    exhausted.retries = 1;
    let spec = pipeline("retry", vec![flaky, exhausted]);
    let (orch, rec) = setup(dir.path(), &spec).await;
    rec.plan(
        "flaky",
        Plan {
            retryable_failures: 2,
            ..Default::default()
        },
    );
    rec.plan(
        "exhausted",
        Plan {
            retryable_failures: 5,
            ..Default::default()
        },
    );
    let r = run(&orch, "retry").await;
    let flaky = step_of(&r, "flaky");
    assert_eq!((flaky.state, flaky.attempts), (RunState::Succeeded, 3));
    let exhausted = step_of(&r, "exhausted");
    assert_eq!((exhausted.state, exhausted.attempts), (RunState::Failed, 2));
    assert!(
        exhausted.error.as_deref().unwrap().contains("service busy"),
        "{exhausted:?}"
    );
    assert_eq!(r.state, RunState::Failed);
    let log = orch.logs(&r.id, Some("flaky")).await.unwrap();
    assert_eq!(log.matches("retryable error, retrying").count(), 2, "{log}");
}

#[tokio::test]
async fn permanent_failure_skips_only_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = StepSpec::new("bad", &["a"]);
    bad.retries = 3;
    let spec = pipeline(
        "perm",
        vec![
            StepSpec::new("a", &[]),
            bad,
            StepSpec::new("after_bad", &["bad"]),
            StepSpec::new("way_after", &["after_bad"]),
            StepSpec::new("side", &["a"]),
        ],
    );
    let (orch, rec) = setup(dir.path(), &spec).await;
    rec.plan(
        "bad",
        Plan {
            permanent_failure: true,
            ..Default::default()
        },
    );
    let r = run(&orch, "perm").await;
    assert_eq!(r.state, RunState::Failed);
    let bad = step_of(&r, "bad");
    assert_eq!(
        (bad.state, bad.attempts),
        (RunState::Failed, 1),
        "a permanent error is not retried"
    );
    assert!(bad.error.as_deref().unwrap().contains("bad input"));
    for s in ["after_bad", "way_after"] {
        assert_eq!(step_of(&r, s).state, RunState::Skipped);
        assert_eq!(rec.calls(s), 0);
    }
    assert_eq!(step_of(&r, "side").state, RunState::Succeeded);
    assert_eq!(step_of(&r, "a").state, RunState::Succeeded);
}

#[tokio::test]
async fn unchanged_fingerprints_reuse_outputs_and_changes_rerun_what_they_reach() {
    let dir = tempfile::tempdir().unwrap();
    let cached = |name: &str, deps: &[&str]| StepSpec {
        cache: true,
        ..StepSpec::new(name, deps)
    };
    let spec = pipeline(
        "cache",
        vec![
            cached("a", &[]),
            cached("b", &["a"]),
            cached("c", &["b"]),
            cached("d", &["a"]),
        ],
    );
    let (orch, rec) = setup(dir.path(), &spec).await;

    let first = run(&orch, "cache").await;
    assert_eq!(first.state, RunState::Succeeded);
    assert!(first.steps.iter().all(|s| !s.cached));
    assert_eq!(rec.total_calls(), 4);

    let second = run(&orch, "cache").await;
    assert_eq!(second.state, RunState::Succeeded);
    assert!(
        second.steps.iter().all(|s| s.cached && s.attempts == 0),
        "{second:?}"
    );
    assert_eq!(rec.total_calls(), 4, "no step body ran");
    assert_eq!(
        orch.step_outputs(&second.id).await.unwrap(),
        orch.step_outputs(&first.id).await.unwrap(),
        "cached outputs are the stored ones"
    );
    assert!(
        orch.logs(&second.id, Some("c"))
            .await
            .unwrap()
            .contains("cache hit")
    );

    // b's config changes but its output does not: only b runs again.
    rec.config.lock().unwrap().insert("b".into(), "v2".into());
    let third = run(&orch, "cache").await;
    let rerun: BTreeSet<&str> = third
        .steps
        .iter()
        .filter(|s| !s.cached)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(rerun, BTreeSet::from(["b"]));
    assert_eq!(rec.calls("b"), 2);

    // b's config and output change: b and its dependent c run, a and d stay cached.
    rec.config.lock().unwrap().insert("b".into(), "v3".into());
    rec.salt.lock().unwrap().insert("b".into(), "new".into());
    let fourth = run(&orch, "cache").await;
    let rerun: BTreeSet<&str> = fourth
        .steps
        .iter()
        .filter(|s| !s.cached)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(rerun, BTreeSet::from(["b", "c"]));
    assert_eq!(
        (
            rec.calls("a"),
            rec.calls("b"),
            rec.calls("c"),
            rec.calls("d")
        ),
        (1, 3, 2, 1)
    );
}

#[tokio::test]
async fn steps_without_cache_always_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline("nocache", vec![StepSpec::new("a", &[])]);
    let (orch, rec) = setup(dir.path(), &spec).await;
    run(&orch, "nocache").await;
    let r = run(&orch, "nocache").await;
    assert!(!step_of(&r, "a").cached);
    assert_eq!(rec.calls("a"), 2);
}

#[tokio::test]
async fn history_and_logs_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline("hist", vec![StepSpec::new("a", &[]), StepSpec::new("b", &["a"])]);
    let (first, second) = {
        let (orch, _rec) = setup(dir.path(), &spec).await;
        let first = run(&orch, "hist").await;
        let second = guard(
            "run",
            orch.run_to_completion(
                "hist",
                Some(Trigger::NewData),
                &BTreeMap::from([("k".into(), "v".into())]),
            ),
        )
        .await
        .unwrap();
        (first, second)
    };
    let orch = LocalOrchestrator::open(dir.path().into()).unwrap();
    assert_eq!(orch.describe_pipeline("hist").await.unwrap(), Some(spec));
    let runs = orch.list_runs("hist").await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [second.id.as_str(), first.id.as_str()]
    );
    let status = orch.status(&second.id).await.unwrap();
    assert_eq!(status, second);
    assert_eq!(status.trigger, Some(Trigger::NewData));
    assert_eq!(status.params["k"], "v");

    let b = orch.logs(&first.id, Some("b")).await.unwrap();
    assert!(
        b.contains("hello from b, attempt 1") && !b.contains("hello from a"),
        "{b}"
    );
    let all = orch.logs(&first.id, None).await.unwrap();
    assert!(
        all.find("==> a <==").unwrap() < all.find("==> b <==").unwrap(),
        "{all}"
    );
    assert!(all.contains("hello from a"));
    let err = orch.logs(&first.id, Some("nope")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("a, b"), "{err}");
    assert_eq!(
        orch.status("20990101-000000-000-abcdef")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        orch.status("../etc/passwd").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn cancel_stops_pending_and_running_steps() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline("cancel", vec![StepSpec::new("slow", &[]), StepSpec::new("after", &["slow"])]);
    let (orch, rec) = setup(dir.path(), &spec).await;
    rec.plan(
        "slow",
        Plan {
            gate: Some(Arc::new(Semaphore::new(0))),
            ..Default::default()
        },
    );
    let mut started = rec.started_counter();
    let id = orch.start("cancel", None, &BTreeMap::new()).await.unwrap();
    guard("slow starts", started.wait_for(|n| *n >= 1))
        .await
        .unwrap();
    assert_eq!(orch.status(&id).await.unwrap().state, RunState::Running);
    assert_eq!(orch.active_run("cancel").await.unwrap(), Some(id.clone()));

    // A second run of the same pipeline is refused while this one is active.
    let err = orch
        .start("cancel", None, &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);

    guard("cancel", orch.cancel(&id)).await.unwrap();
    let r = orch.status(&id).await.unwrap();
    assert_eq!(r.state, RunState::Cancelled);
    assert_eq!(step_of(&r, "slow").state, RunState::Cancelled);
    assert_eq!(step_of(&r, "after").state, RunState::Cancelled);
    assert_eq!(rec.calls("after"), 0);
    assert!(r.ended_ms.is_some());
    assert_eq!(orch.active_run("cancel").await.unwrap(), None);
    orch.cancel(&id).await.expect("cancelling twice is a no-op");

    rec.plan("slow", Plan::default());
    let done = run(&orch, "cancel").await;
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(
        orch.cancel(&done.id).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
}

#[tokio::test]
async fn a_cancel_request_from_another_process_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline("remote", vec![StepSpec::new("slow", &[]), StepSpec::new("after", &["slow"])]);
    let (orch, rec) = setup(dir.path(), &spec).await;
    rec.plan(
        "slow",
        Plan {
            gate: Some(Arc::new(Semaphore::new(0))),
            ..Default::default()
        },
    );
    let mut started = rec.started_counter();
    let id = orch.start("remote", None, &BTreeMap::new()).await.unwrap();
    guard("slow starts", started.wait_for(|n| *n >= 1))
        .await
        .unwrap();
    // What `cancel` leaves for a run executed by another live process.
    let marker = dir.path().join("remote/runs").join(format!("{id}.cancel"));
    std::fs::write(&marker, "cancel requested\n").unwrap();
    let r = guard("the run notices the request", orch.wait(&id))
        .await
        .unwrap();
    assert_eq!(r.state, RunState::Cancelled);
    assert_eq!(rec.calls("after"), 0);
    assert!(!marker.exists(), "the request is consumed");
}

#[tokio::test]
async fn prune_keeps_the_newest_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline("prune", vec![StepSpec::new("a", &[])]);
    let (orch, _rec) = setup(dir.path(), &spec).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(run(&orch, "prune").await.id);
    }
    assert_eq!(orch.prune_runs("prune", 2).await.unwrap(), 2);
    let left: Vec<String> = orch
        .list_runs("prune")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![ids[3].clone(), ids[2].clone()]);
    assert_eq!(
        orch.status(&ids[0]).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(
        !dir.path().join("prune/runs").join(&ids[0]).exists(),
        "its logs went too"
    );
    assert!(
        orch.logs(&ids[3], Some("a"))
            .await
            .unwrap()
            .contains("hello from a")
    );
    assert_eq!(orch.prune_runs("prune", 2).await.unwrap(), 0);
}

#[tokio::test]
async fn invalid_pipelines_are_rejected_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let orch = LocalOrchestrator::open(dir.path().into()).unwrap();
    let cyclic = pipeline(
        "cyc",
        vec![StepSpec::new("a", &["c"]), StepSpec::new("b", &["a"]), StepSpec::new("c", &["b"])],
    );
    let err = orch.upsert_pipeline(&cyclic).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let msg = err.to_string();
    assert!(
        msg.contains("cycle") && msg.contains("a") && msg.contains("b") && msg.contains("c"),
        "{msg}"
    );
    assert_eq!(
        orch.describe_pipeline("cyc").await.unwrap(),
        None,
        "nothing stored"
    );

    let unknown = pipeline("unk", vec![StepSpec::new("a", &["ghost"])]);
    assert!(
        orch.upsert_pipeline(&unknown)
            .await
            .unwrap_err()
            .to_string()
            .contains("ghost")
    );
    let dup = pipeline("dup", vec![StepSpec::new("a", &[]), StepSpec::new("a", &[])]);
    assert!(
        orch.upsert_pipeline(&dup)
            .await
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    let mut bad_cron = pipeline("cron", vec![StepSpec::new("a", &[])]);
    bad_cron.schedule = Some("0 3 * *".into());
    assert!(
        orch.upsert_pipeline(&bad_cron)
            .await
            .unwrap_err()
            .to_string()
            .contains("five")
    );
    bad_cron.schedule = Some("61 3 * * *".into());
    assert_eq!(
        orch.upsert_pipeline(&bad_cron).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    bad_cron.schedule = Some("@daily".into());
    orch.upsert_pipeline(&bad_cron).await.expect("the usual shorthands are accepted");

    assert_eq!(
        orch.start("missing", None, &BTreeMap::new())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    orch.upsert_pipeline(&pipeline("noexec", vec![StepSpec::new("a", &[])]))
        .await
        .unwrap();
    let err = orch
        .start("noexec", None, &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("executor"), "{err}");
}

#[tokio::test]
async fn delete_keeps_history_and_clears_cache() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        "del",
        vec![StepSpec {
            cache: true,
            ..StepSpec::new("a", &[])
        }],
    );
    let (orch, rec) = setup(dir.path(), &spec).await;
    let r = run(&orch, "del").await;
    orch.delete_pipeline("del").await.unwrap();
    orch.delete_pipeline("del")
        .await
        .expect("deleting again is fine");
    assert_eq!(orch.describe_pipeline("del").await.unwrap(), None);
    assert_eq!(orch.list_runs("del").await.unwrap().len(), 1);
    assert_eq!(orch.status(&r.id).await.unwrap().state, RunState::Succeeded);
    orch.upsert_pipeline(&spec).await.unwrap();
    let again = run(&orch, "del").await;
    assert!(
        !step_of(&again, "a").cached,
        "the cache went with the pipeline"
    );
    assert_eq!(rec.calls("a"), 2);
}

#[tokio::test]
async fn runs_of_a_dead_process_are_marked_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline("crash", vec![StepSpec::new("a", &[])]);
    let (orch, _rec) = setup(dir.path(), &spec).await;
    let r = run(&orch, "crash").await;
    // Rewrite the record as if a process that has since exited was still running it.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let path = dir.path().join("crash/runs").join(format!("{}.json", r.id));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    record["owner_pid"] = json!(dead_pid);
    record["run"]["state"] = json!("running");
    record["run"]["steps"][0]["state"] = json!("running");
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();

    let reopened = LocalOrchestrator::open(dir.path().into()).unwrap();
    let status = reopened.status(&r.id).await.unwrap();
    assert_eq!(status.state, RunState::Failed);
    assert!(
        status.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("interrupted")
    );
    assert_eq!(reopened.active_run("crash").await.unwrap(), None);
}

// ---- triggers ----

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn watch_spec(name: &str, schedule: Option<&str>, triggers: Vec<Trigger>) -> PipelineSpec {
    PipelineSpec {
        schedule: schedule.map(String::from),
        triggers,
        ..pipeline(name, vec![StepSpec::new("train", &[])])
    }
}

#[tokio::test]
async fn schedule_fires_once_per_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, _rec) = setup(
        dir.path(),
        &watch_spec("cron", Some("30 3 * * *"), vec![Trigger::Schedule]),
    )
    .await;
    let w = Watcher::new(orch, "cron", Probes::default(), WatchOptions::default())
        .await
        .unwrap();
    let idle = Observation::default();

    // First sight anchors the schedule; it does not fire for times before watching began.
    let d = w.decide(at("2026-01-01T01:00:00Z"), &WatchState::default(), &idle);
    assert!(d.due.is_empty() && d.fire.is_none());
    let s = d.next_state;
    assert!(
        w.due_triggers(at("2026-01-01T03:29:59Z"), &s, &idle)
            .is_empty()
    );
    let d = w.decide(at("2026-01-01T03:30:00Z"), &s, &idle);
    assert_eq!(
        (d.due.clone(), d.fire),
        (vec![Trigger::Schedule], Some(Trigger::Schedule))
    );
    let s = d.next_state;
    assert!(
        w.due_triggers(at("2026-01-01T03:30:40Z"), &s, &idle)
            .is_empty(),
        "not twice in one minute"
    );
    assert!(
        w.due_triggers(at("2026-01-02T03:29:00Z"), &s, &idle)
            .is_empty()
    );
    assert_eq!(
        w.due_triggers(at("2026-01-02T03:30:00Z"), &s, &idle),
        vec![Trigger::Schedule]
    );
    // Down for three days: one catch-up run, not three.
    let d = w.decide(at("2026-01-05T12:00:00Z"), &s, &idle);
    assert_eq!(d.fire, Some(Trigger::Schedule));
    assert!(
        w.due_triggers(at("2026-01-05T12:01:00Z"), &d.next_state, &idle)
            .is_empty()
    );
    assert_eq!(
        w.next_wake(at("2026-01-05T12:01:00Z"), &d.next_state),
        at("2026-01-05T12:01:30Z"),
        "poll interval first"
    );
    let wake = w.next_wake(at("2026-01-06T03:29:50Z"), &d.next_state);
    assert_eq!(
        wake,
        at("2026-01-06T03:30:00Z"),
        "wakes on the scheduled minute"
    );
}

#[tokio::test]
async fn schedule_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spec = watch_spec("cron2", Some("*/15 * * * *"), vec![]);
    {
        let (orch, _rec) = setup(dir.path(), &spec).await;
        let w = Watcher::new(
            orch.clone(),
            "cron2",
            Probes::default(),
            WatchOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            w.tick(at("2026-03-01T10:05:00Z")).await.unwrap().fired,
            None
        );
        let report = w.tick(at("2026-03-01T10:15:00Z")).await.unwrap();
        assert_eq!(report.fired, Some(Trigger::Schedule), "fires at 10:15");
        let id = report.run.unwrap();
        let r = guard("wait", orch.wait(&id)).await.unwrap();
        assert_eq!(
            (r.state, r.trigger),
            (RunState::Succeeded, Some(Trigger::Schedule))
        );
    }
    // A new process (new orchestrator and watcher on the same directory).
    let (orch, _rec) = setup(dir.path(), &spec).await;
    let w = Watcher::new(
        orch.clone(),
        "cron2",
        Probes::default(),
        WatchOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        w.tick(at("2026-03-01T10:15:30Z")).await.unwrap().fired,
        None,
        "no double fire after restart"
    );
    assert!(
        w.tick(at("2026-03-01T10:30:00Z"))
            .await
            .unwrap()
            .run
            .is_some()
    );
    assert_eq!(orch.list_runs("cron2").await.unwrap().len(), 2);
}

#[tokio::test]
async fn new_data_fires_and_is_coalesced_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, rec) = setup(
        dir.path(),
        &watch_spec("data", None, vec![Trigger::NewData]),
    )
    .await;
    let hash = Arc::new(Mutex::new("h1".to_string()));
    let probe_hash = hash.clone();
    let probes = Probes {
        data: Some(Arc::new(move || {
            let h = probe_hash.lock().unwrap().clone();
            async move { Ok(h) }
        })),
        drift: None,
    };
    let w = Watcher::new(orch.clone(), "data", probes, WatchOptions::default())
        .await
        .unwrap();
    let now = at("2026-02-01T00:00:00Z");

    assert_eq!(
        w.tick(now).await.unwrap().fired,
        None,
        "data present when watching began is the baseline"
    );
    assert_eq!(w.tick(now).await.unwrap().fired, None);

    let gate = Arc::new(Semaphore::new(0));
    rec.plan(
        "train",
        Plan {
            gate: Some(gate.clone()),
            ..Default::default()
        },
    );
    *hash.lock().unwrap() = "h2".into();
    let report = w.tick(now).await.unwrap();
    assert_eq!(report.fired, Some(Trigger::NewData));
    let id = report.run.expect("new data fires");

    // More data while the run is active: coalesced, not a second run.
    *hash.lock().unwrap() = "h3".into();
    let report = w.tick(now).await.unwrap();
    assert_eq!(report.due, vec![Trigger::NewData]);
    assert_eq!(
        (report.fired, report.coalesced_into),
        (None, Some(id.clone()))
    );

    gate.add_permits(10);
    assert_eq!(
        guard("wait", orch.wait(&id)).await.unwrap().trigger,
        Some(Trigger::NewData)
    );
    // The data changed during the run, so one follow-up run, then quiet.
    let follow_up = w
        .tick(now)
        .await
        .unwrap()
        .run
        .expect("pending new data fires after the run");
    guard("wait", orch.wait(&follow_up)).await.unwrap();
    assert_eq!(w.tick(now).await.unwrap().fired, None);
    assert_eq!(orch.list_runs("data").await.unwrap().len(), 2);
}

#[tokio::test]
async fn drift_fires_once_per_episode() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, rec) = setup(dir.path(), &watch_spec("drift", None, vec![Trigger::Drift])).await;
    let drifted = Arc::new(Mutex::new(true));
    let probe = drifted.clone();
    let probes = Probes {
        data: None,
        drift: Some(Arc::new(move || {
            let d = *probe.lock().unwrap();
            async move { Ok(d) }
        })),
    };
    let opts = WatchOptions {
        drift_cooldown: Duration::from_secs(3600),
        ..Default::default()
    };
    let w = Watcher::new(orch.clone(), "drift", probes, opts)
        .await
        .unwrap();

    let gate = Arc::new(Semaphore::new(0));
    rec.plan(
        "train",
        Plan {
            gate: Some(gate.clone()),
            ..Default::default()
        },
    );
    let t0 = at("2026-04-01T00:00:00Z");
    let report = w.tick(t0).await.unwrap();
    assert_eq!(report.fired, Some(Trigger::Drift));
    let id = report.run.expect("drift fires");
    let report = w.tick(t0).await.unwrap();
    assert_eq!(
        (report.fired, report.due),
        (None, vec![]),
        "inside the cooldown nothing is due"
    );

    gate.add_permits(10);
    guard("wait", orch.wait(&id)).await.unwrap();
    // Still drifting ten minutes later (the monitor's window lags): no second retrain.
    assert_eq!(
        w.tick(at("2026-04-01T00:10:00Z")).await.unwrap().fired,
        None
    );
    // Still drifting after the cooldown: the retrain did not fix it, so try again.
    assert_eq!(
        w.tick(at("2026-04-01T01:00:00Z")).await.unwrap().fired,
        Some(Trigger::Drift)
    );
}

#[tokio::test]
async fn simultaneous_triggers_start_one_run_and_active_runs_coalesce_drift() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, _rec) = setup(
        dir.path(),
        &watch_spec(
            "both",
            Some("0 * * * *"),
            vec![Trigger::Drift, Trigger::NewData],
        ),
    )
    .await;
    let noop_probes = Probes {
        data: Some(Arc::new(|| async { Ok("x".to_string()) })),
        drift: Some(Arc::new(|| async { Ok(false) })),
    };
    let w = Watcher::new(orch, "both", noop_probes, WatchOptions::default())
        .await
        .unwrap();
    let state = WatchState {
        schedule_anchor_ms: Some(at("2026-01-01T00:30:00Z").timestamp_millis()),
        data_hash: Some("old".into()),
        last_drift_fire_ms: None,
    };
    let obs = Observation {
        data_hash: Some("new".into()),
        drift: Some(true),
        active_run: None,
    };
    let d = w.decide(at("2026-01-01T01:00:00Z"), &state, &obs);
    assert_eq!(
        d.due,
        vec![Trigger::Drift, Trigger::NewData, Trigger::Schedule]
    );
    assert_eq!(d.fire, Some(Trigger::Drift));
    assert_eq!(d.next_state.data_hash.as_deref(), Some("new"));

    let busy = Observation {
        active_run: Some("r1".into()),
        ..obs
    };
    let d = w.decide(at("2026-01-01T01:00:00Z"), &state, &busy);
    assert_eq!((d.fire, d.coalesced_into.as_deref()), (None, Some("r1")));
    assert_eq!(
        d.next_state.data_hash.as_deref(),
        Some("old"),
        "new data stays pending until the run ends"
    );
    assert!(
        d.next_state.last_drift_fire_ms.is_some(),
        "the active run serves the drift episode"
    );
    let later = at("2026-01-01T01:00:30Z");
    assert!(
        w.due_triggers(
            later,
            &d.next_state,
            &Observation {
                active_run: None,
                ..busy.clone()
            }
        ) == vec![Trigger::NewData]
    );
}

#[tokio::test]
async fn watcher_requires_probes_for_its_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, _rec) = setup(
        dir.path(),
        &watch_spec("needs", None, vec![Trigger::NewData]),
    )
    .await;
    let err = Watcher::new(
        orch.clone(),
        "needs",
        Probes::default(),
        WatchOptions::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("data probe"), "{err}");
    assert_eq!(
        Watcher::new(orch, "nope", Probes::default(), WatchOptions::default())
            .await
            .err()
            .unwrap()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_launch_hook_starts_fired_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, _rec) = setup(dir.path(), &watch_spec("hook", None, vec![Trigger::Drift])).await;
    let probes = Probes {
        data: None,
        drift: Some(Arc::new(|| async { Ok(true) })),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let launch_orch = orch.clone();
    let launch: Launch = Arc::new(move |trigger| {
        let (orch, tx) = (launch_orch.clone(), tx.clone());
        Box::pin(async move {
            let params = BTreeMap::from([("why".to_string(), "hook".to_string())]);
            let run = orch
                .run_to_completion("hook", Some(trigger), &params)
                .await?;
            let _ = tx.send(run);
            Ok(())
        })
    });
    let w = Watcher::new(orch, "hook", probes, WatchOptions::default())
        .await
        .unwrap()
        .with_launcher(launch);
    let report = w.tick(at("2026-05-01T00:00:00Z")).await.unwrap();
    assert_eq!((report.fired, report.run), (Some(Trigger::Drift), None));
    let run = guard("launched run", rx.recv()).await.unwrap();
    assert_eq!(
        (run.state, run.trigger, run.params["why"].as_str()),
        (RunState::Succeeded, Some(Trigger::Drift), "hook")
    );
}
