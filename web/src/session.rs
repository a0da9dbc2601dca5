//! One run of the shared driver over the browser's ports, for a set of tracked
//! repositories: restore from IndexedDB, then sync until stopped.

use std::rc::Rc;

use futures::channel::{mpsc, oneshot};
use futures::future::{FutureExt, Shared};
use grasp_sync_core::engine::{EngineConfig, SyncEngine};
use grasp_sync_core::filters::DiscoveryScope;
use grasp_sync_core::{RelayUrl, RepoRef};
use grasp_sync_driver::{Command, Control, Driver};

use crate::clock::BrowserClock;
use crate::idb::IdbStore;
use crate::net::BrowserNetwork;
use crate::status::Board;
use crate::verify::BrowserVerifier;

/// What a session syncs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The tracked repositories.
    pub repos: Vec<RepoRef>,
    /// Relays asked for their announcements.
    pub bootstrap: Vec<RelayUrl>,
    /// Follow private and loopback relay URLs from announcements.
    pub allow_private: bool,
    /// Checks ids and signatures (its workers outlive a session's restart).
    pub verifier: BrowserVerifier,
}

/// A running sync.
pub struct Session {
    commands: mpsc::UnboundedSender<Command>,
    finished: Shared<oneshot::Receiver<()>>,
}

impl Session {
    /// Restores what `store` knows for `plan` and starts syncing; returns once the
    /// restore is done (the sync goes on in a task of its own).
    pub async fn start(store: IdbStore, plan: Plan, board: Rc<Board>) -> Result<Self, String> {
        let scope = DiscoveryScope::Repos(plan.repos.clone());
        let mut config = EngineConfig {
            bootstrap_relays: plan.bootstrap.clone(),
            discovery: scope.clone(),
            seed: (js_sys::Math::random() * 1e15) as u64,
            ..EngineConfig::default()
        };
        config.index.relay_policy.allow_private = plan.allow_private;
        // A page reload shortly after a sync catches up instead of reading every
        // filter's local set from IndexedDB.
        config.timing.restart_catch_up_window = config.timing.quick_reconnect_window;
        // New roots found by a catch-up wait for this before their history is asked
        // (a page has few repositories: a short tick costs little).
        config.timing.live_update_interval = std::time::Duration::from_millis(200);
        // The workers start while the store is read: the first events find them ready.
        plan.verifier.warm();
        let mut driver = Driver::new(
            SyncEngine::new(config),
            BrowserNetwork::default(),
            store,
            plan.verifier.clone(),
            BrowserClock,
        );
        driver.start(&scope).await?;
        let (commands, receiver) = mpsc::unbounded();
        let (done_tx, done_rx) = oneshot::channel();
        board.reset();
        wasm_bindgen_futures::spawn_local(async move {
            let exit = driver
                .run(receiver, |engine, now| {
                    board.observe(engine, now);
                    Control::Continue
                })
                .await;
            tracing::debug!(?exit, stats = ?driver.stats(), "sync stopped");
            let _ = done_tx.send(());
        });
        Ok(Self {
            commands,
            finished: done_rx.shared(),
        })
    }

    /// Sends the loop a command (ignored once it stopped).
    pub fn send(&self, command: Command) {
        let _ = self.commands.unbounded_send(command);
    }

    /// Stops the loop (in-flight writes finish first) and waits for it.
    pub async fn stop(self) {
        self.send(Command::Stop);
        let _ = self.finished.await;
    }
}
