//! Collections: their definitions, the DDL that realises them, and the in-memory registry.

pub mod definition;
pub mod files;
pub mod manage;
pub mod migrate;
pub mod registry;
pub mod schema;
pub mod sync;
