//! Validation and graph queries over a [`PipelineSpec`]: the checks every orchestrator's
//! `upsert_pipeline` runs before anything is stored, and the ancestor/descendant walks the
//! runner needs.

use std::collections::{BTreeMap, BTreeSet};

use galley_core::stages::PipelineSpec;
use galley_core::{Error, Result};

/// Names become directory and file names under the orchestrator's root, so they are kept to a
/// portable alphabet (no separators, no `..`).
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let starts_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 128 || !ok_chars || !starts_ok {
        return Err(Error::invalid(format!(
            "{what} name `{name}` is invalid: use 1-128 characters from A-Z a-z 0-9 - _ . starting with a letter or digit"
        )));
    }
    Ok(())
}

/// Checks names, uniqueness, dependencies and acyclicity of a pipeline, and that a schedule
/// trigger has a schedule (its syntax is the platform scheduler's to check).
pub fn validate(spec: &PipelineSpec) -> Result<()> {
    check_name("pipeline", &spec.name)?;
    if spec.steps.is_empty() {
        return Err(Error::invalid(format!(
            "pipeline `{}` has no steps; declare at least one",
            spec.name
        )));
    }
    let mut seen = BTreeSet::new();
    for step in &spec.steps {
        check_name("step", &step.name).map_err(|e| e.resource(&spec.name))?;
        if !seen.insert(step.name.as_str()) {
            return Err(Error::invalid(format!(
                "pipeline `{}` declares step `{}` twice; step names must be unique",
                spec.name, step.name
            )));
        }
    }
    for step in &spec.steps {
        let mut deps = BTreeSet::new();
        for dep in &step.depends_on {
            if !seen.contains(dep.as_str()) {
                return Err(Error::invalid(format!(
                    "step `{}` of pipeline `{}` depends on `{dep}`, which is not a step of the pipeline (steps: {})",
                    step.name,
                    spec.name,
                    seen.iter().copied().collect::<Vec<_>>().join(", ")
                )));
            }
            if !deps.insert(dep.as_str()) {
                return Err(Error::invalid(format!(
                    "step `{}` of pipeline `{}` lists dependency `{dep}` twice",
                    step.name, spec.name
                )));
            }
        }
    }
    if let Some(cycle) = find_cycle(spec) {
        return Err(Error::invalid(format!(
            "pipeline `{}` has a dependency cycle: {}; remove one of these dependencies",
            spec.name,
            cycle.join(" -> ")
        )));
    }
    if spec.schedule.is_none() && spec.triggers.contains(&galley_core::stages::Trigger::Schedule) {
        return Err(Error::invalid(format!(
            "pipeline `{}` retrains on `schedule` but has no schedule; add a five-field cron expression such as `0 3 * * *`",
            spec.name
        )));
    }
    Ok(())
}

/// Depth-first search with three colours; returns the cycle as a closed path
/// (`a -> b -> a`) so the error can name every step involved.
fn find_cycle(spec: &PipelineSpec) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let deps: BTreeMap<&str, Vec<&str>> = spec
        .steps
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.depends_on.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let mut colour: BTreeMap<&str, Colour> = deps.keys().map(|k| (*k, Colour::White)).collect();

    fn visit<'a>(
        node: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        colour: &mut BTreeMap<&'a str, Colour>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        colour.insert(node, Colour::Grey);
        path.push(node);
        for &next in deps.get(node).map(Vec::as_slice).unwrap_or_default() {
            match colour.get(next).copied().unwrap_or(Colour::Black) {
                Colour::Grey => {
                    let start = path.iter().position(|n| *n == next).unwrap_or(0);
                    // `path` follows "depends on" edges; reverse it so the message reads in run order.
                    let mut cycle: Vec<String> =
                        path[start..].iter().rev().map(|s| s.to_string()).collect();
                    cycle.insert(0, next.to_string());
                    return Some(cycle);
                }
                Colour::White => {
                    if let Some(c) = visit(next, deps, colour, path) {
                        return Some(c);
                    }
                }
                Colour::Black => {}
            }
        }
        path.pop();
        colour.insert(node, Colour::Black);
        None
    }

    let nodes: Vec<&str> = deps.keys().copied().collect();
    for node in nodes {
        if colour[node] == Colour::White {
            let mut path = Vec::new();
            if let Some(c) = visit(node, &deps, &mut colour, &mut path) {
                return Some(c);
            }
        }
    }
    None
}

/// Every step that `step` transitively depends on.
pub fn ancestors(spec: &PipelineSpec, step: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![step.to_string()];
    while let Some(s) = stack.pop() {
        if let Some(spec_step) = spec.steps.iter().find(|x| x.name == s) {
            for d in &spec_step.depends_on {
                if out.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
    }
    out
}

/// Every step that transitively depends on `step`.
pub fn descendants(spec: &PipelineSpec, step: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![step.to_string()];
    while let Some(s) = stack.pop() {
        for x in &spec.steps {
            if x.depends_on.contains(&s) && out.insert(x.name.clone()) {
                stack.push(x.name.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::stages::StepSpec;

    fn spec(steps: Vec<StepSpec>) -> PipelineSpec {
        PipelineSpec {
            name: "p".into(),
            steps,
            schedule: None,
            triggers: vec![],
            monitor: None,
        }
    }

    #[test]
    fn cycle_is_named_in_run_order() {
        let s = spec(vec![
            StepSpec::new("a", &["c"]),
            StepSpec::new("b", &["a"]),
            StepSpec::new("c", &["b"]),
            StepSpec::new("d", &[]),
        ]);
        let err = validate(&s).unwrap_err().to_string();
        assert!(err.contains("dependency cycle"), "{err}");
        // Any rotation of a -> b -> c -> a is acceptable; check the edges are in run order.
        let cycle = find_cycle(&s).unwrap();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        for w in cycle.windows(2) {
            let later = s.steps.iter().find(|x| x.name == w[1]).unwrap();
            assert!(later.depends_on.contains(&w[0]), "{cycle:?}");
        }
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let err = validate(&spec(vec![StepSpec::new("a", &["a"])]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a -> a"), "{err}");
    }

    #[test]
    fn rejects_unknown_and_duplicate_names() {
        let err = validate(&spec(vec![StepSpec::new("a", &["zz"])]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`zz`"), "{err}");
        let err = validate(&spec(vec![StepSpec::new("a", &[]), StepSpec::new("a", &[])]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        assert!(validate(&spec(vec![StepSpec::new("../x", &[])])).is_err());
        assert!(validate(&spec(vec![])).is_err());
    }

    #[test]
    fn ancestors_and_descendants() {
        let s = spec(vec![
            StepSpec::new("a", &[]),
            StepSpec::new("b", &["a"]),
            StepSpec::new("c", &["b"]),
            StepSpec::new("d", &["a"]),
        ]);
        assert_eq!(ancestors(&s, "c"), ["a", "b"].map(String::from).into());
        assert_eq!(descendants(&s, "b"), ["c"].map(String::from).into());
        assert_eq!(
            descendants(&s, "a"),
            ["b", "c", "d"].map(String::from).into()
        );
    }
}
