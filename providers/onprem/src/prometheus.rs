//! Monitoring on a Prometheus server the team runs. Prometheus reads its scrape targets and
//! rules from files in a directory it was configured with (`file_sd_configs` over
//! `targets/*.json`, `rule_files` over `rules/*.yml`, as `scripts/stack up onprem` starts it):
//! Galley writes one rules file per endpoint at apply (`monitoring.prometheus`: recording and
//! alerting rules for errors, latency and drift, scoped to that endpoint and its monitor),
//! asks Prometheus to reload (`POST /-/reload`, which needs `--web.enable-lifecycle`) and
//! reads back from `GET /api/v1/rules` that the groups loaded. The endpoint's target file is
//! written when the endpoint serves and its address is known ([`Scraped`]), so Prometheus
//! scrapes wherever the model server bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use galley_core::resource::{Observed, OwnerTag, ResourceHandler, ResourceSpec};
use galley_core::stages::{Described, EndpointInfo, EndpointSpec, Prediction, Serving};
use galley_core::table::Table;
use galley_core::{Error, ErrorKind, Result};
use serde_json::{Value as Json, json};

/// Where a Prometheus server is and the directory it reads targets and rules from.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// `http(s)://host:port`, without a trailing slash.
    pub url: String,
    pub config_dir: PathBuf,
}

impl PrometheusConfig {
    /// The rules file of `endpoint`.
    pub fn rules_file(&self, endpoint: &str) -> PathBuf {
        self.config_dir.join("rules").join(format!("galley_{endpoint}.yml"))
    }

    /// The file-SD targets file of `endpoint`.
    pub fn targets_file(&self, endpoint: &str) -> PathBuf {
        self.config_dir.join("targets").join(format!("galley_{endpoint}.json"))
    }
}

/// The two calls Galley makes to Prometheus's HTTP API.
pub struct PrometheusClient {
    base: String,
    http: reqwest::Client,
}

impl PrometheusClient {
    pub fn new(url: &str) -> Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::invalid(format!("Prometheus URL `{base}` is not an http(s) URL (e.g. http://127.0.0.1:9090)")));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal(format!("building the HTTP client for Prometheus: {e}")))?;
        Ok(PrometheusClient { base, http })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Re-reads the configuration, its rule files and targets. Prometheus answers 500 with
    /// the reason when a file does not load, and keeps running on the previous configuration.
    pub async fn reload(&self) -> Result<()> {
        self.call(reqwest::Method::POST, "/-/reload", "reload").await.map(|_| ())
    }

    /// `GET /api/v1/rules`: every loaded rule group (name, file, rules).
    pub async fn rule_groups(&self) -> Result<Vec<Json>> {
        let data = self.data("/api/v1/rules", "list rules").await?;
        Ok(data["groups"].as_array().cloned().unwrap_or_default())
    }

    /// Whether Prometheus scrapes a target that file discovery found in `file`.
    pub async fn scrapes_from(&self, file: &Path) -> Result<bool> {
        let data = self.data("/api/v1/targets?state=active", "list targets").await?;
        let file = file.display().to_string();
        Ok(data["activeTargets"].as_array().into_iter().flatten().any(|t| t["discoveredLabels"]["__meta_filepath"].as_str() == Some(file.as_str())))
    }

    /// The `data` of an API answer.
    async fn data(&self, path: &str, op: &str) -> Result<Json> {
        let body = self.call(reqwest::Method::GET, path, op).await?;
        let mut doc: Json = serde_json::from_slice(&body)
            .map_err(|_| Error::new(ErrorKind::Unavailable, format!("Prometheus at {} answered {path} with something that is not JSON: {}", self.base, galley_core::error::body_excerpt(&body))))?;
        Ok(doc["data"].take())
    }

    async fn call(&self, method: reqwest::Method, path: &str, op: &str) -> Result<Vec<u8>> {
        let resp = self.http.request(method, format!("{}{path}", self.base)).send().await.map_err(|e| {
            let kind = if e.is_timeout() { ErrorKind::Timeout } else { ErrorKind::Unavailable };
            let why = if e.is_connect() { "could not connect" } else if e.is_timeout() { "timed out" } else { "failed" };
            Error::new(kind, format!("Prometheus at {} {why} ({op}): is it running? (`scripts/stack up onprem` starts one here)", self.base))
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        if !(200..300).contains(&status) {
            let hint = if status == 403 && path == "/-/reload" { " (start Prometheus with --web.enable-lifecycle so Galley can reload it)" } else { "" };
            return Err(Error::new(
                ErrorKind::of_http_status(status),
                format!("Prometheus at {} answered {op} with HTTP {status}: {}{hint}", self.base, galley_core::error::body_excerpt(&body)),
            ));
        }
        Ok(body)
    }
}

/// The groups Prometheus loaded from `file`.
pub fn groups_from(groups: &[Json], file: &Path) -> Vec<String> {
    let file = file.display().to_string();
    groups.iter().filter(|g| g["file"].as_str() == Some(file.as_str())).filter_map(|g| g["name"].as_str().map(str::to_owned)).collect()
}

/// The serving stage with the endpoint's Prometheus targets file kept where it serves: written
/// when it deploys (or its traffic moves), removed when it is undeployed.
pub struct Scraped {
    pub inner: Arc<dyn Serving>,
    pub prometheus: PrometheusConfig,
}

impl Scraped {
    fn write_targets(&self, info: &EndpointInfo) -> Result<()> {
        let Some(host_port) = galley_server::prometheus::host_port(&info.url) else { return Ok(()) };
        let file = self.prometheus.targets_file(&info.name);
        let doc = galley_server::prometheus::targets(&info.name, host_port);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::from(e).resource(dir.display().to_string()))?;
        }
        galley_core::fs::write_atomic(&file, serde_json::to_string_pretty(&doc)?.as_bytes()).map_err(|e| e.resource(file.display().to_string()))
    }
}

