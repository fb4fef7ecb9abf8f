//! Reliability of the engine against real process death, concurrent runs, damaged state,
//! injected failures, protection, stale plans, drift and import. Reality is the test kind's
//! directory of files, so these tests check what exists, not just what state believes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use galley_core::resource::{ChangeKind, OwnerTag, ResourceHandler, ResourceSpec};
use galley_core::{ErrorKind, RetryPolicy, Stage};
use galley_engine::testing::{self, CRASH_ENV, Faults, TEST_KIND, TestHandler, reality, tree_specs};
use galley_engine::{
    ApplyEvent, DriftKind, Engine, EngineOptions, Graph, LocalBackend, LockInfo, Plan, State, StateBackend,
    force_unlock, no_events,
};
use serde_json::json;

const N: usize = 32;

struct Sandbox {
    _dir: tempfile::TempDir,
    reality: PathBuf,
    state: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let reality = dir.path().join("reality");
        let state = dir.path().join(".galley").join("state.json");
        Sandbox { reality, state, _dir: dir }
    }

    fn harness(&self, op: &str, extra: &[&str], crash: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_engine-harness"));
        cmd.arg(op).arg("--reality").arg(&self.reality).arg("--state").arg(&self.state);
        cmd.args(extra);
        cmd.env_remove(CRASH_ENV);
        if let Some(c) = crash {
            cmd.env(CRASH_ENV, c);
        }
        cmd.output().unwrap()
    }

    fn lock_path(&self) -> PathBuf {
        LocalBackend::new(&self.state).lock_path()
    }

    fn load_state(&self) -> State {
        LocalBackend::new(&self.state).load().unwrap().expect("state exists")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every resource of the graph exists exactly once, every file of reality is in state, and
/// state's ids are reality's ids.
fn assert_converged(sb: &Sandbox, n: usize, context: &str) {
    let expected: BTreeMap<String, String> =
        tree_specs("harness", n).into_iter().map(|s| (s.name, s.address)).collect();
    let files = reality(&sb.reality).unwrap();
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in &files {
        by_name.entry(f.name.as_str()).or_default().push(f.create_id.as_str());
    }
    for (name, ids) in &by_name {
        assert_eq!(ids.len(), 1, "{context}: duplicate resources named {name}: {ids:?}");
        assert!(expected.contains_key(*name), "{context}: unexpected resource {name}");
    }
    for name in expected.keys() {
        assert!(by_name.contains_key(name.as_str()), "{context}: {name} missing from reality");
    }
    let state = sb.load_state();
    assert!(state.pending.is_empty(), "{context}: journal not settled: {:?}", state.pending.keys());
    assert_eq!(state.resources.len(), n, "{context}: state has {} resources", state.resources.len());
    let state_ids: HashSet<&str> = state.resources.values().map(|r| r.id.as_str()).collect();
    for f in &files {
        assert!(state_ids.contains(f.create_id.as_str()), "{context}: orphan {} ({}) not in state", f.name, f.create_id);
        let r = &state.resources[&f.address];
        assert_eq!(r.id, f.create_id, "{context}: state and reality disagree on {}", f.address);
        assert_eq!(f.owner, format!("harness/{}/{}", f.address, state.lineage), "{context}: owner tag of {}", f.address);
    }
    assert!(!sb.lock_path().exists(), "{context}: lock left behind");
}

/// Kills the harness at `point`, recovers, and checks convergence.
fn crash_and_recover(point: &str) {
    let sb = Sandbox::new();
    let args = ["--resources", "32", "--parallelism", "4", "--latency-ms", "1"];
    let crashed = sb.harness("apply", &args, Some(point));
    assert_eq!(
        crashed.status.signal(),
        Some(libc_sigkill()),
        "kill point {point}: the harness should have been killed, got {:?}: {}",
        crashed.status,
        stderr(&crashed)
    );
    // kill -9 leaves the lock; it must be released by hand, never stolen.
    let lock: LockInfo = serde_json::from_slice(&std::fs::read(sb.lock_path()).unwrap()).unwrap();
    force_unlock(&sb.state, &lock.id).unwrap();
    let rerun = sb.harness("apply", &args, None);
    assert!(rerun.status.success(), "kill point {point}: re-run failed: {}", stderr(&rerun));
    assert_converged(&sb, N, &format!("kill point {point}"));
    let plan: Plan = serde_json::from_slice(&sb.harness("plan", &args, None).stdout).unwrap();
    assert!(!plan.has_changes(), "kill point {point}: converged state still plans {}", plan.summary());
}

fn libc_sigkill() -> i32 {
    9
}

#[test]
fn kill_before_each_create_converges() {
    for n in 1..=N {
        crash_and_recover(&format!("before:{n}"));
    }
}

#[test]
fn kill_mid_each_create_converges() {
    for n in 1..=N {
        crash_and_recover(&format!("mid:{n}"));
    }
}

#[test]
fn kill_after_each_resource_converges() {
    for n in 1..N {
        crash_and_recover(&format!("after:{n}"));
    }
}

#[test]
fn stale_lock_is_reported_not_stolen() {
    let sb = Sandbox::new();
    let crashed = sb.harness("apply", &["--resources", "8"], Some("mid:3"));
    assert_eq!(crashed.status.signal(), Some(libc_sigkill()));
    let again = sb.harness("apply", &["--resources", "8"], None);
    assert_eq!(again.status.code(), Some(1));
    let msg = stderr(&again);
    assert!(msg.contains("locked by") && msg.contains("stale") && msg.contains("force-unlock"), "{msg}");
    assert!(sb.lock_path().exists(), "the stale lock must not be stolen");
}

#[test]
fn second_apply_fails_at_once_or_waits_for_the_lock() {
    let sb = Sandbox::new();
    let slow = ["--resources", "16", "--parallelism", "1", "--latency-ms", "100"];
    let mut first = Command::new(env!("CARGO_BIN_EXE_engine-harness"))
        .arg("apply")
        .arg("--reality")
        .arg(&sb.reality)
        .arg("--state")
        .arg(&sb.state)
        .args(slow)
        .env_remove(CRASH_ENV)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sb.lock_path().exists() {
        assert!(Instant::now() < deadline, "first apply never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = sb.harness("apply", &["--resources", "16"], None);
    assert_eq!(second.status.code(), Some(1));
    let msg = stderr(&second);
    let holder = LocalBackend::new(&sb.state).lock_holder().ok().flatten();
    assert!(msg.contains("is locked by"), "{msg}");
    assert!(msg.contains(&format!("pid {}", first.id())), "message should name the holder's pid: {msg}");
    if let Some(h) = holder {
        assert!(msg.contains(&h.owner) && msg.contains(&h.id), "{msg}");
    }
    let waiting = sb.harness("apply", &["--resources", "16", "--lock-timeout-ms", "120000"], None);
    assert!(waiting.status.success(), "waiting apply failed: {}", stderr(&waiting));
    assert!(first.wait().unwrap().success());
    assert_converged(&sb, 16, "after concurrent applies");
}

#[test]
fn damaged_state_is_refused_and_left_untouched() {
    let sb = Sandbox::new();
    assert!(sb.harness("apply", &["--resources", "8"], None).status.success());
    let good = std::fs::read(&sb.state).unwrap();
    let backup_path = LocalBackend::new(&sb.state).backup_path();
    for (what, bytes) in [("truncated", good[..good.len() / 2].to_vec()), ("corrupted", b"{\"version\": 1, \"serial\": \x00garbage".to_vec())] {
        std::fs::write(&sb.state, &bytes).unwrap();
        let backup_before = std::fs::read(&backup_path).unwrap();
        let reality_before = reality(&sb.reality).unwrap();
        for op in ["apply", "plan", "destroy"] {
            let out = sb.harness(op, &["--resources", "12"], None);
            assert_eq!(out.status.code(), Some(1), "{what} state, {op}");
            let msg = stderr(&out);
            assert!(msg.contains(&sb.state.display().to_string()), "{what}/{op}: names the file: {msg}");
            assert!(msg.contains(&backup_path.display().to_string()) && msg.contains("cp "), "{what}/{op}: names backup and restore: {msg}");
            assert_eq!(std::fs::read(&sb.state).unwrap(), bytes, "{what}/{op}: state bytes changed");
            assert_eq!(std::fs::read(&backup_path).unwrap(), backup_before, "{what}/{op}: backup changed");
            assert_eq!(reality(&sb.reality).unwrap(), reality_before, "{what}/{op}: reality changed");
            assert!(!sb.lock_path().exists(), "{what}/{op}: lock left behind");
        }
    }
}

// ---- in-process scenarios -------------------------------------------------------------------

fn engine_over(dir: &Path, specs: Vec<ResourceSpec>, faults: Faults, opts: EngineOptions) -> (Engine, Arc<TestHandler>) {
    let handler = Arc::new(TestHandler::new(dir.join("reality"), faults));
    let handlers: HashMap<String, Arc<dyn ResourceHandler>> = HashMap::from([(TEST_KIND.to_string(), handler.clone() as Arc<dyn ResourceHandler>)]);
    let graph = Graph::new("bp", specs).unwrap();
    let engine = Engine::new(graph, handlers, Box::new(LocalBackend::new(dir.join("state.json"))), opts);
    (engine, handler)
}

fn fast_retry() -> EngineOptions {
    EngineOptions {
        retry: RetryPolicy { max_attempts: 12, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) },
        ..EngineOptions::default()
    }
}

/// Everything that (transitively) waits for `root`.
fn downstream(graph: &Graph, root: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut changed = true;
    while changed {
        changed = false;
        for s in graph.ordered() {
            if !out.contains(&s.address) && graph.dependencies(&s.address).iter().any(|d| d == root || out.contains(d)) {
                out.insert(s.address.clone());
                changed = true;
            }
        }
    }
    out
}

#[tokio::test]
async fn injected_failures_stop_only_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let broken = "artifacts.r0002".to_string();
    let faults = Faults { retryable_fraction: 0.2, permanent: [broken.clone()].into(), ..Faults::default() };
    let (engine, _) = engine_over(dir.path(), tree_specs("bp", N), faults, fast_retry());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = events.clone();
        Arc::new(move |e: ApplyEvent| events.lock().unwrap().push(e))
    };
    let report = engine.apply(None, sink).await.unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].0, broken);
    assert!(report.failed[0].1.contains("injected permanent failure"));
    let expected_skipped = downstream(engine.graph(), &broken);
    assert!(!expected_skipped.is_empty());
    assert_eq!(report.skipped.iter().cloned().collect::<BTreeSet<_>>(), expected_skipped);
    assert_eq!(report.created.len(), N - 1 - expected_skipped.len(), "the rest was applied");
    // State records exactly what exists.
    let state = engine.state().unwrap();
    let files = reality(&dir.path().join("reality")).unwrap();
    let in_reality: BTreeSet<String> = files.iter().map(|f| f.address.clone()).collect();
    let in_state: BTreeSet<String> = state.resources.keys().cloned().collect();
    assert_eq!(in_reality, in_state);
    assert_eq!(in_state, report.created.iter().cloned().collect());
    let events = events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(e, ApplyEvent::Retrying { .. })), "20% transient failures should retry");
    assert!(events.iter().any(|e| matches!(e, ApplyEvent::Skipped { because, .. } if *because == broken)));
}

