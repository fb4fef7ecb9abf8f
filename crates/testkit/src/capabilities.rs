//! Capability conformance: a provider must declare exactly what `Capabilities::of` says for its
//! platform. The validator trusts that table before any cloud call and the suites skip by it,
//! so a provider that claims more (or less) than it has would make both lie.

use galley_core::stages::Described;
use galley_core::{Capabilities, PlatformKind};

use crate::runner::Report;

/// Compares a provider's declared capabilities with the declaration for `platform`.
pub fn check_capabilities(declared: &Capabilities, platform: PlatformKind) -> Report {
    let mut report = Report::default();
    let name = |case: &str| format!("capabilities::{platform}::{case}");
    match platform_mismatch(declared, platform) {
        None => report.passed.push(name("names_its_platform")),
        Some(msg) => report.failed.push((name("names_its_platform"), msg)),
    }
    match feature_mismatch(declared, platform) {
        None => report.passed.push(name("matches_the_declaration")),
        Some(msg) => report.failed.push((name("matches_the_declaration"), msg)),
    }
    report
}

/// The same check for one stage object, as a case result.
pub fn check_described(stage: &dyn Described) -> anyhow::Result<()> {
    let declared = stage.capabilities();
    let problems: Vec<String> = [
        platform_mismatch(&declared, stage.platform()),
        feature_mismatch(&declared, stage.platform()),
    ]
    .into_iter()
    .flatten()
    .collect();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

fn platform_mismatch(declared: &Capabilities, platform: PlatformKind) -> Option<String> {
    (declared.platform != platform).then(|| {
        format!("declares platform `{}` but is the `{platform}` provider", declared.platform)
    })
}

fn feature_mismatch(declared: &Capabilities, platform: PlatformKind) -> Option<String> {
    let want = Capabilities::of(platform);
    let extra: Vec<String> = declared
        .features()
        .iter()
        .filter(|f| !want.supports(**f))
        .map(|f| format!("{f:?}"))
        .collect();
    let missing: Vec<String> = want
        .features()
        .iter()
        .filter(|f| !declared.supports(**f))
        .map(|f| format!("{f:?}"))
        .collect();
    if extra.is_empty() && missing.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !extra.is_empty() {
        parts.push(format!("claims {} that Capabilities::of({platform}) does not", extra.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("omits {} that Capabilities::of({platform}) declares", missing.join(", ")));
    }
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_platforms_own_declaration_conforms() {
        for p in PlatformKind::ALL {
            let r = check_capabilities(&Capabilities::of(p), p);
            assert!(r.is_ok(), "{}", r.summary());
            assert_eq!(r.passed.len(), 2);
        }
    }

    #[test]
    fn a_foreign_declaration_is_reported_with_the_difference() {
        let r = check_capabilities(&Capabilities::of(PlatformKind::Aws), PlatformKind::Gcp);
        assert_eq!(r.failed.len(), 2, "{}", r.summary());
        let (name, msg) = &r.failed[1];
        assert_eq!(name, "capabilities::gcp::matches_the_declaration");
        // AWS has approval status, GCP has aliases.
        assert!(msg.contains("claims") && msg.contains("ApprovalStatus"), "{msg}");
        assert!(msg.contains("omits") && msg.contains("ModelAliases"), "{msg}");
    }
}
