//! The one in-process DAG runner. Every orchestrator that runs a pipeline's steps in Galley's
//! process (local's, and aws's with `galley run --local-steps`) walks the DAG with this code and
//! keeps records, logs and the step cache where it likes through a [`RunJournal`].

pub mod dag;
pub mod runner;
pub mod stored;

pub use runner::{CacheEntry, RunJournal, RunnerOptions, execute, execute_step, new_run};
