//! `blueprints/aws.yaml` end to end on moto, through the engine: apply → run (the lifecycle,
//! `compute: local`) → a prediction through InvokeEndpoint → destroy, with every resource
//! checked by raw SDK calls independent of the adapter (exists after apply, gone after
//! destroy: a leak check in the spirit of Terraform's CheckDestroy), and a planted secret
//! searched for in everything Galley wrote.
//!
//! Changes to the blueprint for the emulator, and why:
//! - `platforms.aws.endpoint_url` = moto, region `us-east-1`, static test credentials.
//! - unique resource names per run (moto is shared by the tests and cannot delete everything).
//! - `training.image` names a test image: moto starts no container for an endpoint, and for a
//!   training job `common::sagemaker_runtime` runs Galley's container entrypoint in its place.
//!
//! moto does not run models: `common::sagemaker_runtime` answers InvokeEndpoint with Galley's
//! serving container running the model the run registered, and the test compares the answer
//! with galley-ml's own predictions from the same model file.
//!
//! moto 5.1.22 does not implement DeleteFeatureGroup, DeleteModelPackage or
//! DeleteModelPackageGroup: destroying `blueprints/aws.yaml` on moto fails for exactly those
//! two resources (and keeps the bucket they depend on); their requests are spec-checked in
//! tests/spec.rs. A second test destroys a blueprint without them completely, leaving nothing.

mod common;

use common::botocore::Model;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use galley_aws::{AwsClients, AwsProvider, CredentialSource, S3StateBackend};
use galley_blueprint::{Compute, LoadOptions, Loaded};
use galley_core::stages::{ArtifactKey, ArtifactStoreExt, RunState};
use galley_core::{RetryPolicy, StageSet};
use galley_engine::{Engine, EngineOptions, Provider, ProviderContext, Providers, StateBackend, no_events};

