//! Parsing MLflow's scoring request formats into rows in the model's signature order.
//!
//! The four body shapes MLflow's pyfunc scoring server accepts are decoded straight from the
//! request bytes by hand-written serde visitors that borrow strings from the body: no
//! `serde_json::Value` tree, no per-key allocation. The rows then go through one converter
//! per output type — `f64` for the all-numeric fast path fed to `predict_matrix`, `Value` for
//! signatures with string columns — which checks every cell against the signature and names
//! the feature when something is missing, extra or of the wrong type.

use std::borrow::Cow;
use std::fmt;

use galley_core::stages::Signature;
use galley_core::table::{Column, DType, Table, Value};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The top-level keys MLflow accepts, listed in error messages.
pub const ACCEPTED_FORMATS: [&str; 4] = [
    "dataframe_split",
    "dataframe_records",
    "instances",
    "inputs",
];

/// A scoring request that cannot be served, with a message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(message: impl Into<String>) -> Result<T, BadInput> {
    Err(BadInput(message.into()))
}

/// One JSON cell. Strings borrow from the body when they contain no escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An array or object where a scalar belongs.
    Nested,
}

/// A string key that borrows from the body when it can.
struct Key<'a>(Cow<'a, str>);

#[derive(Debug)]
pub enum Instance<'a> {
    Row(Vec<Cell<'a>>),
    Record(Vec<(Cow<'a, str>, Cell<'a>)>),
    Scalar(Cell<'a>),
}

#[derive(Debug)]
pub enum ColumnValues<'a> {
    List(Vec<Cell<'a>>),
    One(Cell<'a>),
}

/// A decoded request body, before it is checked against the signature.
#[derive(Debug)]
pub enum Input<'a> {
    Split {
        columns: Option<Vec<Cow<'a, str>>>,
        data: Vec<Vec<Cell<'a>>>,
    },
    Records(Vec<Vec<(Cow<'a, str>, Cell<'a>)>>),
    Instances(Vec<Instance<'a>>),
    Columns(Vec<(Cow<'a, str>, ColumnValues<'a>)>),
}

/// Decodes a request body. Malformed JSON and unknown or missing format keys are `BadInput`.
/// What a request asks for: the labels (MLflow's `predict`, the default) or, for a classifier,
/// the class probabilities (`"params": {"predict_method": "predict_proba"}`, the parameter
/// MLflow's documentation gives a pyfunc model for it), answered as `[[p(0), p(1)], …]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answer {
    #[default]
    Labels,
    Probabilities,
}

/// A decoded JSON body: its rows and what it asks for.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub input: Input<'a>,
    pub answer: Answer,
}

pub fn parse_request(body: &[u8]) -> Result<Parsed<'_>, BadInput> {
    let request: Request<'_> = serde_json::from_slice(body)
        .map_err(|e| BadInput(format!("Failed to parse input from JSON: {e}")))?;
    let accepted = ACCEPTED_FORMATS.join(", ");
    if !request.unknown.is_empty() || request.found.len() != 1 {
        let mut received: Vec<String> = request.found.iter().map(|s| s.to_string()).collect();
        received.extend(request.unknown.iter().cloned());
        return bad(format!(
            "Invalid input. The input must be a JSON dictionary with exactly one of the input \
             fields {{{accepted}}} (optionally with `params`). Received dictionary with input \
             fields: [{}]",
            received.join(", ")
        ));
    }
    let answer = match request.predict_method.as_deref() {
        None | Some("predict") => Answer::Labels,
        Some("predict_proba") => Answer::Probabilities,
        Some(other) => return bad(format!("params.predict_method `{other}` is not one of predict, predict_proba")),
    };
    match request.input {
        Some(input) => Ok(Parsed { input, answer }),
        None => bad(format!("Invalid input: expected one of {accepted}")),
    }
}

/// The `params` of a request: only `predict_method` means something here; the rest is
/// accepted and ignored, as MLflow's server passes params to a model that may not read them.
#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    predict_method: Option<String>,
}

