//! Checks the suites themselves: a minimal in-memory artifact store that keeps the contract
//! passes every case, and stores that each break one clause fail exactly the case that guards
//! it; a feature store made to leak future values (the local store behind a decorator) fails
//! the point-in-time cases. These doubles test the suite, they are not platforms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use galley_core::stages::{
    ArtifactKey, ArtifactMeta, ArtifactStore, ByteStream, Described, FeatureGroupSpec, FeatureStore, TimestampMs,
    stream_from_bytes,
};
use galley_core::{Error, PlatformId, Result, Table, Value};
use galley_local::features::LocalFeatures;
use galley_testkit::{run_artifacts, run_features};
use galley_testkit::support::sha256_hex;

#[derive(Clone, Copy, PartialEq)]
enum Flaw {
    None,
    ListUnsorted,
    DeleteNotIdempotent,
    PartialWriteOnError,
    WrongSha,
}

struct MemStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
    flaw: Flaw,
}

impl MemStore {
    fn with_flaw(flaw: Flaw) -> Arc<dyn ArtifactStore> {
        Arc::new(MemStore { objects: Mutex::new(BTreeMap::new()), flaw })
    }
    fn meta(&self, key: &str, body: &Bytes) -> ArtifactMeta {
        let sha = if self.flaw == Flaw::WrongSha { sha256_hex(b"not the content") } else { sha256_hex(body) };
        ArtifactMeta { key: key.to_owned(), size: body.len() as u64, sha256: sha, uri: format!("mem://{key}"), modified_ms: 1, encryption: None }
    }
}

impl Described for MemStore {
    fn capabilities(&self) -> galley_core::Capabilities {
        galley_core::Capabilities::new(PlatformId::from_static("mem"), &[])
    }
}

#[async_trait]
impl ArtifactStore for MemStore {
    async fn put(&self, key: &ArtifactKey, mut body: ByteStream) -> Result<ArtifactMeta> {
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => buf.extend_from_slice(&c),
                Err(e) => {
                    if self.flaw == Flaw::PartialWriteOnError {
                        self.objects.lock().unwrap().insert(key.to_string(), Bytes::from(buf));
                    }
                    return Err(e);
                }
            }
        }
        let body = Bytes::from(buf);
        self.objects.lock().unwrap().insert(key.to_string(), body.clone());
        Ok(self.meta(key.as_str(), &body))
    }
    async fn get(&self, key: &ArtifactKey) -> Result<ByteStream> {
        let body = self.objects.lock().unwrap().get(key.as_str()).cloned();
        body.map(stream_from_bytes).ok_or_else(|| Error::not_found(format!("no artifact `{key}`")))
    }
    async fn head(&self, key: &ArtifactKey) -> Result<ArtifactMeta> {
        let body = self.objects.lock().unwrap().get(key.as_str()).cloned();
        body.map(|b| self.meta(key.as_str(), &b)).ok_or_else(|| Error::not_found(format!("no artifact `{key}`")))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactMeta>> {
        let objects = self.objects.lock().unwrap();
        let mut out: Vec<ArtifactMeta> =
            objects.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, b)| self.meta(k, b)).collect();
        if self.flaw == Flaw::ListUnsorted {
            out.reverse();
        }
        Ok(out)
    }
    async fn delete(&self, key: &ArtifactKey) -> Result<()> {
        let removed = self.objects.lock().unwrap().remove(key.as_str());
        if removed.is_none() && self.flaw == Flaw::DeleteNotIdempotent {
            return Err(Error::not_found(format!("no artifact `{key}`")));
        }
        Ok(())
    }
    async fn copy(&self, from: &ArtifactKey, to: &ArtifactKey) -> Result<ArtifactMeta> {
        let body = self.objects.lock().unwrap().get(from.as_str()).cloned();
        let body = body.ok_or_else(|| Error::not_found(format!("no artifact `{from}`")))?;
        self.objects.lock().unwrap().insert(to.to_string(), body.clone());
        Ok(self.meta(to.as_str(), &body))
    }
}

