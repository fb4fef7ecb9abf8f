//! The [`FeatureStore`] contract: idempotent groups, validated ingest, latest-per-entity online
//! reads, and point-in-time-correct historical joins that never leak a value from the future.

use std::sync::Arc;

use galley_core::capability::Feature;
use galley_core::stages::{FeatureGroupSpec, FeatureStore};
use galley_core::table::Column;
use galley_core::{DType, ErrorKind, Table, Value};

use crate::runner::{Case, Report, TestResult, run_cases};
use crate::support::{expect_kind, unique};
use crate::{case, ensure_eq};

type Store = Arc<dyn FeatureStore>;

pub fn cases() -> Vec<Case<Store>> {
    vec![
        case!(create_group_is_idempotent),
        case!(create_group_with_a_different_spec_conflicts),
        case!(describe_of_unknown_group_is_none),
        case!(delete_group_removes_it),
        case!(ingest_returns_rows_written),
        case!(ingest_of_unknown_column_is_invalid),
        case!(ingest_without_entity_or_event_time_is_invalid),
        case!(ingest_of_mistyped_column_is_invalid),
        case!(ingest_into_unknown_group_is_not_found),
        case!(online_reads_latest_value_per_entity, needs = [Feature::OnlineStore]),
        case!(online_reads_keep_key_and_feature_order, needs = [Feature::OnlineStore]),
        case!(historical_fetch_is_point_in_time_correct, needs = [Feature::PointInTimeFetch]),
        case!(historical_fetch_never_leaks_the_future, needs = [Feature::PointInTimeFetch]),
    ]
}

pub async fn run_features(store: Store) -> Report {
    let caps = store.capabilities();
    run_cases("features", store, &caps, cases()).await
}

const ENTITY: &str = "customer_id";
const TS: &str = "event_ts";

fn spec(name: &str) -> FeatureGroupSpec {
    FeatureGroupSpec {
        name: name.to_owned(),
        entity: Column::new(ENTITY, DType::String),
        event_time: TS.to_owned(),
        features: vec![
            Column::new("spend", DType::Float),
            Column::new("visits", DType::Int),
            Column::new("segment", DType::String),
        ],
        online: true,
    }
}

fn columns(names: &[(&str, DType)]) -> Vec<Column> {
    names.iter().map(|(n, t)| Column::new(*n, *t)).collect()
}

/// Rows of (entity, event time, spend, visits, segment).
fn rows(data: &[(&str, i64, f64, i64, &str)]) -> anyhow::Result<Table> {
    let mut t = Table::new(columns(&[
        (ENTITY, DType::String),
        (TS, DType::Int),
        ("spend", DType::Float),
        ("visits", DType::Int),
        ("segment", DType::String),
    ]));
    for (e, ts, spend, visits, seg) in data {
        t.push(vec![(*e).into(), Value::Int(*ts), Value::Float(*spend), Value::Int(*visits), (*seg).into()])?;
    }
    Ok(t)
}

/// Creates a fresh group, runs `body` on it, then deletes it whatever the outcome.
async fn with_group<F: Future<Output = TestResult>>(store: Store, body: impl FnOnce(Store, String) -> F) -> TestResult {
    let name = unique("gtkfg");
    store.create_group(&spec(&name)).await?;
    let out = body(store.clone(), name.clone()).await;
    let _ = store.delete_group(&name).await;
    out
}

pub async fn create_group_is_idempotent(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        store
            .create_group(&spec(&name))
            .await
            .map_err(|e| anyhow::anyhow!("creating an identical group again must succeed: {e}"))?;
        let described = store.describe_group(&name).await?;
        ensure_eq!(described, Some(spec(&name)), "describe_group after create");
        Ok(())
    })
    .await
}

pub async fn create_group_with_a_different_spec_conflicts(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        let mut changed = spec(&name);
        changed.features.push(Column::new("churned", DType::Bool));
        expect_kind(store.create_group(&changed).await, ErrorKind::Conflict, "create_group with an extra feature")?;
        let mut retyped = spec(&name);
        retyped.features[0].dtype = DType::String;
        expect_kind(store.create_group(&retyped).await, ErrorKind::Conflict, "create_group with a retyped feature")?;
        ensure_eq!(store.describe_group(&name).await?, Some(spec(&name)), "the group after refused changes");
        Ok(())
    })
    .await
}

pub async fn describe_of_unknown_group_is_none(store: Store) -> TestResult {
    ensure_eq!(store.describe_group(&unique("gtkfg")).await?, None, "describe_group of a group never created");
    Ok(())
}

pub async fn delete_group_removes_it(store: Store) -> TestResult {
    let name = unique("gtkfg");
    store.create_group(&spec(&name)).await?;
    store.delete_group(&name).await?;
    ensure_eq!(store.describe_group(&name).await?, None, "describe_group after delete");
    Ok(())
}

