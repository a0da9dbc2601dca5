//! The JavaScript API (see `web/API.md`): `GraspSync.open`, track/untrack, query,
//! subscribe, publish, status, synced, close.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use grasp_sync_core::matching::event_matches;
use grasp_sync_core::RelayUrl;
use grasp_sync_core::RepoRef;
use grasp_sync_driver::Command;
use nostr::prelude::{Event, Filter};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::error::WebError;
use crate::idb::IdbStore;
use crate::outbox::Outbox;
use crate::session::{Plan, Session};
use crate::status::{to_js, Board};
use crate::tabs::{self, WriterLock};
use crate::verify::BrowserVerifier;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
export interface OpenOptions {
  name?: string;
  bootstrapRelays?: string[];
  allowPrivateRelays?: boolean;
  workers?: number;
}
export interface NostrEvent { id: string; pubkey: string; created_at: number; kind: number;
  tags: string[][]; content: string; sig: string; }
export interface Changes { added: NostrEvent[]; removed: string[] }
export type RelayState = "idle" | "connecting" | "syncing" | "in-sync" | "gaps" | "backoff" | "dead";
export interface RelayStatus {
  url: string; state: RelayState; method: "nip77" | "req" | null;
  received: number; stored: number; rejected: number; badFrames: number;
  bytesIn: number; bytesOut: number; roundTrips: number; failures: number;
  incompleteWindows: number; undeliveredIds: number; abandonedJobs: number;
  abandonedWaiting: number;   // of abandonedJobs, those not asked again yet (a gap)
  lastError: string | null;   // why the last connection failed
  storeError: string | null;  // why IndexedDB refused the last write (until one succeeds)
}
export interface SyncSummary {
  complete: boolean;
  relays: Array<RelayStatus & { result: "in-sync" | "failed" | "incomplete" }>;
  repos: number; stored: number; storeFailures: number;
  checkpointsWithEvents: number; checkpointsAfterEvents: number;
}
export interface PublishResult { stored: boolean; accepted: string[];
  refused: Array<{ relay: string; reason: string }> }
"#;

/// `OpenOptions` as given.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Options {
    name: Option<String>,
    #[serde(default)]
    bootstrap_relays: Vec<String>,
    #[serde(default)]
    allow_private_relays: bool,
    /// Verifying Web Workers (default: the cores; 0: the main thread).
    workers: Option<u32>,
}

/// Tracked repositories and `naddr` relay hints, as kept in the database.
#[derive(Debug, Default, Clone, serde::Serialize, Deserialize)]
struct Tracked {
    repos: Vec<String>,
    hints: Vec<String>,
}

const TRACKED_KEY: &str = "tracked";

/// The handler of messages from other tabs.
type MessageHandler = Closure<dyn FnMut(web_sys::MessageEvent)>;
/// A session restart in progress (later calls wait for it).
type Restart = futures::future::Shared<futures::future::LocalBoxFuture<'static, ()>>;

/// A sync of tracked repositories into an IndexedDB database.
#[wasm_bindgen]
pub struct GraspSync {
    inner: Rc<Inner>,
}

struct Inner {
    store: IdbStore,
    bootstrap: Vec<RelayUrl>,
    allow_private: bool,
    verifier: BrowserVerifier,
    tracked: RefCell<Tracked>,
    session: RefCell<Option<Session>>,
    board: Rc<Board>,
    subs: Rc<Subscriptions>,
    writer: Cell<bool>,
    lock: RefCell<Option<WriterLock>>,
    waiting: RefCell<Option<web_sys::AbortController>>,
    channel: Option<web_sys::BroadcastChannel>,
    _on_message: RefCell<Option<MessageHandler>>,
    closed: Cell<bool>,
    /// Whether a scheduled restart has not started yet.
    restart_queued: Cell<bool>,
    /// Serialises session restarts.
    restarting: RefCell<Option<Restart>>,
}

fn err(e: impl Into<WebError>) -> JsValue {
    e.into().into()
}

/// A filter given as a JS object.
fn filter_of(value: &JsValue) -> Result<Filter, JsValue> {
    let json = js_sys::JSON::stringify(value)
        .map_err(|_| err(WebError::new("invalid-filter", "the filter is not JSON")))?;
    Filter::from_json(String::from(json))
        .map_err(|e| err(WebError::new("invalid-filter", e.to_string())))
}

