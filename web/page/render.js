// Renders the page's state into the DOM. Text from events only ever goes in as text
// (textContent), never as markup.

import { formatBytes, formatDate, shortKey, tally } from "./model.js";

/** `el("a", { href: "#" }, "text", child)`: an element with attributes and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

/** A message for the user; `kind` "error" stays until dismissed, "info" fades. */
export function message(text, kind = "error") {
  const box = $("messages");
  const close = el("button", { type: "button", class: "dismiss", "aria-label": "Dismiss" }, "×");
  const note = el("p", { class: `note ${kind}` }, text, " ", close);
  close.addEventListener("click", () => note.remove());
  box.append(note);
  if (kind !== "error") setTimeout(() => note.remove(), 6000);
}

const CONNECTIVITY_TEXT = {
  starting: "starting…",
  idle: "idle",
  syncing: "syncing…",
  "in sync": "in sync",
  partial: "in sync with some relays",
  offline: "offline — showing what this browser stored",
  "not saving": "not saving — the browser refuses to store more",
};

/** The badge in the header: "in sync", "syncing…", "offline — …". */
export function connectivity(state, readOnly) {
  const badge = $("connectivity");
  badge.dataset.state = state;
  badge.textContent = (CONNECTIVITY_TEXT[state] ?? state) + (readOnly ? " (read-only tab)" : "");
}

/** The summary of the last finished sync (SyncSummary), gaps named. */
export function syncSummary(summary) {
  const out = $("sync-summary");
  if (!summary) {
    out.textContent = "";
    return;
  }
  const gaps = summary.relays.filter((r) => r.result === "incomplete").map((r) => r.url);
  const failed = summary.relays.filter((r) => r.result === "failed").map((r) => r.url);
  const parts = [
    summary.complete ? "Last sync complete" : "Last sync incomplete",
    `${summary.repos} repositories, ${summary.stored} events stored`,
  ];
  if (gaps.length) parts.push(`gaps at ${gaps.join(", ")}`);
  if (failed.length) parts.push(`failed: ${failed.join(", ")}`);
  out.textContent = parts.join("; ") + ".";
  out.dataset.complete = String(summary.complete);
}

/** One row per relay, updated in place (keyed by URL). */
export function relays(list) {
  const body = $("relay-rows");
  const rows = new Map([...body.rows].map((r) => [r.dataset.url, r]));
  const seen = new Set();
  for (const r of [...list].sort((a, b) => a.url.localeCompare(b.url))) {
    seen.add(r.url);
    let row = rows.get(r.url);
    if (!row) {
      row = el("tr", { dataset: { url: r.url } },
        el("th", { scope: "row", class: "url" }, r.url),
        ...Array.from({ length: 7 }, () => el("td")));
      body.append(row);
    }
    const cells = row.cells;
    row.dataset.state = r.state;
    cells[1].textContent = r.state;
    const bar = el("progress", { max: "1", "aria-label": `${r.url} ${r.state}` });
    if (r.state === "in-sync" || r.state === "gaps") bar.value = 1;
    else if (r.state === "backoff" || r.state === "dead" || r.state === "idle") bar.value = 0;
    cells[2].replaceChildren(bar);
    cells[3].textContent = r.method === "nip77" ? "NIP-77" : r.method === "req" ? "REQ" : "—";
    cells[4].textContent = `${r.stored} stored / ${r.received} received` +
      (r.rejected ? `, ${r.rejected} rejected` : "");
    cells[5].textContent = `${formatBytes(r.bytesIn)} / ${formatBytes(r.bytesOut)}`;
    cells[6].textContent = String(r.failures);
    const problems = [];
    if (r.incompleteWindows) problems.push(`gap: ${r.incompleteWindows} incomplete window(s)`);
    if (r.abandonedWaiting) problems.push(`gap: ${r.abandonedWaiting} query(ies) given up after failing, asked again later`);
    if (r.undeliveredIds) problems.push(`gap: ${r.undeliveredIds} event(s) announced, never sent`);
    if (r.badFrames) problems.push(`${r.badFrames} bad frame(s)`);
    if (r.lastError) problems.push(r.lastError);
    if (r.storeError) problems.push(`not stored: ${r.storeError}`);
    cells[7].textContent = problems.join("; ") || "—";
    cells[7].classList.toggle("problem", problems.length > 0);
  }
  for (const [url, row] of rows) if (!seen.has(url)) row.remove();
}

