//! The testkit behaviour suites against the aws stages on moto, and the proof: every feature
//! the aws platform declares is needed by a case that ran and passed here.
//!
//! SageMaker's container runtime (training jobs, InvokeEndpoint) is `common::sagemaker_runtime`,
//! a proxy in front of moto that runs Galley's own container code where SageMaker would run the
//! image: predictions here are the model's, not bodies a test queued. Cases moto cannot answer
//! are not faked and not silently dropped: they are reported as skipped with the reason (and
//! prove nothing), and the requests they would make are checked against the official botocore
//! model in `tests/spec.rs` instead.

mod common;

use std::sync::Arc;

use galley_aws::{
    AwsMonitor, S3Artifacts, SageMakerExperiments, SageMakerFeatures, SageMakerPipelines, SageMakerRegistry,
    SageMakerServing,
};
use galley_core::StageSet;
use galley_core::stages::{EndpointSpec, Variant};
use galley_testkit::{Fixtures, KnownGap, ServingFixture, TrainingFixture, run_stage_set};

/// A bucket made as `galley apply` makes it: through the provider's bucket handler, so it is
/// versioned and encrypted by the same code a user's is.
async fn applied_bucket(url: &str) -> String {
    use galley_engine::Provider;
    let registry = galley_blueprint::PlatformRegistry::default().with(galley_aws::rules());
    let name = common::unique("galley-test");
    let text = format!(
        "apiVersion: galley/v1\nname: gtk\nplatform: aws\ndata: {{source: builtin:iris, target: species}}\n\
         stages: {{artifacts: {{bucket: {name}}}}}\nplatforms: {{aws: {{region: {}, endpoint_url: \"{url}\"}}}}\n",
        common::REGION
    );
    let bp = galley_blueprint::load_str("gtk.yaml", &text, &Default::default(), &registry).unwrap_or_else(|d| panic!("{}", d.render(false))).blueprint;
    let dir = tempfile::tempdir().unwrap();
    let ctx = galley_engine::ProviderContext { project_dir: dir.path().into(), work_dir: dir.path().join(".galley"), galley_exe: "galley".into() };
    let credentials = galley_aws::CredentialSource::Static { access_key_id: common::ACCESS_KEY.into(), secret_access_key: common::SECRET_KEY.into() };
    let provider = galley_aws::AwsProvider::with_credentials(ctx, credentials);
    let spec = provider.expand(&bp, &[galley_core::Stage::Artifacts]).unwrap().remove(0);
    let owner = galley_core::resource::OwnerTag { blueprint: "gtk".into(), address: spec.address.clone(), lineage: "test-lineage".into() };
    provider.handler(&spec.kind).unwrap().create(&spec, &owner).await.expect("the bucket handler creates the bucket");
    name
}

/// The testkit's standard model, uploaded to S3.
async fn serving_fixture(store: &S3Artifacts) -> ServingFixture {
    use galley_core::stages::{ArtifactKey, ArtifactStoreExt};
    let model = galley_testkit::StandardModel::new();
    let meta = store.put_bytes(&ArtifactKey::new("models/wine/1/model.json").unwrap(), model.bytes.clone().into()).await.unwrap();
    model.fixture(meta.uri)
}

/// Serving on moto behind the SageMaker runtime stand-in (kept alive here), in a fresh bucket
/// holding the standard model.
struct Served {
    _runtime: common::sagemaker_runtime::SageMakerRuntime,
    c: galley_aws::AwsClients,
    bucket: String,
    store: S3Artifacts,
    fixture: ServingFixture,
    serving: SageMakerServing,
}

async fn served_on_the_stand_in(moto: &str) -> Served {
    let runtime = common::sagemaker_runtime::SageMakerRuntime::start(moto).await;
    let c = common::clients(&runtime.url).await;
    let bucket = common::fresh_bucket(&c).await;
    let store = S3Artifacts::new(c.s3.clone(), &bucket);
    let fixture = serving_fixture(&store).await;
    let serving = SageMakerServing::new(c.clone(), Some("galley/serve:test".into()), None);
    Served { _runtime: runtime, c, bucket, store, fixture, serving }
}

