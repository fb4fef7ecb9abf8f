//! Local-specific behaviour of the SQLite feature store.

use galley_core::ErrorKind;
use galley_core::stages::{FeatureGroupSpec, FeatureStore};
use galley_core::table::{Column, DType, Table, Value};
use galley_local::features::LocalFeatures;

fn spec(online: bool) -> FeatureGroupSpec {
    FeatureGroupSpec {
        name: "customer_stats".into(),
        entity: Column::new("customer_id", DType::Int),
        event_time: "ts".into(),
        features: vec![
            Column::new("spend", DType::Float),
            Column::new("churned", DType::Bool),
            Column::new("segment", DType::String),
        ],
        online,
    }
}

fn rows(data: &[(i64, i64, f64, bool, &str)]) -> Table {
    let mut t = Table::new(vec![
        Column::new("customer_id", DType::Int),
        Column::new("ts", DType::Int),
        Column::new("spend", DType::Float),
        Column::new("churned", DType::Bool),
        Column::new("segment", DType::String),
    ]);
    for &(id, ts, spend, churned, segment) in data {
        t.push(vec![id.into(), ts.into(), spend.into(), churned.into(), segment.into()]).unwrap();
    }
    t
}

async fn store() -> (tempfile::TempDir, LocalFeatures) {
    let dir = tempfile::tempdir().unwrap();
    let fs = LocalFeatures::open(dir.path().join("features.db")).unwrap();
    fs.create_group(&spec(true)).await.unwrap();
    (dir, fs)
}

#[tokio::test]
async fn create_group_is_idempotent_and_conflicts_on_a_different_spec() {
    let (_dir, fs) = store().await;
    fs.create_group(&spec(true)).await.unwrap();
    assert_eq!(fs.describe_group("customer_stats").await.unwrap(), Some(spec(true)));
    let e = fs.create_group(&spec(false)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.message().contains("customer_stats"), "{e}");
    fs.delete_group("customer_stats").await.unwrap();
    assert_eq!(fs.describe_group("customer_stats").await.unwrap(), None);
    // Its tables went with it: the group can be re-created with another shape.
    fs.create_group(&spec(false)).await.unwrap();
    fs.delete_group("customer_stats").await.unwrap();
    fs.delete_group("customer_stats").await.unwrap();
}

