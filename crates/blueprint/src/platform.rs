//! What a blueprint may say on each platform, as the platform itself declares it.
//!
//! A platform is one folder under `providers/`; it exports a [`PlatformRules`] that compiles
//! without its cloud SDK, so `galley validate` checks portability, naming rules and settings for
//! every platform Galley knows, built into this binary or not. The validator only ever asks a
//! [`PlatformRegistry`]: nothing here knows a platform by name.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use galley_core::capability::{Capabilities, Feature};
use galley_core::{PlatformId, Stage};

use crate::model::Blueprint;

/// A state backend a platform offers (`backend: { type: s3, … }`).
#[derive(Debug, Clone)]
pub struct BackendRule {
    /// The `type` a blueprint names, e.g. `s3`.
    pub kind: &'static str,
    /// JSON Schema of the backend's other fields (an object schema without `type`).
    pub schema: serde_json::Value,
}

/// One problem a platform's rules found, at a field path of the blueprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Keys from the root, e.g. `["stages", "artifacts", "bucket"]`.
    pub path: Vec<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl Finding {
    pub fn new(path: &[&str], message: impl Into<String>) -> Finding {
        Finding { path: path.iter().map(|s| (*s).to_owned()).collect(), message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Finding {
        self.hint = Some(hint.into());
        self
    }
}

/// Everything about a platform that validation needs, declared by the platform's provider
/// without its SDK.
pub trait PlatformRules: Send + Sync {
    fn id(&self) -> PlatformId;

    /// The services behind it, for listings: "S3, SageMaker, CloudWatch".
    fn summary(&self) -> &'static str;

    /// The optional features it honours. Every one is a claim its behaviour suite must prove.
    fn capabilities(&self) -> Capabilities;

    /// The cargo feature of the `galley` binary that builds its provider in, e.g. `aws`.
    fn cargo_feature(&self) -> &'static str;

    /// JSON Schema of `platforms.<id>` (an object schema); `None` when it takes no settings.
    /// A schema with required fields makes the section required wherever the platform is used.
    fn settings_schema(&self) -> Option<serde_json::Value> {
        None
    }

    /// The `platforms.<id>` settings that carry credentials (keys, tokens, client secrets).
    /// Validation refuses them written into the blueprint: they must be read from the
    /// environment (`${env.NAME}`), so the file can be committed and shared.
    fn credential_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// Where this platform's own engine runs a pipeline's steps, each a container of Galley's
    /// image (`galley container step`), said for the plan: `galley run` hands the steps to it
    /// (unless `--local-steps`). `None`: the steps run in Galley's process.
    fn remote_steps(&self, blueprint: &Blueprint) -> Option<String> {
        let _ = blueprint;
        None
    }

    /// The `platforms.<id>` settings that name something on the user's machine (a credentials
    /// profile in `~/.aws`): meaningless inside the platform's own containers, so the run bundle
    /// a pipeline step reads leaves them out along with the credential fields.
    fn machine_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// State backends it offers besides the local file.
    fn state_backends(&self) -> Vec<BackendRule> {
        Vec::new()
    }

    /// Rules its services impose on the blueprint's values (bucket and endpoint names, …),
    /// checked for the `stages` that run on it.
    fn check(&self, blueprint: &Blueprint, stages: &[Stage]) -> Vec<Finding> {
        let _ = (blueprint, stages);
        Vec::new()
    }
}

/// The platforms a binary knows (each provider's rules), and which of them it can run.
#[derive(Clone, Default)]
pub struct PlatformRegistry {
    rules: BTreeMap<PlatformId, Arc<dyn PlatformRules>>,
    /// The blueprint schema completed from these platforms, compiled on first use.
    schema: Arc<OnceLock<crate::schema::CompiledSchema>>,
}

impl PlatformRegistry {
    /// Adds a platform's rules. Panics on a malformed or duplicate id: that is a build mistake,
    /// caught by the first test that builds the registry.
    pub fn with(mut self, rules: Arc<dyn PlatformRules>) -> Self {
        let id = rules.id();
        if let Err(why) = PlatformId::check(id.as_str()) {
            panic!("a provider registered a bad platform id: {why}");
        }
        assert_eq!(rules.capabilities().platform, id, "platform `{id}` declares capabilities under another id");
        let before = self.rules.insert(id, rules);
        assert!(before.is_none(), "platform `{id}` is registered twice");
        self.schema = Arc::default();
        self
    }

    /// The blueprint schema for these platforms.
    pub fn schema(&self) -> &crate::schema::CompiledSchema {
        self.schema.get_or_init(|| crate::schema::CompiledSchema::new(self))
    }

    pub fn get(&self, id: PlatformId) -> Option<&Arc<dyn PlatformRules>> {
        self.rules.get(&id)
    }

    /// The rules of a platform named in a blueprint, or a message listing the known ones.
    pub fn require(&self, id: PlatformId) -> Result<&Arc<dyn PlatformRules>, String> {
        self.get(id).ok_or_else(|| format!("unknown platform `{id}`; this galley knows {}", self.names().join(", ")))
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.rules.keys().map(|p| p.as_str()).collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn PlatformRules>> {
        self.rules.values()
    }

    /// The known platforms that declare `feature`, for "run it there instead" hints.
    pub fn platforms_supporting(&self, feature: Feature) -> Vec<PlatformId> {
        self.rules.values().filter(|r| r.capabilities().supports(feature)).map(|r| r.id()).collect()
    }

    /// The platforms offering state backend `kind` (more than one may: `s3` is AWS's S3 and
    /// onprem's S3-compatible store, one schema and one implementation).
    pub fn backend_platforms(&self, kind: &str) -> Vec<PlatformId> {
        self.rules.values().filter(|r| r.state_backends().iter().any(|b| b.kind == kind)).map(|r| r.id()).collect()
    }
}

/// The promotion a registry uses when the blueprint names none: alias where the platform has
/// aliases, else approval status, else stages.
pub fn native_promotion(capabilities: &Capabilities) -> crate::model::Promotion {
    use crate::model::Promotion;
    if capabilities.supports(Feature::ModelAliases) {
        Promotion::Alias
    } else if capabilities.supports(Feature::ApprovalStatus) {
        Promotion::Approval
    } else {
        Promotion::Stage
    }
}
