//! The engine: plan, apply, destroy, drift, refresh and import over a locked state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use galley_blueprint::Blueprint;
use galley_core::resource::{Address, ChangeKind, Observed, ResourceHandler, ResourceSpec};
use galley_core::{Error, ErrorKind, PlatformId, Result, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::diff;
use crate::graph::{Graph, resolve_refs};
use crate::plan::{AttrDiff, Plan, ResourceChange};
use crate::provider::Providers;
use crate::state::{LockInfo, PendingOp, State, StateBackend, spec_hash};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Operations in flight at once, across all platforms.
    pub parallelism: usize,
    /// Operations in flight at once on any one platform, so one cloud's rate limit does not
    /// stall another's work.
    pub per_platform: usize,
    /// `None`: fail at once when another process holds the state; `Some(t)`: wait up to `t`.
    pub lock_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// Destroy or replace protected resources anyway.
    pub force: bool,
    /// Read reality before planning (drift becomes part of the plan).
    pub refresh: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            parallelism: 10,
            per_platform: 10,
            lock_timeout: None,
            retry: RetryPolicy::default(),
            force: false,
            refresh: false,
        }
    }
}

/// Progress of an apply or destroy, for the CLI to render as lines, bars or JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ApplyEvent {
    Started { address: Address, action: ChangeKind },
    Retrying { address: Address, attempt: u32, error: String },
    Finished { address: Address, action: ChangeKind, duration: Duration },
    Failed { address: Address, error: String },
    /// Not attempted because `because` (a dependency) failed.
    Skipped { address: Address, because: Address },
}

pub type EventSink = Arc<dyn Fn(ApplyEvent) + Send + Sync>;

/// A sink that drops every event.
pub fn no_events() -> EventSink {
    Arc::new(|_| {})
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub created: Vec<Address>,
    pub updated: Vec<Address>,
    pub replaced: Vec<Address>,
    pub deleted: Vec<Address>,
    /// Permanent failures (or retries exhausted), with the error.
    pub failed: Vec<(Address, String)>,
    /// Not attempted because a dependency failed.
    pub skipped: Vec<Address>,
}

impl ApplyReport {
    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

/// Reality differs from state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub address: Address,
    pub kind: DriftKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "drift", rename_all = "snake_case")]
pub enum DriftKind {
    /// Exists, with different attributes (`old`: recorded, `new`: observed).
    Changed { diffs: Vec<AttrDiff> },
    /// Recorded in state, gone from the platform.
    Vanished,
}

pub struct Engine {
    pub(crate) graph: Graph,
    handlers: HashMap<String, Arc<dyn ResourceHandler>>,
    providers: Option<Providers>,
    pub(crate) backend: Box<dyn StateBackend>,
    pub(crate) opts: EngineOptions,
}

/// Holds the state lock; releases it when dropped, on every path out.
pub(crate) struct LockGuard<'a> {
    backend: &'a dyn StateBackend,
    id: String,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = blocking(|| self.backend.unlock(&self.id)) {
            tracing::warn!("could not release the state lock {}: {e}", self.id);
        }
    }
}

/// The state being changed, shared by the operations in flight. Every change is durable before
/// `update` returns (serial + 1 per save). Saves are group-committed: changes made while a save
/// is being prepared ride along with it, so N operations starting together cost one save, not
/// N — the state file, not the platforms, would otherwise bound a parallel apply.
pub(crate) struct Journal<'a> {
    state: Mutex<Changes>,
    backend: &'a dyn StateBackend,
    /// One save at a time; waiters whose change was already saved return at once.
    flusher: tokio::sync::Mutex<()>,
    saved: std::sync::atomic::AtomicU64,
}

struct Changes {
    state: State,
    /// Bumped by every change; `saved` says up to which change the backend has.
    generation: u64,
}