pub async fn ingest_returns_rows_written(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        let t = rows(&[("c1", 1000, 1.5, 1, "a"), ("c2", 1000, 2.5, 2, "b"), ("c1", 2000, 3.5, 3, "a")])?;
        ensure_eq!(store.ingest(&name, &t).await?, 3, "rows written by ingest");
        // Any subset of the features is allowed.
        let mut partial = Table::new(columns(&[(ENTITY, DType::String), (TS, DType::Int), ("spend", DType::Float)]));
        partial.push(vec!["c3".into(), Value::Int(1500), Value::Float(9.0)])?;
        ensure_eq!(store.ingest(&name, &partial).await?, 1, "rows written by an ingest of one feature");
        Ok(())
    })
    .await
}

pub async fn ingest_of_unknown_column_is_invalid(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        let mut t = Table::new(columns(&[(ENTITY, DType::String), (TS, DType::Int), ("not_a_feature", DType::Float)]));
        t.push(vec!["c1".into(), Value::Int(1000), Value::Float(1.0)])?;
        expect_kind(store.ingest(&name, &t).await, ErrorKind::InvalidInput, "ingest with an undeclared column")
    })
    .await
}

pub async fn ingest_without_entity_or_event_time_is_invalid(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        let mut no_entity = Table::new(columns(&[(TS, DType::Int), ("spend", DType::Float)]));
        no_entity.push(vec![Value::Int(1000), Value::Float(1.0)])?;
        expect_kind(store.ingest(&name, &no_entity).await, ErrorKind::InvalidInput, "ingest without the entity column")?;
        let mut no_time = Table::new(columns(&[(ENTITY, DType::String), ("spend", DType::Float)]));
        no_time.push(vec!["c1".into(), Value::Float(1.0)])?;
        expect_kind(store.ingest(&name, &no_time).await, ErrorKind::InvalidInput, "ingest without the event-time column")
    })
    .await
}

pub async fn ingest_of_mistyped_column_is_invalid(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        // `spend` is a float feature; a table that says it is a string must be refused.
        let mut t = Table::new(columns(&[(ENTITY, DType::String), (TS, DType::Int), ("spend", DType::String)]));
        t.push(vec!["c1".into(), Value::Int(1000), "lots".into()])?;
        expect_kind(store.ingest(&name, &t).await, ErrorKind::InvalidInput, "ingest of a string into a float feature")
    })
    .await
}

pub async fn ingest_into_unknown_group_is_not_found(store: Store) -> TestResult {
    let t = rows(&[("c1", 1000, 1.0, 1, "a")])?;
    expect_kind(store.ingest(&unique("gtkfg"), &t).await, ErrorKind::NotFound, "ingest into a group never created")
}

pub async fn online_reads_latest_value_per_entity(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        let t = rows(&[
            ("c1", 2000, 2.0, 2, "gold"),
            ("c1", 1000, 1.0, 1, "bronze"), // older, ingested later: must not win
            ("c2", 1500, 10.0, 5, "silver"),
            ("c3", 9000, 99.0, 9, "late"), // after the materialization horizon
        ])?;
        store.ingest(&name, &t).await?;
        ensure_eq!(store.materialize(&name, 3000).await?, 2, "entities materialized up to t=3000");
        let feats = vec!["spend".to_owned(), "visits".to_owned(), "segment".to_owned()];
        let keys = vec!["c1".into(), "c2".into(), "c3".into(), "nobody".into()];
        let got = store.get_online(&name, &keys, &feats).await?;
        ensure_eq!(
            got,
            vec![
                Some(vec![Value::Float(2.0), Value::Int(2), "gold".into()]),
                Some(vec![Value::Float(10.0), Value::Int(5), "silver".into()]),
                None,
                None,
            ],
            "get_online(c1, c2, c3 after the horizon, unknown)"
        );
        // A later materialization picks up the newer row.
        store.materialize(&name, 10_000).await?;
        let got = store.get_online(&name, &["c3".into()], &["spend".to_owned()]).await?;
        ensure_eq!(got, vec![Some(vec![Value::Float(99.0)])], "get_online(c3) after materializing to t=10000");
        Ok(())
    })
    .await
}

pub async fn online_reads_keep_key_and_feature_order(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        let data: Vec<(String, f64, i64)> = (0..20).map(|i| (format!("k{i:02}"), i as f64 + 0.25, i)).collect();
        let mut t = rows(&[])?;
        for (e, spend, visits) in &data {
            t.push(vec![e.as_str().into(), Value::Int(1000), Value::Float(*spend), Value::Int(*visits), "s".into()])?;
        }
        store.ingest(&name, &t).await?;
        store.materialize(&name, 1000).await?;
        // Keys in a scrambled order, one unknown in the middle; features reversed.
        let order = [13usize, 2, 19, 0, 7];
        let mut keys: Vec<Value> = order.iter().map(|&i| data[i].0.as_str().into()).collect();
        keys.insert(2, "missing".into());
        let got = store.get_online(&name, &keys, &["visits".to_owned(), "spend".to_owned()]).await?;
        let mut want: Vec<Option<Vec<Value>>> =
            order.iter().map(|&i| Some(vec![Value::Int(data[i].2), Value::Float(data[i].1)])).collect();
        want.insert(2, None);
        ensure_eq!(got, want, "get_online in the order asked");
        Ok(())
    })
    .await
}

