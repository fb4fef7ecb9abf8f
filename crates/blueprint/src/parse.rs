//! YAML text → [`Node`] tree with spans.
//!
//! Built on yaml-rust2's pull parser so the tree is assembled here, iteratively: nesting depth
//! is bounded before the parser is asked for more, aliases are refused (no billion laughs), and
//! duplicate or non-string keys are caught with both locations. Nothing here panics or recurses
//! on input.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

use crate::diag::Diagnostic;
use crate::span::{Node, NodeValue, Span};

/// Blueprints larger than this are refused before parsing.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting of mappings and lists accepted.
pub const MAX_DEPTH: usize = 64;

const EMPTY: &str = "the blueprint is empty; start with `apiVersion: galley/v1`";

/// Turns yaml-rust2's character-based markers into byte offsets.
pub struct LineIndex<'a> {
    source: &'a str,
    /// Byte offset of every 256th character, so a lookup walks at most 255 characters.
    checkpoints: Vec<usize>,
    ascii: bool,
    lines: usize,
}

const STRIDE: usize = 256;

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> LineIndex<'a> {
        let ascii = source.is_ascii();
        let checkpoints = if ascii {
            Vec::new()
        } else {
            source.char_indices().step_by(STRIDE).map(|(b, _)| b).collect()
        };
        LineIndex { source, checkpoints, ascii, lines: source.split('\n').count() }
    }

    fn byte_of_char(&self, char_index: usize) -> usize {
        if self.ascii {
            return char_index.min(self.source.len());
        }
        let Some(&base) = self.checkpoints.get(char_index / STRIDE) else {
            return self.source.len();
        };
        let rest = char_index % STRIDE;
        self.source[base..].char_indices().nth(rest).map(|(b, _)| base + b).unwrap_or(self.source.len())
    }

    /// A span at `mark`, `len` bytes long but never past the end of its line.
    pub fn span(&self, mark: &Marker, len: usize) -> Span {
        let offset = self.byte_of_char(mark.index());
        let line_end = self.source[offset..].find('\n').map(|i| offset + i).unwrap_or(self.source.len());
        let len = len.min(line_end - offset);
        if mark.line() == 0 || mark.line() > self.lines {
            // yaml-rust2 reports "unexpected end" on a line after the last one.
            return span_at(self.source, offset, len);
        }
        Span { line: mark.line(), column: mark.col() + 1, offset, len }
    }

    /// The 1-based line and column of a byte offset.
    pub fn position(source: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(source.len());
        let before = &source.as_bytes()[..offset];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        (line, column)
    }
}

/// A span for a byte offset computed from the text alone.
pub fn span_at(source: &str, offset: usize, len: usize) -> Span {
    let (line, column) = LineIndex::position(source, offset);
    Span { line, column, offset, len }
}

/// Checks done on raw bytes before any parsing: size and encoding.
pub fn check_bytes(bytes: &[u8]) -> Result<&str, Diagnostic> {
    if bytes.len() > MAX_BYTES {
        return Err(too_large(bytes.len()));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let (line, column) = LineIndex::position(valid, at);
        Diagnostic::error(Span { line, column, offset: at, len: 0 }, "", format!(
            "the blueprint is not valid UTF-8: byte 0x{:02x} at line {line}, column {column}",
            bytes[at]
        ))
        .with_hint("save the file as UTF-8")
    })
}

pub fn too_large(len: usize) -> Diagnostic {
    Diagnostic::error(
        Span::start(),
        "",
        format!(
            "the blueprint is {} ({len} bytes); the limit is 8 MiB",
            human_size(len as u64)
        ),
    )
    .with_hint("a blueprint describes a stack; keep data in a file named by `data.source`")
}

fn human_size(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    format!("{:.1} MiB", n as f64 / MIB)
}

enum Frame {
    Seq { span: Span, items: Vec<Node> },
    Map { span: Span, entries: Vec<(String, Node)>, key: Option<(String, Span)> },
}

