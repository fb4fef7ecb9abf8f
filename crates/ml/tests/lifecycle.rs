//! The whole ML path on the real wine data: load → validate → prepare → train → evaluate →
//! gate → artifact round trip → predict by name.

use std::collections::BTreeMap;
use std::path::Path;

use galley_core::ml::{Algorithm, ColumnRule, Data, Gate, PositiveWhen, Split, Task, VarValue};
use galley_core::table::Column;
use galley_core::{DType, ErrorKind, Table, Value};
use galley_ml::*;
use indexmap::IndexMap;

fn wine_data() -> Data {
    Data {
        source: "builtin:winequality".into(),
        target: "quality".into(),
        task: Task::Classification,
        positive_when: Some(PositiveWhen { at_least: 6.0 }),
        schema: IndexMap::from([
            (
                "alcohol".to_owned(),
                ColumnRule {
                    dtype: Some(DType::Float),
                    min: Some(5.0),
                    max: Some(20.0),
                    nullable: false,
                },
            ),
            (
                "quality".to_owned(),
                ColumnRule {
                    dtype: Some(DType::Int),
                    min: Some(0.0),
                    max: Some(10.0),
                    nullable: false,
                },
            ),
        ]),
        split: Split {
            test_size: 0.2,
            seed: 42,
        },
    }
}

/// An algorithm and its parameters, as `training.algorithm` and `training.params` give them.
type Training = (Algorithm, IndexMap<String, VarValue>);

fn training(algorithm: Algorithm, params: &[(&str, f64)]) -> Training {
    (algorithm, params.iter().map(|(k, v)| ((*k).to_owned(), VarValue::Number(*v))).collect())
}

/// `galley_ml::train` over a [`Training`].
fn train(t: &Training, task: Task, frame: &Frame, signature: &galley_core::stages::Signature) -> galley_core::Result<TrainedModel> {
    galley_ml::train(t.0, &t.1, task, frame, signature)
}

fn prepared() -> Prepared {
    let ds = load_source("builtin:winequality", Path::new(".")).unwrap();
    let data = wine_data();
    let report = validate(&ds.table, &data, &[]);
    assert!(report.is_ok(), "{}", report.render());
    prepare(&ds.table, &data, &[]).unwrap()
}

