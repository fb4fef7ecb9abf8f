//! Data validation: the blueprint's `data.schema` rules plus the checks every training run
//! needs (target present and non-null, features present, numbers finite, data not empty).
//!
//! It reports every problem at once, with how many rows each affects and the first one, so a
//! user fixes the data in one pass instead of one error per run.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use galley_core::ml::{ColumnRule, Data};
use galley_core::{DType, Table, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    MissingColumn,
    WrongType,
    Null,
    BelowMin,
    AboveMax,
    EmptyDataset,
    NonFinite,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The column concerned; empty for whole-dataset problems.
    pub column: String,
    pub kind: ProblemKind,
    /// How many rows have the problem (0 for a missing column or an empty dataset).
    pub rows: usize,
    /// 0-based index of the first such data row (the header is not counted).
    pub first_row: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValidationReport {
    pub rows: usize,
    pub columns: usize,
    pub problems: Vec<Problem>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// A human summary: one line for the data, one per problem.
    pub fn render(&self) -> String {
        let mut out = format!("{} rows × {} columns: ", self.rows, self.columns);
        if self.is_ok() {
            out.push_str("all checks passed");
            return out;
        }
        let n = self.problems.len();
        let _ = write!(out, "{n} problem{}", if n == 1 { "" } else { "s" });
        for p in &self.problems {
            let _ = write!(out, "\n  ✗ {}", p.message);
        }
        out
    }
}

/// Checks `table` against `data` (schema rules, target) and the feature list (empty = every
/// column but the target).
pub fn validate(table: &Table, data: &Data, features: &[String]) -> ValidationReport {
    let mut problems = Vec::new();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let mut report_missing = |problems: &mut Vec<Problem>, col: &str, role: &str| {
        if missing.insert(col.to_owned()) {
            problems.push(Problem {
                column: col.to_owned(),
                kind: ProblemKind::MissingColumn,
                rows: 0,
                first_row: None,
                message: format!(
                    "{role} column `{col}` is not in the data{}",
                    did_you_mean(table, col)
                ),
            });
        }
    };

    if table.is_empty() {
        problems.push(Problem {
            column: String::new(),
            kind: ProblemKind::EmptyDataset,
            rows: 0,
            first_row: None,
            message: "the dataset has no rows".into(),
        });
    }

    match table.column_index(&data.target) {
        None => report_missing(&mut problems, &data.target, "target"),
        Some(i) => {
            if let Some(p) = count_rows(table, i, Value::is_null) {
                problems.push(p.into_problem(&data.target, ProblemKind::Null, |n, first| {
                    format!("target `{}` is null in {n} row{} (first: row {first}); every row needs a target", data.target, plural(n))
                }));
            }
        }
    }

    let feature_names: Vec<String> = if features.is_empty() {
        table
            .columns
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| *n != data.target)
            .collect()
    } else {
        features.to_vec()
    };
    for f in &feature_names {
        if table.column_index(f).is_none() {
            report_missing(&mut problems, f, "feature");
        }
    }

    for (col, rule) in &data.schema {
        match table.column_index(col) {
            None => report_missing(&mut problems, col, "schema"),
            Some(i) => check_rule(table, i, col, rule, &mut problems),
        }
    }

    // Non-finite numbers poison training silently (NaN loss, NaN splits): check every column
    // the run reads.
    let used: BTreeSet<&str> = feature_names
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(data.target.as_str()))
        .chain(data.schema.keys().map(String::as_str))
        .collect();
    for col in table
        .columns
        .iter()
        .filter(|c| used.contains(c.name.as_str()))
    {
        let i = table
            .column_index(&col.name)
            .expect("column listed by the table");
        if let Some(p) = count_rows(table, i, |v| matches!(v, Value::Float(f) if !f.is_finite())) {
            problems.push(
                p.into_problem(&col.name, ProblemKind::NonFinite, |n, first| {
                    format!(
                        "`{}` has {n} NaN or infinite value{} (first: row {first})",
                        col.name,
                        plural(n)
                    )
                }),
            );
        }
    }

    ValidationReport {
        rows: table.len(),
        columns: table.columns.len(),
        problems,
    }
}