/// Decodes a `text/csv` body, as MLflow's scoring server and SageMaker's CSV serializers send
/// it: one row per record, fields in the signature's column order, or — when every field of
/// the first record is a column of the signature (pandas' `to_csv` writes the header) — in the
/// header's order. Fields are typed as the JSON formats' cells are: empty is null, then
/// integer, float, `true`/`false` (any case), else a string; the signature check that follows
/// is the same as for JSON.
pub fn parse_csv_request(body: &[u8], sig: &SignatureIndex) -> Result<Input<'static>, BadInput> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(body);
    let mut records = reader.records();
    let mut data = Vec::new();
    let mut columns = None;
    let mut line = 0;
    for record in records.by_ref() {
        line += 1;
        let record = record.map_err(|e| BadInput(format!("Failed to parse input as CSV (record {line}): {e}")))?;
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        if line == 1 && record.iter().all(|f| sig.position(f).is_some()) {
            columns = Some(record.iter().map(|f| Cow::Owned(f.to_owned())).collect());
            continue;
        }
        data.push(record.iter().map(csv_cell).collect());
    }
    if data.is_empty() {
        return bad("the CSV body has no rows");
    }
    Ok(Input::Split { columns, data })
}

fn csv_cell(field: &str) -> Cell<'static> {
    if field.is_empty() {
        return Cell::Null;
    }
    if let Ok(i) = field.parse::<i64>() {
        return Cell::Int(i);
    }
    if let Ok(x) = field.parse::<f64>() {
        return Cell::Float(x);
    }
    match field.to_ascii_lowercase().as_str() {
        "true" => Cell::Bool(true),
        "false" => Cell::Bool(false),
        _ => Cell::Str(Cow::Owned(field.to_owned())),
    }
}

struct Request<'a> {
    input: Option<Input<'a>>,
    found: Vec<&'static str>,
    unknown: Vec<String>,
    predict_method: Option<String>,
}

impl<'de> Deserialize<'de> for Request<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Request<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object with one of dataframe_split, dataframe_records, instances, inputs")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut req = Request {
                    input: None,
                    found: Vec::new(),
                    unknown: Vec::new(),
                    predict_method: None,
                };
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match key.as_ref() {
                        "dataframe_split" => {
                            let s: Split<'de> = map.next_value()?;
                            req.found.push("dataframe_split");
                            req.input = Some(Input::Split {
                                columns: s.columns,
                                data: s.data,
                            });
                        }
                        "dataframe_records" => {
                            let records: Vec<Record<'de>> = map.next_value()?;
                            req.found.push("dataframe_records");
                            req.input =
                                Some(Input::Records(records.into_iter().map(|r| r.0).collect()));
                        }
                        k @ ("instances" | "inputs") => {
                            let tensor: TensorInput<'de> = map.next_value()?;
                            req.found.push(if k == "instances" {
                                "instances"
                            } else {
                                "inputs"
                            });
                            req.input = Some(tensor.0);
                        }
                        "params" => {
                            let params: Option<Params> = map.next_value()?;
                            req.predict_method = params.and_then(|p| p.predict_method);
                        }
                        other => {
                            req.unknown.push(other.to_owned());
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(req)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Visits any JSON value as a [`Cell`]; arrays and objects are skipped and marked `Nested`.
struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Cell<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Cell::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Cell::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Cell::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Cell::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v)
            .map(Cell::Int)
            .unwrap_or(Cell::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Cell::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cell::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cell::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cell::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Cell::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Cell::Nested)
    }
}

impl<'de> Deserialize<'de> for Cell<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}

/// `{"columns": [...], "data": [[...]], "index": [...]}`
struct Split<'a> {
    columns: Option<Vec<Cow<'a, str>>>,
    data: Vec<Vec<Cell<'a>>>,
}

impl<'de> Deserialize<'de> for Split<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Split<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object with `columns` and `data`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut columns = None;
                let mut data = None;
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match key.as_ref() {
                        "columns" => {
                            let keys: Vec<Key<'de>> = map.next_value()?;
                            columns = Some(keys.into_iter().map(|k| k.0).collect());
                        }
                        "data" => data = Some(map.next_value::<Vec<Row<'de>>>()?),
                        "index" | "dtypes" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "dataframe_split has an unknown field `{other}`; expected `columns`, \
                                 `data` and optionally `index`"
                            )));
                        }
                    }
                }
                let data =
                    data.ok_or_else(|| de::Error::custom("dataframe_split has no `data` field"))?;
                Ok(Split {
                    columns,
                    data: data.into_iter().map(|r| r.0).collect(),
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// One row of `data`: a list of cells (a bare scalar counts as a one-cell row).
struct Row<'a>(Vec<Cell<'a>>);

impl<'de> Deserialize<'de> for Row<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Instance::deserialize(d)? {
            Instance::Row(cells) => Ok(Row(cells)),
            Instance::Scalar(cell) => Ok(Row(vec![cell])),
            Instance::Record(_) => Err(de::Error::custom(
                "a row of `data` must be a list, not an object",
            )),
        }
    }
}

