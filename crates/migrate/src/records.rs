//! Experiment runs and model versions: copied record by record, each found again on the target
//! by a natural key before anything is created, so a resumed migration never makes a second one.

use std::collections::{BTreeMap, HashMap};

use galley_core::stages::{ApprovalStatus, Metric, ModelVersion, NewModelVersion, Run, RunQuery, RunStatus};
use galley_core::Result;
use galley_core::capability::Feature;
use galley_lifecycle::CHAMPION;

use crate::artifacts::UriMap;
use crate::journal::{Journal, Kind};
use crate::{Applied, SOURCE_END_TAG, SOURCE_RUN_TAG, SOURCE_START_TAG, Side};

/// Source run id → target run id.
pub type RunMap = BTreeMap<String, String>;
/// Source version → target version.
pub type VersionMap = BTreeMap<u64, u64>;

/// Metric points go over in batches this size (MLflow's log-batch takes 1000).
const METRIC_BATCH: usize = 1000;

/// The source's runs, oldest first.
pub(crate) async fn source_runs(source: &Side) -> Result<Vec<Run>> {
    let Some(experiment) = source.experiment() else { return Ok(Vec::new()) };
    let mut runs = source.stages.experiments.search_runs(experiment, &RunQuery::default()).await?;
    runs.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
    Ok(runs)
}

/// The value of [`SOURCE_RUN_TAG`] for a source run.
pub(crate) fn origin(source: &Side, run: &str) -> String {
    format!("{}:{run}", source.stages.experiments.platform())
}

/// The target's run made from `run`, found by its tag.
pub(crate) async fn target_run(source: &Side, target: &Side, run: &str) -> Result<Vec<Run>> {
    let Some(experiment) = target.experiment() else { return Ok(Vec::new()) };
    let query = RunQuery { tags: BTreeMap::from([(SOURCE_RUN_TAG.to_owned(), origin(source, run))]), ..RunQuery::default() };
    target.stages.experiments.search_runs(experiment, &query).await
}

/// Every point of every metric of a run, in a stable order.
pub(crate) async fn metric_points(side: &Side, run: &Run) -> Result<Vec<Metric>> {
    let mut all = Vec::new();
    for key in run.metrics.keys() {
        all.extend(side.stages.experiments.metric_history(&run.id, key).await?);
    }
    all.sort_by(|a, b| (&a.key, a.step, a.timestamp_ms, a.value.to_bits()).cmp(&(&b.key, b.step, b.timestamp_ms, b.value.to_bits())));
    Ok(all)
}

/// The tags a run made from `run` carries: the source's, plus where it came from.
pub(crate) fn migrated_tags(source: &Side, run: &Run) -> BTreeMap<String, String> {
    let mut tags = run.tags.clone();
    tags.insert(SOURCE_RUN_TAG.into(), origin(source, &run.id));
    tags.insert(SOURCE_START_TAG.into(), run.start_ms.to_string());
    if let Some(end) = run.end_ms {
        tags.insert(SOURCE_END_TAG.into(), end.to_string());
    }
    tags
}

pub(crate) fn translated_artifacts(run: &Run, uris: &UriMap) -> BTreeMap<String, String> {
    run.artifacts.iter().map(|(name, uri)| (name.clone(), uris.translate(uri))).collect()
}

