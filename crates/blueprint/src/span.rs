//! The YAML document as a tree whose every node knows where it came from.

use std::fmt;

/// A place in the source: 1-based line and column (characters), byte offset and byte length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
    pub len: usize,
}

impl Span {
    /// The very start of the file, for problems with the whole document.
    pub fn start() -> Span {
        Span { line: 1, column: 1, offset: 0, len: 0 }
    }
}

/// A value with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    /// Where the value starts.
    pub span: Span,
    /// Where the key that holds this value is, when it sits in a mapping.
    pub key_span: Option<Span>,
    /// Set on strings that came out of a whole-value `${var.x}` / `${env.X}` substitution: their
    /// type may be adjusted to what the schema expects (`port: ${var.port}` is a number).
    pub substituted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl NodeValue {
    /// "a string", "a number", … for "expected X, found Y".
    pub fn describe(&self) -> &'static str {
        match self {
            NodeValue::Null => "nothing (null)",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) | NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn new(value: NodeValue, span: Span) -> Node {
        Node { value, span, key_span: None, substituted: false }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            NodeValue::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    fn child(&self, seg: &PathSeg) -> Option<&Node> {
        match (seg, &self.value) {
            (PathSeg::Key(k), NodeValue::Map(_)) => self.get(k),
            (PathSeg::Index(i), NodeValue::Seq(items)) => items.get(*i),
            _ => None,
        }
    }

    /// Where to point for a problem at `path`: the value itself when it is a scalar, else the
    /// key that introduces it (a mapping "starts" at its first child, which reads oddly). When
    /// the path does not exist (a missing field) it is the deepest part that does.
    pub fn locate(&self, path: &[PathSeg]) -> Span {
        let mut node = self;
        for seg in path {
            match node.child(seg) {
                Some(next) => node = next,
                None => return node.anchor(),
            }
        }
        match node.value {
            NodeValue::Map(_) | NodeValue::Seq(_) => node.anchor(),
            _ => node.span,
        }
    }

    fn anchor(&self) -> Span {
        self.key_span.unwrap_or(match self.value {
            NodeValue::Map(_) | NodeValue::Seq(_) if self.span.offset == 0 => Span::start(),
            _ => self.span,
        })
    }

    /// The tree as JSON, for the schema validator and serde. Non-finite floats have no JSON
    /// form; they become null here and are reported by the loader before this is called.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            NodeValue::Null => J::Null,
            NodeValue::Bool(b) => J::Bool(*b),
            NodeValue::Int(i) => J::from(*i),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            NodeValue::Str(s) => J::String(s.clone()),
            NodeValue::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => {
                J::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Renders `stages.monitoring.alarms[0].metric`.
pub struct DottedPath<'a>(pub &'a [PathSeg]);

impl fmt::Display for DottedPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Key(k) if i == 0 => f.write_str(k)?,
                PathSeg::Key(k) => write!(f, ".{k}")?,
                PathSeg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

pub fn dotted(path: &[PathSeg]) -> String {
    DottedPath(path).to_string()
}

/// Path from dotted keys (no indices), for the semantic checks.
pub fn keys(parts: &[&str]) -> Vec<PathSeg> {
    parts.iter().map(|p| PathSeg::Key((*p).to_string())).collect()
}

/// `did you mean `x`?` against candidates, when one is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    // Jaro-Winkler catches transpositions in long words; Levenshtein catches one-letter slips
    // in short ones (`s4` for `s3`), where Jaro-Winkler scores low.
    let close = |c: &str| strsim::jaro_winkler(word, c) >= 0.8 || strsim::levenshtein(word, c) <= (word.chars().count() / 3).max(1);
    let best = candidates
        .into_iter()
        .filter(|c| close(c))
        .min_by(|a, b| {
            strsim::levenshtein(word, a)
                .cmp(&strsim::levenshtein(word, b))
                .then(strsim::jaro_winkler(word, b).total_cmp(&strsim::jaro_winkler(word, a)))
        })?;
    Some(format!("did you mean `{best}`?"))
}
