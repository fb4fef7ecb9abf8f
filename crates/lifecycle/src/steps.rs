//! The step bodies and their fingerprints.

use std::collections::BTreeMap;

use galley_blueprint::{Blueprint, Compute, Promotion};
use galley_core::stages::{
    ApprovalStatus, ArtifactKey, ArtifactStoreExt, EndpointSpec, FeatureGroupSpec, Lineage, ModelVersion,
    NewModelVersion, Signature, StepLogger, StepOutput, TrainingData, TrainingJob, Variant,
};
use galley_core::table::Column;
use galley_core::{DType, Error, Result, Table, Value};
use galley_ml::{Frame, Model, TrainedModel};
use sha2::Digest;
use serde_json::{Value as Json, json};

use crate::store::{digest, get_json, put_json};
use crate::{CHAMPION, Lifecycle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StepName {
    Extract,
    ValidateData,
    Prepare,
    Train,
    Evaluate,
    ValidateModel,
    Register,
    Deploy,
    Monitor,
}

impl StepName {
    const ALL: [StepName; 9] = [
        StepName::Extract,
        StepName::ValidateData,
        StepName::Prepare,
        StepName::Train,
        StepName::Evaluate,
        StepName::ValidateModel,
        StepName::Register,
        StepName::Deploy,
        StepName::Monitor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Extract => "extract",
            StepName::ValidateData => "validate_data",
            StepName::Prepare => "prepare",
            StepName::Train => "train",
            StepName::Evaluate => "evaluate",
            StepName::ValidateModel => "validate_model",
            StepName::Register => "register",
            StepName::Deploy => "deploy",
            StepName::Monitor => "monitor",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("`{s}` is not a lifecycle step")))
    }

    /// The steps this blueprint's stages call for: the gate and registration need a registry,
    /// deployment a serving stage, the baseline a monitoring stage.
    pub fn for_blueprint(bp: &Blueprint) -> Vec<StepName> {
        let s = &bp.stages;
        Self::ALL
            .into_iter()
            .filter(|n| match n {
                StepName::ValidateModel | StepName::Register => s.registry.is_some(),
                StepName::Deploy => s.registry.is_some() && s.serving.is_some(),
                StepName::Monitor => s.registry.is_some() && s.serving.is_some() && s.monitoring.is_some(),
                _ => true,
            })
            .collect()
    }
}

/// Reads a model file a job left and checks it is the model the job was asked for.
fn check_job_model(bytes: &[u8], signature: &Signature, job: &str) -> Result<TrainedModel> {
    let model = TrainedModel::from_bytes(bytes).map_err(|e| Error::invalid(format!("training job `{job}` left a model galley cannot read: {e}")))?;
    if model.signature() != signature {
        return Err(Error::invalid(format!(
            "training job `{job}` left a model whose input signature differs from the training data's; is its image a galley image of this version?"
        )));
    }
    Ok(model)
}

/// SageMaker's own ceiling for a training job that sets none.
pub const DEFAULT_MAX_RUNTIME: &str = "24h";

/// A training job name every platform accepts (SageMaker: 1-63 letters, digits and single
/// `-`), unique per blueprint and inputs.
fn training_job_name(blueprint: &str, inputs: &str) -> String {
    let mut stem = String::new();
    for c in blueprint.chars() {
        let c = if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && (stem.is_empty() || stem.ends_with('-'))) {
            stem.push(c);
        }
    }
    stem.truncate(32);
    let stem = stem.trim_end_matches('-');
    format!("galley-{stem}{}{}", if stem.is_empty() { "" } else { "-" }, &inputs[..20])
}

/// Where the artifact store keeps its epoch (see `Lifecycle::store_epoch`).
const EPOCH_KEY: &str = "galley/epoch";

/// The prepared split as stored between steps.
#[derive(serde::Serialize, serde::Deserialize)]
struct PreparedDoc {
    features: Vec<String>,
    train_x: Vec<Vec<f64>>,
    train_y: Vec<f64>,
    test_x: Vec<Vec<f64>>,
    test_y: Vec<f64>,
    signature: Signature,
}

impl PreparedDoc {
    fn frame(&self, test: bool) -> Frame {
        let (x, y) = if test { (&self.test_x, &self.test_y) } else { (&self.train_x, &self.train_y) };
        Frame { features: self.features.clone(), x: x.clone(), y: y.clone() }
    }

