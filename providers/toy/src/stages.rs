//! The toy's seven stages, in memory for the life of the process. Small on purpose: what a
//! platform shares with every other comes from the shared crates (the DAG runner, the drift
//! scorer, galley-ml's scoring), and the behaviour suite checks the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use galley_core::stages::*;
use galley_core::{Capabilities, DType, Error, Result, RetryPolicy, StageSet, Table, Value};
use galley_pipeline::{CacheEntry, RunJournal, RunnerOptions, dag};
use tokio_util::sync::CancellationToken;

/// Locks a mutex, shrugging off poisoning (a panicking case must not fail the next one).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A run's record and its metric history by key.
type RunRecord = (Run, BTreeMap<String, Vec<Metric>>);

/// Every stage's data for one world; worlds are shared by name within the process.
#[derive(Default)]
pub struct World {
    objects: Mutex<BTreeMap<String, (Bytes, TimestampMs)>>,
    groups: Mutex<BTreeMap<String, (FeatureGroupSpec, u64)>>,
    experiments: Mutex<BTreeMap<String, String>>,
    runs: Mutex<BTreeMap<String, RunRecord>>,
    pipelines: Mutex<BTreeMap<String, PipelineSpec>>,
    executors: Mutex<HashMap<String, Arc<dyn StepExecutor>>>,
    pipeline_runs: Mutex<BTreeMap<String, PipelineRun>>,
    logs: Mutex<BTreeMap<(String, String), Vec<String>>>,
    cache: Mutex<BTreeMap<(String, String), CacheEntry>>,
    cancels: Mutex<HashMap<String, CancellationToken>>,
    models: Mutex<BTreeMap<String, Vec<ModelVersion>>>,
    endpoints: Mutex<BTreeMap<String, EndpointSpec>>,
    monitors: Mutex<BTreeMap<String, Monitored>>,
}

#[derive(Default, Clone)]
struct Monitored {
    baseline: Option<(Table, Vec<f64>)>,
    columns: BTreeMap<String, Vec<f64>>,
    predictions: Vec<f64>,
    samples: usize,
    gauges: Vec<Gauge>,
}

static WORLDS: LazyLock<Mutex<HashMap<String, Arc<World>>>> = LazyLock::new(Default::default);

/// One world as a stage object of each kind.
#[derive(Clone)]
pub struct Toy(Arc<World>);

impl World {
    /// The world called `name`, created empty on first use.
    pub fn named(name: &str) -> Arc<World> {
        lock(&WORLDS).entry(name.to_owned()).or_default().clone()
    }

    pub fn stages(self: Arc<Self>) -> StageSet {
        let t = Arc::new(Toy(self));
        StageSet {
            artifacts: t.clone(),
            features: t.clone(),
            experiments: t.clone(),
            orchestrator: t.clone(),
            registry: t.clone(),
            serving: t.clone(),
            monitor: t,
        }
    }
}

impl Described for Toy {
    fn capabilities(&self) -> Capabilities {
        crate::capabilities()
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[async_trait]
impl ArtifactStore for Toy {
    async fn put(&self, key: &ArtifactKey, mut body: ByteStream) -> Result<ArtifactMeta> {
        // The whole body first: a failed upload leaves the previous content.
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        let now = now_ms();
        let bytes = Bytes::from(buf);
        lock(&self.0.objects).insert(key.to_string(), (bytes.clone(), now));
        Ok(meta(key.as_str(), &bytes, now))
    }

    async fn get(&self, key: &ArtifactKey) -> Result<ByteStream> {
        let found = lock(&self.0.objects).get(key.as_str()).map(|(b, _)| b.clone());
        found.map(stream_from_bytes).ok_or_else(|| Error::not_found(format!("no artifact `{key}`")))
    }

    async fn head(&self, key: &ArtifactKey) -> Result<ArtifactMeta> {
        let found = lock(&self.0.objects).get(key.as_str()).cloned();
        found.map(|(b, t)| meta(key.as_str(), &b, t)).ok_or_else(|| Error::not_found(format!("no artifact `{key}`")))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactMeta>> {
        let objects = lock(&self.0.objects);
        // BTreeMap order is key order.
        Ok(objects.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, (b, t))| meta(k, b, *t)).collect())
    }

    async fn delete(&self, key: &ArtifactKey) -> Result<()> {
        lock(&self.0.objects).remove(key.as_str());
        Ok(())
    }

    async fn copy(&self, from: &ArtifactKey, to: &ArtifactKey) -> Result<ArtifactMeta> {
        let bytes = self.get_bytes(from).await?;
        self.put_bytes(to, bytes).await
    }
}

fn meta(key: &str, bytes: &Bytes, modified_ms: TimestampMs) -> ArtifactMeta {
    ArtifactMeta { key: key.to_owned(), size: bytes.len() as u64, sha256: sha256(bytes), uri: format!("toy://{key}"), modified_ms, encryption: None }
}

#[async_trait]
impl FeatureStore for Toy {
    async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<()> {
        let mut groups = lock(&self.0.groups);
        match groups.get(&spec.name) {
            Some((existing, _)) if existing == spec => Ok(()),
            Some(_) => Err(Error::conflict(format!("feature group `{}` exists with another definition", spec.name))),
            None => {
                groups.insert(spec.name.clone(), (spec.clone(), 0));
                Ok(())
            }
        }
    }

