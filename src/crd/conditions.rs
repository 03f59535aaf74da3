//! Status conditions keyed on `type`: merging a new observation keeps `lastTransitionTime`
//! unless the status really changed, so an unchanged world produces an identical status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types of a `Database`.
pub mod types {
    /// Everything below is fine; clients can connect.
    pub const READY: &str = "Ready";
    /// The spec is complete and consistent.
    pub const VALID: &str = "Valid";
    /// At least one proxy pod is available.
    pub const PROXY_AVAILABLE: &str = "ProxyAvailable";
    /// The proxy may log in upstream as written: the endpoint passes the admin's allow-list and
    /// the upstream CA Secret holds a CA.
    pub const UPSTREAM_CONFIGURED: &str = "UpstreamConfigured";
    /// IAM database authentication is on for the instance or cluster (checked with AWS).
    pub const IAM_AUTH_ENABLED: &str = "IamAuthEnabled";
    /// The proxy obtained AWS credentials (reported by the proxy).
    pub const CREDENTIALS_RESOLVED: &str = "CredentialsResolved";
    /// The proxy reached the database over the network (reported by the proxy).
    pub const UPSTREAM_REACHABLE: &str = "UpstreamReachable";
}

/// The condition types of an `AccessRole`.
pub mod access_role_types {
    /// The spec can grant something (a parseable TTL, allow rules that can match).
    pub const VALID: &str = "Valid";
}

/// The values of a condition's `status`.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// It does not.
    pub const FALSE: &str = "False";
    /// Not known (not checked, or the check failed).
    pub const UNKNOWN: &str = "Unknown";
}

/// One observation, before it is merged into a condition list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Observation {
    /// The condition type, e.g. `Valid`.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// PascalCase reason.
    pub reason: String,
    /// What happened and what to do.
    pub message: String,
}

impl Observation {
    /// A `True` observation.
    pub fn ok(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self { type_, status: status::TRUE, reason: reason.to_owned(), message: message.into() }
    }

    /// A `False` observation.
    pub fn failed(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self { type_, status: status::FALSE, reason: reason.to_owned(), message: message.into() }
    }

    /// An `Unknown` observation.
    pub fn unknown(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self { type_, status: status::UNKNOWN, reason: reason.to_owned(), message: message.into() }
    }
}

/// Builds the condition for `observation`, keeping the transition time of `previous` when the
/// status did not change.
pub fn merge(previous: &[Condition], observation: &Observation, generation: Option<i64>, now: &Time) -> Condition {
    let old = find(previous, observation.type_);
    let last_transition_time = match old {
        Some(c) if c.status == observation.status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: observation.type_.to_owned(),
        status: observation.status.to_owned(),
        reason: observation.reason.clone(),
        // The API server limits messages to 32 KiB.
        message: truncate(&observation.message, 4096),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status::TRUE)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = merge(&[], &Observation::failed(types::VALID, "Bad", "x"), Some(1), &at(100));
        assert_eq!(first.last_transition_time, at(100));
        let same = merge(std::slice::from_ref(&first), &Observation::failed(types::VALID, "Other", "y"), Some(2), &at(200));
        assert_eq!(same.last_transition_time, at(100), "same status keeps the time");
        assert_eq!((same.reason.as_str(), same.observed_generation), ("Other", Some(2)));
        let flipped = merge(&[same], &Observation::ok(types::VALID, "Ok", "z"), Some(2), &at(300));
        assert_eq!(flipped.last_transition_time, at(300));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let text = "é".repeat(5000);
        let c = merge(&[], &Observation::ok(types::READY, "R", text), None, &at(1));
        assert!(c.message.len() <= 4096 + 3 && c.message.ends_with('…'));
    }
}