fn protected_specs() -> Vec<ResourceSpec> {
    let mut specs = tree_specs("bp", 4);
    specs[1].protect = true;
    specs
}

#[tokio::test]
async fn protected_resources_refuse_destroy_and_removal_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = engine_over(dir.path(), protected_specs(), Faults::default(), fast_retry());
    engine.apply(None, no_events()).await.unwrap();
    let protected = protected_specs()[1].address.clone();

    let err = engine.destroy(no_events()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains(&protected), "{err}");
    assert_eq!(reality(&dir.path().join("reality")).unwrap().len(), 4, "nothing destroyed");

    // The blueprint no longer declares it: protection lives in state, so still refused.
    let without: Vec<ResourceSpec> = protected_specs().into_iter().filter(|s| s.address != protected && s.depends_on.iter().all(|d| *d != protected)).collect();
    let kept = without.len();
    let (engine2, _) = engine_over(dir.path(), without.clone(), Faults::default(), fast_retry());
    let err = engine2.plan().await.unwrap_err();
    assert!(err.message().contains(&protected) && err.message().contains("protected"), "{err}");
    assert!(engine2.apply(None, no_events()).await.is_err());
    assert_eq!(reality(&dir.path().join("reality")).unwrap().len(), 4);

    let forced = EngineOptions { force: true, ..fast_retry() };
    let (engine3, _) = engine_over(dir.path(), without, Faults::default(), forced);
    let report = engine3.apply(None, no_events()).await.unwrap();
    assert!(report.deleted.contains(&protected), "{report:?}");
    assert_eq!(reality(&dir.path().join("reality")).unwrap().len(), kept);
    let report = engine3.destroy(no_events()).await.unwrap();
    assert_eq!(report.deleted.len(), kept);
    assert!(reality(&dir.path().join("reality")).unwrap().is_empty());
    assert!(engine3.state().unwrap().resources.is_empty());
}

