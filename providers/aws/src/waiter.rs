//! Pollers for long operations, following botocore's waiter rules (`waiters-2.json`): a fixed
//! delay between attempts, a bound on attempts, and acceptors checked in order, the first
//! match deciding success, failure or another try. An error no acceptor expects ends the wait
//! with that error; a response no acceptor matches means "try again".
//!
//! The definitions are the official ones, embedded verbatim (the subset Galley uses) from
//! `botocore/data/sagemaker/2017-07-24/waiters-2.json`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use galley_core::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::error::AwsFault;

const SAGEMAKER_WAITERS: &str = include_str!("waiters/sagemaker.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaiterDef {
    /// Seconds between attempts.
    pub delay: u64,
    pub max_attempts: u32,
    pub operation: String,
    pub acceptors: Vec<Acceptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Acceptor {
    pub matcher: Matcher,
    #[serde(default)]
    pub argument: Option<String>,
    pub state: AcceptorState,
    pub expected: Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Matcher {
    Path,
    PathAll,
    PathAny,
    Status,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptorState {
    Success,
    Failure,
    Retry,
}

#[derive(Deserialize)]
struct WaiterFile {
    waiters: BTreeMap<String, WaiterDef>,
}

/// The SageMaker waiter called `name` (e.g. `EndpointInService`).
pub fn sagemaker(name: &str) -> Result<&'static WaiterDef> {
    static DEFS: OnceLock<BTreeMap<String, WaiterDef>> = OnceLock::new();
    let defs = DEFS.get_or_init(|| {
        serde_json::from_str::<WaiterFile>(SAGEMAKER_WAITERS).map(|f| f.waiters).unwrap_or_default()
    });
    defs.get(name).ok_or_else(|| Error::internal(format!("no SageMaker waiter named `{name}` is embedded")))
}

/// What one attempt saw: the operation's output (as JSON, with the service's member names)
/// and HTTP status, or the service's error.
#[derive(Debug, Clone)]
pub enum Observation {
    Output { status: u16, body: Json },
    Error(AwsFault),
}

/// Evaluates the JMESPath subset waiters use: `A.B.C`, with `[]` projecting over a list
/// (`Steps[].Status`), and `length(X)`-free paths only.
pub fn eval_path(value: &Json, path: &str) -> Json {
    fn walk(v: &Json, parts: &[&str]) -> Json {
        let Some((head, rest)) = parts.split_first() else { return v.clone() };
        if let Some(field) = head.strip_suffix("[]") {
            let list = if field.is_empty() { v.clone() } else { v.get(field).cloned().unwrap_or(Json::Null) };
            match list {
                Json::Array(items) => Json::Array(items.iter().map(|i| walk(i, rest)).filter(|x| !x.is_null()).collect()),
                _ => Json::Null,
            }
        } else {
            match v.get(*head) {
                Some(next) => walk(next, rest),
                None => Json::Null,
            }
        }
    }
    let parts: Vec<&str> = path.split('.').collect();
    walk(value, &parts)
}

impl Acceptor {
    fn matches(&self, obs: &Observation) -> bool {
        match (self.matcher, obs) {
            (Matcher::Error, Observation::Error(f)) => match &self.expected {
                Json::String(code) => f.code.as_deref() == Some(code.as_str()),
                // `true`: any error; `false`: no error.
                Json::Bool(b) => *b,
                _ => false,
            },
            (Matcher::Error, Observation::Output { .. }) => self.expected == Json::Bool(false),
            (Matcher::Status, Observation::Output { status, .. }) => self.expected.as_u64() == Some(u64::from(*status)),
            (Matcher::Status, Observation::Error(f)) => f.status.map(u64::from) == self.expected.as_u64(),
            (Matcher::Path, Observation::Output { body, .. }) => {
                eval_path(body, self.argument.as_deref().unwrap_or("")) == self.expected
            }
            (Matcher::PathAll, Observation::Output { body, .. }) => match eval_path(body, self.argument.as_deref().unwrap_or("")) {
                Json::Array(items) => !items.is_empty() && items.iter().all(|i| *i == self.expected),
                _ => false,
            },
            (Matcher::PathAny, Observation::Output { body, .. }) => match eval_path(body, self.argument.as_deref().unwrap_or("")) {
                Json::Array(items) => items.contains(&self.expected),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The decision for one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    Retry,
    /// An error no acceptor expected: stop and report it.
    UnexpectedError,
}

impl WaiterDef {
    pub fn judge(&self, obs: &Observation) -> Verdict {
        for a in &self.acceptors {
            if a.matches(obs) {
                return match a.state {
                    AcceptorState::Success => Verdict::Success,
                    AcceptorState::Failure => Verdict::Failure,
                    AcceptorState::Retry => Verdict::Retry,
                };
            }
        }
        match obs {
            Observation::Error(_) => Verdict::UnexpectedError,
            Observation::Output { .. } => Verdict::Retry,
        }
    }

    /// Polls `probe` until an acceptor decides. `delay` overrides the definition's (tests use
    /// milliseconds); throttling and 5xx answers are retried like "no match yet".
    pub async fn wait<F, Fut>(&self, what: &str, delay: Option<Duration>, mut probe: F) -> Result<Observation>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Observation>,
    {
        let delay = delay.unwrap_or(Duration::from_secs(self.delay));
        for attempt in 1..=self.max_attempts.max(1) {
            let obs = probe().await;
            match self.judge(&obs) {
                Verdict::Success => return Ok(obs),
                Verdict::Failure => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("{what}: {} reached a failure state ({})", self.operation, describe(&obs)),
                    ));
                }
                Verdict::UnexpectedError => {
                    if let Observation::Error(f) = &obs {
                        if f.kind().is_retryable() && attempt < self.max_attempts {
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        return Err(Error::new(f.kind(), format!("{what}: {} failed while waiting ({})", self.operation, describe(&obs))));
                    }
                }
                Verdict::Retry => {}
            }
            if attempt < self.max_attempts {
                tokio::time::sleep(delay).await;
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "{what}: still not done after {} checks of {} ({} s apart); it may finish later — check again with `galley status`",
                self.max_attempts,
                self.operation,
                delay.as_secs()
            ),
        ))
    }
}

fn describe(obs: &Observation) -> String {
    match obs {
        Observation::Output { body, .. } => {
            let reason = body.get("FailureReason").and_then(Json::as_str).unwrap_or("");
            let status = body
                .as_object()
                .and_then(|m| m.iter().find(|(k, _)| k.ends_with("Status")).map(|(k, v)| format!("{k} {v}")))
                .unwrap_or_default();
            format!("{status}{}{reason}", if reason.is_empty() { "" } else { ": " })
        }
        Observation::Error(f) => format!("{} {}", f.code.as_deref().unwrap_or("error"), f.message.as_deref().unwrap_or("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(body: Json) -> Observation {
        Observation::Output { status: 200, body }
    }
    fn err(code: &str) -> Observation {
        Observation::Error(AwsFault { code: Some(code.into()), message: None, status: Some(400), transport: None, foreign: None })
    }

    #[test]
    fn the_official_endpoint_waiters_are_embedded() {
        let w = sagemaker("EndpointInService").unwrap();
        assert_eq!((w.delay, w.max_attempts, w.operation.as_str()), (30, 120, "DescribeEndpoint"));
        assert_eq!(w.judge(&out(serde_json::json!({"EndpointStatus": "Creating"}))), Verdict::Retry);
        assert_eq!(w.judge(&out(serde_json::json!({"EndpointStatus": "InService"}))), Verdict::Success);
        assert_eq!(w.judge(&out(serde_json::json!({"EndpointStatus": "Failed"}))), Verdict::Failure);
        assert_eq!(w.judge(&err("ValidationException")), Verdict::Failure);
        assert_eq!(w.judge(&err("ThrottlingException")), Verdict::UnexpectedError);

        let d = sagemaker("EndpointDeleted").unwrap();
        assert_eq!(d.judge(&err("ValidationException")), Verdict::Success);
        assert_eq!(d.judge(&out(serde_json::json!({"EndpointStatus": "Deleting"}))), Verdict::Retry);
        assert!(sagemaker("NoSuchWaiter").is_err());
    }

    #[test]
    fn path_subset_projects_lists() {
        let v = serde_json::json!({"A": {"B": "x"}, "Steps": [{"S": "ok"}, {"S": "bad"}]});
        assert_eq!(eval_path(&v, "A.B"), Json::from("x"));
        assert_eq!(eval_path(&v, "Steps[].S"), serde_json::json!(["ok", "bad"]));
        assert_eq!(eval_path(&v, "Nope.B"), Json::Null);
        let any = Acceptor { matcher: Matcher::PathAny, argument: Some("Steps[].S".into()), state: AcceptorState::Failure, expected: "bad".into() };
        let all = Acceptor { matcher: Matcher::PathAll, argument: Some("Steps[].S".into()), state: AcceptorState::Success, expected: "ok".into() };
        assert!(any.matches(&out(v.clone())));
        assert!(!all.matches(&out(v)));
    }

    #[tokio::test]
    async fn waits_through_retries_and_gives_up_after_max_attempts() {
        let w = WaiterDef { max_attempts: 3, ..sagemaker("EndpointInService").unwrap().clone() };
        let mut n = 0;
        let r = w
            .wait("endpoint e", Some(Duration::from_millis(1)), || {
                n += 1;
                let status = if n < 3 { "Creating" } else { "InService" };
                async move { out(serde_json::json!({ "EndpointStatus": status })) }
            })
            .await;
        assert!(r.is_ok());
        assert_eq!(n, 3);
        let e = w
            .wait("endpoint e", Some(Duration::from_millis(1)), || async { out(serde_json::json!({"EndpointStatus": "Creating"})) })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    }
}
