//! Live events to client connections: each committed batch is matched once, against the
//! [`SubIndex`] of every live subscription, and each connection that has a match gets
//! one [`Delivery`] in its own bounded mailbox. A connection with no match is not woken.
//!
//! - **Order.** Batches are matched under one lock in the order they are committed, so
//!   each mailbox holds its deliveries in commit order, and a delivery's hits follow the
//!   batch's order.
//! - **Listen before querying.** A REQ registers its subscription here before its stored
//!   events are read, so nothing committed meanwhile is missed; the connection reads its
//!   mailbox only between frames, so those events follow the REQ's EOSE.
//! - **Replaced and closed.** A hit names the registration ([`SubId`]) it matched; the
//!   connection drops hits for a registration that is no longer the open one.
//! - **Back-pressure.** A mailbox holds at most [`MAILBOX_CAPACITY`] deliveries (one per
//!   matching batch; the broadcast before this held as many batches). A connection that
//!   falls further behind loses what is queued and is told it lagged: it closes its
//!   subscriptions as too slow, as before. Memory is that bound per connection plus the
//!   index, which the connection limits bound.
//! - **Disconnect.** Dropping a connection's [`Subscriber`] removes its subscriptions
//!   and its mailbox, on every path out of the connection's task.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nostr::prelude::{Event, Filter};
use tokio::sync::Notify;

use super::subindex::{ConnId, SubId, SubIndex};

/// A batch of committed events, in commit order.
pub type Committed = Arc<[Event]>;

/// Deliveries a connection may have waiting before it is told it lagged.
pub const MAILBOX_CAPACITY: usize = 4_096;

/// One event of a batch for one subscription of the connection.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The event's position in the batch.
    pub event: u32,
    /// The registration it matched.
    pub sub: SubId,
    /// Its subscription id on the wire.
    pub name: Arc<str>,
}

/// What one committed batch brings one connection.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The batch.
    pub batch: Committed,
    /// Its events for this connection's subscriptions, in batch order.
    pub hits: Vec<Hit>,
}

impl Delivery {
    /// The events and the subscription each goes to, in order.
    pub fn events(&self) -> impl Iterator<Item = (&Event, &Hit)> {
        self.hits
            .iter()
            .filter_map(|hit| Some((self.batch.get(hit.event as usize)?, hit)))
    }
}

/// What a connection takes from its mailbox.
#[derive(Debug, Default)]
pub struct Taken {
    /// Deliveries in commit order.
    pub deliveries: Vec<Delivery>,
    /// Whether deliveries were lost because the mailbox was full (then `deliveries` is
    /// what came after).
    pub lagged: bool,
}

#[derive(Default)]
struct Queue {
    deliveries: VecDeque<Delivery>,
    lagged: bool,
}

#[derive(Default)]
struct Mailbox {
    queue: Mutex<Queue>,
    ready: Notify,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned queue is still a valid queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, delivery: Delivery) {
        {
            let mut queue = self.lock();
            if queue.lagged {
                // Already told: what comes until it reads is lost with the rest.
                return;
            }
            if queue.deliveries.len() >= MAILBOX_CAPACITY {
                queue.deliveries.clear();
                queue.lagged = true;
            } else {
                queue.deliveries.push_back(delivery);
            }
        }
        self.ready.notify_one();
    }
}

#[derive(Default)]
struct State {
    next_conn: ConnId,
    index: SubIndex,
    mailboxes: HashMap<ConnId, Arc<Mailbox>>,
}

/// Every connection's live subscriptions and mailbox; shared by the store (which hands
/// it each committed batch) and the connections.
#[derive(Default)]
pub struct Fanout {
    state: Mutex<State>,
}

impl Fanout {
    /// No connection yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it: index updates are plain map edits.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection's handle.
    pub fn connect(self: &Arc<Self>) -> Subscriber {
        let mailbox = Arc::new(Mailbox::default());
        let mut state = self.lock();
        state.next_conn += 1;
        let conn = state.next_conn;
        state.mailboxes.insert(conn, Arc::clone(&mailbox));
        Subscriber {
            fanout: Arc::clone(self),
            conn,
            mailbox,
        }
    }

    /// Subscriptions open over all connections.
    pub fn subscriptions(&self) -> usize {
        self.lock().index.subscriptions()
    }

