//! Operations moto lacks, tested against the official botocore models instead: the adapter
//! runs for real against a scripted server, which records exactly what the AWS SDK sent, and
//! every recorded request is validated against the operation's input shape in
//! `shared/api-specs/aws/botocore/data` (required members, unknown members, types, enums,
//! lengths, patterns). The scripted answers are shaped like AWS's, so the adapter's reading of
//! them is tested too.
//!
//! Rungs: CreateModel with an uncompressed ModelDataSource (moto accepts it; the shape is checked here), UpdateEndpoint, ListPipelineExecutionSteps, StopPipelineExecution, DeleteModelPackage,
//! DeleteModelPackageGroup, DeleteFeatureGroup (SageMaker), PutRecord and BatchGetRecord
//! (feature-store runtime).

mod common;

use std::time::Duration;

use common::botocore::{Model, check_sagemaker};
use common::scripted::{Recorded, Reply, Scripted, unscaled};
use galley_aws::{AwsClients, AwsConfig, S3Artifacts, SageMakerFeatures, SageMakerPipelines, SageMakerRegistry, SageMakerServing};
use galley_core::stages::{EndpointSpec, FeatureGroupSpec, FeatureStore, ModelRegistry, Orchestrator, RunState, Serving, Signature, StepRun, Variant};
use galley_core::table::Column;
use galley_core::{DType, Table, Value};
use serde_json::{Value as Json, json};

const ARN: &str = "arn:aws:sagemaker:us-east-1:123456789012";

async fn clients(url: &str) -> AwsClients {
    let config = AwsConfig::emulator(url, common::REGION, common::ACCESS_KEY, common::SECRET_KEY).with_retry(galley_core::RetryPolicy {
        max_attempts: 1,
        ..Default::default()
    });
    AwsClients::connect(&config).await.unwrap()
}

fn ok(body: Json) -> Reply {
    Reply::json(200, body)
}

#[test]
fn the_validator_has_teeth() {
    let model = Model::load("sagemaker");
    assert!(model.check_request("UpdateEndpoint", &json!({"EndpointName": "wine", "EndpointConfigName": "wine-1"}), &[]).is_empty());
    let p = model.check_request("UpdateEndpoint", &json!({"EndpointName": "wine_bad!", "Bogus": 1}), &[]);
    assert!(p.iter().any(|m| m.contains("required member `EndpointConfigName`")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("`Bogus` is not a member")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("does not match")), "{p:?}");
    let p = model.check_request("UpdateModelPackage", &json!({"ModelPackageArn": format!("{ARN}:model-package/w/1"), "ModelApprovalStatus": "Promoted"}), &[]);
    assert!(p.iter().any(|m| m.contains("not one of")), "{p:?}");
    let p = model.check_request("CreateModelPackage", &json!({"CustomerMetadataProperties": {"k": "{\"json\": 1}"}}), &[]);
    assert!(p.iter().any(|m| m.contains("pattern")), "customer metadata values refuse JSON punctuation: {p:?}");
    // Lookaround patterns are enforced, not skipped: a model package group name ending in `-`
    // breaks ArnOrName's `(?<!-)`, while the same name without it passes.
    let bad = model.check_request("DescribeModelPackageGroup", &json!({"ModelPackageGroupName": "wine-"}), &[]);
    assert!(bad.iter().any(|m| m.contains("does not match") && m.contains("(?<!-)")), "{bad:?}");
    assert!(model.check_request("DescribeModelPackageGroup", &json!({"ModelPackageGroupName": "wine"}), &[]).is_empty());
}

/// Every string pattern in the models Galley's tests read compiles: none is skipped.
#[test]
fn every_botocore_pattern_compiles() {
    for service in ["sagemaker", "sagemaker-runtime", "sagemaker-featurestore-runtime", "sagemaker-metrics"] {
        let model = Model::cached(service);
        let patterns = model.patterns();
        assert!(!patterns.is_empty(), "{service} has no patterns?");
        for (shape, p) in patterns {
            common::botocore::pattern(&p).unwrap_or_else(|e| panic!("{service} {shape}: {p}: {e}"));
        }
    }
}

