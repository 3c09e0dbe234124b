//! Retry policy: exponential back-off with full jitter, `Retry-After`
//! honoured, and which failures are worth another try.

use std::time::Duration;

use switchboard_salesforce::MiawError;

#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    /// `jitter` in [0, 1) picks a point in the window ("full jitter"), so
    /// many handoffs failing together do not retry together. A server's
    /// `Retry-After` is a floor.
    pub fn delay(&self, attempt: i64, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let window = self
            .base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.cap);
        let jittered = window.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(r) => jittered.max(r.min(Duration::from_secs(3600))),
            None => jittered,
        }
    }
}

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after a back-off.
    Retry,
    /// Give up now: the request cannot succeed as it is (dead letter).
    DeadLetter,
}

pub fn verdict(err: &MiawError) -> Verdict {
    if err.is_retryable() || err.is_unauthorized() {
        Verdict::Retry
    } else {
        Verdict::DeadLetter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_the_cap_and_honours_retry_after() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        assert_eq!(b.delay(1, None, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, None, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(30, None, 1.0), Duration::from_secs(60), "capped");
        assert_eq!(
            b.delay(3, None, 0.0),
            Duration::from_secs(2),
            "jitter stays within half the window"
        );
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let http = |status| MiawError::Http {
            status,
            body: String::new(),
            retry_after: None,
        };
        assert_eq!(verdict(&http(429)), Verdict::Retry);
        assert_eq!(verdict(&http(503)), Verdict::Retry);
        assert_eq!(
            verdict(&http(401)),
            Verdict::Retry,
            "a fresh token may fix it"
        );
        assert_eq!(verdict(&http(400)), Verdict::DeadLetter);
        assert_eq!(verdict(&http(404)), Verdict::DeadLetter);
    }
}
