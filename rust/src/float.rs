//! Floats as Python sees them: `round(x, 12)` and the shortest round-trip `repr`.

/// Python's `round(x, 12)`: the binary value rounded to 12 decimal places (ties to even),
/// then converted back to the nearest double. NaN and infinities are returned unchanged.
///
/// Exact integer arithmetic, no text round-trip. Write `x = m * 2^e`; then
/// `x * 10^12 = m * 5^12 * 2^(e + 12)`, and `m * 5^12 < 2^81` fits in a `u128`.
/// Rounding that to an integer `q` is the exact decimal rounding, and since
/// `q < 2^53`, `q as f64 / 1e12` divides two exact doubles, which IEEE 754 rounds
/// correctly: the same double Python gets by parsing the rounded decimal text.
pub fn round12(x: f64) -> f64 {
    // At 2^13 and above one ulp exceeds 1e-12, so x is already the nearest double
    // to its own 12-place rounding (this also covers infinities and NaN).
    if !x.is_finite() || x.abs() >= ROUND12_LIMIT {
        return x;
    }
    // q < 2^53: exact as a double, and so is 1e12.
    let magnitude = scaled_round12(x) as f64 / 1e12;
    if x.is_sign_negative() {
        -magnitude
    } else {
        magnitude
    }
}

const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
    5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Below this magnitude `round12` can change a value; from it on, never.
const ROUND12_LIMIT: f64 = 8192.0;

/// `|x| * 10^12` rounded to an integer, ties to even, for finite `|x| < 2^13`.
///
/// The exact product is `hi + lo` (`lo` from a fused multiply-add is the exact error,
/// as `hi < 2^53` and, where it matters, nothing underflows). Rounding `hi` to an
/// integer is only wrong when `hi` sits exactly on a half: then `lo` breaks the tie.
/// When `hi >= 2^52` it is already an integer, rounded from the exact product with
/// ties to even by the multiplication itself.
#[inline(always)]
fn scaled_round12(x: f64) -> u64 {
    debug_assert!(x.is_finite() && x.abs() < ROUND12_LIMIT);
    let a = x.abs();
    let hi = a * 1e12;
    // Round to an integer, ties to even: adding and removing 2^52 leaves no fraction
    // bits (in the default rounding mode); from 2^52 on, hi is already an integer.
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    let r = if hi < TWO_52 {
        (hi + TWO_52) - TWO_52
    } else {
        hi
    };
    let d = hi - r;
    // SAFETY: 0 <= r <= 2^53, so the conversion is exact (one instruction, no clamping).
    let q = unsafe { r.to_int_unchecked::<i64>() } as u64;
    if d.abs() != 0.5 {
        return q;
    }
    break_tie(a, hi, d, q)
}

/// `scaled_round12` when `hi = |x| * 1e12` (rounded) sits exactly on a half: the exact
/// error of the product decides. Rare, so kept out of the inlined path.
#[cold]
#[inline(never)]
fn break_tie(a: f64, hi: f64, d: f64, q: u64) -> u64 {
    // Without an FMA unit, mul_add is a call: one more reason to keep this out of line.
    let lo = a.mul_add(1e12, -hi);
    if lo == 0.0 || (lo > 0.0) != (d > 0.0) {
        q
    } else if d > 0.0 {
        q + 1
    } else {
        q - 1
    }
}

/// Append `repr(round(x, 12))` as `json.dumps` writes it, without a float round-trip.
///
/// For `|x| < 2^13` the rounded value is `q / 10^12` with integer `q`, and its shortest
/// round-trip digits are exactly q's digits less trailing zeros: any other decimal with
/// at most 12 places is at least 1e-12 away, more than the half-ulp (< 4.6e-13) that
/// could still round to the same double. So the digits come straight from `q`.
pub fn write_round12_repr(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() || x.abs() >= ROUND12_LIMIT {
        write_float_repr(out, x);
        return;
    }
    let q = scaled_round12(x);
    if q < 100_000_000 {
        // Below 1e-4 (or zero): the rare exponent layout.
        write_small_round12_repr(out, x.is_sign_negative(), q);
        return;
    }
    out.reserve(SHORT_REPR);
    // SAFETY: SHORT_REPR bytes are reserved past len; write_fixed_round12 writes at most
    // that many and len only covers the bytes it wrote.
    unsafe {
        let start = out.len();
        let n = write_fixed_round12(out.as_mut_ptr().add(start), x.is_sign_negative(), q);
        out.set_len(start + n);
    }
}