/// The testkit's view of AWS's own firing (`common::events`).
#[derive(Debug)]
struct Events(common::events::AwsEvents);

#[async_trait::async_trait]
impl galley_testkit::PlatformEvents for Events {
    async fn pass_time(&self, pipeline: &str, from: i64, to: i64) -> anyhow::Result<()> {
        self.0.pass_time(pipeline, from, to).await
    }
    async fn drift_verdict(&self, monitor: &str, drifted: bool) -> anyhow::Result<()> {
        self.0.drift_verdict(monitor, drifted).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_proves_every_declared_capability() {
    let Some(moto) = common::moto_url() else { return };
    let runtime = common::sagemaker_runtime::SageMakerRuntime::start(&moto).await;
    let c = common::clients(&runtime.url).await;
    let bucket = applied_bucket(&moto).await;
    let store = S3Artifacts::new(c.s3.clone(), &bucket);
    let image = Some("galley/serve:test".to_owned());
    let stages = StageSet {
        artifacts: Arc::new(store.clone()),
        features: Arc::new(SageMakerFeatures::new(c.clone(), store.clone(), None).unwrap()),
        experiments: Arc::new(SageMakerExperiments::new(c.clone(), store.clone())),
        orchestrator: Arc::new(SageMakerPipelines::new(c.clone(), store.clone(), image.clone(), None)),
        registry: Arc::new(SageMakerRegistry::new(c.clone(), image.clone())),
        serving: Arc::new(SageMakerServing::new(c.clone(), image, None)),
        monitor: Arc::new(AwsMonitor::new(store.clone(), c.cloudwatch.clone())),
    };
    let declared = galley_aws::capabilities();
    const MISSING_GROUP: &str = "moto 5.1.22 answers DescribeFeatureGroup for a missing group with HTTP 500 (an unhandled KeyError) instead of ResourceNotFound; the NotFound mapping is covered by galley-aws's error unit tests";
    let known_gaps = vec![
        KnownGap::new("features::delete_group_removes_it", "moto 5.1.22 does not implement DeleteFeatureGroup (500 NotImplementedError); the request is checked against the botocore model in tests/spec.rs"),
        KnownGap::new("features::describe_of_unknown_group_is_none", MISSING_GROUP),
        KnownGap::new("features::ingest_into_unknown_group_is_not_found", MISSING_GROUP),
        KnownGap::new("registry::delete_model_removes_it", "moto 5.1.22 does not implement DeleteModelPackage or DeleteModelPackageGroup (500 NotImplementedError); the requests are checked against the botocore model in tests/spec.rs"),
    ];
    let fixture = serving_fixture(&store).await;
    let fixtures = Fixtures {
        serving: Some(fixture.clone()),
        training: Some(TrainingFixture::standard(&common::unique("galley-testkit-job"), "galley:test")),
        // EventBridge Scheduler, CloudWatch alarms and EventBridge rules firing, over moto's
        // records of them (Galley's monitor publishing through the stand-in's proxy).
        platform_events: Some(Arc::new(Events(common::events::AwsEvents::new(common::clients(&moto).await, AwsMonitor::new(store.clone(), c.cloudwatch.clone()))))),
        known_gaps,
    };
    let report = run_stage_set(&stages, &declared, fixtures).await;
    report.assert_ok();
    report.assert_capabilities_proven(&declared);

    // The two halves of a prediction on aws: what Galley sent InvokeEndpoint (valid for the
    // sagemaker-runtime model, checked by the runtime as it answered) is exactly the rows in
    // the signature's order, and what answered was Galley's serving container running the model.
    let calls = runtime.invocations();
    assert!(!calls.is_empty(), "the serving suite invoked no endpoint");
    // MLflow's `dataframe_split`, written out from the fixture's rows: the signature's columns,
    // and each row's values in that order.
    let columns: Vec<&str> = fixture.spec.signature.inputs.iter().map(|c| c.name.as_str()).collect();
    let at: Vec<usize> = columns.iter().map(|c| fixture.rows.column_index(c).unwrap()).collect();
    let data: Vec<Vec<f64>> = fixture.rows.rows.iter().map(|r| at.iter().map(|i| r[*i].as_f64().unwrap()).collect()).collect();
    let want = serde_json::json!({"dataframe_split": {"columns": columns, "data": data}});
    let sent: Vec<serde_json::Value> = calls.iter().map(|c| serde_json::from_slice(&c.body).unwrap()).collect();
    assert!(sent.contains(&want), "no InvokeEndpoint body was the fixture's rows {want}; sent {sent:?}");
    assert!(calls.iter().all(|c| c.status == 200 || c.status == 400), "{calls:?}");
}

/// A deploy of the same variants with other weights (a canary's next step) is a traffic shift:
/// UpdateEndpointWeightsAndCapacities on the endpoint's config, not a new config and a
/// blue/green update. Read from SageMaker's own record, by this test's own names only (moto
/// ignores `NameContains`, so a listing would see other tests' resources).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weights_only_deploy_shifts_traffic_without_a_new_config() {
    use galley_core::Serving as _;
    let Some(moto) = common::moto_url() else { return };
    let c = common::clients(&moto).await;
    let bucket = common::fresh_bucket(&c).await;
    let store = S3Artifacts::new(c.s3.clone(), &bucket);
    let fixture = serving_fixture(&store).await;
    let serving = SageMakerServing::new(c.clone(), Some("galley/serve:test".into()), None);
    let first = fixture.spec.variants[0].clone();
    let name = common::unique("gtk-shift");
    let spec = |blue: u32, green: u32| EndpointSpec {
        name: name.clone(),
        variants: vec![Variant { name: "blue".into(), weight: blue, ..first.clone() }, Variant { name: "green".into(), weight: green, ..first.clone() }],
        signature: fixture.spec.signature.clone(),
        scaling: None,
    };
    let deploy = |blue, green| {
        let (s, serving) = (spec(blue, green), &serving);
        async move { serving.deploy(&s).await.unwrap() }
    };
    deploy(90, 10).await;
    let before = c.sagemaker.describe_endpoint().endpoint_name(&name).send().await.unwrap();
    let config = before.endpoint_config_name().unwrap().to_owned();
    let info = deploy(0, 100).await;
    let mut weights: Vec<(String, u32)> = info.variants.iter().map(|v| (v.name.clone(), v.weight)).collect();
    weights.sort();
    assert_eq!(weights, vec![("blue".into(), 0), ("green".into(), 100)]);
    let after = c.sagemaker.describe_endpoint().endpoint_name(&name).send().await.unwrap();
    assert_eq!(after.endpoint_config_name(), Some(config.as_str()), "the same config: weights moved in place");
    let green = after.production_variants().iter().find(|v| v.variant_name() == Some("green")).unwrap();
    assert_eq!(green.current_weight(), Some(100.0), "SageMaker's own current weight");

    // (Another image is another config, rolled out by UpdateEndpoint, which moto does not
    // implement: tests/spec.rs checks that request, and serving's unit test the naming.)
    let models = common::config_models(&c, &config).await;
    serving.undeploy(&name).await.unwrap();
    assert!(serving.describe(&name).await.unwrap().is_none());
    assert!(c.sagemaker.describe_endpoint_config().endpoint_config_name(&config).send().await.is_err(), "config {config} left after undeploy");
    for m in models {
        assert!(c.sagemaker.describe_model().model_name(&m).send().await.is_err(), "model {m} left after undeploy");
    }
}

/// Autoscaling as Application Auto Scaling holds it (moto's record, read by resource id): each
/// variant a scalable target between the bounds with one target-tracking policy on
/// `SageMakerVariantInvocationsPerInstance`, the config starting each variant on the minimum;
/// a new version's variant takes over the scaling, the replaced one keeps none (the stand-in
/// refuses, as SageMaker does, to move an endpoint off a variant that is still scaled); and
/// nothing is left after undeploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_is_registered_per_variant_and_follows_a_new_version() {
    use galley_core::Serving as _;
    use galley_core::stages::Scaling;
    let Some(moto) = common::moto_url() else { return };
    let Served { _runtime, c, fixture, serving, .. } = served_on_the_stand_in(&moto).await;
    let name = common::unique("gtk-scale");
    let scaling = Scaling { min_instances: 2, max_instances: 6, requests_per_minute: 120.0 };
    let v1 = Variant { name: "v1".into(), ..fixture.spec.variants[0].clone() };
    let spec = EndpointSpec { name: name.clone(), variants: vec![v1.clone()], signature: fixture.spec.signature.clone(), scaling: Some(scaling.clone()) };
    let info = serving.deploy(&spec).await.unwrap();
    assert_eq!(info.scaling, Some(scaling.clone()));

