//! Experiment tracking on SageMaker Experiments: an experiment is an Experiment, a run is a
//! Trial with one TrialComponent of the same name, whose status, start and end times,
//! parameters and output artifacts Galley keeps up to date (what the SageMaker console shows).
//!
//! SageMaker takes metric points only from training jobs or the separate SageMaker Metrics
//! service: every point goes to SageMaker Metrics (BatchPutMetrics, what Studio's charts and
//! DescribeTrialComponent's summaries read), but that service cannot be read back point by
//! point, and tag values refuse common characters, so the run's full record (tags, every
//! metric point) is also kept beside it in the artifact bucket under
//! `galley/experiments/`: one object per `log_metrics` call, so concurrent loggers never
//! overwrite each other, and one `run.json` per run. That record answers `get_run`,
//! `metric_history` and `search_runs`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_sagemaker::types::{TrialComponentArtifact, TrialComponentParameterValue, TrialComponentPrimaryStatus, TrialComponentStatus};
use aws_sdk_sagemakermetrics::types::{PutMetricsErrorCode, RawMetricData};
use aws_smithy_types::DateTime;
use bytes::Bytes;
use galley_core::stages::{
    ArtifactKey, ArtifactStore, ArtifactStoreExt, Described, ExperimentTracker, Metric, Run, RunQuery, RunStatus, now_ms,
};
use galley_core::{Error, ErrorKind, Result, Stage};

use crate::artifacts::S3Artifacts;
use crate::config::AwsClients;
use crate::error::sdk;

const ROOT: &str = "galley/experiments";

#[derive(Clone, Debug)]
pub struct SageMakerExperiments {
    clients: AwsClients,
    store: S3Artifacts,
}

fn time(ms: i64) -> DateTime {
    DateTime::from_millis(ms)
}

impl SageMakerExperiments {
    pub fn new(clients: AwsClients, store: S3Artifacts) -> Self {
        SageMakerExperiments { clients, store }
    }

