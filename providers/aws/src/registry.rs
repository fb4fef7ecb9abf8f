//! The model registry on SageMaker: a registered model is a Model Package Group, a version is
//! a versioned Model Package (SageMaker numbers them 1, 2, …), and promotion is the package's
//! `ModelApprovalStatus`. SageMaker has no aliases: those calls answer `Unsupported`.
//!
//! What SageMaker has no field for (metrics as Galley reports them, lineage, signature, the
//! artifact URI when it is not on S3) is kept in the package's customer metadata, encoded by
//! [`crate::meta`].

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_sagemaker::types::{
    ModelPackageContainerDefinition, InferenceSpecification, ModelApprovalStatus, ModelPackageType, Tag,
};
use futures::StreamExt;
use galley_core::stages::{ApprovalStatus, Described, Lineage, ModelRegistry, ModelVersion, NewModelVersion, Signature};
use galley_core::{Error, ErrorKind, Result, Stage};
use serde::{Deserialize, Serialize};

use crate::config::AwsClients;
use crate::error::sdk;

const META: &str = "galley.meta";

/// What Galley keeps with each version beyond SageMaker's own fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionMeta {
    artifact_uri: String,
    metrics: BTreeMap<String, f64>,
    lineage: Lineage,
    signature: Signature,
}

#[derive(Clone, Debug)]
pub struct SageMakerRegistry {
    clients: AwsClients,
    /// The serving container recorded in each package's inference specification, when set.
    image: Option<String>,
}

impl SageMakerRegistry {
    pub fn new(clients: AwsClients, image: Option<String>) -> Self {
        SageMakerRegistry { clients, image }
    }

