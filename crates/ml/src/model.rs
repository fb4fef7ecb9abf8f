//! Training and scoring.
//!
//! linfa fits the models; the artifact stores only the fitted parameters in Galley's own
//! versioned JSON (coefficients, or a flat node list for trees). That keeps the artifact
//! readable, independent of linfa's internal layout across upgrades, and makes scoring a plain
//! loop over a row with no matrix allocation: a server scores one request at a time.

use std::collections::BTreeMap;

use galley_core::ml::{Algorithm, Task, VarValue};
use indexmap::IndexMap;
use galley_core::stages::Signature;
use galley_core::{DType, Error, ErrorKind, Result, Table, Value};
use linfa::prelude::*;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

mod regression_tree;

use crate::params::{Params, algorithm_name};
use crate::prepare::Frame;

/// Identifies a Galley model artifact; checked before anything else is read.
pub const MODEL_FORMAT: &str = "galley-ml/model";
/// Bumped on any incompatible change to the artifact layout.
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// A fitted model with its input contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    format: String,
    format_version: u32,
    algorithm: Algorithm,
    task: Task,
    signature: Signature,
    /// The classes the score separates (`[0, 1]`); empty for regression.
    classes: Vec<f64>,
    /// Effective hyperparameters, defaults included, for lineage.
    params: BTreeMap<String, String>,
    fitted: Fitted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Fitted {
    /// `intercept + coefficients · x`, through the logistic function for classification.
    /// Coefficients apply to raw (unscaled) feature values.
    Linear {
        intercept: f64,
        coefficients: Vec<f64>,
    },
    /// Nodes in pre-order; node 0 is the root. A row goes left when `x[feature] < threshold`.
    Tree { nodes: Vec<Node> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "node", rename_all = "snake_case")]
pub(crate) enum Node {
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    /// For classification the share of class-1 training rows that reached this leaf; for
    /// regression the mean target of those rows.
    Leaf { value: f64 },
}

