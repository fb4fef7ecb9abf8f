//! Small ONNX models written byte by byte (ONNX is protobuf; these need no Python and no
//! converter), so a platform's ONNX serving is checked against arithmetic, not against another
//! runtime's answer.

/// `Y = X · weights + bias`, X float `[N, weights.len()]`, Y float `[N, 1]` (opset 17: MatMul,
/// Add). The expected answer for a row is the plain dot product.
pub fn linear_regression(weights: &[f32], bias: f32) -> Vec<u8> {
    let k = weights.len() as u64;
    let w = initializer(b"W", &[k, 1], weights);
    let b = initializer(b"B", &[1], &[bias]);
    let mut matmul = Vec::new();
    field(&mut matmul, 0x0a, b"X");
    field(&mut matmul, 0x0a, b"W");
    field(&mut matmul, 0x12, b"XW");
    field(&mut matmul, 0x22, b"MatMul");
    let mut add = Vec::new();
    field(&mut add, 0x0a, b"XW");
    field(&mut add, 0x0a, b"B");
    field(&mut add, 0x12, b"Y");
    field(&mut add, 0x22, b"Add");
    let mut graph = Vec::new();
    field(&mut graph, 0x0a, &matmul); // node = 1
    field(&mut graph, 0x0a, &add);
    field(&mut graph, 0x12, b"linear"); // name = 2
    field(&mut graph, 0x2a, &w); // initializer = 5
    field(&mut graph, 0x2a, &b);
    field(&mut graph, 0x5a, &value_info(b"X", Some(k))); // input = 11
    field(&mut graph, 0x62, &value_info(b"Y", Some(1))); // output = 12
    model(&graph)
}

/// `Y = Identity(X)`, X float `[N, width]`: a valid model whose input takes `width` features.
pub fn identity(width: u64) -> Vec<u8> {
    let mut node = Vec::new();
    field(&mut node, 0x0a, b"X");
    field(&mut node, 0x12, b"Y");
    field(&mut node, 0x22, b"Identity");
    let mut graph = Vec::new();
    field(&mut graph, 0x0a, &node);
    field(&mut graph, 0x12, b"identity");
    field(&mut graph, 0x5a, &value_info(b"X", Some(width)));
    field(&mut graph, 0x62, &value_info(b"Y", Some(width)));
    model(&graph)
}

/// ModelProto: ir_version 8 (field 1), the graph (7), opset_import "" 17 (8).
fn model(graph: &[u8]) -> Vec<u8> {
    let mut opset = Vec::new();
    field(&mut opset, 0x0a, b"");
    opset.extend([0x10, 17]);
    let mut m = vec![0x08, 8];
    field(&mut m, 0x3a, graph);
    field(&mut m, 0x42, &opset);
    m
}

/// TensorProto: dims (1), data_type FLOAT = 1 (2), name (8), raw_data little-endian (9).
fn initializer(name: &[u8], dims: &[u64], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for d in dims {
        t.push(0x08);
        varint(&mut t, *d);
    }
    t.extend([0x10, 1]);
    field(&mut t, 0x42, name);
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    field(&mut t, 0x4a, &raw);
    t
}

/// ValueInfoProto of a float tensor `[N, width]` (N symbolic).
fn value_info(name: &[u8], width: Option<u64>) -> Vec<u8> {
    let mut dim_n = Vec::new();
    field(&mut dim_n, 0x12, b"N");
    let mut shape = Vec::new();
    field(&mut shape, 0x0a, &dim_n);
    if let Some(w) = width {
        let mut dim_w = vec![0x08];
        varint(&mut dim_w, w);
        field(&mut shape, 0x0a, &dim_w);
    }
    let mut tensor = vec![0x08, 0x01];
    field(&mut tensor, 0x12, &shape);
    let mut ty = Vec::new();
    field(&mut ty, 0x0a, &tensor);
    let mut v = Vec::new();
    field(&mut v, 0x0a, name);
    field(&mut v, 0x12, &ty);
    v
}

fn field(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
