//! The container contract of `training.compute: managed` on aws: SageMaker's training contract
//! (which Vertex AI custom jobs and Azure ML command jobs can be given as well), compiled
//! without the AWS SDK because Galley's image implements it (`galley container train`):
//!
//! - `<root>/input/config/hyperparameters.json`: a string → string object;
//! - `<root>/input/data/train/`: the `train` channel (`train.csv`, `signature.json`);
//! - `<root>/model/`: what the job leaves (`model.json`), packed by the platform;
//! - `<root>/output/failure`: why the job failed, shown by the platform as its failure reason.
//!
//! The provider writes the channel and the hyperparameters from a neutral
//! [`TrainingJob`] ([`training_input`]) and Galley's image reads them ([`train_in_container`]),
//! so the format is defined once, here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use galley_core::ml::{Algorithm, Task, VarValue};
use galley_core::stages::{Signature, TrainingJob};
use galley_core::{Error, Result};
use galley_ml::Frame;
use indexmap::IndexMap;

/// Where SageMaker mounts a job's files.
pub const DEFAULT_ROOT: &str = "/opt/ml";
/// The input channel Galley fills.
pub const CHANNEL: &str = "train";
/// The model file a job leaves in `<root>/model/`.
pub const MODEL_FILE: &str = "model.json";
/// Bumped on any incompatible change to the files or hyperparameters below.
pub const CONTRACT_VERSION: &str = "1";

const DATA_FILE: &str = "train.csv";
const SIGNATURE_FILE: &str = "signature.json";
const HP_CONTRACT: &str = "galley_contract";
const HP_ALGORITHM: &str = "galley_algorithm";
const HP_TASK: &str = "galley_task";

/// What a managed training job is given: the channel's files and the hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingInput {
    /// (file name inside the channel, bytes)
    pub files: Vec<(String, Vec<u8>)>,
    pub hyperparameters: BTreeMap<String, String>,
}

/// The channel for `job`'s rows: a CSV with the label first (the layout SageMaker's built-in
/// algorithms read too) and a header naming the columns, plus the signature the model must
/// carry; the algorithm, task and params as hyperparameters.
pub fn training_input(job: &TrainingJob) -> Result<TrainingInput> {
    let data = &job.data;
    let mut csv = csv::Writer::from_writer(Vec::new());
    let header = std::iter::once(data.label.clone()).chain(data.features.iter().cloned());
    csv.write_record(header).map_err(csv_error)?;
    for (row, y) in data.x.iter().zip(&data.y) {
        // `Display` of f64 is the shortest text that reads back to the same bits, so a job
        // trains on exactly the numbers Galley holds.
        let cells = std::iter::once(y.to_string()).chain(row.iter().map(f64::to_string));
        csv.write_record(cells).map_err(csv_error)?;
    }

    let csv = csv.into_inner().map_err(|e| Error::internal(format!("cannot finish the training CSV: {e}")))?;

    let mut hyperparameters: BTreeMap<String, String> = job.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    hyperparameters.insert(HP_CONTRACT.into(), CONTRACT_VERSION.into());
    hyperparameters.insert(HP_ALGORITHM.into(), enum_name(&job.algorithm)?);
    hyperparameters.insert(HP_TASK.into(), enum_name(&job.task)?);
    Ok(TrainingInput {
        files: vec![(DATA_FILE.into(), csv), (SIGNATURE_FILE.into(), serde_json::to_vec_pretty(&data.signature)?)],
        hyperparameters,
    })
}

