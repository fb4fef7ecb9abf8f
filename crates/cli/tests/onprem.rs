//! The onprem platform through the real binary, on the real MLflow server `scripts/stack up
//! onprem` starts: plan → apply → run → a prediction → destroy, with MLflow's own REST API (not
//! Galley) confirming what exists after apply and run, and what is gone after destroy. Each test
//! names its experiment and model uniquely: the server is shared.

mod common;
#[path = "../../../providers/onprem/tests/common/substrate.rs"]
mod substrate;

use common::{Project, files_under, ok, process_alive};
use serde_json::Value;

/// The shipped onprem blueprint with this test's own experiment and model names.
fn project(tag: &str) -> (Project, String) {
    let name = format!("gtk-{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let p = Project::from_shipped("onprem.yaml", |t| {
        t.replace("  experiments:\n    name: wine-quality", &format!("  experiments:\n    name: {name}"))
            .replace("    model: wine-quality", &format!("    model: {name}"))
            .replace("    group: wine-features", &format!("    group: {name}"))
            .replace("    name: wine-quality-retrain", &format!("    name: {name}"))
            .replace("    endpoint: wine-quality", &format!("    endpoint: {name}"))
    });
    (p, name)
}

/// `GET /api/2.0/mlflow/{path}` on the server, with curl: a client that is not Galley's.
fn mlflow(uri: &str, path: &str) -> Value {
    let out = std::process::Command::new("curl").args(["-s", &format!("{uri}/api/2.0/mlflow/{path}")]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("MLflow answered {path} with: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Feast's feature server's answer for `alcohol` of entity `row_id` 0 in view `view`: the
/// HTTP status and the body.
fn feast_online(server: &str, view: &str) -> (u16, Value) {
    let body = serde_json::json!({ "features": [format!("{view}:alcohol")], "entities": { "row_id": [0] } }).to_string();
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H", "content-type: application/json", "-d", &body, &format!("{server}/get-online-features")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

/// Waits for the feature server, which re-reads Feast's registry every second, to see `view`
/// as `want` says (200: known, 404: unknown).
fn feast_sees(server: &str, view: &str, want: u16) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, body) = feast_online(server, view);
        if code == want {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "Feast's feature server answered {code} for view {view}, not {want}: {body}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// `GET /api/v2/{path}` on the stack's Airflow, with curl and a token of its own: the HTTP
/// status and the body.
fn airflow(path: &str) -> (u16, Value) {
    airflow_call("GET", path, None)
}

/// `METHOD /api/v2/{path}` with a JSON body on the stack's Airflow.
fn airflow_call(method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let url = std::env::var("AIRFLOW_API_URL").expect("AIRFLOW_API_URL (set by `scripts/stack up onprem`)");
    let login = serde_json::json!({ "username": std::env::var("AIRFLOW_USERNAME").unwrap(), "password": std::env::var("AIRFLOW_PASSWORD").unwrap() });
    let out = std::process::Command::new("curl")
        .args(["-s", "-H", "content-type: application/json", "-d", &login.to_string(), &format!("{url}/auth/token")])
        .output()
        .unwrap();
    let token: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("Airflow's /auth/token: {}", String::from_utf8_lossy(&out.stdout)));
    let bearer = format!("Authorization: Bearer {}", token["access_token"].as_str().unwrap());
    let mut args = vec!["-s".to_owned(), "-w".into(), "\n%{http_code}".into(), "-X".into(), method.into(), "-H".into(), bearer];
    if let Some(body) = body {
        args.extend(["-H".into(), "content-type: application/json".into(), "-d".into(), body.to_string()]);
    }
    args.push(format!("{url}/api/v2/{path}"));
    let out = std::process::Command::new("curl").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

/// `GET {path}` on the stack's Prometheus, with curl: its JSON answer's `data`.
fn prometheus(path: &str) -> Value {
    let url = std::env::var("PROMETHEUS_URL").expect("PROMETHEUS_URL (set by `scripts/stack up onprem`)");
    let out = std::process::Command::new("curl").args(["-s", &format!("{url}{path}")]).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("Prometheus answered {path} with: {}", String::from_utf8_lossy(&out.stdout)));
    doc["data"].clone()
}

/// An instant query on the stack's Prometheus: its whole answer (`status`, `data`, `error`).
fn prometheus_query(expr: &str) -> Value {
    let url = std::env::var("PROMETHEUS_URL").expect("PROMETHEUS_URL (set by `scripts/stack up onprem`)");
    let out = std::process::Command::new("curl").args(["-s", "-G", "--data-urlencode", &format!("query={expr}"), &format!("{url}/api/v1/query")]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("Prometheus answered {expr} with: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The rule groups Prometheus loaded for endpoint `name`.
fn prometheus_groups(name: &str) -> Vec<String> {
    let file = format!("/rules/galley_{name}.yml");
    prometheus("/api/v1/rules")["groups"].as_array().unwrap().iter().filter(|g| g["file"].as_str().is_some_and(|f| f.ends_with(&file))).map(|g| g["name"].as_str().unwrap().to_owned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

/// The health of Prometheus's target for endpoint `name` (`None`: it has none), once `want`
/// holds or after 30 s (file discovery re-reads every 5 s, the stack scrapes every 2 s).
fn prometheus_target(name: &str, want: Option<&str>) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let targets = prometheus("/api/v1/targets?state=active");
        let health = targets["activeTargets"].as_array().unwrap().iter().find(|t| t["labels"]["galley_endpoint"] == name).map(|t| t["health"].as_str().unwrap().to_owned());
        if health.as_deref() == want || std::time::Instant::now() > deadline {
            return health;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Waits up to `secs` for `probe` to answer `Some`.
fn eventually<T>(secs: u64, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "after {secs}s: {what}");
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn tag<'a>(tags: &'a Value, key: &str) -> Option<&'a str> {
    tags.as_array()?.iter().find(|t| t["key"] == key)?["value"].as_str()
}

#[test]
fn onprem_lifecycle_on_a_real_mlflow_server() {
    let Some(uri) = substrate::mlflow_uri() else { return };
    let Some(feast) = substrate::feast() else { return };
    let Some(airflow_config) = substrate::airflow() else { return };
    let server = feast.server_url.clone().unwrap();
    let (p, name) = project("onprem");

    let (code, plan) = p.galley_json(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{plan}");
    let changes = plan["changes"].as_array().unwrap();
    let kinds: Vec<&str> = changes.iter().filter_map(|c| c["kind"].as_str()).collect();
    assert!(kinds.contains(&"onprem.mlflow_experiment") && kinds.contains(&"onprem.mlflow_registered_model"), "{kinds:?}");
    assert!(kinds.contains(&"onprem.feast_feature_view") && kinds.contains(&"onprem.airflow_dag"), "{kinds:?}");
    assert!(plan.to_string().contains(&uri), "the plan names the MLflow server: {plan}");
    let runs_on = plan["lifecycle"][0]["runs_on"].as_str().unwrap_or_default();
    assert!(runs_on.starts_with(&format!("Airflow at {}", airflow_config.api_url)), "the plan says where the steps run: {runs_on}");

    ok(&p.galley(&["apply", "--auto-approve"]));
    let exp = mlflow(&uri, &format!("experiments/get-by-name?experiment_name={name}"));
    assert_eq!(exp["experiment"]["lifecycle_stage"], "active", "{exp}");
    assert!(tag(&exp["experiment"]["tags"], "galley").is_some_and(|v| v.contains("experiments.experiment")), "owner tag: {exp}");
    let model = mlflow(&uri, &format!("registered-models/get?name={name}"));
    assert!(tag(&model["registered_model"]["tags"], "galley").is_some(), "owner tag: {model}");
    // Feast's own server knows the view, with nothing online yet.
    let before = feast_sees(&server, &name, 200);
    assert_eq!(before["results"][1]["statuses"][0], "NOT_FOUND", "{before}");
    // Airflow's own API has the DAG Galley wrote, unpaused, with no run yet (its 04:00
    // schedule does not start the run it "missed" before the apply).
    let (code, dag) = airflow(&format!("dags/{name}"));
    assert_eq!((code, &dag["is_paused"]), (200, &Value::Bool(false)), "{dag}");
    assert_eq!(airflow(&format!("dags/{name}/dagRuns")).1["total_entries"], 0);
    // Prometheus's own API has loaded the endpoint's rules; nothing serves yet, so no target.
    assert_eq!(prometheus_groups(&name), [format!("galley-{name}-drift"), format!("galley-{name}-serving")]);
    assert_eq!(prometheus_target(&name, None), None);

    let (code, run) = p.galley_json(&["run"]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["run"]["registered_version"], 1, "{run}");
    let accuracy = run["run"]["metrics"]["accuracy"].as_f64().unwrap();
    // The steps ran as Airflow tasks: Airflow says the DAG run and its nine task instances succeeded.
    let dag_run = run["run"]["pipeline_run"].as_str().unwrap().strip_prefix(&format!("{name}/")).unwrap_or_else(|| panic!("not a DAG run: {run}")).to_owned();
    let (_, r) = airflow(&format!("dags/{name}/dagRuns/{dag_run}"));
    assert_eq!(r["state"], "success", "{r}");
    let (_, tasks) = airflow(&format!("dags/{name}/dagRuns/{dag_run}/taskInstances"));
    let states: Vec<(&str, &str)> = tasks["task_instances"].as_array().unwrap().iter().map(|t| (t["task_id"].as_str().unwrap(), t["state"].as_str().unwrap_or("none"))).collect();
    assert_eq!(states.len(), 9, "{states:?}");
    assert!(states.iter().all(|(_, s)| *s == "success"), "{states:?}");
    // The same lifecycle in Galley's process gives the same model: nothing new to register.
    let (code, here) = p.galley_json(&["run", "--local-steps", "--no-cache"]);
    assert_eq!(code, 0, "{here}");
    assert_eq!((&here["run"]["registered_version"], &here["run"]["registered_new"]), (&Value::from(1), &Value::Bool(false)), "{here}");
    assert_eq!(here["run"]["metrics"], run["run"]["metrics"], "in-process vs Airflow metrics");
    assert!(!here["run"]["pipeline_run"].as_str().unwrap().contains('/'), "ran in this process: {here}");
    let versions = mlflow(&uri, &format!("model-versions/search?filter=name%3D%27{name}%27"));
    assert_eq!(versions["model_versions"].as_array().map(Vec::len), Some(1), "one version in MLflow: {versions}");
    // The run ingested the dataset into Feast's offline store and materialized it: the first
    // wine's alcohol (9.4, as in the request below) is served online by Feast.
    let online = feast_sees(&server, &name, 200);
    assert_eq!(online["results"][1]["values"][0].as_f64(), Some(9.4), "{online}");

    // What MLflow holds: version 1, champion, gate's verdict, in its run, the run's metrics.
    let v = mlflow(&uri, &format!("model-versions/get?name={name}&version=1"))["model_version"].clone();
    let aliases: Vec<&str> = v["aliases"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(aliases, ["champion"], "{v}");
    let run_id = v["run_id"].as_str().unwrap();
    let mlflow_run = mlflow(&uri, &format!("runs/get?run_id={run_id}"))["run"].clone();
    assert!(v["source"].as_str().unwrap().starts_with(mlflow_run["info"]["artifact_uri"].as_str().unwrap()), "{v}");
    let logged = mlflow_run["data"]["metrics"].as_array().unwrap().iter().find(|m| m["key"] == "accuracy").map(|m| m["value"].as_f64().unwrap());
    assert_eq!(logged, Some(accuracy), "the run's accuracy in MLflow vs what galley run reported: {mlflow_run}");
    assert_eq!(tag(&v["tags"], "galley.metric.accuracy").map(|s| s.parse::<f64>().unwrap()), Some(accuracy), "{v}");

    let body = r#"{"dataframe_split": {"columns": ["fixed_acidity","volatile_acidity","citric_acid","residual_sugar","chlorides","free_sulfur_dioxide","total_sulfur_dioxide","density","ph","sulphates","alcohol"], "data": [[7.4,0.7,0.0,1.9,0.076,11.0,34.0,0.9978,3.51,0.56,9.4]]}}"#;
    let (code, pred) = p.galley_json(&["predict", "--data", body]);
    assert_eq!(code, 0, "{pred}");
    assert_eq!(pred["predictions"].as_array().unwrap().len(), 1, "{pred}");
    // Prometheus scrapes the endpoint where it bound, and has its request counter.
    assert_eq!(prometheus_target(&name, Some("up")).as_deref(), Some("up"));
    let query = format!("/api/v1/query?query=sum(galley_requests_total%7Bgalley_endpoint%3D%22{name}%22%7D)");
    let served = eventually(20, "Prometheus scraped the endpoint's requests", || {
        prometheus(&query)["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).filter(|v| *v >= 1.0)
    });
    assert!(served >= 1.0);

    // The Open Inference Protocol, spoken by a client nobody here wrote (Triton's `tritonclient`,
    // JSON tensors): the same row answers the same label as `galley predict`, with P(class 1).
    let (_, outputs) = p.galley_json(&["outputs"]);
    let endpoint = outputs["serving.endpoint"]["url"].as_str().unwrap().trim_start_matches("http://").trim_end_matches("/invocations").to_owned();
    let bin = std::env::var("GALLEY_TEST_MLFLOW_BIN").expect("GALLEY_TEST_MLFLOW_BIN (set by `scripts/stack up onprem`)");
    let script = r#"
import json, sys, numpy as np
import tritonclient.http as t
c = t.InferenceServerClient(url=sys.argv[1])
assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(sys.argv[2])
meta = c.get_model_metadata(sys.argv[2])
x = t.InferInput("rows", [1, len(meta["inputs"])], "FP64")
x.set_data_from_numpy(np.array([[7.4,0.7,0.0,1.9,0.076,11.0,34.0,0.9978,3.51,0.56,9.4]]), binary_data=False)
r = c.infer(sys.argv[2], [x], outputs=[t.InferRequestedOutput("predict", binary_data=False), t.InferRequestedOutput("probability", binary_data=False)])
print(json.dumps({"inputs": [i["name"] for i in meta["inputs"]], "predict": r.as_numpy("predict").tolist(), "probability": r.as_numpy("probability").tolist()}))
"#;
    let out = std::process::Command::new(format!("{bin}/python")).args(["-c", script, &endpoint, &name]).output().unwrap();
    assert!(out.status.success(), "tritonclient: {}", String::from_utf8_lossy(&out.stderr));
    let triton: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(triton["inputs"][10], "alcohol", "{triton}");
    assert_eq!(triton["predict"][0][0].as_f64(), pred["predictions"][0].as_f64(), "V2 vs /invocations: {triton} {pred}");
    let p1 = triton["probability"][0][0].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p1) && (p1 >= 0.5) == (pred["predictions"][0].as_f64() == Some(1.0)), "{triton}");

    let state: Value = serde_json::from_slice(&std::fs::read(p.path().join(format!(".galley/onprem/endpoints/{name}/state.json"))).unwrap()).unwrap();
    let pid = state["pid"].as_u64().unwrap() as u32;
    assert!(process_alive(pid));
    ok(&p.galley(&["destroy", "--auto-approve"]));
    assert!(!process_alive(pid), "the endpoint server {pid} must be stopped");
    assert_eq!(mlflow(&uri, &format!("registered-models/get?name={name}"))["error_code"], "RESOURCE_DOES_NOT_EXIST");
    let exp = mlflow(&uri, &format!("experiments/get-by-name?experiment_name={name}"));
    assert_eq!(exp["experiment"]["lifecycle_stage"], "deleted", "MLflow keeps a deleted experiment until `mlflow gc`: {exp}");
    assert_eq!(airflow(&format!("dags/{name}")).0, 404, "destroy removes the DAG from Airflow");
    assert_eq!(airflow(&format!("dags/{name}.drift-check")).0, 404, "and its drift check");
    assert!(!airflow_config.dags_folder.join(galley_onprem::airflow::dag::file_name(&name)).exists(), "and its file");
    assert!(prometheus_groups(&name).is_empty(), "destroy unloads the endpoint's rules from Prometheus");
    assert_eq!(prometheus_target(&name, None), None, "and Prometheus stops scraping it");
    let gone = feast_sees(&server, &name, 404);
    assert!(gone.to_string().contains("FeatureViewNotFound"), "{gone}");
    assert!(!galley_onprem::feast::repo::definitions_file(&feast.repo, &name).exists(), "destroy removes the definitions file");
    let left = files_under(&p.path().join(".galley"));
    assert!(left.iter().all(|f| f.starts_with("state.json")), "destroy must leave only the state files: {left:?}");
}

/// The drift trigger on Airflow and Prometheus: drifted traffic at the endpoint, then the
/// pipeline's drift-check DAG (started here as its hourly schedule would): its check publishes
/// the monitor's verdict, Prometheus scrapes it and fires `GalleyDriftDetected`, and the DAG
/// starts a run of the pipeline's DAG with `trigger=drift`, which retrains (MLflow's run says
/// so). A second check during the same alert starts no second retrain.
#[test]
fn a_drift_alert_in_prometheus_retrains_through_airflow() {
    let Some(uri) = substrate::mlflow_uri() else { return };
    let Some(_) = substrate::feast() else { return };
    let Some(_) = substrate::airflow() else { return };
    if std::env::var("PROMETHEUS_URL").is_err() {
        panic!("PROMETHEUS_URL is not set: start the onprem stack with `eval \"$(scripts/stack up onprem)\"`");
    }
    let (p, name) = project("drift");
    let check = format!("{name}.drift-check");
    let (_, plan) = p.galley_json(&["plan"]);
    assert!(plan.to_string().contains(&format!("DAG {check} (0 * * * *)")), "the plan shows the drift check: {plan}");
    ok(&p.galley(&["apply", "--auto-approve"]));
    let (code, dag) = airflow(&format!("dags/{check}"));
    assert_eq!((code, &dag["is_paused"]), (200, &Value::Bool(false)), "{dag}");
    let (code, first) = p.galley_json(&["run"]);
    assert_eq!(code, 0, "{first}");

    // 150 copies of one wine with twice its alcohol: every feature's distribution moved.
    let row = "[7.4,0.7,0.0,1.9,0.076,11.0,34.0,0.9978,3.51,0.56,18.8]";
    let rows = vec![row; 150].join(",");
    let body = format!(r#"{{"dataframe_split": {{"columns": ["fixed_acidity","volatile_acidity","citric_acid","residual_sugar","chlorides","free_sulfur_dioxide","total_sulfur_dioxide","density","ph","sulphates","alcohol"], "data": [{rows}]}}}}"#);
    let (code, pred) = p.galley_json(&["predict", "--data", &body]);
    assert_eq!(code, 0, "{pred}");
    assert_eq!(prometheus_target(&name, Some("up")).as_deref(), Some("up"));

    let start = |id: &str| {
        let (code, r) = airflow_call("POST", &format!("dags/{check}/dagRuns"), Some(&serde_json::json!({ "dag_run_id": id, "logical_date": null })));
        assert_eq!(code, 200, "{r}");
    };
    let finished = |id: &str| {
        eventually(240, &format!("drift check {id} finished"), || {
            let (_, r) = airflow(&format!("dags/{check}/dagRuns/{id}"));
            matches!(r["state"].as_str(), Some("success" | "failed")).then_some(r)
        })
    };
    let task_states = |id: &str| -> Vec<(String, String)> {
        let (_, t) = airflow(&format!("dags/{check}/dagRuns/{id}/taskInstances"));
        let mut v: Vec<(String, String)> = t["task_instances"].as_array().unwrap().iter().map(|t| (t["task_id"].as_str().unwrap().to_owned(), t["state"].as_str().unwrap_or("none").to_owned())).collect();
        v.sort();
        v
    };
    let drift_runs = || -> Vec<Value> {
        let (_, runs) = airflow(&format!("dags/{name}/dagRuns?limit=100"));
        runs["dag_runs"].as_array().unwrap().iter().filter(|r| r["conf"]["trigger"] == "drift").cloned().collect()
    };
    start("check-1");
    let r = finished("check-1");
    let states = task_states("check-1");
    assert_eq!(r["state"], "success", "{r} {states:?}");
    assert_eq!(states, [("check_drift".into(), "success".into()), ("drift_alert".into(), "success".into()), ("retrain".into(), "success".into())]);
    let alert = prometheus("/api/v1/alerts")["alerts"].as_array().unwrap().iter().find(|a| a["labels"]["monitor"] == name.as_str()).cloned();
    assert_eq!(alert.as_ref().map(|a| a["state"].clone()), Some(Value::from("firing")), "{alert:?}");
    // The Grafana dashboard's queries run on this Prometheus (Grafana's `$__rate_interval` as
    // 1m) and find the endpoint's traffic and the monitor's verdict and statistics.
    let export = std::process::Command::new(env!("CARGO_BIN_EXE_galley")).current_dir(p.path()).args(["export", "grafana"]).arg(&p.blueprint).args(["--out", "dashboard.json"]).envs(p.env.iter().map(|(k, v)| (k, v))).output().unwrap();
    ok(&export);
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(p.path().join("dashboard.json")).unwrap()).unwrap();
    let mut answered = std::collections::BTreeMap::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m");
            let r = prometheus_query(&expr);
            assert_eq!(r["status"], "success", "Prometheus refused the dashboard's query {expr}: {r}");
            let series = r["data"]["result"].as_array().unwrap().len();
            *answered.entry(panel["title"].as_str().unwrap().to_owned()).or_insert(0) += series;
        }
    }
    for title in ["Requests per second", "Latency p99", "Versions served", "Drift verdict", "Samples toward a verdict", "Feature drift (PSI)"] {
        assert!(answered.get(title).is_some_and(|n| *n > 0), "the dashboard's `{title}` finds no series: {answered:?}");
    }
    let verdict = prometheus_query(&format!("max(galley_drift_detected{{monitor=\"{name}\"}})"));
    assert_eq!(verdict["data"]["result"][0]["value"][1], "1", "{verdict}");
    // The retrain: a run of the pipeline's DAG with trigger=drift, which succeeds and trains
    // again (force_from=train), as MLflow's run records.
    let retrain = eventually(240, "the drift retrain finished", || {
        drift_runs().into_iter().find(|r| matches!(r["state"].as_str(), Some("success" | "failed")))
    });
    assert_eq!(retrain["state"], "success", "{retrain}");
    assert_eq!(retrain["conf"]["force_from"], "train", "{retrain}");
    let exp = mlflow(&uri, &format!("experiments/get-by-name?experiment_name={name}"))["experiment"]["experiment_id"].clone();
    let runs = std::process::Command::new("curl")
        .args(["-s", "-H", "content-type: application/json", "-d", &serde_json::json!({ "experiment_ids": [exp], "max_results": 50 }).to_string(), &format!("{uri}/api/2.0/mlflow/runs/search")])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    let triggers: Vec<&str> = runs["runs"].as_array().unwrap().iter().filter_map(|r| tag(&r["data"]["tags"], "galley.trigger")).collect();
    assert!(triggers.contains(&"drift"), "MLflow has the drift retrain's run: {triggers:?}");

    // The same alert again (still firing: nothing changed the traffic): no second retrain.
    start("check-2");
    let r = finished("check-2");
    assert_eq!(r["state"], "success", "{r}");
    let states = task_states("check-2");
    assert_eq!(states[1], ("drift_alert".into(), "skipped".into()), "{states:?}");
    assert_eq!(drift_runs().len(), 1, "one drift episode, one retrain");

    ok(&p.galley(&["destroy", "--auto-approve"]));
    assert_eq!(airflow(&format!("dags/{check}")).0, 404);
    assert_eq!(airflow(&format!("variables/{}", galley_onprem::airflow::dag::drift_variable(&name))).0, 404, "destroy removes the alert memory");
}

/// MLflow down at apply: one error naming MLflow and its URL, no MLflow resource recorded as
/// made; when the server answers at that URL again (here: a forwarder to the real one comes up
/// on the port), the same apply settles the interrupted create and completes.
/// Ctrl-C on `galley run` while Airflow runs the DAG: galley cancels the DAG run through
/// Airflow's API and exits failing; Airflow's own API shows the run `failed` with Galley's note
/// and no task still running, and MLflow has no registered version from it.
#[test]
fn ctrl_c_on_galley_run_cancels_the_airflow_dag_run() {
    let Some(uri) = substrate::mlflow_uri() else { return };
    let Some(_) = substrate::feast() else { return };
    let Some(_) = substrate::airflow() else { return };
    let (p, name) = project("cancel");
    ok(&p.galley(&["apply", "--auto-approve"]));

    let child = std::process::Command::new(env!("CARGO_BIN_EXE_galley"))
        .current_dir(p.path())
        .arg("run")
        .arg(&p.blueprint)
        .args(["--no-cache"])
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until Airflow runs a task of the DAG run galley started.
    let run_id = eventually(120, "Airflow runs a task of galley's DAG run", || {
        let (_, runs) = airflow(&format!("dags/{name}/dagRuns"));
        let run = runs["dag_runs"].as_array()?.first()?["dag_run_id"].as_str()?.to_owned();
        let (_, tasks) = airflow(&format!("dags/{name}/dagRuns/{run}/taskInstances"));
        tasks["task_instances"].as_array()?.iter().any(|t| t["state"] == "running").then_some(run)
    });
    // SIGINT, as Ctrl-C sends it.
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a cancelled run exited 0: {said}");
    assert!(said.contains("interrupted: cancelling the run"), "{said}");

    let (_, run) = airflow(&format!("dags/{name}/dagRuns/{run_id}"));
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["note"], "cancelled by galley", "{run}");
    eventually(60, "no task of the cancelled DAG run still running", || {
        let (_, tasks) = airflow(&format!("dags/{name}/dagRuns/{run_id}/taskInstances"));
        let states: Vec<String> = tasks["task_instances"].as_array()?.iter().map(|t| t["state"].as_str().unwrap_or("none").to_owned()).collect();
        (!states.iter().any(|s| matches!(s.as_str(), "running" | "queued" | "scheduled"))).then_some(states)
    });
    let versions = mlflow(&uri, &format!("registered-models/get?name={name}"));
    assert!(versions["registered_model"]["latest_versions"].as_array().is_none_or(|v| v.is_empty()), "the cancelled run registered a version: {versions}");
    ok(&p.galley(&["destroy", "--auto-approve"]));
}

#[test]
fn a_server_that_is_down_is_named_and_the_apply_completes_when_it_is_back() {
    let Some(uri) = substrate::mlflow_uri() else { return };
    let (mut p, name) = project("down");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("http://127.0.0.1:{port}");
    p.env.push(("MLFLOW_TRACKING_URI".into(), down.clone()));
    let out = p.galley(&["apply", "--auto-approve"]);
    assert!(!out.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&format!("MLflow at {down} could not connect")), "{said}");
    let (_, status) = p.galley_json(&["status"]);
    let recorded = status["resources"].as_object().unwrap();
    assert!(!recorded.contains_key("experiments.experiment") && !recorded.contains_key("registry.model"), "{status}");
    assert_eq!(mlflow(&uri, &format!("registered-models/get?name={name}"))["error_code"], "RESOURCE_DOES_NOT_EXIST");

    forward(port, uri.trim_start_matches("http://"));
    ok(&p.galley(&["apply", "--auto-approve"]));
    assert_eq!(mlflow(&uri, &format!("registered-models/get?name={name}"))["registered_model"]["name"], name.as_str());
    assert_eq!(mlflow(&uri, &format!("experiments/get-by-name?experiment_name={name}"))["experiment"]["lifecycle_stage"], "active");
    ok(&p.galley(&["destroy", "--auto-approve"]));
    assert_eq!(mlflow(&uri, &format!("registered-models/get?name={name}"))["error_code"], "RESOURCE_DOES_NOT_EXIST");
}

/// The server coming back at `port`: every connection there is piped to `upstream`.
/// MLflow's basic-auth app: a wrong password fails the apply in one line that names the user
/// tried and the variables it came from, never the password, and records nothing; the right
/// one applies, and MLflow (asked with the admin's credentials) holds the experiment.
#[test]
fn mlflow_basic_auth_a_wrong_password_is_named_in_one_line() {
    let Some((uri, password)) = substrate::mlflow_auth() else { return };
    let (mut p, name) = project("auth");
    let wrong = "not-the-password-7b1e";
    p.env.push(("MLFLOW_TRACKING_URI".into(), uri.clone()));
    p.env.push(("MLFLOW_TRACKING_USERNAME".into(), "admin".into()));
    p.env.push(("MLFLOW_TRACKING_PASSWORD".into(), wrong.into()));
    let out = p.galley(&["apply", "--auto-approve"]);
    assert!(!out.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains(wrong), "the password must never be printed: {said}");
    let line = said.lines().find(|l| l.contains("HTTP 401")).unwrap_or_else(|| panic!("no line names the refusal: {said}"));
    assert!(line.contains(&format!("MLflow at {uri}")) && line.contains("basic auth as user `admin`") && line.contains("MLFLOW_TRACKING_PASSWORD"), "{line}");
    let (_, status) = p.galley_json(&["status"]);
    let recorded = status["resources"].as_object().unwrap();
    assert!(!recorded.contains_key("experiments.experiment") && !recorded.contains_key("registry.model"), "{status}");

    p.env.retain(|(k, _)| k != "MLFLOW_TRACKING_PASSWORD");
    p.env.push(("MLFLOW_TRACKING_PASSWORD".into(), password.clone()));
    ok(&p.galley(&["apply", "--auto-approve"]));
    let get = |path: &str| -> Value {
        let out = std::process::Command::new("curl").args(["-s", "-u", &format!("admin:{password}"), &format!("{uri}/api/2.0/mlflow/{path}")]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    assert_eq!(get(&format!("experiments/get-by-name?experiment_name={name}"))["experiment"]["lifecycle_stage"], "active");
    let anonymous = std::process::Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401", "the server must really require credentials");
    ok(&p.galley(&["destroy", "--auto-approve"]));
    assert_eq!(get(&format!("registered-models/get?name={name}"))["error_code"], "RESOURCE_DOES_NOT_EXIST");
}

/// Airflow's JWT sign-in with a wrong password: the apply fails in one line naming Airflow,
/// its URL and the user tried, never the password; no DAG file is left for Airflow to load and
/// state records no DAG. The right password applies, and Airflow's API has the DAG.
#[test]
fn airflow_a_wrong_password_is_named_in_one_line_and_leaves_no_dag() {
    let Some(_) = substrate::mlflow_uri() else { return };
    let Some(airflow_config) = substrate::airflow() else { return };
    let (mut p, name) = project("afauth");
    let wrong = "not-the-password-41c9";
    p.env.push(("AIRFLOW_PASSWORD".into(), wrong.into()));
    let out = p.galley(&["apply", "--auto-approve"]);
    assert!(!out.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains(wrong), "the password must never be printed: {said}");
    let line = said.lines().find(|l| l.contains("HTTP 401")).unwrap_or_else(|| panic!("no line names the refusal: {said}"));
    assert!(line.contains(&format!("Airflow at {}", airflow_config.api_url)) && line.contains("user `admin`") && line.contains("AIRFLOW_PASSWORD"), "{line}");
    let file = airflow_config.dags_folder.join(galley_onprem::airflow::dag::file_name(&name));
    assert!(!file.exists(), "no DAG file may be left behind: {}", file.display());
    let (_, status) = p.galley_json(&["status"]);
    assert!(!status["resources"].as_object().unwrap().contains_key("pipeline.pipeline"), "{status}");

    p.env.retain(|(k, _)| k != "AIRFLOW_PASSWORD");
    ok(&p.galley(&["apply", "--auto-approve"]));
    assert_eq!(airflow(&format!("dags/{name}")).0, 200);
    ok(&p.galley(&["destroy", "--auto-approve"]));
    assert_eq!(airflow(&format!("dags/{name}")).0, 404);
}

fn forward(port: u16, upstream: &str) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port the server was down on is free again");
    let upstream = upstream.to_owned();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(up) = std::net::TcpStream::connect(&upstream) else { continue };
            let (mut a, mut b) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
            let (mut c, mut d) = (conn, up);
            std::thread::spawn(move || { let _ = std::io::copy(&mut a, &mut b); let _ = b.shutdown(std::net::Shutdown::Write); });
            std::thread::spawn(move || { let _ = std::io::copy(&mut d, &mut c); let _ = c.shutdown(std::net::Shutdown::Write); });
        }
    });
}

/// local → onprem → local through `galley migrate`, killed at every kill point on the way there
/// (every third on the way back) and resumed, each proven by `verify`; MLflow's API confirms
/// every version and run arrived once.
#[test]
fn migrate_local_to_onprem_and_back() {
    let Some(uri) = substrate::mlflow_uri() else { return };
    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let text = |suffix: &str| {
        format!(
            "apiVersion: galley/v1\nname: wine-mig{suffix}\nplatform: local\nvars:\n  iters: 200\n\
             data:\n  source: builtin:winequality\n  target: quality\n  positive_when: {{at_least: 6}}\n\
             stages:\n  artifacts:\n    bucket: mig{suffix}\n  experiments:\n    name: gtk-mig{suffix}-{id}\n\
             \x20 training:\n    algorithm: logistic_regression\n    params: {{max_iterations: \"${{var.iters}}\"}}\n\
             \x20 registry:\n    model: gtk-mig{suffix}-{id}\n    gate: {{metric: accuracy, at_least: 0.6}}\n\
             \x20 serving:\n    endpoint: mig{suffix}\n    model: ${{stages.registry.outputs.model}}\n    traffic: {{strategy: canary, percent: 10}}\n\
             \x20 monitoring:\n    drift: {{method: ks, threshold: 0.1}}\n"
        )
    };
    let p = Project::with_text("stack.yaml", &text(""));
    std::fs::write(p.path().join("back.yaml"), text("-back")).unwrap();
    ok(&p.galley(&["up"]));
    ok(&p.galley(&["run", "--var", "iters=400"]));

    let until_done = |args: &[&str], stride: &str| -> (usize, Value) {
        let mut kills = 0;
        loop {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_galley"));
            c.current_dir(p.path()).args(["migrate", "apply", "stack.yaml"]).args(args).args(["--auto-approve", "--output", "json"]);
            let out = c.env("GALLEY_TEST_MIGRATE_CRASH_AT", stride).env("NO_COLOR", "1").env_remove("GALLEY_OUTPUT").output().unwrap();
            if std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(9) {
                kills += 1;
                assert!(kills < 300, "no progress after {kills} kills");
                continue;
            }
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let last: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null);
            assert!(out.status.success(), "{last}\n{}", String::from_utf8_lossy(&out.stderr));
            return (kills, last);
        }
    };
    let proven = |done: &Value| {
        assert_eq!(done["ok"], true, "{done}");
        let checks = done["proof"]["checks"].as_array().unwrap();
        assert!(checks.iter().all(|c| c["ok"] == true), "{done}");
        let predictions = checks.iter().find(|c| c["what"] == "predictions").unwrap_or_else(|| panic!("{done}"));
        assert!(predictions["detail"].as_str().unwrap().contains("v1 → v1, v2 → v2"), "{done}");
    };

    let (kills, done) = until_done(&["--to", "onprem"], "1");
    println!("local → onprem: killed {kills} times, then {}", done["applied"]);
    assert!(kills >= 12, "killed only {kills} times: {done}");
    proven(&done);

    // MLflow's own API: two versions, none twice; two runs carrying their source's id.
    let name = format!("gtk-mig-{id}");
    let versions = mlflow(&uri, &format!("model-versions/search?filter=name%3D%27{name}%27"));
    assert_eq!(versions["model_versions"].as_array().map(Vec::len), Some(2), "{versions}");
    let exp = mlflow(&uri, &format!("experiments/get-by-name?experiment_name={name}"));
    let exp_id = exp["experiment"]["experiment_id"].as_str().unwrap().to_owned();
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", "POST", "-H", "content-type: application/json", &format!("{uri}/api/2.0/mlflow/runs/search")])
        .args(["-d", &format!(r#"{{"experiment_ids":["{exp_id}"],"filter":"tags.`galley.migrated_from` LIKE 'local:%'"}}"#)])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(2), "{runs}");

    let back = ["--platform", "onprem", "--state", ".galley/migrate/onprem/state.json", "--to", "back.yaml", "--target-state", ".galley/back.json"];
    let (kills, done) = until_done(&back, "3");
    println!("onprem → local: killed {kills} times, then {}", done["applied"]);
    assert!(kills >= 6, "killed only {kills} times: {done}");
    proven(&done);

    for (file, state) in [("back.yaml", ".galley/back.json"), ("stack.yaml", ".galley/migrate/onprem/state.json")] {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_galley"));
        c.current_dir(p.path()).args(["destroy", file, "--state", state, "--auto-approve"]);
        if file == "stack.yaml" {
            c.args(["--platform", "onprem"]);
        }
        ok(&c.output().unwrap());
    }
    ok(&p.galley(&["destroy", "--auto-approve"]));
    assert_eq!(mlflow(&uri, &format!("registered-models/get?name={name}"))["error_code"], "RESOURCE_DOES_NOT_EXIST");
}
