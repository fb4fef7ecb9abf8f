//! Serving on the local platform: an HTTP model server run as a managed background process.
//!
//! [`LocalServing`] keeps each endpoint under `<endpoints>/<name>/`: `settings.json` (how it
//! listens: [`EndpointSettings`], written by [`LocalServing::configure`]), `spec.json` (the
//! deployed [`EndpointSpec`]), `config.json` (the server's [`ServerConfig`]), `state.json`
//! (written by the running server: pid, url, port) and `server.log`. Inferences are recorded
//! under `<monitors>/<name>/` in the format [`crate::monitor::LocalMonitor`] reads. The first
//! deploy starts the server detached in its own process group; later deploys and traffic
//! shifts rewrite the config and hot-swap through `POST /admin/reload`, so no request fails.

mod process;


use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use galley_core::stages::{
    Described, EndpointInfo, EndpointSpec, EndpointState, Prediction, Serving, check_weights, refuse_scaling, shifted_weights,
};
use galley_core::table::Table;
use galley_core::{Error, ErrorKind, Result, Stage};

pub use galley_server::{ServerConfig, VariantConfig, run_server};
use galley_server::{DEFAULT_MAX_BODY_BYTES, ServerState};

const SETTINGS_FILE: &str = "settings.json";
const SPEC_FILE: &str = "spec.json";
const CONFIG_FILE: &str = "config.json";
const STATE_FILE: &str = "state.json";
const LOG_FILE: &str = "server.log";
const LOCK_FILE: &str = ".lock";

/// How one endpoint listens; from the blueprint's serving stage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointSettings {
    /// Loopback unless set; any other address requires `token_env`.
    pub bind: IpAddr,
    /// 0 picks a free port.
    #[serde(default)]
    pub port: u16,
    /// Environment variable holding the bearer token clients must send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        EndpointSettings {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            token_env: None,
        }
    }
}

impl EndpointSettings {
    pub fn validate(&self, endpoint: &str) -> Result<()> {
        if !self.bind.is_loopback() && self.token_env.is_none() {
            return Err(Error::invalid(format!(
                "endpoint `{endpoint}` binds non-loopback address {} without authentication: set \
                 `auth.token_env` to an environment variable holding a bearer token, or bind to 127.0.0.1",
                self.bind
            )));
        }
        Ok(())
    }
}

/// Server-wide knobs of a [`LocalServing`] (the per-endpoint ones are [`EndpointSettings`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ServingOptions {
    pub max_body_bytes: usize,
    /// Record every scored request under `<root>/monitors/<endpoint>/` for drift monitoring.
    pub record_inferences: bool,
    /// How long a starting server may take to answer `/health`.
    pub ready_timeout: Duration,
    /// How long `undeploy` waits after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for ServingOptions {
    fn default() -> Self {
        ServingOptions {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            record_inferences: true,
            ready_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(10),
        }
    }
}

pub struct LocalServing {
    endpoints: PathBuf,
    monitors: PathBuf,
    server_command: Vec<OsString>,
    options: ServingOptions,
    client: reqwest::Client,
    /// What it declares: local's features, or those of a platform that runs its endpoints so.
    declared: galley_core::Capabilities,
}

fn err(e: Error, op: &str, endpoint: &str) -> Error {
    e.platform(crate::platform::LOCAL)
        .stage(Stage::Serving)
        .operation(op.to_owned())
        .resource(endpoint.to_owned())
}

/// The rule validation applies to `stages.serving.endpoint` (`platform::endpoint_name`),
/// checked again here for library callers that never went through a blueprint.
fn check_endpoint_name(name: &str) -> Result<()> {
    crate::platform::endpoint_name(name).map_err(|why| Error::invalid(format!("endpoint name `{name}` is not valid: {why}")))
}

/// The local path behind a `file://` artifact URI (or a plain absolute path).
pub fn artifact_path(uri: &str) -> Result<PathBuf> {
    if let Some(rest) = uri.strip_prefix("file://") {
        return Ok(PathBuf::from(rest));
    }
    if uri.starts_with('/') {
        return Ok(PathBuf::from(uri));
    }
    Err(Error::unsupported(format!(
        "the local model server reads models from `file://` paths; `{uri}` is not one. Put the model \
         in the local artifact store first"
    )))
}

