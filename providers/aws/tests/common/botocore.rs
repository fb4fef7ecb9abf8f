//! A small validator over the official botocore service models (`service-2.json`): checks a
//! request as the SDK serialised it against the operation's input shape — required members,
//! unknown members, types, enums, lengths, numeric ranges and patterns — so operations the
//! emulator lacks are still tested against what AWS documents, not against our own guess.
#![allow(dead_code)]

use std::path::PathBuf;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use serde_json::{Map, Value as Json};

use super::scripted::Recorded;

/// Checks every SageMaker request recorded against the botocore model (panicking with the
/// problems found); returns the operations, in order.
pub fn check_sagemaker(requests: &[Recorded]) -> Vec<String> {
    let model = Model::cached("sagemaker");
    let mut seen = Vec::new();
    for r in requests {
        let Some(op) = r.sagemaker_op() else { continue };
        let problems = model.check_request(op, &r.json(), &[]);
        assert!(problems.is_empty(), "{op} as the SDK sent it breaks the botocore model:\n{}\nbody: {}", problems.join("\n"), r.json());
        seen.push(op.to_owned());
    }
    seen
}

/// What a value is held to: a request to everything the model says; an answer to its shape.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    Request,
    Shape,
}

pub struct Model {
    pub service: String,
    shapes: Map<String, Json>,
    operations: Map<String, Json>,
}

/// `shared/api-specs/aws/botocore/data`, beside the repository (or `GALLEY_AWS_SPECS`).
pub fn data_dir() -> Option<PathBuf> {
    let dir = match std::env::var("GALLEY_AWS_SPECS") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/api-specs/aws/botocore/data"),
    };
    dir.is_dir().then_some(dir)
}