/// An event as a plain JS object.
fn event_js(event: &Event) -> JsValue {
    js_sys::JSON::parse(&event.as_json()).unwrap_or(JsValue::NULL)
}

/// A repository reference: `30617:<pubkey>:<d>` or `naddr1…` (with its relay hints).
fn parse_repo(input: &str) -> Result<(RepoRef, Vec<String>), JsValue> {
    let s = input.trim();
    let parsed = if s.starts_with("naddr1") || s.starts_with("nostr:naddr1") {
        RepoRef::from_naddr(s)
    } else {
        RepoRef::parse(s).map(|r| (r, Vec::new()))
    };
    parsed.map_err(|e| err(WebError::new("invalid-repo", format!("`{input}`: {e}"))))
}

#[wasm_bindgen]
impl GraspSync {
    /// Opens (creating or upgrading) the database, takes the writer role if no other tab
    /// has it, restores what the database knows and starts syncing the tracked
    /// repositories. Resolves once the restore is done.
    pub async fn open(
        #[wasm_bindgen(unchecked_param_type = "OpenOptions | undefined")] options: JsValue,
    ) -> Result<GraspSync, JsValue> {
        let options: Options = if options.is_undefined() || options.is_null() {
            Options::default()
        } else {
            serde_wasm_bindgen::from_value(options)
                .map_err(|e| err(WebError::new("invalid-options", e.to_string())))?
        };
        let mut bootstrap = Vec::new();
        for url in &options.bootstrap_relays {
            let parsed = RelayUrl::parse(url).map_err(|e| {
                err(WebError::new(
                    "invalid-options",
                    format!("relay `{url}`: {e}"),
                ))
            })?;
            bootstrap.push(parsed);
        }
        let name = options.name.unwrap_or_else(|| "grasp-sync".into());
        let store = IdbStore::open(&name).await.map_err(err)?;
        let tracked: Tracked = store
            .meta(TRACKED_KEY)
            .await
            .map_err(err)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let inner = Rc::new(Inner {
            channel: tabs::channel(&name),
            store,
            bootstrap,
            allow_private: options.allow_private_relays,
            verifier: BrowserVerifier::new(options.workers.map(|n| n as usize)),
            tracked: RefCell::new(tracked),
            session: RefCell::new(None),
            board: Rc::new(Board::default()),
            subs: Rc::new(Subscriptions::default()),
            writer: Cell::new(false),
            lock: RefCell::new(None),
            waiting: RefCell::new(None),
            _on_message: RefCell::new(None),
            closed: Cell::new(false),
            restart_queued: Cell::new(false),
            restarting: RefCell::new(None),
        });
        inner.listen_to_tabs();
        match tabs::try_lock(&name).await? {
            Some(lock) => {
                inner.become_writer(lock).await?;
                wasm_bindgen_futures::spawn_local(async {
                    let persisted = tabs::request_persistence().await;
                    tracing::debug!(persisted, "persistent storage");
                });
            }
            None => {
                inner.ask_writer_for_status();
                let weak = Rc::downgrade(&inner);
                let abort = tabs::wait_for_lock(&name, move |lock| {
                    if let Some(inner) = weak.upgrade() {
                        wasm_bindgen_futures::spawn_local(async move {
                            if let Err(e) = inner.take_over(lock).await {
                                tracing::error!(error = %crate::net::js_text(&e), "taking over failed");
                            }
                        });
                    }
                })?;
                *inner.waiting.borrow_mut() = Some(abort);
            }
        }
        Ok(GraspSync { inner })
    }

    /// Whether this instance syncs into the database (one per database across tabs).
    #[wasm_bindgen(getter, js_name = isWriter)]
    pub fn is_writer(&self) -> bool {
        self.inner.writer.get()
    }

