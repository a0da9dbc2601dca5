//! The conformance suite against the in-memory store, one test per case.

use futures::future::{ready, LocalBoxFuture};
use futures::FutureExt as _;
use grasp_sync_store::conformance::{run, Backend, Case};
use grasp_sync_store::{MemoryStore, MemoryStores};

struct Memory(MemoryStores);

impl Backend for Memory {
    type Store = MemoryStore;

    fn open<'a>(&'a self, name: &'a str) -> LocalBoxFuture<'a, Result<MemoryStore, String>> {
        ready(Ok(self.0.open(name))).boxed_local()
    }
}

fn check(case: Case) {
    let result = futures::executor::block_on(run(&Memory(MemoryStores::new()), case));
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[test]
fn filters() {
    check(Case::Filters);
}

#[test]
fn layer_items() {
    check(Case::LayerItems);
}

#[test]
fn versions() {
    check(Case::Versions);
}

#[test]
fn deletions() {
    check(Case::Deletions);
}

#[test]
fn expiration() {
    check(Case::Expiration);
}

#[test]
fn state() {
    check(Case::State);
}

#[test]
fn resave() {
    check(Case::Resave);
}

#[test]
fn reopen() {
    check(Case::Reopen);
}

#[test]
fn every_case_has_a_test() {
    assert_eq!(Case::ALL.len(), 8, "add a test above for the new case");
}