/// Parses one YAML document. The first problem stops parsing: after a syntax error the rest of
/// the tree cannot be trusted.
pub fn parse(source: &str) -> Result<Node, Diagnostic> {
    if source.len() > MAX_BYTES {
        return Err(too_large(source.len()));
    }
    let index = LineIndex::new(source);
    let mut parser = Parser::new_from_str(source);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;

    loop {
        let (event, mark) = match parser.next_token() {
            Ok(ev) => ev,
            Err(e) => return Err(syntax_error(source, &index, e.marker(), e.info())),
        };
        match event {
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::error(index.span(&mark, 3), "", "a blueprint holds one YAML document; found a second one here")
                        .with_hint("split the documents into separate files"));
                }
            }
            Event::Alias(_) => {
                return Err(Diagnostic::error(index.span(&mark, 1), "", "YAML aliases (`*name`) are not supported in blueprints")
                    .with_hint("write the value out, or put it in `vars` and use `${var.name}`"));
            }
            Event::Scalar(text, style, _anchor, tag) => {
                let len = scalar_len(&text, style);
                let span = index.span(&mark, len);
                let forced_string = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == TScalarStyle::Plain && !forced_string {
                    resolve_plain(&text)
                } else {
                    NodeValue::Str(text)
                };
                if let NodeValue::Float(f) = value
                    && !f.is_finite()
                {
                    return Err(Diagnostic::error(span, "", "infinite and NaN numbers are not supported in blueprints"));
                }
                push(&mut stack, &mut root, Node::new(value, span), style == TScalarStyle::Plain)?;
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                let span = index.span(&mark, 1);
                if let Some(Frame::Map { key: None, .. }) = stack.last() {
                    return Err(Diagnostic::error(span, "", "mapping keys must be plain strings; found a list or mapping used as a key")
                        .with_hint("use a string key such as `name:`"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(Diagnostic::error(span, "", format!(
                        "the blueprint nests deeper than {MAX_DEPTH} levels"
                    ))
                    .with_hint("a blueprint is a few levels deep; this looks like generated or corrupted input"));
                }
                stack.push(match event {
                    Event::SequenceStart(..) => Frame::Seq { span, items: Vec::new() },
                    _ => Frame::Map { span, entries: Vec::new(), key: None },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match stack.pop() {
                    Some(Frame::Seq { span, items }) => Node::new(NodeValue::Seq(items), span),
                    Some(Frame::Map { span, entries, .. }) => Node::new(NodeValue::Map(entries), span),
                    None => continue,
                };
                push(&mut stack, &mut root, node, false)?;
            }
        }
    }

    match root {
        None => Err(Diagnostic::error(Span::start(), "", EMPTY)),
        Some(node) if node.value == NodeValue::Null => Err(Diagnostic::error(Span::start(), "", EMPTY)),
        Some(node) => Ok(node),
    }
}

/// Adds a finished node to its parent (or makes it the root).
fn push(stack: &mut [Frame], root: &mut Option<Node>, mut node: Node, plain: bool) -> Result<(), Diagnostic> {
    match stack.last_mut() {
        None => {
            *root = Some(node);
            Ok(())
        }
        Some(Frame::Seq { items, .. }) => {
            items.push(node);
            Ok(())
        }
        Some(Frame::Map { entries, key, .. }) => match key.take() {
            Some((name, key_span)) => {
                node.key_span = Some(key_span);
                entries.push((name, node));
                Ok(())
            }
            None => {
                let name = match node.value {
                    NodeValue::Str(s) => s,
                    ref other => {
                        let found = if plain { scalar_text(other) } else { String::new() };
                        return Err(Diagnostic::error(node.span, "", format!(
                            "mapping keys must be strings; found {} `{found}`",
                            other.describe()
                        ))
                        .with_hint(format!("quote the key: `\"{found}\":`")));
                    }
                };
                if let Some((_, first)) = entries.iter().find(|(k, _)| *k == name) {
                    let first_span = first.key_span.unwrap_or(first.span);
                    return Err(Diagnostic::error(node.span, "", format!(
                        "duplicate key `{name}` (first defined at line {}, column {})",
                        first_span.line, first_span.column
                    ))
                    .with_hint("remove one of the two, or merge them")
                    .with_related(first_span, "first defined here"));
                }
                *key = Some((name, node.span));
                Ok(())
            }
        },
    }
}

fn scalar_text(v: &NodeValue) -> String {
    match v {
        NodeValue::Null => "null".into(),
        NodeValue::Bool(b) => b.to_string(),
        NodeValue::Int(i) => i.to_string(),
        NodeValue::Float(f) => f.to_string(),
        NodeValue::Str(s) => s.clone(),
        _ => String::new(),
    }
}

/// YAML 1.2 core schema resolution of an unquoted scalar.
fn resolve_plain(text: &str) -> NodeValue {
    match text {
        "Null" | "NULL" => return NodeValue::Null,
        _ => {}
    }
    match Yaml::from_str(text) {
        Yaml::Null => NodeValue::Null,
        Yaml::Boolean(b) => NodeValue::Bool(b),
        Yaml::Integer(i) => NodeValue::Int(i),
        real @ Yaml::Real(_) => match real.as_f64() {
            Some(f) => NodeValue::Float(f),
            None => NodeValue::Str(text.to_string()),
        },
        _ => NodeValue::Str(text.to_string()),
    }
}

fn scalar_len(text: &str, style: TScalarStyle) -> usize {
    match style {
        TScalarStyle::Plain => text.len(),
        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => text.len() + 2,
        _ => 1,
    }
}

/// A scanner error, reworded where yaml-rust2's wording would puzzle a user.
fn syntax_error(source: &str, index: &LineIndex, mark: &Marker, info: &str) -> Diagnostic {
    if let Some(tab) = first_tab_indent(source, mark.line()) {
        return Diagnostic::error(tab, "", "tabs are not allowed for indentation; use spaces")
            .with_hint("configure your editor to insert spaces in YAML files");
    }
    if info.contains("recursion limit") {
        return Diagnostic::error(index.span(mark, 1), "", format!("the blueprint nests deeper than {MAX_DEPTH} levels"));
    }
    Diagnostic::error(index.span(mark, 1), "", format!("invalid YAML: {info}"))
        .with_hint("check the indentation and the `key: value` shape of this line and the one before it")
}

/// The first tab used as indentation on or before line `until` (1-based).
fn first_tab_indent(source: &str, until: usize) -> Option<Span> {
    let mut offset = 0;
    for (i, line) in source.split_inclusive('\n').enumerate() {
        if i + 1 > until.max(1) {
            break;
        }
        let indent_len = line.len() - line.trim_start_matches([' ', '\t']).len();
        if let Some(col) = line[..indent_len].find('\t') {
            let rest = line[indent_len..].trim_end();
            if !rest.is_empty() {
                return Some(Span { line: i + 1, column: col + 1, offset: offset + col, len: 1 });
            }
        }
        offset += line.len();
    }
    None
}
