//! Frames from the wire: parsing never panics, and whatever parses serialises back to
//! text that parses again to an equal value (for both relay and client frames).
use grasp_sync_core::wire::{parse_client_frame, parse_relay_frame};

const MAX: usize = 1 << 20;

/// One fuzz input: panics when the property above does not hold.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = parse_relay_frame(text, MAX) {
        let json = frame.to_json();
        // The serialised form may be longer than the input (escapes): no cap on reparse.
        match parse_relay_frame(&json, usize::MAX) {
            Ok(again) => assert_eq!(
                frame, again,
                "relay frame changed in a round trip: {text:?} -> {json:?}"
            ),
            Err(e) => panic!("relay frame {text:?} serialised to {json:?}, which fails: {e}"),
        }
    }
    if let Ok(frame) = parse_client_frame(text, MAX) {
        let json = frame.to_json();
        match parse_client_frame(&json, usize::MAX) {
            Ok(again) => assert_eq!(
                frame, again,
                "client frame changed in a round trip: {text:?} -> {json:?}"
            ),
            Err(e) => panic!("client frame {text:?} serialised to {json:?}, which fails: {e}"),
        }
    }
}
