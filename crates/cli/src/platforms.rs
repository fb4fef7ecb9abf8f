//! The providers compiled into this binary (each platform is a cargo feature).

use galley_engine::{ProviderContext, Providers};

#[allow(unused_variables, unused_mut)]
pub fn providers(ctx: &ProviderContext) -> Providers {
    let mut p = Providers::default();
    #[cfg(feature = "local")]
    {
        // Endpoint servers are this same binary, re-run with the hidden `__endpoint` command.
        let exe = std::env::current_exe().map(|e| e.into_os_string()).unwrap_or_else(|_| "galley".into());
        let cmd = vec![exe, "__endpoint".into()];
        p = p.with(std::sync::Arc::new(galley_local::provider::LocalProvider::new(ctx.clone(), cmd)));
    }
    #[cfg(feature = "aws")]
    {
        // Credentials from the blueprint's `platforms.aws.profile` or the standard chain.
        p = p.with(std::sync::Arc::new(galley_aws::AwsProvider::new(ctx.clone())));
    }
    p
}
