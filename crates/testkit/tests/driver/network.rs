//! WebSockets to simulated relays, with a latency and cuts the test controls.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::{ready, LocalBoxFuture};
use futures::{FutureExt as _, StreamExt as _};
use grasp_sync_core::engine::Time;
use grasp_sync_core::RelayUrl;
use grasp_sync_driver::{Clock, Connection, Incoming, Network};
use grasp_sync_testkit::{SimRelay, SimRelayConfig};
use nostr::prelude::Event;

use crate::clock::ManualClock;

pub(crate) struct Link {
    pub(crate) generation: u64,
    /// Each frame with the virtual time it arrives.
    pub(crate) tx: mpsc::UnboundedSender<(Time, Incoming)>,
}

pub(crate) struct Net {
    pub(crate) clock: ManualClock,
    /// How long a connection attempt and each frame from a relay take to arrive.
    pub(crate) latency: Duration,
    pub(crate) relays: BTreeMap<RelayUrl, SimRelay>,
    pub(crate) links: HashMap<RelayUrl, Link>,
    pub(crate) next_generation: u64,
    /// EVENT frames each relay sent.
    pub(crate) events_sent: BTreeMap<RelayUrl, u64>,
    /// Cut the connection to this relay once it has sent this many EVENT frames in all.
    pub(crate) cut_after: Option<(RelayUrl, u64)>,
    pub(crate) cuts: u64,
    /// Refuse connections to this relay until this virtual time.
    pub(crate) down_until: Option<(RelayUrl, Time)>,
}

/// WebSockets to [`SimRelay`]s: a frame sent is handled at once, its answers arrive on
/// the connection's stream `latency` later, in order.
#[derive(Clone)]
pub(crate) struct SimNetwork(pub(crate) Rc<RefCell<Net>>);

impl SimNetwork {
    pub(crate) fn new(clock: &ManualClock, latency: Duration) -> Self {
        Self(Rc::new(RefCell::new(Net {
            clock: clock.clone(),
            latency,
            relays: BTreeMap::new(),
            links: HashMap::new(),
            next_generation: 0,
            events_sent: BTreeMap::new(),
            cut_after: None,
            cuts: 0,
            down_until: None,
        })))
    }

    pub(crate) fn add_relay(
        &self,
        url: &str,
        config: SimRelayConfig,
        events: &[Event],
    ) -> RelayUrl {
        let url = RelayUrl::parse(url).expect("relay url");
        let mut relay = SimRelay::new(config);
        for e in events {
            relay.insert(e.clone());
        }
        self.0.borrow_mut().relays.insert(url.clone(), relay);
        url
    }

    /// Adds `events` to every relay (published there while no driver ran).
    pub(crate) fn insert_everywhere(&self, events: &[Event]) {
        for relay in self.0.borrow_mut().relays.values_mut() {
            for e in events {
                relay.insert(e.clone());
            }
        }
    }

    /// Frames each relay received so far.
    pub(crate) fn frames_in(&self) -> BTreeMap<RelayUrl, u64> {
        let net = self.0.borrow();
        net.relays
            .iter()
            .map(|(u, r)| (u.clone(), r.frames_in))
            .collect()
    }

    pub(crate) fn events_sent(&self) -> u64 {
        self.0.borrow().events_sent.values().sum()
    }

    pub(crate) fn deliver(
        net: &RefCell<Net>,
        url: &RelayUrl,
        generation: u64,
        text: &str,
    ) -> Result<(), String> {
        let mut net = net.borrow_mut();
        let net = &mut *net;
        if net
            .links
            .get(url)
            .is_none_or(|l| l.generation != generation)
        {
            return Err("socket closed".into());
        }
        let relay = net.relays.get_mut(url).ok_or("unknown relay")?;
        let answers = relay.handle(text);
        let at = net.clock.now() + net.latency;
        let link = net.links.get(url).ok_or("socket closed")?;
        let mut events = 0;
        for answer in answers {
            if answer.starts_with("[\"EVENT\"") {
                events += 1;
            }
            // The receiver may be gone (the driver dropped the socket): like a network.
            let _ = link.tx.unbounded_send((at, Incoming::Text(answer)));
        }
        let sent = net.events_sent.entry(url.clone()).or_insert(0);
        *sent += events;
        let sent = *sent;
        if net
            .cut_after
            .as_ref()
            .is_some_and(|(u, n)| u == url && sent >= *n)
        {
            net.cut_after = None;
            net.cuts += 1;
            if let Some(link) = net.links.remove(url) {
                let _ = link.tx.unbounded_send((at, Incoming::Closed("cut".into())));
            }
            relay_disconnect(net, url);
        }
        Ok(())
    }
}

pub(crate) fn relay_disconnect(net: &mut Net, url: &RelayUrl) {
    if let Some(relay) = net.relays.get_mut(url) {
        relay.disconnect();
    }
}

impl Network for SimNetwork {
    fn connect(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Result<Connection, String>> {
        let shared = Rc::clone(&self.0);
        let url = url.clone();
        let (clock, latency) = {
            let net = self.0.borrow();
            (net.clock.clone(), net.latency)
        };
        async move {
            clock.sleep(latency).await;
            let generation = {
                let mut net = shared.borrow_mut();
                if !net.relays.contains_key(&url) {
                    return Err(format!("unknown relay {url}"));
                }
                let now = net.clock.now();
                if net
                    .down_until
                    .as_ref()
                    .is_some_and(|(u, until)| *u == url && now < *until)
                {
                    return Err("connection refused".into());
                }
                relay_disconnect(&mut net, &url);
                net.next_generation += 1;
                net.next_generation
            };
            let (tx, rx) = mpsc::unbounded();
            shared
                .borrow_mut()
                .links
                .insert(url.clone(), Link { generation, tx });
            let send = {
                let shared = Rc::clone(&shared);
                let url = url.clone();
                Box::new(move |text: String| SimNetwork::deliver(&shared, &url, generation, &text))
            };
            let close = Box::new(move || {
                let mut net = shared.borrow_mut();
                if net
                    .links
                    .get(&url)
                    .is_some_and(|l| l.generation == generation)
                {
                    net.links.remove(&url);
                    relay_disconnect(&mut net, &url);
                }
            });
            // Each frame waits for its arrival time (a sleep on the manual clock).
            let incoming = rx.then(move |(at, incoming)| {
                let arrival = clock.sleep(at.since(clock.now()));
                async move {
                    arrival.await;
                    incoming
                }
            });
            Ok(Connection {
                incoming: incoming.boxed_local(),
                send,
                close,
            })
        }
        .boxed_local()
    }

    fn fetch_info(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Option<String>> {
        let document = self
            .0
            .borrow()
            .relays
            .get(url)
            .and_then(SimRelay::nip11_document);
        ready(document).boxed_local()
    }
}
