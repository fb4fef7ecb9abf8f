use async_trait::async_trait;

use super::Described;
use super::Signature;
use crate::table::Table;
use crate::Result;

/// One model version behind an endpoint, with its share of traffic.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    /// Stable name, e.g. `v3`.
    pub name: String,
    pub model: String,
    pub version: u64,
    pub artifact_uri: String,
    /// Share of traffic in percent; the weights of an endpoint add up to 100.
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointSpec {
    pub name: String,
    pub variants: Vec<Variant>,
    pub signature: Signature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    Creating,
    Updating,
    InService,
    Failed,
    Deleting,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointInfo {
    pub name: String,
    pub url: String,
    pub state: EndpointState,
    pub variants: Vec<Variant>,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prediction {
    pub predictions: Vec<f64>,
    /// The variant that answered.
    pub variant: String,
}

#[async_trait]
pub trait Serving: Described + Send + Sync {
    /// Creates the endpoint or moves it to `spec` (new variants, new weights) without dropping
    /// requests.
    async fn deploy(&self, spec: &EndpointSpec) -> Result<EndpointInfo>;
    async fn describe(&self, endpoint: &str) -> Result<Option<EndpointInfo>>;
    async fn invoke(&self, endpoint: &str, rows: &Table) -> Result<Prediction>;
    /// Sets the weights by variant name; they must add up to 100.
    async fn shift_traffic(&self, endpoint: &str, weights: &[(String, u32)]) -> Result<EndpointInfo>;
    /// Idempotent.
    async fn undeploy(&self, endpoint: &str) -> Result<()>;
}
