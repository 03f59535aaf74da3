//! The integration tests, one binary: `cargo test --test it`, one group of them with
//! `cargo test --test it mysql::` (a module per area), the harness in `support/`.
//!
//! They share one process: servers a group's tests use at once are shared across groups too
//! (`shared_postgres`, `shared_mariadb`; each test runs its own proxy), but each group has its
//! own control plane (`shared_control_plane`), and the node tests have the machine to
//! themselves: every test takes `support::machine_shared()` first, each node test
//! `support::machine_exclusive()`.

mod support;

mod aws_identity;
mod cli;
mod discovery;
mod dynamodb;
mod kube_harness;
mod mongodb;
mod mysql;
mod mysql_bad_input;
mod node;
mod operator;
mod postgres;
mod postgres_bad_input;
