//! Shared by the tests: a Postgres cluster of their own ([`cluster`]), the
//! test application, a certificate authority and a proxy that cuts
//! connections.

#![allow(dead_code)] // Each test file uses a part.

pub mod app;
pub mod cluster;
pub mod pki;
pub mod proxy;

pub use cluster::*;
