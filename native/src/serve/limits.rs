//! Rate limits and per-address accounting for clients of the relay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A token bucket: `per_minute` tokens a minute, bursts of up to a tenth of a minute's
/// worth (at least 10).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn per_minute(per_minute: u32, now: Instant) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        let capacity = (per_minute / 10.0).max(10.0);
        Self {
            capacity,
            per_sec: per_minute / 60.0,
            tokens: capacity,
            at: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What one client address holds.
#[derive(Debug)]
struct PerIp {
    connections: usize,
    events: TokenBucket,
}

/// Connections and EVENT rate per client address, shared by every connection.
#[derive(Debug, Clone)]
pub struct IpRegistry {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Debug)]
struct Registry {
    per_ip: HashMap<IpAddr, PerIp>,
    total: usize,
    max_total: usize,
    max_per_ip: usize,
    events_per_minute: u32,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The relay holds its maximum of connections.
    Full,
    /// This address holds its maximum of connections.
    TooManyFromAddress,
}

/// A connection counted against its address; dropping it releases the slot.
#[derive(Debug)]
pub struct Slot {
    registry: IpRegistry,
    ip: IpAddr,
}

impl IpRegistry {
    /// An empty registry.
    pub fn new(max_total: usize, max_per_ip: usize, events_per_minute: u32) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry {
                per_ip: HashMap::new(),
                total: 0,
                max_total,
                max_per_ip,
                events_per_minute,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Nothing panics while holding it; a poisoned lock still holds valid counts.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection from `ip`, unless a limit is reached.
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut registry = self.lock();
        if registry.total >= registry.max_total {
            return Err(Refusal::Full);
        }
        let max_per_ip = registry.max_per_ip;
        let events_per_minute = registry.events_per_minute;
        let entry = registry.per_ip.entry(ip).or_insert_with(|| PerIp {
            connections: 0,
            events: TokenBucket::per_minute(events_per_minute, Instant::now()),
        });
        if entry.connections >= max_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        entry.connections += 1;
        registry.total += 1;
        Ok(Slot {
            registry: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.lock().total
    }

    /// Takes one EVENT token of `ip`'s bucket.
    pub fn take_event(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.lock()
            .per_ip
            .get_mut(&ip)
            .is_some_and(|p| p.events.take(now))
    }
}

impl Slot {
    /// The client address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Takes one EVENT token of this address.
    pub fn take_event(&self) -> bool {
        self.registry.take_event(self.ip)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.registry.lock();
        registry.total = registry.total.saturating_sub(1);
        if let Some(entry) = registry.per_ip.get_mut(&self.ip) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                registry.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A write deadline helper: how long until `started + limit`.
pub fn remaining(started: Instant, limit: Duration) -> Duration {
    limit.saturating_sub(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::per_minute(600, t0);
        // Burst: a tenth of a minute's worth.
        let burst = (0..100).filter(|_| bucket.take(t0)).count();
        assert_eq!(burst, 60);
        assert!(!bucket.take(t0));
        // Ten per second afterwards.
        let later = t0 + Duration::from_secs(1);
        let refilled = (0..100).filter(|_| bucket.take(later)).count();
        assert_eq!(refilled, 10);
    }

    #[test]
    fn connections_are_counted_per_address_and_released() {
        let registry = IpRegistry::new(3, 2, 60);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = registry.admit(a).unwrap();
        let _a2 = registry.admit(a).unwrap();
        assert_eq!(registry.admit(a).unwrap_err(), Refusal::TooManyFromAddress);
        let _b1 = registry.admit(b).unwrap();
        assert_eq!(registry.admit(b).unwrap_err(), Refusal::Full);
        drop(a1);
        assert_eq!(registry.connections(), 2);
        assert!(registry.admit(a).is_ok());
    }

    #[test]
    fn the_event_rate_is_shared_by_an_address() {
        let registry = IpRegistry::new(10, 10, 60);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let one = registry.admit(ip).unwrap();
        let two = registry.admit(ip).unwrap();
        let taken = (0..20)
            .filter(|i| {
                if i % 2 == 0 {
                    one.take_event()
                } else {
                    two.take_event()
                }
            })
            .count();
        assert_eq!(taken, 10);
    }
}