impl LocalServing {
    /// The same object declared as `platform`'s: a platform that keeps this stage the local
    /// way (onprem's shared directory) proves the declaration with its own suite run.
    pub fn declaring(mut self, platform: galley_core::Capabilities) -> Self {
        self.declared = platform;
        self
    }

    /// Endpoints live under `endpoints/<name>/`, recorded inferences under
    /// `monitors/<name>/`. `server_command` starts the model server; it gets
    /// `--config <file>` appended (the provider passes `galley __platform local endpoint`).
    pub fn new(
        endpoints: impl Into<PathBuf>,
        monitors: impl Into<PathBuf>,
        server_command: Vec<OsString>,
    ) -> LocalServing {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        LocalServing {
            endpoints: endpoints.into(),
            monitors: monitors.into(),
            server_command,
            options: ServingOptions::default(),
            client,
            declared: crate::platform::capabilities(),
        }
    }

    pub fn with_options(mut self, options: ServingOptions) -> LocalServing {
        self.options = options;
        self
    }

    pub fn options(&self) -> &ServingOptions {
        &self.options
    }

    /// The directory holding endpoint `name`'s files.
    pub fn endpoint_dir(&self, name: &str) -> PathBuf {
        self.endpoints.join(name)
    }

    /// Stores how endpoint `name` listens; takes effect at the next deploy or [`resume`](Self::resume).
    pub fn configure(&self, name: &str, settings: &EndpointSettings) -> Result<()> {
        check_endpoint_name(name)?;
        settings.validate(name)?;
        let json =
            serde_json::to_vec_pretty(settings).map_err(|e| Error::internal(e.to_string()))?;
        galley_core::fs::write_atomic(&self.endpoint_dir(name).join(SETTINGS_FILE), &json)
            .map_err(|e| err(e, "configure", name))
    }

