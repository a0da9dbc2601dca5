//! The loop (work in progress).

/// Work in progress.
pub struct Driver;
/// Work in progress.
pub enum Command {}
/// Work in progress.
pub struct DriverStats;
/// Work in progress.
pub enum Exit {}
