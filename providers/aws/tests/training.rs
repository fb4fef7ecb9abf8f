//! `training.compute: managed` as SageMaker Training Jobs, driven through the real SDK against a
//! scripted server: the multi-step polling of the official `TrainingJobCompletedOrStopped`
//! waiter (moto reports `Completed` at once, so it never polls), failure and stop reasons, the
//! reuse of a job started earlier with the same inputs (moto silently overwrites a job of the
//! same name, where SageMaker answers ResourceInUse), and every request validated against the
//! botocore model. The end-to-end run on moto is in tests/e2e.rs.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::botocore::check_sagemaker;
use common::sagemaker_runtime::pack;
use common::scripted::{Reply, Scripted};
use galley_aws::{AwsClients, AwsConfig, S3Artifacts, SageMakerPipelines};
use galley_core::stages::{Orchestrator, StepLogger, TrainingJob};
use galley_core::ErrorKind;
use serde_json::{Value as Json, json};

const JOB_ARN: &str = "arn:aws:sagemaker:us-east-1:123456789012:training-job/galley-wine-0123456789abcdef0123";

struct Lines(Mutex<Vec<String>>);

impl StepLogger for Lines {
    fn line(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_owned());
    }
}

fn job() -> TrainingJob {
    let mut job = galley_testkit::TrainingFixture::standard("galley-wine-0123456789abcdef0123", "123456789012.dkr.ecr.us-east-1.amazonaws.com/galley:0.1").job;
    job.max_runtime_secs = 7_200;
    job
}

