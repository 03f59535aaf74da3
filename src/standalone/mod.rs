//! Standalone mode: the `Database`/`AccessRole` manifests a proxy without a cluster loads from
//! files, validated at start-up with errors that name file, document and field. The proxy's
//! configuration file itself is [`crate::proxy::config::ProxyConfig`].

mod manifests;

pub use manifests::{Manifests, load_manifests};

#[cfg(test)]
mod tests;
