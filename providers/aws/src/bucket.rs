//! Creating and securing an S3 bucket, the one way for both buckets Galley makes: the artifact
//! bucket (a resource `apply` manages) and the state bucket (`galley init`, before any state).

use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    VersioningConfiguration,
};
use galley_core::{Error, ErrorKind, Result, Stage};

use crate::error::sdk;

/// Whether `bucket` exists (and this account may see it).
pub async fn exists(s3: &aws_sdk_s3::Client, bucket: &str, stage: Stage) -> Result<bool> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = sdk(stage, "HeadBucket", bucket)(e);
            if e.kind() == ErrorKind::NotFound { Ok(false) } else { Err(e) }
        }
    }
}

/// Creates `bucket` in `region`; `Ok(false)` when S3 says this account already owns it (which
/// us-east-1 does not say: there a repeated CreateBucket succeeds, so ask [`exists`] first).
pub async fn create(s3: &aws_sdk_s3::Client, region: &str, bucket: &str, stage: Stage) -> Result<bool> {
    let mut req = s3.create_bucket().bucket(bucket);
    // us-east-1 is the one region that refuses an explicit location constraint.
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region)).build(),
        );
    }
    match req.send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = sdk(stage, "CreateBucket", bucket)(e);
            match e.kind() {
                ErrorKind::AlreadyExists => Ok(false),
                ErrorKind::Conflict => Err(Error::conflict(format!(
                    "bucket `{bucket}` is taken by another AWS account (bucket names are global); choose another name"
                ))),
                _ => Err(e),
            }
        }
    }
}

/// Versioning as asked, default encryption (SSE-S3) when asked, and public access blocked:
/// nothing Galley keeps is ever public.
pub async fn secure(s3: &aws_sdk_s3::Client, bucket: &str, versioning: bool, encryption: bool, stage: Stage) -> Result<()> {
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(if versioning { BucketVersioningStatus::Enabled } else { BucketVersioningStatus::Suspended })
                .build(),
        )
        .send()
        .await
        .map_err(sdk(stage, "PutBucketVersioning", bucket))?;
    if encryption {
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256).build().map_err(|e| Error::internal(e.to_string()))?,
            )
            .build();
        s3.put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(ServerSideEncryptionConfiguration::builder().rules(rule).build().map_err(|e| Error::internal(e.to_string()))?)
            .send()
            .await
            .map_err(sdk(stage, "PutBucketEncryption", bucket))?;
    }
    s3.put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(sdk(stage, "PutPublicAccessBlock", bucket))?;
    Ok(())
}

/// Whether versioning is enabled on `bucket`.
pub async fn versioned(s3: &aws_sdk_s3::Client, bucket: &str, stage: Stage) -> Result<bool> {
    let out = s3.get_bucket_versioning().bucket(bucket).send().await.map_err(sdk(stage, "GetBucketVersioning", bucket))?;
    Ok(out.status() == Some(&BucketVersioningStatus::Enabled))
}
