//! Galley's built-in models exported to ONNX answer as Galley's own scorer does, scored by ONNX
//! Runtime (the `onnxruntime` wheel's library, `scripts/stack up local`): trees bit for bit,
//! linear models within 1e-12 (the dot product's order and the runtime's `exp`), every label
//! equal, on the held-out wine rows.

use std::path::Path;

use galley_core::ml::{Algorithm, Data, PositiveWhen, Split, Task, VarValue};
use galley_ml::formats::Model;
use galley_ml::{Prepared, TrainedModel, load_source, prepare};
use indexmap::IndexMap;

const LINEAR_TOLERANCE: f64 = 1e-12;

fn prepared(task: Task) -> Prepared {
    let ds = load_source("builtin:winequality", Path::new(".")).unwrap();
    let data = Data {
        source: "builtin:winequality".into(),
        target: "quality".into(),
        task,
        positive_when: (task == Task::Classification).then_some(PositiveWhen { at_least: 6.0 }),
        schema: IndexMap::new(),
        split: Split { test_size: 0.2, seed: 42 },
    };
    prepare(&ds.table, &data, &[]).unwrap()
}

fn fitted(alg: Algorithm, params: &[(&str, f64)], p: &Prepared) -> TrainedModel {
    let params: IndexMap<String, VarValue> = params.iter().map(|(k, v)| ((*k).to_owned(), VarValue::Number(*v))).collect();
    galley_ml::train(alg, &params, p.task, &p.train, &p.signature).unwrap()
}

/// (largest score difference, labels that differ) between Galley's scorer and ONNX Runtime's.
fn compare(model: &TrainedModel, p: &Prepared) -> (f64, usize) {
    let galley = Model::from(model.clone()).score_matrix(&p.test.x).unwrap();
    let bytes = galley_ml::export::to_onnx(model).unwrap();
    let onnx = Model::from_bytes(&bytes).unwrap_or_else(|e| panic!("ONNX Runtime could not open the export: {e}"));
    assert_eq!(onnx.format(), "onnx");
    assert_eq!(onnx.signature(), model.signature(), "the signature travels in the metadata");
    let ort = onnx.score_matrix(&p.test.x).unwrap();
    assert_eq!(ort.scores.len(), p.test.x.len());
    let worst = galley.scores.iter().zip(&ort.scores).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    // Regression's labels are its values, compared above.
    let labels = if p.task == Task::Classification { galley.labels.iter().zip(&ort.labels).filter(|(a, b)| a != b).count() } else { 0 };
    (worst, labels)
}

#[test]
fn exported_trees_answer_bit_for_bit() {
    let c = prepared(Task::Classification);
    let r = prepared(Task::Regression);
    for (p, model) in [(&c, fitted(Algorithm::DecisionTree, &[("max_depth", 6.0)], &c)), (&r, fitted(Algorithm::DecisionTree, &[("max_depth", 5.0)], &r))] {
        let (worst, labels) = compare(&model, p);
        assert_eq!((worst, labels), (0.0, 0), "{:?} tree", p.task);
    }
}

#[test]
fn exported_linear_models_answer_within_tolerance() {
    let c = prepared(Task::Classification);
    let r = prepared(Task::Regression);
    for (p, model) in [(&c, fitted(Algorithm::LogisticRegression, &[("max_iterations", 200.0)], &c)), (&r, fitted(Algorithm::LinearRegression, &[], &r))] {
        let (worst, labels) = compare(&model, p);
        eprintln!("{:?} linear: largest difference {worst:e}", p.task);
        assert!(worst <= LINEAR_TOLERANCE, "{:?}: {worst:e}", p.task);
        assert_eq!(labels, 0, "{:?}", p.task);
    }
}

/// The check can fail: a tree whose export is scored against another model's answers differs.
#[test]
fn the_comparison_has_teeth() {
    let c = prepared(Task::Classification);
    let shallow = fitted(Algorithm::DecisionTree, &[("max_depth", 2.0)], &c);
    let deep = fitted(Algorithm::DecisionTree, &[("max_depth", 6.0)], &c);
    let a = Model::from(shallow).score_matrix(&c.test.x).unwrap();
    let b = Model::from_bytes(&galley_ml::export::to_onnx(&deep).unwrap()).unwrap().score_matrix(&c.test.x).unwrap();
    assert!(a.scores != b.scores);
}