#[tokio::test]
async fn saved_plan_applies_exactly_and_refuses_after_state_moved() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = engine_over(dir.path(), tree_specs("bp", 8), Faults::default(), fast_retry());
    let plan_path = dir.path().join("plan.json");
    let mut plan = engine.plan().await.unwrap();
    plan.lifecycle.push(galley_engine::LifecycleAction::RegisterVersion { model: "wine".into() });
    plan.save(&plan_path).unwrap();
    let plan = Plan::load(&plan_path).unwrap();
    assert_eq!(plan.count(ChangeKind::Create), 8);
    assert!(plan.render_human().contains("Plan: 8 to create, 0 to update, 0 to replace, 0 to destroy."));
    let report = engine.apply(Some(&plan), no_events()).await.unwrap();
    assert_eq!(report.created.len(), 8);

    // A plan made now, then the state moves (another apply), then the plan is refused.
    let mut specs = tree_specs("bp", 8);
    specs[0].desired["index"] = json!(100);
    let (engine2, _) = engine_over(dir.path(), specs.clone(), Faults::default(), fast_retry());
    let stale = engine2.plan().await.unwrap();
    assert_eq!(stale.count(ChangeKind::Update), 1);
    let mut specs3 = specs.clone();
    specs3[1].desired["index"] = json!(200);
    let (engine3, _) = engine_over(dir.path(), specs3, Faults::default(), fast_retry());
    engine3.apply(None, no_events()).await.unwrap();
    let before = std::fs::read(dir.path().join("state.json")).unwrap();
    let err = engine2.apply(Some(&stale), no_events()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains("Run `galley plan` again"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("state.json")).unwrap(), before);

    // A tampered plan file is refused.
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    v["unchanged"] = json!(42);
    std::fs::write(&plan_path, v.to_string()).unwrap();
    assert_eq!(Plan::load(&plan_path).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[tokio::test]
async fn update_and_replace_follow_replace_on() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = engine_over(dir.path(), tree_specs("bp", 4), Faults::default(), fast_retry());
    engine.apply(None, no_events()).await.unwrap();
    let before: HashMap<String, String> = reality(&dir.path().join("reality")).unwrap().into_iter().map(|r| (r.address, r.create_id)).collect();
    let mut specs = tree_specs("bp", 4);
    specs[0].desired["index"] = json!(7); // in place
    specs[1].desired["size"] = json!(2); // `size` is in replace_on
    let (engine2, _) = engine_over(dir.path(), specs.clone(), Faults::default(), fast_retry());
    let plan = engine2.plan().await.unwrap();
    let text = plan.render_human();
    assert!(text.contains(&format!("~ {}", specs[0].address)) && text.contains("~ index = 0 -> 7"), "{text}");
    assert!(text.contains(&format!("-/+ {}", specs[1].address)) && text.contains("`size`"), "{text}");
    assert!(text.contains("Plan: 0 to create, 1 to update, 1 to replace, 0 to destroy."), "{text}");
    let report = engine2.apply(Some(&plan), no_events()).await.unwrap();
    assert_eq!((report.updated.len(), report.replaced.len()), (1, 1));
    let after: HashMap<String, String> = reality(&dir.path().join("reality")).unwrap().into_iter().map(|r| (r.address, r.create_id)).collect();
    assert_eq!(after.len(), 4, "no duplicates after replace");
    assert_eq!(after[&specs[0].address], before[&specs[0].address], "update keeps the resource");
    assert_ne!(after[&specs[1].address], before[&specs[1].address], "replace makes a new one");
    assert!(!engine2.plan().await.unwrap().has_changes());
}

