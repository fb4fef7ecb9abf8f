//! The artifact store on S3: streamed uploads (multipart past one part), SHA-256 checksums
//! checked by S3 on the way in and by Galley on the way out.
//!
//! Every object carries its whole-content SHA-256 as `x-amz-meta-galley-sha256`. S3 keeps only
//! per-part checksums for multipart uploads and its metadata is fixed when the upload starts,
//! so a large upload goes to a staging key first and is then copied (server-side) to its key
//! with the digest: readers see the old object or the complete new one, never a part. The
//! staging object is then deleted by its version id, which in a versioned bucket removes it for
//! good (a plain delete would only hide it behind a delete marker and keep a full-size
//! noncurrent version, billed forever).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use galley_core::stages::{ArtifactKey, ArtifactMeta, ArtifactStore, ArtifactVersion, ByteStream, Described};
use galley_core::{Error, ErrorKind, Result, Stage};
use sha2::{Digest, Sha256};

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::sdk;

/// S3's minimum part size; bodies shorter than one part go up in a single PutObject.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Where multipart uploads land before they are copied to their key (never listed).
pub const STAGING_PREFIX: &str = ".galley-staging/";
pub const SHA256_META: &str = "galley-sha256";

/// `base64(sha256(bytes))`, the form S3's `x-amz-checksum-sha256` takes.
fn b64_sha256(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(Sha256::digest(bytes))
}

/// `s3://bucket/key` as its bucket and key.
pub fn split_s3_uri(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix("s3://").and_then(|rest| rest.split_once('/')).filter(|(b, k)| !b.is_empty() && !k.is_empty())
}

#[derive(Clone, Debug)]
pub struct S3Artifacts {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Artifacts {
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Artifacts { s3, bucket: bucket.into() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn err<E>(&self, op: &'static str, key: &str) -> impl FnOnce(SdkError<E, HttpResponse>) -> Error + use<E>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        sdk(Stage::Artifacts, op, &self.uri(key))
    }

    async fn put_single(&self, key: &str, body: Bytes, sha_hex: &str) -> Result<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_sha256(b64_sha256(&body))
            .metadata(SHA256_META, sha_hex)
            .body(S3Body::from(body))
            .send()
            .await
            .map_err(self.err("PutObject", key))?;
        Ok(())
    }

