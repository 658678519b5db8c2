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

/// Return the ids of many canonical texts, `ids[i]` that of `texts[i]`.
///
/// Where the CPU has AVX-512 (F, VL and BW), up to sixteen short texts at a time go
/// through the compression rounds together, one text per 32-bit lane of 512-bit
/// registers; the others, and every text elsewhere, are hashed one by one.
pub fn ids_of_many(texts: &[&[u8]], ids: &mut [[u8; ID_LEN]]) {
    assert_eq!(texts.len(), ids.len());
    #[cfg(target_arch = "x86_64")]
    {
        if lanes::available() {
            for (texts, ids) in texts.chunks(lanes::LANES).zip(ids.chunks_mut(lanes::LANES)) {
                if texts.len() >= lanes::MIN_TEXTS {
                    // SAFETY: the CPU has AVX2, AVX-512F, AVX-512VL and AVX-512BW (checked above).
                    unsafe { lanes::ids(texts, ids) };
                } else {
                    for (text, id) in texts.iter().zip(ids.iter_mut()) {
                        *id = id_bytes(text);
                    }
                }
            }
            return;
        }
    }
    for (text, id) in texts.iter().zip(ids.iter_mut()) {
        *id = id_bytes(text);
    }
}

/// SHA-256 of sixteen messages at once, one per 32-bit lane of 512-bit registers.
///
/// AVX-512F gives single-instruction rotations and three-input bitwise functions. The
/// 64 rounds are one chain of dependent instructions, so their time is set by latency,
/// not by the width of the registers: sixteen lanes took about the time eight lanes of
/// 256-bit registers took (hash_many on sampled floats: about 30 ns less per dict).
/// AVX-512BW is for the byte shuffle of 512-bit registers.
#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    use super::{hex_word, id_bytes, ID_LEN, INITIAL_STATE};

    /// Messages hashed together.
    pub(super) const LANES: usize = 16;
    /// Fewer texts than this are hashed one by one: the lanes cost the same when empty.
    pub(super) const MIN_TEXTS: usize = 4;
    /// Longest padded message a lane takes, in blocks; longer texts are hashed alone.
    const MAX_BLOCKS: usize = 4;
    const LANE_BYTES: usize = 64 * MAX_BLOCKS;

    /// The round constants of SHA-256 (FIPS 180-4, section 4.2.2).
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// 0: not checked yet, 1: absent, 2: present.
    static AVX512: AtomicU8 = AtomicU8::new(0);

    /// True if the CPU has AVX2, AVX-512F, AVX-512VL and AVX-512BW (checked once).
    pub(super) fn available() -> bool {
        match AVX512.load(Ordering::Relaxed) {
            0 => {
                let found = std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512bw");
                AVX512.store(if found { 2 } else { 1 }, Ordering::Relaxed);
                found
            }
            known => known == 2,
        }
    }

    /// Bitwise functions of three words, as `vpternlogd` truth tables.
    const XOR3: i32 = 0x96;
    const CHOOSE: i32 = 0xca;
    const MAJORITY: i32 = 0xe8;

    /// The ids of up to sixteen texts: the short ones in lanes, the others alone.
    ///
    /// # Safety
    /// The CPU must support AVX2, AVX-512F, AVX-512VL and AVX-512BW.
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw")]
    pub(super) unsafe fn ids(texts: &[&[u8]], ids: &mut [[u8; ID_LEN]]) {
        debug_assert!(texts.len() <= LANES && texts.len() == ids.len());
        // Each lane's padded message; a lane with no text has no blocks.
        let mut messages = [[0u8; LANE_BYTES]; LANES];
        let mut blocks = [0usize; LANES];
        for (i, text) in texts.iter().enumerate() {
            // The text, the 0x80 marker, zeros and the 64-bit bit length.
            let count = (text.len() + 9).div_ceil(64);
            if count > MAX_BLOCKS {
                ids[i] = id_bytes(text);
                continue;
            }
            let message = &mut messages[i];
            message[..text.len()].copy_from_slice(text);
            message[text.len()] = 0x80;
            let bits = (text.len() as u64).wrapping_mul(8);
            message[count * 64 - 8..count * 64].copy_from_slice(&bits.to_be_bytes());
            blocks[i] = count;
        }
        let most = blocks.iter().copied().max().unwrap_or(0);
        let mut state: [__m512i; 8] =
            std::array::from_fn(|j| _mm512_set1_epi32(INITIAL_STATE[j] as i32));
        for b in 0..most {
            let mut active: __mmask16 = 0;
            for (i, &count) in blocks.iter().enumerate() {
                active |= u16::from(count > b) << i;
            }
            // SAFETY: b * 64 < LANE_BYTES, and every block the lanes read lies inside
            // `messages`: lane * LANE_BYTES + b * 64 + 64 <= LANES * LANE_BYTES.
            unsafe {
                let block = messages.as_ptr().cast::<u8>().add(b * 64);
                compress(&mut state, block, active);
            }
        }
        let mut a = [0u32; LANES];
        let mut b = [0u32; LANES];
        // SAFETY: each array holds sixteen words, written by one unaligned store.
        unsafe {
            _mm512_storeu_si512(a.as_mut_ptr().cast(), state[0]);
            _mm512_storeu_si512(b.as_mut_ptr().cast(), state[1]);
        }
        for i in 0..texts.len() {
            if blocks[i] > 0 {
                ids[i][..8].copy_from_slice(&hex_word(a[i]));
                ids[i][8..].copy_from_slice(&hex_word(b[i]));
            }
        }
    }

    /// The message word sixteen places on from `w16`: s1(W[t-2]) + W[t-7] + s0(W[t-15])
    /// + W[t-16].
    #[inline(always)]
    fn schedule(w16: __m512i, w15: __m512i, w7: __m512i, w2: __m512i) -> __m512i {
        // SAFETY: only inlined into functions compiled with AVX-512F and AVX-512BW.
        unsafe {
            let s0 = _mm512_ternarylogic_epi32::<XOR3>(
                _mm512_ror_epi32::<7>(w15),
                _mm512_ror_epi32::<18>(w15),
                _mm512_srli_epi32::<3>(w15),
            );
            let s1 = _mm512_ternarylogic_epi32::<XOR3>(
                _mm512_ror_epi32::<17>(w2),
                _mm512_ror_epi32::<19>(w2),
                _mm512_srli_epi32::<10>(w2),
            );
            _mm512_add_epi32(_mm512_add_epi32(w16, s0), _mm512_add_epi32(w7, s1))
        }
    }

    /// One round on the working variables `v` (a to h) with message word `w` and
    /// round constant `k`.
    #[inline(always)]
    fn round(v: &mut [__m512i; 8], w: __m512i, k: u32) {
        let [a, b, c, d, e, f, g, h] = *v;
        // SAFETY: only inlined into functions compiled with AVX-512F and AVX-512BW.
        unsafe {
            let big_s1 = _mm512_ternarylogic_epi32::<XOR3>(
                _mm512_ror_epi32::<6>(e),
                _mm512_ror_epi32::<11>(e),
                _mm512_ror_epi32::<25>(e),
            );
            let ch = _mm512_ternarylogic_epi32::<CHOOSE>(e, f, g);
            let kw = _mm512_add_epi32(w, _mm512_set1_epi32(k as i32));
            let t1 = _mm512_add_epi32(_mm512_add_epi32(h, big_s1), _mm512_add_epi32(ch, kw));
            let big_s0 = _mm512_ternarylogic_epi32::<XOR3>(
                _mm512_ror_epi32::<2>(a),
                _mm512_ror_epi32::<13>(a),
                _mm512_ror_epi32::<22>(a),
            );
            let maj = _mm512_ternarylogic_epi32::<MAJORITY>(a, b, c);
            *v = [
                _mm512_add_epi32(t1, _mm512_add_epi32(big_s0, maj)),
                a,
                b,
                c,
                _mm512_add_epi32(d, t1),
                e,
                f,
                g,
            ];
        }
    }

    /// Compress one block in each lane whose bit is set in `active`, the block of lane
    /// `i` starting `i * LANE_BYTES` bytes past `block`; the other lanes keep their state.
    ///
    /// # Safety
    /// The 64 bytes at `block + i * LANE_BYTES` must be readable for every lane `i`.
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw")]
    unsafe fn compress(state: &mut [__m512i; 8], block: *const u8, active: __mmask16) {
        // Words are big-endian: reverse the bytes of each 32-bit lane.
        let swap = _mm512_set_epi64(
            0x0c0d_0e0f_0809_0a0b,
            0x0405_0607_0001_0203,
            0x0c0d_0e0f_0809_0a0b,
            0x0405_0607_0001_0203,
            0x0c0d_0e0f_0809_0a0b,
            0x0405_0607_0001_0203,
            0x0c0d_0e0f_0809_0a0b,
            0x0405_0607_0001_0203,
        );
        // Each lane's block in one register, then the 16 x 16 matrix of words transposed
        // so that register t holds word t of every lane: four rounds of shuffles (64 in
        // all) cost less than sixteen gathers of one word per lane.
        let rows: [__m512i; 16] = std::array::from_fn(|i| {
            // SAFETY (caller): lane i's block is readable.
            unsafe { _mm512_loadu_si512(block.add(i * LANE_BYTES).cast()) }
        });
        // Pairs of rows interleaved by words: in each 128-bit lane j, pair[2k] holds words
        // 4j and 4j + 1 of rows 2k and 2k + 1, pair[2k + 1] words 4j + 2 and 4j + 3.
        let pairs: [__m512i; 16] = std::array::from_fn(|x| {
            let (k, high) = (x / 2, x % 2 == 1);
            if high {
                _mm512_unpackhi_epi32(rows[2 * k], rows[2 * k + 1])
            } else {
                _mm512_unpacklo_epi32(rows[2 * k], rows[2 * k + 1])
            }
        });
        // quads[4k + m], 128-bit lane j: word 4j + m of rows 4k to 4k + 3.
        let quads: [__m512i; 16] = std::array::from_fn(|x| {
            let (k, m) = (x / 4, x % 4);
            let (a, b) = (pairs[4 * k + m / 2], pairs[4 * k + 2 + m / 2]);
            if m % 2 == 0 {
                _mm512_unpacklo_epi64(a, b)
            } else {
                _mm512_unpackhi_epi64(a, b)
            }
        });
        let mut w = [_mm512_setzero_si512(); 16];
        for m in 0..4 {
            // Words are big-endian: each is byte-swapped once in place.
            let even_lo = _mm512_shuffle_i32x4::<0x88>(quads[m], quads[4 + m]);
            let odd_lo = _mm512_shuffle_i32x4::<0xdd>(quads[m], quads[4 + m]);
            let even_hi = _mm512_shuffle_i32x4::<0x88>(quads[8 + m], quads[12 + m]);
            let odd_hi = _mm512_shuffle_i32x4::<0xdd>(quads[8 + m], quads[12 + m]);
            w[m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4::<0x88>(even_lo, even_hi), swap);
            w[8 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4::<0xdd>(even_lo, even_hi), swap);
            w[4 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4::<0x88>(odd_lo, odd_hi), swap);
            w[12 + m] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4::<0xdd>(odd_lo, odd_hi), swap);
        }
        let mut v = *state;
        for group in 0..4 {
            // Sixteen rounds, written out so that every index is a constant and the
            // sixteen message words stay in registers.
            macro_rules! round {
                ($i:literal) => {
                    if group > 0 {
                        w[$i] =
                            schedule(w[$i], w[($i + 1) % 16], w[($i + 9) % 16], w[($i + 14) % 16]);
                    }
                    round(&mut v, w[$i], K[16 * group + $i]);
                };
            }
            round!(0);
            round!(1);
            round!(2);
            round!(3);
            round!(4);
            round!(5);
            round!(6);
            round!(7);
            round!(8);
            round!(9);
            round!(10);
            round!(11);
            round!(12);
            round!(13);
            round!(14);
            round!(15);
        }
        let [a, b, c, d, e, f, g, h] = v;
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = _mm512_mask_add_epi32(*s, active, *s, v);
        }
    }
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
    fn many_match_single_ids_for_every_mix_of_lengths() {
        let text: Vec<u8> = (0..600u32).map(|i| (i * 13 + 5) as u8).collect();
        for count in 0..40 {
            for shift in 0..70 {
                let texts: Vec<&[u8]> = (0..count)
                    .map(|i| {
                        let len = (i * 37 + shift * 11) % 300 + usize::from(i % 9 == 0) * 250;
                        &text[i..i + len]
                    })
                    .collect();
                let mut ids = vec![[0u8; ID_LEN]; count];
                ids_of_many(&texts, &mut ids);
                for (text, id) in texts.iter().zip(&ids) {
                    assert_eq!(*id, id_bytes(text), "{count} {shift} {}", text.len());
                }
            }
        }
    }

    #[test]
    fn many_match_single_ids_at_every_length() {
        let text: Vec<u8> = (0..400u32).map(|i| (i * 29 + 1) as u8).collect();
        for len in 0..300 {
            let texts: Vec<&[u8]> = (0..9).map(|i| &text[i..i + len]).collect();
            let mut ids = vec![[0u8; ID_LEN]; texts.len()];
            ids_of_many(&texts, &mut ids);
            for (text, id) in texts.iter().zip(&ids) {
                assert_eq!(*id, id_bytes(text), "length {len}");
            }
        }
    }

    #[test]
    fn many_match_single_ids_with_mixed_lengths_in_a_batch() {
        // Lanes of one batch holding texts of different block counts (and some too long
        // for a lane), in batches of every size around the lane count.
        let text: Vec<u8> = (0..600u32).map(|i| (i * 131 + 7) as u8).collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for count in 1..=17 {
            for _ in 0..40 {
                let texts: Vec<&[u8]> = (0..count)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let len = (state % 300) as usize;
                        let start = ((state >> 20) % 300) as usize;
                        &text[start..start + len]
                    })
                    .collect();
                let mut ids = vec![[0u8; ID_LEN]; texts.len()];
                ids_of_many(&texts, &mut ids);
                for (text, id) in texts.iter().zip(&ids) {
                    assert_eq!(*id, id_bytes(text), "length {} of {count}", text.len());
                }
            }
        }
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
