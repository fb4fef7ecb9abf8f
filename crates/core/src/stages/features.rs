use async_trait::async_trait;

use super::{Described, TimestampMs};
use crate::table::{Column, Table, Value};
use crate::Result;

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