/// The channel's files, uploaded before the job is created, are S3 PutObjects: answered here so
/// each test's router speaks only of SageMaker.
fn with_uploads(router: impl Fn(&common::scripted::Recorded, usize) -> Reply + Send + Sync + 'static) -> impl Fn(&common::scripted::Recorded, usize) -> Reply + Send + Sync + 'static {
    move |r, n| if r.method == "PUT" { Reply::xml(200, "") } else { router(r, n) }
}

fn described(status: &str, secondary: &str, extra: Json) -> Reply {
    let mut body = json!({
        "TrainingJobName": "galley-wine-0123456789abcdef0123",
        "TrainingJobArn": JOB_ARN,
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
        "CreationTime": 1.7e9,
        "ModelArtifacts": {"S3ModelArtifacts": ""},
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    Reply::json(200, body)
}

async fn pipelines(server: &Scripted) -> SageMakerPipelines {
    let mut config = AwsConfig::emulator(&server.url, common::REGION, common::ACCESS_KEY, common::SECRET_KEY)
        .with_retry(galley_core::RetryPolicy { max_attempts: 1, ..Default::default() });
    config.role_arn = Some("arn:aws:iam::123456789012:role/galley".into());
    let c = AwsClients::connect(&config).await.unwrap();
    let store = S3Artifacts::new(c.s3.clone(), "wine-bucket");
    let mut p = SageMakerPipelines::new(c, store, None, None);
    p.poll_delay = Some(Duration::from_millis(1));
    p
}

#[test]
fn the_model_file_is_found_in_sagemakers_archive() {
    let packed = pack(&[("./other.txt", b"x"), ("./model.json", b"{\"m\":1}")]);
    assert_eq!(galley_aws::training::unpack(&packed, "model.json").unwrap(), b"{\"m\":1}");
    let e = galley_aws::training::unpack(&pack(&[("weights.bin", b"x")]), "model.json").unwrap_err();
    assert!(e.to_string().contains("weights.bin"), "{e}");
    assert_eq!(galley_aws::training::unpack(b"not gzip", "model.json").unwrap_err().kind(), ErrorKind::Corrupt);
}

#[tokio::test]
async fn the_waiter_polls_through_the_secondary_statuses_and_hands_back_the_model() {
    let model = br#"{"format": "galley-ml/model"}"#.to_vec();
    let uri = "s3://wine-bucket/galley/training/galley-wine-0123456789abcdef0123/output/galley-wine-0123456789abcdef0123/output/model.tar.gz";
    let polls = [
        described("InProgress", "Starting", json!({})),
        described("InProgress", "Downloading", json!({})),
        described("InProgress", "Training", json!({})),
        described("InProgress", "Training", json!({})),
        described("Completed", "Completed", json!({"ModelArtifacts": {"S3ModelArtifacts": uri}, "BillableTimeInSeconds": 312})),
    ];
    let tarball = pack(&[("./model.json", &model)]);
    let server = Scripted::route(with_uploads(move |r, _| match r.sagemaker_op().unwrap_or("") {
        "CreateTrainingJob" => Reply::json(200, json!({"TrainingJobArn": JOB_ARN})),
        "DescribeTrainingJob" => {
            let n = POLLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            polls[n.min(polls.len() - 1)].clone()
        }
        _ if r.method == "GET" => Reply::object(tarball.clone()),
        other => Reply::json(400, json!({"__type": "ValidationException", "message": format!("unexpected {other}")})),
    }))
    .await;
    static POLLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let log = Lines(Mutex::default());
    let done = pipelines(&server).await.run_training_job(&job(), &log).await.unwrap();

    assert_eq!(done.model, model);
    assert_eq!(done.job_id, JOB_ARN);
    assert_eq!(done.output_uri, uri);
    assert_eq!(done.billable_seconds, Some(312));
    assert!(!done.reused);
    let reqs = server.requests();
    let ops = check_sagemaker(&reqs);
    assert_eq!(ops.iter().filter(|o| *o == "DescribeTrainingJob").count(), 5, "one poll per answer until Completed: {ops:?}");
    let get = reqs.iter().find(|r| r.method == "GET").expect("the model archive was read from S3");
    assert!(get.path.contains("/wine-bucket/galley/training/") && get.path.contains("/output/model.tar.gz"), "{}", get.path);

    let create = reqs.iter().find(|r| r.sagemaker_op() == Some("CreateTrainingJob")).unwrap().json();
    assert_eq!(create["AlgorithmSpecification"], json!({"TrainingImage": job().image, "TrainingInputMode": "File"}));
    assert_eq!(create["InputDataConfig"][0]["ChannelName"], "train");
    assert_eq!(
        create["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"],
        "s3://wine-bucket/galley/training/galley-wine-0123456789abcdef0123/input/"
    );
    assert_eq!(create["OutputDataConfig"]["S3OutputPath"], "s3://wine-bucket/galley/training/galley-wine-0123456789abcdef0123/output/");
    assert_eq!(create["StoppingCondition"]["MaxRuntimeInSeconds"], 7200);
    assert_eq!(create["HyperParameters"]["galley_algorithm"], "linear_regression");
    assert_eq!(create["RoleArn"], "arn:aws:iam::123456789012:role/galley");
    // The container contract's channel was written where the job reads it, before the job.
    let puts: Vec<String> = reqs.iter().filter(|r| r.method == "PUT").map(|r| r.path.clone()).collect();
    for file in ["train.csv", "signature.json"] {
        assert!(puts.iter().any(|p| p.contains(&format!("galley/training/galley-wine-0123456789abcdef0123/input/{file}"))), "{puts:?}");
    }

    let lines = log.0.lock().unwrap().clone();
    let moves: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix(&format!("training job `{}`: ", job().name))).collect();
    assert_eq!(moves, ["Starting", "Downloading", "Training", "Completed"], "each status once, as it moves: {lines:?}");
    assert!(lines[0].contains("console.aws.amazon.com/sagemaker/home?region=us-east-1#/jobs/galley-wine-"), "{lines:?}");
}

#[tokio::test]
async fn a_failed_job_stops_the_wait_with_sagemakers_reason() {
    let server = Scripted::route(with_uploads(|r, _| match r.sagemaker_op().unwrap_or("") {
        "CreateTrainingJob" => Reply::json(200, json!({"TrainingJobArn": JOB_ARN})),
        _ => match FAILS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => described("InProgress", "Training", json!({})),
            _ => described("Failed", "Failed", json!({"FailureReason": "AlgorithmError: unknown algorithm `gradient_boosting`"})),
        },
    }))
    .await;
    static FAILS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let e = pipelines(&server).await.run_training_job(&job(), &Lines(Mutex::default())).await.unwrap_err();
    assert!(e.to_string().contains("unknown algorithm `gradient_boosting`"), "{e}");
    assert!(!e.is_retryable(), "a failed job is not retried by resubmitting blindly: {e}");
    let ops = check_sagemaker(&server.requests());
    assert_eq!(ops, ["CreateTrainingJob", "DescribeTrainingJob", "DescribeTrainingJob"], "the waiter stops at Failed");
}

#[tokio::test]
async fn a_stopped_job_is_an_error_not_a_model() {
    let server = Scripted::route(with_uploads(|r, _| match r.sagemaker_op().unwrap_or("") {
        "CreateTrainingJob" => Reply::json(200, json!({"TrainingJobArn": JOB_ARN})),
        _ => described("Stopped", "MaxRuntimeExceeded", json!({})),
    }))
    .await;
    let e = pipelines(&server).await.run_training_job(&job(), &Lines(Mutex::default())).await.unwrap_err();
    assert!(e.to_string().contains("was stopped before it finished"), "{e}");
    assert!(server.requests().iter().all(|r| r.method != "GET"), "no model is read from a stopped job");
}

#[tokio::test]
async fn a_job_started_earlier_with_the_same_inputs_is_reused_not_paid_twice() {
    let model = br#"{"reused": true}"#.to_vec();
    let tarball = pack(&[("./model.json", &model)]);
    let uri = "s3://wine-bucket/galley/training/x/output/model.tar.gz";
    let server = Scripted::route(with_uploads(move |r, _| match r.sagemaker_op().unwrap_or("") {
        "CreateTrainingJob" => Reply::json(400, json!({"__type": "ResourceInUse", "message": "Training job names must be unique within an AWS account and region"})),
        "DescribeTrainingJob" => described("Completed", "Completed", json!({"ModelArtifacts": {"S3ModelArtifacts": uri}})),
        _ => Reply::object(tarball.clone()),
    }))
    .await;
    let log = Lines(Mutex::default());
    let done = pipelines(&server).await.run_training_job(&job(), &log).await.unwrap();
    assert!(done.reused);
    assert_eq!(done.model, model);
    let ops = check_sagemaker(&server.requests());
    assert_eq!(ops.iter().filter(|o| *o == "CreateTrainingJob").count(), 1, "no second job: {ops:?}");
    assert!(log.0.lock().unwrap().iter().any(|l| l.contains("instead of paying twice")));
}

#[tokio::test]
async fn a_job_of_the_same_inputs_that_failed_before_is_submitted_again_under_a_new_name() {
    let uri = "s3://wine-bucket/k/model.tar.gz";
    let tarball = pack(&[("./model.json", b"{}")]);
    let server = Scripted::route(with_uploads(move |r, _| {
        let body = r.json();
        let name = body["TrainingJobName"].as_str().unwrap_or("").to_owned();
        match r.sagemaker_op().unwrap_or("") {
            "CreateTrainingJob" if !name.ends_with("-r2") => Reply::json(400, json!({"__type": "ResourceInUse", "message": "in use"})),
            "CreateTrainingJob" => Reply::json(200, json!({"TrainingJobArn": format!("{JOB_ARN}-r2")})),
            "DescribeTrainingJob" if !name.ends_with("-r2") => described("Failed", "Failed", json!({"FailureReason": "ClientError: out of memory"})),
            "DescribeTrainingJob" => described("Completed", "Completed", json!({"ModelArtifacts": {"S3ModelArtifacts": uri}})),
            _ => Reply::object(tarball.clone()),
        }
    }))
    .await;
    let log = Lines(Mutex::default());
    let done = pipelines(&server).await.run_training_job(&job(), &log).await.unwrap();
    assert!(!done.reused);
    let names: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.sagemaker_op() == Some("CreateTrainingJob"))
        .map(|r| r.json()["TrainingJobName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, [job().name, format!("{}-r2", job().name)]);
    check_sagemaker(&server.requests());
    assert!(log.0.lock().unwrap().iter().any(|l| l.contains("out of memory")), "the earlier failure is reported");
}

#[tokio::test]
async fn a_job_without_a_role_is_refused_before_any_call() {
    let server = Scripted::start(vec![Reply::json(500, json!({}))]).await;
    let mut config = AwsConfig::emulator(&server.url, common::REGION, common::ACCESS_KEY, common::SECRET_KEY);
    config.role_arn = None;
    let c = AwsClients::connect(&config).await.unwrap();
    let p = SageMakerPipelines::new(c.clone(), S3Artifacts::new(c.s3.clone(), "b"), None, None);
    let e = p.run_training_job(&job(), &Lines(Mutex::default())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("platforms.aws.role_arn"), "{e}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn cancelling_the_run_stops_the_billed_job() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOPPED: AtomicBool = AtomicBool::new(false);
    let server = Scripted::route(with_uploads(|r, _| match r.sagemaker_op().unwrap_or("") {
        "CreateTrainingJob" => Reply::json(200, json!({"TrainingJobArn": JOB_ARN})),
        "StopTrainingJob" => {
            STOPPED.store(true, Ordering::SeqCst);
            Reply::json(200, json!({}))
        }
        "DescribeTrainingJob" if STOPPED.load(Ordering::SeqCst) => described("Stopped", "Stopped", json!({})),
        "DescribeTrainingJob" => described("InProgress", "Training", json!({})),
        // The run record lookup of `cancel` (S3): this orchestrator never started that run.
        _ => Reply::s3_error(404, "NoSuchKey", "The specified key does not exist."),
    }))
    .await;
    let p = std::sync::Arc::new(pipelines(&server).await);
    let running = {
        let p = p.clone();
        tokio::spawn(async move { p.run_training_job(&job(), &Lines(Mutex::default())).await })
    };
    while !server.requests().iter().any(|r| r.sagemaker_op() == Some("DescribeTrainingJob")) {
        assert!(!running.is_finished(), "the job ended before it was polled: {:?}", running.await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cancelled = p.cancel("run-0123").await;
    assert_eq!(cancelled.unwrap_err().kind(), ErrorKind::NotFound, "the run itself is unknown here");
    let e = running.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("was stopped before it finished"), "{e}");
    let ops = check_sagemaker(&server.requests());
    assert_eq!(ops.iter().filter(|o| *o == "StopTrainingJob").count(), 1, "{ops:?}");
    let stop = server.requests().into_iter().find(|r| r.sagemaker_op() == Some("StopTrainingJob")).unwrap();
    assert_eq!(stop.json(), json!({"TrainingJobName": job().name}));
}
