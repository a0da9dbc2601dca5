// Repositories the bootstrap relays announce, asked of them directly with one REQ each
// (kind 30617, newest first): a list to pick from, nothing stored. Relays that fail or
// stay silent are skipped after a time-out.

/** Announcements from `url` (at most `limit`), or [] when it fails within `timeoutMs`. */
export function announcementsFrom(url, { limit = 200, timeoutMs = 5000 } = {}) {
  return new Promise((resolve) => {
    const events = [];
    let ws;
    const done = () => {
      clearTimeout(timer);
      try {
        ws?.close();
      } catch {
        // already closed
      }
      resolve(events);
    };
    const timer = setTimeout(done, timeoutMs);
    try {
      ws = new WebSocket(url);
    } catch {
      done();
      return;
    }
    ws.onopen = () => ws.send(JSON.stringify(["REQ", "announced", { kinds: [30617], limit }]));
    ws.onerror = done;
    ws.onclose = done;
    ws.onmessage = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!Array.isArray(frame)) return;
      if (frame[0] === "EVENT" && frame[1] === "announced" && isAnnouncement(frame[2])) events.push(frame[2]);
      else if (frame[0] === "EOSE" || frame[0] === "CLOSED") done();
    };
  });
}

function isAnnouncement(e) {
  return e && e.kind === 30617 && typeof e.pubkey === "string" && /^[0-9a-f]{64}$/.test(e.pubkey) &&
    Array.isArray(e.tags) && e.tags.every((t) => Array.isArray(t) && t.every((v) => typeof v === "string"));
}

/** Announcements from every relay in `urls`, at once. */
export async function discover(urls, options) {
  const lists = await Promise.all(urls.map((url) => announcementsFrom(url, options)));
  return lists.flat();
}
