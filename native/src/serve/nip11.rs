//! The relay information document (NIP-11), stating the limits we really enforce.

use serde_json::{json, Value};

use super::config::{AcceptMode, AuthRequired, Settings};

/// NIPs the relay speaks: basic protocol, deletions, the information document,
/// git collaboration, expiration, authentication, event counts and negentropy sync.
pub const SUPPORTED_NIPS: [u16; 8] = [1, 9, 11, 34, 40, 42, 45, 77];

/// The document for `settings`.
pub fn document(settings: &Settings) -> Value {
    let limits = &settings.limits;
    let info = &settings.info;
    let policy = settings.mode.name();
    // In the GRASP modes only events of the repositories it hosts are taken; with NIP-42
    // on writes, only from authenticated clients.
    let restricted_writes =
        settings.mode != AcceptMode::AnyEvent || settings.auth_required.writes();
    let mut doc = json!({
        "name": info.name.clone().unwrap_or_else(|| "grasp-sync".into()),
        "description": info.description.clone().unwrap_or_else(|| {
            "A git-over-nostr (NIP-34) relay that keeps the repositories it hosts in sync \
             with every relay their announcements list."
                .into()
        }),
        "software": "grasp-sync",
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": SUPPORTED_NIPS,
        "limitation": {
            "max_message_length": limits.max_message_bytes,
            "max_subscriptions": limits.max_subscriptions,
            "max_filters": limits.max_filters,
            "max_limit": limits.max_limit,
            "max_subid_length": limits.max_subid_length,
            "max_event_tags": limits.max_event_tags,
            // The whole event's JSON size is what conn.rs enforces; NIP-11's
            // max_content_length (characters of `content` alone) would overstate it.
            "max_event_bytes": limits.max_event_bytes,
            "auth_required": settings.auth_required != AuthRequired::No,
            "payment_required": false,
            "restricted_writes": restricted_writes,
        },
        "grasp": {
            "accept": policy,
            "relays": settings.public_urls.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        },
    });
    if let (Some(pubkey), Value::Object(map)) = (&info.pubkey, &mut doc) {
        map.insert("pubkey".into(), Value::String(pubkey.clone()));
    }
    if let (Some(contact), Value::Object(map)) = (&info.contact, &mut doc) {
        map.insert("contact".into(), Value::String(contact.clone()));
    }
    doc
}

#[cfg(test)]
mod tests {
    use grasp_sync_core::RelayLimits;

    use super::*;
    use crate::serve::config::FileConfig;

    #[test]
    fn our_own_engine_reads_the_limits_we_enforce() {
        let settings = FileConfig::default().settle().unwrap();
        let doc = document(&settings);
        let read = RelayLimits::from_nip11(&doc.to_string());
        assert_eq!(read.max_subscriptions, settings.limits.max_subscriptions);
        assert_eq!(read.max_filters, settings.limits.max_filters);
        assert_eq!(read.max_results, settings.limits.max_limit);
        assert_eq!(read.max_message_bytes, settings.limits.max_message_bytes);
        let limitation = &doc["limitation"];
        assert_eq!(
            limitation["max_event_bytes"].as_u64(),
            Some(settings.limits.max_event_bytes as u64)
        );
        assert!(
            limitation.get("max_content_length").is_none(),
            "the content's length alone is not what is enforced: {limitation}"
        );
        let nips: Vec<u64> = doc["supported_nips"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        for nip in [1, 11, 34, 77] {
            assert!(nips.contains(&nip));
        }
    }
}
