//! One function per command. Each returns the process exit code:
//! 0 success, 1 error, 2 changes pending (`plan --detailed-exitcode`) or drift found,
//! 3 the lifecycle ran but the gate rejected the candidate model.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;

use galley_core::stages::{Prediction, RunState, StageSet};
use galley_core::Table;
use galley_engine::{Engine, EngineOptions, Plan};
use serde_json::json;

use crate::app::App;
use crate::cli::{ApplyArgs, BlueprintArgs, Cli, Command, ContainerMode, Output};
use galley_engine::ContainerCommand;
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
        Command::Init(bp) => {
            let app = App::load(&bp)?;
            let engine = app.engine(EngineOptions::default())?;
            let done = engine.init_backend()?;
            say(&ctx, json!({ "ok": true, "state": engine.describe_backend(), "init": done }), &done);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print_json(&galley_blueprint::json_schema(&crate::platforms::registry()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Platforms => platforms(&ctx),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "galley", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { bp, out, detailed_exitcode, refresh } => plan(&ctx, &bp, out, detailed_exitcode, refresh).await,
        Command::Apply { mut bp, mut plan, auto_approve, apply: a } => {
            // `galley apply PLANFILE`: the plan names its blueprint.
            if plan.is_none()
                && let Some(saved) = read_plan_file(&bp.file)
            {
                let saved = saved?;
                let file = saved.blueprint_file.clone().ok_or_else(|| {
                    CliError::message(format!("plan {} does not name its blueprint; use `galley apply FILE --plan PLANFILE`", bp.file.display()))
                })?;
                plan = Some(std::mem::replace(&mut bp.file, file));
            }
            apply(&ctx, &bp, plan, auto_approve, &a).await
        }
        Command::Run { bp, no_cache, local_steps } => run(&ctx, &bp, no_cache, local_steps).await,
        Command::Up { bp, local_steps, apply: a } => {
            let code = apply(&ctx, &bp, None, true, &a).await?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            run(&ctx, &bp, false, local_steps).await
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
        Command::Migrate(m) => crate::migrate::migrate(&ctx, m).await,
        Command::Export(crate::cli::ExportCommand::Kserve { bp, storage_uri, models_dir, out }) => {
            crate::export::kserve(&ctx, &bp, &storage_uri, models_dir, out).await
        }
        Command::Export(crate::cli::ExportCommand::Prometheus { bp, dir }) => crate::export::prometheus(&ctx, &bp, dir).await,
        Command::Export(crate::cli::ExportCommand::Grafana { bp, out }) => crate::export::grafana(&ctx, &bp, out),
        Command::Platform { platform, args } => {
            let providers = crate::platforms::providers(&process_context());
            providers.get(platform)?.process(&args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Container(ContainerMode::Step { name, run, bundle, experiment_run, force_from, trigger }) => {
            container_step(&ctx, &name, &run, &bundle, experiment_run, force_from, trigger).await
        }
        Command::Container(ContainerMode::CheckDrift { bundle }) => container_check_drift(&ctx, &bundle).await,
        Command::Container(mode) => {
            let command = match mode {
                ContainerMode::Train { root } => ContainerCommand::Train { root },
                ContainerMode::Serve { root, port, bind } => ContainerCommand::Serve { root, bind, port },
                ContainerMode::Step { .. } | ContainerMode::CheckDrift { .. } => unreachable!("matched above"),
            };
            let providers = crate::platforms::providers(&process_context());
            providers.container()?.container(&command).await?;
            if let ContainerCommand::Train { root } = &command {
                say(&ctx, json!({ "ok": true, "root": root }), &format!("trained: the model is under {}", root.join("model").display()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `galley container step`: one step of a run the platform's engine started, in this container.
/// The blueprint comes from the run bundle (no file, no state here: a platform that runs steps
/// in containers opens its stages from the blueprint alone), the data file with it, into a
/// scratch project directory.
async fn container_step(
    ctx: &Ctx,
    name: &str,
    run: &str,
    bundle_uri: &str,
    experiment_run: String,
    force_from: String,
    trigger: String,
) -> Result<ExitCode, CliError> {
    use galley_lifecycle::StepName;
    let (lifecycle, _project) = bundled_lifecycle(bundle_uri).await?;
    let nonempty = |s: String| Some(s).filter(|s| !s.is_empty());
    let force_from = nonempty(force_from).map(|s| StepName::parse(&s)).transpose()?;
    let trigger = match nonempty(trigger) {
        Some(t) => Some(galley_core::stages::Trigger::parse(&t).ok_or_else(|| CliError::message(format!("`--trigger {t}`: expected schedule, new_data or drift")))?),
        None => None,
    };
    let done = lifecycle.run_step_here(run, name, nonempty(experiment_run), force_from, trigger).await?;
    let ok = done.state == RunState::Succeeded;
    let how = if done.cached { " (cached)" } else { "" };
    let human = match &done.error {
        Some(e) => format!("step {name}: {:?}{how}\n{e}", done.state),
        None => format!("step {name}: {:?}{how}", done.state),
    };
    say(ctx, json!({ "ok": ok, "step": done }), &human);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The lifecycle a run bundle describes, in a scratch project directory (kept while the
/// returned guard lives): the blueprint comes from the bundle (no file, no state here: a
/// platform that runs steps in containers opens its stages from the blueprint alone), the data
/// file with it.
async fn bundled_lifecycle(bundle_uri: &str) -> Result<(Arc<galley_lifecycle::Lifecycle>, tempfile::TempDir), CliError> {
    use galley_lifecycle::{Lifecycle, remote::RunBundle};
    let providers = crate::platforms::providers(&process_context());
    // A bundle on a shared directory (onprem's Airflow workers) needs no platform to read it.
    let bytes = match bundle_uri.strip_prefix("file://") {
        Some(path) => std::fs::read(path).map_err(|e| CliError::message(format!("run bundle {bundle_uri}: {e}")))?,
        None => providers.container()?.read_uri(bundle_uri).await?,
    };
    let bundle = RunBundle::parse(&bytes).map_err(|e| CliError::message(format!("run bundle {bundle_uri}: {}", e.message())))?;
    if bundle.galley_version != env!("CARGO_PKG_VERSION") {
        eprintln!("note: the run bundle was written by galley {}, this image is galley {}", bundle.galley_version, env!("CARGO_PKG_VERSION"));
    }
    let stages = crate::app::open_stages(&providers, &bundle.blueprint, &Default::default()).await?;
    let project = tempfile::tempdir()?;
    let bp = bundle.materialize(&*stages.artifacts, project.path()).await?;
    let lifecycle = Arc::new(Lifecycle::new(Arc::new(bp), stages, project.path().to_path_buf(), &bundle.blueprint_hash)?);
    Ok((lifecycle, project))
}

/// `galley container check-drift`: the monitor's verdict, published as its gauges.
async fn container_check_drift(ctx: &Ctx, bundle_uri: &str) -> Result<ExitCode, CliError> {
    let (lifecycle, _project) = bundled_lifecycle(bundle_uri).await?;
    match lifecycle.check_drift().await? {
        Some(report) => {
            let flagged: Vec<&str> = report.features.iter().filter(|f| f.drifted).map(|f| f.feature.as_str()).collect();
            let human = format!("drift check: {} samples, drifted: {}", report.samples, if report.drifted { flagged.join(", ") } else { "no".into() });
            say(ctx, json!({ "ok": true, "drift": report }), &human);
        }
        None => say(ctx, json!({ "ok": true, "drift": null }), "the blueprint has no monitoring stage: nothing to check"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The context of a process that reads no blueprint (a platform's own process, the container).
fn process_context() -> galley_engine::ProviderContext {
    let here = std::env::current_dir().unwrap_or_else(|_| ".".into());
    galley_engine::ProviderContext {
        work_dir: here.join(".galley"),
        project_dir: here,
        galley_exe: std::env::current_exe().unwrap_or_else(|_| "galley".into()),
    }
}

/// `galley platforms`: every known platform, what it declares, and whether this build runs it.
fn platforms(ctx: &Ctx) -> Result<ExitCode, CliError> {
    let providers = crate::platforms::providers(&process_context());
    let built: Vec<galley_core::PlatformId> = providers.platforms().collect();
    let rows: Vec<serde_json::Value> = providers
        .registry()
        .all()
        .map(|r| {
            json!({
                "platform": r.id(),
                "built_in": built.contains(&r.id()),
                "cargo_feature": r.cargo_feature(),
                "services": r.summary(),
                "capabilities": r.capabilities().features(),
                "state_backends": r.state_backends().iter().map(|b| b.kind).collect::<Vec<_>>(),
            })
        })
        .collect();
    match ctx.output {
        Output::Json => print_json(&json!({ "platforms": rows })),
        Output::Human => {
            for r in providers.registry().all() {
                let status = if built.contains(&r.id()) {
                    "built in".to_owned()
                } else {
                    format!("not built in: `cargo install --path crates/cli --features {}`", r.cargo_feature())
                };
                println!("{} ({status})\n  {}", r.id(), r.summary());
                let features: Vec<&str> = r.capabilities().features().iter().map(|f| f.describe()).collect();
                println!("  declares: {}", if features.is_empty() { "nothing optional".to_owned() } else { features.join("; ") });
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn say(ctx: &Ctx, value: serde_json::Value, human: &str) {
    match ctx.output {
        Output::Json => print_json(&value),
        Output::Human => println!("{human}"),
    }
}

fn validate(ctx: &Ctx, args: &BlueprintArgs) -> Result<ExitCode, CliError> {
    let loaded = crate::app::load_blueprint(args, &crate::platforms::registry())?;
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

/// The plan: resource changes, then what `galley run` will do once they exist, computed by the
/// lifecycle's own functions over what the stack serves now (nothing yet, before the first apply).
async fn make_plan(app: &App, engine: &Engine) -> Result<Plan, CliError> {
    let mut plan = engine.plan().await?;
    let bp = &app.loaded.blueprint;
    let state = engine.state()?;
    let observed = if engine.not_in_state(&state).is_empty() {
        let stages = app.stages_over(&state.resource_outputs()).await?;
        galley_lifecycle::Observed::read(bp, &stages).await?
    } else {
        galley_lifecycle::Observed::default()
    };
    let registry = app.providers.registry().require(bp.stage_platform(galley_core::Stage::Registry)).map_err(CliError::message)?.capabilities();
    plan.lifecycle = galley_lifecycle::plan_actions(bp, &registry, &observed, app.remote_steps());
    plan.blueprint_file = Some(std::path::absolute(&app.loaded.path)?);
    plan.seal();
    Ok(plan)
}

pub(crate) fn show_plan(ctx: &Ctx, plan: &Plan) {
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

pub(crate) fn confirm(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::message(format!("{question} needs confirmation, and standard input is not a terminal; pass --auto-approve")));
    }
    eprint!("{question} Only 'yes' will be accepted: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

pub(crate) async fn apply(ctx: &Ctx, args: &BlueprintArgs, plan_file: Option<std::path::PathBuf>, auto_approve: bool, a: &ApplyArgs) -> Result<ExitCode, CliError> {
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

async fn run(ctx: &Ctx, args: &BlueprintArgs, no_cache: bool, local_steps: bool) -> Result<ExitCode, CliError> {
    let app = App::load(args)?;
    let engine = app.engine(EngineOptions::default())?;
    app.require_applied(&engine)?;
    let stages = app.stages(&engine).await?;
    let lifecycle = app.run_lifecycle(stages.clone(), local_steps)?;
    let human = ctx.output == Output::Human;
    if human {
        let on = match app.remote_steps() {
            Some(on) if lifecycle.runs_remotely() => format!(" on {on}"),
            _ => String::new(),
        };
        eprintln!("running pipeline `{}`{on} …", lifecycle.pipeline_name());
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
                println!("endpoint: {}", galley_core::stages::invocations_url(url));
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
            o.insert("invocations_url".into(), json!(galley_core::stages::invocations_url(&info.url)));
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
    // Opened once for the monitor's verdict and the run history, when either applies.
    let stages = match state.resources.contains_key("monitoring.monitor") || state.resources.contains_key("pipeline.pipeline") {
        true => Some(app.stages(&engine).await.map_err(|e| e.render(false))),
        false => None,
    };
    let drift = monitor_report(&app, stages.as_ref(), &state).await;
    let runs = recent_runs(&app, stages.as_ref(), &state).await;
    let missing = engine.not_in_state(&state);
    match ctx.output {
        Output::Json => print_json(&json!({
            "blueprint": app.loaded.blueprint.name,
            "state": engine.describe_backend(),
            "serial": state.serial,
            "lineage": state.lineage,
            "resources": state.resources,
            "not_yet_created": missing,
            "outputs": outputs,
            "drift": drift.as_ref().map(|r| match r {
                Ok(report) => serde_json::to_value(report).unwrap_or_default(),
                Err(e) => json!({ "error": e }),
            }),
            "runs": runs.as_ref().map(|r| match r {
                Ok(runs) => json!(runs.iter().map(|run| json!({
                    "id": run.id, "state": run.state, "trigger": run.trigger, "started_ms": run.started_ms,
                })).collect::<Vec<_>>()),
                Err(e) => json!({ "error": e }),
            }),
        })),
        Output::Human => {
            println!("blueprint `{}` — state {} (serial {})", app.loaded.blueprint.name, engine.describe_backend(), state.serial);
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
                Some(Ok(r)) if !r.enough_data() => println!("monitoring: {}", r.verdict()),
                Some(Ok(r)) => {
                    let scores: Vec<String> = r.features.iter().filter_map(|f| f.psi.map(|p| format!("{}={p:.3}", f.feature))).collect();
                    println!("monitoring: {} inferences; {}; PSI {}", r.samples, r.verdict(), scores.join(" "));
                }
                Some(Err(e)) => println!("monitoring: {e}"),
                None => {}
            }
            match &runs {
                Some(Ok(runs)) if runs.is_empty() => println!("runs: none yet"),
                Some(Ok(runs)) => {
                    println!("runs (newest first):");
                    for run in runs {
                        let trigger = run.trigger.map(|t| t.as_str()).unwrap_or("by hand");
                        let started = chrono::DateTime::from_timestamp_millis(run.started_ms).map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default();
                        println!("  {:?} {} ({trigger}, started {started})", run.state, run.id);
                    }
                }
                Some(Err(e)) => println!("runs: {e}"),
                None => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How many of the pipeline's runs `status` lists.
const RECENT_RUNS: usize = 5;

/// The pipeline's newest runs and what started each (a schedule or an alarm on the platform's
/// side, or `galley run`), when the pipeline exists.
async fn recent_runs(
    app: &App,
    stages: Option<&Result<StageSet, String>>,
    state: &galley_engine::State,
) -> Option<Result<Vec<galley_core::stages::PipelineRun>, String>> {
    state.resources.get("pipeline.pipeline")?;
    let runs = async {
        let stages = stages.cloned().ok_or("the stages were not opened")??;
        let mut runs = stages.orchestrator.list_runs(&galley_lifecycle::pipeline_name(&app.loaded.blueprint)).await.map_err(|e| e.to_string())?;
        runs.sort_by_key(|r| std::cmp::Reverse(r.started_ms));
        runs.truncate(RECENT_RUNS);
        Ok(runs)
    }
    .await;
    Some(runs)
}

/// The monitor's current drift verdict (published as metrics too), when the blueprint
/// monitors a deployed endpoint that exists.
async fn monitor_report(
    app: &App,
    stages: Option<&Result<StageSet, String>>,
    state: &galley_engine::State,
) -> Option<Result<galley_core::stages::DriftReport, String>> {
    state.resources.get("monitoring.monitor")?;
    app.loaded.blueprint.stages.serving.as_ref()?;
    let report = async {
        let stages = stages.cloned().ok_or("the stages were not opened")??;
        let lifecycle = app.lifecycle(stages).map_err(|e| e.render(false))?;
        lifecycle.check_drift().await.map_err(|e| e.to_string())
    }
    .await;
    report.transpose()
}

/// Scores rows given in any of MLflow's scoring formats, checked against the endpoint's
/// signature by the same decoder the model server uses.
async fn predict(ctx: &Ctx, args: &BlueprintArgs, data: &str) -> Result<ExitCode, CliError> {
    let body = if data == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        data.to_owned()
    };
    let d = crate::app::Deployed::open(args, "the blueprint has no serving stage").await?;
    let rows = galley_server::scoring::decode_table(body.as_bytes(), &d.info.signature)
        .map_err(|e| CliError::message(format!("the request does not fit endpoint `{}`: {e}", d.endpoint)))?;
    let p = d.stages.serving.invoke(&d.endpoint, &rows).await?;
    say(ctx, serde_json::to_value(&p)?, &format!("{:?} (variant {})", p.predictions, p.variant));
    Ok(ExitCode::SUCCESS)
}
