//! The feature store on SageMaker Feature Store. A group is a Feature Group (record identifier
//! = the entity, event time, typed features; online store when asked, with its TTL; offline
//! store on the artifact bucket). Galley's spec is kept beside the group's data
//! (`galley/features/<group>/spec.json`) so `describe_group` round-trips types SageMaker folds
//! together (bool and string); without it the spec is rebuilt from SageMaker's definitions.
//!
//! `ingest` appends rows as JSON batches under the group's offline prefix
//! (`galley/features/<group>/offline/`), which also answers point-in-time joins;
//! `materialize` writes the latest row per entity to the online store with the feature-store
//! runtime's PutRecord, and `get_online` reads it back with BatchGetRecord.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sagemaker::types::{
    FeatureDefinition, FeatureType, OfflineStoreConfig, OnlineStoreConfig, S3StorageConfig, Tag, TtlDuration, TtlDurationUnit,
};
use aws_sdk_sagemakerfeaturestoreruntime::types::{BatchGetRecordIdentifier, FeatureValue};
use bytes::Bytes;
use galley_core::stages::{ArtifactKey, ArtifactStore, ArtifactStoreExt, Described, FeatureGroupSpec, FeatureStore, TimestampMs, now_ms};
use galley_core::table::Column;
use galley_core::{DType, Error, ErrorKind, Result, Stage, Table, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::artifacts::S3Artifacts;
use crate::config::AwsClients;
use crate::error::{fault, sdk};
use crate::waiter::{Acceptor, AcceptorState, Matcher, Observation, WaiterDef};

const ROOT: &str = "galley/features";

#[derive(Clone, Debug)]
pub struct SageMakerFeatures {
    clients: AwsClients,
    store: S3Artifacts,
    /// Online values older than this are not served (SageMaker's online-store TTL).
    ttl: Option<TtlDuration>,
    /// Overrides the creation waiter's delay (tests against scripted servers).
    pub poll_delay: Option<Duration>,
}

/// A new feature group takes a minute or more to become usable: PutRecord on a group still
/// `Creating` is refused. botocore defines no waiter for feature groups, so this one is
/// written in its terms, over DescribeFeatureGroup's FeatureGroupStatus.
fn group_created_waiter() -> &'static WaiterDef {
    static DEF: OnceLock<WaiterDef> = OnceLock::new();
    DEF.get_or_init(|| {
        let path = |expected: &str, state| Acceptor {
            matcher: Matcher::Path,
            argument: Some("FeatureGroupStatus".into()),
            state,
            expected: Json::from(expected),
        };
        WaiterDef {
            delay: 5,
            max_attempts: 120,
            operation: "DescribeFeatureGroup".into(),
            acceptors: vec![path("Created", AcceptorState::Success), path("CreateFailed", AcceptorState::Failure)],
        }
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Batch {
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
}

/// SageMaker's feature type for a Galley column type.
pub fn feature_type(t: DType) -> FeatureType {
    match t {
        DType::Int => FeatureType::Integral,
        DType::Float => FeatureType::Fractional,
        DType::Bool | DType::String => FeatureType::String,
    }
}

/// A `30d` / `12h` / `45m` blueprint TTL as SageMaker's TtlDuration.
pub fn ttl_duration(ttl: &str) -> Result<TtlDuration> {
    let (n, unit) = ttl.split_at(ttl.len().saturating_sub(1));
    let value: i32 = n.parse().map_err(|_| Error::invalid(format!("feature ttl `{ttl}` is not a number followed by s, m, h, d or w")))?;
    let unit = match unit {
        "s" => TtlDurationUnit::Seconds,
        "m" => TtlDurationUnit::Minutes,
        "h" => TtlDurationUnit::Hours,
        "d" => TtlDurationUnit::Days,
        "w" => TtlDurationUnit::Weeks,
        _ => return Err(Error::invalid(format!("feature ttl `{ttl}` must end in s, m, h, d or w"))),
    };
    Ok(TtlDuration::builder().unit(unit).value(value).build())
}

/// A cell as the feature-store runtime's string form; `None` for a null (omitted).
pub fn to_wire(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(format!("{f:?}")),
        Value::String(s) => Some(s.clone()),
    }
}

pub fn from_wire(s: &str, t: DType) -> Value {
    match t {
        DType::Int => s.parse().map(Value::Int).unwrap_or(Value::Null),
        DType::Float => s.parse().map(Value::Float).unwrap_or(Value::Null),
        DType::Bool => s.parse().map(Value::Bool).unwrap_or(Value::Null),
        DType::String => Value::String(s.to_owned()),
    }
}

impl SageMakerFeatures {
    pub fn new(clients: AwsClients, store: S3Artifacts, ttl: Option<&str>) -> Result<Self> {
        Ok(SageMakerFeatures { clients, store, ttl: ttl.map(ttl_duration).transpose()?, poll_delay: None })
    }

    /// Waits until the group is `Created`; `CreateFailed` is an error with SageMaker's reason.
    async fn wait_created(&self, group: &str) -> Result<()> {
        let observe = || async {
            match self.clients.sagemaker.describe_feature_group().feature_group_name(group).send().await {
                Ok(d) => Observation::Output {
                    status: 200,
                    body: serde_json::json!({
                        "FeatureGroupStatus": d.feature_group_status().map(|s| s.as_str()),
                        "FailureReason": d.failure_reason(),
                    }),
                },
                Err(e) => Observation::Error(fault(&e)),
            }
        };
        group_created_waiter().wait(&format!("feature group `{group}`"), self.poll_delay, observe).await.map(|_| ())
    }

    fn check_name(name: &str) -> Result<()> {
        let ok = name.len() <= 64
            && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "feature group name `{name}` is not valid on SageMaker: letters, digits and `-`, starting with a letter or digit, at most 64"
            )))
        }
    }

    /// The S3 prefix SageMaker's offline store writes under (Galley writes its batches beside).
    pub fn offline_uri(&self, group: &str) -> String {
        self.store.uri(&format!("{ROOT}/{group}/sagemaker-offline"))
    }

    /// Creates the group with extra `tags` (the resource handler's owner tag).
    pub async fn create_tagged(&self, spec: &FeatureGroupSpec, extra: Vec<Tag>) -> Result<()> {
        Self::check_name(&spec.name)?;
        let role = self.clients.role_arn(&format!("feature group `{}`", spec.name))?;
        let mut defs = vec![
            FeatureDefinition::builder().feature_name(&spec.entity.name).feature_type(feature_type(spec.entity.dtype)).build(),
            // Event time as fractional seconds since the epoch.
            FeatureDefinition::builder().feature_name(&spec.event_time).feature_type(FeatureType::Fractional).build(),
        ];
        defs.extend(spec.features.iter().map(|c| FeatureDefinition::builder().feature_name(&c.name).feature_type(feature_type(c.dtype)).build()));
        let tags = extra;
        let online = spec.online.then(|| {
            OnlineStoreConfig::builder().enable_online_store(true).set_ttl_duration(self.ttl.clone()).build()
        });
        let offline = OfflineStoreConfig::builder()
            .s3_storage_config(S3StorageConfig::builder().s3_uri(self.offline_uri(&spec.name)).build())
            .build();
        // Create first and compare only when it exists: one call in the common case, and no
        // window between a check and the create.
        let created = self
            .clients
            .sagemaker
            .create_feature_group()
            .feature_group_name(&spec.name)
            .record_identifier_feature_name(&spec.entity.name)
            .event_time_feature_name(&spec.event_time)
            .set_feature_definitions(Some(defs))
            .set_online_store_config(online)
            .offline_store_config(offline)
            .role_arn(role)
            .description("managed by galley")
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(sdk(Stage::Features, "CreateFeatureGroup", &spec.name));
        match created {
            Ok(_) => {
                let key = Self::spec_key(&spec.name)?;
                self.store.put_bytes(&key, Bytes::from(serde_json::to_vec(spec)?)).await?;
                self.wait_created(&spec.name).await
            }
            // Found again after a crash, perhaps still being created.
            Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::Conflict) => match self.describe_group(&spec.name).await? {
                Some(existing) if existing == *spec => self.wait_created(&spec.name).await,
                _ => Err(Error::conflict(format!(
                    "feature group `{}` exists with another definition; SageMaker cannot change a feature group's features in place — rename the group or delete it",
                    spec.name
                ))),
            },
            Err(e) => Err(e),
        }
    }

    fn spec_key(group: &str) -> Result<ArtifactKey> {
        ArtifactKey::new(format!("{ROOT}/{group}/spec.json"))
    }

    fn check_rows(spec: &FeatureGroupSpec, rows: &Table) -> Result<()> {
        let declared: HashMap<&str, DType> = std::iter::once((spec.entity.name.as_str(), spec.entity.dtype))
            .chain(spec.features.iter().map(|c| (c.name.as_str(), c.dtype)))
            .collect();
        for must in [&spec.entity.name, &spec.event_time] {
            if rows.column_index(must).is_none() {
                return Err(Error::invalid(format!("feature group `{}`: the rows lack the `{must}` column", spec.name)));
            }
        }
        for c in &rows.columns {
            if c.name == spec.event_time {
                if !matches!(c.dtype, DType::Int | DType::Float) {
                    return Err(Error::invalid(format!(
                        "feature group `{}`: event time `{}` must be milliseconds since the epoch (int), not {}",
                        spec.name, c.name, c.dtype
                    )));
                }
                continue;
            }
            match declared.get(c.name.as_str()) {
                None => {
                    return Err(Error::invalid(format!(
                        "feature group `{}` has no feature `{}`; its features are {:?}",
                        spec.name,
                        c.name,
                        spec.features.iter().map(|f| &f.name).collect::<Vec<_>>()
                    )));
                }
                Some(t) if *t != c.dtype && !(*t == DType::Float && c.dtype == DType::Int) => {
                    return Err(Error::invalid(format!(
                        "feature group `{}`: `{}` is a {t} feature but the rows give {}",
                        spec.name, c.name, c.dtype
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn spec_of(&self, group: &str) -> Result<FeatureGroupSpec> {
        self.describe_group(group).await?.ok_or_else(|| {
            Error::not_found(format!("feature group `{group}` does not exist; run `galley apply`"))
                .platform(crate::platform::AWS)
                .stage(Stage::Features)
        })
    }

    /// Every offline row, as (event time, column → value), in ingestion order.
    async fn offline_rows(&self, group: &str) -> Result<Vec<(f64, HashMap<String, Value>)>> {
        let spec = self.spec_of(group).await?;
        let mut out = Vec::new();
        for m in self.store.list(&format!("{ROOT}/{group}/offline/")).await? {
            let bytes = self.store.get_bytes(&ArtifactKey::new(m.key.clone())?).await?;
            let batch: Batch = serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(format!("{}: not a galley feature batch ({e})", m.uri)))?;
            let ti = batch.columns.iter().position(|c| c.name == spec.event_time);
            for r in batch.rows {
                let ts = ti.and_then(|i| r.get(i)).and_then(Value::as_f64).unwrap_or(f64::NAN);
                let map = batch.columns.iter().map(|c| c.name.clone()).zip(r).collect();
                out.push((ts, map));
            }
        }
        Ok(out)
    }

    fn key_string(v: &Value) -> String {
        to_wire(v).unwrap_or_default()
    }
}

impl Described for SageMakerFeatures {
    fn capabilities(&self) -> galley_core::Capabilities {
        crate::platform::capabilities()
    }
}

#[async_trait]
impl FeatureStore for SageMakerFeatures {
    async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<()> {
        self.create_tagged(spec, Vec::new()).await
    }

    async fn describe_group(&self, name: &str) -> Result<Option<FeatureGroupSpec>> {
        Self::check_name(name)?;
        let d = match self.clients.sagemaker.describe_feature_group().feature_group_name(name).send().await {
            Ok(d) => d,
            Err(e) => {
                let e = sdk(Stage::Features, "DescribeFeatureGroup", name)(e);
                return if e.kind() == ErrorKind::NotFound { Ok(None) } else { Err(e) };
            }
        };
        let spec_key = Self::spec_key(name)?;
        match self.store.get_bytes(&spec_key).await {
            Ok(bytes) => {
                return serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    Error::corrupt(format!("{}: not a galley feature group spec ({e})", self.store.uri(spec_key.as_str())))
                });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Not made by Galley: reconstruct what SageMaker knows.
        let dtype = |t: Option<&FeatureType>| match t {
            Some(FeatureType::Integral) => DType::Int,
            Some(FeatureType::Fractional) => DType::Float,
            _ => DType::String,
        };
        let id = d.record_identifier_feature_name().unwrap_or_default().to_owned();
        let et = d.event_time_feature_name().unwrap_or_default().to_owned();
        let defs = d.feature_definitions();
        let entity = defs.iter().find(|f| f.feature_name() == Some(id.as_str())).map(|f| Column::new(&id, dtype(f.feature_type()))).unwrap_or(Column::new(&id, DType::String));
        Ok(Some(FeatureGroupSpec {
            name: name.to_owned(),
            entity,
            event_time: et.clone(),
            features: defs
                .iter()
                .filter(|f| f.feature_name() != Some(id.as_str()) && f.feature_name() != Some(et.as_str()))
                .map(|f| Column::new(f.feature_name().unwrap_or_default(), dtype(f.feature_type())))
                .collect(),
            online: d.online_store_config().and_then(|o| o.enable_online_store()).unwrap_or(false),
        }))
    }

    async fn delete_group(&self, name: &str) -> Result<()> {
        Self::check_name(name)?;
        match self.clients.sagemaker.delete_feature_group().feature_group_name(name).send().await {
            Ok(_) => {}
            Err(e) => {
                let e = sdk(Stage::Features, "DeleteFeatureGroup", name)(e);
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        for m in self.store.list(&format!("{ROOT}/{name}/")).await? {
            self.store.delete(&ArtifactKey::new(m.key)?).await?;
        }
        Ok(())
    }

    async fn ingest(&self, group: &str, rows: &Table) -> Result<u64> {
        let spec = self.spec_of(group).await?;
        Self::check_rows(&spec, rows)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let batch = Batch { columns: rows.columns.clone(), rows: rows.rows.clone() };
        let key = ArtifactKey::new(format!("{ROOT}/{group}/offline/{:013}-{}.json", now_ms(), uuid::Uuid::new_v4().simple()))?;
        self.store.put_bytes(&key, Bytes::from(serde_json::to_vec(&batch)?)).await?;
        Ok(rows.len() as u64)
    }

    async fn materialize(&self, group: &str, up_to: TimestampMs) -> Result<u64> {
        let spec = self.spec_of(group).await?;
        if !spec.online {
            return Err(Error::invalid(format!("feature group `{group}` has no online store (`online: false`)")));
        }
        // Latest row per entity at or before the horizon; a tie goes to the later ingest.
        let mut latest: BTreeMap<String, (f64, HashMap<String, Value>)> = BTreeMap::new();
        for (ts, row) in self.offline_rows(group).await? {
            if !(ts <= up_to as f64) {
                continue;
            }
            let key = Self::key_string(row.get(&spec.entity.name).unwrap_or(&Value::Null));
            if latest.get(&key).is_none_or(|(t, _)| *t <= ts) {
                latest.insert(key, (ts, row));
            }
        }
        for (key, (ts, row)) in &latest {
            let mut record = vec![
                FeatureValue::builder().feature_name(&spec.entity.name).value_as_string(key).build(),
                // SageMaker's event time: fractional seconds.
                FeatureValue::builder().feature_name(&spec.event_time).value_as_string(format!("{:.3}", ts / 1000.0)).build(),
            ];
            for f in &spec.features {
                if let Some(v) = row.get(&f.name).and_then(to_wire) {
                    record.push(FeatureValue::builder().feature_name(&f.name).value_as_string(v).build());
                }
            }
            self.clients
                .featurestore
                .put_record()
                .feature_group_name(group)
                .set_record(Some(record))
                .send()
                .await
                .map_err(sdk(Stage::Features, "PutRecord", group))?;
        }
        Ok(latest.len() as u64)
    }

    async fn get_online(&self, group: &str, keys: &[Value], features: &[String]) -> Result<Vec<Option<Vec<Value>>>> {
        let spec = self.spec_of(group).await?;
        let types: HashMap<&str, DType> = spec.features.iter().map(|c| (c.name.as_str(), c.dtype)).collect();
        for f in features {
            if !types.contains_key(f.as_str()) {
                return Err(Error::invalid(format!("feature group `{group}` has no feature `{f}`")));
            }
        }
        let mut found: HashMap<String, HashMap<String, String>> = HashMap::new();
        // BatchGetRecord takes at most 100 record identifiers per call.
        let wanted: Vec<String> = keys.iter().map(Self::key_string).collect();
        for chunk in wanted.chunks(100) {
            let id = BatchGetRecordIdentifier::builder()
                .feature_group_name(group)
                .set_record_identifiers_value_as_string(Some(chunk.to_vec()))
                .set_feature_names(Some(features.to_vec()))
                .build();
            let out = self
                .clients
                .featurestore
                .batch_get_record()
                .identifiers(id)
                .send()
                .await
                .map_err(sdk(Stage::Features, "BatchGetRecord", group))?;
            if let Some(e) = out.errors().first() {
                return Err(Error::new(ErrorKind::Unavailable, format!(
                    "feature group `{group}`: BatchGetRecord failed for `{}`: {}",
                    e.record_identifier_value_as_string().unwrap_or_default(),
                    e.error_message().unwrap_or_default()
                )));
            }
            for r in out.records() {
                let values = r.record().iter().filter_map(|v| Some((v.feature_name()?.to_owned(), v.value_as_string().unwrap_or_default().to_owned()))).collect();
                found.insert(r.record_identifier_value_as_string().unwrap_or_default().to_owned(), values);
            }
        }
        Ok(wanted
            .iter()
            .map(|k| {
                found.get(k).map(|vals| {
                    features.iter().map(|f| vals.get(f).map(|s| from_wire(s, types[f.as_str()])).unwrap_or(Value::Null)).collect()
                })
            })
            .collect())
    }

    async fn get_historical(&self, group: &str, entities: &Table, features: &[String]) -> Result<Table> {
        let spec = self.spec_of(group).await?;
        let types: HashMap<&str, DType> = spec.features.iter().map(|c| (c.name.as_str(), c.dtype)).collect();
        for f in features {
            if !types.contains_key(f.as_str()) {
                return Err(Error::invalid(format!("feature group `{group}` has no feature `{f}`")));
            }
        }
        let (ei, ti) = match (entities.column_index(&spec.entity.name), entities.column_index(&spec.event_time)) {
            (Some(e), Some(t)) => (e, t),
            _ => {
                return Err(Error::invalid(format!(
                    "feature group `{group}`: the lookup table needs the `{}` and `{}` columns",
                    spec.entity.name, spec.event_time
                )));
            }
        };
        let mut by_entity: HashMap<String, Vec<(f64, HashMap<String, Value>)>> = HashMap::new();
        for (ts, row) in self.offline_rows(group).await? {
            let key = Self::key_string(row.get(&spec.entity.name).unwrap_or(&Value::Null));
            by_entity.entry(key).or_default().push((ts, row));
        }
        let mut columns = entities.columns.clone();
        columns.extend(features.iter().map(|f| Column::new(f, types[f.as_str()])));
        let mut out = Table::new(columns);
        for r in &entities.rows {
            let key = Self::key_string(&r[ei]);
            let at = r[ti].as_f64().unwrap_or(f64::NEG_INFINITY);
            // As of `at`: the latest event not after it, never one from its future.
            let hit = by_entity
                .get(&key)
                .and_then(|rows| rows.iter().filter(|(ts, _)| *ts <= at).max_by(|a, b| a.0.total_cmp(&b.0)));
            let mut row = r.clone();
            row.extend(features.iter().map(|f| hit.and_then(|(_, m)| m.get(f).cloned()).unwrap_or(Value::Null)));
            out.rows.push(row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_wire_forms() {
        let t = ttl_duration("30d").unwrap();
        assert_eq!((t.unit(), t.value()), (Some(&TtlDurationUnit::Days), Some(30)));
        assert!(ttl_duration("30x").is_err());
        assert!(ttl_duration("d").is_err());
        assert_eq!(to_wire(&Value::Float(2.0)).as_deref(), Some("2.0"));
        assert_eq!(from_wire("2.0", DType::Float), Value::Float(2.0));
        assert_eq!(from_wire("true", DType::Bool), Value::Bool(true));
        assert_eq!(to_wire(&Value::Null), None);
        assert_eq!(feature_type(DType::Bool), FeatureType::String);
    }
}