impl Described for Scraped {
    fn capabilities(&self) -> galley_core::Capabilities {
        self.inner.capabilities()
    }
}

#[async_trait]
impl Serving for Scraped {
    async fn deploy(&self, spec: &EndpointSpec) -> Result<EndpointInfo> {
        let info = self.inner.deploy(spec).await?;
        self.write_targets(&info)?;
        Ok(info)
    }
    async fn describe(&self, endpoint: &str) -> Result<Option<EndpointInfo>> {
        self.inner.describe(endpoint).await
    }
    async fn invoke(&self, endpoint: &str, rows: &Table) -> Result<Prediction> {
        self.inner.invoke(endpoint, rows).await
    }
    async fn shift_traffic(&self, endpoint: &str, weights: &[(String, u32)]) -> Result<EndpointInfo> {
        let info = self.inner.shift_traffic(endpoint, weights).await?;
        self.write_targets(&info)?;
        Ok(info)
    }
    async fn undeploy(&self, endpoint: &str) -> Result<()> {
        self.inner.undeploy(endpoint).await?;
        remove_file(&self.prometheus.targets_file(endpoint))
    }
}

/// Removes `file`; one that is already gone is fine.
pub fn remove_file(file: &Path) -> Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::from(e).resource(file.display().to_string())),
        _ => Ok(()),
    }
}

/// `monitoring.prometheus`: the endpoint's rules file in Prometheus's rules directory, loaded.
/// Its desired attributes say `loaded: true`, so a file Prometheus did not load (a server
/// restarted on another configuration) shows as a change in the plan.
pub struct RulesHandler;

impl RulesHandler {
    fn target(spec: &ResourceSpec) -> Result<(PrometheusConfig, PrometheusClient, String, String)> {
        let attr = |k: &str| spec.desired.get(k).and_then(Json::as_str).map(str::to_owned).ok_or_else(|| Error::internal(format!("resource `{}` has no `{k}` attribute", spec.address)));
        let config = PrometheusConfig { url: attr("url")?, config_dir: attr("config_dir")?.into() };
        let client = PrometheusClient::new(&config.url)?;
        Ok((config, client, attr("endpoint")?, attr("monitor")?))
    }

    /// Writes the file and reloads; a file Prometheus refuses is taken back out (and reloaded
    /// away), so nothing half-applied stays in its directory.
    async fn write(spec: &ResourceSpec) -> Result<Observed> {
        let (config, client, endpoint, monitor) = Self::target(spec)?;
        let file = config.rules_file(&endpoint);
        let rules = galley_server::prometheus::endpoint_rules(&endpoint, &monitor, galley_server::prometheus::Thresholds::default());
        let text = format!("# Written by Galley for endpoint `{endpoint}`: `galley apply` rewrites it, `galley destroy` removes it.\n{}", galley_blueprint::emit::to_yaml(&rules));
        let dir = file.parent().expect("a rules file is in a directory");
        std::fs::create_dir_all(dir).map_err(|e| Error::from(e).resource(dir.display().to_string()))?;
        galley_core::fs::write_atomic(&file, text.as_bytes()).map_err(|e| e.resource(file.display().to_string()))?;
        if let Err(e) = client.reload().await {
            remove_file(&file)?;
            let _ = client.reload().await;
            return Err(e);
        }
        RulesHandler.read(spec).await?.ok_or_else(|| Error::internal(format!("rules file {} vanished right after it was written", file.display())))
    }
}

#[async_trait]
impl ResourceHandler for RulesHandler {
    fn kind(&self) -> &str {
        crate::provider::PROMETHEUS_RULES
    }
    fn replace_on(&self) -> &[&str] {
        &["url", "config_dir", "endpoint"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let (config, client, endpoint, _) = Self::target(spec)?;
        let file = config.rules_file(&endpoint);
        if !file.exists() {
            return Ok(None);
        }
        let groups = groups_from(&client.rule_groups().await?, &file);
        let mut attributes = spec.desired.clone();
        attributes["loaded"] = Json::Bool(!groups.is_empty());
        Ok(Some(Observed {
            id: file.display().to_string(),
            attributes,
            outputs: BTreeMap::from([
                ("rules_file".to_owned(), json!(file.display().to_string())),
                ("groups".to_owned(), json!(groups)),
                ("alerts".to_owned(), json!(format!("{}/alerts", client.url()))),
            ]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, _owner: &OwnerTag) -> Result<Observed> {
        Self::write(spec).await
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        Self::write(spec).await
    }
    /// Removes the endpoint's targets file and waits until Prometheus has stopped scraping it,
    /// then removes the rules file and reloads. In that order because a reload restarts file
    /// discovery, which then never learns that a file it did not see was deleted: Prometheus
    /// 2.42 keeps scraping the targets of a file removed just before a reload.
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let (config, client, endpoint, _) = Self::target(spec)?;
        let targets = config.targets_file(&endpoint);
        remove_file(&targets)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while client.scrapes_from(&targets).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("Prometheus at {} still scrapes the targets of {} 60s after it was removed: is its file discovery watching that directory?", client.url(), targets.display()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        remove_file(&config.rules_file(&endpoint))?;
        client.reload().await
    }
}
