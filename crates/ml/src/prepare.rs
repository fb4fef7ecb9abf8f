//! Turning a validated table into numeric train/test frames.
//!
//! The split is a seeded shuffle with ChaCha8 (whose output is stable across `rand_chacha`
//! releases), so the same seed and data give the same split on every machine and every run:
//! that is what makes a re-run comparable to the last one.

use galley_core::ml::{Data, Task};
use galley_core::stages::Signature;
use galley_core::table::Column;
use galley_core::{DType, Error, Result, Table, Value};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Numeric rows in the order of `features`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub features: Vec<String>,
    /// Row-major: `x[row][feature]`.
    pub x: Vec<Vec<f64>>,
    pub y: Vec<f64>,
}

impl Frame {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub train: Frame,
    pub test: Frame,
    pub signature: Signature,
    pub task: Task,
}

/// Splits `table` into train and test frames (see the module docs). For classification the
/// target becomes 0/1 (with `data.positive_when`, 1 when the value is at least the threshold)
/// and each class is split in the same proportion.
pub fn prepare(table: &Table, data: &Data, features: &[String]) -> Result<Prepared> {
    let target_idx = table.column_index(&data.target).ok_or_else(|| {
        Error::invalid(format!(
            "the target column `{}` is not in the data",
            data.target
        ))
    })?;
    let features = resolve_features(table, &data.target, features)?;
    let feature_idx: Vec<usize> = features
        .iter()
        .map(|f| table.column_index(f).expect("checked"))
        .collect();

    if !(data.split.test_size > 0.0 && data.split.test_size < 1.0) {
        return Err(Error::invalid(format!(
            "data.split.test_size must be between 0 and 1 (exclusive), got {}",
            data.split.test_size
        )));
    }

    let mut x = Vec::with_capacity(table.len());
    let mut y = Vec::with_capacity(table.len());
    for (r, row) in table.rows.iter().enumerate() {
        let xs = feature_idx
            .iter()
            .zip(&features)
            .map(|(&i, name)| numeric(&row[i], name, r))
            .collect::<Result<Vec<f64>>>()?;
        x.push(xs);
        y.push(numeric(&row[target_idx], &data.target, r)?);
    }
    let y = encode_target(y, data)?;

    let (train_idx, test_idx) =
        split_indices(&y, data.task, data.split.test_size, data.split.seed)?;
    let pick = |idx: &[usize]| Frame {
        features: features.clone(),
        x: idx.iter().map(|&i| x[i].clone()).collect(),
        y: idx.iter().map(|&i| y[i]).collect(),
    };

    let signature = Signature {
        inputs: feature_idx
            .iter()
            .map(|&i| table.columns[i].clone())
            .collect(),
        output: Some(Column::new(data.target.clone(), DType::Float)),
    };
    Ok(Prepared {
        train: pick(&train_idx),
        test: pick(&test_idx),
        signature,
        task: data.task,
    })
}

fn resolve_features(table: &Table, target: &str, features: &[String]) -> Result<Vec<String>> {
    let names: Vec<String> = if features.is_empty() {
        table
            .columns
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| n != target)
            .collect()
    } else {
        features.to_vec()
    };
    if names.is_empty() {
        return Err(Error::invalid(format!(
            "there are no feature columns: the data has only the target `{target}`"
        )));
    }
    for (i, name) in names.iter().enumerate() {
        if name == target {
            return Err(Error::invalid(format!(
                "`{name}` is the target; it cannot also be a feature (remove it from the feature list)"
            )));
        }
        if names[..i].contains(name) {
            return Err(Error::invalid(format!("feature `{name}` is listed twice")));
        }
        let col = table
            .column_index(name)
            .map(|c| &table.columns[c])
            .ok_or_else(|| {
                Error::invalid(format!("feature `{name}` is not a column of the data"))
            })?;
        if col.dtype == DType::String {
            return Err(Error::invalid(format!(
                "feature `{name}` is a string column; only numeric and bool features can be used \
                 (drop it from the feature list, or encode it as numbers in the source data)"
            )));
        }
    }
    Ok(names)
}

fn numeric(v: &Value, col: &str, row: usize) -> Result<f64> {
    match v {
        Value::Null => Err(Error::invalid(format!(
            "`{col}` is null in row {}; fill or drop rows with missing values before training",
            row + 1
        ))),
        other => other.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
            Error::invalid(format!(
                "`{col}` in row {} is not a finite number: {other:?}",
                row + 1
            ))
        }),
    }
}

