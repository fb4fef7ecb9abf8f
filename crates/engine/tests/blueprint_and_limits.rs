//! The blueprint path (stages expanded by the provider of each stage's platform, stage order)
//! and the concurrency limits of apply.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use galley_blueprint::Blueprint;
use galley_core::resource::{Observed, OwnerTag, ResourceHandler, ResourceSpec};
use galley_core::{PlatformId, Result, Stage};
use galley_engine::testing::{Faults, TestHandler, TestProvider, reality, test_spec};
use galley_engine::{Engine, EngineOptions, Graph, MemoryBackend, Providers, no_events};
use serde_json::json;

fn blueprint() -> Blueprint {
    serde_json::from_value(json!({
        "apiVersion": "galley/v1",
        "name": "wine",
        "data": {"source": "builtin:winequality", "target": "quality"},
        "stages": {
            "artifacts": {"bucket": "wine-artifacts"},
            "experiments": {"name": "wine-exp", "platform": "onprem"}
        }
    }))
    .expect("a valid minimal blueprint")
}

#[tokio::test]
async fn blueprint_stages_expand_per_platform_in_stage_order() {
    let dir = tempfile::tempdir().unwrap();
    let handler = Arc::new(TestHandler::new(dir.path().join("reality"), Faults::default()));
    let mut onprem_spec = test_spec("wine", "experiments.tracker", Stage::Experiments, json!({"store": "${stages.artifacts.outputs.url}"}), &[]);
    onprem_spec.platform = PlatformId::from_static("onprem");
    let local = TestProvider {
        platform: PlatformId::from_static("local"),
        // The local provider also knows an experiments resource; it must not be asked for it.
        specs: vec![
            test_spec("wine", "artifacts.bucket", Stage::Artifacts, json!({"versioning": true}), &[]),
            test_spec("wine", "experiments.local-only", Stage::Experiments, json!({}), &[]),
        ],
        handler: handler.clone(),
    };
    let onprem = TestProvider { platform: PlatformId::from_static("onprem"), specs: vec![onprem_spec], handler };
    let providers = Providers::default().with(Arc::new(local)).with(Arc::new(onprem));
    let bp = blueprint();
    let engine = Engine::for_blueprint(&bp, &providers, Box::new(MemoryBackend::new()), EngineOptions::default()).unwrap();
    let addresses: Vec<&str> = engine.graph().ordered().map(|s| s.address.as_str()).collect();
    assert_eq!(addresses, vec!["artifacts.bucket", "experiments.tracker"]);
    assert_eq!(engine.graph().dependencies("experiments.tracker"), vec!["artifacts.bucket".to_string()]);

    let report = engine.apply(None, no_events()).await.unwrap();
    assert_eq!(report.created.len(), 2);
    let files = reality(&dir.path().join("reality")).unwrap();
    let tracker = files.iter().find(|f| f.address == "experiments.tracker").unwrap();
    assert_eq!(tracker.attributes["store"], json!("test://wine-artifacts-bucket"));
    let state = engine.state().unwrap();
    assert_eq!(state.resources["experiments.tracker"].platform, PlatformId::from_static("onprem"));
    assert!(tracker.owner.starts_with("wine/experiments.tracker/"));

    // A platform not built in is a clear error.
    let only_local = Providers::default().with(Arc::new(TestProvider {
        platform: PlatformId::from_static("local"),
        specs: vec![],
        handler: Arc::new(TestHandler::new(dir.path().join("r2"), Faults::default())),
    }));
    let err = Engine::for_blueprint(&bp, &only_local, Box::new(MemoryBackend::new()), EngineOptions::default()).err().unwrap();
    assert!(err.message().contains("onprem"), "{err}");
}

/// Counts calls in flight, per platform and in total, to check the limits.
#[derive(Default)]
struct Gauge {
    total: AtomicUsize,
    max_total: AtomicUsize,
    by_platform: Mutex<HashMap<PlatformId, (usize, usize)>>,
}

struct CountingHandler(Arc<Gauge>);

