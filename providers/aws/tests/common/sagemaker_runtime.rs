//! moto records SageMaker's resources but runs no container: it accepts CreateTrainingJob and
//! reports `Completed` at once with no model in S3, and it answers InvokeEndpoint with bodies a
//! test queued, not with a model's predictions. This proxy stands in front of moto and does
//! SageMaker's container part, with Galley's own container code:
//!
//! - once moto has accepted a CreateTrainingJob: downloads the `train` channel's S3 prefix,
//!   lays it out as `/opt/ml` (in a temporary directory) with the request's hyperparameters,
//!   runs the entrypoint of Galley's image (`galley container train`, called here as the
//!   library function that command is), and uploads `/opt/ml/model` packed as `model.tar.gz`
//!   to `<S3OutputPath>/<job>/output/`, where SageMaker puts it and moto's DescribeTrainingJob
//!   says it is;
//! - InvokeEndpoint (`POST /endpoints/{name}/invocations`): checks the request against the
//!   botocore sagemaker-runtime model, picks a variant as SageMaker does (the
//!   `X-Amzn-SageMaker-Target-Variant` header, else at random by the variants' current weights
//!   as moto's DescribeEndpoint reports them), finds the variant's model through moto
//!   (DescribeEndpointConfig, DescribeModel, the model file in S3), runs Galley's serving
//!   container for it (`galley container serve`, as the library function), and answers with
//!   the container's bytes and `x-Amzn-Invoked-Production-Variant`.
//!
//! - the feature-store runtime moto does not have: PutRecord (`PUT /FeatureGroup/{name}`) and
//!   BatchGetRecord (`POST /BatchGetRecord`), each request checked against the botocore
//!   sagemaker-featurestore-runtime model and each answer against its output shape, over an
//!   online store kept here for the feature groups moto created with one, the newest event time
//!   winning as in SageMaker. moto drops a group's `OnlineStoreConfig` from DescribeFeatureGroup
//!   (it keeps the rest): the proxy puts back the one moto accepted in CreateFeatureGroup.
//!
//! - with [`SageMakerRuntime::with_pipelines`], SageMaker Pipelines' running part
//!   (`super::pipelines`): an execution moto accepted runs its steps as `galley container step`
//!   processes, and its status and steps are answered from what they did.
//!
//! - UpdateEndpoint, which moto does not implement: checked against the botocore model, it
//!   refuses as SageMaker does a move that drops a variant Application Auto Scaling still
//!   scales, or changes its instance type (SageMaker's documented rule, with SageMaker's
//!   message), and otherwise moves moto's endpoint to the new config by deleting and creating
//!   it again under the same name and tags (moto has no other way to change an endpoint's
//!   config).
//!
//! Every other request passes through to moto untouched. So what is emulated here is what
//! SageMaker runs (containers, the online store's data path); the requests, the records, their
//! status and the S3 objects are moto's, and the predictions are the model's. (Self-contained: the CLI's moto test includes it
//! too.)
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use galley_aws::container::{self, TrainingInput};
use super::pipelines::{Entrypoint, PipelineRunner};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

/// One online-store record: its event time and its features.
type OnlineRecord = (f64, Vec<Json>);

pub struct SageMakerRuntime {
    pub url: String,
    created: Arc<Mutex<Vec<Json>>>,
    invocations: Arc<Mutex<Vec<Invocation>>>,
    pipelines: Option<Arc<PipelineRunner>>,
    task: tokio::task::JoinHandle<()>,
}

/// One InvokeEndpoint request as the SDK sent it, and what answered it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub variant: String,
    pub status: u16,
    pub answer: Bytes,
}

impl Drop for SageMakerRuntime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SageMakerRuntime {
    pub async fn start(moto: &str) -> SageMakerRuntime {
        Self::start_with(moto, None).await
    }

    /// Also runs pipeline executions: each step as `galley container step` of the `galley`
    /// binary given (the entrypoint of Galley's image), with `credentials` as its role's.
    pub async fn with_pipelines(moto: &str, galley: PathBuf, credentials: (String, String)) -> SageMakerRuntime {
        Self::start_with(moto, Some((Entrypoint::Binary(galley), credentials))).await
    }

