//! The resource graph: every resource the blueprint's stages expand to, with the edges that
//! order them (explicit `depends_on`, and `${stages.X.outputs.Y}` references to another
//! stage's outputs), checked for cycles and unknown targets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use galley_blueprint::Blueprint;
use galley_core::resource::{Address, ResourceSpec};
use galley_core::{Error, Result, Stage};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

use crate::provider::Providers;
use crate::secrets;

/// Outputs visible to references, by stage: the union of the outputs of the stage's resources.
pub type StageOutputs = BTreeMap<Stage, BTreeMap<String, Json>>;

/// A validated, acyclic resource graph.
#[derive(Debug, Clone)]
pub struct Graph {
    blueprint: String,
    specs: Vec<ResourceSpec>,
    index: HashMap<Address, usize>,
    /// `deps[i]`: indices resource `i` waits for (explicit and through stage references).
    deps: Vec<BTreeSet<usize>>,
    /// Indices in a dependency-respecting order.
    order: Vec<usize>,
}

/// A `${stages.X.outputs.Y}` reference found in a desired document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StageRef {
    pub stage: Stage,
    pub output: String,
}

const REF_OPEN: &str = "${stages.";

/// Every stage reference in `value`, in document order (duplicates kept).
pub fn find_refs(value: &Json) -> Result<Vec<StageRef>> {
    let mut out = Vec::new();
    visit_strings(value, &mut |s| {
        for (_, _, r) in parse_refs(s)? {
            out.push(r);
        }
        Ok(())
    })?;
    Ok(out)
}

fn visit_strings(value: &Json, f: &mut impl FnMut(&str) -> Result<()>) -> Result<()> {
    match value {
        Json::String(s) => f(s),
        Json::Array(items) => items.iter().try_for_each(|v| visit_strings(v, f)),
        Json::Object(map) => map.values().try_for_each(|v| visit_strings(v, f)),
        _ => Ok(()),
    }
}

/// `(start, end, ref)` for each reference inside `s`.
fn parse_refs(s: &str) -> Result<Vec<(usize, usize, StageRef)>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = s[from..].find(REF_OPEN) {
        let start = from + pos;
        let body_start = start + REF_OPEN.len();
        let Some(close) = s[body_start..].find('}') else {
            return Err(Error::invalid(format!("unterminated reference in `{s}`: expected `${{stages.STAGE.outputs.NAME}}`")));
        };
        let body = &s[body_start..body_start + close];
        let mut parts = body.splitn(3, '.');
        let (stage, kw, output) = (parts.next().unwrap_or(""), parts.next(), parts.next());
        let (Some("outputs"), Some(output)) = (kw, output) else {
            return Err(Error::invalid(format!(
                "malformed reference `${{stages.{body}}}`: expected `${{stages.STAGE.outputs.NAME}}`"
            )));
        };
        let stage: Stage = stage.parse().map_err(|e: String| Error::invalid(format!("in reference `${{stages.{body}}}`: {e}")))?;
        let end = body_start + close + 1;
        out.push((start, end, StageRef { stage, output: output.to_string() }));
        from = end;
    }
    Ok(out)
}

/// Replaces every `${stages.X.outputs.Y}` in `value` with the output's value. A string that is
/// exactly one reference takes the output's JSON value (keeping its type); a reference inside a
/// longer string is substituted as text. A reference to an output that does not exist is an
/// error naming it.
pub fn resolve_refs(value: &mut Json, outputs: &StageOutputs) -> Result<()> {
    match value {
        Json::String(s) => {
            let refs = parse_refs(s)?;
            if refs.is_empty() {
                return Ok(());
            }
            let lookup = |r: &StageRef| {
                outputs.get(&r.stage).and_then(|o| o.get(&r.output)).ok_or_else(|| {
                    Error::not_found(format!(
                        "reference `${{stages.{}.outputs.{}}}` cannot be resolved: stage `{}` has no output `{}` in state (is that stage applied?)",
                        r.stage, r.output, r.stage, r.output
                    ))
                })
            };
            if refs.len() == 1 && refs[0].0 == 0 && refs[0].1 == s.len() {
                *value = lookup(&refs[0].2)?.clone();
                return Ok(());
            }
            let mut out = String::with_capacity(s.len());
            let mut last = 0;
            for (start, end, r) in &refs {
                out.push_str(&s[last..*start]);
                match lookup(r)? {
                    Json::String(v) => out.push_str(v),
                    other => out.push_str(&other.to_string()),
                }
                last = *end;
            }
            out.push_str(&s[last..]);
            *s = out;
            Ok(())
        }
        Json::Array(items) => items.iter_mut().try_for_each(|v| resolve_refs(v, outputs)),
        Json::Object(map) => map.values_mut().try_for_each(|v| resolve_refs(v, outputs)),
        _ => Ok(()),
    }
}

