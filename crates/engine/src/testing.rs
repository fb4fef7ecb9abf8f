//! A test-only resource kind whose "reality" is a directory of JSON files, one per existing
//! resource, named `<name>--<create-id>.json`: a second create of the same resource shows up as
//! a second file, so tests can count duplicates and orphans in reality, not just in state.
//!
//! Injectable: per-call latency, a fraction of calls failing with a retryable error, addresses
//! that always fail permanently, and a kill point (`GALLEY_TEST_CRASH_AT`) that SIGKILLs the
//! process at a chosen moment:
//! - `before:N` — at the start of the N-th create call (its intent is in the journal, nothing
//!   exists yet);
//! - `mid:N` — in the N-th create, after the resource exists but before the call returns;
//! - `after:N` — when the N-th resource finishes (its result saved), via [`crash_sink`].
//!
//! Behind the `testing` feature; the CLI never enables it.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use galley_blueprint::Blueprint;
use galley_core::resource::{Address, Observed, OwnerTag, ResourceHandler, ResourceSpec};
use galley_core::{Error, ErrorKind, PlatformId, Result, Stage, StageSet};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::engine::{ApplyEvent, EventSink};
use crate::provider::Provider;

pub const TEST_KIND: &str = "test";
pub const CRASH_ENV: &str = "GALLEY_TEST_CRASH_AT";

/// Where to die, parsed from [`CRASH_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    Before(u64),
    Mid(u64),
    After(u64),
}

impl CrashPoint {
    pub fn parse(s: &str) -> Option<Self> {
        let (at, n) = s.split_once(':')?;
        let n: u64 = n.parse().ok()?;
        match at {
            "before" => Some(CrashPoint::Before(n)),
            "mid" => Some(CrashPoint::Mid(n)),
            "after" => Some(CrashPoint::After(n)),
            _ => None,
        }
    }
    pub fn from_env() -> Option<Self> {
        std::env::var(CRASH_ENV).ok().and_then(|s| Self::parse(&s))
    }
}

/// Dies like `kill -9`: no destructors, no flushing, the lock file left behind.
pub fn kill_self() -> ! {
    #[cfg(unix)]
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

/// Wraps `inner` so the process is killed when the N-th resource finishes (`after:N`).
pub fn crash_sink(inner: EventSink) -> EventSink {
    let Some(CrashPoint::After(n)) = CrashPoint::from_env() else { return inner };
    let finished = AtomicU64::new(0);
    Arc::new(move |e: ApplyEvent| {
        let is_finish = matches!(e, ApplyEvent::Finished { .. });
        inner(e);
        if is_finish && finished.fetch_add(1, Ordering::SeqCst) + 1 == n {
            kill_self();
        }
    })
}

/// One file of reality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealityRecord {
    pub create_id: String,
    pub name: String,
    pub address: Address,
    pub owner: String,
    pub attributes: Json,
}

/// Every resource that exists in `dir`, sorted by name.
pub fn reality(dir: &Path) -> Result<Vec<RealityRecord>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if file.starts_with('.') || !file.ends_with(".json") {
            continue;
        }
        let bytes = fs::read(&path)?;
        out.push(serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(format!("reality file {}: {e}", path.display())))?);
    }
    out.sort_by(|a: &RealityRecord, b| (&a.name, &a.create_id).cmp(&(&b.name, &b.create_id)));
    Ok(out)
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub latency: Duration,
    /// Probability that a create/update/delete call fails with a retryable error first.
    pub retryable_fraction: f64,
    /// Seeds the draws that pick which calls fail, so a run's failures repeat run after run
    /// (a test that asserts "some call was retried" must not depend on luck).
    pub seed: u64,
    /// Creates of these addresses always fail with a permanent error.
    pub permanent: HashSet<Address>,
}

pub struct TestHandler {
    dir: PathBuf,
    faults: Faults,
    crash: Option<CrashPoint>,
    creates: AtomicU64,
    replace_on: Vec<&'static str>,
    draws: std::sync::Mutex<fastrand::Rng>,
}

impl TestHandler {
    /// A handler over the reality directory `dir`; the crash point comes from the environment.
    pub fn new(dir: impl Into<PathBuf>, faults: Faults) -> Self {
        TestHandler {
            dir: dir.into(),
            crash: CrashPoint::from_env(),
            creates: AtomicU64::new(0),
            replace_on: vec!["size"],
            draws: std::sync::Mutex::new(fastrand::Rng::with_seed(faults.seed)),
            faults,
        }
    }