    /// Streams `first` and the rest of `rest` as a multipart upload to a staging key, then
    /// copies it to `key` with its digest. Aborts the upload on any failure.
    /// `hasher` has seen `first` and `leftover` (read past the first part); only what comes
    /// from `rest` is hashed here.
    async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        leftover: BytesMut,
        mut rest: ByteStream,
        mut hasher: Sha256,
    ) -> Result<(u64, String)> {
        let staging = format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let upload = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&staging)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(self.err("CreateMultipartUpload", key))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| Error::internal(format!("S3 gave no upload id for {}", self.uri(key))))?
            .to_owned();
        let result = async {
            let mut parts = Vec::new();
            let mut size = (first.len() + leftover.len()) as u64;
            parts.push(self.upload_part(&staging, &upload_id, 1, first).await?);
            let mut buf = leftover;
            loop {
                let next = rest.next().await.transpose()?;
                if let Some(chunk) = &next {
                    hasher.update(chunk);
                    size += chunk.len() as u64;
                    buf.extend_from_slice(chunk);
                }
                let done = next.is_none();
                while buf.len() >= PART_SIZE || (done && !buf.is_empty()) {
                    let take = buf.len().min(PART_SIZE);
                    let part = buf.split_to(take).freeze();
                    let n = parts.len() as i32 + 1;
                    parts.push(self.upload_part(&staging, &upload_id, n, part).await?);
                }
                if done {
                    break;
                }
            }
            let completed = self
                .s3
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&staging)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(self.err("CompleteMultipartUpload", key))?;
            Ok::<_, Error>((size, completed.version_id().map(str::to_owned)))
        }
        .await;
        let (size, staging_version) = match result {
            Ok(done) => done,
            Err(e) => {
                // Best effort: S3 keeps an abandoned upload's parts (and bills them) until it is
                // aborted; one that fails here shows in ListMultipartUploads.
                if let Err(abort) = self.s3.abort_multipart_upload().bucket(&self.bucket).key(&staging).upload_id(&upload_id).send().await {
                    tracing::warn!("could not abort the multipart upload {upload_id} of {}: {abort}", self.uri(&staging));
                }
                return Err(e);
            }
        };
        let sha_hex = hex::encode(hasher.finalize());
        let copied = self
            .s3
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(copy_source(&self.bucket, &staging))
            .metadata_directive(MetadataDirective::Replace)
            .metadata(SHA256_META, &sha_hex)
            // S3 computes a full-object SHA-256 for the copy, which GetObject then verifies
            // (a multipart upload only has per-part checksums).
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(self.err("CopyObject", key));
        let removed = self.s3.delete_object().bucket(&self.bucket).key(&staging).set_version_id(staging_version).send().await;
        if let Err(e) = removed {
            tracing::warn!("could not delete the staging copy {}: {e}; delete it by hand", self.uri(&staging));
        }
        copied?;
        Ok((size, sha_hex))
    }

    async fn upload_part(&self, key: &str, upload_id: &str, n: i32, body: Bytes) -> Result<CompletedPart> {
        let checksum = b64_sha256(&body);
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(n)
            .checksum_sha256(&checksum)
            .body(S3Body::from(body))
            .send()
            .await
            .map_err(self.err("UploadPart", key))?;
        Ok(CompletedPart::builder()
            .part_number(n)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .checksum_sha256(out.checksum_sha256().unwrap_or(&checksum))
            .build())
    }

    async fn meta_of(&self, key: &str) -> Result<ArtifactMeta> {
        let head = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(self.err("HeadObject", key))?;
        let size = head.content_length().unwrap_or(0).max(0) as u64;
        let sha256 = match head.metadata().and_then(|m| m.get(SHA256_META)) {
            Some(s) => s.clone(),
            // Written by something other than Galley: hash it once, by reading it.
            None => self.hash_object(key).await?,
        };
        Ok(ArtifactMeta {
            key: key.to_owned(),
            size,
            sha256,
            uri: self.uri(key),
            modified_ms: head.last_modified().map(|t| t.to_millis().unwrap_or(0)).unwrap_or(0),
            encryption: head.server_side_encryption().map(|e| e.as_str().to_owned()),
        })
    }

    async fn hash_object(&self, key: &str) -> Result<String> {
        let mut s = self.stream(key, None).await?;
        let mut h = Sha256::new();
        while let Some(chunk) = s.next().await {
            h.update(&chunk?);
        }
        Ok(hex::encode(h.finalize()))
    }

    /// The object's bytes (`version`: an earlier version), checked against the SHA-256 it was
    /// written with as they are read.
    async fn stream(&self, key: &str, version: Option<&str>) -> Result<ByteStream> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(self.err("GetObject", key))?;
        let expect = out.metadata().and_then(|m| m.get(SHA256_META)).cloned();
        let uri = self.uri(key);
        let state = (out.body, Sha256::new(), expect, uri, false);
        Ok(futures::stream::unfold(state, |(mut body, mut h, expect, uri, done)| async move {
            if done {
                return None;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    h.update(&chunk);
                    Some((Ok(chunk), (body, h, expect, uri, false)))
                }
                Some(Err(e)) => Some((
                    Err(Error::new(ErrorKind::Unavailable, format!("reading {uri} failed half-way")).with_source(e)),
                    (body, h, expect, uri, true),
                )),
                None => {
                    let got = hex::encode(h.clone().finalize());
                    match &expect {
                        Some(want) if *want != got => Some((
                            Err(Error::corrupt(format!(
                                "{uri}: the bytes read hash to sha256 {got}, but the object was written with {want}; it is damaged or was changed outside galley"
                            ))),
                            (body, h, expect, uri, true),
                        )),
                        _ => None,
                    }
                }
            }
        })
        .boxed())
    }
}

/// `bucket/key` with the key percent-encoded, as CopyObject's `x-amz-copy-source` wants.
pub fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", percent_path(key))
}

/// Percent-encodes everything but unreserved characters and `/`.
fn percent_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Refuses list prefixes that could name something outside the store.
fn check_prefix(prefix: &str) -> Result<()> {
    let refuse = |why: &str| Err(Error::invalid(format!("list prefix `{prefix}` is refused: {why}")));
    if prefix.starts_with('/') {
        return refuse("absolute paths are not allowed");
    }
    if prefix.contains('\\') || prefix.contains('\0') {
        return refuse("backslashes and NUL bytes are not allowed");
    }
    if prefix.split('/').any(|s| s == "..") {
        return refuse("`..` segments are not allowed");
    }
    Ok(())
}

