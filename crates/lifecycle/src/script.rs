//! The user's training code (`stages.training.command`), run as a local process under
//! SageMaker's script-mode contract, so a script written for SageMaker runs unchanged:
//!
//! - the `/opt/ml` layout in a fresh job directory: `input/data/<channel>/<channel>.csv`,
//!   `input/config/hyperparameters.json`, `model/`, `output/data/`, `output/failure`;
//! - its variables: `SM_MODEL_DIR`, `SM_CHANNEL_TRAIN`, `SM_CHANNEL_VALIDATION`, `SM_CHANNELS`,
//!   `SM_OUTPUT_DATA_DIR`, `SM_OUTPUT_DIR`, `SM_INPUT_DIR`, `SM_INPUT_CONFIG_DIR`, `SM_HPS` (the
//!   blueprint's `params` plus `target` and `task`, as JSON) and `SM_HP_<NAME>` per parameter,
//!   `SM_NUM_CPUS`, `SM_NUM_GPUS`, `SM_CURRENT_HOST`, `SM_HOSTS`;
//! - channel files are CSV with a header: the features in the prepared order, then the target
//!   (0/1 for classification). `validation` holds the held-out rows `evaluate` scores;
//! - the script writes `model.onnx`, or an MLflow model directory (`MLmodel`) with the ONNX
//!   flavor, to `SM_MODEL_DIR`, and on failure its reason to `/opt/ml/output/failure`;
//! - every line it prints goes to the step's log; a line `galley.metric NAME=VALUE` is also
//!   logged to the experiment run as metric `training.NAME`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use galley_core::ml::{Task, VarValue};
use galley_core::stages::StepLogger;
use galley_core::{Error, Result};
use indexmap::IndexMap;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The prefix of a metric line in the script's output.
pub const METRIC_PREFIX: &str = "galley.metric ";
/// How much of the failure file and of the output's tail an error quotes.
const QUOTED: usize = 2000;
/// The script's output kept for the experiment run, at most this much (the start is dropped).
const MAX_LOG_BYTES: usize = 4 << 20;
/// Output files kept beside the model (SageMaker's `output.tar.gz`), at most this much in all.
const MAX_OUTPUT_BYTES: u64 = 256 << 20;

/// Everything the script gets.
pub(crate) struct ScriptJob<'a> {
    pub command: &'a str,
    pub code_dir: PathBuf,
    pub requirements: Option<PathBuf>,
    pub params: &'a IndexMap<String, VarValue>,
    pub target: &'a str,
    pub task: Task,
    pub features: &'a [String],
    pub train: (&'a [Vec<f64>], &'a [f64]),
    pub validation: (&'a [Vec<f64>], &'a [f64]),
    pub max_runtime: Option<Duration>,
}

/// What a successful script leaves.
pub(crate) struct ScriptOutput {
    /// The ONNX model's bytes.
    pub model: Vec<u8>,
    /// Where in the model directory it was found, for the log.
    pub found: String,
    /// The input columns an MLflow model's signature names, in order (none for a bare ONNX file).
    pub signature_columns: Option<Vec<String>>,
    pub metrics: Vec<(String, f64)>,
    /// `output/data` files, by path relative to it.
    pub outputs: Vec<(String, Vec<u8>)>,
    /// Everything the script printed (stdout and stderr, interleaved as read), for the run.
    pub log: String,
}