/// Lays `input` out under `root` as the platform does before it starts a training container
/// (to run Galley's image, or `galley container train`, outside the platform).
pub fn lay_out(root: &Path, input: &TrainingInput) -> Result<()> {
    let io = |path: &Path| {
        let shown = path.display().to_string();
        move |e: std::io::Error| Error::from(e).resource(shown)
    };
    let channel = root.join("input/data").join(CHANNEL);
    let config = root.join("input/config");
    std::fs::create_dir_all(&channel).map_err(io(&channel))?;
    std::fs::create_dir_all(&config).map_err(io(&config))?;
    for (name, bytes) in &input.files {
        let path = channel.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    let path = config.join("hyperparameters.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&input.hyperparameters)?).map_err(io(&path))
}

/// Trains as a managed job's container does: reads the contract's files under `root`, writes
/// `<root>/model/model.json`, and on failure writes the reason to `<root>/output/failure`
/// (which the platform reports) before returning the error.
pub fn train_in_container(root: &Path) -> Result<PathBuf> {
    let outcome = train_at(root);
    if let Err(e) = &outcome {
        let dir = root.join("output");
        // Best effort: the error is returned either way.
        let _ = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(dir.join("failure"), e.to_string()));
    }
    outcome
}

fn train_at(root: &Path) -> Result<PathBuf> {
    let hp_path = root.join("input/config/hyperparameters.json");
    let hp: BTreeMap<String, String> = serde_json::from_slice(&read(&hp_path)?)
        .map_err(|e| Error::invalid(format!("{} is not a string → string JSON object: {e}", hp_path.display())))?;
    match hp.get(HP_CONTRACT).map(String::as_str) {
        Some(CONTRACT_VERSION) => {}
        other => {
            return Err(Error::invalid(format!(
                "{}: `{HP_CONTRACT}` is {other:?}, this galley speaks contract {CONTRACT_VERSION:?}; use the same galley version for the image and the CLI",
                hp_path.display()
            )));
        }
    }
    let required = |k: &str| hp.get(k).ok_or_else(|| Error::invalid(format!("{}: hyperparameter `{k}` is missing", hp_path.display())));
    // Hyperparameters travel as strings; galley-ml reads numbers from strings.
    let params: IndexMap<String, VarValue> =
        hp.iter().filter(|(k, _)| !k.starts_with("galley_")).map(|(k, v)| (k.clone(), VarValue::String(v.clone()))).collect();
    let algorithm: Algorithm = serde_json::from_value(serde_json::json!(required(HP_ALGORITHM)?))
        .map_err(|e| Error::invalid(format!("{}: {e}", hp_path.display())))?;
    let task: Task = serde_json::from_value(serde_json::json!(required(HP_TASK)?)).map_err(|e| Error::invalid(format!("{}: {e}", hp_path.display())))?;

    let channel = root.join("input/data").join(CHANNEL);
    let signature: Signature = serde_json::from_slice(&read(&channel.join(SIGNATURE_FILE))?)
        .map_err(|e| Error::invalid(format!("{}: {e}", channel.join(SIGNATURE_FILE).display())))?;
    let frame = read_frame(&channel.join(DATA_FILE))?;
    let model = galley_ml::train(algorithm, &params, task, &frame, &signature)?;

    let dir = root.join("model");
    std::fs::create_dir_all(&dir).map_err(|e| Error::from(e).resource(dir.display().to_string()))?;
    let path = dir.join(MODEL_FILE);
    std::fs::write(&path, model.to_bytes()).map_err(|e| Error::from(e).resource(path.display().to_string()))?;
    Ok(path)
}

/// Serves `<root>/model/model.json` with SageMaker's inference contract (`/ping`,
/// `/invocations`) through Galley's model server. SageMaker signs and authorises every
/// InvokeEndpoint before a request reaches the container, so the server binds every interface
/// without a token of its own.
#[cfg(feature = "runtime")]
pub async fn serve(root: &Path, bind: std::net::IpAddr, port: u16) -> Result<()> {
    use galley_server::{DEFAULT_MAX_BODY_BYTES, ServerConfig, VariantConfig};
    let model_path = root.join("model").join(MODEL_FILE);
    let bytes = read(&model_path).map_err(|e| Error::not_found(format!("cannot read the model at {}: {e}", model_path.display())))?;
    let model = galley_ml::TrainedModel::from_bytes(&bytes)?;
    let run_dir = std::env::temp_dir().join(format!("galley-container-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::from(e).resource(run_dir.display().to_string()))?;
    let config = ServerConfig {
        endpoint: "container".into(),
        bind,
        port,
        token_env: None,
        token: None,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        variants: vec![VariantConfig { name: "model".into(), model_path, weight: 1, model: None, version: None }],
        signature: model.signature().clone(),
        monitor_dir: None,
        state_file: run_dir.join("state.json"),
        platform_authenticated: true,
    };
    let path = run_dir.join("endpoint.json");
    config.write(&path)?;
    galley_server::run_server(&path).await
}

fn read_frame(path: &Path) -> Result<Frame> {
    let bad = |what: String| Error::invalid(format!("{}: {what}", path.display()));
    let mut reader = csv::Reader::from_reader(std::io::Cursor::new(read(path)?));
    let header = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let features: Vec<String> = header.iter().skip(1).map(str::to_owned).collect();
    let mut frame = Frame { features, x: Vec::new(), y: Vec::new() };
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let mut cells = record.iter().map(|c| c.parse::<f64>().map_err(|_| bad(format!("line {}: `{c}` is not a number", i + 2))));
        let y = cells.next().ok_or_else(|| bad(format!("line {} is empty", i + 2)))??;
        frame.y.push(y);
        frame.x.push(cells.collect::<Result<Vec<f64>>>()?);
    }
    Ok(frame)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::from(e).resource(path.display().to_string()))
}

fn csv_error(e: csv::Error) -> Error {
    Error::internal(format!("cannot write the training CSV: {e}"))
}

/// The snake_case name serde gives a unit variant.
fn enum_name<T: serde::Serialize>(value: &T) -> Result<String> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(Error::internal(format!("expected a unit variant, found {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::DType;
    use galley_core::stages::TrainingData;
    use galley_core::table::Column;

    fn job(algorithm: Algorithm, params: &[(&str, f64)]) -> TrainingJob {
        let x: Vec<Vec<f64>> = (0..60).map(|i| vec![i as f64 * 0.1, (i % 7) as f64 / 3.0]).collect();
        let y = x.iter().map(|r| if r[0] + r[1] > 3.0 { 1.0 } else { 0.0 }).collect();
        let signature = Signature { inputs: vec![Column::new("a", DType::Float), Column::new("b", DType::Float)], output: None };
        TrainingJob {
            name: "job".into(),
            image: "galley:test".into(),
            instance_type: None,
            max_runtime_secs: 60,
            algorithm,
            params: params.iter().map(|(k, v)| ((*k).to_owned(), VarValue::Number(*v))).collect(),
            task: Task::Classification,
            data: TrainingData { label: "label".into(), features: vec!["a".into(), "b".into()], x, y, signature },
        }
    }

    fn in_process(job: &TrainingJob) -> Vec<u8> {
        let frame = Frame { features: job.data.features.clone(), x: job.data.x.clone(), y: job.data.y.clone() };
        galley_ml::train(job.algorithm, &job.params, job.task, &frame, &job.data.signature).unwrap().to_bytes()
    }

    #[test]
    fn the_container_trains_the_same_model_as_galleys_process() {
        let job = job(Algorithm::LogisticRegression, &[("max_iterations", 50.0)]);
        let input = training_input(&job).unwrap();
        assert_eq!(input.hyperparameters["galley_algorithm"], "logistic_regression");
        assert_eq!(input.hyperparameters["max_iterations"], "50");
        let dir = tempfile::tempdir().unwrap();
        lay_out(dir.path(), &input).unwrap();

        let path = train_in_container(dir.path()).unwrap();
        let in_container = std::fs::read(path).unwrap();
        assert_eq!(in_container, in_process(&job), "the CSV round trip must not change a single bit");
        let model = galley_ml::TrainedModel::from_bytes(&in_container).unwrap();
        assert_eq!(model.signature(), &job.data.signature);
    }

    #[test]
    fn a_failing_job_leaves_its_reason_where_the_platform_reads_it() {
        let mut input = training_input(&job(Algorithm::LogisticRegression, &[])).unwrap();
        input.hyperparameters.insert("galley_contract".into(), "99".into());
        let dir = tempfile::tempdir().unwrap();
        lay_out(dir.path(), &input).unwrap();
        let e = train_in_container(dir.path()).unwrap_err();
        assert!(e.to_string().contains("contract"), "{e}");
        let reason = std::fs::read_to_string(dir.path().join("output/failure")).unwrap();
        assert!(reason.contains("galley_contract"), "{reason}");
        assert!(!dir.path().join("model").join(MODEL_FILE).exists());
    }
}