    /// Serializes deploy, shift, resume and undeploy of one endpoint across tasks and
    /// processes (an advisory `flock`), so two callers never start two servers.
    async fn lock(&self, name: &str) -> Result<std::fs::File> {
        let dir = self.endpoint_dir(name);
        tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::from(e).resource(dir.display().to_string()))?;
            let path = dir.join(LOCK_FILE);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::from(e).resource(path.display().to_string()))?;
            file.lock()
                .map_err(|e| Error::from(e).resource(path.display().to_string()))?;
            Ok(file)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }

    /// The stored settings of endpoint `name`; None when it was never configured.
    pub fn settings(&self, name: &str) -> Result<Option<EndpointSettings>> {
        check_endpoint_name(name)?;
        let path = self.endpoint_dir(name).join(SETTINGS_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::corrupt(format!(
                    "{} is damaged ({e}); apply the blueprint again",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from(e).resource(path.display().to_string())),
        }
    }

    /// Brings a deployed endpoint back to its spec and settings: starts its server when it is
    /// not running (after a reboot or a crash), restarts it when the listening settings
    /// changed, otherwise hot-reloads. Returns None when nothing was ever deployed.
    pub async fn resume(&self, name: &str) -> Result<Option<EndpointInfo>> {
        check_endpoint_name(name).map_err(|e| err(e, "resume", name))?;
        if self
            .read_spec(name)
            .map_err(|e| err(e, "resume", name))?
            .is_none()
        {
            return Ok(None);
        }
        let _lock = self.lock(name).await.map_err(|e| err(e, "resume", name))?;
        let Some(spec) = self.read_spec(name).map_err(|e| err(e, "resume", name))? else {
            return Ok(None);
        };
        self.deploy_inner(&spec)
            .await
            .map(Some)
            .map_err(|e| err(e, "resume", name))
    }

    /// The URL of the endpoint's running server, if one is running.
    pub fn endpoint_url(&self, name: &str) -> Option<String> {
        check_endpoint_name(name).ok()?;
        self.running_state(name).map(|s| s.url)
    }

    /// The state file's contents when its pid is alive and is our server.
    fn running_state(&self, name: &str) -> Option<ServerState> {
        let dir = self.endpoint_dir(name);
        let state = ServerState::read(&dir.join(STATE_FILE)).ok().flatten()?;
        (process::alive(state.pid) && process::is_our_server(state.pid, &dir.join(CONFIG_FILE)))
            .then_some(state)
    }

    fn token(&self, endpoint: &str) -> Result<Option<String>> {
        let settings = self.settings(endpoint)?.unwrap_or_default();
        match &settings.token_env {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.trim().is_empty() => Ok(Some(t)),
                _ => Err(Error::new(
                    ErrorKind::Unauthenticated,
                    format!(
                        "the endpoint needs a bearer token but the environment variable `{var}` is unset or empty"
                    ),
                )),
            },
        }
    }

    fn authorize(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder> {
        Ok(match self.token(endpoint)? {
            Some(t) => request.bearer_auth(t),
            None => request,
        })
    }

    async fn healthy(&self, url: &str) -> bool {
        let request = self
            .client
            .get(format!("{url}/health"))
            .timeout(Duration::from_secs(2));
        matches!(request.send().await, Ok(r) if r.status().is_success())
    }

    fn server_config(&self, spec: &EndpointSpec, dir: &Path) -> Result<ServerConfig> {
        let variants = spec
            .variants
            .iter()
            .map(|v| {
                let model_path = artifact_path(&v.artifact_uri)?;
                if !model_path.is_file() {
                    return Err(Error::not_found(format!(
                        "variant `{}`: the model file {} does not exist",
                        v.name,
                        model_path.display()
                    )));
                }
                Ok(VariantConfig {
                    name: v.name.clone(),
                    model_path,
                    weight: v.weight,
                    model: Some(v.model.clone()),
                    version: Some(v.version),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let settings = self.settings(&spec.name)?.unwrap_or_default();
        settings.validate(&spec.name)?;
        let config = ServerConfig {
            endpoint: spec.name.clone(),
            bind: settings.bind,
            port: settings.port,
            token_env: settings.token_env,
            token: None,
            max_body_bytes: self.options.max_body_bytes,
            variants,
            signature: spec.signature.clone(),
            monitor_dir: self
                .options
                .record_inferences
                .then(|| self.monitors.join(&spec.name)),
            state_file: dir.join(STATE_FILE),
            platform_authenticated: false,
        };
        // Validate as the server will (token presence included) before touching anything.
        let mut check = config.clone();
        check.resolve_token()?;
        check.validate()?;
        Ok(config)
    }

    fn check_spec(spec: &EndpointSpec) -> Result<()> {
        check_endpoint_name(&spec.name)?;
        if spec.variants.is_empty() {
            return Err(Error::invalid(format!(
                "endpoint `{}` has no variants",
                spec.name
            )));
        }
        refuse_scaling(spec, crate::platform::LOCAL)?;
        check_weights(&spec.name, spec.variants.iter().map(|v| v.weight))
    }

    async fn start(&self, name: &str, dir: &Path) -> Result<ServerState> {
        let state_path = dir.join(STATE_FILE);
        let log = dir.join(LOG_FILE);
        let _ = std::fs::remove_file(&state_path);
        let spawned = process::spawn(&self.server_command, &dir.join(CONFIG_FILE), &log)?;
        let deadline = tokio::time::Instant::now() + self.options.ready_timeout;
        loop {
            if let Ok(Some(state)) = ServerState::read(&state_path)
                && state.pid == spawned.pid
                && self.healthy(&state.url).await
            {
                return Ok(state);
            }
            if spawned.exited.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the model server for `{name}` exited during startup; its log ({}) ends with:\n{}",
                        log.display(),
                        process::log_tail(&log, 2000)
                    ),
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = process::stop(spawned.pid, Duration::from_secs(2)).await;
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the model server for `{name}` did not answer /health within {:?}; see {}",
                        self.options.ready_timeout,
                        log.display()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn reload(&self, endpoint: &str, url: &str) -> Result<()> {
        let request = self.authorize(endpoint, self.client.post(format!("{url}/admin/reload")))?;
        let response = request
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("cannot reach {url}: {e}")))?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(Error::new(
            status_kind(status.as_u16()),
            format!("reload refused ({status}): {text}"),
        ))
    }

    fn read_spec(&self, name: &str) -> Result<Option<EndpointSpec>> {
        let path = self.endpoint_dir(name).join(SPEC_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::corrupt(format!(
                    "{} is damaged ({e}); deploy the endpoint again",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from(e).resource(path.display().to_string())),
        }
    }

    async fn deploy_inner(&self, spec: &EndpointSpec) -> Result<EndpointInfo> {
        Self::check_spec(spec)?;
        let dir = self.endpoint_dir(&spec.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::from(e).resource(dir.display().to_string()))?;
        let config = self.server_config(spec, &dir)?;
        let config_path = dir.join(CONFIG_FILE);
        let previous = std::fs::read(&config_path).ok();
        // What a reload cannot change: the listening socket, the token and the recorder.
        let restart_needed = previous
            .as_deref()
            .and_then(|b| serde_json::from_slice::<ServerConfig>(b).ok())
            .is_none_or(|old| {
                old.bind != config.bind
                    || old.port != config.port
                    || old.token_env != config.token_env
                    || old.monitor_dir != config.monitor_dir
                    || old.max_body_bytes != config.max_body_bytes
            });
        config.write(&config_path)?;

        let url = match self.running_state(&spec.name) {
            Some(state) if !restart_needed && self.healthy(&state.url).await => {
                if let Err(e) = self.reload(&spec.name, &state.url).await {
                    // Put back the config that is still being served.
                    if let Some(prev) = previous {
                        let _ = galley_core::fs::write_atomic(&config_path, &prev);
                    }
                    return Err(e);
                }
                state.url
            }
            stale => {
                if let Some(state) = stale {
                    // Alive but not answering, or listening differently: replace it.
                    process::stop(state.pid, self.options.stop_grace).await?;
                }
                self.start(&spec.name, &dir).await?.url
            }
        };
        let spec_json =
            serde_json::to_vec_pretty(spec).map_err(|e| Error::internal(e.to_string()))?;
        galley_core::fs::write_atomic(&dir.join(SPEC_FILE), &spec_json)?;
        Ok(EndpointInfo {
            name: spec.name.clone(),
            url,
            state: EndpointState::InService,
            variants: spec.variants.clone(),
            signature: spec.signature.clone(),
            scaling: None,
        })
    }
}

fn status_kind(status: u16) -> ErrorKind {
    match status {
        400 | 404 | 413 | 415 => ErrorKind::InvalidInput,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        429 => ErrorKind::Throttled,
        _ => ErrorKind::Unavailable,
    }
}

impl Described for LocalServing {
    fn capabilities(&self) -> galley_core::Capabilities {
        self.declared.clone()
    }
}

#[async_trait]
impl Serving for LocalServing {
    async fn deploy(&self, spec: &EndpointSpec) -> Result<EndpointInfo> {
        Self::check_spec(spec).map_err(|e| err(e, "deploy", &spec.name))?;
        let _lock = self
            .lock(&spec.name)
            .await
            .map_err(|e| err(e, "deploy", &spec.name))?;
        self.deploy_inner(spec)
            .await
            .map_err(|e| err(e, "deploy", &spec.name))
    }

    async fn describe(&self, endpoint: &str) -> Result<Option<EndpointInfo>> {
        check_endpoint_name(endpoint).map_err(|e| err(e, "describe", endpoint))?;
        let Some(spec) = self
            .read_spec(endpoint)
            .map_err(|e| err(e, "describe", endpoint))?
        else {
            return Ok(None);
        };
        let (url, state) = match self.running_state(endpoint) {
            Some(s) if self.healthy(&s.url).await => (s.url, EndpointState::InService),
            Some(s) => (s.url, EndpointState::Updating),
            None => (String::new(), EndpointState::Failed),
        };
        Ok(Some(EndpointInfo {
            name: spec.name,
            url,
            state,
            variants: spec.variants,
            signature: spec.signature,
            scaling: None,
        }))
    }

    async fn invoke(&self, endpoint: &str, rows: &Table) -> Result<Prediction> {
        let fail = |e: Error| err(e, "invoke", endpoint);
        check_endpoint_name(endpoint).map_err(fail)?;
        if self.read_spec(endpoint).map_err(fail)?.is_none() {
            return Err(fail(Error::not_found(format!(
                "endpoint `{endpoint}` is not deployed; deploy it first"
            ))));
        }
        let state = self.running_state(endpoint).ok_or_else(|| {
            fail(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "endpoint `{endpoint}` is deployed but its server is not running; \
                     `galley apply` (or LocalServing::resume) starts it again"
                ),
            ))
        })?;
        let body = rows.to_dataframe_split(&[])?;
        let request = self
            .authorize(
                endpoint,
                self.client
                    .post(format!("{}/invocations", state.url))
                    .json(&body),
            )
            .map_err(fail)?;
        let response = request.send().await.map_err(|e| {
            fail(Error::new(
                ErrorKind::Unavailable,
                format!("cannot reach {}: {e}", state.url),
            ))
        })?;
        let status = response.status();
        let variant = response
            .headers()
            .get("x-galley-variant")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.map_err(|e| {
            fail(Error::new(
                ErrorKind::Unavailable,
                format!("reading the response failed: {e}"),
            ))
        })?;
        if !status.is_success() {
            #[derive(serde::Deserialize)]
            struct ErrorBody {
                message: String,
            }
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(fail(Error::new(
                status_kind(status.as_u16()),
                format!("{status}: {message}"),
            )));
        }
        #[derive(serde::Deserialize)]
        struct Body {
            predictions: Vec<Option<f64>>,
        }
        let body: Body = serde_json::from_slice(&bytes).map_err(|e| {
            fail(Error::new(
                ErrorKind::Internal,
                format!("the server's answer is not valid: {e}"),
            ))
        })?;
        Ok(Prediction {
            predictions: body
                .predictions
                .into_iter()
                .map(|p| p.unwrap_or(f64::NAN))
                .collect(),
            variant,
        })
    }

    async fn shift_traffic(
        &self,
        endpoint: &str,
        weights: &[(String, u32)],
    ) -> Result<EndpointInfo> {
        let fail = |e: Error| err(e, "shift_traffic", endpoint);
        check_endpoint_name(endpoint).map_err(fail)?;
        if self.read_spec(endpoint).map_err(fail)?.is_none() {
            return Err(fail(Error::not_found(format!(
                "endpoint `{endpoint}` is not deployed"
            ))));
        }
        let _lock = self.lock(endpoint).await.map_err(fail)?;
        let mut spec = self.read_spec(endpoint).map_err(fail)?.ok_or_else(|| {
            fail(Error::not_found(format!(
                "endpoint `{endpoint}` is not deployed"
            )))
        })?;
        let shifted = shifted_weights(endpoint, &spec.variants, weights).map_err(fail)?;
        for (v, (_, weight)) in spec.variants.iter_mut().zip(shifted) {
            v.weight = weight;
        }
        self.deploy_inner(&spec).await.map_err(fail)
    }

    async fn undeploy(&self, endpoint: &str) -> Result<()> {
        let fail = |e: Error| err(e, "undeploy", endpoint);
        check_endpoint_name(endpoint).map_err(fail)?;
        let dir = self.endpoint_dir(endpoint);
        if !dir.exists() {
            return Ok(());
        }
        let _lock = self.lock(endpoint).await.map_err(fail)?;
        if let Some(state) = self.running_state(endpoint) {
            process::stop(state.pid, self.options.stop_grace)
                .await
                .map_err(fail)?;
        }
        for file in [STATE_FILE, SPEC_FILE, CONFIG_FILE] {
            match std::fs::remove_file(dir.join(file)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(fail(
                        Error::from(e).resource(dir.join(file).display().to_string()),
                    ));
                }
            }
        }
        Ok(())
    }
}
