//! [`ModelRegistry`] on MLflow's Model Registry. Galley's record of a version (its artifact in
//! Galley's store, metrics, lineage, signature, the gate's verdict) lives in the version's
//! `galley.*` tags, readable in MLflow's UI; promotion is MLflow's own aliases.
//!
//! MLflow only accepts a version whose source is inside a run's artifacts, so each version's
//! source is an MLflow model directory uploaded through the server's artifact proxy into its
//! lineage run (or, when the lineage names no run on this server, a run of its own in the
//! `galley-registrations` experiment): an `MLmodel` file with MLflow's signature and a `galley`
//! flavor, and beside it the model file itself when its URI is a file this machine can read.

use std::collections::BTreeMap;

use async_trait::async_trait;
use galley_core::stages::{ApprovalStatus, Described, Lineage, ModelRegistry, ModelVersion, NewModelVersion, Signature, now_ms};
use galley_core::{Capabilities, DType, Error, ErrorKind, Result, Stage};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::client::{MlflowClient, key_values, str_field};

pub const ARTIFACT_URI_TAG: &str = "galley.artifact_uri";
pub const APPROVAL_TAG: &str = "galley.approval";
pub const SIGNATURE_TAG: &str = "galley.signature";
pub const METRIC_TAG: &str = "galley.metric.";
pub const PARAM_TAG: &str = "galley.param.";
pub const RUN_TAG: &str = "galley.lineage.run_id";
pub const DATA_HASH_TAG: &str = "galley.lineage.data_hash";
pub const CODE_VERSION_TAG: &str = "galley.lineage.code_version";
/// Where a version gets a run of its own when its lineage names none on this server.
pub const REGISTRATIONS_EXPERIMENT: &str = "galley-registrations";

pub struct MlflowRegistry {
    client: MlflowClient,
    declared: Capabilities,
}

impl MlflowRegistry {
    pub fn new(client: MlflowClient, declared: Capabilities) -> Self {
        MlflowRegistry { client, declared }
    }

    fn ctx(e: Error, op: &str, what: &str) -> Error {
        e.stage(Stage::Registry).operation(op.to_owned()).resource(what.to_owned())
    }