    fn check_name(what: &str, name: &str, max: usize) -> Result<()> {
        let mut chars = name.chars();
        let ok = name.len() <= max
            && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "{what} `{name}` is not a valid SageMaker Experiments name: letters, digits and `-`, starting with a letter or digit, at most {max} characters"
            )))
        }
    }

    fn run_key(run: &str) -> Result<ArtifactKey> {
        Self::check_name("run", run, 120)?;
        ArtifactKey::new(format!("{ROOT}/runs/{run}/run.json"))
    }

    async fn load(&self, run: &str) -> Result<Run> {
        let key = Self::run_key(run)?;
        match self.store.get_bytes(&key).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::corrupt(format!("{}: not a galley run record ({e})", self.store.uri(key.as_str())))),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::not_found(format!("run `{run}` does not exist"))
                .platform(crate::platform::AWS)
                .stage(Stage::Experiments)),
            Err(e) => Err(e),
        }
    }

    async fn save(&self, run: &Run) -> Result<()> {
        self.store.put_bytes(&Self::run_key(&run.id)?, Bytes::from(serde_json::to_vec(run)?)).await?;
        // The experiment's index: one empty marker per run, listed by `search_runs`.
        let marker = ArtifactKey::new(format!("{ROOT}/by-experiment/{}/{}", run.experiment, run.id))?;
        self.store.put_bytes(&marker, Bytes::new()).await?;
        Ok(())
    }

    async fn running(&self, run: &str, what: &str) -> Result<Run> {
        let r = self.load(run).await?;
        if r.status != RunStatus::Running {
            return Err(Error::conflict(format!(
                "run `{run}` has ended ({:?}); {what} is refused: an ended run is immutable, start a new run",
                r.status
            )));
        }
        Ok(r)
    }

    /// Every metric point of a run, in step order (ties: the order logged).
    async fn points(&self, run: &str) -> Result<Vec<Metric>> {
        let mut all = Vec::new();
        for m in self.store.list(&format!("{ROOT}/runs/{run}/metrics/")).await? {
            let bytes = self.store.get_bytes(&ArtifactKey::new(m.key.clone())?).await?;
            let batch: Vec<Metric> = serde_json::from_slice(&bytes)
                .map_err(|e| Error::corrupt(format!("{}: not a galley metric batch ({e})", m.uri)))?;
            all.extend(batch);
        }
        // Listing is in key (= time) order, so a stable sort keeps logging order within a step.
        all.sort_by_key(|m| m.step);
        Ok(all)
    }

    async fn with_metrics(&self, mut run: Run) -> Result<Run> {
        for p in self.points(&run.id).await? {
            // Latest = highest step; within a step, the last logged.
            run.metrics.insert(p.key, p.value);
        }
        Ok(run)
    }

    async fn update_component(&self, run: &str, f: impl FnOnce(aws_sdk_sagemaker::operation::update_trial_component::builders::UpdateTrialComponentFluentBuilder) -> aws_sdk_sagemaker::operation::update_trial_component::builders::UpdateTrialComponentFluentBuilder) -> Result<()> {
        f(self.clients.sagemaker.update_trial_component().trial_component_name(run))
            .send()
            .await
            .map_err(sdk(Stage::Experiments, "UpdateTrialComponent", run))?;
        Ok(())
    }

    async fn delete_sagemaker_experiment(&self, name: &str) -> Result<()> {
        let mut trials = Vec::new();
        let mut token = None;
        loop {
            let page = match self.clients.sagemaker.list_trials().experiment_name(name).set_next_token(token).send().await {
                Ok(p) => p,
                Err(e) => {
                    let e = sdk(Stage::Experiments, "ListTrials", name)(e);
                    if e.kind() == ErrorKind::NotFound {
                        break;
                    }
                    return Err(e);
                }
            };
            trials.extend(page.trial_summaries().iter().filter_map(|t| t.trial_name().map(str::to_owned)));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for trial in trials {
            let comps = self
                .clients
                .sagemaker
                .list_trial_components()
                .trial_name(&trial)
                .send()
                .await
                .map_err(sdk(Stage::Experiments, "ListTrialComponents", &trial))?;
            for c in comps.trial_component_summaries() {
                let Some(cn) = c.trial_component_name() else { continue };
                let _ = self.clients.sagemaker.disassociate_trial_component().trial_component_name(cn).trial_name(&trial).send().await;
                ignore_missing(
                    self.clients.sagemaker.delete_trial_component().trial_component_name(cn).send().await.map(|_| ()).map_err(sdk(Stage::Experiments, "DeleteTrialComponent", cn)),
                )?;
            }
            ignore_missing(
                self.clients.sagemaker.delete_trial().trial_name(&trial).send().await.map(|_| ()).map_err(sdk(Stage::Experiments, "DeleteTrial", &trial)),
            )?;
        }
        ignore_missing(
            self.clients.sagemaker.delete_experiment().experiment_name(name).send().await.map(|_| ()).map_err(sdk(Stage::Experiments, "DeleteExperiment", name)),
        )
    }

    /// Creates the SageMaker experiment with tags unless it exists (for the resource handler).
    pub async fn create_tagged(&self, name: &str, tags: Vec<aws_sdk_sagemaker::types::Tag>) -> Result<String> {
        Self::check_name("experiment", name, 120)?;
        // Create first; "already exists" means get-or-create already holds.
        let r = self
            .clients
            .sagemaker
            .create_experiment()
            .experiment_name(name)
            .description("managed by galley")
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(sdk(Stage::Experiments, "CreateExperiment", name));
        match r {
            Ok(_) => Ok(name.to_owned()),
            Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::Conflict) => Ok(name.to_owned()),
            Err(e) => Err(e),
        }
    }
}