fn check_rule(table: &Table, i: usize, col: &str, rule: &ColumnRule, problems: &mut Vec<Problem>) {
    if let Some(want) = rule.dtype {
        // Ints widen to floats, as everywhere in Galley.
        let wrong = |v: &Value| match v.dtype() {
            None => false,
            Some(got) => !(got == want || (got == DType::Int && want == DType::Float)),
        };
        if let Some(p) = count_rows(table, i, wrong) {
            let got = table.columns[i].dtype;
            problems.push(p.into_problem(col, ProblemKind::WrongType, |n, first| {
                format!("`{col}` should be {want} but {n} value{} {} not (column type {got}; first: row {first})", plural(n), if n == 1 { "is" } else { "are" })
            }));
        }
    }
    if rule.dtype.is_none()
        && (rule.min.is_some() || rule.max.is_some())
        && let Some(p) = count_rows(table, i, |v| matches!(v, Value::String(_)))
    {
        // A bound on text cannot be checked; saying so beats silently passing.
        problems.push(p.into_problem(col, ProblemKind::WrongType, |n, first| {
            format!(
                "`{col}` has min/max bounds but {n} text value{} (first: row {first})",
                plural(n)
            )
        }));
    }
    if !rule.nullable
        && let Some(p) = count_rows(table, i, Value::is_null)
    {
        problems.push(p.into_problem(col, ProblemKind::Null, |n, first| {
            format!("`{col}` is null in {n} row{} (first: row {first}); set `nullable: true` if nulls are expected", plural(n))
        }));
    }
    if let Some(min) = rule.min
        && let Some(p) = count_rows(table, i, |v| v.as_f64().is_some_and(|x| x < min))
    {
        problems.push(p.into_problem(col, ProblemKind::BelowMin, |n, first| {
            format!(
                "`{col}` is below its min {min} in {n} row{} (first: row {first})",
                plural(n)
            )
        }));
    }
    if let Some(max) = rule.max
        && let Some(p) = count_rows(table, i, |v| v.as_f64().is_some_and(|x| x > max))
    {
        problems.push(p.into_problem(col, ProblemKind::AboveMax, |n, first| {
            format!(
                "`{col}` is above its max {max} in {n} row{} (first: row {first})",
                plural(n)
            )
        }));
    }
}

struct Hits {
    rows: usize,
    first: usize,
}

impl Hits {
    /// `message` gets the count and the 1-based row number, as a user counts rows.
    fn into_problem(
        self,
        col: &str,
        kind: ProblemKind,
        message: impl FnOnce(usize, usize) -> String,
    ) -> Problem {
        Problem {
            column: col.to_owned(),
            kind,
            rows: self.rows,
            first_row: Some(self.first),
            message: message(self.rows, self.first + 1),
        }
    }
}

