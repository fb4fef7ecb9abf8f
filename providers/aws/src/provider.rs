//! The aws platform as the engine sees it: each stage expands to the AWS resource that holds
//! it (an S3 bucket, a Feature Group, an Experiment, a Pipeline, a Model Package Group, an
//! endpoint, CloudWatch alarms), each with a handler, and `open` gives the runtime stages.
//!
//! Every resource's desired attributes carry where it lives (`region`, `endpoint_url`), so a
//! region change is a visible replacement in the plan, and so a handler can connect from the
//! spec alone. Every taggable resource carries the owner tag `galley` = blueprint/address/
//! lineage, so a crashed apply adopts what it made instead of duplicating it, and a leak check
//! can tell Galley's resources from everyone else's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::types::Tagging;
use galley_blueprint::Blueprint;
use galley_core::resource::{Observed, OwnerTag, ResourceHandler, ResourceSpec};
use galley_core::stages::{ExperimentTracker, FeatureGroupSpec, FeatureStore, ModelRegistry, Orchestrator, PipelineSpec, Serving};
use galley_core::{Error, ErrorKind, Result, Stage, StageSet};
use galley_engine::{Provider, ProviderContext};
use serde_json::{Value as Json, json};
use tokio::sync::Mutex;

use crate::artifacts::S3Artifacts;
use crate::config::{AwsClients, AwsConfig, CredentialSource};
use crate::error::sdk;
use crate::experiments::SageMakerExperiments;
use crate::features::SageMakerFeatures;
use crate::monitor::{AwsMonitor, alarm_name};
use crate::orchestrator::SageMakerPipelines;
use crate::registry::SageMakerRegistry;
use crate::serving::{SageMakerServing, tag};

pub const BUCKET: &str = "aws.s3_bucket";
pub const FEATURE_GROUP: &str = "aws.feature_group";
pub const EXPERIMENT: &str = "aws.experiment";
pub const PIPELINE: &str = "aws.pipeline";
pub const MODEL_PACKAGE_GROUP: &str = "aws.model_package_group";
pub const ENDPOINT: &str = "aws.endpoint";
pub const MONITOR: &str = "aws.monitor";

/// Connects once per (region, endpoint, credentials) and shares the clients.
#[derive(Clone, Default)]
pub struct Connections {
    credentials: Option<CredentialSource>,
    cache: Arc<Mutex<HashMap<String, AwsClients>>>,
}

impl Connections {
    /// The clients for a configuration, with the provider's credential override applied.
    pub async fn get(&self, mut config: AwsConfig) -> Result<AwsClients> {
        if let Some(c) = &self.credentials {
            config.credentials = c.clone();
        }
        let key = format!("{}|{:?}|{:?}", config.region, config.endpoint_url, config.credentials);
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(&key) {
            let mut c = c.clone();
            c.config.role_arn = config.role_arn.clone();
            return Ok(c);
        }
        let clients = AwsClients::connect(&config).await?;
        cache.insert(key, clients.clone());
        Ok(clients)
    }

    /// The configuration a resource spec records.
    pub fn config_of(spec: &ResourceSpec) -> Result<AwsConfig> {
        let region = spec.desired.get("region").and_then(Json::as_str).ok_or_else(|| {
            Error::internal(format!("resource `{}` records no `region`", spec.address))
        })?;
        let mut c = AwsConfig::new(region);
        c.endpoint_url = spec.desired.get("endpoint_url").and_then(Json::as_str).map(str::to_owned);
        c.force_path_style = c.endpoint_url.is_some();
        c.role_arn = spec.desired.get("role_arn").and_then(Json::as_str).map(str::to_owned);
        if let Some(p) = spec.desired.get("profile").and_then(Json::as_str) {
            c.credentials = CredentialSource::Profile(p.to_owned());
        }
        Ok(c)
    }

    async fn for_spec(&self, spec: &ResourceSpec) -> Result<AwsClients> {
        self.get(Self::config_of(spec)?).await
    }
}

pub struct AwsProvider {
    ctx: ProviderContext,
    connections: Connections,
    handlers: BTreeMap<&'static str, Arc<dyn ResourceHandler>>,
}