    fn file(&self, name: &str, id: &str) -> PathBuf {
        self.dir.join(format!("{name}--{id}.json"))
    }

    async fn call(&self, what: &str, spec: &ResourceSpec) -> Result<()> {
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        if self.faults.retryable_fraction > 0.0 && self.draws.lock().unwrap().f64() < self.faults.retryable_fraction {
            return Err(Error::new(ErrorKind::Unavailable, format!("injected transient failure of {what} `{}`", spec.name)));
        }
        Ok(())
    }

    /// Writes a reality file atomically, off the async threads (like a real handler must).
    async fn write(&self, record: &RealityRecord) -> Result<()> {
        let (dir, path) = (self.dir.clone(), self.file(&record.name, &record.create_id));
        let bytes = serde_json::to_vec_pretty(record)?;
        blocking(move || {
            fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
            fs::write(&tmp, bytes)?;
            fs::rename(&tmp, &path)?;
            Ok(())
        })
        .await
    }

    async fn find(&self, name: &str) -> Result<Vec<RealityRecord>> {
        let (dir, name) = (self.dir.clone(), name.to_string());
        blocking(move || Ok(reality(&dir)?.into_iter().filter(|r| r.name == name).collect())).await
    }

    fn observed(record: &RealityRecord) -> Observed {
        let outputs: BTreeMap<String, Json> = [
            ("url".to_string(), json!(format!("test://{}", record.name))),
            ("name".to_string(), json!(record.name)),
        ]
        .into_iter()
        .collect();
        Observed { id: record.create_id.clone(), attributes: record.attributes.clone(), outputs }
    }
}

#[async_trait]
impl ResourceHandler for TestHandler {
    fn kind(&self) -> &str {
        TEST_KIND
    }

    fn replace_on(&self) -> &[&str] {
        &self.replace_on
    }

    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let found = self.find(&spec.name).await?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(Self::observed(one))),
            many => Err(Error::conflict(format!(
                "{} resources are named `{}` (duplicates): {}",
                many.len(),
                spec.name,
                many.iter().map(|r| r.create_id.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let n = self.creates.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash == Some(CrashPoint::Before(n)) {
            kill_self();
        }
        self.call("create", spec).await?;
        if self.faults.permanent.contains(&spec.address) {
            return Err(Error::invalid(format!("injected permanent failure creating `{}`", spec.name)));
        }
        let record = RealityRecord {
            create_id: uuid::Uuid::new_v4().simple().to_string(),
            name: spec.name.clone(),
            address: spec.address.clone(),
            owner: owner.value(),
            attributes: spec.desired.clone(),
        };
        self.write(&record).await?;
        if self.crash == Some(CrashPoint::Mid(n)) {
            kill_self();
        }
        Ok(Self::observed(&record))
    }

    async fn update(&self, spec: &ResourceSpec, current: &Observed) -> Result<Observed> {
        self.call("update", spec).await?;
        let mut record = self
            .find(&spec.name)
            .await?
            .into_iter()
            .find(|r| r.create_id == current.id)
            .ok_or_else(|| Error::not_found(format!("`{}` ({}) does not exist", spec.name, current.id)))?;
        record.attributes = spec.desired.clone();
        self.write(&record).await?;
        Ok(Self::observed(&record))
    }

    async fn delete(&self, spec: &ResourceSpec, current: &Observed) -> Result<()> {
        self.call("delete", spec).await?;
        let path = self.file(&spec.name, &current.id);
        blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("test handler task failed: {e}")))?
}

/// A provider expanding to a fixed list of test resources (filtered by the stages asked for).
pub struct TestProvider {
    pub platform: PlatformId,
    pub specs: Vec<ResourceSpec>,
    pub handler: Arc<TestHandler>,
}

#[async_trait]
impl Provider for TestProvider {
    fn rules(&self) -> Arc<dyn galley_blueprint::PlatformRules> {
        Arc::new(TestRules(self.platform))
    }
    fn expand(&self, _blueprint: &Blueprint, stages: &[Stage]) -> Result<Vec<ResourceSpec>> {
        Ok(self.specs.iter().filter(|s| stages.contains(&s.stage)).cloned().collect())
    }
    fn handler(&self, kind: &str) -> Option<Arc<dyn ResourceHandler>> {
        (kind == TEST_KIND).then(|| self.handler.clone() as Arc<dyn ResourceHandler>)
    }
    async fn open(&self, _: &Blueprint, _: &BTreeMap<String, BTreeMap<String, Json>>) -> Result<StageSet> {
        Err(Error::unsupported("the test provider has no runtime stages"))
    }
}

/// The rules of a test platform: nothing optional, no settings, no naming rules.
pub struct TestRules(pub PlatformId);

impl galley_blueprint::PlatformRules for TestRules {
    fn id(&self) -> PlatformId {
        self.0
    }
    fn summary(&self) -> &'static str {
        "a test platform whose resources are JSON files"
    }
    fn capabilities(&self) -> galley_core::Capabilities {
        galley_core::Capabilities::new(self.0, &[])
    }
    fn cargo_feature(&self) -> &'static str {
        "testing"
    }
}

