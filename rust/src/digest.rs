//! The id: the first 16 lowercase hex characters of the SHA-256 of the canonical text.

use sha2::block_api::compress256;

/// Length of an id in characters (64 bits of the digest).
pub const ID_LEN: usize = 16;

const INITIAL_STATE: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Return the id of a canonical text: `sha256(text).hexdigest()[:16]` as ASCII bytes.
///
/// Pads the message itself and hands all blocks to the compression function in one
/// call: for texts of a block or two this skips a third of the hasher's overhead.
pub fn id_bytes(canonical: &[u8]) -> [u8; ID_LEN] {
    let mut state = INITIAL_STATE;
    let full = canonical.len() / 64;
    let (head, tail) = canonical.split_at(full * 64);
    let (blocks, _) = head.as_chunks::<64>();
    compress256(&mut state, blocks);
    // The tail, the 0x80 marker and the 64-bit bit length fill one or two more blocks.
    let mut last = [[0u8; 64]; 2];
    let flat = last.as_flattened_mut();
    flat[..tail.len()].copy_from_slice(tail);
    flat[tail.len()] = 0x80;
    let count = if tail.len() < 56 { 1 } else { 2 };
    let bits = (canonical.len() as u64).wrapping_mul(8);
    flat[count * 64 - 8..count * 64].copy_from_slice(&bits.to_be_bytes());
    compress256(&mut state, &last[..count]);

    let mut id = [0u8; ID_LEN];
    id[..8].copy_from_slice(&hex_word(state[0]));
    id[8..].copy_from_slice(&hex_word(state[1]));
    id
}

/// The eight lowercase hex digits of `word`, most significant first.
fn hex_word(word: u32) -> [u8; 8] {
    // Byte i of the word (most significant first) into 16-bit lane i, then its high
    // nibble into byte 2i and its low nibble into byte 2i + 1 (little-endian order).
    let x = u64::from(word.swap_bytes());
    let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    let nibbles = ((x >> 4) & 0x000f_000f_000f_000f) | ((x & 0x000f_000f_000f_000f) << 8);
    // Per byte: '0' + n, plus 39 more for n >= 10 ('a' - '0' - 10).
    let letters = ((nibbles + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (nibbles + 0x3030_3030_3030_3030 + letters * 39).to_le_bytes()
}

/// Return the id of a canonical text as a `String`.
pub fn id_of(canonical: &[u8]) -> String {
    id_bytes(canonical).iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn known_digests() {
        // sha256(b"").hexdigest() and sha256(b"{}").hexdigest(), first 16 characters.
        assert_eq!(id_of(b""), "e3b0c44298fc1c14");
        assert_eq!(id_of(b"{}"), "44136fa355b3678a");
    }

    #[test]
    fn padding_matches_the_hasher_at_every_length() {
        let text: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..text.len() {
            let expected: String = Sha256::digest(&text[..len])
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(id_of(&text[..len]), expected, "length {len}");
        }
    }
}
