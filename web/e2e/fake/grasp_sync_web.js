// A stand-in for the wasm module with the same JavaScript API (WEB-API.md) over an
// in-memory set of hand-made events, for looking at the page before the module builds.
// Not used by the end-to-end tests, which run the real module against real relays.

const OWNER = "a1".repeat(32);
const PEOPLE = ["b2".repeat(32), "c3".repeat(32), "d4".repeat(32)];
const COORD = `30617:${OWNER}:grasp-sync`;
let n = 0;
const ev = (kind, pubkey, created_at, tags, content = "") => ({
  id: (++n).toString(16).padStart(64, "0"), pubkey, created_at, kind, tags, content, sig: "",
});

function corpus() {
  const events = [ev(30617, OWNER, 1_700_000_000, [["d", "grasp-sync"], ["name", "grasp-sync"],
    ["description", "Sync engine for git over nostr"], ["clone", "https://git.example.com/grasp-sync.git"],
    ["relays", "ws://127.0.0.1:7001", "ws://127.0.0.1:7002"], ["maintainers", PEOPLE[0]]])];
  for (let i = 0; i < 14; i++) {
    const at = 1_700_100_000 + i * 9_000;
    const who = PEOPLE[i % 3];
    const root = i % 3 === 0
      ? ev(1617, who, at, [["a", COORD], ["t", "root"]], `From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] change ${i}\n\n+x\n`)
      : ev(i % 3 === 1 ? 1621 : 1618, who, at, [["a", COORD], ["subject", `${i % 3 === 1 ? "issue" : "pr"} ${i}`]], "Something to talk about.");
    events.push(root);
    for (let c = 0; c < i % 4; c++) {
      events.push(ev(1111, PEOPLE[(i + c) % 3], at + 100 * (c + 1), [["E", root.id], ["K", String(root.kind)]], `comment ${c}`));
    }
    if (i % 5 === 1) events.push(ev(1630 + (i % 4), OWNER, at + 500, [["e", root.id, "", "root"]]));
  }
  return events;
}

function matches(e, f) {
  if (f.ids && !f.ids.includes(e.id)) return false;
  if (f.kinds && !f.kinds.includes(e.kind)) return false;
  if (f.authors && !f.authors.includes(e.pubkey)) return false;
  for (const [k, v] of Object.entries(f)) {
    if (k[0] === "#" && !e.tags.some((t) => t[0] === k.slice(1) && v.includes(t[1]))) return false;
  }
  return true;
}

export default async function init() {}
export function version() { return "fake"; }

export class GraspSync {
  static async open() { return new GraspSync(); }
  constructor() {
    this.isWriter = true;
    this.events = corpus();
    this.tracked = [];
    this.listeners = [];
    this.relays = ["ws://127.0.0.1:7001", "ws://127.0.0.1:7002"].map((url, i) => ({
      url, state: "syncing", method: i ? "req" : "nip77", received: 0, stored: 0, rejected: 0,
      badFrames: 0, bytesIn: 0, bytesOut: 0, roundTrips: 0, failures: 0, incompleteWindows: 0, undeliveredIds: 0, abandonedJobs: 0, abandonedWaiting: 0, lastError: null,
    }));
  }
  async track(repo) { if (!this.tracked.includes(COORD)) this.tracked.push(COORD); }
  async untrack(repo) { this.tracked = this.tracked.filter((r) => r !== repo); }
  repos() { return [...this.tracked]; }
  async query(f) {
    const out = this.events.filter((e) => matches(e, f)).sort((a, b) => b.created_at - a.created_at);
    return f.limit ? out.slice(0, f.limit) : out;
  }
  subscribe(f, cb) { this.listeners.push([f, cb]); return { close() {} }; }
  async publish(e) { this.events.push(e); for (const [f, cb] of this.listeners) if (matches(e, f)) cb({ added: [e], removed: [] }); return { stored: true, accepted: [], refused: [] }; }
  status() { return this.relays.map((r) => ({ ...r })); }
  onStatus(cb) {
    setTimeout(() => {
      this.relays = this.relays.map((r) => ({ ...r, state: "in-sync", received: 60, stored: 58, bytesIn: 48_000, bytesOut: 2_100, roundTrips: 3 }));
      cb(this.status());
    }, 300);
    return { close() {} };
  }
  async synced() { await new Promise((r) => setTimeout(r, 350)); return { complete: true, relays: this.status().map((r) => ({ ...r, result: "in-sync" })), repos: this.tracked.length, stored: this.events.length }; }
  async close() {}
}
