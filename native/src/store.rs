//! The LMDB store (work in progress).