    /// Creates the group with `tags` unless it exists.
    pub async fn create_group(&self, name: &str, description: Option<&str>, tags: Vec<Tag>) -> Result<()> {
        if self.model_exists(name).await? {
            return Ok(());
        }
        let r = self
            .clients
            .sagemaker
            .create_model_package_group()
            .model_package_group_name(name)
            .set_model_package_group_description(description.map(str::to_owned))
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(sdk(Stage::Registry, "CreateModelPackageGroup", name));
        match r {
            Ok(_) => Ok(()),
            // Created concurrently by someone else: get-or-create holds.
            Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The group's ARN, or `None`.
    pub async fn group_arn(&self, name: &str) -> Result<Option<String>> {
        match self.clients.sagemaker.describe_model_package_group().model_package_group_name(name).send().await {
            Ok(out) => Ok(out.model_package_group_arn().map(str::to_owned)),
            Err(e) => {
                let e = sdk(Stage::Registry, "DescribeModelPackageGroup", name)(e);
                if is_missing(&e) { Ok(None) } else { Err(e) }
            }
        }
    }

    /// (version, ARN) of every package in the group, in version order.
    async fn packages(&self, model: &str) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .clients
                .sagemaker
                .list_model_packages()
                .model_package_group_name(model)
                .model_package_type(ModelPackageType::Versioned)
                .set_next_token(token)
                .max_results(100)
                .send()
                .await
                .map_err(sdk(Stage::Registry, "ListModelPackages", model))?;
            for p in page.model_package_summary_list() {
                let arn = p.model_package_arn().unwrap_or_default().to_owned();
                let version = p.model_package_version().map(|v| v as u64).or_else(|| version_of(&arn));
                if let Some(v) = version {
                    out.push((v, arn));
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out.sort();
        Ok(out)
    }

    async fn arn_of(&self, model: &str, version: u64) -> Result<String> {
        self.packages(model).await?.into_iter().find(|(v, _)| *v == version).map(|(_, a)| a).ok_or_else(|| {
            Error::not_found(format!("model `{model}` has no version {version} in the SageMaker model registry"))
        })
    }

    async fn describe(&self, model: &str, arn: &str) -> Result<ModelVersion> {
        let d = self
            .clients
            .sagemaker
            .describe_model_package()
            .model_package_name(arn)
            .send()
            .await
            .map_err(sdk(Stage::Registry, "DescribeModelPackage", arn))?;
        let custom: HashMap<String, String> = d.customer_metadata_properties().cloned().unwrap_or_default();
        let meta: Option<VersionMeta> = crate::meta::decode(META, &custom)?;
        let artifact_from_spec = d
            .inference_specification()
            .and_then(|s| s.containers().first())
            .and_then(|c| c.model_data_url())
            .map(str::to_owned);
        let version = d.model_package_version().map(|v| v as u64).or_else(|| version_of(arn)).unwrap_or(0);
        let meta = meta.unwrap_or(VersionMeta {
            artifact_uri: artifact_from_spec.unwrap_or_default(),
            metrics: BTreeMap::new(),
            lineage: Lineage::default(),
            signature: Signature::default(),
        });
        Ok(ModelVersion {
            model: model.to_owned(),
            version,
            artifact_uri: meta.artifact_uri,
            metrics: meta.metrics,
            lineage: meta.lineage,
            signature: meta.signature,
            approval: match d.model_approval_status() {
                Some(ModelApprovalStatus::Approved) => ApprovalStatus::Approved,
                Some(ModelApprovalStatus::Rejected) => ApprovalStatus::Rejected,
                _ => ApprovalStatus::PendingManualApproval,
            },
            aliases: Vec::new(),
            created_ms: d.creation_time().and_then(|t| t.to_millis().ok()).unwrap_or(0),
        })
    }

    fn no_aliases(model: &str) -> Error {
        Error::unsupported(format!(
            "model `{model}`: the SageMaker model registry has no aliases; promotion on aws is the version's approval status (`registry.promotion: approval`)"
        ))
        .platform(crate::platform::AWS)
        .stage(Stage::Registry)
    }
}

/// SageMaker says "does not exist" for a missing group in several ways.
fn is_missing(e: &Error) -> bool {
    e.kind() == ErrorKind::NotFound
        || (e.kind() == ErrorKind::InvalidInput && (e.message().contains("does not exist") || e.message().contains("not found")))
}

/// The version number at the end of a versioned package ARN (`…/group/3`).
pub fn version_of(arn: &str) -> Option<u64> {
    arn.rsplit('/').next()?.parse().ok()
}

impl Described for SageMakerRegistry {
    fn capabilities(&self) -> galley_core::Capabilities {
        crate::platform::capabilities()
    }
}

#[async_trait]
impl ModelRegistry for SageMakerRegistry {
    async fn create_model(&self, name: &str, description: Option<&str>) -> Result<()> {
        self.create_group(name, description, Vec::new()).await
    }

    async fn delete_model(&self, name: &str) -> Result<()> {
        if self.group_arn(name).await?.is_none() {
            return Ok(());
        }
        // A group with versions cannot be deleted: remove them first.
        for (_, arn) in self.packages(name).await? {
            let r = self.clients.sagemaker.delete_model_package().model_package_name(&arn).send().await;
            if let Err(e) = r {
                let e = sdk(Stage::Registry, "DeleteModelPackage", &arn)(e);
                if !is_missing(&e) {
                    return Err(e);
                }
            }
        }
        match self.clients.sagemaker.delete_model_package_group().model_package_group_name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = sdk(Stage::Registry, "DeleteModelPackageGroup", name)(e);
                if is_missing(&e) { Ok(()) } else { Err(e) }
            }
        }
    }

    async fn model_exists(&self, name: &str) -> Result<bool> {
        Ok(self.group_arn(name).await?.is_some())
    }

    async fn register_version(&self, model: &str, version: &NewModelVersion) -> Result<ModelVersion> {
        if !self.model_exists(model).await? {
            return Err(Error::not_found(format!(
                "model `{model}` is not registered (no SageMaker model package group of that name); create it first"
            )));
        }
        let meta = VersionMeta {
            artifact_uri: version.artifact_uri.clone(),
            metrics: version.metrics.clone(),
            lineage: version.lineage.clone(),
            signature: version.signature.clone(),
        };
        let custom: HashMap<String, String> = crate::meta::encode(META, &meta, 50)?.into_iter().collect();
        // SageMaker can deploy a package only with an inference specification, which needs
        // the model on S3 and a serving image.
        let inference = match (&self.image, version.artifact_uri.starts_with("s3://")) {
            (Some(image), true) => Some(
                InferenceSpecification::builder()
                    .containers(ModelPackageContainerDefinition::builder().image(image).model_data_url(&version.artifact_uri).build())
                    .supported_content_types("application/json")
                    .supported_response_mime_types("application/json")
                    .build(),
            ),
            _ => None,
        };
        let out = self
            .clients
            .sagemaker
            .create_model_package()
            .model_package_group_name(model)
            .set_model_package_description(version.description.clone().map(|d| d.chars().take(1000).collect()))
            .model_approval_status(ModelApprovalStatus::PendingManualApproval)
            .set_customer_metadata_properties(Some(custom))
            .set_inference_specification(inference)
            .send()
            .await
            .map_err(sdk(Stage::Registry, "CreateModelPackage", model))?;
        let arn = out
            .model_package_arn()
            .ok_or_else(|| Error::internal(format!("SageMaker returned no ARN for the new version of `{model}`")))?;
        self.describe(model, arn).await
    }

    async fn get_version(&self, model: &str, version: u64) -> Result<ModelVersion> {
        let arn = self.arn_of(model, version).await?;
        self.describe(model, &arn).await
    }

    async fn list_versions(&self, model: &str) -> Result<Vec<ModelVersion>> {
        let arns = self.packages(model).await?;
        let described: Vec<Result<ModelVersion>> = futures::stream::iter(arns.into_iter().map(|(_, arn)| {
            let this = self.clone();
            let model = model.to_owned();
            async move { this.describe(&model, &arn).await }
        }))
        .buffered(8)
        .collect()
        .await;
        described.into_iter().collect()
    }

    async fn set_approval(&self, model: &str, version: u64, status: ApprovalStatus) -> Result<()> {
        let arn = self.arn_of(model, version).await?;
        let status = match status {
            ApprovalStatus::Approved => ModelApprovalStatus::Approved,
            ApprovalStatus::Rejected => ModelApprovalStatus::Rejected,
            ApprovalStatus::PendingManualApproval => ModelApprovalStatus::PendingManualApproval,
        };
        // The version's record is sent again with its new status: SageMaker keeps metadata an
        // update leaves out, but moto (the test substrate) replaces it with nothing, which
        // would deploy the version with no signature. Sending what is there changes nothing.
        let record = self
            .clients
            .sagemaker
            .describe_model_package()
            .model_package_name(&arn)
            .send()
            .await
            .map_err(sdk(Stage::Registry, "DescribeModelPackage", &arn))?
            .customer_metadata_properties()
            .cloned();
        self.clients
            .sagemaker
            .update_model_package()
            .model_package_arn(&arn)
            .model_approval_status(status)
            .set_customer_metadata_properties(record)
            .send()
            .await
            .map_err(sdk(Stage::Registry, "UpdateModelPackage", &arn))?;
        Ok(())
    }

    async fn set_alias(&self, model: &str, _alias: &str, _version: u64) -> Result<()> {
        Err(Self::no_aliases(model))
    }

    async fn remove_alias(&self, model: &str, _alias: &str) -> Result<()> {
        Err(Self::no_aliases(model))
    }

    async fn get_by_alias(&self, model: &str, _alias: &str) -> Result<Option<ModelVersion>> {
        Err(Self::no_aliases(model))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_read_from_the_package_arn() {
        assert_eq!(super::version_of("arn:aws:sagemaker:eu-west-1:123456789012:model-package/wine/12"), Some(12));
        assert_eq!(super::version_of("arn:aws:sagemaker:eu-west-1:123456789012:model-package/wine"), None);
    }
}