    let id = |variant: &str| format!("endpoint/{name}/variant/{variant}");
    let target = |variant: &str| {
        let (c, id) = (c.clone(), id(variant));
        async move {
            let out = c.autoscaling.describe_scalable_targets().service_namespace("sagemaker".into()).resource_ids(&id).send().await.unwrap();
            out.scalable_targets().iter().find(|t| t.resource_id() == id).map(|t| (t.min_capacity(), t.max_capacity(), t.scalable_dimension().as_str().to_owned()))
        }
    };
    let policies = |variant: &str| {
        let (c, id) = (c.clone(), id(variant));
        async move {
            let out = c.autoscaling.describe_scaling_policies().service_namespace("sagemaker".into()).resource_id(&id).send().await.unwrap();
            out.scaling_policies()
                .iter()
                .filter(|p| p.resource_id() == id)
                .map(|p| {
                    let t = p.target_tracking_scaling_policy_configuration().expect("a target-tracking policy");
                    let metric = t.predefined_metric_specification().map(|m| m.predefined_metric_type().as_str().to_owned());
                    (p.policy_type().as_str().to_owned(), metric, t.target_value())
                })
                .collect::<Vec<_>>()
        }
    };
    let tracking = vec![("TargetTrackingScaling".to_owned(), Some("SageMakerVariantInvocationsPerInstance".to_owned()), 120.0)];
    assert_eq!(target("v1").await, Some((2, 6, "sagemaker:variant:DesiredInstanceCount".to_owned())));
    assert_eq!(policies("v1").await, tracking);
    let described = c.sagemaker.describe_endpoint().endpoint_name(&name).send().await.unwrap();
    let config = c.sagemaker.describe_endpoint_config().endpoint_config_name(described.endpoint_config_name().unwrap()).send().await.unwrap();
    assert_eq!(config.production_variants()[0].initial_instance_count(), Some(2), "each variant starts on the minimum");

