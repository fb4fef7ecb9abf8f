//! `${stages.<stage>.outputs.<key>}`: which outputs exist, and the dependency edges (and
//! cycles) the references create. The engine resolves the values at apply time.

use std::collections::{BTreeMap, BTreeSet};

use galley_core::Stage;
use serde::Serialize;

use crate::diag::Diagnostic;
use crate::span::{Node, PathSeg, did_you_mean, dotted};
use crate::subst::RawRef;

/// One reference from a value inside stage `from` to an output of stage `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    pub from: Stage,
    pub to: Stage,
    pub output: String,
    /// Dotted path of the value holding the reference, e.g. `stages.serving.model`.
    pub path: String,
}

/// The outputs each stage publishes once applied.
pub fn stage_outputs(stage: Stage) -> &'static [&'static str] {
    match stage {
        Stage::Artifacts => &["uri", "bucket"],
        Stage::Features => &["group"],
        Stage::Experiments => &["experiment_id", "name"],
        Stage::Pipeline => &["name"],
        Stage::Training => &["image"],
        Stage::Registry => &["model", "model_id"],
        Stage::Serving => &["url", "endpoint"],
        Stage::Monitoring => &["metrics_url"],
    }
}

/// Checks every raw reference and returns the good ones; problems go to `diags`.
pub fn check(root: &Node, raw: Vec<RawRef>, diags: &mut Vec<Diagnostic>) -> Vec<Reference> {
    let declared: Vec<&str> = root.get("stages").map(Node::keys).unwrap_or_default();
    let mut good = Vec::new();
    let mut spans = Vec::new();
    for r in raw {
        let here = dotted(&r.path);
        let from = match r.path.as_slice() {
            [PathSeg::Key(s), PathSeg::Key(name), ..] if s == "stages" => name.parse::<Stage>().ok(),
            _ => None,
        };
        let Some(from) = from else {
            diags.push(
                Diagnostic::error(r.span, here, format!("`${{stages.{}.outputs.{}}}` can only be used inside `stages`", r.to, r.output))
                    .with_hint("stage outputs exist only once stages are applied; use `vars` for values known up front"),
            );
            continue;
        };
        let Some(to) = r.to.parse::<Stage>().ok().filter(|s| declared.contains(&s.as_str())) else {
            let known = r.to.parse::<Stage>().is_ok();
            let message = if known {
                format!("`${{stages.{}.outputs.{}}}` refers to stage `{}`, which this blueprint does not declare", r.to, r.output, r.to)
            } else {
                format!("unknown stage `{}` in `${{stages.{}.outputs.{}}}`", r.to, r.to, r.output)
            };
            let hint = did_you_mean(&r.to, declared.iter().copied())
                .unwrap_or_else(|| format!("declared stages: {}", declared.join(", ")));
            diags.push(Diagnostic::error(r.span, here, message).with_hint(hint));
            continue;
        };
        let outputs = stage_outputs(to);
        if !outputs.contains(&r.output.as_str()) {
            let hint = did_you_mean(&r.output, outputs.iter().copied())
                .unwrap_or_else(|| format!("`{to}` outputs: {}", outputs.join(", ")));
            diags.push(
                Diagnostic::error(r.span, here, format!("stage `{to}` has no output `{}`; it has {}", r.output, outputs.join(", ")))
                    .with_hint(hint),
            );
            continue;
        }
        spans.push(r.span);
        good.push(Reference { from, to, output: r.output, path: here });
    }
    if let Some(cycle) = find_cycle(&good) {
        let first = good.iter().position(|r| r.from == cycle[0] && r.to == cycle[1]).unwrap_or(0);
        let names: Vec<&str> = cycle.iter().map(|s| s.as_str()).collect();
        diags.push(
            Diagnostic::error(spans[first], good[first].path.clone(), format!("reference cycle: {}", names.join(" → ")))
                .with_hint("a stage cannot depend on its own outputs, even through other stages; break one of these references"),
        );
    }
    good
}

/// The first cycle among the reference edges, as a closed walk (`a → b → a`).
fn find_cycle(refs: &[Reference]) -> Option<Vec<Stage>> {
    let mut edges: BTreeMap<Stage, BTreeSet<Stage>> = BTreeMap::new();
    for r in refs {
        edges.entry(r.from).or_default().insert(r.to);
    }
    // Iterative DFS with colours; the stack holds the current walk.
    let mut done: BTreeSet<Stage> = BTreeSet::new();
    for &start in edges.keys() {
        if done.contains(&start) {
            continue;
        }
        let mut walk: Vec<(Stage, Vec<Stage>)> = vec![(start, edges.get(&start).map(|e| e.iter().copied().collect()).unwrap_or_default())];
        while let Some((node, pending)) = walk.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) => {
                    if let Some(pos) = walk.iter().position(|(s, _)| *s == next) {
                        let mut cycle: Vec<Stage> = walk[pos..].iter().map(|(s, _)| *s).collect();
                        cycle.push(next);
                        return Some(cycle);
                    }
                    if !done.contains(&next) {
                        walk.push((next, edges.get(&next).map(|e| e.iter().copied().collect()).unwrap_or_default()));
                    }
                }
                None => {
                    done.insert(node);
                    walk.pop();
                }
            }
        }
    }
    None
}