    fn table(&self, x: &[Vec<f64>]) -> Table {
        Table {
            columns: self.signature.inputs.clone(),
            rows: x.iter().map(|r| r.iter().map(|v| Value::Float(*v)).collect()).collect(),
        }
    }
}

fn field<'a>(upstream: &'a BTreeMap<String, StepOutput>, step: StepName, key: &str) -> Result<&'a Json> {
    upstream
        .get(step.as_str())
        .and_then(|o| o.values.get(key))
        .ok_or_else(|| Error::internal(format!("step `{}` did not hand on `{key}`", step.as_str())))
}

fn field_str<'a>(upstream: &'a BTreeMap<String, StepOutput>, step: StepName, key: &str) -> Result<&'a str> {
    field(upstream, step, key)?
        .as_str()
        .ok_or_else(|| Error::internal(format!("step `{}` handed on a non-string `{key}`", step.as_str())))
}

impl Lifecycle {
    fn features(&self) -> Vec<String> {
        self.bp.stages.features.as_ref().map(|f| f.features.clone()).unwrap_or_default()
    }

    fn model_name(&self) -> Option<&str> {
        self.bp.stages.registry.as_ref().map(|r| r.model.as_str())
    }

    pub(crate) fn monitor_name(&self) -> String {
        crate::monitor_name(&self.bp)
    }

    /// The version the gate must beat: the `champion` alias, or the newest approved version
    /// where promotion is by approval status.
    async fn champion(&self) -> Result<Option<ModelVersion>> {
        let Some(model) = self.model_name() else { return Ok(None) };
        let registry = &self.stages.registry;
        if !registry.model_exists(model).await? {
            return Err(Error::not_found(format!(
                "registered model `{model}` does not exist; run `galley apply` before `galley run`"
            )));
        }
        match self.promotion {
            Some(Promotion::Alias) => registry.get_by_alias(model, CHAMPION).await,
            _ => Ok(registry
                .list_versions(model)
                .await?
                .into_iter()
                .filter(|v| v.approval == ApprovalStatus::Approved)
                .max_by_key(|v| v.version)),
        }
    }