impl AwsProvider {
    /// Credentials from the blueprint's profile or the standard chain.
    pub fn new(ctx: ProviderContext) -> Self {
        Self::build(ctx, Connections::default())
    }

    /// Every connection uses `credentials` (tests and emulators pass static keys).
    pub fn with_credentials(ctx: ProviderContext, credentials: CredentialSource) -> Self {
        Self::build(ctx, Connections { credentials: Some(credentials), ..Default::default() })
    }

    fn build(ctx: ProviderContext, connections: Connections) -> Self {
        let c = connections.clone();
        let handlers: Vec<Arc<dyn ResourceHandler>> = vec![
            Arc::new(BucketHandler(c.clone())),
            Arc::new(FeatureGroupHandler(c.clone())),
            Arc::new(ExperimentHandler(c.clone())),
            Arc::new(PipelineHandler(c.clone())),
            Arc::new(ModelPackageGroupHandler(c.clone())),
            Arc::new(EndpointHandler(c.clone())),
            Arc::new(MonitorHandler(c)),
        ];
        let handlers = handlers
            .into_iter()
            .map(|h| {
                let k = [BUCKET, FEATURE_GROUP, EXPERIMENT, PIPELINE, MODEL_PACKAGE_GROUP, ENDPOINT, MONITOR]
                    .into_iter()
                    .find(|k| *k == h.kind())
                    .expect("every handler's kind is one of the constants");
                (k, h)
            })
            .collect();
        AwsProvider { ctx, connections, handlers }
    }

    pub fn context(&self) -> &ProviderContext {
        &self.ctx
    }

    /// The runtime stages for `bp` (also what `open` returns).
    pub async fn stages(&self, bp: &Blueprint) -> Result<StageSet> {
        let config = AwsConfig::from_blueprint(bp)?;
        let clients = self.connections.get(config).await?;
        let bucket = artifact_bucket(bp)?;
        let store = S3Artifacts::new(clients.s3.clone(), &bucket);
        let training = bp.stages.training.as_ref();
        let image = training.and_then(|t| t.image.clone());
        let serving = bp.stages.serving.as_ref();
        let ttl = bp.stages.features.as_ref().and_then(|f| f.ttl.as_deref());
        Ok(StageSet {
            artifacts: Arc::new(store.clone()),
            features: Arc::new(SageMakerFeatures::new(clients.clone(), store.clone(), ttl)?),
            experiments: Arc::new(SageMakerExperiments::new(clients.clone(), store.clone())),
            orchestrator: Arc::new(SageMakerPipelines::new(
                clients.clone(),
                store.clone(),
                image.clone(),
                training.and_then(|t| t.instance_type.clone()),
            )),
            registry: Arc::new(SageMakerRegistry::new(clients.clone(), image.clone())),
            serving: Arc::new(
                SageMakerServing::new(clients.clone(), image, serving.and_then(|s| s.instance_type.clone()))
                    .with_capture(capture_destination(bp)?),
            ),
            monitor: Arc::new(AwsMonitor::new(store, clients.cloudwatch.clone())),
        })
    }
}

/// Where endpoints capture their traffic: with a monitoring stage, whose drift reads what the
/// endpoint really served, under the artifact bucket; otherwise nowhere.
fn capture_destination(bp: &Blueprint) -> Result<Option<String>> {
    if bp.stages.monitoring.is_none() {
        return Ok(None);
    }
    Ok(Some(crate::capture::destination(&artifact_bucket(bp)?)))
}

/// The bucket every aws stage keeps its data in: the blueprint's artifacts stage on aws.
pub fn artifact_bucket(bp: &Blueprint) -> Result<String> {
    match &bp.stages.artifacts {
        Some(a) if bp.stage_platform(Stage::Artifacts) == crate::platform::AWS => Ok(a.bucket.clone()),
        _ => Err(Error::invalid(
            "the aws platform keeps features, runs, pipelines and monitoring data in the artifact bucket: declare `stages.artifacts` on aws",
        )),
    }
}

fn spec(address: &str, kind: &str, stage: Stage, name: &str, desired: Json, depends_on: &[&str], protect: bool) -> ResourceSpec {
    galley_engine::provider::resource(crate::platform::AWS, address, kind, stage, name, desired, depends_on, protect)
}