#[async_trait]
impl ResourceHandler for CountingHandler {
    fn kind(&self) -> &str {
        "counted"
    }
    async fn read(&self, _: &ResourceSpec) -> Result<Option<Observed>> {
        Ok(None)
    }
    async fn create(&self, spec: &ResourceSpec, _: &OwnerTag) -> Result<Observed> {
        let g = &self.0;
        let now = g.total.fetch_add(1, Ordering::SeqCst) + 1;
        g.max_total.fetch_max(now, Ordering::SeqCst);
        {
            let mut p = g.by_platform.lock().unwrap();
            let e = p.entry(spec.platform).or_default();
            e.0 += 1;
            e.1 = e.1.max(e.0);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        g.by_platform.lock().unwrap().get_mut(&spec.platform).unwrap().0 -= 1;
        g.total.fetch_sub(1, Ordering::SeqCst);
        Ok(Observed { id: spec.name.clone(), attributes: spec.desired.clone(), outputs: BTreeMap::new() })
    }
    async fn update(&self, spec: &ResourceSpec, _: &Observed) -> Result<Observed> {
        Ok(Observed { id: spec.name.clone(), attributes: spec.desired.clone(), outputs: BTreeMap::new() })
    }
    async fn delete(&self, _: &ResourceSpec, _: &Observed) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn apply_respects_global_and_per_platform_limits() {
    // (parallelism, per_platform, expected bound on the total in flight)
    for (parallelism, per_platform, total_bound) in [(6, 2, 4), (3, 10, 3)] {
        let gauge = Arc::new(Gauge::default());
        let handler: Arc<dyn ResourceHandler> = Arc::new(CountingHandler(gauge.clone()));
        let specs: Vec<ResourceSpec> = (0..40)
            .map(|i| {
                let mut s = test_spec("bp", &format!("artifacts.r{i}"), Stage::Artifacts, json!({}), &[]);
                s.kind = "counted".into();
                s.platform = if i % 2 == 0 { PlatformId::from_static("aws") } else { PlatformId::from_static("gcp") };
                s
            })
            .collect();
        let opts = EngineOptions { parallelism, per_platform, ..EngineOptions::default() };
        let engine = Engine::new(
            Graph::new("bp", specs).unwrap(),
            HashMap::from([("counted".to_string(), handler)]),
            Box::new(MemoryBackend::new()),
            opts,
        );
        let report = engine.apply(None, no_events()).await.unwrap();
        assert_eq!(report.created.len(), 40);
        let max_total = gauge.max_total.load(Ordering::SeqCst);
        assert!(max_total <= total_bound, "parallelism {parallelism}/{per_platform}: {max_total} in flight");
        assert!(max_total >= 2, "work on the two platforms overlaps");
        for (platform, (_, max)) in gauge.by_platform.lock().unwrap().iter() {
            assert!(*max <= per_platform, "{platform}: {max} in flight, limit {per_platform}");
        }
    }
}

/// A test handler under another kind name, so two platforms' resources can be told apart.
struct Kind(&'static str, Arc<TestHandler>);

#[async_trait]
impl ResourceHandler for Kind {
    fn kind(&self) -> &str {
        self.0
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        self.1.read(spec).await
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        self.1.create(spec, owner).await
    }
    async fn update(&self, spec: &ResourceSpec, current: &Observed) -> Result<Observed> {
        self.1.update(spec, current).await
    }
    async fn delete(&self, spec: &ResourceSpec, current: &Observed) -> Result<()> {
        self.1.delete(spec, current).await
    }
}

/// Moving a stage to another platform replaces its resource: the old one is deleted on the
/// old platform (read and deleted under its recorded identity), not orphaned there.
#[tokio::test]
async fn moving_a_resource_to_another_platform_replaces_it_without_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let (aws_reality, local_reality) = (dir.path().join("aws"), dir.path().join("local"));
    let aws: Arc<dyn ResourceHandler> = Arc::new(Kind("aws.feature_group", Arc::new(TestHandler::new(&aws_reality, Faults::default()))));
    let local: Arc<dyn ResourceHandler> = Arc::new(Kind("local.feature_group", Arc::new(TestHandler::new(&local_reality, Faults::default()))));
    let state = dir.path().join("state.json");
    let spec = |kind: &str, platform| {
        let mut s = test_spec("wine", "features.group", Stage::Features, json!({"size": 1}), &[]);
        s.kind = kind.into();
        s.platform = platform;
        s
    };
    let on_aws = Engine::new(
        Graph::new("wine", vec![spec("aws.feature_group", PlatformId::from_static("aws"))]).unwrap(),
        HashMap::from([("aws.feature_group".to_string(), aws.clone())]),
        Box::new(galley_engine::LocalBackend::new(&state)),
        EngineOptions::default(),
    );
    on_aws.apply(None, no_events()).await.unwrap();
    assert_eq!(reality(&aws_reality).unwrap().len(), 1);

    let on_local = Engine::new(
        Graph::new("wine", vec![spec("local.feature_group", PlatformId::from_static("local"))]).unwrap(),
        HashMap::from([("local.feature_group".to_string(), local), ("aws.feature_group".to_string(), aws)]),
        Box::new(galley_engine::LocalBackend::new(&state)),
        EngineOptions { refresh: true, ..EngineOptions::default() },
    );
    let plan = on_local.plan().await.unwrap();
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].action, galley_core::resource::ChangeKind::Replace, "{}", plan.render_human());
    assert!(plan.changes[0].reason.as_deref().unwrap_or_default().contains("moves from aws"), "{:?}", plan.changes[0].reason);
    let report = on_local.apply(Some(&plan), no_events()).await.unwrap();
    assert_eq!(report.replaced, vec!["features.group".to_string()]);
    assert!(reality(&aws_reality).unwrap().is_empty(), "the aws resource must be deleted, not orphaned");
    assert_eq!(reality(&local_reality).unwrap().len(), 1);
    assert_eq!(on_local.state().unwrap().resources["features.group"].platform, PlatformId::from_static("local"));
}