impl Model {
    /// [`Model::load`], once per service per test process.
    pub fn cached(service: &str) -> &'static Model {
        static MODELS: LazyLock<Mutex<HashMap<String, &'static Model>>> = LazyLock::new(Default::default);
        let mut models = MODELS.lock().unwrap();
        models.entry(service.to_owned()).or_insert_with(|| Box::leak(Box::new(Model::load(service))))
    }

    /// The newest API version of `service` (e.g. `sagemaker`).
    pub fn load(service: &str) -> Model {
        let dir = data_dir()
            .unwrap_or_else(|| panic!("the botocore models are missing: expected shared/api-specs/aws/botocore/data beside the repository, or set GALLEY_AWS_SPECS"))
            .join(service);
        let mut versions: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("service-2.json").exists())
            .collect();
        versions.sort();
        let path = versions.last().unwrap_or_else(|| panic!("no service-2.json under {}", dir.display())).join("service-2.json");
        let doc: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        Model {
            service: service.to_owned(),
            shapes: doc["shapes"].as_object().cloned().unwrap_or_default(),
            operations: doc["operations"].as_object().cloned().unwrap_or_default(),
        }
    }

    pub fn has_operation(&self, op: &str) -> bool {
        self.operations.contains_key(op)
    }

    pub fn input_shape(&self, op: &str) -> String {
        self.operations
            .get(op)
            .and_then(|o| o["input"]["shape"].as_str())
            .unwrap_or_else(|| panic!("{} has no operation {op} (or it takes no input)", self.service))
            .to_owned()
    }

    /// `(method, request URI template)` of a REST operation.
    pub fn http(&self, op: &str) -> (String, String) {
        let h = &self.operations[op]["http"];
        (h["method"].as_str().unwrap_or("").to_owned(), h["requestUri"].as_str().unwrap_or("").to_owned())
    }

    /// Problems with `body` as the JSON body of `op`. Members bound to the URI, headers or
    /// query string are not in the body: pass them in `located` (name → value) to have them
    /// checked too.
    pub fn check_request(&self, op: &str, body: &Json, located: &[(&str, Json)]) -> Vec<String> {
        let shape_name = self.input_shape(op);
        let shape = &self.shapes[&shape_name];
        let mut problems = Vec::new();
        let Some(obj) = body.as_object() else {
            return vec![format!("{op}: the body is not a JSON object: {body}")];
        };
        let members = shape["members"].as_object().cloned().unwrap_or_default();
        let mut all: Map<String, Json> = obj.clone();
        for (k, v) in located {
            all.insert((*k).to_owned(), v.clone());
        }
        for (k, _) in obj {
            if members.get(k).is_some_and(|m| m.get("location").is_some()) {
                problems.push(format!("{op}: `{k}` belongs in the {} but was sent in the body", members[k]["location"]));
            }
        }
        self.check(&shape_name, &Json::Object(all), op, &mut problems, Check::Request);
        problems
    }

    fn check(&self, shape_name: &str, v: &Json, at: &str, problems: &mut Vec<String>, mode: Check) {
        let Some(shape) = self.shapes.get(shape_name) else {
            problems.push(format!("{at}: unknown shape {shape_name}"));
            return;
        };
        let ty = shape["type"].as_str().unwrap_or("");
        match ty {
            "structure" => {
                let Some(obj) = v.as_object() else { return problems.push(format!("{at}: expected an object ({shape_name}), got {v}")) };
                let members = shape["members"].as_object().cloned().unwrap_or_default();
                for req in shape["required"].as_array().into_iter().flatten().filter_map(Json::as_str) {
                    if !obj.contains_key(req) {
                        problems.push(format!("{at}: required member `{req}` of {shape_name} is missing"));
                    }
                }
                for (k, val) in obj {
                    match members.get(k) {
                        None => problems.push(format!("{at}: `{k}` is not a member of {shape_name}")),
                        Some(m) => self.check(m["shape"].as_str().unwrap_or(""), val, &format!("{at}.{k}"), problems, mode),
                    }
                }
            }
            "list" => {
                let Some(items) = v.as_array() else { return problems.push(format!("{at}: expected a list ({shape_name})")) };
                if mode == Check::Request {
                    self.check_len(shape, items.len(), at, shape_name, problems);
                }
                let member = shape["member"]["shape"].as_str().unwrap_or("");
                for (i, item) in items.iter().enumerate() {
                    self.check(member, item, &format!("{at}[{i}]"), problems, mode);
                }
            }
            "map" => {
                let Some(obj) = v.as_object() else { return problems.push(format!("{at}: expected a map ({shape_name})")) };
                if mode == Check::Request {
                    self.check_len(shape, obj.len(), at, shape_name, problems);
                }
                let (ks, vs) = (shape["key"]["shape"].as_str().unwrap_or(""), shape["value"]["shape"].as_str().unwrap_or(""));
                for (k, val) in obj {
                    self.check(ks, &Json::String(k.clone()), &format!("{at}<key {k}>"), problems, mode);
                    self.check(vs, val, &format!("{at}[{k}]"), problems, mode);
                }
            }
            "string" => {
                let Some(s) = v.as_str() else { return problems.push(format!("{at}: expected a string ({shape_name}), got {v}")) };
                if let Some(values) = shape["enum"].as_array()
                    && !values.iter().any(|e| e.as_str() == Some(s))
                {
                    problems.push(format!("{at}: `{s}` is not one of {shape_name}'s values {values:?}"));
                }
                if mode == Check::Shape {
                    return;
                }
                self.check_len(shape, s.chars().count(), at, shape_name, problems);
                if let Some(p) = shape["pattern"].as_str() {
                    // botocore patterns are Java regexes matched against the whole value; some use
                    // lookaround, which fancy-regex supports. A pattern that cannot be compiled
                    // is a failure, never a silent pass.
                    let re = pattern(p).unwrap_or_else(|e| panic!("{shape_name}'s pattern {p} does not compile: {e}"));
                    if !re.is_match(s).unwrap_or_else(|e| panic!("matching {shape_name}'s pattern {p}: {e}")) {
                        problems.push(format!("{at}: `{s}` does not match {shape_name}'s pattern {p}"));
                    }
                }
            }
            "integer" | "long" => match v.as_i64() {
                None => problems.push(format!("{at}: expected an integer ({shape_name}), got {v}")),
                Some(n) if mode == Check::Request => self.check_range(shape, n as f64, at, shape_name, problems),
                Some(_) => {}
            },
            "float" | "double" => match v.as_f64() {
                None => problems.push(format!("{at}: expected a number ({shape_name}), got {v}")),
                Some(n) if mode == Check::Request => self.check_range(shape, n, at, shape_name, problems),
                Some(_) => {}
            },
            "boolean" => {
                if !v.is_boolean() {
                    problems.push(format!("{at}: expected a boolean ({shape_name}), got {v}"));
                }
            }
            "timestamp" => {
                if !(v.is_number() || v.is_string()) {
                    problems.push(format!("{at}: expected a timestamp ({shape_name}), got {v}"));
                }
            }
            "blob" => {
                if !v.is_string() {
                    problems.push(format!("{at}: expected base64 ({shape_name}), got {v}"));
                }
            }
            other => problems.push(format!("{at}: shape {shape_name} has a type this validator does not know: {other}")),
        }
    }

    /// Every string pattern in the model, so a test can prove each compiles.
    pub fn patterns(&self) -> Vec<(String, String)> {
        self.shapes.iter().filter_map(|(n, s)| s["pattern"].as_str().map(|p| (n.clone(), p.to_owned()))).collect()
    }

    /// Problems with `body` as `op`'s answer (its output shape): what a scripted server answers
    /// must be what the service documents, or a test would pass against a reply AWS never gives.
    pub fn check_response(&self, op: &str, body: &Json) -> Vec<String> {
        let Some(shape) = self.operations.get(op).and_then(|o| o["output"]["shape"].as_str()).map(str::to_owned) else {
            return if body.as_object().is_some_and(|o| o.is_empty()) || body.is_null() {
                Vec::new()
            } else {
                vec![format!("{op} has no output, but the answer has a body: {body}")]
            };
        };
        let mut problems = Vec::new();
        // Patterns, lengths and ranges constrain what a client may send; botocore does not hold
        // a service's answers to them (an in-progress job's S3ModelArtifacts is ""), so only
        // the shape is checked in an answer: members, required members, types and enums.
        self.check(&shape, body, &format!("{op} answer"), &mut problems, Check::Shape);
        problems
    }

    fn check_len(&self, shape: &Json, len: usize, at: &str, name: &str, problems: &mut Vec<String>) {
        if let Some(min) = shape["min"].as_u64()
            && (len as u64) < min
        {
            problems.push(format!("{at}: length {len} is below {name}'s minimum {min}"));
        }
        if let Some(max) = shape["max"].as_u64()
            && len as u64 > max
        {
            problems.push(format!("{at}: length {len} is above {name}'s maximum {max}"));
        }
    }

    fn check_range(&self, shape: &Json, n: f64, at: &str, name: &str, problems: &mut Vec<String>) {
        if shape["min"].as_f64().is_some_and(|m| n < m) || shape["max"].as_f64().is_some_and(|m| n > m) {
            problems.push(format!("{at}: {n} is outside {name}'s range"));
        }
    }
}

