//! The published JSON Schema and the first validation pass: raw tree against the schema, with
//! every error mapped back to its source span and worded for a person.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::Value;

use crate::diag::Diagnostic;
use crate::model::Blueprint;
use crate::span::{Node, NodeValue, PathSeg, did_you_mean, dotted};

/// What `galley schema` prints: the JSON Schema of [`Blueprint`].
pub fn json_schema() -> Value {
    cached_schema().clone()
}

fn cached_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| schemars::schema_for!(Blueprint).to_value())
}

fn validator() -> Option<&'static jsonschema::Validator> {
    static VALIDATOR: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    VALIDATOR.get_or_init(|| jsonschema::validator_for(cached_schema()).ok()).as_ref()
}

/// The subschemas that describe the value at `path`, following `$ref`, `anyOf`, `oneOf`,
/// `allOf`, `properties`, `additionalProperties` and `items`.
fn schemas_at(path: &[PathSeg]) -> Vec<&'static Value> {
    let root = cached_schema();
    let mut current = expand(root, vec![root]);
    for seg in path {
        let mut next = Vec::new();
        for s in current {
            let child = match seg {
                PathSeg::Key(k) => s
                    .get("properties")
                    .and_then(|p| p.get(k))
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object())),
                PathSeg::Index(_) => s.get("items"),
            };
            if let Some(c) = child {
                next.push(c);
            }
        }
        current = expand(root, next);
    }
    current
}

fn expand(root: &'static Value, schemas: Vec<&'static Value>) -> Vec<&'static Value> {
    let mut out = Vec::new();
    let mut todo = schemas;
    let mut budget = 256; // schemars output is finite, but never loop on a self-referencing $ref
    while let Some(s) = todo.pop() {
        budget -= 1;
        if budget == 0 {
            break;
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str)
            && let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p))
        {
            todo.push(target);
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(Value::Array(branches)) = s.get(key) {
                todo.extend(branches.iter());
            }
        }
        out.push(s);
    }
    out
}

fn accepted_types(path: &[PathSeg]) -> Vec<&'static str> {
    let mut types = Vec::new();
    for s in schemas_at(path) {
        match s.get("type") {
            Some(Value::String(t)) => types.push(t.as_str()),
            Some(Value::Array(ts)) => types.extend(ts.iter().filter_map(Value::as_str)),
            _ => {}
        }
        if s.get("enum").is_some() {
            types.push("string");
        }
    }
    types
}

fn known_properties(path: &[PathSeg]) -> Vec<&'static str> {
    let mut names: Vec<&str> = schemas_at(path)
        .into_iter()
        .filter_map(|s| s.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().map(String::as_str))
        .collect();
    names.dedup();
    names
}

/// Gives substituted values the type the schema wants at their place: `port: ${var.port}` with
/// `--var port=8080` is the number 8080, `name: ${var.n}` with `n: 7` is the string "7".
pub fn coerce_substituted(node: &mut Node, path: &mut Vec<PathSeg>) {
    if node.substituted {
        let types = accepted_types(path);
        let wants = |t: &str| types.contains(&t);
        let replacement = match &node.value {
            NodeValue::Str(s) if !wants("string") => {
                if wants("integer") && let Ok(i) = s.trim().parse::<i64>() {
                    Some(NodeValue::Int(i))
                } else if wants("number") && let Ok(f) = s.trim().parse::<f64>().map_err(|_| ()).and_then(|f| if f.is_finite() { Ok(f) } else { Err(()) }) {
                    Some(NodeValue::Float(f))
                } else if wants("boolean") && matches!(s.trim(), "true" | "false") {
                    Some(NodeValue::Bool(s.trim() == "true"))
                } else {
                    None
                }
            }
            NodeValue::Int(i) if wants("string") && !wants("integer") && !wants("number") => Some(NodeValue::Str(i.to_string())),
            NodeValue::Float(f) if wants("string") && !wants("number") => Some(NodeValue::Str(f.to_string())),
            NodeValue::Bool(b) if wants("string") && !wants("boolean") => Some(NodeValue::Str(b.to_string())),
            _ => None,
        };
        if let Some(v) = replacement {
            node.value = v;
        }
    }
    match &mut node.value {
        NodeValue::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(PathSeg::Index(i));
                coerce_substituted(item, path);
                path.pop();
            }
        }
        NodeValue::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                path.push(PathSeg::Key(k.clone()));
                coerce_substituted(v, path);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Validates the tree against the schema; one diagnostic per problem, each at its span.