pub(crate) async fn copy_runs(
    source: &Side,
    target: &Side,
    uris: &UriMap,
    journal: &mut Journal,
    applied: &mut Applied,
    say: &(dyn Fn(&str) + Sync),
) -> Result<RunMap> {
    let mut map = RunMap::new();
    let (Some(_), Some(experiment)) = (source.experiment(), target.experiment()) else { return Ok(map) };
    let runs = source_runs(source).await?;
    target.stages.experiments.create_experiment(experiment).await?;
    for run in &runs {
        if let Some(id) = journal.done(Kind::Run, &run.id) {
            map.insert(run.id.clone(), id.to_owned());
            continue;
        }
        let run = source.stages.experiments.get_run(&run.id).await?;
        let tags = migrated_tags(source, &run);
        let existing = target_run(source, target, &run.id).await?.into_iter().next();
        let (id, have) = match existing {
            // Ending the run is the unit's last call: an ended copy only lacks its journal entry.
            Some(t) if t.status != RunStatus::Running => {
                journal.record(Kind::Run, &run.id, &t.id)?;
                map.insert(run.id.clone(), t.id);
                continue;
            }
            Some(t) => {
                let have = metric_points(target, &t).await?;
                (t.id, have)
            }
            None => {
                applied.runs_created += 1;
                let id = target.stages.experiments.start_run(experiment, run.name.as_deref(), &tags).await?;
                crate::journal::crash_point();
                (id, Vec::new())
            }
        };
        target.stages.experiments.log_params(&id, &run.params).await?;
        target.stages.experiments.set_tags(&id, &tags).await?;
        let missing = missing_points(&metric_points(source, &run).await?, &have);
        for batch in missing.chunks(METRIC_BATCH) {
            target.stages.experiments.log_metrics(&id, batch).await?;
        }
        applied.metric_points_logged += missing.len() as u64;
        for (name, uri) in translated_artifacts(&run, uris) {
            target.stages.experiments.log_artifact(&id, &name, &uri).await?;
        }
        if run.status != RunStatus::Running {
            target.stages.experiments.end_run(&id, run.status).await?;
        }
        journal.record(Kind::Run, &run.id, &id)?;
        map.insert(run.id.clone(), id);
    }
    say(&format!("experiments: {} runs ({} new), {} metric points logged", runs.len(), applied.runs_created, applied.metric_points_logged));
    Ok(map)
}

