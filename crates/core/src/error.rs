//! One error type for every stage and platform.
//!
//! It carries where it happened (platform, stage, operation, resource) so a message can tell a
//! user exactly what failed, and it says whether retrying can help, so the engine's retry loop
//! never has to guess from strings.

use std::fmt;

use crate::platform::{PlatformId, Stage};

/// What kind of failure this is; decides whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidInput,
    Unauthenticated,
    PermissionDenied,
    Conflict,
    /// The service asked us to slow down.
    Throttled,
    /// A transient outage or 5xx.
    Unavailable,
    Timeout,
    /// The platform cannot do this at all (see its capabilities).
    Unsupported,
    /// Stored data is damaged (a corrupt state file, a broken SQLite database).
    Corrupt,
    Internal,
}

impl ErrorKind {
    /// True when the same call may succeed if tried again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

impl ErrorKind {
    /// The kind an HTTP service's refusal means, by status alone (a client that knows the
    /// service's own error codes refines it).
    pub fn of_http_status(status: u16) -> ErrorKind {
        match status {
            404 => ErrorKind::NotFound,
            400 | 422 => ErrorKind::InvalidInput,
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::PermissionDenied,
            409 => ErrorKind::Conflict,
            429 => ErrorKind::Throttled,
            408 | 504 => ErrorKind::Timeout,
            _ => ErrorKind::Unavailable,
        }
    }
}

/// The start of a response body for a message: whitespace collapsed, at most 200 characters.
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &collapsed[..i]),
        None => collapsed,
    }
}

/// Where an error happened. Every field is optional: layers fill in what they know.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: ErrorContext,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), context: ErrorContext::default(), source: None }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn context(&self) -> &ErrorContext {
        &self.context
    }
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// Fill in the platform unless an inner layer already did.
    pub fn platform(mut self, platform: PlatformId) -> Self {
        self.context.platform.get_or_insert(platform);
        self
    }
    pub fn stage(mut self, stage: Stage) -> Self {
        self.context.stage.get_or_insert(stage);
        self
    }
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.context.operation.get_or_insert_with(|| operation.into());
        self
    }
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.context.resource.get_or_insert_with(|| resource.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.context;
        let mut wrote = false;
        for part in [
            c.platform.map(|p| p.to_string()),
            c.stage.map(|s| s.to_string()),
            c.operation.clone(),
            c.resource.clone(),
        ]
        .into_iter()
        .flatten()
        {
            write!(f, "{}{part}", if wrote { " " } else { "[" })?;
            wrote = true;
        }
        if wrote {
            write!(f, "] ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::TimedOut => ErrorKind::Timeout,
            K::InvalidInput | K::InvalidData => ErrorKind::InvalidInput,
            K::Interrupted | K::WouldBlock | K::ConnectionReset | K::ConnectionRefused => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Internal,
        };
        Error::new(kind, "i/o error").with_source(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::new(ErrorKind::InvalidInput, "invalid JSON").with_source(e)
    }
}

/// Adds context to any `Result<T, Error>` without a closure at every call site.
pub trait ResultExt<T> {
    fn ctx(self, stage: Stage, operation: &str, resource: &str) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn ctx(self, stage: Stage, operation: &str, resource: &str) -> Result<T> {
        self.map_err(|e| e.stage(stage).operation(operation).resource(resource))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_context_and_retryability() {
        let e = Error::new(ErrorKind::Throttled, "slow down")
            .platform(PlatformId::from_static("aws"))
            .stage(Stage::Serving)
            .operation("create_endpoint")
            .resource("wine-api");
        assert_eq!(e.to_string(), "[aws serving create_endpoint wine-api] slow down");
        assert!(e.is_retryable());
        assert!(!Error::invalid("x").is_retryable());
    }

    #[test]
    fn inner_context_wins() {
        let e = Error::not_found("gone").resource("inner").resource("outer");
        assert_eq!(e.context().resource.as_deref(), Some("inner"));
    }
}
