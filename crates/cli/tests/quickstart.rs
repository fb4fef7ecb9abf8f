//! The quickstart through the real binary: plan → apply → run → a real prediction → a cached
//! second run → destroy, with nothing left running.

mod common;

use common::{Project, files_under, ok, process_alive};
use serde_json::Value;

#[test]
fn quickstart_lifecycle_end_to_end() {
    let p = Project::from_shipped("quickstart.yaml", |t| t);

    // A fresh plan has changes (exit 2 with --detailed-exitcode) and lists lifecycle actions.
    let (code, plan) = p.galley_json(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{plan}");
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 7, "one resource per local stage: {plan}");
    let actions: Vec<&str> = plan["lifecycle"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["run_pipeline", "register_version", "move_alias", "shift_traffic", "attach_monitor"]);

    ok(&p.galley(&["apply", "--auto-approve"]));
    let (code, _) = p.galley_json(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "a second plan after apply has no changes");

    // The lifecycle: a real model, gated, registered, deployed; a real prediction from it.
    let (code, run) = p.galley_json(&["run"]);
    assert_eq!(code, 0, "{run}");
    let r = &run["run"];
    assert_eq!(r["state"], "succeeded");
    assert!(r["metrics"]["accuracy"].as_f64().unwrap() > 0.65, "{r}");
    assert!(r["metrics"]["roc_auc"].as_f64().unwrap() > 0.7, "{r}");
    assert_eq!(r["gate"]["passed"], true);
    assert_eq!(r["registered_version"], 1);
    assert_eq!(r["registered_new"], true);
    let prediction = &run["sample_prediction"]["prediction"];
    let score = prediction["predictions"][0].as_f64().expect("a numeric prediction");
    assert!(score == 0.0 || score == 1.0, "a class label: {prediction}");
    assert_eq!(prediction["variant"], "v1");

    // Outputs: the endpoint's URL and its input signature, as MLflow's model signature.
    let (code, outputs) = p.galley_json(&["outputs"]);
    assert_eq!(code, 0);
    let endpoint = &outputs["serving.endpoint"];
    let url = endpoint["url"].as_str().expect("endpoint url");
    assert!(url.starts_with("http://127.0.0.1:"), "loopback by default: {url}");
    let inputs: Vec<&str> = endpoint["signature"]["inputs"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(inputs, ["fixed_acidity", "volatile_acidity", "citric_acid", "residual_sugar", "chlorides", "sulphates", "alcohol"]);

    // MLflow's scoring format through `galley predict`.
    let body = r#"{"dataframe_split": {"columns": ["fixed_acidity","volatile_acidity","citric_acid","residual_sugar","chlorides","sulphates","alcohol"], "data": [[7.4,0.7,0.0,1.9,0.076,0.56,9.4],[8.1,0.28,0.4,2.1,0.054,0.88,13.2]]}}"#;
    let (code, pred) = p.galley_json(&["predict", "--data", body]);
    assert_eq!(code, 0, "{pred}");
    assert_eq!(pred["predictions"].as_array().unwrap().len(), 2);
    // A low-alcohol, high-volatile-acidity wine scores below a high-alcohol, high-sulphate one.
    let (lo, hi) = (pred["predictions"][0].as_f64().unwrap(), pred["predictions"][1].as_f64().unwrap());
    assert!(lo <= hi, "{pred}");

    // A second run on unchanged data and code reuses cached steps and registers nothing new.
    let (code, again) = p.galley_json(&["run"]);
    assert_eq!(code, 0, "{again}");
    let steps = again["run"]["steps"].as_array().unwrap();
    let cached: Vec<&str> = steps.iter().filter(|s| s["cached"] == true).map(|s| s["name"].as_str().unwrap()).collect();
    for step in ["extract", "validate_data", "prepare", "train", "evaluate"] {
        assert!(cached.contains(&step), "{step} should be cached: {cached:?}");
    }
    assert_eq!(again["run"]["registered_new"], false);
    assert_eq!(again["run"]["registered_version"], 1);

    // Destroy leaves nothing running and nothing behind but the state files.
    let pid = p.endpoint_pid("wine-quality").expect("the endpoint server's pid");
    assert!(process_alive(pid));
    ok(&p.galley(&["destroy", "--auto-approve"]));
    assert!(!process_alive(pid), "the endpoint server {pid} must be stopped");
    let left = files_under(&p.path().join(".galley"));
    assert!(
        left.iter().all(|f| f.starts_with("state.json")),
        "destroy must leave only the state files: {left:?}"
    );
    let (_, status) = p.galley_json(&["status"]);
    assert!(status["resources"].as_object().unwrap().is_empty(), "{status}");
}

#[test]
fn a_gate_that_rejects_exits_3_and_registers_nothing() {
    let p = Project::from_shipped("quickstart.yaml", |t| t.replace("at_least: 0.70", "at_least: 0.99"));
    ok(&p.galley(&["apply", "--auto-approve"]));
    let (code, run) = p.galley_json(&["run"]);
    assert_eq!(code, 3, "{run}");
    assert_eq!(run["run"]["gate"]["passed"], false);
    assert!(run["run"]["registered_version"].is_null(), "{run}");
    assert!(run["sample_prediction"].is_null(), "nothing was deployed: {run}");
    ok(&p.galley(&["destroy", "--auto-approve"]));
}

#[test]
fn bad_data_fails_the_run_with_a_report() {
    let p = Project::from_shipped("quickstart.yaml", |t| t.replace("alcohol: {type: float, min: 0, max: 100}", "alcohol: {type: float, min: 0, max: 10}"));
    ok(&p.galley(&["apply", "--auto-approve"]));
    let (code, run) = p.galley_json(&["run"]);
    assert_eq!(code, 1, "{run}");
    let steps = run["run"]["steps"].as_array().unwrap();
    let failed = steps.iter().find(|s| s["state"] == "failed").expect("a failed step");
    assert_eq!(failed["name"], "validate_data");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("alcohol") && error.contains("10"), "the report names the column and the bound: {error}");
    assert!(steps.iter().filter(|s| s["state"] == "skipped").count() >= 5, "later steps are skipped: {steps:?}");
    ok(&p.galley(&["destroy", "--auto-approve"]));
}

