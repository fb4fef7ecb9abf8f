//! `galley export prometheus`: the scrape job, targets, rules and rule tests for a Prometheus
//! server to watch the endpoint (`galley_server::prometheus`).
//!
//! `galley export grafana`: a dashboard for the endpoint and its monitor
//! (`galley_server::grafana`); it needs the blueprint only, not a deployment.
//!
//! `galley export kserve`: the blueprint's endpoint as a KServe `InferenceService`, for teams
//! that serve on Kubernetes. The manifest serves the same versions on the same split through
//! the Open Inference Protocol (KServe's Triton runtime for ONNX); beside it, the models as
//! ONNX files in Triton's repository layout (`{endpoint}-v{N}/{endpoint}/1/model.onnx`; Galley's
//! built-in models exported by `galley_ml::export`), to upload where `--storage-uri` points.
//!
//! KServe's canary keeps the previous ready revision serving the rest of the traffic, so a
//! two-variant split becomes the newest version with `canaryTrafficPercent`: applying it on
//! top of an InferenceService that serves the older version reproduces the split.

use std::path::PathBuf;
use std::process::ExitCode;

use galley_blueprint::emit::to_yaml;
use galley_core::stages::{ArtifactKey, ArtifactStoreExt};
use serde_json::{Value as Json, json};

use crate::app::Deployed;
use crate::cli::BlueprintArgs;
use crate::commands::{Ctx, say};
use crate::error::CliError;

pub const API_VERSION: &str = "serving.kserve.io/v1beta1";

/// One served version, as the manifest needs it.
pub struct Served {
    pub version: u64,
    pub weight: u32,
    pub storage_uri: String,
}

/// The `InferenceService` for `endpoint` serving `served` (newest last gets the canary share).
pub fn inference_service(endpoint: &str, blueprint: &str, served: &[Served]) -> Json {
    let newest = served.iter().max_by_key(|s| s.version).expect("an endpoint serves a version");
    let total: u32 = served.iter().map(|s| s.weight).sum::<u32>().max(1);
    let mut predictor = json!({
        "model": { "modelFormat": { "name": "onnx" }, "protocolVersion": "v2", "storageUri": newest.storage_uri },
    });
    if served.len() > 1 {
        predictor["canaryTrafficPercent"] = json!((newest.weight as u64 * 100 / total as u64) as i64);
    }
    let split: Vec<String> = served.iter().map(|s| format!("v{}={}%", s.version, s.weight as u64 * 100 / total as u64)).collect();
    json!({
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": endpoint,
            "labels": { "app.kubernetes.io/managed-by": "galley", "galley.dev/blueprint": blueprint },
            "annotations": { "galley.dev/split": split.join(","), "galley.dev/versions": served.iter().map(|s| format!("{}={}", s.version, s.storage_uri)).collect::<Vec<_>>().join(",") },
        },
        "spec": { "predictor": predictor },
    })
}