#[tokio::test]
async fn drift_reports_changed_and_vanished_and_refresh_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = engine_over(dir.path(), tree_specs("bp", 4), Faults::default(), fast_retry());
    engine.apply(None, no_events()).await.unwrap();
    let files = reality(&dir.path().join("reality")).unwrap();
    let (changed, vanished) = (&files[0], &files[1]);
    let path = |r: &testing::RealityRecord| dir.path().join("reality").join(format!("{}--{}.json", r.name, r.create_id));
    let mut edited = changed.clone();
    edited.attributes["size"] = json!(99);
    std::fs::write(path(changed), serde_json::to_vec(&edited).unwrap()).unwrap();
    std::fs::remove_file(path(vanished)).unwrap();

    let state_before = std::fs::read(dir.path().join("state.json")).unwrap();
    let mut drift = engine.drift().await.unwrap();
    drift.sort_by(|a, b| a.address.cmp(&b.address));
    assert_eq!(drift.len(), 2, "{drift:?}");
    let by: HashMap<_, _> = drift.iter().map(|d| (d.address.clone(), d.kind.clone())).collect();
    assert_eq!(by[&vanished.address], DriftKind::Vanished);
    match &by[&changed.address] {
        DriftKind::Changed { diffs } => {
            assert_eq!(diffs.len(), 1);
            assert_eq!((diffs[0].path.as_str(), diffs[0].old.clone(), diffs[0].new.clone()), ("size", Some(json!(1)), Some(json!(99))));
        }
        other => panic!("expected a change, got {other:?}"),
    }
    assert_eq!(std::fs::read(dir.path().join("state.json")).unwrap(), state_before, "drift only reports");

    // A refreshing plan sees reality without writing state.
    let refreshing = EngineOptions { refresh: true, ..fast_retry() };
    let (engine_r, _) = engine_over(dir.path(), tree_specs("bp", 4), Faults::default(), refreshing);
    let plan = engine_r.plan().await.unwrap();
    let change = |a: &str| plan.changes.iter().find(|c| c.address == a).cloned().unwrap();
    assert_eq!(change(&vanished.address).action, ChangeKind::Create);
    assert!(change(&vanished.address).reason.unwrap().contains("vanished"));
    assert_eq!(change(&changed.address).action, ChangeKind::Replace);
    assert_eq!(std::fs::read(dir.path().join("state.json")).unwrap(), state_before);

    let refreshed = engine.refresh().await.unwrap();
    assert_eq!(refreshed.len(), 2);
    let state = engine.state().unwrap();
    assert!(!state.resources.contains_key(&vanished.address));
    assert_eq!(state.resources[&changed.address].attributes["size"], json!(99));
    let plan = engine.plan().await.unwrap();
    let action = |a: &str| plan.changes.iter().find(|c| c.address == a).map(|c| c.action);
    assert_eq!(action(&vanished.address), Some(ChangeKind::Create));
    assert_eq!(action(&changed.address), Some(ChangeKind::Replace), "size is replace_on");
}

