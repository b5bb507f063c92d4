//! Per-agent token buckets (rate limits answered with 429 + Retry-After).

use std::time::{Duration, Instant};

/// A token bucket.
pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) rate: f64,
    pub(super) last: Instant,
}

impl Bucket {
    /// Takes `n` tokens, or says how long until they would be there.
    pub(super) fn take(&mut self, n: usize) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.rate.max(1.0));
        self.last = now;
        #[allow(clippy::cast_precision_loss)]
        let n = n as f64;
        if n <= self.tokens {
            self.tokens -= n;
            Ok(())
        } else if n > self.rate.max(1.0) {
            // A batch larger than a second's worth passes when the bucket is full, and drains it.
            if self.tokens >= self.rate.max(1.0) {
                self.tokens -= n;
                Ok(())
            } else {
                Err(Duration::from_secs_f64(
                    ((self.rate - self.tokens) / self.rate.max(1.0)).max(0.001),
                ))
            }
        } else {
            Err(Duration::from_secs_f64(
                ((n - self.tokens) / self.rate.max(1.0)).max(0.001),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_bucket() {
        let mut b = Bucket {
            tokens: 10.0,
            rate: 10.0,
            last: Instant::now(),
        };
        assert!(b.take(10).is_ok());
        let wait = b.take(5).unwrap_err();
        assert!(wait > Duration::from_millis(300) && wait <= Duration::from_secs(1));
    }
}