pub(crate) async fn run(job: &ScriptJob<'_>, log: &dyn StepLogger) -> Result<ScriptOutput> {
    let argv = galley_blueprint::split_command(job.command)
        .map_err(|why| Error::invalid(format!("`training.command` `{}`: {why}", job.command)))?;
    let (program, args) = argv.split_first().ok_or_else(|| Error::invalid("`training.command` is empty"))?;
    if !job.code_dir.is_dir() {
        return Err(Error::invalid(format!("`training.code` {} is not a directory", job.code_dir.display())));
    }
    let venv = match &job.requirements {
        Some(req) => Some(ensure_venv(req, log).await?),
        None => None,
    };

    let dir = tempfile::Builder::new().prefix("galley-training-").tempdir()?;
    let ml = dir.path().join("opt").join("ml");
    let paths = Layout::new(&ml);
    paths.create()?;
    write_channel(&paths.channel("train"), "train", job.features, job.target, job.train)?;
    write_channel(&paths.channel("validation"), "validation", job.features, job.target, job.validation)?;
    let hps = hyperparameters(job);
    // SageMaker's hyperparameters.json holds every value as a string; SM_HPS keeps their types.
    let as_strings: BTreeMap<&String, String> =
        hps.iter().map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect();
    std::fs::write(paths.config.join("hyperparameters.json"), serde_json::to_vec_pretty(&as_strings)?)?;

    let mut cmd = tokio::process::Command::new(resolve_program(program, venv.as_deref()));
    cmd.args(args)
        .current_dir(&job.code_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in paths.env(&hps) {
        cmd.env(k, v);
    }
    if let Some(venv) = &venv {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![venv.join("bin")];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).map_err(|e| Error::internal(e.to_string()))?);
        cmd.env("VIRTUAL_ENV", venv);
    }
    log.line(&format!("running `{}` in {}", job.command, job.code_dir.display()));
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        Error::invalid(format!(
            "cannot start `training.command` `{program}`: {e}{}",
            if e.kind() == std::io::ErrorKind::NotFound { " (not on PATH, nor in the training virtualenv)" } else { "" }
        ))
    })?;

    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut metrics = Vec::new();
    let mut tail: Vec<String> = Vec::new();
    let mut full_log = String::new();
    let mut seen = |line: String, metrics: &mut Vec<(String, f64)>| {
        if let Some(m) = parse_metric(&line) {
            metrics.push(m);
        }
        log.line(&line);
        full_log.push_str(&line);
        full_log.push('\n');
        if full_log.len() > MAX_LOG_BYTES {
            let mut cut = full_log.len() - MAX_LOG_BYTES / 2;
            while !full_log.is_char_boundary(cut) {
                cut += 1;
            }
            full_log.replace_range(..cut, "…\n");
        }
        tail.push(line);
        if tail.len() > 40 {
            tail.remove(0);
        }
    };
    let deadline = job.max_runtime.map(|d| tokio::time::Instant::now() + d);
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    let (mut out_done, mut err_done) = (false, false);
    let timed_out = loop {
        if out_done && err_done {
            break false;
        }
        tokio::select! {
            line = out.next_line(), if !out_done => match line? {
                Some(l) => seen(l, &mut metrics),
                None => out_done = true,
            },
            line = err.next_line(), if !err_done => match line? {
                Some(l) => seen(l, &mut metrics),
                None => err_done = true,
            },
            _ = &mut sleep => break true,
        }
    };
    if timed_out {
        let _ = child.kill().await;
        return Err(Error::new(
            galley_core::ErrorKind::Timeout,
            format!(
                "training command `{}` ran past `max_runtime` ({}) and was stopped; nothing was registered",
                job.command,
                humantime(job.max_runtime.unwrap_or_default())
            ),
        ));
    }
    let status = child.wait().await?;
    let failure = std::fs::read_to_string(paths.output.join("failure")).ok().filter(|s| !s.trim().is_empty());
    if !status.success() {
        let why = match failure {
            Some(f) => format!("its failure file says: {}", clip(f.trim())),
            None => format!("its last output:\n{}", clip(&tail.join("\n"))),
        };
        return Err(Error::invalid(format!("training command `{}` failed ({status}); {why}", job.command)));
    }
    let (model, found, signature_columns) = read_model(&paths.model)?;
    log.line(&format!("training command finished in {:.1} s; model {found} ({} bytes)", started.elapsed().as_secs_f64(), model.len()));
    let outputs = read_outputs(&paths.output_data)?;
    Ok(ScriptOutput { model, found, signature_columns, metrics, outputs, log: full_log })
}

/// `/opt/ml` under the job directory.
struct Layout {
    input: PathBuf,
    config: PathBuf,
    model: PathBuf,
    output: PathBuf,
    output_data: PathBuf,
}

impl Layout {
    fn new(ml: &Path) -> Layout {
        Layout {
            input: ml.join("input"),
            config: ml.join("input").join("config"),
            model: ml.join("model"),
            output: ml.join("output"),
            output_data: ml.join("output").join("data"),
        }
    }

    fn channel(&self, name: &str) -> PathBuf {
        self.input.join("data").join(name)
    }