    async fn describe_group(&self, name: &str) -> Result<Option<FeatureGroupSpec>> {
        Ok(lock(&self.0.groups).get(name).map(|(s, _)| s.clone()))
    }

    async fn delete_group(&self, name: &str) -> Result<()> {
        lock(&self.0.groups).remove(name);
        Ok(())
    }

    /// Checks the rows against the group and counts them; the toy keeps no feature values.
    async fn ingest(&self, group: &str, rows: &Table) -> Result<u64> {
        let mut groups = lock(&self.0.groups);
        let (spec, count) = groups.get_mut(group).ok_or_else(|| Error::not_found(format!("no feature group `{group}`")))?;
        for required in [spec.entity.name.as_str(), spec.event_time.as_str()] {
            if rows.column_index(required).is_none() {
                return Err(Error::invalid(format!("rows for `{group}` have no `{required}` column")));
            }
        }
        for c in &rows.columns {
            if c.name == spec.entity.name || c.name == spec.event_time {
                continue;
            }
            let declared = spec.features.iter().find(|f| f.name == c.name).ok_or_else(|| {
                Error::invalid(format!("column `{}` is not a feature of `{group}`", c.name))
            })?;
            if declared.dtype != c.dtype && !(declared.dtype == DType::Float && c.dtype == DType::Int) {
                return Err(Error::invalid(format!("column `{}` is {}, the feature is {}", c.name, c.dtype, declared.dtype)));
            }
        }
        *count += rows.len() as u64;
        Ok(rows.len() as u64)
    }

    async fn materialize(&self, group: &str, _up_to: TimestampMs) -> Result<u64> {
        Err(Error::unsupported(format!("feature group `{group}`: the toy platform has no online store")))
    }

    async fn get_online(&self, group: &str, _keys: &[Value], _features: &[String]) -> Result<Vec<Option<Vec<Value>>>> {
        Err(Error::unsupported(format!("feature group `{group}`: the toy platform has no online store")))
    }

