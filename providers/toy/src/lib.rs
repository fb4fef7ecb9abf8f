//! `toy`: a platform that exists to prove the platform contract, not to be used.
//!
//! Everything a platform is lives in this folder: its id, the features it declares (proven by
//! the shared behaviour suite in `tests/suite.rs`), its `platforms.toy` settings, a naming rule
//! its "service" imposes, its resources (records in a directory, through the engine's test
//! handler) and its seven stages (in memory, for the life of the process, built on the shared
//! DAG runner and drift scorer). It is registered in the CLI with one line under the `testing`
//! feature, and nowhere else.

mod stages;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use galley_blueprint::{Blueprint, Finding, PlatformRules};
use galley_core::capability::{Capabilities, Feature};
use galley_core::resource::{ResourceHandler, ResourceSpec};
use galley_core::{PlatformId, Result, Stage, StageSet};
use galley_engine::testing::{Faults, TEST_KIND, TestHandler};
use galley_engine::{Provider, ProviderContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use stages::World;

pub const TOY: PlatformId = PlatformId::from_static("toy");

/// What the toy's stages implement. Online features, run search, triggers, approval status,
/// bearer auth and managed training are not: validate refuses them on `toy`.
pub fn capabilities() -> Capabilities {
    use Feature::*;
    Capabilities::new(TOY, &[StepCaching, StepRetries, ModelAliases, TrafficSplit, DriftPsi, DriftKs, PredictionDrift])
}

/// `platforms.toy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToySettings {
    /// Names the in-memory world the stages share; blueprints with the same world see the same data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<String>,
    /// A credential, so the credential rule is exercised on a platform core knows nothing
    /// about; the toy's stages need none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
}

pub struct ToyRules;

pub fn rules() -> Arc<dyn PlatformRules> {
    Arc::new(ToyRules)
}

impl PlatformRules for ToyRules {
    fn id(&self) -> PlatformId {
        TOY
    }

    fn summary(&self) -> &'static str {
        "a test-only platform: every stage in memory, resources as JSON records"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    fn cargo_feature(&self) -> &'static str {
        "testing"
    }

    fn settings_schema(&self) -> Option<serde_json::Value> {
        Some(schemars::schema_for!(ToySettings).to_value())
    }

    fn credential_fields(&self) -> &'static [&'static str] {
        &["api_token"]
    }

    /// The toy's one naming rule, so validation of platform rules is exercised on a platform
    /// core knows nothing about: buckets start with `toy-`.
    fn check(&self, bp: &Blueprint, stages: &[Stage]) -> Vec<Finding> {
        match &bp.stages.artifacts {
            Some(a) if stages.contains(&Stage::Artifacts) && !a.bucket.starts_with("toy-") => {
                vec![Finding::new(&["stages", "artifacts", "bucket"], format!("toy buckets start with `toy-`, `{}` does not", a.bucket))
                    .hint(format!("name it `toy-{}`", a.bucket))]
            }
            _ => Vec::new(),
        }
    }
}

/// The toy's provider: one record per stage in `.galley/toy/` (the engine's test handler), the
/// registered model made in the in-memory world, stages in memory.
pub struct ToyProvider {
    ctx: ProviderContext,
    handler: Arc<ToyHandler>,
}

pub fn provider(ctx: ProviderContext) -> Arc<dyn Provider> {
    let records = TestHandler::new(ctx.work_dir.join("toy"), Faults::default());
    Arc::new(ToyProvider { ctx, handler: Arc::new(ToyHandler(records)) })
}

/// Records every resource, and makes a registry stage's model exist in its world (the one
/// thing a later run expects apply to have made).
struct ToyHandler(TestHandler);

impl ToyHandler {
    fn world_model(spec: &ResourceSpec) -> Option<(Arc<World>, String)> {
        let world = spec.desired.get("world")?.as_str()?;
        let model = spec.desired.get("model")?.as_str()?;
        Some((World::named(world), model.to_owned()))
    }
}

#[async_trait]
impl ResourceHandler for ToyHandler {
    fn kind(&self) -> &str {
        self.0.kind()
    }

    async fn read(&self, spec: &ResourceSpec) -> Result<Option<galley_core::resource::Observed>> {
        self.0.read(spec).await
    }

    async fn create(&self, spec: &ResourceSpec, owner: &galley_core::resource::OwnerTag) -> Result<galley_core::resource::Observed> {
        if let Some((world, model)) = Self::world_model(spec) {
            world.stages().registry.create_model(&model, None).await?;
        }
        self.0.create(spec, owner).await
    }

    async fn update(&self, spec: &ResourceSpec, current: &galley_core::resource::Observed) -> Result<galley_core::resource::Observed> {
        self.0.update(spec, current).await
    }

    async fn delete(&self, spec: &ResourceSpec, current: &galley_core::resource::Observed) -> Result<()> {
        if let Some((world, model)) = Self::world_model(spec) {
            world.stages().registry.delete_model(&model).await?;
        }
        self.0.delete(spec, current).await
    }
}

impl ToyProvider {
    /// The name of the in-memory world a blueprint's stages share.
    fn world(&self, bp: &Blueprint) -> Result<String> {
        let settings: ToySettings = bp.platform_settings(TOY).map_err(galley_core::Error::invalid)?.unwrap_or_default();
        Ok(settings.world.unwrap_or_else(|| format!("{}:{}", self.ctx.project_dir.display(), bp.name)))
    }
}

#[async_trait]
impl Provider for ToyProvider {
    fn rules(&self) -> Arc<dyn PlatformRules> {
        rules()
    }

    fn expand(&self, bp: &Blueprint, stages: &[Stage]) -> Result<Vec<ResourceSpec>> {
        let world = self.world(bp)?;
        Ok(stages
            .iter()
            .map(|stage| {
                let mut desired = serde_json::json!({ "stage": stage.as_str(), "world": world });
                if let (Stage::Registry, Some(r)) = (stage, &bp.stages.registry) {
                    desired["model"] = serde_json::json!(r.model);
                }
                ResourceSpec {
                    name: format!("{}-{stage}", bp.name),
                    kind: TEST_KIND.to_owned(),
                    platform: TOY,
                    stage: *stage,
                    desired,
                    depends_on: Vec::new(),
                    protect: false,
                    address: format!("{stage}.toy"),
                }
            })
            .collect())
    }

    fn handler(&self, kind: &str) -> Option<Arc<dyn ResourceHandler>> {
        (kind == TEST_KIND).then(|| self.handler.clone() as Arc<dyn ResourceHandler>)
    }

    async fn open(&self, bp: &Blueprint, _outputs: &BTreeMap<String, BTreeMap<String, serde_json::Value>>) -> Result<StageSet> {
        Ok(World::named(&self.world(bp)?).stages())
    }
}
