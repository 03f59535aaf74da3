//! The process's default AWS region, resolved once in the SDK's order (environment, profile,
//! instance metadata) while remembering which source answered, so that off AWS the logs carry
//! one line saying no region was found instead of the SDK's warning for each lookup.

use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::imds::region::ImdsRegionProvider;
use aws_config::meta::region::ProvideRegion;
use aws_config::profile::region::ProfileFileRegionProvider;
use aws_types::region::Region;

/// Region source names, as reported.
pub mod sources {
    /// `AWS_REGION` or `AWS_DEFAULT_REGION`.
    pub const ENVIRONMENT: &str = "environment (AWS_REGION / AWS_DEFAULT_REGION)";
    /// The shared config file's profile.
    pub const PROFILE: &str = "profile";
    /// EC2 instance metadata.
    pub const IMDS: &str = "instance metadata (IMDS)";
    /// An SDK configuration built by the caller.
    pub const SDK_CONFIG: &str = "the SDK configuration";
}

/// The verdict when no source has a region.
pub const NOT_FOUND: &str = "no AWS region found (AWS_REGION / AWS_DEFAULT_REGION, the profile, IMDS); \
     set AWS_REGION, or spec.aws.region on each Database";

/// The default region and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionFound {
    /// The region, when some source had one.
    pub region: Option<Region>,
    /// The source that had it.
    pub source: Option<&'static str>,
}

impl RegionFound {
    /// `us-east-1 (from …)`, or [`NOT_FOUND`].
    pub fn describe(&self) -> String {
        match (&self.region, self.source) {
            (Some(r), Some(s)) => format!("{r} (from {s})"),
            (Some(r), None) => r.to_string(),
            (None, _) => NOT_FOUND.to_owned(),
        }
    }
}

/// Tries the environment, the profile and IMDS in turn (IMDS is skipped when
/// `AWS_EC2_METADATA_DISABLED=true`). The SDK's own IMDS warning is kept out of the default log
/// filter (see [`crate::telemetry`]); the caller reports the verdict once.
pub async fn resolve() -> RegionFound {
    let providers: [(&'static str, Box<dyn ProvideRegion>); 3] = [
        (sources::ENVIRONMENT, Box::new(EnvironmentVariableRegionProvider::new())),
        (sources::PROFILE, Box::new(ProfileFileRegionProvider::new())),
        (sources::IMDS, Box::new(ImdsRegionProvider::builder().build())),
    ];
    for (source, provider) in providers {
        if let Some(region) = provider.region().await {
            return RegionFound { region: Some(region), source: Some(source) };
        }
    }
    RegionFound::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_names_the_region_and_its_source_or_what_to_set() {
        let found = RegionFound { region: Some(Region::new("eu-west-1")), source: Some(sources::ENVIRONMENT) };
        assert_eq!(found.describe(), "eu-west-1 (from environment (AWS_REGION / AWS_DEFAULT_REGION))");
        let none = RegionFound::default().describe();
        assert!(none.contains("no AWS region found") && none.contains("AWS_REGION") && none.contains("spec.aws.region"), "{none}");
        assert!(!none.contains('\n'), "one line");
    }
}