/// Fits `algorithm` with `params` (the blueprint's `training.params`) on `train`. `signature`
/// describes `train.features` (same names, same order) and becomes the model's input contract.
pub fn train(
    algorithm: Algorithm,
    params: &IndexMap<String, VarValue>,
    task: Task,
    train: &Frame,
    signature: &Signature,
) -> Result<TrainedModel> {
    let name = algorithm_name(algorithm);
    let params = Params::parse(algorithm, params)?;
    check_task(algorithm, task)?;
    check_frame(train, signature)?;
    if task == Task::Classification && train.y.iter().any(|v| *v != 0.0 && *v != 1.0) {
        return Err(Error::invalid(
            "classification targets must be 0 or 1 (prepare() binarises them with data.positive_when)",
        ));
    }

    let n_features = train.features.len();
    let x = Array2::from_shape_vec(
        (train.len(), n_features),
        train.x.iter().flat_map(|r| r.iter().copied()).collect(),
    )
    .map_err(|e| Error::internal(format!("cannot shape the training matrix: {e}")))?;
    let fit_err = |e: &dyn std::fmt::Display| {
        Error::invalid(format!("{name} failed to fit the training data: {e}"))
    };

    let (fitted, effective) = match algorithm {
        Algorithm::LogisticRegression => {
            let alpha = params.float("alpha").unwrap_or(1.0);
            let max_iterations = params.int("max_iterations").unwrap_or(100);
            let gradient_tolerance = params.float("gradient_tolerance").unwrap_or(1e-4);
            // Standardise so the optimiser converges whatever the features' units, then fold
            // the scaling back into the coefficients so scoring reads raw values.
            let (mean, scale) = standardisation(&x);
            let xs = (&x - &mean) / &scale;
            let y: Array1<usize> = train.y.iter().map(|v| *v as usize).collect();
            let model = linfa_logistic::LogisticRegression::default()
                .alpha(alpha)
                .max_iterations(max_iterations)
                .gradient_tolerance(gradient_tolerance)
                .fit(&linfa::Dataset::new(xs, y))
                .map_err(|e| fit_err(&e))?;
            // linfa's "positive" class is the more frequent one, not necessarily class 1.
            let sign = if model.labels().pos.class == 1 {
                1.0
            } else {
                -1.0
            };
            let w = model.params() * sign / &scale;
            let intercept = model.intercept() * sign - w.dot(&mean);
            let effective = [
                ("alpha", alpha.to_string()),
                ("gradient_tolerance", gradient_tolerance.to_string()),
                ("max_iterations", max_iterations.to_string()),
            ];
            (
                Fitted::Linear {
                    intercept,
                    coefficients: w.to_vec(),
                },
                effective.to_vec(),
            )
        }
        Algorithm::LinearRegression => {
            let fit_intercept = params.bool("fit_intercept").unwrap_or(true);
            let y: Array1<f64> = train.y.iter().copied().collect();
            let model = linfa_linear::LinearRegression::new()
                .with_intercept(fit_intercept)
                .fit(&linfa::Dataset::new(x, y))
                .map_err(|e| fit_err(&e))?;
            let coefficients = model.params().to_vec();
            if !model.intercept().is_finite() || coefficients.iter().any(|c| !c.is_finite()) {
                return Err(Error::invalid(
                    "linear_regression produced non-finite coefficients: some features are probably \
                     constant or exact copies of each other; drop them from the feature list",
                ));
            }
            let fitted = Fitted::Linear {
                intercept: model.intercept(),
                coefficients,
            };
            (fitted, vec![("fit_intercept", fit_intercept.to_string())])
        }
        Algorithm::DecisionTree if task == Task::Regression => {
            let growth = regression_tree::Growth {
                max_depth: params.int("max_depth").map(|d| d as usize),
                min_split: params.int("min_samples_split").unwrap_or(2) as usize,
                min_leaf: params.int("min_samples_leaf").unwrap_or(1) as usize,
            };
            let nodes = regression_tree::fit(&train.x, &train.y, &growth);
            let effective = [
                ("max_depth", growth.max_depth.map_or("none".into(), |d| d.to_string())),
                ("min_samples_leaf", growth.min_leaf.to_string()),
                ("min_samples_split", growth.min_split.to_string()),
            ];
            (Fitted::Tree { nodes }, effective.to_vec())
        }
        Algorithm::DecisionTree => {
            let max_depth = params.int("max_depth").map(|d| d as usize);
            let min_split = params.int("min_samples_split").unwrap_or(2);
            let min_leaf = params.int("min_samples_leaf").unwrap_or(1);
            let y: Array1<usize> = train.y.iter().map(|v| *v as usize).collect();
            let tree = linfa_trees::DecisionTree::params()
                .max_depth(max_depth)
                .min_weight_split(min_split as f32)
                .min_weight_leaf(min_leaf as f32)
                .fit(&linfa::Dataset::new(x, y))
                .map_err(|e| fit_err(&e))?;
            let mut nodes = Vec::new();
            flatten(tree.root_node(), &mut nodes);
            leaf_probabilities(&mut nodes, train);
            let effective = [
                (
                    "max_depth",
                    max_depth.map_or("none".into(), |d| d.to_string()),
                ),
                ("min_samples_leaf", min_leaf.to_string()),
                ("min_samples_split", min_split.to_string()),
            ];
            (Fitted::Tree { nodes }, effective.to_vec())
        }
    };

    Ok(TrainedModel {
        format: MODEL_FORMAT.into(),
        format_version: MODEL_FORMAT_VERSION,
        algorithm,
        task,
        signature: signature.clone(),
        classes: if task == Task::Classification {
            vec![0.0, 1.0]
        } else {
            Vec::new()
        },
        params: effective
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        fitted,
    })
}

fn check_task(algorithm: Algorithm, task: Task) -> Result<()> {
    match (algorithm, task) {
        (Algorithm::LogisticRegression, Task::Regression) => Err(Error::invalid(
            "logistic_regression is a classifier; for `task: regression` use `algorithm: linear_regression`",
        )),
        (Algorithm::LinearRegression, Task::Classification) => Err(Error::invalid(
            "linear_regression predicts numbers; for `task: classification` use `algorithm: logistic_regression` \
             or `decision_tree`",
        )),
        _ => Ok(()),
    }
}

fn check_frame(train: &Frame, signature: &Signature) -> Result<()> {
    let sig_names: Vec<&str> = signature.inputs.iter().map(|c| c.name.as_str()).collect();
    if sig_names
        != train
            .features
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    {
        return Err(Error::invalid(format!(
            "the signature's inputs ({}) do not match the training features ({})",
            sig_names.join(", "),
            train.features.join(", ")
        )));
    }
    if train.is_empty() || train.features.is_empty() {
        return Err(Error::invalid(
            "there is nothing to train on: the training set has no rows or no features",
        ));
    }
    for (r, row) in train.x.iter().enumerate() {
        if row.len() != train.features.len() {
            return Err(Error::invalid(format!(
                "training row {} has {} values but there are {} features",
                r + 1,
                row.len(),
                train.features.len()
            )));
        }
        if let Some(c) = row.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "`{}` is not finite in training row {}",
                train.features[c],
                r + 1
            )));
        }
    }
    if train.y.len() != train.x.len() || train.y.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "the training targets must be finite, one per row",
        ));
    }
    Ok(())
}

