//! Just enough of ONNX's protobuf encoding to write a model graph: nodes with int attributes,
//! double/int64 initializers, tensor inputs and outputs. ONNX is protobuf, so a model needs no
//! Python and no converter; field numbers are from `onnx.proto` (ONNX 1.17).

/// `TensorProto.DataType` values used here.
pub const FLOAT: u64 = 1;
pub const INT64: u64 = 7;
pub const DOUBLE: u64 = 11;

/// A length-delimited field (wire type 2) with a one-byte tag.
pub fn field(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A graph under construction.
#[derive(Default)]
pub struct Graph {
    body: Vec<u8>,
    next: usize,
}

impl Graph {
    /// A fresh value name, for intermediate results.
    pub fn fresh(&mut self, stem: &str) -> String {
        self.next += 1;
        format!("{stem}_{}", self.next)
    }

    /// NodeProto: input (1), output (2), op_type (4), attribute (5); int attributes only.
    pub fn node(&mut self, op: &str, inputs: &[&str], output: &str, ints: &[(&str, i64)]) {
        let mut n = Vec::new();
        for i in inputs {
            field(&mut n, 0x0a, i.as_bytes());
        }
        field(&mut n, 0x12, output.as_bytes());
        field(&mut n, 0x22, op.as_bytes());
        for (name, value) in ints {
            // AttributeProto: name (1), i (3), type (20) = INT (2).
            let mut a = Vec::new();
            field(&mut a, 0x0a, name.as_bytes());
            a.push(0x18);
            varint(&mut a, *value as u64);
            a.extend([0xa0, 0x01, 2]);
            field(&mut n, 0x2a, &a);
        }
        field(&mut self.body, 0x0a, &n);
    }

    /// An op whose output gets a fresh name, returned.
    pub fn op(&mut self, op: &str, inputs: &[&str], ints: &[(&str, i64)]) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.node(op, inputs, &out, ints);
        out
    }

    /// A double initializer (TensorProto: dims (1), data_type (2), name (8), raw_data (9)).
    pub fn doubles(&mut self, name: &str, dims: &[u64], values: &[f64]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, dims, DOUBLE, &raw);
        name.to_owned()
    }

    /// An int64 initializer.
    pub fn int64s(&mut self, name: &str, dims: &[u64], values: &[i64]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, dims, INT64, &raw);
        name.to_owned()
    }

    fn initializer(&mut self, name: &str, dims: &[u64], data_type: u64, raw: &[u8]) {
        let mut t = Vec::new();
        for d in dims {
            t.push(0x08);
            varint(&mut t, *d);
        }
        t.push(0x10);
        varint(&mut t, data_type);
        field(&mut t, 0x42, name.as_bytes());
        field(&mut t, 0x4a, raw);
        field(&mut self.body, 0x2a, &t);
    }

    /// A graph input (11) of `elem` type, `[N, width]` with N symbolic.
    pub fn input(&mut self, name: &str, elem: u64, width: u64) {
        let v = value_info(name, elem, width);
        field(&mut self.body, 0x5a, &v);
    }

    /// A graph output (12) of `elem` type, `[N, width]`.
    pub fn output(&mut self, name: &str, elem: u64, width: u64) {
        let v = value_info(name, elem, width);
        field(&mut self.body, 0x62, &v);
    }

    /// ModelProto: ir_version 8 (1), producer_name (2), producer_version (3), graph (7),
    /// opset_import "" `opset` (8).
    pub fn model(mut self, name: &str, opset: u64) -> Vec<u8> {
        field(&mut self.body, 0x12, name.as_bytes());
        let mut ops = Vec::new();
        field(&mut ops, 0x0a, b"");
        ops.push(0x10);
        varint(&mut ops, opset);
        let mut m = vec![0x08, 8];
        field(&mut m, 0x12, b"galley");
        field(&mut m, 0x1a, env!("CARGO_PKG_VERSION").as_bytes());
        field(&mut m, 0x3a, &self.body);
        field(&mut m, 0x42, &ops);
        m
    }
}

/// ValueInfoProto: name (1), type (2) → tensor_type (1) → elem_type (1), shape (2) of dims
/// `N` (dim_param) and `width` (dim_value).
fn value_info(name: &str, elem: u64, width: u64) -> Vec<u8> {
    let mut dim_n = Vec::new();
    field(&mut dim_n, 0x12, b"N");
    let mut dim_w = vec![0x08];
    varint(&mut dim_w, width);
    let mut shape = Vec::new();
    field(&mut shape, 0x0a, &dim_n);
    field(&mut shape, 0x0a, &dim_w);
    let mut tensor = vec![0x08];
    varint(&mut tensor, elem);
    field(&mut tensor, 0x12, &shape);
    let mut ty = Vec::new();
    field(&mut ty, 0x0a, &tensor);
    let mut v = Vec::new();
    field(&mut v, 0x0a, name.as_bytes());
    field(&mut v, 0x12, &ty);
    v
}
