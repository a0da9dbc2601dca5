//! The store contract's conformance suite (crates/store) on IndexedDB, in headless
//! Chromium: every case against fresh databases of this run.

#![cfg(target_arch = "wasm32")]

use futures::future::LocalBoxFuture;
use grasp_sync_store::conformance::{run, Backend, Case};
use grasp_sync_web::idb::IdbStore;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// IndexedDB databases named `<prefix>-<case name>`.
struct Idb {
    prefix: String,
}

impl Backend for Idb {
    type Store = IdbStore;

    fn open<'a>(&'a self, name: &'a str) -> LocalBoxFuture<'a, Result<IdbStore, String>> {
        Box::pin(async move {
            IdbStore::open(&format!("{}-{name}", self.prefix))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

fn backend() -> Idb {
    Idb {
        prefix: format!("conformance-{}", js_sys::Math::random().to_bits()),
    }
}

macro_rules! case {
    ($name:ident, $case:expr) => {
        #[wasm_bindgen_test]
        async fn $name() {
            run(&backend(), $case)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
}

case!(filters, Case::Filters);
case!(layer_items, Case::LayerItems);
case!(versions, Case::Versions);
case!(deletions, Case::Deletions);
case!(expiration, Case::Expiration);
case!(state, Case::State);
case!(resave, Case::Resave);
case!(reopen, Case::Reopen);