#[test]
fn drift_is_reported_and_retrains_a_new_version() {
    // A CSV source, so new labelled data can arrive; retraining only on drift.
    let dir = tempfile::tempdir().unwrap();
    let table = galley_ml::load_source("builtin:winequality", dir.path()).unwrap().table;
    let csv = galley_ml::dataset::canonical_csv(&table);
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints/quickstart.yaml"))
        .unwrap()
        .replace("source: builtin:winequality", "source: wine.csv")
        .replace("retrain_on: [drift, new_data]", "retrain_on: [drift]")
        .replace("      beat_champion_by: 0.0\n", "")
        .replace("at_least: 0.70", "at_least: 0.60");
    let p = Project::with_text("drift.yaml", &text);
    std::fs::write(p.path().join("wine.csv"), &csv).unwrap();
    ok(&p.galley(&["apply", "--auto-approve"]));
    let (code, run) = p.galley_json(&["run"]);
    assert_eq!(code, 0, "{run}");

    // Production traffic whose alcohol and sulphates moved by +3 standard deviations.
    let features = ["fixed_acidity", "volatile_acidity", "citric_acid", "residual_sugar", "chlorides", "sulphates", "alcohol"];
    let cols: Vec<Vec<f64>> = features
        .iter()
        .map(|f| table.column_f64(f).unwrap().into_iter().map(|v| v.unwrap()).collect())
        .collect();
    let std = |xs: &[f64]| {
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
    };
    let shift: Vec<f64> = features
        .iter()
        .zip(&cols)
        .map(|(f, c)| if *f == "alcohol" || *f == "sulphates" { 3.0 * std(c) } else { 0.0 })
        .collect();
    let rows: Vec<Vec<f64>> = (0..400).map(|i| cols.iter().zip(&shift).map(|(c, s)| c[(i * 7) % c.len()] + s).collect()).collect();
    let body = serde_json::json!({ "dataframe_split": { "columns": features, "data": rows } }).to_string();
    let (code, pred) = p.galley_json(&["predict", "--data", &body]);
    assert_eq!(code, 0, "{pred}");

    // Recording is asynchronous in the server; the monitor sees the inferences shortly.
    let mut report = Value::Null;
    for _ in 0..100 {
        let (_, status) = p.galley_json(&["status"]);
        report = status["drift"].clone();
        if report["samples"].as_u64().unwrap_or(0) >= 400 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(report["drifted"], true, "{report}");
    let mut drifted: Vec<&str> = report["features"].as_array().unwrap().iter().filter(|f| f["drifted"] == true).map(|f| f["feature"].as_str().unwrap()).collect();
    drifted.sort();
    assert_eq!(drifted, ["alcohol", "sulphates"], "drift on the shifted features only: {report}");

    // The drift scores are exported as Prometheus metrics on the endpoint's /metrics.
    let (_, outputs) = p.galley_json(&["outputs"]);
    let metrics = common::http_get(&format!("{}/metrics", outputs["serving.endpoint"]["url"].as_str().unwrap()));
    assert!(metrics.contains("HTTP/1.1 200"), "{metrics}");
    let alcohol_psi = metrics.lines().find(|l| l.contains("psi") && l.contains("alcohol") && !l.starts_with('#')).unwrap_or_else(|| panic!("{metrics}"));
    let value: f64 = alcohol_psi.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 0.2, "{alcohol_psi}");

    // New labelled data has landed meanwhile; the drift trigger retrains on it.
    let mut more = csv.clone();
    for line in csv.lines().skip(1).take(300) {
        more.push_str(line);
        more.push('\n');
    }
    std::fs::write(p.path().join("wine.csv"), more).unwrap();
    let out = p.galley(&["watch", "--interval", "1s", "--max-runs", "1", "--timeout", "300s", "--output", "json"]);
    let stdout = ok(&out);
    let run: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(run["run"]["state"], "succeeded", "{run}");
    assert_eq!(run["run"]["registered_version"], 2, "{run}");
    assert_eq!(run["run"]["registered_new"], true, "{run}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("trigger `drift` fired"), "{stderr}");
    ok(&p.galley(&["destroy", "--auto-approve"]));
}

#[test]
fn run_before_apply_refuses_and_creates_nothing() {
    let p = Project::from_shipped("quickstart.yaml", |t| t);
    let out = p.galley(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not provisioned yet") && stderr.contains("galley apply"), "{stderr}");
    assert!(!p.path().join(".galley").exists(), "nothing may be created outside state: {:?}", files_under(p.path()));
}

#[test]
fn a_saved_plan_is_applied_exactly_and_refused_once_state_moved() {
    let p = Project::from_shipped("quickstart.yaml", |t| t);
    let plan = p.path().join("plan.json");
    let plan_arg = plan.to_str().unwrap();
    ok(&p.galley(&["plan", "--out", plan_arg]));
    let saved: Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    assert_eq!(saved["hash"].as_str().unwrap().len(), 64, "sha256: {saved}");

    // A tampered plan is refused.
    let tampered = p.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&{
        let mut t = saved.clone();
        t["changes"].as_array_mut().unwrap().pop();
        t
    }).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_galley")).current_dir(p.path()).args(["apply", tampered.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    // `galley apply PLANFILE` carries it out: the plan names its blueprint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_galley")).current_dir(p.path()).args(["apply", plan_arg]).output().unwrap();
    ok(&out);
    let (_, status) = p.galley_json(&["status"]);
    assert_eq!(status["resources"].as_object().unwrap().len(), 7);

    // The same plan again: state moved since it was made, so it is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_galley")).current_dir(p.path()).args(["apply", plan_arg]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("state"), "{stderr}");
    ok(&p.galley(&["destroy", "--auto-approve"]));
}

