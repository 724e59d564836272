//! Records: validating input, turning rows into the wire shape, and the record store itself.

pub mod cursor;
pub mod json;
#[cfg(test)]
mod plans_postgres;
mod query;
pub mod row;
pub mod store;
#[cfg(test)]
mod store_tests;
pub mod validate;
