//! The one error a command returns, and how it is shown.

use galley_blueprint::Diagnostics;

pub enum CliError {
    /// A blueprint that does not validate: every problem, located.
    Diagnostics(Diagnostics),
    Core(galley_core::Error),
    Message(String),
}

impl CliError {
    pub fn message(m: impl Into<String>) -> Self {
        CliError::Message(m.into())
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            CliError::Diagnostics(d) => serde_json::json!({ "ok": false, "diagnostics": d.to_json() }),
            CliError::Core(e) => serde_json::json!({
                "ok": false,
                "error": { "kind": e.kind(), "message": e.to_string(), "context": e.context(), "retryable": e.is_retryable() }
            }),
            CliError::Message(m) => serde_json::json!({ "ok": false, "error": { "message": m } }),
        }
    }

    pub fn render(&self, color: bool) -> String {
        match self {
            CliError::Diagnostics(d) => d.render(color),
            CliError::Core(e) => format!("error: {e}"),
            CliError::Message(m) => format!("error: {m}"),
        }
    }
}

impl From<galley_core::Error> for CliError {
    fn from(e: galley_core::Error) -> Self {
        CliError::Core(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Core(e.into())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError::Core(e.into())
    }
}