#[test]
fn a_dead_endpoint_server_is_deployed_again_by_the_next_run() {
    let p = Project::from_shipped("quickstart.yaml", |t| t);
    ok(&p.galley(&["apply", "--auto-approve"]));
    let (code, _) = p.galley_json(&["run"]);
    assert_eq!(code, 0);
    let pid = p.endpoint_pid("wine-quality").unwrap();
    // The server dies (a crash, a reboot): SIGKILL, no chance to clean up.
    assert!(std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    for _ in 0..100 {
        if !common::process_alive(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, run) = p.galley_json(&["run"]);
    assert_eq!(code, 0, "{run}");
    let deploy = run["run"]["steps"].as_array().unwrap().iter().find(|s| s["name"] == "deploy").unwrap().clone();
    assert_eq!(deploy["cached"], false, "a dead endpoint must not be trusted from cache: {run}");
    assert!(run["sample_prediction"]["prediction"]["predictions"].is_array(), "the endpoint serves again: {run}");
    let new_pid = p.endpoint_pid("wine-quality").unwrap();
    assert_ne!(new_pid, pid);
    ok(&p.galley(&["destroy", "--auto-approve"]));
    assert!(!common::process_alive(new_pid));
}

/// Ctrl-C during `galley run` cancels the run through the orchestrator (on aws that also stops
/// a managed training job, which is billed while it runs) instead of killing galley mid-step.
#[test]
fn ctrl_c_cancels_the_run_and_exits_1() {
    use std::io::{BufRead, BufReader};
    let p = Project::from_shipped("quickstart.yaml", |t| t);
    ok(&p.galley(&["apply", "--auto-approve"]));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_galley"))
        .current_dir(p.path())
        .args(["run"])
        .arg(&p.blueprint)
        .arg("--no-cache")
        .env("NO_COLOR", "1")
        .env_remove("GALLEY_OUTPUT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Interrupt once the first step is running.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.contains("extract") && line.contains("running");
        seen.push(line);
        if started {
            break;
        }
    }
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().unwrap();
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("interrupted: cancelling the run"), "{text}");
    assert!(text.contains("monitor         cancelled"), "the steps not yet run are cancelled: {text}");
    ok(&p.galley(&["destroy", "--auto-approve"]));
}
