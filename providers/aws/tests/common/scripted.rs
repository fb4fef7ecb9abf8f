//! A scripted HTTP server: answers each request with the next reply of a script (the last one
//! repeats) and records every request, so tests can drive the SDK through multi-step polling,
//! throttling and refusals that an emulator never produces, and check what the SDK sent.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    /// An awsJson 1.1 answer (SageMaker's protocol).
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Reply { status, content_type: "application/x-amz-json-1.1", body: body.to_string().into_bytes() }
    }
    /// An S3 (restXml) answer.
    pub fn xml(status: u16, body: &str) -> Self {
        Reply { status, content_type: "application/xml", body: body.as_bytes().to_vec() }
    }
    /// An object's bytes, as S3's GetObject returns them.
    pub fn object(body: Vec<u8>) -> Self {
        Reply { status: 200, content_type: "application/octet-stream", body }
    }
    pub fn s3_error(status: u16, code: &str, message: &str) -> Self {
        Self::xml(status, &format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message><RequestId>r1</RequestId></Error>"))
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The SageMaker operation an awsJson request calls (`X-Amz-Target: SageMaker.<op>`).
    pub fn sagemaker_op(&self) -> Option<&str> {
        self.header("x-amz-target").and_then(|t| t.strip_prefix("SageMaker."))
    }
    /// The Application Auto Scaling operation (JSON 1.1, `AnyScaleFrontendService.*`).
    pub fn autoscaling_op(&self) -> Option<&str> {
        self.header("x-amz-target").and_then(|t| t.strip_prefix("AnyScaleFrontendService."))
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Application Auto Scaling for an account where nothing scales: the reads find nothing, and
/// anything else is refused as unscripted.
pub fn unscaled(r: &Recorded) -> Reply {
    match r.autoscaling_op() {
        Some("DescribeScalableTargets") => Reply::json(200, serde_json::json!({"ScalableTargets": []})),
        Some("DescribeScalingPolicies") => Reply::json(200, serde_json::json!({"ScalingPolicies": []})),
        other => Reply::json(400, serde_json::json!({"__type": "ValidationException", "message": format!("unscripted {other:?}")})),
    }
}

pub struct Scripted {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Scripted SageMaker answers that break the operation's output shape in botocore's model.
    bad_replies: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
        let bad = self.bad_replies.lock().unwrap();
        if !bad.is_empty() && !std::thread::panicking() {
            panic!("the test scripted SageMaker answers AWS would never give:\n{}", bad.join("\n"));
        }
    }
}

/// Problems with a scripted SageMaker success answer, checked against botocore's output shape.
fn check_reply(rec: &Recorded, reply: &Reply) -> Vec<String> {
    let Some(op) = rec.sagemaker_op() else { return Vec::new() };
    if !(200..300).contains(&reply.status) || reply.content_type != "application/x-amz-json-1.1" {
        return Vec::new();
    }
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
    super::botocore::Model::cached("sagemaker").check_response(op, &body)
}

impl Scripted {
    pub async fn start(script: Vec<Reply>) -> Scripted {
        assert!(!script.is_empty());
        Self::route(move |_, n| script[n.min(script.len() - 1)].clone()).await
    }

    /// Answers with `router(request, index of the request)`.
    pub async fn route(router: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Scripted {
        let script = Arc::new(router);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let bad_replies: Arc<Mutex<Vec<String>>> = Arc::default();
        let script = Arc::new(script);
        let (recorded, bad) = (requests.clone(), bad_replies.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (recorded, script, bad) = (recorded.clone(), script.clone(), bad.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (recorded, script, bad) = (recorded.clone(), script.clone(), bad.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let rec = Recorded {
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect(),
                                body,
                            };
                            let n = {
                                let mut r = recorded.lock().unwrap();
                                r.push(rec.clone());
                                r.len() - 1
                            };
                            let reply = script(&rec, n);
                            let problems = check_reply(&rec, &reply);
                            if !problems.is_empty() {
                                bad.lock().unwrap().extend(problems);
                            }
                            let resp = Response::builder()
                                .status(reply.status)
                                .header("content-type", reply.content_type)
                                .header("x-amzn-requestid", format!("req-{n}"))
                                .body(Full::new(Bytes::from(reply.body.clone())))
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Scripted { url, requests, bad_replies, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}
