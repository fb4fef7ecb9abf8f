//! Small helpers shared by the suites: unique names, error-kind checks, deterministic data.

use std::fmt::Debug;
use std::time::Duration;

use galley_core::{ErrorKind, Result};

/// A name no other run uses, so suites can run again and again against a long-lived emulator
/// or account. Lowercase letters and digits only: the one alphabet every cloud's naming rules
/// accept (SageMaker refuses `_`, Vertex AI feature stores refuse `-`).
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..12])
}

/// Checks that `result` failed with `kind`, naming `what` in the message when it did not.
pub fn expect_kind<T: Debug>(result: Result<T>, kind: ErrorKind, what: &str) -> anyhow::Result<()> {
    match result {
        Ok(v) => anyhow::bail!("{what}: expected a {kind:?} error, got Ok({v:?})"),
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => anyhow::bail!("{what}: expected a {kind:?} error, got {:?}: {e}", e.kind()),
    }
}

/// Like [`expect_kind`] where the contract allows any of several kinds.
pub fn expect_kind_in<T: Debug>(result: Result<T>, kinds: &[ErrorKind], what: &str) -> anyhow::Result<()> {
    match result {
        Ok(v) => anyhow::bail!("{what}: expected an error ({kinds:?}), got Ok({v:?})"),
        Err(e) if kinds.contains(&e.kind()) => Ok(()),
        Err(e) => anyhow::bail!("{what}: expected one of {kinds:?}, got {:?}: {e}", e.kind()),
    }
}

/// `anyhow::ensure!` for equality, printing both sides.
#[macro_export]
#[doc(hidden)]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($what:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            ::anyhow::bail!("{}: expected {:?}, got {:?}", format!($($what)+), r, l);
        }
    }};
}

/// Polls `probe` until it returns `Some`, backing off from 100 ms to 5 s, for at most `limit`.
/// For eventually-consistent state (an endpoint coming into service, a run finishing); the
/// limit only guards against a hang, it is not a performance assertion.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if start.elapsed() >= limit {
            anyhow::bail!("{what}: still not reached after {} s", limit.as_secs());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Hex SHA-256, computed here independently of any store.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A seeded normal sampler (Box–Muller), so drift scenarios are the same on every run.
pub struct Normal {
    rng: fastrand::Rng,
}

impl Normal {
    pub fn seeded(seed: u64) -> Self {
        Normal { rng: fastrand::Rng::with_seed(seed) }
    }

    pub fn sample(&mut self, mean: f64, sd: f64) -> f64 {
        // 1 - f64() lies in (0, 1], so ln never sees 0.
        let u1 = 1.0 - self.rng.f64();
        let u2 = self.rng.f64();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::Error;

    #[test]
    fn unique_names_are_lowercase_alphanumeric_and_distinct() {
        let a = unique("gtk");
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{a}");
        assert_eq!(a.len(), 15);
        assert_ne!(a, unique("gtk"));
    }

    #[test]
    fn expect_kind_names_the_mismatch() {
        assert!(expect_kind::<()>(Err(Error::not_found("x")), ErrorKind::NotFound, "get").is_ok());
        let e = expect_kind::<()>(Err(Error::invalid("bad")), ErrorKind::NotFound, "get").unwrap_err();
        assert!(e.to_string().contains("expected a NotFound error, got InvalidInput"), "{e}");
        let e = expect_kind(Ok(3), ErrorKind::NotFound, "get").unwrap_err();
        assert!(e.to_string().contains("got Ok(3)"), "{e}");
    }

    #[test]
    fn sha256_matches_the_published_empty_digest() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn normal_sampler_has_the_asked_mean_and_spread() {
        let mut n = Normal::seeded(7);
        let xs: Vec<f64> = (0..20_000).map(|_| n.sample(3.0, 2.0)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((mean - 3.0).abs() < 0.1, "{mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.1, "{var}");
    }
}