/// The aws platform's provider, for the CLI's registry (credentials from the blueprint's
/// profile or the standard chain).
pub fn provider(ctx: ProviderContext) -> Arc<dyn Provider> {
    Arc::new(AwsProvider::new(ctx))
}

#[async_trait]
impl Provider for AwsProvider {
    fn rules(&self) -> Arc<dyn galley_blueprint::PlatformRules> {
        crate::rules()
    }

    /// `backend: { type: s3 }`.
    fn state_backend(&self, backend: &galley_blueprint::Backend, bp: &Blueprint) -> Option<Result<Box<dyn galley_engine::StateBackend>>> {
        crate::state_backend::open(backend, bp)
    }

    fn container_contract(&self) -> Option<&'static str> {
        Some("SageMaker (`/opt/ml`, `train`, `serve` on port 8080 with `/ping` and `/invocations`)")
    }

    async fn container(&self, command: &galley_engine::ContainerCommand) -> Result<()> {
        match command {
            galley_engine::ContainerCommand::Train { root } => crate::container::train_in_container(root).map(|_| ()),
            galley_engine::ContainerCommand::Serve { root, bind, port } => crate::container::serve(root, *bind, *port).await,
        }
    }

    /// Inside a pipeline step's container: the region SageMaker's step sets (`AWS_REGION`, which
    /// the pipeline definition puts in every step's environment), the role's credentials from
    /// the default chain, and `AWS_ENDPOINT_URL` when one is set (emulators).
    async fn read_uri(&self, uri: &str) -> Result<Vec<u8>> {
        use galley_core::stages::ArtifactStoreExt;
        let (bucket, key) = crate::artifacts::split_s3_uri(uri)
            .ok_or_else(|| Error::invalid(format!("`{uri}` is not an s3://bucket/key URI")))?;
        let region = ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty())).ok_or_else(|| {
            Error::invalid(format!("reading {uri}: no region; set AWS_REGION (SageMaker sets it for the pipeline's steps)"))
        })?;
        let mut config = AwsConfig::new(region);
        config.endpoint_url = std::env::var("AWS_ENDPOINT_URL").ok().filter(|u| !u.trim().is_empty());
        config.force_path_style = config.endpoint_url.is_some();
        let clients = AwsClients::connect(&config).await?;
        let key = galley_core::stages::ArtifactKey::new(key.to_owned())?;
        Ok(S3Artifacts::new(clients.s3, bucket).get_bytes(&key).await?.to_vec())
    }

    fn expand(&self, bp: &Blueprint, stages: &[Stage]) -> Result<Vec<ResourceSpec>> {
        let settings = AwsConfig::from_blueprint(bp)?;
        let s = &bp.stages;
        let declared = |st: Stage| stages.contains(&st);
        let present = bp.declared_stages();
        let dep = |st: Stage, addr: &'static str| present.contains(&st).then_some(addr);
        // Where every resource lives; never credentials.
        let base = |extra: Json| -> Json {
            let mut v = json!({
                "region": settings.region,
                "endpoint_url": settings.endpoint_url,
                "role_arn": settings.role_arn,
                "profile": match &settings.credentials { CredentialSource::Profile(p) => Some(p.clone()), _ => None },
            });
            if let (Json::Object(m), Json::Object(e)) = (&mut v, extra) {
                m.extend(e);
            }
            v
        };
        let needs_bucket = [Stage::Features, Stage::Experiments, Stage::Pipeline, Stage::Training, Stage::Monitoring]
            .iter()
            .any(|st| declared(*st));
        let bucket = if needs_bucket || declared(Stage::Artifacts) { Some(artifact_bucket(bp)?) } else { None };
        let store_dep: Vec<&str> = dep(Stage::Artifacts, "artifacts.store").into_iter().collect();
        let mut out = Vec::new();

        if let (true, Some(a)) = (declared(Stage::Artifacts), &s.artifacts) {
            out.push(spec("artifacts.store", BUCKET, Stage::Artifacts, &a.bucket,
                base(json!({ "bucket": a.bucket, "versioning": a.versioning.unwrap_or(true), "encryption": a.encryption.unwrap_or(true) })),
                &[], a.common.protect));
        }
        if let (true, Some(f)) = (declared(Stage::Features), &s.features) {
            let features = galley_lifecycle::resolved_features(bp, &self.ctx.project_dir)?;
            let group = galley_lifecycle::feature_group_spec(bp, &features);
            out.push(spec("features.group", FEATURE_GROUP, Stage::Features, &f.group,
                base(json!({ "bucket": bucket, "spec": group, "ttl": f.ttl })), &store_dep, f.common.protect));
        }
        if let (true, Some(e)) = (declared(Stage::Experiments), &s.experiments) {
            out.push(spec("experiments.experiment", EXPERIMENT, Stage::Experiments, &e.name,
                base(json!({ "bucket": bucket, "name": e.name })), &store_dep, e.common.protect));
        }
        if let (true, Some(r)) = (declared(Stage::Registry), &s.registry) {
            out.push(spec("registry.model", MODEL_PACKAGE_GROUP, Stage::Registry, &r.model,
                base(json!({ "model": r.model })), &store_dep, r.common.protect));
        }
        if let (true, Some(sv)) = (declared(Stage::Serving), &s.serving) {
            let deps: Vec<&str> = dep(Stage::Registry, "registry.model").into_iter().collect();
            // Shown in the plan: where `galley run`'s deploy will capture the endpoint's traffic.
            let capture = capture_destination(bp)?;
            out.push(spec("serving.endpoint", ENDPOINT, Stage::Serving, &sv.endpoint,
                base(json!({
                    "endpoint": sv.endpoint,
                    "instance_type": sv.instance_type,
                    "model": sv.model,
                    "data_capture": capture,
                    "autoscaling": galley_lifecycle::actions::scaling(sv),
                })), &deps, sv.common.protect));
        }
        if let (true, Some(m)) = (declared(Stage::Monitoring), &s.monitoring) {
            let name = s.serving.as_ref().map(|sv| sv.endpoint.clone()).unwrap_or_else(|| bp.name.clone());
            let mut deps: Vec<&str> = store_dep.clone();
            deps.extend(dep(Stage::Serving, "serving.endpoint"));
            let alarms: Vec<Json> = m.alarms.iter().map(|a| json!({ "metric": a.metric, "above": a.above })).collect();
            out.push(spec("monitoring.monitor", MONITOR, Stage::Monitoring, &name,
                base(json!({ "bucket": bucket, "name": name, "drift": m.drift, "alarms": alarms })), &deps, m.common.protect));
        }
        if declared(Stage::Pipeline) || (declared(Stage::Training) && s.pipeline.is_none()) {
            let p = galley_lifecycle::pipeline_spec(bp);
            let deps = galley_engine::provider::pipeline_dependencies(bp);
            let protect = s.pipeline.as_ref().map(|p| p.common.protect).unwrap_or(false);
            let training = s.training.as_ref();
            out.push(spec("pipeline.pipeline", PIPELINE, Stage::Pipeline, &p.name.clone(),
                base(json!({
                    "bucket": bucket,
                    // What AWS holds besides the pipeline (its triggers), so a plan names them.
                    "triggers_on_aws": crate::triggers::owned(&p),
                    "spec": p,
                    "image": training.and_then(|t| t.image.clone()),
                    "instance_type": training.and_then(|t| t.instance_type.clone()),
                })), &deps, protect));
        }
        Ok(out)
    }

    fn handler(&self, kind: &str) -> Option<Arc<dyn ResourceHandler>> {
        self.handlers.get(kind).cloned()
    }

    async fn open(&self, bp: &Blueprint, _outputs: &BTreeMap<String, BTreeMap<String, Json>>) -> Result<StageSet> {
        self.stages(bp).await
    }
}

