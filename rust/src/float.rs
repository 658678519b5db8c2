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
fn scaled_round12(x: f64) -> u64 {
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
    if x.is_sign_negative() {
        out.push(b'-');
    }
    let q = scaled_round12(x);
    if q == 0 {
        out.extend_from_slice(b"0.0");
        return;
    }
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut n = q;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        start -= 2;
        digits[start..start + 2].copy_from_slice(&DIGIT_PAIRS[n as usize * 2..n as usize * 2 + 2]);
    } else {
        start -= 1;
        digits[start] = b'0' + n as u8;
    }
    let decpt = (digits.len() - start) as i32 - 12;
    let mut end = digits.len();
    while digits[end - 1] == b'0' {
        end -= 1;
    }
    write_digits(out, &digits[start..end], decpt);
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
