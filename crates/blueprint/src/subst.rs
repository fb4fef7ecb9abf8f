//! Environments overlays, `${var.x}` / `${env.X}` substitution and `${stages.S.outputs.K}`
//! references, all on the span tree so every problem keeps its location.

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::span::{Node, NodeValue, PathSeg, Span, did_you_mean, dotted};

/// Merges `environments.<name>` over the blueprint: mappings merge key by key, anything else
/// (lists included) is replaced. The overlay's own spans are kept, so a bad value from `prod`
/// is reported where `prod` sets it.
pub fn apply_environment(root: &mut Node, name: &str) -> Result<(), Diagnostic> {
    let envs = root.get("environments");
    let defined: Vec<String> = envs.map(|e| e.keys().into_iter().map(String::from).collect()).unwrap_or_default();
    let Some(overlay) = envs.and_then(|e| e.get(name)).cloned() else {
        let at = envs.and_then(|e| e.key_span).unwrap_or(Span::start());
        let listed = if defined.is_empty() {
            "the blueprint defines no environments".to_string()
        } else {
            format!("defined: {}", defined.join(", "))
        };
        let hint = did_you_mean(name, defined.iter().map(String::as_str))
            .unwrap_or_else(|| "add it under `environments:`, or drop `--env`".into());
        return Err(Diagnostic::error(at, "environments", format!("unknown environment `{name}`; {listed}")).with_hint(hint));
    };
    if !matches!(overlay.value, NodeValue::Map(_)) {
        return Err(Diagnostic::error(
            overlay.key_span.unwrap_or(overlay.span),
            format!("environments.{name}"),
            format!("environment `{name}` must be a mapping of fields to override, found {}", overlay.value.describe()),
        ));
    }
    if let NodeValue::Map(entries) = &overlay.value
        && let Some((k, v)) = entries.iter().find(|(k, _)| k == "environments" || k == "apiVersion")
    {
        return Err(Diagnostic::error(
            v.key_span.unwrap_or(v.span),
            format!("environments.{name}.{k}"),
            format!("an environment cannot override `{k}`"),
        ));
    }
    merge(root, overlay);
    Ok(())
}

fn merge(base: &mut Node, overlay: Node) {
    match (&mut base.value, overlay.value) {
        (NodeValue::Map(entries), NodeValue::Map(over)) => {
            for (k, v) in over {
                match entries.iter_mut().find(|(bk, _)| *bk == k) {
                    Some((_, existing)) => merge(existing, v),
                    None => entries.push((k, v)),
                }
            }
        }
        (_, value) => {
            base.value = value;
            base.span = overlay.span;
            base.key_span = overlay.key_span.or(base.key_span);
        }
    }
}

/// A `${stages.S.outputs.K}` found in the tree, before it is checked.
#[derive(Debug, Clone)]
pub struct RawRef {
    pub to: String,
    pub output: String,
    pub path: Vec<PathSeg>,
    pub span: Span,
}

/// Where `${env.X}` and `GALLEY_VAR_<name>` read from: a snapshot of the process
/// environment, or a map in tests.
pub type EnvLookup<'a> = &'a BTreeMap<String, String>;

struct Ctx<'a> {
    vars: BTreeMap<String, NodeValue>,
    env: EnvLookup<'a>,
    refs: Vec<RawRef>,
    diags: Vec<Diagnostic>,
}

/// Substitutes vars and env everywhere but `environments`, collects stage references, and
/// returns every problem found (not just the first).
pub fn substitute(root: &mut Node, overrides: &BTreeMap<String, String>, env: EnvLookup<'_>) -> (Vec<RawRef>, Vec<Diagnostic>) {
    let mut ctx = Ctx { vars: BTreeMap::new(), env, refs: Vec::new(), diags: Vec::new() };

    // Vars may read the environment (`region: ${env.AWS_REGION:-eu-west-1}`) but not each other.
    if let Some(vars) = root.get_mut("vars") {
        let mut path = vec![PathSeg::Key("vars".into())];
        walk(vars, &mut path, &mut ctx, false);
        if let NodeValue::Map(entries) = &vars.value {
            for (k, v) in entries {
                ctx.vars.insert(k.clone(), v.value.clone());
            }
        }
    }
    for (k, v) in ctx.env {
        if let Some(name) = k.strip_prefix("GALLEY_VAR_") {
            ctx.vars.insert(name.to_string(), NodeValue::Str(v.clone()));
        }
    }
    for (k, v) in overrides {
        ctx.vars.insert(k.clone(), NodeValue::Str(v.clone()));
    }

    if let NodeValue::Map(entries) = &mut root.value {
        for (k, v) in entries.iter_mut() {
            if k == "environments" || k == "vars" {
                continue;
            }
            let mut path = vec![PathSeg::Key(k.clone())];
            walk(v, &mut path, &mut ctx, true);
        }
    }
    (ctx.refs, ctx.diags)
}

