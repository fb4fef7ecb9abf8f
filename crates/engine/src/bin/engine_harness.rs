//! Drives the engine over test resources from the command line, so reliability tests can kill
//! it at any point (see `galley_engine::testing`) and check reality afterwards. Test-only
//! (`required-features = ["testing"]`); not part of the shipped CLI.
//!
//! engine-harness <apply|destroy|plan> --reality DIR --state FILE [--resources N]
//!     [--parallelism P] [--latency-ms MS] [--lock-timeout-ms MS] [--retryable FRACTION]
//!     [--fail ADDRESS]... [--retry-attempts N]
//!
//! Prints the report (apply/destroy) or the plan as JSON on stdout. Exit codes: 0 success,
//! 2 applied with failures, 1 error (message on stderr).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use galley_core::RetryPolicy;
use galley_core::resource::ResourceHandler;
use galley_engine::testing::{Faults, TEST_KIND, TestHandler, crash_sink, tree_specs};
use galley_engine::{Engine, EngineOptions, Graph, LocalBackend, no_events};

struct Args {
    op: String,
    reality: String,
    state: String,
    resources: usize,
    parallelism: usize,
    latency_ms: u64,
    lock_timeout_ms: Option<u64>,
    retryable: f64,
    fail: Vec<String>,
    retry_attempts: u32,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let op = it.next().ok_or("missing operation: apply, destroy or plan")?;
    let mut a = Args {
        op,
        reality: String::new(),
        state: String::new(),
        resources: 32,
        parallelism: 4,
        latency_ms: 0,
        lock_timeout_ms: None,
        retryable: 0.0,
        fail: Vec::new(),
        retry_attempts: 10,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--reality" => a.reality = value()?,
            "--state" => a.state = value()?,
            "--resources" => a.resources = num(value()?)? as usize,
            "--parallelism" => a.parallelism = num(value()?)? as usize,
            "--latency-ms" => a.latency_ms = num(value()?)?,
            "--lock-timeout-ms" => a.lock_timeout_ms = Some(num(value()?)?),
            "--retryable" => a.retryable = value()?.parse().map_err(|e| format!("--retryable: {e}"))?,
            "--fail" => a.fail.push(value()?),
            "--retry-attempts" => a.retry_attempts = num(value()?)? as u32,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.reality.is_empty() || a.state.is_empty() {
        return Err("--reality and --state are required".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("engine-harness: {e}");
            std::process::exit(1);
        }
    };
    match run(args).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("engine-harness: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> galley_core::Result<i32> {
    let faults = Faults {
        latency: Duration::from_millis(args.latency_ms),
        retryable_fraction: args.retryable,
        permanent: args.fail.iter().cloned().collect(),
        ..Faults::default()
    };
    let handler: Arc<dyn ResourceHandler> = Arc::new(TestHandler::new(&args.reality, faults));
    let handlers = HashMap::from([(TEST_KIND.to_string(), handler)]);
    let graph = Graph::new("harness", tree_specs("harness", args.resources))?;
    let opts = EngineOptions {
        parallelism: args.parallelism,
        per_platform: args.parallelism,
        lock_timeout: args.lock_timeout_ms.map(Duration::from_millis),
        retry: RetryPolicy { max_attempts: args.retry_attempts, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(20) },
        ..EngineOptions::default()
    };
    let engine = Engine::new(graph, handlers, Box::new(LocalBackend::new(&args.state)), opts);
    let events = crash_sink(no_events());
    let report = match args.op.as_str() {
        "apply" => engine.apply(None, events).await?,
        "destroy" => engine.destroy(events).await?,
        "plan" => {
            println!("{}", engine.plan().await?.to_json());
            return Ok(0);
        }
        other => return Err(galley_core::Error::invalid(format!("unknown operation `{other}`"))),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.failed.is_empty() { 0 } else { 2 })
}
