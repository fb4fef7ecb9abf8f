//! Serving on SageMaker: each variant is a Model, the variants and their weights are an
//! EndpointConfig (production variants), and the Endpoint points at one config. A deploy with
//! other variants creates a new config and moves the endpoint to it (UpdateEndpoint, which
//! SageMaker carries out without dropping requests); a traffic shift changes only the weights
//! (UpdateEndpointWeightsAndCapacities). Predictions go through sagemaker-runtime
//! InvokeEndpoint in MLflow's `dataframe_split` format, which MLflow-built SageMaker
//! containers and Galley's own image both speak.
//!
//! With `scaling`, each variant also scales between instance counts on its invocations per
//! instance ([`crate::scaling`]): registered once the endpoint is in service, removed before it
//! moves to another config, as SageMaker requires.
//!
//! Names are derived from the endpoint name and a hash of what they hold, so a repeated deploy
//! of the same spec is a no-op and a crashed one finds what it made. Every Model and
//! EndpointConfig is tagged `galley:endpoint` so undeploy removes exactly what Galley made.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sagemaker::types::{
    CaptureContentTypeHeader, CaptureMode, CaptureOption, DataCaptureConfig, ContainerDefinition, DesiredWeightAndCapacity, EndpointStatus, ModelCompressionType, ModelDataSource, ProductionVariant,
    ProductionVariantInstanceType, S3ModelDataSource, S3ModelDataType, Tag,
};
use aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointOutput;
use aws_sdk_sagemaker::operation::describe_endpoint_config::DescribeEndpointConfigOutput;
use aws_smithy_types::Blob;
use galley_core::stages::{
    Described, EndpointInfo, EndpointSpec, EndpointState, Prediction, Scaling, Serving, Signature, Variant, check_weights, shifted_weights,
};
use galley_core::{Error, ErrorKind, Result, Stage, Table};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::config::AwsClients;
use crate::error::{fault, sdk};
use crate::waiter::{self, Observation};

pub const ENDPOINT_TAG: &str = "galley:endpoint";
const VARIANT_TAG: &str = "galley.variant";
pub const SIGNATURE_TAG: &str = "galley.signature";

#[derive(Clone, Debug)]
pub struct SageMakerServing {
    clients: AwsClients,
    /// The serving container image (Galley's, or an MLflow-built one).
    image: Option<String>,
    instance_type: String,
    /// Overrides the waiters' delays (tests against scripted servers).
    pub poll_delay: Option<Duration>,
    /// Where SageMaker captures every request and answer (`DataCaptureConfig`), for the
    /// monitor's drift; `None` captures nothing.
    capture: Option<String>,
    /// What an invocation needs to know of each endpoint, read once rather than before every
    /// prediction (that was 3 + 2 per variant control-plane calls, each billed against
    /// SageMaker's API rate limits). Dropped by this object's own deploys and shifts, and
    /// re-read when an invocation is refused, which is how another process's redeploy shows.
    targets: Arc<Mutex<HashMap<String, InvokeTarget>>>,
}

/// The endpoint as InvokeEndpoint needs it: the config it serves, the columns its models take,
/// and the variant that answers when SageMaker does not say (the only one with traffic).
#[derive(Clone, Debug)]
struct InvokeTarget {
    config: String,
    signature: Signature,
    sole_live_variant: Option<String>,
}

/// What Galley records on each variant's Model.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct VariantMeta {
    model: String,
    version: u64,
    artifact_uri: String,
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..8].to_owned()
}

/// `prefix-suffix`, with the prefix cut so the whole fits SageMaker's 63 characters.
fn bounded(prefix: &str, suffix: &str) -> String {
    let room = 63 - suffix.len() - 1;
    let p: String = prefix.chars().take(room).collect();
    format!("{}-{suffix}", p.trim_end_matches('-'))
}

impl SageMakerServing {
    pub fn new(clients: AwsClients, image: Option<String>, instance_type: Option<String>) -> Self {
        SageMakerServing {
            clients,
            image,
            instance_type: instance_type.unwrap_or_else(|| "ml.m5.large".to_owned()),
            poll_delay: None,
            capture: None,
            targets: Arc::default(),
        }
    }

