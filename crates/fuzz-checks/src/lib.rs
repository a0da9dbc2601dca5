//! The properties the fuzz targets check, one module per target, each a plain
//! `check(data)` that panics when its property fails. cargo-fuzz (`fuzz/`) calls them
//! with generated inputs; `tests/replay.rs` calls them with every committed crash input
//! (`fuzz/artifacts/<target>/`) and seed (`fuzz/seeds/<target>/`), so a fixed crash
//! stays fixed.

mod common;
pub mod engine_frames;
pub mod neg_initiator;
pub mod neg_responder;
pub mod relay_frame;

/// A target's check: panics when its property fails for the input.
pub type Check = fn(&[u8]);

/// Each target's name (its directory under `fuzz/artifacts` and `fuzz/seeds`) and check.
pub const TARGETS: [(&str, Check); 4] = [
    ("engine_frames", engine_frames::check),
    ("neg_initiator", neg_initiator::check),
    ("neg_responder", neg_responder::check),
    ("relay_frame", relay_frame::check),
];
