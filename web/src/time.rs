//! The time provider nostr needs on `wasm32-unknown-unknown`: `Date.now()` as wall time
//! and `performance.now()` as monotonic time (without one, `Timestamp::now()` traps).

use universal_time::{define_time_provider, Instant, MonotonicClock, SystemTime, WallClock};

/// `Date.now()` and `performance.now()`.
struct BrowserTime;

impl WallClock for BrowserTime {
    fn system_time(&self) -> SystemTime {
        let millis = js_sys::Date::now().max(0.0);
        SystemTime::from_unix_duration(core::time::Duration::from_secs_f64(millis / 1000.0))
    }
}

impl MonotonicClock for BrowserTime {
    fn instant(&self) -> Instant {
        let millis = crate::clock::performance_now().max(0.0);
        Instant::from_ticks(core::time::Duration::from_secs_f64(millis / 1000.0))
    }
}

define_time_provider!(BrowserTime);
