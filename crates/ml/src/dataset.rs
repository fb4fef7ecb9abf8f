//! Loading training data: the datasets shipped inside the binary (`builtin:NAME`) and CSV files.
//!
//! CSV columns get the narrowest type every non-empty cell fits (bool, then int, then float,
//! else string); an empty cell is a null. The dataset's SHA-256 goes into model lineage, so it
//! must depend only on the data: for a CSV it is the hash of the file's bytes, for a builtin the
//! hash of its canonical CSV rendering (see [`canonical_csv`]).

use std::path::Path;

use galley_core::table::Column;
use galley_core::{DType, Error, Result, Table, Value};
use ndarray::{Array1, Array2};
use sha2::{Digest, Sha256};

/// A table read from a source, with the hash that identifies its content.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub table: Table,
    /// Hex SHA-256 of the raw source bytes.
    pub sha256: String,
}

pub const BUILTIN_PREFIX: &str = "builtin:";
const BUILTINS: [&str; 3] = ["winequality", "iris", "diabetes"];

/// Column names of the builtin datasets, snake_case so they work unquoted in YAML and JSON.
/// The target is always last.
const WINE_COLUMNS: [&str; 12] = [
    "fixed_acidity",
    "volatile_acidity",
    "citric_acid",
    "residual_sugar",
    "chlorides",
    "free_sulfur_dioxide",
    "total_sulfur_dioxide",
    "density",
    "ph",
    "sulphates",
    "alcohol",
    "quality",
];
const IRIS_COLUMNS: [&str; 5] = [
    "sepal_length",
    "sepal_width",
    "petal_length",
    "petal_width",
    "species",
];
const DIABETES_COLUMNS: [&str; 11] = [
    "age",
    "sex",
    "bmi",
    "bp",
    "s1",
    "s2",
    "s3",
    "s4",
    "s5",
    "s6",
    "progression",
];

/// Reads `source`: `builtin:winequality` (UCI red wine quality, 1,599 rows, target `quality`
/// 3..8), `builtin:iris` (150 rows, target `species` 0..2), `builtin:diabetes` (441 rows,
/// target `progression`), all embedded in the binary; anything else is a CSV path relative to
/// `base_dir`.
///
/// The diabetes data has 441 rows, not scikit-learn's 442: linfa-datasets reads its header-less
/// files as if they had a header, dropping the first row of features and of targets alike (so
/// the two stay aligned).
pub fn load_source(source: &str, base_dir: &Path) -> Result<Dataset> {
    if let Some(name) = source.strip_prefix(BUILTIN_PREFIX) {
        return load_builtin(name);
    }
    let path = base_dir.join(source);
    let bytes = std::fs::read(&path).map_err(|e| {
        let hint = if source.starts_with("builtin") {
            format!(
                " (builtin datasets are written `builtin:NAME`, NAME one of {})",
                BUILTINS.join(", ")
            )
        } else {
            String::new()
        };
        // Keep the I/O error's kind (not found, permission denied) so callers can react to it.
        let kind = Error::from(std::io::Error::from(e.kind())).kind();
        Error::new(
            kind,
            format!("cannot read data source `{}`{hint}", path.display()),
        )
        .with_source(e)
    })?;
    let table = parse_csv(&bytes).map_err(|e| e.resource(path.display().to_string()))?;
    Ok(Dataset {
        name: source.to_owned(),
        table,
        sha256: sha256_hex(&bytes),
    })
}

/// The columns of a builtin dataset (`winequality` or `builtin:winequality`), target last.
pub fn builtin_columns(name: &str) -> Option<Vec<String>> {
    let name = name.strip_prefix(BUILTIN_PREFIX).unwrap_or(name);
    let cols: &[&str] = match name {
        "winequality" => &WINE_COLUMNS,
        "iris" => &IRIS_COLUMNS,
        "diabetes" => &DIABETES_COLUMNS,
        _ => return None,
    };
    Some(cols.iter().map(|c| (*c).to_owned()).collect())
}

/// The names accepted after `builtin:`.
pub fn builtin_names() -> &'static [&'static str] {
    &BUILTINS
}

