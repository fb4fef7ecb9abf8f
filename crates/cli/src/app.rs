//! What every command needs: the loaded blueprint, the providers built into this binary, the
//! engine over the state, the opened stages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use galley_blueprint::{LoadOptions, Loaded};
use galley_core::StageSet;
use galley_engine::{Engine, EngineOptions, LocalBackend, ProviderContext, Providers};

use crate::cli::BlueprintArgs;
use crate::error::CliError;

pub struct App {
    pub loaded: Loaded,
    pub ctx: ProviderContext,
    pub providers: Providers,
    /// Where state lives, for messages: a path or `s3://bucket/key`.
    pub state_path: PathBuf,
    state: StateLocation,
}

/// The blueprint's `backend`, with `--state` taking precedence.
enum StateLocation {
    File(PathBuf),
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    S3 { bucket: String, key: String, region: Option<String> },
}

impl App {
    pub fn load(args: &BlueprintArgs) -> Result<App, CliError> {
        let loaded = load_blueprint(args)?;
        let project_dir = project_dir(&args.file);
        let ctx = ProviderContext { work_dir: project_dir.join(".galley"), project_dir };
        use galley_blueprint::Backend;
        let state = match (&args.state, &loaded.blueprint.backend) {
            (Some(p), _) => StateLocation::File(p.clone()),
            (None, Some(Backend::Local { path: Some(p) })) => StateLocation::File(ctx.project_dir.join(p)),
            (None, Some(Backend::Local { path: None }) | None) => StateLocation::File(ctx.work_dir.join("state.json")),
            (None, Some(Backend::S3 { bucket, key, region })) if cfg!(feature = "aws") => {
                StateLocation::S3 { bucket: bucket.clone(), key: key.clone(), region: region.clone() }
            }
            (None, Some(other)) => {
                return Err(CliError::message(format!(
                    "the `{}` state backend arrives with its platform and is not built into this galley; \
                     rebuild with its platform's feature, or pass `--state PATH` to keep state in a local file",
                    backend_name(other)
                )));
            }
        };
        let state_path = match &state {
            StateLocation::File(p) => p.clone(),
            StateLocation::S3 { bucket, key, .. } => PathBuf::from(format!("s3://{bucket}/{key}")),
        };
        Ok(App { providers: crate::platforms::providers(&ctx), loaded, ctx, state_path, state })
    }

    pub fn engine(&self, opts: EngineOptions) -> Result<Engine, CliError> {
        let backend: Box<dyn galley_engine::StateBackend> = match &self.state {
            StateLocation::File(path) => Box::new(LocalBackend::new(path.clone())),
            #[cfg(feature = "aws")]
            StateLocation::S3 { bucket, key, region } => Box::new(galley_aws::S3StateBackend::for_blueprint(
                &self.loaded.blueprint,
                bucket,
                key,
                region.as_deref(),
            )?),
            #[cfg(not(feature = "aws"))]
            StateLocation::S3 { .. } => unreachable!("refused in App::load without the aws feature"),
        };
        Ok(Engine::for_blueprint(&self.loaded.blueprint, &self.providers, backend, opts)?)
    }

    /// Refuses to run against a stack that is not (fully) provisioned: opening the stages would
    /// otherwise create stores that no state records.
    pub fn require_applied(&self, engine: &Engine) -> Result<(), CliError> {
        let state = engine.state()?;
        let missing: Vec<&str> =
            engine.graph().ordered().map(|s| s.address.as_str()).filter(|a| !state.resources.contains_key(*a)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(CliError::message(format!(
            "{} not provisioned yet ({}); run `galley apply {}` first",
            if missing.len() == 1 { "this resource is" } else { "these resources are" },
            missing.join(", "),
            self.loaded.path.display()
        )))
    }

    /// The runtime stage objects, each from the platform its stage runs on.
    pub async fn stages(&self, engine: &Engine) -> Result<StageSet, CliError> {
        let bp = &self.loaded.blueprint;
        let outputs = engine.outputs()?;
        let mut opened: std::collections::BTreeMap<galley_core::PlatformKind, StageSet> = Default::default();
        for platform in galley_core::Stage::ALL.iter().map(|s| bp.stage_platform(*s)) {
            if !opened.contains_key(&platform) {
                let set = self.providers.get(platform)?.open(bp, &outputs).await?;
                opened.insert(platform, set);
            }
        }
        let pick = |stage| opened[&bp.stage_platform(stage)].clone();
        use galley_core::Stage as S;
        Ok(StageSet {
            artifacts: pick(S::Artifacts).artifacts,
            features: pick(S::Features).features,
            experiments: pick(S::Experiments).experiments,
            orchestrator: pick(S::Pipeline).orchestrator,
            registry: pick(S::Registry).registry,
            serving: pick(S::Serving).serving,
            monitor: pick(S::Monitoring).monitor,
        })
    }

    pub fn lifecycle(&self, stages: StageSet) -> Result<Arc<galley_lifecycle::Lifecycle>, CliError> {
        Ok(Arc::new(galley_lifecycle::Lifecycle::new(
            Arc::new(self.loaded.blueprint.clone()),
            stages,
            self.ctx.project_dir.clone(),
            &self.loaded.hash,
        )?))
    }
}

/// The blueprint as the command line asks for it (`--platform`, `--env`, `--var`), validated.
pub fn load_blueprint(args: &BlueprintArgs) -> Result<Loaded, CliError> {
    let opts = LoadOptions { platform: args.platform, env: args.env.clone(), vars: args.vars.iter().cloned().collect() };
    galley_blueprint::load_file(&args.file, &opts).map_err(CliError::Diagnostics)
}

fn backend_name(b: &galley_blueprint::Backend) -> &'static str {
    match b {
        galley_blueprint::Backend::Local { .. } => "local",
        galley_blueprint::Backend::S3 { .. } => "s3",
        galley_blueprint::Backend::Gcs { .. } => "gcs",
        galley_blueprint::Backend::Azblob { .. } => "azblob",
    }
}

/// Relative paths in a blueprint resolve from its directory.
fn project_dir(file: &Path) -> PathBuf {
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
