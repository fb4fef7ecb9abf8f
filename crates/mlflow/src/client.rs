//! The one HTTP client for an MLflow server: base URI, credentials from MLflow's own environment
//! variables, JSON in and out, and every failure mapped to a [`galley_core::Error`] here.

use std::time::Duration;

use galley_core::{Error, ErrorKind, Result};
use serde_json::Value as Json;

/// How Galley authenticates to MLflow: the variables MLflow's own client reads, so a team's
/// existing set-up works unchanged. Never printed: `Debug` shows only which kind is in use.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    None,
    /// `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` (MLflow's basic-auth app).
    Basic { username: String, password: String },
    /// `MLFLOW_TRACKING_TOKEN`.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Credentials {
    pub fn from_env() -> Credentials {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        if let Some(token) = var("MLFLOW_TRACKING_TOKEN") {
            return Credentials::Bearer(token);
        }
        match (var("MLFLOW_TRACKING_USERNAME"), var("MLFLOW_TRACKING_PASSWORD")) {
            (Some(username), Some(password)) => Credentials::Basic { username, password },
            _ => Credentials::None,
        }
    }

    /// What was tried, for an error: never the secret.
    /// What was tried, for a refusal's message: the kind and the user, never the secret.
    pub fn describe(&self) -> String {
        match self {
            Credentials::None => "no credentials (set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)".into(),
            Credentials::Basic { username, .. } => {
                format!("basic auth as user `{username}` from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")
            }
            Credentials::Bearer(_) => "the bearer token in MLFLOW_TRACKING_TOKEN".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MlflowClient {
    /// `http(s)://host:port[/prefix]`, without a trailing slash or credentials.
    base: String,
    credentials: Credentials,
    http: reqwest::Client,
}

impl MlflowClient {
    /// A client for the tracking server at `tracking_uri` (MLflow's `MLFLOW_TRACKING_URI`).
    pub fn new(tracking_uri: &str, credentials: Credentials) -> Result<MlflowClient> {
        let base = tracking_uri.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::invalid(format!(
                "MLflow tracking URI `{}` is not an http(s) URL; Galley talks to an MLflow server (`mlflow server`), not to a local store",
                redact(&base)
            )));
        }
        if redact(&base) != base {
            return Err(Error::invalid(
                "the MLflow tracking URI carries credentials; put them in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead",
            ));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::internal(format!("building the MLflow HTTP client: {e}")))?;
        Ok(MlflowClient { base, credentials, http })
    }

    /// The tracking URI this client talks to.
    pub fn uri(&self) -> &str {
        &self.base
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// `POST /api/2.0/mlflow/{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: &Json) -> Result<Json> {
        let req = self.http.post(self.api(path)).json(body);
        self.send(path, req).await
    }

    /// `GET /api/2.0/mlflow/{path}?query`.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Json> {
        let req = self.http.get(self.api(path)).query(query);
        self.send(path, req).await
    }

    /// `DELETE /api/2.0/mlflow/{path}` with a JSON body (MLflow reads DELETE's parameters there).
    pub async fn delete(&self, path: &str, body: &Json) -> Result<Json> {
        let req = self.http.delete(self.api(path)).json(body);
        self.send(path, req).await
    }

    /// `PUT /api/2.0/mlflow-artifacts/artifacts/{path}`: a file through the server's artifact proxy.
    pub async fn put_artifact(&self, path: &str, bytes: bytes::Bytes) -> Result<()> {
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{}", self.base, path.trim_start_matches('/'));
        let req = self.http.put(url).body(bytes);
        self.send("mlflow-artifacts/artifacts", req).await.map(|_| ())
    }

    /// `GET /api/2.0/mlflow-artifacts/artifacts/{path}`.
    pub async fn get_artifact(&self, path: &str) -> Result<bytes::Bytes> {
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{}", self.base, path.trim_start_matches('/'));
        let resp = self.authorized(self.http.get(url)).send().await.map_err(|e| self.transport("mlflow-artifacts/artifacts", e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.transport("mlflow-artifacts/artifacts", e))?;
        if status.is_success() { Ok(body) } else { Err(self.refused("mlflow-artifacts/artifacts", status.as_u16(), &body)) }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.base)
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::None => req,
            Credentials::Basic { username, password } => req.basic_auth(username, Some(password)),
            Credentials::Bearer(token) => req.bearer_auth(token),
        }
    }

    async fn send(&self, op: &str, req: reqwest::RequestBuilder) -> Result<Json> {
        let resp = self.authorized(req).send().await.map_err(|e| self.transport(op, e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.transport(op, e))?;
        if !status.is_success() {
            return Err(self.refused(op, status.as_u16(), &body));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Json::Object(Default::default()));
        }
        serde_json::from_slice(&body).map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                format!("MLflow at {} answered {op} with something that is not MLflow's JSON: {}", self.base, galley_core::error::body_excerpt(&body)),
            )
        })
    }

    /// The request never got an answer.
    fn transport(&self, op: &str, e: reqwest::Error) -> Error {
        let kind = if e.is_timeout() { ErrorKind::Timeout } else { ErrorKind::Unavailable };
        let why = if e.is_connect() { "could not connect" } else if e.is_timeout() { "timed out" } else { "failed" };
        Error::new(kind, format!("MLflow at {} {why} ({op}): is the tracking server running? ({})", self.base, root_cause(&e)))
    }

    /// MLflow's error body (`{"error_code": …, "message": …}`) mapped to a kind.
    fn refused(&self, op: &str, status: u16, body: &[u8]) -> Error {
        let parsed: Option<Json> = serde_json::from_slice(body).ok();
        let code = parsed.as_ref().and_then(|j| j.get("error_code")).and_then(Json::as_str).unwrap_or("");
        let message = parsed.as_ref().and_then(|j| j.get("message")).and_then(Json::as_str).map(str::to_owned).unwrap_or_else(|| galley_core::error::body_excerpt(body));
        let kind = match (code, status) {
            ("RESOURCE_DOES_NOT_EXIST" | "NOT_FOUND", _) | (_, 404) => ErrorKind::NotFound,
            ("RESOURCE_ALREADY_EXISTS", _) => ErrorKind::AlreadyExists,
            ("INVALID_PARAMETER_VALUE" | "BAD_REQUEST" | "INVALID_STATE" | "MALFORMED_REQUEST", _) | (_, 400) => ErrorKind::InvalidInput,
            (_, 401) | ("UNAUTHENTICATED", _) => ErrorKind::Unauthenticated,
            (_, 403) | ("PERMISSION_DENIED", _) => ErrorKind::PermissionDenied,
            (_, 429) | ("REQUEST_LIMIT_EXCEEDED", _) => ErrorKind::Throttled,
            (_, 409) => ErrorKind::Conflict,
            _ => ErrorKind::Unavailable,
        };
        let msg = match kind {
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => {
                format!("MLflow at {} refused {op} (HTTP {status}) with {}", self.base, self.credentials.describe())
            }
            _ if code.is_empty() => format!("MLflow at {} answered {op} with HTTP {status}: {message}", self.base),
            _ => format!("MLflow at {} ({op}): {code}: {message}", self.base),
        };
        Error::new(kind, msg)
    }
}

