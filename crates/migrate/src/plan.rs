//! What a migration will move, read from the source (and from the target when it exists, for
//! what is already there), and what the target cannot express, said before anything is copied.

use std::fmt::Write;

use futures::StreamExt;
use galley_blueprint::Blueprint;
use galley_core::stages::{ApprovalStatus, ArtifactKey};
use galley_core::capability::Feature;
use galley_core::{Capabilities, Result};
use galley_lifecycle::CHAMPION;

use crate::artifacts::UriMap;
use crate::records::{champion_of, metric_points, same_model, source_runs, source_versions, target_run};
use crate::serving::{baseline_version, describe_split, prepared_key};
use crate::{Journal, Side};

/// The target as the plan sees it: before `apply` provisions it only its blueprint and its
/// platforms' capabilities; after, its stages too.
pub struct Target<'a> {
    pub label: &'a str,
    pub bp: &'a Blueprint,
    pub registry: Capabilities,
    pub serving: Capabilities,
    pub opened: Option<&'a Side>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationPlan {
    pub source: String,
    pub target: String,
    pub artifacts: ObjectsPlan,
    pub runs: Option<RunsPlan>,
    pub versions: Option<VersionsPlan>,
    pub endpoint: Option<EndpointPlan>,
    /// `monitor NAME re-baselined on N rows scored by version V`.
    pub monitor: Option<String>,
    /// Made by the target's `galley apply` from the blueprint rather than copied.
    pub recreated: Vec<String>,
    /// What does not move, and why, said before any copy.
    pub not_moved: Vec<String>,
    /// Units an interrupted apply already finished.
    pub journal_entries: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ObjectsPlan {
    pub objects: u64,
    pub bytes: u64,
    /// Already on the target with the same SHA-256: skipped.
    pub present: u64,
    pub bytes_to_copy: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunsPlan {
    pub from: String,
    pub to: String,
    pub runs: u64,
    pub metric_points: u64,
    pub present: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionsPlan {
    pub from: String,
    pub to: String,
    pub versions: u64,
    pub present: u64,
    /// How each promotion is expressed on the target.
    pub promotion: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointPlan {
    pub from: String,
    pub to: String,
    /// The source's split, `v3 90%, v4 10%` (the target numbers the versions its own way).
    pub split: String,
}

pub async fn plan(source: &Side, target: &Target<'_>, journal: Option<&Journal>) -> Result<MigrationPlan> {
    let mut not_moved = Vec::new();
    let objects = source.stages.artifacts.list("").await?;
    let mut artifacts = ObjectsPlan { objects: objects.len() as u64, bytes: objects.iter().map(|o| o.size).sum(), ..Default::default() };
    artifacts.bytes_to_copy = artifacts.bytes;
    if let Some(t) = target.opened {
        let mut heads = futures::stream::iter(objects.iter().map(|o| async move {
            let there = t.stages.artifacts.head(&ArtifactKey::new(&o.key)?).await;
            Ok::<_, galley_core::Error>((o, there.ok()))
        }))
        .buffer_unordered(16);
        while let Some(r) = heads.next().await {
            if let (o, Some(there)) = r?
                && there.sha256 == o.sha256
            {
                artifacts.present += 1;
                artifacts.bytes_to_copy -= o.size;
            }
        }
    }

    let runs = match (source.experiment(), target.bp.stages.experiments.as_ref()) {
        (Some(from), Some(to)) => {
            let runs = source_runs(source).await?;
            let mut points = 0;
            let mut present = 0;
            for run in &runs {
                points += metric_points(source, run).await?.len() as u64;
                if let Some(t) = target.opened
                    && !target_run(source, t, &run.id).await?.is_empty()
                {
                    present += 1;
                }
            }
            Some(RunsPlan { from: from.to_owned(), to: to.name.clone(), runs: runs.len() as u64, metric_points: points, present })
        }
        _ => None,
    };

    let versions = match (source.model(), target.bp.stages.registry.as_ref()) {
        (Some(from), Some(to)) => {
            let versions = source_versions(source).await?;
            let mut present = 0;
            if let Some(t) = target.opened
                && t.stages.registry.model_exists(&to.model).await?
            {
                let there = t.stages.registry.list_versions(&to.model).await?;
                present = versions.iter().filter(|v| there.iter().any(|t| same_model(v, t, &UriMap::default()))).count() as u64;
            }
            let promotion = promotions(source, target, &versions, &mut not_moved);
            Some(VersionsPlan { from: from.to_owned(), to: to.model.clone(), versions: versions.len() as u64, present, promotion })
        }
        _ => None,
    };

    let mut endpoint = None;
    if let (Some(from), Some(to)) = (source.endpoint(), target.bp.stages.serving.as_ref())
        && let Some(info) = source.stages.serving.describe(from).await?
    {
        if info.variants.len() > 1 && !target.serving.supports(Feature::TrafficSplit) {
            not_moved.push(format!(
                "the traffic split of endpoint `{from}` ({}): {} cannot split traffic, so it serves the heaviest variant alone",
                describe_split(&info.variants),
                target.label
            ));
        }
        endpoint = Some(EndpointPlan { from: from.to_owned(), to: to.endpoint.clone(), split: describe_split(&info.variants) });
    }

    let mut monitor = None;
    if target.bp.stages.monitoring.is_some()
        && let Some(v) = baseline_version(source).await?
    {
        let name = galley_lifecycle::monitor_name(target.bp);
        match prepared_key(&v) {
            Some(_) => monitor = Some(format!("monitor `{name}` re-baselined on version {}'s training rows, scored by its copy", v.version)),
            None => not_moved.push(format!(
                "the baseline of monitor `{name}`: version {} records no prepared split (registered before Galley recorded it), so the target's next run sets it",
                v.version
            )),
        }
    }

    let mut recreated = Vec::new();
    if let Some(p) = &target.bp.stages.pipeline {
        recreated.push(format!("pipeline `{}` and its triggers, by the target's `galley apply` from the blueprint", p.name));
    }
    if let (Some(f), Some(to)) = (&source.bp.stages.features, &target.bp.stages.features) {
        recreated.push(format!("feature group `{}`, by the target's `galley apply`", to.group));
        not_moved.push(format!(
            "the rows of feature group `{}` (copying feature rows is not built yet): the target's next `galley run` ingests and materializes them from the blueprint's data",
            f.group
        ));
    }
    if runs.as_ref().is_some_and(|r| r.runs > 0) {
        not_moved.push(format!(
            "run start and end times: the target's tracker stamps its own; the source's are kept as the tags `{}` and `{}`",
            crate::SOURCE_START_TAG,
            crate::SOURCE_END_TAG
        ));
    }
    Ok(MigrationPlan {
        source: source.label.clone(),
        target: target.label.to_owned(),
        artifacts,
        runs,
        versions,
        endpoint,
        monitor,
        recreated,
        not_moved,
        journal_entries: journal.map_or(0, |j| j.len()),
    })
}

/// How the source's aliases and approvals read on the target.
fn promotions(source: &Side, target: &Target<'_>, versions: &[galley_core::stages::ModelVersion], not_moved: &mut Vec<String>) -> Vec<String> {
    let aliases = target.registry.supports(Feature::ModelAliases);
    let approval = target.registry.supports(Feature::ApprovalStatus);
    let mut lines = Vec::new();
    for v in versions {
        for alias in &v.aliases {
            match (aliases, alias == CHAMPION && approval) {
                (true, _) => lines.push(format!("version {}: alias `{alias}` → alias `{alias}`", v.version)),
                (false, true) => lines.push(format!("version {}: alias `{CHAMPION}` → approval `approved` ({} has no aliases)", v.version, target.label)),
                (false, false) => not_moved.push(format!("alias `{alias}` of version {}: {} has no aliases", v.version, target.label)),
            }
        }
        if v.approval != ApprovalStatus::PendingManualApproval {
            let status = serde_json::to_value(v.approval).ok().and_then(|s| s.as_str().map(str::to_owned)).unwrap_or_default();
            match approval {
                true => lines.push(format!("version {}: approval `{status}` → approval `{status}`", v.version)),
                false => not_moved.push(format!("approval `{status}` of version {}: {} has no approval status", v.version, target.label)),
            }
        }
    }
    if aliases && !source.stages.registry.capabilities().supports(Feature::ModelAliases)
        && let Some(c) = champion_of(versions)
    {
        lines.push(format!("version {c}: the newest approved version → alias `{CHAMPION}`"));
    }
    lines
}

impl MigrationPlan {
    pub fn render_human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Migration from {} to {}:", self.source, self.target);
        let a = &self.artifacts;
        let _ = writeln!(
            s,
            "  artifacts   {} objects, {} bytes; {} already there; {} bytes to copy",
            a.objects, a.bytes, a.present, a.bytes_to_copy
        );
        if let Some(r) = &self.runs {
            let _ = writeln!(s, "  experiments `{}` → `{}`: {} runs, {} metric points; {} already there", r.from, r.to, r.runs, r.metric_points, r.present);
        }
        if let Some(v) = &self.versions {
            let _ = writeln!(s, "  registry    `{}` → `{}`: {} versions; {} already there", v.from, v.to, v.versions, v.present);
            for p in &v.promotion {
                let _ = writeln!(s, "                {p}");
            }
        }
        if let Some(e) = &self.endpoint {
            let _ = writeln!(s, "  serving     `{}` → `{}`: {}", e.from, e.to, e.split);
        }
        if let Some(m) = &self.monitor {
            let _ = writeln!(s, "  monitoring  {m}");
        }
        for r in &self.recreated {
            let _ = writeln!(s, "  recreated   {r}");
        }
        for n in &self.not_moved {
            let _ = writeln!(s, "  not moved   {n}");
        }
        if self.journal_entries > 0 {
            let _ = writeln!(s, "  resuming    {} units an interrupted migration finished are skipped", self.journal_entries);
        }
        s
    }
}
