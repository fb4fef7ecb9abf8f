//! Engine benchmarks (plain timing, no framework): plan over 100/1,000/10,000 test resources
//! with in-memory state, and apply of 100 independent resources with 20 ms latency at several
//! parallelism levels against the ideal ceil(N/parallelism) × latency.
//!
//! cargo bench -p galley-engine --features testing

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use galley_core::RetryPolicy;
use galley_core::resource::{Observed, ResourceHandler, ResourceSpec};
use galley_engine::state::spec_hash;
use galley_engine::testing::{Faults, TEST_KIND, TestHandler, independent_specs};
use galley_engine::{Engine, EngineOptions, Graph, MemoryBackend, State, StateBackend, no_events};

fn tree(n: usize) -> Vec<ResourceSpec> {
    let mut specs = independent_specs("bench", n);
    for i in 1..n {
        let parent = specs[(i - 1) / 2].address.clone();
        specs[i].depends_on.push(parent);
    }
    specs
}

fn engine(specs: Vec<ResourceSpec>, backend: MemoryBackend, dir: &std::path::Path, latency: Duration, parallelism: usize) -> Engine {
    let handler: Arc<dyn ResourceHandler> =
        Arc::new(TestHandler::new(dir, Faults { latency, ..Faults::default() }));
    let handlers = HashMap::from([(TEST_KIND.to_string(), handler)]);
    let graph = Graph::new("bench", specs).expect("valid graph");
    let opts = EngineOptions { parallelism, per_platform: parallelism, retry: RetryPolicy::none(), ..EngineOptions::default() };
    Engine::new(graph, handlers, Box::new(backend), opts)
}

fn applied_state(specs: &[ResourceSpec]) -> State {
    let mut state = State::new();
    for s in specs {
        let observed = Observed { id: s.name.clone(), attributes: s.desired.clone(), outputs: Default::default() };
        state.record(s, observed, spec_hash(s));
    }
    state
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // Reality files on tmpfs when there is one: a test resource's file write costs ~0.5 ms on a
    // shared VM's disk, which would measure the disk rather than the engine.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    println!("reality files in {}\n", dir.path().display());

    println!("{:<34} {:>10} {:>12}", "plan", "resources", "time (ms)");
    for n in [100, 1_000, 10_000] {
        let specs = tree(n);
        let t = Instant::now();
        let graph = Graph::new("bench", specs.clone()).expect("graph");
        let graph_ms = t.elapsed().as_secs_f64() * 1e3;
        drop(graph);
        println!("{:<34} {:>10} {:>12.2}", "graph build (toposort)", n, graph_ms);

        let e = engine(specs.clone(), MemoryBackend::new(), dir.path(), Duration::ZERO, 10);
        let t = Instant::now();
        let plan = rt.block_on(e.plan()).expect("plan");
        println!("{:<34} {:>10} {:>12.2}", "plan, empty state (all create)", n, t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(plan.changes.len(), n);

        let backend = MemoryBackend::new();
        backend.save(&applied_state(&specs)).expect("seed state");
        let e = engine(specs.clone(), backend, dir.path(), Duration::ZERO, 10);
        let t = Instant::now();
        let plan = rt.block_on(e.plan()).expect("plan");
        println!("{:<34} {:>10} {:>12.2}", "plan, applied state (no changes)", n, t.elapsed().as_secs_f64() * 1e3);
        assert!(!plan.has_changes());

        let mut changed = specs.clone();
        for s in changed.iter_mut().step_by(10) {
            s.desired["index"] = serde_json::json!(-1);
        }
        let backend = MemoryBackend::new();
        backend.save(&applied_state(&specs)).expect("seed state");
        let e = engine(changed, backend, dir.path(), Duration::ZERO, 10);
        let t = Instant::now();
        let plan = rt.block_on(e.plan()).expect("plan");
        println!("{:<34} {:>10} {:>12.2}", "plan, applied state (10% update)", n, t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(plan.changes.len(), n.div_ceil(10));
    }

    let n = 100;
    let latency = Duration::from_millis(20);
    println!();
    println!("{:<14} {:>10} {:>12} {:>12} {:>8}", "apply N=100", "parallel", "wall (ms)", "ideal (ms)", "ratio");
    for parallelism in [1, 10, 50, 100] {
        let reality = dir.path().join(format!("apply-{parallelism}"));
        let e = engine(independent_specs("bench", n), MemoryBackend::new(), &reality, latency, parallelism);
        let t = Instant::now();
        let report = rt.block_on(e.apply(None, no_events())).expect("apply");
        let wall = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(report.created.len(), n);
        let ideal = n.div_ceil(parallelism) as f64 * latency.as_secs_f64() * 1e3;
        println!("{:<14} {:>10} {:>12.1} {:>12.1} {:>8.2}", "", parallelism, wall, ideal, wall / ideal);
    }
    // The fixed cost per resource (journal saves, reality file writes), latency excluded.
    for parallelism in [1, 100] {
        let reality = dir.path().join(format!("overhead-{parallelism}"));
        let e = engine(independent_specs("bench", n), MemoryBackend::new(), &reality, Duration::ZERO, parallelism);
        let t = Instant::now();
        rt.block_on(e.apply(None, no_events())).expect("apply");
        let wall = t.elapsed().as_secs_f64() * 1e3;
        println!("{:<14} {:>10} {:>12.1} {:>12} {:>8}", "no latency", parallelism, wall, "-", "-");
    }
}
