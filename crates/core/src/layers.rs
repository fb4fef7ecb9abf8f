//! Layers around stage objects, as OpenDAL wraps its services: behaviour every platform should
//! have, written once, applied to any [`StageSet`].
//!
//! [`RetryLayer`] retries the calls that are safe to repeat (reads, and writes that land the
//! same whatever the number of attempts: put-by-key, delete, upsert, set-alias) when they fail
//! with a retryable error, with [`RetryPolicy`]'s backoff; and bounds each attempt of a quick
//! call by a timeout, so a hung connection becomes a retryable `Timeout` instead of a hang.
//! Calls that would duplicate something if repeated (registering a version, starting a run,
//! appending metrics, ingesting rows) and calls that legitimately take long (deploying an
//! endpoint, a managed training job) pass through once, untimed: their own platform code owns
//! their idempotency and waiting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::stages::*;
use crate::table::{Table, Value};
use crate::{Capabilities, Error, ErrorKind, Result, RetryPolicy, StageSet};

/// Retries and per-attempt timeouts for stage calls.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    pub policy: RetryPolicy,
    /// Bound on one attempt of a quick call.
    pub timeout: Duration,
}

impl Default for RetryLayer {
    fn default() -> Self {
        RetryLayer { policy: RetryPolicy { max_attempts: 3, ..RetryPolicy::default() }, timeout: Duration::from_secs(120) }
    }
}

impl RetryLayer {
    /// `stages` with every stage object wrapped.
    pub fn layer(&self, stages: StageSet) -> StageSet {
        let l = Arc::new(self.clone());
        StageSet {
            artifacts: Arc::new(Layered { inner: stages.artifacts, layer: l.clone() }),
            features: Arc::new(Layered { inner: stages.features, layer: l.clone() }),
            experiments: Arc::new(Layered { inner: stages.experiments, layer: l.clone() }),
            orchestrator: Arc::new(Layered { inner: stages.orchestrator, layer: l.clone() }),
            registry: Arc::new(Layered { inner: stages.registry, layer: l.clone() }),
            serving: Arc::new(Layered { inner: stages.serving, layer: l.clone() }),
            monitor: Arc::new(Layered { inner: stages.monitor, layer: l }),
        }
    }

    /// A repeatable call: each attempt timed, retryable failures retried.
    async fn retried<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.policy.run(|| self.timed(what, call()), |_, _| {}).await
    }

    /// One attempt, bounded by the timeout.
    async fn timed<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(ErrorKind::Timeout, format!("{what} did not answer within {} s", self.timeout.as_secs()))),
        }
    }
}

/// A stage object behind a [`RetryLayer`].
pub struct Layered<T: ?Sized> {
    inner: Arc<T>,
    layer: Arc<RetryLayer>,
}

impl<T: Described + ?Sized> Described for Layered<T> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// `retried!(self, "what", inner => inner.method(args))`: a repeatable call through the layer.
macro_rules! retried {
    ($self:ident, $what:expr, $inner:ident => $call:expr) => {{
        let $inner = &$self.inner;
        $self.layer.retried($what, || $call).await
    }};
}

/// `timed!(self, "what", call)`: one timed attempt.
macro_rules! timed {
    ($self:ident, $what:expr, $call:expr) => {
        $self.layer.timed($what, $call).await
    };
}