impl<'a> Journal<'a> {
    pub(crate) fn new(state: State, backend: &'a dyn StateBackend) -> Self {
        Journal {
            state: Mutex::new(Changes { state, generation: 0 }),
            backend,
            flusher: tokio::sync::Mutex::new(()),
            saved: std::sync::atomic::AtomicU64::new(0),
        }
    }
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.lock().unwrap_or_else(|p| p.into_inner()).state)
    }
    /// Applies `f` and returns once the change is saved.
    pub(crate) async fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R> {
        let (r, generation) = {
            let mut c = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let r = f(&mut c.state);
            c.generation += 1;
            (r, c.generation)
        };
        self.flush(generation).await?;
        Ok(r)
    }

    async fn flush(&self, generation: u64) -> Result<()> {
        use std::sync::atomic::Ordering;
        let _one_at_a_time = self.flusher.lock().await;
        if self.saved.load(Ordering::SeqCst) >= generation {
            return Ok(());
        }
        // Let operations that are ready right now add their changes to this save.
        tokio::task::yield_now().await;
        // Save a snapshot, not the shared state: the mutex is never held across the backend
        // call, so operations keep recording their changes (for the next save) meanwhile.
        let (snapshot, covers) = {
            let c = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut snapshot = c.state.clone();
            snapshot.serial += 1;
            snapshot.refresh_outputs();
            (snapshot, c.generation)
        };
        match blocking(|| self.backend.save(&snapshot)) {
            Ok(()) => {
                let mut c = self.state.lock().unwrap_or_else(|p| p.into_inner());
                c.state.serial = c.state.serial.max(snapshot.serial);
                drop(c);
                self.saved.fetch_max(covers, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(Error::new(e.kind(), format!("could not save state {}: {}", self.backend.describe(), e))),
        }
    }
}

/// Runs a state-backend call (which blocks: a file write, or the S3 backend waiting on its
/// helper thread) from async code without stalling the Tokio worker it is on. On a
/// multi-threaded runtime `block_in_place` hands the worker's other tasks to another thread
/// first; on a current-thread runtime it would panic (there is no other thread), so there —
/// and outside any runtime — the call runs directly. `spawn_blocking` is no option: the
/// journal and the lock guard borrow the backend, so the call is not `'static`.
fn blocking<R>(call: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(call),
        _ => call(),
    }
}

impl Engine {
    pub fn new(
        graph: Graph,
        handlers: HashMap<String, Arc<dyn ResourceHandler>>,
        state: Box<dyn StateBackend>,
        opts: EngineOptions,
    ) -> Self {
        Engine { graph, handlers, providers: None, backend: state, opts }
    }

