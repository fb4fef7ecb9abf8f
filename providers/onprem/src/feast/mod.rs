//! Features on Feast. Galley keeps a Feast feature repository: `feature_store.yaml` (written
//! when absent) and one definitions file per group, applied to Feast's registry; each ingest
//! is a Parquet file in the group's offline source; materialization is Feast's; online reads
//! go through Feast's feature server (`POST /get-online-features`), historical ones through
//! Feast's point-in-time join.
//!
//! Feast's complete API is its Python SDK, so registry, ingest, materialization and
//! historical reads go through one long-lived Python process per store ([`bridge`]), which
//! imports Feast once. The group's [`FeatureGroupSpec`] travels as a tag on its feature view,
//! so `describe_group` reads back exactly what was applied, checked against the schema Feast's
//! registry holds.

mod bridge;
pub mod repo;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use galley_core::error::ResultExt;
use galley_core::stages::{Described, FeatureGroupSpec, FeatureStore, TimestampMs};
use galley_core::table::{Column, DType, Table, Value};
use galley_core::{Capabilities, Error, ErrorKind, Result, Stage};
use serde_json::{Value as Json, json};

use bridge::Bridge;

/// The feature view's tag that carries the group's spec.
pub const SPEC_TAG: &str = "galley.spec";

/// Where Feast is.
#[derive(Debug, Clone, PartialEq)]
pub struct FeastConfig {
    /// The feature repository.
    pub repo: PathBuf,
    /// A Python with `feast` installed.
    pub python: PathBuf,
    /// Feast's feature server (`feast serve` on the same repository), for online reads.
    pub server_url: Option<String>,
}

pub struct FeastFeatures {
    config: FeastConfig,
    bridge: tokio::sync::Mutex<Option<Bridge>>,
    http: reqwest::Client,
    declared: Capabilities,
}

impl FeastFeatures {
    pub fn open(config: FeastConfig, declared: Capabilities) -> Result<Self> {
        repo::ensure(&config.repo).ctx(Stage::Features, "open", &config.repo.display().to_string())?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal(format!("building the Feast HTTP client: {e}")))?;
        Ok(FeastFeatures { config, bridge: tokio::sync::Mutex::new(None), http, declared })
    }

    pub fn config(&self) -> &FeastConfig {
        &self.config
    }

    /// Asks the bridge, starting it on first use and again after it stopped.
    async fn call(&self, op: &str, request: Json) -> Result<Json> {
        let mut slot = self.bridge.lock().await;
        if slot.is_none() {
            *slot = Some(Bridge::start(&self.config.python, &self.config.repo).await?);
        }
        let bridge = slot.as_mut().expect("started above");
        let out = bridge.call(op, request).await;
        if out.as_ref().is_err_and(|e| e.message().starts_with("Feast's bridge stopped")) {
            *slot = None;
        }
        out
    }

    /// What the bridge needs to know of a group.
    fn wire(spec: &FeatureGroupSpec) -> Result<Json> {
        Ok(json!({
            "name": spec.name,
            "entity_name": repo::entity_name(&spec.name),
            "source_path": repo::source_path(&spec.name),
            "entity": spec.entity,
            "event_time": spec.event_time,
            "features": spec.features,
            "online": spec.online,
            "tag": tag(spec)?,
        }))
    }

    async fn require(&self, group: &str) -> Result<FeatureGroupSpec> {
        self.describe_group(group).await?.ok_or_else(|| {
            Error::not_found(format!(
                "feature group `{group}` is not in Feast's registry ({}); declare it in the blueprint's features \
                 section and run `galley apply`",
                self.config.repo.display()
            ))
        })
    }

    fn server(&self) -> Result<&str> {
        self.config.server_url.as_deref().map(|u| u.trim_end_matches('/')).ok_or_else(|| {
            Error::invalid(
                "online features are read from Feast's feature server: set `platforms.onprem.feast_feature_server_url` \
                 or FEAST_FEATURE_SERVER_URL (`feast serve` in the feature repository; `scripts/stack up onprem` starts one)",
            )
        })
    }

    /// `POST /get-online-features`. The server refreshes its registry on a timer, so a view
    /// applied a moment ago may be unknown to it for that long: such a 404 is retried briefly.
    async fn online(&self, request: &Json) -> Result<Json> {
        let url = format!("{}/get-online-features", self.server()?);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let resp = self.http.post(&url).json(request).send().await.map_err(|e| {
                let why = if e.is_connect() { "could not connect" } else { "failed" };
                Error::new(ErrorKind::Unavailable, format!(
                    "Feast's feature server at {url} {why}: is `feast serve` running in {}? ({e})",
                    self.config.repo.display()
                ))
            })?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if status.is_success() {
                return serde_json::from_str(&body).map_err(|_| Error::internal(format!("Feast's feature server answered with something that is not JSON: {body:.200}")));
            }
            if status.as_u16() == 404 && body.contains("FeatureViewNotFound") && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            return Err(Error::new(
                if status.is_server_error() { ErrorKind::Unavailable } else { ErrorKind::InvalidInput },
                format!("Feast's feature server at {url} answered HTTP {status}: {body:.300}"),
            ));
        }
    }
}