/// Column means and standard deviations (1 for constant columns, which then contribute nothing).
fn standardisation(x: &Array2<f64>) -> (Array1<f64>, Array1<f64>) {
    let mean = x.mean_axis(ndarray::Axis(0)).expect("non-empty, checked");
    let scale = x
        .std_axis(ndarray::Axis(0), 0.0)
        .mapv(|s| if s > 1e-12 { s } else { 1.0 });
    (mean, scale)
}

fn flatten(node: &linfa_trees::TreeNode<f64, usize>, out: &mut Vec<Node>) -> usize {
    let me = out.len();
    let children = node.children();
    match (node.is_leaf(), children[0], children[1]) {
        (false, Some(left), Some(right)) => {
            let (feature, threshold, _) = node.split();
            out.push(Node::Leaf { value: f64::NAN }); // placeholder until the children have indices
            let left = flatten(left, out);
            let right = flatten(right, out);
            out[me] = Node::Split {
                feature,
                threshold,
                left,
                right,
            };
        }
        _ => out.push(Node::Leaf {
            value: node.prediction().unwrap_or(0) as f64,
        }),
    }
    me
}

/// Replaces each leaf's class with the share of class-1 training rows reaching it, so the tree
/// gives a score (for ROC AUC and log loss), not only a label. A leaf no training row reaches
/// keeps linfa's class.
fn leaf_probabilities(nodes: &mut [Node], train: &Frame) {
    let mut counts = vec![(0.0f64, 0.0f64); nodes.len()];
    for (row, y) in train.x.iter().zip(&train.y) {
        let leaf = find_leaf(nodes, row);
        counts[leaf].0 += y;
        counts[leaf].1 += 1.0;
    }
    for (node, (pos, n)) in nodes.iter_mut().zip(counts) {
        if let Node::Leaf { value } = node
            && n > 0.0
        {
            *value = pos / n;
        }
    }
}

