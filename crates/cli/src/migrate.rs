//! `galley migrate plan|apply|verify BLUEPRINT --to PLATFORM|FILE`: the source is what the
//! blueprint's state records; the target is the same blueprint with its platform switched (or
//! another blueprint), provisioned by the ordinary engine (`galley apply`), then filled by
//! `galley-migrate`, whose journal lives next to the target's state.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use galley_core::{PlatformId, Stage};
use galley_engine::EngineOptions;
use galley_migrate::{Journal, Side};
use serde_json::json;

use crate::app::App;
use crate::cli::{ApplyArgs, BlueprintArgs, MigrateArgs, MigrateCommand, Output};
use crate::commands::{Ctx, confirm, show_plan};
use crate::error::CliError;

/// The two ends, loaded: the source opened, the target's blueprint and where its state and the
/// journal live.
struct Ends {
    source: Side,
    target_args: BlueprintArgs,
    target_app: App,
    target_label: String,
    journal: PathBuf,
}

pub async fn migrate(ctx: &Ctx, cmd: MigrateCommand) -> Result<ExitCode, CliError> {
    match cmd {
        MigrateCommand::Plan(m) => {
            let ends = Ends::load(&m).await?;
            let target = opened_target(&ends).await?;
            let plan = migration_plan(&ends, target.as_ref()).await?;
            let engine = ends.target_app.engine(EngineOptions { refresh: true, ..Default::default() })?;
            // Only the resources: `migrate apply` provisions the target and fills it; it runs no
            // lifecycle there.
            let resources = engine.plan().await?;
            match ctx.output {
                Output::Json => println!("{}", json!({ "migration": plan, "target_plan": serde_json::from_str::<serde_json::Value>(&resources.to_json())? })),
                Output::Human => {
                    println!("{}", plan.render_human());
                    println!("The target ({}), as `galley migrate apply` provisions it:", ends.target_label);
                    show_plan(ctx, &resources);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Apply { m, auto_approve, parallelism } => {
            let ends = Ends::load(&m).await?;
            let plan = migration_plan(&ends, opened_target(&ends).await?.as_ref()).await?;
            if ctx.output == Output::Human {
                println!("{}", plan.render_human());
            }
            if !auto_approve && !confirm(&format!("Provision {} and copy the stack into it?", ends.target_label))? {
                eprintln!("Migration cancelled.");
                return Ok(ExitCode::FAILURE);
            }
            let code = crate::commands::apply(ctx, &ends.target_args, None, true, &ApplyArgs { parallelism: Some(10), lock_timeout: Default::default() }).await?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            let target = opened_target(&ends).await?.ok_or_else(|| CliError::message("the target is not provisioned after apply"))?;
            let mut journal = Journal::open(&ends.journal)?;
            let human = ctx.output == Output::Human;
            let say = move |line: &str| {
                if human {
                    eprintln!("{line}");
                }
            };
            let opts = galley_migrate::Options { parallelism: parallelism.max(1) };
            let applied = galley_migrate::apply(&ends.source, &target, &mut journal, &opts, &say).await?;
            let proof = galley_migrate::verify(&ends.source, &target).await?;
            match ctx.output {
                Output::Json => println!("{}", json!({ "event": "migrate", "ok": proof.ok, "applied": applied, "proof": proof, "journal": ends.journal })),
                Output::Human => {
                    println!("{}", proof.render_human());
                    println!("Work with the target as: galley status {}", describe_args(&ends.target_args));
                }
            }
            Ok(if proof.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        MigrateCommand::Verify(m) => {
            let ends = Ends::load(&m).await?;
            let target = opened_target(&ends).await?.ok_or_else(|| {
                CliError::message(format!("{} is not provisioned: nothing to verify; run `galley migrate apply` first", ends.target_label))
            })?;
            let proof = galley_migrate::verify(&ends.source, &target).await?;
            match ctx.output {
                Output::Json => println!("{}", json!({ "event": "verify", "proof": proof })),
                Output::Human => println!("{}", proof.render_human()),
            }
            Ok(if proof.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

impl Ends {
    async fn load(m: &MigrateArgs) -> Result<Ends, CliError> {
        let source_app = App::load(&m.bp)?;
        let engine = source_app.engine(EngineOptions::default())?;
        source_app.require_applied(&engine)?;
        let label = |app: &App| format!("{} ({})", app.loaded.blueprint.platform, app.loaded.path.display());
        let source = Side { label: label(&source_app), bp: Arc::new(source_app.loaded.blueprint.clone()), stages: source_app.stages(&engine).await? };
        let to_file = PathBuf::from(&m.to);
        let migrate_dir = source_app.ctx.work_dir.join("migrate");
        let (target_args, journal_dir) = match m.to.parse::<PlatformId>() {
            Ok(platform) if !to_file.is_file() && source_app.providers.registry().get(platform).is_some() => {
                let dir = migrate_dir.join(platform.as_str());
                let state = m.target_state.clone().unwrap_or_else(|| dir.join("state.json"));
                (BlueprintArgs { platform: Some(platform), state: Some(state), ..m.bp.clone() }, dir)
            }
            _ if to_file.is_file() => {
                let stem = to_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "target".into());
                (BlueprintArgs { file: to_file.clone(), platform: None, state: m.target_state.clone(), ..m.bp.clone() }, migrate_dir.join(stem))
            }
            _ => {
                return Err(CliError::message(format!(
                    "--to {}: neither a platform this galley knows nor a blueprint file; give a platform (`aws`, `local`) or a path to a blueprint",
                    m.to
                )));
            }
        };
        let target_app = App::load(&target_args)?;
        let same_state = match (source_app.state_file(), target_app.state_file()) {
            (Some(a), Some(b)) => std::path::absolute(a)? == std::path::absolute(b)?,
            _ => false,
        };
        if same_state {
            return Err(CliError::message(format!(
                "the target's state would be the source's ({}); give the target its own with --target-state PATH",
                source_app.state_file().map(|p| p.display().to_string()).unwrap_or_default()
            )));
        }
        let target_label = label(&target_app);
        Ok(Ends { source, target_args, target_app, target_label, journal: journal_dir.join("journal.jsonl") })
    }
}

/// The target's stages when its stack is provisioned, `None` before the first apply.
async fn opened_target(ends: &Ends) -> Result<Option<Side>, CliError> {
    let engine = ends.target_app.engine(EngineOptions::default())?;
    if !engine.not_in_state(&engine.state()?).is_empty() {
        return Ok(None);
    }
    let bp = &ends.target_app.loaded.blueprint;
    Ok(Some(Side { label: ends.target_label.clone(), bp: Arc::new(bp.clone()), stages: ends.target_app.stages(&engine).await? }))
}

async fn migration_plan(ends: &Ends, opened: Option<&Side>) -> Result<galley_migrate::MigrationPlan, CliError> {
    let bp = &ends.target_app.loaded.blueprint;
    let caps = |stage: Stage| ends.target_app.providers.registry().require(bp.stage_platform(stage)).map(|r| r.capabilities()).map_err(CliError::message);
    let journal = match ends.journal.exists() {
        true => Some(Journal::open(&ends.journal)?),
        false => None,
    };
    let target = galley_migrate::Target {
        label: &ends.target_label,
        bp,
        registry: caps(Stage::Registry)?,
        serving: caps(Stage::Serving)?,
        opened,
    };
    Ok(galley_migrate::plan(&ends.source, &target, journal.as_ref()).await?)
}

/// `FILE --platform aws --state PATH`, for the user's next commands on the target.
fn describe_args(a: &BlueprintArgs) -> String {
    let mut s = a.file.display().to_string();
    if let Some(p) = a.platform {
        s.push_str(&format!(" --platform {p}"));
    }
    if let Some(e) = &a.env {
        s.push_str(&format!(" --env {e}"));
    }
    if let Some(st) = &a.state {
        s.push_str(&format!(" --state {}", st.display()));
    }
    s
}
