//! The sync engine driven by a hostile bootstrap relay: whatever frames it sends, with
//! time passing in between, the engine never panics, its output queue stays bounded,
//! and it never asks to be woken in the past again right after a timeout (a busy loop
//! for the driver).
//!
//! The input is split on `\n` into chunks, each one step:
//! - empty: 35 s pass (past the EOSE and NIP-77 timeouts);
//! - `~` and n more bytes: 60 s × 2^min(n, 12) pass (backoff, Dead, full reconciliation);
//! - `!`: the relay disconnects;
//! - `+`: every relay the engine asked to connect to since the last `+` connects;
//! - anything else: a text frame from the relay (lossy UTF-8).
//!
//! After each step 100 ms pass and `handle_timeout` runs. The driver answers every
//! `LoadLocalItems` with no items, every `Verify` with all valid and every `Store` with
//! success, at once.
//!
//! Set `GRASP_FUZZ_SKIP_KNOWN=1` to skip the busy-loop check (e.g. while a known
//! instance of it is unfixed).
use std::time::Duration;

use crate::common::skip_known;
use grasp_sync_core::engine::{EngineConfig, Input, Output, SyncEngine, Time};
use grasp_sync_core::{RelayId, RelayUrl};

/// 2023-11-14T22:13:20Z: events in the seeds are a little older.
const T0: Time = Time::from_secs(1_700_000_000);
/// Most outputs queued between two calls into the engine.
const MAX_QUEUED: usize = 100_000;
/// Most answer rounds (answers producing outputs needing answers) after one step.
const MAX_ROUNDS: usize = 1_000;

struct Driver {
    engine: SyncEngine,
    relay: RelayId,
    now: Time,
    /// Relays the engine asked to connect to, not yet connected.
    connecting: Vec<RelayId>,
}

impl Driver {
    /// Drains the outputs, answering the store's and the verifier's requests until the
    /// engine asks nothing more.
    fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut answers = Vec::new();
            let mut queued = 0usize;
            while let Some(output) = self.engine.poll_output() {
                queued += 1;
                assert!(queued < MAX_QUEUED, "more than {MAX_QUEUED} outputs queued");
                match output {
                    Output::LoadLocalItems { request, .. } => {
                        answers.push(Input::LocalItemsLoaded {
                            request,
                            items: Vec::new(),
                        });
                    }
                    Output::Verify { batch, events } => answers.push(Input::Verified {
                        batch,
                        valid: vec![true; events.len()],
                    }),
                    Output::Store { batch, .. } => answers.push(Input::Stored {
                        batch,
                        result: Ok(Vec::new()),
                    }),
                    // No NIP-11 document: the sessions start at once.
                    Output::FetchInfo { relay, .. } => answers.push(Input::InfoFetched {
                        relay,
                        document: None,
                    }),
                    Output::Connect { relay, .. } if !self.connecting.contains(&relay) => {
                        self.connecting.push(relay);
                    }
                    _ => {}
                }
            }
            if answers.is_empty() {
                return;
            }
            for answer in answers {
                self.engine.handle_input(self.now, answer);
            }
        }
        panic!("the engine kept asking for answers for {MAX_ROUNDS} rounds");
    }

    fn input(&mut self, input: Input) {
        self.engine.handle_input(self.now, input);
        self.settle();
    }

    fn timeout(&mut self) {
        self.engine.handle_timeout(self.now);
        self.settle();
        // A deadline that already passed is handled by the call that just returned;
        // one that is still due after a few more calls would make a driver spin.
        for _ in 0..8 {
            match self.engine.poll_timeout() {
                Some(at) if at <= self.now => {
                    self.engine.handle_timeout(self.now);
                    self.settle();
                }
                _ => return,
            }
        }
        if skip_known() {
            return;
        }
        let due = self.engine.poll_timeout();
        panic!(
            "poll_timeout stays at {due:?}, not after now = {:?}",
            self.now
        );
    }

    fn pass(&mut self, d: Duration) {
        self.now = self.now + d;
    }
}

/// One fuzz input: panics when the property above does not hold.
pub fn check(data: &[u8]) {
    let Ok(relay) = RelayUrl::parse("wss://relay.example.com") else {
        panic!("bootstrap relay URL refused");
    };
    let engine = SyncEngine::new(EngineConfig {
        bootstrap_relays: vec![relay.clone()],
        ..Default::default()
    });
    let Some(id) = engine.relay_id(&relay) else {
        panic!("bootstrap relay unknown to the engine");
    };
    let mut driver = Driver {
        engine,
        relay: id,
        now: T0,
        connecting: Vec::new(),
    };
    driver.timeout();
    driver.connecting.retain(|r| *r != id);
    driver.input(Input::Connected { relay: id });

    for chunk in data.split(|b| *b == b'\n') {
        match chunk {
            [] => driver.pass(Duration::from_secs(35)),
            [b'~', rest @ ..] => {
                let doublings = rest.len().min(12) as u32;
                driver.pass(Duration::from_secs(60 << doublings));
            }
            [b'!', ..] => driver.input(Input::Disconnected {
                relay: driver.relay,
                reason: String::from("fuzz"),
            }),
            [b'+', ..] => {
                for relay in std::mem::take(&mut driver.connecting) {
                    driver.input(Input::Connected { relay });
                }
            }
            frame => driver.input(Input::Frame {
                relay: driver.relay,
                text: String::from_utf8_lossy(frame).into_owned(),
            }),
        }
        driver.pass(Duration::from_millis(100));
        driver.timeout();
    }
}
