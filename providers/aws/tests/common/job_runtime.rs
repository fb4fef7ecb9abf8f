//! moto records SageMaker training jobs but runs no container: it accepts CreateTrainingJob,
//! reports `Completed` at once, and no model ever reaches S3. This proxy stands in front of
//! moto and, once moto has accepted a CreateTrainingJob, does what SageMaker's job runtime does
//! with the request: downloads the `train` channel's S3 prefix, lays it out as `/opt/ml` (in a
//! temporary directory) with the request's hyperparameters, runs the entrypoint of Galley's
//! image (`galley container train`, called here as the library function that command is), and
//! uploads `/opt/ml/model` packed as `model.tar.gz` to `<S3OutputPath>/<job>/output/`, where
//! SageMaker puts it and where moto's DescribeTrainingJob says it is. Every other request
//! passes through to moto untouched.
//!
//! So what is emulated here is the container runtime only; the requests, the job record, its
//! status and the S3 objects are moto's. (Self-contained: the CLI's moto test includes it too.)
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use galley_lifecycle::container::{self, TrainingInput};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

pub struct JobRuntime {
    pub url: String,
    created: Arc<Mutex<Vec<Json>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JobRuntime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JobRuntime {
    pub async fn start(moto: &str) -> JobRuntime {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let created: Arc<Mutex<Vec<Json>>> = Arc::default();
        let config = galley_aws::AwsConfig::emulator(moto, "us-east-1", "AKIAGALLEYTESTKEY001", "galley-test-secret");
        let aws = galley_aws::AwsClients::connect(&config).await.expect("connect to moto");
        let shared = Arc::new(Shared { moto: moto.to_owned(), http: reqwest::Client::new(), aws, created: created.clone() });
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
        JobRuntime { url, created, task }
    }

    /// The CreateTrainingJob requests moto accepted, as sent.
    pub fn created_jobs(&self) -> Vec<Json> {
        self.created.lock().unwrap().clone()
    }
}

struct Shared {
    moto: String,
    http: reqwest::Client,
    aws: galley_aws::AwsClients,
    created: Arc<Mutex<Vec<Json>>>,
}

impl Shared {
    async fn forward(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
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
        let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok());
        if target == Some("SageMaker.CreateTrainingJob") && status.is_success() {
            let job: Json = serde_json::from_slice(&body).expect("a JSON CreateTrainingJob");
            self.created.lock().unwrap().push(job.clone());
            self.run_container(&job).await;
        }
        let mut resp = Response::builder().status(status.as_u16());
        for (k, v) in &headers {
            if k != hyper::header::CONTENT_LENGTH && k != hyper::header::TRANSFER_ENCODING {
                resp = resp.header(k, v);
            }
        }
        resp.body(Full::new(bytes)).unwrap()
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