/// Longest text [`format_round12_short`] writes (`-8191.999999999999` is 18 bytes).
pub const SHORT_REPR: usize = 24;

/// Write `repr(round(x, 12))` at the start of `buf` and return its length, when `x` takes
/// the common layout (finite, `1e-4 <= |x| < 2^13`); otherwise return None, leaving `buf`.
///
/// The same text as [`write_round12_repr`], for callers that keep it (a cache slot).
#[inline]
pub fn format_round12_short(buf: &mut [u8; 32], x: f64) -> Option<usize> {
    // SAFETY: buf has 32 >= SHORT_REPR bytes.
    match unsafe { write_short_round12(buf.as_mut_ptr(), x) } {
        0 => None,
        len => Some(len),
    }
}

/// Write `repr(round(x, 12))` at `p` and return its length when `x` takes the common
/// layout (finite, `1e-4 <= |x| < 2^13`); otherwise write nothing and return 0.
///
/// # Safety
/// `p` must be valid for writes of `SHORT_REPR` bytes.
#[inline(always)]
pub(crate) unsafe fn write_short_round12(p: *mut u8, x: f64) -> usize {
    // One comparison rejects NaN, the infinities and every magnitude from 2^13 on
    // (`<` is false for NaN).
    let in_range = x.abs() < ROUND12_LIMIT;
    if !in_range {
        return 0;
    }
    let q = scaled_round12(x);
    if q < 100_000_000 {
        return 0;
    }
    // SAFETY (caller): p is valid for SHORT_REPR bytes.
    unsafe { write_fixed_round12(p, x.is_sign_negative(), q) }
}

/// Write the fixed layout of `q / 10^12` (`10^8 <= q < 8192 * 10^12`) at `p`, with a
/// leading `-` if `negative`, and return its length.
///
/// # Safety
/// `p` must be valid for writes of `SHORT_REPR` bytes.
#[inline(always)]
unsafe fn write_fixed_round12(p: *mut u8, negative: bool, q: u64) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY (caller): p is valid for SHORT_REPR bytes.
        unsafe { sse2::write_fixed_round12(p, negative, q) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        // SAFETY (caller): p is valid for SHORT_REPR bytes.
        unsafe { write_fixed_round12_scalar(p, negative, q) }
    }
}

/// [`write_fixed_round12`] with the digits made in general-purpose registers.
///
/// # Safety
/// `p` must be valid for writes of `SHORT_REPR` bytes.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline(always)]
unsafe fn write_fixed_round12_scalar(p: *mut u8, negative: bool, q: u64) -> usize {
    // q < 8192e12 < 10^16: sixteen digits, the point after the fourth. The digits are
    // made in registers (one byte per digit, most significant first) and written once.
    let high = eight_digits((q / 100_000_000) as u32);
    let low = eight_digits((q % 100_000_000) as u32);
    let int_part = high as u32;
    let frac_head = (high >> 32) as u32;
    // Leading zeros of the integer part go, but one digit stays ("0.5"): an all-zero
    // part has 32 trailing zero bits, which also gives 3.
    let skip = (int_part.trailing_zeros() / 8).min(3);
    // Trailing zeros of the fraction go, but one digit stays ("100.0"). Its twelve
    // digits are bytes 0-11 of `frac`, so the top four bytes are always zero.
    let frac = u128::from(frac_head) | (u128::from(low) << 32);
    let frac_len = (16 - frac.leading_zeros() / 8).max(1) as usize;
    const ASCII: u64 = u64::from_ne_bytes(*b"00000000");
    let sign = usize::from(negative);
    // SAFETY (caller): the writes end at most 1 + 4 + 1 + 4 + 8 = 18 bytes past p.
    unsafe {
        // Written unconditionally, then overwritten by the digits when not negative.
        *p = b'-';
        let int_ascii = (int_part | ASCII as u32) >> (8 * skip);
        p.add(sign).cast::<u32>().write_unaligned(int_ascii.to_le());
        let n = sign + 4 - skip as usize;
        *p.add(n) = b'.';
        p.add(n + 1)
            .cast::<u32>()
            .write_unaligned((frac_head | ASCII as u32).to_le());
        p.add(n + 5)
            .cast::<u64>()
            .write_unaligned((low | ASCII).to_le());
        n + 1 + frac_len
    }
}

