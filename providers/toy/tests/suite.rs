//! The toy platform passes the shared behaviour suite and proves every capability it declares:
//! a platform written outside core, registered in one line, held to the same contract.



use galley_core::stages::{ArtifactKey, ArtifactStoreExt, EndpointSpec, Signature, Variant};
use galley_core::table::Column;
use galley_core::{DType, Table, Value};
use galley_testkit::serving::ServingFixture;
use galley_testkit::{Fixtures, run_stage_set};
use galley_toy::World;

/// A linear model trained by galley-ml, stored in the toy's artifact store.
async fn serving_fixture(stages: &galley_core::StageSet) -> ServingFixture {
    let inputs = vec![Column::new("alcohol", DType::Float), Column::new("ph", DType::Float)];
    let signature = Signature { inputs: inputs.clone(), output: Some(Column::new("quality", DType::Float)) };
    let mut rng = fastrand::Rng::with_seed(9);
    let x: Vec<Vec<f64>> = (0..200).map(|_| vec![8.0 + 6.0 * rng.f64(), 2.8 + 0.8 * rng.f64()]).collect();
    let y: Vec<f64> = x.iter().map(|r| 0.6 * r[0] - 1.5 * r[1] + 3.0).collect();
    let frame = galley_ml::Frame { features: vec!["alcohol".into(), "ph".into()], x, y };
    let model = galley_ml::train(galley_core::ml::Algorithm::LinearRegression, &Default::default(), galley_core::ml::Task::Regression, &frame, &signature)
        .unwrap();
    let meta = stages.artifacts.put_bytes(&ArtifactKey::new("models/wine/1/model.json").unwrap(), model.to_bytes().into()).await.unwrap();
    let mut rows = Table::new(inputs);
    for (a, p) in [(9.5, 3.1), (12.25, 3.4), (13.0, 2.9), (10.0, 3.55)] {
        rows.push(vec![Value::Float(a), Value::Float(p)]).unwrap();
    }
    let expected = model.predict(&rows).unwrap();
    let variant = Variant { name: "v1".into(), model: "wine".into(), version: 1, artifact_uri: meta.uri, weight: 100 };
    ServingFixture {
        spec: EndpointSpec { name: "gtk-wine".into(), variants: vec![variant], signature },
        rows,
        expected,
        tolerance: 0.0,
        require_token: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toy_proves_every_declared_capability() {
    let stages = World::named("toy-suite").stages();
    let fixture = serving_fixture(&stages).await;
    let declared = galley_toy::capabilities();
    let report = run_stage_set(&stages, &declared, Fixtures { serving: Some(fixture), training: None }).await;
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
    let more = galley_core::Capabilities::new(galley_toy::TOY, &[declared.features(), &[galley_core::capability::Feature::OnlineStore]].concat());
    // Without a serving fixture the serving cases do not run, so TrafficSplit, which the toy
    // declares, goes unproven as well as the OnlineStore it never implemented.
    use galley_core::capability::Feature;
    assert_eq!(report.unproven(&more), vec![Feature::OnlineStore, Feature::TrafficSplit]);
    assert_eq!(report.unproven(&declared), vec![Feature::TrafficSplit], "{}", report.summary());
    assert!(std::panic::catch_unwind(|| report.assert_capabilities_proven(&declared)).is_err());
}