fn attr<'a>(spec: &'a ResourceSpec, key: &str) -> Result<&'a str> {
    spec.desired.get(key).and_then(Json::as_str).ok_or_else(|| Error::internal(format!("resource `{}` has no `{key}` attribute", spec.address)))
}

fn parse<T: serde::de::DeserializeOwned>(spec: &ResourceSpec, key: &str) -> Result<T> {
    let v = spec.desired.get(key).cloned().unwrap_or(Json::Null);
    serde_json::from_value(v).map_err(|e| Error::internal(format!("resource `{}`: bad `{key}`: {e}", spec.address)))
}

fn vanished(spec: &ResourceSpec) -> Error {
    Error::not_found(format!("{} `{}` vanished right after it was created or updated", spec.kind, spec.name))
}

async fn store_for(c: &Connections, spec: &ResourceSpec) -> Result<(AwsClients, S3Artifacts)> {
    let clients = c.for_spec(spec).await?;
    let store = S3Artifacts::new(clients.s3.clone(), attr(spec, "bucket")?);
    Ok((clients, store))
}

// ---- artifacts: the S3 bucket ----------------------------------------------------------------

struct BucketHandler(Connections);

impl BucketHandler {
    async fn configure(&self, clients: &AwsClients, spec: &ResourceSpec) -> Result<()> {
        let flag = |name: &str| spec.desired.get(name).and_then(Json::as_bool).unwrap_or(true);
        crate::bucket::secure(&clients.s3, attr(spec, "bucket")?, flag("versioning"), flag("encryption"), Stage::Artifacts).await
    }