#[async_trait]
impl<T: ArtifactStore + ?Sized> ArtifactStore for Layered<T> {
    /// One attempt: the body is a stream and cannot be replayed.
    async fn put(&self, key: &ArtifactKey, body: ByteStream) -> Result<ArtifactMeta> {
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &ArtifactKey) -> Result<ByteStream> {
        retried!(self, "get", s => s.get(key))
    }
    async fn head(&self, key: &ArtifactKey) -> Result<ArtifactMeta> {
        retried!(self, "head", s => s.head(key))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactMeta>> {
        retried!(self, "list", s => s.list(prefix))
    }
    async fn delete(&self, key: &ArtifactKey) -> Result<()> {
        retried!(self, "delete", s => s.delete(key))
    }
    async fn copy(&self, from: &ArtifactKey, to: &ArtifactKey) -> Result<ArtifactMeta> {
        retried!(self, "copy", s => s.copy(from, to))
    }
    async fn versions(&self, key: &ArtifactKey) -> Result<Vec<ArtifactVersion>> {
        retried!(self, "versions", s => s.versions(key))
    }
    async fn get_version(&self, key: &ArtifactKey, version_id: &str) -> Result<ByteStream> {
        retried!(self, "get_version", s => s.get_version(key, version_id))
    }
}

#[async_trait]
impl<T: FeatureStore + ?Sized> FeatureStore for Layered<T> {
    async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<()> {
        retried!(self, "create_group", s => s.create_group(spec))
    }
    async fn describe_group(&self, name: &str) -> Result<Option<FeatureGroupSpec>> {
        retried!(self, "describe_group", s => s.describe_group(name))
    }
    async fn delete_group(&self, name: &str) -> Result<()> {
        retried!(self, "delete_group", s => s.delete_group(name))
    }
    /// One attempt: rows appended twice would be counted twice.
    async fn ingest(&self, group: &str, rows: &Table) -> Result<u64> {
        timed!(self, "ingest", self.inner.ingest(group, rows))
    }
    async fn materialize(&self, group: &str, up_to: TimestampMs) -> Result<u64> {
        retried!(self, "materialize", s => s.materialize(group, up_to))
    }
    async fn get_online(&self, group: &str, keys: &[Value], features: &[String]) -> Result<Vec<Option<Vec<Value>>>> {
        retried!(self, "get_online", s => s.get_online(group, keys, features))
    }
    async fn get_historical(&self, group: &str, entities: &Table, features: &[String]) -> Result<Table> {
        retried!(self, "get_historical", s => s.get_historical(group, entities, features))
    }
}

#[async_trait]
impl<T: ExperimentTracker + ?Sized> ExperimentTracker for Layered<T> {
    async fn create_experiment(&self, name: &str) -> Result<String> {
        retried!(self, "create_experiment", s => s.create_experiment(name))
    }
    async fn get_experiment(&self, name: &str) -> Result<Option<String>> {
        retried!(self, "get_experiment", s => s.get_experiment(name))
    }
    async fn delete_experiment(&self, name: &str) -> Result<()> {
        retried!(self, "delete_experiment", s => s.delete_experiment(name))
    }
    /// One attempt: a retry could start a second run.
    async fn start_run(&self, experiment: &str, name: Option<&str>, tags: &BTreeMap<String, String>) -> Result<String> {
        timed!(self, "start_run", self.inner.start_run(experiment, name, tags))
    }
    async fn log_params(&self, run: &str, params: &BTreeMap<String, String>) -> Result<()> {
        retried!(self, "log_params", s => s.log_params(run, params))
    }
    /// One attempt: metric points are appended.
    async fn log_metrics(&self, run: &str, metrics: &[Metric]) -> Result<()> {
        timed!(self, "log_metrics", self.inner.log_metrics(run, metrics))
    }
    async fn set_tags(&self, run: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        retried!(self, "set_tags", s => s.set_tags(run, tags))
    }
    async fn log_artifact(&self, run: &str, name: &str, uri: &str) -> Result<()> {
        retried!(self, "log_artifact", s => s.log_artifact(run, name, uri))
    }
    async fn end_run(&self, run: &str, status: RunStatus) -> Result<()> {
        retried!(self, "end_run", s => s.end_run(run, status))
    }
    async fn get_run(&self, run: &str) -> Result<Run> {
        retried!(self, "get_run", s => s.get_run(run))
    }
    async fn metric_history(&self, run: &str, key: &str) -> Result<Vec<Metric>> {
        retried!(self, "metric_history", s => s.metric_history(run, key))
    }
    async fn search_runs(&self, experiment: &str, query: &RunQuery) -> Result<Vec<Run>> {
        retried!(self, "search_runs", s => s.search_runs(experiment, query))
    }
}

#[async_trait]
impl<T: Orchestrator + ?Sized> Orchestrator for Layered<T> {
    async fn upsert_pipeline(&self, spec: &PipelineSpec) -> Result<()> {
        retried!(self, "upsert_pipeline", s => s.upsert_pipeline(spec))
    }
    async fn describe_pipeline(&self, name: &str) -> Result<Option<PipelineSpec>> {
        retried!(self, "describe_pipeline", s => s.describe_pipeline(name))
    }
    async fn delete_pipeline(&self, name: &str) -> Result<()> {
        retried!(self, "delete_pipeline", s => s.delete_pipeline(name))
    }
    /// One attempt: a retry could start a second run.
    async fn start(&self, pipeline: &str, trigger: Option<Trigger>, params: &BTreeMap<String, String>) -> Result<String> {
        timed!(self, "start", self.inner.start(pipeline, trigger, params))
    }
    async fn status(&self, run: &str) -> Result<PipelineRun> {
        retried!(self, "status", s => s.status(run))
    }
    async fn list_runs(&self, pipeline: &str) -> Result<Vec<PipelineRun>> {
        retried!(self, "list_runs", s => s.list_runs(pipeline))
    }
    async fn logs(&self, run: &str, step: Option<&str>) -> Result<String> {
        retried!(self, "logs", s => s.logs(run, step))
    }
    async fn cancel(&self, run: &str) -> Result<()> {
        retried!(self, "cancel", s => s.cancel(run))
    }
    fn attach_executor(&self, pipeline: &str, executor: Arc<dyn StepExecutor>) -> Result<()> {
        self.inner.attach_executor(pipeline, executor)
    }
    async fn watch_triggers(&self, pipeline: &str, probes: Probes, launch: Launch) -> Result<Box<dyn TriggerWatch>> {
        self.inner.watch_triggers(pipeline, probes, launch).await
    }
    /// Through once and untimed: the job runs for up to its max runtime, and the platform's
    /// code finds a job already started with the same inputs instead of paying twice.
    async fn run_training_job(&self, job: &TrainingJob, log: &dyn StepLogger) -> Result<TrainingJobResult> {
        self.inner.run_training_job(job, log).await
    }
    /// Through once: the step applies its own retry policy, and a second attempt here would
    /// run it twice.
    async fn run_step_here(&self, spec: &PipelineSpec, run: &str, step: &str, executor: Arc<dyn StepExecutor>) -> Result<StepRun> {
        self.inner.run_step_here(spec, run, step, executor).await
    }
}

#[async_trait]
impl<T: ModelRegistry + ?Sized> ModelRegistry for Layered<T> {
    async fn create_model(&self, name: &str, description: Option<&str>) -> Result<()> {
        retried!(self, "create_model", s => s.create_model(name, description))
    }
    async fn delete_model(&self, name: &str) -> Result<()> {
        retried!(self, "delete_model", s => s.delete_model(name))
    }
    async fn model_exists(&self, name: &str) -> Result<bool> {
        retried!(self, "model_exists", s => s.model_exists(name))
    }
    /// One attempt: a retry could register a second version.
    async fn register_version(&self, model: &str, version: &NewModelVersion) -> Result<ModelVersion> {
        timed!(self, "register_version", self.inner.register_version(model, version))
    }
    async fn get_version(&self, model: &str, version: u64) -> Result<ModelVersion> {
        retried!(self, "get_version", s => s.get_version(model, version))
    }
    async fn list_versions(&self, model: &str) -> Result<Vec<ModelVersion>> {
        retried!(self, "list_versions", s => s.list_versions(model))
    }
    async fn set_approval(&self, model: &str, version: u64, status: ApprovalStatus) -> Result<()> {
        retried!(self, "set_approval", s => s.set_approval(model, version, status))
    }
    async fn set_alias(&self, model: &str, alias: &str, version: u64) -> Result<()> {
        retried!(self, "set_alias", s => s.set_alias(model, alias, version))
    }
    async fn remove_alias(&self, model: &str, alias: &str) -> Result<()> {
        retried!(self, "remove_alias", s => s.remove_alias(model, alias))
    }
    async fn get_by_alias(&self, model: &str, alias: &str) -> Result<Option<ModelVersion>> {
        retried!(self, "get_by_alias", s => s.get_by_alias(model, alias))
    }
}

#[async_trait]
impl<T: Serving + ?Sized> Serving for Layered<T> {
    /// Through once and untimed: an endpoint may take many minutes to come into service.
    async fn deploy(&self, spec: &EndpointSpec) -> Result<EndpointInfo> {
        self.inner.deploy(spec).await
    }
    async fn describe(&self, endpoint: &str) -> Result<Option<EndpointInfo>> {
        retried!(self, "describe", s => s.describe(endpoint))
    }
    async fn invoke(&self, endpoint: &str, rows: &Table) -> Result<Prediction> {
        retried!(self, "invoke", s => s.invoke(endpoint, rows))
    }
    async fn shift_traffic(&self, endpoint: &str, weights: &[(String, u32)]) -> Result<EndpointInfo> {
        self.inner.shift_traffic(endpoint, weights).await
    }
    async fn undeploy(&self, endpoint: &str) -> Result<()> {
        self.inner.undeploy(endpoint).await
    }
}

#[async_trait]
impl<T: Monitor + ?Sized> Monitor for Layered<T> {
    async fn set_baseline(&self, monitor: &str, features: &Table, predictions: &[f64]) -> Result<()> {
        retried!(self, "set_baseline", s => s.set_baseline(monitor, features, predictions))
    }
    /// One attempt: recorded inferences are appended.
    async fn record(&self, monitor: &str, inputs: &Table, predictions: &[f64]) -> Result<()> {
        timed!(self, "record", self.inner.record(monitor, inputs, predictions))
    }
    async fn drift(&self, monitor: &str, config: &DriftConfig) -> Result<DriftReport> {
        retried!(self, "drift", s => s.drift(monitor, config))
    }
    async fn publish(&self, monitor: &str, gauges: &[Gauge]) -> Result<()> {
        retried!(self, "publish", s => s.publish(monitor, gauges))
    }
    async fn delete(&self, monitor: &str) -> Result<()> {
        retried!(self, "delete", s => s.delete(monitor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A registry whose reads fail `failures` times with a retryable error, then answer, and
    /// whose registrations fail once, retryably.
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
        registrations: AtomicU32,
    }

    impl Described for Flaky {
        fn capabilities(&self) -> Capabilities {
            Capabilities::new(crate::PlatformId::from_static("flaky"), &[])
        }
    }

    #[async_trait]
    impl ModelRegistry for Flaky {
        async fn create_model(&self, _: &str, _: Option<&str>) -> Result<()> {
            Ok(())
        }
        async fn delete_model(&self, _: &str) -> Result<()> {
            Ok(())
        }
        async fn model_exists(&self, _: &str) -> Result<bool> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(Error::new(ErrorKind::Unavailable, "busy"));
            }
            Ok(true)
        }
        async fn register_version(&self, _: &str, _: &NewModelVersion) -> Result<ModelVersion> {
            self.registrations.fetch_add(1, Ordering::SeqCst);
            Err(Error::new(ErrorKind::Unavailable, "the answer was lost"))
        }
        async fn get_version(&self, _: &str, _: u64) -> Result<ModelVersion> {
            std::future::pending().await
        }
        async fn list_versions(&self, _: &str) -> Result<Vec<ModelVersion>> {
            Ok(Vec::new())
        }
        async fn set_approval(&self, _: &str, _: u64, _: ApprovalStatus) -> Result<()> {
            Ok(())
        }
        async fn set_alias(&self, _: &str, _: &str, _: u64) -> Result<()> {
            Ok(())
        }
        async fn remove_alias(&self, _: &str, _: &str) -> Result<()> {
            Ok(())
        }
        async fn get_by_alias(&self, _: &str, _: &str) -> Result<Option<ModelVersion>> {
            Ok(None)
        }
    }