    async fn get_historical(&self, group: &str, _entities: &Table, _features: &[String]) -> Result<Table> {
        Err(Error::unsupported(format!("feature group `{group}`: the toy platform keeps no feature values")))
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

#[async_trait]
impl ExperimentTracker for Toy {
    async fn create_experiment(&self, name: &str) -> Result<String> {
        Ok(lock(&self.0.experiments).entry(name.to_owned()).or_insert_with(|| new_id("exp")).clone())
    }

    async fn get_experiment(&self, name: &str) -> Result<Option<String>> {
        Ok(lock(&self.0.experiments).get(name).cloned())
    }

    async fn delete_experiment(&self, name: &str) -> Result<()> {
        lock(&self.0.experiments).remove(name);
        lock(&self.0.runs).retain(|_, (r, _)| r.experiment != name);
        Ok(())
    }

    async fn start_run(&self, experiment: &str, name: Option<&str>, tags: &BTreeMap<String, String>) -> Result<String> {
        self.create_experiment(experiment).await?;
        let id = new_id("run");
        let run = Run {
            id: id.clone(),
            experiment: experiment.to_owned(),
            name: name.map(str::to_owned),
            status: RunStatus::Running,
            start_ms: now_ms(),
            end_ms: None,
            params: BTreeMap::new(),
            metrics: BTreeMap::new(),
            tags: tags.clone(),
            artifacts: BTreeMap::new(),
        };
        lock(&self.0.runs).insert(id.clone(), (run, BTreeMap::new()));
        Ok(id)
    }

    async fn log_params(&self, run: &str, params: &BTreeMap<String, String>) -> Result<()> {
        self.open_run(run, |r, _| r.params.extend(params.clone()))
    }

    async fn log_metrics(&self, run: &str, metrics: &[Metric]) -> Result<()> {
        self.open_run(run, |r, history| {
            for m in metrics {
                history.entry(m.key.clone()).or_default().push(m.clone());
            }
            for (key, points) in history.iter() {
                // The latest value: highest step, then newest.
                if let Some(last) = points.iter().max_by_key(|m| (m.step, m.timestamp_ms)) {
                    r.metrics.insert(key.clone(), last.value);
                }
            }
        })
    }

    async fn set_tags(&self, run: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        self.with_run(run, |r, _| r.tags.extend(tags.clone()))
    }

    async fn log_artifact(&self, run: &str, name: &str, uri: &str) -> Result<()> {
        self.with_run(run, |r, _| {
            r.artifacts.insert(name.to_owned(), uri.to_owned());
        })
    }

    async fn end_run(&self, run: &str, status: RunStatus) -> Result<()> {
        self.with_run(run, |r, _| {
            r.status = status;
            r.end_ms = Some(now_ms().max(r.start_ms));
        })
    }

    async fn get_run(&self, run: &str) -> Result<Run> {
        lock(&self.0.runs).get(run).map(|(r, _)| r.clone()).ok_or_else(|| Error::not_found(format!("no run `{run}`")))
    }

    async fn metric_history(&self, run: &str, key: &str) -> Result<Vec<Metric>> {
        let runs = lock(&self.0.runs);
        let (_, history) = runs.get(run).ok_or_else(|| Error::not_found(format!("no run `{run}`")))?;
        let mut points = history.get(key).cloned().unwrap_or_default();
        points.sort_by_key(|m| (m.step, m.timestamp_ms));
        Ok(points)
    }

    async fn search_runs(&self, experiment: &str, _query: &RunQuery) -> Result<Vec<Run>> {
        Err(Error::unsupported(format!("experiment `{experiment}`: the toy platform does not search runs")))
    }
}

impl Toy {
    fn with_run(&self, run: &str, f: impl FnOnce(&mut Run, &mut BTreeMap<String, Vec<Metric>>)) -> Result<()> {
        let mut runs = lock(&self.0.runs);
        let (r, history) = runs.get_mut(run).ok_or_else(|| Error::not_found(format!("no run `{run}`")))?;
        f(r, history);
        Ok(())
    }

    /// Like `with_run`, for what an ended run refuses.
    fn open_run(&self, run: &str, f: impl FnOnce(&mut Run, &mut BTreeMap<String, Vec<Metric>>)) -> Result<()> {
        let mut runs = lock(&self.0.runs);
        let (r, history) = runs.get_mut(run).ok_or_else(|| Error::not_found(format!("no run `{run}`")))?;
        if r.status != RunStatus::Running {
            return Err(Error::conflict(format!("run `{run}` has ended; it takes no more params or metrics")));
        }
        f(r, history);
        Ok(())
    }
}

/// The toy's run records, logs and cache, in the world.
struct ToyJournal(Arc<World>);

struct ToyLog {
    world: Arc<World>,
    key: (String, String),
}

impl StepLogger for ToyLog {
    fn line(&self, message: &str) {
        lock(&self.world.logs).entry(self.key.clone()).or_default().push(message.to_owned());
    }
}

#[async_trait]
impl RunJournal for ToyJournal {
    async fn save(&self, run: &PipelineRun) -> Result<()> {
        lock(&self.0.pipeline_runs).insert(run.id.clone(), run.clone());
        Ok(())
    }

    fn step_log(&self, run: &str, step: &str) -> Arc<dyn StepLogger> {
        Arc::new(ToyLog { world: self.0.clone(), key: (run.to_owned(), step.to_owned()) })
    }

    async fn cache_get(&self, pipeline: &str, step: &str) -> Result<Option<CacheEntry>> {
        Ok(lock(&self.0.cache).get(&(pipeline.to_owned(), step.to_owned())).cloned())
    }

    async fn cache_put(&self, pipeline: &str, step: &str, entry: &CacheEntry) -> Result<()> {
        lock(&self.0.cache).insert((pipeline.to_owned(), step.to_owned()), entry.clone());
        Ok(())
    }
}

#[async_trait]
impl Orchestrator for Toy {
    async fn upsert_pipeline(&self, spec: &PipelineSpec) -> Result<()> {
        dag::validate(spec)?;
        lock(&self.0.pipelines).insert(spec.name.clone(), spec.clone());
        Ok(())
    }

    async fn describe_pipeline(&self, name: &str) -> Result<Option<PipelineSpec>> {
        Ok(lock(&self.0.pipelines).get(name).cloned())
    }

    async fn delete_pipeline(&self, name: &str) -> Result<()> {
        lock(&self.0.pipelines).remove(name);
        lock(&self.0.cache).retain(|(p, _), _| p != name);
        Ok(())
    }

    async fn start(&self, pipeline: &str, trigger: Option<Trigger>, params: &BTreeMap<String, String>) -> Result<String> {
        let spec = self.describe_pipeline(pipeline).await?.ok_or_else(|| Error::not_found(format!("no pipeline `{pipeline}`")))?;
        let exec = lock(&self.0.executors)
            .get(pipeline)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("pipeline `{pipeline}` has no step executor in this process")))?;
        let id = new_id("toyrun");
        let run = galley_pipeline::new_run(&spec, &id, trigger, params, now_ms());
        let journal = Arc::new(ToyJournal(self.0.clone()));
        journal.save(&run).await?;
        let cancel = CancellationToken::new();
        lock(&self.0.cancels).insert(id.clone(), cancel.clone());
        let world = self.0.clone();
        let options = RunnerOptions { retry: RetryPolicy { base_delay: std::time::Duration::from_millis(5), ..RetryPolicy::default() }, ..RunnerOptions::default() };
        let run_id = id.clone();
        tokio::spawn(async move {
            galley_pipeline::execute(&spec, run, exec, journal, &options, cancel).await;
            lock(&world.cancels).remove(&run_id);
        });
        Ok(id)
    }