    /// Deletes every object version and delete marker, so the bucket can go.
    async fn empty(&self, clients: &AwsClients, bucket: &str) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        loop {
            let page = clients
                .s3
                .list_object_versions()
                .bucket(bucket)
                .send()
                .await
                .map_err(sdk(Stage::Artifacts, "ListObjectVersions", bucket))?;
            let mut ids = Vec::new();
            for v in page.versions() {
                ids.push(ObjectIdentifier::builder().key(v.key().unwrap_or_default()).set_version_id(v.version_id().map(str::to_owned)).build());
            }
            for m in page.delete_markers() {
                ids.push(ObjectIdentifier::builder().key(m.key().unwrap_or_default()).set_version_id(m.version_id().map(str::to_owned)).build());
            }
            let ids: Vec<ObjectIdentifier> = ids.into_iter().collect::<std::result::Result<_, _>>().map_err(|e| Error::internal(e.to_string()))?;
            if ids.is_empty() {
                break;
            }
            for chunk in ids.chunks(1000) {
                clients
                    .s3
                    .delete_objects()
                    .bucket(bucket)
                    .delete(Delete::builder().set_objects(Some(chunk.to_vec())).quiet(true).build().map_err(|e| Error::internal(e.to_string()))?)
                    .send()
                    .await
                    .map_err(sdk(Stage::Artifacts, "DeleteObjects", bucket))?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ResourceHandler for BucketHandler {
    fn kind(&self) -> &str {
        BUCKET
    }
    fn replace_on(&self) -> &[&str] {
        &["region", "bucket", "endpoint_url"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let clients = self.0.for_spec(spec).await?;
        let bucket = attr(spec, "bucket")?;
        if !crate::bucket::exists(&clients.s3, bucket, Stage::Artifacts).await? {
            return Ok(None);
        }
        let versioning = crate::bucket::versioned(&clients.s3, bucket, Stage::Artifacts).await?;
        let encryption = match clients.s3.get_bucket_encryption().bucket(bucket).send().await {
            Ok(o) => o.server_side_encryption_configuration().is_some_and(|c| !c.rules().is_empty()),
            Err(e) => {
                let e = sdk(Stage::Artifacts, "GetBucketEncryption", bucket)(e);
                if e.kind() == ErrorKind::NotFound { false } else { return Err(e) }
            }
        };
        let mut attributes = spec.desired.clone();
        attributes["versioning"] = json!(versioning);
        attributes["encryption"] = json!(encryption);
        Ok(Some(Observed {
            id: format!("arn:aws:s3:::{bucket}"),
            attributes,
            outputs: BTreeMap::from([("uri".to_owned(), json!(format!("s3://{bucket}"))), ("bucket".to_owned(), json!(bucket))]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let clients = self.0.for_spec(spec).await?;
        let bucket = attr(spec, "bucket")?;
        if self.read(spec).await?.is_none() {
            crate::bucket::create(&clients.s3, clients.region(), bucket, Stage::Artifacts)
                .await
                .map_err(|e| if e.kind() == ErrorKind::Conflict { Error::conflict(format!("{}: choose another `stages.artifacts.bucket`", e.message())) } else { e })?;
        }
        clients
            .s3
            .put_bucket_tagging()
            .bucket(bucket)
            .tagging(
                Tagging::builder()
                    .tag_set(aws_sdk_s3::types::Tag::builder().key(OwnerTag::KEY).value(owner.value()).build().map_err(|e| Error::internal(e.to_string()))?)
                    .build()
                    .map_err(|e| Error::internal(e.to_string()))?,
            )
            .send()
            .await
            .map_err(sdk(Stage::Artifacts, "PutBucketTagging", bucket))?;
        self.configure(&clients, spec).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        let clients = self.0.for_spec(spec).await?;
        self.configure(&clients, spec).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let clients = self.0.for_spec(spec).await?;
        let bucket = attr(spec, "bucket")?;
        if self.read(spec).await?.is_none() {
            return Ok(());
        }
        self.empty(&clients, bucket).await?;
        match clients.s3.delete_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = sdk(Stage::Artifacts, "DeleteBucket", bucket)(e);
                if e.kind() == ErrorKind::NotFound { Ok(()) } else { Err(e) }
            }
        }
    }
}

// ---- features: the Feature Group --------------------------------------------------------------

struct FeatureGroupHandler(Connections);

impl FeatureGroupHandler {
    async fn features(&self, spec: &ResourceSpec) -> Result<SageMakerFeatures> {
        let (clients, store) = store_for(&self.0, spec).await?;
        SageMakerFeatures::new(clients, store, spec.desired.get("ttl").and_then(Json::as_str))
    }
}

#[async_trait]
impl ResourceHandler for FeatureGroupHandler {
    fn kind(&self) -> &str {
        FEATURE_GROUP
    }
    fn replace_on(&self) -> &[&str] {
        &["region", "endpoint_url", "spec", "bucket", "ttl"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let f = self.features(spec).await?;
        Ok(f.describe_group(&spec.name).await?.map(|g| {
            let mut attributes = spec.desired.clone();
            attributes["spec"] = json!(g);
            Observed {
                id: format!("feature-group/{}", g.name),
                attributes,
                outputs: BTreeMap::from([("group".to_owned(), json!(g.name)), ("offline_uri".to_owned(), json!(f.offline_uri(&g.name)))]),
            }
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let group: FeatureGroupSpec = parse(spec, "spec")?;
        self.features(spec).await?.create_tagged(&group, vec![tag(OwnerTag::KEY, &owner.value())]).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        self.features(spec).await?.delete_group(&spec.name).await
    }
}

// ---- experiments: the Experiment ----------------------------------------------------------------

struct ExperimentHandler(Connections);

#[async_trait]
impl ResourceHandler for ExperimentHandler {
    fn kind(&self) -> &str {
        EXPERIMENT
    }
    fn replace_on(&self) -> &[&str] {
        &["region", "endpoint_url", "name", "bucket"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let (clients, store) = store_for(&self.0, spec).await?;
        let name = attr(spec, "name")?;
        Ok(SageMakerExperiments::new(clients, store).get_experiment(name).await?.map(|id| Observed {
            id: format!("experiment/{id}"),
            attributes: spec.desired.clone(),
            outputs: BTreeMap::from([("experiment_id".to_owned(), json!(id)), ("name".to_owned(), json!(name))]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let (clients, store) = store_for(&self.0, spec).await?;
        SageMakerExperiments::new(clients, store).create_tagged(attr(spec, "name")?, vec![tag(OwnerTag::KEY, &owner.value())]).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let (clients, store) = store_for(&self.0, spec).await?;
        SageMakerExperiments::new(clients, store).delete_experiment(attr(spec, "name")?).await
    }
}

// ---- pipeline: the SageMaker Pipeline ------------------------------------------------------------

struct PipelineHandler(Connections);

impl PipelineHandler {
    async fn pipelines(&self, spec: &ResourceSpec) -> Result<(AwsClients, SageMakerPipelines)> {
        let (clients, store) = store_for(&self.0, spec).await?;
        let image = spec.desired.get("image").and_then(Json::as_str).map(str::to_owned);
        let instance = spec.desired.get("instance_type").and_then(Json::as_str).map(str::to_owned);
        Ok((clients.clone(), SageMakerPipelines::new(clients, store, image, instance)))
    }
}

#[async_trait]
impl ResourceHandler for PipelineHandler {
    fn kind(&self) -> &str {
        PIPELINE
    }
    fn replace_on(&self) -> &[&str] {
        &["region", "endpoint_url", "bucket"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let (clients, p) = self.pipelines(spec).await?;
        let Some(found) = p.describe_pipeline(&spec.name).await? else { return Ok(None) };
        let arn = clients
            .sagemaker
            .describe_pipeline()
            .pipeline_name(&spec.name)
            .send()
            .await
            .map_err(sdk(Stage::Pipeline, "DescribePipeline", &spec.name))?
            .pipeline_arn()
            .unwrap_or_default()
            .to_owned();
        let mut attributes = spec.desired.clone();
        attributes["triggers_on_aws"] = json!(crate::triggers::owned(&found));
        attributes["spec"] = json!(found);
        Ok(Some(Observed {
            id: arn.clone(),
            attributes,
            outputs: BTreeMap::from([("name".to_owned(), json!(found.name)), ("arn".to_owned(), json!(arn))]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let (clients, p) = self.pipelines(spec).await?;
        let pipeline: PipelineSpec = parse(spec, "spec")?;
        p.upsert_pipeline(&pipeline).await?;
        let observed = self.read(spec).await?.ok_or_else(|| vanished(spec))?;
        clients
            .sagemaker
            .add_tags()
            .resource_arn(&observed.id)
            .tags(tag(OwnerTag::KEY, &owner.value()))
            .send()
            .await
            .map_err(sdk(Stage::Pipeline, "AddTags", &spec.name))?;
        Ok(observed)
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        let (_, p) = self.pipelines(spec).await?;
        p.upsert_pipeline(&parse(spec, "spec")?).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let (_, p) = self.pipelines(spec).await?;
        p.delete_pipeline(&spec.name).await
    }
}

// ---- registry: the Model Package Group -----------------------------------------------------------

struct ModelPackageGroupHandler(Connections);

#[async_trait]
impl ResourceHandler for ModelPackageGroupHandler {
    fn kind(&self) -> &str {
        MODEL_PACKAGE_GROUP
    }
    fn replace_on(&self) -> &[&str] {
        &["region", "endpoint_url", "model"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let r = SageMakerRegistry::new(self.0.for_spec(spec).await?, None);
        let model = attr(spec, "model")?;
        Ok(r.group_arn(model).await?.map(|arn| Observed {
            id: arn.clone(),
            attributes: spec.desired.clone(),
            outputs: BTreeMap::from([("model".to_owned(), json!(model)), ("model_id".to_owned(), json!(arn))]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let r = SageMakerRegistry::new(self.0.for_spec(spec).await?, None);
        let description = format!("managed by galley ({})", owner.value());
        r.create_group(attr(spec, "model")?, Some(&description), vec![tag(OwnerTag::KEY, &owner.value())]).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        SageMakerRegistry::new(self.0.for_spec(spec).await?, None).delete_model(attr(spec, "model")?).await
    }
}

// ---- serving: the endpoint ------------------------------------------------------------------------

/// The endpoint under Galley's management. Nothing is deployable before `galley run` has
/// trained and registered a model, so apply reserves the name (no call), `galley run`
/// deploys, and destroy removes the endpoint and every Model and EndpointConfig tagged for it.
struct EndpointHandler(Connections);

impl EndpointHandler {
    /// A deployed endpoint takes the blueprint's autoscaling at apply, with no redeploy.
    async fn rescale(&self, spec: &ResourceSpec) -> Result<()> {
        let scaling: Option<galley_core::stages::Scaling> = parse(spec, "autoscaling")?;
        SageMakerServing::new(self.0.for_spec(spec).await?, None, None).rescale(attr(spec, "endpoint")?, scaling.as_ref()).await
    }
}

#[async_trait]
impl ResourceHandler for EndpointHandler {
    fn kind(&self) -> &str {
        ENDPOINT
    }
    fn replace_on(&self) -> &[&str] {
        &["region", "endpoint_url", "endpoint"]
    }
    /// The endpoint itself is made by `galley run`'s deploy; until then it reads as
    /// `not_deployed` with the attributes asked for. Once deployed, `autoscaling` is what
    /// Application Auto Scaling holds, so a change made outside Galley shows as drift.
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let serving = SageMakerServing::new(self.0.for_spec(spec).await?, None, None);
        let endpoint = attr(spec, "endpoint")?;
        let live = serving.describe(endpoint).await?;
        let mut outputs = BTreeMap::from([("endpoint".to_owned(), json!(endpoint))]);
        let mut attributes = spec.desired.clone();
        match &live {
            Some(info) => {
                outputs.insert("url".to_owned(), json!(info.url));
                outputs.insert("state".to_owned(), json!(info.state));
                outputs.insert("signature".to_owned(), serde_json::to_value(&info.signature)?);
                attributes["autoscaling"] = serde_json::to_value(&info.scaling)?;
                outputs.insert("autoscaling".to_owned(), serde_json::to_value(&info.scaling)?);
            }
            None => {
                outputs.insert("state".to_owned(), json!("not_deployed"));
            }
        }
        Ok(Some(Observed { id: format!("endpoint/{endpoint}"), attributes, outputs }))
    }
    async fn create(&self, spec: &ResourceSpec, _owner: &OwnerTag) -> Result<Observed> {
        self.rescale(spec).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        self.rescale(spec).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        SageMakerServing::new(self.0.for_spec(spec).await?, None, None).undeploy(attr(spec, "endpoint")?).await
    }
}

// ---- monitoring: CloudWatch alarms (and the monitor's data in the bucket) ------------------------

#[derive(serde::Deserialize)]
struct AlarmSpec {
    metric: String,
    above: f64,
}

struct MonitorHandler(Connections);

impl MonitorHandler {
    async fn monitor(&self, spec: &ResourceSpec) -> Result<AwsMonitor> {
        let (clients, store) = store_for(&self.0, spec).await?;
        Ok(AwsMonitor::new(store, clients.cloudwatch.clone()))
    }
    fn alarm_names(spec: &ResourceSpec) -> Result<Vec<String>> {
        let name = attr(spec, "name")?;
        let alarms: Vec<AlarmSpec> = parse(spec, "alarms")?;
        Ok(alarms.iter().map(|a| alarm_name(name, &a.metric)).collect())
    }
    async fn put_alarms(&self, spec: &ResourceSpec, owner: &str) -> Result<()> {
        let m = self.monitor(spec).await?;
        let name = attr(spec, "name")?;
        for a in parse::<Vec<AlarmSpec>>(spec, "alarms")? {
            m.put_alarm(name, &a.metric, a.above, owner).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ResourceHandler for MonitorHandler {
    fn kind(&self) -> &str {
        MONITOR
    }
    fn replace_on(&self) -> &[&str] {
        &["region", "endpoint_url", "name", "bucket"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let m = self.monitor(spec).await?;
        let wanted = Self::alarm_names(spec)?;
        let existing = m.existing_alarms(&wanted).await?;
        // With alarms declared, the monitor exists when its alarms do.
        if !wanted.is_empty() && existing.is_empty() {
            return Ok(None);
        }
        let mut attributes = spec.desired.clone();
        attributes["existing_alarms"] = json!(existing);
        Ok(Some(Observed {
            id: format!("monitor/{}", attr(spec, "name")?),
            attributes,
            outputs: BTreeMap::from([
                ("monitor".to_owned(), json!(attr(spec, "name")?)),
                ("alarms".to_owned(), json!(existing)),
                ("namespace".to_owned(), json!(crate::monitor::NAMESPACE)),
            ]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        self.put_alarms(spec, &owner.value()).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn update(&self, spec: &ResourceSpec, current: &Observed) -> Result<Observed> {
        // Alarms the blueprint no longer lists go.
        let wanted = Self::alarm_names(spec)?;
        let stale: Vec<String> = current
            .attributes
            .get("existing_alarms")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(Json::as_str).filter(|n| !wanted.iter().any(|w| w == n)).map(str::to_owned).collect())
            .unwrap_or_default();
        let m = self.monitor(spec).await?;
        m.delete_alarms(&stale).await?;
        let owner = format!("galley-managed/{}", spec.address);
        self.put_alarms(spec, &owner).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        use galley_core::Monitor as _;
        let m = self.monitor(spec).await?;
        m.delete_alarms(&Self::alarm_names(spec)?).await?;
        // The baseline and recorded inferences go with the monitor (a missing bucket is fine).
        match m.delete(attr(spec, "name")?).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