    fn layered(failures: u32) -> (Arc<Flaky>, Layered<dyn ModelRegistry>) {
        let flaky = Arc::new(Flaky { failures, calls: AtomicU32::new(0), registrations: AtomicU32::new(0) });
        let layer = RetryLayer {
            policy: RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) },
            timeout: Duration::from_millis(50),
        };
        (flaky.clone(), Layered { inner: flaky as Arc<dyn ModelRegistry>, layer: Arc::new(layer) })
    }

    #[tokio::test]
    async fn repeatable_calls_are_retried_and_others_are_not() {
        let (flaky, r) = layered(2);
        assert!(r.model_exists("m").await.unwrap(), "two transient failures, then the answer");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        let (flaky, r) = layered(3);
        assert_eq!(r.model_exists("m").await.unwrap_err().kind(), ErrorKind::Unavailable, "attempts run out");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        let new = NewModelVersion {
            artifact_uri: "u".into(),
            metrics: Default::default(),
            lineage: Default::default(),
            signature: Default::default(),
            description: None,
        };
        assert!(r.register_version("m", &new).await.is_err());
        assert_eq!(flaky.registrations.load(Ordering::SeqCst), 1, "a registration is never repeated");
    }

    #[tokio::test]
    async fn a_hung_call_becomes_a_retryable_timeout() {
        let (_, r) = layered(0);
        let e = r.get_version("m", 1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(e.to_string().contains("get_version did not answer"), "{e}");
    }
}