fn count_rows(table: &Table, col: usize, pred: impl Fn(&Value) -> bool) -> Option<Hits> {
    let mut hits: Option<Hits> = None;
    for (r, row) in table.rows.iter().enumerate() {
        if pred(&row[col]) {
            match &mut hits {
                Some(h) => h.rows += 1,
                None => hits = Some(Hits { rows: 1, first: r }),
            }
        }
    }
    hits
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn did_you_mean(table: &Table, name: &str) -> String {
    let best = table
        .columns
        .iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&c.name.to_lowercase(), &name.to_lowercase()),
                &c.name,
            )
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, n)) => format!(" (did you mean `{n}`?)"),
        None => {
            let all: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
            if all.is_empty() {
                String::new()
            } else {
                format!(" (columns: {})", all.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::ml::Split;
    use galley_core::table::Column;
    use indexmap::IndexMap;

    fn data(schema: IndexMap<String, ColumnRule>) -> Data {
        Data {
            source: "x.csv".into(),
            target: "y".into(),
            task: Default::default(),
            positive_when: None,
            schema,
            split: Split::default(),
        }
    }

    fn rule(
        dtype: Option<DType>,
        min: Option<f64>,
        max: Option<f64>,
        nullable: bool,
    ) -> ColumnRule {
        ColumnRule {
            dtype,
            min,
            max,
            nullable,
        }
    }

    fn table() -> Table {
        let mut t = Table::new(vec![
            Column::new("a", DType::Float),
            Column::new("b", DType::String),
            Column::new("y", DType::Int),
        ]);
        t.push(vec![Value::Float(1.0), "x".into(), Value::Int(1)])
            .unwrap();
        t.push(vec![Value::Float(f64::NAN), Value::Null, Value::Null])
            .unwrap();
        t.push(vec![Value::Float(-5.0), "z".into(), Value::Int(0)])
            .unwrap();
        t.push(vec![Value::Float(50.0), Value::Null, Value::Null])
            .unwrap();
        t.push(vec![Value::Float(70.0), "w".into(), Value::Int(1)])
            .unwrap();
        t
    }

    fn find(r: &ValidationReport, col: &str, kind: ProblemKind) -> Problem {
        r.problems
            .iter()
            .find(|p| p.column == col && p.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind:?} problem for `{col}` in {:#?}", r.problems))
    }

    #[test]
    fn clean_data_passes() {
        let mut t = Table::new(vec![
            Column::new("a", DType::Float),
            Column::new("y", DType::Int),
        ]);
        t.push(vec![Value::Float(1.0), Value::Int(0)]).unwrap();
        let schema = IndexMap::from([(
            "a".to_owned(),
            rule(Some(DType::Float), Some(0.0), Some(2.0), false),
        )]);
        let r = validate(&t, &data(schema), &[]);
        assert!(r.is_ok(), "{}", r.render());
        assert!(r.render().contains("1 rows × 2 columns"));
    }

    #[test]
    fn every_problem_kind_is_found_with_counts() {
        let schema = IndexMap::from([
            ("a".to_owned(), rule(None, Some(0.0), Some(60.0), false)),
            ("b".to_owned(), rule(Some(DType::Int), None, None, false)),
            ("gone".to_owned(), rule(None, None, None, false)),
        ]);
        let r = validate(&table(), &data(schema), &["a".into(), "alpha".into()]);
        assert!(!r.is_ok());
        assert_eq!((r.rows, r.columns), (5, 3));

        let target_null = find(&r, "y", ProblemKind::Null);
        assert_eq!((target_null.rows, target_null.first_row), (2, Some(1)));
        assert_eq!(find(&r, "alpha", ProblemKind::MissingColumn).rows, 0);
        assert!(
            find(&r, "gone", ProblemKind::MissingColumn)
                .message
                .contains("schema column `gone`")
        );
        let below = find(&r, "a", ProblemKind::BelowMin);
        assert_eq!((below.rows, below.first_row), (1, Some(2)));
        let above = find(&r, "a", ProblemKind::AboveMax);
        assert_eq!((above.rows, above.first_row), (1, Some(4)));
        let wrong = find(&r, "b", ProblemKind::WrongType);
        assert_eq!((wrong.rows, wrong.first_row), (3, Some(0)));
        let nulls = find(&r, "b", ProblemKind::Null);
        assert_eq!((nulls.rows, nulls.first_row), (2, Some(1)));
        let nan = find(&r, "a", ProblemKind::NonFinite);
        assert_eq!((nan.rows, nan.first_row), (1, Some(1)));
        // NaN is neither below min nor above max, and `a` itself has no nulls.
        assert!(
            !r.problems
                .iter()
                .any(|p| p.column == "a" && p.kind == ProblemKind::Null)
        );
        assert_eq!(r.problems.len(), 8, "{}", r.render());
        assert!(r.render().contains("8 problems"));
    }

    #[test]
    fn bounds_on_a_text_column_are_a_type_problem() {
        let schema = IndexMap::from([("b".to_owned(), rule(None, Some(0.0), None, true))]);
        let r = validate(&table(), &data(schema), &["a".into()]);
        let p = find(&r, "b", ProblemKind::WrongType);
        assert_eq!((p.rows, p.first_row), (3, Some(0)));
    }

    #[test]
    fn nullable_columns_and_int_as_float_pass() {
        let schema = IndexMap::from([
            ("b".to_owned(), rule(Some(DType::String), None, None, true)),
            (
                "y".to_owned(),
                rule(Some(DType::Float), Some(0.0), Some(1.0), true),
            ),
        ]);
        let r = validate(&table(), &data(schema), &["b".into()]);
        // Only the target nulls remain: the schema's nullable does not excuse a null target.
        let kinds: Vec<(String, ProblemKind)> = r
            .problems
            .iter()
            .map(|p| (p.column.clone(), p.kind))
            .collect();
        assert_eq!(kinds, vec![("y".to_owned(), ProblemKind::Null)]);
    }

    #[test]
    fn empty_dataset_and_missing_target_are_reported_with_a_suggestion() {
        let t = Table::new(vec![Column::new("Y", DType::Int)]);
        let r = validate(&t, &data(IndexMap::new()), &[]);
        assert_eq!(r.problems[0].kind, ProblemKind::EmptyDataset);
        assert_eq!(r.problems.len(), 2, "{}", r.render());
        let m = find(&r, "y", ProblemKind::MissingColumn);
        assert!(m.message.contains("did you mean `Y`"), "{}", m.message);
    }
}
