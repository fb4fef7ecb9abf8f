//! The proof that the target is a copy: objects by count and checksum, runs and every metric
//! point, model versions in content, the promotion, the endpoint's split, and the same held-out
//! rows through both endpoints giving the same predictions, each target variant's answer also
//! checked against its model file scored here. Every check can fail; none passes by omission:
//! a variant that never answered fails its check, saying so.

use std::collections::BTreeMap;
use std::fmt::Write;

use galley_core::stages::{ArtifactMeta, ModelVersion};
use galley_core::{Result, Table};

use crate::records::{champion_of, metric_points, migrated_tags, source_runs, source_versions, target_run, translated_artifacts};
use crate::serving::{baseline_version, held_out, split, target_variants};
use crate::{SOURCE_RUN_TAG, Side, UriMap};

/// Invocations of each endpoint while waiting for every weighted variant to answer.
const MAX_INVOCATIONS: usize = 60;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// What was compared, in figures: `412 objects, 1.2 MB`.
    pub detail: String,
    /// What differs, first few.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Proof {
    pub source: String,
    pub target: String,
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Proof {
    pub fn render_human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Verifying {} against {}:", self.target, self.source);
        for c in &self.checks {
            let _ = writeln!(s, "  {} {:<12} {}", if c.ok { "ok  " } else { "FAIL" }, c.what, c.detail);
            for d in c.differences.iter().take(10) {
                let _ = writeln!(s, "         {d}");
            }
        }
        let _ = writeln!(s, "{}", if self.ok { "The target is a copy of the source." } else { "The target differs from the source." });
        s
    }
}

struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, what: &str, detail: String, differences: Vec<String>) {
        self.0.push(Check { what: what.to_owned(), ok: differences.is_empty(), detail, differences });
    }
}

pub async fn verify(source: &Side, target: &Side) -> Result<Proof> {
    let mut checks = Checks(Vec::new());
    let (uris, by_uri_source, by_uri_target) = objects(source, target, &mut checks).await?;
    let runs = runs(source, target, &uris, &mut checks).await?;
    let listed = versions(source, target, &uris, &runs, &by_uri_source, &by_uri_target, &mut checks).await?;
    predictions(source, target, &uris, &listed, &mut checks).await?;
    let ok = checks.0.iter().all(|c| c.ok);
    Ok(Proof { source: source.label.clone(), target: target.label.clone(), ok, checks: checks.0 })
}

type ByUri = BTreeMap<String, ArtifactMeta>;

async fn objects(source: &Side, target: &Side, checks: &mut Checks) -> Result<(UriMap, ByUri, ByUri)> {
    let want = source.stages.artifacts.list("").await?;
    let have: BTreeMap<String, ArtifactMeta> = target.stages.artifacts.list("").await?.into_iter().map(|m| (m.key.clone(), m)).collect();
    let mut uris = UriMap::default();
    let mut diffs = Vec::new();
    for m in &want {
        match have.get(&m.key) {
            None => diffs.push(format!("`{}` is missing", m.key)),
            Some(t) if t.sha256 != m.sha256 => diffs.push(format!("`{}`: sha256 {} on the source, {} on the target", m.key, m.sha256, t.sha256)),
            Some(t) => uris.record(&m.key, &m.uri, &t.uri),
        }
    }
    let bytes: u64 = want.iter().map(|m| m.size).sum();
    checks.push("artifacts", format!("{} objects, {bytes} bytes, each SHA-256 equal", want.len()), diffs);
    let by_uri = |v: Vec<ArtifactMeta>| v.into_iter().map(|m| (m.uri.clone(), m)).collect::<ByUri>();
    Ok((uris, by_uri(want), by_uri(have.into_values().collect())))
}