/// The sixteen digits of a float's text made at once in one 128-bit register: SSE2 is
/// part of x86_64, so no run-time check is needed. Half the instructions of the scalar
/// path, on the hottest path of a sweep of sampled floats.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::*;

    /// The decimal digits of `q < 10^16`, sixteen of them with leading zeros, as byte
    /// values 0-9, most significant in byte 0.
    ///
    /// The scalar path's lane-wise divisions, on all sixteen digits at once: each half
    /// of eight digits is split by 10^4 in a 64-bit lane, each group of four by 100 in a
    /// 32-bit lane, each pair by 10 in a 16-bit lane. Every division is a multiplication
    /// by a reciprocal, exact in the range it is used on (not a power of two, which the
    /// compiler would turn into per-lane shifts SSE2 does not have).
    #[inline(always)]
    pub(super) fn sixteen_digits(q: u64) -> __m128i {
        debug_assert!(q < 10_000_000_000_000_000);
        let high = q / 100_000_000;
        let low = q % 100_000_000;
        // SAFETY: SSE2 intrinsics on values only; this module is compiled only where the
        // target has SSE2 (every x86_64 CPU).
        unsafe {
            let halves = _mm_set_epi64x(low as i64, high as i64);
            // n / 10^4 == (n * 0xd1b71759) >> 45 for n < 10^8.
            let tops = _mm_srli_epi64::<45>(_mm_mul_epu32(halves, _mm_set1_epi64x(0xd1b7_1759)));
            let bottoms = _mm_sub_epi32(halves, _mm_mul_epu32(tops, _mm_set1_epi64x(10_000)));
            // 32-bit lanes: the four groups of four digits, most significant first.
            let fours = _mm_or_si128(tops, _mm_slli_epi64::<32>(bottoms));
            // n / 100 == ((n * 5243) >> 16) >> 3 for n < 10^4.
            let hundreds = _mm_srli_epi16::<3>(_mm_mulhi_epu16(fours, _mm_set1_epi16(5243)));
            let rest = _mm_sub_epi16(fours, _mm_mullo_epi16(hundreds, _mm_set1_epi16(100)));
            // 16-bit lanes: the eight pairs of digits.
            let twos = _mm_or_si128(hundreds, _mm_slli_epi32::<16>(rest));
            // n / 10 == (n * 6554) >> 16 for n < 100.
            let tens = _mm_mulhi_epu16(twos, _mm_set1_epi16(6554));
            let ones = _mm_sub_epi16(twos, _mm_mullo_epi16(tens, _mm_set1_epi16(10)));
            _mm_or_si128(tens, _mm_slli_epi16::<8>(ones))
        }
    }

    /// See [`super::write_fixed_round12`].
    ///
    /// # Safety
    /// `p` must be valid for writes of `SHORT_REPR` bytes.
    #[inline(always)]
    pub(super) unsafe fn write_fixed_round12(p: *mut u8, negative: bool, q: u64) -> usize {
        let digits = sixteen_digits(q);
        // SAFETY: SSE2 intrinsics on values only (see `sixteen_digits`).
        let (zeros, ascii) = unsafe {
            (
                _mm_movemask_epi8(_mm_cmpeq_epi8(digits, _mm_setzero_si128())) as u32,
                _mm_or_si128(digits, _mm_set1_epi8(b'0' as i8)),
            )
        };
        // Bit i set: digit i is not zero.
        let nonzero = !zeros & 0xffff;
        // Leading zeros of the integer part (digits 0-3) go, but one digit stays ("0.5").
        let skip = (nonzero | 0b1000).trailing_zeros() as usize;
        // Trailing zeros of the fraction (digits 4-15) go, but one digit stays ("100.0").
        let last = 31 - (nonzero | 0b1_0000).leading_zeros() as usize;
        let frac_len = last - 3;
        // SAFETY: as above.
        let int_ascii = (unsafe { _mm_cvtsi128_si32(ascii) } as u32) >> (8 * skip);
        let sign = usize::from(negative);
        // SAFETY (caller): the writes end at most 1 + 4 + 1 + 16 = 22 <= SHORT_REPR bytes
        // past p (the last four bytes of the 16-byte store are zeros, past the text).
        unsafe {
            // Written unconditionally, then overwritten by the digits when not negative.
            *p = b'-';
            p.add(sign).cast::<u32>().write_unaligned(int_ascii.to_le());
            let n = sign + 4 - skip;
            *p.add(n) = b'.';
            _mm_storeu_si128(p.add(n + 1).cast(), _mm_srli_si128::<4>(ascii));
            n + 1 + frac_len
        }
    }
}