/// Terraform's promise, the plan is the run: a change made outside Galley to an in-place
/// attribute shows in a refreshing plan as an update, and apply carries it out, though state
/// still records the old (desired) value.
#[tokio::test]
async fn a_refreshing_apply_undoes_an_in_place_change_made_outside() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = engine_over(dir.path(), tree_specs("bp", 2), Faults::default(), fast_retry());
    engine.apply(None, no_events()).await.unwrap();
    let files = reality(&dir.path().join("reality")).unwrap();
    let changed = &files[0];
    let path = dir.path().join("reality").join(format!("{}--{}.json", changed.name, changed.create_id));
    let mut edited = changed.clone();
    edited.attributes["index"] = json!(41); // not in replace_on: an in-place update undoes it
    std::fs::write(&path, serde_json::to_vec(&edited).unwrap()).unwrap();

    let refreshing = EngineOptions { refresh: true, ..fast_retry() };
    let (engine_r, _) = engine_over(dir.path(), tree_specs("bp", 2), Faults::default(), refreshing);
    let plan = engine_r.plan().await.unwrap();
    let change = plan.changes.iter().find(|c| c.address == changed.address).cloned().unwrap();
    assert_eq!(change.action, ChangeKind::Update, "{}", plan.render_human());
    let report = engine_r.apply(Some(&plan), no_events()).await.unwrap();
    assert_eq!(report.updated.len(), 1);
    let now = reality(&dir.path().join("reality")).unwrap().into_iter().find(|r| r.address == changed.address).unwrap();
    assert_eq!(now.attributes["index"], changed.attributes["index"], "apply did what its plan showed");
    assert!(!engine_r.plan().await.unwrap().has_changes());
}

