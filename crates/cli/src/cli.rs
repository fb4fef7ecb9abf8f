//! The command line, declared with clap's derive API.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use galley_core::PlatformId;

#[derive(Parser, Debug)]
#[command(name = "galley", version, about = "One blueprint, the whole MLOps lifecycle, any platform.")]
pub struct Cli {
    /// Output format: human-readable text, or JSON for scripts and CI
    /// [default: `output` in galley.toml, GALLEY_OUTPUT, else human].
    #[arg(long, short = 'o', global = true, value_enum)]
    pub output: Option<Output>,
    /// Disable colours and progress bars.
    #[arg(long, global = true, env = "NO_COLOR", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// Options every command that reads a blueprint shares.
#[derive(Args, Debug, Clone)]
pub struct BlueprintArgs {
    /// The blueprint file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Run every stage on this platform instead of the blueprint's `platform`
    /// [default: galley.toml, GALLEY_PLATFORM].
    #[arg(long, value_parser = parse_platform)]
    pub platform: Option<PlatformId>,
    /// Apply the named overlay from the blueprint's `environments` [default: galley.toml, GALLEY_ENV].
    #[arg(long)]
    pub env: Option<String>,
    /// Set a blueprint variable (repeatable): `--var bucket=ml-prod`.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// State file [default: galley.toml's `state_path`, GALLEY_STATE_PATH, the blueprint's
    /// `backend`, else `.galley/state.json` next to the blueprint].
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ApplyArgs {
    /// Walk at most this many resources at once [default: galley.toml, GALLEY_PARALLELISM, else 10].
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// Wait this long for another run's lock before giving up (e.g. `30s`, `2m`); 0 fails at once.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a blueprint without touching any platform.
    Validate(BlueprintArgs),
    /// Set up where the blueprint's state lives, before the first apply: for `backend: {type:
    /// s3}`, the bucket, versioned, encrypted and private (what Terraform users do by hand).
    /// Safe to repeat.
    Init(BlueprintArgs),
    /// Print the blueprint JSON Schema (for editor autocompletion).
    Schema,
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show what apply would change, resource by resource, and the lifecycle actions a run takes.
    Plan {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// Save the plan; `galley apply PLANFILE` then does exactly this plan.
        #[arg(long, value_name = "PLANFILE")]
        out: Option<PathBuf>,
        /// Exit 0 with no changes, 2 with changes, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Compare with reality, not only with the state file.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        refresh: bool,
    },
    /// Provision the blueprint's stages, or carry out a saved plan: `galley apply PLANFILE`.
    Apply {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// A plan saved with `galley plan --out`: applied exactly, refused if state moved since.
        #[arg(long, value_name = "PLANFILE")]
        plan: Option<PathBuf>,
        /// Don't ask for confirmation.
        #[arg(long)]
        auto_approve: bool,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Run the lifecycle: extract, validate, prepare, train, evaluate, gate, register, deploy, monitor.
    Run {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// Retrain even if data and code are unchanged.
        #[arg(long)]
        no_cache: bool,
        /// Run the steps in this process even where the platform's own engine would run them
        /// (SageMaker Pipelines): for debugging, or with a stage on `local`.
        #[arg(long)]
        local_steps: bool,
    },
    /// Apply, then run, then print the model's metrics, the endpoint and a real prediction.
    Up {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// As for `galley run`: the steps in this process, not on the platform's engine.
        #[arg(long)]
        local_steps: bool,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Watch the triggers (schedule, new data, drift) and run the lifecycle when they fire.
    Watch {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// How often to check the triggers.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        interval: std::time::Duration,
        /// Stop after this many runs (for scripts and tests).
        #[arg(long)]
        max_runs: Option<usize>,
        /// Stop after this long.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Destroy everything the state records, in reverse dependency order.
    Destroy {
        #[command(flatten)]
        bp: BlueprintArgs,
        #[arg(long)]
        auto_approve: bool,
        /// Destroy protected resources too.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Report what changed or vanished outside Galley (exit 2 when there is drift).
    Drift(BlueprintArgs),
    /// Like drift, and record the observed reality in state.
    Refresh(BlueprintArgs),
    /// What exists, per resource, with the serving and monitoring status.
    Status(BlueprintArgs),
    /// The outputs of every resource (endpoint URL and input signature, …).
    Outputs(BlueprintArgs),
    /// Adopt an existing resource into state.
    Import {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// The resource's address in the plan, e.g. `artifacts.store`.
        address: String,
        /// The platform's id for it (path, ARN, resource name).
        id: String,
    },
    /// Remove a stale state lock (after checking no other galley runs).
    ForceUnlock {
        /// The lock id printed by the command that found the lock.
        id: String,
        #[arg(long, value_name = "PATH", default_value = ".galley/state.json")]
        state: PathBuf,
    },
    /// Ask a deployed endpoint for predictions (JSON rows on stdin or --data).
    Predict {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// A JSON scoring body (any MLflow format); `-` reads stdin.
        #[arg(long, default_value = "-")]
        data: String,
    },
    /// Be a managed training or serving container (SageMaker's contract: `train` and `serve`,
    /// files under /opt/ml). The entrypoint of Galley's image; see the Dockerfile.
    #[command(subcommand)]
    Container(ContainerMode),
    /// Write what another serving stack needs to serve this endpoint (`kserve`: an
    /// InferenceService manifest and the models as ONNX).
    #[command(subcommand)]
    Export(ExportCommand),
    /// Move the whole stack to another platform (or another blueprint's stack), resumably, and
    /// prove the copy serves the same predictions.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// List the platforms this galley knows: what each offers, whether it is built in, and
    /// how to get a build that has it.
    Platforms,
    /// Run one of a platform's own processes (a local endpoint's server; started by `apply`,
    /// not for direct use).
    #[command(name = "__platform", hide = true)]
    Platform {
        #[arg(value_parser = parse_platform)]
        platform: PlatformId,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// The endpoint as a KServe InferenceService (Open Inference Protocol, ONNX on KServe's
    /// Triton runtime, the same versions and canary split), and beside it the models in Triton's
    /// repository layout to upload where `--storage-uri` points.
    Kserve {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// Where the cluster will read the models, e.g. `s3://models/wine` or `pvc://models/wine`.
        #[arg(long, value_name = "URI")]
        storage_uri: String,
        /// Where to write the model files [default: .galley/export/kserve beside the blueprint].
        #[arg(long, value_name = "DIR")]
        models_dir: Option<PathBuf>,
        /// Write the manifest here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// What a Prometheus server needs to watch the endpoint: `prometheus.yml` (a scrape job over
    /// file-based discovery), the endpoint's targets file, recording and alerting rules (drift,
    /// errors, latency) and their `promtool test rules` cases.
    Prometheus {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// Where to write them [default: .galley/export/prometheus beside the blueprint].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// A Grafana dashboard for the endpoint and its drift monitor (request rate, error ratio and
    /// p99 latency by variant with the alert thresholds, versions served, the drift verdict and
    /// per-feature statistics), reading any Prometheus that scrapes the endpoint.
    Grafana {
        #[command(flatten)]
        bp: BlueprintArgs,
        /// Where to write it [default: .galley/export/grafana/ENDPOINT.json beside the blueprint].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// What moves (counts and bytes), what is already there, and what the target cannot
    /// express, with the target's resource plan; changes nothing.
    Plan(MigrateArgs),
    /// Provision the target with the ordinary engine, copy the stack into it (resuming an
    /// interrupted migration), then print the proof. The source is only read.
    Apply {
        #[command(flatten)]
        m: MigrateArgs,
        /// Don't ask for confirmation.
        #[arg(long)]
        auto_approve: bool,
        /// Objects copied at once.
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
    },
    /// The proof, again, any time: exit 0 when the target is a copy, 1 when it differs.
    Verify(MigrateArgs),
}

#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    /// The source: the blueprint, as its state records it.
    #[command(flatten)]
    pub bp: BlueprintArgs,
    /// The target: a platform (the same blueprint with every stage on it) or another blueprint
    /// file (a target that differs in more than its platform).
    #[arg(long, value_name = "PLATFORM|FILE")]
    pub to: String,
    /// The target's state file [default: for a platform, `.galley/migrate/PLATFORM/state.json`
    /// next to the source's blueprint; for a blueprint file, where `galley apply FILE` keeps it].
    #[arg(long, value_name = "PATH")]
    pub target_state: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ContainerMode {
    /// Train from <root>/input (hyperparameters and the `train` channel) into <root>/model.
    Train {
        #[arg(long, default_value = "/opt/ml", value_name = "DIR")]
        root: PathBuf,
    },
    /// Serve <root>/model/model.json: GET /ping, POST /invocations (and /metrics, /version).
    Serve {
        #[arg(long, default_value = "/opt/ml", value_name = "DIR")]
        root: PathBuf,
        /// SageMaker sets SAGEMAKER_BIND_TO_PORT when it wants another port than 8080.
        #[arg(long, env = "SAGEMAKER_BIND_TO_PORT", default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
    },
    /// One lifecycle step of a run the platform's engine started (a SageMaker Pipelines step):
    /// reads the run bundle, the upstream steps' outputs from the artifact store, and writes
    /// its own there. The pipeline definition `galley apply` writes passes every argument.
    Step {
        /// The step: extract, validate_data, prepare, train, evaluate, validate_model,
        /// register, deploy, monitor.
        name: String,
        /// The platform's id of the run (a pipeline execution ARN).
        #[arg(long)]
        run: String,
        /// Where the run bundle is (`s3://bucket/galley/pipelines/NAME/bundles/SHA.json`).
        #[arg(long)]
        bundle: String,
        /// The experiment run the steps log to; empty for none.
        #[arg(long, default_value = "")]
        experiment_run: String,
        /// The first step that must not reuse a cached output; empty for none.
        #[arg(long, default_value = "")]
        force_from: String,
        /// What started the run on the platform (`schedule`, `new_data`, `drift`); empty for a
        /// run `galley run` started. Recorded on the experiment run the platform's run gets.
        #[arg(long, default_value = "")]
        trigger: String,
    },
    /// The monitor's drift check over the traffic the endpoint captured since its baseline,
    /// publishing the drift gauges where the platform alarms on them (a scheduled job's body
    /// where the platform watches drift itself). Exits 0 whatever the verdict.
    CheckDrift {
        /// The pipeline's current run bundle (`s3://bucket/galley/pipelines/NAME/bundle.json`).
        #[arg(long)]
        bundle: String,
    },
}

impl Command {
    /// The blueprint options of commands that read a blueprint.
    pub fn blueprint_args_mut(&mut self) -> Option<&mut BlueprintArgs> {
        match self {
            Command::Validate(bp) | Command::Init(bp) | Command::Drift(bp) | Command::Refresh(bp) | Command::Status(bp) | Command::Outputs(bp) => Some(bp),
            Command::Plan { bp, .. }
            | Command::Apply { bp, .. }
            | Command::Run { bp, .. }
            | Command::Up { bp, .. }
            | Command::Watch { bp, .. }
            | Command::Destroy { bp, .. }
            | Command::Import { bp, .. }
            | Command::Predict { bp, .. } => Some(bp),
            Command::Export(ExportCommand::Kserve { bp, .. } | ExportCommand::Prometheus { bp, .. } | ExportCommand::Grafana { bp, .. }) => Some(bp),
            Command::Migrate(MigrateCommand::Plan(m) | MigrateCommand::Verify(m) | MigrateCommand::Apply { m, .. }) => Some(&mut m.bp),
            Command::Schema
            | Command::Completions { .. }
            | Command::ForceUnlock { .. }
            | Command::Platforms
            | Command::Platform { .. }
            | Command::Container(_) => None,
        }
    }

    pub fn apply_args_mut(&mut self) -> Option<&mut ApplyArgs> {
        match self {
            Command::Apply { apply, .. } | Command::Up { apply, .. } | Command::Destroy { apply, .. } => Some(apply),
            _ => None,
        }
    }

    /// Layers `galley.toml` and `GALLEY_*` settings under what the command line said.
    pub fn apply_settings(&mut self, settings: &crate::settings::Settings) {
        if let Some(bp) = self.blueprint_args_mut() {
            bp.platform = bp.platform.or(settings.platform);
            bp.env = bp.env.take().or_else(|| settings.env.clone());
            bp.state = bp.state.take().or_else(|| settings.state_path.clone());
        }
        if let Some(a) = self.apply_args_mut() {
            a.parallelism = a.parallelism.or(Some(settings.parallelism));
        }
    }
}

fn parse_platform(s: &str) -> Result<PlatformId, String> {
    s.parse()
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    if k.is_empty() {
        return Err(format!("`{s}` has an empty variable name"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `90s`, `5m`, `1h`, `250ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 30s, 5m, 1h"))?;
    let d = match unit {
        "" | "s" => std::time::Duration::from_secs(n),
        "ms" => std::time::Duration::from_millis(n),
        "m" => std::time::Duration::from_secs(n * 60),
        "h" => std::time::Duration::from_secs(n * 3600),
        _ => return Err(format!("`{s}`: unknown unit `{unit}`; use ms, s, m or h")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
