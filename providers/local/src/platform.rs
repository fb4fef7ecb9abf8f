//! What the `local` platform is, as validation and the testkit see it: its id, the features it
//! declares (each proven by a behaviour case in `crates/testkit/tests/local.rs`), its settings
//! and the rules its files impose on names.

use std::sync::Arc;

use galley_blueprint::{Blueprint, Finding, PlatformRules};
use galley_core::capability::{Capabilities, Feature};
use galley_core::{PlatformId, Stage};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const LOCAL: PlatformId = galley_blueprint::DEFAULT_PLATFORM;

/// The features the local stages implement. Removing one makes validate refuse it; adding one
/// without a behaviour case that needs it fails `local_proves_every_declared_capability`.
pub fn capabilities() -> Capabilities {
    use Feature::*;
    Capabilities::new(
        LOCAL,
        &[
            OnlineStore, PointInTimeFetch, RunSearch, Schedules, NewDataTrigger, DriftTrigger, StepCaching, StepRetries,
            ModelAliases, ApprovalStatus, TrafficSplit, BearerAuth, OnnxModels, DriftPsi, DriftKs, PredictionDrift,
        ],
    )
}

/// `platforms.local`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// Where the local platform keeps its files, relative to the blueprint (default `.galley/local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

pub struct LocalRules;

/// The local platform's rules, for the registry.
pub fn rules() -> Arc<dyn PlatformRules> {
    Arc::new(LocalRules)
}

impl PlatformRules for LocalRules {
    fn id(&self) -> PlatformId {
        LOCAL
    }

    fn summary(&self) -> &'static str {
        "embedded: a content-addressed directory, SQLite, an in-process DAG runner, an HTTP model server, Prometheus text"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    fn cargo_feature(&self) -> &'static str {
        "local"
    }

    fn settings_schema(&self) -> Option<serde_json::Value> {
        Some(schemars::schema_for!(LocalSettings).to_value())
    }

    /// The bucket and the endpoint become directory names under the platform's root.
    fn check(&self, bp: &Blueprint, stages: &[Stage]) -> Vec<Finding> {
        let mut out = Vec::new();
        if stages.contains(&Stage::Artifacts)
            && let Some(a) = &bp.stages.artifacts
            && let Err(why) = directory_name(&a.bucket)
        {
            out.push(
                Finding::new(&["stages", "artifacts", "bucket"], format!("invalid bucket name `{}` on the local platform: {why}", a.bucket))
                    .hint("the local bucket is a directory: use letters, digits, `-`, `_` and `.`"),
            );
        }
        if stages.contains(&Stage::Serving)
            && let Some(s) = &bp.stages.serving
            && !galley_blueprint::semantic::is_reference(&s.endpoint)
            && let Err(why) = endpoint_name(&s.endpoint)
        {
            out.push(Finding::new(&["stages", "serving", "endpoint"], format!("invalid endpoint name `{}`: {why}", s.endpoint)));
        }
        out
    }
}

/// A single path segment that cannot escape or hide: 1-63 characters of `A-Za-z0-9-_.`, not
/// starting with `.`.
pub fn directory_name(name: &str) -> Result<(), String> {
    if galley_blueprint::semantic::is_reference(name) {
        return Ok(());
    }
    let ok = (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok { Ok(()) } else { Err("use 1-63 letters, digits, `-`, `_` and `.`, not starting with `.`".into()) }
}

/// What the local server accepts as an endpoint name (also its directory's name).
pub fn endpoint_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-');
    if ok { Ok(()) } else { Err("use 1-63 letters, digits and `-`, not starting with `-`".into()) }
}
