//! The verifier port: ids and signatures checked on the calling (main) thread, in slices
//! that yield to the page between them. (Web Workers are not used yet.)

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use grasp_sync_driver::Verifier;
use nostr::prelude::Event;

use crate::clock::pace;

/// Events checked between two looks at the clock.
const SLICE: usize = 8;

/// Verifies in slices on this thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlicedVerifier;

impl Verifier for SlicedVerifier {
    fn verify(&self, events: Vec<Event>) -> LocalBoxFuture<'static, Vec<bool>> {
        async move {
            let mut valid = Vec::with_capacity(events.len());
            for chunk in events.chunks(SLICE) {
                pace().await;
                valid.extend(chunk.iter().map(|e| e.verify().is_ok()));
            }
            valid
        }
        .boxed_local()
    }
}