/// Entities to look up at given times, under the group's own entity and event-time columns.
fn lookups(at: &[(&str, i64)]) -> anyhow::Result<Table> {
    let mut t = Table::new(columns(&[(ENTITY, DType::String), (TS, DType::Int)]));
    for (e, ts) in at {
        t.push(vec![(*e).into(), Value::Int(*ts)])?;
    }
    Ok(t)
}

/// The result row for (entity, time), whatever order the store returned rows in.
fn row_for<'a>(t: &'a Table, entity: &str, ts: i64) -> anyhow::Result<&'a [Value]> {
    let (ei, ti) = (
        t.column_index(ENTITY).ok_or_else(|| anyhow::anyhow!("result has no `{ENTITY}` column"))?,
        t.column_index(TS).ok_or_else(|| anyhow::anyhow!("result has no `{TS}` column"))?,
    );
    let hits: Vec<&Vec<Value>> = t
        .rows
        .iter()
        .filter(|r| r[ei] == Value::from(entity) && r[ti].as_f64() == Some(ts as f64))
        .collect();
    ensure_eq!(hits.len(), 1, "result rows for ({entity}, {ts})");
    Ok(hits[0])
}

pub async fn historical_fetch_is_point_in_time_correct(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        store
            .ingest(
                &name,
                &rows(&[
                    ("c1", 1000, 1.0, 1, "one"),
                    ("c1", 2000, 2.0, 2, "two"),
                    ("c1", 3000, 3.0, 3, "three"),
                    ("c2", 1500, 50.0, 5, "solo"),
                ])?,
            )
            .await?;
        let asks = [("c1", 999), ("c1", 1000), ("c1", 2500), ("c1", 10_000), ("c2", 2500), ("ghost", 5000)];
        let feats = vec!["spend".to_owned(), "segment".to_owned()];
        let got = store.get_historical(&name, &lookups(&asks)?, &feats).await?;
        let names: Vec<&str> = got.columns.iter().map(|c| c.name.as_str()).collect();
        ensure_eq!(names, vec![ENTITY, TS, "spend", "segment"], "columns: the entity columns, then the features");
        ensure_eq!(got.len(), asks.len(), "one result row per lookup row");
        let expect: [(&str, i64, Value, Value); 6] = [
            ("c1", 999, Value::Null, Value::Null), // nothing known yet
            ("c1", 1000, Value::Float(1.0), "one".into()), // an event at exactly that time counts
            ("c1", 2500, Value::Float(2.0), "two".into()),
            ("c1", 10_000, Value::Float(3.0), "three".into()),
            ("c2", 2500, Value::Float(50.0), "solo".into()),
            ("ghost", 5000, Value::Null, Value::Null),
        ];
        for (e, ts, spend, seg) in expect {
            let row = row_for(&got, e, ts)?;
            ensure_eq!(row[2..].to_vec(), vec![spend, seg], "features of {e} as of t={ts}");
        }
        Ok(())
    })
    .await
}

/// The leakage scenario: a label-time join for training must not see values recorded after
/// the label, however the rows arrive.
pub async fn historical_fetch_never_leaks_the_future(store: Store) -> TestResult {
    with_group(store, |store, name| async move {
        // For every customer the "future" row carries a sentinel a leaky join would return.
        const SENTINEL: f64 = 1.0e9;
        let mut data = Vec::new();
        for i in 0..30i64 {
            let e = format!("c{i}");
            data.push((e.clone(), 10_000 + i * 100, SENTINEL, 0i64));
            data.push((e.clone(), 1_000 + i * 10, i as f64, i));
        }
        let mut t = rows(&[])?;
        for (e, ts, spend, visits) in &data {
            t.push(vec![e.as_str().into(), Value::Int(*ts), Value::Float(*spend), Value::Int(*visits), "x".into()])?;
        }
        store.ingest(&name, &t).await?;
        // Ask just before each customer's future row.
        let asks: Vec<(String, i64)> = (0..30i64).map(|i| (format!("c{i}"), 10_000 + i * 100 - 1)).collect();
        let ask_refs: Vec<(&str, i64)> = asks.iter().map(|(e, ts)| (e.as_str(), *ts)).collect();
        let got = store.get_historical(&name, &lookups(&ask_refs)?, &["spend".to_owned()]).await?;
        ensure_eq!(got.len(), asks.len(), "one result row per lookup row");
        for (i, (e, ts)) in asks.iter().enumerate() {
            let row = row_for(&got, e, *ts)?;
            anyhow::ensure!(
                row[2] != Value::Float(SENTINEL),
                "leak: {e} as of t={ts} returned the value recorded at t={}",
                ts + 1
            );
            ensure_eq!(row[2], Value::Float(i as f64), "spend of {e} as of t={ts}");
        }
        Ok(())
    })
    .await
}
