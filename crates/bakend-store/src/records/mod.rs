//! Records: validating input, turning rows into the wire shape, and the record store itself.

pub mod cursor;
pub mod json;
mod query;
pub mod row;
pub mod store;
pub mod validate;
