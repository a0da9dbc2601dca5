//! A pool of module Web Workers that check packed batches (see [`super::packed`]).
//!
//! Workers start lazily and receive this page's compiled `WebAssembly.Module`. A worker
//! that reports an error, answers something malformed, cannot be posted to, or stays
//! silent past the timeout is terminated; the batches it held are returned as failed
//! (the caller checks them on the main thread), and a replacement is started at the
//! next dispatch while the pool's respawn budget lasts.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use futures::channel::oneshot;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/src/verify/spawn.js")]
extern "C" {
    #[wasm_bindgen(js_name = hardwareConcurrency)]
    fn hardware_concurrency() -> f64;
    #[wasm_bindgen(catch, js_name = spawnVerifier)]
    fn spawn_verifier(module: &JsValue, script: Option<String>)
        -> Result<web_sys::Worker, JsValue>;
}

// The worker script itself, named here so that wasm-bindgen copies it beside spawn.js
// (which starts it by a URL relative to itself and imports its protocol number).
#[wasm_bindgen(module = "/src/verify/worker.js")]
extern "C" {
    #[wasm_bindgen(thread_local_v2, js_name = protocol)]
    static WORKER_PROTOCOL: f64;
}

/// At most this many workers by default, however many cores the browser reports.
pub const MAX_DEFAULT_WORKERS: usize = 4;

/// The default pool size: the cores the browser reports, capped.
pub fn default_size() -> usize {
    let cores = hardware_concurrency();
    if cores >= 1.0 {
        (cores as usize).min(MAX_DEFAULT_WORKERS)
    } else {
        2
    }
}

/// How a pool's workers are started.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Workers kept running.
    pub size: usize,
    /// A script URL replacing the bundled worker.js (tests).
    pub script: Option<String>,
    /// A batch unanswered this long fails its worker.
    pub timeout_ms: u32,
    /// Replacements started over the pool's life for workers that failed.
    pub respawns: usize,
}

/// A running pool.
pub struct Pool {
    config: PoolConfig,
    workers: RefCell<Vec<Rc<Slot>>>,
    /// Workers started so far (past the size, each start spends the respawn budget).
    started: Cell<usize>,
    respawns_left: Cell<usize>,
    next_id: Cell<u32>,
    closed: Cell<bool>,
}

/// A batch handed to a worker: its answer, and the worker to fail if none comes.
pub struct Dispatched {
    /// The flags, or cancelled when the worker failed.
    pub reply: oneshot::Receiver<Vec<u8>>,
    /// The worker holding the batch.
    pub worker: Rc<Slot>,
}

impl Pool {
    /// A pool that starts workers when first used.
    pub fn new(config: PoolConfig) -> Self {
        let respawns = config.respawns;
        Self {
            config,
            workers: RefCell::new(Vec::new()),
            started: Cell::new(0),
            respawns_left: Cell::new(respawns),
            next_id: Cell::new(0),
            closed: Cell::new(false),
        }
    }

    /// The configured number of workers.
    pub fn size(&self) -> usize {
        self.config.size
    }

    /// The configured batch timeout.
    pub fn timeout_ms(&self) -> u32 {
        self.config.timeout_ms
    }

    /// Live workers now, after replacing failed ones where the budget allows.
    pub fn live(&self) -> usize {
        self.refill();
        self.workers.borrow().len()
    }

