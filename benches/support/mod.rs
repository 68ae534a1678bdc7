//! Helpers for the benches only: nothing here is part of the crate.

pub(crate) mod nginx;
pub(crate) mod raw;
pub(crate) mod server;
pub(crate) mod subject;