impl SageMakerExperiments {
    /// Sends the points to SageMaker Metrics, ten per call as the API allows. A value that is
    /// not finite has no JSON number and stays only in Galley's record; a step outside
    /// SageMaker's range (0..2^31) is sent without one.
    async fn put_sagemaker_metrics(&self, run: &str, metrics: &[Metric]) -> Result<()> {
        let points: Vec<&Metric> = metrics.iter().filter(|m| m.value.is_finite()).collect();
        for chunk in points.chunks(10) {
            let data = chunk
                .iter()
                .map(|m| {
                    RawMetricData::builder()
                        .metric_name(&m.key)
                        .timestamp(time(m.timestamp_ms))
                        .set_step(i32::try_from(m.step).ok().filter(|s| *s >= 0))
                        .value(m.value)
                        .build()
                })
                .collect();
            let out = self
                .clients
                .metrics
                .batch_put_metrics()
                .trial_component_name(run)
                .set_metric_data(Some(data))
                .send()
                .await
                .map_err(sdk(Stage::Experiments, "BatchPutMetrics", run))?;
            // The call succeeds as a whole and lists the points it refused.
            if let Some(refused) = out.errors().first() {
                let metric = refused.metric_index().and_then(|i| chunk.get(i as usize)).map_or("?", |m| m.key.as_str());
                let code = refused.code().map_or("an unnamed error", |c| c.as_str());
                let kind = match refused.code() {
                    Some(PutMetricsErrorCode::InternalError | PutMetricsErrorCode::ConflictError) => ErrorKind::Unavailable,
                    _ => ErrorKind::InvalidInput,
                };
                return Err(Error::new(kind, format!("SageMaker Metrics refused metric `{metric}` of run `{run}` ({code}), and {} more of {}", out.errors().len() - 1, chunk.len()))
                    .platform(crate::platform::AWS)
                    .stage(Stage::Experiments));
            }
        }
        Ok(())
    }
}

