//! Galley's built-in models as standard ONNX (opset 17), so the same model serves on
//! onnxruntime, `mlflow models serve` (MLflow's ONNX flavor) and KServe/Triton.
//!
//! The graphs compute in double precision with core operators only (MatMul, Add, Sigmoid;
//! Gather, Less, Where for trees), not the ONNX-ML `Linear*`/`TreeEnsemble*` operators, whose
//! onnxruntime kernels compute in float32: a tree threshold or a coefficient rounded to float32
//! could flip a label that Galley's own scorer gives. So the answers are Galley's: a tree's
//! values bit for bit (comparisons and selected constants), a linear model's within a few ulps
//! (the dot product's summation order and the runtime's `exp`).
//!
//! Contract (what [`crate::onnx::OnnxModel`] reads): one input `X`, double `[N, features]` in
//! signature order; regression answers `value` `[N, 1]`; classification answers `label` int64
//! `[N, 1]` (1 when P(class 1) ≥ 0.5, as Galley labels) and `probability` double `[N, 1]`,
//! P(class 1). Columns of width 1 keep MLflow's DataFrame output one row per input row.
//! Galley's signature and task ride in the model's metadata, as for every registered ONNX model.

use galley_core::Result;
use galley_core::ml::Task;

use crate::model::{Fitted, Node, TrainedModel};
use crate::onnx_proto::{DOUBLE, Graph, INT64};

pub const INPUT: &str = "X";
pub const VALUE: &str = "value";
pub const LABEL: &str = "label";
pub const PROBABILITY: &str = "probability";

/// The model as ONNX bytes, with Galley's signature and task in its metadata.
pub fn to_onnx(model: &TrainedModel) -> Result<Vec<u8>> {
    let width = model.signature().inputs.len() as u64;
    let mut g = Graph::default();
    g.input(INPUT, DOUBLE, width);
    // The score `[N, 1]`: the linear predictor (through the logistic function for
    // classification), or the tree's leaf value.
    let score = match model.fitted() {
        Fitted::Linear { intercept, coefficients } => {
            let w = g.doubles("W", &[width, 1], coefficients);
            let b = g.doubles("B", &[1], &[*intercept]);
            let xw = g.op("MatMul", &[INPUT, &w], &[]);
            let z = g.op("Add", &[&xw, &b], &[]);
            if model.task() == Task::Classification { g.op("Sigmoid", &[&z], &[]) } else { z }
        }
        Fitted::Tree { nodes } => {
            let mut columns = std::collections::BTreeMap::new();
            let flat = tree(&mut g, nodes, 0, &mut columns);
            let axes = g.int64s("axes_1", &[1], &[1]);
            g.op("Unsqueeze", &[&flat, &axes], &[])
        }
    };
    match model.task() {
        Task::Regression => {
            g.node("Identity", &[&score], VALUE, &[]);
            g.output(VALUE, DOUBLE, 1);
        }
        Task::Classification => {
            g.node("Identity", &[&score], PROBABILITY, &[]);
            let half = g.doubles("half", &[], &[0.5]);
            let positive = g.op("GreaterOrEqual", &[PROBABILITY, &half], &[]);
            g.node("Cast", &[&positive], LABEL, &[("to", INT64 as i64)]);
            g.output(LABEL, INT64, 1);
            g.output(PROBABILITY, DOUBLE, 1);
        }
    }
    let bytes = g.model("galley", 17);
    crate::onnx::with_signature(&bytes, model.signature(), model.task())
}

/// The value of the subtree at `i`, `[N]`: `Where(x[f] < t, left, right)` down to the leaves'
/// constants. `columns` holds each feature's `Gather` once.
fn tree(g: &mut Graph, nodes: &[Node], i: usize, columns: &mut std::collections::BTreeMap<usize, String>) -> String {
    let mut column = |g: &mut Graph, f: usize| -> String {
        columns
            .entry(f)
            .or_insert_with(|| {
                let idx = g.int64s(&format!("feature_{f}"), &[], &[f as i64]);
                g.op("Gather", &[INPUT, &idx], &[("axis", 1)])
            })
            .clone()
    };
    match &nodes[i] {
        Node::Leaf { value } if i == 0 => {
            // A tree that is one leaf: the constant for every row.
            let c = g.doubles(&format!("leaf_{i}"), &[], &[*value]);
            let x0 = column(g, 0);
            let nan = g.op("IsNaN", &[&x0], &[]);
            g.op("Where", &[&nan, &c, &c], &[])
        }
        Node::Leaf { value } => g.doubles(&format!("leaf_{i}"), &[], &[*value]),
        Node::Split { feature, threshold, left, right } => {
            let x = column(g, *feature);
            let t = g.doubles(&format!("threshold_{i}"), &[], &[*threshold]);
            let goes_left = g.op("Less", &[&x, &t], &[]);
            let l = tree(g, nodes, *left, columns);
            let r = tree(g, nodes, *right, columns);
            g.op("Where", &[&goes_left, &l, &r], &[])
        }
    }
}