#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
use crate::json::eight_digits;

/// `write_round12_repr` for `q < 10^8`: zero, or `1.5e-05` style below 1e-4.
fn write_small_round12_repr(out: &mut Vec<u8>, negative: bool, q: u64) {
    if negative {
        out.push(b'-');
    }
    if q == 0 {
        out.extend_from_slice(b"0.0");
        return;
    }
    let mut digits = [0u8; 8];
    write_8_digits(&mut digits, q as u32);
    let first = digits.iter().position(|&d| d != b'0').unwrap_or(7);
    let end = digits.iter().rposition(|&d| d != b'0').map_or(8, |i| i + 1);
    out.push(digits[first]);
    if end > first + 1 {
        out.push(b'.');
        out.extend_from_slice(&digits[first + 1..end]);
    }
    // q = D.DDD * 10^(7 - first), so x = D.DDD * 10^(7 - first - 12).
    let exponent = first + 5;
    out.extend_from_slice(&[
        b'e',
        b'-',
        b'0' + (exponent / 10) as u8,
        b'0' + (exponent % 10) as u8,
    ]);
}

/// Write `n < 10^8` as exactly eight decimal digits.
fn write_8_digits(out: &mut [u8], n: u32) {
    let (high, low) = (n / 10_000, n % 10_000);
    for (chunk, part) in out.chunks_exact_mut(4).zip([high, low]) {
        let (a, b) = ((part / 100) as usize * 2, (part % 100) as usize * 2);
        chunk[..2].copy_from_slice(&DIGIT_PAIRS[a..a + 2]);
        chunk[2..].copy_from_slice(&DIGIT_PAIRS[b..b + 2]);
    }
}

/// Append Python's `repr(x)` for a float: shortest round-trip digits, fixed notation
/// when the decimal exponent is in `-4..16` (with `.0` for whole numbers), otherwise
/// `1e+16` / `1.5e-05` style; `NaN`, `Infinity` and `-Infinity` as `json.dumps` writes them.
pub fn write_float_repr(out: &mut Vec<u8>, x: f64) {
    if x.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if x.is_infinite() {
        out.extend_from_slice(if x > 0.0 { b"Infinity" } else { b"-Infinity" });
        return;
    }
    if x.is_sign_negative() {
        out.push(b'-');
    }
    if x == 0.0 {
        out.extend_from_slice(b"0.0");
        return;
    }
    let mut buffer = ryu::Buffer::new();
    let (digits, len, decpt) = shortest_digits(buffer.format_finite(x.abs()));
    write_digits(out, &digits[..len], decpt);
}