    /// Tracks a repository (`30617:<pubkey>:<d>` or `naddr1…`).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn track(&self, repo: String) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            inner.check_writer()?;
            let (repo, hints) = parse_repo(&repo)?;
            let changed = {
                let mut t = inner.tracked.borrow_mut();
                let key = repo.to_string();
                let mut changed = false;
                if !t.repos.contains(&key) {
                    t.repos.push(key);
                    changed = true;
                }
                for h in hints {
                    if !t.hints.contains(&h) {
                        t.hints.push(h);
                        changed = true;
                    }
                }
                changed
            };
            if changed {
                inner.save_tracked().await?;
                inner.schedule_restart();
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Stops tracking a repository (its stored events stay).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn untrack(&self, repo: String) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            inner.check_writer()?;
            let (repo, _) = parse_repo(&repo)?;
            let key = repo.to_string();
            let removed = {
                let mut t = inner.tracked.borrow_mut();
                let before = t.repos.len();
                t.repos.retain(|r| *r != key);
                before != t.repos.len()
            };
            if removed {
                inner.save_tracked().await?;
                inner.schedule_restart();
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The tracked repositories, as `30617:<pubkey>:<d>`.
    pub fn repos(&self) -> Vec<String> {
        self.inner.tracked.borrow().repos.clone()
    }

    /// Stored events matching a NIP-01 filter, newest first, at most `limit`.
    #[wasm_bindgen(unchecked_return_type = "Promise<NostrEvent[]>")]
    pub fn query(&self, filter: JsValue) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            inner.check_open()?;
            let filter = filter_of(&filter)?;
            let events = inner.store.query_events(&filter).await.map_err(err)?;
            let out = js_sys::Array::new();
            for e in &events {
                out.push(&event_js(e));
            }
            Ok(out.into())
        })
    }

    /// Calls `onChanges({added, removed})` after each committed batch that adds or
    /// removes events matching `filter` (here or, for a reading tab, in the writer tab).
    pub fn subscribe(
        &self,
        filter: JsValue,
        #[wasm_bindgen(unchecked_param_type = "(changes: Changes) => void")]
        on_changes: js_sys::Function,
    ) -> Result<Subscription, JsValue> {
        self.inner.check_open()?;
        let filter = filter_of(&filter)?;
        let id = self.inner.subs.add(filter, on_changes);
        let subs = Rc::downgrade(&self.inner.subs);
        Ok(Subscription {
            cancel: Some(Box::new(move || {
                if let Some(subs) = subs.upgrade() {
                    subs.remove(id);
                }
            })),
        })
    }

    /// Publishes a signed event to the relays of the repository it belongs to; once a
    /// relay accepts it, it goes through the same acceptance into the database.
    #[wasm_bindgen(unchecked_return_type = "Promise<PublishResult>")]
    pub fn publish(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NostrEvent")] event: JsValue,
    ) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            inner.check_writer()?;
            let json = js_sys::JSON::stringify(&event)
                .map_err(|_| err(WebError::new("invalid-event", "the event is not JSON")))?;
            let json = String::from(json);
            let event = Event::from_json(&json)
                .map_err(|e| err(WebError::new("invalid-event", e.to_string())))?;
            event
                .verify()
                .map_err(|e| err(WebError::new("invalid-event", e.to_string())))?;
            let relays = crate::publish::relays_for(
                &inner.store,
                &event,
                inner.allow_private,
                &inner.bootstrap,
            )
            .await
            .map_err(err)?;
            let (accepted, refused) = crate::publish::send_to(&relays, &event).await;
            let mut stored = false;
            if !accepted.is_empty() {
                let (reply, outcome) = futures::channel::oneshot::channel();
                if let Some(session) = inner.session.borrow().as_ref() {
                    session.send(Command::Publish {
                        event: event.clone(),
                        json_bytes: json.len(),
                        reply,
                    });
                }
                stored = matches!(
                    outcome.await,
                    Ok(grasp_sync_core::engine::PublishOutcome::Stored)
                );
            }
            Ok(to_js(&crate::publish::PublishResult {
                stored,
                accepted,
                refused,
            }))
        })
    }

    /// Every relay's status now (in a reading tab: the writer tab's, as last heard).
    #[wasm_bindgen(unchecked_return_type = "RelayStatus[]")]
    pub fn status(&self) -> JsValue {
        to_js(&*self.inner.board.relays.borrow())
    }

    /// Calls `callback(relays)` when relay statuses change (at most about 4 times a second).
    #[wasm_bindgen(js_name = onStatus)]
    pub fn on_status(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(relays: RelayStatus[]) => void")]
        callback: js_sys::Function,
    ) -> Subscription {
        let id = self.inner.board.listen(callback);
        let board = Rc::downgrade(&self.inner.board);
        Subscription {
            cancel: Some(Box::new(move || {
                if let Some(board) = board.upgrade() {
                    board.unlisten(id);
                }
            })),
        }
    }

    /// Resolves when every relay is in sync or has failed; `complete` is true only when
    /// every relay ended in sync with no gap. A reading tab resolves with the writer
    /// tab's summary, which it hears of (without BroadcastChannel: at once, with no
    /// relays and `complete: false`).
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncSummary>")]
    pub fn synced(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            inner.check_open()?;
            loop {
                let pending = inner.restarting.borrow().clone();
                match pending {
                    Some(pending) => pending.await,
                    None => break,
                }
                if !inner.restart_queued.get() {
                    break;
                }
            }
            // A reading tab waits for the writer tab's sync, which it hears of.
            let mirrored = !inner.writer.get() && inner.channel.is_some();
            if inner.session.borrow().is_none() && !mirrored {
                return Ok(to_js(&inner.idle_summary()));
            }
            let summary = match inner.board.wait() {
                Ok(summary) => summary,
                Err(waiting) => waiting
                    .await
                    .map_err(|_| err(WebError::new("closed", "closed before the sync settled")))?,
            };
            Ok(to_js(&summary))
        })
    }

    /// Stops syncing (in-flight writes finish), releases the writer role and closes the
    /// database.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            if inner.closed.replace(true) {
                return Ok(JsValue::UNDEFINED);
            }
            let session = inner.session.borrow_mut().take();
            if let Some(session) = session {
                session.stop().await;
            }
            inner.store.set_on_saved(None);
            inner.board.set_outlet(None);
            if let Some(abort) = inner.waiting.borrow_mut().take() {
                abort.abort();
            }
            if let Some(channel) = &inner.channel {
                channel.set_onmessage(None);
                channel.close();
            }
            inner.store.close();
            inner.verifier.shutdown();
            if let Some(mut lock) = inner.lock.borrow_mut().take() {
                lock.release();
            }
            inner.writer.set(false);
            Ok(JsValue::UNDEFINED)
        })
    }
}

