// What the page shows, derived from NIP-34 events: repository references, the
// announcement, the list of issues / patches / pull requests with their status and
// comment count, one item's thread, and the relays' summary. Pure functions over plain
// event objects (NIP-01 JSON), no DOM and no module calls: unit-tested with node --test.

import { decodeNaddr, npub } from "./nip19.js";

export const KIND = Object.freeze({
  PATCH: 1617,
  PULL_REQUEST: 1618,
  PR_UPDATE: 1619,
  ISSUE: 1621,
  REPLY: 1622,
  OPEN: 1630,
  APPLIED: 1631,
  CLOSED: 1632,
  DRAFT: 1633,
  COMMENT: 1111,
  DELETION: 5,
  ANNOUNCEMENT: 30617,
  STATE: 30618,
});

export const ROOT_KINDS = [KIND.PATCH, KIND.PULL_REQUEST, KIND.ISSUE];
export const STATUS_KINDS = [KIND.OPEN, KIND.APPLIED, KIND.CLOSED, KIND.DRAFT];
const STATUS_NAME = {
  [KIND.OPEN]: "open",
  [KIND.APPLIED]: "applied",
  [KIND.CLOSED]: "closed",
  [KIND.DRAFT]: "draft",
};
/** Every kind the page reads: subscriptions ask for these. */
export const PAGE_KINDS = [
  ...ROOT_KINDS, KIND.PR_UPDATE, KIND.REPLY, ...STATUS_KINDS, KIND.COMMENT,
  KIND.ANNOUNCEMENT, KIND.STATE,
];

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Reads what a user pasted: `30617:<pubkey hex>:<d>` or `naddr1…` (of kind 30617).
 * Returns `{ coord, pubkey, d, relays }`; throws an Error with a message for a person.
 */
export function parseRepoInput(text) {
  const s = String(text ?? "").trim();
  if (s.toLowerCase().startsWith("naddr1") || s.toLowerCase().startsWith("nostr:naddr1")) {
    let addr;
    try {
      addr = decodeNaddr(s.replace(/^nostr:/i, ""));
    } catch (e) {
      throw new Error(`That naddr does not decode: ${e.message}.`);
    }
    if (addr.kind !== KIND.ANNOUNCEMENT) {
      throw new Error(`That naddr is of kind ${addr.kind}, not a repository (30617).`);
    }
    return repoRef(addr.pubkey, addr.identifier, addr.relays);
  }
  const m = /^30617:([0-9a-fA-F]{64}):(.+)$/.exec(s);
  if (!m) {
    throw new Error("Enter naddr1… or 30617:<64 hex characters>:<identifier>.");
  }
  return repoRef(m[1].toLowerCase(), m[2], []);
}

function repoRef(pubkey, d, relays) {
  return { coord: `30617:${pubkey}:${d}`, pubkey, d, relays };
}

/** `{ pubkey, d }` of a `30617:<pubkey>:<d>` coordinate, or null. */
export function splitCoord(coord) {
  const m = /^30617:([0-9a-f]{64}):(.*)$/.exec(coord ?? "");
  return m ? { pubkey: m[1], d: m[2] } : null;
}

/** The values of `event`'s tags named `name` (second element). */
export function tagValues(event, name) {
  return event.tags.filter((t) => t[0] === name && t.length > 1).map((t) => t[1]);
}

/** Every value after the name of the first tag named `name`, or []. */
function tagList(event, name) {
  const tag = event.tags.find((t) => t[0] === name);
  return tag ? tag.slice(1).filter((v) => v !== "") : [];
}

const firstTag = (event, name) => tagValues(event, name)[0];

