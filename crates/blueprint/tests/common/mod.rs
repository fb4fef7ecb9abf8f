//! The platforms these tests validate against: the real rules of the platforms Galley has, as
//! the CLI registers them (`crates/cli/src/platforms.rs`).

use galley_blueprint::PlatformRegistry;

pub fn registry() -> PlatformRegistry {
    PlatformRegistry::default().with(galley_local::rules()).with(galley_aws::rules()).with(galley_onprem::rules())
}
