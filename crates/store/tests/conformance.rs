//! The conformance suite against the in-memory store.

use futures::future::{ready, LocalBoxFuture};
use futures::FutureExt as _;
use grasp_sync_store::conformance::{run_all, Backend};
use grasp_sync_store::{MemoryStore, MemoryStores};

struct Memory(MemoryStores);

impl Backend for Memory {
    type Store = MemoryStore;

    fn open<'a>(&'a self, name: &'a str) -> LocalBoxFuture<'a, Result<MemoryStore, String>> {
        ready(Ok(self.0.open(name))).boxed_local()
    }
}

#[test]
fn the_memory_store_passes_the_suite() {
    let result = futures::executor::block_on(run_all(&Memory(MemoryStores::new())));
    if let Err(failures) = result {
        panic!("{failures}");
    }
}