/// Append the positive number `0.DIGITS * 10^decpt` in Python's repr layout.
fn write_digits(out: &mut Vec<u8>, digits: &[u8], decpt: i32) {
    let len = digits.len();
    let exponent = decpt - 1;
    if (-4..16).contains(&exponent) {
        if decpt <= 0 {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + (-decpt) as usize, b'0');
            out.extend_from_slice(digits);
        } else if decpt as usize >= len {
            out.extend_from_slice(digits);
            out.resize(out.len() + decpt as usize - len, b'0');
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..decpt as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits[decpt as usize..]);
        }
    } else {
        out.push(digits[0]);
        if len > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exponent < 0 { b'-' } else { b'+' });
        let e = exponent.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        crate::json::write_u64(out, u64::from(e));
    }
}

/// Split ryu's text for a positive finite double into significant digits (no leading
/// or trailing zeros) and `decpt`, so that the value is `0.DIGITS * 10^decpt`.
fn shortest_digits(text: &str) -> ([u8; 20], usize, i32) {
    let bytes = text.as_bytes();
    let (mantissa, exponent) = match bytes.iter().position(|&b| b == b'e') {
        Some(i) => (&bytes[..i], parse_exponent(&bytes[i + 1..])),
        None => (bytes, 0),
    };
    let mut digits = [0u8; 20];
    let mut len = 0usize;
    let mut decpt = exponent;
    let mut seen_point = false;
    for &b in mantissa {
        if b == b'.' {
            seen_point = true;
            continue;
        }
        if len == 0 && b == b'0' {
            if seen_point {
                decpt -= 1;
            }
            continue;
        }
        digits[len] = b;
        len += 1;
        if !seen_point {
            decpt += 1;
        }
    }
    while len > 1 && digits[len - 1] == b'0' {
        len -= 1;
    }
    (digits, len, decpt)
}