fn ignore_missing(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl Described for SageMakerExperiments {
    fn capabilities(&self) -> galley_core::Capabilities {
        crate::platform::capabilities()
    }
}

#[async_trait]
impl ExperimentTracker for SageMakerExperiments {
    async fn create_experiment(&self, name: &str) -> Result<String> {
        self.create_tagged(name, Vec::new()).await
    }

    async fn get_experiment(&self, name: &str) -> Result<Option<String>> {
        Self::check_name("experiment", name, 120)?;
        match self.clients.sagemaker.describe_experiment().experiment_name(name).send().await {
            Ok(_) => Ok(Some(name.to_owned())),
            Err(e) => {
                let e = sdk(Stage::Experiments, "DescribeExperiment", name)(e);
                if e.kind() == ErrorKind::NotFound { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn delete_experiment(&self, name: &str) -> Result<()> {
        Self::check_name("experiment", name, 120)?;
        self.delete_sagemaker_experiment(name).await?;
        for marker in self.store.list(&format!("{ROOT}/by-experiment/{name}/")).await? {
            let run = marker.key.rsplit('/').next().unwrap_or_default().to_owned();
            for m in self.store.list(&format!("{ROOT}/runs/{run}/")).await? {
                self.store.delete(&ArtifactKey::new(m.key)?).await?;
            }
            self.store.delete(&ArtifactKey::new(marker.key)?).await?;
        }
        Ok(())
    }

    async fn start_run(&self, experiment: &str, name: Option<&str>, tags: &BTreeMap<String, String>) -> Result<String> {
        if self.get_experiment(experiment).await?.is_none() {
            return Err(Error::not_found(format!("experiment `{experiment}` does not exist; create it first")));
        }
        let id = format!("run-{}", uuid::Uuid::new_v4().simple());
        let start = now_ms();
        let sm = &self.clients.sagemaker;
        sm.create_trial()
            .trial_name(&id)
            .experiment_name(experiment)
            .set_display_name(name.map(str::to_owned))
            .send()
            .await
            .map_err(sdk(Stage::Experiments, "CreateTrial", &id))?;
        sm.create_trial_component()
            .trial_component_name(&id)
            .set_display_name(name.map(str::to_owned))
            .status(TrialComponentStatus::builder().primary_status(TrialComponentPrimaryStatus::InProgress).build())
            .start_time(time(start))
            .send()
            .await
            .map_err(sdk(Stage::Experiments, "CreateTrialComponent", &id))?;
        sm.associate_trial_component()
            .trial_component_name(&id)
            .trial_name(&id)
            .send()
            .await
            .map_err(sdk(Stage::Experiments, "AssociateTrialComponent", &id))?;
        let run = Run {
            id: id.clone(),
            experiment: experiment.to_owned(),
            name: name.map(str::to_owned),
            status: RunStatus::Running,
            start_ms: start,
            end_ms: None,
            params: BTreeMap::new(),
            metrics: BTreeMap::new(),
            tags: tags.clone(),
            artifacts: BTreeMap::new(),
        };
        self.save(&run).await?;
        Ok(id)
    }

    async fn log_params(&self, run: &str, params: &BTreeMap<String, String>) -> Result<()> {
        let mut r = self.running(run, "log_params").await?;
        let values = params
            .iter()
            .map(|(k, v)| (k.clone(), TrialComponentParameterValue::StringValue(v.chars().take(2500).collect())))
            .collect();
        self.update_component(run, |b| b.set_parameters(Some(values))).await?;
        r.params.extend(params.clone());
        self.save(&r).await
    }

    async fn log_metrics(&self, run: &str, metrics: &[Metric]) -> Result<()> {
        self.running(run, "log_metrics").await?;
        if metrics.is_empty() {
            return Ok(());
        }
        self.put_sagemaker_metrics(run, metrics).await?;
        let key = ArtifactKey::new(format!("{ROOT}/runs/{run}/metrics/{:013}-{}.json", now_ms(), uuid::Uuid::new_v4().simple()))?;
        self.store.put_bytes(&key, Bytes::from(serde_json::to_vec(metrics)?)).await?;
        Ok(())
    }

    async fn set_tags(&self, run: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        let mut r = self.load(run).await?;
        r.tags.extend(tags.clone());
        self.save(&r).await
    }

    async fn log_artifact(&self, run: &str, name: &str, uri: &str) -> Result<()> {
        let mut r = self.running(run, "log_artifact").await?;
        let artifact = TrialComponentArtifact::builder().value(uri).build();
        self.update_component(run, |b| b.output_artifacts(name, artifact)).await?;
        r.artifacts.insert(name.to_owned(), uri.to_owned());
        self.save(&r).await
    }

    async fn end_run(&self, run: &str, status: RunStatus) -> Result<()> {
        let mut r = self.load(run).await?;
        let end = now_ms().max(r.start_ms);
        let primary = match status {
            RunStatus::Running => TrialComponentPrimaryStatus::InProgress,
            RunStatus::Finished => TrialComponentPrimaryStatus::Completed,
            RunStatus::Failed => TrialComponentPrimaryStatus::Failed,
            RunStatus::Killed => TrialComponentPrimaryStatus::Stopped,
        };
        self.update_component(run, |b| {
            b.status(TrialComponentStatus::builder().primary_status(primary).build()).end_time(time(end))
        })
        .await?;
        r.status = status;
        r.end_ms = (status != RunStatus::Running).then_some(end);
        self.save(&r).await
    }

    async fn get_run(&self, run: &str) -> Result<Run> {
        let r = self.load(run).await?;
        self.with_metrics(r).await
    }

    async fn metric_history(&self, run: &str, key: &str) -> Result<Vec<Metric>> {
        self.load(run).await?;
        Ok(self.points(run).await?.into_iter().filter(|m| m.key == key).collect())
    }

    async fn search_runs(&self, experiment: &str, query: &RunQuery) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        for marker in self.store.list(&format!("{ROOT}/by-experiment/{experiment}/")).await? {
            let id = marker.key.rsplit('/').next().unwrap_or_default().to_owned();
            let run = match self.get_run(&id).await {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let metrics_hold = query
                .metrics
                .iter()
                .all(|(k, cmp, v)| run.metrics.get(k).is_some_and(|got| cmp.holds(*got, *v)));
            let tags_hold = query.tags.iter().all(|(k, v)| run.tags.get(k) == Some(v));
            if metrics_hold && tags_hold {
                runs.push(run);
            }
        }
        if let Some(key) = &query.order_by {
            // Runs without the metric go last either way.
            runs.sort_by(|a, b| {
                let (x, y) = (a.metrics.get(key), b.metrics.get(key));
                match (x, y) {
                    (Some(x), Some(y)) if query.descending => y.total_cmp(x),
                    (Some(x), Some(y)) => x.total_cmp(y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                }
            });
        } else {
            runs.sort_by_key(|r| r.start_ms);
        }
        if let Some(limit) = query.limit {
            runs.truncate(limit);
        }
        Ok(runs)
    }
}
