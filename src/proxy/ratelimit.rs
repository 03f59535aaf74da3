//! A token bucket limiting new upstream connections per database (RDS accepts roughly 200 new
//! IAM-authenticated connections per second per instance).

use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex;

/// A token bucket: `rate` tokens per second, bursts up to `rate`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A limiter of `per_second` (0 means unlimited).
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        Self { rate, state: Mutex::new((rate, Instant::now())) }
    }

    /// Waits for a token; `Err` with the wait it would need when that exceeds `max_wait`.
    pub async fn acquire(&self, max_wait: Duration) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let wait = {
            let mut state = self.state.lock().await;
            let now = Instant::now();
            let (tokens, last) = *state;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate) - 1.0;
            let wait = if tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-tokens / self.rate) };
            if wait > max_wait {
                return Err(wait);
            }
            *state = (tokens, now);
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_up_to_the_rate_then_paces() {
        let limiter = RateLimiter::new(10);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            limiter.acquire(Duration::from_secs(1)).await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_millis(5));
        limiter.acquire(Duration::from_secs(1)).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(99), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_when_the_wait_would_be_too_long() {
        let limiter = RateLimiter::new(1);
        limiter.acquire(Duration::ZERO).await.unwrap();
        assert!(limiter.acquire(Duration::from_millis(100)).await.is_err());
    }
}