/// `scheme://host/…` with any `user:password@` removed, for messages.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else { return uri.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{path}"),
        None => uri.to_owned(),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The value of a JSON string field, or an error naming the MLflow answer that lacked it.
pub(crate) fn str_field<'a>(j: &'a Json, path: &[&str]) -> Result<&'a str> {
    let mut cur = j;
    for key in path {
        cur = cur.get(key).ok_or_else(|| Error::internal(format!("MLflow's answer has no `{}`", path.join("."))))?;
    }
    cur.as_str().ok_or_else(|| Error::internal(format!("MLflow's `{}` is not a string", path.join("."))))
}

/// MLflow's `[{"key": …, "value": …}]` lists as pairs.
pub(crate) fn key_values(j: Option<&Json>) -> Vec<(String, String)> {
    j.and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|kv| Some((kv.get("key")?.as_str()?.to_owned(), kv.get("value").and_then(Json::as_str).unwrap_or("").to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_debug_or_messages() {
        let c = Credentials::Basic { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
        let client = MlflowClient::new("http://127.0.0.1:1", c).unwrap();
        let e = client.refused("runs/get", 401, b"");
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        assert!(!e.to_string().contains("hunter2") && e.to_string().contains("MLFLOW_TRACKING_USERNAME"), "{e}");
    }

    #[test]
    fn a_uri_with_credentials_or_no_server_is_refused() {
        assert!(MlflowClient::new("http://u:p@host:5000", Credentials::None).unwrap_err().to_string().contains("MLFLOW_TRACKING_USERNAME"));
        assert!(MlflowClient::new("sqlite:///mlflow.db", Credentials::None).unwrap_err().to_string().contains("not an http(s) URL"));
        assert_eq!(redact("http://u:p@h:1/x"), "http://h:1/x");
        assert_eq!(redact("http://h:1/x@y"), "http://h:1/x@y");
    }

    #[test]
    fn mlflow_error_codes_map_to_kinds() {
        let c = MlflowClient::new("http://127.0.0.1:1", Credentials::None).unwrap();
        let kind = |status, body: &str| c.refused("op", status, body.as_bytes()).kind();
        assert_eq!(kind(404, r#"{"error_code":"RESOURCE_DOES_NOT_EXIST","message":"x"}"#), ErrorKind::NotFound);
        assert_eq!(kind(400, r#"{"error_code":"RESOURCE_ALREADY_EXISTS","message":"x"}"#), ErrorKind::AlreadyExists);
        assert_eq!(kind(400, r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"x"}"#), ErrorKind::InvalidInput);
        assert_eq!(kind(503, "<html>busy</html>"), ErrorKind::Unavailable);
        assert_eq!(kind(429, ""), ErrorKind::Throttled);
    }
}
