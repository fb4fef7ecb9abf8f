//! Retry policy shared by the engine and every provider: exponential backoff with full jitter
//! (the AWS Architecture Blog's recommendation), bounded attempts, retrying only what
//! [`Error::is_retryable`] says may succeed later.

use std::time::Duration;

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, the first one included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Default::default() }
    }

    /// The delay before retry number `attempt` (1 = the first retry): uniform in
    /// `[0, min(max_delay, base_delay * 2^(attempt-1))]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.max_delay);
        cap.mul_f64(fastrand::f64())
    }

    /// Runs `op` until it succeeds, fails permanently, or attempts run out.
    /// `on_retry` sees each retryable failure before the wait (for progress output).
    pub async fn run<T, F, Fut>(&self, mut op: F, mut on_retry: impl FnMut(u32, &crate::Error)) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    on_retry(attempt, &e);
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, ErrorKind};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn retries_retryable_then_succeeds() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy { base_delay: Duration::from_millis(1), ..Default::default() };
        let out = policy
            .run(
                || async {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(Error::new(ErrorKind::Throttled, "busy"))
                    } else {
                        Ok(7)
                    }
                },
                |_, _| {},
            )
            .await
            .unwrap();
        assert_eq!(out, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_error_is_not_retried() {
        let calls = AtomicU32::new(0);
        let err = RetryPolicy::default()
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(Error::invalid("bad"))
                },
                |_, _| {},
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delay_is_capped() {
        let p = RetryPolicy { max_delay: Duration::from_millis(50), ..Default::default() };
        for attempt in 1..40 {
            assert!(p.delay(attempt) <= Duration::from_millis(50));
        }
    }
}
