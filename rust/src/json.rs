//! JSON output pieces exactly as Python's `json.dumps(..., ensure_ascii=True)` writes them.

use std::ptr;

const HEX: &[u8; 16] = b"0123456789abcdef";

const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
    5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Longest text [`write_i64_at`] writes (`-9223372036854775808`).
pub const I64_TEXT: usize = 20;

/// Append the decimal digits of `n`.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.reserve(I64_TEXT);
    // SAFETY: I64_TEXT bytes are reserved past len; len only covers the bytes written.
    unsafe {
        let start = out.len();
        let written = write_u64_at(out.as_mut_ptr().add(start), n);
        out.set_len(start + written);
    }
}

/// The number of decimal digits of `n`.
#[inline(always)]
fn digit_count(n: u64) -> usize {
    // floor(log10(n)) from the bit length (an underestimate by at most one), then fixed
    // by one comparison.
    const POWERS: [u64; 20] = {
        let mut p = [1u64; 20];
        let mut i = 1;
        while i < 20 {
            p[i] = p[i - 1] * 10;
            i += 1;
        }
        p
    };
    let n = n | 1; // zero has one digit, as one does
    let bits = 64 - n.leading_zeros() as usize;
    // bits * 1233 >> 12 approximates bits * log10(2) from below (as in "Bit Twiddling Hacks").
    let guess = (bits * 1233) >> 12;
    guess + usize::from(n >= POWERS[guess])
}

/// Write the decimal digits of `n` at `p` and return their number.
///
/// # Safety
/// `p` must be valid for writes of 20 bytes.
#[inline(always)]
pub unsafe fn write_u64_at(p: *mut u8, mut n: u64) -> usize {
    let len = digit_count(n);
    if n < 100_000_000 {
        // Up to eight digits, made at once and written by one store, without a loop
        // whose count (and so its branches) changes with the number of digits.
        let ascii = eight_digits(n as u32) | u64::from_ne_bytes(*b"00000000");
        // SAFETY (caller): eight bytes at p lie within the 20 the caller provides.
        unsafe {
            p.cast::<u64>()
                .write_unaligned((ascii >> (8 * (8 - len))).to_le())
        };
        return len;
    }
    let mut end = len;
    // SAFETY (caller): every write is below p + len <= p + 20.
    unsafe {
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            end -= 2;
            ptr::copy_nonoverlapping(DIGIT_PAIRS.as_ptr().add(pair), p.add(end), 2);
        }
        if n >= 10 {
            ptr::copy_nonoverlapping(DIGIT_PAIRS.as_ptr().add(n as usize * 2), p, 2);
        } else {
            *p = b'0' + n as u8;
        }
    }
    len
}

/// The eight decimal digits of `n < 10^8` as bytes 0-9 of a little-endian word, most
/// significant digit in the lowest byte (divisions by 10^4, 100 and 10 done lane-wise).
#[inline(always)]
pub(crate) fn eight_digits(n: u32) -> u64 {
    let n = u64::from(n);
    let x = (n / 10_000) | ((n % 10_000) << 32);
    // Per 32-bit lane (< 10^4): v / 100 == (v * 5243) >> 19.
    let hundreds = ((x * 5243) >> 19) & 0x0000_007f_0000_007f;
    let y = hundreds | ((x - hundreds * 100) << 16);
    // Per 16-bit lane (< 100): v / 10 == (v * 103) >> 10.
    let tens = ((y * 103) >> 10) & 0x000f_000f_000f_000f;
    tens | ((y - tens * 10) << 8)
}

/// Write `n` in decimal, as `int.__repr__` writes it, at `p`, and return its length.
///
/// # Safety
/// `p` must be valid for writes of [`I64_TEXT`] bytes.
#[inline(always)]
pub unsafe fn write_i64_at(p: *mut u8, n: i64) -> usize {
    let sign = usize::from(n < 0);
    // SAFETY (caller): the sign and at most 19 digits (20 for u64, but |n| <= 2^63).
    unsafe {
        *p = b'-';
        sign + write_u64_at(p.add(sign), n.unsigned_abs())
    }
}

/// Append `n` in decimal, as `int.__repr__` writes it.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    out.reserve(I64_TEXT);
    // SAFETY: I64_TEXT bytes are reserved past len; len only covers the bytes written.
    unsafe {
        let start = out.len();
        let written = write_i64_at(out.as_mut_ptr().add(start), n);
        out.set_len(start + written);
    }
}

/// Append `text` (generalised UTF-8: lone surrogates allowed) as a JSON string literal.
///
/// Printable ASCII other than `"` and `\` is copied; `\"`, `\\`, `\n`, `\r`, `\t`, `\b`,
/// `\f` get their short escapes; every other code point is `\uXXXX` in lowercase hex,
/// astral ones as a surrogate pair and lone surrogates as themselves.
pub fn write_str(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut i = 0;
    let mut run = 0;
    while i < text.len() {
        let b = text[i];
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        out.extend_from_slice(&text[run..i]);
        if b < 0x80 {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                _ => write_u_escape(out, u32::from(b)),
            }
            i += 1;
        } else {
            let (code, width) = decode(text, i);
            if code >= 0x10000 {
                let v = code - 0x10000;
                write_u_escape(out, 0xd800 | (v >> 10));
                write_u_escape(out, 0xdc00 | (v & 0x3ff));
            } else {
                write_u_escape(out, code);
            }
            i += width;
        }
        run = i;
    }
    out.extend_from_slice(&text[run..]);
    out.push(b'"');
}