/// Adds the stage, operation and group to an error.
fn at<'a>(operation: &'a str, group: &'a str) -> impl Fn(Error) -> Error + Copy + 'a {
    move |e| e.stage(Stage::Features).operation(operation).resource(group)
}

/// The spec as its feature view's tag.
fn tag(spec: &FeatureGroupSpec) -> Result<String> {
    serde_json::to_string(spec).map_err(|e| Error::internal(format!("encoding feature group `{}`: {e}", spec.name)))
}

/// A value as the bridge and the feature server carry it; ints widen where floats are declared.
fn to_json(v: &Value, declared: DType) -> Json {
    match v {
        Value::Int(i) if declared == DType::Float => json!(*i as f64),
        other => serde_json::to_value(other).unwrap_or(Json::Null),
    }
}

/// A value Feast returned, as the declared type (pandas turns ints with gaps into floats).
fn from_json(v: &Json, declared: DType) -> Result<Value> {
    let bad = || Error::internal(format!("Feast returned `{v}` for a {declared} feature"));
    Ok(match (v, declared) {
        (Json::Null, _) => Value::Null,
        (Json::Number(n), DType::Float) => Value::Float(n.as_f64().ok_or_else(bad)?),
        (Json::Number(n), DType::Int) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => {
                let f = n.as_f64().ok_or_else(bad)?;
                if f.fract() != 0.0 {
                    return Err(bad());
                }
                Value::Int(f as i64)
            }
        },
        (Json::String(s), DType::String) => Value::String(s.clone()),
        (Json::Bool(b), DType::Bool) => Value::Bool(*b),
        _ => return Err(bad()),
    })
}

impl Described for FeastFeatures {
    fn capabilities(&self) -> Capabilities {
        self.declared.clone()
    }
}

#[async_trait]
impl FeatureStore for FeastFeatures {
    async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<()> {
        let ctx = |r: Result<()>| r.ctx(Stage::Features, "create_group", &spec.name);
        ctx(spec.validate())?;
        match self.describe_group(&spec.name).await? {
            Some(existing) if existing == *spec => return Ok(()),
            Some(_) => {
                return ctx(Err(Error::conflict(format!(
                    "feature group `{}` exists in Feast with a different definition; rename the group, or \
                     `galley destroy` it first (which deletes its data)",
                    spec.name
                ))));
            }
            None => {}
        }
        let file = repo::definitions_file(&self.config.repo, &spec.name);
        let write = std::fs::write(&file, repo::definitions(spec, &tag(spec)?))
            .map_err(|e| Error::invalid(format!("writing {}: {e}", file.display())));
        ctx(write)?;
        self.call("apply", json!({ "spec": Self::wire(spec)? })).await.ctx(Stage::Features, "create_group", &spec.name)?;
        Ok(())
    }

