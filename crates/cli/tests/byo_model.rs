//! Bring your own model: the user's training code (`examples/sklearn`, `examples/lightgbm`,
//! `examples/mlflow`)
//! through `galley run` on `local`: uv builds its environment, it runs under SageMaker's
//! script-mode contract, its ONNX model is gated, registered and served by Galley's endpoint —
//! and the endpoint answers what the library itself answers on the held-out rows.
//!
//! Needs `uv` and ONNX Runtime's library (`pip install uv onnxruntime`, or ORT_DYLIB_PATH);
//! `.ci/run` installs both. The training environments are cached under the target directory.

mod common;

use std::path::{Path, PathBuf};

use common::{Project, ok};
use serde_json::{Value, json};

/// Labels must be equal; probabilities within this of the library's (ONNX scores in float32).
const PROBA_TOLERANCE: f64 = 1e-5;

fn prerequisites() {
    if let Err(why) = galley_ml::onnx::find_runtime() {
        panic!("{why}\n(`eval \"$(scripts/stack up local)\"` installs it and uv, as scripts/test and .ci/run do)");
    }
    let uv = std::process::Command::new("uv").arg("--version").output();
    assert!(uv.is_ok_and(|o| o.status.success()), "these tests need uv on PATH to build the training environments: `eval \"$(scripts/stack up local)\"` (or `pip install uv`)");
}

fn byo_project(example: &str) -> Project {
    prerequisites();
    let mut p = Project::from_example(example);
    p.env.push(("GALLEY_CACHE_DIR".into(), cache_dir().display().to_string()));
    p
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("galley-cache")
}

/// The one file under `dir` whose path ends with `suffix`.
fn find(dir: &Path, suffix: &str) -> PathBuf {
    let found: Vec<String> = common::files_under(dir).into_iter().filter(|f| f.ends_with(suffix)).collect();
    assert_eq!(found.len(), 1, "exactly one {suffix} under {}: {found:?}", dir.display());
    dir.join(&found[0])
}

fn venv_python(requirements: &Path) -> PathBuf {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(std::fs::read(requirements).unwrap()));
    cache_dir().join("venvs").join(&hash[..20]).join("bin").join("python")
}

fn invoke(url: &str, body: &Value) -> Value {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new().post(format!("{url}/invocations")).json(body).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.json::<Value>().await.unwrap()
    })
}

/// Runs an example end to end and checks the endpoint against the library.
fn served_like_the_library(example: &str) {
    let p = byo_project(example);
    // The plan says the user's code trains, where and how.
    let (_, plan) = p.galley_json(&["plan"]);
    let train = plan["lifecycle"].as_array().unwrap().iter().find(|a| a["action"] == "run_training_command").unwrap_or_else(|| panic!("{plan}"));
    assert_eq!((train["command"].as_str(), train["requirements"].as_str()), (Some("python train.py"), Some("requirements.txt")), "{train}");
    ok(&p.galley(&["apply", "--auto-approve"]));
    let (code, run) = p.galley_json(&["run"]);
    assert_eq!(code, 0, "{run}");
    let r = &run["run"];
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["gate"]["passed"], true, "{r}");
    assert_eq!(r["registered_version"], 1, "{r}");
    let url = r["endpoint_url"].as_str().unwrap();

    let objects = p.path().join(".galley/local/artifacts");
    let prepared = find(&objects, r["prepared_key"].as_str().unwrap());
    let doc: Value = serde_json::from_slice(&std::fs::read(&prepared).unwrap()).unwrap();
    let features: Vec<String> = serde_json::from_value(doc["features"].clone()).unwrap();
    let test_x: Vec<Vec<f64>> = serde_json::from_value(doc["test_x"].clone()).unwrap();
    assert!(test_x.len() > 100, "held-out rows: {}", test_x.len());

    // The library: the estimator the script fitted, saved beside its ONNX export.
    let joblib = find(&objects, "/output/model.joblib");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/byo/library_predictions.py");
    let out = std::process::Command::new(venv_python(&p.path().join("requirements.txt")))
        .arg(&script)
        .arg(&joblib)
        .arg(&prepared)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let library: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want_labels: Vec<f64> = serde_json::from_value(library["labels"].clone()).unwrap();
    let want_proba: Vec<f64> = serde_json::from_value(library["proba"].clone()).unwrap();

    // Galley's endpoint, over HTTP, in MLflow's scoring format.
    let served = invoke(url, &json!({ "dataframe_split": { "columns": features, "data": test_x } }));
    let got_labels: Vec<f64> = serde_json::from_value(served["predictions"].clone()).unwrap();
    assert_eq!(got_labels, want_labels, "the endpoint's labels are the library's on every held-out row");

    // And its probabilities, asked for as MLflow's docs ask a pyfunc model: `[[p(0), p(1)], …]`.
    let proba = invoke(url, &json!({ "dataframe_split": { "columns": features, "data": test_x }, "params": { "predict_method": "predict_proba" } }));
    let pairs: Vec<[f64; 2]> = serde_json::from_value(proba["predictions"].clone()).unwrap();
    let worst_served = pairs.iter().zip(&want_proba).map(|(p, w)| (p[1] - w).abs().max((p[0] - (1.0 - w)).abs())).fold(0.0, f64::max);
    assert!(worst_served <= PROBA_TOLERANCE, "served probabilities differ from the library's by up to {worst_served}");

    // The registered model, scored by the scorer the endpoint and `evaluate` use.
    let registered = find(&objects, "/model.onnx");
    let model = galley_ml::Model::from_bytes(&std::fs::read(&registered).unwrap()).unwrap();
    assert_eq!(model.format(), "onnx");
    let scores = model.score_matrix(&test_x).unwrap();
    let worst = scores.scores.iter().zip(&want_proba).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst <= PROBA_TOLERANCE, "probabilities differ from the library's by up to {worst}");
    // And the gate judged those same scores: Galley's held-out ROC AUC is the library's.
    let y: Vec<f64> = serde_json::from_value(doc["test_y"].clone()).unwrap();
    let library_auc = galley_ml::metrics::roc_auc(&want_proba, &y).unwrap();
    assert!((r["metrics"]["roc_auc"].as_f64().unwrap() - library_auc).abs() < 1e-4, "{} vs {library_auc}", r["metrics"]["roc_auc"]);
    eprintln!("{example}: {} held-out rows, labels equal, probabilities within {worst:.2e}", test_x.len());

    // What the script printed is kept for the experiment run, metric lines included.
    let log = std::fs::read_to_string(find(&objects, "/training.log")).unwrap();
    assert!(log.contains("galley.metric train_accuracy="), "{log}");

    // A second run is cached: the code did not change.
    let (_, again) = p.galley_json(&["run"]);
    assert_eq!(again["run"]["registered_new"], false, "{again}");
    // Editing the code retrains.
    let train = p.path().join("train.py");
    std::fs::write(&train, std::fs::read_to_string(&train).unwrap() + "\n# edited\n").unwrap();
    let (_, edited) = p.galley_json(&["run"]);
    let train_step = edited["run"]["steps"].as_array().unwrap().iter().find(|s| s["name"] == "train").unwrap().clone();
    assert_eq!(train_step["cached"], false, "an edit to train.py must retrain: {train_step}");
    ok(&p.galley(&["destroy", "--auto-approve"]));
}