/// The points of `want` that `have` lacks, counting duplicates (a metric may repeat a value at
/// one step and time).
fn missing_points(want: &[Metric], have: &[Metric]) -> Vec<Metric> {
    let key = |m: &Metric| (m.key.clone(), m.step, m.timestamp_ms, m.value.to_bits());
    let mut there: HashMap<_, usize> = HashMap::new();
    for m in have {
        *there.entry(key(m)).or_default() += 1;
    }
    want.iter()
        .filter(|m| match there.get_mut(&key(m)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .cloned()
        .collect()
}

/// The source's versions, oldest first.
pub(crate) async fn source_versions(source: &Side) -> Result<Vec<ModelVersion>> {
    let Some(model) = source.model() else { return Ok(Vec::new()) };
    if !source.stages.registry.model_exists(model).await? {
        return Ok(Vec::new());
    }
    let mut versions = source.stages.registry.list_versions(model).await?;
    versions.sort_by_key(|v| v.version);
    Ok(versions)
}

/// Whether target version `t` holds the model of source version `s`: the same model hash when
/// Galley registered it, else the same (translated) artifact.
pub(crate) fn same_model(s: &ModelVersion, t: &ModelVersion, uris: &UriMap) -> bool {
    let sha = |v: &ModelVersion| v.lineage.params.get("model_sha256").cloned();
    match (sha(s), sha(t)) {
        (Some(a), Some(b)) => a == b,
        _ => uris.translate(&s.artifact_uri) == t.artifact_uri,
    }
}

pub(crate) async fn copy_versions(
    source: &Side,
    target: &Side,
    uris: &UriMap,
    runs: &RunMap,
    journal: &mut Journal,
    applied: &mut Applied,
    say: &(dyn Fn(&str) + Sync),
) -> Result<VersionMap> {
    let mut map = VersionMap::new();
    let (Some(_), Some(model)) = (source.model(), target.model()) else { return Ok(map) };
    let versions = source_versions(source).await?;
    if versions.is_empty() {
        return Ok(map);
    }
    let registry = &target.stages.registry;
    registry.create_model(model, None).await?;
    let mut existing = registry.list_versions(model).await?;
    for v in &versions {
        if let Some(n) = journal.done(Kind::Version, &v.version.to_string()) {
            map.insert(v.version, n.parse().unwrap_or_default());
            continue;
        }
        let t = match existing.iter().find(|t| same_model(v, t, uris)) {
            Some(t) => t.clone(),
            None => {
                let mut lineage = v.lineage.clone();
                lineage.run_id = v.lineage.run_id.as_ref().map(|r| runs.get(r).cloned().unwrap_or_else(|| r.clone()));
                let new = NewModelVersion {
                    artifact_uri: uris.translate(&v.artifact_uri),
                    metrics: v.metrics.clone(),
                    lineage,
                    signature: v.signature.clone(),
                    description: Some(format!("migrated from {} `{}` version {}", source.label, v.model, v.version)),
                };
                applied.versions_registered += 1;
                let t = registry.register_version(model, &new).await?;
                crate::journal::crash_point();
                existing.push(t.clone());
                t
            }
        };
        promote(target, model, v, &t).await?;
        journal.record(Kind::Version, &v.version.to_string(), &t.version.to_string())?;
        map.insert(v.version, t.version);
    }
    champion_alias(source, target, model, &versions, &map).await?;
    say(&format!("registry: {} versions ({} new)", versions.len(), applied.versions_registered));
    Ok(map)
}

/// The source version's promotion, in the target's own mechanism: approval where it has
/// approval; aliases where it has aliases, else `champion` becomes the approval it stands for.
async fn promote(target: &Side, model: &str, s: &ModelVersion, t: &ModelVersion) -> Result<()> {
    let caps = target.stages.registry.capabilities();
    let champion_as_approval = !caps.supports(Feature::ModelAliases) && s.aliases.iter().any(|a| a == CHAMPION);
    let approval = if champion_as_approval { ApprovalStatus::Approved } else { s.approval };
    if caps.supports(Feature::ApprovalStatus) && t.approval != approval {
        target.stages.registry.set_approval(model, t.version, approval).await?;
    }
    if caps.supports(Feature::ModelAliases) {
        for alias in s.aliases.iter().filter(|a| !t.aliases.contains(a)) {
            target.stages.registry.set_alias(model, alias, t.version).await?;
        }
    }
    Ok(())
}

/// A source without aliases promotes by approval: its champion is its newest approved version,
/// which on a target with aliases is the `champion` alias.
async fn champion_alias(source: &Side, target: &Side, model: &str, versions: &[ModelVersion], map: &VersionMap) -> Result<()> {
    let caps = target.stages.registry.capabilities();
    if !caps.supports(Feature::ModelAliases) || source.stages.registry.capabilities().supports(Feature::ModelAliases) {
        return Ok(());
    }
    if let Some(champion) = champion_of(versions) {
        let t = map[&champion];
        if target.stages.registry.get_by_alias(model, CHAMPION).await?.map(|v| v.version) != Some(t) {
            target.stages.registry.set_alias(model, CHAMPION, t).await?;
        }
    }
    Ok(())
}

/// The version the gate must beat, by the lifecycle's rule: the `champion` alias, else the
/// newest approved version.
pub(crate) fn champion_of(versions: &[ModelVersion]) -> Option<u64> {
    versions
        .iter()
        .find(|v| v.aliases.iter().any(|a| a == CHAMPION))
        .or_else(|| versions.iter().filter(|v| v.approval == ApprovalStatus::Approved).max_by_key(|v| v.version))
        .map(|v| v.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(key: &str, value: f64, step: i64) -> Metric {
        Metric { key: key.into(), value, step, timestamp_ms: 1000 + step }
    }

    #[test]
    fn only_the_points_the_target_lacks_are_sent_again() {
        let want = vec![point("loss", 0.5, 1), point("loss", 0.5, 1), point("loss", 0.4, 2), point("acc", 0.9, 2)];
        let have = vec![point("loss", 0.5, 1), point("acc", 0.9, 2)];
        let missing = missing_points(&want, &have);
        assert_eq!(missing, vec![point("loss", 0.5, 1), point("loss", 0.4, 2)], "a repeated point counts twice");
        assert!(missing_points(&want, &want).is_empty());
    }
}
