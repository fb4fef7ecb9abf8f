//! What every command needs: the loaded blueprint, the providers built into this binary, the
//! engine over the state, the opened stages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use galley_blueprint::{Backend, LoadOptions, Loaded};
use galley_core::StageSet;
use galley_engine::{Engine, EngineOptions, LocalBackend, ProviderContext, Providers};

use crate::cli::BlueprintArgs;
use crate::error::CliError;

pub struct App {
    pub loaded: Loaded,
    pub ctx: ProviderContext,
    pub providers: Providers,
    state: StateLocation,
}

/// The blueprint's `backend`, with `--state` taking precedence.
enum StateLocation {
    File(PathBuf),
    /// A backend a platform offers (`type: s3`), opened by that platform's provider.
    Platform(galley_core::PlatformId, Backend),
}

impl App {
    pub fn load(args: &BlueprintArgs) -> Result<App, CliError> {
        let project_dir = project_dir(&args.file);
        let galley_exe = std::env::current_exe().unwrap_or_else(|_| "galley".into());
        let ctx = ProviderContext { work_dir: project_dir.join(".galley"), project_dir, galley_exe };
        let providers = crate::platforms::providers(&ctx);
        let loaded = load_blueprint(args, providers.registry())?;
        let state = match (&args.state, &loaded.blueprint.backend) {
            (Some(p), _) => StateLocation::File(p.clone()),
            (None, None) => StateLocation::File(ctx.work_dir.join("state.json")),
            (None, Some(b)) if b.kind == Backend::LOCAL => match b.str("path") {
                Some(p) => StateLocation::File(ctx.project_dir.join(p)),
                None => StateLocation::File(ctx.work_dir.join("state.json")),
            },
            (None, Some(b)) => {
                // Validation knows every backend type; a platform offering it must be built in
                // (the blueprint's own platform first).
                let mut offering = providers.registry().backend_platforms(&b.kind);
                offering.sort_by_key(|p| *p != loaded.blueprint.platform);
                let Some(first) = offering.first().copied() else {
                    return Err(CliError::message(format!("state backend `{}` is offered by no platform this galley knows", b.kind)));
                };
                let platform = offering.iter().copied().find(|p| providers.get(*p).is_ok()).ok_or_else(|| {
                    let e = providers.get(first).err().map(|e| e.message().to_owned()).unwrap_or_default();
                    let names: Vec<String> = offering.iter().map(|p| format!("`{p}`")).collect();
                    CliError::message(format!("the `{}` state backend comes with platform {}: {e}", b.kind, names.join(" or ")))
                })?;
                StateLocation::Platform(platform, b.clone())
            }
        };
        Ok(App { providers, loaded, ctx, state })
    }

    /// The state file, when the state is a file (not a platform's backend).
    pub fn state_file(&self) -> Option<&Path> {
        match &self.state {
            StateLocation::File(p) => Some(p),
            StateLocation::Platform(..) => None,
        }
    }

    pub fn engine(&self, opts: EngineOptions) -> Result<Engine, CliError> {
        let backend: Box<dyn galley_engine::StateBackend> = match &self.state {
            StateLocation::File(path) => Box::new(LocalBackend::new(path.clone())),
            StateLocation::Platform(platform, b) => {
                let opened = self.providers.get(*platform)?.state_backend(b, &self.loaded.blueprint);
                opened.ok_or_else(|| CliError::message(format!("platform `{platform}` does not open state backend `{}`", b.kind)))??
            }
        };
        Ok(Engine::for_blueprint(&self.loaded.blueprint, &self.providers, backend, opts)?)
    }

