//! Plan time over N test resources, the workload of `crates/engine/benches/engine.rs`: a
//! binary tree of dependencies, planned against empty state (all create) and against state
//! that already holds every resource (no changes). Median of a few runs after one warm-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use galley_core::resource::{Observed, ResourceHandler, ResourceSpec};
use galley_core::{Error, Result, RetryPolicy};
use galley_engine::state::spec_hash;
use galley_engine::testing::{Faults, TEST_KIND, TestHandler, independent_specs};
use galley_engine::{Engine, EngineOptions, Graph, MemoryBackend, State, StateBackend};
use serde_json::{Value, json};

const REPEATS: usize = 3;

fn tree(n: usize) -> Vec<ResourceSpec> {
    let mut specs = independent_specs("bench", n);
    for i in 1..n {
        let parent = specs[(i - 1) / 2].address.clone();
        specs[i].depends_on.push(parent);
    }
    specs
}

fn engine(specs: Vec<ResourceSpec>, backend: MemoryBackend, dir: &std::path::Path) -> Result<Engine> {
    let handler: Arc<dyn ResourceHandler> = Arc::new(TestHandler::new(dir, Faults { latency: Duration::ZERO, ..Faults::default() }));
    let handlers = HashMap::from([(TEST_KIND.to_string(), handler)]);
    let graph = Graph::new("bench", specs)?;
    let opts = EngineOptions { parallelism: 10, per_platform: 10, retry: RetryPolicy::none(), ..EngineOptions::default() };
    Ok(Engine::new(graph, handlers, Box::new(backend), opts))
}

fn applied_state(specs: &[ResourceSpec]) -> State {
    let mut state = State::new();
    for s in specs {
        let observed = Observed { id: s.name.clone(), attributes: s.desired.clone(), outputs: Default::default() };
        state.record(s, observed, spec_hash(s));
    }
    state
}

/// Milliseconds of one plan (graph construction included, as `galley plan` pays for it).
fn time_plan(rt: &tokio::runtime::Runtime, specs: &[ResourceSpec], seeded: bool, dir: &std::path::Path) -> Result<f64> {
    let backend = MemoryBackend::new();
    if seeded {
        backend.save(&applied_state(specs))?;
    }
    let t = Instant::now();
    let e = engine(specs.to_vec(), backend, dir)?;
    let plan = rt.block_on(e.plan())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let expected = if seeded { 0 } else { specs.len() };
    if plan.changes.len() != expected {
        return Err(Error::internal(format!("plan of {} resources has {} changes, expected {expected}", specs.len(), plan.changes.len())));
    }
    Ok(ms)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(sizes: &[usize]) -> Result<Vec<Value>> {
    let rt = tokio::runtime::Runtime::new().map_err(Error::from)?;
    let dir = tempfile::tempdir().map_err(Error::from)?;
    let mut out = Vec::new();
    for &n in sizes {
        let specs = tree(n);
        let mut row = json!({ "resources": n });
        for (label, seeded) in [("create_ms", false), ("no_change_ms", true)] {
            time_plan(&rt, &specs, seeded, dir.path())?;
            let runs = (0..REPEATS).map(|_| time_plan(&rt, &specs, seeded, dir.path())).collect::<Result<Vec<_>>>()?;
            row[label] = json!(median(runs));
        }
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_every_size_asked() {
        let rows = run(&[10, 30]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["resources"], 30);
        assert!(rows[0]["create_ms"].as_f64().unwrap() >= 0.0);
    }
}
