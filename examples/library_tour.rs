//! Galley as a library: pick the platform at run time, then log a run, train and register a
//! model, deploy it and invoke it — only through the provider-neutral stage traits, so the same
//! code runs on every platform this binary was built with.
//!
//! ```sh
//! cargo run -p galley-examples --bin library-tour -- local
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use galley_blueprint::{Algorithm, Data, PlatformRegistry, Split, Task};
use galley_core::stages::{
    ArtifactKey, ArtifactStoreExt, EndpointSpec, Lineage, Metric, NewModelVersion, RunStatus, Variant,
};
use galley_core::{PlatformId, Result, StageSet};
use galley_engine::{Provider, ProviderContext};

/// The providers this program was built with, as the CLI registers them: a platform's rules
/// and its provider, from its own crate.
fn providers(dir: &std::path::Path) -> Result<Vec<Arc<dyn Provider>>> {
    // A platform's own processes (the local model server) are this same program, re-run with
    // `__platform <id> …`.
    let galley_exe = std::env::current_exe().map_err(galley_core::Error::from)?;
    let ctx = ProviderContext { project_dir: dir.to_path_buf(), work_dir: dir.join(".galley"), galley_exe };
    Ok(vec![galley_local::provider(ctx)])
}

/// Opens the stages of `platform`. Only what this binary was built with is available.
async fn open(platform: PlatformId, dir: &std::path::Path) -> Result<StageSet> {
    let provider = providers(dir)?
        .into_iter()
        .find(|p| p.platform() == platform)
        .ok_or_else(|| galley_core::Error::unsupported(format!("platform `{platform}` is not built into this example")))?;
    let registry = PlatformRegistry::default().with(provider.rules());
    let bp = galley_blueprint::load_str(
        "tour.yaml",
        &format!("apiVersion: galley/v1\nname: tour\nplatform: {platform}\ndata: {{ source: builtin:winequality, target: quality }}\nstages: {{ artifacts: {{ bucket: tour-artifacts }} }}\n"),
        &Default::default(),
        &registry,
    )
    .map_err(|d| d.into_error())?;
    provider.open(&bp.blueprint, &BTreeMap::new()).await
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__platform") {
        let platform: PlatformId = args.get(2).map(String::as_str).unwrap_or_default().parse().map_err(galley_core::Error::invalid)?;
        let dir = tempfile::tempdir()?;
        let provider = providers(dir.path())?.into_iter().find(|p| p.platform() == platform);
        return provider.ok_or_else(|| galley_core::Error::not_found(format!("no platform `{platform}`")))?.process(&args[3..]).await;
    }
    let platform: PlatformId = args.get(1).map(String::as_str).unwrap_or("local").parse().map_err(galley_core::Error::invalid)?;
    let dir = tempfile::tempdir()?;
    let stages = open(platform, dir.path()).await?;

    // 1. Train a model with galley-ml on a dataset shipped in the binary.
    let data = Data {
        source: "builtin:winequality".into(),
        target: "quality".into(),
        task: Task::Classification,
        positive_when: Some(galley_blueprint::PositiveWhen { at_least: 6.0 }),
        schema: Default::default(),
        split: Split::default(),
    };
    let table = galley_ml::load_source(&data.source, dir.path())?.table;
    let features: Vec<String> = ["alcohol", "sulphates", "volatile_acidity"].map(String::from).to_vec();
    let prepared = galley_ml::prepare(&table, &data, &features)?;
    let model = galley_ml::train(Algorithm::LogisticRegression, &Default::default(), Task::Classification, &prepared.train, &prepared.signature)?;
    let metrics = galley_ml::evaluate(&galley_ml::Model::from(model.clone()), &prepared.test)?;

    // 2. Log the run.
    let tracker = &stages.experiments;
    tracker.create_experiment("tour").await?;
    let run = tracker.start_run("tour", Some("library-tour"), &BTreeMap::new()).await?;
    let points: Vec<Metric> = metrics.iter().map(|(k, v)| Metric::new(k.clone(), *v)).collect();
    tracker.log_metrics(&run, &points).await?;

    // 3. Store the model and register it.
    let stored = stages.artifacts.put_bytes(&ArtifactKey::new("models/tour.json")?, model.to_bytes().into()).await?;
    tracker.log_artifact(&run, "model", &stored.uri).await?;
    tracker.end_run(&run, RunStatus::Finished).await?;
    stages.registry.create_model("tour-clf", None).await?;
    let version = stages
        .registry
        .register_version("tour-clf", &NewModelVersion {
            artifact_uri: stored.uri.clone(),
            metrics: metrics.clone(),
            lineage: Lineage { run_id: Some(run.clone()), ..Default::default() },
            signature: prepared.signature.clone(),
            description: None,
        })
        .await?;

    // 4. Deploy it and ask the endpoint for predictions.
    let endpoint = stages
        .serving
        .deploy(&EndpointSpec {
            name: "tour-api".into(),
            variants: vec![Variant {
                name: format!("v{}", version.version),
                model: "tour-clf".into(),
                version: version.version,
                artifact_uri: stored.uri,
                weight: 100,
            }],
            signature: prepared.signature.clone(),
            scaling: None,
        })
        .await?;
    let rows = galley_core::Table {
        columns: prepared.signature.inputs.clone(),
        rows: prepared.test.x[..3].iter().map(|r| r.iter().map(|v| galley_core::Value::Float(*v)).collect()).collect(),
    };
    let served = stages.serving.invoke("tour-api", &rows).await;
    stages.serving.undeploy("tour-api").await?;
    let served = served?;
    // The endpoint answers class labels, as MLflow's scoring server does for a classifier.
    let expected: Vec<f64> = model.predict(&rows)?.into_iter().map(|score| model.label(score)).collect();

    println!("platform:    {platform}");
    println!("run:         {run}");
    println!("metrics:     {metrics:?}");
    println!("registered:  tour-clf v{}", version.version);
    println!("endpoint:    {}", endpoint.url);
    println!("served:      {:?}", served.predictions);
    println!("in-process:  {expected:?}");
    assert_eq!(served.predictions, expected, "the endpoint must serve exactly the registered model");
    Ok(())
}
