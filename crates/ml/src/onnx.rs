//! ONNX models, scored in-process by ONNX Runtime.
//!
//! The runtime is the `libonnxruntime.so` inside PyPI's `onnxruntime` wheel, loaded the first
//! time an ONNX model is opened (so nothing that serves Galley's own models needs it): it runs
//! the ONNX-ML operators scikit-learn, XGBoost and LightGBM converters emit, which the pure-Rust
//! runtimes do not (see `../shared/emulators.md`).
//!
//! A registered ONNX model carries Galley's input contract inside it, as `metadata_props`
//! (`galley.signature`, `galley.task`): a model with one 2-D input does not name its features,
//! and the server must know them. The file stays a standard ONNX model any tool reads.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use galley_core::ml::Task;
use galley_core::stages::Signature;
use galley_core::{Error, Result};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

/// `metadata_props` keys Galley writes into a registered ONNX model.
pub const META_SIGNATURE: &str = "galley.signature";
pub const META_TASK: &str = "galley.task";

/// How the prepared features reach the model's inputs.
#[derive(Debug, Clone)]
enum Layout {
    /// One `[N, F]` tensor, the features in signature order (skl2onnx's `FloatTensorType([None, F])`).
    Matrix { name: String, elem: Elem },
    /// One `[N, 1]` tensor per feature, matched by name; `feature` indexes the signature.
    PerFeature(Vec<(String, Elem, usize)>),
}

#[derive(Debug, Clone, Copy)]
enum Elem {
    F32,
    F64,
    I64,
}

/// An ONNX model and the sessions that score it.
pub struct OnnxModel {
    /// `Session::run` takes `&mut self`: one session per concurrent scorer, taken in turn.
    sessions: Vec<Mutex<Session>>,
    next: std::sync::atomic::AtomicUsize,
    layout: Layout,
    signature: Signature,
    task: Task,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").field("layout", &self.layout).field("task", &self.task).finish_non_exhaustive()
    }
}

/// What scoring rows gives: per row, the score (classification: probability of class 1;
/// regression: the value) and the label the model answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scores {
    pub scores: Vec<f64>,
    pub labels: Vec<f64>,
}

/// ONNX's protobuf starts with field 1 (`ir_version`, a varint): tag byte 0x08. Galley's JSON
/// models start with `{`. Anything else is neither.
pub fn looks_like_onnx(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x08)
}

impl OnnxModel {
    /// Opens a registered model: its signature and task come from its metadata.
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxModel> {
        let probe = session(bytes)?;
        let meta = probe.metadata().map_err(ort_err("read the ONNX model's metadata"))?;
        let (Some(signature), Some(task)) = (meta.custom(META_SIGNATURE), meta.custom(META_TASK)) else {
            return Err(Error::invalid(format!(
                "the ONNX model carries no Galley signature (`{META_SIGNATURE}` metadata): register it through \
                 `galley run`, which checks it against the prepared data and records its inputs"
            )));
        };
        drop(meta);
        let signature: Signature = serde_json::from_str(&signature)
            .map_err(|e| Error::corrupt(format!("the ONNX model's `{META_SIGNATURE}` metadata is damaged: {e}")))?;
        let task: Task = serde_json::from_value(serde_json::Value::String(task.clone()))
            .map_err(|_| Error::corrupt(format!("the ONNX model's `{META_TASK}` metadata names no task: `{task}`")))?;
        Self::open(bytes, probe, signature, task)
    }

    /// Opens a model the user's training code wrote, checking that its inputs take `signature`'s
    /// features; returns it and the bytes to register (the model with Galley's metadata added).
    pub fn adopt(bytes: &[u8], signature: &Signature, task: Task) -> Result<(OnnxModel, Vec<u8>)> {
        let probe = session(bytes)?;
        let tagged = with_signature(bytes, signature, task)?;
        let model = Self::open(&tagged, probe, signature.clone(), task)?;
        Ok((model, tagged))
    }

    fn open(bytes: &[u8], probe: Session, signature: Signature, task: Task) -> Result<OnnxModel> {
        let layout = layout(&probe, &signature)?;
        check_outputs(&probe)?;
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
        let mut sessions = vec![Mutex::new(probe)];
        for _ in 1..n {
            sessions.push(Mutex::new(session(bytes)?));
        }
        Ok(OnnxModel { sessions, next: Default::default(), layout, signature, task })
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }
    pub fn task(&self) -> Task {
        self.task
    }

