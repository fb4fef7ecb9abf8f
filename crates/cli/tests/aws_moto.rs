//! `galley` on the `aws` platform through the real binary, against moto's server
//! (`GALLEY_TEST_MOTO_URL`, started by `.ci/run`): apply → plan (no changes) → run → a
//! prediction through InvokeEndpoint → destroy, with state in S3 and a planted secret that must
//! appear nowhere Galley writes.
//!
//! What moto cannot do shapes three details, said here rather than hidden: moto runs no
//! containers and has no Feature Store runtime, so SageMaker's running part is
//! `sagemaker_runtime` (a proxy in front of moto running Galley's container code: the
//! prediction is the registered model's; the online store's PutRecord/BatchGetRecord checked
//! against botocore's model); moto runs no pipeline execution, so `pipelines` runs each step
//! as `galley container step` of the binary under test, where SageMaker would run Galley's
//! image; and moto has no DeleteModelPackage or DeleteFeatureGroup, so destroy leaves the
//! model package group and the feature group and says so, while state keeps recording them.

#![cfg(feature = "aws")]

mod common;
#[path = "../../../providers/aws/tests/common/botocore.rs"]
mod botocore;
#[path = "../../../providers/aws/tests/common/events.rs"]
mod events;
#[path = "../../../providers/aws/tests/common/image.rs"]
mod image;
#[path = "../../../providers/aws/tests/common/pipelines.rs"]
mod pipelines;
#[path = "../../../providers/aws/tests/common/sagemaker_runtime.rs"]
mod sagemaker_runtime;
#[path = "../../../providers/aws/tests/common/scripted.rs"]
mod scripted;
#[path = "../../../providers/aws/tests/common/substrate.rs"]
mod substrate;

use std::io::{Read, Write};
use std::process::Output;

use common::Project;
use serde_json::Value;

const SECRET: &str = "galley-planted-secret-7f3a9c";

fn moto() -> Option<String> {
    substrate::moto_url()
}

/// A raw HTTP request to moto (it does not check signatures): bucket set-up and its control API.
fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

struct Aws {
    project: Project,
    url: String,
    vars: Vec<String>,
    seen: Vec<u8>,
}

impl Aws {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let (cmd, rest) = args.split_first().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_galley"));
        command
            .current_dir(self.project.path())
            .arg(cmd)
            .arg(&self.project.blueprint)
            .args(rest)
            .args(&self.vars)
            .env("AWS_ENDPOINT_URL", &self.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", "us-east-1")
            .env("GALLEY_LOG", "debug")
            .env_remove("AWS_PROFILE");
        command
    }

    fn galley(&mut self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        self.seen.extend_from_slice(&out.stdout);
        self.seen.extend_from_slice(&out.stderr);
        out
    }

    fn json(&mut self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.galley(&all);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let v = serde_json::from_str(&stdout)
            .or_else(|_| serde_json::from_str(stdout.lines().last().unwrap_or("null")))
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), v)
    }
}

/// moto's queue of InvokeEndpoint bodies is global: each test here starts from an empty moto
/// (cargo runs test binaries one at a time) and holds this lock while it runs.
static MOTO: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A fresh moto and a copy of `blueprints/aws.yaml` with unique names, talking to `endpoint`
/// (moto or a proxy of it).
fn fresh(url: &str, endpoint: &str, extra: &[&str]) -> Aws {
    assert_eq!(http(url, "POST", "/moto-api/reset", "").0, 200);
    let id = format!("{:08x}", std::process::id() ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()));
    let state_bucket = format!("galley-cli-state-{id}");
    assert_eq!(http(url, "PUT", &format!("/{state_bucket}"), "").0, 200);
    let project = Project::from_shipped("aws.yaml", |t| {
        t.replace("acme-wine-quality-artifacts", &format!("galley-cli-{id}"))
            .replace("  features:\n    group: wine-features\n", &format!("  features:\n    group: wine-features-{id}\n"))
            .replace("    ttl: 30d\n", "")
            .replace("    name: wine-quality-retrain\n", &format!("    name: wine-quality-retrain-{id}\n"))
            .replace("  experiments:\n    name: wine-quality\n", &format!("  experiments:\n    name: wine-quality-{id}\n"))
            .replace("    model: wine-quality\n", &format!("    model: wine-quality-{id}\n"))
            .replace("    endpoint: wine-quality\n", &format!("    endpoint: wine-quality-{id}\n"))
    });
    let mut vars = vec!["--var".into(), format!("state_bucket={state_bucket}"), "--var".into(), "region=us-east-1".into()];
    vars.extend(extra.iter().map(|s| s.to_string()));
    Aws { project, url: endpoint.to_owned(), vars, seen: Vec::new() }
}