    // The stand-in refuses to move off a variant still scaled (the next test shows it), but an
    // update that keeps every variant as it is goes through.
    let same = c.sagemaker.update_endpoint().endpoint_name(&name).endpoint_config_name(described.endpoint_config_name().unwrap()).send().await;
    assert!(same.is_ok(), "moving to the same config drops no variant: {same:?}");
    let moved = EndpointSpec { variants: vec![Variant { name: "v2".into(), version: 2, ..v1.clone() }], ..spec.clone() };
    let info = serving.deploy(&moved).await.unwrap();
    assert_eq!(info.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), vec!["v2"]);
    assert_eq!(info.scaling, Some(scaling.clone()));
    assert_eq!(target("v1").await, None, "the replaced variant is no longer a scalable target");
    assert!(policies("v1").await.is_empty(), "the replaced variant's policy is gone");
    assert_eq!(target("v2").await.map(|t| (t.0, t.1)), Some((2, 6)));
    assert_eq!(policies("v2").await, tracking);

    serving.undeploy(&name).await.unwrap();
    assert_eq!(target("v2").await, None, "no scalable target outlives the endpoint");
    assert!(policies("v2").await.is_empty(), "no scaling policy outlives the endpoint");
}

/// The stand-in's UpdateEndpoint refuses what SageMaker refuses, so the test above can fail:
/// an endpoint whose variant is a scalable target cannot be moved to a config without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_refuses_to_drop_a_scaled_variant() {
    use galley_core::Serving as _;
    let Some(moto) = common::moto_url() else { return };
    let Served { _runtime, c, fixture, serving, .. } = served_on_the_stand_in(&moto).await;
    let name = common::unique("gtk-scaled");
    let v1 = fixture.spec.variants[0].clone();
    let spec = EndpointSpec { name: name.clone(), variants: vec![v1.clone()], signature: fixture.spec.signature.clone(), scaling: None };
    serving.deploy(&spec).await.unwrap();
    // Scaled behind Galley's back: Galley's deploy would remove only what it reads is there.
    c.autoscaling
        .register_scalable_target()
        .service_namespace("sagemaker".into())
        .resource_id(format!("endpoint/{name}/variant/{}", v1.name))
        .scalable_dimension("sagemaker:variant:DesiredInstanceCount".into())
        .min_capacity(1)
        .max_capacity(2)
        .send()
        .await
        .unwrap();
    let other = EndpointSpec { variants: vec![Variant { name: "other".into(), ..v1.clone() }], ..spec.clone() };
    let config = SageMakerServing::config_name(&other, "galley/serve:test", "ml.m5.large", None);
    // Galley's own deploy removes the registration first, so ask SageMaker directly.
    let role = c.config.role_arn.clone().unwrap();
    let model = c.sagemaker.create_model().model_name(format!("{name}-m")).execution_role_arn(role).primary_container(
        aws_sdk_sagemaker::types::ContainerDefinition::builder().image("galley/serve:test").build(),
    ).send().await;
    assert!(model.is_ok(), "{model:?}");
    c.sagemaker
        .create_endpoint_config()
        .endpoint_config_name(&config)
        .production_variants(
            aws_sdk_sagemaker::types::ProductionVariant::builder()
                .variant_name("other")
                .model_name(format!("{name}-m"))
                .initial_instance_count(1)
                .instance_type("ml.m5.large".into())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let refused = c.sagemaker.update_endpoint().endpoint_name(&name).endpoint_config_name(&config).send().await;
    let message = refused.as_ref().err().and_then(|e| e.as_service_error()).and_then(|e| e.meta().message().map(str::to_owned));
    assert!(message.as_deref().is_some_and(|m| m.contains("must be deregistered as scalable targets")), "{refused:?}");
    serving.undeploy(&name).await.unwrap();
    let _ = c.sagemaker.delete_endpoint_config().endpoint_config_name(&config).send().await;
    let _ = c.sagemaker.delete_model().model_name(format!("{name}-m")).send().await;
}

