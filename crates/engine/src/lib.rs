//! Plan, apply, destroy and drift over a locked state; the lifecycle runner.
//!
//! - [`graph`]: the resource DAG a blueprint expands to (dependencies, stage references).
//! - [`state`]: the versioned state file, its lock, and the journal of in-flight operations.
//! - [`plan`]: the diff of desired against recorded (or refreshed) reality, savable to a file.
//! - [`engine`]: apply/destroy/drift/refresh/import over all of the above.

pub mod engine;
pub mod graph;
pub mod plan;
pub mod provider;
pub mod secrets;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;

mod diff;
mod exec;

pub use engine::{ApplyEvent, ApplyReport, Drift, DriftKind, Engine, EngineOptions, EventSink, no_events};
pub use graph::{Graph, StageOutputs, find_refs, resolve_refs};
pub use plan::{AttrDiff, LifecycleAction, Plan, ResourceChange};
pub use provider::{ContainerCommand, Provider, ProviderContext, Providers};
pub use state::{
    LocalBackend, LockInfo, MemoryBackend, PendingOp, PendingEntry, ResourceState, State, StateBackend,
    force_unlock,
};
