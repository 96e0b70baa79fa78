//! The HTTP endpoints.

pub mod ops;
pub mod traces;