#[test]
fn logistic_regression_learns_wine_quality() {
    let p = prepared();
    let model = train(
        &training(Algorithm::LogisticRegression, &[("max_iterations", 200.0)]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap();
    let m = evaluate(&galley_ml::Model::from(model.clone()), &p.test).unwrap();
    eprintln!("logistic_regression on wine: {m:?}");
    assert!(m["accuracy"] > 0.65, "accuracy {m:?}");
    assert!(m["roc_auc"] > 0.7, "roc_auc {m:?}");
    for k in ["precision", "recall", "f1", "log_loss"] {
        assert!(m[k].is_finite() && m[k] > 0.0, "{k} in {m:?}");
    }
    // Training is deterministic too: same data, same model bytes.
    let again = train(
        &training(Algorithm::LogisticRegression, &[("max_iterations", 200.0)]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap();
    assert_eq!(model.to_bytes(), again.to_bytes());

    let champion = BTreeMap::from([("accuracy".to_owned(), 0.5)]);
    let gate = Gate {
        metric: "accuracy".into(),
        at_least: Some(0.65),
        at_most: None,
        beat_champion_by: Some(0.0),
    };
    let d = decide(&gate, &m, Some((1, &champion)));
    assert!(d.passed, "{:?}", d.reasons);
}

#[test]
fn decision_tree_learns_wine_quality_and_scores_are_probabilities() {
    let p = prepared();
    let model = train(
        &training(Algorithm::DecisionTree, &[("max_depth", 6.0)]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap();
    let m = evaluate(&galley_ml::Model::from(model.clone()), &p.test).unwrap();
    eprintln!("decision_tree on wine: {m:?}");
    assert!(m["accuracy"] > 0.65, "{m:?}");
    assert!(m["roc_auc"] > 0.7, "{m:?}");
    let scores = model.predict_matrix(&p.test.x);
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert!(
        scores.iter().any(|s| *s > 0.0 && *s < 1.0),
        "leaf shares, not only hard labels"
    );
}

#[test]
fn artifact_round_trip_scores_identically() {
    let p = prepared();
    for (alg, params) in [
        (Algorithm::LogisticRegression, vec![("alpha", 0.5)]),
        (
            Algorithm::DecisionTree,
            vec![("max_depth", 5.0), ("min_samples_split", 4.0)],
        ),
    ] {
        let model = train(&training(alg, &params), p.task, &p.train, &p.signature).unwrap();
        let bytes = model.to_bytes();
        let back = TrainedModel::from_bytes(&bytes).unwrap();
        assert_eq!(back, model);
        assert_eq!(
            back.predict_matrix(&p.test.x),
            model.predict_matrix(&p.test.x)
        );
        assert_eq!(back.to_bytes(), bytes, "serialisation is deterministic");
        assert_eq!(back.algorithm(), alg);
        assert_eq!(back.task(), Task::Classification);
        assert_eq!(back.signature(), &p.signature);
    }
}

#[test]
fn linear_regression_on_diabetes() {
    let ds = load_source("builtin:diabetes", Path::new(".")).unwrap();
    let data = Data {
        source: ds.name.clone(),
        target: "progression".into(),
        task: Task::Regression,
        positive_when: None,
        schema: IndexMap::new(),
        split: Split::default(),
    };
    let p = prepare(&ds.table, &data, &[]).unwrap();
    let model = train(
        &training(Algorithm::LinearRegression, &[]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap();
    let m = evaluate(&galley_ml::Model::from(model.clone()), &p.test).unwrap();
    eprintln!("linear_regression on diabetes: {m:?}");
    // The classic OLS fit explains roughly half the variance of this dataset.
    assert!(m["r2"] > 0.3 && m["r2"] < 0.8, "{m:?}");
    assert!(m["rmse"] > 0.0 && m["mae"] > 0.0 && m["mae"] <= m["rmse"]);
    let back = TrainedModel::from_bytes(&model.to_bytes()).unwrap();
    assert_eq!(
        back.predict_matrix(&p.test.x),
        model.predict_matrix(&p.test.x)
    );
    assert_eq!(model.label(123.5), 123.5);

    // A regression tree: depth-limited, it explains some of the variance too, and survives
    // its artifact bit for bit.
    let tree = train(
        &training(Algorithm::DecisionTree, &[("max_depth", 3.0)]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap();
    let mt = evaluate(&galley_ml::Model::from(tree.clone()), &p.test).unwrap();
    eprintln!("decision_tree (max_depth 3) on diabetes: {mt:?}");
    assert!(mt["r2"] > 0.2 && mt["r2"] < m["r2"] + 0.2, "{mt:?}");
    let back = TrainedModel::from_bytes(&tree.to_bytes()).unwrap();
    assert_eq!(back.predict_matrix(&p.test.x), tree.predict_matrix(&p.test.x));
    let e = train(
        &training(Algorithm::LogisticRegression, &[]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap_err();
    assert!(e.message().contains("linear_regression"), "{e}");
}

fn one_row(columns: &[(&str, DType, Value)]) -> Table {
    let mut t = Table::new(
        columns
            .iter()
            .map(|(n, d, _)| Column::new(*n, *d))
            .collect(),
    );
    t.rows
        .push(columns.iter().map(|(_, _, v)| v.clone()).collect());
    t
}

#[test]
fn predict_matches_columns_by_name_and_explains_bad_input() {
    let p = prepared();
    let model = train(
        &training(Algorithm::LogisticRegression, &[]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap();

    // A test row presented with its columns reversed scores exactly as in signature order.
    let mut cols: Vec<(&str, DType, Value)> = p
        .train
        .features
        .iter()
        .zip(&p.test.x[0])
        .map(|(n, v)| (n.as_str(), DType::Float, Value::Float(*v)))
        .collect();
    cols.reverse();
    let expected = model.predict_matrix(&p.test.x[..1])[0];
    assert_eq!(model.predict(&one_row(&cols)).unwrap(), vec![expected]);
    assert!((0.0..=1.0).contains(&expected));
    assert_eq!(
        model.label(expected),
        if expected >= 0.5 { 1.0 } else { 0.0 }
    );

    let without_alcohol: Vec<_> = cols.iter().filter(|c| c.0 != "alcohol").cloned().collect();
    let e = model.predict(&one_row(&without_alcohol)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("missing feature `alcohol`"), "{e}");

    let mut extra = cols.clone();
    extra.push(("colour", DType::String, "red".into()));
    let e = model.predict(&one_row(&extra)).unwrap_err();
    assert!(e.message().contains("unknown feature `colour`"), "{e}");

    let mut typed = cols.clone();
    let i = typed.iter().position(|c| c.0 == "alcohol").unwrap();
    typed[i] = ("alcohol", DType::String, "lots".into());
    let e = model.predict(&one_row(&typed)).unwrap_err();
    assert!(
        e.message()
            .contains("feature `alcohol` must be a number, got a string"),
        "{e}"
    );

    typed[i] = ("alcohol", DType::Float, Value::Null);
    let e = model.predict(&one_row(&typed)).unwrap_err();
    assert!(e.message().contains("feature `alcohol` is null"), "{e}");

    // Ints are accepted for float features.
    typed[i] = ("alcohol", DType::Int, Value::Int(11));
    assert!(model.predict(&one_row(&typed)).is_ok());
}

#[test]
fn corrupt_and_foreign_artifacts_are_refused_clearly() {
    let p = prepared();
    let model = train(
        &training(Algorithm::LogisticRegression, &[]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap();
    let bytes = model.to_bytes();

    let e = TrainedModel::from_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.message().contains("not valid JSON"), "{e}");

    let e = TrainedModel::from_bytes(br#"{"hello": 1}"#).unwrap_err();
    assert!(e.message().contains("not a Galley model"), "{e}");

    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["format_version"] = 99.into();
    let e = TrainedModel::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("format version 99"), "{e}");

    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["fitted"]["coefficients"].as_array_mut().unwrap().pop();
    let e = TrainedModel::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.message().contains("10 coefficients for 11 inputs"), "{e}");
}

#[test]
fn unknown_params_and_wrong_task_are_refused() {
    let p = prepared();
    let e = train(
        &training(Algorithm::DecisionTree, &[("depth", 3.0)]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap_err();
    assert!(
        e.message()
            .contains("unknown parameter `depth` for decision_tree"),
        "{e}"
    );
    assert!(
        e.message()
            .contains("max_depth, min_samples_leaf, min_samples_split"),
        "{e}"
    );
    let e = train(
        &training(Algorithm::LinearRegression, &[]),
        p.task,
        &p.train,
        &p.signature,
    )
    .unwrap_err();
    assert!(e.message().contains("logistic_regression"), "{e}");
}
