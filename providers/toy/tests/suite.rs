//! The toy platform passes the shared behaviour suite and proves every capability it declares:
//! a platform written outside core, registered in one line, held to the same contract.

use galley_core::capability::Feature;
use galley_core::stages::{ArtifactKey, ArtifactStoreExt};
use galley_testkit::serving::ServingFixture;
use galley_testkit::{Fixtures, StandardModel, run_stage_set};
use galley_toy::World;

/// The testkit's standard model, stored in the toy's artifact store.
async fn serving_fixture(stages: &galley_core::StageSet) -> ServingFixture {
    let model = StandardModel::new();
    let meta = stages.artifacts.put_bytes(&ArtifactKey::new("models/wine/1/model.json").unwrap(), model.bytes.clone().into()).await.unwrap();
    model.fixture(meta.uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toy_proves_every_declared_capability() {
    let stages = World::named("toy-suite").stages();
    let fixture = serving_fixture(&stages).await;
    let declared = galley_toy::capabilities();
    let report = run_stage_set(&stages, &declared, Fixtures { serving: Some(fixture), ..Fixtures::default() }).await;
    report.assert_ok();
    report.assert_capabilities_proven(&declared);
    // What the toy does not declare was refused or skipped, never passed by accident.
    assert!(report.skipped.iter().any(|(n, _)| n == "features::online_reads_latest_value_per_entity"), "{}", report.summary());
    assert!(report.passed.iter().any(|n| n == "triggers::watching_is_refused_where_triggers_fire_on_the_platform"), "{}", report.summary());
}

/// The proof has teeth: the same stages declaring one feature more than they show fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_an_unproven_feature_fails_the_proof() {
    let stages = World::named("toy-overclaim").stages();
    let declared = galley_toy::capabilities();
    let report = run_stage_set(&stages, &declared, Fixtures::default()).await;
    let more = galley_core::Capabilities::new(galley_toy::TOY, &[declared.features(), &[Feature::OnlineStore]].concat());
    // Without a serving fixture the serving cases do not run, so TrafficSplit, which the toy
    // declares, goes unproven as well as the OnlineStore it never implemented.
    assert_eq!(report.unproven(&more), vec![Feature::OnlineStore, Feature::TrafficSplit]);
    assert_eq!(report.unproven(&declared), vec![Feature::TrafficSplit], "{}", report.summary());
    assert!(std::panic::catch_unwind(|| report.assert_capabilities_proven(&declared)).is_err());
}
