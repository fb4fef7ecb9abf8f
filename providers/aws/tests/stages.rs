//! The testkit behaviour suites against the aws stages on moto.
//!
//! Cases moto cannot answer are not faked and not silently dropped: they are reported as
//! skipped with the reason, and the requests they would make are checked against the official
//! botocore model in `tests/spec.rs` instead:
//! - features: the online cases (moto has no feature-store runtime: PutRecord and
//!   BatchGetRecord answer 404).
//! - serving: routing by weight (moto does not run models or route: InvokeEndpoint answers the
//!   bodies queued with `POST /moto-api/static/sagemaker/endpoint-results`).
//!
//! On moto the serving predictions are those canned bodies, set here to what galley-ml computes
//! for the fixture's model: the suite then checks Galley's request encoding, answer decoding,
//! variant attribution and the Model/EndpointConfig/Endpoint lifecycle — not a model server.

mod common;

use std::sync::Arc;

use galley_aws::{
    AwsClients, AwsMonitor, S3Artifacts, SageMakerExperiments, SageMakerFeatures, SageMakerPipelines, SageMakerRegistry,
    SageMakerServing,
};
use galley_core::stages::{EndpointSpec, Signature, Variant};
use galley_core::table::Column;
use galley_core::{DType, PlatformKind, Table, Value};
use galley_testkit::runner::{Case, Report, run_cases};
use galley_testkit::{ServingCtx, ServingFixture};

/// Runs `cases` minus `excluded`, which are reported as skipped with their reason.
async fn run_except<T: Clone + Send + 'static>(
    suite: &str,
    ctx: T,
    caps: &galley_core::Capabilities,
    cases: Vec<Case<T>>,
    excluded: &[(&str, &str)],
) -> Report {
    let (skip, keep): (Vec<_>, Vec<_>) = cases.into_iter().partition(|c| excluded.iter().any(|(n, _)| *n == c.name));
    let mut report = run_cases(suite, ctx, caps, keep).await;
    for c in skip {
        let why = excluded.iter().find(|(n, _)| *n == c.name).map(|(_, w)| *w).unwrap_or_default();
        report.skipped.push((format!("{suite}::{}", c.name), why.to_owned()));
    }
    report
}

