//! Located diagnostics: what the CLI prints (rustc-style through miette) and what `--output json`
//! emits (`file`, `line`, `column`, `path`, `message`, `hint`, `severity`).

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::Serialize;

use crate::span::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A second place in the source that explains the first (the earlier copy of a duplicate key).
#[derive(Debug, Clone, PartialEq)]
pub struct Related {
    pub span: Span,
    pub label: String,
}

/// One problem in a blueprint, with where it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted path of the offending value, e.g. `stages.serving.traffic.percent`; empty for the
    /// whole document.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
    pub severity: Severity,
    /// Byte range for the source snippet; not part of the JSON contract.
    #[serde(skip)]
    pub span: Span,
    #[serde(skip)]
    pub related: Vec<Related>,
}

impl Diagnostic {
    pub fn error(span: Span, path: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: String::new(),
            line: span.line,
            column: span.column,
            path: path.into(),
            message: message.into(),
            hint: None,
            severity: Severity::Error,
            span,
            related: Vec::new(),
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_hint_opt(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint;
        self
    }

    pub fn with_related(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.related.push(Related { span, label: label.into() });
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// Every problem found in one blueprint, with the source they point into.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: String,
    source: Arc<String>,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: impl Into<String>, source: impl Into<String>) -> Diagnostics {
        Diagnostics { file: file.into(), source: Arc::new(source.into()), items: Vec::new() }
    }

    pub fn push(&mut self, mut d: Diagnostic) {
        d.file = self.file.clone();
        // Keep the snippet inside the source whatever a check computed.
        let len = self.source.len();
        d.span.offset = d.span.offset.min(len);
        d.span.len = d.span.len.min(len - d.span.offset);
        if d.line > self.source.split('\n').count() {
            let fixed = crate::parse::span_at(&self.source, d.span.offset, d.span.len);
            (d.line, d.column, d.span) = (fixed.line, fixed.column, fixed);
        }
        self.items.push(d);
    }

    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        for d in ds {
            self.push(d);
        }
    }

    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Sorted by position, so a user fixes the file top to bottom.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
    }

    /// JSON array of the diagnostics (the `--output json` contract).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.items).unwrap_or_default()
    }

    /// rustc-like report of every diagnostic: snippet, label at the span, hint as help.
    pub fn render(&self, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        for d in &self.items {
            let report = Rendered { diag: d, source: NamedSource::new(&self.file, self.source.to_string()) };
            if handler.render_report(&mut out, &report).is_err() {
                out.push_str(&d.to_string());
                out.push('\n');
            }
        }
        let errors = self.items.iter().filter(|d| d.severity == Severity::Error).count();
        out.push_str(&format!(
            "{} error{} in {}\n",
            errors,
            if errors == 1 { "" } else { "s" },
            self.file
        ));
        out
    }

    /// One `galley_core::Error` carrying the plain-text list, for callers that speak only `Error`.
    pub fn into_error(self) -> galley_core::Error {
        galley_core::Error::invalid(format!("invalid blueprint {}:\n{}", self.file, self)).resource(self.file)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl Serialize for Diagnostics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.items.serialize(s)
    }
}

/// A diagnostic paired with its source, in the shape miette renders.
struct Rendered<'a> {
    diag: &'a Diagnostic,
    source: NamedSource<String>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diag, f)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Rendered<'_> {}

impl miette::Diagnostic for Rendered<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.hint.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let d = self.diag;
        let label = if d.path.is_empty() { "here".to_string() } else { d.path.clone() };
        let primary = LabeledSpan::new_primary_with_span(Some(label), (d.span.offset, d.span.len));
        let related = d
            .related
            .iter()
            .map(|r| LabeledSpan::new_with_span(Some(r.label.clone()), (r.span.offset, r.span.len)));
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}
