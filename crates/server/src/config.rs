//! The model server's configuration file and the state file it leaves while it runs.
//!
//! The config is written by whoever hosts the server (the local platform's `LocalServing`,
//! Galley's container entrypoint) and reread by the server on every
//! `/admin/reload`, so it is the single source of truth for what an endpoint serves. The bearer
//! token never appears in it: only the name of the environment variable that holds it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use galley_core::fs::write_atomic;
use galley_core::stages::Signature;
use galley_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Request bodies above this are refused with 413 unless the config says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantConfig {
    pub name: String,
    /// Local path of the model artifact (`galley_ml::TrainedModel` bytes).
    pub model_path: PathBuf,
    /// Relative share of traffic; the shares of all variants need not add up to 100 here.
    pub weight: u32,
    /// Registered model name and version, reported by `/version` and the info gauge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerConfig {
    pub endpoint: String,
    #[serde(default = "loopback")]
    pub bind: IpAddr,
    /// 0 picks a free port.
    #[serde(default)]
    pub port: u16,
    /// Name of the environment variable holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The token itself, read from `token_env` when the config is loaded; never serialized.
    #[serde(skip)]
    pub token: Option<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    pub variants: Vec<VariantConfig>,
    pub signature: Signature,
    /// Where inferences are recorded for the monitor (and whose `metrics.prom` `/metrics`
    /// includes). None: nothing is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_dir: Option<PathBuf>,
    pub state_file: PathBuf,
    /// The platform authenticates every caller before a request reaches this server (inside
    /// a SageMaker endpoint only SageMaker's IAM-signed InvokeEndpoint can). Only
    /// `galley container serve` sets it; it lifts the rule that a non-loopback bind needs a token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub platform_authenticated: bool,
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

/// What a running server publishes about itself, written atomically once it listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerState {
    pub pid: u32,
    pub url: String,
    pub port: u16,
    pub variants: Vec<String>,
}

impl ServerConfig {
    /// Reads, parses, resolves the token from the environment and validates `path`.
    pub fn load(path: &Path) -> Result<ServerConfig> {
        let text = std::fs::read(path).map_err(|e| {
            Error::from(e)
                .resource(path.display().to_string())
                .operation("read endpoint config")
        })?;
        let mut config: ServerConfig = serde_json::from_slice(&text).map_err(|e| {
            Error::invalid(format!(
                "endpoint config {} is not valid: {e}",
                path.display()
            ))
        })?;
        config.resolve_token()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the token from the environment variable the config names.
    pub fn resolve_token(&mut self) -> Result<()> {
        self.token = match &self.token_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.trim().is_empty() => Some(t),
                _ => {
                    return Err(Error::invalid(format!(
                        "endpoint `{}` requires a bearer token but the environment variable `{var}` \
                         is unset or empty; export it before starting the server",
                        self.endpoint
                    )));
                }
            },
        };
        Ok(())
    }

    /// Checks everything that would make the server unsafe or unable to serve.
    pub fn validate(&self) -> Result<()> {
        if !self.bind.is_loopback() && self.token.is_none() && !self.platform_authenticated {
            return Err(Error::invalid(format!(
                "refusing to serve endpoint `{}` on non-loopback address {} without authentication: \
                 set `auth.token_env` to an environment variable holding a bearer token, or bind to \
                 127.0.0.1",
                self.endpoint, self.bind
            )));
        }
        if self.variants.is_empty() {
            return Err(Error::invalid(format!(
                "endpoint `{}` has no variants to serve",
                self.endpoint
            )));
        }
        let mut names: Vec<&str> = self.variants.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid(format!(
                "endpoint `{}` lists variant `{}` twice; variant names must be unique",
                self.endpoint, w[0]
            )));
        }
        if self.variants.iter().all(|v| v.weight == 0) {
            return Err(Error::invalid(format!(
                "endpoint `{}`: every variant has weight 0, so no variant could answer",
                self.endpoint
            )));
        }
        if self.max_body_bytes == 0 {
            return Err(Error::invalid("max_body_bytes must be greater than 0"));
        }
        if self.signature.inputs.is_empty() {
            return Err(Error::invalid(format!(
                "endpoint `{}` has a signature without inputs",
                self.endpoint
            )));
        }
        Ok(())
    }

    /// Writes the config atomically (temp file + rename) so a reload never reads half a file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(path, &json)
    }
}

impl ServerState {
    pub fn read(path: &Path) -> Result<Option<ServerState>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::corrupt(format!(
                    "server state file {} is damaged ({e}); undeploy the endpoint to reset it",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from(e).resource(path.display().to_string())),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::internal(e.to_string()))?;
        write_atomic(path, &json)
    }
}
