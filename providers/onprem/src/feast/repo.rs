//! The feature repository on disk: Feast's `feature_store.yaml` (written when absent, checked
//! when present) and one Python definitions file per group, the same objects the bridge
//! applies, so `feast plan` in the repository reports no changes and a user can read, version
//! and `feast apply` it like any other Feast repository.

use std::path::{Path, PathBuf};

use galley_core::stages::FeatureGroupSpec;
use galley_core::table::DType;
use galley_core::{Error, Result};
use sha2::{Digest, Sha256};
use yaml_rust2::{Yaml, YamlLoader};

/// What Galley writes into a repository that has none.
pub const DEFAULT_FEATURE_STORE_YAML: &str = include_str!("../../feast/feature_store.yaml");

/// Writes `feature_store.yaml` into `repo` when absent; refuses one whose offline store cannot
/// read the Parquet files Galley writes.
pub fn ensure(repo: &Path) -> Result<()> {
    let yaml = repo.join("feature_store.yaml");
    let io = |e: std::io::Error, what: &str| Error::invalid(format!("{what} {}: {e}", yaml.display()));
    if !yaml.exists() {
        std::fs::create_dir_all(repo).map_err(|e| io(e, "creating the Feast repository for"))?;
        std::fs::write(&yaml, DEFAULT_FEATURE_STORE_YAML).map_err(|e| io(e, "writing"))?;
        return Ok(());
    }
    let text = std::fs::read_to_string(&yaml).map_err(|e| io(e, "reading"))?;
    let docs = YamlLoader::load_from_str(&text)
        .map_err(|e| Error::invalid(format!("{}: {e}; it must be a Feast feature_store.yaml", yaml.display())))?;
    let offline = docs.first().map(|d| &d["offline_store"]);
    let kind = match offline {
        Some(Yaml::String(s)) => Some(s.as_str()),
        Some(h @ Yaml::Hash(_)) => h["type"].as_str(),
        _ => None,
    };
    match kind {
        None | Some("file") | Some("dask") => Ok(()),
        Some(other) => Err(Error::invalid(format!(
            "{}: offline_store type `{other}` does not read the Parquet files Galley ingests into; \
             set `offline_store: {{type: file}}` (Feast's default)",
            yaml.display()
        ))),
    }
}

/// A file-safe form of a group's name, unique per name: its letters and digits, and a hash of
/// the exact name (so `a-b` and `a_b` never share a file).
fn stem(group: &str) -> String {
    let readable: String = group.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(60).collect();
    let hash = hex::encode(&Sha256::digest(group.as_bytes())[..4]);
    format!("{readable}_{hash}")
}

/// The group's definitions file.
pub fn definitions_file(repo: &Path, group: &str) -> PathBuf {
    repo.join(format!("galley_{}.py", stem(group)))
}

/// The group's offline source, a directory of Parquet files, relative to the repository.
pub fn source_path(group: &str) -> String {
    format!("data/offline/{}", stem(group))
}

/// Feast's entity for the group: its own, so groups never fight over an entity's key type.
pub fn entity_name(group: &str) -> String {
    format!("{group}__entity")
}

fn feast_type(d: DType) -> &'static str {
    match d {
        DType::Float => "Float64",
        DType::Int => "Int64",
        DType::String => "String",
        DType::Bool => "Bool",
    }
}

/// Feast's name of a feature's type, as its registry reports it.
pub fn registry_type(d: DType) -> &'static str {
    feast_type(d)
}

/// A Python string literal (JSON's escapes are Python's).
fn py(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The definitions file's text: the same Entity, FileSource and FeatureView the bridge builds.
pub fn definitions(spec: &FeatureGroupSpec, spec_tag: &str) -> String {
    let key_type = if spec.entity.dtype == DType::Int { "INT64" } else { "STRING" };
    let fields: Vec<String> =
        spec.features.iter().map(|f| format!("        Field(name={}, dtype={}),", py(&f.name), feast_type(f.dtype))).collect();
    format!(
        "# Written by Galley for feature group {name}; `galley apply` rewrites it. Edit the blueprint instead.\n\
         from datetime import timedelta\n\n\
         from feast import Entity, FeatureView, Field, FileSource, ValueType\n\
         from feast.types import Bool, Float64, Int64, String\n\n\
         entity = Entity(name={entity}, join_keys=[{key}], value_type=ValueType.{key_type})\n\
         source = FileSource(name={name}, path={path}, timestamp_field={ts})\n\
         view = FeatureView(\n    name={name},\n    entities=[entity],\n    ttl=timedelta(0),\n    schema=[\n{fields}\n    ],\n    \
         source=source,\n    online={online},\n    tags={{{tag_key}: {tag}}},\n)\n",
        name = py(&spec.name),
        entity = py(&entity_name(&spec.name)),
        key = py(&spec.entity.name),
        path = py(&source_path(&spec.name)),
        ts = py(&spec.event_time),
        fields = fields.join("\n"),
        online = if spec.online { "True" } else { "False" },
        tag_key = py(super::SPEC_TAG),
        tag = py(spec_tag),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_differ_only_in_punctuation_get_different_files() {
        assert_ne!(stem("a-b"), stem("a_b"));
        assert!(stem("Wine Features!").starts_with("wine_features__"));
    }

    #[test]
    fn a_foreign_offline_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ensure(dir.path()).unwrap();
        assert!(std::fs::read_to_string(dir.path().join("feature_store.yaml")).unwrap().contains("type: file"));
        std::fs::write(dir.path().join("feature_store.yaml"), "project: x\noffline_store:\n  type: bigquery\n").unwrap();
        let e = ensure(dir.path()).unwrap_err().to_string();
        assert!(e.contains("bigquery") && e.contains("type: file"), "{e}");
    }
}
