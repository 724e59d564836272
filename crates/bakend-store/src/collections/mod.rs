//! Collections: their definitions, the row layout and DDL that realise them, and the in-memory
//! registry.

pub mod counts;
pub mod definition;
pub mod files;
pub mod indexes;
pub mod layout;
pub mod manage;
#[cfg(test)]
mod manage_tests;
pub mod migrate;
pub mod registry;
pub mod schema;
pub mod sync;
#[cfg(test)]
pub(crate) mod testing;
