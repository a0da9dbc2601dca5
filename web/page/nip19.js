// Bech32 (BIP-173) and the NIP-19 entities the page reads and shows: `naddr` (a
// repository address) and `npub` (a public key). Pure functions, no DOM.

const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const GENERATOR = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values) {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= GENERATOR[i];
  }
  return chk;
}

function hrpExpand(hrp) {
  const out = [];
  for (const c of hrp) out.push(c.charCodeAt(0) >>> 5);
  out.push(0);
  for (const c of hrp) out.push(c.charCodeAt(0) & 31);
  return out;
}

/** Regroups `data` from `from`-bit to `to`-bit words; null when the padding is wrong. */
function convertBits(data, from, to, pad) {
  let acc = 0;
  let bits = 0;
  const out = [];
  const max = (1 << to) - 1;
  for (const value of data) {
    acc = (acc << from) | value;
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >>> bits) & max);
    }
    acc &= (1 << bits) - 1;
  }
  if (pad) {
    if (bits > 0) out.push((acc << (to - bits)) & max);
  } else if (bits >= from || ((acc << (to - bits)) & max) !== 0) {
    return null;
  }
  return out;
}

/** Decodes a bech32 string into `{ prefix, bytes }`; throws on a bad string. */
export function bech32Decode(text) {
  const s = text.trim();
  if (s !== s.toLowerCase() && s !== s.toUpperCase()) throw new Error("mixed case");
  const lower = s.toLowerCase();
  const sep = lower.lastIndexOf("1");
  if (sep < 1 || sep + 7 > lower.length) throw new Error("no bech32 separator");
  const prefix = lower.slice(0, sep);
  const words = [];
  for (const c of lower.slice(sep + 1)) {
    const v = CHARSET.indexOf(c);
    if (v < 0) throw new Error(`invalid bech32 character "${c}"`);
    words.push(v);
  }
  if (polymod(hrpExpand(prefix).concat(words)) !== 1) throw new Error("bad checksum");
  const bytes = convertBits(words.slice(0, -6), 5, 8, false);
  if (!bytes) throw new Error("bad padding");
  return { prefix, bytes: Uint8Array.from(bytes) };
}

/** Encodes `bytes` as bech32 with `prefix`. */
export function bech32Encode(prefix, bytes) {
  const words = convertBits(bytes, 8, 5, true);
  const mod = polymod(hrpExpand(prefix).concat(words, [0, 0, 0, 0, 0, 0])) ^ 1;
  const checksum = [];
  for (let i = 0; i < 6; i++) checksum.push((mod >>> (5 * (5 - i))) & 31);
  return prefix + "1" + words.concat(checksum).map((w) => CHARSET[w]).join("");
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

function fromHex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Decodes an `naddr1…` into `{ kind, pubkey, identifier, relays }`; throws when it is
 * not an naddr or lacks its kind or author.
 */
export function decodeNaddr(text) {
  const { prefix, bytes } = bech32Decode(text);
  if (prefix !== "naddr") throw new Error(`not an naddr (prefix "${prefix}")`);
  const utf8 = new TextDecoder();
  let identifier = null;
  let pubkey = null;
  let kind = null;
  const relays = [];
  for (let i = 0; i + 2 <= bytes.length; ) {
    const type = bytes[i];
    const len = bytes[i + 1];
    const value = bytes.slice(i + 2, i + 2 + len);
    if (value.length !== len) throw new Error("truncated TLV");
    if (type === 0) identifier = utf8.decode(value);
    else if (type === 1) relays.push(utf8.decode(value));
    else if (type === 2 && len === 32) pubkey = hex(value);
    else if (type === 3 && len === 4) kind = new DataView(value.buffer).getUint32(0);
    i += 2 + len;
  }
  if (identifier === null || pubkey === null || kind === null) {
    throw new Error("naddr without identifier, author or kind");
  }
  return { kind, pubkey, identifier, relays };
}

/** Encodes `{ kind, pubkey, identifier, relays }` as an `naddr1…`. */
export function encodeNaddr({ kind, pubkey, identifier, relays = [] }) {
  const utf8 = new TextEncoder();
  const parts = [];
  const push = (type, value) => parts.push(type, value.length, ...value);
  // The order nostr-tools writes: kind, author, relays, identifier.
  const k = new Uint8Array(4);
  new DataView(k.buffer).setUint32(0, kind);
  push(3, k);
  push(2, fromHex(pubkey));
  for (const relay of relays) push(1, utf8.encode(relay));
  push(0, utf8.encode(identifier));
  return bech32Encode("naddr", parts);
}

/** The `npub1…` of a hex public key. */
export function npub(pubkey) {
  return bech32Encode("npub", fromHex(pubkey));
}