async fn runs(source: &Side, target: &Side, uris: &UriMap, checks: &mut Checks) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    if source.experiment().is_none() || target.experiment().is_none() {
        return Ok(map);
    }
    let mut diffs = Vec::new();
    let mut points = 0;
    let runs = source_runs(source).await?;
    for run in &runs {
        let run = source.stages.experiments.get_run(&run.id).await?;
        let found = target_run(source, target, &run.id).await?;
        let t = match found.as_slice() {
            [t] => target.stages.experiments.get_run(&t.id).await?,
            [] => {
                diffs.push(format!("run {} is missing (no run tagged {SOURCE_RUN_TAG})", run.id));
                continue;
            }
            more => {
                diffs.push(format!("run {} was copied {} times", run.id, more.len()));
                continue;
            }
        };
        map.insert(run.id.clone(), t.id.clone());
        let (want, have) = (metric_points(source, &run).await?, metric_points(target, &t).await?);
        points += want.len();
        if want != have {
            diffs.push(format!("run {}: {} metric points on the source, {} on the target, or different", run.id, want.len(), have.len()));
        }
        if run.params != t.params {
            diffs.push(format!("run {}: params differ", run.id));
        }
        if migrated_tags(source, &run).iter().any(|(k, v)| t.tags.get(k) != Some(v)) {
            diffs.push(format!("run {}: tags differ", run.id));
        }
        if run.status != t.status || run.name != t.name {
            diffs.push(format!("run {}: status or name differ ({:?} {:?} / {:?} {:?})", run.id, run.status, run.name, t.status, t.name));
        }
        if translated_artifacts(&run, uris) != t.artifacts {
            diffs.push(format!("run {}: artifacts differ", run.id));
        }
    }
    checks.push("experiments", format!("{} runs, {points} metric points (step, timestamp, value), params, tags, artifacts", runs.len()), diffs);
    Ok(map)
}

async fn versions(
    source: &Side,
    target: &Side,
    uris: &UriMap,
    runs: &BTreeMap<String, String>,
    by_uri_source: &ByUri,
    by_uri_target: &ByUri,
    checks: &mut Checks,
) -> Result<Listed> {
    let (Some(_), Some(model)) = (source.model(), target.model()) else { return Ok(Listed::default()) };
    let want = source_versions(source).await?;
    let have = if target.stages.registry.model_exists(model).await? { target.stages.registry.list_versions(model).await? } else { Vec::new() };
    let mut diffs = Vec::new();
    let mut map = BTreeMap::new();
    for v in &want {
        let found: Vec<&ModelVersion> = have.iter().filter(|t| crate::records::same_model(v, t, uris)).collect();
        let t = match found.as_slice() {
            [t] => *t,
            [] => {
                diffs.push(format!("version {} is missing", v.version));
                continue;
            }
            more => {
                diffs.push(format!("version {} was registered {} times", v.version, more.len()));
                continue;
            }
        };
        map.insert(v.version, t.version);
        let sha = |m: &ByUri, uri: &str| m.get(uri).map(|o| o.sha256.clone());
        if sha(by_uri_source, &v.artifact_uri).is_none() || sha(by_uri_source, &v.artifact_uri) != sha(by_uri_target, &t.artifact_uri) {
            diffs.push(format!("version {}: the model file's sha256 differs, or one side's is not in its store", v.version));
        }
        let run = v.lineage.run_id.as_ref().map(|r| runs.get(r).cloned().unwrap_or_else(|| r.clone()));
        if v.metrics != t.metrics || v.signature != t.signature {
            diffs.push(format!("version {}: metrics or signature differ", v.version));
        }
        if v.lineage.data_hash != t.lineage.data_hash || v.lineage.code_version != t.lineage.code_version || v.lineage.params != t.lineage.params || run != t.lineage.run_id {
            diffs.push(format!("version {}: lineage differs (run, data hash, code version or params)", v.version));
        }
    }
    let champion = champion_of(&want);
    if champion.map(|c| map.get(&c).copied()) != champion_of(&have).map(Some) {
        diffs.push(format!("the champion is version {champion:?} on the source, {:?} on the target", champion_of(&have)));
    }
    checks.push(
        "registry",
        format!("{} versions: model file, metrics, signature, lineage; champion {}", want.len(), champion.map_or("none".into(), |c| format!("v{c} → v{}", map.get(&c).copied().unwrap_or_default()))),
        diffs,
    );

    if let (Some(from), Some(to)) = (source.endpoint(), target.endpoint())
        && let Some(info) = source.stages.serving.describe(from).await?
    {
        let mut diffs = Vec::new();
        match (target_variants(&info, target, &map, &have), target.stages.serving.describe(to).await?) {
            (Ok(want), Some(t)) if split(&want) == split(&t.variants) => {}
            (Ok(want), Some(t)) => diffs.push(format!("endpoint `{to}` serves {:?}; the source's split maps to {:?}", split(&t.variants), split(&want))),
            (Ok(_), None) => diffs.push(format!("endpoint `{to}` does not exist on {}", target.label)),
            (Err(e), _) => diffs.push(e.to_string()),
        }
        checks.push("serving", format!("endpoint `{from}` → `{to}`: the same versions and weights"), diffs);
    }
    Ok(Listed { source: want, target: have })
}

