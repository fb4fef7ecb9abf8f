//! `galley migrate`: moves a whole MLOps stack from one platform to another through the stage
//! traits only, so it works between any two platforms Galley has, and proves the copy.
//!
//! The source is what the blueprint's state records, opened as a [`Side`]; the target is the same
//! blueprint with its platform switched (or another blueprint), provisioned by the ordinary
//! engine and then filled here, in dependency order: artifacts (streamed, checksummed, in
//! parallel with a bound), experiment runs (every metric point with its step and timestamp),
//! model versions in order (lineage and promotion translated), the endpoint (the same versions
//! and traffic split) and the monitor's baseline (the same rows). [`verify`] is the proof.
//!
//! Resumable: every unit copied is appended to a [`Journal`] (fsync'd) before the next starts,
//! and each unit is also found again by a natural key on the target (an object's SHA-256, a run's
//! [`SOURCE_RUN_TAG`], a version's model hash), so a migration killed at any point and run again
//! finishes with nothing duplicated and nothing missing. The source is only ever read.

mod artifacts;
mod journal;
mod plan;
mod records;
mod serving;
mod verify;

use std::sync::Arc;

use galley_blueprint::Blueprint;
use galley_core::{Result, StageSet};

pub use artifacts::{Copied, UriMap, copy_objects};
pub use journal::{Journal, Kind};
pub use plan::{MigrationPlan, Target, plan};
pub use verify::{Check, Proof, verify};

/// The tag every migrated run carries: the source platform and run id, so lineage survives and
/// a resumed migration finds the run it already made instead of making another.
pub const SOURCE_RUN_TAG: &str = "galley.migrated_from";
/// The source run's start and end times, which the target's tracker cannot take as given.
pub const SOURCE_START_TAG: &str = "galley.source_start_ms";
pub const SOURCE_END_TAG: &str = "galley.source_end_ms";

/// One end of a migration: a blueprint and its stack's stages, opened.
#[derive(Clone)]
pub struct Side {
    /// What reports call it: the platform, or the blueprint file.
    pub label: String,
    pub bp: Arc<Blueprint>,
    pub stages: StageSet,
}

impl Side {
    fn experiment(&self) -> Option<&str> {
        self.bp.stages.experiments.as_ref().map(|e| e.name.as_str())
    }
    fn model(&self) -> Option<&str> {
        self.bp.stages.registry.as_ref().map(|r| r.model.as_str())
    }
    fn endpoint(&self) -> Option<&str> {
        self.bp.stages.serving.as_ref().map(|s| s.endpoint.as_str())
    }
    fn monitor(&self) -> Option<String> {
        self.bp.stages.monitoring.as_ref().map(|_| galley_lifecycle::monitor_name(&self.bp))
    }
}

/// How a migration runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Objects copied at once.
    pub parallelism: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { parallelism: 8 }
    }
}

/// What one `apply` did (a resumed one counts only what it did itself).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Applied {
    pub objects_copied: u64,
    pub objects_present: u64,
    pub bytes_copied: u64,
    pub runs_created: u64,
    pub metric_points_logged: u64,
    pub versions_registered: u64,
    pub endpoint_deployed: bool,
    pub baseline_rows: Option<u64>,
    /// Units the journal already had from an earlier, interrupted apply.
    pub resumed: u64,
}

/// Fills `target` from `source`, recording each unit in `journal`; `say` hears progress lines.
pub async fn apply(source: &Side, target: &Side, journal: &mut Journal, opts: &Options, say: &(dyn Fn(&str) + Sync)) -> Result<Applied> {
    let mut applied = Applied { resumed: journal.len() as u64, ..Applied::default() };
    let objects = source.stages.artifacts.list("").await?;
    let uris = artifacts::copy(source, target, &objects, journal, opts.parallelism, &mut applied, say).await?;
    let runs = records::copy_runs(source, target, &uris, journal, &mut applied, say).await?;
    let versions = records::copy_versions(source, target, &uris, &runs, journal, &mut applied, say).await?;
    applied.endpoint_deployed = serving::redeploy(source, target, &versions, journal, say).await?;
    applied.baseline_rows = serving::rebaseline(source, target, &versions, &uris, journal, say).await?;
    Ok(applied)
}
