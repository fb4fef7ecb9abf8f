//! Plan time over N test resources, the workload of `crates/engine/benches/engine.rs`: a
//! binary tree of dependencies, planned against empty state (all create) and against state
//! that already holds every resource (no changes). Median of a few runs after one warm-up.

use std::time::{Duration, Instant};

use galley_core::resource::ResourceSpec;
use galley_core::{Error, Result};
use galley_engine::testing::{applied_state, bench_engine, bench_tree};
use galley_engine::{MemoryBackend, StateBackend};
use serde_json::{Value, json};

const REPEATS: usize = 3;




/// Milliseconds of one plan (graph construction included, as `galley plan` pays for it).
fn time_plan(rt: &tokio::runtime::Runtime, specs: &[ResourceSpec], seeded: bool, dir: &std::path::Path) -> Result<f64> {
    let backend = MemoryBackend::new();
    if seeded {
        backend.save(&applied_state(specs))?;
    }
    let t = Instant::now();
    let e = bench_engine(specs.to_vec(), backend, dir, Duration::ZERO, 10)?;
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
        let specs = bench_tree(n);
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