async fn setup() -> Option<(String, AwsClients, S3Artifacts)> {
    let url = common::moto_url()?;
    let c = common::clients(&url).await;
    let bucket = common::fresh_bucket(&c).await;
    let store = S3Artifacts::new(c.s3.clone(), &bucket);
    Some((url, c, store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_suite_on_moto() {
    let Some((_, c, _)) = setup().await else { return };
    let registry: Arc<dyn galley_core::ModelRegistry> = Arc::new(SageMakerRegistry::new(c, Some("galley/serve:test".into())));
    let caps = registry.capabilities();
    let mut report = galley_testkit::check_capabilities(&caps, PlatformKind::Aws);
    report.merge(
        run_except(
            "registry",
            registry,
            &caps,
            galley_testkit::registry::cases(),
            &[("delete_model_removes_it", "moto 5.2.5 does not implement DeleteModelPackage or DeleteModelPackageGroup (500 NotImplementedError); the requests are checked against the botocore model in tests/spec.rs")],
        )
        .await,
    );
    report.assert_ok();
    assert!(report.skipped.iter().any(|(n, _)| n == "registry::aliases_move_and_resolve"), "{}", report.summary());
    assert!(report.passed.iter().any(|n| n == "registry::aliases_are_refused_as_unsupported"), "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_suite_on_moto() {
    let Some((_, c, store)) = setup().await else { return };
    let monitor = Arc::new(AwsMonitor::new(store, c.cloudwatch.clone()));
    galley_testkit::run_monitor(monitor).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiments_suite_on_moto() {
    let Some((_, c, store)) = setup().await else { return };
    let tracker = Arc::new(SageMakerExperiments::new(c, store));
    galley_testkit::run_experiments(tracker).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_suite_on_moto() {
    let Some((_, c, store)) = setup().await else { return };
    let pipelines = Arc::new(SageMakerPipelines::new(c, store, Some("galley/step:test".into()), None));
    galley_testkit::run_orchestrator(pipelines).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_suite_on_moto() {
    let Some((_, c, store)) = setup().await else { return };
    let features: Arc<dyn galley_core::FeatureStore> = Arc::new(SageMakerFeatures::new(c, store, Some("30d")).unwrap());
    let caps = features.capabilities();
    const MISSING_GROUP: &str = "moto 5.2.5 answers DescribeFeatureGroup for a missing group with HTTP 500 (an unhandled KeyError) instead of ResourceNotFound; the NotFound mapping is covered by galley-aws's error unit tests";
    const NO_RUNTIME: &str = "moto has no SageMaker feature-store runtime (PutRecord/BatchGetRecord answer 404); the requests are checked against the botocore model in tests/spec.rs";
    let report = run_except(
        "features",
        features,
        &caps,
        galley_testkit::features::cases(),
        &[
            ("online_reads_latest_value_per_entity", NO_RUNTIME),
            ("online_reads_keep_key_and_feature_order", NO_RUNTIME),
            ("delete_group_removes_it", "moto 5.2.5 does not implement DeleteFeatureGroup (500 NotImplementedError); the request is checked against the botocore model in tests/spec.rs"),
            ("describe_of_unknown_group_is_none", MISSING_GROUP),
            ("ingest_into_unknown_group_is_not_found", MISSING_GROUP),
        ],
    )
    .await;
    report.assert_ok();
    assert_eq!(report.skipped.len(), 5, "{}", report.summary());
}

/// A linear model trained by galley-ml, uploaded to S3; its predictions computed by galley-ml.
async fn serving_fixture(store: &S3Artifacts) -> ServingFixture {
    use galley_core::stages::{ArtifactKey, ArtifactStoreExt};
    let inputs = vec![Column::new("alcohol", DType::Float), Column::new("ph", DType::Float)];
    let signature = Signature { inputs: inputs.clone(), output: Some(Column::new("quality", DType::Float)) };
    let mut rng = fastrand::Rng::with_seed(9);
    let x: Vec<Vec<f64>> = (0..200).map(|_| vec![8.0 + 6.0 * rng.f64(), 2.8 + 0.8 * rng.f64()]).collect();
    let y: Vec<f64> = x.iter().map(|r| 0.6 * r[0] - 1.5 * r[1] + 3.0).collect();
    let frame = galley_ml::Frame { features: vec!["alcohol".into(), "ph".into()], x, y };
    let training: galley_blueprint::TrainingStage =
        serde_json::from_value(serde_json::json!({ "algorithm": "linear_regression" })).unwrap();
    let model = galley_ml::train(&training, galley_ml::Task::Regression, &frame, &signature).unwrap();
    let meta = store.put_bytes(&ArtifactKey::new("models/wine/1/model.json").unwrap(), model.to_bytes().into()).await.unwrap();
    let mut rows = Table::new(inputs);
    for (a, p) in [(9.5, 3.1), (12.25, 3.4), (13.0, 2.9), (10.0, 3.55)] {
        rows.push(vec![Value::Float(a), Value::Float(p)]).unwrap();
    }
    let expected = model.predict(&rows).unwrap();
    let variant = Variant { name: "v1".into(), model: "wine".into(), version: 1, artifact_uri: meta.uri, weight: 100 };
    ServingFixture { spec: EndpointSpec { name: "gtk-wine".into(), variants: vec![variant], signature }, rows, expected, tolerance: 1e-9 }
}

/// Queues InvokeEndpoint answers on moto (it serves them in order to distinct requests).
pub async fn queue_invoke_results(url: &str, results: &[(String, &str)]) {
    let body = serde_json::json!({
        "region": common::REGION,
        "results": results.iter().map(|(body, variant)| serde_json::json!({
            "Body": body, "ContentType": "application/json", "InvokedProductionVariant": variant,
        })).collect::<Vec<_>>(),
    });
    let r = reqwest::Client::new().post(format!("{url}/moto-api/static/sagemaker/endpoint-results")).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "queueing moto endpoint results: {}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_suite_on_moto() {
    let Some((url, c, store)) = setup().await else { return };
    let fixture = serving_fixture(&store).await;
    // The suite's one predicting case sends the 4 rows, then the first row alone.
    let all = serde_json::json!({ "predictions": fixture.expected }).to_string();
    let first = serde_json::json!({ "predictions": [fixture.expected[0]] }).to_string();
    queue_invoke_results(&url, &[(all, "v1"), (first, "v1")]).await;

    let serving: Arc<dyn galley_core::Serving> = Arc::new(SageMakerServing::new(c, Some("galley/serve:test".into()), None));
    let caps = serving.capabilities();
    let ctx = ServingCtx { serving, fixture: Arc::new(fixture) };
    let report = run_except(
        "serving",
        ctx,
        &caps,
        galley_testkit::serving::cases(),
        &[(
            "shift_traffic_routes_by_weight",
            "moto does not route requests between variants (InvokeEndpoint answers canned bodies); weights after UpdateEndpointWeightsAndCapacities are checked by shift_traffic_refuses_weights_not_summing_to_100 and tests/e2e.rs",
        )],
    )
    .await;
    report.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shift_traffic_moves_the_weights_without_a_new_config() {
    use galley_core::Serving as _;
    let Some((_, c, store)) = setup().await else { return };
    let fixture = serving_fixture(&store).await;
    let serving = SageMakerServing::new(c.clone(), Some("galley/serve:test".into()), None);
    let first = fixture.spec.variants[0].clone();
    let spec = EndpointSpec {
        name: common::unique("gtk-shift"),
        variants: vec![Variant { name: "blue".into(), weight: 90, ..first.clone() }, Variant { name: "green".into(), weight: 10, ..first }],
        signature: fixture.spec.signature.clone(),
    };
    let info = serving.deploy(&spec).await.unwrap();
    let weights = |i: &galley_core::stages::EndpointInfo| {
        let mut w: Vec<(String, u32)> = i.variants.iter().map(|v| (v.name.clone(), v.weight)).collect();
        w.sort();
        w
    };
    assert_eq!(weights(&info), vec![("blue".into(), 90), ("green".into(), 10)]);
    let config_before = c.sagemaker.describe_endpoint().endpoint_name(&spec.name).send().await.unwrap().endpoint_config_name().unwrap().to_owned();
    let moved = serving.shift_traffic(&spec.name, &[("blue".into(), 0), ("green".into(), 100)]).await.unwrap();
    assert_eq!(weights(&moved), vec![("blue".into(), 0), ("green".into(), 100)]);
    // Read independently of the adapter: SageMaker's own current weights, same config.
    let d = c.sagemaker.describe_endpoint().endpoint_name(&spec.name).send().await.unwrap();
    assert_eq!(d.endpoint_config_name(), Some(config_before.as_str()));
    let green = d.production_variants().iter().find(|v| v.variant_name() == Some("green")).unwrap();
    assert_eq!(green.current_weight(), Some(100.0));
    serving.undeploy(&spec.name).await.unwrap();
    assert!(serving.describe(&spec.name).await.unwrap().is_none());
    let left = c.sagemaker.list_endpoint_configs().name_contains(&spec.name).send().await.unwrap();
    assert!(left.endpoint_configs().is_empty(), "configs left after undeploy: {:?}", left.endpoint_configs());
    let models = c.sagemaker.list_models().name_contains(&spec.name).send().await.unwrap();
    assert!(models.models().is_empty(), "models left after undeploy: {:?}", models.models());
}

/// The training suite: jobs recorded by moto, their container run by `common::job_runtime`
/// (see there; moto runs no containers). The fixture stages the `train` channel of a small
/// regression problem and expects the model galley-ml trains from it in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_suite_on_moto() {
    use galley_core::stages::{ArtifactKey, ArtifactStoreExt, TrainingJob};
    let Some(url) = common::moto_url() else { return };
    let runtime = common::job_runtime::JobRuntime::start(&url).await;
    let c = common::clients(&runtime.url).await;
    let bucket = common::fresh_bucket(&c).await;
    let store = S3Artifacts::new(c.s3.clone(), &bucket);

    let signature = Signature { inputs: vec![Column::new("alcohol", DType::Float), Column::new("ph", DType::Float)], output: None };
    let mut rng = fastrand::Rng::with_seed(5);
    let x: Vec<Vec<f64>> = (0..120).map(|_| vec![8.0 + 6.0 * rng.f64(), 2.8 + 0.8 * rng.f64()]).collect();
    let y: Vec<f64> = x.iter().map(|r| 0.6 * r[0] - 1.5 * r[1] + 3.0).collect();
    let frame = galley_ml::Frame { features: vec!["alcohol".into(), "ph".into()], x, y };
    let training: galley_blueprint::TrainingStage = serde_json::from_value(serde_json::json!({"algorithm": "linear_regression"})).unwrap();
    let input = galley_lifecycle::container::training_input(&training, galley_ml::Task::Regression, &frame, "quality", &signature).unwrap();
    let name = common::unique("galley-testkit-job");
    for (file, bytes) in &input.files {
        store.put_bytes(&ArtifactKey::new(format!("galley/training/{name}/input/{file}")).unwrap(), bytes.clone().into()).await.unwrap();
    }
    let expected_model = galley_ml::train(&training, galley_ml::Task::Regression, &frame, &signature).unwrap().to_bytes();
    let job = TrainingJob {
        name: name.clone(),
        image: "galley:test".into(),
        instance_type: Some("ml.m5.large".into()),
        input_prefix: format!("galley/training/{name}/input/"),
        output_prefix: format!("galley/training/{name}/output/"),
        model_file: galley_lifecycle::container::MODEL_FILE.into(),
        hyperparameters: input.hyperparameters,
        max_runtime_secs: 600,
    };
    let pipelines = Arc::new(SageMakerPipelines::new(c, store, None, None));
    let report = galley_testkit::run_training(pipelines, Some(galley_testkit::TrainingFixture { job, expected_model })).await;
    report.assert_ok();
    assert_eq!(report.passed.len(), 2, "{}", report.summary());
    assert!(!runtime.created_jobs().is_empty());
}
