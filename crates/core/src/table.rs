//! A small typed, row-oriented table: the unit in which features, training data, inference
//! inputs and baselines move between stages. Row-oriented because every consumer here
//! (online lookups, HTTP scoring requests, SQLite) works a row at a time.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Bool,
    Int,
    Float,
    String,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::Bool => "bool",
            DType::Int => "int",
            DType::Float => "float",
            DType::String => "string",
        })
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl Value {
    pub fn dtype(&self) -> Option<DType> {
        match self {
            Value::Null => None,
            Value::Bool(_) => Some(DType::Bool),
            Value::Int(_) => Some(DType::Int),
            Value::Float(_) => Some(DType::Float),
            Value::String(_) => Some(DType::String),
        }
    }

    /// Numeric view used by models and drift statistics; ints widen, bools are 0/1.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Column {
    pub name: String,
    pub dtype: DType,
}

impl Column {
    pub fn new(name: impl Into<String>, dtype: DType) -> Self {
        Column { name: name.into(), dtype }
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Self {
        Table { columns, rows: Vec::new() }
    }

    /// MLflow's `dataframe_split` scoring body for these rows, with the columns in `order`
    /// (every column as it stands when `order` is empty): the one encoding Galley sends every
    /// model server it calls (its own, SageMaker's, MLflow's). The server side's decoder is
    /// `galley_server::scoring`.
    pub fn to_dataframe_split(&self, order: &[Column]) -> crate::Result<serde_json::Value> {
        let columns: Vec<&str> =
            if order.is_empty() { self.columns.iter().map(|c| c.name.as_str()).collect() } else { order.iter().map(|c| c.name.as_str()).collect() };
        let idx = columns
            .iter()
            .map(|c| {
                self.column_index(c)
                    .ok_or_else(|| crate::Error::invalid(format!("the rows lack `{c}`, an input of the endpoint's model signature")))
            })
            .collect::<crate::Result<Vec<usize>>>()?;
        let data: Vec<Vec<&Value>> = self.rows.iter().map(|r| idx.iter().map(|i| &r[*i]).collect()).collect();
        Ok(serde_json::json!({ "dataframe_split": { "columns": columns, "data": data } }))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Appends a row after checking its arity and types (nulls are allowed anywhere).
    pub fn push(&mut self, row: Vec<Value>) -> crate::Result<()> {
        if row.len() != self.columns.len() {
            return Err(crate::Error::invalid(format!(
                "row has {} values but the table has {} columns",
                row.len(),
                self.columns.len()
            )));
        }
        for (v, c) in row.iter().zip(&self.columns) {
            match (v.dtype(), c.dtype) {
                (None, _) => {}
                (Some(a), b) if a == b => {}
                (Some(DType::Int), DType::Float) => {}
                (Some(a), b) => {
                    return Err(crate::Error::invalid(format!(
                        "column `{}` is {b} but the value is {a}",
                        c.name
                    )));
                }
            }
        }
        self.rows.push(row);
        Ok(())
    }

    /// The numeric values of one column (None for nulls and non-numbers).
    pub fn column_f64(&self, name: &str) -> Option<Vec<Option<f64>>> {
        let i = self.column_index(name)?;
        Some(self.rows.iter().map(|r| r[i].as_f64()).collect())
    }

    /// A new table holding only `names`, in that order.
    pub fn select(&self, names: &[&str]) -> crate::Result<Table> {
        let idx: Vec<usize> = names
            .iter()
            .map(|n| {
                self.column_index(n).ok_or_else(|| crate::Error::invalid(format!("no column `{n}`")))
            })
            .collect::<crate::Result<_>>()?;
        Ok(Table {
            columns: idx.iter().map(|&i| self.columns[i].clone()).collect(),
            rows: self.rows.iter().map(|r| idx.iter().map(|&i| r[i].clone()).collect()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_checks_types_and_arity() {
        let mut t = Table::new(vec![Column::new("a", DType::Float), Column::new("b", DType::String)]);
        t.push(vec![Value::Int(1), "x".into()]).unwrap();
        t.push(vec![Value::Null, Value::Null]).unwrap();
        assert!(t.push(vec![Value::Float(1.0)]).is_err());
        let e = t.push(vec!["no".into(), "x".into()]).unwrap_err();
        assert!(e.message().contains("column `a` is float"), "{e}");
        assert_eq!(t.select(&["b"]).unwrap().columns.len(), 1);
    }
}
