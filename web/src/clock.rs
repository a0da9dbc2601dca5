//! Time for the engine (`Date.now()`), sleeping (`setTimeout`), and pacing: work on the
//! main thread gives the page a turn before it has held the thread for [`SLICE_MS`].

use std::cell::Cell;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use grasp_sync_core::engine::Time;
use grasp_sync_driver::Clock;
use wasm_bindgen::prelude::*;

/// How long a stretch of work may hold the thread before it yields (well under the
/// 50 ms after which a browser reports a long task).
pub const SLICE_MS: f64 = 12.0;

thread_local! {
    /// When the current stretch of work began (`performance.now()`).
    static SLICE_START: Cell<f64> = const { Cell::new(0.0) };
    /// Whether a timer is set that marks the thread as released when it fires.
    static SENTINEL: Cell<bool> = const { Cell::new(false) };
}

/// `performance.now()` in milliseconds (0 where there is no `performance`).
pub fn performance_now() -> f64 {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map_or(0.0, |p| p.now())
}

/// Whether the current stretch of work has used its slice. The first call after the
/// thread was released starts a new slice.
pub fn slice_used() -> bool {
    arm_sentinel();
    performance_now() - SLICE_START.with(Cell::get) > SLICE_MS
}

/// A stretch of requests placed on an IndexedDB transaction, which cannot yield to a
/// timer (it would commit): past [`SLICE_MS`], the caller awaits its latest request
/// instead — the answer is a task of its own, so the page gets a turn, and the
/// transaction stays active in its callback.
pub struct Stretch(f64);

impl Stretch {
    /// Starts a stretch now.
    pub fn start() -> Self {
        Self(performance_now())
    }

    /// Whether the stretch held the thread for its slice; if so, the next starts now.
    pub fn used(&mut self) -> bool {
        let now = performance_now();
        let used = now - self.0 > SLICE_MS;
        if used {
            self.0 = now;
        }
        used
    }
}

/// Yields to the event loop when the slice is used (a macrotask, so input and rendering
/// get a turn); otherwise returns at once.
pub async fn pace() {
    if slice_used() {
        yield_now().await;
    }
}

/// Gives the event loop one turn.
pub async fn yield_now() {
    gloo_timers::future::TimeoutFuture::new(0).await;
    SLICE_START.with(|s| s.set(performance_now()));
}

/// Sets a zero-delay timer (once) that starts a new slice when it fires: it can only fire
/// after the thread was released.
fn arm_sentinel() {
    if SENTINEL.with(|s| s.replace(true)) {
        return;
    }
    let reset = Closure::once_into_js(|| {
        SENTINEL.with(|s| s.set(false));
        SLICE_START.with(|s| s.set(performance_now()));
    });
    let global = js_sys::global();
    let set_timeout = js_sys::Reflect::get(&global, &"setTimeout".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    match set_timeout {
        Some(f) if f.call2(&global, &reset, &0.into()).is_ok() => {}
        _ => SENTINEL.with(|s| s.set(false)),
    }
}

/// `Date.now()` and `setTimeout`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrowserClock;

impl Clock for BrowserClock {
    fn now(&self) -> Time {
        Time::from_millis(js_sys::Date::now().max(0.0) as u64)
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        let millis = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        gloo_timers::future::TimeoutFuture::new(millis).boxed_local()
    }

    fn pace(&self) -> Option<LocalBoxFuture<'static, ()>> {
        slice_used().then(|| yield_now().boxed_local())
    }
}