fn parse_exponent(text: &[u8]) -> i32 {
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let value = digits
        .iter()
        .fold(0i32, |acc, &d| acc * 10 + i32::from(d - b'0'));
    if negative {
        -value
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(x: f64) -> String {
        let mut out = Vec::new();
        write_float_repr(&mut out, x);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn repr_matches_python() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1.5e16, "1.5e+16"),
            (1e-5, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1e308, "1e+308"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (0.1 + 0.2, "0.30000000000000004"),
            (123456789.125, "123456789.125"),
            (1e100, "1e+100"),
            (1.5e-12, "1.5e-12"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for &(x, expected) in cases {
            assert_eq!(repr(x), expected, "repr of {x:e}");
        }
    }

    #[test]
    fn round12_matches_python() {
        let cases: &[(f64, f64)] = &[
            (1.0 / 8192.0, 0.000122070312),
            (3.0 / 8192.0, 0.000366210938),
            (1.5e-12, 2e-12),
            (2.5e-12, 2e-12),
            (5e-13, 0.0),
            (0.1 + 0.2, 0.3),
            (1e16, 1e16),
            (8191.999999999999, 8191.999999999999),
            (-0.30000000000000004, -0.3),
            (5e-324, 0.0),
            (1e308, 1e308),
            (2.675, 2.675),
        ];
        for &(x, expected) in cases {
            let got = round12(x);
            assert_eq!(
                got.to_bits(),
                expected.to_bits(),
                "round12({x:e}) = {got:e}"
            );
        }
        let negative_zero = round12(-1e-13);
        assert!(negative_zero == 0.0 && negative_zero.is_sign_negative());
        assert!(round12(f64::NAN).is_nan());
        assert_eq!(round12(f64::NEG_INFINITY), f64::NEG_INFINITY);
    }

    /// The same rounding by exact integer arithmetic: `x = m * 2^e`, `x * 10^12 = m * 5^12 * 2^(e + 12)`.
    fn exact_scaled_round12(x: f64) -> u64 {
        let bits = x.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as i32;
        let fraction = bits & ((1u64 << 52) - 1);
        let (mantissa, exponent) = if biased == 0 {
            (fraction, -1074)
        } else {
            (fraction | (1u64 << 52), biased - 1075)
        };
        const FIVE_POW_12: u128 = 244_140_625;
        let product = u128::from(mantissa) * FIVE_POW_12;
        // |x| < 2^13 means exponent <= -40, so the scaled value is product / 2^shift.
        let shift = (-(exponent + 12)) as u32;
        if shift >= 128 {
            return 0; // product < 2^81, so the quotient is below one half
        }
        let floor = product >> shift;
        let rest = product - (floor << shift);
        let half = 1u128 << (shift - 1);
        let q = if rest > half || (rest == half && floor & 1 == 1) {
            floor + 1
        } else {
            floor
        };
        q as u64
    }

    #[test]
    fn float_rounding_matches_exact_integer_rounding() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let check = |x: f64| {
            assert_eq!(
                scaled_round12(x),
                exact_scaled_round12(x),
                "x = {x:e} ({:#x})",
                x.to_bits()
            );
        };
        for _ in 0..2_000_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bits = state & !(1 << 63);
            // Any magnitude below 2^13, and values near exact ties k/2^j + tiny offsets.
            let x = f64::from_bits(bits) % 8192.0;
            if x.is_finite() {
                check(x); // scaled_round12 is only defined there
            }
            let tie = (state >> 40) as f64 / f64::from(1u32 << (state % 24) as u32);
            if tie < 8192.0 {
                check(tie);
                check(f64::from_bits(tie.to_bits() + 1).min(8191.0));
                check(f64::from_bits(tie.to_bits().saturating_sub(1)));
            }
        }
        for x in [
            0.0,
            5e-13,
            1.5e-12,
            2.5e-12,
            1.0 / 8192.0,
            3.0 / 8192.0,
            5000.0 + 1.0 / 8192.0,
        ] {
            check(x);
        }
    }

    #[test]
    fn direct_rounded_repr_matches_round_then_repr() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut direct = Vec::new();
        let mut two_step = Vec::new();
        for i in 0..200_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Random bit patterns, and values spread over the range round12 changes.
            let x = if i % 2 == 0 {
                f64::from_bits(state)
            } else {
                (state >> 11) as f64 / (1u64 << 53) as f64 * 16384.0 - 8192.0
            };
            direct.clear();
            two_step.clear();
            write_round12_repr(&mut direct, x);
            write_float_repr(&mut two_step, round12(x));
            assert_eq!(direct, two_step, "x = {x:e}");
            let mut buf = [b'#'; 32];
            if let Some(len) = format_round12_short(&mut buf, x) {
                assert_eq!(&buf[..len], &direct[..], "x = {x:e}");
                assert!(len <= SHORT_REPR);
            } else {
                assert!(!x.is_finite() || x.abs() >= 8192.0 || round12(x).abs() < 1e-4);
                assert_eq!(buf, [b'#'; 32]);
            }
        }
    }

    /// The fixed layout through `write_fixed_round12` and through the scalar path.
    fn both_layouts(negative: bool, q: u64) -> (Vec<u8>, Vec<u8>) {
        let mut fast = [b'#'; SHORT_REPR];
        let mut scalar = [b'#'; SHORT_REPR];
        // SAFETY: both buffers hold SHORT_REPR bytes.
        let (n, m) = unsafe {
            (
                write_fixed_round12(fast.as_mut_ptr(), negative, q),
                write_fixed_round12_scalar(scalar.as_mut_ptr(), negative, q),
            )
        };
        (fast[..n].to_vec(), scalar[..m].to_vec())
    }

    #[test]
    fn fixed_layout_matches_scalar_layout() {
        let mut qs = vec![100_000_000, 8_191_999_999_999_999];
        // Every power of ten, its neighbours, and runs of nines and zeros in every place.
        for j in 8..16 {
            let p = 10u64.pow(j);
            qs.extend([p, p - 1, p + 1, 2 * p - 1]);
            for i in 0..j {
                qs.push(p + 10u64.pow(i));
                qs.push(p - 10u64.pow(i));
            }
        }
        // Whole numbers (an all-zero fraction) and one-digit fractions.
        for k in 0..8192u64 {
            qs.push(k * 1_000_000_000_000);
            qs.push(k * 1_000_000_000_000 + 100_000_000_000);
        }
        let mut state: u64 = 0x5851_f42d_4c95_7f2d;
        for _ in 0..500_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Uniform in the range, and with low digits zeroed (short texts).
            let q = 100_000_000 + state % (8_192_000_000_000_000 - 100_000_000);
            qs.push(q);
            qs.push(q - q % 10u64.pow((state >> 59) as u32 % 12) + 100_000_000);
        }
        for q in qs {
            if !(100_000_000..8_192_000_000_000_000).contains(&q) {
                continue;
            }
            for negative in [false, true] {
                let (fast, scalar) = both_layouts(negative, q);
                assert_eq!(
                    String::from_utf8_lossy(&fast),
                    String::from_utf8_lossy(&scalar),
                    "q = {q}"
                );
            }
        }
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[test]
    fn sixteen_digits_match_scalar_digits() {
        let digits = |q: u64| {
            // SAFETY: a 16-byte store into a 16-byte array.
            let mut out = [0u8; 16];
            unsafe {
                std::arch::x86_64::_mm_storeu_si128(
                    out.as_mut_ptr().cast(),
                    sse2::sixteen_digits(q),
                );
            }
            out
        };
        let scalar = |q: u64| {
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&eight_digits((q / 100_000_000) as u32).to_le_bytes());
            out[8..].copy_from_slice(&eight_digits((q % 100_000_000) as u32).to_le_bytes());
            out
        };
        // Every group of four digits in all four places at once.
        for k in 0..10_000u64 {
            let q = k * 1_000_100_010_001;
            assert_eq!(digits(q), scalar(q), "q = {q}");
        }
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..1_000_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let q = state % 10_000_000_000_000_000;
            assert_eq!(digits(q), scalar(q), "q = {q}");
        }
        let last = 9_999_999_999_999_999;
        assert_eq!(digits(last), [9; 16]);
    }

    #[test]
    fn edge_values_match_python() {
        // repr(round(x, 12)) as Python prints it.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (5e-324, "0.0"),
            (-5e-324, "-0.0"),
            (2.2250738585072014e-308, "0.0"),
            (1e-300, "0.0"),
            (-1e-300, "-0.0"),
            (1e300, "1e+300"),
            (-1e300, "-1e+300"),
            (9.9999999999995, "10.0"),
            (-9.9999999999995, "-10.0"),
            (99.9999999999995, "100.0"),
            (0.99999999999995, "1.0"),
            (999.9999999999995, "1000.0"),
            (9.99999999999949, "9.999999999999"),
            (8191.999999999999, "8191.999999999999"),
            (8192.0, "8192.0"),
            (4096.0, "4096.0"),
            (1.0, "1.0"),
            (-3.0, "-3.0"),
            (1e15, "1000000000000000.0"),
            (0.1 + 0.2, "0.3"),
            (1234.000000000001, "1234.000000000001"),
            (0.000123456789012345, "0.000123456789"),
            (0.00010000000000005, "0.0001"),
            (9.99999999995e-5, "0.0001"),
            (0.00099999999999951, "0.001"),
            (-7.25, "-7.25"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for &(x, expected) in cases {
            let mut direct = Vec::new();
            write_round12_repr(&mut direct, x);
            assert_eq!(String::from_utf8(direct).unwrap(), expected, "x = {x:e}");
            let mut two_step = Vec::new();
            write_float_repr(&mut two_step, round12(x));
            assert_eq!(String::from_utf8(two_step).unwrap(), expected, "x = {x:e}");
        }
    }

    #[test]
    fn round12_is_identity_on_twelve_place_decimals() {
        // k / 1e12 is the nearest double to a 12-place decimal, so rounding keeps it.
        for k in (0u64..8_000_000_000_000_000).step_by(7_919_000_000_013) {
            let x = k as f64 / 1e12;
            assert_eq!(round12(x).to_bits(), x.to_bits(), "k = {k}");
        }
    }
}
