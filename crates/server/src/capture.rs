//! The inference log: what the model server records of every scored batch, one JSON line per
//! batch, for drift monitoring. The local platform's monitor reads it (`inferences.jsonl` in the
//! monitor's directory); the server appends `metrics.prom` from the same directory to its
//! `/metrics`.

use std::io::Write;
use std::path::Path;

use galley_core::table::Value;
use serde::{Deserialize, Serialize};

pub const INFERENCES_FILE: &str = "inferences.jsonl";
/// The previous inferences file: `inferences.jsonl` is rotated here past
/// [`MAX_INFERENCE_FILE_BYTES`], so recording never fills the disk.
pub const INFERENCES_ROTATED: &str = "inferences.1.jsonl";
pub const MAX_INFERENCE_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Gauges the monitor publishes, in Prometheus text, which the server serves with its own.
pub const METRICS_PROM: &str = "metrics.prom";

/// One recorded batch, as written (borrowing) by the server and `record`.
#[derive(Debug, Serialize)]
pub struct InferenceLineRef<'a, R: Serialize> {
    pub ts_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'a str>,
    pub columns: &'a [String],
    pub rows: &'a R,
    pub predictions: &'a [f64],
}

/// One recorded batch, as read back.
#[derive(Debug, Deserialize)]
pub struct InferenceLine {
    pub ts_ms: i64,
    #[serde(default)]
    pub variant: Option<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// `null` where a prediction was not finite.
    pub predictions: Vec<Option<f64>>,
}

/// Appends `bytes` (whole lines) to `path` with one `write` on an `O_APPEND` file, rotating
/// the file to [`INFERENCES_ROTATED`] (replacing the older one) once it is past
/// [`MAX_INFERENCE_FILE_BYTES`].
pub fn append_lines(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(bytes)?;
    if file.metadata()?.len() > MAX_INFERENCE_FILE_BYTES {
        std::fs::rename(path, path.with_file_name(INFERENCES_ROTATED))?;
    }
    Ok(())
}

/// Serializes one batch as a JSON line into `out`.
pub fn encode_line<R: Serialize>(out: &mut Vec<u8>, line: &InferenceLineRef<'_, R>) {
    // Serializing plain numbers and strings into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, line).is_ok() {
        out.push(b'\n');
    }
}

