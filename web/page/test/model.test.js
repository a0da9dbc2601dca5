// The page's derivations from NIP-34 events (statuses, comment counts, titles, the
// announcement, the thread, the relays' summary), on hand-made events.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  announcement, connectivity, deriveItems, formatBytes, formatDate, itemTitle, parseRepoInput,
  repoFilters, shortKey, tally, thread,
} from "../model.js";
import { encodeNaddr } from "../nip19.js";

const OWNER = "a".repeat(64);
const MAINTAINER = "b".repeat(64);
const ALICE = "c".repeat(64);
const MALLORY = "d".repeat(64);
const COORD = `30617:${OWNER}:demo`;
const OTHER = `30617:${OWNER}:other`;

let next = 0;
function ev(kind, pubkey, created_at, tags, content = "") {
  next += 1;
  return { id: next.toString(16).padStart(64, "0"), pubkey, created_at, kind, tags, content, sig: "" };
}

test("parses a coordinate and an naddr to the same repository", () => {
  const byCoord = parseRepoInput(`  30617:${OWNER.toUpperCase()}:demo `);
  assert.equal(byCoord.coord, COORD);
  const naddr = encodeNaddr({ kind: 30617, pubkey: OWNER, identifier: "demo", relays: ["wss://r.example"] });
  const byNaddr = parseRepoInput(naddr);
  assert.equal(byNaddr.coord, COORD);
  assert.deepEqual(byNaddr.relays, ["wss://r.example"]);
  assert.equal(parseRepoInput(`nostr:${naddr}`).coord, COORD);
});

test("refuses what is not a repository", () => {
  assert.throws(() => parseRepoInput(""), /naddr1/);
  assert.throws(() => parseRepoInput(`30617:${OWNER.slice(1)}:demo`), /64 hex/);
  assert.throws(() => parseRepoInput(`1:${OWNER}:demo`), /naddr1/);
  const note = encodeNaddr({ kind: 30023, pubkey: OWNER, identifier: "demo" });
  assert.throws(() => parseRepoInput(note), /kind 30023/);
  assert.throws(() => parseRepoInput("naddr1qqqqqqq"), /does not decode/);
});

test("the announcement is the newest version by the owner", () => {
  const old = ev(30617, OWNER, 100, [["d", "demo"], ["name", "Old"], ["relays", "wss://old"]]);
  const cur = ev(30617, OWNER, 200, [
    ["d", "demo"], ["name", "Demo"], ["description", "A demo"],
    ["clone", "https://git.example/demo.git", "ssh://git.example/demo"],
    ["relays", "wss://a", "wss://b"], ["maintainers", MAINTAINER, "not-a-key", OWNER],
  ]);
  const forged = ev(30617, MALLORY, 300, [["d", "demo"], ["name", "Forged"]]);
  const otherD = ev(30617, OWNER, 400, [["d", "other"], ["name", "Other"]]);
  const a = announcement(COORD, [old, forged, cur, otherD]);
  assert.equal(a.name, "Demo");
  assert.equal(a.description, "A demo");
  assert.deepEqual(a.clone, ["https://git.example/demo.git", "ssh://git.example/demo"]);
  assert.deepEqual(a.relays, ["wss://a", "wss://b"]);
  assert.deepEqual(a.maintainers, [OWNER, MAINTAINER]);
  assert.equal(announcement(COORD, [forged]), null);
  assert.equal(announcement(`30617:${OWNER}:nameless`, [ev(30617, OWNER, 1, [["d", "nameless"]])]).name, "nameless");
});

test("titles: subject tag, the patch's Subject line, else the first line", () => {
  assert.equal(itemTitle(ev(1621, ALICE, 1, [["subject", " Crash on start "]], "body")), "Crash on start");
  const patch = "From 1234 Mon Sep 17 00:00:00 2001\nSubject: [PATCH v2 1/3] fix the parser\n\n+x\n";
  assert.equal(itemTitle(ev(1617, ALICE, 1, [], patch)), "fix the parser");
  assert.equal(itemTitle(ev(1618, ALICE, 1, [], "\n  first line\nsecond")), "first line");
  assert.equal(itemTitle(ev(1621, ALICE, 1, [], "")), "(untitled)");
  assert.equal(itemTitle(ev(1621, ALICE, 1, [], "x".repeat(200))).length, 100);
});