/// Scripted answers are checked too: one that leaves out a member AWS always sends fails.
#[test]
fn scripted_answers_are_held_to_the_output_shapes() {
    let model = Model::cached("sagemaker");
    let group = json!({
        "ModelPackageGroupName": "wine", "ModelPackageGroupArn": format!("{ARN}:model-package-group/wine"),
        "CreationTime": 1.7e9, "ModelPackageGroupStatus": "Completed",
    });
    let p = model.check_response("DescribeModelPackageGroup", &group);
    assert!(p.iter().any(|m| m.contains("required member `CreatedBy`")), "{p:?}");
    let mut complete = group.clone();
    complete["CreatedBy"] = json!({});
    assert!(model.check_response("DescribeModelPackageGroup", &complete).is_empty());
}

#[tokio::test]
async fn update_endpoint_moves_an_existing_endpoint_to_a_new_config() {
    let server = Scripted::route(|r, _| match r.sagemaker_op() {
        Some("DescribeEndpointConfig") => ok(json!({
            "EndpointConfigName": "wine-cfg", "EndpointConfigArn": format!("{ARN}:endpoint-config/wine-cfg"), "CreationTime": 1.7e9,
            "ProductionVariants": [{"VariantName": "v2", "ModelName": "wine-v2-abc", "InitialVariantWeight": 100.0, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}],
        })),
        Some("DescribeEndpoint") => ok(json!({
            "EndpointName": "wine", "EndpointArn": format!("{ARN}:endpoint/wine"), "EndpointConfigName": "wine-old-config",
            "EndpointStatus": "InService", "CreationTime": 1.7e9, "LastModifiedTime": 1.7e9,
        })),
        Some("UpdateEndpoint") => ok(json!({"EndpointArn": format!("{ARN}:endpoint/wine")})),
        Some("DescribeModel") => ok(json!({"ModelName": "wine-v2-abc", "ModelArn": format!("{ARN}:model/wine-v2-abc"), "CreationTime": 1.7e9})),
        Some("ListTags") => ok(json!({"Tags": []})),
        None => unscaled(r),
        other => Reply::json(400, json!({"__type": "ValidationException", "message": format!("unscripted {other:?}")})),
    })
    .await;
    let mut serving = SageMakerServing::new(clients(&server.url).await, Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/galley:1".into()), None);
    serving.poll_delay = Some(Duration::from_millis(1));
    let spec = EndpointSpec {
        name: "wine".into(),
        variants: vec![Variant { name: "v2".into(), model: "wine".into(), version: 2, artifact_uri: "s3://b/models/2/model.json".into(), weight: 100 }],
        signature: Signature { inputs: vec![Column::new("alcohol", DType::Float)], output: None },
        scaling: None,
    };
    serving.deploy(&spec).await.unwrap();
    let seen = check_sagemaker(&server.requests());
    assert!(seen.contains(&"UpdateEndpoint".to_owned()), "{seen:?}");
    let update = server.requests().into_iter().find(|r| r.sagemaker_op() == Some("UpdateEndpoint")).unwrap();
    assert_eq!(update.json()["EndpointName"], "wine");
    assert_eq!(update.json()["EndpointConfigName"], SageMakerServing::config_name(&spec, "123456789012.dkr.ecr.us-east-1.amazonaws.com/galley:1", "ml.m5.large", None));
    assert!(!seen.contains(&"CreateEndpoint".to_owned()), "an existing endpoint is updated, not recreated: {seen:?}");
}

#[tokio::test]
async fn a_fresh_deploy_places_the_uncompressed_model_where_galleys_image_reads_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static CREATED: AtomicBool = AtomicBool::new(false);
    let missing = |what: &str| Reply::json(400, json!({"__type": "ValidationException", "message": format!("Could not find {what} \"x\".")}));
    let server = Scripted::route(move |r, _| match r.sagemaker_op() {
        Some("DescribeModel") if !CREATED.load(Ordering::SeqCst) => missing("model"),
        Some("DescribeModel") => ok(json!({"ModelName": "m", "ModelArn": format!("{ARN}:model/m"), "CreationTime": 1.7e9})),
        Some("CreateModel") => ok(json!({"ModelArn": format!("{ARN}:model/m")})),
        Some("DescribeEndpointConfig") if !CREATED.load(Ordering::SeqCst) => missing("endpoint configuration"),
        Some("DescribeEndpointConfig") => ok(json!({
            "EndpointConfigName": "c", "EndpointConfigArn": format!("{ARN}:endpoint-config/c"), "CreationTime": 1.7e9,
            "ProductionVariants": [{"VariantName": "v1", "ModelName": "m", "InitialVariantWeight": 100.0, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}],
        })),
        Some("CreateEndpointConfig") => ok(json!({"EndpointConfigArn": format!("{ARN}:endpoint-config/c")})),
        Some("DescribeEndpoint") if !CREATED.load(Ordering::SeqCst) => missing("endpoint"),
        Some("DescribeEndpoint") => ok(json!({
            "EndpointName": "wine", "EndpointArn": format!("{ARN}:endpoint/wine"), "EndpointConfigName": "c",
            "EndpointStatus": "InService", "CreationTime": 1.7e9, "LastModifiedTime": 1.7e9,
        })),
        Some("CreateEndpoint") => {
            CREATED.store(true, Ordering::SeqCst);
            ok(json!({"EndpointArn": format!("{ARN}:endpoint/wine")}))
        }
        Some("ListTags") => ok(json!({"Tags": []})),
        None => unscaled(r),
        other => Reply::json(400, json!({"__type": "ValidationException", "message": format!("unscripted {other:?}")})),
    })
    .await;
    let image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/galley:0.1";
    let mut serving = SageMakerServing::new(clients(&server.url).await, Some(image.into()), None);
    serving.poll_delay = Some(Duration::from_millis(1));
    let spec = EndpointSpec {
        name: "wine".into(),
        variants: vec![Variant { name: "v1".into(), model: "wine".into(), version: 1, artifact_uri: "s3://b/models/ab12/model.json".into(), weight: 100 }],
        signature: Signature { inputs: vec![Column::new("alcohol", DType::Float)], output: None },
        scaling: None,
    };
    serving.deploy(&spec).await.unwrap();
    let seen = check_sagemaker(&server.requests());
    assert!(seen.contains(&"CreateEndpoint".to_owned()), "{seen:?}");
    let create = server.requests().into_iter().find(|r| r.sagemaker_op() == Some("CreateModel")).unwrap().json();
    let container = &create["PrimaryContainer"];
    assert_eq!(container["Image"], image);
    assert!(container.get("ModelDataUrl").is_none(), "ModelDataUrl must be a .tar.gz; a Galley model is one JSON file: {container}");
    // SageMaker puts an uncompressed S3Object at /opt/ml/model/<last part of the key>: model.json.
    assert_eq!(
        container["ModelDataSource"],
        json!({"S3DataSource": {"S3Uri": "s3://b/models/ab12/model.json", "S3DataType": "S3Object", "CompressionType": "None"}})
    );
}

