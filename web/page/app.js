// The demo page: opens the module, tracks repositories, shows their sync and content,
// and follows changes live. State lives here; model.js derives, render.js draws.
//
// URL parameters (they override the saved settings, nothing is saved from them):
//   ?bootstrap=wss://…   a bootstrap relay (repeatable)
//   ?private=1           allow private / loopback relay addresses (local setups, tests)
//   ?db=name             the IndexedDB database name
//   ?repo=naddr1…        track this repository on load

import init, { GraspSync } from "grasp-sync-web";
import * as model from "./model.js";
import * as view from "./render.js";
import { loadAnnounced, loadRepo, loadTracked } from "./data.js";
import { discover } from "./discover.js";

const SETTINGS_KEY = "grasp-sync-page";
const DEFAULT_BOOTSTRAP = ["wss://relay.ngit.dev", "wss://nos.lol"];
/** The least time between two reloads of the shown repository while changes stream in. */
const RELOAD_MS = 250;

const page = {
  sync: null,
  readOnly: false,
  coord: null,
  itemId: null,
  type: "all",
  events: [],
  ann: null,
  items: [],
  loading: null,
  dirty: false,
  relays: [],
  bootstrap: [],
  discovered: [],
  connectivity: null,
};

function settings() {
  const params = new URL(location.href).searchParams;
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}") ?? {};
  } catch {
    saved = {};
  }
  const fromUrl = params.getAll("bootstrap");
  return {
    name: params.get("db") || "grasp-sync",
    bootstrapRelays: fromUrl.length ? fromUrl : saved.bootstrapRelays ?? DEFAULT_BOOTSTRAP,
    allowPrivateRelays: params.has("private")
      ? params.get("private") !== "0"
      : Boolean(saved.allowPrivateRelays),
  };
}

const describe = (e) => (e?.code ? `${e.message} (${e.code})` : String(e?.message ?? e));

async function start() {
  const options = settings();
  document.getElementById("bootstrap").value = options.bootstrapRelays.join("\n");
  document.getElementById("allow-private").checked = options.allowPrivateRelays;
  wireForms();
  try {
    await init();
    page.sync = await GraspSync.open(options);
  } catch (e) {
    view.message(`The sync module did not start: ${describe(e)}`);
    view.connectivity("offline", false);
    return;
  }
  const sync = page.sync;
  // For a developer's console: the module's API on this page's database.
  window.graspSync = sync;
  page.readOnly = !sync.isWriter;
  if (page.readOnly) {
    view.message("Another tab is syncing this database: this tab shows what it stores.", "info");
  }
  sync.onStatus(onStatus);
  onStatus(sync.status());
  sync.subscribe({ kinds: model.PAGE_KINDS }, onChanges);
  await Promise.all([refreshTracked(), refreshAnnounced()]);
  page.bootstrap = options.bootstrapRelays;
  rediscover();
  const fromUrl = new URL(location.href).searchParams.get("repo");
  if (fromUrl) await track(fromUrl);
  window.addEventListener("hashchange", route);
  await route();
  document.documentElement.dataset.ready = "true";
  if (sync.repos().length) watchSync();
}

function onStatus(relays) {
  page.relays = relays;
  view.relays(relays);
  const state = model.connectivity(relays);
  // Back from offline: the bootstrap relays may answer now.
  if (page.connectivity === "offline" && state !== "offline") rediscover();
  page.connectivity = state;
  view.connectivity(state, page.readOnly);
}

/** Asks the bootstrap relays for the repositories they announce, for the picker. */
async function rediscover() {
  page.discovered = await discover(page.bootstrap);
  await refreshAnnounced();
}

function onChanges({ added, removed }) {
  if (added.some((e) => e.kind === model.KIND.ANNOUNCEMENT)) {
    refreshTracked();
    refreshAnnounced();
  }
  if (page.coord && (added.length || removed.length)) scheduleReload();
}

/** Waits for the current sync to finish and shows its summary (gaps named). */
async function watchSync() {
  try {
    view.syncSummary(await page.sync.synced());
  } catch (e) {
    view.message(`Sync: ${describe(e)}`);
  }
}

