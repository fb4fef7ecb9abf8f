//! `galley export kserve` through the real binary: the quickstart's endpoint on a 90/10 canary
//! becomes an InferenceService that KServe's own CRD schema accepts (the CustomResourceDefinition's
//! OpenAPI v3 schema, `shared/api-specs/kserve/`, beside the repository), and model files that
//! answer as the endpoint does.

mod common;

use common::{Project, ok};
use serde_json::{Value as Json, json};


/// YAML as JSON, through Galley's own YAML reader (the blueprint's).
fn yaml(text: &str) -> Json {
    galley_blueprint::parse::parse(text).unwrap_or_else(|d| panic!("{}", d.message)).to_json()
}

/// KServe's InferenceService schema (v1beta1), from its CRD.
fn crd_schema() -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/api-specs/kserve/serving.kserve.io_inferenceservices.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("KServe's CRD is missing ({e}): expected {} beside the repository", path.display()));
    let crd = yaml(&text);
    let version = crd["spec"]["versions"].as_array().unwrap().iter().find(|v| v["name"] == "v1beta1").expect("a v1beta1 version");
    version["schema"]["openAPIV3Schema"].clone()
}

fn violations(schema: &Json, doc: &Json) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).unwrap();
    validator.iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect()
}

#[test]
fn kserve_export_is_a_valid_inference_service_serving_the_same_models() {
    let p = Project::from_shipped("quickstart.yaml", |t| t);
    ok(&p.galley(&["up"]));
    ok(&p.galley(&["run", "--var", "max_iterations=400"]));
    let export = std::process::Command::new(env!("CARGO_BIN_EXE_galley"))
        .current_dir(p.path())
        .args(["export", "kserve"])
        .arg(&p.blueprint)
        .args(["--storage-uri", "s3://models/wine/", "--out", "isvc.yaml", "--models-dir", "models"])
        .output()
        .unwrap();
    println!("{}", ok(&export));
    let manifest = yaml(&std::fs::read_to_string(p.path().join("isvc.yaml")).unwrap());

    let schema = crd_schema();
    let v = violations(&schema, &manifest);
    assert!(v.is_empty(), "KServe's schema refuses the manifest: {v:?}\n{manifest}");
    let predictor = &manifest["spec"]["predictor"];
    assert_eq!(manifest["apiVersion"], "serving.kserve.io/v1beta1");
    assert_eq!(predictor["model"]["modelFormat"]["name"], "onnx");
    assert_eq!(predictor["model"]["protocolVersion"], "v2");
    assert_eq!(predictor["model"]["storageUri"], "s3://models/wine/wine-quality-v2", "{manifest}");
    assert_eq!(predictor["canaryTrafficPercent"], 10, "{manifest}");
    // The schema check has teeth: a predictor field KServe does not define is refused.
    let mut wrong = manifest.clone();
    wrong["spec"]["predictor"]["canaryTrafficPercent"] = json!("ten");
    assert!(!violations(&schema, &wrong).is_empty(), "a string traffic percent passed KServe's schema");

    // The files are ONNX in Triton's layout, and answer as the endpoint's variant does.
    let body = r#"{"dataframe_split": {"columns": ["fixed_acidity","volatile_acidity","citric_acid","residual_sugar","chlorides","sulphates","alcohol"], "data": [[7.4,0.7,0.0,1.9,0.076,0.56,9.4],[8.1,0.28,0.4,2.1,0.054,0.88,13.2]]}}"#;
    for version in [1, 2] {
        let file = p.path().join(format!("models/wine-quality-v{version}/wine-quality/1/model.onnx"));
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let onnx = galley_ml::Model::from_bytes(&bytes).unwrap();
        assert_eq!(onnx.format(), "onnx");
        let rows = galley_server::scoring::decode_table(body.as_bytes(), onnx.signature()).unwrap();
        let labels = onnx.labels(&rows).unwrap();
        // Until both variants have answered: the split sends one request in ten to v2.
        let mut seen = false;
        for _ in 0..20 {
            let (code, pred) = p.galley_json(&["predict", "--data", body]);
            assert_eq!(code, 0, "{pred}");
            if pred["variant"] == format!("v{version}") {
                assert_eq!(pred["predictions"], json!(labels), "v{version}: the endpoint vs the exported ONNX file");
                seen = true;
                break;
            }
        }
        assert!(seen, "v{version} never answered");
    }
    ok(&p.galley(&["destroy", "--auto-approve"]));
}

/// `galley export prometheus`: Prometheus's own tools accept the files (`promtool check config`,
/// `check rules`, `test rules` with the generated cases, which fail when an expectation is
/// wrong), and a real Prometheus server scrapes the endpoint through them.
#[test]
fn prometheus_export_passes_promtool_and_a_real_prometheus_scrapes_the_endpoint() {
    let promtool = std::env::var("GALLEY_PROMTOOL").expect("GALLEY_PROMTOOL (set by `scripts/stack up local`): Prometheus's promtool");
    let prometheus = std::path::Path::new(&promtool).with_file_name("prometheus");
    assert!(prometheus.exists(), "{} is missing: `apt-get install prometheus` (scripts/stack up local installs it)", prometheus.display());
    let p = Project::from_shipped("quickstart.yaml", |t| t);
    ok(&p.galley(&["up"]));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_galley")).current_dir(p.path()).args(["export", "prometheus"]).arg(&p.blueprint).args(["--dir", "prom"]).output().unwrap();
    ok(&out);
    let dir = p.path().join("prom");
    let tool = |args: &[&str], in_dir: &std::path::Path| std::process::Command::new(&promtool).current_dir(in_dir).args(args).output().unwrap();
    ok(&tool(&["check", "config", "prometheus.yml"], &dir));
    ok(&tool(&["check", "rules", "rules/galley.rules.yml"], &dir));
    ok(&tool(&["test", "rules", "galley.rules.test.yml"], &dir.join("rules")));
    let tests = std::fs::read_to_string(dir.join("rules/galley.rules.test.yml")).unwrap();
    std::fs::write(dir.join("rules/wrong.test.yml"), tests.replace("severity: page", "severity: info")).unwrap();
    assert!(!tool(&["test", "rules", "wrong.test.yml"], &dir.join("rules")).status.success(), "promtool passed a wrong expectation");

    // A real Prometheus, on a free port, scraping through the targets file.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new(&prometheus)
        .current_dir(&dir)
        .args(["--config.file=prometheus.yml", &format!("--web.listen-address=127.0.0.1:{port}"), "--storage.tsdb.path=data"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let query = format!("http://127.0.0.1:{port}/api/v1/query?query=up%7Bjob%3D%22galley%22%7D");
    let mut last = Json::Null;
    let up = (0..120).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let Ok(o) = std::process::Command::new("curl").args(["-fs", &query]).output() else { return false };
        last = serde_json::from_slice(&o.stdout).unwrap_or(Json::Null);
        last["data"]["result"][0]["value"][1] == "1"
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "Prometheus never scraped the endpoint: {last}");
    assert_eq!(last["data"]["result"][0]["metric"]["galley_endpoint"], "wine-quality", "{last}");
    ok(&p.galley(&["destroy", "--auto-approve"]));
}
