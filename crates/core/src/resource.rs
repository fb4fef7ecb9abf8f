//! The provisioning side: what a platform expands a blueprint into, and the handler contract
//! the engine drives (read, create, update in place, replace, delete, and the diff rule).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value as Json;

use crate::{PlatformId, Result, Stage};

/// A resource's stable address in the graph, e.g. `artifacts.store` or `serving.endpoint`.
pub type Address = String;

/// What the blueprint wants to exist.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceSpec {
    pub address: Address,
    pub kind: String,
    pub platform: PlatformId,
    pub stage: Stage,
    /// Deterministic physical name, so a crashed apply finds what it made.
    pub name: String,
    /// Desired attributes. Never holds secrets.
    pub desired: Json,
    pub depends_on: Vec<Address>,
    pub protect: bool,
}

/// What exists, as the handler observed it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Observed {
    /// Platform id (ARN, path, resource name).
    pub id: String,
    pub attributes: Json,
    /// Values other resources and users may reference (`url`, `model_id`, …).
    pub outputs: BTreeMap<String, Json>,
}

/// How a change to the desired attributes must be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
}

/// The ownership tag every created resource carries, so adoption after a crash and leak
/// checks can tell Galley's resources from everyone else's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OwnerTag {
    pub blueprint: String,
    pub address: Address,
    pub lineage: String,
}

impl OwnerTag {
    pub const KEY: &'static str = "galley";

    pub fn value(&self) -> String {
        format!("{}/{}/{}", self.blueprint, self.address, self.lineage)
    }
}

#[async_trait]
pub trait ResourceHandler: Send + Sync {
    fn kind(&self) -> &str;

    /// Which attribute changes force a replacement; any other change is an in-place update.
    fn replace_on(&self) -> &[&str] {
        &[]
    }

    /// What exists under this spec's deterministic name, if anything (for refresh, drift and
    /// adoption after a crash). Must not fail just because it is absent.
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>>;
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed>;
    async fn update(&self, spec: &ResourceSpec, current: &Observed) -> Result<Observed>;
    /// Deleting what is already gone succeeds.
    async fn delete(&self, spec: &ResourceSpec, current: &Observed) -> Result<()>;
}