impl Graph {
    /// Validates `specs` into a graph: unique addresses, known dependencies, no secret-looking
    /// desired attributes, references to declared stages only, and no cycles.
    pub fn new(blueprint: impl Into<String>, specs: Vec<ResourceSpec>) -> Result<Self> {
        let mut index = HashMap::with_capacity(specs.len());
        let mut by_stage: BTreeMap<Stage, Vec<usize>> = BTreeMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if index.insert(spec.address.clone(), i).is_some() {
                return Err(Error::invalid(format!("two resources share the address `{}`", spec.address)));
            }
            by_stage.entry(spec.stage).or_default().push(i);
            let secret = secrets::secret_paths(&spec.desired);
            if !secret.is_empty() {
                return Err(Error::invalid(format!(
                    "resource `{}` has attributes that look like secrets ({}); secrets never go into state or plans: pass a reference to a secret store (e.g. `..._secret_arn`, `..._env`) instead",
                    spec.address,
                    secret.join(", ")
                ))
                .resource(spec.address.clone()));
            }
        }
        let mut deps = vec![BTreeSet::new(); specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            for d in &spec.depends_on {
                let j = *index.get(d).ok_or_else(|| {
                    Error::invalid(format!("resource `{}` depends on `{d}`, which is not in the graph", spec.address))
                        .resource(spec.address.clone())
                })?;
                deps[i].insert(j);
            }
            for r in find_refs(&spec.desired).map_err(|e| e.resource(spec.address.clone()))? {
                let targets = by_stage.get(&r.stage).ok_or_else(|| {
                    Error::invalid(format!(
                        "resource `{}` references `${{stages.{}.outputs.{}}}` but no resource belongs to stage `{}`; declare that stage in the blueprint",
                        spec.address, r.stage, r.output, r.stage
                    ))
                })?;
                deps[i].extend(targets.iter().copied().filter(|&j| j != i));
            }
        }
        let order = topo_order(&specs, &deps)?;
        Ok(Graph { blueprint: blueprint.into(), specs, index, deps, order })
    }

    /// Expands every declared stage of `bp` with its platform's provider (each provider once,
    /// with all the stages assigned to it).
    pub fn from_blueprint(bp: &Blueprint, providers: &Providers) -> Result<Self> {
        let mut by_platform: BTreeMap<_, Vec<Stage>> = BTreeMap::new();
        for stage in bp.declared_stages() {
            by_platform.entry(bp.stage_platform(stage)).or_default().push(stage);
        }
        let mut specs = Vec::new();
        for (platform, stages) in by_platform {
            let provider = providers.get(platform)?;
            let expanded = provider.expand(bp, &stages).map_err(|e| e.platform(platform))?;
            specs.extend(expanded);
        }
        // Stage order: a stage's resources wait for the resources of the declared stage before
        // it (the lifecycle order), so e.g. serving never starts before the registry exists.
        let stage_order = bp.declared_stages();
        let mut last_of: BTreeMap<Stage, Vec<Address>> = BTreeMap::new();
        for s in &specs {
            last_of.entry(s.stage).or_default().push(s.address.clone());
        }
        for spec in &mut specs {
            let pos = stage_order.iter().position(|s| *s == spec.stage);
            if let Some(prev) = pos.and_then(|p| p.checked_sub(1)).map(|p| stage_order[p]) {
                for a in last_of.get(&prev).into_iter().flatten() {
                    if !spec.depends_on.contains(a) {
                        spec.depends_on.push(a.clone());
                    }
                }
            }
        }
        Graph::new(bp.name.clone(), specs)
    }

    pub fn blueprint(&self) -> &str {
        &self.blueprint
    }
    pub fn len(&self) -> usize {
        self.specs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
    pub fn get(&self, address: &str) -> Option<&ResourceSpec> {
        self.index.get(address).map(|&i| &self.specs[i])
    }
    pub fn contains(&self, address: &str) -> bool {
        self.index.contains_key(address)
    }
    /// Specs in a dependency-respecting order.
    pub fn ordered(&self) -> impl Iterator<Item = &ResourceSpec> {
        self.order.iter().map(|&i| &self.specs[i])
    }
    /// Every address `address` waits for (explicit and reference edges), sorted.
    pub fn dependencies(&self, address: &str) -> Vec<Address> {
        self.index
            .get(address)
            .map(|&i| self.deps[i].iter().map(|&j| self.specs[j].address.clone()).collect())
            .unwrap_or_default()
    }
}