    /// Scores rows given in signature order.
    pub fn score(&self, x: &[Vec<f64>]) -> Result<Scores> {
        let n = x.len();
        if n == 0 {
            return Ok(Scores::default());
        }
        let width = self.signature.inputs.len();
        if let Some((i, r)) = x.iter().enumerate().find(|(_, r)| r.len() != width) {
            return Err(Error::invalid(format!("row {} has {} values; the model takes {width}", i + 1, r.len())));
        }
        let inputs: Vec<(String, SessionInputValue<'static>)> = match &self.layout {
            Layout::Matrix { name, elem } => {
                vec![(name.clone(), tensor(*elem, [n, width], x.iter().flatten().copied())?)]
            }
            Layout::PerFeature(cols) => cols
                .iter()
                .map(|(name, elem, f)| Ok((name.clone(), tensor(*elem, [n, 1], x.iter().map(|r| r[*f]))?)))
                .collect::<Result<_>>()?,
        };
        let slot = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.sessions.len();
        let mut session = self.sessions[slot].lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(inputs).map_err(ort_err("score rows with the ONNX model"))?;
        let label_out = &outputs[0];
        match self.task {
            Task::Regression => {
                let values = numbers(label_out, n)?;
                Ok(Scores { scores: values.clone(), labels: values })
            }
            Task::Classification => {
                let labels = numbers(label_out, n)?;
                let scores = if outputs.len() > 1 { positive_probability(&outputs[1], n)? } else { labels.clone() };
                Ok(Scores { scores, labels })
            }
        }
    }
}

/// `model` with Galley's signature and task in its metadata: what is registered and served.
/// Pure bytes work, no runtime needed; [`OnnxModel::adopt`] also checks the model fits.
pub fn with_signature(model: &[u8], signature: &Signature, task: Task) -> Result<Vec<u8>> {
    let task_name = serde_json::to_value(task)?.as_str().unwrap_or_default().to_owned();
    let mut tagged = model.to_vec();
    append_metadata(&mut tagged, META_SIGNATURE, &serde_json::to_string(signature)?);
    append_metadata(&mut tagged, META_TASK, &task_name);
    Ok(tagged)
}

fn tensor(elem: Elem, shape: [usize; 2], values: impl Iterator<Item = f64>) -> Result<SessionInputValue<'static>> {
    let shape = shape.map(|d| d as i64);
    let value: DynValue = match elem {
        Elem::F32 => Tensor::from_array((shape, values.map(|v| v as f32).collect::<Vec<_>>())).map(|t| t.into_dyn()),
        Elem::F64 => Tensor::from_array((shape, values.collect::<Vec<_>>())).map(|t| t.into_dyn()),
        Elem::I64 => Tensor::from_array((shape, values.map(|v| v as i64).collect::<Vec<_>>())).map(|t| t.into_dyn()),
    }
    .map_err(ort_err("build the model's input tensor"))?;
    Ok(value.into())
}

/// A label or value output as numbers: int64, float or double tensors, or string labels that
/// are numbers (skl2onnx keeps a class's type, and Galley's classes are 0 and 1).
fn numbers(value: &DynValue, n: usize) -> Result<Vec<f64>> {
    let out: Vec<f64> = match value.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, .. } => value.try_extract_tensor::<f32>().map(|(_, v)| v.iter().map(|x| *x as f64).collect()),
        ValueType::Tensor { ty: TensorElementType::Float64, .. } => value.try_extract_tensor::<f64>().map(|(_, v)| v.to_vec()),
        ValueType::Tensor { ty: TensorElementType::Int64, .. } => value.try_extract_tensor::<i64>().map(|(_, v)| v.iter().map(|x| *x as f64).collect()),
        ValueType::Tensor { ty: TensorElementType::Int32, .. } => value.try_extract_tensor::<i32>().map(|(_, v)| v.iter().map(|x| *x as f64).collect()),
        ValueType::Tensor { ty: TensorElementType::String, .. } => {
            let (_, strings) = value.try_extract_strings().map_err(ort_err("read the model's labels"))?;
            return strings
                .iter()
                .map(|s| s.trim().parse::<f64>().map_err(|_| Error::invalid(format!("the model answered the label `{s}`; Galley's classes are 0 and 1"))))
                .collect();
        }
        other => return Err(Error::invalid(format!("the model's first output is {other:?}; Galley reads a tensor of labels or values"))),
    }
    .map_err(ort_err("read the model's output"))?;
    if out.len() != n {
        return Err(Error::invalid(format!("the model answered {} values for {n} rows", out.len())));
    }
    Ok(out)
}

