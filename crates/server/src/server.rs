//! The model server: MLflow-compatible `/invocations`, health, metrics, version and hot reload.
//!
//! What is served lives in one `ArcSwap<Live>`: a request takes a reference-counted snapshot
//! at its start, so a reload swaps models atomically — requests already running finish on the
//! old models, new ones get the new — and no lock is ever taken on the scoring path. Traffic
//! is split by a precomputed smooth-weighted-round-robin schedule indexed by an atomic
//! counter: deterministic (90/10 over 1,000 requests is exactly 900/100) and lock-free.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use galley_core::table::Value;
use galley_core::{Error, ErrorKind, Result};
use galley_ml::Model;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::capture::METRICS_PROM;
use crate::config::{ServerConfig, ServerState, VariantConfig};
use crate::metrics::{Metrics, VariantCounters, escape};
use crate::recorder::{Entry, Recorder, Rows};
use crate::scoring::{self, Answer, BadInput, SignatureIndex};

/// Batches larger than this are scored on the blocking pool so they never stall the reactor.
const BLOCKING_ROWS: usize = 2048;
/// Longest traffic schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 10_000;

/// One loaded variant.
pub(crate) struct LiveVariant {
    pub(crate) name: Arc<str>,
    pub(crate) header: HeaderValue,
    pub(crate) model: Model,
    /// The model's inputs are exactly the endpoint's signature, all numeric: rows can go to
    /// `predict_matrix` as parsed.
    matrix_ok: bool,
    pub(crate) config: VariantConfig,
    pub(crate) counters: Arc<VariantCounters>,
}

/// Everything one configuration serves.
pub(crate) struct Live {
    generation: u64,
    pub(crate) sig: SignatureIndex,
    column_names: Arc<[String]>,
    pub(crate) variants: Vec<LiveVariant>,
    schedule: Vec<u16>,
    next: AtomicU64,
    /// Prometheus label sets for the model info gauge.
    info: Vec<String>,
}

impl Live {
    fn load(config: &ServerConfig, generation: u64, metrics: &Metrics) -> Result<Live> {
        let sig = SignatureIndex::new(&config.signature);
        let mut variants = Vec::with_capacity(config.variants.len());
        for v in &config.variants {
            let bytes = std::fs::read(&v.model_path).map_err(|e| {
                Error::from(e).operation("load model").resource(format!(
                    "variant `{}`: {}",
                    v.name,
                    v.model_path.display()
                ))
            })?;
            let model = Model::from_bytes(&bytes).map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("variant `{}` ({}): {e}", v.name, v.model_path.display()),
                )
            })?;
            let model_inputs = &model.signature().inputs;
            for c in &config.signature.inputs {
                if !model_inputs.iter().any(|m| m.name == c.name) {
                    return Err(Error::invalid(format!(
                        "variant `{}`: the endpoint's signature has feature `{}` which the model at {} \
                         does not take",
                        v.name,
                        c.name,
                        v.model_path.display()
                    )));
                }
            }
            let header = HeaderValue::from_str(&v.name).map_err(|_| {
                Error::invalid(format!(
                    "variant name `{}` cannot be sent in an HTTP header",
                    v.name
                ))
            })?;
            variants.push(LiveVariant {
                name: Arc::from(v.name.as_str()),
                header,
                matrix_ok: sig.all_numeric && *model_inputs == config.signature.inputs,
                model,
                config: v.clone(),
                counters: metrics.variant(&v.name),
            });
        }
        let info = variants
            .iter()
            .map(|v| {
                format!(
                    "variant=\"{}\",model=\"{}\",version=\"{}\",weight=\"{}\"",
                    escape(&v.name),
                    escape(v.config.model.as_deref().unwrap_or("")),
                    v.config.version.map(|n| n.to_string()).unwrap_or_default(),
                    v.config.weight
                )
            })
            .collect();
        let weights: Vec<u32> = config.variants.iter().map(|v| v.weight).collect();
        Ok(Live {
            generation,
            column_names: config
                .signature
                .inputs
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            sig,
            variants,
            schedule: schedule(&weights),
            next: AtomicU64::new(0),
            info,
        })
    }

    #[inline]
    pub(crate) fn choose(&self) -> usize {
        let n = self.next.fetch_add(1, Relaxed);
        self.schedule[(n % self.schedule.len() as u64) as usize] as usize
    }
}

