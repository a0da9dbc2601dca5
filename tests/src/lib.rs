//! Integration and end-to-end tests across crates, against real relays (rust-nostr's
//! `LocalRelay`, `nostr-rs-relay`) and a real browser. The core's own unit and property
//! tests live in `crates/core/tests`; the cross-crate suites arrive with the driver issue.
