//! Capability conformance. A platform declares its features once, in its rules
//! (`PlatformRules::capabilities`); every stage object it opens must declare exactly that, since
//! the validator trusts the rules and the suites skip by the stage's declaration. Whether the
//! declaration is *true* is the proof check ([`crate::Report::assert_capabilities_proven`]).

use galley_core::Capabilities;

use crate::runner::Report;

/// Compares what a stage object declares with its platform's declaration.
pub fn check_capabilities(stage: &str, declared: &Capabilities, platform: &Capabilities) -> Report {
    let mut report = Report::default();
    let name = format!("capabilities::{}::{stage}_declares_the_platforms_features", platform.platform);
    match mismatch(declared, platform) {
        None => report.passed.push(name),
        Some(msg) => report.failed.push((name, msg)),
    }
    report
}

fn mismatch(declared: &Capabilities, platform: &Capabilities) -> Option<String> {
    if declared.platform != platform.platform {
        return Some(format!("declares platform `{}` but belongs to `{}`", declared.platform, platform.platform));
    }
    let extra: Vec<String> = declared.features().iter().filter(|f| !platform.supports(**f)).map(|f| format!("{f:?}")).collect();
    let missing: Vec<String> = platform.features().iter().filter(|f| !declared.supports(**f)).map(|f| format!("{f:?}")).collect();
    let mut parts = Vec::new();
    if !extra.is_empty() {
        parts.push(format!("claims {} that the platform does not declare", extra.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("omits {} that the platform declares", missing.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::PlatformId;
    use galley_core::capability::Feature;

    #[test]
    fn a_stage_that_claims_more_or_less_than_its_platform_fails() {
        let p = PlatformId::from_static("demo");
        let platform = Capabilities::new(p, &[Feature::ApprovalStatus]);
        assert!(check_capabilities("registry", &platform, &platform).is_ok());
        let r = check_capabilities("registry", &Capabilities::new(p, &[Feature::ModelAliases]), &platform);
        let (name, msg) = &r.failed[0];
        assert_eq!(name, "capabilities::demo::registry_declares_the_platforms_features");
        assert!(msg.contains("claims ModelAliases") && msg.contains("omits ApprovalStatus"), "{msg}");
        let other = Capabilities::new(PlatformId::from_static("other"), &[Feature::ApprovalStatus]);
        assert!(check_capabilities("registry", &other, &platform).failed[0].1.contains("belongs to `demo`"));
    }
}
