use async_trait::async_trait;

use super::Described;
use super::Signature;
use crate::table::Table;
use crate::{Error, Result};

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
    /// Scale every variant between instance counts on its load; `None` serves each variant on
    /// one fixed instance. Only platforms that declare `Feature::Autoscaling` accept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
}

/// How many instances serve each variant, and the load per instance the platform adds or
/// removes instances to hold (target tracking).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scaling {
    pub min_instances: u32,
    pub max_instances: u32,
    /// Requests per instance per minute.
    pub requests_per_minute: f64,
}

impl Scaling {
    /// Refuses bounds no platform can hold: `1 <= min <= max` and a positive target.
    pub fn check(&self, endpoint: &str) -> Result<()> {
        if self.min_instances < 1 || self.min_instances > self.max_instances || self.requests_per_minute.is_nan() || self.requests_per_minute <= 0.0 {
            return Err(Error::invalid(format!(
                "endpoint `{endpoint}`: autoscaling needs 1 <= min <= max instances and a positive target, found min {}, max {}, {} requests per minute",
                self.min_instances, self.max_instances, self.requests_per_minute
            )));
        }
        Ok(())
    }

    /// `1–4 instances per variant, holding 70 requests per instance per minute`.
    pub fn describe(&self) -> String {
        format!(
            "{}–{} instances per variant, holding {} requests per instance per minute",
            self.min_instances, self.max_instances, self.requests_per_minute
        )
    }
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
    /// The scaling every variant has, as the platform reports it; `None` when there is none, or
    /// when only some variants have it (a deploy that stopped half-way, which the next one
    /// completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
}

/// Where to POST scoring requests over HTTP, given an endpoint's [`EndpointInfo::url`]: local
/// endpoints report their base URL, SageMaker its invocation URL already.
pub fn invocations_url(url: &str) -> String {
    if url.ends_with("/invocations") { url.to_owned() } else { format!("{}/invocations", url.trim_end_matches('/')) }
}

/// For a platform that does not declare `Feature::Autoscaling`: refuses a spec that asks for
/// it, rather than serving on one instance what the user sized for several.
pub fn refuse_scaling(spec: &EndpointSpec, platform: impl std::fmt::Display) -> Result<()> {
    match &spec.scaling {
        Some(_) => Err(Error::unsupported(format!(
            "endpoint `{}` asks for autoscaling, which platform `{platform}` cannot do: deploy it without `scaling` (`serving.autoscaling`)",
            spec.name
        ))),
        None => Ok(()),
    }
}

/// Refuses a split of `endpoint`'s traffic whose weights do not add up to 100.
pub fn check_weights(endpoint: &str, weights: impl IntoIterator<Item = u32>) -> Result<()> {
    let total: u64 = weights.into_iter().map(u64::from).sum();
    if total != 100 {
        return Err(Error::invalid(format!("the traffic weights of endpoint `{endpoint}` add up to {total}; they must add up to 100")));
    }
    Ok(())
}

/// Every variant's weight after [`Serving::shift_traffic`] with `weights`: the named ones as
/// asked, the others 0. Refuses, before anything is changed, a name the endpoint does not have
/// and weights that do not add up to 100.
pub fn shifted_weights(endpoint: &str, variants: &[Variant], weights: &[(String, u32)]) -> Result<Vec<(String, u32)>> {
    check_weights(endpoint, weights.iter().map(|(_, w)| *w))?;
    if let Some((name, _)) = weights.iter().find(|(n, _)| !variants.iter().any(|v| &v.name == n)) {
        let have: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
        return Err(Error::invalid(format!("endpoint `{endpoint}` has no variant `{name}`; it has [{}]", have.join(", "))));
    }
    Ok(variants
        .iter()
        .map(|v| (v.name.clone(), weights.iter().find(|(n, _)| *n == v.name).map_or(0, |(_, w)| *w)))
        .collect())
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
    /// Sets the weights by variant name; they must add up to 100, and variants not named get
    /// no traffic ([`shifted_weights`]). Nothing changes when the weights are refused.
    async fn shift_traffic(&self, endpoint: &str, weights: &[(String, u32)]) -> Result<EndpointInfo>;
    /// Idempotent.
    async fn undeploy(&self, endpoint: &str) -> Result<()>;
}
