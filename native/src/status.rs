//! `grasp-sync status`: what the store knows — tracked repositories, relays and their
//! checkpoints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use grasp_sync_core::engine::Scope;
use grasp_sync_core::filters::{discovery_filter, DiscoveryScope, Form};
use grasp_sync_core::nip34::{first_value, tag_values};
use grasp_sync_core::{IndexConfig, RepoIndex, RepoRef};
use grasp_sync_driver::Store;
use nostr::prelude::Timestamp;

use crate::store::LmdbStore;

/// What `grasp-sync status` reads.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Where the store lives.
    pub data_dir: PathBuf,
}

/// Renders the store's status as text.
pub async fn print_status(options: &StatusOptions) -> Result<String, String> {
    if !options.data_dir.exists() {
        return Err(format!(
            "no store at {} (run `grasp-sync sync` first, or pass --data-dir)",
            options.data_dir.display()
        ));
    }
    let store = LmdbStore::open(&options.data_dir, 1 << 30)
        .await
        .map_err(|e| e.to_string())?;
    store_status(&store, &options.data_dir).await
}

/// The status of an open store in `data_dir`, as text.
pub async fn store_status(store: &LmdbStore, data_dir: &Path) -> Result<String, String> {
    let announcements = Store::query(
        store,
        discovery_filter(Form::Historic { since: None }, &DiscoveryScope::All),
    )
    .await?;
    // Shows every relay the announcements list, private addresses included (whether
    // they are followed is the syncing process's policy).
    let mut config = IndexConfig::default();
    config.relay_policy.allow_private = true;
    let mut index = RepoIndex::new(config);
    index.apply(&announcements);
    let state = Store::load_state(store).await?;

    let mut out = String::new();
    let _ = writeln!(out, "store: {}", data_dir.display());
    let mut repos: Vec<&RepoRef> = index.repos().collect();
    repos.sort();
    let _ = writeln!(out, "\n{} tracked repositories", repos.len());
    for repo in repos {
        let name = announcements
            .iter()
            .find(|e| RepoRef::of_announcement(e).as_ref() == Some(repo))
            .and_then(|e| first_value(e, "name").map(str::to_owned))
            .unwrap_or_default();
        let relays: Vec<String> = index
            .repo_relays(repo)
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect();
        let _ = writeln!(out, "  {repo}  {name}");
        let _ = writeln!(out, "    relays: {}", relays.join(" "));
    }
    // Relays listed by announcements but refused (private addresses, …) are not
    // tracked; show what the announcements say, for the operator.
    let listed: usize = announcements
        .iter()
        .map(|e| tag_values(e, "relays").count())
        .sum();
    let _ = writeln!(out, "  ({listed} relay entries listed by announcements)");

    let mut by_relay: BTreeMap<String, (usize, Timestamp, Option<Timestamp>)> = BTreeMap::new();
    for cp in &state.checkpoints {
        let entry =
            by_relay
                .entry(cp.relay.as_str().to_owned())
                .or_insert((0, Timestamp::from(0), None));
        entry.0 += 1;
        entry.1 = entry.1.max(cp.at);
        if cp.scope == Scope::Discovery {
            entry.2 = Some(cp.at);
        }
    }
    let _ = writeln!(out, "\n{} relays with checkpoints", by_relay.len());
    for (relay, (count, latest, discovery)) in by_relay {
        let _ = writeln!(
            out,
            "  {relay}  {count} checkpoints, last synced up to {}{}",
            utc(latest),
            discovery.map_or(String::new(), |d| format!(
                ", announcements up to {}",
                utc(d)
            ))
        );
    }
    let _ = writeln!(
        out,
        "\n{} ids seen and not stored (remembered until they expire)",
        state.remembered.len()
    );
    Ok(out)
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a timestamp.
fn utc(t: Timestamp) -> String {
    let secs = t.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(Timestamp::from(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(Timestamp::from(1_700_000_000)),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(utc(Timestamp::from(951_782_400)), "2000-02-29 00:00:00 UTC");
    }
}
