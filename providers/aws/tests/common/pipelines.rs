//! SageMaker Pipelines' running part, which moto does not have: moto records CreatePipeline and
//! StartPipelineExecution but runs nothing (it reports every execution `Succeeded` at once) and
//! has no ListPipelineExecutionSteps or StopPipelineExecution. Given Galley's image (built and
//! run by podman, [`Entrypoint::Image`]) or its entrypoint alone (the `galley` binary the test
//! built, [`Entrypoint::Binary`]), [`PipelineRunner`] runs an execution as SageMaker does:
//!
//! - reads the definition moto stored (DescribePipeline), resolves each step's `{"Get": …}`
//!   expressions (`Execution.PipelineExecutionArn`, `Parameters.NAME` from the execution's
//!   parameters over the definition's defaults), and checks the step's `Arguments` with its job
//!   name against the botocore model's CreateProcessingJob input, which is what SageMaker makes
//!   of a Processing step: a definition SageMaker would refuse fails the step with the problems;
//! - runs the steps in `DependsOn` order, one container per step: the image (or its entrypoint,
//!   `galley container`) with the step's `ContainerArguments`, an environment with only the
//!   step's `Environment`, the credentials a role would give, and `AWS_ENDPOINT_URL` (the proxy,
//!   standing where AWS's endpoints are); exit 0 is `Succeeded`, anything else `Failed` with
//!   the container's last error line as the reason, and the steps after it are not started;
//! - answers DescribePipelineExecution with moto's record and this execution's status,
//!   ListPipelineExecutionSteps and StopPipelineExecution (which kills the running step's
//!   process: `Stopped`), each answer checked against the botocore output shape.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Value as Json, json};

/// What runs a step.
pub enum Entrypoint {
    /// The entrypoint of Galley's image, `galley container …`, as a process of this binary.
    Binary(PathBuf),
    /// Galley's image itself (its tag), under podman on the host's network, where the proxy
    /// the step's SDK reaches listens.
    Image(super::image::Podman, String),
}

pub struct PipelineRunner {
    entrypoint: Entrypoint,
    /// What a step container's SDK reaches (the proxy in front of moto).
    endpoint: String,
    /// The access key pair a step container gets, as an execution role would give one.
    credentials: (String, String),
    aws: galley_aws::AwsClients,
    executions: Mutex<HashMap<String, Arc<Execution>>>,
    jobs: Mutex<Vec<(String, &'static str, Option<String>)>>,
}

struct Execution {
    state: Mutex<ExecutionState>,
    stop: tokio::sync::Notify,
}

#[derive(Default)]
struct ExecutionState {
    status: &'static str,
    failure: Option<String>,
    steps: Vec<StepRecord>,
}

struct StepRecord {
    name: String,
    status: &'static str,
    start: f64,
    end: Option<f64>,
    failure: Option<String>,
    job_arn: String,
    /// The CreateProcessingJob request SageMaker would make of the step, resolved.
    request: Json,
}

/// One step as it ran: its resolved processing-job request and how it ended.
#[derive(Debug, Clone)]
pub struct RanStep {
    pub execution: String,
    pub name: String,
    pub status: String,
    pub request: Json,
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

impl PipelineRunner {
    pub fn new(entrypoint: Entrypoint, endpoint: String, credentials: (String, String), aws: galley_aws::AwsClients) -> PipelineRunner {
        PipelineRunner { entrypoint, endpoint, credentials, aws, executions: Mutex::default(), jobs: Mutex::default() }
    }

