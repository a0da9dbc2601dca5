//! What crosses to a verifying worker, and what the worker runs on it.
//!
//! The main thread packs a batch into one byte buffer (transferred, not copied): a
//! little-endian `u32` count, then per event its claimed id (32 bytes), public key (32),
//! signature (64), and the `u32` length and bytes of the id preimage — the
//! `[0,pubkey,created_at,kind,tags,content]` JSON that NIP-01 hashes. The worker answers
//! one byte per event: 1 when the preimage hashes to the id and the signature over the
//! id holds for the key, else 0. So the main thread's share is one serialisation per
//! event; hashing and the Schnorr check (nearly all the cost) run in the worker.

use std::cell::RefCell;
use std::sync::LazyLock;

use bitcoin_hashes::sha256;
use nostr::prelude::Event;
use secp256k1::schnorr::Signature;
use secp256k1::{Secp256k1, VerifyOnly, XOnlyPublicKey};

/// Bytes of an event's fixed-size part: id, public key, signature, preimage length.
const FIXED: usize = 32 + 32 + 64 + 4;

/// Packs `events` for a worker.
pub fn pack(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + events.len() * (FIXED + 256));
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        out.extend_from_slice(e.id.as_bytes());
        out.extend_from_slice(e.pubkey.as_bytes());
        out.extend_from_slice(e.sig.as_ref());
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        // The exact serialisation nostr's EventId::compute hashes. It cannot fail for
        // these types; an empty preimage (never hashing to a real id) if it ever did.
        let _ = serde_json::to_writer(
            &mut out,
            &(0u8, &e.pubkey, &e.created_at, &e.kind, &e.tags, &e.content),
        );
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    out
}

/// The count a packed buffer announces (0 when it is too short to say).
pub fn count(packed: &[u8]) -> usize {
    packed
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize)
}

/// The worker's side: one flag per announced event, 1 only for an event whose id and
/// signature hold; a truncated buffer leaves the events it lacks at 0.
pub fn check(packed: &[u8]) -> Vec<u8> {
    static SECP: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);
    let n = count(packed);
    let mut flags = vec![0u8; n];
    let mut rest = packed.get(4..).unwrap_or_default();
    for flag in &mut flags {
        let Some((fixed, tail)) = rest.split_at_checked(FIXED) else {
            break;
        };
        let len = u32::from_le_bytes([fixed[128], fixed[129], fixed[130], fixed[131]]) as usize;
        let Some((preimage, tail)) = tail.split_at_checked(len) else {
            break;
        };
        rest = tail;
        let (id, key, sig) = (&fixed[..32], &fixed[32..64], &fixed[64..128]);
        if sha256::Hash::hash(preimage).to_byte_array() != id {
            continue;
        }
        let (Ok(key), Ok(sig)) = (XOnlyPublicKey::from_slice(key), Signature::from_slice(sig))
        else {
            continue;
        };
        *flag = u8::from(SECP.verify_schnorr(&sig, id, &key).is_ok());
    }
    flags
}

thread_local! {
    /// The worker's input buffer (filled by JavaScript) and its last answer.
    static IO: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// For the worker script: a buffer of `len` bytes in this instance's memory for it to
/// fill with a packed batch. Valid until the next call into this module.
#[no_mangle]
pub extern "C" fn grasp_sync_verify_input(len: usize) -> *mut u8 {
    IO.with(|io| {
        let input = &mut io.borrow_mut().0;
        input.clear();
        input.resize(len, 0);
        input.as_mut_ptr()
    })
}

/// For the worker script: checks the packed batch in the input buffer; returns where its
/// flags are (one byte per announced event). Valid until the next call into this module.
#[no_mangle]
pub extern "C" fn grasp_sync_verify_run() -> *const u8 {
    IO.with(|io| {
        let mut io = io.borrow_mut();
        io.1 = check(&io.0);
        io.1.as_ptr()
    })
}