fn write_u_escape(out: &mut Vec<u8>, code: u32) {
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[(code >> 12) as usize & 0xf],
        HEX[(code >> 8) as usize & 0xf],
        HEX[(code >> 4) as usize & 0xf],
        HEX[code as usize & 0xf],
    ]);
}

/// Decode one code point of generalised UTF-8 starting at `text[i]` (a lead byte >= 0x80).
fn decode(text: &[u8], i: usize) -> (u32, usize) {
    let lead = u32::from(text[i]);
    let cont = |k: usize| u32::from(text.get(i + k).copied().unwrap_or(0x80)) & 0x3f;
    if lead < 0xe0 {
        (((lead & 0x1f) << 6) | cont(1), 2)
    } else if lead < 0xf0 {
        (((lead & 0x0f) << 12) | (cont(1) << 6) | cont(2), 3)
    } else {
        (
            ((lead & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3),
            4,
        )
    }
}

/// Check that `bytes` is generalised UTF-8: UTF-8 that may also encode lone surrogates
/// (U+D800..U+DFFF, each on its own as three bytes), which Python strings can hold.
pub fn is_generalised_utf8(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (width, min) = match b {
            0x00..=0x7f => {
                i += 1;
                continue;
            }
            0xc2..=0xdf => (2, 0x80),
            0xe0..=0xef => (3, 0x800),
            0xf0..=0xf4 => (4, 0x10000),
            _ => return false,
        };
        if i + width > bytes.len() || !bytes[i + 1..i + width].iter().all(|&c| c & 0xc0 == 0x80) {
            return false;
        }
        let (code, _) = decode(bytes, i);
        if code < min || code > 0x10ffff {
            return false;
        }
        i += width;
    }
    true
}

/// Append code point `code` in generalised UTF-8 (surrogates encoded on their own).
pub fn push_code_point(out: &mut Vec<u8>, code: u32) {
    match code {
        0..=0x7f => out.push(code as u8),
        0x80..=0x7ff => {
            out.extend_from_slice(&[0xc0 | (code >> 6) as u8, 0x80 | (code & 0x3f) as u8])
        }
        0x800..=0xffff => out.extend_from_slice(&[
            0xe0 | (code >> 12) as u8,
            0x80 | ((code >> 6) & 0x3f) as u8,
            0x80 | (code & 0x3f) as u8,
        ]),
        _ => out.extend_from_slice(&[
            0xf0 | (code >> 18) as u8,
            0x80 | ((code >> 12) & 0x3f) as u8,
            0x80 | ((code >> 6) & 0x3f) as u8,
            0x80 | (code & 0x3f) as u8,
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &[u8]) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_json_dumps() {
        assert_eq!(escaped(b"plain"), r#""plain""#);
        assert_eq!(escaped(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped(b"\n\r\t\x08\x0c"), r#""\n\r\t\b\f""#);
        assert_eq!(escaped(b"\x00\x1f\x7f"), r#""\u0000\u001f\u007f""#);
        assert_eq!(escaped("é€".as_bytes()), r#""\u00e9\u20ac""#);
        assert_eq!(escaped("😀".as_bytes()), r#""\ud83d\ude00""#);
        assert_eq!(escaped(b"\xed\xa0\x80x"), r#""\ud800x""#);
        assert_eq!(escaped(b"\xed\xbf\xbf"), r#""\udfff""#);
    }

    #[test]
    fn writes_integers() {
        let mut out = Vec::new();
        let mut cases = vec![0, 7, -7, i64::MAX, i64::MIN, i64::MIN + 1];
        let mut power = 1i64;
        for _ in 0..19 {
            cases.extend([power - 1, power, power + 1, -power + 1, -power, -power - 1]);
            power = power.saturating_mul(10);
        }
        cases.extend((0..100_000).map(|i| i * 997 % 100_000_000));
        for n in cases {
            out.clear();
            write_i64(&mut out, n);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), n.to_string());
        }
        for n in [
            0,
            9,
            10,
            99,
            100,
            u64::MAX,
            u64::MAX / 10,
            10u64.pow(19) - 1,
            10u64.pow(19),
        ] {
            out.clear();
            write_u64(&mut out, n);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), n.to_string());
        }
    }

    #[test]
    fn validates_generalised_utf8() {
        assert!(is_generalised_utf8("aé€😀".as_bytes()));
        assert!(is_generalised_utf8(b"\xed\xa0\x80"));
        assert!(!is_generalised_utf8(b"\xc0\x80"));
        assert!(!is_generalised_utf8(b"\xe0\x80\x80"));
        assert!(!is_generalised_utf8(b"\xf4\x90\x80\x80"));
        assert!(!is_generalised_utf8(b"\xff"));
        assert!(!is_generalised_utf8(b"\xe2\x82"));
        let mut out = Vec::new();
        for code in [0x41, 0xe9, 0x20ac, 0xd800, 0x1f600] {
            push_code_point(&mut out, code);
        }
        assert_eq!(out, b"A\xc3\xa9\xe2\x82\xac\xed\xa0\x80\xf0\x9f\x98\x80");
    }
}