#[tokio::test]
async fn managed_pipeline_status_lists_steps_and_cancel_stops_the_execution() {
    let exec = format!("{ARN}:pipeline/wine-retrain/execution/abc123");
    // The record the `extract` container wrote: its own retries (3) and what it handed on.
    let extract_record = serde_json::to_vec(&StepRun {
        attempts: 3,
        output: Some(json!({"rows": 178})),
        state: RunState::Succeeded,
        ..StepRun::pending("extract")
    })
    .unwrap();
    let server = Scripted::route(move |r, _| match r.sagemaker_op() {
        Some("DescribePipelineExecution") => ok(json!({
            "PipelineArn": format!("{ARN}:pipeline/wine-retrain"), "PipelineExecutionArn": format!("{ARN}:pipeline/wine-retrain/execution/abc123"),
            "PipelineExecutionStatus": "Executing", "CreationTime": 1.7e9, "LastModifiedTime": 1.7e9,
        })),
        // SageMaker lists the newest step first.
        Some("ListPipelineExecutionSteps") => ok(json!({"PipelineExecutionSteps": [
            {"StepName": "validate", "StepStatus": "Failed", "AttemptCount": 1, "FailureReason": "ClientError: bad data", "StartTime": 1.7e9 + 30.0},
            {"StepName": "train", "StepStatus": "Executing", "AttemptCount": 2, "StartTime": 1.7e9 + 20.0},
            {"StepName": "extract", "StepStatus": "Succeeded", "AttemptCount": 1, "StartTime": 1.7e9 + 10.0, "CacheHitResult": {"SourcePipelineExecutionArn": format!("{ARN}:pipeline/wine-retrain/execution/old")}},
        ]})),
        Some("StopPipelineExecution") => ok(json!({"PipelineExecutionArn": format!("{ARN}:pipeline/wine-retrain/execution/abc123")})),
        // A run the schedule started says so in its parameters.
        Some("ListPipelineParametersForExecution") => ok(json!({"PipelineParameters": [
            {"Name": "bundle", "Value": "s3://b/galley/pipelines/wine-retrain/bundle.json"}, {"Name": "trigger", "Value": "schedule"},
        ]})),
        Some(other) => Reply::json(400, json!({"__type": "ValidationException", "message": format!("unscripted {other}")})),
        // S3 (path style): only a succeeded step's record is read.
        None if r.method == "GET" && r.path.starts_with("/unused/galley/pipelines/runs/abc123/outputs/extract.json") => {
            Reply::object(extract_record.clone())
        }
        None => Reply::xml(404, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"),
    })
    .await;
    let c = clients(&server.url).await;
    let store = S3Artifacts::new(c.s3.clone(), "unused");
    let pipelines = SageMakerPipelines::new(c, store, None, None);
    let run = pipelines.status(&exec).await.unwrap();
    assert_eq!(run.pipeline, "wine-retrain");
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.trigger, Some(galley_core::stages::Trigger::Schedule));
    let steps: Vec<(&str, RunState, u32, bool)> = run.steps.iter().map(|s| (s.name.as_str(), s.state, s.attempts, s.cached)).collect();
    assert_eq!(
        steps,
        vec![("extract", RunState::Succeeded, 3, true), ("train", RunState::Running, 2, false), ("validate", RunState::Failed, 1, false)],
        "steps in the order they started, with the container's retries where it recorded more"
    );
    assert_eq!(run.steps[0].output, Some(json!({"rows": 178})));
    assert_eq!(run.steps[2].error.as_deref(), Some("ClientError: bad data"));
    let reqs = server.requests();
    let read: Vec<&str> = reqs.iter().filter(|r| r.sagemaker_op().is_none()).map(|r| r.path.as_str()).collect();
    assert_eq!(read.len(), 1, "only the succeeded step's record is read: {read:?}");
    pipelines.cancel(&exec).await.unwrap();
    let seen = check_sagemaker(&server.requests());
    assert_eq!(seen, vec!["DescribePipelineExecution", "ListPipelineExecutionSteps", "ListPipelineParametersForExecution", "StopPipelineExecution"]);
}