    /// Captures every request and answer to `destination` (an `s3://` prefix).
    pub fn with_capture(mut self, destination: Option<String>) -> Self {
        self.capture = destination;
        self
    }

    fn forget_target(&self, endpoint: &str) {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).remove(endpoint);
    }

    fn cached_target(&self, endpoint: &str) -> Option<InvokeTarget> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).get(endpoint).cloned()
    }

    /// Reads the endpoint's config and signature (DescribeEndpoint, DescribeEndpointConfig,
    /// ListTags) and caches them.
    async fn refresh_target(&self, endpoint: &str) -> Result<InvokeTarget> {
        self.forget_target(endpoint);
        let (d, config) = self.live_config(endpoint).await?.ok_or_else(|| {
            Error::not_found(format!("endpoint `{endpoint}` does not exist; deploy it with `galley run`"))
                .platform(crate::platform::AWS)
                .stage(Stage::Serving)
        })?;
        let current = current_weights(&d);
        let live: Vec<String> = config
            .production_variants()
            .iter()
            .filter_map(|pv| {
                let name = pv.variant_name()?;
                let weight = current.get(name).copied().or(pv.initial_variant_weight()).unwrap_or(0.0);
                (weight > 0.0).then(|| name.to_owned())
            })
            .collect();
        let target = InvokeTarget {
            config: config.endpoint_config_name().unwrap_or_default().to_owned(),
            signature: self.signature_of(config.endpoint_config_arn().unwrap_or_default()).await?,
            sole_live_variant: if live.len() == 1 { live.into_iter().next() } else { None },
        };
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).insert(endpoint.to_owned(), target.clone());
        Ok(target)
    }

    /// DescribeEndpoint and the config it points at; `None` when the endpoint does not exist.
    async fn live_config(
        &self,
        endpoint: &str,
    ) -> Result<Option<(DescribeEndpointOutput, DescribeEndpointConfigOutput)>> {
        let d = match self.clients.sagemaker.describe_endpoint().endpoint_name(endpoint).send().await {
            Ok(d) => d,
            Err(e) => {
                let e = sdk(Stage::Serving, "DescribeEndpoint", endpoint)(e);
                return if e.kind() == ErrorKind::NotFound { Ok(None) } else { Err(e) };
            }
        };
        let config_name = d.endpoint_config_name().unwrap_or_default().to_owned();
        let config = self
            .clients
            .sagemaker
            .describe_endpoint_config()
            .endpoint_config_name(&config_name)
            .send()
            .await
            .map_err(sdk(Stage::Serving, "DescribeEndpointConfig", &config_name))?;
        Ok(Some((d, config)))
    }

    async fn invoke_target(&self, endpoint: &str, rows: &Table, target: &InvokeTarget) -> Result<Prediction> {
        let body = scoring_body(rows, &target.signature).map_err(|e| e.resource(endpoint.to_owned()))?;
        let out = self
            .clients
            .runtime
            .invoke_endpoint()
            .endpoint_name(endpoint)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body))
            .send()
            .await
            .map_err(sdk(Stage::Serving, "InvokeEndpoint", endpoint))?;
        let predictions = parse_predictions(out.body().map(|b| b.as_ref()).unwrap_or_default())?;
        if predictions.len() != rows.len() {
            return Err(Error::invalid(format!(
                "endpoint `{endpoint}` answered {} predictions for {} rows",
                predictions.len(),
                rows.len()
            )));
        }
        // SageMaker names the variant that answered; without it, the only variant with traffic.
        let variant = match out.invoked_production_variant() {
            Some(v) => v.to_owned(),
            None => target.sole_live_variant.clone().unwrap_or_default(),
        };
        Ok(Prediction { predictions, variant })
    }

    pub fn model_name(endpoint: &str, v: &Variant, image: &str) -> String {
        let h = short_hash(&[endpoint, &v.name, &v.model, &v.version.to_string(), &v.artifact_uri, image]);
        bounded(&format!("{endpoint}-{}", v.name), &h)
    }

    /// Names a config by what it serves (variants, models, image, signature) and on what
    /// (instance type, instances each variant starts with) but not by the weights: the same
    /// models at other weights are the same config, whose live weights
    /// UpdateEndpointWeightsAndCapacities moves in place.
    pub fn config_name(spec: &EndpointSpec, image: &str, instance_type: &str, capture: Option<&str>) -> String {
        let mut parts: Vec<String> = vec![
            spec.name.clone(),
            image.to_owned(),
            serde_json::to_string(&spec.signature).unwrap_or_default(),
            format!("on|{instance_type}|{}", initial_instances(spec)),
        ];
        if let Some(destination) = capture {
            parts.push(format!("capture|{destination}"));
        }
        let mut vs = spec.variants.clone();
        vs.sort_by(|a, b| a.name.cmp(&b.name));
        for v in &vs {
            parts.push(format!("{}|{}|{}|{}", v.name, v.model, v.version, v.artifact_uri));
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        bounded(&spec.name, &short_hash(&refs))
    }

    fn url(&self, endpoint: &str) -> String {
        let base = match &self.clients.config.endpoint_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("https://runtime.sagemaker.{}.amazonaws.com", self.clients.region()),
        };
        format!("{base}/endpoints/{endpoint}/invocations")
    }

    fn image(&self) -> Result<String> {
        self.image.clone().ok_or_else(|| {
            Error::invalid(
                "serving on aws needs a container image that serves Galley models: set `stages.training.image` (it is used for serving too)",
            )
        })
    }

    async fn ensure_model(&self, endpoint: &str, v: &Variant, image: &str, role: &str) -> Result<String> {
        let name = Self::model_name(endpoint, v, image);
        match self.clients.sagemaker.describe_model().model_name(&name).send().await {
            Ok(_) => return Ok(name),
            Err(e) => {
                let e = sdk(Stage::Serving, "DescribeModel", &name)(e);
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        let meta = VariantMeta { model: v.model.clone(), version: v.version, artifact_uri: v.artifact_uri.clone() };
        let mut tags = vec![tag(ENDPOINT_TAG, endpoint)];
        tags.extend(crate::meta::encode(VARIANT_TAG, &meta, 10)?.into_iter().map(|(k, v)| tag(&k, &v)));
        let mut container = ContainerDefinition::builder().image(image);
        if v.artifact_uri.starts_with("s3://") {
            // A Galley model is one uncompressed file. ModelDataUrl would have to be a .tar.gz;
            // an uncompressed S3Object is placed at /opt/ml/model/<its file name>, which is
            // where `galley container serve` reads `model.json`.
            let source = S3ModelDataSource::builder()
                .s3_uri(&v.artifact_uri)
                .s3_data_type(S3ModelDataType::S3Object)
                .compression_type(ModelCompressionType::None)
                .build();
            container = container.model_data_source(ModelDataSource::builder().s3_data_source(source).build());
        }
        self.clients
            .sagemaker
            .create_model()
            .model_name(&name)
            .execution_role_arn(role)
            .primary_container(container.build())
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(sdk(Stage::Serving, "CreateModel", &name))?;
        Ok(name)
    }

    /// UpdateEndpointWeightsAndCapacities with every variant's weight, then the endpoint as
    /// SageMaker describes it once back in service.
    async fn update_weights(&self, endpoint: &str, weights: &[(String, u32)]) -> Result<EndpointInfo> {
        let desired: Vec<DesiredWeightAndCapacity> = weights
            .iter()
            .map(|(n, w)| DesiredWeightAndCapacity::builder().variant_name(n).desired_weight(*w as f32).build())
            .collect();
        self.clients
            .sagemaker
            .update_endpoint_weights_and_capacities()
            .endpoint_name(endpoint)
            .set_desired_weights_and_capacities(Some(desired))
            .send()
            .await
            .map_err(sdk(Stage::Serving, "UpdateEndpointWeightsAndCapacities", endpoint))?;
        self.wait_in_service(endpoint).await?;
        self.describe(endpoint).await?.ok_or_else(|| Error::not_found(format!("endpoint `{endpoint}` vanished during a traffic shift")))
    }

    async fn ensure_config(&self, spec: &EndpointSpec, image: &str, role: &str) -> Result<String> {
        let name = Self::config_name(spec, image, &self.instance_type, self.capture.as_deref());
        match self.clients.sagemaker.describe_endpoint_config().endpoint_config_name(&name).send().await {
            Ok(_) => return Ok(name),
            Err(e) => {
                let e = sdk(Stage::Serving, "DescribeEndpointConfig", &name)(e);
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        let mut variants = Vec::new();
        for v in &spec.variants {
            let model = self.ensure_model(&spec.name, v, image, role).await?;
            variants.push(
                ProductionVariant::builder()
                    .variant_name(&v.name)
                    .model_name(model)
                    .initial_instance_count(initial_instances(spec))
                    .instance_type(ProductionVariantInstanceType::from(self.instance_type.as_str()))
                    .initial_variant_weight(v.weight as f32)
                    .build(),
            );
        }
        let mut tags = vec![tag(ENDPOINT_TAG, &spec.name)];
        tags.extend(crate::meta::encode(SIGNATURE_TAG, &spec.signature, 40)?.into_iter().map(|(k, v)| tag(&k, &v)));
        self.clients
            .sagemaker
            .create_endpoint_config()
            .endpoint_config_name(&name)
            .set_production_variants(Some(variants))
            .set_data_capture_config(self.capture.as_deref().map(data_capture))
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(sdk(Stage::Serving, "CreateEndpointConfig", &name))?;
        Ok(name)
    }

    /// The variants the endpoint serves now (DescribeEndpoint); none when it does not exist.
    async fn live_variants(&self, endpoint: &str) -> Result<Vec<String>> {
        match self.clients.sagemaker.describe_endpoint().endpoint_name(endpoint).send().await {
            Ok(d) => Ok(variant_names(&d)),
            Err(e) => {
                let e = sdk(Stage::Serving, "DescribeEndpoint", endpoint)(e);
                if e.kind() == ErrorKind::NotFound { Ok(Vec::new()) } else { Err(e) }
            }
        }
    }

    /// Gives every variant the endpoint serves `scaling`, or takes Galley's scaling away with
    /// `None`; waits for the endpoint to be in service first. `galley apply` calls it when only
    /// `serving.autoscaling` changed, so the change needs no redeploy.
    pub async fn rescale(&self, endpoint: &str, scaling: Option<&Scaling>) -> Result<()> {
        if let Some(s) = scaling {
            s.check(endpoint)?;
        }
        let variants = self.live_variants(endpoint).await?;
        if variants.is_empty() {
            return Ok(());
        }
        self.wait_in_service(endpoint).await?;
        self.scale(endpoint, &variants, scaling).await
    }

    /// Gives `variants` of an endpoint in service `scaling` (checked), or takes Galley's away.
    async fn scale(&self, endpoint: &str, variants: &[String], scaling: Option<&Scaling>) -> Result<()> {
        match scaling {
            Some(s) => crate::scaling::apply(&self.clients.autoscaling, endpoint, variants, s).await,
            None => crate::scaling::remove(&self.clients.autoscaling, endpoint, variants).await,
        }
    }

    async fn tags_of(&self, arn: &str) -> Result<HashMap<String, String>> {
        let out = self
            .clients
            .sagemaker
            .list_tags()
            .resource_arn(arn)
            .send()
            .await
            .map_err(sdk(Stage::Serving, "ListTags", arn))?;
        Ok(out.tags().iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect())
    }

    /// Polls DescribeEndpoint with the official `EndpointInService` waiter.
    pub async fn wait_in_service(&self, endpoint: &str) -> Result<()> {
        let def = waiter::sagemaker("EndpointInService")?;
        def.wait(&format!("endpoint `{endpoint}`"), self.poll_delay, || self.observe(endpoint)).await.map(|_| ())
    }

    /// Polls DescribeEndpoint with the official `EndpointDeleted` waiter.
    pub async fn wait_deleted(&self, endpoint: &str) -> Result<()> {
        let def = waiter::sagemaker("EndpointDeleted")?;
        def.wait(&format!("endpoint `{endpoint}`"), self.poll_delay, || self.observe(endpoint)).await.map(|_| ())
    }

    async fn observe(&self, endpoint: &str) -> Observation {
        match self.clients.sagemaker.describe_endpoint().endpoint_name(endpoint).send().await {
            Ok(d) => Observation::Output {
                status: 200,
                body: json!({
                    "EndpointName": d.endpoint_name(),
                    "EndpointStatus": d.endpoint_status().map(|s| s.as_str()),
                    "FailureReason": d.failure_reason(),
                }),
            },
            Err(e) => Observation::Error(fault(&e)),
        }
    }

    /// The signature recorded on the endpoint's config.
    async fn signature_of(&self, config_arn: &str) -> Result<Signature> {
        Ok(crate::meta::decode(SIGNATURE_TAG, &self.tags_of(config_arn).await?)?.unwrap_or_default())
    }

    async fn delete_tagged(&self, endpoint: &str) -> Result<()> {
        // Configs first (they reference the models).
        let mut token = None;
        let mut configs = Vec::new();
        loop {
            let page = self
                .clients
                .sagemaker
                .list_endpoint_configs()
                .name_contains(endpoint)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk(Stage::Serving, "ListEndpointConfigs", endpoint))?;
            for c in page.endpoint_configs() {
                configs.push((c.endpoint_config_name().unwrap_or_default().to_owned(), c.endpoint_config_arn().unwrap_or_default().to_owned()));
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for (name, arn) in configs {
            if self.tags_of(&arn).await?.get(ENDPOINT_TAG).map(String::as_str) == Some(endpoint) {
                ignore_missing(
                    self.clients.sagemaker.delete_endpoint_config().endpoint_config_name(&name).send().await
                        .map(|_| ())
                        .map_err(sdk(Stage::Serving, "DeleteEndpointConfig", &name)),
                )?;
            }
        }
        let mut token = None;
        let mut models = Vec::new();
        loop {
            let page = self
                .clients
                .sagemaker
                .list_models()
                .name_contains(endpoint)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk(Stage::Serving, "ListModels", endpoint))?;
            for m in page.models() {
                models.push((m.model_name().unwrap_or_default().to_owned(), m.model_arn().unwrap_or_default().to_owned()));
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for (name, arn) in models {
            if self.tags_of(&arn).await?.get(ENDPOINT_TAG).map(String::as_str) == Some(endpoint) {
                ignore_missing(
                    self.clients.sagemaker.delete_model().model_name(&name).send().await
                        .map(|_| ())
                        .map_err(sdk(Stage::Serving, "DeleteModel", &name)),
                )?;
            }
        }
        Ok(())
    }
}

/// The instances a variant starts with: autoscaling's minimum, or the one it always has.
fn initial_instances(spec: &EndpointSpec) -> i32 {
    spec.scaling.as_ref().map_or(1, |s| i32::try_from(s.min_instances).unwrap_or(i32::MAX))
}

fn ignore_missing(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Every request and answer, JSON kept as text (so the capture file holds the request as sent).
fn data_capture(destination: &str) -> DataCaptureConfig {
    DataCaptureConfig::builder()
        .enable_capture(true)
        .initial_sampling_percentage(100)
        .destination_s3_uri(destination)
        .capture_options(CaptureOption::builder().capture_mode(CaptureMode::Input).build())
        .capture_options(CaptureOption::builder().capture_mode(CaptureMode::Output).build())
        .capture_content_type_header(CaptureContentTypeHeader::builder().json_content_types("application/json").build())
        .build()
}

/// The names of the variants an endpoint serves, as DescribeEndpoint reports them.
fn variant_names(d: &DescribeEndpointOutput) -> Vec<String> {
    d.production_variants().iter().filter_map(|v| v.variant_name().map(str::to_owned)).collect()
}

/// Current weights (after a traffic shift), which win over the config's initial ones.
fn current_weights(d: &DescribeEndpointOutput) -> BTreeMap<String, f32> {
    d.production_variants().iter().filter_map(|v| Some((v.variant_name()?.to_owned(), v.current_weight()?))).collect()
}

pub fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn state_of(s: Option<&EndpointStatus>) -> EndpointState {
    match s {
        Some(EndpointStatus::InService) => EndpointState::InService,
        Some(EndpointStatus::Failed) => EndpointState::Failed,
        Some(EndpointStatus::Deleting) => EndpointState::Deleting,
        Some(EndpointStatus::Creating) => EndpointState::Creating,
        _ => EndpointState::Updating,
    }
}

/// Relative SageMaker weights as percentages that add up to 100 (largest remainder).
pub fn percentages(weights: &[f32]) -> Vec<u32> {
    let total: f64 = weights.iter().map(|w| f64::from(*w).max(0.0)).sum();
    if total <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| f64::from(*w).max(0.0) * 100.0 / total).collect();
    let mut out: Vec<u32> = exact.iter().map(|x| x.floor() as u32).collect();
    let mut missing = 100 - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..exact.len()).collect();
    order.sort_by(|a, b| (exact[*b] - exact[*b].floor()).total_cmp(&(exact[*a] - exact[*a].floor())));
    for i in order {
        if missing == 0 {
            break;
        }
        out[i] += 1;
        missing -= 1;
    }
    out
}

/// The MLflow `dataframe_split` body for `rows`, in the signature's column order.
pub fn scoring_body(rows: &Table, signature: &Signature) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&rows.to_dataframe_split(&signature.inputs)?)?)
}

/// Predictions from a scoring answer: `{"predictions": [...]}`, a bare JSON list (of numbers
/// or one-element lists), or CSV lines.
pub fn parse_predictions(body: &[u8]) -> Result<Vec<f64>> {
    let num = |v: &Json| v.as_f64().or_else(|| v.as_array().and_then(|a| a.first()).and_then(Json::as_f64));
    if let Ok(v) = serde_json::from_slice::<Json>(body) {
        let list = v.get("predictions").cloned().unwrap_or(v);
        if let Json::Array(items) = list {
            return items
                .iter()
                .map(|x| num(x).ok_or_else(|| Error::invalid(format!("the endpoint answered a non-numeric prediction `{x}`"))))
                .collect();
        }
        if let Some(x) = list.as_f64() {
            return Ok(vec![x]);
        }
    }
    let text = String::from_utf8_lossy(body);
    text.split(['\n', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>().map_err(|_| Error::invalid(format!("the endpoint's answer is not predictions: `{}`", text.chars().take(200).collect::<String>()))))
        .collect()
}

impl Described for SageMakerServing {
    fn capabilities(&self) -> galley_core::Capabilities {
        crate::platform::capabilities()
    }
}

#[async_trait]
impl Serving for SageMakerServing {
    async fn deploy(&self, spec: &EndpointSpec) -> Result<EndpointInfo> {
        if spec.variants.is_empty() {
            return Err(Error::invalid(format!("endpoint `{}`: a deployment needs at least one variant", spec.name)));
        }
        check_weights(&spec.name, spec.variants.iter().map(|v| v.weight))?;
        if let Some(scaling) = &spec.scaling {
            scaling.check(&spec.name)?;
        }
        self.forget_target(&spec.name);
        let image = self.image()?;
        let role = self.clients.role_arn(&format!("endpoint `{}`", spec.name))?;
        let config = self.ensure_config(spec, &image, &role).await?;
        match self.clients.sagemaker.describe_endpoint().endpoint_name(&spec.name).send().await {
            Ok(d) if d.endpoint_config_name() == Some(config.as_str()) => {}
            Ok(d) => {
                // Moves traffic to the new config without dropping requests (blue/green).
                self.wait_in_service(&spec.name).await?;
                crate::scaling::remove(&self.clients.autoscaling, &spec.name, &variant_names(&d)).await?;
                self.clients
                    .sagemaker
                    .update_endpoint()
                    .endpoint_name(&spec.name)
                    .endpoint_config_name(&config)
                    .send()
                    .await
                    .map_err(sdk(Stage::Serving, "UpdateEndpoint", &spec.name))?;
            }
            Err(e) => {
                let e = sdk(Stage::Serving, "DescribeEndpoint", &spec.name)(e);
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
                self.clients
                    .sagemaker
                    .create_endpoint()
                    .endpoint_name(&spec.name)
                    .endpoint_config_name(&config)
                    .tags(tag(ENDPOINT_TAG, &spec.name))
                    .send()
                    .await
                    .map_err(sdk(Stage::Serving, "CreateEndpoint", &spec.name))?;
            }
        }
        self.wait_in_service(&spec.name).await?;
        // In service on the spec's config, so its variants are the spec's.
        let names: Vec<String> = spec.variants.iter().map(|v| v.name.clone()).collect();
        self.scale(&spec.name, &names, spec.scaling.as_ref()).await?;
        let info = self.describe(&spec.name).await?.ok_or_else(|| Error::not_found(format!("endpoint `{}` vanished right after deploy", spec.name)))?;
        // The config serves the right models; the live weights may differ (the same models at
        // other weights, e.g. a canary's next step): moved in place, with no new config, no new
        // instances and no blue/green.
        let mut want: Vec<(String, u32)> = spec.variants.iter().map(|v| (v.name.clone(), v.weight)).collect();
        let mut live: Vec<(String, u32)> = info.variants.iter().map(|v| (v.name.clone(), v.weight)).collect();
        want.sort();
        live.sort();
        if want == live { Ok(info) } else { self.update_weights(&spec.name, &want).await }
    }

    async fn describe(&self, endpoint: &str) -> Result<Option<EndpointInfo>> {
        let Some((d, config)) = self.live_config(endpoint).await? else { return Ok(None) };
        let current = current_weights(&d);
        let mut raw = Vec::new();
        for pv in config.production_variants() {
            let name = pv.variant_name().unwrap_or_default().to_owned();
            let weight = current.get(&name).copied().or(pv.initial_variant_weight()).unwrap_or(0.0);
            let model = pv.model_name().unwrap_or_default().to_owned();
            let arn = self
                .clients
                .sagemaker
                .describe_model()
                .model_name(&model)
                .send()
                .await
                .map_err(sdk(Stage::Serving, "DescribeModel", &model))?
                .model_arn()
                .unwrap_or_default()
                .to_owned();
            let meta: Option<VariantMeta> = crate::meta::decode(VARIANT_TAG, &self.tags_of(&arn).await?)?;
            raw.push((name, weight, meta));
        }
        let pct = percentages(&raw.iter().map(|(_, w, _)| *w).collect::<Vec<_>>());
        let variants: Vec<Variant> = raw
            .into_iter()
            .zip(pct)
            .map(|((name, _, meta), weight)| {
                let meta = meta.unwrap_or(VariantMeta { model: String::new(), version: 0, artifact_uri: String::new() });
                Variant { name, model: meta.model, version: meta.version, artifact_uri: meta.artifact_uri, weight }
            })
            .collect();
        let signature = self.signature_of(config.endpoint_config_arn().unwrap_or_default()).await?;
        let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
        let scaling = crate::scaling::read(&self.clients.autoscaling, endpoint, &names).await?;
        Ok(Some(EndpointInfo {
            name: endpoint.to_owned(),
            url: self.url(endpoint),
            state: state_of(d.endpoint_status()),
            variants,
            signature,
            scaling,
        }))
    }

    async fn invoke(&self, endpoint: &str, rows: &Table) -> Result<Prediction> {
        let Some(cached) = self.cached_target(endpoint) else {
            let target = self.refresh_target(endpoint).await?;
            return self.invoke_target(endpoint, rows, &target).await;
        };
        match self.invoke_target(endpoint, rows, &cached).await {
            // A refusal may mean the endpoint moved on (another config, other columns, gone):
            // read it again and try once more, but only if it did move.
            Err(e) if !e.is_retryable() => {
                let fresh = self.refresh_target(endpoint).await?;
                if fresh.config == cached.config {
                    return Err(e);
                }
                tracing::debug!(endpoint, from = %cached.config, to = %fresh.config, "endpoint moved to another config; invoking again");
                self.invoke_target(endpoint, rows, &fresh).await
            }
            answer => answer,
        }
    }

    async fn shift_traffic(&self, endpoint: &str, weights: &[(String, u32)]) -> Result<EndpointInfo> {
        self.forget_target(endpoint);
        check_weights(endpoint, weights.iter().map(|(_, w)| *w))?;
        let info = self.describe(endpoint).await?.ok_or_else(|| Error::not_found(format!("endpoint `{endpoint}` does not exist")))?;
        // Every variant is named: SageMaker leaves the weight of a variant not named as it was.
        let weights = shifted_weights(endpoint, &info.variants, weights)?;
        self.update_weights(endpoint, &weights).await
    }

    async fn undeploy(&self, endpoint: &str) -> Result<()> {
        self.forget_target(endpoint);
        // Deleting the endpoint deregisters its targets only where the caller may; Galley
        // removes its own first so that nothing it made outlives the endpoint.
        let variants = self.live_variants(endpoint).await?;
        crate::scaling::remove(&self.clients.autoscaling, endpoint, &variants).await?;
        match self.clients.sagemaker.delete_endpoint().endpoint_name(endpoint).send().await {
            Ok(_) => self.wait_deleted(endpoint).await?,
            Err(e) => {
                let e = sdk(Stage::Serving, "DeleteEndpoint", endpoint)(e);
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        self.delete_tagged(endpoint).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::{DType, Value};
    use galley_core::table::Column;

    #[test]
    fn weights_become_percentages_that_sum_to_100() {
        assert_eq!(percentages(&[1.0, 1.0, 1.0]), vec![34, 33, 33]);
        assert_eq!(percentages(&[90.0, 10.0]), vec![90, 10]);
        assert_eq!(percentages(&[0.0, 100.0]), vec![0, 100]);
        assert_eq!(percentages(&[0.0, 0.0]), vec![0, 0]);
    }

    #[test]
    fn names_fit_sagemakers_limit_and_follow_content() {
        let long = "e".repeat(63);
        let v = Variant { name: "v1".into(), model: "m".into(), version: 1, artifact_uri: "s3://b/k".into(), weight: 100 };
        let n = SageMakerServing::model_name(&long, &v, "img");
        assert!(n.len() <= 63, "{n}");
        let spec = EndpointSpec { name: "wine".into(), variants: vec![v.clone()], signature: Signature::default(), scaling: None };
        let name = |spec: &EndpointSpec, image: &str, capture: Option<&str>| SageMakerServing::config_name(spec, image, "ml.m5.large", capture);
        let a = name(&spec, "img", None);
        assert_eq!(a, name(&spec, "img", None));
        // Other weights are the same config (moved in place); another version is a new one.
        let reweighted = EndpointSpec { variants: vec![Variant { weight: 90, ..v.clone() }], ..spec.clone() };
        assert_eq!(a, name(&reweighted, "img", None));
        let moved = EndpointSpec { variants: vec![Variant { version: 2, ..v }], ..spec.clone() };
        assert_ne!(a, name(&moved, "img", None));
        assert_ne!(a, name(&spec, "img2", None), "another image is another config");
        assert_ne!(a, name(&spec, "img", Some("s3://b/galley/capture")), "capturing is another config");
        assert_ne!(a, SageMakerServing::config_name(&spec, "img", "ml.g5.xlarge", None), "another instance type is another config");
        let scaled = EndpointSpec { scaling: Some(Scaling { min_instances: 2, max_instances: 4, requests_per_minute: 70.0 }), ..spec.clone() };
        assert_ne!(a, name(&scaled, "img", None), "starting on 2 instances is another config");
        let same_start = EndpointSpec { scaling: Some(Scaling { min_instances: 1, max_instances: 9, requests_per_minute: 5.0 }), ..spec.clone() };
        assert_eq!(a, name(&same_start, "img", None), "the bounds and target are scaling's, not the config's");
        assert!(a.starts_with("wine-"));
    }

    #[test]
    fn scoring_body_follows_the_signature_and_names_a_missing_column() {
        let mut t = Table::new(vec![Column::new("b", DType::Float), Column::new("a", DType::Float)]);
        t.push(vec![Value::Float(2.0), Value::Float(1.0)]).unwrap();
        let sig = Signature { inputs: vec![Column::new("a", DType::Float), Column::new("b", DType::Float)], output: None };
        let body: Json = serde_json::from_slice(&scoring_body(&t, &sig).unwrap()).unwrap();
        assert_eq!(body, json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}));
        let sig = Signature { inputs: vec![Column::new("c", DType::Float)], output: None };
        let e = scoring_body(&t, &sig).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("`c`"));
    }

    #[test]
    fn predictions_parse_from_the_usual_answers() {
        assert_eq!(parse_predictions(br#"{"predictions": [0.5, 1]}"#).unwrap(), vec![0.5, 1.0]);
        assert_eq!(parse_predictions(b"[[0.25], [0.75]]").unwrap(), vec![0.25, 0.75]);
        assert_eq!(parse_predictions(b"0.1\n0.2\n").unwrap(), vec![0.1, 0.2]);
        assert!(parse_predictions(b"<html>").is_err());
    }
}