    async fn status(&self, run: &str) -> Result<PipelineRun> {
        lock(&self.0.pipeline_runs).get(run).cloned().ok_or_else(|| Error::not_found(format!("no pipeline run `{run}`")))
    }

    async fn list_runs(&self, pipeline: &str) -> Result<Vec<PipelineRun>> {
        let mut runs: Vec<PipelineRun> = lock(&self.0.pipeline_runs).values().filter(|r| r.pipeline == pipeline).cloned().collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.started_ms));
        Ok(runs)
    }

    async fn logs(&self, run: &str, step: Option<&str>) -> Result<String> {
        let record = self.status(run).await?;
        let logs = lock(&self.0.logs);
        let mut out = String::new();
        for s in record.steps.iter().filter(|s| step.is_none_or(|want| want == s.name)) {
            for line in logs.get(&(run.to_owned(), s.name.clone())).into_iter().flatten() {
                out.push_str(line);
                out.push('\n');
            }
        }
        Ok(out)
    }

    async fn cancel(&self, run: &str) -> Result<()> {
        let token = lock(&self.0.cancels).get(run).cloned();
        match token {
            Some(t) => {
                t.cancel();
                Ok(())
            }
            None => self.status(run).await.map(|_| ()),
        }
    }

    fn attach_executor(&self, pipeline: &str, executor: Arc<dyn StepExecutor>) -> Result<()> {
        lock(&self.0.executors).insert(pipeline.to_owned(), executor);
        Ok(())
    }
}

