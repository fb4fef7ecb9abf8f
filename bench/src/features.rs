//! Online features: the wine rows ingested into a local feature group keyed by `row_id`,
//! materialized, then read back one entity at a time through `FeatureStore::get_online`, as
//! `bench/peers/features.py` does with Feast's SQLite online store.

use std::path::Path;
use std::time::Instant;

use galley_core::stages::{FeatureGroupSpec, FeatureStore};
use galley_core::table::{Column, DType, Table, Value};
use galley_core::{Error, Result};
use galley_local::features::LocalFeatures;
use serde_json::json;

use crate::stats::p50_p99_us;

/// The quickstart blueprint's features (blueprints/quickstart.yaml, `stages.features`).
pub const FEATURES: [&str; 7] = [
    "fixed_acidity",
    "volatile_acidity",
    "citric_acid",
    "residual_sugar",
    "chlorides",
    "sulphates",
    "alcohol",
];
const GROUP: &str = "wine_features";
/// Every row's event time: one instant, so materialization keeps each entity's only row.
const EVENT_MS: i64 = 1_700_000_000_000;

/// The entity looked up `i`-th: a fixed stride through the rows, so lookups do not walk the
/// table in storage order. The peer uses the same formula.
pub fn entity(i: usize, rows: usize) -> i64 {
    ((i * 7_919) % rows) as i64
}

/// row_id, event_time and the seven features of every wine row.
pub fn wine_rows() -> Result<Table> {
    let data = galley_ml::load_source("builtin:winequality", Path::new("."))?;
    let src = &data.table;
    let idx: Vec<usize> = FEATURES
        .iter()
        .map(|f| src.column_index(f).ok_or_else(|| Error::internal(format!("wine data has no `{f}` column"))))
        .collect::<Result<_>>()?;
    let mut columns = vec![Column::new("row_id", DType::Int), Column::new("event_time", DType::Int)];
    columns.extend(FEATURES.iter().map(|f| Column::new(*f, DType::Float)));
    let mut table = Table::new(columns);
    for (i, row) in src.rows.iter().enumerate() {
        let mut out = vec![Value::Int(i as i64), Value::Int(EVENT_MS)];
        out.extend(idx.iter().map(|&c| row[c].clone()));
        table.push(out)?;
    }
    Ok(table)
}

pub async fn run(dir: &Path, lookups: usize) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir).map_err(|e| Error::from(e).resource(dir.display().to_string()))?;
    let db = dir.join("galley-features.db");
    let _ = std::fs::remove_file(&db);
    let rows = wine_rows()?;
    let n = rows.len();

    let setup = Instant::now();
    let store = LocalFeatures::open(db.clone())?;
    store
        .create_group(&FeatureGroupSpec {
            name: GROUP.into(),
            entity: Column::new("row_id", DType::Int),
            event_time: "event_time".into(),
            features: FEATURES.iter().map(|f| Column::new(*f, DType::Float)).collect(),
            online: true,
        })
        .await?;
    store.ingest(GROUP, &rows).await?;
    let materialized = store.materialize(GROUP, EVENT_MS + 1).await?;
    let setup_s = setup.elapsed().as_secs_f64();
    if materialized as usize != n {
        return Err(Error::internal(format!("materialized {materialized} of {n} entities into {}", db.display())));
    }

    let features: Vec<String> = FEATURES.iter().map(|f| (*f).to_owned()).collect();
    let mut samples = Vec::with_capacity(lookups);
    let started = Instant::now();
    for i in 0..lookups {
        let key = entity(i, n);
        let t = Instant::now();
        let got = store.get_online(GROUP, &[Value::Int(key)], &features).await?;
        samples.push(t.elapsed().as_secs_f64());
        // Checked outside the timed call, but on every lookup: a miss is a broken benchmark.
        match got.first() {
            Some(Some(values)) if values.len() == FEATURES.len() => {}
            other => return Err(Error::internal(format!("entity {key}: expected 7 online values, got {other:?}"))),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (p50_us, p99_us) = p50_p99_us(&mut samples);
    drop(store);
    let floor = sqlite_floor(&db, lookups, n)?;
    Ok(json!({
        "sqlite_floor_lookups_per_s": floor,
        "entities": n,
        "features": FEATURES.len(),
        "lookups": lookups,
        "seconds": seconds,
        "lookups_per_s": lookups as f64 / seconds,
        "p50_us": p50_us,
        "p99_us": p99_us,
        "setup_s": setup_s,
    }))
}

/// The same point reads straight through rusqlite on the calling thread, on the same file: no
/// async hop, no group lookup. Not a comparison target; it shows how much of a lookup's cost
/// is SQLite itself and how much the store adds around it.
fn sqlite_floor(db: &Path, lookups: usize, rows: usize) -> Result<f64> {
    let sql_err = |e: rusqlite::Error| Error::internal(format!("{}: {e}", db.display()));
    let conn = rusqlite::Connection::open(db).map_err(sql_err)?;
    let table: String = conn
        .query_row("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'fgn_%'", [], |r| r.get(0))
        .map_err(sql_err)?;
    let cols: Vec<String> = (0..FEATURES.len()).map(|i| format!("f{i}")).collect();
    let sql = format!("SELECT entity, {} FROM {table} WHERE entity IN (?1)", cols.join(", "));
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let started = Instant::now();
    for i in 0..lookups {
        let found = stmt
            .query_row([entity(i, rows)], |r| (1..=FEATURES.len()).map(|j| r.get::<_, f64>(j)).collect::<rusqlite::Result<Vec<_>>>())
            .map_err(sql_err)?;
        if found.len() != FEATURES.len() {
            return Err(Error::internal("short row in the SQLite floor run"));
        }
    }
    Ok(lookups as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_stay_in_range_and_spread_out() {
        let keys: Vec<i64> = (0..5).map(|i| entity(i, 1_599)).collect();
        assert_eq!(keys, vec![0, 1_523, 1_447, 1_371, 1_295]);
        assert!((0..10_000).all(|i| (0..1_599).contains(&entity(i, 1_599))));
    }

    #[test]
    fn wine_rows_have_ids_and_the_seven_features() {
        let t = wine_rows().unwrap();
        assert_eq!(t.len(), 1_599);
        assert_eq!(t.columns.len(), 9);
        assert_eq!(t.rows[1_598][0], Value::Int(1_598));
    }

    #[tokio::test]
    async fn lookups_return_the_ingested_values() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(dir.path(), 20).await.unwrap();
        assert_eq!(report["lookups"], 20);
        assert_eq!(report["entities"], 1_599);
        let store = LocalFeatures::open(dir.path().join("galley-features.db")).unwrap();
        let features: Vec<String> = FEATURES.iter().map(|f| (*f).to_owned()).collect();
        let got = store.get_online(GROUP, &[Value::Int(3)], &features).await.unwrap();
        assert_eq!(got[0].as_ref().unwrap(), &wine_rows().unwrap().rows[3][2..].to_vec());
    }
}