    /// Matches a committed batch against the live subscriptions and hands each
    /// connection with a match its delivery.
    pub fn deliver(&self, batch: Committed) {
        let state = self.lock();
        if state.index.is_empty() {
            return;
        }
        let mut hits: HashMap<ConnId, Vec<Hit>> = HashMap::new();
        for (i, event) in batch.iter().enumerate() {
            let Ok(position) = u32::try_from(i) else {
                break;
            };
            state.index.for_each_match(event, |m| {
                hits.entry(m.conn).or_default().push(Hit {
                    event: position,
                    sub: m.sub,
                    name: m.name,
                });
            });
        }
        // Still under the lock, so the next batch queues behind this one.
        for (conn, hits) in hits {
            if let Some(mailbox) = state.mailboxes.get(&conn) {
                mailbox.push(Delivery {
                    batch: Arc::clone(&batch),
                    hits,
                });
            }
        }
    }
}

/// One connection's side of the fan-out: its subscriptions and its mailbox. Dropping it
/// removes both.
pub struct Subscriber {
    fanout: Arc<Fanout>,
    conn: ConnId,
    mailbox: Arc<Mailbox>,
}

impl Subscriber {
    /// Opens (or replaces) subscription `name` with `filters`; events committed from now
    /// on that match come to the mailbox under the returned registration.
    pub fn subscribe(&self, name: &str, filters: Vec<Filter>) -> SubId {
        self.fanout.lock().index.insert(self.conn, name, filters)
    }

    /// Closes subscription `name`; whether it was open.
    pub fn unsubscribe(&self, name: &str) -> bool {
        self.fanout.lock().index.remove(self.conn, name)
    }

    /// Closes every subscription of this connection; how many were open.
    pub fn unsubscribe_all(&self) -> usize {
        self.fanout.lock().index.remove_conn(self.conn)
    }

    /// Waits until the mailbox has something (returns at once if it had since the last
    /// [`Self::take`]).
    pub async fn ready(&self) {
        self.mailbox.ready.notified().await;
    }

    /// Empties the mailbox.
    pub fn take(&self) -> Taken {
        let mut queue = self.mailbox.lock();
        Taken {
            deliveries: queue.deliveries.drain(..).collect(),
            lagged: std::mem::take(&mut queue.lagged),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut state = self.fanout.lock();
        state.index.remove_conn(self.conn);
        state.mailboxes.remove(&self.conn);
    }
}

#[cfg(test)]
mod tests {
    use grasp_sync_testkit::corpus::{keys, sign};
    use nostr::prelude::Kind;

    use super::*;

    fn event(kind: u16, n: u64) -> Event {
        sign(&keys(1), kind, 1_000 + n, Vec::new(), "x")
    }

    fn names(taken: &Taken) -> Vec<(String, u64)> {
        taken
            .deliveries
            .iter()
            .flat_map(|d| {
                d.events()
                    .map(|(e, h)| (h.name.to_string(), e.created_at.as_secs()))
            })
            .collect()
    }

    #[test]
    fn only_connections_with_a_match_get_a_delivery_in_commit_order() {
        let fanout = Arc::new(Fanout::new());
        let a = fanout.connect();
        let b = fanout.connect();
        a.subscribe("one", vec![Filter::new().kind(Kind::from(1))]);
        b.subscribe("two", vec![Filter::new().kind(Kind::from(7))]);
        fanout.deliver(vec![event(1, 0), event(7, 1), event(1, 2)].into());
        fanout.deliver(vec![event(1, 3)].into());
        assert_eq!(
            names(&a.take()),
            vec![
                ("one".into(), 1_000),
                ("one".into(), 1_002),
                ("one".into(), 1_003)
            ]
        );
        assert_eq!(names(&b.take()), vec![("two".into(), 1_001)]);
        fanout.deliver(vec![event(7, 4)].into());
        assert!(a.take().deliveries.is_empty());
    }

    #[test]
    fn a_full_mailbox_reports_lag_once_and_a_dropped_subscriber_leaves_nothing() {
        let fanout = Arc::new(Fanout::new());
        let a = fanout.connect();
        a.subscribe("s", vec![Filter::new().kind(Kind::from(1))]);
        for n in 0..=MAILBOX_CAPACITY as u64 {
            fanout.deliver(vec![event(1, n)].into());
        }
        let taken = a.take();
        assert!(taken.lagged);
        assert!(taken.deliveries.is_empty());
        fanout.deliver(vec![event(1, 0)].into());
        let taken = a.take();
        assert!(!taken.lagged);
        assert_eq!(taken.deliveries.len(), 1);
        drop(a);
        assert_eq!(fanout.subscriptions(), 0);
        assert!(fanout.lock().mailboxes.is_empty());
    }
}
