//! Runs a suite's cases one after another, skipping the ones whose capabilities the platform
//! lacks, and turns every error, failed check or panic into a named entry of a [`Report`].
//!
//! Cases run sequentially on purpose: suites are meant to run against long-lived emulators and
//! real accounts too, where a burst of parallel calls would measure throttling, not behaviour.

use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};

use futures::FutureExt;
use futures::future::BoxFuture;
use galley_core::capability::Feature;
use galley_core::{Capabilities, PlatformId};

/// What one case returns: `Err` carries a message naming what did not hold.
pub type TestResult = anyhow::Result<()>;

/// Returned (as the error) by a case that finds at run time that it cannot apply, e.g. an
/// orchestrator that runs no in-process steps. The runner reports it as skipped.
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skip {}

/// A case may wait for a cloud (an endpoint coming into service twice, a pipeline finishing),
/// but it must not hang a CI run: past this it is reported as failed.
const CASE_LIMIT: Duration = Duration::from_secs(1800);

/// The outcome of one suite run, by case name (`suite::case`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub passed: Vec<String>,
    /// (case, why it was skipped)
    pub skipped: Vec<(String, String)>,
    /// (case, what went wrong)
    pub failed: Vec<(String, String)>,
    /// The features each platform's passed cases needed: what its declaration has been shown
    /// to deliver on its test substrate. Skipped cases prove nothing.
    pub proven: BTreeMap<PlatformId, BTreeSet<Feature>>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Adds another suite's results to this one.
    pub fn merge(&mut self, other: Report) {
        self.passed.extend(other.passed);
        self.skipped.extend(other.skipped);
        self.failed.extend(other.failed);
        for (platform, features) in other.proven {
            self.proven.entry(platform).or_default().extend(features);
        }
    }

    /// The features `declared` claims that no passed case of its platform needed.
    pub fn unproven(&self, declared: &Capabilities) -> Vec<Feature> {
        let proven = self.proven.get(&declared.platform);
        declared.features().iter().copied().filter(|f| !proven.is_some_and(|p| p.contains(f))).collect()
    }

    /// Panics unless every feature `declared` claims was needed by a case that ran and passed
    /// on the platform: a platform declares only what it has shown.
    pub fn assert_capabilities_proven(&self, declared: &Capabilities) {
        let missing = self.unproven(declared);
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(|f| format!("{f:?} ({})", f.describe())).collect();
            panic!(
                "platform `{}` declares {} that no behaviour case proved on its test substrate: {}\n\
                 withdraw them from its capabilities, or add and pass a case that needs them\n{}",
                declared.platform,
                if missing.len() == 1 { "a feature" } else { "features" },
                list.join(", "),
                self.summary()
            );
        }
    }

    /// A human summary: counts, every skipped case with its reason, every failure.
    pub fn summary(&self) -> String {
        // Deliberately not the "N passed, N failed" shape: CI reads that shape as a test
        // runner's closing line.
        let mut s = format!(
            "galley-testkit: passed {}, skipped {}, failed {}\n",
            self.passed.len(),
            self.skipped.len(),
            self.failed.len()
        );
        for (name, why) in &self.skipped {
            let _ = writeln!(s, "  SKIPPED {name}: {why}");
        }
        for (name, why) in &self.failed {
            let _ = writeln!(s, "  FAILED  {name}: {why}");
        }
        for (platform, features) in &self.proven {
            let _ = writeln!(s, "  proven on {platform}: {features:?}");
        }
        s
    }

    /// Prints the summary and panics, listing every failure, when any case failed.
    pub fn assert_ok(&self) {
        let summary = self.summary();
        println!("{summary}");
        if !self.is_ok() {
            panic!("{} behaviour test(s) failed\n{summary}", self.failed.len());
        }
    }
}

/// One named behaviour test over a context `T` (the stage object, or it plus a fixture).
pub struct Case<T> {
    pub name: &'static str,
    /// Capabilities the case needs; it is skipped when the platform lacks any.
    pub needs: &'static [Feature],
    /// Capabilities the case needs to be absent (it checks the refusal); skipped when present.
    pub absent: &'static [Feature],
    pub run: fn(T) -> BoxFuture<'static, TestResult>,
}

/// Declares a case from an `async fn(T) -> TestResult` in scope.
#[macro_export]
#[doc(hidden)]
macro_rules! case {
    ($f:ident) => {
        $crate::case!($f, needs = [], absent = [])
    };
    ($f:ident, needs = [$($n:expr),* $(,)?]) => {
        $crate::case!($f, needs = [$($n),*], absent = [])
    };
    ($f:ident, needs = [$($n:expr),* $(,)?], absent = [$($a:expr),* $(,)?]) => {
        $crate::runner::Case {
            name: stringify!($f),
            needs: &[$($n),*],
            absent: &[$($a),*],
            run: |t| ::std::boxed::Box::pin($f(t)),
        }
    };
}

/// Why `case` cannot run on a platform with `caps`, if it cannot.
fn skip_reason<T>(case: &Case<T>, caps: &Capabilities) -> Option<String> {
    if let Some(f) = case.needs.iter().find(|f| !caps.supports(**f)) {
        return Some(format!(
            "platform `{}` lacks capability {f:?} ({})",
            caps.platform,
            f.describe()
        ));
    }
    if let Some(f) = case.absent.iter().find(|f| caps.supports(**f)) {
        return Some(format!(
            "platform `{}` supports {f:?} ({}); this case checks its refusal",
            caps.platform,
            f.describe()
        ));
    }
    None
}

