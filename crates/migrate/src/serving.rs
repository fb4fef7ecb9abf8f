//! The endpoint and its monitor: redeployed on the target with the same versions (as the target
//! numbers them) and the same traffic split, and the monitor re-baselined from the same rows,
//! scored by the copied model.

use galley_core::stages::{ArtifactKey, EndpointInfo, EndpointSpec, ModelVersion, Variant};
use galley_core::capability::Feature;
use galley_core::stages::ArtifactStoreExt;
use galley_core::{Error, Result, Table};
use galley_lifecycle::actions::variant_name;

use crate::artifacts::UriMap;
use crate::journal::{Journal, Kind};
use crate::records::VersionMap;
use crate::Side;

/// The variants the target's endpoint should have: the source's, each on the target's number
/// of its version. `Err` names a source version that did not reach the target.
pub(crate) fn target_variants(source_info: &EndpointInfo, target: &Side, versions: &VersionMap, target_versions: &[ModelVersion]) -> Result<Vec<Variant>> {
    let model = target.model().unwrap_or_default();
    source_info
        .variants
        .iter()
        .map(|v| {
            let n = versions.get(&v.version).copied().ok_or_else(|| {
                Error::not_found(format!("endpoint `{}` serves version {} of `{}`, which the migration has not copied", source_info.name, v.version, v.model))
            })?;
            let tv = target_versions.iter().find(|t| t.version == n).ok_or_else(|| Error::not_found(format!("version {n} of `{model}` is not on {}", target.label)))?;
            Ok(Variant { name: variant_name(n), model: model.to_owned(), version: n, artifact_uri: tv.artifact_uri.clone(), weight: v.weight })
        })
        .collect()
}

/// Which (version, weight) pairs an endpoint serves, for comparing two endpoints.
pub(crate) fn split(variants: &[Variant]) -> Vec<(u64, u32)> {
    let mut s: Vec<(u64, u32)> = variants.iter().map(|v| (v.version, v.weight)).collect();
    s.sort();
    s
}

pub(crate) async fn redeploy(source: &Side, target: &Side, versions: &VersionMap, journal: &mut Journal, say: &(dyn Fn(&str) + Sync)) -> Result<bool> {
    let (Some(from), Some(to), Some(model)) = (source.endpoint(), target.endpoint(), target.model()) else { return Ok(false) };
    let Some(info) = source.stages.serving.describe(from).await? else { return Ok(false) };
    let target_versions = target.stages.registry.list_versions(model).await?;
    let mut variants = target_variants(&info, target, versions, &target_versions)?;
    if variants.len() > 1 && !target.stages.serving.capabilities().supports(Feature::TrafficSplit) {
        // The plan said so before anything was copied: the target serves the heaviest variant.
        variants.sort_by_key(|v| std::cmp::Reverse(v.weight));
        variants.truncate(1);
        variants[0].weight = 100;
    }
    // Compared with what the target serves rather than skipped by the journal: a migration
    // run again after the source moved on moves the target's split too.
    let current = target.stages.serving.describe(to).await?;
    if current.as_ref().is_some_and(|c| split(&c.variants) == split(&variants)) {
        say(&format!("serving: endpoint `{to}` already serves {}", describe_split(&variants)));
        if journal.done(Kind::Endpoint, from).is_none() {
            journal.record(Kind::Endpoint, from, to)?;
        }
        return Ok(false);
    }
    let newest = variants.iter().map(|v| v.version).max().unwrap_or_default();
    let signature = target_versions.iter().find(|v| v.version == newest).map(|v| v.signature.clone()).unwrap_or_default();
    let scaling = target.bp.stages.serving.as_ref().and_then(galley_lifecycle::actions::scaling);
    let deployed = target.stages.serving.deploy(&EndpointSpec { name: to.to_owned(), variants: variants.clone(), signature, scaling }).await?;
    crate::journal::crash_point();
    say(&format!("serving: endpoint `{to}` serves {} at {}", describe_split(&variants), deployed.url));
    journal.record(Kind::Endpoint, from, to)?;
    Ok(true)
}

pub(crate) fn describe_split(variants: &[Variant]) -> String {
    variants.iter().map(|v| format!("{} {}%", v.name, v.weight)).collect::<Vec<_>>().join(", ")
}

/// The source version whose prepared rows and model a migrated monitor is baselined from: the
/// newest the endpoint serves (the one the lifecycle's last deploy baselined).
pub(crate) async fn baseline_version(source: &Side) -> Result<Option<ModelVersion>> {
    let (Some(endpoint), Some(model)) = (source.endpoint(), source.model()) else { return Ok(None) };
    let Some(info) = source.stages.serving.describe(endpoint).await? else { return Ok(None) };
    let Some(newest) = info.variants.iter().map(|v| v.version).max() else { return Ok(None) };
    Ok(Some(source.stages.registry.get_version(model, newest).await?))
}

/// The prepared split a version was trained on, as the register step recorded it.
pub(crate) fn prepared_key(v: &ModelVersion) -> Option<&str> {
    v.lineage.params.get(galley_lifecycle::PREPARED_KEY_PARAM).map(String::as_str)
}

/// Loads the model a target version registered, from the target's store.
pub(crate) async fn target_model(target: &Side, uris: &UriMap, v: &ModelVersion) -> Result<galley_ml::Model> {
    let key = uris
        .target_key(&v.artifact_uri)
        .ok_or_else(|| Error::not_found(format!("version {} of `{}` refers to {}, which is not in {}'s artifact store", v.version, v.model, v.artifact_uri, target.label)))?;
    let bytes = target.stages.artifacts.get_bytes(&ArtifactKey::new(key)?).await?;
    galley_ml::Model::from_bytes(&bytes)
}

pub(crate) async fn rebaseline(
    source: &Side,
    target: &Side,
    versions: &VersionMap,
    uris: &UriMap,
    journal: &mut Journal,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Option<u64>> {
    let (Some(monitor), Some(model)) = (target.monitor(), target.model()) else { return Ok(None) };
    let Some(v) = baseline_version(source).await? else { return Ok(None) };
    // Keyed by the version too: a source that deployed a newer one since is re-baselined.
    let unit = format!("{monitor}@{}", v.version);
    if let Some(rows) = journal.done(Kind::Baseline, &unit) {
        return Ok(rows.parse().ok());
    }
    let Some(key) = prepared_key(&v) else {
        say(&format!("monitoring: version {} records no prepared split; monitor `{monitor}` gets its baseline from the target's next run", v.version));
        return Ok(None);
    };
    let rows = galley_lifecycle::prepared_rows(&*target.stages.artifacts, key).await?;
    let tv = target.stages.registry.get_version(model, versions[&v.version]).await?;
    let scores = target_model(target, uris, &tv).await?.scores(&rows.train)?.scores;
    target.stages.monitor.set_baseline(&monitor, &rows.train, &scores).await?;
    let n = rows.train.rows.len() as u64;
    say(&format!("monitoring: monitor `{monitor}` baselined on {n} rows, scored by version {}", tv.version));
    journal.record(Kind::Baseline, &unit, &n.to_string())?;
    Ok(Some(n))
}

/// The held-out rows a version was judged on, read from `side`'s store.
pub(crate) async fn held_out(side: &Side, v: &ModelVersion) -> Result<Option<Table>> {
    match prepared_key(v) {
        Some(key) => Ok(Some(galley_lifecycle::prepared_rows(&*side.stages.artifacts, key).await?.test)),
        None => Ok(None),
    }
}