    /// Hands a packed batch of `count` events to the least loaded live worker; `None`
    /// when no worker can take it.
    pub fn dispatch(&self, packed: Vec<u8>, count: usize) -> Option<Dispatched> {
        self.refill();
        let batch = js_sys::Uint8Array::from(packed.as_slice()).buffer();
        loop {
            let worker = {
                let workers = self.workers.borrow();
                workers.iter().min_by_key(|w| w.load.get()).cloned()?
            };
            let id = self.next_id.get();
            self.next_id.set(id.wrapping_add(1));
            let message = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&message, &"id".into(), &id.into());
            let _ = js_sys::Reflect::set(&message, &"batch".into(), &batch);
            let (tx, rx) = oneshot::channel();
            worker.pending.borrow_mut().insert(id, (tx, count));
            worker.load.set(worker.load.get() + count);
            let transfer = js_sys::Array::of1(&batch);
            match worker
                .worker
                .post_message_with_transfer(&message, &transfer)
            {
                Ok(()) => return Some(Dispatched { reply: rx, worker }),
                Err(e) => {
                    tracing::warn!(error = ?e, "posting to a verifier worker failed");
                    self.fail(&worker);
                    if batch.byte_length() == 0 {
                        return None; // transferred (detached) after all
                    }
                }
            }
        }
    }

    /// Terminates `worker`: its batches come back cancelled.
    pub fn fail(&self, worker: &Rc<Slot>) {
        super::count_failure();
        worker.stop();
        self.workers.borrow_mut().retain(|w| !Rc::ptr_eq(w, worker));
    }

    /// Fails every live worker (replacements start within the budget).
    pub fn fail_all(&self) {
        let workers: Vec<Rc<Slot>> = self.workers.borrow().clone();
        for worker in &workers {
            self.fail(worker);
        }
    }

    /// Terminates every worker and starts none again.
    pub fn shutdown(&self) {
        self.closed.set(true);
        for worker in self.workers.borrow_mut().drain(..) {
            worker.stop();
        }
    }

    /// Starts workers up to the pool's size, replacing failed ones within the budget.
    fn refill(&self) {
        if self.closed.get() {
            return;
        }
        self.workers.borrow_mut().retain(|w| !w.dead.get());
        let live = self.workers.borrow().len();
        for _ in live..self.config.size {
            if self.started.get() >= self.config.size {
                let left = self.respawns_left.get();
                if left == 0 {
                    return;
                }
                self.respawns_left.set(left - 1);
            }
            self.started.set(self.started.get() + 1);
            match Slot::spawn(self.config.script.clone()) {
                Ok(slot) => self.workers.borrow_mut().push(slot),
                Err(e) => {
                    // Workers cannot start here (no Worker, a policy): stop trying.
                    super::count_failure();
                    tracing::warn!(error = ?e, "a verifier worker could not start");
                    self.started.set(self.config.size);
                    self.respawns_left.set(0);
                    return;
                }
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for worker in self.workers.borrow().iter() {
            worker.stop();
        }
    }
}

type Handler = Closure<dyn FnMut(JsValue)>;
/// A batch a worker holds: where its flags go, and how many events it has.
type Waiting = (oneshot::Sender<Vec<u8>>, usize);

/// One worker and the batches it holds.
pub struct Slot {
    worker: web_sys::Worker,
    /// Batch id → (reply, event count).
    pending: RefCell<HashMap<u32, Waiting>>,
    load: Cell<usize>,
    dead: Cell<bool>,
    handlers: RefCell<Option<(Handler, Handler)>>,
}

impl Slot {
    fn spawn(script: Option<String>) -> Result<Rc<Self>, JsValue> {
        // Read once so the worker script stays part of the generated package.
        let _ = WORKER_PROTOCOL.with(|p| *p);
        let worker = spawn_verifier(&wasm_bindgen::module(), script)?;
        let slot = Rc::new(Self {
            worker,
            pending: RefCell::new(HashMap::new()),
            load: Cell::new(0),
            dead: Cell::new(false),
            handlers: RefCell::new(None),
        });
        let weak = Rc::downgrade(&slot);
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            if let Some(slot) = weak.upgrade() {
                slot.answer(&event);
            }
        });
        let weak: Weak<Self> = Rc::downgrade(&slot);
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |_event: JsValue| {
            if let Some(slot) = weak.upgrade() {
                tracing::warn!("a verifier worker failed");
                super::count_failure();
                slot.stop();
            }
        });
        let w = &slot.worker;
        w.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        w.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        w.set_onmessageerror(Some(on_error.as_ref().unchecked_ref()));
        *slot.handlers.borrow_mut() = Some((on_message, on_error));
        Ok(slot)
    }

    /// A message from the worker: flags of the right length, each 0 or 1, for a batch
    /// it holds; anything else fails the worker.
    fn answer(&self, event: &JsValue) {
        let data = js_sys::Reflect::get(event, &"data".into()).unwrap_or(JsValue::UNDEFINED);
        let id = js_sys::Reflect::get(&data, &"id".into())
            .ok()
            .and_then(|v| v.as_f64())
            .filter(|v| *v >= 0.0 && *v <= f64::from(u32::MAX))
            .map(|v| v as u32);
        let flags = js_sys::Reflect::get(&data, &"flags".into())
            .ok()
            .and_then(|v| v.dyn_into::<js_sys::Uint8Array>().ok())
            .map(|a| a.to_vec());
        let entry = id.and_then(|id| self.pending.borrow_mut().remove(&id));
        match (entry, flags) {
            (Some((reply, count)), Some(flags))
                if flags.len() == count && flags.iter().all(|f| *f <= 1) =>
            {
                self.load.set(self.load.get().saturating_sub(count));
                let _ = reply.send(flags);
            }
            _ => {
                let error = js_sys::Reflect::get(&data, &"error".into()).ok();
                tracing::warn!(?error, "a verifier worker answered wrongly");
                super::count_failure();
                self.stop();
            }
        }
    }

    /// Terminates the worker; every batch it held is cancelled.
    pub fn stop(&self) {
        if self.dead.replace(true) {
            return;
        }
        self.worker.terminate();
        self.worker.set_onmessage(None);
        self.worker.set_onerror(None);
        self.worker.set_onmessageerror(None);
        self.pending.borrow_mut().clear();
        self.load.set(0);
    }
}
