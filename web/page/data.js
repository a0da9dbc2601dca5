// Reads what the page shows from the module's store (GraspSync.query), a few filters
// at a time: nothing here reads the whole database.

import { KIND, announcement, mergeEvents, repoFilters, splitCoord } from "./model.js";

async function queryAll(sync, filters) {
  const answers = await Promise.all(filters.map((f) => sync.query(f)));
  return mergeEvents(...answers);
}

/** Every stored event of the repository `coord`: announcement, roots, their replies. */
export async function loadRepo(sync, coord) {
  const [annFilter, repoFilter] = repoFilters(coord);
  const first = await queryAll(sync, [annFilter, repoFilter]);
  const rootIds = first
    .filter((e) => [KIND.PATCH, KIND.PULL_REQUEST, KIND.ISSUE].includes(e.kind))
    .map((e) => e.id);
  const rest = await queryAll(sync, repoFilters(coord, rootIds).slice(2));
  return mergeEvents(first, rest);
}

/** `[{ coord, name }]` for the tracked repositories, named by their announcements. */
export async function loadTracked(sync) {
  const coords = sync.repos();
  return Promise.all(coords.map(async (coord) => {
    const ref = splitCoord(coord);
    const events = ref
      ? await sync.query({ kinds: [KIND.ANNOUNCEMENT], authors: [ref.pubkey], "#d": [ref.d] })
      : [];
    return { coord, name: announcement(coord, events)?.name ?? ref?.d ?? coord };
  }));
}

/**
 * `[{ coord, label }]`: repositories announced in the store or by `discovered` events
 * (asked of the bootstrap relays), not tracked.
 */
export async function loadAnnounced(sync, discovered = [], limit = 200) {
  const tracked = new Set(sync.repos());
  const stored = await sync.query({ kinds: [KIND.ANNOUNCEMENT], limit });
  const events = mergeEvents(stored, discovered);
  const out = new Map();
  for (const e of events) {
    const d = e.tags.find((t) => t[0] === "d")?.[1] ?? "";
    const coord = `30617:${e.pubkey}:${d}`;
    if (tracked.has(coord) || out.has(coord)) continue;
    const ann = announcement(coord, [e]);
    out.set(coord, { coord, label: `${ann?.name ?? d} — ${e.pubkey.slice(0, 8)}…` });
  }
  return [...out.values()].sort((a, b) => a.label.localeCompare(b.label));
}
