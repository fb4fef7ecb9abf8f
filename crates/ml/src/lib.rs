//! Platform-neutral ML: datasets, data validation, training, evaluation, prediction, drift statistics.
//!
//! The lifecycle runner calls, in order: [`load_source`] → [`validate`] → [`prepare`] →
//! [`train`] → [`evaluate`] → [`decide`]. The model server calls [`Model::from_bytes`] (Galley's
//! format or ONNX) once and [`Model::labels`] (or `labels_matrix`) per request; the monitor calls
//! [`psi`] / [`ks`].

pub mod dataset;
pub mod drift;
pub mod export;
pub mod formats;
pub mod gate;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod onnx_proto;
pub mod params;
pub mod prepare;
pub mod validate;

pub use dataset::{BUILTIN_PREFIX, Dataset, builtin_columns, builtin_names, load_source};
pub use drift::{drift_report, ks, ks_pvalue, psi};
pub use galley_core::ml::{Algorithm, Task};
pub use formats::{Model, OnnxModel, Scores};
pub use gate::{GateDecision, decide};
pub use metrics::{evaluate, higher_is_better};
pub use model::{MODEL_FORMAT, MODEL_FORMAT_VERSION, TrainedModel, train};
pub use params::accepted_params;
pub use prepare::{Frame, Prepared, prepare};
pub use validate::{Problem, ProblemKind, ValidationReport, validate};
