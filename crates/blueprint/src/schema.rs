//! The published JSON Schema and the first validation pass: raw tree against the schema, with
//! every error mapped back to its source span and worded for a person.
//!
//! The schema is generated from the typed model, then completed from the platform registry:
//! the platform names it knows, each platform's `platforms.<id>` settings schema and each state
//! backend's fields. So `galley schema`, the validator and the typed model never disagree, and a
//! new platform adds its own settings without touching this crate.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::{Value, json};

use crate::diag::Diagnostic;
use crate::model::{Backend, Blueprint};
use crate::platform::PlatformRegistry;
use crate::span::{Node, NodeValue, PathSeg, did_you_mean, dotted};

/// The blueprint schema for one registry, compiled once.
pub struct CompiledSchema {
    value: Value,
    validator: Option<jsonschema::Validator>,
}

impl CompiledSchema {
    pub fn new(registry: &PlatformRegistry) -> CompiledSchema {
        let value = compose(registry);
        let validator = jsonschema::validator_for(&value).ok();
        CompiledSchema { value, validator }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }
}

/// What `galley schema` prints: the JSON Schema of [`Blueprint`] for the platforms `registry`
/// knows.
pub fn json_schema(registry: &PlatformRegistry) -> Value {
    registry.schema().value().clone()
}

fn compose(registry: &PlatformRegistry) -> Value {
    let mut schema = schemars::schema_for!(Blueprint).to_value();
    let names: Vec<&str> = registry.names();
    schema["$defs"]["PlatformId"] = json!({
        "type": "string",
        "enum": names,
        "description": "A platform this galley knows (`galley platforms` lists them).",
    });
    let mut settings = serde_json::Map::new();
    for rules in registry.all() {
        let mut section = rules.settings_schema().unwrap_or_else(|| json!({"type": "object", "additionalProperties": false}));
        hoist_defs(&mut schema, &mut section);
        settings.insert(rules.id().to_string(), section);
    }
    schema["properties"]["platforms"] = json!({
        "description": "Per-platform settings, `platforms.<platform>`; each platform defines its own.",
        "type": "object",
        "properties": settings,
        "additionalProperties": false,
    });
    let mut backends = vec![backend_branch(Backend::LOCAL, &json!({
        "type": "object",
        "properties": {"path": {"type": "string", "description": "The state file, relative to the blueprint (default `.galley/state.json`)."}},
    }))];
    let mut kinds = std::collections::BTreeSet::new();
    for rules in registry.all() {
        // A kind two platforms offer is one branch (`oneOf` refuses a value two branches match).
        for b in rules.state_backends().into_iter().filter(|b| kinds.insert(b.kind)) {
            let mut fields = b.schema.clone();
            hoist_defs(&mut schema, &mut fields);
            backends.push(backend_branch(b.kind, &fields));
        }
    }
    let backend = json!({
        "description": "Where Galley keeps its state: `type: local` (a file) or a backend a platform offers.",
        "oneOf": backends,
    });
    // `backend` is optional: schemars wrote `anyOf [Backend, null]` or a `$ref`.
    schema["properties"]["backend"] = json!({"anyOf": [backend, {"type": "null"}]});
    if let Some(defs) = schema.get_mut("$defs").and_then(Value::as_object_mut) {
        defs.remove("Backend");
    }
    schema
}

/// One `oneOf` branch: the backend's fields plus its `type` tag, nothing else.
fn backend_branch(kind: &str, fields: &Value) -> Value {
    let mut properties = fields.get("properties").cloned().unwrap_or_else(|| json!({}));
    properties["type"] = json!({"type": "string", "const": kind});
    let mut required = vec![json!("type")];
    if let Some(r) = fields.get("required").and_then(Value::as_array) {
        required.extend(r.iter().cloned());
    }
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// Moves a platform schema's own `$defs` into the blueprint schema's (names prefixed so two
/// platforms never collide) and drops its `$schema`, so it can sit inside the blueprint schema.
fn hoist_defs(root: &mut Value, part: &mut Value) {
    if let Some(obj) = part.as_object_mut() {
        obj.remove("$schema");
        if let Some(Value::Object(defs)) = obj.remove("$defs") {
            for (name, def) in defs {
                root["$defs"][name] = def;
            }
        }
    }
}
/// The subschemas that describe the value at `path`, following `$ref`, `anyOf`, `oneOf`,
/// `allOf`, `properties`, `additionalProperties` and `items`.
fn schemas_at<'a>(root: &'a Value, path: &[PathSeg]) -> Vec<&'a Value> {
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

fn expand<'a>(root: &'a Value, schemas: Vec<&'a Value>) -> Vec<&'a Value> {
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

fn accepted_types<'a>(root: &'a Value, path: &[PathSeg]) -> Vec<&'a str> {
    let mut types = Vec::new();
    for s in schemas_at(root, path) {
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

fn known_properties<'a>(root: &'a Value, path: &[PathSeg]) -> Vec<&'a str> {
    let mut names: Vec<&str> = schemas_at(root, path)
        .into_iter()
        .filter_map(|s| s.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().map(String::as_str))
        .collect();
    names.dedup();
    names
}

/// Gives substituted values the type the schema wants at their place: `port: ${var.port}` with
/// `--var port=8080` is the number 8080, `name: ${var.n}` with `n: 7` is the string "7".
pub fn coerce_substituted(schema: &CompiledSchema, node: &mut Node, path: &mut Vec<PathSeg>) {
    if node.substituted {
        let types = accepted_types(&schema.value, path);
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
                coerce_substituted(schema, item, path);
                path.pop();
            }
        }
        NodeValue::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                path.push(PathSeg::Key(k.clone()));
                coerce_substituted(schema, v, path);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Validates the tree against the schema; one diagnostic per problem, each at its span.
pub fn validate(schema: &CompiledSchema, root: &Node, json: &Value) -> Vec<Diagnostic> {
    let Some(validator) = &schema.validator else {
        return vec![Diagnostic::error(crate::span::Span::start(), "", "internal error: the blueprint schema does not compile")];
    };
    let mut out = Vec::new();
    for error in validator.iter_errors(json) {
        describe(&schema.value, root, &error, &mut out);
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

fn describe(schema: &Value, root: &Node, error: &ValidationError<'_>, out: &mut Vec<Diagnostic>) {
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
            let known = known_properties(schema, &path);
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
            describe_union(schema, root, &path, context, out);
        }
        _ => out.push(Diagnostic::error(span, here, error.to_string())),
    }
}

/// A value that matched no branch of a union (`Option<T>`, the `backend` variants, `VarValue`).
/// The branch the user evidently meant (right shape, right `type` tag) speaks for itself;
/// otherwise the message lists what was possible.
fn describe_union(schema: &Value, root: &Node, path: &[PathSeg], context: &[Vec<ValidationError<'static>>], out: &mut Vec<Diagnostic>) {
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
            describe(schema, root, e, out);
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