/// A case the platform's test substrate cannot run (an emulator's missing operation), with
/// why. It is reported as skipped, so it proves nothing; where the platform's requests can be
/// checked another way (against the cloud's API model), the reason says where.
#[derive(Debug, Clone)]
pub struct KnownGap {
    /// `suite::case`, e.g. `features::delete_group_removes_it`.
    pub case: String,
    pub why: String,
}

impl KnownGap {
    pub fn new(case: &str, why: &str) -> KnownGap {
        KnownGap { case: case.to_owned(), why: why.to_owned() }
    }
}

/// [`run_cases`], with the cases in `gaps` reported as skipped instead of run.
pub async fn run_suite<T: Clone + Send + 'static>(
    suite: &str,
    ctx: T,
    caps: &Capabilities,
    cases: Vec<Case<T>>,
    gaps: &[KnownGap],
) -> Report {
    let gap = |c: &Case<T>| gaps.iter().find(|g| g.case == format!("{suite}::{}", c.name));
    let (skip, keep): (Vec<_>, Vec<_>) = cases.into_iter().partition(|c| gap(c).is_some());
    let mut report = run_cases(suite, ctx, caps, keep).await;
    for c in skip {
        report.skipped.push((format!("{suite}::{}", c.name), gap(&c).map(|g| g.why.clone()).unwrap_or_default()));
    }
    report
}

/// Runs `cases` of `suite` against `ctx`, one at a time.
pub async fn run_cases<T: Clone + Send + 'static>(
    suite: &str,
    ctx: T,
    caps: &Capabilities,
    cases: Vec<Case<T>>,
) -> Report {
    let mut report = Report::default();
    for case in cases {
        let name = format!("{suite}::{}", case.name);
        if let Some(why) = skip_reason(&case, caps) {
            report.skipped.push((name, why));
            continue;
        }
        let fut = AssertUnwindSafe((case.run)(ctx.clone())).catch_unwind();
        match tokio::time::timeout(CASE_LIMIT, fut).await {
            Ok(Ok(Ok(()))) => {
                report.passed.push(name);
                report.proven.entry(caps.platform).or_default().extend(case.needs.iter().copied());
            }
            Ok(Ok(Err(e))) => match e.downcast_ref::<Skip>() {
                Some(Skip(why)) => report.skipped.push((name, why.clone())),
                None => report.failed.push((name, format!("{e:#}"))),
            },
            Ok(Err(panic)) => report.failed.push((name, format!("panicked: {}", panic_message(&*panic)))),
            Err(_) => report
                .failed
                .push((name, format!("did not finish within {} s", CASE_LIMIT.as_secs()))),
        }
    }
    report
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::PlatformId;

    async fn passes(_: u8) -> TestResult {
        Ok(())
    }
    async fn fails(_: u8) -> TestResult {
        anyhow::bail!("expected 1, got 2")
    }
    async fn panics(_: u8) -> TestResult {
        panic!("boom")
    }
    async fn skips(_: u8) -> TestResult {
        Err(Skip("no in-process steps here".into()).into())
    }

    #[tokio::test]
    async fn runner_reports_pass_fail_panic_and_skips_by_capability() {
        // A platform with approval status but no aliases.
        let caps = Capabilities::new(PlatformId::from_static("demo"), &[Feature::ApprovalStatus]);
        let cases = vec![
            crate::case!(passes),
            crate::case!(fails),
            crate::case!(panics),
            crate::case!(passes, needs = [Feature::ModelAliases]),
            crate::case!(passes, needs = [Feature::ApprovalStatus], absent = [Feature::ModelAliases]),
            crate::case!(passes, needs = [], absent = [Feature::ApprovalStatus]),
            crate::case!(skips),
        ];
        let r = run_cases("demo", 0u8, &caps, cases).await;
        assert_eq!(r.passed, vec!["demo::passes", "demo::passes"]);
        assert_eq!(r.failed.len(), 2);
        assert_eq!(r.failed[0], ("demo::fails".to_owned(), "expected 1, got 2".to_owned()));
        assert_eq!(r.failed[1], ("demo::panics".to_owned(), "panicked: boom".to_owned()));
        assert_eq!(r.skipped.len(), 3);
        assert_eq!(r.skipped[2], ("demo::skips".to_owned(), "no in-process steps here".to_owned()));
        assert!(r.skipped[0].1.contains("lacks capability ModelAliases"), "{:?}", r.skipped);
        assert!(r.skipped[1].1.contains("supports ApprovalStatus"), "{:?}", r.skipped);
        let summary = r.summary();
        assert!(summary.contains("SKIPPED demo::passes: platform `demo` lacks"), "{summary}");
        assert!(summary.contains("FAILED  demo::panics: panicked: boom"), "{summary}");
        assert!(std::panic::catch_unwind(|| r.assert_ok()).is_err());
        // Only the passed case that needed ApprovalStatus proves it; a declared feature no passed
        // case needed fails the proof.
        assert_eq!(r.unproven(&caps), vec![]);
        let more = Capabilities::new(caps.platform, &[Feature::ApprovalStatus, Feature::DriftKs]);
        assert_eq!(r.unproven(&more), vec![Feature::DriftKs]);
        let e = std::panic::catch_unwind(|| r.assert_capabilities_proven(&more)).unwrap_err();
        assert!(e.downcast_ref::<String>().is_some_and(|m| m.contains("DriftKs")), "{e:?}");
    }
}
