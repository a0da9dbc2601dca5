//! What `/metrics` reports, in the Prometheus text format: the relay server's counters,
//! and a snapshot of the sync engine taken by the driver's observer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use grasp_sync_core::engine::{EngineStats, Phase, Time};

use crate::sync::{method_name, state_name, RelayReport};

/// A counter's key: its name and at most one label.
type Key = (&'static str, Option<(&'static str, String)>);

/// The relay server's counters.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    labelled: Mutex<BTreeMap<Key, u64>>,
    /// Bytes of frames received from clients.
    pub bytes_in: AtomicU64,
    /// Bytes of frames sent to clients.
    pub bytes_out: AtomicU64,
    /// EVENT frames sent to clients.
    pub events_sent: AtomicU64,
    /// Subscriptions open now.
    pub subscriptions: AtomicU64,
    /// NIP-77 sessions open now.
    pub neg_sessions: AtomicU64,
}

/// Help text of each counter, in the order they are rendered.
const HELP: &[(&str, &str, &str)] = &[
    (
        "grasp_sync_client_connections_total",
        "counter",
        "WebSocket connections accepted",
    ),
    (
        "grasp_sync_client_connections_refused_total",
        "counter",
        "WebSocket connections refused, by reason",
    ),
    (
        "grasp_sync_client_frames_total",
        "counter",
        "frames received from clients, by type",
    ),
    (
        "grasp_sync_client_bad_frames_total",
        "counter",
        "frames from clients that did not parse, by reason",
    ),
    (
        "grasp_sync_client_published_total",
        "counter",
        "events clients published, by result",
    ),
    (
        "grasp_sync_client_refusals_total",
        "counter",
        "REQ, NEG and EVENT frames refused by a limit, by reason",
    ),
    (
        "grasp_sync_client_disconnects_total",
        "counter",
        "connections the server ended, by reason",
    ),
    (
        "grasp_sync_api_requests_total",
        "counter",
        "operator API requests (/api/*), by result",
    ),
];

impl ServerMetrics {
    /// Adds `by` to a counter with one label.
    pub fn add(&self, name: &'static str, label: (&'static str, &str), by: u64) {
        let key = (name, Some((label.0, label.1.to_owned())));
        *self
            .labelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(0) += by;
    }

    /// Adds one to a counter with one label.
    pub fn inc(&self, name: &'static str, label: (&'static str, &str)) {
        self.add(name, label, 1);
    }

    /// Adds one to a counter without labels.
    pub fn inc_plain(&self, name: &'static str) {
        *self
            .labelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((name, None))
            .or_insert(0) += 1;
    }

    /// The value of a counter (tests and status).
    pub fn get(&self, name: &'static str, label: Option<(&'static str, &str)>) -> u64 {
        let key = (name, label.map(|(k, v)| (k, v.to_owned())));
        self.labelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String, connections: usize) {
        gauge(
            out,
            "grasp_sync_client_connections",
            "WebSocket connections open",
            connections as u64,
        );
        gauge(
            out,
            "grasp_sync_client_subscriptions",
            "client subscriptions open",
            self.subscriptions.load(Ordering::Relaxed),
        );
        gauge(
            out,
            "grasp_sync_client_neg_sessions",
            "client NIP-77 sessions open",
            self.neg_sessions.load(Ordering::Relaxed),
        );
        for (name, value, help) in [
            (
                "grasp_sync_client_bytes_in_total",
                &self.bytes_in,
                "bytes of frames received from clients",
            ),
            (
                "grasp_sync_client_bytes_out_total",
                &self.bytes_out,
                "bytes of frames sent to clients",
            ),
            (
                "grasp_sync_client_events_sent_total",
                &self.events_sent,
                "EVENT frames sent to clients",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let counters = self
            .labelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, label), value) in &counters {
                if n != name {
                    continue;
                }
                match label {
                    Some((k, v)) => {
                        let _ = writeln!(out, "{name}{{{k}=\"{}\"}} {value}", escape(v));
                    }
                    None => {
                        let _ = writeln!(out, "{name} {value}");
                    }
                }
            }
        }
    }
}

/// The sync engine as the driver's observer last saw it.
#[derive(Debug, Clone, Default)]
pub struct SyncSnapshot {
    /// Every relay with its phase, method and counters.
    pub relays: Vec<RelayReport>,
    /// Repositories tracked.
    pub repos: usize,
    /// Root events tracked.
    pub roots: usize,
    /// Engine-wide counters.
    pub engine: EngineStats,
    /// Whether every relay is in sync or failing.
    pub settled: bool,
    /// When it was taken.
    pub at: Time,
}