#[test]
fn sklearn_pipeline_served_like_scikit_learn() {
    served_like_the_library("sklearn");
}

/// The same scikit-learn pipeline, saved by the script as an MLflow model (ONNX flavor).
#[test]
fn mlflow_model_directory_served_like_scikit_learn() {
    served_like_the_library("mlflow");
}

#[test]
fn lightgbm_served_like_lightgbm() {
    served_like_the_library("lightgbm");
}

/// A project training with `script` (Python on PATH, no requirements), and `extra` blueprint
/// lines for the training stage.
fn failing_project(script: &str, extra: &str) -> Project {
    prerequisites();
    let bp = format!(
        "apiVersion: galley/v1\nname: byo-fail\nplatform: local\ndata: {{source: builtin:winequality, target: quality, task: classification, positive_when: {{at_least: 6}}}}\n\
         stages:\n  artifacts: {{bucket: byo-fail}}\n  pipeline: {{name: byo-fail}}\n  training:\n    command: python3 train.py\n{extra}\
         \n  registry:\n    model: byo-fail\n    gate: {{metric: accuracy, at_least: 0.5}}\n"
    );
    let p = Project::with_text("blueprint.yaml", &bp);
    std::fs::write(p.path().join("train.py"), script).unwrap();
    ok(&p.galley(&["apply", "--auto-approve"]));
    p
}

/// The run fails at `train`, with `reason` in its error, and nothing is registered.
fn fails_at_train(p: &Project, reason: &str) {
    let (code, run) = p.galley_json(&["run"]);
    assert_ne!(code, 0, "{run}");
    let r = &run["run"];
    let train = r["steps"].as_array().unwrap().iter().find(|s| s["name"] == "train").unwrap();
    assert_eq!(train["state"], "failed", "{r}");
    let error = train["error"].as_str().unwrap_or_default();
    assert!(error.contains(reason), "the train step's error names the reason `{reason}`: {error}");
    assert!(r["registered_version"].is_null(), "nothing registered: {r}");
    let register = r["steps"].as_array().unwrap().iter().find(|s| s["name"] == "register").unwrap();
    assert_ne!(register["state"], "succeeded", "{r}");
}

#[test]
fn a_failing_script_is_reported_with_its_failure_file() {
    let p = failing_project(
        "import os, sys\nopen(os.path.join(os.environ['SM_OUTPUT_DIR'], 'failure'), 'w').write('CUDA out of memory (pretend)')\nsys.exit(3)\n",
        "",
    );
    fails_at_train(&p, "CUDA out of memory (pretend)");
}

#[test]
fn a_script_that_writes_no_model_is_refused() {
    let p = failing_project("print('trained, honest')\n", "");
    fails_at_train(&p, "wrote no model");
}

#[test]
fn a_model_whose_inputs_do_not_match_the_data_is_refused() {
    // A valid ONNX model (one Identity node) whose input takes 3 features, not the 11 prepared.
    let p = failing_project(&format!("import os\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'model.onnx'), 'wb').write(bytes({:?}))\n", galley_testkit::onnx_models::identity(3)), "");
    fails_at_train(&p, "takes 3 features per row, but the prepared data has");
}

#[test]
fn a_script_past_max_runtime_is_stopped() {
    let p = failing_project("import time\ntime.sleep(60)\n", "    max_runtime: 2s\n");
    let started = std::time::Instant::now();
    fails_at_train(&p, "ran past `max_runtime` (2s)");
    assert!(started.elapsed().as_secs() < 50, "stopped, not waited out");
}