/** The tracked repositories: `[{ coord, name }]`, the selected one marked. */
export function tracked(list, selected, { onUntrack }) {
  const ul = $("tracked");
  ul.replaceChildren(...list.map(({ coord, name }) => {
    const link = el("a", { href: `#/repo/${encodeURIComponent(coord)}`, title: coord,
      "aria-current": coord === selected ? "page" : null }, name);
    const remove = el("button", { type: "button", class: "small", "aria-label": `Stop tracking ${name}` }, "Untrack");
    remove.addEventListener("click", () => onUntrack(coord));
    return el("li", {}, link, " ", remove);
  }));
  $("tracked-empty").hidden = list.length > 0;
}

/** The choice of repositories the bootstrap relays announce: `[{ coord, label }]`. */
export function announced(list) {
  const select = $("announced");
  const current = select.value;
  const options = list.length
    ? list.map(({ coord, label }) => el("option", { value: coord }, label))
    : [el("option", { value: "" }, "(none seen yet)")];
  select.replaceChildren(...options);
  if (list.some((o) => o.coord === current)) select.value = current;
}

function metaRow(term, ...values) {
  return [el("dt", {}, term), el("dd", {}, ...values)];
}

function list(values, render = (v) => v) {
  if (!values.length) return "—";
  return el("ul", { class: "inline" }, values.map((v) => el("li", {}, render(v))));
}

/** The repository: announcement, counts and its items (filtered by `type`). */
export function repository(coord, ann, items, type) {
  $("repo-empty").hidden = Boolean(coord);
  $("repo-body").hidden = !coord;
  if (!coord) {
    $("repo-heading").textContent = "Repository";
    return;
  }
  $("repo-heading").textContent = ann ? ann.name : "Repository (announcement not synced yet)";
  $("repo-meta").replaceChildren(
    ...metaRow("Address", el("code", {}, coord)),
    ...(ann ? [
      ...metaRow("Description", ann.description || "—"),
      ...metaRow("Clone", list(ann.clone, (u) => el("code", {}, u))),
      ...metaRow("Maintainers", list(ann.maintainers, (k) => el("span", { title: k }, shortKey(k)))),
      ...metaRow("Relays", list(ann.relays, (u) => el("code", {}, u))),
    ] : []),
  );
  const counts = tally(items);
  const shown = type === "all" ? items : items.filter((i) => i.type === type);
  $("item-count").textContent = `${counts.issue} issues, ${counts.patch} patches, ${counts.pr} pull requests` +
    ` — ${counts.open} open, ${counts.applied} applied, ${counts.closed} closed, ${counts.draft} draft.` +
    (shown.length !== items.length ? ` Showing ${shown.length}.` : "");
  for (const button of document.querySelectorAll(".toolbar button")) {
    button.setAttribute("aria-pressed", String(button.dataset.type === type));
  }
  const href = (id) => `#/repo/${encodeURIComponent(coord)}/${id}`;
  $("item-rows").replaceChildren(...shown.map((item) => el("tr", { dataset: { id: item.id, type: item.type } },
    el("td", {}, el("span", { class: `type ${item.type}` }, TYPE_NAME[item.type])),
    el("td", { class: "title" }, el("a", { href: href(item.id) }, item.title)),
    el("td", {}, el("span", { title: item.author }, shortKey(item.author))),
    el("td", {}, el("time", { datetime: new Date(item.createdAt * 1000).toISOString() }, formatDate(item.createdAt))),
    el("td", {}, el("span", { class: `status ${item.status}` }, item.status)),
    el("td", { class: "num" }, String(item.comments)),
  )));
}

const TYPE_NAME = { issue: "Issue", patch: "Patch", pr: "PR" };

/** One item's thread, or hides the panel when `t` is null. */
export function threadView(coord, t) {
  const panel = $("thread");
  panel.hidden = !t;
  $("repo-list").hidden = Boolean(t);
  if (!t) return;
  $("thread-back").href = `#/repo/${encodeURIComponent(coord)}`;
  $("thread-heading").textContent = `${TYPE_NAME[t.root.type]}: ${t.root.title}`;
  $("thread-root").replaceChildren(
    el("p", { class: "byline" }, el("span", { class: `status ${t.root.status}` }, t.root.status), " ",
      shortKey(t.root.author), " on ", formatDate(t.root.createdAt)),
    el("pre", { class: "body" }, t.root.text),
  );
  $("thread-entries").replaceChildren(...t.entries.map((e) => el("li", { class: `entry ${e.what}` },
    el("p", { class: "byline" }, el("strong", {}, e.what), " by ", el("span", { title: e.author }, shortKey(e.author)),
      " on ", formatDate(e.createdAt)),
    e.text ? el("pre", { class: "body" }, e.text) : null,
  )));
}
