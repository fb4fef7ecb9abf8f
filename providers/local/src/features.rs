//! The local feature store, on one SQLite file.
//!
//! Each group has an offline table `fgo_<id>` (every ingested row, append-only, indexed by
//! entity and event time) and, when the group is online, an online table `fgn_<id>` (one row
//! per entity: the latest materialized values), where `<id>` is the group's integer id. Feature
//! `i` of the spec is stored in column `f<i>`. So no name a user chose (group names like
//! `wine-features`, data columns like `fixed acidity`) ever becomes SQL text: table and column
//! names are built from integers only, and every value is bound.

use std::collections::HashMap;

use async_trait::async_trait;
use galley_core::error::ResultExt;
use galley_core::stages::{Described, FeatureGroupSpec, FeatureStore, Target, TimestampMs, now_ms};
use galley_core::table::{Column, DType, Table, Value};
use galley_core::{Error, Result, Stage};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params_from_iter};

use crate::db::{Db, DbError, DbResult};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS feature_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
";

/// Keys per online lookup query. Batches are padded to a power of two so only a handful of
/// statement shapes exist per group and all of them stay in the statement cache.
const ONLINE_BATCH: usize = 256;

pub struct LocalFeatures {
    db: Db,
    /// Groups as the online path last read them. Valid while SQLite's `data_version` (which
    /// moves whenever another connection, in this process or another, commits) is unchanged,
    /// so a lookup skips re-reading and re-parsing the group's spec without ever using a stale
    /// one.
    online_groups: std::sync::Mutex<(i64, HashMap<String, std::sync::Arc<Group>>)>,
    /// What it declares: local's features, or those of a platform that keeps its data here.
    declared: galley_core::Capabilities,
}

impl LocalFeatures {
    /// The same object declared as `platform`'s: a platform that keeps this stage the local
    /// way (onprem's shared directory) proves the declaration with its own suite run.
    pub fn declaring(mut self, platform: galley_core::Capabilities) -> Self {
        self.declared = platform;
        self
    }

    /// Opens (creating if needed) the feature store database at `db_path`.
    pub fn open(db_path: std::path::PathBuf) -> Result<Self> {
        let db = Db::open(&db_path, SCHEMA)
            .map_err(|e| e.stage(Stage::Features).operation("open").resource(db_path.display().to_string()))?;
        Ok(LocalFeatures { db, online_groups: std::sync::Mutex::new((-1, HashMap::new())), declared: crate::platform::capabilities() })
    }

    fn online_group(&self, conn: &Connection, name: &str) -> DbResult<std::sync::Arc<Group>> {
        let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let mut cache = self.online_groups.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != version {
            *cache = (version, HashMap::new());
        }
        if let Some(g) = cache.1.get(name) {
            return Ok(g.clone());
        }
        let g = std::sync::Arc::new(require_group(conn, name)?);
        cache.1.insert(name.to_owned(), g.clone());
        Ok(g)
    }

    pub fn path(&self) -> &std::path::Path {
        self.db.path()
    }
}

/// A stored group: its spec and the integer id its SQL names are derived from.
struct Group {
    id: i64,
    spec: FeatureGroupSpec,
}

impl Group {
    fn offline(&self) -> String {
        format!("fgo_{}", self.id)
    }
    fn online(&self) -> String {
        format!("fgn_{}", self.id)
    }
}

/// The SQL column of the spec's feature number `index`.
fn feature_column(index: usize) -> String {
    format!("f{index}")
}

fn sql_type(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool | DType::Int => "INTEGER",
        DType::Float => "REAL",
        DType::String => "TEXT",
    }
}

fn load_group(conn: &Connection, group: &str) -> DbResult<Option<Group>> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT id, spec FROM feature_groups WHERE name = ?1")?
        .query_row([group], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        Some((id, json)) => Ok(Some(Group { id, spec: serde_json::from_str(&json)? })),
        None => Ok(None),
    }
}

fn require_group(conn: &Connection, group: &str) -> DbResult<Group> {
    load_group(conn, group)?.ok_or_else(|| {
        Error::not_found(format!(
            "feature group `{group}` does not exist; declare it in the blueprint's features section \
             and run `galley apply`"
        ))
        .into()
    })
}

fn to_sql(v: &Value, declared: DType) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Int(i) if declared == DType::Float => SqlValue::Real(*i as f64),
        Value::Int(i) => SqlValue::Integer(*i),
        Value::Float(f) => SqlValue::Real(*f),
        Value::String(s) => SqlValue::Text(s.clone()),
    }
}