impl Inner {
    fn check_open(&self) -> Result<(), JsValue> {
        if self.closed.get() {
            return Err(err(WebError::new("closed", "this instance was closed")));
        }
        Ok(())
    }

    fn check_writer(&self) -> Result<(), JsValue> {
        self.check_open()?;
        if !self.writer.get() {
            return Err(err(WebError::new(
                "read-only",
                "another tab syncs this database; this one only reads",
            )));
        }
        Ok(())
    }

    /// What `synced()` answers when no sync runs: complete only for a writer with
    /// nothing to track.
    fn idle_summary(&self) -> crate::status::SyncSummary {
        crate::status::SyncSummary {
            complete: self.writer.get() && self.tracked.borrow().repos.is_empty(),
            relays: Vec::new(),
            repos: self.tracked.borrow().repos.len(),
            stored: 0,
            store_failures: 0,
            checkpoints_with_events: 0,
            checkpoints_after_events: 0,
        }
    }

    /// A reading tab asks the writer tab for its statuses (answered on the channel).
    fn ask_writer_for_status(&self) {
        if let Some(channel) = &self.channel {
            let message = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&message, &"hello".into(), &true.into());
            let _ = channel.post_message(&message);
        }
    }

    async fn save_tracked(&self) -> Result<(), JsValue> {
        let text = serde_json::to_string(&*self.tracked.borrow()).unwrap_or_default();
        self.store.set_meta(TRACKED_KEY, &text).await.map_err(err)?;
        if let Some(channel) = &self.channel {
            let message = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&message, &"tracked".into(), &text.into());
            let _ = channel.post_message(&message);
        }
        Ok(())
    }

    /// Becomes the writer: saves notify subscribers and other tabs; the sync starts.
    async fn become_writer(self: &Rc<Self>, lock: WriterLock) -> Result<(), JsValue> {
        *self.lock.borrow_mut() = Some(lock);
        self.writer.set(true);
        let subs = self.subs.clone();
        let outbox = self.channel.clone().map(|c| Rc::new(Outbox::new(c)));
        let changes = outbox.clone();
        self.store
            .set_on_saved(Some(Rc::new(move |added: &[Event], removed: &[Event]| {
                subs.deliver(added, removed);
                if let Some(outbox) = &changes {
                    outbox.changes(added, removed);
                }
            })));
        if let Some(outbox) = outbox {
            self.board.set_outlet(Some(Box::new(move |relays, done| {
                outbox.post(status_message(relays, done));
            })));
        }
        self.restart().await
    }

    /// Takes over as writer after the writer tab closed.
    async fn take_over(self: &Rc<Self>, lock: WriterLock) -> Result<(), JsValue> {
        if self.closed.get() {
            return Ok(());
        }
        self.waiting.borrow_mut().take();
        if let Some(t) = self
            .store
            .meta(TRACKED_KEY)
            .await
            .map_err(err)?
            .and_then(|t| serde_json::from_str(&t).ok())
        {
            *self.tracked.borrow_mut() = t;
        }
        self.become_writer(lock).await
    }

    /// Restarts the session in the background with what is tracked then: calls that
    /// come while one is queued join it (tracking ten repositories is one restart).
    /// `synced()` waits for it.
    fn schedule_restart(self: &Rc<Self>) {
        if self.restart_queued.replace(true) {
            return;
        }
        let previous = self.restarting.borrow().clone();
        let this = self.clone();
        let job: futures::future::LocalBoxFuture<'static, ()> = Box::pin(async move {
            if let Some(previous) = previous {
                previous.await;
            }
            crate::clock::yield_now().await;
            this.restart_queued.set(false);
            if let Err(e) = this.restart_now().await {
                crate::error::console_warn(&format!(
                    "grasp-sync: restarting the sync failed: {}",
                    crate::net::js_text(&e)
                ));
            }
        });
        let job = futures::FutureExt::shared(job);
        *self.restarting.borrow_mut() = Some(job.clone());
        wasm_bindgen_futures::spawn_local(job);
    }

    /// Stops the running session, if any, and starts one for what is tracked now.
    async fn restart(self: &Rc<Self>) -> Result<(), JsValue> {
        let previous = self.restarting.borrow().clone();
        if let Some(previous) = previous {
            previous.await;
        }
        let this = self.clone();
        let (tx, rx) = futures::channel::oneshot::channel::<Result<(), JsValue>>();
        let job: futures::future::LocalBoxFuture<'static, ()> = Box::pin(async move {
            let result = this.restart_now().await;
            let _ = tx.send(result);
        });
        let job = futures::FutureExt::shared(job);
        *self.restarting.borrow_mut() = Some(job.clone());
        job.await;
        rx.await.unwrap_or(Ok(()))
    }

    async fn restart_now(&self) -> Result<(), JsValue> {
        let old = self.session.borrow_mut().take();
        if let Some(old) = old {
            old.stop().await;
        }
        if self.closed.get() {
            return Ok(());
        }
        let tracked = self.tracked.borrow().clone();
        let repos: Vec<RepoRef> = tracked
            .repos
            .iter()
            .filter_map(|r| RepoRef::parse(r).ok())
            .collect();
        if repos.is_empty() {
            self.board.idle(self.idle_summary());
            return Ok(());
        }
        let mut bootstrap = self.bootstrap.clone();
        for hint in &tracked.hints {
            if let Ok(url) = RelayUrl::parse(hint) {
                if !bootstrap.contains(&url) {
                    bootstrap.push(url);
                }
            }
        }
        let plan = Plan {
            repos,
            bootstrap,
            allow_private: self.allow_private,
            verifier: self.verifier.clone(),
        };
        let session = Session::start(self.store.clone(), plan, self.board.clone())
            .await
            .map_err(|e| err(WebError::new("store", e)))?;
        *self.session.borrow_mut() = Some(session);
        Ok(())
    }

    /// Hears of other tabs' changes (a reading tab) and tracked lists.
    fn listen_to_tabs(self: &Rc<Self>) {
        let Some(channel) = &self.channel else { return };
        let weak = Rc::downgrade(self);
        let on_message =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |m: web_sys::MessageEvent| {
                let Some(inner) = weak.upgrade() else { return };
                let data = m.data();
                let field = |name: &str| {
                    js_sys::Reflect::get(&data, &name.into())
                        .ok()
                        .and_then(|v| v.as_string())
                };
                if inner.writer.get() {
                    // A reading tab opened: it hears where the sync is.
                    if js_sys::Reflect::has(&data, &"hello".into()).unwrap_or(false) {
                        inner.board.publish();
                    }
                    return;
                }
                if let Some(status) = field("status") {
                    let relays = serde_json::from_str(&status).unwrap_or_default();
                    let done = field("done").and_then(|d| serde_json::from_str(&d).ok());
                    inner.board.mirror(relays, done);
                    return;
                }
                if let Some(text) = js_sys::Reflect::get(&data, &"tracked".into())
                    .ok()
                    .and_then(|t| t.as_string())
                {
                    if let Ok(t) = serde_json::from_str(&text) {
                        *inner.tracked.borrow_mut() = t;
                    }
                    return;
                }
                let read = |name: &str| -> Vec<Event> {
                    js_sys::Reflect::get(&data, &name.into())
                        .ok()
                        .map(|a| js_sys::Array::from(&a))
                        .map(|a| {
                            a.iter()
                                .filter_map(|j| j.as_string())
                                .filter_map(|j| Event::from_json(j).ok())
                                .collect()
                        })
                        .unwrap_or_default()
                };
                inner.subs.deliver(&read("added"), &read("removed"));
            });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        *self._on_message.borrow_mut() = Some(on_message);
    }
}

