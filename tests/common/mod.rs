//! Shared set-up for the integration tests.
#![allow(dead_code)]

pub mod spec;