impl Described for S3Artifacts {
    fn capabilities(&self) -> galley_core::Capabilities {
        crate::platform::capabilities()
    }
}

#[async_trait]
impl ArtifactStore for S3Artifacts {
    async fn put(&self, key: &ArtifactKey, mut body: ByteStream) -> Result<ArtifactMeta> {
        let k = key.as_str();
        let mut hasher = Sha256::new();
        let mut buf = BytesMut::new();
        let mut ended = false;
        while buf.len() < PART_SIZE {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    hasher.update(&chunk);
                    buf.extend_from_slice(&chunk);
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            let bytes = buf.freeze();
            let sha = hex::encode(hasher.finalize());
            self.put_single(k, bytes.clone(), &sha).await?;
        } else {
            let first = buf.split_to(PART_SIZE).freeze();
            self.put_multipart(k, first, buf, body, hasher).await?;
        }
        self.meta_of(k).await
    }

    async fn get(&self, key: &ArtifactKey) -> Result<ByteStream> {
        self.stream(key.as_str(), None).await
    }

    async fn head(&self, key: &ArtifactKey) -> Result<ArtifactMeta> {
        self.meta_of(key.as_str()).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactMeta>> {
        let keys = self.keys(prefix).await?;
        let heads: Vec<_> = keys.into_iter().map(|k| {
            let this = self.clone();
            async move { this.meta_of(&k).await }
        }).collect();
        let metas: Vec<Result<ArtifactMeta>> = futures::stream::iter(heads).buffered(8).collect().await;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            match m {
                Ok(m) => out.push(m),
                // Deleted between the listing and the head: not there any more.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &ArtifactKey) -> Result<()> {
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(self.err("DeleteObject", key.as_str()))?;
        Ok(())
    }

    async fn copy(&self, from: &ArtifactKey, to: &ArtifactKey) -> Result<ArtifactMeta> {
        let src = self.meta_of(from.as_str()).await?;
        self.s3
            .copy_object()
            .bucket(&self.bucket)
            .key(to.as_str())
            .copy_source(copy_source(&self.bucket, from.as_str()))
            .metadata_directive(MetadataDirective::Replace)
            .metadata(SHA256_META, &src.sha256)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(self.err("CopyObject", to.as_str()))?;
        self.meta_of(to.as_str()).await
    }

    /// ListObjectVersions for exactly `key` (the bucket is versioned unless the blueprint said
    /// `versioning: false`); delete markers are not versions.
    async fn versions(&self, key: &ArtifactKey) -> Result<Vec<ArtifactVersion>> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .s3
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key.as_str())
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(self.err("ListObjectVersions", key.as_str()))?;
            for v in page.versions().iter().filter(|v| v.key() == Some(key.as_str())) {
                out.push(ArtifactVersion {
                    version_id: v.version_id().unwrap_or("null").to_owned(),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    modified_ms: v.last_modified().and_then(|t| t.to_millis().ok()).unwrap_or(0),
                    latest: v.is_latest().unwrap_or(false),
                });
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
        }
        if out.is_empty() {
            return Err(Error::not_found(format!("no versions of {}", self.uri(key.as_str()))));
        }
        // Newest first, with the current version ahead of any tie.
        out.sort_by(|a, b| b.modified_ms.cmp(&a.modified_ms).then(b.latest.cmp(&a.latest)));
        Ok(out)
    }

    async fn get_version(&self, key: &ArtifactKey, version_id: &str) -> Result<ByteStream> {
        self.stream(key.as_str(), Some(version_id)).await
    }
}

impl S3Artifacts {
    /// The raw metadata of an object (for tests and the state backend).
    /// The keys under `prefix`, sorted, without reading each object's metadata (which
    /// `list` does): for objects Galley did not write, such as SageMaker's capture files.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        check_prefix(prefix)?;
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(self.err("ListObjectsV2", prefix))?;
            for o in page.contents() {
                if let Some(k) = o.key()
                    && !k.starts_with(STAGING_PREFIX)
                    && ArtifactKey::new(k).is_ok()
                {
                    keys.push(k.to_owned());
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub async fn object_metadata(&self, key: &str) -> Result<HashMap<String, String>> {
        let head = self.s3.head_object().bucket(&self.bucket).key(key).send().await.map_err(self.err("HeadObject", key))?;
        Ok(head.metadata().cloned().unwrap_or_default())
    }
}