fn walk(node: &mut Node, path: &mut Vec<PathSeg>, ctx: &mut Ctx<'_>, allow_vars: bool) {
    match &mut node.value {
        NodeValue::Str(s) if s.contains('$') => {
            let text = s.clone();
            match expand(&text, ctx, allow_vars, path, node.span) {
                Ok(Expanded::Whole(value)) => {
                    node.value = value;
                    node.substituted = true;
                }
                Ok(Expanded::Text(t)) => node.value = NodeValue::Str(t),
                Err((message, hint)) => {
                    ctx.diags.push(Diagnostic::error(node.span, dotted(path), message).with_hint_opt(hint));
                }
            }
        }
        NodeValue::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(PathSeg::Index(i));
                walk(item, path, ctx, allow_vars);
                path.pop();
            }
        }
        NodeValue::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                path.push(PathSeg::Key(k.clone()));
                walk(v, path, ctx, allow_vars);
                path.pop();
            }
        }
        _ => {}
    }
}

enum Expanded {
    /// The string was exactly one `${var.x}`: the var's own value and type.
    Whole(NodeValue),
    Text(String),
}

type Problem = (String, Option<String>);

fn expand(text: &str, ctx: &mut Ctx<'_>, allow_vars: bool, path: &[PathSeg], span: Span) -> Result<Expanded, Problem> {
    let mut out = String::new();
    let mut rest = text;
    let mut whole: Option<NodeValue> = None;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err((
                format!("unterminated `${{` in `{text}`"),
                Some("close it with `}`, or write `$${` for a literal `${`".into()),
            ));
        };
        let expr = body_start[..end].trim();
        rest = &body_start[end + 1..];
        let is_whole = pos == 0 && out.is_empty() && rest.is_empty();
        if let Some(name) = expr.strip_prefix("var.") {
            if !allow_vars {
                return Err((format!("`vars` cannot refer to other vars (`${{{expr}}}`)"), Some("write the value out".into())));
            }
            let Some(value) = ctx.vars.get(name).cloned() else {
                let hint = did_you_mean(name, ctx.vars.keys().map(String::as_str)).unwrap_or_else(|| {
                    format!("define it under `vars:`, pass `--var {name}=VALUE`, or set GALLEY_VAR_{name}")
                });
                return Err((format!("undefined variable `{name}` in `${{{expr}}}`"), Some(hint)));
            };
            if is_whole {
                whole = Some(value);
            } else {
                out.push_str(&scalar_to_string(&value));
            }
        } else if let Some(spec) = expr.strip_prefix("env.") {
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            let value = match (ctx.env.get(name).cloned(), default) {
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err((
                        format!("environment variable `{name}` is not set (`${{{expr}}}`)"),
                        Some(format!("set {name}, or give a default: `${{env.{name}:-VALUE}}`")),
                    ));
                }
            };
            if is_whole {
                whole = Some(NodeValue::Str(value));
            } else {
                out.push_str(&value);
            }
        } else if let Some(reference) = expr.strip_prefix("stages.") {
            let parts: Vec<&str> = reference.split('.').collect();
            match parts.as_slice() {
                [stage, "outputs", key] => {
                    ctx.refs.push(RawRef { to: stage.to_string(), output: key.to_string(), path: path.to_vec(), span });
                    out.push_str(&format!("${{{expr}}}"));
                }
                _ => {
                    return Err((
                        format!("malformed stage reference `${{{expr}}}`"),
                        Some("write it as `${stages.<stage>.outputs.<key>}`".into()),
                    ));
                }
            }
        } else {
            let head = expr.split('.').next().unwrap_or(expr);
            let hint = did_you_mean(head, ["var", "env", "stages"])
                .unwrap_or_else(|| "use `${var.NAME}`, `${env.NAME}` or `${stages.STAGE.outputs.KEY}`; write `$${` for a literal `${`".into());
            return Err((format!("unknown substitution `${{{expr}}}`"), Some(hint)));
        }
    }
    out.push_str(rest);
    Ok(match whole {
        Some(v) => Expanded::Whole(v),
        None => Expanded::Text(out),
    })
}

fn scalar_to_string(v: &NodeValue) -> String {
    match v {
        NodeValue::Str(s) => s.clone(),
        NodeValue::Int(i) => i.to_string(),
        NodeValue::Float(f) => f.to_string(),
        NodeValue::Bool(b) => b.to_string(),
        NodeValue::Null => String::new(),
        NodeValue::Seq(_) | NodeValue::Map(_) => String::new(),
    }
}