/// A smooth weighted round-robin order over one period (nginx's algorithm): each variant
/// appears `weight / gcd` times, interleaved as evenly as possible.
pub fn schedule(weights: &[u32]) -> Vec<u16> {
    let g = weights
        .iter()
        .copied()
        .filter(|&w| w > 0)
        .fold(0u64, |a, w| gcd(a, w as u64))
        .max(1);
    let mut w: Vec<u64> = weights.iter().map(|&x| x as u64 / g).collect();
    let total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        // Keep every non-zero weight non-zero while bounding the period.
        w = w
            .iter()
            .map(|&x| {
                if x == 0 {
                    0
                } else {
                    (x * MAX_SCHEDULE / total).max(1)
                }
            })
            .collect();
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &wi) in current.iter_mut().zip(&w) {
            *c += wi as i64;
        }
        let best = (0..w.len())
            .filter(|&i| w[i] > 0)
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        current[best] -= total;
        out.push(best as u16);
    }
    if out.is_empty() {
        out.push(0);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

pub struct AppState {
    config_path: PathBuf,
    endpoint: String,
    live: ArcSwap<Live>,
    token: Option<Box<[u8]>>,
    max_body: usize,
    metrics: Metrics,
    recorder: Option<Recorder>,
    monitor_dir: Option<PathBuf>,
    state_file: PathBuf,
    url: String,
    port: u16,
    /// The startup config's fixed fields; a reload that changes them is refused.
    bind: IpAddr,
    reload_lock: tokio::sync::Mutex<()>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error_code: &'a str,
    message: &'a str,
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::to_vec(&ErrorBody {
        error_code: code,
        message,
    })
    .unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

impl AppState {
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What is served now: a snapshot that a reload does not change under the caller.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The body, up to `max_body` bytes: refused early when `Content-Length` says it is larger.
    pub(crate) async fn read_body(&self, headers: &HeaderMap, body: Body) -> std::result::Result<Bytes, BodyError> {
        let too_large = || BodyError::TooLarge(format!("the request body is larger than the limit of {} bytes", self.max_body));
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large());
        }
        axum::body::to_bytes(body, self.max_body).await.map_err(|e| {
            if is_length_limit(&e) { too_large() } else { BodyError::Unreadable(format!("cannot read the request body: {e}")) }
        })
    }

    /// Records an answered request in the inference log the monitor reads (when it has one).
    pub(crate) fn log_inference(&self, live: &Live, variant: usize, rows: Rows, predictions: Vec<f64>) {
        if let Some(recorder) = &self.recorder {
            let entry = Entry { variant: live.variants[variant].name.clone(), columns: live.column_names.clone(), rows, predictions };
            recorder.record(entry, &self.metrics);
        }
    }

    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        bool::from(given.ct_eq(token))
    }
}

pub(crate) fn unauthorized() -> Response {
    let mut r = error_response(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "this endpoint requires `Authorization: Bearer <token>`",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The scoring formats a request may be in, by its media type.
#[derive(Clone, Copy, PartialEq)]
enum BodyFormat {
    Json,
    Csv,
}

fn body_format(headers: &HeaderMap) -> Option<BodyFormat> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())?
        .trim();
    if media.eq_ignore_ascii_case("application/json") {
        Some(BodyFormat::Json)
    } else if media.eq_ignore_ascii_case("text/csv") {
        Some(BodyFormat::Csv)
    } else {
        None
    }
}

/// True when reading a body failed because it passed the limit (a chunked body without a
/// `Content-Length` is only caught here).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Decrements the in-flight gauge however the handler ends (even if its future is dropped).
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    /// Counts a request in flight until dropped.
    fn enter(metrics: &'a Metrics) -> InFlight<'a> {
        metrics.in_flight.fetch_add(1, Relaxed);
        InFlight(metrics)
    }
}
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

async fn invocations(State(state): State<Arc<AppState>>, request: Request) -> Response {
    observed(&state, score(&state, request)).await
}

/// Runs a scoring handler counted in flight, and records its status and latency under the
/// variant that answered (or as unrouted when none did).
pub(crate) async fn observed(
    state: &AppState,
    handler: impl Future<Output = (Response, Option<Arc<VariantCounters>>)>,
) -> Response {
    let started = Instant::now();
    let _guard = InFlight::enter(&state.metrics);
    let (response, counters) = handler.await;
    let status = response.status().as_u16();
    match counters {
        Some(c) => c.observe(status, started.elapsed()),
        None => state.metrics.unrouted().observe(status, started.elapsed()),
    }
    response
}