    /// The run a version's model directory goes into: `(run_id, artifact_uri)`.
    async fn run_for(&self, model: &str, lineage: &Lineage) -> Result<(String, String, bool)> {
        if let Some(id) = &lineage.run_id {
            match self.client.get("runs/get", &[("run_id", id)]).await {
                Ok(j) => return Ok((id.clone(), str_field(&j, &["run", "info", "artifact_uri"])?.to_owned(), false)),
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput) => {}
                Err(e) => return Err(e),
            }
        }
        let exp = match self.client.get("experiments/get-by-name", &[("experiment_name", REGISTRATIONS_EXPERIMENT)]).await {
            Ok(j) => str_field(&j, &["experiment", "experiment_id"])?.to_owned(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match self.client.post("experiments/create", &json!({ "name": REGISTRATIONS_EXPERIMENT })).await {
                    Ok(j) => str_field(&j, &["experiment_id"])?.to_owned(),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        let j = self.client.get("experiments/get-by-name", &[("experiment_name", REGISTRATIONS_EXPERIMENT)]).await?;
                        str_field(&j, &["experiment", "experiment_id"])?.to_owned()
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let body = json!({
            "experiment_id": exp, "run_name": format!("register {model}"), "start_time": now_ms(),
            "tags": [{ "key": "galley.registered_model", "value": model }],
        });
        let j = self.client.post("runs/create", &body).await?;
        Ok((str_field(&j, &["run", "info", "run_id"])?.to_owned(), str_field(&j, &["run", "info", "artifact_uri"])?.to_owned(), true))
    }

    /// Uploads the model directory into the run's artifacts; returns its URI (the version's source).
    async fn upload_model(&self, run_artifacts: &str, new: &NewModelVersion) -> Result<String> {
        let Some(proxied) = run_artifacts.strip_prefix("mlflow-artifacts:") else {
            return Err(Error::unsupported(format!(
                "the run's artifacts live at `{run_artifacts}`, which Galley cannot write through MLflow's API: \
                 start the server with its artifact proxy (`mlflow server --artifacts-destination DIR`, the default since MLflow 2)"
            )));
        };
        // `mlflow-artifacts:/1/RUN/artifacts` or `mlflow-artifacts://host/1/RUN/artifacts`.
        let path = proxied.trim_start_matches("//").trim_start_matches('/');
        let path = if proxied.starts_with("//") { path.split_once('/').map(|(_, p)| p).unwrap_or("") } else { path };
        let model = read_file_uri(&new.artifact_uri).await?;
        let dir = format!("galley-model-{}", &hex::encode(Sha256::digest(new.artifact_uri.as_bytes()))[..12]);
        let files = match &model {
            Some(bytes) => Some(model_files(bytes)?),
            None => None,
        };
        if let Some(files) = &files {
            for (name, bytes) in [Some((files.galley_name, &files.galley)), files.onnx.as_ref().map(|o| ("model.onnx", o))].into_iter().flatten() {
                self.client.put_artifact(&format!("{path}/{dir}/{name}"), bytes.clone()).await?;
            }
        }
        let mlmodel = mlmodel(&dir, new, files.as_ref());
        self.client.put_artifact(&format!("{path}/{dir}/MLmodel"), mlmodel.into()).await?;
        Ok(format!("{run_artifacts}/{dir}"))
    }

    /// `(alias, version)` for every alias of the model.
    async fn aliases(&self, model: &str) -> Result<Vec<(String, u64)>> {
        let j = self.client.get("registered-models/get", &[("name", model)]).await?;
        let mut out = Vec::new();
        for a in j["registered_model"]["aliases"].as_array().into_iter().flatten() {
            let (Some(alias), Some(version)) = (a["alias"].as_str(), a["version"].as_str()) else { continue };
            let version = version.parse().map_err(|_| Error::internal(format!("MLflow's alias `{alias}` of `{model}` names no version number")))?;
            out.push((alias.to_owned(), version));
        }
        Ok(out)
    }

    async fn set_tag(&self, model: &str, version: u64, key: &str, value: &str) -> Result<()> {
        let body = json!({ "name": model, "version": version.to_string(), "key": key, "value": value });
        self.client.post("model-versions/set-tag", &body).await.map(|_| ())
    }
}

/// The bytes of a `file://` model, `None` for a URI this machine cannot read as a file.
async fn read_file_uri(uri: &str) -> Result<Option<bytes::Bytes>> {
    let Some(path) = uri.strip_prefix("file://") else { return Ok(None) };
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(b.into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::from(e)),
    }
}

/// What goes into a version's MLflow model directory beside its `MLmodel`.
pub struct ModelFiles {
    /// `model.json` (Galley's format) or `model.onnx` (the user's ONNX model).
    pub galley_name: &'static str,
    pub galley: bytes::Bytes,
    pub sha256: String,
    /// The model as ONNX, for MLflow's ONNX flavor: the user's file itself, or Galley's model
    /// exported (`galley_ml::export`); `None` only for a file that is neither.
    pub onnx: Option<bytes::Bytes>,
}

fn model_files(bytes: &bytes::Bytes) -> Result<ModelFiles> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    if galley_ml::onnx::looks_like_onnx(bytes) {
        return Ok(ModelFiles { galley_name: "model.onnx", galley: bytes.clone(), sha256, onnx: None });
    }
    let model = galley_ml::TrainedModel::from_bytes(bytes)?;
    let onnx = galley_ml::export::to_onnx(&model)?;
    Ok(ModelFiles { galley_name: "model.json", galley: bytes.clone(), sha256, onnx: Some(onnx.into()) })
}

/// MLflow's column type for a Galley dtype (MLflow's `ColSpec` names).
fn mlflow_type(d: DType) -> &'static str {
    match d {
        DType::Bool => "boolean",
        DType::Int => "long",
        DType::Float => "double",
        DType::String => "string",
    }
}

/// The ONNX package version the `onnx` flavor names (what MLflow records; the file is opset 17).
const ONNX_VERSION: &str = "1.17.0";

/// The `MLmodel` file: MLflow's model metadata (YAML; every value written as a JSON string,
/// which is valid YAML) with the input signature in MLflow's format, Galley's flavor, and, when
/// there is an ONNX file, MLflow's `onnx` and `python_function` flavors over it, so
/// `mlflow models serve models:/NAME@champion` serves the version.
pub fn mlmodel(dir: &str, new: &NewModelVersion, files: Option<&ModelFiles>) -> String {
    let q = |s: &str| Json::String(s.to_owned()).to_string();
    let mut out = format!("artifact_path: {}\nflavors:\n  galley:\n", q(dir));
    match files {
        Some(f) => {
            let format = if f.galley_name.ends_with(".onnx") { "onnx" } else { "galley-json" };
            out += &format!("    data: {}\n    format: {}\n    sha256: {}\n", q(f.galley_name), q(format), q(&f.sha256));
        }
        None => out += "    data: null\n",
    }
    out += &format!("    source_uri: {}\n    galley_version: {}\n", q(&new.artifact_uri), q(env!("CARGO_PKG_VERSION")));
    if files.is_some_and(|f| f.onnx.is_some() || f.galley_name == "model.onnx") {
        let data = q("model.onnx");
        out += &format!("  onnx:\n    onnx_version: {}\n    data: {data}\n    providers: [\"CPUExecutionProvider\"]\n", q(ONNX_VERSION));
        out += &format!("  python_function:\n    loader_module: \"mlflow.onnx\"\n    data: {data}\n");
    }
    out += &format!("model_uuid: {}\n", q(&hex::encode(&Sha256::digest(new.artifact_uri.as_bytes())[..16])));
    let inputs: Vec<Json> = new.signature.inputs.iter().map(|c| json!({ "type": mlflow_type(c.dtype), "name": c.name, "required": true })).collect();
    out += &format!("signature:\n  inputs: {}\n", q(&Json::Array(inputs).to_string()));
    out
}