/// Names never become SQL text: hostile or merely unusual names (`wine-features`, `fixed
/// acidity`) are stored as data, and only unprintable ones are refused.
#[tokio::test]
async fn names_are_data_never_sql() {
    let (_dir, fs) = store().await;
    let hostile = FeatureGroupSpec {
        name: "x\"; DROP TABLE feature_groups; --".into(),
        entity: Column::new("id\"", DType::String),
        event_time: "event time".into(),
        features: vec![Column::new("fixed acidity", DType::Float), Column::new("a\"b); --", DType::Int)],
        online: true,
    };
    fs.create_group(&hostile).await.unwrap();
    let mut t = Table::new(vec![
        Column::new("id\"", DType::String),
        Column::new("event time", DType::Int),
        Column::new("fixed acidity", DType::Float),
        Column::new("a\"b); --", DType::Int),
    ]);
    t.push(vec!["w1".into(), 5.into(), 7.4.into(), 3.into()]).unwrap();
    fs.ingest(&hostile.name, &t).await.unwrap();
    fs.materialize(&hostile.name, 10).await.unwrap();
    let got = fs.get_online(&hostile.name, &["w1".into()], &["a\"b); --".into(), "fixed acidity".into()]).await.unwrap();
    assert_eq!(got, vec![Some(vec![Value::Int(3), Value::Float(7.4)])]);
    assert!(fs.describe_group("customer_stats").await.unwrap().is_some(), "the catalogue is intact");

    for bad in ["", " padded", "tab\there"] {
        let mut spec = spec(true);
        spec.name = bad.into();
        assert_eq!(fs.create_group(&spec).await.unwrap_err().kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    let mut dup = spec(true);
    dup.name = "dup".into();
    dup.features.push(Column::new("spend", DType::Int));
    let e = fs.create_group(&dup).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("spend"), "{e}");
    let mut bad = spec(true);
    bad.name = "float_entity".into();
    bad.entity = Column::new("customer_id", DType::Float);
    assert_eq!(fs.create_group(&bad).await.unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn ingest_validates_columns_and_types() {
    let (_dir, fs) = store().await;
    let mut unknown = Table::new(vec![
        Column::new("customer_id", DType::Int),
        Column::new("ts", DType::Int),
        Column::new("income", DType::Float),
    ]);
    unknown.push(vec![1.into(), 1.into(), 2.0.into()]).unwrap();
    let e = fs.ingest("customer_stats", &unknown).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("income"), "{e}");

    let mut wrong = Table::new(vec![
        Column::new("customer_id", DType::Int),
        Column::new("ts", DType::Int),
        Column::new("segment", DType::Int),
    ]);
    wrong.push(vec![1.into(), 1.into(), 3.into()]).unwrap();
    let e = fs.ingest("customer_stats", &wrong).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("segment"), "{e}");

    // A bad value halfway through a batch writes nothing (one transaction).
    let mut batch = rows(&[(1, 10, 1.0, false, "a")]);
    batch.rows.push(vec![2.into(), 10.into(), "oops".into(), false.into(), "b".into()]);
    let e = fs.ingest("customer_stats", &batch).await.unwrap_err();
    assert!(e.message().contains("spend"), "{e}");
    assert_eq!(fs.materialize("customer_stats", i64::MAX).await.unwrap(), 0);

    let e = fs.ingest("no_such_group", &rows(&[])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("no_such_group"), "{e}");

    // Ints widen into float features; a subset of features is fine.
    let mut subset = Table::new(vec![
        Column::new("customer_id", DType::Int),
        Column::new("ts", DType::Int),
        Column::new("spend", DType::Float),
    ]);
    subset.push(vec![5.into(), 1.into(), Value::Int(3)]).unwrap();
    assert_eq!(fs.ingest("customer_stats", &subset).await.unwrap(), 1);
    fs.materialize("customer_stats", 100).await.unwrap();
    let got = fs.get_online("customer_stats", &[5.into()], &["spend".into(), "segment".into()]).await.unwrap();
    assert_eq!(got, vec![Some(vec![Value::Float(3.0), Value::Null])]);
}

#[tokio::test]
async fn materialize_keeps_the_latest_value_up_to_the_cutoff() {
    let (_dir, fs) = store().await;
    fs.ingest(
        "customer_stats",
        &rows(&[(1, 100, 10.0, false, "new"), (1, 200, 20.0, false, "mid"), (1, 300, 30.0, true, "old"), (2, 150, 5.0, false, "x")]),
    )
    .await
    .unwrap();
    assert_eq!(fs.materialize("customer_stats", 250).await.unwrap(), 2);
    let features = vec!["spend".to_owned(), "churned".to_owned(), "segment".to_owned()];
    let got = fs.get_online("customer_stats", &[1.into(), 99.into(), 2.into()], &features).await.unwrap();
    assert_eq!(got[0], Some(vec![20.0.into(), false.into(), "mid".into()]));
    assert_eq!(got[1], None, "an unknown entity is None");
    assert_eq!(got[2], Some(vec![5.0.into(), false.into(), "x".into()]));

    // Nothing newer: nothing written. An earlier cutoff never rolls the online value back.
    assert_eq!(fs.materialize("customer_stats", 250).await.unwrap(), 0);
    assert_eq!(fs.materialize("customer_stats", 120).await.unwrap(), 0);
    assert_eq!(fs.materialize("customer_stats", 1000).await.unwrap(), 1);
    let got = fs.get_online("customer_stats", &[1.into()], &["spend".into()]).await.unwrap();
    assert_eq!(got, vec![Some(vec![30.0.into()])]);

    // A correction at the same event time, ingested later, wins.
    fs.ingest("customer_stats", &rows(&[(1, 300, 31.0, true, "old")])).await.unwrap();
    assert_eq!(fs.materialize("customer_stats", 1000).await.unwrap(), 1);
    let got = fs.get_online("customer_stats", &[1.into()], &["spend".into()]).await.unwrap();
    assert_eq!(got, vec![Some(vec![31.0.into()])]);
}

#[tokio::test]
async fn online_lookup_handles_large_batches_in_the_order_asked() {
    let (_dir, fs) = store().await;
    let data: Vec<(i64, i64, f64, bool, &str)> = (0..1000).map(|i| (i, 1, i as f64, i % 2 == 0, "s")).collect();
    fs.ingest("customer_stats", &rows(&data)).await.unwrap();
    fs.materialize("customer_stats", 10).await.unwrap();
    let keys: Vec<Value> = (0..1300).rev().map(|i: i64| Value::Int(i)).collect();
    let got = fs.get_online("customer_stats", &keys, &["spend".into()]).await.unwrap();
    assert_eq!(got.len(), 1300);
    for (k, v) in keys.iter().zip(&got) {
        let Value::Int(k) = k else { unreachable!() };
        if *k < 1000 {
            assert_eq!(v, &Some(vec![Value::Float(*k as f64)]));
        } else {
            assert_eq!(v, &None);
        }
    }
    let e = fs.get_online("customer_stats", &["1".into()], &["spend".into()]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "a string key for an int entity");
    let e = fs.get_online("customer_stats", &[1.into()], &["nope".into()]).await.unwrap_err();
    assert!(e.message().contains("nope"), "{e}");
}

#[tokio::test]
async fn offline_only_groups_refuse_online_reads() {
    let dir = tempfile::tempdir().unwrap();
    let fs = LocalFeatures::open(dir.path().join("features.db")).unwrap();
    fs.create_group(&spec(false)).await.unwrap();
    let e = fs.materialize("customer_stats", 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("online"), "{e}");
}

/// The label-leakage scenario: a customer's `churned` flag flips to true at t=500 (the same
/// event the label describes). A training row labelled at t=400 must see the value before the
/// flip; seeing `true` there would leak the label into the features.
#[tokio::test]
async fn historical_join_is_point_in_time_correct_and_never_leaks_the_future() {
    let (_dir, fs) = store().await;
    fs.ingest(
        "customer_stats",
        &rows(&[
            (1, 100, 10.0, false, "a"),
            (1, 300, 30.0, false, "b"),
            (1, 500, 99.0, true, "c"),
            (2, 200, 7.0, false, "z"),
        ]),
    )
    .await
    .unwrap();
    let mut entities = Table::new(vec![
        Column::new("customer_id", DType::Int),
        Column::new("ts", DType::Int),
        Column::new("label", DType::Bool),
    ]);
    for (id, ts, label) in [(1, 50, false), (1, 100, false), (1, 400, true), (1, 500, true), (2, 199, false), (3, 1000, false)] {
        entities.push(vec![Value::Int(id), Value::Int(ts), Value::Bool(label)]).unwrap();
    }
    let out = fs
        .get_historical("customer_stats", &entities, &["spend".into(), "churned".into()])
        .await
        .unwrap();
    let names: Vec<&str> = out.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["customer_id", "ts", "label", "spend", "churned"]);
    let features: Vec<(Value, Value)> = out.rows.iter().map(|r| (r[3].clone(), r[4].clone())).collect();
    assert_eq!(
        features,
        vec![
            (Value::Null, Value::Null),                // before any data
            (10.0.into(), false.into()),               // exactly at an event: included
            (30.0.into(), false.into()),               // the flip at 500 is in the future: not seen
            (99.0.into(), true.into()),                // at the flip
            (Value::Null, Value::Null),                // entity 2's first value is at 200
            (Value::Null, Value::Null),                // unknown entity
        ]
    );
    // The entity rows are carried through unchanged and in order.
    assert_eq!(out.rows[2][..3], [Value::Int(1), Value::Int(400), Value::Bool(true)]);
}

