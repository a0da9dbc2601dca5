//! Signature verification in parallel batches on every core (rayon), off the driver's
//! thread.

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use grasp_sync_driver::Verifier;
use nostr::prelude::Event;
use rayon::prelude::*;
use tokio::sync::oneshot;

/// Verifies ids and signatures on rayon's thread pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParallelVerifier;

impl Verifier for ParallelVerifier {
    fn verify(&self, events: Vec<Event>) -> LocalBoxFuture<'static, Vec<bool>> {
        let (tx, rx) = oneshot::channel();
        let n = events.len();
        rayon::spawn(move || {
            let valid: Vec<bool> = events.par_iter().map(|e| e.verify().is_ok()).collect();
            let _ = tx.send(valid);
        });
        // A pool that died answers "invalid" for all: the events are fetched again.
        async move { rx.await.unwrap_or_else(|_| vec![false; n]) }.boxed_local()
    }
}

/// Verifies on the calling thread: the single-core floor for benchmarks.
pub fn verify_serial(events: &[Event]) -> Vec<bool> {
    events.iter().map(|e| e.verify().is_ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use grasp_sync_testkit::{Corpus, CorpusSpec};

    #[tokio::test]
    async fn flags_forged_events_in_order() {
        let corpus = Corpus::generate(&CorpusSpec {
            repos: 2,
            events_per_repo: 10,
            ..CorpusSpec::default()
        });
        let mut events = corpus.events.clone();
        // Swap two signatures: both events become forgeries.
        let (a, b) = (events[1].sig, events[2].sig);
        events[1].sig = b;
        events[2].sig = a;
        let valid = ParallelVerifier.verify(events.clone()).await;
        assert_eq!(valid.len(), events.len());
        assert_eq!(valid, verify_serial(&events));
        assert!(!valid[1] && !valid[2] && valid[0] && valid[3]);
    }
}
