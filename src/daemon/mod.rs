//! The daemon (`corriere run`): many jobs at once under the one shared rate budget, a daily
//! feed sync, send windows, and graceful shutdown. [`api`] is what it offers the admin API.

pub mod api;