fn failed_names(r: &galley_testkit::Report) -> Vec<&str> {
    r.failed.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn a_faithful_store_passes_every_case() {
    let r = run_artifacts(MemStore::with_flaw(Flaw::None)).await;
    r.assert_ok();
    // Every case but the two of features this store does not declare (versions, encryption).
    assert_eq!(r.passed.len(), galley_testkit::artifacts::cases().len() - 2);
    assert_eq!(r.skipped.len(), 2, "{}", r.summary());
}

#[tokio::test]
async fn each_broken_clause_fails_its_own_case() {
    let expectations = [
        (Flaw::ListUnsorted, vec!["artifacts::list_by_prefix_is_sorted_and_exact"]),
        (Flaw::DeleteNotIdempotent, vec!["artifacts::delete_is_idempotent"]),
        (Flaw::PartialWriteOnError, vec!["artifacts::failed_upload_leaves_previous_content"]),
    ];
    for (flaw, want) in expectations {
        let r = run_artifacts(MemStore::with_flaw(flaw)).await;
        assert_eq!(failed_names(&r), want, "{}", r.summary());
    }
    // A wrong digest shows wherever a digest is read.
    let r = run_artifacts(MemStore::with_flaw(Flaw::WrongSha)).await;
    let failed = failed_names(&r);
    assert!(failed.contains(&"artifacts::head_reports_true_size_and_sha256"), "{}", r.summary());
    assert!(failed.contains(&"artifacts::put_get_roundtrip"), "{}", r.summary());
    let (_, msg) = r.failed.iter().find(|(n, _)| n == "artifacts::head_reports_true_size_and_sha256").unwrap();
    assert!(msg.contains("meta.sha256"), "{msg}");
}

/// Answers every historical lookup as of the end of time: the classic training-data leak.
struct LeakyFeatures(LocalFeatures);

impl Described for LeakyFeatures {
    fn capabilities(&self) -> galley_core::Capabilities {
        self.0.capabilities()
    }
}

#[async_trait]
impl FeatureStore for LeakyFeatures {
    async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<()> {
        self.0.create_group(spec).await
    }
    async fn describe_group(&self, name: &str) -> Result<Option<FeatureGroupSpec>> {
        self.0.describe_group(name).await
    }
    async fn delete_group(&self, name: &str) -> Result<()> {
        self.0.delete_group(name).await
    }
    async fn ingest(&self, group: &str, rows: &Table) -> Result<u64> {
        self.0.ingest(group, rows).await
    }
    async fn materialize(&self, group: &str, up_to: TimestampMs) -> Result<u64> {
        self.0.materialize(group, up_to).await
    }
    async fn get_online(&self, group: &str, keys: &[Value], features: &[String]) -> Result<Vec<Option<Vec<Value>>>> {
        self.0.get_online(group, keys, features).await
    }
    async fn get_historical(&self, group: &str, entities: &Table, features: &[String]) -> Result<Table> {
        let spec = self.0.describe_group(group).await?.ok_or_else(|| Error::not_found(group.to_owned()))?;
        let ts = entities.column_index(&spec.event_time).expect("the suite sends the event-time column");
        let mut future = entities.clone();
        for row in &mut future.rows {
            row[ts] = Value::Int(i64::MAX / 2);
        }
        let mut out = self.0.get_historical(group, &future, features).await?;
        // Put the asked times back so the answer looks like a normal one.
        for (row, asked) in out.rows.iter_mut().zip(&entities.rows) {
            row[ts] = asked[ts].clone();
        }
        Ok(out)
    }
}

#[tokio::test]
async fn a_leaky_feature_store_fails_the_point_in_time_cases() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFeatures::open(dir.path().join("features.db")).unwrap();
    let r = run_features(Arc::new(LeakyFeatures(store))).await;
    assert_eq!(
        failed_names(&r),
        vec!["features::historical_fetch_is_point_in_time_correct", "features::historical_fetch_never_leaks_the_future"],
        "{}",
        r.summary()
    );
    let (_, msg) = &r.failed[1];
    assert!(msg.starts_with("leak: "), "{msg}");
}

