//! A manual clock: virtual time moves only when the test says, and sleeps wake in
//! deadline order.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::FutureExt as _;
use grasp_sync_core::engine::Time;
use grasp_sync_driver::Clock;
use nostr::prelude::Timestamp;

thread_local! {
    /// The virtual time in seconds, for the store's expiry checks (a `fn` pointer).
    static VIRTUAL_SECS: Cell<u64> = const { Cell::new(0) };
}

pub(crate) fn virtual_timestamp() -> Timestamp {
    Timestamp::from(VIRTUAL_SECS.with(Cell::get))
}

#[derive(Default)]
pub(crate) struct Timers {
    pub(crate) now: Time,
    /// Pending sleeps by (deadline, key), with the waker of their last poll.
    pub(crate) sleeps: BTreeMap<(Time, u64), Option<Waker>>,
    pub(crate) next_key: u64,
}

/// A clock whose time moves only when the test says.
#[derive(Clone)]
pub(crate) struct ManualClock(Rc<RefCell<Timers>>);

impl ManualClock {
    pub(crate) fn new(start: Time) -> Self {
        VIRTUAL_SECS.with(|c| c.set(start.as_millis() / 1000));
        Self(Rc::new(RefCell::new(Timers {
            now: start,
            ..Timers::default()
        })))
    }

    /// The earliest deadline of a live sleep.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.0.borrow().sleeps.keys().next().map(|(at, _)| *at)
    }

    /// Sets the time to `at` and wakes every sleep due by then.
    pub(crate) fn advance_to(&self, at: Time) {
        let wakers: Vec<Waker> = {
            let mut timers = self.0.borrow_mut();
            timers.now = timers.now.max(at);
            let now = timers.now;
            timers
                .sleeps
                .range_mut(..=(now, u64::MAX))
                .filter_map(|(_, w)| w.take())
                .collect()
        };
        VIRTUAL_SECS.with(|c| c.set(at.as_millis() / 1000));
        for waker in wakers {
            waker.wake();
        }
    }
}

pub(crate) struct Sleep {
    pub(crate) timers: Rc<RefCell<Timers>>,
    pub(crate) key: (Time, u64),
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut timers = self.timers.borrow_mut();
        if timers.now >= self.key.0 {
            timers.sleeps.remove(&self.key);
            Poll::Ready(())
        } else {
            timers.sleeps.insert(self.key, Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.timers.borrow_mut().sleeps.remove(&self.key);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        self.0.borrow().now
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        let mut timers = self.0.borrow_mut();
        timers.next_key += 1;
        let key = (timers.now + duration, timers.next_key);
        Sleep {
            timers: Rc::clone(&self.0),
            key,
        }
        .boxed_local()
    }
}
