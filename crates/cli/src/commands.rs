//! One function per command. Each returns the process exit code:
//! 0 success, 1 error, 2 changes pending (`plan --detailed-exitcode`) or drift found,
//! 3 the lifecycle ran but the gate rejected the candidate model.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use galley_blueprint::{Blueprint, Promotion, Strategy};
use galley_core::stages::{Prediction, RunState};
use galley_core::{DType, Table, Value};
use galley_engine::{Engine, EngineOptions, LifecycleAction, Plan};
use serde_json::json;

use crate::app::App;
use crate::cli::{ApplyArgs, BlueprintArgs, Cli, Command, ContainerMode, Output};
use crate::error::CliError;
use crate::render::{print_json, progress};

pub const EXIT_CHANGES: u8 = 2;
pub const EXIT_GATE_REJECTED: u8 = 3;

pub struct Ctx {
    pub output: Output,
    pub color: bool,
}

pub async fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    let ctx = Ctx { output: cli.output.unwrap_or(Output::Human), color: !cli.no_color && std::io::stderr().is_terminal() };
    match cli.command {
        Command::Validate(bp) => validate(&ctx, &bp),
        Command::Schema => {
            print_json(&galley_blueprint::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "galley", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { bp, out, detailed_exitcode, refresh } => plan(&ctx, &bp, out, detailed_exitcode, refresh).await,
        Command::Apply { mut bp, mut plan, auto_approve, apply: a } => {
            // `galley apply PLANFILE`: the plan names its blueprint.
            if plan.is_none() {
                if let Some(saved) = read_plan_file(&bp.file) {
                    let saved = saved?;
                    let file = saved.blueprint_file.clone().ok_or_else(|| {
                        CliError::message(format!("plan {} does not name its blueprint; use `galley apply FILE --plan PLANFILE`", bp.file.display()))
                    })?;
                    plan = Some(std::mem::replace(&mut bp.file, file));
                }
            }
            apply(&ctx, &bp, plan, auto_approve, &a).await
        }
        Command::Run { bp, no_cache } => run(&ctx, &bp, no_cache).await,
        Command::Up { bp, apply: a } => {
            let code = apply(&ctx, &bp, None, true, &a).await?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            run(&ctx, &bp, false).await
        }
        Command::Watch { bp, interval, max_runs, timeout } => crate::watch::watch(&ctx, &bp, interval, max_runs, timeout).await,
        Command::Destroy { bp, auto_approve, force, apply: a } => destroy(&ctx, &bp, auto_approve, force, &a).await,
        Command::Drift(bp) => drift(&ctx, &bp, false).await,
        Command::Refresh(bp) => drift(&ctx, &bp, true).await,
        Command::Status(bp) => status(&ctx, &bp).await,
        Command::Outputs(bp) => outputs(&ctx, &bp).await,
        Command::Import { bp, address, id } => {
            let app = App::load(&bp)?;
            let engine = app.engine(EngineOptions::default())?;
            engine.import(&address, &id).await?;
            say(&ctx, json!({ "ok": true, "imported": address, "id": id }), &format!("imported {address} ({id})"));
            Ok(ExitCode::SUCCESS)
        }
        Command::ForceUnlock { id, state } => {
            galley_engine::force_unlock(&state, &id)?;
            say(&ctx, json!({ "ok": true, "unlocked": id }), &format!("released lock {id} on {}", state.display()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Predict { bp, data } => predict(&ctx, &bp, &data).await,
        Command::Endpoint { config } => {
            galley_local_server(&config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Container(ContainerMode::Train { root }) => {
            let model = galley_lifecycle::container::train_in_container(&root)?;
            say(&ctx, json!({ "ok": true, "model": model }), &format!("wrote {}", model.display()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Container(ContainerMode::Serve { root, port, bind }) => {
            container_server(&root, bind, port).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Serves `<root>/model/model.json` with SageMaker's inference contract. SageMaker signs and
/// authorises every InvokeEndpoint before a request reaches the container, so the server binds
/// every interface without a token of its own.
#[cfg(feature = "local")]
async fn container_server(root: &std::path::Path, bind: std::net::IpAddr, port: u16) -> Result<(), CliError> {
    use galley_local::serving::config::{DEFAULT_MAX_BODY_BYTES, ServerConfig, VariantConfig};
    let model_path = root.join("model").join(galley_lifecycle::container::MODEL_FILE);
    let bytes = std::fs::read(&model_path)
        .map_err(|e| CliError::message(format!("cannot read the model at {}: {e}", model_path.display())))?;
    let model = galley_ml::TrainedModel::from_bytes(&bytes)?;
    let run_dir = std::env::temp_dir().join(format!("galley-container-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).map_err(|e| CliError::message(format!("cannot create {}: {e}", run_dir.display())))?;
    let config = ServerConfig {
        endpoint: "container".into(),
        bind,
        port,
        token_env: None,
        token: None,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        variants: vec![VariantConfig { name: "model".into(), model_path, weight: 1, model: None, version: None }],
        signature: model.signature().clone(),
        monitor_dir: None,
        state_file: run_dir.join("state.json"),
        platform_authenticated: true,
    };
    let path = run_dir.join("endpoint.json");
    config.write(&path)?;
    Ok(galley_local::serving::run_server(&path).await?)
}

#[cfg(not(feature = "local"))]
async fn container_server(_root: &std::path::Path, _bind: std::net::IpAddr, _port: u16) -> Result<(), CliError> {
    Err(CliError::message("this galley was built without the `local` platform, whose model server `container serve` runs"))
}

#[cfg(feature = "local")]
async fn galley_local_server(config: &std::path::Path) -> Result<(), CliError> {
    Ok(galley_local::serving::run_server(config).await?)
}

#[cfg(not(feature = "local"))]
async fn galley_local_server(_config: &std::path::Path) -> Result<(), CliError> {
    Err(CliError::message("this galley was built without the `local` platform"))
}

fn say(ctx: &Ctx, value: serde_json::Value, human: &str) {
    match ctx.output {
        Output::Json => print_json(&value),
        Output::Human => println!("{human}"),
    }
}

fn validate(ctx: &Ctx, args: &BlueprintArgs) -> Result<ExitCode, CliError> {
    let loaded = crate::app::load_blueprint(args)?;
    let bp = &loaded.blueprint;
    let stages: Vec<String> = bp.declared_stages().iter().map(|s| format!("{s}@{}", bp.stage_platform(*s))).collect();
    say(
        ctx,
        json!({ "ok": true, "file": args.file, "name": bp.name, "platform": bp.platform, "stages": stages, "diagnostics": [] }),
        &format!("{} is valid: `{}` on {} ({})", args.file.display(), bp.name, bp.platform, stages.join(", ")),
    );
    Ok(ExitCode::SUCCESS)
}

fn engine_options(a: &ApplyArgs) -> EngineOptions {
    let parallelism = a.parallelism.unwrap_or(EngineOptions::default().parallelism).max(1);
    EngineOptions {
        parallelism,
        per_platform: parallelism,
        lock_timeout: (!a.lock_timeout.is_zero()).then_some(a.lock_timeout),
        ..EngineOptions::default()
    }
}

/// What `galley run` will do once the resources exist, shown in the same plan. The gate decides
/// at run time whether the version is registered and promoted; the plan says what follows if
/// it passes.
pub fn lifecycle_actions(bp: &Blueprint) -> Vec<LifecycleAction> {
    let mut actions = Vec::new();
    if bp.stages.training.is_none() {
        return actions;
    }
    actions.push(LifecycleAction::RunPipeline { pipeline: galley_lifecycle::pipeline_name(bp), parameters: BTreeMap::new() });
    if let Some(t) = bp.stages.training.as_ref().filter(|t| t.compute == galley_blueprint::Compute::Managed) {
        actions.push(LifecycleAction::SubmitTrainingJob {
            platform: bp.stage_platform(galley_core::Stage::Training).to_string(),
            image: t.image.clone().unwrap_or_default(),
            instance_type: t.instance_type.clone(),
            max_runtime: t.max_runtime.clone().unwrap_or_else(|| galley_lifecycle::DEFAULT_MAX_RUNTIME.into()),
        });
    }
    let Some(reg) = &bp.stages.registry else { return actions };
    actions.push(LifecycleAction::RegisterVersion { model: reg.model.clone() });
    match galley_blueprint::effective_promotion(bp) {
        Promotion::Alias => actions.push(LifecycleAction::MoveAlias { model: reg.model.clone(), alias: galley_lifecycle::CHAMPION.into() }),
        Promotion::Approval => actions.push(LifecycleAction::SetApproval { model: reg.model.clone(), status: "Approved".into() }),
        Promotion::Stage => {}
    }
    if let Some(sv) = &bp.stages.serving {
        let weights = match &sv.traffic {
            Some(t) if t.strategy == Strategy::Canary => {
                let p = t.percent.unwrap_or(10);
                BTreeMap::from([("candidate".to_owned(), p), ("champion".to_owned(), 100 - p)])
            }
            _ => BTreeMap::from([("candidate".to_owned(), 100)]),
        };
        actions.push(LifecycleAction::ShiftTraffic { endpoint: sv.endpoint.clone(), weights });
        if let Some(m) = &bp.stages.monitoring {
            actions.push(LifecycleAction::AttachMonitor {
                endpoint: sv.endpoint.clone(),
                method: format!("{:?}", m.drift.method).to_lowercase(),
                threshold: m.drift.threshold,
            });
        }
    }
    actions
}

async fn make_plan(app: &App, engine: &Engine) -> Result<Plan, CliError> {
    let mut plan = engine.plan().await?;
    plan.lifecycle = lifecycle_actions(&app.loaded.blueprint);
    plan.blueprint_file = Some(std::path::absolute(&app.loaded.path)?);
    plan.seal();
    Ok(plan)
}

fn show_plan(ctx: &Ctx, plan: &Plan) {
    match ctx.output {
        Output::Json => println!("{}", plan.to_json()),
        Output::Human => println!("{}", plan.render_human()),
    }
}

async fn plan(ctx: &Ctx, args: &BlueprintArgs, out: Option<std::path::PathBuf>, detailed: bool, refresh: bool) -> Result<ExitCode, CliError> {
    let app = App::load(args)?;
    let engine = app.engine(EngineOptions { refresh, ..Default::default() })?;
    let mut plan = make_plan(&app, &engine).await?;
    if let Some(path) = &out {
        plan.save(path)?;
    }
    show_plan(ctx, &plan);
    if let (Some(path), Output::Human) = (&out, ctx.output) {
        println!("\nSaved the plan to {} (sha256 {}). Apply exactly this plan with:\n  galley apply {} --plan {}", path.display(), plan.hash, args.file.display(), path.display());
    }
    Ok(if detailed && plan.has_changes() { ExitCode::from(EXIT_CHANGES) } else { ExitCode::SUCCESS })
}

/// `Some` when `path` holds a saved plan rather than a blueprint (which may be JSON too): a
/// JSON object with a plan's `format_version`, `changes` and `hash`.
fn read_plan_file(path: &std::path::Path) -> Option<Result<Plan, CliError>> {
    let bytes = std::fs::read(path).ok()?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let is_plan = ["format_version", "changes", "hash"].iter().all(|k| doc.get(k).is_some());
    is_plan.then(|| Plan::load(path).map_err(CliError::from))
}

fn confirm(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::message(format!("{question} needs confirmation, and standard input is not a terminal; pass --auto-approve")));
    }
    eprint!("{question} Only 'yes' will be accepted: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

async fn apply(ctx: &Ctx, args: &BlueprintArgs, plan_file: Option<std::path::PathBuf>, auto_approve: bool, a: &ApplyArgs) -> Result<ExitCode, CliError> {
    let app = App::load(args)?;
    let engine = app.engine(EngineOptions { refresh: true, ..engine_options(a) })?;
    let plan = match &plan_file {
        Some(path) => {
            let plan = Plan::load(path)?;
            plan.verify()?;
            plan
        }
        None => make_plan(&app, &engine).await?,
    };
    if ctx.output == Output::Human {
        println!("{}", plan.render_human());
    }
    if !plan.has_changes() {
        if ctx.output == Output::Json {
            println!("{}", json!({ "event": "summary", "ok": true, "changes": 0 }));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !auto_approve && plan_file.is_none() && !confirm("Apply these changes?")? {
        eprintln!("Apply cancelled.");
        return Ok(ExitCode::FAILURE);
    }
    let (sink, bar) = progress(ctx.output, plan.changes.len(), ctx.color);
    let report = engine.apply(Some(&plan), sink).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = report?;
    finish_report(ctx, &report, "Apply")
}

fn finish_report(ctx: &Ctx, report: &galley_engine::ApplyReport, what: &str) -> Result<ExitCode, CliError> {
    match ctx.output {
        // One line, like the events before it: the output is a stream of JSON lines.
        Output::Json => println!("{}", json!({ "event": "summary", "ok": report.is_success(), "report": report })),
        Output::Human => {
            println!(
                "\n{what} {}: {} created, {} updated, {} replaced, {} destroyed, {} failed, {} skipped.",
                if report.is_success() { "complete" } else { "FAILED" },
                report.created.len(),
                report.updated.len(),
                report.replaced.len(),
                report.deleted.len(),
                report.failed.len(),
                report.skipped.len()
            );
            for (address, error) in &report.failed {
                println!("  {address}: {error}");
            }
        }
    }
    Ok(if report.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn run(ctx: &Ctx, args: &BlueprintArgs, no_cache: bool) -> Result<ExitCode, CliError> {
    let app = App::load(args)?;
    let engine = app.engine(EngineOptions::default())?;
    app.require_applied(&engine)?;
    let stages = app.stages(&engine).await?;
    let lifecycle = app.lifecycle(stages.clone())?;
    let human = ctx.output == Output::Human;
    if human {
        eprintln!("running pipeline `{}` …", lifecycle.pipeline_name());
    }
    let progress = move |step: &galley_core::stages::StepRun| {
        if human {
            let state = format!("{:?}", step.state).to_lowercase();
            eprintln!("  {:<15} {state}{}", step.name, if step.cached { " (cached)" } else { "" });
        }
    };
    // Ctrl-C stops the run properly, managed training job included (it is billed while it
    // runs); a second Ctrl-C ends galley at once.
    let run = lifecycle.run_with_progress(None, no_cache, &progress);
    tokio::pin!(run);
    let summary = tokio::select! {
        // Polled first, so the handler is installed before the run prints its first step.
        biased;
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: cancelling the run (and any training job it started); Ctrl-C again to quit at once");
            lifecycle.cancel().await?;
            tokio::select! {
                biased;
                _ = tokio::signal::ctrl_c() => return Err(CliError::message("interrupted twice: quit without waiting for the run to stop")),
                done = &mut run => done?,
            }
        }
        done = &mut run => done?,
    };
    let sample = sample_prediction(&lifecycle, &stages, &summary).await;
    report_run(ctx, &summary, sample)
}

pub(crate) async fn sample_prediction(
    lifecycle: &galley_lifecycle::Lifecycle,
    stages: &galley_core::StageSet,
    summary: &galley_lifecycle::RunSummary,
) -> Option<Result<(Table, Prediction), String>> {
    let endpoint = summary.endpoint.as_ref()?;
    summary.endpoint_url.as_ref()?;
    Some(
        async {
            let rows = lifecycle.sample_rows(summary, 1).await?;
            let p = stages.serving.invoke(endpoint, &rows).await?;
            Ok::<_, galley_core::Error>((rows, p))
        }
        .await
        .map_err(|e| e.to_string()),
    )
}

pub(crate) fn report_run(
    ctx: &Ctx,
    s: &galley_lifecycle::RunSummary,
    sample: Option<Result<(Table, Prediction), String>>,
) -> Result<ExitCode, CliError> {
    let gate_rejected = s.gate.as_ref().is_some_and(|g| !g.passed);
    match ctx.output {
        Output::Json => {
            let sample = sample.map(|r| match r {
                Ok((rows, p)) => json!({ "request": table_records(&rows), "prediction": p }),
                Err(e) => json!({ "error": e }),
            });
            print_json(&json!({ "ok": s.state == RunState::Succeeded, "run": s, "sample_prediction": sample }));
        }
        Output::Human => {
            println!("\npipeline run {}: {:?}", s.pipeline_run, s.state);
            for step in &s.steps {
                let how = if step.cached { " (cached)".to_owned() } else if step.attempts > 1 { format!(" ({} attempts)", step.attempts) } else { String::new() };
                println!("  {:<15} {:?}{how}", step.name, step.state);
                if let Some(e) = &step.error {
                    for line in e.lines() {
                        println!("      {line}");
                    }
                }
            }
            if let Some(job) = &s.training_job {
                println!("\ntrained by {job}");
            }
            if !s.metrics.is_empty() {
                println!("\nmetrics (held-out):");
                for (k, v) in &s.metrics {
                    println!("  {k:<10} {v:.4}");
                }
            }
            if let Some(g) = &s.gate {
                println!("\ngate: {}", if g.passed { "passed" } else { "REJECTED" });
                for r in &g.reasons {
                    println!("  {r}");
                }
            }
            match (s.registered_version, s.registered_new) {
                (Some(v), true) => println!("\nregistered version {v}"),
                (Some(v), false) => println!("\nnothing new to register (version {v} already holds this model)"),
                _ => {}
            }
            if let Some(url) = &s.endpoint_url {
                println!("endpoint: {}", invocations_url(url));
            }
            match sample {
                Some(Ok((rows, p))) => println!(
                    "sample prediction: {} → {:?} (variant {})",
                    serde_json::to_string(&table_records(&rows)).unwrap_or_default(),
                    p.predictions,
                    p.variant
                ),
                Some(Err(e)) => println!("sample prediction failed: {e}"),
                None => {}
            }
        }
    }
    Ok(if s.state != RunState::Succeeded {
        ExitCode::FAILURE
    } else if gate_rejected {
        ExitCode::from(EXIT_GATE_REJECTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where to POST scoring requests: local endpoints report their base URL, SageMaker its
/// invocation URL already.
fn invocations_url(url: &str) -> String {
    if url.ends_with("/invocations") { url.to_owned() } else { format!("{}/invocations", url.trim_end_matches('/')) }
}

fn table_records(t: &Table) -> serde_json::Value {
    serde_json::Value::Array(
        t.rows
            .iter()
            .map(|r| {
                serde_json::Value::Object(
                    t.columns.iter().zip(r).map(|(c, v)| (c.name.clone(), serde_json::to_value(v).unwrap_or_default())).collect(),
                )
            })
            .collect(),
    )
}

async fn destroy(ctx: &Ctx, args: &BlueprintArgs, auto_approve: bool, force: bool, a: &ApplyArgs) -> Result<ExitCode, CliError> {
    let app = App::load(args)?;
    let engine = app.engine(EngineOptions { force, ..engine_options(a) })?;
    let state = engine.state()?;
    if state.resources.is_empty() {
        match ctx.output {
            Output::Json => println!("{}", json!({ "event": "summary", "ok": true, "destroyed": 0 })),
            Output::Human => println!("Nothing to destroy: the state records no resources."),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if ctx.output == Output::Human {
        println!("Galley will destroy {} resources:", state.resources.len());
        for (address, r) in &state.resources {
            println!("  - {address} ({}{})", r.kind, if r.protect { ", protected" } else { "" });
        }
    }
    if !auto_approve && !confirm("Destroy all of these?")? {
        eprintln!("Destroy cancelled.");
        return Ok(ExitCode::FAILURE);
    }
    let (sink, bar) = progress(ctx.output, state.resources.len(), ctx.color);
    let report = engine.destroy(sink).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    finish_report(ctx, &report?, "Destroy")
}

async fn drift(ctx: &Ctx, args: &BlueprintArgs, refresh: bool) -> Result<ExitCode, CliError> {
    let app = App::load(args)?;
    let engine = app.engine(EngineOptions::default())?;
    let drifts = if refresh { engine.refresh().await? } else { engine.drift().await? };
    match ctx.output {
        Output::Json => print_json(&json!({ "drift": drifts, "refreshed": refresh })),
        Output::Human => {
            if drifts.is_empty() {
                println!("No drift: every resource in state matches reality.");
            }
            for d in &drifts {
                match &d.kind {
                    galley_engine::DriftKind::Vanished => println!("{}: vanished outside galley", d.address),
                    galley_engine::DriftKind::Changed { diffs } => {
                        println!("{}: changed outside galley", d.address);
                        for diff in diffs {
                            println!("    {}: {} → {}", diff.path, diff.old.as_ref().map(|v| v.to_string()).unwrap_or("(none)".into()), diff.new.as_ref().map(|v| v.to_string()).unwrap_or("(none)".into()));
                        }
                    }
                }
            }
            if refresh && !drifts.is_empty() {
                println!("State updated to match reality.");
            }
        }
    }
    Ok(if drifts.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_CHANGES) })
}

/// Outputs from state, with the live endpoint (URL, input signature, variants) merged in.
async fn live_outputs(app: &App, engine: &Engine) -> Result<BTreeMap<String, BTreeMap<String, serde_json::Value>>, CliError> {
    let mut outputs = engine.outputs()?;
    if let (Some(sv), true) = (&app.loaded.blueprint.stages.serving, outputs.contains_key("serving.endpoint")) {
        let stages = app.stages(engine).await?;
        if let Some(info) = stages.serving.describe(&sv.endpoint).await? {
            let o = outputs.entry("serving.endpoint".to_owned()).or_default();
            o.insert("url".into(), json!(info.url));
            o.insert("invocations_url".into(), json!(invocations_url(&info.url)));
            o.insert("state".into(), serde_json::to_value(info.state)?);
            o.insert("signature".into(), serde_json::to_value(&info.signature)?);
            o.insert("variants".into(), serde_json::to_value(&info.variants)?);
        }
    }
    Ok(outputs)
}

async fn outputs(ctx: &Ctx, args: &BlueprintArgs) -> Result<ExitCode, CliError> {
    let app = App::load(args)?;
    let engine = app.engine(EngineOptions::default())?;
    let outputs = live_outputs(&app, &engine).await?;
    match ctx.output {
        Output::Json => print_json(&serde_json::to_value(&outputs)?),
        Output::Human => {
            for (address, o) in &outputs {
                for (k, v) in o {
                    println!("{address}.{k} = {}", if let Some(s) = v.as_str() { s.to_owned() } else { v.to_string() });
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(ctx: &Ctx, args: &BlueprintArgs) -> Result<ExitCode, CliError> {
    let app = App::load(args)?;
    let engine = app.engine(EngineOptions::default())?;
    let state = engine.state()?;
    let outputs = live_outputs(&app, &engine).await?;
    let drift = monitor_report(&app, &engine, &state).await;
    let planned: Vec<&str> = engine.graph().ordered().map(|s| s.address.as_str()).collect();
    let missing: Vec<&str> = planned.iter().copied().filter(|a| !state.resources.contains_key(*a)).collect();
    match ctx.output {
        Output::Json => print_json(&json!({
            "blueprint": app.loaded.blueprint.name,
            "state": app.state_path,
            "serial": state.serial,
            "lineage": state.lineage,
            "resources": state.resources,
            "not_yet_created": missing,
            "outputs": outputs,
            "drift": drift.as_ref().map(|r| match r {
                Ok(report) => serde_json::to_value(report).unwrap_or_default(),
                Err(e) => json!({ "error": e }),
            }),
        })),
        Output::Human => {
            println!("blueprint `{}` — state {} (serial {})", app.loaded.blueprint.name, app.state_path.display(), state.serial);
            for (address, r) in &state.resources {
                println!("  {address:<24} {:<24} {}{}", r.kind, r.id, if r.protect { "  [protected]" } else { "" });
            }
            for a in &missing {
                println!("  {a:<24} (not created yet: run `galley apply`)");
            }
            if let Some(url) = outputs.get("serving.endpoint").and_then(|o| o.get("url")).and_then(|u| u.as_str()) {
                println!("endpoint: {url} (serving)");
            }
            match &drift {
                Some(Ok(r)) if r.samples == 0 => println!("monitoring: no inferences recorded yet"),
                Some(Ok(r)) => {
                    let scores: Vec<String> = r.features.iter().map(|f| format!("{}={:.3}", f.feature, if r.samples > 0 { f.psi } else { 0.0 })).collect();
                    println!(
                        "monitoring: {} inferences; {}; PSI {}",
                        r.samples,
                        if r.drifted { format!("DRIFT on {}", r.drifted_features().join(", ")) } else { "no drift".into() },
                        scores.join(" ")
                    );
                }
                Some(Err(e)) => println!("monitoring: {e}"),
                None => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The monitor's current drift verdict (published as metrics too), when the blueprint
/// monitors a deployed endpoint that exists.
async fn monitor_report(
    app: &App,
    engine: &Engine,
    state: &galley_engine::State,
) -> Option<Result<galley_core::stages::DriftReport, String>> {
    state.resources.get("monitoring.monitor")?;
    app.loaded.blueprint.stages.serving.as_ref()?;
    let report = async {
        let stages = app.stages(engine).await.map_err(|e| e.render(false))?;
        let lifecycle = app.lifecycle(stages).map_err(|e| e.render(false))?;
        lifecycle.check_drift().await.map_err(|e| e.to_string())
    }
    .await;
    report.transpose()
}

/// Scores rows given as an MLflow `dataframe_split` or `dataframe_records` body.
async fn predict(ctx: &Ctx, args: &BlueprintArgs, data: &str) -> Result<ExitCode, CliError> {
    let body = if data == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        data.to_owned()
    };
    let rows = parse_rows(&body)?;
    let app = App::load(args)?;
    let sv = app.loaded.blueprint.stages.serving.as_ref().ok_or_else(|| CliError::message("the blueprint has no serving stage"))?;
    let engine = app.engine(EngineOptions::default())?;
    app.require_applied(&engine)?;
    let stages = app.stages(&engine).await?;
    let p = stages.serving.invoke(&sv.endpoint, &rows).await?;
    say(ctx, serde_json::to_value(&p)?, &format!("{:?} (variant {})", p.predictions, p.variant));
    Ok(ExitCode::SUCCESS)
}

fn parse_rows(body: &str) -> Result<Table, CliError> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| CliError::message(format!("the request is not JSON: {e}")))?;
    let value = |j: &serde_json::Value| match j {
        serde_json::Value::Number(n) => n.as_i64().map(Value::Int).unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::String(s) => Value::String(s.clone()),
        _ => Value::Null,
    };
    let mut table = Table::default();
    if let Some(split) = v.get("dataframe_split") {
        let cols: Vec<String> = serde_json::from_value(split.get("columns").cloned().unwrap_or_default())?;
        table.columns = cols.into_iter().map(|c| galley_core::table::Column::new(c, DType::Float)).collect();
        for r in split.get("data").and_then(|d| d.as_array()).into_iter().flatten() {
            table.rows.push(r.as_array().map(|r| r.iter().map(value).collect()).unwrap_or_default());
        }
    } else if let Some(records) = v.get("dataframe_records").and_then(|r| r.as_array()) {
        let first = records.first().and_then(|r| r.as_object()).ok_or_else(|| CliError::message("`dataframe_records` is empty"))?;
        table.columns = first.keys().map(|c| galley_core::table::Column::new(c, DType::Float)).collect();
        for r in records {
            table.rows.push(table.columns.iter().map(|c| r.get(&c.name).map(value).unwrap_or(Value::Null)).collect());
        }
    } else {
        return Err(CliError::message("expected a `dataframe_split` or `dataframe_records` body"));
    }
    Ok(table)
}