/// An in-memory endpoint that scores with the model each variant's artifact holds (Galley's or
/// ONNX, through `galley_ml::Model`), or — the flaw — with the standard Galley model whatever
/// the variant names: an endpoint that "serves" an ONNX model it never loaded.
struct MemServing {
    artifacts: BTreeMap<String, Vec<u8>>,
    endpoints: Mutex<BTreeMap<String, galley_core::stages::EndpointInfo>>,
    ignores_the_artifact: bool,
}

impl Described for MemServing {
    fn capabilities(&self) -> galley_core::Capabilities {
        galley_core::Capabilities::new(PlatformId::from_static("mem"), &[galley_core::capability::Feature::OnnxModels])
    }
}

#[async_trait]
impl galley_core::stages::Serving for MemServing {
    async fn deploy(&self, spec: &galley_core::stages::EndpointSpec) -> Result<galley_core::stages::EndpointInfo> {
        let info = galley_core::stages::EndpointInfo {
            name: spec.name.clone(),
            url: format!("mem://{}", spec.name),
            state: galley_core::stages::EndpointState::InService,
            variants: spec.variants.clone(),
            signature: spec.signature.clone(),
            scaling: None,
        };
        self.endpoints.lock().unwrap().insert(spec.name.clone(), info.clone());
        Ok(info)
    }
    async fn describe(&self, endpoint: &str) -> Result<Option<galley_core::stages::EndpointInfo>> {
        Ok(self.endpoints.lock().unwrap().get(endpoint).cloned())
    }
    async fn invoke(&self, endpoint: &str, rows: &Table) -> Result<galley_core::stages::Prediction> {
        let info = self.describe(endpoint).await?.ok_or_else(|| Error::not_found(format!("endpoint `{endpoint}`")))?;
        let variant = &info.variants[0];
        let uri = if self.ignores_the_artifact { "mem://galley" } else { variant.artifact_uri.as_str() };
        let model = galley_ml::Model::from_bytes(&self.artifacts[uri])?;
        Ok(galley_core::stages::Prediction { predictions: model.labels(rows)?, variant: variant.name.clone() })
    }
    async fn shift_traffic(&self, endpoint: &str, _weights: &[(String, u32)]) -> Result<galley_core::stages::EndpointInfo> {
        self.describe(endpoint).await?.ok_or_else(|| Error::not_found(format!("endpoint `{endpoint}`")))
    }
    async fn undeploy(&self, endpoint: &str) -> Result<()> {
        self.endpoints.lock().unwrap().remove(endpoint);
        Ok(())
    }
}

/// The ONNX case reads what the endpoint answers against the arithmetic the model encodes, so
/// an endpoint that answers another model's predictions fails it. Needs ONNX Runtime (the
/// faithful endpoint loads the model): `eval "$(scripts/stack up local)"`.
#[tokio::test]
async fn an_endpoint_that_never_loads_the_onnx_model_fails_the_onnx_case() {
    if let Err(why) = galley_ml::onnx::find_runtime() {
        panic!("{why} (`eval \"$(scripts/stack up local)\"` installs it)");
    }
    let model = galley_testkit::StandardModel::new();
    let fixture = model.fixture_with_onnx("mem://galley".into(), "mem://onnx".into());
    let artifacts = BTreeMap::from([("mem://galley".to_owned(), model.bytes.clone()), ("mem://onnx".to_owned(), model.onnx_bytes.clone())]);
    let run = |ignores_the_artifact: bool| {
        let serving = Arc::new(MemServing { artifacts: artifacts.clone(), endpoints: Mutex::default(), ignores_the_artifact });
        let ctx = galley_testkit::ServingCtx { serving, fixture: Arc::new(fixture.clone()) };
        galley_testkit::serving::serves_an_onnx_model(ctx)
    };
    run(false).await.expect("an endpoint serving the ONNX model passes");
    let e = run(true).await.expect_err("an endpoint serving the Galley model instead must fail");
    assert!(e.to_string().contains("the model encodes"), "{e}");
}