fn from_sql(v: ValueRef<'_>, declared: DType) -> Value {
    match (v, declared) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(i), DType::Bool) => Value::Bool(i != 0),
        (ValueRef::Integer(i), DType::Float) => Value::Float(i as f64),
        (ValueRef::Integer(i), _) => Value::Int(i),
        (ValueRef::Real(f), _) => Value::Float(f),
        (ValueRef::Text(t), _) | (ValueRef::Blob(t), _) => Value::String(String::from_utf8_lossy(t).into_owned()),
    }
}

/// An entity key as a map key (floats never are entity keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum EntityKey {
    Int(i64),
    Str(String),
}

fn entity_key(spec: &FeatureGroupSpec, v: &Value) -> DbResult<EntityKey> {
    match (v, spec.entity.dtype) {
        (Value::Int(i), DType::Int) => Ok(EntityKey::Int(*i)),
        (Value::String(s), DType::String) => Ok(EntityKey::Str(s.clone())),
        _ => Err(Error::invalid(format!(
            "entity key {v:?} does not match the entity column `{}` of group `{}`, which is {}",
            spec.entity.name, spec.name, spec.entity.dtype
        ))
        .into()),
    }
}

fn create_tables(conn: &Connection, group: &Group) -> rusqlite::Result<()> {
    let spec = &group.spec;
    let entity_type = sql_type(spec.entity.dtype);
    let features: String = spec
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| format!(", {} {}", feature_column(i), sql_type(f.dtype)))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE {off} (
             seq INTEGER PRIMARY KEY,
             entity {entity_type} NOT NULL,
             event_time INTEGER NOT NULL,
             ingested_at INTEGER NOT NULL{features}
         );
         CREATE INDEX {off}_by_entity_time ON {off} (entity, event_time);",
        off = group.offline()
    ))?;
    if spec.online {
        conn.execute_batch(&format!(
            "CREATE TABLE {on} (
                 entity {entity_type} PRIMARY KEY,
                 event_time INTEGER NOT NULL,
                 source_seq INTEGER NOT NULL{features}
             );",
            on = group.online()
        ))?;
    }
    Ok(())
}

fn entity_sql(key: EntityKey) -> SqlValue {
    match key {
        EntityKey::Int(v) => SqlValue::Integer(v),
        EntityKey::Str(s) => SqlValue::Text(s),
    }
}

impl Described for LocalFeatures {
    fn capabilities(&self) -> galley_core::Capabilities {
        self.declared.clone()
    }
}