    /// Every step run so far, in the order they started.
    pub fn ran(&self) -> Vec<RanStep> {
        let executions = self.executions.lock().unwrap();
        let mut out: Vec<(f64, RanStep)> = Vec::new();
        for (arn, e) in executions.iter() {
            for s in &e.state.lock().unwrap().steps {
                out.push((s.start, RanStep { execution: arn.clone(), name: s.name.clone(), status: s.status.to_owned(), request: s.request.clone() }));
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.into_iter().map(|(_, s)| s).collect()
    }

    /// After moto accepted `request` (StartPipelineExecution) as `arn`: runs it.
    pub async fn start(self: &Arc<Self>, arn: &str, request: &Json) {
        let pipeline = request["PipelineName"].as_str().unwrap_or_default();
        let described = self.aws.sagemaker.describe_pipeline().pipeline_name(pipeline).send().await.expect("moto describes the pipeline it started");
        let definition: Json = serde_json::from_str(described.pipeline_definition().unwrap_or("{}")).expect("a JSON pipeline definition");
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for p in definition["Parameters"].as_array().into_iter().flatten() {
            if let (Some(name), Some(default)) = (p["Name"].as_str(), p["DefaultValue"].as_str()) {
                params.insert(name.to_owned(), default.to_owned());
            }
        }
        for p in request["PipelineParameters"].as_array().into_iter().flatten() {
            let name = p["Name"].as_str().unwrap_or_default();
            assert!(params.contains_key(name), "StartPipelineExecution sets parameter `{name}`, which the definition does not declare (SageMaker refuses it)");
            params.insert(name.to_owned(), p["Value"].as_str().unwrap_or_default().to_owned());
        }
        let execution = Arc::new(Execution { state: Mutex::new(ExecutionState { status: "Executing", ..Default::default() }), stop: Default::default() });
        self.executions.lock().unwrap().insert(arn.to_owned(), execution.clone());
        let (me, arn) = (self.clone(), arn.to_owned());
        tokio::spawn(async move { me.run(&arn, &definition, &params, &execution).await });
    }

    async fn run(&self, arn: &str, definition: &Json, params: &BTreeMap<String, String>, execution: &Execution) {
        let id = arn.rsplit('/').next().unwrap_or_default().to_owned();
        let mut done: Vec<String> = Vec::new();
        let steps = definition["Steps"].as_array().cloned().unwrap_or_default();
        while done.len() < steps.len() {
            let ready = steps.iter().find(|s| {
                let name = s["Name"].as_str().unwrap_or_default();
                !done.iter().any(|d| d == name)
                    && s["DependsOn"].as_array().into_iter().flatten().all(|d| done.iter().any(|x| Some(x.as_str()) == d.as_str()))
            });
            let Some(step) = ready else {
                return self.end(execution, "Failed", Some("the steps' DependsOn form a cycle or name no step".into()));
            };
            let name = step["Name"].as_str().unwrap_or_default().to_owned();
            let (status, failure) = self.run_step(arn, &id, step, params, execution).await;
            if status != "Succeeded" {
                let reason = failure.map(|f| format!("Step failure: One or multiple steps failed. ({name}: {f})"));
                return self.end(execution, status, reason);
            }
            done.push(name);
        }
        self.end(execution, "Succeeded", None);
    }

    fn end(&self, execution: &Execution, status: &'static str, failure: Option<String>) {
        let mut state = execution.state.lock().unwrap();
        state.status = status;
        state.failure = failure;
    }

    async fn run_step(&self, arn: &str, id: &str, step: &Json, params: &BTreeMap<String, String>, execution: &Execution) -> (&'static str, Option<String>) {
        let name = step["Name"].as_str().unwrap_or_default().to_owned();
        assert_eq!(step["Type"], "Processing", "Galley's steps are Processing steps");
        let mut request = step["Arguments"].clone();
        resolve(&mut request, arn, params);
        // SageMaker names a step's job from the execution and the step, within the job-name pattern.
        let job = format!("pipelines-{id}-{}", name.replace('_', "-"));
        request["ProcessingJobName"] = json!(job);
        let job_arn = format!("arn:aws:sagemaker:{}:123456789012:processing-job/{job}", self.aws.region());
        let index = {
            let mut state = execution.state.lock().unwrap();
            state.steps.push(StepRecord { name: name.clone(), status: "Executing", start: now(), end: None, failure: None, job_arn, request: request.clone() });
            state.steps.len() - 1
        };
        let finish = |status: &'static str, failure: Option<String>| {
            let mut state = execution.state.lock().unwrap();
            let s = &mut state.steps[index];
            s.status = status;
            s.end = Some(now());
            s.failure = failure.clone();
            (status, failure)
        };
        let problems = super::botocore::Model::cached("sagemaker").check_request("CreateProcessingJob", &request, &[]);
        if !problems.is_empty() {
            return finish("Failed", Some(format!("ValidationException: {}", problems.join("; "))));
        }
        let (status, failure) = self.run_container(&name, &request, &execution.stop).await;
        finish(status, failure)
    }

    /// A Processing job started on its own (a schedule's CreateProcessingJob): its container,
    /// to the end, as a step's. The request is checked against the botocore model first.
    pub async fn run_job(&self, request: &Json) -> (&'static str, Option<String>) {
        let problems = super::botocore::Model::cached("sagemaker").check_request("CreateProcessingJob", request, &[]);
        assert!(problems.is_empty(), "CreateProcessingJob breaks the botocore model: {problems:?}");
        let name = request["ProcessingJobName"].as_str().unwrap_or("job").to_owned();
        let (status, failure) = self.run_container(&name, request, &tokio::sync::Notify::new()).await;
        self.jobs.lock().unwrap().push((name, status, failure.clone()));
        (status, failure)
    }

    /// The Processing jobs run on their own, with how they ended.
    pub fn jobs(&self) -> Vec<(String, &'static str, Option<String>)> {
        self.jobs.lock().unwrap().clone()
    }

    /// One Processing container (`request`'s AppSpecification and Environment) to the end, or
    /// until `stop`.
    async fn run_container(&self, name: &str, request: &Json, stop: &tokio::sync::Notify) -> (&'static str, Option<String>) {
        let args: Vec<String> = request["AppSpecification"]["ContainerArguments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().unwrap_or_else(|| panic!("step {name}: an unresolved argument {a}")).to_owned())
            .collect();
        let scratch = tempfile::tempdir().unwrap();
        // The step's whole environment: what the definition gives it, the role's keys, and
        // where AWS answers.
        let mut env: Vec<(String, String)> = vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), self.credentials.0.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.credentials.1.clone()),
        ];
        env.extend(request["Environment"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())));
        let container = format!("galley-step-{}", uuid::Uuid::new_v4().simple());
        let mut command = match &self.entrypoint {
            Entrypoint::Binary(galley) => {
                let mut c = tokio::process::Command::new(galley);
                c.arg("container").args(&args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", scratch.path()).envs(env);
                c
            }
            Entrypoint::Image(podman, tag) => {
                let mut c = podman.tokio_command();
                c.args(["run", "--rm", "--name", &container, "--network", "host"]);
                for (k, v) in &env {
                    c.arg("-e").arg(format!("{k}={v}"));
                }
                c.arg(tag).args(&args);
                c
            }
        };
        command
            .current_dir(scratch.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| panic!("starting step {name}: {e}"));
        let output = tokio::select! {
            out = child.wait_with_output() => out.expect("the step container's output"),
            _ = stop.notified() => {
                // Dropping the child kills it (kill_on_drop), as SageMaker stops the job; a
                // container outlives its podman client, so it is removed too.
                if let Entrypoint::Image(podman, _) = &self.entrypoint {
                    let _ = podman.tokio_command().args(["rm", "-f", &container]).output().await;
                }
                return ("Stopped", None);
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in String::from_utf8_lossy(&output.stdout).lines().chain(stderr.lines()) {
            eprintln!("[{name}] {line}");
        }
        match output.status.success() {
            true => ("Succeeded", None),
            false => {
                let last = stderr.lines().chain(String::from_utf8_lossy(&output.stdout).lines()).rfind(|l| !l.trim().is_empty()).unwrap_or("no output").to_owned();
                ("Failed", Some(format!("AlgorithmError: {last}")))
            }
        }
    }

    fn known(&self, arn: &str) -> Option<Arc<Execution>> {
        self.executions.lock().unwrap().get(arn).cloned()
    }

    /// moto's DescribePipelineExecution answer with this execution's status, when it is one
    /// of the runner's.
    pub fn describe(&self, request: &Json, moto_answer: &[u8]) -> Option<Json> {
        let execution = self.known(request["PipelineExecutionArn"].as_str()?)?;
        let mut answer: Json = serde_json::from_slice(moto_answer).ok()?;
        let state = execution.state.lock().unwrap();
        answer["PipelineExecutionStatus"] = json!(state.status);
        match &state.failure {
            Some(f) => answer["FailureReason"] = json!(f),
            None => {
                answer.as_object_mut()?.remove("FailureReason");
            }
        }
        checked("DescribePipelineExecution", answer)
    }

    /// ListPipelineExecutionSteps: the newest step first, as SageMaker lists them.
    pub fn list_steps(&self, request: &Json) -> Option<Json> {
        let execution = self.known(request["PipelineExecutionArn"].as_str()?)?;
        let state = execution.state.lock().unwrap();
        let steps: Vec<Json> = state
            .steps
            .iter()
            .rev()
            .map(|s| {
                let mut step = json!({
                    "StepName": s.name,
                    "StartTime": s.start,
                    "StepStatus": s.status,
                    "AttemptCount": 1,
                    "Metadata": {"ProcessingJob": {"Arn": s.job_arn}},
                });
                if let Some(end) = s.end {
                    step["EndTime"] = json!(end);
                }
                if let Some(f) = &s.failure {
                    step["FailureReason"] = json!(f);
                }
                step
            })
            .collect();
        checked("ListPipelineExecutionSteps", json!({ "PipelineExecutionSteps": steps }))
    }

    /// StopPipelineExecution: the running step's container is killed; the execution `Stopped`.
    pub fn stop(&self, request: &Json) -> Option<Json> {
        let arn = request["PipelineExecutionArn"].as_str()?;
        let execution = self.known(arn)?;
        {
            let mut state = execution.state.lock().unwrap();
            if state.status == "Executing" {
                state.status = "Stopping";
            }
        }
        execution.stop.notify_one();
        let (me, e) = (arn.to_owned(), execution.clone());
        tokio::spawn(async move {
            // The step's task ends with `Stopped`; the execution follows once no step runs.
            for _ in 0..400 {
                let stopped = {
                    let mut state = e.state.lock().unwrap();
                    let idle = state.steps.iter().all(|s| s.status != "Executing");
                    if idle && state.status == "Stopping" {
                        state.status = "Stopped";
                    }
                    idle
                };
                if stopped {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            eprintln!("execution {me}: a step did not stop");
        });
        checked("StopPipelineExecution", json!({ "PipelineExecutionArn": arn }))
    }
}

/// An answer the botocore model accepts, or a panic naming what it breaks.
fn checked(op: &str, answer: Json) -> Option<Json> {
    let problems = super::botocore::Model::cached("sagemaker").check_response(op, &answer);
    assert!(problems.is_empty(), "the stand-in's {op} answer breaks the botocore model:\n{}", problems.join("\n"));
    Some(answer)
}

/// Replaces SageMaker's `{"Get": "Execution.PipelineExecutionArn"}` and `{"Get":
/// "Parameters.NAME"}` expressions with their values for this execution.
fn resolve(value: &mut Json, arn: &str, params: &BTreeMap<String, String>) {
    match value {
        Json::Object(map) if map.len() == 1 && map.contains_key("Get") => {
            let path = map["Get"].as_str().unwrap_or_default().to_owned();
            *value = match path.as_str() {
                "Execution.PipelineExecutionArn" => json!(arn),
                p => match p.strip_prefix("Parameters.") {
                    Some(name) => json!(params.get(name).unwrap_or_else(|| panic!("`{p}`: the definition declares no such parameter"))),
                    None => panic!("a `Get` the stand-in does not resolve: {p}"),
                },
            };
        }
        Json::Object(map) => map.values_mut().for_each(|v| resolve(v, arn, params)),
        Json::Array(items) => items.iter_mut().for_each(|v| resolve(v, arn, params)),
        _ => {}
    }
}
