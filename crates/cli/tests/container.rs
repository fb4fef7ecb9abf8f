//! `galley container train|serve`: the entrypoint of Galley's image, run as SageMaker runs a
//! container (the `/opt/ml` layout, `train` and `serve`, `/ping` and `/invocations`): first the
//! binary directly on a directory laid out as SageMaker lays out `/opt/ml`, then the image
//! itself, built from this binary (`providers/aws/scripts/image`, buildah) and run by podman.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

#[cfg(feature = "aws")]
#[path = "../../../providers/aws/tests/common/image.rs"]
mod image;

use galley_aws::container::{self, MODEL_FILE};
use galley_blueprint::{LoadOptions, PlatformRegistry, load_file};
use galley_core::stages::{TrainingData, TrainingJob};
use serde_json::{Value, json};

fn galley() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_galley"));
    c.env("NO_COLOR", "1").env_remove("GALLEY_OUTPUT");
    c
}

/// The quickstart's prepared training split, as the train step hands it to a managed job and
/// the aws provider lays it out for the container.
fn quickstart_input() -> (container::TrainingInput, galley_ml::Prepared, TrainingJob) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints/quickstart.yaml");
    let registry = PlatformRegistry::default().with(galley_local::rules());
    let bp = load_file(&file, &LoadOptions::default(), &registry).unwrap_or_else(|d| panic!("{}", d.render(false))).blueprint;
    let ds = galley_ml::load_source(&bp.data.source, file.parent().unwrap()).unwrap();
    let features: Vec<String> = bp.stages.features.as_ref().map(|f| f.features.clone()).unwrap_or_default();
    let prepared = galley_ml::prepare(&ds.table, &bp.data, &features).unwrap();
    let training = bp.stages.training.clone().unwrap();
    let job = TrainingJob {
        name: "quickstart".into(),
        image: "galley:test".into(),
        instance_type: None,
        max_runtime_secs: 600,
        algorithm: training.algorithm.expect("the blueprint trains a built-in"),
        params: training.params.clone(),
        task: bp.data.task,
        data: TrainingData {
            label: bp.data.target.clone(),
            features: prepared.train.features.clone(),
            x: prepared.train.x.clone(),
            y: prepared.train.y.clone(),
            signature: prepared.signature.clone(),
        },
    };
    (container::training_input(&job).unwrap(), prepared, job)
}