    fn create(&self) -> Result<()> {
        for d in [&self.config, &self.model, &self.output_data, &self.channel("train"), &self.channel("validation")] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    fn env(&self, hps: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, String)> {
        let p = |p: &Path| p.display().to_string();
        let mut env = vec![
            ("SM_MODEL_DIR".into(), p(&self.model)),
            ("SM_CHANNEL_TRAIN".into(), p(&self.channel("train"))),
            ("SM_CHANNEL_VALIDATION".into(), p(&self.channel("validation"))),
            ("SM_CHANNELS".into(), r#"["train","validation"]"#.into()),
            ("SM_INPUT_DIR".into(), p(&self.input)),
            ("SM_INPUT_CONFIG_DIR".into(), p(&self.config)),
            ("SM_OUTPUT_DIR".into(), p(&self.output)),
            ("SM_OUTPUT_DATA_DIR".into(), p(&self.output_data)),
            ("SM_HPS".into(), serde_json::Value::Object(hps.clone()).to_string()),
            ("SM_NUM_CPUS".into(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string()),
            ("SM_NUM_GPUS".into(), "0".into()),
            ("SM_CURRENT_HOST".into(), "algo-1".into()),
            ("SM_HOSTS".into(), r#"["algo-1"]"#.into()),
        ];
        for (k, v) in hps {
            let v = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
            env.push((format!("SM_HP_{}", k.to_uppercase()), v));
        }
        env
    }
}

/// The blueprint's params (whole numbers as JSON integers, so `range(hps["epochs"])` works),
/// then `target` and `task`.
fn hyperparameters(job: &ScriptJob<'_>) -> serde_json::Map<String, serde_json::Value> {
    let mut hps = serde_json::Map::new();
    for (k, v) in job.params {
        let v = match v {
            VarValue::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => serde_json::json!(*n as i64),
            VarValue::Number(n) => serde_json::json!(n),
            VarValue::Bool(b) => serde_json::json!(b),
            VarValue::String(s) => serde_json::json!(s),
        };
        hps.insert(k.clone(), v);
    }
    hps.insert("target".into(), job.target.into());
    let task = match job.task {
        Task::Classification => "classification",
        Task::Regression => "regression",
    };
    hps.insert("task".into(), task.into());
    hps
}

fn write_channel(dir: &Path, name: &str, features: &[String], target: &str, (x, y): (&[Vec<f64>], &[f64])) -> Result<()> {
    let mut w = csv::Writer::from_path(dir.join(format!("{name}.csv"))).map_err(|e| Error::internal(e.to_string()))?;
    let header: Vec<&str> = features.iter().map(String::as_str).chain(std::iter::once(target)).collect();
    w.write_record(&header).map_err(|e| Error::internal(e.to_string()))?;
    for (row, t) in x.iter().zip(y) {
        // `{}` of an f64 is the shortest text that reads back as the same number.
        w.write_record(row.iter().chain(std::iter::once(t)).map(|v| v.to_string())).map_err(|e| Error::internal(e.to_string()))?;
    }
    w.flush()?;
    Ok(())
}

fn parse_metric(line: &str) -> Option<(String, f64)> {
    let rest = line.trim().strip_prefix(METRIC_PREFIX)?;
    let (name, value) = rest.trim().split_once('=')?;
    let name = name.trim();
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
    let value: f64 = value.trim().parse().ok()?;
    (ok && value.is_finite()).then(|| (format!("training.{name}"), value))
}

/// An MLflow model's `MLmodel` (YAML): the onnx flavor's file, every flavor's name, and the
/// input columns its signature names.
struct MlModel {
    onnx_file: Option<String>,
    flavors: Vec<String>,
    columns: Option<Vec<String>>,
}

/// `MLmodel` first (an MLflow model directory also holds a `model.onnx`), else `model.onnx`.
fn read_model(dir: &Path) -> Result<(Vec<u8>, String, Option<Vec<String>>)> {
    let mlmodel = dir.join("MLmodel");
    if mlmodel.is_file() {
        let MlModel { onnx_file: file, flavors, columns } = mlflow_model(&std::fs::read_to_string(&mlmodel)?)?;
        let Some(file) = file else {
            return Err(Error::unsupported(format!(
                "the training command wrote an MLflow model of flavor(s) {}; Galley serves MLflow models with the `onnx` flavor \
                 (log it with `mlflow.onnx.log_model` / `save_model`), and serving other flavors through MLflow's scoring \
                 server is not built yet",
                flavors.join(", ")
            )));
        };
        let path = dir.join(&file);
        let bytes = std::fs::read(&path).map_err(|e| Error::invalid(format!("the MLflow model's onnx flavor names `{file}`, which cannot be read: {e}")))?;
        return Ok((bytes, format!("MLmodel (onnx flavor, {file})"), columns));
    }
    let onnx = dir.join("model.onnx");
    if onnx.is_file() {
        return Ok((std::fs::read(&onnx)?, "model.onnx".into(), None));
    }
    let found: Vec<String> = std::fs::read_dir(dir)?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    Err(Error::invalid(format!(
        "the training command succeeded but wrote no model: expected `model.onnx`, or an MLflow model (`MLmodel` with the onnx \
         flavor), in SM_MODEL_DIR; it holds {}",
        if found.is_empty() { "nothing".to_owned() } else { found.join(", ") }
    )))
}

fn mlflow_model(text: &str) -> Result<MlModel> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).map_err(|e| Error::invalid(format!("the model's MLmodel file is not YAML: {e}")))?;
    let flavors = docs.first().map(|d| &d["flavors"]).filter(|f| !f.is_badvalue());
    let Some(Yaml::Hash(flavors)) = flavors else {
        return Err(Error::invalid("the model's MLmodel file has no `flavors`"));
    };
    let names = flavors.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect();
    let file = flavors.get(&Yaml::String("onnx".into())).and_then(|f| f["data"].as_str().map(str::to_owned));
    // `signature.inputs` is JSON inside the YAML: a column-based signature is a list of
    // `{"name", "type"}`; a tensor-based one has no names, and says nothing about columns.
    let columns = match docs[0]["signature"]["inputs"].as_str() {
        Some(json) => {
            let specs: Vec<serde_json::Value> = serde_json::from_str(json)
                .map_err(|e| Error::invalid(format!("the MLmodel signature's `inputs` is not JSON: {e}")))?;
            let names: Option<Vec<String>> = specs.iter().map(|c| c["name"].as_str().map(str::to_owned)).collect();
            names.filter(|n| !n.is_empty())
        }
        None => None,
    };
    Ok(MlModel { onnx_file: file, flavors: names, columns })
}

fn read_outputs(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for path in files_under(dir)? {
        let rel = path.strip_prefix(dir).expect("under dir").to_string_lossy().replace('\\', "/");
        total += std::fs::metadata(&path)?.len();
        if total > MAX_OUTPUT_BYTES {
            return Err(Error::invalid(format!(
                "the training command left more than {} MiB in SM_OUTPUT_DATA_DIR; keep large artifacts in the model directory or elsewhere",
                MAX_OUTPUT_BYTES >> 20
            )));
        }
        out.push((rel, std::fs::read(&path)?));
    }
    Ok(out)
}

/// Regular files under `dir`, sorted, skipping what is never code (VCS, caches, virtualenvs,
/// Galley's own state).
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    const SKIP: [&str; 7] = [".git", "__pycache__", ".venv", "venv", "node_modules", ".galley", ".ipynb_checkpoints"];
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)?.flatten() {
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                if !SKIP.contains(&entry.file_name().to_string_lossy().as_ref()) {
                    stack.push(path);
                }
            } else if ty.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What identifies the training code for caching: every file under `code` (path and content)
/// and the requirements file. Editing `train.py` retrains; a cached model is the code's.
pub(crate) fn code_digest(code_dir: &Path, requirements: Option<&Path>) -> Result<String> {
    let mut h = Sha256::new();
    let files = files_under(code_dir).map_err(|e| Error::invalid(format!("cannot read `training.code` {}: {e}", code_dir.display())))?;
    for f in files {
        h.update(f.strip_prefix(code_dir).expect("under dir").to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(&f)?);
        h.update([0]);
    }
    if let Some(r) = requirements {
        h.update(b"requirements\0");
        h.update(std::fs::read(r).map_err(|e| Error::invalid(format!("cannot read `training.requirements` {}: {e}", r.display())))?);
    }
    Ok(hex::encode(h.finalize()))
}

/// A program named without a directory is looked up in the virtualenv first, as activating
/// it would.
fn resolve_program(program: &str, venv: Option<&Path>) -> PathBuf {
    if let Some(venv) = venv
        && !program.contains('/')
    {
        let candidate = venv.join("bin").join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from(program)
}

/// Where built training environments are kept: `GALLEY_CACHE_DIR`, else the XDG cache.
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GALLEY_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("galley")
}

/// The virtualenv for a requirements file, built once per content with uv and reused: built
/// in a scratch directory (relocatable) and renamed into place, so a build that fails or is
/// interrupted never leaves a half-made environment to be reused.
async fn ensure_venv(requirements: &Path, log: &dyn StepLogger) -> Result<PathBuf> {
    let text = std::fs::read(requirements)
        .map_err(|e| Error::invalid(format!("cannot read `training.requirements` {}: {e}", requirements.display())))?;
    let hash = hex::encode(Sha256::digest(&text));
    let root = cache_dir().join("venvs");
    let venv = root.join(&hash[..20]);
    if venv.join("bin").join("python").exists() {
        log.line(&format!("training environment {} (cached, from {})", venv.display(), requirements.display()));
        return Ok(venv);
    }
    std::fs::create_dir_all(&root)?;
    let scratch = root.join(format!(".{}-{}", &hash[..20], std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let started = Instant::now();
    log.line(&format!("building the training environment from {} with uv …", requirements.display()));
    let uv = |args: &[&std::ffi::OsStr]| {
        let mut c = tokio::process::Command::new("uv");
        c.args(args).stdin(Stdio::null()).kill_on_drop(true);
        c
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let steps: [Vec<std::ffi::OsString>; 2] = [
        vec![os("venv"), os("--quiet"), os("--relocatable"), scratch.clone().into_os_string()],
        vec![os("pip"), os("install"), os("--quiet"), os("--python"), scratch.join("bin").join("python").into_os_string(), os("-r"), requirements.as_os_str().to_owned()],
    ];
    for args in &steps {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let out = uv(&refs).output().await.map_err(|e| {
            Error::invalid(format!(
                "`training.requirements` needs uv to build the training environment, and it cannot be run ({e}): \
                 `pip install uv` (or see https://docs.astral.sh/uv/), or remove `requirements:` to use the Python on PATH"
            ))
        })?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(Error::invalid(format!(
                "uv could not build the training environment from {}: {}",
                requirements.display(),
                clip(String::from_utf8_lossy(&out.stderr).trim())
            )));
        }
    }
    if let Err(e) = std::fs::rename(&scratch, &venv) {
        // Another run built the same environment meanwhile: use theirs.
        let _ = std::fs::remove_dir_all(&scratch);
        if !venv.join("bin").join("python").exists() {
            return Err(Error::from(e).operation("install the training environment"));
        }
    }
    log.line(&format!("training environment {} built in {:.1} s", venv.display(), started.elapsed().as_secs_f64()));
    Ok(venv)
}

fn clip(s: &str) -> String {
    if s.len() <= QUOTED {
        return s.to_owned();
    }
    let mut cut = s.len() - QUOTED;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &s[cut..])
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines() {
        assert_eq!(parse_metric("galley.metric loss=0.25"), Some(("training.loss".into(), 0.25)));
        assert_eq!(parse_metric("  galley.metric val/auc = 0.9 "), Some(("training.val/auc".into(), 0.9)));
        assert_eq!(parse_metric("galley.metric loss=nan"), None);
        assert_eq!(parse_metric("galley.metric bad name=1"), None);
        assert_eq!(parse_metric("loss=0.25"), None);
    }

    #[test]
    fn mlmodel_onnx_flavor() {
        let text = "artifact_path: model\nflavors:\n  onnx:\n    data: model.onnx\n    onnx_version: 1.17.0\n  python_function:\n    loader_module: mlflow.onnx\n";
        let m = mlflow_model(text).unwrap();
        assert_eq!(m.onnx_file.as_deref(), Some("model.onnx"));
        assert_eq!(m.flavors, vec!["onnx", "python_function"]);
        assert_eq!(m.columns, None);
        let m = mlflow_model("flavors:\n  sklearn:\n    pickled_model: model.pkl\n").unwrap();
        assert_eq!(m.onnx_file, None);
        let signed = format!("{text}signature:\n  inputs: '[{{\"type\": \"double\", \"name\": \"alcohol\", \"required\": true}}, {{\"type\": \"double\", \"name\": \"ph\"}}]'\n");
        assert_eq!(mlflow_model(&signed).unwrap().columns, Some(vec!["alcohol".to_owned(), "ph".to_owned()]));
    }
}