fn find_leaf(nodes: &[Node], row: &[f64]) -> usize {
    let mut i = 0;
    loop {
        match &nodes[i] {
            Node::Leaf { .. } => return i,
            Node::Split {
                feature,
                threshold,
                left,
                right,
            } => {
                i = if row[*feature] < *threshold {
                    *left
                } else {
                    *right
                };
            }
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    // Two forms so exp never overflows.
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        z.exp() / (1.0 + z.exp())
    }
}

impl TrainedModel {
    /// The artifact: JSON, deterministic for the same model.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a model always serialises")
    }

    /// Reads an artifact written by [`to_bytes`](Self::to_bytes), checking its format, version
    /// and internal consistency.
    pub fn from_bytes(bytes: &[u8]) -> Result<TrainedModel> {
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            format_version: Option<u32>,
        }
        let header: Header = serde_json::from_slice(bytes).map_err(|e| {
            Error::corrupt("the model artifact is not valid JSON (truncated or not a Galley model)")
                .with_source(e)
        })?;
        if header.format.as_deref() != Some(MODEL_FORMAT) {
            return Err(Error::corrupt(format!(
                "the artifact is not a Galley model (format {:?}, expected \"{MODEL_FORMAT}\")",
                header.format.unwrap_or_default()
            )));
        }
        match header.format_version {
            Some(MODEL_FORMAT_VERSION) => {}
            Some(v) if v > MODEL_FORMAT_VERSION => {
                return Err(Error::unsupported(format!(
                    "the model artifact has format version {v}, newer than this Galley reads \
                     ({MODEL_FORMAT_VERSION}); upgrade Galley or retrain the model"
                )));
            }
            v => {
                return Err(Error::corrupt(format!(
                    "the model artifact has format version {v:?}; this Galley reads version {MODEL_FORMAT_VERSION}"
                )));
            }
        }
        let model: TrainedModel = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt("the model artifact is damaged").with_source(e))?;
        model.check_consistency()?;
        Ok(model)
    }

    fn check_consistency(&self) -> Result<()> {
        let n = self.signature.inputs.len();
        let bad = |what: String| {
            Err(Error::corrupt(format!(
                "the model artifact is damaged: {what}"
            )))
        };
        match &self.fitted {
            Fitted::Linear {
                intercept,
                coefficients,
            } => {
                if coefficients.len() != n {
                    return bad(format!(
                        "{} coefficients for {n} inputs",
                        coefficients.len()
                    ));
                }
                if !intercept.is_finite() || coefficients.iter().any(|c| !c.is_finite()) {
                    return bad("non-finite coefficient".into());
                }
            }
            Fitted::Tree { nodes } => {
                if nodes.is_empty() {
                    return bad("the tree has no nodes".into());
                }
                for (i, node) in nodes.iter().enumerate() {
                    // Children after their parent (pre-order) rules out cycles, so scoring terminates.
                    if let Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } = node
                        && (*feature >= n
                            || !threshold.is_finite()
                            || *left <= i
                            || *right <= i
                            || *left >= nodes.len()
                            || *right >= nodes.len())
                    {
                        return bad(format!("tree node {i} is malformed"));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }
    pub(crate) fn fitted(&self) -> &Fitted {
        &self.fitted
    }
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    pub fn task(&self) -> Task {
        self.task
    }
    /// Effective hyperparameters (defaults included), as strings for lineage.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.signature.inputs.iter().map(|c| c.name.as_str())
    }

    /// Scores one row given in signature order: for classification the probability of class 1,
    /// for regression the value. A row of the wrong width scores NaN (never panics).
    pub fn predict_row(&self, x: &[f64]) -> f64 {
        if x.len() != self.signature.inputs.len() {
            return f64::NAN;
        }
        match &self.fitted {
            Fitted::Linear {
                intercept,
                coefficients,
            } => {
                let z = intercept + coefficients.iter().zip(x).map(|(c, v)| c * v).sum::<f64>();
                if self.task == Task::Classification {
                    sigmoid(z)
                } else {
                    z
                }
            }
            Fitted::Tree { nodes } => match &nodes[find_leaf(nodes, x)] {
                Node::Leaf { value } => *value,
                Node::Split { .. } => unreachable!("find_leaf returns a leaf"),
            },
        }
    }

    /// Fast path for a server: rows already in signature order (see [`predict_row`](Self::predict_row)).
    pub fn predict_matrix(&self, x: &[Vec<f64>]) -> Vec<f64> {
        x.iter().map(|r| self.predict_row(r)).collect()
    }

    /// Scores rows whose columns are matched to the signature by name, in any order.
    pub fn predict(&self, rows: &Table) -> Result<Vec<f64>> {
        Ok(self.predict_matrix(&ordered_rows(&self.signature, rows)?))
    }

    /// The class for a score (threshold 0.5) in classification; the score itself in regression.
    pub fn label(&self, score: f64) -> f64 {
        match self.task {
            Task::Classification => {
                if score >= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Task::Regression => score,
        }
    }
}

/// Rows whose columns are matched to `signature` by name, in any order, as numbers in the
/// signature's order: what every model format scores.
pub fn ordered_rows(signature: &Signature, rows: &Table) -> Result<Vec<Vec<f64>>> {
    let inputs = &signature.inputs;
    let unknown: Vec<&str> = rows
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !inputs.iter().any(|i| i.name == *n))
        .collect();
    let missing: Vec<&str> = inputs
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| rows.column_index(n).is_none())
        .collect();
    if !missing.is_empty() || !unknown.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing {}", feature_list(&missing)));
        }
        if !unknown.is_empty() {
            parts.push(format!("unknown {}", feature_list(&unknown)));
        }
        return Err(Error::invalid(format!(
            "{}; the model expects: {}",
            parts.join("; "),
            inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let positions: Vec<usize> = inputs
        .iter()
        .map(|i| rows.column_index(&i.name).expect("checked"))
        .collect();

    let mut out = Vec::with_capacity(rows.len());
    for (r, row) in rows.rows.iter().enumerate() {
        if row.len() != rows.columns.len() {
            return Err(Error::invalid(format!(
                "row {} has {} values for {} columns",
                r + 1,
                row.len(),
                rows.columns.len()
            )));
        }
        let mut x = vec![0.0; inputs.len()];
        for ((slot, &p), input) in x.iter_mut().zip(&positions).zip(inputs) {
            *slot = input_value(&row[p], &input.name, input.dtype).map_err(|m| {
                Error::new(ErrorKind::InvalidInput, row_context(m, r, rows.len()))
            })?;
        }
        out.push(x);
    }
    Ok(out)
}

fn feature_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    format!(
        "feature{} {}",
        if names.len() == 1 { "" } else { "s" },
        quoted.join(", ")
    )
}

fn row_context(message: String, row: usize, rows: usize) -> String {
    if rows == 1 {
        message
    } else {
        format!("{message} (row {})", row + 1)
    }
}

fn input_value(v: &Value, name: &str, dtype: DType) -> std::result::Result<f64, String> {
    let got = match v {
        Value::Null => return Err(format!("feature `{name}` is null; the model needs a value")),
        Value::Bool(b) if dtype == DType::Bool => return Ok(if *b { 1.0 } else { 0.0 }),
        Value::Int(i) if dtype != DType::Bool => return Ok(*i as f64),
        Value::Float(f) if dtype != DType::Bool => {
            return if f.is_finite() {
                Ok(*f)
            } else {
                Err(format!("feature `{name}` must be a finite number, got {f}"))
            };
        }
        Value::Bool(_) => "a bool",
        Value::Int(_) | Value::Float(_) => "a number",
        Value::String(_) => "a string",
    };
    let want = if dtype == DType::Bool {
        "true or false"
    } else {
        "a number"
    };
    Err(format!("feature `{name}` must be {want}, got {got}"))
}
