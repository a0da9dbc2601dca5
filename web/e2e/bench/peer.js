// The JavaScript peer of the browser benchmark: what a web client does today without
// this module — nostr-tools REQs (each event's signature verified by nostr-tools) into
// nostr-idb — doing the same job: the repositories' announcements and every event
// tagging them, then every event tagging their roots, from each relay, paginated with
// `until` (a relay caps a filter's results). A catch-up (`since`) asks the same filters
// from `since` on; its roots are those of the new events, and with `cachedRoots` also
// every root already in its database (comments tag their root, not the repository, so
// a new comment on an old issue is found only that way). Bundled by esbuild for the page.
import { Relay } from "nostr-tools/relay";
import { addEvents, getEventsForFilters, openDB } from "nostr-idb";

const PAGE = 500;
const ROOTS = [1617, 1618, 1621];

/** One filter from `relay`, paginated; resolves with the events, calls `sink` per page. */
async function fetchAll(relay, filter, sink, stats) {
  const seen = new Set();
  let until;
  for (;;) {
    const page = [];
    await new Promise((resolve) => {
      const f = { ...filter, limit: PAGE, ...(until ? { until } : {}) };
      stats.reqs += 1;
      const sub = relay.subscribe([f], {
        onevent: (e) => page.push(e),
        oneose: () => { sub.close(); resolve(); },
        onclose: () => resolve(),
      });
    });
    const fresh = page.filter((e) => !seen.has(e.id));
    for (const e of fresh) seen.add(e.id);
    stats.bytesIn += fresh.reduce((n, e) => n + JSON.stringify(e).length + 20, 0);
    if (fresh.length) await sink(fresh);
    if (page.length < PAGE || !fresh.length) break;
    until = Math.min(...page.map((e) => e.created_at));
  }
  return seen;
}

const isRoot = (e) => ROOTS.includes(e.kind) && !e.tags.some((t) => t[0] === "e");

/**
 * Syncs `repos` ("30617:<pubkey>:<d>") from `urls` into the nostr-idb database `name`;
 * `since` makes it a catch-up, `cachedRoots` one that also asks by the roots it holds.
 * Resolves with `{ ms, stored, reqs, bytesIn }`.
 */
export async function syncPeer({ name, urls, repos, since, cachedRoots }) {
  const t0 = performance.now();
  const db = await openDB(name);
  const stats = { reqs: 0, bytesIn: 0 };
  const kept = new Set();
  const sink = async (events) => {
    await addEvents(db, events);
    for (const e of events) kept.add(e.id);
  };
  const time = since ? { since } : {};
  const refs = repos.map((r) => r.split(":"));
  const cached = cachedRoots
    ? (await getEventsForFilters(db, [{ kinds: ROOTS, "#a": repos }])).filter(isRoot).map((e) => e.id)
    : [];
  await Promise.all(urls.map(async (url) => {
    const relay = await Relay.connect(url);
    const roots = new Set(cached);
    const collect = async (events) => {
      for (const e of events) if (isRoot(e)) roots.add(e.id);
      await sink(events);
    };
    await Promise.all([
      fetchAll(relay, { kinds: [30617, 30618], authors: refs.map((r) => r[1]), "#d": refs.map((r) => r[2]), ...time }, sink, stats),
      fetchAll(relay, { "#a": repos, ...time }, collect, stats),
    ]);
    const ids = [...roots];
    const jobs = [];
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      jobs.push(fetchAll(relay, { "#e": chunk, ...time }, sink, stats));
      jobs.push(fetchAll(relay, { "#E": chunk, ...time }, sink, stats));
    }
    await Promise.all(jobs);
    relay.close();
  }));
  db.close();
  return { ms: performance.now() - t0, stored: kept.size, ...stats };
}