/// Metric points reach SageMaker Experiments (what Studio charts), not only Galley's record in
/// S3: DescribeTrialComponent, SageMaker's own summary of the run, counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reach_sagemaker_experiments() {
    use galley_core::stages::{ExperimentTracker as _, Metric};
    let Some(moto) = common::moto_url() else { return };
    let c = common::clients(&moto).await;
    let bucket = common::fresh_bucket(&c).await;
    let tracker = SageMakerExperiments::new(c.clone(), S3Artifacts::new(c.s3.clone(), &bucket));
    let experiment = common::unique("gtk-metrics");
    tracker.create_experiment(&experiment).await.unwrap();
    let run = tracker.start_run(&experiment, None, &Default::default()).await.unwrap();
    // Twelve points: more than one BatchPutMetrics call holds.
    let points: Vec<Metric> = (0..12).map(|step| Metric { step, ..Metric::new("loss", 1.0 / (step + 1) as f64) }).collect();
    tracker.log_metrics(&run, &points).await.unwrap();
    tracker.log_metrics(&run, &[Metric::new("accuracy", 0.9)]).await.unwrap();
    let d = c.sagemaker.describe_trial_component().trial_component_name(&run).send().await.unwrap();
    let summary = |name: &str| d.metrics().iter().find(|m| m.metric_name() == Some(name)).unwrap_or_else(|| panic!("no {name} in {:?}", d.metrics())).clone();
    let loss = summary("loss");
    assert_eq!((loss.count(), loss.last(), loss.max()), (Some(12), Some(1.0 / 12.0), Some(1.0)));
    assert_eq!(summary("accuracy").last(), Some(0.9));
    tracker.delete_experiment(&experiment).await.unwrap();
}