#[test]
fn trains_and_serves_with_sagemakers_container_contract() {
    let (input, prepared, job) = quickstart_input();
    let root = tempfile::tempdir().unwrap();
    container::lay_out(root.path(), &input).unwrap();

    let out = galley().args(["container", "train", "--root"]).arg(root.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let model = std::fs::read(root.path().join("model").join(MODEL_FILE)).unwrap();
    let in_process = galley_ml::train(job.algorithm, &job.params, prepared.task, &prepared.train, &prepared.signature).unwrap();
    assert_eq!(model, in_process.to_bytes(), "the container trains exactly the model galley's process trains");

    // Serve it: port 0 picks a free one; the server names its URL on stderr.
    let mut server = Server(
        galley()
            .args(["container", "serve", "--bind", "127.0.0.1", "--port", "0", "--root"])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(server.0.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("the server exited before listening").unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].split_whitespace().next().unwrap().to_owned();
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let ping = rt.block_on(http.get(format!("{url}/ping")).send()).unwrap();
    assert_eq!(ping.status(), 200);

    let columns: Vec<&str> = prepared.signature.inputs.iter().map(|c| c.name.as_str()).collect();
    let rows: Vec<Vec<f64>> = prepared.test.x.iter().take(25).cloned().collect();
    let body = json!({"dataframe_split": {"columns": columns, "data": rows}});
    let answer = rt.block_on(async {
        let r = http.post(format!("{url}/invocations")).header("content-type", "application/json").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    });
    // The endpoint answers class labels (the model's score through its threshold).
    let want: Vec<f64> = in_process.predict_matrix(&rows).into_iter().map(|s| in_process.label(s)).collect();
    let got: Vec<f64> = answer["predictions"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(got, want, "{answer}");
    assert!(got.contains(&0.0) && got.contains(&1.0), "both classes among the rows: {got:?}");
}

/// Stops the server however the test ends (a leftover would hold the test's output open).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_failed_training_exits_non_zero_and_leaves_its_reason_for_the_platform() {
    let (mut input, _, _) = quickstart_input();
    input.hyperparameters.insert("galley_algorithm".into(), "gradient_boosting".into());
    let root = tempfile::tempdir().unwrap();
    container::lay_out(root.path(), &input).unwrap();
    let out = galley().args(["container", "train", "--root"]).arg(root.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let reason = std::fs::read_to_string(root.path().join("output/failure")).unwrap();
    assert!(reason.contains("gradient_boosting"), "{reason}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("gradient_boosting"));
    assert!(!root.path().join("model").join(MODEL_FILE).exists());
}

#[test]
fn serving_without_a_model_names_the_missing_file() {
    let root = tempfile::tempdir().unwrap();
    let out = galley().args(["container", "serve", "--port", "0", "--bind", "127.0.0.1", "--root"]).arg(root.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model/model.json"), "{err}");
}

/// Galley's image, built here from this very binary (`providers/aws/scripts/image`: FROM
/// scratch with the binary, the libraries it links and the CA bundle) and run under podman as
/// SageMaker runs it: `train` over a mounted `/opt/ml` writes the model Galley's process trains;
/// `serve` answers `/ping` and, to the exact bytes Galley's SageMaker client sends, the model's
/// predictions; the image goes through the OCI distribution API (a local registry) and comes
/// back with the same entrypoint. Its size is printed.
#[cfg(feature = "aws")]
#[test]
fn the_image_built_from_this_binary_trains_and_serves_under_podman() {
    let Some(podman) = image::Podman::find() else { return };
    let image = podman.build(Path::new(env!("CARGO_BIN_EXE_galley")));
    let tag = image.tag.clone();
    let size = podman.run(&["image", "inspect", "--format", "{{.Size}}", &tag]);
    println!("image {tag}: {} MB", size.trim().parse::<u64>().unwrap_or(0) / 1_000_000);

    // train: SageMaker mounts the job's /opt/ml and runs `IMAGE train`.
    let (input, prepared, job) = quickstart_input();
    let root = tempfile::tempdir().unwrap();
    container::lay_out(root.path(), &input).unwrap();
    let mount = format!("{}:/opt/ml", root.path().display());
    podman.run(&["run", "--rm", "--network", "none", "-v", &mount, &tag, "train"]);
    let model = std::fs::read(root.path().join("model").join(MODEL_FILE)).unwrap();
    let in_process = galley_ml::train(job.algorithm, &job.params, prepared.task, &prepared.train, &prepared.signature).unwrap();
    assert_eq!(model, in_process.to_bytes(), "the image trains exactly the model galley's process trains");

    // serve: `IMAGE serve` on the port SageMaker names (SAGEMAKER_BIND_TO_PORT), model read-only.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let name = format!("galley-test-{}", uuid::Uuid::new_v4().simple());
    let ro = format!("{}:/opt/ml:ro", root.path().display());
    let bind = format!("SAGEMAKER_BIND_TO_PORT={port}");
    podman.run(&["run", "-d", "--name", &name, "--network", "host", "-e", &bind, "-v", &ro, &tag, "serve"]);
    let mut remove = podman.command();
    remove.args(["rm", "-f", &name]);
    let _server = Removed(remove);
    let url = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !rt.block_on(http.get(format!("{url}/ping")).send()).is_ok_and(|r| r.status() == 200) {
        assert!(std::time::Instant::now() < deadline, "the container never answered /ping: {}", podman.run(&["logs", &name]));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let rows: Vec<Vec<f64>> = prepared.test.x.iter().take(25).cloned().collect();
    let table = galley_core::Table {
        columns: prepared.signature.inputs.clone(),
        rows: rows.iter().map(|r| r.iter().map(|v| galley_core::Value::Float(*v)).collect()).collect(),
    };
    let body = galley_aws::serving::scoring_body(&table, &prepared.signature).unwrap();
    let answer = rt.block_on(http.post(format!("{url}/invocations")).header("content-type", "application/json").body(body).send()).unwrap();
    assert_eq!(answer.status(), 200);
    let predictions = galley_aws::serving::parse_predictions(&rt.block_on(answer.bytes()).unwrap()).unwrap();
    let want: Vec<f64> = in_process.predict_matrix(&rows).into_iter().map(|s| in_process.label(s)).collect();
    assert_eq!(predictions, want, "the image's predictions are the model's");

    // The OCI distribution API: push to a registry started here, read the config back.
    let registry = Registry::start();
    let remote = format!("127.0.0.1:{}/galley:test", registry.port);
    podman.run(&["push", "--tls-verify=false", &tag, &format!("docker://{remote}")]);
    let config = Command::new("skopeo").args(["inspect", "--tls-verify=false", "--config"]).arg(format!("docker://{remote}")).output().unwrap();
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stderr));
    let config: Value = serde_json::from_slice(&config.stdout).unwrap();
    assert_eq!(config["config"]["Entrypoint"], json!(["/usr/local/bin/galley", "container"]), "{config}");
    assert_eq!(config["config"]["ExposedPorts"], json!({"8080/tcp": {}}), "{config}");
}

/// Runs a command when dropped (removes the container however the test ends).
#[cfg(feature = "aws")]
struct Removed(Command);

#[cfg(feature = "aws")]
impl Drop for Removed {
    fn drop(&mut self) {
        let _ = self.0.output();
    }
}

/// Debian's docker-registry (CNCF distribution) on a free loopback port, storing in a temp dir.
#[cfg(feature = "aws")]
struct Registry {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

#[cfg(feature = "aws")]
impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        std::fs::write(&config, format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n", storage.display())).unwrap();
        let child = Command::new("docker-registry").arg("serve").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let registry = Registry { port, child, _dir: dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        while !rt.block_on(http.get(format!("http://127.0.0.1:{port}/v2/")).send()).is_ok_and(|r| r.status() == 200) {
            assert!(std::time::Instant::now() < deadline, "docker-registry did not answer /v2/ on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        registry
    }
}

#[cfg(feature = "aws")]
impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