/// The whole `/metrics` page.
pub fn render(server: &ServerMetrics, connections: usize, sync: &SyncSnapshot) -> String {
    let mut out = String::new();
    server.render(&mut out, connections);
    gauge(
        &mut out,
        "grasp_sync_repositories",
        "repositories tracked",
        sync.repos as u64,
    );
    gauge(
        &mut out,
        "grasp_sync_roots",
        "root events (patches, PRs, issues) tracked",
        sync.roots as u64,
    );
    gauge(
        &mut out,
        "grasp_sync_settled",
        "1 when every relay is in sync or failing",
        u64::from(sync.settled),
    );
    for (name, help, value) in [
        (
            "grasp_sync_events_stored_total",
            "events written to the store (sync and clients)",
            sync.engine.stored,
        ),
        (
            "grasp_sync_store_failures_total",
            "store batches that failed",
            sync.engine.store_failures,
        ),
        (
            "grasp_sync_client_events_stored_total",
            "events clients published that were stored",
            sync.engine.published.stored,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }

    let relay_series: &[(&str, &str, &str)] = &[
        ("grasp_sync_relay_up", "gauge", "1 when connected"),
        (
            "grasp_sync_relay_state",
            "gauge",
            "1 for the state the relay is in",
        ),
        (
            "grasp_sync_relay_backoff_seconds",
            "gauge",
            "seconds until the next attempt at a failing relay",
        ),
        (
            "grasp_sync_relay_events_received_total",
            "counter",
            "EVENT frames received",
        ),
        (
            "grasp_sync_relay_events_accepted_total",
            "counter",
            "events stored",
        ),
        (
            "grasp_sync_relay_events_rejected_total",
            "counter",
            "events refused, by reason",
        ),
        (
            "grasp_sync_relay_bad_frames_total",
            "counter",
            "frames that did not parse, by reason",
        ),
        (
            "grasp_sync_relay_bytes_in_total",
            "counter",
            "bytes received",
        ),
        ("grasp_sync_relay_bytes_out_total", "counter", "bytes sent"),
        (
            "grasp_sync_relay_round_trips_total",
            "counter",
            "REQ, NEG-OPEN and NEG-MSG sent",
        ),
        (
            "grasp_sync_relay_jobs_total",
            "counter",
            "historic sync jobs, by method (nip77, req)",
        ),
        (
            "grasp_sync_relay_failures_total",
            "counter",
            "connection failures",
        ),
        (
            "grasp_sync_relay_dropped_total",
            "counter",
            "events dropped at a full ingest queue (fetched again)",
        ),
        (
            "grasp_sync_relay_abandoned_jobs_total",
            "counter",
            "historic jobs given up on after repeated failures (asked again later)",
        ),
        (
            "grasp_sync_relay_abandoned_waiting",
            "gauge",
            "historic jobs given up on and not asked again yet (a gap)",
        ),
    ];
    for (name, kind, help) in relay_series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in &sync.relays {
            let relay = escape(r.url.as_str());
            let s = &r.stats;
            let mut line = |labels: String, value: u64| {
                let _ = writeln!(out, "{name}{{relay=\"{relay}\"{labels}}} {value}");
            };
            match *name {
                "grasp_sync_relay_up" => line(String::new(), u64::from(r.phase == Phase::Open)),
                "grasp_sync_relay_state" => line(
                    format!(
                        ",state=\"{}\",method=\"{}\"",
                        state_name(r.phase, &r.stats),
                        method_name(r.method)
                    ),
                    1,
                ),
                "grasp_sync_relay_backoff_seconds" => {
                    let wait = match r.phase {
                        Phase::Backoff { until } | Phase::Dead { until } => {
                            until.since(sync.at).as_secs()
                        }
                        _ => 0,
                    };
                    line(String::new(), wait);
                }
                "grasp_sync_relay_events_received_total" => line(String::new(), s.events_received),
                "grasp_sync_relay_events_accepted_total" => line(String::new(), s.events_accepted),
                "grasp_sync_relay_events_rejected_total" => {
                    for (reason, n) in &s.events_rejected {
                        line(format!(",reason=\"{reason}\""), *n);
                    }
                }
                "grasp_sync_relay_bad_frames_total" => {
                    for (reason, n) in &s.bad_frames {
                        line(format!(",reason=\"{reason}\""), *n);
                    }
                }
                "grasp_sync_relay_bytes_in_total" => line(String::new(), s.bytes_in),
                "grasp_sync_relay_bytes_out_total" => line(String::new(), s.bytes_out),
                "grasp_sync_relay_round_trips_total" => line(String::new(), s.round_trips),
                "grasp_sync_relay_jobs_total" => {
                    line(",method=\"nip77\"".into(), s.jobs_negentropy);
                    line(",method=\"req\"".into(), s.jobs_req);
                }
                "grasp_sync_relay_failures_total" => line(String::new(), s.failures),
                "grasp_sync_relay_dropped_total" => line(String::new(), s.dropped),
                "grasp_sync_relay_abandoned_jobs_total" => line(String::new(), s.abandoned_jobs),
                "grasp_sync_relay_abandoned_waiting" => line(String::new(), s.abandoned_waiting),
                _ => {}
            }
        }
    }
    out
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counter names used by the server.
pub mod names {
    /// See the HELP table.
    pub const CONNECTIONS: &str = "grasp_sync_client_connections_total";
    /// See the HELP table.
    pub const REFUSED: &str = "grasp_sync_client_connections_refused_total";
    /// See the HELP table.
    pub const FRAMES: &str = "grasp_sync_client_frames_total";
    /// See the HELP table.
    pub const BAD_FRAMES: &str = "grasp_sync_client_bad_frames_total";
    /// See the HELP table.
    pub const PUBLISHED: &str = "grasp_sync_client_published_total";
    /// See the HELP table.
    pub const REFUSALS: &str = "grasp_sync_client_refusals_total";
    /// See the HELP table.
    pub const DISCONNECTS: &str = "grasp_sync_client_disconnects_total";
    /// See the HELP table.
    pub const API_REQUESTS: &str = "grasp_sync_api_requests_total";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_help_and_escaped_labels() {
        let m = ServerMetrics::default();
        m.inc(names::FRAMES, ("type", "REQ"));
        m.inc(names::FRAMES, ("type", "REQ"));
        m.inc(names::BAD_FRAMES, ("reason", "not \"json\""));
        let text = render(&m, 3, &SyncSnapshot::default());
        assert!(text.contains("grasp_sync_client_frames_total{type=\"REQ\"} 2\n"));
        assert!(
            text.contains("grasp_sync_client_bad_frames_total{reason=\"not \\\"json\\\"\"} 1\n")
        );
        assert!(text.contains(
            "# TYPE grasp_sync_client_connections gauge\ngrasp_sync_client_connections 3\n"
        ));
        assert_eq!(m.get(names::FRAMES, Some(("type", "REQ"))), 2);
    }
}
