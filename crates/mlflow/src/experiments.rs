//! [`ExperimentTracker`] on MLflow's tracking API. Experiments are found by name; a destroyed
//! (deleted) experiment is restored when created again, as MLflow keeps deleted experiments'
//! names reserved. Params, tags and metrics go in `runs/log-batch` within MLflow's per-request
//! limits. An artifact is the `galley.artifact.NAME` tag holding its URI in Galley's artifact
//! store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use galley_core::stages::{Described, ExperimentTracker, Metric, Run, RunQuery, RunStatus, now_ms};
use galley_core::{Capabilities, Error, ErrorKind, Result, Stage};
use serde_json::{Value as Json, json};

use crate::client::{MlflowClient, key_values, str_field};

/// The tag prefix under which a run's artifact URIs live.
pub const ARTIFACT_TAG: &str = "galley.artifact.";
/// MLflow's own tag for the run name (shown as [`Run::name`], not among the tags).
const RUN_NAME_TAG: &str = "mlflow.runName";

// MLflow's limits for one log-batch request.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
const MAX_TAGS: usize = 100;
const PAGE: usize = 1000;

pub struct MlflowExperiments {
    client: MlflowClient,
    declared: Capabilities,
    /// Experiment name → id, as found or created by this process.
    ids: Mutex<HashMap<String, String>>,
    /// Runs this process has seen running; others are checked before a write.
    live: Mutex<HashSet<String>>,
}

impl MlflowExperiments {
    pub fn new(client: MlflowClient, declared: Capabilities) -> Self {
        MlflowExperiments { client, declared, ids: Mutex::default(), live: Mutex::default() }
    }

    pub fn client(&self) -> &MlflowClient {
        &self.client
    }

    fn ctx(e: Error, op: &str, what: &str) -> Error {
        e.stage(Stage::Experiments).operation(op.to_owned()).resource(what.to_owned())
    }