    /// An id the artifact store keeps for as long as it lives. Every fingerprint includes it, so
    /// when the store is replaced (destroyed, renamed), no cached step hands on keys that are
    /// gone with the old store.
    async fn store_epoch(&self) -> Result<String> {
        let key = ArtifactKey::new(EPOCH_KEY)?;
        match self.stages.artifacts.get_bytes(&key).await {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == galley_core::ErrorKind::NotFound => {
                let epoch = digest(&[&galley_core::stages::now_ms().to_string(), &std::process::id().to_string(), &self.bp.name]);
                self.stages.artifacts.put_bytes(&key, epoch.clone().into_bytes().into()).await?;
                Ok(epoch)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn step_fingerprint(&self, step: StepName, up: &BTreeMap<String, StepOutput>) -> Result<String> {
        let epoch = self.store_epoch().await?;
        Ok(digest(&[&epoch, &self.step_inputs(step, up).await?]))
    }

    async fn step_inputs(&self, step: StepName, up: &BTreeMap<String, StepOutput>) -> Result<String> {
        let bp = &self.bp;
        Ok(match step {
            StepName::Extract => {
                let ds = galley_ml::load_source(&bp.data.source, &self.project_dir)?;
                let fp = digest(&["extract", &bp.data.source, &ds.sha256]);
                // Kept for the run that usually follows, so the source is read once (and the
                // run extracts exactly the data the fingerprint describes).
                *self.extracted.lock().expect("extracted lock") = Some(ds);
                fp
            }
            StepName::ValidateData => digest(&[
                "validate_data",
                field_str(up, StepName::Extract, "data_hash")?,
                &js(&bp.data),
                &self.features().join(","),
            ]),
            StepName::Prepare => digest(&[
                "prepare",
                field_str(up, StepName::Extract, "data_hash")?,
                &js(&bp.data),
                &js(&bp.stages.features),
            ]),
            StepName::Train => digest(&[
                "train",
                field_str(up, StepName::Prepare, "prepared_key")?,
                &js(&bp.stages.training),
                &self.code_version,
                &self.training_code_digest()?,
            ]),
            StepName::Evaluate => digest(&[
                "evaluate",
                field_str(up, StepName::Train, "model_sha")?,
                field_str(up, StepName::Prepare, "prepared_key")?,
            ]),
            StepName::ValidateModel => {
                let champion = self.champion().await?;
                digest(&[
                    "validate_model",
                    &field(up, StepName::Evaluate, "metrics")?.to_string(),
                    &js(&bp.stages.registry),
                    &js(&champion.map(|c| (c.version, c.metrics))),
                ])
            }
            StepName::Register => {
                // Include what the registry holds now, so a registry rebuilt since the last
                // run (destroy + apply) is filled again instead of being trusted from cache.
                let versions = match self.model_name() {
                    Some(m) => self.stages.registry.list_versions(m).await?.len(),
                    None => 0,
                };
                digest(&[
                    "register",
                    field_str(up, StepName::Train, "model_sha")?,
                    &up.get(StepName::ValidateModel.as_str()).map(|o| o.values.to_string()).unwrap_or_default(),
                    &versions.to_string(),
                ])
            }
            StepName::Deploy => {
                let endpoint = self.monitor_name();
                let current = self.stages.serving.describe(&endpoint).await?;
                // The endpoint's state and URL too: a server that died (or came back on another
                // port) must be deployed again, not trusted from cache.
                digest(&[
                    "deploy",
                    &field(up, StepName::Register, "version")?.to_string(),
                    &js(&bp.stages.serving),
                    &js(&current.map(|c| (c.variants, c.state, c.url))),
                ])
            }
            StepName::Monitor => digest(&[
                "monitor",
                &self.monitor_name(),
                field_str(up, StepName::Train, "model_sha")?,
                field_str(up, StepName::Prepare, "prepared_key")?,
                &js(&bp.stages.monitoring),
                &field(up, StepName::Deploy, "variants")?.to_string(),
            ]),
        })
    }

    pub(crate) async fn run_step(&self, step: StepName, up: &BTreeMap<String, StepOutput>, log: &dyn StepLogger) -> Result<Json> {
        let artifacts = &*self.stages.artifacts;
        let bp = &self.bp;
        match step {
            StepName::Extract => {
                let fingerprinted = self.extracted.lock().expect("extracted lock").take();
                let ds = match fingerprinted {
                    Some(ds) => ds,
                    None => galley_ml::load_source(&bp.data.source, &self.project_dir)?,
                };
                let key = format!("datasets/{}.json", ds.sha256);
                put_json(artifacts, &key, &ds.table).await?;
                log.line(&format!("extracted {} rows × {} columns from {} (sha256 {})", ds.table.len(), ds.table.columns.len(), bp.data.source, ds.sha256));
                Ok(json!({ "data_key": key, "data_hash": ds.sha256, "rows": ds.table.len(), "source": bp.data.source }))
            }
            StepName::ValidateData => {
                let table: Table = get_json(artifacts, field_str(up, StepName::Extract, "data_key")?).await?;
                let report = galley_ml::validate(&table, &bp.data, &self.features());
                log.line(&report.render());
                if !report.is_ok() {
                    return Err(Error::invalid(format!("data validation failed for {}:\n{}", bp.data.source, report.render())));
                }
                Ok(json!({ "rows": report.rows, "columns": report.columns, "problems": 0 }))
            }
            StepName::Prepare => self.prepare(up, log).await,
            StepName::Train => {
                let key = field_str(up, StepName::Prepare, "prepared_key")?;
                let doc: PreparedDoc = get_json(artifacts, key).await?;
                let training = bp.stages.training.as_ref().expect("checked in Lifecycle::new");
                let mut job = None;
                let mut script = None;
                let (bytes, file) = match (&training.command, training.algorithm, training.compute) {
                    (Some(command), _, _) => {
                        let out = self.train_script(command, training, &doc, log).await?;
                        let bytes = std::mem::take(&mut script.insert(out).model);
                        (bytes, "model.onnx")
                    }
                    (None, Some(algorithm), Compute::Local) => {
                        (galley_ml::train(algorithm, &training.params, bp.data.task, &doc.frame(false), &doc.signature)?.to_bytes(), "model.json")
                    }
                    (None, _, Compute::Managed) => {
                        let (bytes, id) = self.train_managed(up, training, &doc, log).await?;
                        job = Some(id);
                        (bytes, "model.json")
                    }
                    (None, None, Compute::Local) => return Err(Error::invalid("the training stage names neither `algorithm` nor `command` (validate reports this too)")),
                };
                let sha = hex::encode(&sha2::Sha256::digest(&bytes)[..16]);
                let model_key = format!("models/{sha}/{file}");
                let meta = artifacts.put_bytes(&ArtifactKey::new(&model_key)?, bytes.into()).await?;
                // What the script left beside its model, kept as SageMaker keeps output.tar.gz.
                let mut output_uri = None;
                if let Some(out) = &script {
                    for (rel, data) in &out.outputs {
                        let stored = artifacts.put_bytes(&ArtifactKey::new(format!("models/{sha}/output/{rel}"))?, data.clone().into()).await?;
                        output_uri.get_or_insert(stored.uri);
                    }
                }
                if let Some(run) = self.current_run() {
                    let mut params = galley_blueprint::params_as_strings(&training.params);
                    params.extend(trainer_params(training));
                    params.insert("data_hash".into(), field_str(up, StepName::Extract, "data_hash")?.to_owned());
                    params.insert("train_rows".into(), doc.train_y.len().to_string());
                    if let Some(job) = &job {
                        params.insert("training_job".into(), job.clone());
                    }
                    self.stages.experiments.log_params(&run, &params).await?;
                    self.stages.experiments.log_artifact(&run, "model", &meta.uri).await?;
                    if let Some(out) = &script {
                        if !out.metrics.is_empty() {
                            let points: Vec<_> = out.metrics.iter().map(|(k, v)| galley_core::stages::Metric::new(k.clone(), *v)).collect();
                            self.stages.experiments.log_metrics(&run, &points).await?;
                        }
                        let log_key = ArtifactKey::new(format!("models/{sha}/training.log"))?;
                        let stored = artifacts.put_bytes(&log_key, out.log.clone().into_bytes().into()).await?;
                        self.stages.experiments.log_artifact(&run, "training_log", &stored.uri).await?;
                        if let Some(uri) = &output_uri {
                            self.stages.experiments.log_artifact(&run, "training_output", uri).await?;
                        }
                    }
                }
                let trainer = trainer_params(training).into_iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
                log.line(&format!("trained ({trainer}) on {} rows; model {} ({} bytes)", doc.train_y.len(), meta.uri, meta.size));
                Ok(json!({ "model_key": model_key, "model_uri": meta.uri, "model_sha": meta.sha256, "training_job": job, "output_uri": output_uri }))
            }
            StepName::Evaluate => {
                let model = self.load_model(field_str(up, StepName::Train, "model_key")?).await?;
                let doc: PreparedDoc = get_json(artifacts, field_str(up, StepName::Prepare, "prepared_key")?).await?;
                let metrics = galley_ml::evaluate(&model, &doc.frame(true))?;
                if let Some(run) = self.current_run() {
                    let points: Vec<_> = metrics.iter().map(|(k, v)| galley_core::stages::Metric::new(k.clone(), *v)).collect();
                    self.stages.experiments.log_metrics(&run, &points).await?;
                }
                log.line(&format!("held-out metrics on {} rows: {}", doc.test_y.len(), fmt_metrics(&metrics)));
                Ok(json!({ "metrics": metrics }))
            }
            StepName::ValidateModel => {
                let registry = bp.stages.registry.as_ref().expect("step only exists with a registry");
                let metrics: BTreeMap<String, f64> = serde_json::from_value(field(up, StepName::Evaluate, "metrics")?.clone())?;
                let champion = self.champion().await?;
                let decision = galley_ml::decide(&registry.gate, &metrics, champion.as_ref().map(|c| (c.version, &c.metrics)));
                for r in &decision.reasons {
                    log.line(r);
                }
                if let Some(run) = self.current_run() {
                    let tags = BTreeMap::from([("galley.gate".to_owned(), if decision.passed { "passed" } else { "rejected" }.to_owned())]);
                    self.stages.experiments.set_tags(&run, &tags).await?;
                }
                Ok(json!({ "passed": decision.passed, "reasons": decision.reasons, "champion": champion.map(|c| c.version) }))
            }
            StepName::Register => self.register(up, log).await,
            StepName::Deploy => self.deploy(up, log).await,
            StepName::Monitor => {
                let name = self.monitor_name();
                if field(up, StepName::Register, "version")?.is_null() {
                    // The gate kept the serving model: so does the monitor's baseline (a
                    // baseline from the rejected model would report drift that isn't there).
                    log.line(&format!("no new version deployed: monitor `{name}` keeps its baseline"));
                    return Ok(json!({ "monitor": name, "baseline_rows": null }));
                }
                let model = self.load_model(field_str(up, StepName::Train, "model_key")?).await?;
                let doc: PreparedDoc = get_json(artifacts, field_str(up, StepName::Prepare, "prepared_key")?).await?;
                let predictions = model.score_matrix(&doc.train_x)?.scores;
                self.stages.monitor.set_baseline(&name, &doc.table(&doc.train_x), &predictions).await?;
                log.line(&format!("baseline for monitor `{name}`: {} rows", predictions.len()));
                Ok(json!({ "monitor": name, "baseline_rows": predictions.len() }))
            }
        }
    }

    /// `compute: managed`: hands the training split to the platform's training service and
    /// waits for the model its job leaves. Returns the model's bytes and the job's id.
    async fn train_managed(
        &self,
        up: &BTreeMap<String, StepOutput>,
        training: &galley_blueprint::TrainingStage,
        doc: &PreparedDoc,
        log: &dyn StepLogger,
    ) -> Result<(Vec<u8>, String)> {
        let bp = &self.bp;
        let image = training.image.clone().ok_or_else(|| {
            Error::invalid("`training.compute: managed` needs `training.image` (validate reports this too)")
        })?;
        // The job's name follows from what it trains on and how, so a run restarted after a
        // crash finds the job it started (and its bill) instead of starting a second one.
        let inputs = digest(&[
            field_str(up, StepName::Prepare, "prepared_key")?,
            &serde_json::to_string(&(training.algorithm, &training.params, bp.data.task))?,
            &image,
            &self.code_version,
        ]);
        let name = training_job_name(&bp.name, &inputs);
        let max_runtime = training.max_runtime.as_deref().unwrap_or(DEFAULT_MAX_RUNTIME);
        let max_runtime_secs = galley_blueprint::duration_secs(max_runtime)
            .ok_or_else(|| Error::invalid(format!("invalid `training.max_runtime` `{max_runtime}` (validate reports this too)")))?;
        let job = TrainingJob {
            name: name.clone(),
            image,
            instance_type: training.instance_type.clone(),
            max_runtime_secs,
            algorithm: training.algorithm.ok_or_else(|| Error::invalid("managed training runs a built-in `algorithm` (validate reports this too)"))?,
            params: training.params.clone(),
            task: bp.data.task,
            data: TrainingData {
                label: bp.data.target.clone(),
                features: doc.features.clone(),
                x: doc.train_x.clone(),
                y: doc.train_y.clone(),
                signature: doc.signature.clone(),
            },
        };
        log.line(&format!("training job `{name}` on {} ({} rows)", job.instance_type.as_deref().unwrap_or("the platform's default instance"), doc.train_y.len()));
        let done = self.stages.orchestrator.run_training_job(&job, log).await?;
        check_job_model(&done.model, &doc.signature, &done.job_id)?;
        let billed = done.billable_seconds.map(|s| format!(", {s} s billed")).unwrap_or_default();
        let reused = if done.reused { " (reused: started earlier with the same inputs)" } else { "" };
        log.line(&format!("training job `{}` finished{reused}{billed}; output {}", done.job_id, done.output_uri));
        Ok((done.model, done.job_id))
    }

    /// The user's training code and requirements as they are now (empty for a built-in).
    fn training_code_digest(&self) -> Result<String> {
        match self.bp.stages.training.as_ref() {
            Some(t) if t.command.is_some() => {
                let (code, req) = self.training_paths(t);
                crate::script::code_digest(&code, req.as_deref())
            }
            _ => Ok(String::new()),
        }
    }

    /// `training.code` and `training.requirements`, relative to the blueprint's directory.
    fn training_paths(&self, t: &galley_blueprint::TrainingStage) -> (std::path::PathBuf, Option<std::path::PathBuf>) {
        let code = t.code.as_deref().map(|c| self.project_dir.join(c)).unwrap_or_else(|| self.project_dir.clone());
        (code, t.requirements.as_deref().map(|r| self.project_dir.join(r)))
    }

    /// `training.command`: runs the user's code (see `script.rs`), then checks that the model
    /// it wrote takes the prepared features and scores the held-out rows, before anything
    /// downstream sees it. Returns the model with Galley's signature in its metadata.
    async fn train_script(
        &self,
        command: &str,
        training: &galley_blueprint::TrainingStage,
        doc: &PreparedDoc,
        log: &dyn StepLogger,
    ) -> Result<crate::script::ScriptOutput> {
        // Before a long training run, not after it: the model it writes is checked and scored
        // with ONNX Runtime.
        galley_ml::onnx::find_runtime().map_err(Error::unsupported)?;
        let (code_dir, requirements) = self.training_paths(training);
        let max_runtime = match training.max_runtime.as_deref() {
            Some(m) => Some(std::time::Duration::from_secs(
                galley_blueprint::duration_secs(m).ok_or_else(|| Error::invalid(format!("invalid `training.max_runtime` `{m}` (validate reports this too)")))?,
            )),
            None => None,
        };
        let job = crate::script::ScriptJob {
            command,
            code_dir,
            requirements,
            params: &training.params,
            target: &self.bp.data.target,
            task: self.bp.data.task,
            features: &doc.features,
            train: (&doc.train_x, &doc.train_y),
            validation: (&doc.test_x, &doc.test_y),
            max_runtime,
        };
        let mut out = crate::script::run(&job, log).await?;
        if let Some(columns) = &out.signature_columns
            && *columns != doc.features
        {
            return Err(Error::invalid(format!(
                "the MLflow model's signature takes the columns {}, but the prepared data has {} (in this order); \
                 log it with `infer_signature` on the channel's features",
                columns.join(", "),
                doc.features.join(", ")
            )));
        }
        let (model, tagged) = galley_ml::OnnxModel::adopt(&out.model, &doc.signature, self.bp.data.task)
            .map_err(|e| match e.kind() {
                galley_core::ErrorKind::Unsupported => e,
                kind => Error::new(kind, format!("the model the training command wrote ({}) does not fit the prepared data: {e}", out.found)),
            })?;
        // One trial scoring now, so a model that loads but cannot score these rows fails here,
        // naming the step, and never reaches the registry.
        model
            .score(&doc.test_x[..doc.test_x.len().min(16)])
            .map_err(|e| Error::new(e.kind(), format!("the model the training command wrote ({}) cannot score the prepared rows: {e}", out.found)))?;
        log.line(&format!("model ({}) takes {} features: {}", out.found, doc.features.len(), doc.features.join(", ")));
        out.model = tagged;
        Ok(out)
    }

    async fn load_model(&self, key: &str) -> Result<Model> {
        let bytes = self.stages.artifacts.get_bytes(&ArtifactKey::new(key)?).await?;
        Model::from_bytes(&bytes)
    }

    async fn prepare(&self, up: &BTreeMap<String, StepOutput>, log: &dyn StepLogger) -> Result<Json> {
        let bp = &self.bp;
        let artifacts = &*self.stages.artifacts;
        let table: Table = get_json(artifacts, field_str(up, StepName::Extract, "data_key")?).await?;
        let prepared = galley_ml::prepare(&table, &bp.data, &self.features())?;
        let doc = PreparedDoc {
            features: prepared.train.features.clone(),
            train_x: prepared.train.x,
            train_y: prepared.train.y,
            test_x: prepared.test.x,
            test_y: prepared.test.y,
            signature: prepared.signature,
        };
        let key = format!(
            "prepared/{}.json",
            digest(&[field_str(up, StepName::Extract, "data_hash")?, &serde_json::to_string(&bp.data)?, &doc.features.join(",")])
        );
        put_json(artifacts, &key, &doc).await?;
        log.line(&format!("split {} train / {} test rows (seed {})", doc.train_y.len(), doc.test_y.len(), bp.data.split.seed));

        let mut ingested = 0;
        if let Some(fs) = &bp.stages.features {
            let spec = feature_group_spec(bp, &doc.features);
            let now = galley_core::stages::now_ms();
            let mut rows = Table::new(
                std::iter::once(spec.entity.clone())
                    .chain(std::iter::once(Column::new(&spec.event_time, DType::Int)))
                    .chain(spec.features.iter().cloned())
                    .collect(),
            );
            let idx: Vec<Option<usize>> = doc.features.iter().map(|f| table.column_index(f)).collect();
            for (i, row) in table.rows.iter().enumerate() {
                let mut r = vec![Value::Int(i as i64), Value::Int(now)];
                r.extend(idx.iter().map(|c| c.and_then(|c| row[c].as_f64()).map(Value::Float).unwrap_or(Value::Null)));
                rows.rows.push(r);
            }
            ingested = self.stages.features.ingest(&fs.group, &rows).await?;
            let online = if fs.online { self.stages.features.materialize(&fs.group, now).await? } else { 0 };
            log.line(&format!("ingested {ingested} rows into feature group `{}`; {online} entities online", fs.group));
        }
        Ok(json!({ "prepared_key": key, "train_rows": doc.train_y.len(), "test_rows": doc.test_y.len(), "ingested": ingested }))
    }

    async fn register(&self, up: &BTreeMap<String, StepOutput>, log: &dyn StepLogger) -> Result<Json> {
        let model = self.model_name().expect("step only exists with a registry");
        let passed = field(up, StepName::ValidateModel, "passed")?.as_bool().unwrap_or(false);
        if !passed {
            log.line("the gate rejected the candidate: nothing registered");
            return Ok(json!({ "model": model, "version": null, "new": false }));
        }
        let registry = &self.stages.registry;
        let sha = field_str(up, StepName::Train, "model_sha")?;
        let existing = registry
            .list_versions(model)
            .await?
            .into_iter()
            .find(|v| v.lineage.params.get("model_sha256").map(String::as_str) == Some(sha));
        let (version, new) = match existing {
            Some(v) => {
                log.line(&format!("version {} of `{model}` already holds this model; not registering it twice", v.version));
                (v, false)
            }
            None => {
                let doc: PreparedDoc =
                    get_json(&*self.stages.artifacts, field_str(up, StepName::Prepare, "prepared_key")?).await?;
                let training = self.bp.stages.training.as_ref().expect("checked in Lifecycle::new");
                let mut params = galley_blueprint::params_as_strings(&training.params);
                params.extend(trainer_params(training));
                params.insert("model_sha256".into(), sha.to_owned());
                params.insert(PREPARED_KEY_PARAM.into(), field_str(up, StepName::Prepare, "prepared_key")?.to_owned());
                let new = NewModelVersion {
                    artifact_uri: field_str(up, StepName::Train, "model_uri")?.to_owned(),
                    metrics: serde_json::from_value(field(up, StepName::Evaluate, "metrics")?.clone())?,
                    lineage: Lineage {
                        run_id: self.current_run(),
                        data_hash: Some(field_str(up, StepName::Extract, "data_hash")?.to_owned()),
                        code_version: Some(self.code_version.clone()),
                        params,
                    },
                    signature: doc.signature,
                    description: Some(format!("trained by galley from {}", self.bp.data.source)),
                };
                let v = registry.register_version(model, &new).await?;
                log.line(&format!("registered `{model}` version {}", v.version));
                (v, true)
            }
        };
        match self.promotion {
            Some(Promotion::Alias) => registry.set_alias(model, CHAMPION, version.version).await?,
            Some(Promotion::Approval) => registry.set_approval(model, version.version, ApprovalStatus::Approved).await?,
            Some(Promotion::Stage) => {
                return Err(Error::unsupported(
                    "promotion by stage is not implemented on this platform yet; use `promotion: alias` or `approval`",
                ));
            }
            None => {}
        }
        Ok(json!({ "model": model, "version": version.version, "new": new, "artifact_uri": version.artifact_uri }))
    }

    async fn deploy(&self, up: &BTreeMap<String, StepOutput>, log: &dyn StepLogger) -> Result<Json> {
        let serving = self.bp.stages.serving.as_ref().expect("step only exists with serving");
        let model = self.model_name().expect("step only exists with a registry");
        let current = self.stages.serving.describe(&serving.endpoint).await?;
        let Some(version) = field(up, StepName::Register, "version")?.as_u64() else {
            log.line("no new version passed the gate: the endpoint keeps what it serves");
            return Ok(json!({
                "endpoint": serving.endpoint,
                "url": current.as_ref().map(|c| c.url.clone()),
                "variants": current.map(|c| c.variants).unwrap_or_default(),
            }));
        };
        let mv = self.stages.registry.get_version(model, version).await?;
        let new = Variant {
            name: crate::actions::variant_name(version),
            model: model.to_owned(),
            version,
            artifact_uri: mv.artifact_uri.clone(),
            weight: 0,
        };
        let current_variants = current.map(|c| c.variants).unwrap_or_default();
        let variants = crate::actions::traffic(serving, &current_variants, new);
        let split: Vec<String> = variants.iter().map(|v| format!("{} {}%", v.name, v.weight)).collect();
        log.line(&format!("traffic: {}", split.join(", ")));
        let scaling = crate::actions::scaling(serving);
        if let Some(scaling) = &scaling {
            log.line(&format!("autoscaling: {}", scaling.describe()));
        }
        let info = self
            .stages
            .serving
            .deploy(&EndpointSpec {
                name: serving.endpoint.clone(),
                variants,
                signature: mv.signature.clone(),
                scaling,
            })
            .await?;
        log.line(&format!("endpoint `{}` serving at {}", info.name, info.url));
        Ok(json!({ "endpoint": info.name, "url": info.url, "variants": info.variants }))
    }

    /// One held-out row, as a scoring request, for showing a real prediction after a run.
    pub async fn sample_rows(&self, summary: &crate::RunSummary, n: usize) -> Result<Table> {
        let key = summary
            .prepared_key
            .as_deref()
            .ok_or_else(|| Error::not_found("this run prepared no data to sample from"))?;
        let doc: PreparedDoc = get_json(&*self.stages.artifacts, key).await?;
        Ok(doc.table(&doc.test_x[..n.min(doc.test_x.len())]))
    }
}

/// The lineage parameter naming the prepared split a version was trained and judged on: its
/// held-out rows are what a migrated endpoint is proven on, its training rows a migrated
/// monitor's baseline.
pub const PREPARED_KEY_PARAM: &str = "prepared_key";

/// The rows the `prepare` step split, as scoring tables in the model's signature.
pub struct PreparedRows {
    pub key: String,
    pub train: Table,
    pub test: Table,
}

/// Reads the split the `prepare` step wrote under `key` (see [`PREPARED_KEY_PARAM`]).
pub async fn prepared_rows(artifacts: &dyn galley_core::stages::ArtifactStore, key: &str) -> Result<PreparedRows> {
    let doc: PreparedDoc = get_json(artifacts, key).await?;
    Ok(PreparedRows { key: key.to_owned(), train: doc.table(&doc.train_x), test: doc.table(&doc.test_x) })
}

/// The feature group the blueprint's features stage describes: an integer row key, an
/// event-time column, and the model's numeric features.
pub fn feature_group_spec(bp: &Blueprint, features: &[String]) -> FeatureGroupSpec {
    let fs = bp.stages.features.as_ref();
    FeatureGroupSpec {
        name: fs.map(|f| f.group.clone()).unwrap_or_else(|| bp.name.clone()),
        entity: Column::new(fs.map(|f| f.entity.clone()).unwrap_or_else(|| "row_id".into()), DType::Int),
        event_time: "event_time".into(),
        features: features.iter().map(|f| Column::new(f, DType::Float)).collect(),
        online: fs.map(|f| f.online).unwrap_or(true),
    }
}

/// How a model was trained, for the experiment run and the registry's lineage.
fn trainer_params(t: &galley_blueprint::TrainingStage) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    match (&t.command, t.algorithm) {
        (Some(c), _) => {
            p.insert("command".into(), c.clone());
        }
        (None, Some(a)) => {
            p.insert("algorithm".into(), format!("{a:?}"));
        }
        (None, None) => {}
    }
    p
}

pub(crate) fn fmt_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v:.4}")).collect::<Vec<_>>().join(" ")
}

/// Canonical JSON of a blueprint part, folded into fingerprints.
fn js<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