fn load_builtin(name: &str) -> Result<Dataset> {
    let table = match name {
        "winequality" => {
            let d = linfa_datasets::winequality();
            numeric_table(
                &WINE_COLUMNS,
                d.records(),
                &d.targets().mapv(|t| Value::Int(t as i64)),
                DType::Int,
            )
        }
        "iris" => {
            let d = linfa_datasets::iris();
            numeric_table(
                &IRIS_COLUMNS,
                d.records(),
                &d.targets().mapv(|t| Value::Int(t as i64)),
                DType::Int,
            )
        }
        "diabetes" => {
            let d = linfa_datasets::diabetes();
            numeric_table(
                &DIABETES_COLUMNS,
                d.records(),
                &d.targets().mapv(Value::Float),
                DType::Float,
            )
        }
        other => {
            return Err(Error::not_found(format!(
                "there is no builtin dataset `{other}`; builtin datasets are {}",
                BUILTINS
                    .iter()
                    .map(|b| format!("`builtin:{b}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let sha256 = sha256_hex(canonical_csv(&table).as_bytes());
    Ok(Dataset {
        name: format!("{BUILTIN_PREFIX}{name}"),
        table,
        sha256,
    })
}

fn numeric_table(names: &[&str], x: &Array2<f64>, y: &Array1<Value>, target_type: DType) -> Table {
    let (features, target) = names.split_at(names.len() - 1);
    let mut columns: Vec<Column> = features
        .iter()
        .map(|n| Column::new(*n, DType::Float))
        .collect();
    columns.push(Column::new(target[0], target_type));
    let rows = x
        .rows()
        .into_iter()
        .zip(y)
        .map(|(r, t)| {
            r.iter()
                .map(|v| Value::Float(*v))
                .chain(std::iter::once(t.clone()))
                .collect()
        })
        .collect();
    Table { columns, rows }
}

/// The canonical CSV form of a table: header, then one record per row, floats in shortest
/// round-trip notation, nulls as empty cells. Stable across releases, so a builtin's hash only
/// changes when its data does.
pub fn canonical_csv(table: &Table) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let write = |w: &mut csv::Writer<Vec<u8>>, cells: Vec<String>| {
        w.write_record(&cells)
            .expect("writing CSV to memory cannot fail");
    };
    write(
        &mut w,
        table.columns.iter().map(|c| c.name.clone()).collect(),
    );
    for row in &table.rows {
        let cells = row
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                Value::Bool(b) => b.to_string(),
                Value::Int(i) => i.to_string(),
                Value::Float(f) => format!("{f:?}"),
                Value::String(s) => s.clone(),
            })
            .collect();
        write(&mut w, cells);
    }
    let bytes = w.into_inner().expect("flushing CSV to memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8")
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Parses CSV bytes with a header row, inferring each column's type.
pub fn parse_csv(bytes: &[u8]) -> Result<Table> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let header = reader.headers().map_err(csv_error)?.clone();
    let names: Vec<String> = header.iter().map(str::to_owned).collect();
    if names.is_empty() || (names.len() == 1 && names[0].is_empty()) {
        return Err(Error::invalid(
            "the CSV file is empty: it needs a header row naming the columns",
        ));
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            return Err(Error::invalid(format!(
                "column {} of the CSV header has no name",
                i + 1
            )));
        }
        if names[..i].contains(n) {
            return Err(Error::invalid(format!(
                "the CSV header names column `{n}` twice"
            )));
        }
    }

    let mut cells: Vec<Vec<String>> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        cells.push(record.iter().map(str::to_owned).collect());
    }

    let types: Vec<DType> = (0..names.len())
        .map(|c| infer_type(cells.iter().map(|r| r[c].as_str())))
        .collect();
    let rows = cells
        .into_iter()
        .map(|r| {
            r.into_iter()
                .zip(&types)
                .map(|(cell, t)| parse_cell(cell, *t))
                .collect()
        })
        .collect();
    Ok(Table {
        columns: names
            .into_iter()
            .zip(&types)
            .map(|(n, t)| Column::new(n, *t))
            .collect(),
        rows,
    })
}

fn csv_error(e: csv::Error) -> Error {
    let at = e
        .position()
        .map(|p| format!(" at line {}", p.line()))
        .unwrap_or_default();
    let msg = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("malformed CSV{at}: the row has {len} fields but the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => format!("malformed CSV{at}: the text is not valid UTF-8"),
        _ => format!("malformed CSV{at}"),
    };
    Error::invalid(msg).with_source(e)
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// The narrowest type that every non-empty cell parses as. A column of only empty cells is a
/// string column (there is nothing to infer from, and every value is null anyway).
fn infer_type<'a>(cells: impl Iterator<Item = &'a str>) -> DType {
    let (mut bool_ok, mut int_ok, mut float_ok, mut any) = (true, true, true, false);
    for cell in cells.filter(|c| !c.is_empty()) {
        any = true;
        bool_ok &= parse_bool(cell).is_some();
        int_ok &= cell.parse::<i64>().is_ok();
        float_ok &= cell.parse::<f64>().is_ok();
    }
    match (any, bool_ok, int_ok, float_ok) {
        (false, ..) => DType::String,
        (true, true, _, _) => DType::Bool,
        (true, _, true, _) => DType::Int,
        (true, _, _, true) => DType::Float,
        _ => DType::String,
    }
}

fn parse_cell(cell: String, t: DType) -> Value {
    if cell.is_empty() {
        return Value::Null;
    }
    // `infer_type` already checked every cell parses as `t`.
    match t {
        DType::Bool => parse_bool(&cell).map_or(Value::Null, Value::Bool),
        DType::Int => cell.parse().map_or(Value::Null, Value::Int),
        DType::Float => cell.parse().map_or(Value::Null, Value::Float),
        DType::String => Value::String(cell),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_types_and_nulls_are_inferred() {
        let csv = "id,score,flag,name,empty\n1,0.5,true,a,\n2,,FALSE,,\n3,2,true,c,\n";
        let t = parse_csv(csv.as_bytes()).unwrap();
        let types: Vec<DType> = t.columns.iter().map(|c| c.dtype).collect();
        assert_eq!(
            types,
            [
                DType::Int,
                DType::Float,
                DType::Bool,
                DType::String,
                DType::String
            ]
        );
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.rows[0],
            vec![
                Value::Int(1),
                Value::Float(0.5),
                Value::Bool(true),
                "a".into(),
                Value::Null
            ]
        );
        assert_eq!(t.rows[1][1], Value::Null);
        assert_eq!(t.rows[1][2], Value::Bool(false));
        assert_eq!(t.rows[1][3], Value::Null);
        // An int-looking cell in a float column is stored as a float.
        assert_eq!(t.rows[2][1], Value::Float(2.0));
    }

    #[test]
    fn mixed_column_falls_back_to_string() {
        let t = parse_csv(b"a\n1\nx\n").unwrap();
        assert_eq!(t.columns[0].dtype, DType::String);
        assert_eq!(t.rows[0][0], Value::String("1".into()));
    }

    #[test]
    fn ragged_and_duplicate_csv_is_rejected_with_location() {
        let e = parse_csv(b"a,b\n1,2\n3\n").unwrap_err();
        assert!(
            e.message().contains("line 3") && e.message().contains("1 fields"),
            "{e}"
        );
        let e = parse_csv(b"a,a\n1,2\n").unwrap_err();
        assert!(e.message().contains("`a` twice"), "{e}");
    }

    #[test]
    fn load_source_reads_csv_relative_to_base_and_hashes_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"x,y\n1.5,1\n2.5,0\n";
        std::fs::write(dir.path().join("d.csv"), bytes).unwrap();
        let d = load_source("d.csv", dir.path()).unwrap();
        assert_eq!(d.table.len(), 2);
        assert_eq!(d.sha256, sha256_hex(bytes));
        assert_eq!(d.sha256.len(), 64);

        let e = load_source("missing.csv", dir.path()).unwrap_err();
        assert_eq!(e.kind(), galley_core::ErrorKind::NotFound);
        assert!(e.to_string().contains("missing.csv"), "{e}");
    }

    #[test]
    fn builtin_wine_has_the_documented_shape() {
        let d = load_source("builtin:winequality", Path::new(".")).unwrap();
        assert_eq!(d.table.len(), 1599);
        let names: Vec<&str> = d.table.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, WINE_COLUMNS);
        assert_eq!(builtin_columns("builtin:winequality").unwrap().len(), 12);
        let q = d.table.column_f64("quality").unwrap();
        let (lo, hi) = q
            .iter()
            .flatten()
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        assert_eq!((lo, hi), (3.0, 8.0));
        // The hash is of the content, so loading twice gives the same hash.
        assert_eq!(
            d.sha256,
            load_source("builtin:winequality", Path::new("."))
                .unwrap()
                .sha256
        );
    }

    #[test]
    fn canonical_csv_round_trips_through_the_parser() {
        let t = parse_csv(b"a,b,c\n1.5,\"x, y\",true\n,z,false\n").unwrap();
        assert_eq!(parse_csv(canonical_csv(&t).as_bytes()).unwrap(), t);
    }

    #[test]
    fn other_builtins_load_and_unknown_builtin_is_named() {
        assert_eq!(
            load_source("builtin:iris", Path::new("."))
                .unwrap()
                .table
                .len(),
            150
        );
        let diabetes = load_source("builtin:diabetes", Path::new(".")).unwrap();
        assert_eq!(diabetes.table.len(), 441);
        assert_eq!(diabetes.table.columns.len(), DIABETES_COLUMNS.len());
        let e = load_source("builtin:wine", Path::new(".")).unwrap_err();
        assert!(e.message().contains("`builtin:winequality`"), "{e}");
        assert!(builtin_columns("nope").is_none());
    }
}