/// Everything logged at debug level by any thread, for the secret search.
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || SharedWriter(writer.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Setup {
    loaded: Loaded,
    provider: Arc<AwsProvider>,
    providers: Providers,
    state_bucket: String,
    dir: tempfile::TempDir,
    raw: AwsClients,
}

const STATE_KEY: &str = "galley/wine-quality/state.json";
const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/galley:test";

async fn setup(url: &str, keep: &dyn Fn(&mut galley_blueprint::Blueprint)) -> Setup {
    setup_env(url, None, keep).await
}

async fn setup_env(url: &str, env: Option<&str>, keep: &dyn Fn(&mut galley_blueprint::Blueprint)) -> Setup {
    log_buffer();
    let raw = common::clients(url).await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let state_bucket = format!("galley-e2e-state-{suffix}");
    raw.s3.create_bucket().bucket(&state_bucket).send().await.unwrap();

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints/aws.yaml");
    let source = std::fs::read_to_string(&path).unwrap();
    let opts = LoadOptions {
        vars: BTreeMap::from([("region".to_owned(), common::REGION.to_owned()), ("state_bucket".to_owned(), state_bucket.clone())]),
        env: env.map(str::to_owned),
        ..Default::default()
    };
    let registry = galley_blueprint::PlatformRegistry::default().with(galley_aws::rules());
    let mut loaded = galley_blueprint::load_str_with_env("blueprints/aws.yaml", &source, &opts, &registry, &BTreeMap::new())
        .unwrap_or_else(|d| panic!("blueprints/aws.yaml does not load: {d:?}"));
    let bp = &mut loaded.blueprint;
    bp.name = format!("wine-quality-{suffix}");
    bp.platforms["aws"]["endpoint_url"] = serde_json::json!(url);
    bp.data.source = "builtin:winequality".into();
    let s = &mut bp.stages;
    s.training.as_mut().unwrap().image = Some(IMAGE.into());
    s.artifacts.as_mut().unwrap().bucket = format!("galley-e2e-{suffix}");
    s.features.as_mut().unwrap().group = format!("wine-features-{suffix}");
    s.experiments.as_mut().unwrap().name = format!("wine-quality-{suffix}");
    s.pipeline.as_mut().unwrap().name = format!("wine-quality-retrain-{suffix}");
    s.registry.as_mut().unwrap().model = format!("wine-quality-{suffix}");
    s.serving.as_mut().unwrap().endpoint = format!("wine-quality-{suffix}");
    keep(bp);

    let dir = tempfile::tempdir().unwrap();
    let ctx = ProviderContext { project_dir: dir.path().to_path_buf(), work_dir: dir.path().join(".galley"), galley_exe: "galley".into() };
    let credentials = CredentialSource::Static {
        access_key_id: common::ACCESS_KEY.into(),
        secret_access_key: common::SECRET_KEY.into(),
    };
    let provider = Arc::new(AwsProvider::with_credentials(ctx, credentials));
    let providers = Providers::new(registry).with(provider.clone() as Arc<dyn Provider>);
    Setup { loaded, provider, providers, state_bucket, dir, raw }
}

impl Setup {
    fn engine(&self) -> Engine {
        let backend = S3StateBackend::connect(&common::config(&self.raw.config.endpoint_url.clone().unwrap()), &self.state_bucket, STATE_KEY).unwrap();
        let opts = EngineOptions {
            force: true, // the artifact bucket is `protect: true`
            retry: RetryPolicy { max_attempts: 2, base_delay: std::time::Duration::from_millis(10), ..Default::default() },
            ..Default::default()
        };
        Engine::for_blueprint(&self.loaded.blueprint, &self.providers, Box::new(backend), opts).unwrap()
    }

    async fn stages(&self, engine: &Engine) -> StageSet {
        self.provider.open(&self.loaded.blueprint, &engine.outputs().unwrap()).await.unwrap()
    }

    fn bp(&self) -> &galley_blueprint::Blueprint {
        &self.loaded.blueprint
    }

    /// Everything Galley wrote that can be read back: state (and its backup), every object
    /// in the artifact bucket, and the files under the project directory.
    async fn written(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for bucket in [self.state_bucket.clone(), self.bp().stages.artifacts.as_ref().unwrap().bucket.clone()] {
            let Ok(list) = self.raw.s3.list_objects_v2().bucket(&bucket).send().await else { continue };
            for o in list.contents() {
                let key = o.key().unwrap().to_owned();
                let body = self.raw.s3.get_object().bucket(&bucket).key(&key).send().await.unwrap().body.collect().await.unwrap();
                out.push((format!("s3://{bucket}/{key}"), body.into_bytes().to_vec()));
            }
        }
        for entry in walk(self.dir.path()) {
            out.push((entry.display().to_string(), std::fs::read(&entry).unwrap_or_default()));
        }
        out
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(common::SECRET_KEY), "the planted secret key leaked into {what}");
}

/// By this test's own name (a listing would page through every test's experiments). moto
/// answers DescribeExperiment for a missing name with an error (a 500, not ResourceNotFound).
async fn experiment_exists(c: &AwsClients, name: &str) -> bool {
    c.sagemaker.describe_experiment().experiment_name(name).send().await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_blueprint_applies_runs_serves_and_destroys_on_moto() {
    let Some(moto) = common::moto_url() else { return };
    let runtime = common::sagemaker_runtime::SageMakerRuntime::start(&moto).await;
    let s = setup(&runtime.url, &|_| {}).await;
    let bp = s.bp().clone();
    let st = &bp.stages;
    let (bucket, group, experiment, pipeline, model, endpoint) = (
        st.artifacts.as_ref().unwrap().bucket.clone(),
        st.features.as_ref().unwrap().group.clone(),
        st.experiments.as_ref().unwrap().name.clone(),
        st.pipeline.as_ref().unwrap().name.clone(),
        st.registry.as_ref().unwrap().model.clone(),
        st.serving.as_ref().unwrap().endpoint.clone(),
    );
    let c = &s.raw;

    // ---- plan and apply ----
    let engine = s.engine();
    let plan = engine.plan().await.unwrap();
    let plan_json = serde_json::to_vec(&plan).unwrap();
    let applied = engine.apply(None, no_events()).await.unwrap();
    assert!(applied.is_success(), "apply: {applied:?}");
    assert_eq!(applied.created.len(), 7, "one resource per stage: {applied:?}");
    let again = engine.apply(None, no_events()).await.unwrap();
    assert!(again.created.is_empty() && again.replaced.is_empty() && again.is_success(), "a second apply changes nothing: {again:?}");

    // ---- every resource exists, read without the adapter ----
    let tags = c.s3.get_bucket_tagging().bucket(&bucket).send().await.unwrap();
    let owner = tags.tag_set().iter().find(|t| t.key() == "galley").map(|t| t.value().to_owned()).unwrap();
    assert!(owner.starts_with(&format!("{}/artifacts.store/", bp.name)), "{owner}");
    let versioning = c.s3.get_bucket_versioning().bucket(&bucket).send().await.unwrap();
    assert_eq!(versioning.status(), Some(&aws_sdk_s3::types::BucketVersioningStatus::Enabled));
    let enc = c.s3.get_bucket_encryption().bucket(&bucket).send().await.unwrap();
    assert!(!enc.server_side_encryption_configuration().unwrap().rules().is_empty());
    let fg = c.sagemaker.describe_feature_group().feature_group_name(&group).send().await.unwrap();
    let offline = fg.offline_store_config().and_then(|o| o.s3_storage_config()).and_then(|s| s.s3_uri()).map(str::to_owned);
    assert_eq!(offline, Some(format!("s3://{bucket}/galley/features/{group}/sagemaker-offline")), "offline store on the artifact bucket");
    assert!(experiment_exists(c, &experiment).await);
    let def = c.sagemaker.describe_pipeline().pipeline_name(&pipeline).send().await.unwrap();
    let def: serde_json::Value = serde_json::from_str(def.pipeline_definition().unwrap()).unwrap();
    let step_names: Vec<&str> = def["Steps"].as_array().unwrap().iter().map(|s| s["Name"].as_str().unwrap()).collect();
    assert_eq!(step_names.first(), Some(&"extract"), "{step_names:?}");
    c.sagemaker.describe_model_package_group().model_package_group_name(&model).send().await.unwrap();

    // ---- run the lifecycle: train locally, log to Experiments, register, deploy ----
    let stages = s.stages(&engine).await;
    let lifecycle = Arc::new(galley_lifecycle::Lifecycle::new(Arc::new(bp.clone()), stages.clone(), s.dir.path().to_path_buf(), &s.loaded.hash).unwrap());
    let summary = lifecycle.run(None, false).await.unwrap();
    assert_eq!(summary.state, RunState::Succeeded, "{summary:?}");
    let version = summary.registered_version.expect("the gate passed and a version was registered");
    let d = c.sagemaker.describe_endpoint().endpoint_name(&endpoint).send().await.unwrap();
    assert_eq!(d.endpoint_status(), Some(&aws_sdk_sagemaker::types::EndpointStatus::InService));
    let packages = c.sagemaker.list_model_packages().model_package_group_name(&model).send().await.unwrap();
    let pkg = packages.model_package_summary_list().iter().find(|p| p.model_package_version() == Some(version as i32)).unwrap();
    assert_eq!(pkg.model_approval_status(), Some(&aws_sdk_sagemaker::types::ModelApprovalStatus::Approved), "promotion is the approval status");
    let trials = c.sagemaker.list_trials().experiment_name(&experiment).send().await.unwrap();
    assert_eq!(trials.trial_summaries().len(), 1, "one experiment run (trial) for the pipeline run");

    // ---- a prediction through InvokeEndpoint, answered by Galley's serving container running
    // the registered model (common::sagemaker_runtime), equal to galley-ml's own labels ----
    let rows = lifecycle.sample_rows(&summary, 5).await.unwrap();
    let mv = stages.registry.get_version(&model, version).await.unwrap();
    let key = mv.artifact_uri.strip_prefix(&format!("s3://{bucket}/")).unwrap();
    let trained = galley_ml::TrainedModel::from_bytes(&stages.artifacts.get_bytes(&ArtifactKey::new(key).unwrap()).await.unwrap()).unwrap();
    let expected: Vec<f64> = trained.predict(&rows).unwrap().into_iter().map(|s| trained.label(s)).collect();
    let p = stages.serving.invoke(&endpoint, &rows).await.unwrap();
    assert_eq!(p.predictions, expected, "the container's answer is the model's");
    assert_eq!(p.variant, format!("v{version}"));
    assert!(runtime.invocations().iter().any(|i| i.endpoint == endpoint && i.status == 200));

    // ---- destroy, then check for leaks (by this run's own names: moto ignores NameContains,
    // so a listing would see other tests' resources) ----
    let config = c.sagemaker.describe_endpoint().endpoint_name(&endpoint).send().await.unwrap().endpoint_config_name().unwrap().to_owned();
    let models = common::config_models(c, &config).await;
    assert!(!models.is_empty());
    let destroyed = engine.destroy(no_events()).await.unwrap();
    let mut failed: Vec<&str> = destroyed.failed.iter().map(|(a, _)| a.as_str()).collect();
    failed.sort();
    assert_eq!(failed, vec!["features.group", "registry.model"], "only what moto cannot delete may fail: {destroyed:?}");
    assert_eq!(destroyed.skipped, vec!["artifacts.store".to_owned()], "the bucket outlives the resources that keep data in it");
    let mut deleted = destroyed.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, vec!["experiments.experiment", "monitoring.monitor", "pipeline.pipeline", "serving.endpoint"]);
    assert!(c.sagemaker.describe_endpoint().endpoint_name(&endpoint).send().await.is_err(), "endpoint leaked");
    assert!(c.sagemaker.describe_endpoint_config().endpoint_config_name(&config).send().await.is_err(), "endpoint config {config} leaked");
    for m in &models {
        assert!(c.sagemaker.describe_model().model_name(m).send().await.is_err(), "model {m} leaked");
    }
    assert!(c.sagemaker.describe_pipeline().pipeline_name(&pipeline).send().await.is_err(), "pipeline leaked");
    assert!(!experiment_exists(c, &experiment).await, "experiment leaked");
    let trial = summary.experiment_run.as_deref().expect("the run was tracked as a trial");
    assert!(c.sagemaker.describe_trial().trial_name(trial).send().await.is_err(), "trial {trial} leaked");

    // ---- the planted secret is nowhere Galley wrote ----
    assert_no_secret("the plan", &plan_json);
    assert_no_secret("the outputs", serde_json::to_string(&engine.outputs().unwrap()).unwrap().as_bytes());
    assert_no_secret("the reports", format!("{applied:?}{destroyed:?}{summary:?}").as_bytes());
    let state = s.raw.s3.get_object().bucket(&s.state_bucket).key(STATE_KEY).send().await.unwrap().body.collect().await.unwrap().into_bytes();
    assert!(state.len() > 100, "the state is in S3");
    for (what, bytes) in s.written().await {
        assert_no_secret(&what, &bytes);
    }
    let logs = log_buffer().lock().unwrap().clone();
    assert!(!logs.is_empty(), "debug logs were captured");
    assert_no_secret("the logs", &logs);
}

/// Without the two stages moto cannot delete, destroy leaves nothing behind at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_leaves_nothing_when_moto_can_delete_everything() {
    let Some(url) = common::moto_url() else { return };
    let s = setup(&url, &|bp| {
        bp.stages.features = None;
        bp.stages.registry = None;
        bp.stages.serving = None;
    })
    .await;
    let bp = s.bp().clone();
    let bucket = bp.stages.artifacts.as_ref().unwrap().bucket.clone();
    let experiment = bp.stages.experiments.as_ref().unwrap().name.clone();
    let pipeline = bp.stages.pipeline.as_ref().unwrap().name.clone();
    let c = &s.raw;
    let engine = s.engine();
    let applied = engine.apply(None, no_events()).await.unwrap();
    assert!(applied.is_success(), "{applied:?}");
    let stages = s.stages(&engine).await;
    let lifecycle = Arc::new(galley_lifecycle::Lifecycle::new(Arc::new(bp.clone()), stages, s.dir.path().to_path_buf(), &s.loaded.hash).unwrap());
    let summary = lifecycle.run(None, false).await.unwrap();
    assert_eq!(summary.state, RunState::Succeeded, "{summary:?}");
    let objects = c.s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert!(objects.key_count().unwrap_or(0) > 0, "the run stored its data in the bucket");

    let destroyed = engine.destroy(no_events()).await.unwrap();
    assert!(destroyed.is_success(), "{destroyed:?}");
    assert!(c.s3.head_bucket().bucket(&bucket).send().await.is_err(), "bucket leaked (with every version)");
    assert!(!experiment_exists(c, &experiment).await, "experiment leaked");
    assert!(c.sagemaker.describe_pipeline().pipeline_name(&pipeline).send().await.is_err(), "pipeline leaked");
    let state = S3StateBackend::connect(&common::config(&url), &s.state_bucket, STATE_KEY).unwrap().load().unwrap().unwrap();
    assert!(state.resources.is_empty(), "state still lists {:?}", state.resources.keys().collect::<Vec<_>>());
}

