//! The seven stage traits. Each is object safe (`Arc<dyn Trait>`), async, and speaks only the
//! provider-neutral types of this crate, so code written against them runs on every platform.

mod artifacts;
mod experiments;
mod features;
mod monitor;
mod orchestrator;
mod registry;
mod serving;

use std::sync::Arc;

pub use artifacts::*;
pub use experiments::*;
pub use features::*;
pub use monitor::*;
pub use orchestrator::*;
pub use registry::*;
pub use serving::*;

use crate::{Capabilities, PlatformId};

/// Milliseconds since the Unix epoch, the one timestamp unit every stage uses.
pub type TimestampMs = i64;

pub fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One platform's stages, opened for runtime calls. A blueprint may mix platforms per stage,
/// so each slot is an independent trait object.
#[derive(Clone)]
pub struct StageSet {
    pub artifacts: Arc<dyn ArtifactStore>,
    pub features: Arc<dyn FeatureStore>,
    pub experiments: Arc<dyn ExperimentTracker>,
    pub orchestrator: Arc<dyn Orchestrator>,
    pub registry: Arc<dyn ModelRegistry>,
    pub serving: Arc<dyn Serving>,
    pub monitor: Arc<dyn Monitor>,
}

/// Implemented by every stage object so callers (and the testkit) can ask what it supports:
/// its platform's own declaration, which the testkit holds it to.
pub trait Described {
    fn capabilities(&self) -> Capabilities;
    fn platform(&self) -> PlatformId {
        self.capabilities().platform
    }
}