    /// Also runs pipeline executions, each step in Galley's image `tag` under podman.
    pub async fn with_pipelines_in_image(moto: &str, podman: super::image::Podman, tag: String, credentials: (String, String)) -> SageMakerRuntime {
        Self::start_with(moto, Some((Entrypoint::Image(podman, tag), credentials))).await
    }

    async fn start_with(moto: &str, steps: Option<(Entrypoint, (String, String))>) -> SageMakerRuntime {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let created: Arc<Mutex<Vec<Json>>> = Arc::default();
        let invocations: Arc<Mutex<Vec<Invocation>>> = Arc::default();
        let config = galley_aws::AwsConfig::emulator(moto, "us-east-1", "AKIAGALLEYTESTKEY001", "galley-test-secret");
        let aws = galley_aws::AwsClients::connect(&config).await.expect("connect to moto");
        let pipelines = steps.map(|(entrypoint, credentials)| Arc::new(PipelineRunner::new(entrypoint, url.clone(), credentials, aws.clone())));
        let shared = Arc::new(Shared {
            pipelines: pipelines.clone(),
            moto: moto.to_owned(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            aws,
            created: created.clone(),
            invocations: invocations.clone(),
            containers: Default::default(),
            online: Default::default(),
            online_configs: Default::default(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.forward(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        SageMakerRuntime { url, created, invocations, pipelines, task }
    }

    /// The Processing jobs started on their own (not as pipeline steps) and how they ended.
    pub fn processing_jobs(&self) -> Vec<(String, &'static str, Option<String>)> {
        self.pipelines.as_ref().map(|p| p.jobs()).unwrap_or_default()
    }

    /// The pipeline steps run so far (with [`SageMakerRuntime::with_pipelines`]).
    pub fn pipeline_steps(&self) -> Vec<super::pipelines::RanStep> {
        self.pipelines.as_ref().map(|p| p.ran()).unwrap_or_default()
    }

    /// The CreateTrainingJob requests moto accepted, as sent.
    pub fn created_jobs(&self) -> Vec<Json> {
        self.created.lock().unwrap().clone()
    }

    /// The InvokeEndpoint requests answered, as sent.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.invocations.lock().unwrap().clone()
    }
}

/// A serving container running for one model file: its URL and the files it serves.
struct Container {
    url: String,
    _root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Container {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    pipelines: Option<Arc<PipelineRunner>>,
    moto: String,
    http: reqwest::Client,
    aws: galley_aws::AwsClients,
    created: Arc<Mutex<Vec<Json>>>,
    invocations: Arc<Mutex<Vec<Invocation>>>,
    /// One container per model S3 URI, started on the first request for it.
    containers: tokio::sync::Mutex<HashMap<String, Container>>,
    /// The online store: group → record identifier → (event time, the record's features).
    online: Mutex<HashMap<String, HashMap<String, OnlineRecord>>>,
    /// The `OnlineStoreConfig` of each feature group moto created, as the request gave it.
    online_configs: Mutex<HashMap<String, Json>>,
}

impl Shared {
    async fn forward(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if parts.method == hyper::Method::POST
            && let Some(endpoint) = path.strip_prefix("/endpoints/").and_then(|p| p.strip_suffix("/invocations"))
        {
            return self.invoke(endpoint, &parts.headers, body).await;
        }
        if parts.method == hyper::Method::PUT
            && let Some(group) = path.strip_prefix("/FeatureGroup/")
        {
            return self.put_record(group, &body).await;
        }
        if parts.method == hyper::Method::POST && path == "/BatchGetRecord" {
            return self.batch_get_record(&body).await;
        }
        let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if target.as_deref() == Some("SageMaker.UpdateEndpoint") {
            return self.update_endpoint(&body).await;
        }
        if let Some(runner) = &self.pipelines {
            let request: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
            let answered = match target.as_deref() {
                Some("SageMaker.ListPipelineExecutionSteps") => runner.list_steps(&request),
                Some("SageMaker.StopPipelineExecution") => runner.stop(&request),
                _ => None,
            };
            if let Some(answer) = answered {
                return json_answer(&answer);
            }
        }
        let mut out = self.http.request(parts.method.clone(), format!("{}{path}", self.moto));
        for (k, v) in &parts.headers {
            if k != hyper::header::HOST && k != hyper::header::CONTENT_LENGTH {
                out = out.header(k, v);
            }
        }
        let answer = out.body(body.clone()).send().await.expect("moto answers");
        let status = answer.status();
        let headers = answer.headers().clone();
        let bytes = answer.bytes().await.unwrap_or_default();
        let target = target.as_deref();
        if let (Some(runner), Some("SageMaker.StartPipelineExecution"), true) = (&self.pipelines, target, status.is_success()) {
            let request: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
            let answer: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
            runner.start(answer["PipelineExecutionArn"].as_str().expect("moto names the execution"), &request).await;
        }
        if let (Some(runner), Some("SageMaker.DescribePipelineExecution"), true) = (&self.pipelines, target, status.is_success()) {
            let request: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
            if let Some(answer) = runner.describe(&request, &bytes) {
                return json_answer(&answer);
            }
        }
        if let (Some(runner), Some("SageMaker.CreateProcessingJob"), true) = (&self.pipelines, target, status.is_success()) {
            let request: Json = serde_json::from_slice(&body).expect("a JSON CreateProcessingJob");
            runner.run_job(&request).await;
        }
        if target == Some("SageMaker.CreateTrainingJob") && status.is_success() {
            let job: Json = serde_json::from_slice(&body).expect("a JSON CreateTrainingJob");
            self.created.lock().unwrap().push(job.clone());
            self.run_container(&job).await;
        }
        let mut bytes = bytes;
        if target == Some("SageMaker.CreateFeatureGroup") && status.is_success() {
            let request: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
            if let (Some(group), Some(config)) = (request["FeatureGroupName"].as_str(), request.get("OnlineStoreConfig")) {
                self.online_configs.lock().unwrap().insert(group.to_owned(), config.clone());
            }
        }
        if target == Some("SageMaker.DescribeFeatureGroup") && status.is_success() {
            let mut answer: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
            let group = answer["FeatureGroupName"].as_str().unwrap_or_default().to_owned();
            if answer.get("OnlineStoreConfig").is_none()
                && let Some(config) = self.online_configs.lock().unwrap().get(&group)
            {
                answer["OnlineStoreConfig"] = config.clone();
                bytes = Bytes::from(answer.to_string());
            }
        }
        let mut resp = Response::builder().status(status.as_u16());
        // A HEAD answer has no body but must keep the object's Content-Length (HeadObject's
        // size); any other answer's length is the body's own.
        let head = parts.method == hyper::Method::HEAD;
        for (k, v) in &headers {
            if (head || k != hyper::header::CONTENT_LENGTH) && k != hyper::header::TRANSFER_ENCODING {
                resp = resp.header(k, v);
            }
        }
        resp.body(Full::new(bytes)).unwrap()
    }

    async fn update_endpoint(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let request: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
        let model = super::botocore::Model::cached("sagemaker");
        let problems = model.check_request("UpdateEndpoint", &request, &[]);
        assert!(problems.is_empty(), "UpdateEndpoint as the SDK sent it breaks the botocore model:\n{}", problems.join("\n"));
        let (name, config) = (request["EndpointName"].as_str().unwrap_or_default(), request["EndpointConfigName"].as_str().unwrap_or_default());
        let sm = &self.aws.sagemaker;
        let Ok(current) = sm.describe_endpoint().endpoint_name(name).send().await else {
            return sagemaker_error("ValidationException", &format!("Could not find endpoint \"{name}\"."));
        };
        let Ok(next) = sm.describe_endpoint_config().endpoint_config_name(config).send().await else {
            return sagemaker_error("ValidationException", &format!("Could not find endpoint configuration \"{config}\"."));
        };
        let old = sm.describe_endpoint_config().endpoint_config_name(current.endpoint_config_name().unwrap_or_default()).send().await.expect("moto has the endpoint's config");
        // Variant → instance type, in the config the endpoint has and in the one it moves to.
        let (old, next): (HashMap<String, Option<String>>, HashMap<String, Option<String>>) = (
            old.production_variants().iter().map(|p| (p.variant_name().unwrap_or_default().to_owned(), p.instance_type().map(|t| t.as_str().to_owned()))).collect(),
            next.production_variants().iter().map(|p| (p.variant_name().unwrap_or_default().to_owned(), p.instance_type().map(|t| t.as_str().to_owned()))).collect(),
        );
        let mut blocked = Vec::new();
        for v in current.production_variants().iter().filter_map(|v| v.variant_name()) {
            let kept_as_is = next.contains_key(v) && next.get(v) == old.get(v);
            if kept_as_is {
                continue;
            }
            let id = format!("endpoint/{name}/variant/{v}");
            let targets = self
                .aws
                .autoscaling
                .describe_scalable_targets()
                .service_namespace("sagemaker".into())
                .resource_ids(&id)
                .scalable_dimension("sagemaker:variant:DesiredInstanceCount".into())
                .send()
                .await
                .expect("moto answers DescribeScalableTargets");
            if targets.scalable_targets().iter().any(|t| t.resource_id() == id) {
                blocked.push(v.to_owned());
            }
        }
        if !blocked.is_empty() {
            return sagemaker_error(
                "ValidationException",
                &format!("The variant(s) \"[{}]\" must be deregistered as scalable targets with AWS Application Auto Scaling before they can be removed or have their instance type updated.", blocked.join(", ")),
            );
        }
        let arn = current.endpoint_arn().unwrap_or_default().to_owned();
        let tags = sm.list_tags().resource_arn(&arn).send().await.expect("moto lists the endpoint's tags").tags().to_vec();
        sm.delete_endpoint().endpoint_name(name).send().await.expect("moto deletes the endpoint");
        let created = sm.create_endpoint().endpoint_name(name).endpoint_config_name(config).set_tags(Some(tags)).send().await.expect("moto creates the endpoint");
        let answer = serde_json::json!({"EndpointArn": created.endpoint_arn().unwrap_or_default()});
        let problems = model.check_response("UpdateEndpoint", &answer);
        assert!(problems.is_empty(), "the stand-in's UpdateEndpoint answer breaks the botocore model:\n{}", problems.join("\n"));
        json_answer(&answer)
    }

    /// SageMaker's part: channel in, container run, model out. A failing container leaves no
    /// model (and its reason in the log), as on SageMaker.
    async fn run_container(&self, job: &Json) {
        let name = job["TrainingJobName"].as_str().unwrap().to_owned();
        let channel = &job["InputDataConfig"][0];
        assert_eq!(channel["ChannelName"], container::CHANNEL, "Galley's image reads the `train` channel");
        let (bucket, prefix) = split(channel["DataSource"]["S3DataSource"]["S3Uri"].as_str().unwrap());
        let mut files = Vec::new();
        let listed = self.aws.s3.list_objects_v2().bucket(&bucket).prefix(&prefix).send().await.unwrap();
        for o in listed.contents() {
            let key = o.key().unwrap();
            let got = self.aws.s3.get_object().bucket(&bucket).key(key).send().await.unwrap();
            let bytes = got.body.collect().await.unwrap().into_bytes().to_vec();
            files.push((key[prefix.len()..].to_owned(), bytes));
        }
        let hyperparameters = serde_json::from_value(job["HyperParameters"].clone()).unwrap_or_default();
        let root = tempfile::tempdir().unwrap();
        container::lay_out(root.path(), &TrainingInput { files, hyperparameters }).unwrap();
        let dir = root.path().to_path_buf();
        let trained = tokio::task::spawn_blocking(move || container::train_in_container(&dir)).await.unwrap();
        if let Err(e) = trained {
            eprintln!("training job {name}: the container failed: {e}");
            return;
        }
        let mut model = Vec::new();
        for entry in std::fs::read_dir(root.path().join("model")).unwrap() {
            let path = entry.unwrap().path();
            model.push((format!("./{}", path.file_name().unwrap().to_string_lossy()), std::fs::read(&path).unwrap()));
        }
        let packed = pack(&model.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect::<Vec<_>>());
        let (out_bucket, out_prefix) = split(job["OutputDataConfig"]["S3OutputPath"].as_str().unwrap());
        let key = format!("{}/{name}/output/model.tar.gz", out_prefix.trim_end_matches('/'));
        self.aws.s3.put_object().bucket(out_bucket).key(key).body(packed.into()).send().await.unwrap();
    }
}

impl Shared {
    /// SageMaker's part of InvokeEndpoint: the variant, its model, its container's answer.
    async fn invoke(&self, endpoint: &str, headers: &hyper::HeaderMap, body: Bytes) -> Response<Full<Bytes>> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let model = super::botocore::Model::cached("sagemaker-runtime");
        let mut located = vec![("EndpointName", serde_json::json!(endpoint))];
        for (member, name) in [("ContentType", "content-type"), ("Accept", "accept"), ("TargetVariant", "x-amzn-sagemaker-target-variant")] {
            if let Some(v) = header(name) {
                located.push((member, serde_json::json!(v)));
            }
        }
        // The body is the blob payload; it is checked as the base64 string botocore would hold.
        located.push(("Body", serde_json::json!(base64_len(body.len()))));
        let problems = model.check_request("InvokeEndpoint", &serde_json::json!({}), &located);
        assert!(problems.is_empty(), "InvokeEndpoint as the SDK sent it breaks the botocore model:\n{}", problems.join("\n"));

        let described = match self.aws.sagemaker.describe_endpoint().endpoint_name(endpoint).send().await {
            Ok(d) => d,
            Err(_) => return error(400, "ValidationError", &format!("Endpoint {endpoint} of account 123456789012 not found.")),
        };
        let variants: Vec<(String, f32)> = described
            .production_variants()
            .iter()
            .map(|v| (v.variant_name().unwrap_or_default().to_owned(), v.current_weight().unwrap_or(0.0)))
            .collect();
        let variant = match header("x-amzn-sagemaker-target-variant") {
            Some(target) => target,
            None => {
                let total: f32 = variants.iter().map(|(_, w)| w).sum();
                let mut draw = fastrand::f32() * total;
                variants
                    .iter()
                    .find(|(_, w)| {
                        let hit = draw < *w;
                        draw -= w;
                        hit
                    })
                    .or(variants.last())
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default()
            }
        };
        let config = self
            .aws
            .sagemaker
            .describe_endpoint_config()
            .endpoint_config_name(described.endpoint_config_name().unwrap_or_default())
            .send()
            .await
            .expect("moto describes the endpoint's config");
        let Some(model_name) = config.production_variants().iter().find(|v| v.variant_name() == Some(variant.as_str())).and_then(|v| v.model_name()) else {
            return error(400, "ValidationError", &format!("Endpoint {endpoint} has no variant {variant}"));
        };
        let m = self.aws.sagemaker.describe_model().model_name(model_name).send().await.expect("moto describes the model");
        let container = m.primary_container().expect("a model with a primary container");
        let uri = container
            .model_data_source()
            .and_then(|s| s.s3_data_source())
            .and_then(|s| s.s3_uri())
            .map(str::to_owned)
            .or_else(|| container.model_data_url().map(str::to_owned))
            .expect("the model names its data in S3");
        let url = self.container_for(&uri).await;
        let mut call = self.http.post(format!("{url}/invocations")).body(body.clone());
        for name in ["content-type", "accept"] {
            if let Some(v) = header(name) {
                call = call.header(name, v);
            }
        }
        let answer = call.send().await.expect("the serving container answers");
        let status = answer.status().as_u16();
        let content_type = answer.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_owned();
        let bytes = answer.bytes().await.unwrap_or_default();
        self.invocations.lock().unwrap().push(Invocation {
            endpoint: endpoint.to_owned(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned())).collect(),
            body: body.clone(),
            variant: variant.clone(),
            status,
            answer: bytes.clone(),
        });
        if status == 200
            && let Some(capture) = config.data_capture_config().filter(|c| c.enable_capture() == Some(true))
        {
            let destination = capture.destination_s3_uri().expect("a capture destination").to_owned();
            let json_types: Vec<String> = capture.capture_content_type_header().map(|h| h.json_content_types().to_vec()).unwrap_or_default();
            self.capture(endpoint, &variant, (&destination, &json_types), header("content-type").as_deref(), &body, &content_type, &bytes).await;
        }
        if status != 200 {
            // SageMaker wraps a container's error as ModelError (HTTP 424).
            return error(424, "ModelError", &format!("Received client error ({status}) from primary with message \"{}\"", String::from_utf8_lossy(&bytes)));
        }
        Response::builder()
            .status(200)
            .header("content-type", content_type)
            .header("x-amzn-invoked-production-variant", variant)
            .body(Full::new(bytes))
            .unwrap()
    }

    /// SageMaker's data capture: the request and answer as one JSON line of a file under
    /// `<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/`, in the documented record format;
    /// content types listed in `JsonContentTypes` are kept as text (`JSON`); SageMaker keeps
    /// others as `BASE64`, which Galley's JSON requests never need here.
    #[allow(clippy::too_many_arguments)]
    async fn capture(
        &self,
        endpoint: &str,
        variant: &str,
        (destination, json_types): (&str, &[String]),
        request_type: Option<&str>,
        request: &[u8],
        answer_type: &str,
        answer: &[u8],
    ) {
        let payload = |mode: &str, content_type: &str, data: &[u8]| {
            assert!(json_types.iter().any(|t| content_type.starts_with(t.as_str())), "the stand-in captures JSON content types only; got {content_type}");
            serde_json::json!({"observedContentType": content_type, "mode": mode, "data": String::from_utf8_lossy(data), "encoding": "JSON"})
        };
        let now = chrono::Utc::now();
        let line = serde_json::json!({
            "captureData": {
                "endpointInput": payload("INPUT", request_type.unwrap_or("application/octet-stream"), request),
                "endpointOutput": payload("OUTPUT", answer_type, answer),
            },
            "eventMetadata": {"eventId": uuid::Uuid::new_v4().to_string(), "inferenceTime": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)},
            "eventVersion": "0",
        });
        let (bucket, prefix) = split(destination);
        let key = format!("{}/{endpoint}/{variant}/{}/{}-{}.jsonl", prefix.trim_end_matches('/'), now.format("%Y/%m/%d/%H"), now.format("%M-%S-%3f"), uuid::Uuid::new_v4().simple());
        self.aws.s3.put_object().bucket(bucket).key(key).body(format!("{line}\n").into_bytes().into()).send().await.expect("moto keeps the capture file");
    }

    /// The URL of a serving container for the model at `uri`, started on first use: the model
    /// file downloaded to `<root>/model/model.json` as SageMaker places it, then Galley's
    /// container entrypoint serving it on a loopback port.
    async fn container_for(&self, uri: &str) -> String {
        let mut containers = self.containers.lock().await;
        if let Some(c) = containers.get(uri) {
            return c.url.clone();
        }
        let (bucket, key) = split(uri);
        let got = self.aws.s3.get_object().bucket(&bucket).key(&key).send().await.expect("the model file is in S3");
        let bytes = got.body.collect().await.unwrap().into_bytes();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("model")).unwrap();
        std::fs::write(root.path().join("model").join(container::MODEL_FILE), &bytes).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir: PathBuf = root.path().to_path_buf();
        let task = tokio::spawn(async move {
            if let Err(e) = container::serve(&dir, std::net::IpAddr::from([127, 0, 0, 1]), port).await {
                eprintln!("the serving container for {} stopped: {e}", dir.display());
            }
        });
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if self.http.get(format!("{url}/ping")).send().await.is_ok_and(|r| r.status() == 200) {
                containers.insert(uri.to_owned(), Container { url: url.clone(), _root: root, task });
                return url;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the serving container for {uri} did not answer /ping");
    }
}

impl Shared {
    /// The group's record identifier and event-time feature names, when moto has the group and
    /// it was created with an online store.
    async fn online_group(&self, group: &str) -> Option<(String, String)> {
        let enabled = self.online_configs.lock().unwrap().get(group).is_some_and(|c| c["EnableOnlineStore"] == true);
        if !enabled {
            return None;
        }
        // Asked of moto each time, so a group deleted since has no online store either.
        let d = self.aws.sagemaker.describe_feature_group().feature_group_name(group).send().await.ok()?;
        Some((d.record_identifier_feature_name().unwrap_or_default().to_owned(), d.event_time_feature_name().unwrap_or_default().to_owned()))
    }

    async fn put_record(&self, group: &str, body: &Bytes) -> Response<Full<Bytes>> {
        let model = super::botocore::Model::cached("sagemaker-featurestore-runtime");
        let request: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
        let problems = model.check_request("PutRecord", &request, &[("FeatureGroupName", serde_json::json!(group))]);
        assert!(problems.is_empty(), "PutRecord as the SDK sent it breaks the botocore model:\n{}", problems.join("\n"));
        let Some((id_name, time_name)) = self.online_group(group).await else {
            return error(400, "ResourceNotFound", &format!("Resource {group} not found (or it has no online store)"));
        };
        let record = request["Record"].as_array().cloned().unwrap_or_default();
        let value = |name: &str| record.iter().find(|f| f["FeatureName"] == name).and_then(|f| f["ValueAsString"].as_str()).map(str::to_owned);
        let (Some(id), Some(time)) = (value(&id_name), value(&time_name)) else {
            return error(400, "ValidationError", &format!("the record lacks `{id_name}` or `{time_name}`"));
        };
        let time: f64 = time.parse().unwrap_or(0.0);
        let mut online = self.online.lock().unwrap();
        let group_records = online.entry(group.to_owned()).or_default();
        if group_records.get(&id).is_none_or(|(t, _)| time >= *t) {
            group_records.insert(id, (time, record));
        }
        Response::builder().status(200).body(Full::new(Bytes::new())).unwrap()
    }

    async fn batch_get_record(&self, body: &Bytes) -> Response<Full<Bytes>> {
        let model = super::botocore::Model::cached("sagemaker-featurestore-runtime");
        let request: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
        let problems = model.check_request("BatchGetRecord", &request, &[]);
        assert!(problems.is_empty(), "BatchGetRecord as the SDK sent it breaks the botocore model:\n{}", problems.join("\n"));
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for ident in request["Identifiers"].as_array().into_iter().flatten() {
            let group = ident["FeatureGroupName"].as_str().unwrap_or_default();
            let wanted: Option<Vec<&str>> = ident["FeatureNames"].as_array().map(|a| a.iter().filter_map(Json::as_str).collect());
            let known = self.online_group(group).await.is_some();
            let online = self.online.lock().unwrap();
            for id in ident["RecordIdentifiersValueAsString"].as_array().into_iter().flatten().filter_map(Json::as_str) {
                if !known {
                    errors.push(serde_json::json!({"FeatureGroupName": group, "RecordIdentifierValueAsString": id, "ErrorCode": "ResourceNotFound", "ErrorMessage": format!("Resource {group} not found")}));
                    continue;
                }
                if let Some((_, record)) = online.get(group).and_then(|g| g.get(id)) {
                    let record: Vec<Json> = record
                        .iter()
                        .filter(|f| wanted.as_ref().is_none_or(|w| w.iter().any(|n| f["FeatureName"] == *n)))
                        .cloned()
                        .collect();
                    records.push(serde_json::json!({"FeatureGroupName": group, "RecordIdentifierValueAsString": id, "Record": record}));
                }
            }
        }
        let answer = serde_json::json!({"Records": records, "Errors": errors, "UnprocessedIdentifiers": []});
        let problems = model.check_response("BatchGetRecord", &answer);
        assert!(problems.is_empty(), "the stand-in's BatchGetRecord answer breaks the botocore model:\n{}", problems.join("\n"));
        Response::builder().status(200).header("content-type", "application/json").body(Full::new(Bytes::from(answer.to_string()))).unwrap()
    }
}

/// An answer in SageMaker's JSON protocol.
fn json_answer(answer: &Json) -> Response<Full<Bytes>> {
    Response::builder().status(200).header("content-type", "application/x-amz-json-1.1").body(Full::new(Bytes::from(answer.to_string()))).unwrap()
}

/// An error answer in SageMaker's JSON protocol (HTTP 400, as for every client error).
fn sagemaker_error(code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"__type": code, "message": message});
    Response::builder().status(400).header("content-type", "application/x-amz-json-1.1").body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// An error answer in sagemaker-runtime's rest-json shape.
fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-errortype", code)
        .body(Full::new(Bytes::from(serde_json::json!({ "message": message }).to_string())))
        .unwrap()
}

/// A base64 string as long as `len` bytes encode to, for checking the blob's length limits.
fn base64_len(len: usize) -> String {
    "A".repeat(len.div_ceil(3) * 4)
}

/// `files` packed as SageMaker packs a job's `/opt/ml/model` into `model.tar.gz`.
pub fn pack(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, *bytes).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn split(uri: &str) -> (String, String) {
    let (bucket, key) = uri.strip_prefix("s3://").unwrap().split_once('/').unwrap();
    (bucket.to_owned(), key.to_owned())
}