/// Drift on real traffic: the endpoint captures what it serves (DataCaptureConfig, SageMaker's
/// capture-file format, written here by the runtime stand-in as SageMaker would), and the
/// monitor named like the endpoint reads those records, not a copy Galley kept: requests with
/// `alcohol` moved by three standard deviations and `ph` unmoved flag exactly `alcohol`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_computed_from_the_traffic_the_endpoint_captured() {
    use galley_core::stages::{DriftConfig, DriftMethod, Monitor as _, Serving as _};
    use galley_core::{Table, Value};
    let Some(moto) = common::moto_url() else { return };
    let Served { _runtime, c, bucket, store, fixture, serving } = served_on_the_stand_in(&moto).await;
    let serving = serving.with_capture(Some(galley_aws::capture::destination(&bucket)));
    let name = common::unique("gtk-capture");
    serving.deploy(&EndpointSpec { name: name.clone(), ..fixture.spec.clone() }).await.unwrap();
    let described = c.sagemaker.describe_endpoint().endpoint_name(&name).send().await.unwrap();
    let config = c.sagemaker.describe_endpoint_config().endpoint_config_name(described.endpoint_config_name().unwrap()).send().await.unwrap();
    assert_eq!(config.data_capture_config().and_then(|d| d.destination_s3_uri()), Some(galley_aws::capture::destination(&bucket).as_str()));

    let mut rng = galley_testkit::support::Normal::seeded(7);
    let mut draw = |n: usize, alcohol_mean: f64| {
        let mut t = Table::new(fixture.spec.signature.inputs.clone());
        for _ in 0..n {
            t.push(vec![Value::Float(rng.sample(alcohol_mean, 1.0)), Value::Float(rng.sample(3.2, 0.15))]).unwrap();
        }
        t
    };
    let baseline = draw(1000, 10.0);
    let predictions: Vec<f64> = baseline.rows.iter().map(|r| 0.6 * r[0].as_f64().unwrap() - 1.5 * r[1].as_f64().unwrap() + 3.0).collect();
    let monitor = AwsMonitor::new(store.clone(), c.cloudwatch.clone());
    monitor.set_baseline(&name, &baseline, &predictions).await.unwrap();
    for _ in 0..3 {
        serving.invoke(&name, &draw(50, 13.0)).await.unwrap();
    }

    let report = monitor.drift(&name, &DriftConfig { method: DriftMethod::Psi, threshold: 0.2, min_samples: 100 }).await.unwrap();
    assert_eq!(report.samples, 150, "every captured row, and only those");
    assert_eq!(report.drifted_features(), vec!["alcohol"], "{report:?}");
    let captured = store.keys(&format!("galley/capture/{name}/v1/")).await.unwrap();
    assert_eq!(captured.len(), 3, "one capture file per request here: {captured:?}");
    assert!(captured.iter().all(|k| k.ends_with(".jsonl") && k.split('/').count() == 9), "<root>/<endpoint>/<variant>/yyyy/mm/dd/hh/file: {captured:?}");
    serving.undeploy(&name).await.unwrap();
    monitor.delete(&name).await.unwrap();
}
