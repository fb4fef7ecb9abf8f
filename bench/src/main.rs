//! Galley's side of the benchmarks in BENCHMARKS.md, one subcommand per workload. Each prints
//! one JSON object on stdout, which `bench/run` merges with the peers' figures; progress and
//! errors go to stderr.
//!
//!   galley-bench dump-wine OUT.csv                 the training data, for scikit-learn
//!   galley-bench tracking DIR [METRICS] [BATCH]    experiment tracking ingest (metrics/s)
//!   galley-bench features DIR [LOOKUPS]            online feature lookups (lookups/s, p50, p99)
//!   galley-bench plan [SIZES...]                   engine plan time (needs `--features plan`)
//!   galley-bench migrate FILES WORK MOTO BUCKET    migration's artifact copy, local ⇄ S3 on moto
//!                                                  (needs `--features migrate`)
//!
//! The peers' versions of the same workloads are in `bench/peers/*.py`: keep the two in step.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use galley_core::Result;
use serde_json::json;

mod features;
#[cfg(feature = "migrate")]
mod migrate;
#[cfg(feature = "plan")]
mod plan;
mod stats;
mod tracking;

const USAGE: &str = "usage: galley-bench dump-wine OUT.csv
       galley-bench tracking DIR [METRICS=100000] [BATCH=1000]
       galley-bench features DIR [LOOKUPS=5000]
       galley-bench plan [SIZES...=1000 10000]
       galley-bench migrate FILES WORK MOTO_URL BUCKET";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("dump-wine") if args.len() == 2 => dump_wine(Path::new(&args[1])),
        Some("tracking") if (2..=4).contains(&args.len()) => number_args(&args[2..], &[100_000, 1_000])
            .and_then(|n| runtime()?.block_on(tracking::run(&PathBuf::from(&args[1]), n[0], n[1]))),
        Some("features") if (2..=3).contains(&args.len()) => number_args(&args[2..], &[5_000])
            .and_then(|n| runtime()?.block_on(features::run(&PathBuf::from(&args[1]), n[0]))),
        Some("plan") => number_args(&args[1..], &[]).and_then(|sizes| {
            let sizes = if sizes.is_empty() { vec![1_000, 10_000] } else { sizes };
            plan(&sizes)
        }),
        Some("migrate") if args.len() == 5 => migrate(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("galley-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "migrate")]
fn migrate(a: &[String]) -> Result<serde_json::Value> {
    runtime()?.block_on(migrate::run(Path::new(&a[0]), Path::new(&a[1]), &a[2], &a[3]))
}

#[cfg(not(feature = "migrate"))]
fn migrate(_: &[String]) -> Result<serde_json::Value> {
    Err(galley_core::Error::unsupported("galley-bench was built without the migrate benchmark: build it with `--features migrate`"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().map_err(galley_core::Error::from)
}

/// Positional counts, with `defaults` for the ones left out.
fn number_args(args: &[String], defaults: &[usize]) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let n: usize = a.replace('_', "").parse().map_err(|_| {
            galley_core::Error::invalid(format!("`{a}` is not a positive count\n{USAGE}"))
        })?;
        if n == 0 {
            return Err(galley_core::Error::invalid(format!("argument {} must be at least 1", i + 1)));
        }
        out.push(n);
    }
    out.extend(defaults.iter().skip(out.len()));
    Ok(out)
}

/// Writes the wine data the quickstart trains on, so scikit-learn trains on the same rows.
fn dump_wine(out: &Path) -> Result<serde_json::Value> {
    let data = galley_ml::load_source("builtin:winequality", Path::new("."))?;
    let csv = galley_ml::dataset::canonical_csv(&data.table);
    std::fs::write(out, &csv).map_err(|e| galley_core::Error::from(e).resource(out.display().to_string()))?;
    Ok(json!({ "rows": data.table.len(), "columns": data.table.columns.len(), "path": out, "sha256": data.sha256 }))
}

#[cfg(feature = "plan")]
fn plan(sizes: &[usize]) -> Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let results = plan::run(sizes)?;
    Ok(json!({ "plans": results, "seconds": started.elapsed().as_secs_f64() }))
}

#[cfg(not(feature = "plan"))]
fn plan(_sizes: &[usize]) -> Result<serde_json::Value> {
    Err(galley_core::Error::unsupported(
        "this galley-bench was built without the plan benchmark: build it with \
         `cargo build -p galley-bench --features plan`",
    ))
}