#[async_trait]
impl ModelRegistry for Toy {
    async fn create_model(&self, name: &str, _description: Option<&str>) -> Result<()> {
        lock(&self.0.models).entry(name.to_owned()).or_default();
        Ok(())
    }

    async fn delete_model(&self, name: &str) -> Result<()> {
        lock(&self.0.models).remove(name);
        Ok(())
    }

    async fn model_exists(&self, name: &str) -> Result<bool> {
        Ok(lock(&self.0.models).contains_key(name))
    }

    async fn register_version(&self, model: &str, version: &NewModelVersion) -> Result<ModelVersion> {
        let mut models = lock(&self.0.models);
        let versions = models.get_mut(model).ok_or_else(|| Error::not_found(format!("no model `{model}`")))?;
        let v = ModelVersion {
            model: model.to_owned(),
            version: versions.len() as u64 + 1,
            artifact_uri: version.artifact_uri.clone(),
            metrics: version.metrics.clone(),
            lineage: version.lineage.clone(),
            signature: version.signature.clone(),
            approval: ApprovalStatus::PendingManualApproval,
            aliases: Vec::new(),
            created_ms: now_ms(),
        };
        versions.push(v.clone());
        Ok(v)
    }

    async fn get_version(&self, model: &str, version: u64) -> Result<ModelVersion> {
        lock(&self.0.models)
            .get(model)
            .and_then(|vs| vs.iter().find(|v| v.version == version).cloned())
            .ok_or_else(|| Error::not_found(format!("no version {version} of model `{model}`")))
    }

    async fn list_versions(&self, model: &str) -> Result<Vec<ModelVersion>> {
        lock(&self.0.models).get(model).cloned().ok_or_else(|| Error::not_found(format!("no model `{model}`")))
    }

    async fn set_approval(&self, model: &str, _version: u64, _status: ApprovalStatus) -> Result<()> {
        Err(Error::unsupported(format!("model `{model}`: the toy platform promotes by alias, not approval")))
    }

    async fn set_alias(&self, model: &str, alias: &str, version: u64) -> Result<()> {
        let mut models = lock(&self.0.models);
        let versions = models.get_mut(model).ok_or_else(|| Error::not_found(format!("no model `{model}`")))?;
        if !versions.iter().any(|v| v.version == version) {
            return Err(Error::not_found(format!("no version {version} of model `{model}`")));
        }
        for v in versions.iter_mut() {
            v.aliases.retain(|a| a != alias);
            if v.version == version {
                v.aliases.push(alias.to_owned());
            }
        }
        Ok(())
    }

    async fn remove_alias(&self, model: &str, alias: &str) -> Result<()> {
        if let Some(versions) = lock(&self.0.models).get_mut(model) {
            for v in versions.iter_mut() {
                v.aliases.retain(|a| a != alias);
            }
        }
        Ok(())
    }

    async fn get_by_alias(&self, model: &str, alias: &str) -> Result<Option<ModelVersion>> {
        Ok(lock(&self.0.models).get(model).and_then(|vs| vs.iter().find(|v| v.aliases.iter().any(|a| a == alias)).cloned()))
    }
}

#[async_trait]
impl Serving for Toy {
    async fn deploy(&self, spec: &EndpointSpec) -> Result<EndpointInfo> {
        galley_core::stages::refuse_scaling(spec, "toy")?;
        check_weights(&spec.name, spec.variants.iter().map(|v| v.weight))?;
        for v in &spec.variants {
            self.model(&v.artifact_uri).await?;
        }
        lock(&self.0.endpoints).insert(spec.name.clone(), spec.clone());
        Ok(info(spec))
    }

    async fn describe(&self, endpoint: &str) -> Result<Option<EndpointInfo>> {
        Ok(lock(&self.0.endpoints).get(endpoint).map(info))
    }

