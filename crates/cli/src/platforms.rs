//! The platforms this binary knows, and the ones built in to run. Registering a platform is
//! one line here (plus its cargo feature): its rules always (they need no SDK, so validate
//! checks every known platform), its provider when the feature is on.

use galley_blueprint::PlatformRegistry;
use galley_engine::{ProviderContext, Providers};

/// `register!(registry, providers, ctx, crate, "feature")`: the platform's rules, and its provider
/// when this galley is built with `feature`.
macro_rules! register {
    ($registry:ident, $providers:ident, $ctx:ident, $krate:ident, $feature:literal) => {
        $registry = $registry.with($krate::rules());
        #[cfg(feature = $feature)]
        {
            $providers.push($krate::provider($ctx.clone()));
        }
    };
}

/// Every platform Galley knows, built in or not.
pub fn registry() -> PlatformRegistry {
    providers(&ProviderContext { project_dir: ".".into(), work_dir: ".galley".into(), galley_exe: "galley".into() }).registry().clone()
}

#[allow(unused_mut)]
pub fn providers(ctx: &ProviderContext) -> Providers {
    let mut registry = PlatformRegistry::default();
    let mut providers: Vec<std::sync::Arc<dyn galley_engine::Provider>> = Vec::new();
    register!(registry, providers, ctx, galley_local, "local");
    register!(registry, providers, ctx, galley_aws, "aws");
    register!(registry, providers, ctx, galley_onprem, "onprem");
    #[cfg(feature = "testing")]
    register!(registry, providers, ctx, galley_toy, "testing");
    providers.into_iter().fold(Providers::new(registry), |p, provider| p.with(provider))
}