#[async_trait]
impl FeatureStore for LocalFeatures {
    async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<()> {
        spec.validate().ctx(Stage::Features, "create_group", &spec.name)?;
        let spec = spec.clone();
        let name = spec.name.clone();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                match load_group(&tx, &spec.name)? {
                    Some(existing) if existing.spec == spec => return Ok(()),
                    Some(_) => {
                        return Err(Error::conflict(format!(
                            "feature group `{}` already exists with a different definition; delete \
                             the group first (its data is lost) or give the new definition another name",
                            spec.name
                        ))
                        .into());
                    }
                    None => {}
                }
                tx.prepare_cached("INSERT INTO feature_groups (name, spec, created_ms) VALUES (?1, ?2, ?3)")?
                    .execute(rusqlite::params![spec.name, serde_json::to_string(&spec)?, now_ms()])?;
                let group = Group { id: tx.last_insert_rowid(), spec };
                create_tables(&tx, &group)?;
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Features, "create_group", &name)
    }

    async fn describe_group(&self, name: &str) -> Result<Option<FeatureGroupSpec>> {
        let g = name.to_owned();
        self.db
            .call(move |conn| Ok(load_group(conn, &g)?.map(|group| group.spec)))
            .await
            .ctx(Stage::Features, "describe_group", name)
    }

    /// Drops the group's tables with its definition; deleting an absent group succeeds.
    async fn delete_group(&self, name: &str) -> Result<()> {
        let g = name.to_owned();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(group) = load_group(&tx, &g)? else { return Ok(()) };
                tx.execute_batch(&format!(
                    "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
                    group.offline(),
                    group.online()
                ))?;
                tx.prepare_cached("DELETE FROM feature_groups WHERE id = ?1")?.execute([group.id])?;
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Features, "delete_group", name)
    }

    async fn ingest(&self, group: &str, rows: &Table) -> Result<u64> {
        let g = group.to_owned();
        let rows = rows.clone();
        self.db
            .call(move |conn| {
                let group = require_group(conn, &g)?;
                let spec = &group.spec;
                // For each input column: its SQL column and declared type.
                let targets: Vec<(String, DType)> = spec
                    .check_rows(&rows)?
                    .into_iter()
                    .map(|(target, declared)| {
                        let column = match target {
                            Target::Entity => "entity".to_owned(),
                            Target::EventTime => "event_time".to_owned(),
                            Target::Feature(i) => feature_column(i),
                        };
                        (column, declared)
                    })
                    .collect();
                let columns: Vec<&str> = targets.iter().map(|(c, _)| c.as_str()).collect();
                let placeholders = vec!["?"; columns.len() + 1].join(", ");
                let sql = format!(
                    "INSERT INTO {} ({}, ingested_at) VALUES ({placeholders})",
                    group.offline(),
                    columns.join(", ")
                );
                let ingested_at = now_ms();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut insert = tx.prepare_cached(&sql)?;
                    let mut bound: Vec<SqlValue> = Vec::with_capacity(targets.len() + 1);
                    for row in &rows.rows {
                        bound.clear();
                        bound.extend(row.iter().zip(&targets).map(|(value, (_, declared))| to_sql(value, *declared)));
                        bound.push(SqlValue::Integer(ingested_at));
                        insert.execute(params_from_iter(bound.iter()))?;
                    }
                }
                tx.commit()?;
                Ok(rows.rows.len() as u64)
            })
            .await
            .ctx(Stage::Features, "ingest", group)
    }

    async fn materialize(&self, group: &str, up_to: TimestampMs) -> Result<u64> {
        let g = group.to_owned();
        self.db
            .call(move |conn| {
                let group = require_group(conn, &g)?;
                group.spec.require_online()?;
                let features: Vec<String> = (0..group.spec.features.len()).map(feature_column).collect();
                let list: String = features.iter().map(|f| format!(", {f}")).collect();
                let updates: String = features.iter().map(|f| format!(", {f} = excluded.{f}")).collect();
                let online = group.online();
                // Latest row per entity at or before `up_to` (ties: the last ingested), written
                // only where it is newer than what the online table holds.
                let sql = format!(
                    "INSERT INTO {online} (entity, event_time, source_seq{list})
                     SELECT entity, event_time, seq{list} FROM (
                         SELECT *, row_number() OVER (
                             PARTITION BY entity ORDER BY event_time DESC, seq DESC) AS latest_first
                         FROM {offline} WHERE event_time <= ?1)
                     WHERE latest_first = 1
                     ON CONFLICT (entity) DO UPDATE SET event_time = excluded.event_time,
                         source_seq = excluded.source_seq{updates}
                     WHERE excluded.event_time > {online}.event_time
                        OR (excluded.event_time = {online}.event_time
                            AND excluded.source_seq > {online}.source_seq)",
                    offline = group.offline()
                );
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let written = tx.prepare_cached(&sql)?.execute([up_to])?;
                tx.commit()?;
                Ok(written as u64)
            })
            .await
            .ctx(Stage::Features, "materialize", group)
    }

    async fn get_online(&self, group: &str, keys: &[Value], features: &[String]) -> Result<Vec<Option<Vec<Value>>>> {
        // Online reads are point lookups on the serving path: run them inline (see `read_now`).
        self.db
            .read_now(|conn| {
                let group = self.online_group(conn, group)?;
                let spec = &group.spec;
                spec.require_online()?;
                let wanted = spec.pick(features)?;
                let keys: Vec<EntityKey> = keys.iter().map(|k| entity_key(spec, k)).collect::<DbResult<_>>()?;
                let select: String = wanted.iter().map(|(i, _)| format!(", {}", feature_column(*i))).collect();
                let mut found: HashMap<EntityKey, Vec<Value>> = HashMap::with_capacity(keys.len());
                for batch in keys.chunks(ONLINE_BATCH) {
                    let slots = batch.len().next_power_of_two();
                    let sql = format!(
                        "SELECT entity{select} FROM {} WHERE entity IN ({})",
                        group.online(),
                        vec!["?"; slots].join(", ")
                    );
                    let mut stmt = conn.prepare_cached(&sql)?;
                    // Padding repeats the first key: a duplicate in IN (…) changes nothing.
                    let bound = batch
                        .iter()
                        .chain(std::iter::repeat_n(&batch[0], slots - batch.len()))
                        .map(|k| entity_sql(k.clone()));
                    let mut rows = stmt.query(params_from_iter(bound))?;
                    while let Some(row) = rows.next()? {
                        let key = match row.get_ref(0)? {
                            ValueRef::Integer(i) => EntityKey::Int(i),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                EntityKey::Str(String::from_utf8_lossy(t).into_owned())
                            }
                            // The entity column is declared NOT NULL, int or text.
                            ValueRef::Null | ValueRef::Real(_) => continue,
                        };
                        let values =
                            wanted.iter().enumerate().map(|(j, (_, f))| Ok(from_sql(row.get_ref(j + 1)?, f.dtype)));
                        found.insert(key, values.collect::<rusqlite::Result<_>>()?);
                    }
                }
                Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
            })
            .ctx(Stage::Features, "get_online", group)
    }

    async fn get_historical(&self, group: &str, entities: &Table, features: &[String]) -> Result<Table> {
        let g = group.to_owned();
        let entities = entities.clone();
        let features = features.to_vec();
        self.db
            .call(move |conn| {
                let group = require_group(conn, &g)?;
                let spec = &group.spec;
                let wanted: Vec<(usize, Column)> =
                    spec.pick(&features)?.into_iter().map(|(i, c)| (i, c.clone())).collect();
                let missing = |what: &str, name: &str| -> DbError {
                    Error::invalid(format!(
                        "the entity rows for feature group `{g}` lack the {what} column `{name}`"
                    ))
                    .into()
                };
                let entity_at =
                    entities.column_index(&spec.entity.name).ok_or_else(|| missing("entity", &spec.entity.name))?;
                let time_at =
                    entities.column_index(&spec.event_time).ok_or_else(|| missing("event-time", &spec.event_time))?;
                if let Some((_, clash)) = wanted.iter().find(|(_, f)| entities.column_index(&f.name).is_some()) {
                    return Err(Error::invalid(format!(
                        "the entity rows already have a column `{}`, which is also a requested \
                         feature; rename or drop that column",
                        clash.name
                    ))
                    .into());
                }
                let select = if wanted.is_empty() {
                    "1".to_owned()
                } else {
                    wanted.iter().map(|(i, _)| feature_column(*i)).collect::<Vec<_>>().join(", ")
                };
                // As of each row's time: the latest value at or before it, never after, so a
                // training set never sees the future of its labels.
                let sql = format!(
                    "SELECT {select} FROM {} WHERE entity = ?1 AND event_time <= ?2
                     ORDER BY event_time DESC, seq DESC LIMIT 1",
                    group.offline()
                );
                let mut out =
                    Table::new(entities.columns.iter().cloned().chain(wanted.iter().map(|(_, c)| c.clone())).collect());
                out.rows.reserve(entities.rows.len());
                // One read transaction: every row is answered from the same snapshot.
                let tx = conn.transaction()?;
                {
                    let mut stmt = tx.prepare_cached(&sql)?;
                    for (i, row) in entities.rows.iter().enumerate() {
                        let key = row.get(entity_at).ok_or_else(|| {
                            Error::invalid(format!("entity row {i} has fewer values than columns"))
                        })?;
                        let key = entity_sql(entity_key(spec, key)?);
                        let at = match row.get(time_at) {
                            Some(Value::Int(t)) => *t,
                            other => {
                                return Err(Error::invalid(format!(
                                    "entity row {i}: `{}` must be an int timestamp (ms), not {other:?}",
                                    spec.event_time
                                ))
                                .into());
                            }
                        };
                        let values: Option<Vec<Value>> = stmt
                            .query_row(rusqlite::params![key, at], |r| {
                                wanted
                                    .iter()
                                    .enumerate()
                                    .map(|(j, (_, f))| Ok(from_sql(r.get_ref(j)?, f.dtype)))
                                    .collect()
                            })
                            .optional()?;
                        let mut joined = row.clone();
                        joined.extend(values.unwrap_or_else(|| vec![Value::Null; wanted.len()]));
                        out.rows.push(joined);
                    }
                }
                tx.commit()?;
                Ok(out)
            })
            .await
            .ctx(Stage::Features, "get_historical", group)
    }
}