function fixture() {
  const issue = ev(1621, ALICE, 1000, [["a", COORD], ["subject", "issue one"]], "it breaks");
  const pr = ev(1618, ALICE, 3000, [["a", COORD], ["subject", "pr one"]]);
  const patch = ev(1617, ALICE, 2000, [["a", COORD], ["t", "root"]], "Subject: [PATCH] change 0\n");
  const elsewhere = ev(1621, ALICE, 4000, [["a", OTHER], ["subject", "not ours"]]);
  const events = [
    issue, pr, patch, elsewhere,
    // Statuses: the newest allowed one wins; a stranger's does not count.
    ev(1632, OWNER, 1100, [["e", issue.id, "", "root"], ["a", COORD]]),
    ev(1630, MALLORY, 1200, [["e", issue.id, "", "root"]]),
    ev(1631, MAINTAINER, 2100, [["e", patch.id, "", "root"]]),
    ev(1630, OWNER, 2050, [["e", patch.id, "", "root"]]),
    ev(1633, ALICE, 3100, [["e", pr.id, "", "root"]]), // the root's own author
    // Comments (NIP-22 E) and a NIP-34 reply on the issue; one comment on the PR.
    ev(1111, MALLORY, 1300, [["E", issue.id], ["K", "1621"], ["e", issue.id], ["k", "1621"]], "me too"),
    ev(1111, ALICE, 1400, [["E", issue.id], ["K", "1621"], ["e", "f".repeat(64)], ["k", "1111"]], "reply"),
    ev(1622, OWNER, 1500, [["e", issue.id, "", "root"], ["a", COORD]], "fixed?"),
    ev(1111, OWNER, 3200, [["E", pr.id], ["K", "1618"]], "looks good"),
    // A revision of the patch and an update of the PR.
    ev(1617, ALICE, 2200, [["a", COORD], ["e", patch.id, "", "reply"]], "Subject: [PATCH v2] change 0\n"),
    ev(1619, ALICE, 3300, [["E", pr.id], ["a", COORD]]),
  ];
  return { issue, pr, patch, events };
}

test("items: one per root of this repository, newest first, with status and counts", () => {
  const { issue, pr, patch, events } = fixture();
  const items = deriveItems(COORD, events, [OWNER, MAINTAINER]);
  assert.deepEqual(
    items.map((i) => [i.id, i.type, i.title, i.status, i.comments, i.revisions]),
    [
      [pr.id, "pr", "pr one", "draft", 1, 1],
      [patch.id, "patch", "change 0", "applied", 0, 1],
      [issue.id, "issue", "issue one", "closed", 3, 0],
    ],
  );
  assert.deepEqual(tally(items), { issue: 1, patch: 1, pr: 1, open: 0, applied: 1, closed: 1, draft: 1 });
  // Without the maintainer, the patch's newest status is the owner's "open".
  assert.equal(deriveItems(COORD, events, [OWNER]).find((i) => i.id === patch.id).status, "open");
  // No status at all: open.
  assert.equal(deriveItems(COORD, [issue], [OWNER])[0].status, "open");
});

test("the thread of an item: its comments, statuses and revisions, oldest first", () => {
  const { issue, patch, events } = fixture();
  const t = thread(issue.id, events, [OWNER, MAINTAINER]);
  assert.equal(t.root.title, "issue one");
  assert.equal(t.root.status, "closed");
  assert.deepEqual(t.entries.map((e) => [e.what, e.createdAt]), [
    ["closed", 1100], ["comment", 1300], ["comment", 1400], ["reply", 1500],
  ]);
  assert.deepEqual(thread(patch.id, events, [OWNER, MAINTAINER]).entries.map((e) => e.what), [
    "open", "applied", "revision",
  ]);
  assert.equal(thread("e".repeat(64), events, [OWNER]), null);
});

test("filters that read a repository from the store, root ids in chunks", () => {
  const ids = Array.from({ length: 5 }, (_, i) => String(i).repeat(64));
  const filters = repoFilters(COORD, ids, 2);
  assert.deepEqual(filters[0], { kinds: [30617, 30618], authors: [OWNER], "#d": ["demo"] });
  assert.deepEqual(filters[1], { "#a": [COORD] });
  const commentChunks = filters.filter((f) => f["#E"]).map((f) => f["#E"].length);
  assert.deepEqual(commentChunks, [2, 2, 1]);
  assert.equal(filters.filter((f) => f["#e"]).length, 3);
});

const relay = (state, failures = 0, storeError = null) => ({ url: "ws://x", state, method: null, failures, storeError });

test("the relays' summary: offline, syncing, in sync, partial, not saving", () => {
  assert.equal(connectivity([]), "idle");
  assert.equal(connectivity([relay("connecting")]), "syncing");
  assert.equal(connectivity([relay("backoff", 1), relay("dead", 9)]), "offline");
  assert.equal(connectivity([relay("connecting", 2)]), "offline");
  assert.equal(connectivity([relay("in-sync"), relay("in-sync")]), "in sync");
  assert.equal(connectivity([relay("in-sync"), relay("syncing")]), "syncing");
  assert.equal(connectivity([relay("in-sync"), relay("backoff", 1)]), "partial");
  assert.equal(connectivity([relay("in-sync"), relay("gaps")]), "partial");
  assert.equal(connectivity([relay("gaps"), relay("syncing")]), "syncing");
  const full = "store full: the browser refused to store more (free space, …)";
  assert.equal(connectivity([relay("syncing", 0, full), relay("in-sync")]), "not saving");
  assert.equal(connectivity([relay("backoff", 1), relay("syncing", 0, full)]), "not saving");
});

test("formatting for people", () => {
  assert.equal(formatBytes(999), "999 B");
  assert.equal(formatBytes(12_345), "12.3 kB");
  assert.equal(formatBytes(4_100_000), "4.1 MB");
  assert.equal(formatDate(1_700_000_000), "2023-11-14 22:13");
  assert.match(shortKey(OWNER), /^npub1\w{5}…\w{4}$/);
});
