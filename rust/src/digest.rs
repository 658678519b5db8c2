//! The id: the first 16 lowercase hex characters of the SHA-256 of the canonical text.

use sha2::{Digest, Sha256};

/// Length of an id in characters (64 bits of the digest).
pub const ID_LEN: usize = 16;

/// Return the id of a canonical text: `sha256(text).hexdigest()[:16]` as ASCII bytes.
pub fn id_bytes(canonical: &[u8]) -> [u8; ID_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(canonical);
    let mut id = [0u8; ID_LEN];
    for (pair, byte) in id.chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    id
}

/// Return the id of a canonical text as a `String`.
pub fn id_of(canonical: &[u8]) -> String {
    id_bytes(canonical).iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        // sha256(b"").hexdigest() and sha256(b"{}").hexdigest(), first 16 characters.
        assert_eq!(id_of(b""), "e3b0c44298fc1c14");
        assert_eq!(id_of(b"{}"), "44136fa355b3678a");
    }
}