#[tokio::test]
async fn deleting_a_model_deletes_its_versions_then_the_group() {
    let server = Scripted::route(|r, _| match r.sagemaker_op() {
        Some("DescribeModelPackageGroup") => ok(json!({
            "ModelPackageGroupName": "wine", "ModelPackageGroupArn": format!("{ARN}:model-package-group/wine"),
            "CreationTime": 1.7e9, "ModelPackageGroupStatus": "Completed", "CreatedBy": {},
        })),
        Some("ListModelPackages") => ok(json!({"ModelPackageSummaryList": [
            {"ModelPackageName": "wine", "ModelPackageGroupName": "wine", "ModelPackageVersion": 1, "ModelPackageArn": format!("{ARN}:model-package/wine/1"), "CreationTime": 1.7e9, "ModelPackageStatus": "Completed"},
            {"ModelPackageName": "wine", "ModelPackageGroupName": "wine", "ModelPackageVersion": 2, "ModelPackageArn": format!("{ARN}:model-package/wine/2"), "CreationTime": 1.7e9, "ModelPackageStatus": "Completed"},
        ]})),
        Some("DeleteModelPackage") | Some("DeleteModelPackageGroup") => ok(json!({})),
        other => Reply::json(400, json!({"__type": "ValidationException", "message": format!("unscripted {other:?}")})),
    })
    .await;
    SageMakerRegistry::new(clients(&server.url).await, None).delete_model("wine").await.unwrap();
    let seen = check_sagemaker(&server.requests());
    assert_eq!(
        seen,
        vec!["DescribeModelPackageGroup", "ListModelPackages", "DeleteModelPackage", "DeleteModelPackage", "DeleteModelPackageGroup"]
    );
    let deleted: Vec<Json> = server
        .requests()
        .iter()
        .filter(|r| r.sagemaker_op() == Some("DeleteModelPackage"))
        .map(|r| r.json()["ModelPackageName"].clone())
        .collect();
    assert_eq!(deleted, vec![json!(format!("{ARN}:model-package/wine/1")), json!(format!("{ARN}:model-package/wine/2"))]);
}