    /// Scores with the variant a weighted draw picks, through galley-ml (the model's own scorer).
    async fn invoke(&self, endpoint: &str, rows: &Table) -> Result<Prediction> {
        let spec = lock(&self.0.endpoints).get(endpoint).cloned().ok_or_else(|| Error::not_found(format!("no endpoint `{endpoint}`")))?;
        let total: u32 = spec.variants.iter().map(|v| v.weight).sum();
        let mut draw = fastrand::u32(..total.max(1));
        let variant = spec
            .variants
            .iter()
            .find(|v| {
                if draw < v.weight {
                    true
                } else {
                    draw -= v.weight;
                    false
                }
            })
            .ok_or_else(|| Error::internal(format!("endpoint `{endpoint}` has no variant taking traffic")))?;
        let model = self.model(&variant.artifact_uri).await?;
        // As every model server answers: class labels for a classifier, values for a regressor.
        let predictions = model.predict(rows)?.into_iter().map(|s| model.label(s)).collect();
        Ok(Prediction { predictions, variant: variant.name.clone() })
    }

    async fn shift_traffic(&self, endpoint: &str, weights: &[(String, u32)]) -> Result<EndpointInfo> {
        let mut endpoints = lock(&self.0.endpoints);
        let spec = endpoints.get_mut(endpoint).ok_or_else(|| Error::not_found(format!("no endpoint `{endpoint}`")))?;
        let shifted = shifted_weights(endpoint, &spec.variants, weights)?;
        for (v, (_, weight)) in spec.variants.iter_mut().zip(shifted) {
            v.weight = weight;
        }
        Ok(info(spec))
    }

    async fn undeploy(&self, endpoint: &str) -> Result<()> {
        lock(&self.0.endpoints).remove(endpoint);
        Ok(())
    }
}

impl Toy {
    async fn model(&self, uri: &str) -> Result<galley_ml::TrainedModel> {
        let key = uri.strip_prefix("toy://").ok_or_else(|| Error::invalid(format!("the toy serves models from its own store (`toy://…`), not `{uri}`")))?;
        galley_ml::TrainedModel::from_bytes(&self.get_bytes(&ArtifactKey::new(key)?).await?)
    }
}

fn info(spec: &EndpointSpec) -> EndpointInfo {
    EndpointInfo {
        name: spec.name.clone(),
        url: format!("toy://endpoints/{}", spec.name),
        state: EndpointState::InService,
        variants: spec.variants.clone(),
        signature: spec.signature.clone(),
        scaling: None,
    }
}

#[async_trait]
impl Monitor for Toy {
    async fn set_baseline(&self, monitor: &str, features: &Table, predictions: &[f64]) -> Result<()> {
        check_batch(monitor, features, predictions)?;
        lock(&self.0.monitors).entry(monitor.to_owned()).or_default().baseline = Some((features.clone(), predictions.to_vec()));
        Ok(())
    }

    async fn record(&self, monitor: &str, inputs: &Table, predictions: &[f64]) -> Result<()> {
        check_batch(monitor, inputs, predictions)?;
        let mut monitors = lock(&self.0.monitors);
        let m = monitors.entry(monitor.to_owned()).or_default();
        for (j, c) in inputs.columns.iter().enumerate() {
            m.columns.entry(c.name.clone()).or_default().extend(inputs.rows.iter().filter_map(|r| r.get(j).and_then(Value::as_f64)));
        }
        m.predictions.extend_from_slice(predictions);
        m.samples += inputs.len();
        Ok(())
    }

    async fn drift(&self, monitor: &str, config: &DriftConfig) -> Result<DriftReport> {
        let m = lock(&self.0.monitors).get(monitor).cloned().unwrap_or_default();
        let (baseline, predictions) = m.baseline.ok_or_else(|| Error::not_found(format!("monitor `{monitor}` has no baseline")))?;
        Ok(galley_ml::drift_report(monitor, &baseline, &predictions, &m.columns, &m.predictions, m.samples, config))
    }

    async fn publish(&self, monitor: &str, gauges: &[Gauge]) -> Result<()> {
        lock(&self.0.monitors).entry(monitor.to_owned()).or_default().gauges.extend_from_slice(gauges);
        Ok(())
    }

    async fn delete(&self, monitor: &str) -> Result<()> {
        lock(&self.0.monitors).remove(monitor);
        Ok(())
    }
}

fn check_batch(monitor: &str, t: &Table, predictions: &[f64]) -> Result<()> {
    if t.len() != predictions.len() {
        return Err(Error::invalid(format!("monitor `{monitor}`: {} rows but {} predictions", t.len(), predictions.len())));
    }
    Ok(())
}
