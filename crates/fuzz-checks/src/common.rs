//! Helpers shared by the fuzz checks.

use grasp_sync_core::neg::NegItem;

/// splitmix64: a tiny deterministic generator for building item sets from a seed.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn id(&mut self) -> [u8; 32] {
        let mut id = [0u8; 32];
        for chunk in id.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        id
    }
}

/// `count` items from `seed`, timestamps in `[1_700_000_000, + spread)`: a small
/// `spread` makes equal timestamps (ties broken by id) common. Duplicates are possible
/// when `seed` repeats an id, which the API allows.
pub(crate) fn items(count: usize, seed: u8, spread: u64) -> Vec<NegItem> {
    let mut rng = Rng(u64::from(seed));
    (0..count)
        .map(|_| (1_700_000_000 + rng.next() % spread.max(1), rng.id()))
        .collect()
}

/// Reads the input front to back; every read succeeds (missing bytes read as 0, a
/// truncated payload is what is left).
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// A payload: a big-endian u16 length, then that many bytes (or what is left).
    pub fn payload(&mut self) -> &'a [u8] {
        let len = usize::from(u16::from_be_bytes([self.byte(), self.byte()]));
        let (payload, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        payload
    }
}

/// The frame limit a selector byte picks: 0 (read as "raise to the minimum"), the
/// minimum, just above it, or the default.
pub(crate) fn frame_limit(selector: u8) -> u64 {
    match selector % 4 {
        0 => 0,
        1 => grasp_sync_core::neg::MIN_FRAME_LIMIT,
        2 => grasp_sync_core::neg::MIN_FRAME_LIMIT + 1,
        _ => grasp_sync_core::neg::DEFAULT_FRAME_LIMIT,
    }
}

/// Whether `GRASP_FUZZ_SKIP_KNOWN=1`: checks for known, still unfixed findings are
/// skipped, so a campaign can look for new ones (each target says which checks).
pub(crate) fn skip_known() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("GRASP_FUZZ_SKIP_KNOWN").is_some_and(|v| v == "1"))
}