/// The prediction the run printed is the one the serving container answered (for the rows
/// Galley sent), not a canned body: the two ends of InvokeEndpoint agree.
fn check_sample(run: &Value, runtime: &sagemaker_runtime::SageMakerRuntime) {
    let calls = runtime.invocations();
    let last = calls.last().unwrap_or_else(|| panic!("the run invoked no endpoint: {run}"));
    assert_eq!(last.status, 200, "{last:?}");
    let answered: Value = serde_json::from_slice(&last.answer).unwrap();
    assert_eq!(run["sample_prediction"]["prediction"]["predictions"], answered["predictions"], "deployed and invoked: {run}");
    let label = answered["predictions"][0].as_f64().unwrap();
    assert!(label == 0.0 || label == 1.0, "a class label: {answered}");
    let sent: Value = serde_json::from_slice(&last.body).unwrap();
    let record = &run["sample_prediction"]["request"][0];
    let columns = sent["dataframe_split"]["columns"].as_array().unwrap();
    for (i, c) in columns.iter().enumerate() {
        assert_eq!(sent["dataframe_split"]["data"][0][i], record[c.as_str().unwrap()], "column {c} as sent");
    }
}

#[test]
fn aws_blueprint_through_the_cli_on_moto() {
    let Some(url) = moto() else { return };
    let _moto = MOTO.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let role = ("testing".to_owned(), SECRET.to_owned());
    // Every step runs in Galley's image, built from this binary, as SageMaker would run it.
    let Some(podman) = image::Podman::find() else { return };
    let image = podman.build(std::path::Path::new(env!("CARGO_BIN_EXE_galley")));
    let runtime = rt.block_on(sagemaker_runtime::SageMakerRuntime::with_pipelines_in_image(&url, podman, image.tag.clone(), role));
    let mut aws = fresh(&url, &runtime.url, &[]);
    let state_bucket = aws.vars[1].trim_start_matches("state_bucket=").to_owned();

    let out = aws.galley(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, plan) = aws.json(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "a second plan has no changes: {plan}");
    // moto itself, as boto3 would see it (not through the stand-in).
    let moto_clients = rt.block_on(async { galley_aws::AwsClients::connect(&galley_aws::AwsConfig::emulator(&url, "us-east-1", "testing", "testing")).await.unwrap() });
    // The retraining triggers are AWS's own: the schedule (weekdays 03:00 UTC in AWS's cron,
    // starting the pipeline), the drift alarm and the EventBridge rule whose target is the
    // pipeline, as moto holds them.
    let id = state_bucket.trim_start_matches("galley-cli-state-").to_owned();
    let pipeline = format!("wine-quality-retrain-{id}");
    let trigger_names = (format!("galley-{pipeline}"), format!("galley-{pipeline}-drift"));
    let pipeline_arn = rt.block_on(async {
        let arn = moto_clients.sagemaker.describe_pipeline().pipeline_name(&pipeline).send().await.unwrap().pipeline_arn().unwrap().to_owned();
        let s = moto_clients.scheduler.get_schedule().name(&trigger_names.0).send().await.expect("apply created the schedule");
        assert_eq!(s.schedule_expression(), Some("cron(0 3 ? * MON-FRI *)"));
        assert_eq!(s.target().map(|t| t.arn()), Some(arn.as_str()));
        let alarms = moto_clients.cloudwatch.describe_alarms().alarm_names(&trigger_names.1).send().await.unwrap();
        assert_eq!(alarms.metric_alarms().len(), 1, "apply created the drift alarm");
        let targets = moto_clients.events.list_targets_by_rule().rule(&trigger_names.1).send().await.expect("apply created the drift rule");
        assert_eq!(targets.targets().iter().map(|t| t.arn()).collect::<Vec<_>>(), [arn.as_str()]);
        arn
    });
    // The plan says where the steps will run, as the run then does.
    let runs_on = plan["lifecycle"].as_array().unwrap().iter().find(|a| a["action"] == "run_pipeline").unwrap()["runs_on"].as_str().unwrap_or_default().to_owned();
    assert!(runs_on.starts_with("SageMaker Pipelines") && runs_on.contains("galley:0.1") && runs_on.contains("ml.m5.large"), "{plan}");
    // ... and the autoscaling the deploy will give each variant (`serving.autoscaling`).
    let shift = plan["lifecycle"].as_array().unwrap().iter().find(|a| a["action"] == "shift_traffic").unwrap();
    assert_eq!(shift["scaling"], serde_json::json!({"min_instances": 1, "max_instances": 3, "requests_per_minute": 600.0}), "{plan}");
    let (_, status) = aws.json(&["status"]);
    assert_eq!(status["state"], format!("s3://{state_bucket}/galley/wine-quality/state.json"));
    let platforms: Vec<&str> = status["resources"].as_object().unwrap().values().map(|r| r["platform"].as_str().unwrap()).collect();
    assert!(platforms.len() == 7 && platforms.iter().all(|p| *p == "aws"), "{status}");

    // `galley run` starts a SageMaker pipeline execution and follows it: every step ran in its
    // own container of Galley's image as `IMAGE step …` (as SageMaker runs it), reading the
    // run bundle and its upstream steps' outputs from S3; what the run reports (metrics, the
    // registered version, the endpoint) came back from those processes.
    let (code, run) = aws.json(&["run"]);
    assert_eq!(code, 0, "{run}");
    let execution = run["run"]["pipeline_run"].as_str().unwrap();
    assert!(execution.starts_with("arn:aws:sagemaker:us-east-1:") && execution.contains("/execution/"), "a SageMaker execution: {run}");
    let ran = runtime.pipeline_steps();
    let names: Vec<&str> = ran.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["extract", "validate_data", "prepare", "train", "evaluate", "validate_model", "register", "deploy", "monitor"], "{ran:?}");
    for s in &ran {
        assert_eq!((s.execution.as_str(), s.status.as_str()), (execution, "Succeeded"), "{s:?}");
        assert_eq!(s.request["AppSpecification"]["ImageUri"], "123456789012.dkr.ecr.eu-west-1.amazonaws.com/galley:0.1", "Galley's image: {s:?}");
        assert_eq!(s.request["AppSpecification"]["ContainerArguments"].as_array().unwrap()[..4], ["step", s.name.as_str(), "--run", execution], "{s:?}");
    }
    let summary_steps: Vec<&str> = run["run"]["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(summary_steps.len(), 9, "the run follows SageMaker's step list: {run}");
    assert_eq!(run["run"]["registered_version"], 1, "{run}");
    assert!(run["run"]["metrics"]["roc_auc"].as_f64().unwrap() > 0.75, "{run}");
    assert!(run["run"]["endpoint_url"].as_str().unwrap().contains("/endpoints/"), "{run}");
    check_sample(&run, &runtime);
    // The deployed variant scales as the plan said, in Application Auto Scaling's own record.
    let endpoint = run["run"]["endpoint_url"].as_str().unwrap().split("/endpoints/").nth(1).unwrap().trim_end_matches("/invocations").to_owned();
    let scalable = |variant: &str| {
        let id = format!("endpoint/{endpoint}/variant/{variant}");
        rt.block_on(async {
            let out = moto_clients.autoscaling.describe_scalable_targets().service_namespace("sagemaker".into()).resource_ids(&id).send().await.unwrap();
            out.scalable_targets().iter().find(|t| t.resource_id() == id).map(|t| (t.min_capacity(), t.max_capacity()))
        })
    };
    let policies = |variant: &str| {
        let id = format!("endpoint/{endpoint}/variant/{variant}");
        rt.block_on(async {
            let out = moto_clients.autoscaling.describe_scaling_policies().service_namespace("sagemaker".into()).resource_id(&id).send().await.unwrap();
            out.scaling_policies().iter().filter(|p| p.resource_id() == id).count()
        })
    };
    assert_eq!(scalable("v1"), Some((1, 3)), "variant v1 of `{endpoint}` is a scalable target");
    assert_eq!(policies("v1"), 1, "with its target-tracking policy");
    // The live scaling is what the blueprint asks: no drift. Taken away behind Galley's back,
    // `galley drift` reports it on the endpoint.
    let (code, drift) = aws.json(&["drift"]);
    assert_eq!(code, 0, "{drift}");
    let id = format!("endpoint/{endpoint}/variant/v1");
    rt.block_on(async {
        moto_clients
            .autoscaling
            .deregister_scalable_target()
            .service_namespace("sagemaker".into())
            .resource_id(&id)
            .scalable_dimension("sagemaker:variant:DesiredInstanceCount".into())
            .send()
            .await
            .unwrap();
    });
    // So is the schedule, deleted in the console: the pipeline's schedule reads as gone.
    rt.block_on(async { moto_clients.scheduler.delete_schedule().name(&trigger_names.0).send().await.unwrap() });
    let (code, drift) = aws.json(&["drift"]);
    assert_eq!(code, 2, "{drift}");
    let mut drifted: Vec<&str> = drift["drift"].as_array().unwrap().iter().map(|d| d["address"].as_str().unwrap()).collect();
    drifted.sort();
    assert_eq!(drifted, ["pipeline.pipeline", "serving.endpoint"], "{drift}");
    assert!(drift.to_string().contains("autoscaling") && drift.to_string().contains(&format!("EventBridge Scheduler schedule {} (cron(0 3 ? * MON-FRI *))", trigger_names.0)), "{drift}");
    // `apply` undoes both, as its plan shows.
    let out = aws.galley(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rt.block_on(async { moto_clients.scheduler.get_schedule().name(&trigger_names.0).send().await.expect("apply restored the schedule") });
    assert_eq!(scalable("v1"), Some((1, 3)), "apply registered variant v1 of `{endpoint}` again");
    // The bundle the steps read is in the artifact bucket (and carries no credential).
    let bundle_uri = ran[0].request["AppSpecification"]["ContainerArguments"][5].as_str().unwrap().to_owned();
    let (bucket, key) = bundle_uri.trim_start_matches("s3://").split_once('/').unwrap();
    let bundle = rt.block_on(async {
        let got = moto_clients.s3.get_object().bucket(bucket).key(key).send().await.unwrap_or_else(|e| panic!("{bundle_uri}: {e:?}"));
        String::from_utf8(got.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
    });
    assert!(bundle.contains("\"format\":1") && bundle.contains("\"blueprint_hash\""), "{bundle}");
    aws.seen.extend_from_slice(bundle.as_bytes());

    // Production traffic with `alcohol` moved by four points (about four standard deviations)
    // and every other feature as in the data: the endpoint captures it (DataCaptureConfig; the
    // stand-in writes SageMaker's capture files), and `galley status` reports drift on exactly
    // that feature from those records.
    let wine = galley_ml::load_source("builtin:winequality", std::path::Path::new(".")).unwrap().table;
    let columns: Vec<String> = run["sample_prediction"]["request"][0].as_object().unwrap().keys().cloned().collect();
    let at: Vec<usize> = columns.iter().map(|c| wine.column_index(c).unwrap_or_else(|| panic!("{c} is a wine column"))).collect();
    let step = wine.len() / 600;
    let rows: Vec<Vec<f64>> = wine
        .rows
        .iter()
        .step_by(step)
        .take(600)
        .map(|r| at.iter().zip(&columns).map(|(i, c)| r[*i].as_f64().unwrap() + if c == "alcohol" { 4.0 } else { 0.0 }).collect())
        .collect();
    let body = serde_json::json!({"dataframe_split": {"columns": columns, "data": rows}}).to_string();
    let (code, answered) = aws.json(&["predict", "--data", &body]);
    assert_eq!(code, 0, "{answered}; the run's request: {}", String::from_utf8_lossy(&runtime.invocations().last().unwrap().body));
    // An hour passes on AWS: the drift check (a schedule starting a Processing job of Galley's
    // image, `container check-drift`) reads the captured records and publishes the verdict;
    // CloudWatch's evaluation fires the alarm, and its EventBridge rule starts the pipeline as a
    // drift retrain. (Scheduler's, CloudWatch's and EventBridge's firing are the stand-in in
    // common/events.rs, over what moto holds; the job runs in the runtime stand-in.)
    let store = galley_aws::S3Artifacts::new(moto_clients.s3.clone(), format!("galley-cli-{id}"));
    let events = events::AwsEvents::new(moto_clients.clone(), galley_aws::AwsMonitor::new(store, moto_clients.cloudwatch.clone())).running_jobs_at(&runtime.url);
    let now = galley_core::stages::now_ms();
    rt.block_on(events.pass_time(&pipeline, now - 3_600_000, now)).unwrap();
    let jobs = runtime.processing_jobs();
    assert!(jobs.len() == 1 && jobs[0].0.starts_with("galley-drift-") && jobs[0].1 == "Succeeded", "one drift check ran: {jobs:?}");
    let retrain = rt.block_on(async {
        events.evaluate_drift_alarms(&endpoint).await.unwrap();
        let runs = moto_clients.sagemaker.list_pipeline_executions().pipeline_name(&pipeline).send().await.unwrap();
        let mut started = Vec::new();
        for e in runs.pipeline_execution_summaries() {
            let params = moto_clients.sagemaker.list_pipeline_parameters_for_execution().pipeline_execution_arn(e.pipeline_execution_arn().unwrap()).send().await.unwrap();
            let mut p: Vec<(String, String)> = params.pipeline_parameters().iter().map(|p| (p.name().unwrap().to_owned(), p.value().unwrap().to_owned())).collect();
            p.sort();
            started.push(p);
        }
        started
    });
    let drift_runs: Vec<_> = retrain.iter().filter(|p| p.contains(&("trigger".to_owned(), "drift".to_owned()))).collect();
    assert_eq!(drift_runs.len(), 1, "one drift retrain of {pipeline_arn}: {retrain:?}");
    assert!(drift_runs[0].contains(&("force_from".to_owned(), "train".to_owned())), "{retrain:?}");
    // `galley status` lists it, saying what started each run.
    let (_, status) = aws.json(&["status"]);
    let triggers: Vec<&Value> = status["runs"].as_array().unwrap_or_else(|| panic!("{status}")).iter().map(|r| &r["trigger"]).collect();
    assert_eq!(triggers.iter().filter(|t| **t == "drift").count(), 1, "{}", status["runs"]);

    let (_, status) = aws.json(&["status"]);
    let drift = &status["drift"];
    // 600 captured rows, plus the run's own sample prediction when it came after the baseline.
    assert!((600..=601).contains(&drift["samples"].as_u64().unwrap()), "{drift}");
    let flagged: Vec<&str> = drift["features"].as_array().unwrap().iter().filter(|f| f["drifted"] == true).map(|f| f["feature"].as_str().unwrap()).collect();
    assert_eq!(flagged, ["alcohol"], "{drift}");

    // The artifact bucket is protected: destroy refuses without --force.
    let out = aws.galley(&["destroy", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("protect"), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, destroyed) = aws.json(&["destroy", "--auto-approve", "--force"]);
    let mut failed: Vec<&str> = destroyed["report"]["failed"].as_array().unwrap().iter().map(|f| f[0].as_str().unwrap()).collect();
    failed.sort();
    // moto lacks DeleteFeatureGroup and DeleteModelPackage(Group): those resources stay, and
    // state keeps them.
    assert_eq!(failed, ["features.group", "registry.model"], "{destroyed}");
    assert_eq!(code, 1);
    assert_eq!(policies("v1"), 0, "no scaling policy outlives the endpoint (its target was deregistered behind Galley's back)");
    rt.block_on(async {
        assert!(moto_clients.scheduler.get_schedule().name(&trigger_names.0).send().await.is_err(), "destroy deleted the schedule");
        let alarms = moto_clients.cloudwatch.describe_alarms().alarm_names(&trigger_names.1).send().await.unwrap();
        assert!(alarms.metric_alarms().is_empty(), "destroy deleted the drift alarm");
        assert!(moto_clients.events.describe_rule().name(&trigger_names.1).send().await.is_err(), "destroy deleted the drift rule");
    });
    let (_, status) = aws.json(&["status"]);
    let left: Vec<&String> = status["resources"].as_object().unwrap().keys().collect();
    assert!(left.iter().all(|a| ["features.group", "registry.model", "artifacts.store"].contains(&a.as_str())), "state records exactly what exists: {left:?}");

    // The planted secret is nowhere: not in what galley printed (debug logs and the state, via
    // `status`, included), not in the files it wrote. (The aws crate's e2e also reads the state
    // object and every bucket object with the SDK and greps them.)
    let mut written = String::from_utf8_lossy(&aws.seen).into_owned();
    assert!(written.contains("\"lineage\""), "the state was printed by `status`");
    for f in common::files_under(aws.project.path()) {
        if let Ok(bytes) = std::fs::read(aws.project.path().join(&f)) {
            written.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    assert!(!written.contains(SECRET), "the secret leaked");
}

/// Ctrl-C during `galley run` stops the SageMaker execution (StopPipelineExecution): the step
/// container running then is killed, no later step starts, the execution ends `Stopped`, and
/// galley exits non-zero saying it was interrupted.
#[test]
fn ctrl_c_stops_the_pipeline_execution() {
    let Some(url) = moto() else { return };
    let _moto = MOTO.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let role = ("testing".to_owned(), SECRET.to_owned());
    let runtime = rt.block_on(sagemaker_runtime::SageMakerRuntime::with_pipelines(&url, env!("CARGO_BIN_EXE_galley").into(), role));
    let mut aws = fresh(&url, &runtime.url, &[]);
    let out = aws.galley(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Into files, not pipes: galley's debug log would fill a pipe no one reads yet.
    let logs = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = aws
        .command(&["run"])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while runtime.pipeline_steps().is_empty() {
        if child.try_wait().unwrap().is_some() {
            panic!("the run ended before a step started: {}", std::fs::read_to_string(&stderr).unwrap());
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no step started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let code = child.wait().unwrap().code();
    let (stdout, stderr) = (std::fs::read_to_string(&stdout).unwrap(), std::fs::read_to_string(&stderr).unwrap());
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("interrupted: cancelling the run"), "{stderr}");

    let ran = runtime.pipeline_steps();
    assert!(ran.len() < 9, "the steps after the stop never started: {ran:?}");
    assert_eq!(ran.last().unwrap().status, "Stopped", "{ran:?}");
    assert!(ran[..ran.len() - 1].iter().all(|s| s.status == "Succeeded"), "{ran:?}");
    let execution = ran[0].execution.clone();
    let status = rt.block_on(async {
        let c = galley_aws::AwsClients::connect(&galley_aws::AwsConfig::emulator(&runtime.url, "us-east-1", "testing", "testing")).await.unwrap();
        c.sagemaker.describe_pipeline_execution().pipeline_execution_arn(&execution).send().await.unwrap()
    });
    assert_eq!(status.pipeline_execution_status().map(|s| s.as_str()), Some("Stopped"));
    aws.seen.extend_from_slice(stdout.as_bytes());
    aws.seen.extend_from_slice(stderr.as_bytes());
    assert!(!String::from_utf8_lossy(&aws.seen).contains(SECRET), "the secret leaked");
}

/// `--env prod` trains with `compute: managed`: `galley run` submits a SageMaker Training Job.
/// moto records it; `sagemaker_runtime` (a proxy in front of moto) runs Galley's container entrypoint
/// where SageMaker would run the image, and puts `model.tar.gz` where SageMaker puts it.
#[test]
fn managed_training_through_the_cli_on_moto() {
    let Some(url) = moto() else { return };
    let _moto = MOTO.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let jobs = rt.block_on(sagemaker_runtime::SageMakerRuntime::start(&url));
    let mut aws = fresh(&url, &jobs.url, &["--env", "prod"]);

    // The plan says a billed training job will run, where, and for how long at most.
    let (code, plan) = aws.json(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{plan}");
    let submit = plan["lifecycle"].as_array().unwrap().iter().find(|a| a["action"] == "submit_training_job").unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(submit["platform"], "aws");
    assert_eq!(submit["instance_type"], "ml.c5.xlarge");
    assert_eq!(submit["max_runtime"], "2h");

    let out = aws.galley(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The steps in this process (the debugging path), the training on SageMaker.
    let (code, run) = aws.json(&["run", "--local-steps"]);
    assert_eq!(code, 0, "{run}");
    assert!(!run["run"]["pipeline_run"].as_str().unwrap().starts_with("arn:"), "run here: {run}");
    assert_eq!(run["run"]["registered_version"], 1, "{run}");
    assert!(run["run"]["metrics"]["roc_auc"].as_f64().unwrap() > 0.75, "{run}");
    let job_arn = run["run"]["training_job"].as_str().unwrap_or_else(|| panic!("the run names its training job: {run}"));
    assert!(job_arn.starts_with("arn:aws:sagemaker:us-east-1:") && job_arn.contains(":training-job/galley-wine-quality-"), "{job_arn}");

    let created = jobs.created_jobs();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["ResourceConfig"]["InstanceType"], "ml.c5.xlarge", "the prod instance type");
    assert_eq!(created[0]["StoppingCondition"]["MaxRuntimeInSeconds"], 7200, "prod's max_runtime: 2h");

    check_sample(&run, &jobs);
    // (A second run is not made here: moto's UpdateModelPackage drops the champion's metrics, so
    // the gate would pass again and the redeploy would need UpdateEndpoint, which moto lacks.
    // The aws crate's e2e checks that a second run reuses the trained model.)

    let (_, destroyed) = aws.json(&["destroy", "--auto-approve", "--force"]);
    let mut failed: Vec<&str> = destroyed["report"]["failed"].as_array().unwrap().iter().map(|f| f[0].as_str().unwrap()).collect();
    failed.sort();
    assert_eq!(failed, ["features.group", "registry.model"], "only what moto cannot delete: {destroyed}");
    assert!(!String::from_utf8_lossy(&aws.seen).contains(SECRET), "the secret leaked");
}

/// Before the first apply, the state bucket may not exist: plan says how to make it, `galley
/// init` makes it versioned (an overwritten state stays recoverable), and a second init only
/// reports what is there. Read back through moto's own S3 API, not through Galley.
#[test]
fn init_creates_the_state_bucket_versioned() {
    let Some(url) = moto() else { return };
    let _moto = MOTO.lock().unwrap_or_else(|p| p.into_inner());
    let mut aws = fresh(&url, &url, &[]);
    let bucket = format!("{}-new", aws.vars[1].trim_start_matches("state_bucket="));
    aws.vars[1] = format!("state_bucket={bucket}");

    let out = aws.galley(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("the state bucket `{bucket}` does not exist")) && err.contains("galley init"), "{err}");

    let (code, init) = aws.json(&["init"]);
    assert_eq!(code, 0, "{init}");
    assert!(init["init"].as_str().unwrap().starts_with(&format!("created the state bucket `{bucket}`")), "{init}");
    let (status, versioning) = http(&url, "GET", &format!("/{bucket}?versioning"), "");
    assert_eq!(status, 200);
    assert!(versioning.contains("<Status>Enabled</Status>"), "{versioning}");
    let (_, public) = http(&url, "GET", &format!("/{bucket}?publicAccessBlock"), "");
    assert!(public.contains("<BlockPublicAcls>true</BlockPublicAcls>"), "{public}");

    let (code, again) = aws.json(&["init"]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["init"], format!("the state bucket `{bucket}` exists and is versioned"));
    let out = aws.galley(&["plan"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `training.command` on aws: SageMaker endpoints run Galley's image, which carries no ONNX
/// Runtime, so validate refuses it where the blueprint serves (naming `local`, which does); and
/// without serving, a run whose steps would go to SageMaker Pipelines is refused before any
/// execution starts, naming the way that works.
#[test]
fn training_command_on_aws_is_refused_where_it_cannot_run() {
    let Some(url) = moto() else { return };
    let _moto = MOTO.lock().unwrap_or_else(|p| p.into_inner());
    let mut aws = fresh(&url, &url, &[]);
    let text = std::fs::read_to_string(&aws.project.blueprint).unwrap();
    let text = text
        .replace(
            "    algorithm: logistic_regression\n    compute: ${var.compute}\n    image: ${var.image}\n    instance_type: ${var.instance_type}\n",
            "    command: python3 train.py\n",
        )
        // The drift check runs in Galley's image, which this blueprint no longer names.
        .replace("retrain_on: [schedule, drift]", "retrain_on: [schedule]");
    assert!(text.contains("command: python3 train.py"), "the shipped aws blueprint's training block changed");
    std::fs::write(&aws.project.blueprint, &text).unwrap();
    std::fs::write(aws.project.path().join("train.py"), "raise SystemExit('never run here')\n").unwrap();
    let out = aws.galley(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("platform `aws` cannot honour serving ONNX models") && err.contains("local"), "{err}");

    let serving = text.find("  serving:\n").unwrap();
    let platforms = text.find("\nplatforms:").unwrap();
    std::fs::write(&aws.project.blueprint, format!("{}{}", &text[..serving], &text[platforms..])).unwrap();
    let out = aws.galley(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = aws.galley(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`training.command` runs your code on this machine") && err.contains("--local-steps"), "{err}");
    aws.galley(&["destroy", "--auto-approve", "--force"]);
}

/// `galley migrate` local → aws → local on moto: a local stack with two versions behind a canary
/// split moves to aws (S3, SageMaker Experiments, the model registry, an endpoint), killed with
/// SIGKILL at every kill point and resumed until done; the aws copy then moves back to another
/// local stack the same way. Each is proven by `migrate verify`, whose predictions come from the
/// serving container's code behind `sagemaker_runtime` on aws, and moto's own API counts what
/// arrived. moto cannot delete model packages, so destroy leaves the group, as elsewhere here.
#[test]
fn migrate_local_to_aws_and_back_on_moto() {
    let Some(url) = moto() else { return };
    let _moto = MOTO.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runtime = rt.block_on(sagemaker_runtime::SageMakerRuntime::start(&url));
    let id = format!("{:08x}", std::process::id() ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos());
    let text = |suffix: &str| {
        format!(
            "apiVersion: galley/v1\nname: wine-mig{suffix}\nplatform: local\nvars:\n  iters: 200\n\
             data:\n  source: builtin:winequality\n  target: quality\n  positive_when: {{at_least: 6}}\n\
             stages:\n  artifacts:\n    bucket: galley-mig{suffix}-{id}\n  experiments:\n    name: wine-mig{suffix}-{id}\n\
             \x20 training:\n    algorithm: logistic_regression\n    params: {{max_iterations: \"${{var.iters}}\"}}\n    image: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/galley:0.1\n\
             \x20 registry:\n    model: wine-mig{suffix}-{id}\n    gate: {{metric: accuracy, at_least: 0.6}}\n\
             \x20 serving:\n    endpoint: wine-mig{suffix}-{id}\n    model: ${{stages.registry.outputs.model}}\n    traffic: {{strategy: canary, percent: 10}}\n\
             \x20 monitoring:\n    drift: {{method: ks, threshold: 0.1}}\n\
             platforms:\n  aws:\n    region: us-east-1\n    role_arn: arn:aws:iam::123456789012:role/galley-sagemaker\n"
        )
    };
    let project = Project::with_text("stack.yaml", &text(""));
    std::fs::write(project.path().join("back.yaml"), text("-back")).unwrap();
    let mut aws = Aws { project, url: runtime.url.clone(), vars: Vec::new(), seen: Vec::new() };
    let out = aws.galley(&["up"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = aws.galley(&["run", "--var", "iters=400"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // `galley migrate SUB stack.yaml ARGS…` with moto's credentials.
    let migrate = |aws: &Aws, sub: &str, args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_galley"));
        c.current_dir(aws.project.path()).args(["migrate", sub, "stack.yaml"]).args(args).args(["--output", "json"]);
        c.env("AWS_ENDPOINT_URL", &aws.url).env("AWS_ACCESS_KEY_ID", "testing").env("AWS_SECRET_ACCESS_KEY", SECRET).env("AWS_REGION", "us-east-1");
        c.env("NO_COLOR", "1").env_remove("GALLEY_OUTPUT");
        c
    };
    let last_json = |out: &Output| -> Value {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null)
    };
    // Killed at its `stride`-th kill point, every time, until a run gets through (1: at every
    // point; the local test does that too, so the way back, with its larger store, takes every
    // third to keep CI short).
    let migrate_until_done = |aws: &mut Aws, args: &[&str], stride: &str| -> (usize, Value) {
        let mut kills = 0;
        loop {
            let out = migrate(aws, "apply", &[args, &["--auto-approve"]].concat()).env("GALLEY_TEST_MIGRATE_CRASH_AT", stride).output().unwrap();
            aws.seen.extend_from_slice(&out.stdout);
            aws.seen.extend_from_slice(&out.stderr);
            if std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(9) {
                kills += 1;
                assert!(kills < 300, "no progress after {kills} kills");
                continue;
            }
            assert!(out.status.success(), "{}\n{}", last_json(&out), String::from_utf8_lossy(&out.stderr));
            return (kills, last_json(&out));
        }
    };

    // local → aws.
    let to_aws = ["--to", "aws"];
    let (kills, done) = migrate_until_done(&mut aws, &to_aws, "1");
    println!("local → aws: killed {kills} times, then {}", done["applied"]);
    assert!(kills >= 12, "killed only {kills} times: {done}");
    assert_eq!(done["ok"], true, "{done}");
    let proof = &done["proof"];
    let checks = proof["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["ok"] == true), "{proof}");
    let predictions = checks.iter().find(|c| c["what"] == "predictions").unwrap_or_else(|| panic!("{proof}"));
    assert!(predictions["detail"].as_str().unwrap().contains("v1 → v1, v2 → v2"), "{proof}");
    // The answers came from the serving container behind InvokeEndpoint, per variant.
    let invoked: std::collections::BTreeSet<String> = runtime.invocations().iter().filter(|i| i.status == 200).map(|i| i.variant.clone()).collect();
    assert!(invoked.contains("v1") && invoked.contains("v2"), "{invoked:?}");

    let out = migrate(&aws, "verify", &to_aws).output().unwrap();
    assert!(out.status.success(), "verify, again: {}", last_json(&out));

    // moto's own API: every version once, every object, the endpoint on both variants.
    let moto_clients = rt.block_on(async { galley_aws::AwsClients::connect(&galley_aws::AwsConfig::emulator(&url, "us-east-1", "testing", "testing")).await.unwrap() });
    rt.block_on(async {
        let packages = moto_clients.sagemaker.list_model_packages().model_package_group_name(format!("wine-mig-{id}")).send().await.unwrap();
        assert_eq!(packages.model_package_summary_list().len(), 2, "two versions, none twice");
        let objects = moto_clients.s3.list_objects_v2().bucket(format!("galley-mig-{id}")).send().await.unwrap();
        let artifacts = checks.iter().find(|c| c["what"] == "artifacts").unwrap()["detail"].as_str().unwrap().to_owned();
        let n: usize = artifacts.split_whitespace().next().unwrap().parse().unwrap();
        assert!(objects.key_count().unwrap_or_default() as usize >= n, "{artifacts}: {objects:?}");
        let ep = moto_clients.sagemaker.describe_endpoint().endpoint_name(format!("wine-mig-{id}")).send().await.unwrap();
        let mut variants: Vec<&str> = ep.production_variants().iter().filter_map(|v| v.variant_name()).collect();
        variants.sort();
        assert_eq!(variants, ["v1", "v2"]);
    });

    // aws → another local stack: the aws copy is now the source.
    let aws_state = ".galley/migrate/aws/state.json";
    let back = ["--platform", "aws", "--state", aws_state, "--to", "back.yaml", "--target-state", ".galley/back.json"];
    let (kills, done) = migrate_until_done(&mut aws, &back, "3");
    println!("aws → local: killed {kills} times, then {}", done["applied"]);
    assert!(kills >= 8, "killed only {kills} times: {done}");
    assert_eq!(done["ok"], true, "{done}");
    let checks = done["proof"]["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["what"] == "predictions" && c["detail"].as_str().unwrap().contains("v1 → v1, v2 → v2")), "{done}");

    for (file, state) in [("back.yaml", ".galley/back.json"), ("stack.yaml", aws_state)] {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_galley"));
        c.current_dir(aws.project.path()).args(["destroy", file, "--state", state, "--auto-approve", "--force"]);
        if state == aws_state {
            c.args(["--platform", "aws"]);
        }
        c.env("AWS_ENDPOINT_URL", &aws.url).env("AWS_ACCESS_KEY_ID", "testing").env("AWS_SECRET_ACCESS_KEY", SECRET).env("AWS_REGION", "us-east-1");
        let out = c.output().unwrap();
        aws.seen.extend_from_slice(&out.stderr);
        let _ = out;
    }
    // Nothing the migration wrote holds the credential: the journals, the target states.
    for written in common::files_under(&aws.project.path().join(".galley")) {
        let path = aws.project.path().join(".galley").join(&written);
        if path.is_file() && (written.ends_with(".jsonl") || written.ends_with(".json")) {
            assert!(!String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains(SECRET), "the secret is in {written}");
        }
    }
    let out = aws.galley(&["destroy", "--auto-approve"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&aws.seen).contains(SECRET), "the secret leaked");
}
