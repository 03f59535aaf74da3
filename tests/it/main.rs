//! The integration tests, one binary: `cargo test --test it`, one group of them with
//! `cargo test --test it mysql::` (a module per area), the harness in `support/`.

mod support;

mod aws_identity;
mod cli;
mod dynamodb;
mod kube_harness;
mod mongodb;
mod mysql;
mod mysql_bad_input;
mod node;
mod operator;
mod postgres;
mod postgres_bad_input;