/// The online path caches group specs; a change committed through another connection (another
/// process, or `galley apply` beside a running server) is seen at the next lookup.
#[tokio::test]
async fn online_reads_see_changes_made_through_another_connection() {
    let (dir, reader) = store().await;
    let writer = LocalFeatures::open(dir.path().join("features.db")).unwrap();
    writer.ingest("customer_stats", &rows(&[(1, 10, 5.0, false, "a")])).await.unwrap();
    writer.materialize("customer_stats", 100).await.unwrap();
    let keys = [Value::Int(1)];
    let got = reader.get_online("customer_stats", &keys, &["spend".into()]).await.unwrap();
    assert_eq!(got, vec![Some(vec![Value::Float(5.0)])]);

    writer.ingest("customer_stats", &rows(&[(1, 20, 7.5, false, "a")])).await.unwrap();
    writer.materialize("customer_stats", 100).await.unwrap();
    let got = reader.get_online("customer_stats", &keys, &["spend".into()]).await.unwrap();
    assert_eq!(got, vec![Some(vec![Value::Float(7.5)])]);

    // Re-created elsewhere with another shape: the cached spec is not used.
    writer.delete_group("customer_stats").await.unwrap();
    let mut other = spec(true);
    other.features = vec![Column::new("visits", DType::Int)];
    writer.create_group(&other).await.unwrap();
    let e = reader.get_online("customer_stats", &keys, &["spend".into()]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.message().contains("spend"), "{e}");
}