#[tokio::test]
async fn deleting_a_feature_group_removes_it_and_its_data() {
    let empty_listing = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>";
    let server = Scripted::route(move |r, _| match r.sagemaker_op() {
        Some("DeleteFeatureGroup") => ok(json!({})),
        Some(other) => Reply::json(400, json!({"__type": "ValidationException", "message": format!("unscripted {other}")})),
        // S3 (path style): the group's data prefix is listed and found empty.
        None => Reply::xml(200, empty_listing),
    })
    .await;
    let c = clients(&server.url).await;
    let features = SageMakerFeatures::new(c.clone(), S3Artifacts::new(c.s3.clone(), "b"), None).unwrap();
    features.delete_group("wine-features").await.unwrap();
    let reqs = server.requests();
    assert_eq!(check_sagemaker(&reqs), vec!["DeleteFeatureGroup"]);
    assert!(reqs.iter().any(|r| r.method == "GET" && r.path.contains("prefix=galley%2Ffeatures%2Fwine-features%2F")), "{reqs:?}");
}

/// PutRecord and BatchGetRecord: moto stores the group and its offline rows; the scripted
/// server stands in for the feature-store runtime moto does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialize_puts_the_latest_row_per_entity_and_online_reads_decode_in_order() {
    let Some(url) = common::moto_url() else { return };
    let mut c = common::clients(&url).await;
    let bucket = common::fresh_bucket(&c).await;
    let group = common::unique("gtkfg");
    let runtime = Scripted::route({
        let group = group.clone();
        move |r, _| {
            if r.path == "/BatchGetRecord" {
                ok(json!({
                    "Records": [
                        {"FeatureGroupName": group, "RecordIdentifierValueAsString": "c2", "Record": [
                            {"FeatureName": "visits", "ValueAsString": "5"}, {"FeatureName": "spend", "ValueAsString": "10.5"}]},
                        {"FeatureGroupName": group, "RecordIdentifierValueAsString": "c1", "Record": [
                            {"FeatureName": "spend", "ValueAsString": "2.0"}, {"FeatureName": "visits", "ValueAsString": "2"}]},
                    ],
                    "Errors": [], "UnprocessedIdentifiers": [],
                }))
            } else {
                Reply::json(200, json!({}))
            }
        }
    })
    .await;
    c.featurestore = clients(&runtime.url).await.featurestore;
    let features = SageMakerFeatures::new(c.clone(), S3Artifacts::new(c.s3.clone(), &bucket), None).unwrap();
    let spec = FeatureGroupSpec {
        name: group.clone(),
        entity: Column::new("customer_id", DType::String),
        event_time: "event_ts".into(),
        features: vec![Column::new("spend", DType::Float), Column::new("visits", DType::Int)],
        online: true,
    };
    features.create_group(&spec).await.unwrap();
    let mut rows = Table::new(vec![
        Column::new("customer_id", DType::String),
        Column::new("event_ts", DType::Int),
        Column::new("spend", DType::Float),
        Column::new("visits", DType::Int),
    ]);
    for (e, ts, spend, visits) in [("c1", 2000, 2.0, 2), ("c1", 1000, 1.0, 1), ("c2", 1500, 10.5, 5), ("c3", 9000, 99.0, 9)] {
        rows.push(vec![e.into(), Value::Int(ts), Value::Float(spend), Value::Int(visits)]).unwrap();
    }
    features.ingest(&group, &rows).await.unwrap();
    assert_eq!(features.materialize(&group, 3000).await.unwrap(), 2);

    let model = Model::load("sagemaker-featurestore-runtime");
    let (method, uri) = model.http("PutRecord");
    let puts: Vec<Recorded> = runtime.requests().into_iter().filter(|r| r.path.starts_with("/FeatureGroup/")).collect();
    assert_eq!(puts.len(), 2, "one PutRecord per entity up to the horizon");
    let mut written = Vec::new();
    for p in &puts {
        assert_eq!(p.method, method);
        assert_eq!(p.path, uri.replace("{FeatureGroupName}", &group));
        let problems = model.check_request("PutRecord", &p.json(), &[("FeatureGroupName", json!(group))]);
        assert!(problems.is_empty(), "PutRecord breaks the botocore model: {problems:?}\n{}", p.json());
        let record: Vec<(String, String)> = p.json()["Record"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["FeatureName"].as_str().unwrap().to_owned(), v["ValueAsString"].as_str().unwrap().to_owned()))
            .collect();
        written.push(record);
    }
    written.sort();
    assert_eq!(
        written[0],
        vec![("customer_id".into(), "c1".into()), ("event_ts".into(), "2.000".into()), ("spend".into(), "2.0".into()), ("visits".into(), "2".into())],
        "c1's latest row (t=2000), event time in fractional seconds"
    );
    assert_eq!(written[1][0], ("customer_id".into(), "c2".into()));

    let got = features
        .get_online(&group, &["c1".into(), "nobody".into(), "c2".into()], &["spend".to_owned(), "visits".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Some(vec![Value::Float(2.0), Value::Int(2)]), None, Some(vec![Value::Float(10.5), Value::Int(5)])],
        "answers in the order asked, typed by the group's spec, None for an unknown entity"
    );
    let get = runtime.requests().into_iter().find(|r| r.path == "/BatchGetRecord").unwrap();
    assert_eq!((get.method.as_str(), "/BatchGetRecord"), (model.http("BatchGetRecord").0.as_str(), model.http("BatchGetRecord").1.as_str()));
    let problems = model.check_request("BatchGetRecord", &get.json(), &[]);
    assert!(problems.is_empty(), "BatchGetRecord breaks the botocore model: {problems:?}\n{}", get.json());
    assert_eq!(get.json()["Identifiers"][0]["RecordIdentifiersValueAsString"], json!(["c1", "nobody", "c2"]));
}

