//! Engine benchmarks (plain timing, no framework): plan over 100/1,000/10,000 test resources
//! with in-memory state, and apply of 100 independent resources with 20 ms latency at several
//! parallelism levels against the ideal ceil(N/parallelism) × latency.
//!
//! cargo bench -p galley-engine --features testing

use std::time::{Duration, Instant};

use galley_engine::testing::{applied_state, bench_engine, bench_tree, independent_specs};
use galley_engine::{Graph, MemoryBackend, StateBackend, no_events};




fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // Reality files on tmpfs when there is one: a test resource's file write costs ~0.5 ms on a
    // shared VM's disk, which would measure the disk rather than the engine.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    println!("reality files in {}\n", dir.path().display());

    println!("{:<34} {:>10} {:>12}", "plan", "resources", "time (ms)");
    for n in [100, 1_000, 10_000] {
        let specs = bench_tree(n);
        let t = Instant::now();
        let graph = Graph::new("bench", specs.clone()).expect("graph");
        let graph_ms = t.elapsed().as_secs_f64() * 1e3;
        drop(graph);
        println!("{:<34} {:>10} {:>12.2}", "graph build (toposort)", n, graph_ms);

        let e = bench_engine(specs.clone(), MemoryBackend::new(), dir.path(), Duration::ZERO, 10).expect("valid graph");
        let t = Instant::now();
        let plan = rt.block_on(e.plan()).expect("plan");
        println!("{:<34} {:>10} {:>12.2}", "plan, empty state (all create)", n, t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(plan.changes.len(), n);

        let backend = MemoryBackend::new();
        backend.save(&applied_state(&specs)).expect("seed state");
        let e = bench_engine(specs.clone(), backend, dir.path(), Duration::ZERO, 10).expect("valid graph");
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
        let e = bench_engine(changed, backend, dir.path(), Duration::ZERO, 10).expect("valid graph");
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
        let e = bench_engine(independent_specs("bench", n), MemoryBackend::new(), &reality, latency, parallelism).expect("valid graph");
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
        let e = bench_engine(independent_specs("bench", n), MemoryBackend::new(), &reality, Duration::ZERO, parallelism).expect("valid graph");
        let t = Instant::now();
        rt.block_on(e.apply(None, no_events())).expect("apply");
        let wall = t.elapsed().as_secs_f64() * 1e3;
        println!("{:<14} {:>10} {:>12.1} {:>12} {:>8}", "no latency", parallelism, wall, "-", "-");
    }
}