/// Probability of class 1 from the probabilities output: a float or double `[N, C]` tensor
/// (classes in sorted order, so column 1), a `[N, 1]` or `[N]` one holding P(class 1) itself
/// (Galley's exported models), or ZipMap's sequence of maps keyed by class.
fn positive_probability(value: &DynValue, n: usize) -> Result<Vec<f64>> {
    let read = ort_err("read the model's probabilities");
    let column = |shape: &[i64], v: Vec<f64>| {
        let c = if shape.len() == 2 { shape[1] as usize } else { 1 };
        if v.len() != n * c {
            return Err(Error::invalid(format!("the model's probabilities have shape {shape:?}; expected [{n}, 2] or [{n}, 1]")));
        }
        Ok(if c == 1 { v } else { (0..n).map(|i| v[i * c + 1]).collect() })
    };
    match value.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, .. } => {
            let (shape, v) = value.try_extract_tensor::<f32>().map_err(read)?;
            column(shape, v.iter().map(|x| *x as f64).collect())
        }
        ValueType::Tensor { ty: TensorElementType::Float64, .. } => {
            let (shape, v) = value.try_extract_tensor::<f64>().map_err(read)?;
            column(shape, v.to_vec())
        }
        ValueType::Sequence(_) => {
            let maps = value.try_extract_sequence::<ort::value::DynMapValueType>().map_err(read)?;
            maps.iter()
                .map(|m| {
                    let p = match m.dtype() {
                        ValueType::Map { key: TensorElementType::Int64, .. } => {
                            m.try_extract_key_values::<i64, f32>().map_err(read)?.into_iter().find(|(k, _)| *k == 1).map(|(_, p)| p)
                        }
                        _ => m.try_extract_key_values::<String, f32>().map_err(read)?.into_iter().find(|(k, _)| k == "1").map(|(_, p)| p),
                    };
                    p.map(f64::from).ok_or_else(|| Error::invalid("the model's probabilities have no class 1"))
                })
                .collect()
        }
        other => Err(Error::invalid(format!("the model's second output is {other:?}; expected probabilities"))),
    }
}

fn elem(ty: &TensorElementType) -> Option<Elem> {
    match ty {
        TensorElementType::Float32 => Some(Elem::F32),
        TensorElementType::Float64 => Some(Elem::F64),
        TensorElementType::Int64 => Some(Elem::I64),
        _ => None,
    }
}

/// Matches the model's inputs to the prepared features: one 2-D input takes them all in the
/// channel files' column order; otherwise every input must be a feature, by name.
fn layout(session: &Session, signature: &Signature) -> Result<Layout> {
    let features: Vec<&str> = signature.inputs.iter().map(|c| c.name.as_str()).collect();
    let inputs = session.inputs();
    let describe = |t: &ValueType| format!("{t:?}");
    if let [only] = inputs
        && let ValueType::Tensor { ty, shape, .. } = only.dtype()
        && shape.len() == 2
        && !(features.len() == 1 && features[0] == only.name())
    {
        let Some(e) = elem(ty) else {
            return Err(Error::invalid(format!("the model's input `{}` is {ty:?}; Galley feeds numbers (float, double or int64)", only.name())));
        };
        if shape[1] >= 0 && shape[1] as usize != features.len() {
            return Err(Error::invalid(format!(
                "the model's input `{}` takes {} features per row, but the prepared data has {}: {}",
                only.name(),
                shape[1],
                features.len(),
                features.join(", ")
            )));
        }
        return Ok(Layout::Matrix { name: only.name().to_owned(), elem: e });
    }
    let mut cols = Vec::new();
    for input in inputs {
        let Some(f) = features.iter().position(|f| *f == input.name()) else {
            return Err(Error::invalid(format!(
                "the model's input `{}` is not a feature of the prepared data ({}); a model with several inputs takes one per feature, by name",
                input.name(),
                features.join(", ")
            )));
        };
        let ValueType::Tensor { ty, .. } = input.dtype() else {
            return Err(Error::invalid(format!("the model's input `{}` is {}; expected a tensor", input.name(), describe(input.dtype()))));
        };
        let Some(e) = elem(ty) else {
            return Err(Error::invalid(format!("the model's input `{}` is {ty:?}; Galley feeds numbers (float, double or int64)", input.name())));
        };
        cols.push((input.name().to_owned(), e, f));
    }
    let missing: Vec<&str> = features.iter().filter(|f| !cols.iter().any(|(n, _, _)| n == *f)).copied().collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!("the model takes no input for feature(s) {}", missing.join(", "))));
    }
    Ok(Layout::PerFeature(cols))
}