pub(crate) async fn kserve(ctx: &Ctx, args: &BlueprintArgs, storage_uri: &str, models_dir: Option<PathBuf>, out: Option<PathBuf>) -> Result<ExitCode, CliError> {
    let Deployed { app, stages, endpoint, info } = Deployed::open(args, "the blueprint has no serving stage: there is no endpoint to export").await?;
    if info.variants.is_empty() {
        return Err(CliError::message(format!("endpoint `{endpoint}` serves no version yet; `galley run` deploys one")));
    }
    let dir = models_dir.unwrap_or_else(|| app.ctx.work_dir.join("export/kserve"));
    let prefix = storage_uri.trim_end_matches('/');
    let mut served = Vec::new();
    let mut files = Vec::new();
    // Models are found by content, not by a key layout: the register step records the file's hash.
    let models = stages.artifacts.list("models/").await?;
    for v in &info.variants {
        let version = stages.registry.get_version(&v.model, v.version).await?;
        let sha = version.lineage.params.get("model_sha256").ok_or_else(|| {
            CliError::message(format!("version {} of `{}` records no model_sha256: it was not registered by `galley run`", v.version, v.model))
        })?;
        let key = models.iter().find(|m| &m.sha256 == sha).ok_or_else(|| CliError::message(format!("the model of version {} ({sha}) is not in the artifact store", v.version)))?;
        let bytes = stages.artifacts.get_bytes(&ArtifactKey::new(key.key.as_str())?).await?;
        let onnx = match galley_ml::Model::from_bytes(&bytes)? {
            galley_ml::Model::Galley(m) => galley_ml::export::to_onnx(&m)?,
            galley_ml::Model::Onnx(_) => bytes.to_vec(),
        };
        let repo = format!("{endpoint}-v{}", v.version);
        let path = dir.join(&repo).join(&endpoint).join("1").join("model.onnx");
        std::fs::create_dir_all(path.parent().expect("a file under a directory"))?;
        std::fs::write(&path, &onnx)?;
        files.push(path.display().to_string());
        served.push(Served { version: v.version, weight: v.weight, storage_uri: format!("{prefix}/{repo}") });
    }
    let manifest = inference_service(&endpoint, &app.loaded.blueprint.name, &served);
    let yaml = to_yaml(&manifest);
    match &out {
        Some(path) => std::fs::write(path, &yaml)?,
        None if ctx.output == crate::cli::Output::Human => print!("{yaml}"),
        None => {}
    }
    let upload = format!("upload {} to {prefix}/ (e.g. `aws s3 cp --recursive`, `gsutil -m cp -r`), then `kubectl apply -f` the manifest", dir.display());
    let human = match &out {
        Some(path) => format!("wrote {} and {} model file(s) under {}; {upload}", path.display(), files.len(), dir.display()),
        None => format!("# {} model file(s) under {}; {upload}", files.len(), dir.display()),
    };
    if out.is_some() || ctx.output == crate::cli::Output::Json {
        say(ctx, json!({ "manifest": manifest, "models": files, "storage_uri": prefix }), &human);
    } else {
        eprintln!("{human}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn prometheus(ctx: &Ctx, args: &BlueprintArgs, dir: Option<PathBuf>) -> Result<ExitCode, CliError> {
    use galley_server::prometheus as prom;
    let Deployed { app, endpoint, info, .. } = Deployed::open(args, "the blueprint has no serving stage: there is no endpoint to watch").await?;
    let authenticated = app.loaded.blueprint.stages.serving.as_ref().is_some_and(|sv| sv.auth.is_some());
    let host_port = prom::host_port(&info.url)
        .map(str::to_owned)
        .ok_or_else(|| CliError::message(format!("endpoint `{endpoint}` has no http URL Prometheus can scrape ({})", info.url)))?;
    let dir = dir.unwrap_or_else(|| app.ctx.work_dir.join("export/prometheus"));
    std::fs::create_dir_all(dir.join("targets"))?;
    std::fs::create_dir_all(dir.join("rules"))?;
    let mut config = prom::config(15);
    if authenticated {
        // The token never goes into these files: the user puts it in `token` beside them.
        config["scrape_configs"][0]["authorization"] = json!({ "type": "Bearer", "credentials_file": "token" });
    }
    let thresholds = prom::Thresholds::default();
    let written = [
        ("prometheus.yml", to_yaml(&config)),
        (&format!("targets/{endpoint}.json") as &str, serde_json::to_string_pretty(&prom::targets(&endpoint, &host_port))?),
        ("rules/galley.rules.yml", to_yaml(&prom::rules(thresholds))),
        ("rules/galley.rules.test.yml", to_yaml(&prom::rule_tests(thresholds))),
    ];
    let mut files = Vec::new();
    for (name, text) in &written {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        files.push(path.display().to_string());
    }
    let token = if authenticated { format!("; write the endpoint's token into {}/token", dir.display()) } else { String::new() };
    let human = format!(
        "wrote {} files under {}: `prometheus --config.file={}/prometheus.yml` scrapes `{}` at {host_port}{token}; check them with `promtool check config` and `promtool test rules`",
        files.len(),
        dir.display(),
        dir.display(),
        endpoint
    );
    say(ctx, json!({ "files": files, "target": host_port }), &human);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn grafana(ctx: &Ctx, args: &BlueprintArgs, out: Option<PathBuf>) -> Result<ExitCode, CliError> {
    let app = crate::app::App::load(args)?;
    let bp = &app.loaded.blueprint;
    let endpoint = bp.stages.serving.as_ref().map(|sv| sv.endpoint.clone()).ok_or_else(|| CliError::message("the blueprint has no serving stage: there is no endpoint to chart"))?;
    let drift = bp.stages.monitoring.as_ref().map(|m| m.drift.clone()).unwrap_or_default();
    let line = galley_server::grafana::DriftLine { threshold: drift.threshold, psi: drift.method == galley_core::stages::DriftMethod::Psi };
    // Every platform names the monitor after the endpoint it watches.
    let dashboard = galley_server::grafana::dashboard(&endpoint, &endpoint, galley_server::prometheus::Thresholds::default(), line);
    let path = out.unwrap_or_else(|| app.ctx.work_dir.join("export/grafana").join(format!("{endpoint}.json")));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&dashboard)? + "\n")?;
    let human = format!(
        "wrote {} (uid `{}`): import it in Grafana (Dashboards > New > Import) or put it in a file-provisioned dashboards folder, then pick the Prometheus that scrapes `{endpoint}`",
        path.display(),
        dashboard["uid"].as_str().unwrap_or_default()
    );
    say(ctx, json!({ "file": path.display().to_string(), "uid": dashboard["uid"] }), &human);
    Ok(ExitCode::SUCCESS)
}