    /// The engine for `bp` over `providers`: expands every declared stage and collects the
    /// handlers of every kind used.
    pub fn for_blueprint(
        bp: &Blueprint,
        providers: &Providers,
        state: Box<dyn StateBackend>,
        opts: EngineOptions,
    ) -> Result<Self> {
        let graph = Graph::from_blueprint(bp, providers)?;
        let mut handlers = HashMap::new();
        for spec in graph.ordered() {
            if handlers.contains_key(&spec.kind) {
                continue;
            }
            let h = providers.get(spec.platform)?.handler(&spec.kind).ok_or_else(|| {
                Error::internal(format!(
                    "platform `{}` expanded `{}` to kind `{}` but has no handler for it",
                    spec.platform, spec.address, spec.kind
                ))
            })?;
            handlers.insert(spec.kind.clone(), h);
        }
        Ok(Engine { graph, handlers, providers: Some(providers.clone()), backend: state, opts })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    pub(crate) fn handler(&self, kind: &str, platform: PlatformId) -> Result<Arc<dyn ResourceHandler>> {
        if let Some(h) = self.handlers.get(kind) {
            return Ok(h.clone());
        }
        if let Some(h) = self.providers.as_ref().and_then(|p| p.get(platform).ok()).and_then(|p| p.handler(kind)) {
            return Ok(h);
        }
        Err(Error::unsupported(format!(
            "no handler for resource kind `{kind}` on platform `{platform}`; is that platform built into this galley?"
        )))
    }

    /// The current state (an empty one when none exists yet).
    pub fn state(&self) -> Result<State> {
        Ok(blocking(|| self.backend.load())?.unwrap_or_default())
    }

    /// Sets up where state lives (`galley init`); see [`StateBackend::init`].
    pub fn init_backend(&self) -> Result<String> {
        blocking(|| self.backend.init())
    }

    /// Where state lives, for messages: a path, `s3://bucket/key`, …
    pub fn describe_backend(&self) -> String {
        self.backend.describe()
    }

    /// The blueprint's resources that `state` does not hold yet, in graph order.
    pub fn not_in_state<'a>(&'a self, state: &State) -> Vec<&'a str> {
        self.graph.ordered().map(|s| s.address.as_str()).filter(|a| !state.resources.contains_key(*a)).collect()
    }

    /// Outputs of every resource in state, by address.
    pub fn outputs(&self) -> Result<BTreeMap<Address, BTreeMap<String, Json>>> {
        Ok(self.state()?.resource_outputs())
    }

    pub(crate) async fn lock(&self, operation: &str) -> Result<LockGuard<'_>> {
        let info = LockInfo::new(operation);
        let started = Instant::now();
        loop {
            match blocking(|| self.backend.lock(&info)) {
                Ok(()) => return Ok(LockGuard { backend: self.backend.as_ref(), id: info.id }),
                Err(e) if e.kind() == ErrorKind::Conflict => match self.opts.lock_timeout {
                    Some(t) if started.elapsed() < t => {
                        let left = t.saturating_sub(started.elapsed());
                        tokio::time::sleep(left.min(Duration::from_millis(200))).await;
                    }
                    Some(t) => {
                        return Err(Error::conflict(format!("{} (gave up after waiting {:?})", e.message(), t)));
                    }
                    None => {
                        return Err(Error::conflict(format!(
                            "{}. If it is still running, wait for it to finish or set a lock timeout to wait for it",
                            e.message()
                        )));
                    }
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// The spec for a resource in state: the blueprint's (references resolved) when it still
    /// declares it, else what state recorded.
    /// The spec to read `address` with: what the state says exists. The blueprint's spec is
    /// used only while it names the same thing (kind, platform, name); when the blueprint moved
    /// the address elsewhere (another platform, a new name), the old resource still has to be
    /// read — and replaced — under its recorded identity, or it would be orphaned.
    fn spec_for(&self, address: &str, state: &State) -> Option<ResourceSpec> {
        let recorded = state.resources.get(address);
        match (self.graph.get(address), recorded) {
            (Some(spec), Some(r)) if r.kind == spec.kind && r.platform == spec.platform && r.name == spec.name => {
                let mut spec = spec.clone();
                let _ = resolve_refs(&mut spec.desired, &state.stage_outputs());
                Some(spec)
            }
            (_, Some(r)) => Some(r.to_spec(address)),
            (Some(spec), None) => Some(spec.clone()),
            (None, None) => None,
        }
    }

    /// Settles the journal: each operation a crash interrupted is resolved by reading what
    /// exists under its deterministic name. Returns whether anything changed.
    pub(crate) async fn settle_pending(&self, state: &mut State) -> Result<bool> {
        let pending: Vec<_> = std::mem::take(&mut state.pending).into_iter().collect();
        let changed = !pending.is_empty();
        for (address, entry) in pending {
            let handler = self.handler(&entry.spec.kind, entry.spec.platform)?;
            let found = handler.read(&entry.spec).await.map_err(|e| {
                Error::new(
                    e.kind(),
                    format!(
                        "cannot settle the interrupted {:?} of `{address}` (reading `{}` failed): {e}. Fix access and run again; state is unchanged",
                        entry.operation, entry.spec.name
                    ),
                )
                .resource(address.clone())
            });
            let found = match found {
                Ok(f) => f,
                Err(e) => {
                    state.pending.insert(address, entry);
                    return Err(e);
                }
            };
            match (entry.operation, found) {
                (PendingOp::Create, Some(obs)) => {
                    tracing::info!(resource = %address, "adopting `{}`, created by an interrupted apply", entry.spec.name);
                    let hash = spec_hash(&entry.spec);
                    state.record(&entry.spec, obs, hash);
                }
                (PendingOp::Create, None) => {}
                (PendingOp::Update, Some(obs)) => {
                    let hash = state.resources.get(&address).map(|r| r.spec_hash.clone()).unwrap_or_default();
                    state.record(&entry.spec, obs, hash);
                }
                (PendingOp::Update | PendingOp::Delete, None) => {
                    state.resources.remove(&address);
                }
                (PendingOp::Delete, Some(obs)) => {
                    if let Some(r) = state.resources.get_mut(&address) {
                        r.attributes = obs.attributes;
                        r.outputs = obs.outputs;
                        r.id = obs.id;
                        r.spec_hash.clear();
                    }
                }
            }
        }
        Ok(changed)
    }

    /// Reads every resource in state, `parallelism` at a time.
    async fn observe_all(&self, state: &State) -> Result<HashMap<Address, Option<Observed>>> {
        let jobs: Vec<(Address, ResourceSpec)> =
            state.resources.keys().filter_map(|a| self.spec_for(a, state).map(|s| (a.clone(), s))).collect();
        let results: Vec<Result<(Address, Option<Observed>)>> = futures::stream::iter(jobs)
            .map(|(address, spec)| async move {
                let handler = self.handler(&spec.kind, spec.platform)?;
                let obs = self
                    .opts
                    .retry
                    .run(|| handler.read(&spec), |_, _| {})
                    .await
                    .map_err(|e| e.resource(address.clone()).operation("read"))?;
                Ok((address, obs))
            })
            .buffer_unordered(self.opts.parallelism.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// What apply would do now. Does not lock or write state.
    pub async fn plan(&self) -> Result<Plan> {
        let loaded = blocking(|| self.backend.load())?;
        let lineage = loaded.as_ref().map(|s| s.lineage.clone());
        let mut state = loaded.unwrap_or_default();
        let serial = state.serial;
        self.settle_pending(&mut state).await?;
        self.compute_plan(&state, lineage, serial).await
    }

    pub(crate) async fn compute_plan(&self, state: &State, lineage: Option<String>, serial: u64) -> Result<Plan> {
        let observed = if self.opts.refresh { Some(self.observe_all(state).await?) } else { None };
        let outputs = state.stage_outputs();
        let mut changes = Vec::new();
        let mut unchanged = 0;
        let mut protected = Vec::new();
        for spec in self.graph.ordered() {
            let deps = self.graph.dependencies(&spec.address);
            let mut resolved = spec.clone();
            let resolvable = resolve_refs(&mut resolved.desired, &outputs).is_ok();
            let change = |action, diffs, reason: Option<String>| ResourceChange {
                address: spec.address.clone(),
                action,
                kind: spec.kind.clone(),
                platform: spec.platform,
                stage: spec.stage,
                name: spec.name.clone(),
                protect: spec.protect,
                depends_on: deps.clone(),
                dependents: Vec::new(),
                diffs,
                reason,
                spec: Some(spec.clone()),
            };
            let desired = if resolvable { &resolved.desired } else { &spec.desired };
            let Some(prior) = state.resources.get(&spec.address) else {
                changes.push(change(ChangeKind::Create, diff::top_level(desired, true), None));
                continue;
            };
            let actual = match observed.as_ref().map(|o| o.get(&spec.address)) {
                Some(Some(None)) => {
                    let diffs = diff::top_level(desired, true);
                    changes.push(change(ChangeKind::Create, diffs, Some("vanished outside galley; will be created again".into())));
                    continue;
                }
                Some(Some(Some(obs))) => &obs.attributes,
                _ => &prior.attributes,
            };
            let protect_changed = prior.protect != spec.protect;
            if observed.is_none() && resolvable && !protect_changed && spec_hash(&resolved) == prior.spec_hash {
                unchanged += 1;
                continue;
            }
            if prior.name != spec.name || prior.kind != spec.kind || prior.platform != spec.platform {
                if (prior.protect || spec.protect) && !self.opts.force {
                    protected.push(spec.address.clone());
                }
                let diffs = diff::desired_vs_actual(desired, actual);
                let reason = if prior.name != spec.name {
                    format!("replace because its name changed: `{}` → `{}`", prior.name, spec.name)
                } else {
                    format!("replace because it moves from {} `{}` to {} `{}`", prior.platform, prior.kind, spec.platform, spec.kind)
                };
                changes.push(change(ChangeKind::Replace, diffs, Some(reason)));
                continue;
            }
            let diffs = diff::desired_vs_actual(desired, actual);
            if diffs.is_empty() {
                if protect_changed {
                    changes.push(change(ChangeKind::Update, diffs, Some("protection changed".into())));
                } else {
                    unchanged += 1;
                }
                continue;
            }
            let handler = self.handler(&spec.kind, spec.platform)?;
            let forcing: Vec<&str> = diffs
                .iter()
                .filter(|d| {
                    let top = d.path.split(['.', '[']).next().unwrap_or("");
                    handler.replace_on().iter().any(|r| *r == d.path || *r == top)
                })
                .map(|d| d.path.as_str())
                .collect();
            if forcing.is_empty() {
                changes.push(change(ChangeKind::Update, diffs, None));
            } else {
                if (prior.protect || spec.protect) && !self.opts.force {
                    protected.push(spec.address.clone());
                }
                let reason = format!("replace because `{}` cannot change in place", forcing.join("`, `"));
                changes.push(change(ChangeKind::Replace, diffs, Some(reason)));
            }
        }
        let gone: Vec<&Address> = state.resources.keys().filter(|a| !self.graph.contains(a)).collect();
        let gone_set: HashSet<&Address> = gone.iter().copied().collect();
        let mut deletes = Vec::new();
        for address in gone.iter().rev() {
            let r = &state.resources[*address];
            if r.protect && !self.opts.force {
                protected.push((*address).clone());
            }
            let dependents = state
                .resources
                .iter()
                .filter(|(a, other)| gone_set.contains(a) && other.depends_on.contains(address))
                .map(|(a, _)| a.clone())
                .collect();
            deletes.push(delete_change(address, r, dependents));
        }
        if !protected.is_empty() {
            protected.sort();
            return Err(Error::conflict(format!(
                "refusing to destroy or replace protected resources: {}. Protection is recorded in state, so removing a protected block from the blueprint does not lift it; pass --force if you really mean it",
                protected.join(", ")
            )));
        }
        changes.extend(deletes);
        Ok(Plan::new(self.graph.blueprint(), lineage, serial, changes, unchanged))
    }

    /// Applies `plan` (exactly it, if it still matches the state) or, with `None`, a fresh plan.
    pub async fn apply(&self, plan: Option<&Plan>, events: EventSink) -> Result<ApplyReport> {
        let _lock = self.lock("apply").await?;
        let loaded = blocking(|| self.backend.load())?;
        if let Some(plan) = plan {
            plan.verify()?;
            check_plan_matches(plan, loaded.as_ref(), &self.backend.describe())?;
            if plan.blueprint != self.graph.blueprint() {
                return Err(Error::invalid(format!(
                    "plan was made for blueprint `{}`, not `{}`",
                    plan.blueprint,
                    self.graph.blueprint()
                )));
            }
        }
        let lineage = loaded.as_ref().map(|s| s.lineage.clone());
        let mut state = loaded.unwrap_or_default();
        let serial = state.serial;
        let journal = {
            let settled = self.settle_pending(&mut state).await?;
            let j = Journal::new(state, self.backend.as_ref());
            if settled {
                j.update(|_| ()).await?;
            }
            j
        };
        let computed;
        let plan: &Plan = match plan {
            Some(p) => p,
            None => {
                let snapshot = journal.read(|s| s.clone());
                computed = self.compute_plan(&snapshot, lineage, serial).await?;
                &computed
            }
        };
        let report = crate::exec::execute(self, &journal, &plan.changes, events).await;
        Ok(report)
    }

    /// Destroys every resource in state, dependents first.
    pub async fn destroy(&self, events: EventSink) -> Result<ApplyReport> {
        let _lock = self.lock("destroy").await?;
        let Some(mut state) = blocking(|| self.backend.load())? else {
            return Ok(ApplyReport::default());
        };
        let settled = self.settle_pending(&mut state).await?;
        let mut protected: Vec<&Address> = state.resources.iter().filter(|(_, r)| r.protect).map(|(a, _)| a).collect();
        if !protected.is_empty() && !self.opts.force {
            protected.sort();
            let list: Vec<&str> = protected.iter().map(|a| a.as_str()).collect();
            return Err(Error::conflict(format!(
                "refusing to destroy protected resources: {}; pass --force to destroy them too",
                list.join(", ")
            )));
        }
        let changes: Vec<ResourceChange> = state
            .resources
            .iter()
            .map(|(address, r)| {
                let dependents = state
                    .resources
                    .iter()
                    .filter(|(_, other)| other.depends_on.contains(address))
                    .map(|(a, _)| a.clone())
                    .collect();
                delete_change(address, r, dependents)
            })
            .collect();
        let journal = Journal::new(state, self.backend.as_ref());
        if settled {
            journal.update(|_| ()).await?;
        }
        Ok(crate::exec::execute(self, &journal, &changes, events).await)
    }

    fn drift_of(&self, state: &State, observed: &HashMap<Address, Option<Observed>>) -> Vec<Drift> {
        let mut out = Vec::new();
        for (address, r) in &state.resources {
            match observed.get(address) {
                Some(None) => out.push(Drift { address: address.clone(), kind: DriftKind::Vanished }),
                Some(Some(obs)) => {
                    let diffs = diff::full(&r.attributes, &obs.attributes);
                    if !diffs.is_empty() {
                        out.push(Drift { address: address.clone(), kind: DriftKind::Changed { diffs } });
                    }
                }
                None => {}
            }
        }
        out
    }

    /// Compares every resource in state with reality. Reports only; state is not written.
    pub async fn drift(&self) -> Result<Vec<Drift>> {
        let state = self.state()?;
        let observed = self.observe_all(&state).await?;
        Ok(self.drift_of(&state, &observed))
    }

    /// Like [`Engine::drift`], then records reality in state (vanished resources are forgotten).
    pub async fn refresh(&self) -> Result<Vec<Drift>> {
        let _lock = self.lock("refresh").await?;
        let Some(mut state) = blocking(|| self.backend.load())? else {
            return Ok(Vec::new());
        };
        let settled = self.settle_pending(&mut state).await?;
        let observed = self.observe_all(&state).await?;
        let drift = self.drift_of(&state, &observed);
        if drift.is_empty() && !settled {
            return Ok(drift);
        }
        let journal = Journal::new(state, self.backend.as_ref());
        journal.update(|s| {
            for d in &drift {
                match (&d.kind, observed.get(&d.address)) {
                    (DriftKind::Vanished, _) => {
                        s.resources.remove(&d.address);
                    }
                    (DriftKind::Changed { .. }, Some(Some(obs))) => {
                        if let Some(r) = s.resources.get_mut(&d.address) {
                            let mut attributes = obs.attributes.clone();
                            crate::secrets::strip_secrets(&mut attributes);
                            r.attributes = attributes;
                            r.id = obs.id.clone();
                            r.outputs = obs.outputs.clone();
                            r.outputs.retain(|k, _| !crate::secrets::looks_secret(k));
                            // Reality moved away from what was applied: the next plan must diff.
                            r.spec_hash.clear();
                        }
                    }
                    _ => {}
                }
            }
        })
        .await?;
        Ok(drift)
    }

    /// Adopts an existing resource: `address` must be in the blueprint's graph, and what
    /// exists under its deterministic name must have platform id `id`.
    pub async fn import(&self, address: &str, id: &str) -> Result<()> {
        let spec = self.graph.get(address).ok_or_else(|| {
            Error::invalid(format!("`{address}` is not a resource of blueprint `{}`; see `galley plan` for the addresses", self.graph.blueprint()))
        })?;
        let _lock = self.lock("import").await?;
        let mut state = blocking(|| self.backend.load())?.unwrap_or_default();
        self.settle_pending(&mut state).await?;
        if let Some(r) = state.resources.get(address) {
            return Err(Error::conflict(format!("`{address}` is already managed by galley (id `{}`); nothing to import", r.id)));
        }
        let mut spec = spec.clone();
        resolve_refs(&mut spec.desired, &state.stage_outputs())?;
        let handler = self.handler(&spec.kind, spec.platform)?;
        let found = self.opts.retry.run(|| handler.read(&spec), |_, _| {}).await.map_err(|e| e.resource(address))?;
        let obs = found.ok_or_else(|| {
            Error::not_found(format!("nothing named `{}` exists for `{address}`; there is nothing to import", spec.name))
        })?;
        if obs.id != id {
            return Err(Error::invalid(format!(
                "`{address}` (name `{}`) exists with id `{}`, not `{id}`; import the id that exists",
                spec.name, obs.id
            )));
        }
        // The hash of an empty document: the next plan diffs the real attributes against the
        // blueprint instead of assuming they match.
        let journal = Journal::new(state, self.backend.as_ref());
        journal.update(|s| s.record(&spec, obs, String::new())).await?;
        Ok(())
    }
}

fn delete_change(address: &Address, r: &crate::state::ResourceState, dependents: Vec<Address>) -> ResourceChange {
    ResourceChange {
        address: address.clone(),
        action: ChangeKind::Delete,
        kind: r.kind.clone(),
        platform: r.platform,
        stage: r.stage,
        name: r.name.clone(),
        protect: r.protect,
        depends_on: Vec::new(),
        dependents,
        diffs: diff::top_level(&r.attributes, false),
        reason: None,
        spec: None,
    }
}

fn check_plan_matches(plan: &Plan, state: Option<&State>, where_: &str) -> Result<()> {
    let now = state.map(|s| (s.lineage.as_str(), s.serial));
    let then = plan.lineage.as_deref().map(|l| (l, plan.serial));
    let moved = match (then, now) {
        (None, None) => false,
        (Some((l1, s1)), Some((l2, s2))) => l1 != l2 || s1 != s2,
        _ => true,
    };
    if moved {
        let show = |x: Option<(&str, u64)>| match x {
            Some((l, s)) => format!("serial {s} of lineage {l}"),
            None => "no state".to_string(),
        };
        return Err(Error::conflict(format!(
            "the saved plan was made against {} but state {where_} is now at {}: something changed it since. Run `galley plan` again",
            show(then),
            show(now)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryBackend;

    fn assert_send<T: Send>(_: &T) {}

    /// The CLI spawns these futures on a multi-threaded runtime.
    #[test]
    fn engine_futures_are_send() {
        let graph = Graph::new("bp", Vec::new()).unwrap();
        let engine = Engine::new(graph, HashMap::new(), Box::new(MemoryBackend::new()), EngineOptions::default());
        assert_send(&engine.apply(None, no_events()));
        assert_send(&engine.destroy(no_events()));
        assert_send(&engine.plan());
        assert_send(&engine.refresh());
        assert_send(&engine.import("a", "b"));
    }

    /// A backend whose save completes only once another task has read the journal while the
    /// save is under way.
    struct WaitsForAReader {
        inner: MemoryBackend,
        started: Arc<tokio::sync::Notify>,
        read_during_save: std::sync::Mutex<std::sync::mpsc::Receiver<u64>>,
    }

    impl StateBackend for WaitsForAReader {
        fn describe(&self) -> String {
            "test".into()
        }
        fn load(&self) -> Result<Option<State>> {
            self.inner.load()
        }
        fn save(&self, state: &State) -> Result<()> {
            self.started.notify_one();
            let rx = self.read_during_save.lock().unwrap();
            rx.recv_timeout(Duration::from_secs(5))
                .map_err(|_| Error::internal("nothing could read the journal while the state was being saved"))?;
            self.inner.save(state)
        }
        fn lock(&self, info: &LockInfo) -> Result<()> {
            self.inner.lock(info)
        }
        fn unlock(&self, id: &str) -> Result<()> {
            self.inner.unlock(id)
        }
        fn lock_holder(&self) -> Result<Option<LockInfo>> {
            self.inner.lock_holder()
        }
    }

    /// A save blocks neither the runtime's only worker nor the journal: another task runs and
    /// reads the state (still at the old serial) while the backend is writing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_save_in_progress_blocks_neither_the_worker_nor_the_journal() {
        let (tx, rx) = std::sync::mpsc::channel();
        let started = Arc::new(tokio::sync::Notify::new());
        let backend: &'static WaitsForAReader = Box::leak(Box::new(WaitsForAReader {
            inner: MemoryBackend::new(),
            started: started.clone(),
            read_during_save: std::sync::Mutex::new(rx),
        }));
        let journal: &'static Journal<'static> = Box::leak(Box::new(Journal::new(State::new(), backend)));
        let reader = tokio::spawn(async move {
            started.notified().await;
            let _ = tx.send(journal.read(|s| s.serial));
        });
        // On a worker (a test's own body runs on the thread that called block_on).
        tokio::spawn(journal.update(|s| s.outputs.clear())).await.unwrap().unwrap();
        reader.await.unwrap();
        assert_eq!(journal.read(|s| s.serial), 1, "the shared serial follows a successful save");
        assert_eq!(backend.load().unwrap().unwrap().serial, 1);
    }

    /// A failed save leaves the shared serial where it was, so the next save reuses it.
    #[tokio::test]
    async fn a_failed_save_leaves_the_serial() {
        let (tx, rx) = std::sync::mpsc::channel();
        drop(tx);
        let backend = WaitsForAReader {
            inner: MemoryBackend::new(),
            started: Arc::new(tokio::sync::Notify::new()),
            read_during_save: std::sync::Mutex::new(rx),
        };
        let journal = Journal::new(State::new(), &backend);
        assert!(journal.update(|_| ()).await.is_err());
        assert_eq!(journal.read(|s| s.serial), 0);
    }

    #[tokio::test]
    async fn group_commit_saves_once_for_concurrent_changes() {
        let backend = MemoryBackend::new();
        let journal = Journal::new(State::new(), &backend);
        let changes = (0..20).map(|i| {
            let j = &journal;
            let spec = ResourceSpec {
                address: format!("a.r{i}"),
                kind: "test".into(),
                platform: PlatformId::from_static("local"),
                stage: galley_core::Stage::Artifacts,
                name: format!("r{i}"),
                desired: Json::Null,
                depends_on: Vec::new(),
                protect: false,
            };
            let observed = Observed { id: format!("id{i}"), attributes: Json::Null, outputs: BTreeMap::new() };
            async move { j.update(|s| s.record(&spec, observed, String::new())).await }
        });
        futures::future::try_join_all(changes).await.unwrap();
        let saved = backend.load().unwrap().unwrap();
        assert_eq!(saved.resources.len(), 20, "every change is saved");
        assert!(saved.serial < 20, "20 concurrent changes took {} saves", saved.serial);
        assert!(saved.serial >= 1);
    }
}
