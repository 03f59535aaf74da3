//! The engines this build serves: one registration line per protocol.

use super::pipeline::Serve;
use super::{dynamodb, mongodb, mysql, postgres};
use crate::crd::Protocol;

/// Every engine.
static ENGINES: &[&dyn Serve] = &[&postgres::PostgresEngine, &mysql::MysqlEngine, &mongodb::MongodbEngine, &dynamodb::DynamoDbEngine];

/// The engine that serves Databases of `protocol`, if this build has one.
pub fn engine_for(protocol: Protocol) -> Option<&'static dyn Serve> {
    ENGINES.iter().copied().find(|e| e.facts().serves == protocol)
}