#[tokio::test]
async fn import_adopts_an_existing_resource() {
    let dir = tempfile::tempdir().unwrap();
    let specs = tree_specs("bp", 2);
    let (engine, handler) = engine_over(dir.path(), specs.clone(), Faults::default(), fast_retry());
    let owner = OwnerTag { blueprint: "elsewhere".into(), address: specs[0].address.clone(), lineage: "x".into() };
    let existing = handler.create(&specs[0], &owner).await.unwrap();

    assert!(engine.import("nope.nothing", &existing.id).await.unwrap_err().message().contains("not a resource"));
    assert!(engine.import(&specs[0].address, "wrong-id").await.unwrap_err().message().contains(&existing.id));
    assert!(engine.import(&specs[1].address, "any").await.unwrap_err().message().contains("nothing named"));
    engine.import(&specs[0].address, &existing.id).await.unwrap();
    let state = engine.state().unwrap();
    assert_eq!(state.resources[&specs[0].address].id, existing.id);
    assert_eq!(engine.import(&specs[0].address, &existing.id).await.unwrap_err().kind(), ErrorKind::Conflict);

    let report = engine.apply(None, no_events()).await.unwrap();
    assert_eq!(report.created, vec![specs[1].address.clone()], "the imported one is not created again");
    assert_eq!(reality(&dir.path().join("reality")).unwrap().len(), 2);
    assert_eq!(engine.outputs().unwrap()[&specs[0].address]["url"], json!(format!("test://{}", specs[0].name)));
}

#[tokio::test]
async fn stage_references_resolve_from_state_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let specs = tree_specs("bp", 8);
    let (engine, _) = engine_over(dir.path(), specs.clone(), Faults::default(), fast_retry());
    let plan = engine.plan().await.unwrap();
    assert!(plan.render_human().contains("(known after apply)"));
    engine.apply(None, no_events()).await.unwrap();
    let serving: Vec<_> = reality(&dir.path().join("reality")).unwrap().into_iter().filter(|r| r.address.starts_with("serving.")).collect();
    assert!(!serving.is_empty());
    for r in serving {
        assert_eq!(r.attributes["upstream"], json!("test://bp-artifacts-r0000"));
    }
    assert!(!engine.plan().await.unwrap().has_changes());
    let state = engine.state().unwrap();
    assert_eq!(state.outputs[Stage::Artifacts.as_str()]["url"], json!("test://bp-artifacts-r0000"));
}
