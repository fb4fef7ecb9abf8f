//! KServe's Open Inference Protocol (V2) REST data plane, beside MLflow's `/invocations`: what
//! KServe, Triton and MLServer clients speak (`../shared/api-specs/kserve/rest_predict_v2.yaml`).
//!
//! The V2 *model* is the endpoint; its *versions* are the registry versions its variants serve.
//! `/v2/models/{endpoint}/infer` is routed by the traffic split like `/invocations`;
//! `…/versions/{n}/infer` asks the variant serving version `n` directly. A request carries the
//! rows either as one `[N, features]` tensor in signature order or as one `[N]`/`[N, 1]` tensor
//! per feature, named by the feature. The answer's `predict` output holds the labels
//! (regression: the values); a classifier also answers `probability` (of class 1) when the
//! request names it among its `outputs`. Errors are the protocol's `{"error": …}`.

// A refusal is the HTTP response itself, built once on a cold path: boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use galley_core::DType;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::recorder::Rows;
use crate::scoring::Answer;
use crate::server::{AppState, BodyError, Live, Scored, observed, predict, unauthorized};

pub const PREDICT: &str = "predict";
pub const PROBABILITY: &str = "probability";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/", get(server_metadata))
        .route("/v2/health/live", get(ok))
        .route("/v2/health/ready", get(ok))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}", get(version_metadata))
        .route("/v2/models/{name}/versions/{version}/ready", get(version_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Models are loaded before the server listens: a listening server is live and ready.
async fn ok() -> StatusCode {
    StatusCode::OK
}

async fn server_metadata(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    axum::Json(json!({ "name": "galley", "version": env!("CARGO_PKG_VERSION"), "extensions": [] })).into_response()
}

/// The endpoint's model, or a 404 naming the one this server serves.
fn this_model(state: &AppState, name: &str) -> Result<(), Response> {
    if name == state.endpoint() {
        Ok(())
    } else {
        Err(error(StatusCode::NOT_FOUND, format!("no model `{name}`: this server serves `{}`", state.endpoint())))
    }
}

/// The variant serving registry version `version`.
fn variant_of(live: &Live, name: &str, version: &str) -> Result<usize, Response> {
    live.variants
        .iter()
        .position(|v| v.config.version.map(|n| n.to_string()).as_deref() == Some(version))
        .ok_or_else(|| {
            let served: Vec<String> = live.variants.iter().filter_map(|v| v.config.version.map(|n| n.to_string())).collect();
            error(StatusCode::NOT_FOUND, format!("model `{name}` has no version `{version}` here (serving: {})", served.join(", ")))
        })
}

fn datatype(d: DType) -> &'static str {
    match d {
        DType::Bool => "BOOL",
        DType::Int => "INT64",
        DType::Float => "FP64",
        DType::String => "BYTES",
    }
}

fn metadata(state: &AppState, live: &Live, versions: Vec<String>) -> Response {
    let inputs: Vec<Json> = live.sig.columns().iter().map(|c| json!({ "name": c.name, "datatype": datatype(c.dtype), "shape": [-1, 1] })).collect();
    let mut outputs = vec![json!({ "name": PREDICT, "datatype": "FP64", "shape": [-1, 1] })];
    if live.variants.iter().any(|v| v.model.task() == galley_ml::Task::Classification) {
        outputs.push(json!({ "name": PROBABILITY, "datatype": "FP64", "shape": [-1, 1] }));
    }
    let platform = match live.variants.first().map(|v| v.model.format()) {
        Some("onnx") => "onnxruntime_onnx",
        _ => "galley",
    };
    axum::Json(json!({ "name": state.endpoint(), "versions": versions, "platform": platform, "inputs": inputs, "outputs": outputs })).into_response()
}

async fn model_metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    if let Err(r) = this_model(&state, &name) {
        return r;
    }
    let live = state.live();
    let versions = live.variants.iter().filter_map(|v| v.config.version.map(|n| n.to_string())).collect();
    metadata(&state, &live, versions)
}

async fn version_metadata(State(state): State<Arc<AppState>>, Path((name, version)): Path<(String, String)>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let live = state.live();
    if let Err(r) = this_model(&state, &name).and_then(|_| variant_of(&live, &name, &version)) {
        return r;
    }
    metadata(&state, &live, vec![version])
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match this_model(&state, &name) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(r) => r,
    }
}

async fn version_ready(State(state): State<Arc<AppState>>, Path((name, version)): Path<(String, String)>) -> Response {
    let live = state.live();
    match this_model(&state, &name).and_then(|_| variant_of(&live, &name, &version)) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Json>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Json,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
}

/// The tensor's elements as numbers, row-major, checked against its shape and datatype.
fn elements(t: &InputTensor) -> Result<Vec<f64>, String> {
    const NUMERIC: [&str; 12] = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"];
    if !NUMERIC.contains(&t.datatype.as_str()) {
        return Err(format!("input `{}` has datatype {}; this model takes numbers (FP64, FP32, INT64, BOOL, …)", t.name, t.datatype));
    }
    let mut out = Vec::new();
    flatten(&t.data, &mut out).map_err(|e| format!("input `{}`: {e}", t.name))?;
    if t.shape.iter().any(|d| *d < 0) {
        return Err(format!("input `{}` has shape {:?}; a request's shape has no -1", t.name, t.shape));
    }
    let want: i64 = t.shape.iter().product();
    if want as usize != out.len() {
        return Err(format!("input `{}` has shape {:?} ({want} elements) but {} values", t.name, t.shape, out.len()));
    }
    Ok(out)
}

