//! The blueprint language: YAML with source spans → validated, typed [`Blueprint`].
//!
//! [`load_file`] / [`load_str`] run the whole pipeline and return either the typed blueprint
//! or every problem found, each located in the source:
//! 1. bytes: size limit, UTF-8;
//! 2. YAML → span tree ([`parse`]): syntax, duplicate keys, tabs, depth, aliases;
//! 3. `--env` overlay, `${var.x}` / `${env.X}` substitution, `${stages.S.outputs.K}` references;
//! 4. JSON Schema validation (the schema `galley schema` prints);
//! 5. typed deserialization and semantic checks (names, cross-stage rules, portability).

pub mod diag;
pub mod emit;
pub mod model;
pub mod parse;
pub mod platform;
pub mod refs;
pub mod schema;
pub mod semantic;
pub mod span;
pub mod subst;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use galley_core::{PlatformId, Stage};
use sha2::{Digest, Sha256};

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use model::*;
pub use refs::{Reference, stage_outputs};
pub use schema::json_schema;
pub use platform::{BackendRule, Finding, PlatformRegistry, PlatformRules, native_promotion};
pub use semantic::{duration_secs, effective_promotion, split_command};
pub use span::{Node, NodeValue, PathSeg, Span};

/// What the caller (CLI, tests) decides on top of the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// Overrides `platform:` before validation, so portability is checked against it.
    pub platform: Option<PlatformId>,
    /// The `environments.<name>` overlay to apply.
    pub env: Option<String>,
    /// `--var k=v`; wins over `GALLEY_VAR_k` and the blueprint's `vars`.
    pub vars: BTreeMap<String, String>,
}

/// A blueprint that passed every check.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub blueprint: Blueprint,
    pub path: PathBuf,
    pub source: String,
    /// Every `${stages.S.outputs.K}`, unresolved; the engine resolves them at apply time.
    pub references: Vec<Reference>,
    /// sha256 (hex) of the source and the options, for lineage.
    pub hash: String,
}

/// Reads and validates a blueprint file against the platforms `registry` knows. Files over
/// 8 MiB are refused before being read.
pub fn load_file(path: &Path, opts: &LoadOptions, registry: &PlatformRegistry) -> Result<Loaded, Diagnostics> {
    let name = path.display().to_string();
    let fail = |d: Diagnostic| {
        let mut ds = Diagnostics::new(name.clone(), "");
        ds.push(d);
        ds
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(io_problem(path, e)))?;
    if meta.len() > parse::MAX_BYTES as u64 {
        return Err(fail(parse::too_large(meta.len() as usize)));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(io_problem(path, e)))?;
    let source = match parse::check_bytes(&bytes) {
        Ok(source) => source,
        Err(_) => return load_bytes(&name, &bytes, opts, registry),
    };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let base = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    let mut loaded = load(&name, source, opts, registry, &env, base)?;
    loaded.path = path.to_path_buf();
    Ok(loaded)
}

fn io_problem(path: &Path, e: std::io::Error) -> Diagnostic {
    Diagnostic::error(Span::start(), "", format!("cannot read blueprint {}: {e}", path.display()))
}

/// Validates blueprint bytes (checks UTF-8 first).
pub fn load_bytes(name: &str, bytes: &[u8], opts: &LoadOptions, registry: &PlatformRegistry) -> Result<Loaded, Diagnostics> {
    match parse::check_bytes(bytes) {
        Ok(source) => load_str(name, source, opts, registry),
        Err(d) => {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(parse::MAX_BYTES)]).into_owned();
            let mut ds = Diagnostics::new(name, shown);
            ds.push(d);
            Err(ds)
        }
    }
}

/// Validates blueprint text; `name` is used in diagnostics (usually the path).
pub fn load_str(name: &str, source: &str, opts: &LoadOptions, registry: &PlatformRegistry) -> Result<Loaded, Diagnostics> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    load_str_with_env(name, source, opts, registry, &env)
}

/// [`load_str`] with an explicit environment for `${env.X}` and `GALLEY_VAR_*`.
pub fn load_str_with_env(
    name: &str,
    source: &str,
    opts: &LoadOptions,
    registry: &PlatformRegistry,
    env: &BTreeMap<String, String>,
) -> Result<Loaded, Diagnostics> {
    load(name, source, opts, registry, env, None)
}

/// Every check; with `base` (the blueprint file's directory) also that the files the blueprint
/// names relative to it are there.
fn load(
    name: &str,
    source: &str,
    opts: &LoadOptions,
    registry: &PlatformRegistry,
    env: &BTreeMap<String, String>,
    base: Option<&Path>,
) -> Result<Loaded, Diagnostics> {
    if source.len() > parse::MAX_BYTES {
        let mut ds = Diagnostics::new(name, "");
        ds.push(parse::too_large(source.len()));
        return Err(ds);
    }
    let mut ds = Diagnostics::new(name, source);
    let fail = |mut ds: Diagnostics| {
        ds.sort();
        Err(ds)
    };

    let mut root = match parse::parse(source) {
        Ok(root) => root,
        Err(d) => {
            ds.push(d);
            return fail(ds);
        }
    };
    if !matches!(root.value, NodeValue::Map(_)) {
        ds.push(Diagnostic::error(root.span, "", format!(
            "a blueprint is a mapping of fields (apiVersion, name, data, stages, …); found {}",
            root.value.describe()
        )));
        return fail(ds);
    }

    if let Some(env_name) = &opts.env
        && let Err(d) = subst::apply_environment(&mut root, env_name)
    {
        ds.push(d);
        return fail(ds);
    }
    if let Some(platform) = opts.platform
        && let NodeValue::Map(entries) = &mut root.value
    {
        let value = NodeValue::Str(platform.to_string());
        match entries.iter_mut().find(|(k, _)| k == "platform") {
            Some((_, node)) => node.value = value,
            None => entries.push(("platform".into(), Node::new(value, Span::start()))),
        }
    }

    let compiled = registry.schema();
    let (raw_refs, mut problems) = subst::substitute(&mut root, &opts.vars, env);
    schema::coerce_substituted(compiled, &mut root, &mut Vec::new());
    let references = refs::check(&root, raw_refs, &mut problems);

    let json = root.to_json();
    for d in schema::validate(compiled, &root, &json) {
        // A value already reported (an undefined var left in a number field) is not reported twice.
        if !problems.iter().any(|p| p.path == d.path && p.line == d.line) {
            problems.push(d);
        }
    }
    if !problems.is_empty() {
        ds.extend(problems);
        return fail(ds);
    }

    let blueprint: Blueprint = match serde_json::from_value(json) {
        Ok(bp) => bp,
        Err(e) => {
            // The schema is generated from the same types, so this means the two disagree.
            ds.push(Diagnostic::error(Span::start(), "", format!("the blueprint does not fit Galley's model: {e}")));
            return fail(ds);
        }
    };
    let mut semantic = semantic::check(&blueprint, &root, registry);
    if let Some(base) = base {
        semantic.extend(semantic::files(&blueprint, &root, base));
    }
    if !semantic.is_empty() {
        ds.extend(semantic);
        return fail(ds);
    }

    Ok(Loaded { blueprint, path: PathBuf::from(name), source: source.to_string(), references, hash: hash(source, opts) })
}

fn hash(source: &str, opts: &LoadOptions) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(opts.platform.map(|p| p.as_str()).unwrap_or("").as_bytes());
    h.update([0]);
    h.update(opts.env.as_deref().unwrap_or("").as_bytes());
    for (k, v) in &opts.vars {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([b'=']);
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}