/** Newest first, ties by id (the order a relay and the store use). */
export function newestFirst(a, b) {
  return b.created_at - a.created_at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * The repository an announcement describes, from its newest version among `events`
 * (kind 30617 by the coordinate's author with its `d`); null when none is there.
 */
export function announcement(coord, events) {
  const ref = splitCoord(coord);
  if (!ref) return null;
  const versions = events
    .filter((e) => e.kind === KIND.ANNOUNCEMENT && e.pubkey === ref.pubkey)
    .filter((e) => (firstTag(e, "d") ?? "") === ref.d)
    .sort(newestFirst);
  const e = versions[0];
  if (!e) return null;
  const maintainers = [ref.pubkey];
  for (const m of tagList(e, "maintainers")) {
    if (HEX64.test(m) && !maintainers.includes(m)) maintainers.push(m);
  }
  return {
    coord,
    id: e.id,
    pubkey: ref.pubkey,
    d: ref.d,
    name: firstTag(e, "name") || ref.d,
    description: firstTag(e, "description") ?? "",
    clone: tagList(e, "clone"),
    web: tagList(e, "web"),
    relays: tagList(e, "relays"),
    maintainers,
    updatedAt: e.created_at,
  };
}

/** Whether `event` starts a thread: an issue, a pull request, or a patch that replies to nothing. */
export function isRoot(event) {
  if (event.kind === KIND.ISSUE || event.kind === KIND.PULL_REQUEST) return true;
  if (event.kind !== KIND.PATCH) return false;
  return event.tags.some((t) => t[0] === "t" && t[1] === "root") || tagValues(event, "e").length === 0;
}

/** "issue", "patch" or "pr". */
export function itemType(event) {
  return event.kind === KIND.ISSUE ? "issue" : event.kind === KIND.PULL_REQUEST ? "pr" : "patch";
}

/**
 * The title of an item: its `subject` tag; for a patch without one, the `Subject:` line
 * of the mail without its `[PATCH …]` prefix; else the first line of the content.
 */
export function itemTitle(event) {
  const subject = firstTag(event, "subject");
  if (subject && subject.trim()) return subject.trim();
  if (event.kind === KIND.PATCH) {
    const m = /^Subject:[ \t]*(.*)$/m.exec(event.content);
    if (m) {
      const title = m[1].replace(/^\[PATCH[^\]]*\]\s*/i, "").trim();
      if (title) return title;
    }
  }
  const line = event.content.split("\n").find((l) => l.trim()) ?? "";
  const text = line.trim();
  if (!text) return "(untitled)";
  return text.length > 100 ? text.slice(0, 99) + "…" : text;
}

/** The root ids an event points at (`e` and `E` tags). */
function referencedIds(event) {
  return event.tags.filter((t) => (t[0] === "e" || t[0] === "E") && t.length > 1).map((t) => t[1]);
}

/**
 * The status of the root `root` from status events (1630–1633): the newest one by the
 * root's author or a maintainer that names the root; "open" when there is none.
 */
export function statusOf(root, statusEvents, maintainers) {
  const allowed = new Set([root.pubkey, ...maintainers]);
  const latest = statusEvents
    .filter((e) => STATUS_KINDS.includes(e.kind) && allowed.has(e.pubkey))
    .filter((e) => referencedIds(e).includes(root.id))
    .sort(newestFirst)[0];
  return latest ? STATUS_NAME[latest.kind] : "open";
}

/** The root ids of the comments and replies under roots (NIP-22 `E`, NIP-34 1622 `e`). */
function commentRoot(event) {
  if (event.kind === KIND.COMMENT) return firstTag(event, "E") ?? null;
  if (event.kind === KIND.REPLY) {
    const root = event.tags.find((t) => t[0] === "e" && t[3] === "root");
    return root ? root[1] : firstTag(event, "e") ?? null;
  }
  return null;
}

/**
 * The items of the repository `coord` among `events`: one per root that tags it, with
 * `{ id, type, kind, title, author, createdAt, status, comments, revisions }`, newest
 * first. `maintainers` (owner first) decide which status events count.
 */
export function deriveItems(coord, events, maintainers) {
  const roots = events.filter((e) => isRoot(e) && tagValues(e, "a").includes(coord));
  const byRoot = new Map(roots.map((r) => [r.id, { statuses: [], comments: 0, revisions: 0 }]));
  for (const e of events) {
    if (STATUS_KINDS.includes(e.kind)) {
      for (const id of referencedIds(e)) byRoot.get(id)?.statuses.push(e);
    } else if (e.kind === KIND.COMMENT || e.kind === KIND.REPLY) {
      const entry = byRoot.get(commentRoot(e));
      if (entry) entry.comments += 1;
    } else if ((e.kind === KIND.PATCH && !isRoot(e)) || e.kind === KIND.PR_UPDATE) {
      const target = referencedIds(e).find((id) => byRoot.has(id));
      if (target) byRoot.get(target).revisions += 1;
    }
  }
  return roots.sort(newestFirst).map((root) => {
    const entry = byRoot.get(root.id);
    return {
      id: root.id,
      type: itemType(root),
      kind: root.kind,
      title: itemTitle(root),
      author: root.pubkey,
      createdAt: root.created_at,
      status: statusOf(root, entry.statuses, maintainers),
      comments: entry.comments,
      revisions: entry.revisions,
    };
  });
}

/** Counts of items by type and by status, for the repository's heading. */
export function tally(items) {
  const out = { issue: 0, patch: 0, pr: 0, open: 0, applied: 0, closed: 0, draft: 0 };
  for (const item of items) {
    out[item.type] += 1;
    out[item.status] += 1;
  }
  return out;
}

/**
 * One item's thread, oldest first: `{ root, entries }` where each entry is
 * `{ id, kind, what, author, createdAt, text }` and `what` is "comment", "reply",
 * "revision", "update" or a status name. Null when the root is not among `events`.
 */
export function thread(rootId, events, maintainers) {
  const root = events.find((e) => e.id === rootId);
  if (!root) return null;
  const allowed = new Set([root.pubkey, ...maintainers]);
  const entries = [];
  for (const e of events) {
    if (e.id === rootId) continue;
    let what = null;
    if (e.kind === KIND.COMMENT && commentRoot(e) === rootId) what = "comment";
    else if (e.kind === KIND.REPLY && commentRoot(e) === rootId) what = "reply";
    else if (referencedIds(e).includes(rootId)) {
      if (STATUS_KINDS.includes(e.kind) && allowed.has(e.pubkey)) what = STATUS_NAME[e.kind];
      else if (e.kind === KIND.PATCH) what = "revision";
      else if (e.kind === KIND.PR_UPDATE) what = "update";
    }
    if (what) {
      entries.push({ id: e.id, kind: e.kind, what, author: e.pubkey, createdAt: e.created_at, text: e.content });
    }
  }
  entries.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  return {
    root: {
      id: root.id,
      type: itemType(root),
      title: itemTitle(root),
      author: root.pubkey,
      createdAt: root.created_at,
      text: root.content,
      status: statusOf(root, events, maintainers),
    },
    entries,
  };
}

/**
 * The NIP-01 filters that read one repository from the store: its announcement and
 * everything tagging it (`#a`), then what tags its roots (`#e` / `#E`), in chunks of at
 * most `chunk` ids.
 */
export function repoFilters(coord, rootIds = [], chunk = 500) {
  const ref = splitCoord(coord);
  const filters = [];
  if (ref) {
    filters.push({ kinds: [KIND.ANNOUNCEMENT, KIND.STATE], authors: [ref.pubkey], "#d": [ref.d] });
  }
  filters.push({ "#a": [coord] });
  for (let i = 0; i < rootIds.length; i += chunk) {
    const ids = rootIds.slice(i, i + chunk);
    filters.push({ kinds: [KIND.COMMENT], "#E": ids });
    filters.push({ kinds: [KIND.REPLY, KIND.PR_UPDATE, KIND.PATCH, ...STATUS_KINDS], "#e": ids });
  }
  return filters;
}

/** Events of several query answers, each once. */
export function mergeEvents(...lists) {
  const seen = new Map();
  for (const list of lists) for (const e of list) seen.set(e.id, e);
  return [...seen.values()];
}

/**
 * The page's one-word summary of the relays' statuses (RelayStatus objects):
 * "idle" (none), "offline" (none reachable and at least one failed), "syncing",
 * "in sync" (every relay in sync), "partial" (the rest done, but some relays failed
 * or left gaps), or "not saving" (the browser refuses to store what relays send: its
 * quota is full).
 */
export function connectivity(relays) {
  if (!relays.length) return "idle";
  if (relays.some((r) => r.storeError)) return "not saving";
  const done = (r) => r.state === "in-sync" || r.state === "gaps";
  const up = relays.filter((r) => done(r) || r.state === "syncing");
  const failed = relays.filter(
    (r) => r.state === "backoff" || r.state === "dead" || (!done(r) && r.failures > 0),
  );
  if (!up.length && failed.length) return "offline";
  if (relays.every((r) => r.state === "in-sync")) return "in sync";
  const gaps = relays.some((r) => r.state === "gaps");
  if (up.length && (failed.length || gaps) && up.every(done)) return "partial";
  return "syncing";
}

/** Bytes for a person: "812 B", "12.3 kB", "4.1 MB". */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 1000) return `${Math.max(0, Math.round(n || 0))} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  return `${(n / 1e6).toFixed(1)} MB`;
}

/** A Unix time as "YYYY-MM-DD HH:MM" (UTC). */
export function formatDate(secs) {
  return new Date(secs * 1000).toISOString().slice(0, 16).replace("T", " ");
}

/** A short, recognisable form of a public key: `npub1abcd…wxyz`. */
export function shortKey(pubkey) {
  if (!HEX64.test(pubkey)) return String(pubkey).slice(0, 12);
  const n = npub(pubkey);
  return `${n.slice(0, 10)}…${n.slice(-4)}`;
}
