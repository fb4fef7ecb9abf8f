//! Every behaviour suite against the onprem platform: experiments and the registry on the real
//! MLflow server `scripts/stack up onprem` starts, features on its Feast (repository, Python
//! and feature server), the other stages on a fresh directory as the
//! shared directory keeps them. Ends with the proof that every feature onprem declares was
//! needed by a case that passed here.
//!
//! The model server is a separate process; as in the local platform's test, this binary doubles
//! as it (see `galley_testkit::serving::this_binary_as_server`).

mod common;

use std::path::Path;
use std::sync::Arc;

use galley_core::StageSet;
use galley_core::stages::{ExperimentTracker, ModelRegistry, NewModelVersion};
use galley_local::artifacts::LocalArtifacts;
use galley_local::monitor::LocalMonitor;
use galley_local::orchestrator::LocalOrchestrator;
use galley_onprem::airflow::{AirflowCredentials, AirflowOrchestrator};
use galley_local::serving::{EndpointSettings, LocalServing};
use galley_onprem::feast::FeastFeatures;
use galley_mlflow::{Credentials, MlflowClient, MlflowExperiments, MlflowRegistry};
use galley_testkit::serving::{RequireToken, this_binary_as_server};
use galley_testkit::{Fixtures, StandardModel, run_stage_set};

const CONFIG_ENV: &str = "GALLEY_TESTKIT_ENDPOINT_CONFIG";
const TOKEN_ENV: &str = "GALLEY_TESTKIT_ONPREM_TOKEN";

