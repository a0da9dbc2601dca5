// A consumer of the packed module: initialises the wasm (located by the bundler through
// `new URL(…, import.meta.url)`), opens the store, tracks `?repo=` and lists its issues
// and patches. Written against the package's own .d.ts: a renamed or retyped export
// fails `tsc`.
import init, { GraspSync, version } from "grasp-sync-web";
import type { NostrEvent, RelayStatus } from "grasp-sync-web";

const params = new URL(location.href).searchParams;
const $ = (id: string): HTMLElement => {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing`);
  return node;
};

function showRelays(relays: RelayStatus[]): void {
  $("relays").textContent = relays
    .map((r) => `${r.url} ${r.state} (${r.method ?? "-"}, ${r.stored} stored)`)
    .join("; ") || "none yet";
}

function subject(event: NostrEvent): string {
  return event.tags.find((t) => t[0] === "subject")?.[1] ?? event.content.split("\n")[0] ?? "";
}

async function main(): Promise<void> {
  await init();
  $("version").textContent = `grasp-sync-web ${version()}`;
  const sync = await GraspSync.open({
    name: params.get("db") ?? "grasp-sync-example",
    bootstrapRelays: params.getAll("bootstrap"),
    allowPrivateRelays: params.has("private"),
  });
  sync.onStatus(showRelays);
  const repo = params.get("repo");
  if (!repo) return;
  await sync.track(repo);
  const summary = await sync.synced();
  const tagged = await sync.query({ kinds: [1617, 1618, 1621], "#a": [sync.repos()[0] ?? repo] });
  // A patch that replies to another (a revision, the rest of a series) is not a root.
  const roots = tagged.filter((e) => e.kind !== 1617 || !e.tags.some((t) => t[0] === "e"));
  $("items").replaceChildren(
    ...roots.map((e) => Object.assign(document.createElement("li"), { textContent: subject(e) })),
  );
  document.body.dataset.complete = String(summary.complete);
}

main().catch((e: unknown) => {
  $("version").textContent = `failed: ${e instanceof Error ? e.message : String(e)}`;
});
