//! Plan, apply, destroy and drift over a locked state; the lifecycle runner.

pub mod provider;

pub use provider::{Provider, ProviderContext, Providers};
