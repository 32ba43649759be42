//! The dispatch engine (in progress).
pub mod poll_schedule;
