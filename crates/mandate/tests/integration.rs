//! The integration suite: a real server on ephemeral ports, driven over HTTP,
//! each test mounted once per storage backend (SQLite and PostgreSQL).

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod suite;
