//! Logging set-up: `tracing` to standard error, text or JSON.

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// SDK log targets kept at `error` unless the filter names `aws_config` itself: their
/// warnings are the raw steps of a lookup whose verdict Portcullis logs in one line of its own
/// (off AWS, "failed to load region from IMDS" once per region lookup; see
/// [`crate::aws::region`]; a refused AssumeRole, which the caller reports with the role, the
/// caller and what to check).
const QUIETED: &[&str] = &["aws_config::imds::region", "aws_config::sts::assume_role"];

/// `directives` with the [`QUIETED`] targets at `error`, unless it mentions `aws_config`.
fn quiet_sdk_steps(directives: &str) -> String {
    let directives = directives.trim().trim_end_matches(',');
    if directives.contains("aws_config") {
        return directives.to_owned();
    }
    let given = (!directives.is_empty()).then(|| directives.to_owned());
    given.into_iter().chain(QUIETED.iter().map(|t| format!("{t}=error"))).collect::<Vec<_>>().join(",")
}

/// Installs the global subscriber. `level` is an `EnvFilter` directive (e.g. `info`,
/// `portcullis=debug`); `RUST_LOG` overrides it.
pub fn init(level: &str, format: LogFormat) {
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).ok().and_then(|d| EnvFilter::try_new(quiet_sdk_steps(&d)).ok());
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(quiet_sdk_steps(level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// An error and all its sources on one line (`outer: inner: root`), for log fields.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_region_lookup_steps_are_quieted_unless_asked_for() {
        assert_eq!(quiet_sdk_steps("info"), "info,aws_config::imds::region=error,aws_config::sts::assume_role=error");
        assert_eq!(quiet_sdk_steps("debug,"), "debug,aws_config::imds::region=error,aws_config::sts::assume_role=error");
        assert_eq!(quiet_sdk_steps(""), "aws_config::imds::region=error,aws_config::sts::assume_role=error");
        assert_eq!(quiet_sdk_steps("info,aws_config=debug"), "info,aws_config=debug");
        for level in ["info", "warn", "portcullis=debug,kube=info"] {
            assert!(EnvFilter::try_new(quiet_sdk_steps(level)).is_ok(), "{level}");
        }
    }
}
