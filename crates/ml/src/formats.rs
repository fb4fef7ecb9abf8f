//! The model formats Galley scores, behind one type: evaluation, the monitor's baseline and the
//! endpoint all score through [`Model`], so a model is judged by the scorer that serves it.

use galley_core::ml::Task;
use galley_core::stages::Signature;
use galley_core::{Error, Result, Table};

use crate::model::{TrainedModel, ordered_rows};
pub use crate::onnx::{OnnxModel, Scores};

/// A model artifact as read from the artifact store: Galley's own JSON format (the built-in
/// algorithms) or ONNX (the user's training code), told apart by their first byte.
#[derive(Debug)]
pub enum Model {
    Galley(TrainedModel),
    Onnx(OnnxModel),
}

impl Model {
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        if crate::onnx::looks_like_onnx(bytes) {
            return OnnxModel::from_bytes(bytes).map(Model::Onnx);
        }
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => TrainedModel::from_bytes(bytes).map(Model::Galley),
            _ => Err(Error::corrupt("the artifact is neither a Galley model (JSON) nor an ONNX model")),
        }
    }

    pub fn signature(&self) -> &Signature {
        match self {
            Model::Galley(m) => m.signature(),
            Model::Onnx(m) => m.signature(),
        }
    }

    pub fn task(&self) -> Task {
        match self {
            Model::Galley(m) => m.task(),
            Model::Onnx(m) => m.task(),
        }
    }

    /// `galley` or `onnx`, for logs and the server's model info.
    pub fn format(&self) -> &'static str {
        match self {
            Model::Galley(_) => "galley",
            Model::Onnx(_) => "onnx",
        }
    }

    /// Scores rows in signature order.
    pub fn score_matrix(&self, x: &[Vec<f64>]) -> Result<Scores> {
        match self {
            Model::Galley(m) => {
                let scores = m.predict_matrix(x);
                let labels = scores.iter().map(|s| m.label(*s)).collect();
                Ok(Scores { scores, labels })
            }
            Model::Onnx(m) => m.score(x),
        }
    }

    /// The labels (regression: values) for rows in signature order: what an endpoint answers.
    pub fn labels_matrix(&self, x: &[Vec<f64>]) -> Result<Vec<f64>> {
        match self {
            // The built-in scorer's fast path: no scores vector in between.
            Model::Galley(m) => Ok(x.iter().map(|r| m.label(m.predict_row(r))).collect()),
            Model::Onnx(m) => Ok(m.score(x)?.labels),
        }
    }

    /// Scores and labels for rows whose columns are matched to the signature by name.
    pub fn scores(&self, rows: &Table) -> Result<Scores> {
        self.score_matrix(&ordered_rows(self.signature(), rows)?)
    }

    /// Labels for rows whose columns are matched to the signature by name, in any order.
    pub fn labels(&self, rows: &Table) -> Result<Vec<f64>> {
        self.labels_matrix(&ordered_rows(self.signature(), rows)?)
    }
}

impl From<TrainedModel> for Model {
    fn from(m: TrainedModel) -> Model {
        Model::Galley(m)
    }
}