async function refreshTracked() {
  try {
    view.tracked(await loadTracked(page.sync), page.coord, { onUntrack: untrack });
  } catch (e) {
    view.message(`Reading the tracked repositories: ${describe(e)}`);
  }
}

async function refreshAnnounced() {
  try {
    view.announced(await loadAnnounced(page.sync, page.discovered));
  } catch (e) {
    view.message(`Reading announcements: ${describe(e)}`);
  }
}

async function track(text) {
  let ref;
  try {
    ref = model.parseRepoInput(text);
  } catch (e) {
    view.message(e.message);
    return false;
  }
  try {
    await page.sync.track(text.trim().replace(/^nostr:/i, ""));
  } catch (e) {
    view.message(`Could not track ${ref.coord}: ${describe(e)}`);
    return false;
  }
  await refreshTracked();
  await refreshAnnounced();
  location.hash = `#/repo/${encodeURIComponent(ref.coord)}`;
  watchSync();
  return true;
}

async function untrack(coord) {
  try {
    await page.sync.untrack(coord);
  } catch (e) {
    view.message(`Could not untrack ${coord}: ${describe(e)}`);
    return;
  }
  if (page.coord === coord) location.hash = "";
  await refreshTracked();
  await refreshAnnounced();
}

/** `#/repo/<coord>[/<item id>]` → what is shown. */
async function route() {
  const m = /^#\/repo\/([^/]+)(?:\/([0-9a-f]{64}))?$/.exec(location.hash);
  let coord = m ? decodeURIComponent(m[1]) : null;
  if (!coord && !location.hash) coord = page.sync.repos()[0] ?? null;
  const itemId = m?.[2] ?? null;
  const changed = coord !== page.coord;
  page.coord = coord;
  page.itemId = itemId;
  if (changed) {
    page.events = [];
    page.type = "all";
    await refreshTracked();
    await reload();
  } else {
    draw();
  }
  if (itemId) document.getElementById("thread").focus();
}

function scheduleReload() {
  if (page.loading) {
    page.dirty = true;
    return;
  }
  page.loading = new Promise((resolve) => setTimeout(resolve, RELOAD_MS)).then(reload);
}

/** Reads the shown repository from the store and redraws it. */
async function reload() {
  const coord = page.coord;
  page.dirty = false;
  try {
    page.events = coord ? await loadRepo(page.sync, coord) : [];
  } catch (e) {
    view.message(`Reading ${coord} from this browser's store: ${describe(e)}`);
  }
  page.loading = null;
  if (coord !== page.coord) return;
  page.ann = coord ? model.announcement(coord, page.events) : null;
  const maintainers = page.ann?.maintainers ?? [model.splitCoord(coord ?? "")?.pubkey].filter(Boolean);
  page.items = coord ? model.deriveItems(coord, page.events, maintainers) : [];
  draw();
  document.getElementById("repo").dataset.loaded = coord ?? "";
  if (page.dirty) scheduleReload();
}

function draw() {
  view.repository(page.coord, page.ann, page.items, page.type);
  const maintainers = page.ann?.maintainers ?? [];
  view.threadView(page.coord, page.itemId ? model.thread(page.itemId, page.events, maintainers) : null);
}

function wireForms() {
  document.getElementById("track-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("repo-input");
    if (page.sync && (await track(input.value))) input.value = "";
  });
  document.getElementById("pick-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const coord = document.getElementById("announced").value;
    if (coord && page.sync) track(coord);
  });
  for (const button of document.querySelectorAll(".toolbar button")) {
    button.addEventListener("click", () => {
      page.type = button.dataset.type;
      draw();
    });
  }
  document.getElementById("settings-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const bootstrapRelays = document.getElementById("bootstrap").value
      .split(/\s+/).map((s) => s.trim()).filter(Boolean);
    const allowPrivateRelays = document.getElementById("allow-private").checked;
    localStorage.setItem(SETTINGS_KEY, JSON.stringify({ bootstrapRelays, allowPrivateRelays }));
    await page.sync?.close().catch(() => {});
    location.reload();
  });
}

start();