pub fn validate(root: &Node, json: &Value) -> Vec<Diagnostic> {
    let Some(validator) = validator() else {
        return vec![Diagnostic::error(crate::span::Span::start(), "", "internal error: the blueprint schema does not compile")];
    };
    let mut out = Vec::new();
    for error in validator.iter_errors(json) {
        describe(root, &error, &mut out);
    }
    out
}

fn instance_path(root: &Node, error: &ValidationError<'_>) -> Vec<PathSeg> {
    let pointer = error.instance_path().as_str();
    let mut path = Vec::new();
    let mut node = Some(root);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let step = match node.map(|n| &n.value) {
            Some(NodeValue::Seq(items)) => match seg.parse::<usize>() {
                Ok(i) => {
                    node = items.get(i);
                    PathSeg::Index(i)
                }
                Err(_) => PathSeg::Key(seg),
            },
            _ => {
                node = node.and_then(|n| n.get(&seg));
                PathSeg::Key(seg)
            }
        };
        path.push(step);
    }
    path
}

fn node_at<'a>(root: &'a Node, path: &[PathSeg]) -> Option<&'a Node> {
    let mut node = root;
    for seg in path {
        node = match (seg, &node.value) {
            (PathSeg::Key(k), _) => node.get(k)?,
            (PathSeg::Index(i), NodeValue::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

fn type_name(t: &str) -> &'static str {
    match t {
        "string" => "a string",
        "number" => "a number",
        "integer" => "a whole number",
        "boolean" => "a boolean (true or false)",
        "object" => "a mapping",
        "array" => "a list",
        _ => "nothing (null)",
    }
}

fn describe(root: &Node, error: &ValidationError<'_>, out: &mut Vec<Diagnostic>) {
    let path = instance_path(root, error);
    let span = root.locate(&path);
    let here = dotted(&path);
    let found = node_at(root, &path).map(|n| n.value.describe()).unwrap_or("nothing");
    let field = match path.last() {
        Some(PathSeg::Key(k)) => format!("`{k}`"),
        _ => "this value".to_string(),
    };
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known = known_properties(&path);
            for name in unexpected {
                let mut p = path.clone();
                p.push(PathSeg::Key(name.clone()));
                let hint = did_you_mean(name, known.iter().copied())
                    .unwrap_or_else(|| format!("known fields here: {}", known.join(", ")));
                out.push(Diagnostic::error(root.locate(&p), dotted(&p), format!("unknown field `{name}`")).with_hint(hint));
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let full = if here.is_empty() { name.to_string() } else { format!("{here}.{name}") };
            let within = if here.is_empty() { String::new() } else { format!(" in `{here}`") };
            out.push(Diagnostic::error(span, full, format!("missing required field `{name}`{within}")));
        }
        ValidationErrorKind::Type { kind } => {
            let names: Vec<String> = match kind {
                TypeKind::Single(t) => vec![t.to_string()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).filter(|t| t != "null").collect(),
            };
            let expected: Vec<&str> = names.iter().map(|t| type_name(t)).collect();
            out.push(Diagnostic::error(span, here, format!("expected {} for {field}, found {found}", expected.join(" or "))));
        }
        ValidationErrorKind::Enum { options } => {
            let options: Vec<&str> = options.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let given = error.instance().as_str().map(String::from).unwrap_or_else(|| error.instance().to_string());
            let hint = did_you_mean(&given, options.iter().copied());
            out.push(
                Diagnostic::error(span, here, format!("unknown value `{given}` for {field}; expected one of {}", options.join(", ")))
                    .with_hint_opt(hint),
            );
        }
        ValidationErrorKind::Constant { expected_value } => {
            out.push(Diagnostic::error(span, here, format!("{field} must be {expected_value}")));
        }
        ValidationErrorKind::Minimum { limit } | ValidationErrorKind::ExclusiveMinimum { limit } => {
            out.push(Diagnostic::error(span, here, format!("{field} must be at least {limit}, found {}", error.instance())));
        }
        ValidationErrorKind::Maximum { limit } | ValidationErrorKind::ExclusiveMaximum { limit } => {
            out.push(Diagnostic::error(span, here, format!("{field} must be at most {limit}, found {}", error.instance())));
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            describe_union(root, &path, context, out);
        }
        _ => out.push(Diagnostic::error(span, here, error.to_string())),
    }
}

/// A value that matched no branch of a union (`Option<T>`, the `backend` variants, `VarValue`).
/// The branch the user evidently meant (right shape, right `type` tag) speaks for itself;
/// otherwise the message lists what was possible.
fn describe_union(root: &Node, path: &[PathSeg], context: &[Vec<ValidationError<'static>>], out: &mut Vec<Diagnostic>) {
    let depth = path.len();
    let misses_shape = |errors: &Vec<ValidationError<'static>>| {
        errors.iter().any(|e| {
            let p = instance_path(root, e);
            (p.len() == depth && matches!(e.kind(), ValidationErrorKind::Type { .. } | ValidationErrorKind::Constant { .. }))
                || (p.len() == depth + 1
                    && matches!(p.last(), Some(PathSeg::Key(k)) if k == "type")
                    && matches!(e.kind(), ValidationErrorKind::Constant { .. }))
        })
    };
    let candidates: Vec<&Vec<ValidationError<'static>>> = context.iter().filter(|b| !misses_shape(b)).collect();
    if candidates.len() == 1 {
        for e in candidates[0] {
            describe(root, e, out);
        }
        return;
    }
    let span = root.locate(path);
    let here = dotted(path);
    let node = node_at(root, path);
    // A tagged union with an unknown tag.
    let tags: Vec<String> = context
        .iter()
        .flatten()
        .filter(|e| matches!(instance_path(root, e).last(), Some(PathSeg::Key(k)) if k == "type"))
        .filter_map(|e| match e.kind() {
            ValidationErrorKind::Constant { expected_value } => expected_value.as_str().map(String::from),
            _ => None,
        })
        .collect();
    if !tags.is_empty() {
        let given = node.and_then(|n| n.get("type")).and_then(Node::as_str).unwrap_or("");
        let tag_path = format!("{here}.type");
        let mut p = path.to_vec();
        p.push(PathSeg::Key("type".into()));
        let message = if given.is_empty() {
            format!("missing `type` in `{here}`; expected one of {}", tags.join(", "))
        } else {
            format!("unknown `type` `{given}` in `{here}`; expected one of {}", tags.join(", "))
        };
        out.push(Diagnostic::error(root.locate(&p), tag_path, message).with_hint_opt(did_you_mean(given, tags.iter().map(String::as_str))));
        return;
    }
    // An enum whose variants carry docs is a `oneOf` of `const`s.
    let consts: Vec<String> = context
        .iter()
        .flatten()
        .filter(|e| instance_path(root, e).len() == depth)
        .filter_map(|e| match e.kind() {
            ValidationErrorKind::Constant { expected_value } => expected_value.as_str().map(String::from),
            _ => None,
        })
        .collect();
    if !consts.is_empty() && node.is_some_and(|n| matches!(n.value, NodeValue::Str(_))) {
        let given = node.and_then(Node::as_str).unwrap_or_default();
        let field = match path.last() {
            Some(PathSeg::Key(k)) => format!("`{k}`"),
            _ => "this value".to_string(),
        };
        out.push(
            Diagnostic::error(span, here, format!("unknown value `{given}` for {field}; expected one of {}", consts.join(", ")))
                .with_hint_opt(did_you_mean(given, consts.iter().map(String::as_str))),
        );
        return;
    }
    let mut expected: Vec<&str> = Vec::new();
    for e in context.iter().flatten() {
        if instance_path(root, e).len() == depth
            && let ValidationErrorKind::Type { kind } = e.kind()
        {
            let names: Vec<String> = match kind {
                TypeKind::Single(t) => vec![t.to_string()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
            };
            for n in names.iter().filter(|n| *n != "null") {
                let name = type_name(n);
                if !expected.contains(&name) {
                    expected.push(name);
                }
            }
        }
    }
    let found = node.map(|n| n.value.describe()).unwrap_or("nothing");
    let field = match path.last() {
        Some(PathSeg::Key(k)) => format!("`{k}`"),
        _ => "this value".to_string(),
    };
    let message = if expected.is_empty() {
        format!("{field} does not match any allowed form")
    } else {
        format!("expected {} for {field}, found {found}", expected.join(" or "))
    };
    out.push(Diagnostic::error(span, here, message));
}