/// One record: `{"feature": value, ...}`, kept as pairs in body order.
struct Record<'a>(Vec<(Cow<'a, str>, Cell<'a>)>);

fn visit_record<'de, A: MapAccess<'de>>(
    mut map: A,
) -> Result<Vec<(Cow<'de, str>, Cell<'de>)>, A::Error> {
    let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        let cell: Cell<'de> = map.next_value()?;
        pairs.push((key, cell));
    }
    Ok(pairs)
}

impl<'de> Deserialize<'de> for Record<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Record<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a record object {\"feature\": value, ...}")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                visit_record(map).map(Record)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Instance<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Instance<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of values, a record object or a scalar")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut cells = Vec::with_capacity(seq.size_hint().unwrap_or(8));
                while let Some(c) = seq.next_element::<Cell<'de>>()? {
                    cells.push(c);
                }
                Ok(Instance::Row(cells))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                visit_record(map).map(Instance::Record)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Instance::Scalar(Cell::Null))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                CellVisitor.visit_bool(v).map(Instance::Scalar)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                CellVisitor.visit_i64(v).map(Instance::Scalar)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                CellVisitor.visit_u64(v).map(Instance::Scalar)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                CellVisitor.visit_f64(v).map(Instance::Scalar)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                CellVisitor.visit_borrowed_str(v).map(Instance::Scalar)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                CellVisitor.visit_str(v).map(Instance::Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ColumnValues<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Instance::deserialize(d)? {
            Instance::Row(cells) => Ok(ColumnValues::List(cells)),
            Instance::Scalar(cell) => Ok(ColumnValues::One(cell)),
            Instance::Record(_) => Ok(ColumnValues::One(Cell::Nested)),
        }
    }
}

/// `instances` / `inputs`: a list of rows or records, or a dict of columns.
struct TensorInput<'a>(Input<'a>);