/// Both registries' versions, listed once for the registry check and the predictions.
#[derive(Default)]
struct Listed {
    source: Vec<ModelVersion>,
    target: Vec<ModelVersion>,
}

/// The held-out rows through both endpoints: every weighted variant's answer on the target
/// equals the same version's on the source, bit for bit, and its model file scored here.
async fn predictions(source: &Side, target: &Side, uris: &UriMap, listed: &Listed, checks: &mut Checks) -> Result<()> {
    let (Some(from), Some(to), Some(_)) = (source.endpoint(), target.endpoint(), target.model()) else { return Ok(()) };
    let Some(v) = baseline_version(source).await? else { return Ok(()) };
    let Some(rows) = held_out(source, &v).await? else {
        checks.push("predictions", "no held-out rows".into(), vec![format!("version {} records no prepared split to take held-out rows from", v.version)]);
        return Ok(());
    };
    let (Some(s_info), Some(t_info)) = (source.stages.serving.describe(from).await?, target.stages.serving.describe(to).await?) else {
        checks.push("predictions", "no endpoint".into(), vec![format!("endpoint `{from}` or `{to}` is not deployed")]);
        return Ok(());
    };
    let s_answers = answers(source, from, &s_info.variants, &rows).await?;
    let t_answers = answers(target, to, &t_info.variants, &rows).await?;
    let (versions, have) = (&listed.source, &listed.target);
    let mut diffs = Vec::new();
    let mut compared = Vec::new();
    for sv in s_info.variants.iter().filter(|v| v.weight > 0) {
        let Some(s) = versions.iter().find(|x| x.version == sv.version) else { continue };
        let Some(tv) = have.iter().find(|t| crate::records::same_model(s, t, uris)) else {
            diffs.push(format!("version {} is not on the target", sv.version));
            continue;
        };
        let tname = galley_lifecycle::actions::variant_name(tv.version);
        let (Some(a), Some(b)) = (s_answers.get(&sv.name), t_answers.get(&tname)) else {
            diffs.push(format!(
                "variant {} (source) or {tname} (target) did not answer in {MAX_INVOCATIONS} requests of {} rows",
                sv.name,
                rows.rows.len()
            ));
            continue;
        };
        let equal = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        if !equal {
            let differ = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            diffs.push(format!("{} → {tname}: {differ} of {} predictions differ", sv.name, a.len()));
        }
        let here = crate::serving::target_model(target, uris, tv).await?.labels(&rows)?;
        if here.len() != b.len() || here.iter().zip(b).any(|(x, y)| x.to_bits() != y.to_bits()) {
            diffs.push(format!("{tname}: the target endpoint's answers are not its model file's, scored here"));
        }
        compared.push(format!("{} → {tname}", sv.name));
    }
    checks.push(
        "predictions",
        format!("{} held-out rows through both endpoints, bit for bit, per variant ({})", rows.rows.len(), compared.join(", ")),
        diffs,
    );
    Ok(())
}

/// Each weighted variant's answer to `rows`, invoking until every one has answered (the
/// endpoint picks the variant by weight) or [`MAX_INVOCATIONS`] is reached.
async fn answers(side: &Side, endpoint: &str, variants: &[galley_core::stages::Variant], rows: &Table) -> Result<BTreeMap<String, Vec<f64>>> {
    let mut got = BTreeMap::new();
    let wanted = variants.iter().filter(|v| v.weight > 0).count();
    for _ in 0..MAX_INVOCATIONS {
        if got.len() >= wanted {
            break;
        }
        let p = side.stages.serving.invoke(endpoint, rows).await?;
        got.entry(p.variant).or_insert(p.predictions);
    }
    Ok(got)
}