fn topo_order(specs: &[ResourceSpec], deps: &[BTreeSet<usize>]) -> Result<Vec<usize>> {
    let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(specs.len(), specs.len());
    let nodes: Vec<NodeIndex> = (0..specs.len()).map(|i| g.add_node(i)).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &j in ds {
            g.add_edge(nodes[j], nodes[i], ());
        }
    }
    match petgraph::algo::toposort(&g, None) {
        Ok(order) => Ok(order.into_iter().map(|n| g[n]).collect()),
        Err(cycle) => {
            // Name the whole cycle, not just the node toposort tripped on.
            let sccs = petgraph::algo::tarjan_scc(&g);
            let start = cycle.node_id();
            let members = sccs
                .into_iter()
                .find(|c| c.contains(&start) && (c.len() > 1 || g.contains_edge(start, start)))
                .unwrap_or_else(|| vec![start]);
            let mut names: Vec<&str> = members.iter().map(|n| specs[g[*n]].address.as_str()).collect();
            names.sort_unstable();
            Err(Error::invalid(format!(
                "dependency cycle between resources: {} (each waits for another); break one `depends_on` or stage reference",
                names.join(" → ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::PlatformId;
    use serde_json::json;

    fn spec(address: &str, stage: Stage, desired: Json, deps: &[&str]) -> ResourceSpec {
        ResourceSpec {
            address: address.into(),
            kind: "test".into(),
            platform: PlatformId::from_static("local"),
            stage,
            name: address.replace('.', "-"),
            desired,
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            protect: false,
        }
    }

    #[test]
    fn orders_by_deps_and_refs() {
        let g = Graph::new(
            "bp",
            vec![
                spec("serving.ep", Stage::Serving, json!({"store": "${stages.artifacts.outputs.url}"}), &[]),
                spec("artifacts.store", Stage::Artifacts, json!({}), &[]),
                spec("serving.cfg", Stage::Serving, json!({}), &["serving.ep"]),
            ],
        )
        .unwrap();
        let order: Vec<_> = g.ordered().map(|s| s.address.as_str()).collect();
        let pos = |a| order.iter().position(|x| *x == a).unwrap();
        assert!(pos("artifacts.store") < pos("serving.ep"));
        assert!(pos("serving.ep") < pos("serving.cfg"));
        assert_eq!(g.dependencies("serving.ep"), vec!["artifacts.store".to_string()]);
    }

    #[test]
    fn cycle_is_named() {
        let err = Graph::new(
            "bp",
            vec![
                spec("a.x", Stage::Artifacts, json!({}), &["a.y"]),
                spec("a.y", Stage::Artifacts, json!({}), &["a.x"]),
                spec("a.z", Stage::Artifacts, json!({}), &[]),
            ],
        )
        .unwrap_err();
        assert!(err.message().contains("a.x → a.y"), "{err}");
        assert!(!err.message().contains("a.z"));
    }

    #[test]
    fn unknown_dep_and_secret_refused() {
        let e = Graph::new("bp", vec![spec("a.x", Stage::Artifacts, json!({}), &["nope"])]).unwrap_err();
        assert!(e.message().contains("nope"));
        let e = Graph::new("bp", vec![spec("a.x", Stage::Artifacts, json!({"db": {"password": "p"}}), &[])]).unwrap_err();
        assert!(e.message().contains("db.password"), "{e}");
    }

    #[test]
    fn resolves_whole_and_embedded_refs() {
        let mut outputs = StageOutputs::new();
        outputs.entry(Stage::Artifacts).or_default().insert("url".into(), json!("s3://b"));
        outputs.entry(Stage::Artifacts).or_default().insert("port".into(), json!(8080));
        let mut v = json!({"a": "${stages.artifacts.outputs.port}", "b": ["at ${stages.artifacts.outputs.url}/x"]});
        resolve_refs(&mut v, &outputs).unwrap();
        assert_eq!(v, json!({"a": 8080, "b": ["at s3://b/x"]}));
        let mut missing = json!("${stages.serving.outputs.url}");
        let e = resolve_refs(&mut missing, &outputs).unwrap_err();
        assert!(e.message().contains("stages.serving.outputs.url"));
    }
}