/// Predictions do not pay for control-plane calls: the endpoint's config and signature are read
/// once (DescribeEndpoint, DescribeEndpointConfig, ListTags; no DescribeModel), and again only
/// when an invocation is refused, which is how a redeploy by another process shows. A refusal
/// from an endpoint that did not move is the answer, not a reason to invoke twice.
#[tokio::test]
async fn invoke_reads_the_endpoint_once_and_again_only_when_it_moved() {
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    static CONFIG: AtomicU8 = AtomicU8::new(1);
    static REFUSE: AtomicBool = AtomicBool::new(false);
    let signature = |n: u8| {
        let mut inputs = vec![Column::new("alcohol", DType::Float)];
        if n == 2 {
            inputs.push(Column::new("ash", DType::Float));
        }
        Signature { inputs, output: None }
    };
    let server = Scripted::route(move |r, _| {
        let n = CONFIG.load(Ordering::SeqCst);
        if r.path.ends_with("/invocations") {
            let columns = r.json()["dataframe_split"]["columns"].clone();
            let expected = json!(signature(n).inputs.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
            return if REFUSE.load(Ordering::SeqCst) || columns != expected {
                // What SageMaker answers when the model container refuses the body.
                Reply::json(424, json!({"__type": "ModelError", "Message": "Received client error (400) from primary", "OriginalStatusCode": 400}))
            } else {
                ok(json!({"predictions": [7.0, 8.0]}))
            };
        }
        match r.sagemaker_op() {
            Some("DescribeEndpoint") => ok(json!({
                "EndpointName": "wine", "EndpointArn": format!("{ARN}:endpoint/wine"), "EndpointConfigName": format!("wine-c{n}"),
                "EndpointStatus": "InService", "CreationTime": 1.7e9, "LastModifiedTime": 1.7e9,
            })),
            Some("DescribeEndpointConfig") => {
                let name = r.json()["EndpointConfigName"].as_str().unwrap().to_owned();
                let variant = format!("v{}", &name[name.len() - 1..]);
                ok(json!({
                    "EndpointConfigName": name, "EndpointConfigArn": format!("{ARN}:endpoint-config/{name}"), "CreationTime": 1.7e9,
                    "ProductionVariants": [{"VariantName": variant, "ModelName": "m", "InitialVariantWeight": 1.0, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}],
                }))
            }
            Some("ListTags") => {
                let arn = r.json()["ResourceArn"].as_str().unwrap().to_owned();
                let of = if arn.ends_with("c2") { 2 } else { 1 };
                let tags = galley_aws::meta::encode(galley_aws::serving::SIGNATURE_TAG, &signature(of), 40).unwrap();
                ok(json!({"Tags": tags.into_iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>()}))
            }
            other => Reply::json(400, json!({"__type": "ValidationException", "message": format!("unscripted {other:?}")})),
        }
    })
    .await;
    let serving = SageMakerServing::new(clients(&server.url).await, Some("img".into()), None);
    let mut rows = Table::new(vec![Column::new("alcohol", DType::Float), Column::new("ash", DType::Float)]);
    for x in [12.5, 13.1] {
        rows.push(vec![Value::Float(x), Value::Float(2.4)]).unwrap();
    }
    let count = |op: &str| check_sagemaker(&server.requests()).iter().filter(|o| *o == op).count();
    let invocations = || server.requests().iter().filter(|r| r.path.ends_with("/invocations")).count();

    for _ in 0..3 {
        let p = serving.invoke("wine", &rows).await.unwrap();
        assert_eq!((p.predictions, p.variant.as_str()), (vec![7.0, 8.0], "v1"));
    }
    assert_eq!((count("DescribeEndpoint"), count("DescribeEndpointConfig"), count("ListTags")), (1, 1, 1));
    assert_eq!(count("DescribeModel"), 0, "a prediction needs no model descriptions");
    assert_eq!(invocations(), 3);

    // Another process redeploys with a model that also takes `ash`: the cached columns are
    // refused, the endpoint is read again, and the same call succeeds on the new config.
    CONFIG.store(2, Ordering::SeqCst);
    let p = serving.invoke("wine", &rows).await.unwrap();
    assert_eq!(p.variant, "v2");
    assert_eq!(invocations(), 5);
    let last = server.requests().into_iter().rev().find(|r| r.path.ends_with("/invocations")).unwrap();
    assert_eq!(last.json()["dataframe_split"]["columns"], json!(["alcohol", "ash"]));
    assert_eq!(count("DescribeEndpoint"), 2);

    // Refused while the endpoint stays where it is: one invocation, one re-read, the error.
    REFUSE.store(true, Ordering::SeqCst);
    let e = serving.invoke("wine", &rows).await.unwrap_err();
    assert!(e.to_string().contains("ModelError") || e.to_string().contains("client error"), "{e}");
    assert_eq!((invocations(), count("DescribeEndpoint")), (6, 3));
}

/// A feature group is used only once SageMaker says `Created` (PutRecord on a group still
/// `Creating` is refused), and `CreateFailed` ends the apply with SageMaker's reason.
#[tokio::test]
async fn a_new_feature_group_is_ready_before_create_returns() {
    for (statuses, failure) in [(vec!["Creating", "Creating", "Created"], None), (vec!["Creating", "CreateFailed"], Some("Role lacks s3:PutObject"))] {
        let describes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = Scripted::route({
            let (describes, statuses) = (describes.clone(), statuses.clone());
            move |r, _| match r.sagemaker_op() {
                Some("CreateFeatureGroup") => ok(json!({"FeatureGroupArn": format!("{ARN}:feature-group/wine-features")})),
                Some("DescribeFeatureGroup") => {
                    let n = describes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut body = json!({
                        "FeatureGroupArn": format!("{ARN}:feature-group/wine-features"), "FeatureGroupName": "wine-features",
                        "RecordIdentifierFeatureName": "id", "EventTimeFeatureName": "ts", "CreationTime": 1.7e9, "NextToken": "",
                        "FeatureDefinitions": [{"FeatureName": "id", "FeatureType": "String"}, {"FeatureName": "ts", "FeatureType": "Fractional"}],
                        "FeatureGroupStatus": statuses[n.min(statuses.len() - 1)],
                    });
                    if let Some(reason) = failure {
                        body["FailureReason"] = json!(reason);
                    }
                    ok(body)
                }
                Some(other) => Reply::json(400, json!({"__type": "ValidationException", "message": format!("unscripted {other}")})),
                // S3: Galley's copy of the spec beside the group's data.
                None => Reply::xml(200, ""),
            }
        })
        .await;
        let mut config = AwsConfig::emulator(&server.url, common::REGION, common::ACCESS_KEY, common::SECRET_KEY)
            .with_retry(galley_core::RetryPolicy { max_attempts: 1, ..Default::default() });
        config.role_arn = Some("arn:aws:iam::123456789012:role/galley".into());
        let c = AwsClients::connect(&config).await.unwrap();
        let mut features = SageMakerFeatures::new(c.clone(), S3Artifacts::new(c.s3.clone(), "b"), None).unwrap();
        features.poll_delay = Some(Duration::from_millis(1));
        let spec = FeatureGroupSpec {
            name: "wine-features".into(),
            entity: Column::new("id", DType::String),
            event_time: "ts".into(),
            features: vec![],
            online: false,
        };
        let created = features.create_group(&spec).await;
        let ops = check_sagemaker(&server.requests());
        assert_eq!(ops.iter().filter(|o| *o == "DescribeFeatureGroup").count(), statuses.len(), "{ops:?}");
        match failure {
            None => created.unwrap(),
            Some(reason) => {
                let e = created.unwrap_err().to_string();
                assert!(e.contains("CreateFailed") && e.contains(reason), "{e}");
            }
        }
    }
}