fn flatten(v: &Json, out: &mut Vec<f64>) -> Result<(), String> {
    match v {
        Json::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Json::Number(n) => n.as_f64().map(|x| out.push(x)).ok_or_else(|| format!("{n} is not a number Galley can read")),
        Json::Bool(b) => {
            out.push(if *b { 1.0 } else { 0.0 });
            Ok(())
        }
        other => Err(format!("`{other}` is not a number")),
    }
}

/// The request's rows in signature order.
fn rows_of(req: &InferRequest, live: &Live) -> Result<Vec<Vec<f64>>, String> {
    let columns = live.sig.columns();
    let k = columns.len();
    if !live.sig.all_numeric {
        return Err("this endpoint's signature has string features, which its V2 route does not take yet; use /invocations".into());
    }
    if let [only] = req.inputs.as_slice()
        && only.shape.len() == 2
        && only.shape[1] as usize == k
    {
        let flat = elements(only)?;
        return Ok(flat.chunks(k).map(<[f64]>::to_vec).collect());
    }
    let mut by_feature: Vec<Option<Vec<f64>>> = vec![None; k];
    for t in &req.inputs {
        let Some(i) = columns.iter().position(|c| c.name == t.name) else {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "input `{}` is not a feature of this model ({}); send one [N, {k}] tensor in that order, or one [N] tensor per feature, by name",
                t.name,
                names.join(", ")
            ));
        };
        if !(t.shape.len() == 1 || (t.shape.len() == 2 && t.shape[1] == 1)) {
            return Err(format!("input `{}` has shape {:?}; a feature's tensor is [N] or [N, 1]", t.name, t.shape));
        }
        by_feature[i] = Some(elements(t)?);
    }
    let missing: Vec<&str> = columns.iter().zip(&by_feature).filter(|(_, v)| v.is_none()).map(|(c, _)| c.name.as_str()).collect();
    if !missing.is_empty() {
        return Err(format!("no input for feature(s) {}", missing.join(", ")));
    }
    let cols: Vec<Vec<f64>> = by_feature.into_iter().flatten().collect();
    let n = cols[0].len();
    if let Some((c, v)) = columns.iter().zip(&cols).find(|(_, v)| v.len() != n) {
        return Err(format!("input `{}` has {} rows, `{}` has {n}", c.name, v.len(), columns[0].name));
    }
    Ok((0..n).map(|r| cols.iter().map(|c| c[r]).collect()).collect())
}

async fn infer(State(state): State<Arc<AppState>>, Path(name): Path<String>, request: Request) -> Response {
    observed(&state, answer(&state, &name, None, request)).await
}

async fn infer_version(State(state): State<Arc<AppState>>, Path((name, version)): Path<(String, String)>, request: Request) -> Response {
    observed(&state, answer(&state, &name, Some(&version), request)).await
}

async fn answer(state: &AppState, name: &str, version: Option<&str>, request: Request) -> (Response, Option<Arc<crate::metrics::VariantCounters>>) {
    let (parts, body) = request.into_parts();
    if !state.authorized(&parts.headers) {
        return (unauthorized(), None);
    }
    if let Err(r) = this_model(state, name) {
        return (r, None);
    }
    let body = match state.read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(m)) => return (error(StatusCode::PAYLOAD_TOO_LARGE, m), None),
        Err(BodyError::Unreadable(m)) => return (error(StatusCode::BAD_REQUEST, m), None),
    };
    let live = state.live();
    let vi = match version {
        Some(v) => match variant_of(&live, name, v) {
            Ok(i) => i,
            Err(r) => return (r, None),
        },
        None => live.choose(),
    };
    let variant = &live.variants[vi];
    let counters = variant.counters.clone();
    let req: InferRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (error(StatusCode::BAD_REQUEST, format!("not an Open Inference Protocol request: {e}")), Some(counters)),
    };
    let classifier = variant.model.task() == galley_ml::Task::Classification;
    let mut want_probability = false;
    for o in &req.outputs {
        match o.name.as_str() {
            PREDICT => {}
            PROBABILITY if classifier => want_probability = true,
            other => {
                let known = if classifier { "`predict`, `probability`" } else { "`predict`" };
                return (error(StatusCode::BAD_REQUEST, format!("no output `{other}`; this model answers {known}")), Some(counters));
            }
        }
    }
    let rows = match rows_of(&req, &live) {
        Ok(r) => r,
        Err(m) => return (error(StatusCode::BAD_REQUEST, m), Some(counters)),
    };
    let n = rows.len();
    let rows = Rows::Numeric(rows);
    let how = if want_probability { Answer::Probabilities } else { Answer::Labels };
    let (labels, scores) = match predict(variant, &live.sig, &rows, how) {
        Ok(Scored::Labels(l)) => (l, None),
        Ok(Scored::Probabilities(s)) => (s.labels, Some(s.scores)),
        Err(e) if e.kind() == galley_core::ErrorKind::InvalidInput => return (error(StatusCode::BAD_REQUEST, e.message()), Some(counters)),
        Err(e) => return (error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()), Some(counters)),
    };
    let mut outputs = vec![json!({ "name": PREDICT, "datatype": "FP64", "shape": [n, 1], "data": labels })];
    if let Some(s) = scores {
        outputs.push(json!({ "name": PROBABILITY, "datatype": "FP64", "shape": [n, 1], "data": s }));
    }
    let mut body = json!({
        "model_name": state.endpoint(),
        "model_version": variant.config.version.map(|v| v.to_string()).unwrap_or_else(|| variant.name.to_string()),
        "outputs": outputs,
    });
    if let Some(id) = &req.id {
        body["id"] = json!(id);
    }
    state.log_inference(&live, vi, rows, labels);
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert("x-galley-variant", variant.header.clone());
    (response, Some(counters))
}