/// Not a test: the model server process the serving suite starts.
#[test]
#[ignore = "run only as the onprem model server child process"]
fn endpoint_server_process() {
    let Some(config) = std::env::var_os(CONFIG_ENV) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if let Err(e) = runtime.block_on(galley_local::serving::run_server(Path::new(&config))) {
        eprintln!("endpoint server failed: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}



fn mlflow(uri: &str) -> MlflowClient {
    MlflowClient::new(uri, Credentials::None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onprem_proves_every_declared_capability() {
    let Some(uri) = common::substrate::mlflow_uri() else { return };
    let Some(feast) = common::substrate::feast() else { return };
    let Some(airflow) = common::substrate::airflow() else { return };
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    // SAFETY: set before this test starts any thread or process that reads the environment.
    unsafe { std::env::set_var(TOKEN_ENV, &token) };
    let declared = galley_onprem::capabilities();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serving = Arc::new(LocalServing::new(d.join("endpoints"), d.join("monitors"), this_binary_as_server(CONFIG_ENV, "endpoint_server_process")).declaring(declared.clone()));
    let artifacts = Arc::new(LocalArtifacts::open(d.join("artifacts")).unwrap().declaring(declared.clone()));
    // Definitions are DAG files Airflow's dag-processor loads and its API describes; the
    // suite's runs have in-process step bodies, so they go through the shared directory's runner.
    let files = artifacts.clone();
    let orchestrator = AirflowOrchestrator::new(
        airflow,
        AirflowCredentials::from_env(),
        artifacts.clone(),
        Box::new(move |k| files.uri_for(k)),
        LocalOrchestrator::open(d.join("pipelines")).unwrap().declaring(declared.clone()),
        declared.clone(),
    )
    .unwrap();
    let stages = StageSet {
        artifacts,
        features: Arc::new(FeastFeatures::open(feast, declared.clone()).unwrap()),
        experiments: Arc::new(MlflowExperiments::new(mlflow(&uri), declared.clone())),
        orchestrator: Arc::new(orchestrator),
        registry: Arc::new(MlflowRegistry::new(mlflow(&uri), declared.clone())),
        serving: serving.clone(),
        monitor: Arc::new(LocalMonitor::open(d.join("monitors")).unwrap().declaring(declared.clone())),
    };
    let mut fixture = StandardModel::new().files_fixture(d);
    let configure = serving.clone();
    fixture.require_token = Some(RequireToken(Arc::new(move |name: &str| {
        let settings = EndpointSettings { token_env: Some(TOKEN_ENV.into()), ..EndpointSettings::default() };
        configure.configure(name, &settings)?;
        Ok(token.clone())
    })));
    let report = run_stage_set(&stages, &declared, Fixtures { serving: Some(fixture), ..Fixtures::default() }).await;
    report.assert_ok();
    report.assert_capabilities_proven(&declared);
    assert!(report.passed.iter().any(|n| n == "registry::aliases_move_and_resolve"), "{}", report.summary());
}

/// What MLflow itself holds for a version Galley registered: a source inside the lineage run's
/// artifacts, an `MLmodel` file there with MLflow's signature, and the model file with the same
/// bytes; read back through MLflow's API, not Galley's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_version_is_an_mlflow_model_directory() {
    let Some(uri) = common::substrate::mlflow_uri() else { return };
    let client = mlflow(&uri);
    let caps = galley_onprem::capabilities();
    let tracker = MlflowExperiments::new(client.clone(), caps.clone());
    let registry = MlflowRegistry::new(client.clone(), caps);
    let name = format!("gtk-onprem-{}", uuid::Uuid::new_v4().simple());
    tracker.create_experiment(&name).await.unwrap();
    let run = tracker.start_run(&name, Some("train"), &Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = StandardModel::new();
    let path = dir.path().join("model.json");
    std::fs::write(&path, &model.bytes).unwrap();
    registry.create_model(&name, None).await.unwrap();
    let new = NewModelVersion {
        artifact_uri: format!("file://{}", path.display()),
        metrics: [("rmse".to_owned(), 0.1 + 0.2)].into(),
        lineage: galley_core::stages::Lineage { run_id: Some(run.clone()), ..Default::default() },
        signature: model.signature.clone(),
        description: None,
    };
    let v = registry.register_version(&name, &new).await.unwrap();
    assert_eq!(v.metrics["rmse"], 0.1 + 0.2, "a metric's f64 survives MLflow's string tags bit for bit");

    let got = client.get("model-versions/get", &[("name", &name), ("version", "1")]).await.unwrap();
    let mv = &got["model_version"];
    assert_eq!(mv["run_id"].as_str(), Some(run.as_str()), "{mv}");
    let source = mv["source"].as_str().unwrap();
    let run_json = client.get("runs/get", &[("run_id", &run)]).await.unwrap();
    let run_artifacts = run_json["run"]["info"]["artifact_uri"].as_str().unwrap();
    assert!(source.starts_with(run_artifacts), "source {source} is not inside the run's artifacts {run_artifacts}");
    let path_in_proxy = source.trim_start_matches("mlflow-artifacts:").trim_start_matches('/');
    let mlmodel = String::from_utf8(client.get_artifact(&format!("{path_in_proxy}/MLmodel")).await.unwrap().to_vec()).unwrap();
    assert!(mlmodel.contains("flavors:") && mlmodel.contains("signature:"), "{mlmodel}");
    let first_input = &model.signature.inputs[0].name;
    assert!(mlmodel.contains(&format!(r#"\"name\":\"{first_input}\""#)), "the MLmodel signature names no `{first_input}`:\n{mlmodel}");
    let stored = client.get_artifact(&format!("{path_in_proxy}/model.json")).await.unwrap();
    assert_eq!(stored.as_ref(), model.bytes.as_slice(), "the model file in MLflow differs from the registered one");

    // MLflow's own loader reads the directory: `models:/NAME/1` resolves, the MLmodel parses,
    // and the signature it reports is the registered one.
    let bin = std::env::var("GALLEY_TEST_MLFLOW_BIN").expect("GALLEY_TEST_MLFLOW_BIN (set by `scripts/stack up onprem`): MLflow's venv");
    let script = "import sys, mlflow\nfrom mlflow.models import Model\nm = Model.load(f'models:/{sys.argv[1]}/1')\n\
                  print(','.join(c.name for c in m.signature.inputs.inputs)); print(sorted(m.flavors))";
    let out = std::process::Command::new(format!("{bin}/python")).args(["-c", script, &name]).env("MLFLOW_TRACKING_URI", &uri).output().unwrap();
    assert!(out.status.success(), "MLflow could not load the version: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = model.signature.inputs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(said.lines().next(), Some(names.join(",").as_str()), "{said}");
    assert!(said.contains("galley"), "{said}");
    registry.delete_model(&name).await.unwrap();
    tracker.delete_experiment(&name).await.unwrap();
}

/// A server that is not there: one error naming MLflow and the URL, said to be retryable.
#[tokio::test]
async fn an_unreachable_server_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let uri = format!("http://127.0.0.1:{port}");
    let tracker = MlflowExperiments::new(mlflow(&uri), galley_onprem::capabilities());
    let e = tracker.create_experiment("x").await.unwrap_err();
    assert!(e.to_string().contains(&format!("MLflow at {uri} could not connect")), "{e}");
    assert!(e.is_retryable(), "{e:?}");
}

/// The same held-out wine rows through Galley's scorer, ONNX Runtime (the version's exported
/// `model.onnx`, through Galley's ONNX scorer) and `mlflow models serve models:/NAME@champion`
/// (MLflow's own server and ONNX flavor): a decision tree answers bit for bit on all three,
/// a logistic regression within 1e-12 with every label equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_serves_a_registered_version_as_galley_scores_it() {
    use galley_core::ml::{Algorithm, Data, PositiveWhen, Split, Task, VarValue};
    use galley_ml::formats::Model;
    let Some(uri) = common::substrate::mlflow_uri() else { return };
    let bin = std::env::var("GALLEY_TEST_MLFLOW_BIN").expect("GALLEY_TEST_MLFLOW_BIN (set by `scripts/stack up onprem`): MLflow's venv");
    let ds = galley_ml::load_source("builtin:winequality", Path::new(".")).unwrap();
    let data = Data {
        source: "builtin:winequality".into(),
        target: "quality".into(),
        task: Task::Classification,
        positive_when: Some(PositiveWhen { at_least: 6.0 }),
        schema: Default::default(),
        split: Split { test_size: 0.2, seed: 42 },
    };
    let p = galley_ml::prepare(&ds.table, &data, &[]).unwrap();
    let client = mlflow(&uri);
    let registry = MlflowRegistry::new(client.clone(), galley_onprem::capabilities());
    let dir = tempfile::tempdir().unwrap();

    for (alg, params, tolerance) in [(Algorithm::DecisionTree, vec![("max_depth", 6.0)], 0.0), (Algorithm::LogisticRegression, vec![("max_iterations", 200.0)], 1e-12)] {
        let params: indexmap::IndexMap<String, VarValue> = params.into_iter().map(|(k, v)| (k.to_owned(), VarValue::Number(v))).collect();
        let model = galley_ml::train(alg, &params, p.task, &p.train, &p.signature).unwrap();
        let path = dir.path().join(format!("{alg:?}.json"));
        std::fs::write(&path, model.to_bytes()).unwrap();
        let name = format!("gtk-serve-{}", uuid::Uuid::new_v4().simple());
        registry.create_model(&name, None).await.unwrap();
        let new = NewModelVersion {
            artifact_uri: format!("file://{}", path.display()),
            metrics: Default::default(),
            lineage: Default::default(),
            signature: p.signature.clone(),
            description: None,
        };
        let v = registry.register_version(&name, &new).await.unwrap();
        registry.set_alias(&name, "champion", v.version).await.unwrap();

        let galley = Model::from(model.clone()).score_matrix(&p.test.x).unwrap();
        let exported = galley_ml::export::to_onnx(&model).unwrap();
        let ort = Model::from_bytes(&exported).unwrap().score_matrix(&p.test.x).unwrap();
        let served = mlflow_models_serve(&bin, &uri, &format!("models:/{name}@champion"), &p.signature, &p.test.x);

        let worst = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        let (probability, label): (Vec<f64>, Vec<f64>) = served.iter().copied().unzip();
        assert_eq!(probability.len(), galley.scores.len(), "{alg:?}: one answer per row");
        assert!(worst(&galley.scores, &ort.scores) <= tolerance, "{alg:?}: ONNX Runtime vs Galley {:e}", worst(&galley.scores, &ort.scores));
        assert!(worst(&galley.scores, &probability) <= tolerance, "{alg:?}: mlflow models serve vs Galley {:e}", worst(&galley.scores, &probability));
        assert_eq!(label, galley.labels, "{alg:?}: labels from mlflow models serve");
        assert_eq!(ort.labels, galley.labels, "{alg:?}: labels from ONNX Runtime");
        println!("{alg:?}: {} rows, mlflow models serve vs Galley: {:e}, ONNX Runtime vs Galley: {:e}", galley.scores.len(), worst(&galley.scores, &probability), worst(&galley.scores, &ort.scores));
        registry.delete_model(&name).await.unwrap();
    }
}

/// Starts `mlflow models serve -m MODEL`, posts `rows` as MLflow's `dataframe_split`, stops it;
/// returns (probability, label) per row.
fn mlflow_models_serve(bin: &str, uri: &str, model: &str, signature: &galley_core::stages::Signature, rows: &[Vec<f64>]) -> Vec<(f64, f64)> {
    use std::os::unix::process::CommandExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(format!("{bin}/mlflow"))
        .args(["models", "serve", "-m", model, "--env-manager", "local", "-h", "127.0.0.1", "-p", &port.to_string()])
        .env("MLFLOW_TRACKING_URI", uri)
        .env("PATH", path)
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let up = (0..240).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(250));
        std::process::Command::new("curl").args(["-fs", &format!("{url}/health")]).output().is_ok_and(|o| o.status.success())
    });
    let body = serde_json::json!({ "dataframe_split": {
        "columns": signature.inputs.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "data": rows,
    }});
    let out = up.then(|| {
        std::process::Command::new("curl")
            .args(["-s", "-X", "POST", "-H", "content-type: application/json", &format!("{url}/invocations"), "--data-binary", &body.to_string()])
            .output()
            .unwrap()
    });
    // SIGTERM to its process group: the server's workers go with it.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
    let _ = child.wait();
    let said = std::fs::read_to_string(log.path()).unwrap_or_default();
    let out = out.unwrap_or_else(|| panic!("mlflow models serve did not come up on {url}:\n{said}"));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("mlflow models serve answered: {}\n{said}", String::from_utf8_lossy(&out.stdout)));
    answer["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("no predictions: {answer}"))
        .iter()
        .map(|p| (p["probability"].as_f64().unwrap_or_else(|| panic!("{p}")), p["label"].as_f64().unwrap_or_else(|| panic!("{p}"))))
        .collect()
}

/// The repository Galley writes is what it applied: Feast's own CLI, planning from the files
/// alone, finds nothing to change. And a feature server that is down is named, with the repo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feast_repository_galley_writes_is_what_feast_holds() {
    use galley_core::stages::{FeatureGroupSpec, FeatureStore};
    use galley_core::table::{Column, DType, Table, Value};
    let Some(stack) = common::substrate::feast() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("http://127.0.0.1:{port}");
    let config = galley_onprem::feast::FeastConfig { repo: dir.path().join("repo"), python: stack.python.clone(), server_url: Some(down.clone()) };
    let store = FeastFeatures::open(config, galley_onprem::capabilities()).unwrap();
    let spec = FeatureGroupSpec {
        name: "wine features (v2)".into(),
        entity: Column::new("wine id", DType::Int),
        event_time: "seen_at".into(),
        features: vec![Column::new("alcohol", DType::Float), Column::new("grade \"a\"", DType::String)],
        online: true,
    };
    store.create_group(&spec).await.unwrap();
    let mut rows = Table::new(vec![Column::new("wine id", DType::Int), Column::new("seen_at", DType::Int), Column::new("alcohol", DType::Float)]);
    rows.push(vec![Value::Int(7), Value::Int(1_000), Value::Float(9.4)]).unwrap();
    assert_eq!(store.ingest(&spec.name, &rows).await.unwrap(), 1);

    let feast_cli = stack.python.with_file_name("feast");
    let out = std::process::Command::new(&feast_cli).arg("plan").current_dir(dir.path().join("repo")).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "feast plan: {said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("No changes to registry"), "feast plan, from the files Galley wrote, wants changes:\n{said}");

    let e = store.get_online(&spec.name, &[Value::Int(7)], &[]).await.unwrap_err().to_string();
    assert!(e.contains(&down) && e.contains("could not connect") && e.contains("feast serve"), "{e}");
    store.delete_group(&spec.name).await.unwrap();
    assert_eq!(store.describe_group(&spec.name).await.unwrap(), None);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("repo")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(!left.iter().any(|f| f.to_string_lossy().starts_with("galley_")), "{left:?}");
}