    async fn describe_group(&self, name: &str) -> Result<Option<FeatureGroupSpec>> {
        let found = self.call("describe", json!({ "name": name })).await.ctx(Stage::Features, "describe_group", name)?;
        if found.is_null() {
            return Ok(None);
        }
        let outside = |why: &str| {
            Error::conflict(format!(
                "Feast's feature view `{name}` {why}: it was made or changed outside Galley; rename the blueprint's \
                 group or remove the view (`feast apply` without it)"
            ))
        };
        let spec: FeatureGroupSpec = found["tag"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| outside("has no Galley definition tag"))?;
        let registry: Vec<(String, String)> = found["schema"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect())
            .unwrap_or_default();
        let mut applied: Vec<(String, String)> = spec.features.iter().map(|f| (f.name.clone(), repo::registry_type(f.dtype).to_owned())).collect();
        let mut registry_sorted = registry;
        registry_sorted.sort();
        applied.sort();
        if registry_sorted != applied {
            return Err(outside("has a schema other than the group Galley applied")).ctx(Stage::Features, "describe_group", name);
        }
        Ok(Some(spec))
    }

    /// Deletes the feature view, its source and entity, its online table, its definitions
    /// file and its offline files; deleting an absent group succeeds.
    async fn delete_group(&self, name: &str) -> Result<()> {
        if let Some(spec) = self.describe_group(name).await? {
            self.call("delete", json!({ "spec": Self::wire(&spec)? })).await.ctx(Stage::Features, "delete_group", name)?;
        }
        let file = repo::definitions_file(&self.config.repo, name);
        let data = self.config.repo.join(repo::source_path(name));
        for removed in [std::fs::remove_file(&file), std::fs::remove_dir_all(&data)] {
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::invalid(format!("deleting feature group `{name}`'s files: {e}"))).ctx(Stage::Features, "delete_group", name);
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn ingest(&self, group: &str, rows: &Table) -> Result<u64> {
        let spec = self.require(group).await?;
        let targets = spec.check_rows(rows).ctx(Stage::Features, "ingest", group)?;
        let mut columns = serde_json::Map::new();
        for (i, (c, (_, declared))) in rows.columns.iter().zip(&targets).enumerate() {
            columns.insert(c.name.clone(), rows.rows.iter().map(|r| to_json(&r[i], *declared)).collect());
        }
        let written = self
            .call("ingest", json!({ "spec": Self::wire(&spec)?, "rows": rows.len(), "columns": columns }))
            .await
            .ctx(Stage::Features, "ingest", group)?;
        written.as_u64().ok_or_else(|| Error::internal(format!("Feast's bridge answered ingest with `{written}`")))
    }

    async fn materialize(&self, group: &str, up_to: TimestampMs) -> Result<u64> {
        let spec = self.require(group).await?;
        spec.require_online().ctx(Stage::Features, "materialize", group)?;
        let written = self
            .call("materialize", json!({ "spec": Self::wire(&spec)?, "up_to_ms": up_to }))
            .await
            .ctx(Stage::Features, "materialize", group)?;
        written.as_u64().ok_or_else(|| Error::internal(format!("Feast's bridge answered materialize with `{written}`")))
    }

    async fn get_online(&self, group: &str, keys: &[Value], features: &[String]) -> Result<Vec<Option<Vec<Value>>>> {
        let spec = self.require(group).await?;
        let ctx = at("get_online", group);
        spec.require_online().map_err(ctx)?;
        let wanted: Vec<(usize, Column)> = spec.pick(features).map_err(ctx)?.into_iter().map(|(i, c)| (i, c.clone())).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<String> = wanted.iter().map(|(_, c)| format!("{}:{}", spec.name, c.name)).collect();
        let keys_json: Vec<Json> = keys.iter().map(|k| to_json(k, spec.entity.dtype)).collect();
        let answer = self
            .online(&json!({ "features": refs, "entities": { spec.entity.name.clone(): keys_json } }))
            .await
            .map_err(ctx)?;
        // Columnar: one result per name in `metadata.feature_names` (the key first), each with
        // a value and a status per key.
        let names: Vec<&str> = answer["metadata"]["feature_names"].as_array().map(|a| a.iter().filter_map(Json::as_str).collect()).unwrap_or_default();
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        let column = |feature: &str| -> Result<&Json> {
            let i = names.iter().position(|n| *n == feature || n.ends_with(&format!("__{feature}"))).ok_or_else(|| {
                Error::internal(format!("Feast's feature server returned no `{feature}` (it returned {})", names.join(", ")))
            })?;
            results.get(i).ok_or_else(|| Error::internal("Feast's feature server returned fewer results than names"))
        };
        let columns: Vec<(&Json, DType)> = wanted.iter().map(|(_, c)| column(&c.name).map(|j| (j, c.dtype))).collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(keys.len());
        for k in 0..keys.len() {
            let known = columns.iter().any(|(col, _)| col["statuses"][k].as_str().is_some_and(|s| s != "NOT_FOUND"));
            if !known {
                out.push(None);
                continue;
            }
            out.push(Some(columns.iter().map(|(col, d)| from_json(&col["values"][k], *d)).collect::<Result<_>>()?));
        }
        Ok(out)
    }

    async fn get_historical(&self, group: &str, entities: &Table, features: &[String]) -> Result<Table> {
        let spec = self.require(group).await?;
        let ctx = at("get_historical", group);
        let wanted: Vec<Column> = spec.pick(features).map_err(ctx)?.into_iter().map(|(_, c)| c.clone()).collect();
        let index = |name: &str| {
            entities.column_index(name).ok_or_else(|| ctx(Error::invalid(format!("the lookup rows for feature group `{group}` lack the `{name}` column"))))
        };
        let (ki, ti) = (index(&spec.entity.name)?, index(&spec.event_time)?);
        let mut keys = Vec::with_capacity(entities.len());
        let mut times = Vec::with_capacity(entities.len());
        for (i, row) in entities.rows.iter().enumerate() {
            let t = match &row[ti] {
                Value::Int(t) => *t,
                other => return Err(ctx(Error::invalid(format!("lookup row {i}: `{}` must be an int (ms since the epoch), not {other:?}", spec.event_time)))),
            };
            if row[ki].is_null() {
                return Err(ctx(Error::invalid(format!("lookup row {i}: `{}` must not be null", spec.entity.name))));
            }
            keys.push(to_json(&row[ki], spec.entity.dtype));
            times.push(json!(t));
        }
        let mut out = Table::new(entities.columns.iter().cloned().chain(wanted.iter().cloned()).collect());
        if entities.is_empty() {
            return Ok(out);
        }
        let names: Vec<&str> = wanted.iter().map(|c| c.name.as_str()).collect();
        let answer = self
            .call("historical", json!({
                "spec": Self::wire(&spec)?,
                "features": names,
                "entities": { spec.entity.name.clone(): keys, spec.event_time.clone(): times },
            }))
            .await
            .map_err(ctx)?;
        for (i, row) in entities.rows.iter().enumerate() {
            let mut r = row.clone();
            for c in &wanted {
                r.push(from_json(&answer[&c.name][i], c.dtype)?);
            }
            out.push(r)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_feast_returns_come_back_as_the_declared_type() {
        assert_eq!(from_json(&json!(3.0), DType::Int).unwrap(), Value::Int(3));
        assert!(from_json(&json!(3.5), DType::Int).is_err());
        assert_eq!(from_json(&json!(2), DType::Float).unwrap(), Value::Float(2.0));
        assert_eq!(from_json(&Json::Null, DType::String).unwrap(), Value::Null);
        assert!(from_json(&json!("x"), DType::Float).is_err());
    }
}