fn encode_target(y: Vec<f64>, data: &Data) -> Result<Vec<f64>> {
    match (data.task, &data.positive_when) {
        (Task::Regression, Some(_)) => Err(Error::invalid(
            "data.positive_when turns the target into a class label, which only makes sense with `task: classification`",
        )),
        (Task::Regression, None) => Ok(y),
        (Task::Classification, Some(p)) => Ok(y
            .into_iter()
            .map(|v| if v >= p.at_least { 1.0 } else { 0.0 })
            .collect()),
        (Task::Classification, None) => {
            if let Some(bad) = y.iter().find(|v| **v != 0.0 && **v != 1.0) {
                return Err(Error::invalid(format!(
                    "classification needs a binary target (0/1 or true/false), but `{}` has the value {bad}; \
                     set `data.positive_when.at_least` to turn it into one",
                    data.target
                )));
            }
            Ok(y)
        }
    }
}

/// Returns (train, test) row indices, each sorted ascending.
fn split_indices(
    y: &[f64],
    task: Task,
    test_size: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let groups: Vec<Vec<usize>> = match task {
        Task::Classification => {
            let negatives = (0..y.len()).filter(|&i| y[i] == 0.0).collect::<Vec<_>>();
            let positives = (0..y.len()).filter(|&i| y[i] == 1.0).collect::<Vec<_>>();
            for (class, rows) in [("0", &negatives), ("1", &positives)] {
                if rows.len() < 2 {
                    return Err(Error::invalid(format!(
                        "class {class} has {} row{}; classification needs at least 2 rows of each class \
                         (check data.positive_when)",
                        rows.len(),
                        if rows.len() == 1 { "" } else { "s" }
                    )));
                }
            }
            vec![negatives, positives]
        }
        Task::Regression => vec![(0..y.len()).collect()],
    };
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for mut rows in groups {
        rows.shuffle(&mut rng);
        // At least one row on each side of the split, whatever test_size says.
        let n_test = ((rows.len() as f64 * test_size).round() as usize)
            .clamp(1, rows.len().saturating_sub(1));
        test.extend_from_slice(&rows[..n_test]);
        train.extend_from_slice(&rows[n_test..]);
    }
    if train.is_empty() || test.is_empty() {
        return Err(Error::invalid(format!(
            "{} rows are too few to split into training and test sets",
            y.len()
        )));
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::ml::{PositiveWhen, Split};

    pub(crate) fn wine_data() -> Data {
        Data {
            source: "builtin:winequality".into(),
            target: "quality".into(),
            task: Task::Classification,
            positive_when: Some(PositiveWhen { at_least: 6.0 }),
            schema: Default::default(),
            split: Split {
                test_size: 0.2,
                seed: 42,
            },
        }
    }

    fn wine() -> Table {
        crate::dataset::load_source("builtin:winequality", std::path::Path::new("."))
            .unwrap()
            .table
    }

    #[test]
    fn split_is_deterministic_stratified_and_complete() {
        let t = wine();
        let a = prepare(&t, &wine_data(), &[]).unwrap();
        let b = prepare(&t, &wine_data(), &[]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.train.len() + a.test.len(), 1599);
        assert_eq!(a.train.features.len(), 11);
        assert_eq!(a.signature.inputs.len(), 11);
        assert!(a.train.features.iter().all(|f| f != "quality"));
        assert!(
            a.test.len() >= 310 && a.test.len() <= 330,
            "{}",
            a.test.len()
        );
        let share = |f: &Frame| f.y.iter().sum::<f64>() / f.len() as f64;
        assert!(
            (share(&a.train) - share(&a.test)).abs() < 0.01,
            "stratified split keeps class balance"
        );

        let mut other = wine_data();
        other.split.seed = 7;
        assert_ne!(
            prepare(&t, &other, &[]).unwrap().test,
            a.test,
            "a different seed gives a different split"
        );
    }

    #[test]
    fn multiclass_target_without_positive_when_is_explained() {
        let mut d = wine_data();
        d.positive_when = None;
        let e = prepare(&wine(), &d, &[]).unwrap_err();
        assert!(e.message().contains("positive_when"), "{e}");
    }

    #[test]
    fn given_features_are_used_in_order_and_strings_refused() {
        let t = wine();
        let p = prepare(&t, &wine_data(), &["alcohol".into(), "ph".into()]).unwrap();
        assert_eq!(p.train.features, ["alcohol", "ph"]);
        assert_eq!(p.signature.inputs[0].name, "alcohol");
        let e = prepare(&t, &wine_data(), &["colour".into()]).unwrap_err();
        assert!(e.message().contains("`colour`"), "{e}");

        let s = crate::dataset::parse_csv(b"c,y\nred,1\nwhite,0\nred,1\nred,0\n").unwrap();
        let mut d = wine_data();
        d.target = "y".into();
        d.positive_when = None;
        let e = prepare(&s, &d, &[]).unwrap_err();
        assert!(
            e.message().contains("feature `c` is a string column"),
            "{e}"
        );
    }
}