/// A botocore pattern as an anchored regex (compiled once per pattern). botocore's patterns are
/// Java regexes, translated where Rust's syntax differs: lookaround is fancy-regex's own;
/// `\uXXXX` escapes become `\u{XXXX}`, a UTF-16 surrogate pair (`\uD800\uDC00`) the code point
/// it encodes; Java's POSIX classes (`\p{Alnum}`, `\p{Print}`, `\p{ASCII}`: US-ASCII only, as
/// in Java) become bracket classes; and a quantified `$` anchor (`…${1,128}`, which Java accepts:
/// a zero-width match repeated is the same match) becomes the anchor.
pub fn pattern(p: &str) -> Result<fancy_regex::Regex, fancy_regex::Error> {
    static CACHE: LazyLock<Mutex<HashMap<String, fancy_regex::Regex>>> = LazyLock::new(Default::default);
    if let Some(re) = CACHE.lock().unwrap().get(p) {
        return Ok(re.clone());
    }
    // Unicode classes under a long repetition (`[\w…]{1,1017}`) need more than the default NFA size.
    let re = fancy_regex::RegexBuilder::new(&format!("^(?:{})$", from_java(p))).delegate_size_limit(256 << 20).build()?;
    CACHE.lock().unwrap().insert(p.to_owned(), re.clone());
    Ok(re)
}

fn from_java(p: &str) -> String {
    static SURROGATES: LazyLock<fancy_regex::Regex> =
        LazyLock::new(|| fancy_regex::Regex::new(r"(?i)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})").expect("a valid rewrite pattern"));
    static ESCAPE: LazyLock<fancy_regex::Regex> =
        LazyLock::new(|| fancy_regex::Regex::new(r"(?i)\\u([0-9a-f]{4})").expect("a valid rewrite pattern"));
    static QUANTIFIED_ANCHOR: LazyLock<fancy_regex::Regex> =
        LazyLock::new(|| fancy_regex::Regex::new(r"(?<!\\)([$^])\{\d+(,\d*)?\}").expect("a valid rewrite pattern"));
    let pairs = SURROGATES.replace_all(p, |c: &fancy_regex::Captures| {
        let hi = u32::from_str_radix(&c[1], 16).unwrap_or(0);
        let lo = u32::from_str_radix(&c[2], 16).unwrap_or(0);
        format!("\\u{{{:X}}}", 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
    });
    let escapes = ESCAPE.replace_all(&pairs, "\\u{$1}");
    // Nested brackets are a class inside a class too, so each works in either place.
    let posix = escapes
        .replace(r"\p{Alnum}", "[[:alnum:]]")
        .replace(r"\p{Print}", "[[:print:]]")
        .replace(r"\p{ASCII}", "[\\x00-\\x7F]");
    QUANTIFIED_ANCHOR.replace_all(&posix, "$1").into_owned()
}