/// Why a request body was not read; each protocol words the answer its own way.
pub(crate) enum BodyError {
    TooLarge(String),
    Unreadable(String),
}

async fn score(
    state: &Arc<AppState>,
    request: Request,
) -> (Response, Option<Arc<VariantCounters>>) {
    let (parts, body) = request.into_parts();
    if !state.authorized(&parts.headers) {
        return (unauthorized(), None);
    }
    let Some(format) = body_format(&parts.headers) else {
        let given = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        let message = format!(
            "This predictor only supports the following content types: ['application/json', 'text/csv']. Got '{given}'."
        );
        return (
            error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, "BAD_REQUEST", &message),
            None,
        );
    };
    let body = match state.read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => {
            let response = match e {
                BodyError::TooLarge(m) => error_response(StatusCode::PAYLOAD_TOO_LARGE, "REQUEST_LIMIT_EXCEEDED", &m),
                BodyError::Unreadable(m) => bad_request(&m),
            };
            return (response, None);
        }
    };

    let live = state.live.load_full();
    let parsed = match format {
        BodyFormat::Json => scoring::parse_request(&body),
        BodyFormat::Csv => scoring::parse_csv_request(&body, &live.sig).map(|input| scoring::Parsed { input, answer: Answer::Labels }),
    };
    let (input, answer) = match parsed {
        Ok(p) => (p.input, p.answer),
        Err(BadInput(m)) => return (bad_request(&m), None),
    };
    let rows = if live.sig.all_numeric {
        scoring::to_rows::<f64>(input, &live.sig).map(Rows::Numeric)
    } else {
        scoring::to_rows::<Value>(input, &live.sig).map(Rows::Values)
    };
    let rows = match rows {
        Ok(r) => r,
        Err(BadInput(m)) => return (bad_request(&m), None),
    };
    let n_rows = match &rows {
        Rows::Numeric(r) => r.len(),
        Rows::Values(r) => r.len(),
    };
    let vi = live.choose();
    let counters = live.variants[vi].counters.clone();

    let predicted = if n_rows > BLOCKING_ROWS {
        let live = live.clone();
        match tokio::task::spawn_blocking(move || {
            let p = predict(&live.variants[vi], &live.sig, &rows, answer);
            (p, rows)
        })
        .await
        {
            Ok((p, rows)) => p.map(|p| (p, rows)),
            Err(e) => Err(Error::internal(format!("scoring task failed: {e}"))),
        }
    } else {
        predict(&live.variants[vi], &live.sig, &rows, answer).map(|p| (p, rows))
    };
    let variant = &live.variants[vi];
    let (scored, rows) = match predicted {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            return (bad_request(e.message()), Some(counters));
        }
        Err(e) => {
            let r = error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                &e.to_string(),
            );
            return (r, Some(counters));
        }
    };

    #[derive(Serialize)]
    struct Predictions<'a, T> {
        predictions: &'a [T],
    }
    let (body, predictions) = match scored {
        Scored::Labels(labels) => (serde_json::to_vec(&Predictions { predictions: &labels }), labels),
        Scored::Probabilities(s) => {
            let pairs: Vec<[f64; 2]> = s.scores.iter().map(|p| [1.0 - p, *p]).collect();
            (serde_json::to_vec(&Predictions { predictions: &pairs }), s.labels)
        }
    };
    let body = body.unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("x-galley-variant", variant.header.clone());

    state.log_inference(&live, vi, rows, predictions);
    (response, Some(counters))
}

/// What a variant answered: labels (regression: values), or for `predict_proba` the scores
/// with the labels the inference log records either way.
pub(crate) enum Scored {
    Labels(Vec<f64>),
    Probabilities(galley_ml::Scores),
}