/// `--env prod` trains with `compute: managed`: the train step submits a SageMaker Training
/// Job (recorded by moto; its container run by `common::sagemaker_runtime`, see there), waits for it,
/// reads the model from the job's `model.tar.gz`, and the rest of the lifecycle evaluates,
/// gates and registers exactly that model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_training_runs_as_a_sagemaker_training_job() {
    let Some(url) = common::moto_url() else { return };
    let runtime = common::sagemaker_runtime::SageMakerRuntime::start(&url).await;
    let s = setup_env(&runtime.url, Some("prod"), &|bp| {
        // Features (moto has no runtime for them) and serving are covered by the test above.
        bp.stages.features = None;
        bp.stages.serving = None;
        bp.stages.monitoring = None;
    })
    .await;
    let bp = s.bp().clone();
    let training = bp.stages.training.as_ref().unwrap();
    assert_eq!(training.compute, Compute::Managed, "the prod environment trains on SageMaker");
    assert_eq!(training.max_runtime.as_deref(), Some("2h"));
    let bucket = bp.stages.artifacts.as_ref().unwrap().bucket.clone();
    let model_group = bp.stages.registry.as_ref().unwrap().model.clone();
    let engine = s.engine();
    assert!(engine.apply(None, no_events()).await.unwrap().is_success());

    let stages = s.provider.open(&bp, &engine.outputs().unwrap()).await.unwrap();
    let lifecycle = Arc::new(galley_lifecycle::Lifecycle::new(Arc::new(bp.clone()), stages.clone(), s.dir.path().to_path_buf(), &s.loaded.hash).unwrap());
    let summary = lifecycle.run(None, false).await.unwrap();
    assert_eq!(summary.state, RunState::Succeeded, "{summary:?}");

    // ---- the job as the SDK sent it: valid for the botocore model, and what the blueprint asked ----
    let jobs = runtime.created_jobs();
    assert_eq!(jobs.len(), 1, "one training job per run: {jobs:?}");
    let job = &jobs[0];
    let problems = Model::cached("sagemaker").check_request("CreateTrainingJob", job, &[]);
    assert!(problems.is_empty(), "{problems:?}");
    let name = job["TrainingJobName"].as_str().unwrap();
    assert!(name.starts_with(&format!("galley-{}-", bp.name)), "{name}");
    assert_eq!(job["AlgorithmSpecification"]["TrainingImage"], IMAGE);
    assert_eq!(job["ResourceConfig"]["InstanceType"], "ml.c5.xlarge", "the prod instance type");
    assert_eq!(job["StoppingCondition"]["MaxRuntimeInSeconds"], 7200, "max_runtime: 2h");
    assert_eq!(job["RoleArn"], bp.platforms["aws"]["role_arn"]);
    assert_eq!(job["HyperParameters"]["galley_algorithm"], "logistic_regression");
    let input = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"].as_str().unwrap();
    assert_eq!(input, format!("s3://{bucket}/galley/training/{name}/input/"));

    // ---- moto's record of the job, read without the adapter ----
    let d = s.raw.sagemaker.describe_training_job().training_job_name(name).send().await.unwrap();
    assert_eq!(d.training_job_status(), Some(&aws_sdk_sagemaker::types::TrainingJobStatus::Completed));
    let artifacts = d.model_artifacts().unwrap().s3_model_artifacts().unwrap().to_owned();
    let key = artifacts.strip_prefix(&format!("s3://{bucket}/")).unwrap();
    let packed = s.raw.s3.get_object().bucket(&bucket).key(key).send().await.unwrap().body.collect().await.unwrap().into_bytes();
    let from_job = galley_aws::training::unpack(&packed, "model.json").unwrap();

    // ---- the registered version is the job's model, bit for bit, and it is a real model ----
    let version = summary.registered_version.expect("the gate passed");
    let mv = stages.registry.get_version(&model_group, version).await.unwrap();
    let registered = stages.artifacts.get_bytes(&ArtifactKey::new(mv.artifact_uri.strip_prefix(&format!("s3://{bucket}/")).unwrap()).unwrap()).await.unwrap();
    assert_eq!(registered.to_vec(), from_job, "the registry holds the model the training job left");
    assert!(summary.metrics["roc_auc"] > 0.75, "{:?} {mv:?}", summary.metrics);
    // (The version's own metrics are not compared: moto's UpdateModelPackage, which sets the
    // approval, drops the package's CustomerMetadataProperties, where AWS keeps them.)
    let trial = summary.experiment_run.clone().expect("an experiment run");
    let logged = stages.experiments.get_run(&trial).await.unwrap();
    assert_eq!(logged.params.get("training_job").map(String::as_str), d.training_job_arn(), "the run links its training job");

    // ---- a later run with unchanged inputs reuses the trained model (no second job) ----
    let again = lifecycle.run(None, false).await.unwrap();
    assert_eq!(again.state, RunState::Succeeded);
    assert!(again.steps.iter().any(|s| s.name == "train" && s.cached), "{again:?}");
    assert_eq!(runtime.created_jobs().len(), 1, "cached: no second training job");

    let destroyed = engine.destroy(no_events()).await.unwrap();
    let failed: Vec<&str> = destroyed.failed.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(failed, vec!["registry.model"], "only what moto cannot delete may fail: {destroyed:?}");
}
