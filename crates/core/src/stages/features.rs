use async_trait::async_trait;

use super::{Described, TimestampMs};
use crate::table::{Column, Table, Value};
use crate::table::DType;
use crate::{Error, Result};

/// A feature group (SageMaker's word; Feast's feature view): one entity key, one event-time
/// column, typed features.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureGroupSpec {
    pub name: String,
    /// The entity key column (string or int).
    pub entity: Column,
    /// The event-time column, milliseconds since the epoch.
    pub event_time: String,
    pub features: Vec<Column>,
    /// Whether an online store is kept for low-latency reads.
    pub online: bool,
}

/// Where a column of ingested rows goes in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Entity,
    EventTime,
    /// The spec's feature number `i`.
    Feature(usize),
}

impl FeatureGroupSpec {
    /// Refuses a spec no store can keep: bad names, a non-key entity type, a column twice.
    pub fn validate(&self) -> Result<()> {
        check_name("feature group", &self.name)?;
        check_name("entity column", &self.entity.name)?;
        check_name("event-time column", &self.event_time)?;
        if !matches!(self.entity.dtype, DType::Int | DType::String) {
            return Err(Error::invalid(format!(
                "feature group `{}`: the entity column `{}` is {}, but an entity key must be int or string",
                self.name, self.entity.name, self.entity.dtype
            )));
        }
        if self.entity.name == self.event_time {
            return Err(Error::invalid(format!("feature group `{}`: the entity and event-time columns must differ", self.name)));
        }
        let mut seen = vec![self.entity.name.as_str(), self.event_time.as_str()];
        for f in &self.features {
            check_name("feature", &f.name)?;
            if seen.contains(&f.name.as_str()) {
                return Err(Error::invalid(format!("feature group `{}`: column `{}` is declared twice", self.name, f.name)));
            }
            seen.push(&f.name);
        }
        Ok(())
    }

    /// Checks rows to ingest against the group: every column declared, once, with a compatible
    /// type; the entity and event-time columns present and never null; every value of its
    /// column's declared type. Returns where each column goes and its declared type.
    pub fn check_rows(&self, rows: &Table) -> Result<Vec<(Target, DType)>> {
        let g = &self.name;
        let mut targets: Vec<(Target, DType)> = Vec::with_capacity(rows.columns.len());
        for c in &rows.columns {
            let (target, declared) = if c.name == self.entity.name {
                (Target::Entity, self.entity.dtype)
            } else if c.name == self.event_time {
                (Target::EventTime, DType::Int)
            } else {
                let (i, f) = self.features.iter().enumerate().find(|(_, f)| f.name == c.name).ok_or_else(|| {
                    Error::invalid(format!(
                        "column `{}` is not a feature of group `{g}`; add it to the group's features or drop it \
                         from the rows (features: {})",
                        c.name,
                        self.features.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                (Target::Feature(i), f.dtype)
            };
            if !compatible(c.dtype, declared) {
                return Err(Error::invalid(format!("column `{}` is {} in the rows but {declared} in feature group `{g}`", c.name, c.dtype)));
            }
            if targets.iter().any(|(t, _)| *t == target) {
                return Err(Error::invalid(format!("column `{}` appears twice in the rows", c.name)));
            }
            targets.push((target, declared));
        }
        for required in [&self.entity.name, &self.event_time] {
            if rows.column_index(required).is_none() {
                return Err(Error::invalid(format!("the rows for feature group `{g}` lack the `{required}` column")));
            }
        }
        for (i, row) in rows.rows.iter().enumerate() {
            if row.len() != targets.len() {
                return Err(Error::invalid(format!("row {i} has {} values but the rows have {} columns", row.len(), targets.len())));
            }
            for ((value, (target, declared)), c) in row.iter().zip(&targets).zip(&rows.columns) {
                match value.dtype() {
                    None if matches!(target, Target::Entity | Target::EventTime) => {
                        return Err(Error::invalid(format!("row {i}: column `{}` must not be null", c.name)));
                    }
                    Some(actual) if !compatible(actual, *declared) => {
                        return Err(Error::invalid(format!("row {i}: column `{}` is {declared} but the value is {actual}", c.name)));
                    }
                    _ => {}
                }
            }
        }
        Ok(targets)
    }

    /// The spec's (position, column) for `names`, in that order; every feature when `names` is
    /// empty.
    pub fn pick<'a>(&'a self, names: &[String]) -> Result<Vec<(usize, &'a Column)>> {
        if names.is_empty() {
            return Ok(self.features.iter().enumerate().collect());
        }
        names
            .iter()
            .map(|n| {
                self.features.iter().enumerate().find(|(_, f)| &f.name == n).ok_or_else(|| {
                    let known: Vec<&str> = self.features.iter().map(|f| f.name.as_str()).collect();
                    Error::invalid(format!("`{n}` is not a feature of group `{}` (its features are: {})", self.name, known.join(", ")))
                })
            })
            .collect()
    }

    /// Refuses online reads and materialization of a group kept offline only.
    pub fn require_online(&self) -> Result<()> {
        if self.online {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "feature group `{}` has no online store; set `online: true` on it and run `galley apply`",
                self.name
            )))
        }
    }
}

/// An int may go where a float is declared; nothing else converts.
pub fn compatible(actual: DType, declared: DType) -> bool {
    actual == declared || (actual == DType::Int && declared == DType::Float)
}

/// Names are free text (they never reach SQL or code unquoted), but must be usable in messages
/// and files.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) || name.trim() != name {
        return Err(Error::invalid(format!(
            "{what} `{name}` is not a valid name: use 1-128 printable characters, without leading or trailing spaces"
        )));
    }
    Ok(())
}

#[async_trait]
pub trait FeatureStore: Described + Send + Sync {
    /// Creates the group, or succeeds if an identical one exists; `Conflict` if it differs.
    async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<()>;
    async fn describe_group(&self, name: &str) -> Result<Option<FeatureGroupSpec>>;
    async fn delete_group(&self, name: &str) -> Result<()>;

    /// Appends rows to the offline store. `rows` holds the entity column, the event-time
    /// column and any subset of the features. Returns the rows written.
    async fn ingest(&self, group: &str, rows: &Table) -> Result<u64>;

    /// Copies the latest value per entity with event time ≤ `up_to` into the online store.
    /// Returns the entities written.
    async fn materialize(&self, group: &str, up_to: TimestampMs) -> Result<u64>;

    /// Latest online values for each key, in the order asked; `None` for an unknown entity.
    async fn get_online(
        &self,
        group: &str,
        keys: &[Value],
        features: &[String],
    ) -> Result<Vec<Option<Vec<Value>>>>;

    /// Point-in-time-correct join: for each (entity, timestamp) row of `entities`, the feature
    /// values as of that time — never a value from its future. The result has the entity
    /// columns followed by `features`.
    async fn get_historical(&self, group: &str, entities: &Table, features: &[String]) -> Result<Table>;
}