/// A test resource spec named `<blueprint>-<address with . as ->`.
pub fn test_spec(blueprint: &str, address: &str, stage: Stage, desired: Json, depends_on: &[String]) -> ResourceSpec {
    ResourceSpec {
        address: address.to_string(),
        kind: TEST_KIND.to_string(),
        platform: PlatformId::from_static("local"),
        stage,
        name: format!("{blueprint}-{}", address.replace('.', "-")),
        desired,
        depends_on: depends_on.to_vec(),
        protect: false,
    }
}

/// `n` resources: a binary tree of `depends_on` edges in the artifacts stage, plus (for n ≥ 8)
/// the last quarter in the serving stage, referencing `${stages.artifacts.outputs.url}` so
/// they wait for every artifacts resource.
pub fn tree_specs(blueprint: &str, n: usize) -> Vec<ResourceSpec> {
    let serving_from = if n >= 8 { n - n / 4 } else { n };
    (0..n)
        .map(|i| {
            let address = format!("r{i:04}");
            if i >= serving_from {
                let desired = json!({"index": i, "size": 1, "upstream": "${stages.artifacts.outputs.url}"});
                let address = format!("serving.{address}");
                test_spec(blueprint, &address, Stage::Serving, desired, &[])
            } else {
                let deps = if i == 0 { vec![] } else { vec![format!("artifacts.r{:04}", (i - 1) / 2)] };
                test_spec(blueprint, &format!("artifacts.{address}"), Stage::Artifacts, json!({"index": i, "size": 1}), &deps)
            }
        })
        .collect()
}

/// `n` independent resources (for benchmarks).
pub fn independent_specs(blueprint: &str, n: usize) -> Vec<ResourceSpec> {
    (0..n)
        .map(|i| test_spec(blueprint, &format!("artifacts.r{i:05}"), Stage::Artifacts, json!({"index": i, "size": 1}), &[]))
        .collect()
}

/// The benchmarks' workload (the engine's bench and `galley-bench plan` measure the same
/// thing): `n` test resources in a binary tree of `depends_on` edges.
pub fn bench_tree(n: usize) -> Vec<ResourceSpec> {
    let mut specs = independent_specs("bench", n);
    for i in 1..n {
        let parent = specs[(i - 1) / 2].address.clone();
        specs[i].depends_on.push(parent);
    }
    specs
}

/// An engine over test resources with a fixed per-call `latency`, no retries.
pub fn bench_engine(
    specs: Vec<ResourceSpec>,
    backend: crate::MemoryBackend,
    reality: &Path,
    latency: Duration,
    parallelism: usize,
) -> Result<crate::Engine> {
    let handler: Arc<dyn ResourceHandler> = Arc::new(TestHandler::new(reality, Faults { latency, ..Faults::default() }));
    let handlers = std::collections::HashMap::from([(TEST_KIND.to_string(), handler)]);
    let graph = crate::Graph::new("bench", specs)?;
    let opts = crate::EngineOptions {
        parallelism,
        per_platform: parallelism,
        retry: galley_core::RetryPolicy::none(),
        ..crate::EngineOptions::default()
    };
    Ok(crate::Engine::new(graph, handlers, Box::new(backend), opts))
}

/// A state in which every one of `specs` already exists as desired (a no-change plan).
pub fn applied_state(specs: &[ResourceSpec]) -> crate::State {
    let mut state = crate::State::new();
    for s in specs {
        let observed = Observed { id: s.name.clone(), attributes: s.desired.clone(), outputs: Default::default() };
        state.record(s, observed, crate::state::spec_hash(s));
    }
    state
}