impl<'de> Deserialize<'de> for TensorInput<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TensorInput<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of instances or a dict of columns")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(i) = seq.next_element::<Instance<'de>>()? {
                    rows.push(i);
                }
                Ok(TensorInput(Input::Instances(rows)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut cols = Vec::new();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    cols.push((key, map.next_value::<ColumnValues<'de>>()?));
                }
                Ok(TensorInput(Input::Columns(cols)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The signature, prepared for fast lookups on every request.
#[derive(Debug, Clone)]
pub struct SignatureIndex {
    columns: Vec<Column>,
    /// True when every input is numeric or boolean, so rows can go to `predict_matrix`.
    pub all_numeric: bool,
}

impl SignatureIndex {
    pub fn new(signature: &Signature) -> SignatureIndex {
        let all_numeric = signature.inputs.iter().all(|c| c.dtype != DType::String);
        SignatureIndex {
            columns: signature.inputs.clone(),
            all_numeric,
        }
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    fn names(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn extra(&self, name: &str) -> BadInput {
        BadInput(format!(
            "unexpected feature `{name}`: the model's signature has features [{}]",
            self.names()
        ))
    }

    fn missing(&self, idx: usize) -> BadInput {
        BadInput(format!(
            "missing feature `{}` ({}): the model's signature has features [{}]",
            self.columns[idx].name,
            self.columns[idx].dtype,
            self.names()
        ))
    }
}

/// Converts one cell to the output type, checking it against its column.
pub trait CellConvert: Sized + Clone {
    const PLACEHOLDER: Self;
    fn convert(cell: Cell<'_>, column: &Column, row: usize) -> Result<Self, BadInput>;
}

fn type_error(cell: &Cell<'_>, column: &Column, row: usize) -> BadInput {
    let got = match cell {
        Cell::Null => "null".to_owned(),
        Cell::Bool(b) => format!("bool {b}"),
        Cell::Int(i) => format!("int {i}"),
        Cell::Float(f) => format!("float {f}"),
        Cell::Str(s) => {
            let s: String = s.chars().take(40).collect();
            format!("string {s:?}")
        }
        Cell::Nested => "a nested array or object".to_owned(),
    };
    BadInput(format!(
        "feature `{}` expects {} but row {row} has {got}",
        column.name, column.dtype
    ))
}

impl CellConvert for f64 {
    const PLACEHOLDER: f64 = f64::NAN;
    #[inline]
    fn convert(cell: Cell<'_>, column: &Column, row: usize) -> Result<f64, BadInput> {
        match (column.dtype, &cell) {
            (DType::Float, Cell::Float(f)) => Ok(*f),
            (DType::Float | DType::Int, Cell::Int(i)) => Ok(*i as f64),
            (DType::Int, Cell::Float(f)) if f.fract() == 0.0 => Ok(*f),
            (DType::Bool, Cell::Bool(b)) => Ok(if *b { 1.0 } else { 0.0 }),
            _ => Err(type_error(&cell, column, row)),
        }
    }
}

impl CellConvert for Value {
    const PLACEHOLDER: Value = Value::Null;
    fn convert(cell: Cell<'_>, column: &Column, row: usize) -> Result<Value, BadInput> {
        match (column.dtype, cell) {
            (DType::String, Cell::Str(s)) => Ok(Value::String(s.into_owned())),
            (DType::Float, Cell::Float(f)) => Ok(Value::Float(f)),
            (DType::Float, Cell::Int(i)) => Ok(Value::Float(i as f64)),
            (DType::Int, Cell::Int(i)) => Ok(Value::Int(i)),
            (DType::Int, Cell::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Ok(Value::Int(f as i64))
            }
            (DType::Bool, Cell::Bool(b)) => Ok(Value::Bool(b)),
            (_, cell) => Err(type_error(&cell, column, row)),
        }
    }
}

/// Checks `input` against the signature and returns its rows in signature order.
pub fn to_rows<T: CellConvert>(
    input: Input<'_>,
    sig: &SignatureIndex,
) -> Result<Vec<Vec<T>>, BadInput> {
    let n = sig.len();
    match input {
        Input::Split { columns, data } => {
            let order: Vec<usize> = match columns {
                Some(columns) => column_order(columns.iter().map(|c| c.as_ref()), sig)?,
                None => (0..n).collect(),
            };
            let mut rows = Vec::with_capacity(data.len());
            for (r, cells) in data.into_iter().enumerate() {
                if cells.len() != order.len() {
                    return bad(format!(
                        "row {r} of dataframe_split has {} values but `columns` names {}",
                        cells.len(),
                        order.len()
                    ));
                }
                rows.push(positional_row(cells, &order, sig, r)?);
            }
            Ok(rows)
        }
        Input::Records(records) => records
            .into_iter()
            .enumerate()
            .map(|(r, pairs)| record_row(pairs, sig, r))
            .collect(),
        Input::Instances(instances) => {
            let identity: Vec<usize> = (0..n).collect();
            let mut rows = Vec::with_capacity(instances.len());
            for (r, instance) in instances.into_iter().enumerate() {
                rows.push(match instance {
                    Instance::Record(pairs) => record_row(pairs, sig, r)?,
                    Instance::Row(cells) => {
                        if cells.len() != n {
                            return bad(format!(
                                "instance {r} has {} values but the model expects {n} features in \
                                 signature order [{}]",
                                cells.len(),
                                sig.names()
                            ));
                        }
                        positional_row(cells, &identity, sig, r)?
                    }
                    Instance::Scalar(cell) if n == 1 => vec![T::convert(cell, &sig.columns[0], r)?],
                    Instance::Scalar(_) => {
                        return bad(format!(
                            "instance {r} is a single value but the model expects {n} features [{}]",
                            sig.names()
                        ));
                    }
                });
            }
            Ok(rows)
        }
        Input::Columns(columns) => columnar_rows(columns, sig),
    }
}

/// Maps each named column to its signature slot; names a missing, extra or repeated one.
fn column_order<'n>(
    names: impl Iterator<Item = &'n str>,
    sig: &SignatureIndex,
) -> Result<Vec<usize>, BadInput> {
    let mut seen = vec![false; sig.len()];
    let mut order = Vec::with_capacity(sig.len());
    for name in names {
        let idx = sig.position(name).ok_or_else(|| sig.extra(name))?;
        if std::mem::replace(&mut seen[idx], true) {
            return bad(format!("feature `{name}` is given twice"));
        }
        order.push(idx);
    }
    match seen.iter().position(|s| !s) {
        Some(idx) => Err(sig.missing(idx)),
        None => Ok(order),
    }
}

#[inline]
fn positional_row<T: CellConvert>(
    cells: Vec<Cell<'_>>,
    order: &[usize],
    sig: &SignatureIndex,
    r: usize,
) -> Result<Vec<T>, BadInput> {
    let mut row = vec![T::PLACEHOLDER; sig.len()];
    for (cell, &idx) in cells.into_iter().zip(order) {
        row[idx] = T::convert(cell, &sig.columns[idx], r)?;
    }
    Ok(row)
}

fn record_row<T: CellConvert>(
    pairs: Vec<(Cow<'_, str>, Cell<'_>)>,
    sig: &SignatureIndex,
    r: usize,
) -> Result<Vec<T>, BadInput> {
    let mut row = vec![T::PLACEHOLDER; sig.len()];
    let mut seen = vec![false; sig.len()];
    for (name, cell) in pairs {
        let idx = sig.position(&name).ok_or_else(|| sig.extra(&name))?;
        if std::mem::replace(&mut seen[idx], true) {
            return bad(format!("record {r} gives feature `{name}` twice"));
        }
        row[idx] = T::convert(cell, &sig.columns[idx], r)?;
    }
    match seen.iter().position(|s| !s) {
        Some(idx) => Err(BadInput(format!("record {r}: {}", sig.missing(idx)))),
        None => Ok(row),
    }
}

fn columnar_rows<T: CellConvert>(
    columns: Vec<(Cow<'_, str>, ColumnValues<'_>)>,
    sig: &SignatureIndex,
) -> Result<Vec<Vec<T>>, BadInput> {
    let order = column_order(columns.iter().map(|(n, _)| n.as_ref()), sig)?;
    let lists: Vec<Vec<Cell<'_>>> = columns
        .into_iter()
        .map(|(_, v)| match v {
            ColumnValues::List(cells) => cells,
            ColumnValues::One(cell) => vec![cell],
        })
        .collect();
    let len = lists.first().map_or(0, Vec::len);
    if let Some((j, l)) = lists.iter().enumerate().find(|(_, l)| l.len() != len) {
        return bad(format!(
            "the columns of `inputs` have different lengths: `{}` has {} values, `{}` has {len}",
            sig.columns[order[j]].name,
            l.len(),
            sig.columns[order[0]].name
        ));
    }
    let mut rows = vec![vec![T::PLACEHOLDER; sig.len()]; len];
    for (j, list) in lists.into_iter().enumerate() {
        let idx = order[j];
        for (r, cell) in list.into_iter().enumerate() {
            rows[r][idx] = T::convert(cell, &sig.columns[idx], r)?;
        }
    }
    Ok(rows)
}

/// A scoring body in any of MLflow's formats, checked against `signature`, as a table in the
/// signature's column order (what `galley predict` sends on).
pub fn decode_table(body: &[u8], signature: &Signature) -> Result<Table, BadInput> {
    let sig = SignatureIndex::new(signature);
    let rows = to_rows::<Value>(parse_request(body)?.input, &sig)?;
    Ok(to_table(rows, &sig))
}

/// Rows of [`Value`]s as a table with the signature's columns.
pub fn to_table(rows: Vec<Vec<Value>>, sig: &SignatureIndex) -> Table {
    Table {
        columns: sig.columns.clone(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_ask_for_labels_or_probabilities() {
        let answer = |body: &str| parse_request(body.as_bytes()).map(|p| p.answer);
        assert_eq!(answer(r#"{"inputs": [[1.0]]}"#).unwrap(), Answer::Labels);
        assert_eq!(answer(r#"{"inputs": [[1.0]], "params": {"predict_method": "predict"}}"#).unwrap(), Answer::Labels);
        assert_eq!(answer(r#"{"params": {"predict_method": "predict_proba", "other": 1}, "inputs": [[1.0]]}"#).unwrap(), Answer::Probabilities);
        assert_eq!(answer(r#"{"inputs": [[1.0]], "params": null}"#).unwrap(), Answer::Labels);
        let e = answer(r#"{"inputs": [[1.0]], "params": {"predict_method": "decision_function"}}"#).unwrap_err();
        assert_eq!(e.0, "params.predict_method `decision_function` is not one of predict, predict_proba");
    }

    #[test]
    fn csv_bodies_with_and_without_a_header_give_the_same_rows() {
        let sig = sig();
        let headerless = to_rows::<Value>(parse_csv_request(b"1.5,2,true\n0.5,3,false\n", &sig).unwrap(), &sig).unwrap();
        let with_header = to_rows::<Value>(parse_csv_request(b"c,b,a\ntrue,2,1.5\nFALSE,3,0.5\n", &sig).unwrap(), &sig).unwrap();
        assert_eq!(headerless, with_header);
        assert_eq!(headerless[0], vec![Value::Float(1.5), Value::Int(2), Value::Bool(true)]);
        let short = to_rows::<Value>(parse_csv_request(b"1.5,2\n", &sig).unwrap(), &sig).unwrap_err();
        assert!(short.0.contains("row 0"), "{short}");
        assert!(parse_csv_request(b"\n", &sig).unwrap_err().0.contains("no rows"));
        let typed = to_rows::<Value>(parse_csv_request(b"x,2,true\n", &sig).unwrap(), &sig).unwrap_err();
        assert!(typed.0.contains('a'), "a string where a float belongs names the column: {typed}");
    }

    fn sig() -> SignatureIndex {
        SignatureIndex::new(&Signature {
            inputs: vec![
                Column::new("a", DType::Float),
                Column::new("b", DType::Int),
                Column::new("c", DType::Bool),
            ],
            output: None,
        })
    }

    fn rows(body: &str) -> Result<Vec<Vec<f64>>, BadInput> {
        to_rows::<f64>(parse_request(body.as_bytes())?.input, &sig())
    }

    #[test]
    fn every_format_gives_the_same_rows() {
        let want = vec![vec![1.5, 2.0, 1.0], vec![-1.0, 7.0, 0.0]];
        for body in [
            r#"{"dataframe_split": {"columns": ["a","b","c"], "data": [[1.5,2,true],[-1,7,false]]}}"#,
            r#"{"dataframe_split": {"index": [0,1], "columns": ["c","a","b"], "data": [[true,1.5,2],[false,-1,7]]}}"#,
            r#"{"dataframe_split": {"data": [[1.5,2,true],[-1,7,false]]}}"#,
            r#"{"dataframe_records": [{"a":1.5,"b":2,"c":true},{"c":false,"b":7,"a":-1}]}"#,
            r#"{"instances": [[1.5,2,true],[-1,7,false]]}"#,
            r#"{"instances": [{"a":1.5,"b":2,"c":true},{"a":-1,"b":7,"c":false}]}"#,
            r#"{"inputs": [[1.5,2,true],[-1,7,false]]}"#,
            r#"{"inputs": {"b":[2,7],"a":[1.5,-1],"c":[true,false]}, "params": {}}"#,
        ] {
            assert_eq!(rows(body).unwrap(), want, "{body}");
        }
        assert_eq!(
            rows(r#"{"inputs": {"a":1,"b":2,"c":true}}"#).unwrap(),
            vec![vec![1.0, 2.0, 1.0]]
        );
    }

    #[test]
    fn errors_name_the_feature() {
        let e = rows(r#"{"dataframe_records": [{"a":1,"b":2}]}"#).unwrap_err();
        assert!(e.0.contains("missing feature `c`"), "{e}");
        let e = rows(r#"{"dataframe_records": [{"a":1,"b":2,"c":true,"zz":3}]}"#).unwrap_err();
        assert!(e.0.contains("unexpected feature `zz`"), "{e}");
        let e = rows(r#"{"instances": [[1,"x",true]]}"#).unwrap_err();
        assert!(e.0.contains("feature `b` expects int"), "{e}");
        let e = rows(r#"{"instances": [[1,2.5,true]]}"#).unwrap_err();
        assert!(e.0.contains("feature `b`"), "{e}");
        let e = rows(r#"{"records": []}"#).unwrap_err();
        assert!(
            e.0.contains("dataframe_split") && e.0.contains("records"),
            "{e}"
        );
        let e = rows(r#"{"instances": [], "inputs": []}"#).unwrap_err();
        assert!(e.0.contains("exactly one"), "{e}");
        let e = rows(r#"{"instances": [[1,2"#).unwrap_err();
        assert!(e.0.contains("Failed to parse"), "{e}");
        let e = rows(r#"[1,2]"#).unwrap_err();
        assert!(e.0.contains("Failed to parse"), "{e}");
    }

    #[test]
    fn strings_go_through_the_value_path() {
        let sig = SignatureIndex::new(&Signature {
            inputs: vec![
                Column::new("s", DType::String),
                Column::new("x", DType::Float),
            ],
            output: None,
        });
        assert!(!sig.all_numeric);
        let input = parse_request(br#"{"dataframe_records": [{"s":"a\"b","x":3}]}"#).unwrap().input;
        let rows: Vec<Vec<Value>> = to_rows(input, &sig).unwrap();
        assert_eq!(
            rows,
            vec![vec![Value::String("a\"b".into()), Value::Float(3.0)]]
        );
    }
}