fn version_tags(new: &NewModelVersion) -> Result<Vec<Json>> {
    let mut tags: BTreeMap<String, String> = BTreeMap::new();
    tags.insert(ARTIFACT_URI_TAG.into(), new.artifact_uri.clone());
    tags.insert(APPROVAL_TAG.into(), approval_name(ApprovalStatus::PendingManualApproval).into());
    tags.insert(SIGNATURE_TAG.into(), serde_json::to_string(&new.signature)?);
    for (k, v) in &new.metrics {
        // `{:?}` is the shortest text that parses back to the same f64.
        tags.insert(format!("{METRIC_TAG}{k}"), format!("{v:?}"));
    }
    for (k, v) in &new.lineage.params {
        tags.insert(format!("{PARAM_TAG}{k}"), v.clone());
    }
    let l = &new.lineage;
    for (key, value) in [(RUN_TAG, &l.run_id), (DATA_HASH_TAG, &l.data_hash), (CODE_VERSION_TAG, &l.code_version)] {
        if let Some(v) = value {
            tags.insert(key.into(), v.clone());
        }
    }
    Ok(tags.into_iter().map(|(k, v)| json!({ "key": k, "value": v })).collect())
}

fn approval_name(a: ApprovalStatus) -> &'static str {
    match a {
        ApprovalStatus::PendingManualApproval => "pending_manual_approval",
        ApprovalStatus::Approved => "approved",
        ApprovalStatus::Rejected => "rejected",
    }
}