    /// Refuses to run against a stack that is not (fully) provisioned: opening the stages would
    /// otherwise create stores that no state records.
    pub fn require_applied(&self, engine: &Engine) -> Result<(), CliError> {
        let state = engine.state()?;
        let missing = engine.not_in_state(&state);
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

    /// The runtime stage objects, each from the platform its stage runs on, behind the retry
    /// layer every platform shares (`galley_core::layers`).
    pub async fn stages(&self, engine: &Engine) -> Result<StageSet, CliError> {
        self.stages_over(&engine.outputs()?).await
    }

    /// [`App::stages`] over the resource outputs of a state already read.
    pub async fn stages_over(&self, outputs: &BTreeMap<String, BTreeMap<String, serde_json::Value>>) -> Result<StageSet, CliError> {
        open_stages(&self.providers, &self.loaded.blueprint, outputs).await
    }

    /// The lifecycle with its steps in this process.
    pub fn lifecycle(&self, stages: StageSet) -> Result<Arc<galley_lifecycle::Lifecycle>, CliError> {
        Ok(Arc::new(self.new_lifecycle(stages)?))
    }

    /// The lifecycle `galley run` drives: its steps on the platform's own engine where the
    /// pipeline's platform runs them there (SageMaker Pipelines), unless `local_steps`.
    pub fn run_lifecycle(&self, stages: StageSet, local_steps: bool) -> Result<Arc<galley_lifecycle::Lifecycle>, CliError> {
        let lifecycle = self.new_lifecycle(stages)?;
        if local_steps || self.remote_steps().is_none() {
            return Ok(Arc::new(lifecycle));
        }
        let bp = &self.loaded.blueprint;
        let mut settings = galley_lifecycle::remote::omitted_settings(self.providers.registry());
        let mut platforms: Vec<galley_core::PlatformId> = bp.declared_stages().into_iter().map(|s| bp.stage_platform(s)).collect();
        platforms.sort();
        platforms.dedup();
        for platform in platforms {
            if let Some(resolved) = self.providers.get(platform)?.bundle_settings(bp)? {
                settings.resolved.push((platform.as_str().to_owned(), resolved));
            }
        }
        Ok(Arc::new(lifecycle.with_remote_steps(settings)))
    }

    /// Where the pipeline's platform runs the steps, if not in Galley's process: what the plan
    /// shows and what `galley run` does.
    pub fn remote_steps(&self) -> Option<String> {
        let bp = &self.loaded.blueprint;
        self.providers.registry().get(bp.stage_platform(galley_core::Stage::Pipeline))?.remote_steps(bp)
    }

    fn new_lifecycle(&self, stages: StageSet) -> Result<galley_lifecycle::Lifecycle, CliError> {
        Ok(galley_lifecycle::Lifecycle::new(Arc::new(self.loaded.blueprint.clone()), stages, self.ctx.project_dir.clone(), &self.loaded.hash)?)
    }
}

/// The runtime stage objects of `bp`, each from the platform its stage runs on, behind the
/// retry layer every platform shares (`galley_core::layers`).
pub async fn open_stages(
    providers: &Providers,
    bp: &galley_blueprint::Blueprint,
    outputs: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
) -> Result<StageSet, CliError> {
    let mut opened: BTreeMap<galley_core::PlatformId, StageSet> = Default::default();
    for platform in galley_core::Stage::ALL.iter().map(|s| bp.stage_platform(*s)) {
        if let std::collections::btree_map::Entry::Vacant(slot) = opened.entry(platform) {
            slot.insert(providers.get(platform)?.open(bp, outputs).await?);
        }
    }
    let pick = |stage| opened[&bp.stage_platform(stage)].clone();
    use galley_core::Stage as S;
    Ok(galley_core::layers::RetryLayer::default().layer(StageSet {
        artifacts: pick(S::Artifacts).artifacts,
        features: pick(S::Features).features,
        experiments: pick(S::Experiments).experiments,
        orchestrator: pick(S::Pipeline).orchestrator,
        registry: pick(S::Registry).registry,
        serving: pick(S::Serving).serving,
        monitor: pick(S::Monitoring).monitor,
    }))
}

/// The blueprint as the command line asks for it (`--platform`, `--env`, `--var`), validated
/// against every platform this galley knows.
pub fn load_blueprint(args: &BlueprintArgs, registry: &galley_blueprint::PlatformRegistry) -> Result<Loaded, CliError> {
    let opts = LoadOptions { platform: args.platform, env: args.env.clone(), vars: args.vars.iter().cloned().collect() };
    galley_blueprint::load_file(&args.file, &opts, registry).map_err(CliError::Diagnostics)
}

/// Relative paths in a blueprint resolve from its directory.
fn project_dir(file: &Path) -> PathBuf {
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// A blueprint whose endpoint is deployed: what `predict` and the exports read.
pub struct Deployed {
    pub app: App,
    pub stages: StageSet,
    /// The endpoint's name (`stages.serving.endpoint`).
    pub endpoint: String,
    pub info: galley_core::stages::EndpointInfo,
}

impl Deployed {
    /// Loads the blueprint, checks it is applied, opens its stages and describes its endpoint.
    /// `without_serving` is the error when the blueprint has no serving stage.
    pub async fn open(args: &BlueprintArgs, without_serving: &str) -> Result<Deployed, CliError> {
        let app = App::load(args)?;
        let endpoint = app.loaded.blueprint.stages.serving.as_ref().map(|sv| sv.endpoint.clone()).ok_or_else(|| CliError::message(without_serving))?;
        let engine = app.engine(EngineOptions::default())?;
        app.require_applied(&engine)?;
        let stages = app.stages(&engine).await?;
        let info = stages
            .serving
            .describe(&endpoint)
            .await?
            .ok_or_else(|| CliError::message(format!("endpoint `{endpoint}` is not deployed yet; `galley run` deploys it")))?;
        Ok(Deployed { app, stages, endpoint, info })
    }
}