/// A classifier without a probabilities output still scores: its scores are then its labels,
/// so ROC AUC and log loss describe hard labels (as scikit-learn's would from `predict`).
fn check_outputs(session: &Session) -> Result<()> {
    if session.outputs().is_empty() {
        return Err(Error::invalid("the ONNX model has no outputs"));
    }
    Ok(())
}

fn ort_err(what: &'static str) -> impl Fn(ort::Error) -> Error + Copy {
    move |e| Error::invalid(format!("cannot {what}: {e}"))
}

fn session(bytes: &[u8]) -> Result<Session> {
    let env = environment()?;
    Session::builder(env)
        .and_then(|mut b| b.commit_from_memory(bytes))
        .map_err(|e| Error::invalid(format!("ONNX Runtime cannot load the model: {e}")))
}

static ENVIRONMENT: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime once per process.
fn environment() -> Result<&'static ort::environment::Environment> {
    ENVIRONMENT
        .get_or_init(|| {
            let lib = find_runtime()?;
            ort::init_from(&lib)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?
                .with_name("galley")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", lib.display()))
        })
        .as_ref()
        .map_err(|m| Error::unsupported(m.clone()))
}

/// `ORT_DYLIB_PATH`, else the library inside an installed `onnxruntime` wheel (the active
/// virtualenv's, then every directory on `python3`'s path).
pub fn find_runtime() -> std::result::Result<PathBuf, String> {
    const HOW: &str = "serving an ONNX model needs ONNX Runtime's library: `pip install onnxruntime` \
                       (the wheel holds libonnxruntime.so), or set ORT_DYLIB_PATH to a libonnxruntime.so (1.17 or later)";
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("ORT_DYLIB_PATH is {}, which is not a file; {HOW}", p.display())) };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        dirs.extend(site_packages(Path::new(&venv)));
    }
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", "import sys; print('\\n'.join(p for p in sys.path if p))"])
        .stderr(std::process::Stdio::null())
        .output()
    {
        dirs.extend(String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from));
    }
    dirs.iter().find_map(|d| wheel_library(d)).ok_or_else(|| format!("no ONNX Runtime found; {HOW}"))
}

fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else { return Vec::new() };
    entries.flatten().map(|e| e.path().join("site-packages")).filter(|p| p.is_dir()).collect()
}

fn wheel_library(site: &Path) -> Option<PathBuf> {
    let capi = site.join("onnxruntime").join("capi");
    let mut found: Vec<PathBuf> = std::fs::read_dir(capi)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib"))
        .collect();
    found.sort();
    found.pop()
}

/// Appends one `metadata_props` entry (ModelProto field 14, a `StringStringEntryProto` of key
/// = field 1 and value = field 2). Protobuf merges repeated fields across concatenated
/// encodings, so appending is a valid edit of any model without decoding it.
fn append_metadata(model: &mut Vec<u8>, key: &str, value: &str) {
    let mut entry = Vec::with_capacity(key.len() + value.len() + 8);
    for (tag, s) in [(0x0a_u8, key), (0x12, value)] {
        entry.push(tag);
        varint(&mut entry, s.len() as u64);
        entry.extend_from_slice(s.as_bytes());
    }
    model.push((14 << 3) | 2);
    varint(model, entry.len() as u64);
    model.extend_from_slice(&entry);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_entry_is_protobuf() {
        let mut m = Vec::new();
        append_metadata(&mut m, "k", "vv");
        assert_eq!(m, vec![0x72, 7, 0x0a, 1, b'k', 0x12, 2, b'v', b'v']);
        let mut long = Vec::new();
        varint(&mut long, 300);
        assert_eq!(long, vec![0xac, 0x02]);
    }
}
