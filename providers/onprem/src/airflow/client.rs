//! The one HTTP client for Airflow 3's REST API (`/api/v2`): a JWT from `POST /auth/token`
//! with the user and password in `AIRFLOW_USERNAME` / `AIRFLOW_PASSWORD` (renewed once when
//! the server stops accepting it), JSON in and out, every failure mapped to a
//! [`galley_core::Error`] here.

use std::time::Duration;

use galley_core::{Error, ErrorKind, Result};
use serde_json::{Value as Json, json};

pub const USERNAME_ENV: &str = "AIRFLOW_USERNAME";
pub const PASSWORD_ENV: &str = "AIRFLOW_PASSWORD";

/// Who Galley signs in to Airflow as. Never printed: `Debug` shows only the user.
#[derive(Clone, Default)]
pub struct AirflowCredentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for AirflowCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl AirflowCredentials {
    pub fn from_env() -> Self {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        AirflowCredentials { username: var(USERNAME_ENV), password: var(PASSWORD_ENV) }
    }

    /// What was tried, for a refusal's message: the user, never the password.
    pub fn describe(&self) -> String {
        match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("user `{u}` and the password from {USERNAME_ENV} / {PASSWORD_ENV}"),
            _ => format!("no credentials (set {USERNAME_ENV} and {PASSWORD_ENV})"),
        }
    }
}

#[derive(Debug)]
pub struct AirflowClient {
    /// `http(s)://host:port`, without a trailing slash.
    base: String,
    credentials: AirflowCredentials,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<String>>,
}

impl AirflowClient {
    pub fn new(api_url: &str, credentials: AirflowCredentials) -> Result<Self> {
        let base = api_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::invalid(format!("Airflow API URL `{base}` is not an http(s) URL (Airflow's api-server, e.g. http://127.0.0.1:8080)")));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal(format!("building the Airflow HTTP client: {e}")))?;
        Ok(AirflowClient { base, credentials, http, token: Default::default() })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /api/v2/{path}`; `None` when Airflow answers 404.
    pub async fn get(&self, path: &str) -> Result<Option<Json>> {
        match self.call(reqwest::Method::GET, path, None).await {
            Ok(j) => Ok(Some(j)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn post(&self, path: &str, body: &Json) -> Result<Json> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Json) -> Result<Json> {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// `DELETE /api/v2/{path}`; a 404 is success (already gone).
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.call(reqwest::Method::DELETE, path, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Json>) -> Result<Json> {
        let op = format!("{method} /api/v2/{path}");
        for renewed in [false, true] {
            let token = self.token(renewed).await?;
            let mut req = self.http.request(method.clone(), format!("{}/api/v2/{path}", self.base)).bearer_auth(token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| self.transport(&op, e))?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(|e| self.transport(&op, e))?;
            if status == 401 && !renewed {
                continue; // an expired token: sign in again, once
            }
            if !(200..300).contains(&status) {
                return Err(self.refused(&op, status, &bytes));
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Json::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|_| Error::new(ErrorKind::Unavailable, format!("Airflow at {} answered {op} with something that is not JSON: {}", self.base, galley_core::error::body_excerpt(&bytes))));
        }
        unreachable!("the loop returns on its second pass")
    }

    /// A JWT from `POST /auth/token` (Airflow's simple and FAB auth managers both serve it).
    async fn token(&self, renew: bool) -> Result<String> {
        let mut cached = self.token.lock().await;
        if let (false, Some(t)) = (renew, cached.as_ref()) {
            return Ok(t.clone());
        }
        let (Some(username), Some(password)) = (&self.credentials.username, &self.credentials.password) else {
            return Err(Error::new(ErrorKind::Unauthenticated, format!("Airflow at {} needs a user: {}", self.base, self.credentials.describe())));
        };
        let op = "POST /auth/token";
        let resp = self
            .http
            .post(format!("{}/auth/token", self.base))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .map_err(|e| self.transport(op, e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport(op, e))?;
        if !(200..300).contains(&status) {
            return Err(self.refused(op, status, &bytes));
        }
        let token = serde_json::from_slice::<Json>(&bytes)
            .ok()
            .and_then(|j| j.get("access_token").and_then(Json::as_str).map(str::to_owned))
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, format!("Airflow at {} answered {op} without an access token", self.base)))?;
        *cached = Some(token.clone());
        Ok(token)
    }

    fn transport(&self, op: &str, e: reqwest::Error) -> Error {
        let kind = if e.is_timeout() { ErrorKind::Timeout } else { ErrorKind::Unavailable };
        let why = if e.is_connect() { "could not connect" } else if e.is_timeout() { "timed out" } else { "failed" };
        Error::new(kind, format!("Airflow at {} {why} ({op}): is its api-server running? (`scripts/stack up onprem` starts one here)", self.base))
    }

    /// Airflow's error body (`{"detail": …}`) mapped to a kind.
    fn refused(&self, op: &str, status: u16, body: &[u8]) -> Error {
        let detail = serde_json::from_slice::<Json>(body)
            .ok()
            .and_then(|j| j.get("detail").map(|d| d.as_str().map(str::to_owned).unwrap_or_else(|| d.to_string())))
            .unwrap_or_else(|| galley_core::error::body_excerpt(body));
        let kind = ErrorKind::of_http_status(status);
        let msg = match kind {
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => {
                format!("Airflow at {} refused {op} (HTTP {status}: {detail}) for {}", self.base, self.credentials.describe())
            }
            _ => format!("Airflow at {} answered {op} with HTTP {status}: {detail}", self.base),
        };
        Error::new(kind, msg)
    }
}
