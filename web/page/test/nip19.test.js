// Bech32 and NIP-19 against vectors made by another implementation (nostr-tools 2.x).
import { test } from "node:test";
import assert from "node:assert/strict";
import { bech32Decode, decodeNaddr, encodeNaddr, npub } from "../nip19.js";

const PK = "3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d";
const WITH_RELAY =
  "naddr1qvzqqqrhnypzqwlsccluhy6xxsr6l9a9uhhxf75g85g8a709tprjcn4e42h053vaqythwumn8ghj7un9d3shjtn90psk6urvv5hxxmmdqq9xwunpwdcz6umede3suum6v2";
const SHORT = "naddr1qvzqqqrhnypzqwlsccluhy6xxsr6l9a9uhhxf75g85g8a709tprjcn4e42h053vaqqqhsz3cksx";

test("decodes an naddr made by nostr-tools", () => {
  assert.deepEqual(decodeNaddr(WITH_RELAY), {
    kind: 30617,
    pubkey: PK,
    identifier: "grasp-sync",
    relays: ["wss://relay.example.com"],
  });
  assert.deepEqual(decodeNaddr(SHORT), { kind: 30617, pubkey: PK, identifier: "x", relays: [] });
});

test("encodes what it decodes, and what nostr-tools encodes", () => {
  assert.equal(
    encodeNaddr({ kind: 30617, pubkey: PK, identifier: "grasp-sync", relays: ["wss://relay.example.com"] }),
    WITH_RELAY,
  );
  assert.equal(encodeNaddr({ kind: 30617, pubkey: PK, identifier: "x" }), SHORT);
});

test("npub of a known key", () => {
  assert.equal(npub(PK), "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6");
});

test("a changed character fails the checksum", () => {
  const broken = SHORT.slice(0, 20) + (SHORT[20] === "q" ? "p" : "q") + SHORT.slice(21);
  assert.throws(() => bech32Decode(broken), /checksum/);
  assert.throws(() => bech32Decode("naddr1b"), /separator|character/);
  assert.throws(() => decodeNaddr("npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6"), /not an naddr/);
});