    /// The experiment as MLflow holds it: `(id, active)`, or `None`.
    async fn find(&self, name: &str) -> Result<Option<(String, bool)>> {
        match self.client.get("experiments/get-by-name", &[("experiment_name", name)]).await {
            Ok(j) => {
                let id = str_field(&j, &["experiment", "experiment_id"])?.to_owned();
                let active = j["experiment"]["lifecycle_stage"].as_str() != Some("deleted");
                Ok(Some((id, active)))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn id_of(&self, name: &str) -> Result<String> {
        if let Some(id) = self.ids.lock().unwrap().get(name) {
            return Ok(id.clone());
        }
        match self.find(name).await? {
            Some((id, true)) => {
                self.ids.lock().unwrap().insert(name.to_owned(), id.clone());
                Ok(id)
            }
            _ => Err(Error::not_found(format!("MLflow at {} has no experiment `{name}`", self.client.uri()))),
        }
    }

    /// Refuses a write to a run that has ended: MLflow itself would accept it, Galley's contract
    /// is that a finished run is immutable.
    async fn ensure_running(&self, run: &str) -> Result<()> {
        if self.live.lock().unwrap().contains(run) {
            return Ok(());
        }
        let j = self.client.get("runs/get", &[("run_id", run)]).await?;
        match j["run"]["info"]["status"].as_str() {
            Some("RUNNING") | Some("SCHEDULED") => {
                self.live.lock().unwrap().insert(run.to_owned());
                Ok(())
            }
            other => Err(Error::invalid(format!(
                "run `{run}` has ended ({}); a finished run is immutable: start a new run",
                other.unwrap_or("unknown status")
            ))),
        }
    }

    async fn batch(&self, run: &str, field: &str, items: Vec<Json>, per_call: usize) -> Result<()> {
        for chunk in items.chunks(per_call) {
            self.client.post("runs/log-batch", &json!({ "run_id": run, field: chunk })).await?;
        }
        Ok(())
    }
}

impl Described for MlflowExperiments {
    fn capabilities(&self) -> Capabilities {
        self.declared.clone()
    }
}

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "RUNNING",
        RunStatus::Finished => "FINISHED",
        RunStatus::Failed => "FAILED",
        RunStatus::Killed => "KILLED",
    }
}

fn status_of(s: &str) -> RunStatus {
    match s {
        "FINISHED" => RunStatus::Finished,
        "FAILED" => RunStatus::Failed,
        "KILLED" => RunStatus::Killed,
        _ => RunStatus::Running,
    }
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<Json> {
    map.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect()
}

/// MLflow's run JSON as Galley's [`Run`].
pub fn run_of(j: &Json) -> Result<Run> {
    let info = &j["info"];
    let data = &j["data"];
    let id = str_field(j, &["info", "run_id"])?.to_owned();
    let mut tags = BTreeMap::new();
    let mut artifacts = BTreeMap::new();
    for (k, v) in key_values(data.get("tags")) {
        if let Some(name) = k.strip_prefix(ARTIFACT_TAG) {
            artifacts.insert(name.to_owned(), v);
        } else if k != RUN_NAME_TAG {
            tags.insert(k, v);
        }
    }
    let metrics = data["metrics"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| Some((m["key"].as_str()?.to_owned(), m["value"].as_f64()?))).collect())
        .unwrap_or_default();
    Ok(Run {
        id,
        experiment: info["experiment_id"].as_str().unwrap_or_default().to_owned(),
        name: info["run_name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned),
        status: status_of(info["status"].as_str().unwrap_or("RUNNING")),
        start_ms: info["start_time"].as_i64().unwrap_or(0),
        end_ms: info["end_time"].as_i64(),
        params: key_values(data.get("params")).into_iter().collect(),
        metrics,
        tags,
        artifacts,
    })
}

/// A [`RunQuery`] in MLflow's search syntax: `metrics.`k` > 0.5 and tags.`t` = 'v'`.
pub fn filter_of(q: &RunQuery) -> String {
    use galley_core::stages::Comparison::*;
    let mut parts: Vec<String> = q
        .metrics
        .iter()
        .map(|(k, c, v)| {
            let op = match c {
                Gt => ">",
                Ge => ">=",
                Lt => "<",
                Le => "<=",
                Eq => "=",
            };
            format!("metrics.`{}` {op} {v:?}", k.replace('`', ""))
        })
        .collect();
    parts.extend(q.tags.iter().map(|(k, v)| format!("tags.`{}` = '{}'", k.replace('`', ""), v.replace('\'', "\\'"))));
    parts.join(" and ")
}

#[async_trait]
impl ExperimentTracker for MlflowExperiments {
    async fn create_experiment(&self, name: &str) -> Result<String> {
        let op = |e| Self::ctx(e, "create_experiment", name);
        let id = match self.find(name).await.map_err(op)? {
            Some((id, true)) => id,
            Some((id, false)) => {
                self.client.post("experiments/restore", &json!({ "experiment_id": id })).await.map_err(op)?;
                id
            }
            None => match self.client.post("experiments/create", &json!({ "name": name })).await {
                Ok(j) => str_field(&j, &["experiment_id"])?.to_owned(),
                // Another caller created it first.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => self.id_of(name).await.map_err(op)?,
                Err(e) => return Err(op(e)),
            },
        };
        self.ids.lock().unwrap().insert(name.to_owned(), id.clone());
        Ok(id)
    }

    async fn get_experiment(&self, name: &str) -> Result<Option<String>> {
        let found = self.find(name).await.map_err(|e| Self::ctx(e, "get_experiment", name))?;
        Ok(found.filter(|(_, active)| *active).map(|(id, _)| id))
    }

    async fn delete_experiment(&self, name: &str) -> Result<()> {
        self.ids.lock().unwrap().remove(name);
        match self.find(name).await.map_err(|e| Self::ctx(e, "delete_experiment", name))? {
            Some((id, true)) => {
                self.client.post("experiments/delete", &json!({ "experiment_id": id })).await.map_err(|e| Self::ctx(e, "delete_experiment", name))?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn start_run(&self, experiment: &str, name: Option<&str>, tags: &BTreeMap<String, String>) -> Result<String> {
        let op = |e| Self::ctx(e, "start_run", experiment);
        let id = self.id_of(experiment).await.map_err(op)?;
        let mut body = json!({ "experiment_id": id, "start_time": now_ms(), "tags": pairs(tags) });
        if let Some(n) = name {
            body["run_name"] = json!(n);
        }
        let j = self.client.post("runs/create", &body).await.map_err(op)?;
        let run = str_field(&j, &["run", "info", "run_id"])?.to_owned();
        self.live.lock().unwrap().insert(run.clone());
        Ok(run)
    }

    async fn log_params(&self, run: &str, params: &BTreeMap<String, String>) -> Result<()> {
        let op = |e| Self::ctx(e, "log_params", run);
        self.ensure_running(run).await.map_err(op)?;
        self.batch(run, "params", pairs(params), MAX_PARAMS).await.map_err(op)
    }

    async fn log_metrics(&self, run: &str, metrics: &[Metric]) -> Result<()> {
        let op = |e| Self::ctx(e, "log_metrics", run);
        self.ensure_running(run).await.map_err(op)?;
        if let Some(m) = metrics.iter().find(|m| !m.value.is_finite()) {
            return Err(op(Error::invalid(format!("metric `{}` at step {} is {}; MLflow's JSON API carries finite numbers only", m.key, m.step, m.value))));
        }
        let items = metrics.iter().map(|m| json!({ "key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp_ms })).collect();
        self.batch(run, "metrics", items, MAX_METRICS).await.map_err(op)
    }

    async fn set_tags(&self, run: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        let op = |e| Self::ctx(e, "set_tags", run);
        self.batch(run, "tags", pairs(tags), MAX_TAGS).await.map_err(op)
    }

    async fn log_artifact(&self, run: &str, name: &str, uri: &str) -> Result<()> {
        let tag = BTreeMap::from([(format!("{ARTIFACT_TAG}{name}"), uri.to_owned())]);
        self.batch(run, "tags", pairs(&tag), MAX_TAGS).await.map_err(|e| Self::ctx(e, "log_artifact", run))
    }

    async fn end_run(&self, run: &str, status: RunStatus) -> Result<()> {
        let body = json!({ "run_id": run, "status": status_name(status), "end_time": now_ms() });
        self.client.post("runs/update", &body).await.map_err(|e| Self::ctx(e, "end_run", run))?;
        if status != RunStatus::Running {
            self.live.lock().unwrap().remove(run);
        }
        Ok(())
    }

    async fn get_run(&self, run: &str) -> Result<Run> {
        let j = self.client.get("runs/get", &[("run_id", run)]).await.map_err(|e| Self::ctx(e, "get_run", run))?;
        run_of(&j["run"])
    }

    async fn metric_history(&self, run: &str, key: &str) -> Result<Vec<Metric>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let page = PAGE.to_string();
        loop {
            let mut q = vec![("run_id", run), ("metric_key", key), ("max_results", page.as_str())];
            if let Some(t) = &token {
                q.push(("page_token", t.as_str()));
            }
            let j = self.client.get("metrics/get-history", &q).await.map_err(|e| Self::ctx(e, "metric_history", run))?;
            for m in j["metrics"].as_array().into_iter().flatten() {
                out.push(Metric {
                    key: key.to_owned(),
                    value: m["value"].as_f64().unwrap_or(f64::NAN),
                    step: m["step"].as_i64().unwrap_or(0),
                    timestamp_ms: m["timestamp"].as_i64().unwrap_or(0),
                });
            }
            token = j["next_page_token"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out.sort_by_key(|m| (m.step, m.timestamp_ms));
        Ok(out)
    }

    async fn search_runs(&self, experiment: &str, query: &RunQuery) -> Result<Vec<Run>> {
        let op = |e| Self::ctx(e, "search_runs", experiment);
        let id = self.id_of(experiment).await.map_err(op)?;
        let mut body = json!({ "experiment_ids": [id], "filter": filter_of(query), "run_view_type": "ACTIVE_ONLY" });
        if let Some(m) = &query.order_by {
            let dir = if query.descending { "DESC" } else { "ASC" };
            body["order_by"] = json!([format!("metrics.`{}` {dir}", m.replace('`', ""))]);
        }
        let mut out = Vec::new();
        loop {
            let want = query.limit.map(|l| l.saturating_sub(out.len())).unwrap_or(PAGE).min(PAGE);
            if want == 0 {
                break;
            }
            body["max_results"] = json!(want);
            let j = self.client.post("runs/search", &body).await.map_err(op)?;
            for r in j["runs"].as_array().into_iter().flatten() {
                out.push(run_of(r)?);
            }
            match j["next_page_token"].as_str().filter(|t| !t.is_empty()) {
                Some(t) => body["page_token"] = json!(t),
                None => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::stages::Comparison;

    #[test]
    fn queries_become_mlflow_filters() {
        let q = RunQuery {
            metrics: vec![("accuracy".into(), Comparison::Ge, 0.7)],
            tags: BTreeMap::from([("team".to_owned(), "o'neil".to_owned())]),
            ..RunQuery::default()
        };
        assert_eq!(filter_of(&q), r"metrics.`accuracy` >= 0.7 and tags.`team` = 'o\'neil'");
        assert_eq!(filter_of(&RunQuery::default()), "");
    }
}
