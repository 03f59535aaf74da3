//! When a failed reconcile is tried again. Every reconcile error has a [`Category`]; the error
//! policies turn it and the number of failures in a row into a delay with jitter, so many
//! objects failing together (an API server restart, AWS throttling) do not retry in lockstep.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// What kind of failure it was, which decides how soon to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Likely to pass on its own (a timeout, a conflict, the API server restarting): retry
    /// soon, backing off exponentially.
    Transient,
    /// Will fail the same way until the object changes (a spec the API server refuses): the
    /// watch brings the change, so only a long safety requeue.
    Permanent,
    /// The API server or AWS asked us to slow down: back off further.
    Throttled,
}

impl Category {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transient => "transient",
            Category::Permanent => "permanent",
            Category::Throttled => "throttled",
        }
    }
}

/// The first retry after a transient failure; doubled per failure in a row.
pub const TRANSIENT_FIRST: Duration = Duration::from_secs(5);
/// The longest pause between transient retries.
pub const TRANSIENT_MAX: Duration = Duration::from_secs(5 * 60);
/// The first retry after throttling; doubled per failure in a row.
pub const THROTTLED_FIRST: Duration = Duration::from_secs(30);
/// The longest pause after throttling.
pub const THROTTLED_MAX: Duration = Duration::from_secs(15 * 60);
/// The safety requeue after a permanent failure (a change to the object comes sooner).
pub const PERMANENT: Duration = Duration::from_secs(30 * 60);
/// Every delay is spread by this fraction either way.
pub const JITTER: f64 = 0.2;

/// The delay before the next attempt after `failures` failures in a row (at least 1), with
/// `jitter` drawn uniformly from `[0, 1)`: the nominal delay times `1 ± JITTER`.
pub fn requeue_after(category: Category, failures: u32, jitter: f64) -> Duration {
    let nominal = match category {
        Category::Transient => doubling(TRANSIENT_FIRST, TRANSIENT_MAX, failures),
        Category::Throttled => doubling(THROTTLED_FIRST, THROTTLED_MAX, failures),
        Category::Permanent => PERMANENT,
    };
    let spread = 2.0 * jitter.clamp(0.0, 1.0) - 1.0;
    nominal.mul_f64(1.0 + JITTER * spread)
}

fn doubling(first: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(max)
}

/// The category of a failed Kubernetes API call.
pub fn category_of(error: &kube::Error) -> Category {
    match error {
        kube::Error::Api(status) if status.code == 429 => Category::Throttled,
        // The API server refuses the object as written: retrying the same object cannot help.
        kube::Error::Api(status) if matches!(status.code, 400 | 422) => Category::Permanent,
        _ => Category::Transient,
    }
}

/// Failures in a row per object (e.g. `database/NS/NAME`), cleared by a successful reconcile.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `key`; returns the count.
    pub fn record(&self, key: &str) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Forgets the failures of `key`.
    pub fn clear(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(nominal: Duration) -> (Duration, Duration) {
        (nominal.mul_f64(1.0 - JITTER), nominal.mul_f64(1.0 + JITTER))
    }

    #[test]
    fn transient_failures_back_off_exponentially_up_to_a_cap() {
        let nominal = |n| requeue_after(Category::Transient, n, 0.5);
        assert_eq!([nominal(1), nominal(2), nominal(3), nominal(4)], [5, 10, 20, 40].map(Duration::from_secs));
        assert_eq!(nominal(30), TRANSIENT_MAX);
        assert_eq!(nominal(u32::MAX), TRANSIENT_MAX, "no overflow");
        assert_eq!(requeue_after(Category::Transient, 0, 0.5), TRANSIENT_FIRST, "a first failure not yet counted");
    }

    #[test]
    fn throttling_waits_longer_than_a_transient_failure() {
        for n in 1..12 {
            assert!(requeue_after(Category::Throttled, n, 0.5) > requeue_after(Category::Transient, n, 0.5), "after {n} failures");
        }
        assert_eq!(requeue_after(Category::Throttled, 1, 0.5), THROTTLED_FIRST);
        assert_eq!(requeue_after(Category::Throttled, 40, 0.5), THROTTLED_MAX);
    }

    #[test]
    fn a_permanent_failure_waits_for_a_change_with_only_a_long_safety_requeue() {
        for n in [1, 2, 10] {
            assert_eq!(requeue_after(Category::Permanent, n, 0.5), PERMANENT);
        }
        assert!(PERMANENT > THROTTLED_MAX);
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_spreads_the_delay() {
        for category in [Category::Transient, Category::Throttled, Category::Permanent] {
            for n in [1, 3, 30] {
                let nominal = requeue_after(category, n, 0.5);
                let (low, high) = bounds(nominal);
                assert_eq!(requeue_after(category, n, 0.0), low);
                assert!(requeue_after(category, n, 0.999_999) <= high);
                for _ in 0..200 {
                    let d = requeue_after(category, n, rand::random());
                    assert!(d >= low && d <= high, "{category:?} after {n}: {d:?} outside {low:?}..{high:?}");
                }
                assert_eq!(requeue_after(category, n, 7.0), high, "out-of-range jitter is clamped");
            }
        }
        assert_ne!(requeue_after(Category::Transient, 1, 0.1), requeue_after(Category::Transient, 1, 0.9));
    }

    #[test]
    fn api_errors_are_categorised_by_status_code() {
        let api = |code| kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed());
        assert_eq!(category_of(&api(429)), Category::Throttled);
        assert_eq!(category_of(&api(422)), Category::Permanent);
        assert_eq!(category_of(&api(400)), Category::Permanent);
        for code in [403, 404, 409, 500, 503] {
            assert_eq!(category_of(&api(code)), Category::Transient, "{code}");
        }
    }

    #[test]
    fn failures_count_in_a_row_per_object() {
        let f = Failures::default();
        assert_eq!((f.record("a"), f.record("a"), f.record("b")), (1, 2, 1));
        f.clear("a");
        assert_eq!(f.record("a"), 1);
    }
}