/// MLflow's model version JSON as Galley's [`ModelVersion`].
pub fn version_of(j: &Json) -> Result<ModelVersion> {
    let model = str_field(j, &["name"])?.to_owned();
    let version: u64 = str_field(j, &["version"])?
        .parse()
        .map_err(|_| Error::internal(format!("MLflow's version of `{model}` is not a number: {}", j["version"])))?;
    let tags: BTreeMap<String, String> = key_values(j.get("tags")).into_iter().collect();
    let mut metrics = BTreeMap::new();
    let mut params = BTreeMap::new();
    for (k, v) in &tags {
        if let Some(m) = k.strip_prefix(METRIC_TAG) {
            metrics.insert(m.to_owned(), v.parse().map_err(|_| Error::corrupt(format!("{model} v{version}: tag `{k}` = `{v}` is not a number")))?);
        } else if let Some(p) = k.strip_prefix(PARAM_TAG) {
            params.insert(p.to_owned(), v.clone());
        }
    }
    let signature: Signature = match tags.get(SIGNATURE_TAG) {
        Some(s) => serde_json::from_str(s).map_err(|e| Error::corrupt(format!("{model} v{version}: tag `{SIGNATURE_TAG}`: {e}")))?,
        None => Signature::default(),
    };
    let approval = match tags.get(APPROVAL_TAG).map(String::as_str) {
        Some("approved") => ApprovalStatus::Approved,
        Some("rejected") => ApprovalStatus::Rejected,
        _ => ApprovalStatus::PendingManualApproval,
    };
    let mut aliases: Vec<String> = j["aliases"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
    aliases.sort();
    Ok(ModelVersion {
        artifact_uri: tags.get(ARTIFACT_URI_TAG).cloned().unwrap_or_else(|| j["source"].as_str().unwrap_or_default().to_owned()),
        metrics,
        lineage: Lineage {
            run_id: tags.get(RUN_TAG).cloned(),
            data_hash: tags.get(DATA_HASH_TAG).cloned(),
            code_version: tags.get(CODE_VERSION_TAG).cloned(),
            params,
        },
        signature,
        approval,
        aliases,
        created_ms: j["creation_timestamp"].as_i64().unwrap_or(0),
        model,
        version,
    })
}

impl Described for MlflowRegistry {
    fn capabilities(&self) -> Capabilities {
        self.declared.clone()
    }
}

#[async_trait]
impl ModelRegistry for MlflowRegistry {
    async fn create_model(&self, name: &str, description: Option<&str>) -> Result<()> {
        let mut body = json!({ "name": name });
        if let Some(d) = description {
            body["description"] = json!(d);
        }
        match self.client.post("registered-models/create", &body).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Self::ctx(e, "create_model", name)),
        }
    }

    async fn delete_model(&self, name: &str) -> Result<()> {
        match self.client.delete("registered-models/delete", &json!({ "name": name })).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::ctx(e, "delete_model", name)),
        }
    }

    async fn model_exists(&self, name: &str) -> Result<bool> {
        match self.client.get("registered-models/get", &[("name", name)]).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Self::ctx(e, "model_exists", name)),
        }
    }

    async fn register_version(&self, model: &str, new: &NewModelVersion) -> Result<ModelVersion> {
        let op = |e| Self::ctx(e, "register_version", model);
        if !self.model_exists(model).await? {
            return Err(op(Error::not_found(format!("MLflow at {} has no registered model `{model}`", self.client.uri()))));
        }
        let (run, artifacts, own_run) = self.run_for(model, &new.lineage).await.map_err(op)?;
        let source = self.upload_model(&artifacts, new).await.map_err(op)?;
        let mut body = json!({ "name": model, "source": source, "run_id": run, "tags": version_tags(new)? });
        if let Some(d) = &new.description {
            body["description"] = json!(d);
        }
        let j = self.client.post("model-versions/create", &body).await.map_err(op)?;
        if own_run {
            let end = json!({ "run_id": run, "status": "FINISHED", "end_time": now_ms() });
            self.client.post("runs/update", &end).await.map_err(op)?;
        }
        version_of(&j["model_version"])
    }

    async fn get_version(&self, model: &str, version: u64) -> Result<ModelVersion> {
        let v = version.to_string();
        let j = self.client.get("model-versions/get", &[("name", model), ("version", &v)]).await.map_err(|e| Self::ctx(e, "get_version", model))?;
        version_of(&j["model_version"])
    }

    async fn list_versions(&self, model: &str) -> Result<Vec<ModelVersion>> {
        let op = |e| Self::ctx(e, "list_versions", model);
        let filter = format!("name='{}'", model.replace('\'', "\\'"));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("filter", filter.as_str()), ("max_results", "1000")];
            if let Some(t) = &token {
                q.push(("page_token", t.as_str()));
            }
            let j = self.client.get("model-versions/search", &q).await.map_err(op)?;
            for v in j["model_versions"].as_array().into_iter().flatten() {
                out.push(version_of(v)?);
            }
            token = j["next_page_token"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        // MLflow's search leaves the versions' aliases out: they come from the model.
        let aliases = self.aliases(model).await.map_err(op)?;
        for v in &mut out {
            v.aliases = aliases.iter().filter(|(_, n)| *n == v.version).map(|(a, _)| a.clone()).collect();
            v.aliases.sort();
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    async fn set_approval(&self, model: &str, version: u64, status: ApprovalStatus) -> Result<()> {
        self.get_version(model, version).await?;
        self.set_tag(model, version, APPROVAL_TAG, approval_name(status)).await.map_err(|e| Self::ctx(e, "set_approval", model))
    }

    async fn set_alias(&self, model: &str, alias: &str, version: u64) -> Result<()> {
        // MLflow answers an alias to a missing version with a not-found, which the caller needs
        // to tell from other refusals: check first, as the other platforms do.
        self.get_version(model, version).await?;
        let body = json!({ "name": model, "alias": alias, "version": version.to_string() });
        self.client.post("registered-models/alias", &body).await.map(|_| ()).map_err(|e| Self::ctx(e, "set_alias", model))
    }

    async fn remove_alias(&self, model: &str, alias: &str) -> Result<()> {
        match self.client.delete("registered-models/alias", &json!({ "name": model, "alias": alias })).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::ctx(e, "remove_alias", model)),
        }
    }

    /// Read from the registered model's alias list: MLflow answers an unknown alias with an
    /// invalid-parameter error that only its wording tells from a real one.
    async fn get_by_alias(&self, model: &str, alias: &str) -> Result<Option<ModelVersion>> {
        let aliases = self.aliases(model).await.map_err(|e| Self::ctx(e, "get_by_alias", model))?;
        match aliases.into_iter().find(|(a, _)| a == alias) {
            Some((_, version)) => self.get_version(model, version).await.map(Some),
            None => Ok(None),
        }
    }
}