/// Scores `rows` (in signature order) with one variant.
pub(crate) fn predict(variant: &LiveVariant, sig: &SignatureIndex, rows: &Rows, answer: Answer) -> Result<Scored> {
    let model = &variant.model;
    if answer == Answer::Probabilities && model.task() != galley_ml::Task::Classification {
        return Err(Error::invalid("`predict_method: predict_proba` asks a classifier for probabilities; this model is a regressor"));
    }
    let matrix = |m: &[Vec<f64>]| match answer {
        Answer::Labels => model.labels_matrix(m).map(Scored::Labels),
        Answer::Probabilities => model.score_matrix(m).map(Scored::Probabilities),
    };
    let table = |t: &galley_core::Table| match answer {
        Answer::Labels => model.labels(t).map(Scored::Labels),
        Answer::Probabilities => model.scores(t).map(Scored::Probabilities),
    };
    match rows {
        Rows::Numeric(m) if variant.matrix_ok => matrix(m),
        Rows::Numeric(m) => {
            let t = scoring::to_table(
                m.iter()
                    .map(|r| {
                        r.iter()
                            .zip(sig.columns())
                            .map(|(&x, c)| match c.dtype {
                                galley_core::DType::Int => Value::Int(x as i64),
                                galley_core::DType::Bool => Value::Bool(x != 0.0),
                                _ => Value::Float(x),
                            })
                            .collect()
                    })
                    .collect(),
                sig,
            );
            table(&t)
        }
        Rows::Values(v) => table(&scoring::to_table(v.clone(), sig)),
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let live = state.live.load();
    let variants: Vec<&str> = live.variants.iter().map(|v| &*v.name).collect();
    axum::Json(
        serde_json::json!({"status": "ok", "endpoint": state.endpoint, "variants": variants}),
    )
    .into_response()
}

async fn ping(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    (StatusCode::OK, "\n").into_response()
}

async fn version(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let live = state.live.load();
    let variants: Vec<_> = live
        .variants
        .iter()
        .map(|v| {
            serde_json::json!({
                "name": &*v.name, "model": v.config.model, "version": v.config.version,
                "weight": v.config.weight, "model_path": v.config.model_path,
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "galley": env!("CARGO_PKG_VERSION"),
        "endpoint": state.endpoint,
        "generation": live.generation,
        "variants": variants,
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let live = state.live.load();
    let mut text = state
        .metrics
        .render(&state.endpoint, &live.info, live.generation);
    if let Some(dir) = &state.monitor_dir {
        // Drift gauges published by the monitor, so they are scrapeable from the endpoint.
        if let Ok(extra) = tokio::fs::read_to_string(dir.join(METRICS_PROM)).await {
            text.push_str(&extra);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn reload(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let allowed = match &state.token {
        Some(_) => state.authorized(&headers),
        None => peer.ip().is_loopback(),
    };
    if !allowed {
        return if state.token.is_some() {
            unauthorized()
        } else {
            error_response(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "reload is accepted from loopback only",
            )
        };
    }
    let _one_at_a_time = state.reload_lock.lock().await;
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || st.reload_now()).await;
    match result {
        Ok(Ok(generation)) => {
            state.metrics.reloads.fetch_add(1, Relaxed);
            let live = state.live.load();
            let variants: Vec<&str> = live.variants.iter().map(|v| &*v.name).collect();
            axum::Json(serde_json::json!({"reloaded": true, "generation": generation, "variants": variants}))
                .into_response()
        }
        Ok(Err(e)) => {
            state.metrics.reload_failures.fetch_add(1, Relaxed);
            let message = format!("reload refused, the previous models keep serving: {e}");
            let status = if e.kind() == ErrorKind::InvalidInput {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            error_response(
                status,
                if status == StatusCode::BAD_REQUEST {
                    "BAD_REQUEST"
                } else {
                    "INTERNAL_ERROR"
                },
                &message,
            )
        }
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            &e.to_string(),
        ),
    }
}

impl AppState {
    /// Rereads the config file and swaps in its models. Runs on the blocking pool.
    fn reload_now(&self) -> Result<u64> {
        let config = ServerConfig::load(&self.config_path)?;
        if config.endpoint != self.endpoint || config.bind != self.bind {
            return Err(Error::invalid(format!(
                "the config at {} changes the endpoint name or bind address; those need a restart \
                 (undeploy and deploy again)",
                self.config_path.display()
            )));
        }
        let generation = self.live.load().generation + 1;
        let live = Live::load(&config, generation, &self.metrics)?;
        let names = live.variants.iter().map(|v| v.name.to_string()).collect();
        self.live.store(Arc::new(live));
        ServerState {
            pid: std::process::id(),
            url: self.url.clone(),
            port: self.port,
            variants: names,
        }
        .write(&self.state_file)?;
        Ok(generation)
    }
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "ENDPOINT_NOT_FOUND",
        "no such route; this server answers POST /invocations, GET /health, /ping, /metrics, /version, POST /admin/reload and the Open Inference Protocol under /v2",
    )
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/invocations", post(invocations))
        .route("/health", get(health))
        .route("/ping", get(ping))
        .route("/metrics", get(metrics))
        .route("/version", get(version))
        .route("/admin/reload", post(reload))
        .merge(crate::v2::routes())
        .fallback(not_found)
        .with_state(state)
}

/// Loads the config at `config_path`, listens, publishes the state file and serves until
/// SIGTERM or SIGINT. The CLI's hidden `__endpoint` subcommand and the
/// `galley-local-endpoint` binary both call this.
pub async fn run_server(config_path: &Path) -> Result<()> {
    let config_path =
        std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let config = ServerConfig::load(&config_path)?;
    let metrics = Metrics::default();
    // Nothing else runs yet, so loading the models here blocks no one.
    let live = Live::load(&config, 1, &metrics)?;

    let listener = tokio::net::TcpListener::bind((config.bind, config.port))
        .await
        .map_err(|e| {
            Error::from(e).operation("bind").resource(format!(
                "{}:{} for endpoint `{}`",
                config.bind, config.port, config.endpoint
            ))
        })?;
    let port = listener.local_addr().map_err(Error::from)?.port();
    let url = match config.bind {
        IpAddr::V4(ip) => format!("http://{ip}:{port}"),
        IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
    };
    let recorder = match &config.monitor_dir {
        Some(dir) => Some(
            Recorder::start(dir).map_err(|e| Error::from(e).resource(dir.display().to_string()))?,
        ),
        None => None,
    };
    let variants = live.variants.iter().map(|v| v.name.to_string()).collect();
    let state = Arc::new(AppState {
        config_path,
        endpoint: config.endpoint.clone(),
        live: ArcSwap::from_pointee(live),
        token: config.token.as_ref().map(|t| t.as_bytes().into()),
        max_body: config.max_body_bytes,
        metrics,
        recorder,
        monitor_dir: config.monitor_dir.clone(),
        state_file: config.state_file.clone(),
        url: url.clone(),
        port,
        bind: config.bind,
        reload_lock: tokio::sync::Mutex::new(()),
    });
    let pid = std::process::id();
    ServerState {
        pid,
        url: url.clone(),
        port,
        variants,
    }
    .write(&config.state_file)?;
    eprintln!(
        "galley endpoint `{}` serving on {url} (pid {pid})",
        config.endpoint
    );

    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;

    // Leave no stale state behind, but never remove a newer server's file.
    if let Ok(Some(s)) = ServerState::read(&config.state_file)
        && s.pid == pid
    {
        let _ = std::fs::remove_file(&config.state_file);
    }
    // Everything recorded before the shutdown reaches the monitor's file.
    if let Some(recorder) = &state.recorder {
        recorder.shutdown();
    }
    eprintln!("galley endpoint `{}` stopped", config.endpoint);
    served.map_err(|e| Error::from(e).operation("serve"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_recognised() {
        let chunks: Vec<std::io::Result<Bytes>> =
            (0..2).map(|_| Ok(Bytes::from(vec![b' '; 3000]))).collect();
        let body = Body::from_stream(futures::stream::iter(chunks));
        let e = axum::body::to_bytes(body, 4096).await.unwrap_err();
        assert!(is_length_limit(&e), "{e}");
        let fine = Body::from_stream(futures::stream::iter(vec![Ok::<_, std::io::Error>(
            Bytes::from_static(b"{}"),
        )]));
        assert_eq!(axum::body::to_bytes(fine, 4096).await.unwrap().len(), 2);
    }

    #[test]
    fn schedule_is_exact_and_interleaved() {
        let s = schedule(&[90, 10]);
        assert_eq!(s.len(), 10);
        assert_eq!(s.iter().filter(|&&i| i == 1).count(), 1);
        let s = schedule(&[50, 50]);
        assert_eq!(s, vec![0, 1]);
        let s = schedule(&[100, 0]);
        assert_eq!(s, vec![0]);
        let s = schedule(&[0, 100]);
        assert_eq!(s, vec![1]);
        let s = schedule(&[3, 7]);
        assert_eq!(s.len(), 10);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 3);
        // Smooth: the minority variant never comes twice in a row.
        assert!(s.windows(2).all(|w| !(w[0] == 0 && w[1] == 0)), "{s:?}");
        let big = schedule(&[u32::MAX, 1]);
        assert!(big.len() as u64 <= MAX_SCHEDULE + 2 && big.contains(&1));
    }
}