/// `{status: json, done?: json}`: the writer's relay statuses and, once the sync
/// settled, its summary, for reading tabs.
fn status_message(
    relays: &[crate::status::RelayStatus],
    done: Option<&crate::status::SyncSummary>,
) -> JsValue {
    let message = js_sys::Object::new();
    let status = serde_json::to_string(relays).unwrap_or_else(|_| "[]".into());
    let _ = js_sys::Reflect::set(&message, &"status".into(), &status.into());
    if let Some(done) = done.and_then(|d| serde_json::to_string(d).ok()) {
        let _ = js_sys::Reflect::set(&message, &"done".into(), &done.into());
    }
    message.into()
}

/// A subscription or status listener; `close()` ends it.
#[wasm_bindgen]
pub struct Subscription {
    cancel: Option<Box<dyn FnOnce()>>,
}

#[wasm_bindgen]
impl Subscription {
    /// Ends it (idempotent).
    pub fn close(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel();
        }
    }
}

/// The page's subscriptions.
#[derive(Default)]
struct Subscriptions {
    next: Cell<u32>,
    list: RefCell<Vec<(u32, Filter, js_sys::Function)>>,
}

impl Subscriptions {
    fn add(&self, filter: Filter, f: js_sys::Function) -> u32 {
        let id = self.next.get();
        self.next.set(id + 1);
        self.list.borrow_mut().push((id, filter, f));
        id
    }

    fn remove(&self, id: u32) {
        self.list.borrow_mut().retain(|(i, _, _)| *i != id);
    }

    /// One call per subscription with what of this batch matches its filter.
    fn deliver(&self, added: &[Event], removed: &[Event]) {
        let list: Vec<(Filter, js_sys::Function)> = self
            .list
            .borrow()
            .iter()
            .map(|(_, f, cb)| (f.clone(), cb.clone()))
            .collect();
        for (filter, callback) in list {
            let plus = js_sys::Array::new();
            for e in added.iter().filter(|e| event_matches(&filter, e)) {
                plus.push(&event_js(e));
            }
            let minus = js_sys::Array::new();
            for e in removed.iter().filter(|e| event_matches(&filter, e)) {
                minus.push(&e.id.to_hex().into());
            }
            if plus.length() == 0 && minus.length() == 0 {
                continue;
            }
            let changes = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&changes, &"added".into(), &plus);
            let _ = js_sys::Reflect::set(&changes, &"removed".into(), &minus);
            if let Err(e) = callback.call1(&JsValue::NULL, &changes) {
                tracing::warn!(error = %crate::net::js_text(&e), "a change listener threw");
            }
        }
    }
}
