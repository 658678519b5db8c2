//! Dict keys: Python's ordering of them (numbers compared exactly) and their JSON text.

use std::cmp::Ordering;

use crate::float::write_float_repr;
use crate::json::{write_i64, write_str};

/// A borrowed dict key, as both the plain-Rust and the Python walk see it.
#[derive(Clone, Copy, Debug)]
pub enum KeyRef<'a> {
    Str(&'a [u8]),
    Int(i64),
    /// An integer outside `i64`: sign and decimal magnitude without leading zeros.
    Big {
        negative: bool,
        magnitude: &'a [u8],
    },
    Float(f64),
    Bool(bool),
    Null,
}

/// What can be ordered against what: `json.dumps(sort_keys=True)` compares keys with `<`,
/// which works within strings and within numbers (bool included), and a lone None.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyKind {
    Str,
    Number,
    Null,
}

impl KeyRef<'_> {
    /// The kind this key sorts with.
    pub fn kind(&self) -> KeyKind {
        match self {
            KeyRef::Str(_) => KeyKind::Str,
            KeyRef::Null => KeyKind::Null,
            _ => KeyKind::Number,
        }
    }

    /// True for a float NaN key, which no order can place.
    pub fn is_nan(&self) -> bool {
        matches!(self, KeyRef::Float(f) if f.is_nan())
    }

    /// Append the key as `json.dumps` writes a dict key: always a JSON string.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match *self {
            KeyRef::Str(text) => write_str(out, text),
            KeyRef::Null => out.extend_from_slice(b"\"null\""),
            KeyRef::Bool(b) => out.extend_from_slice(if b { b"\"true\"" } else { b"\"false\"" }),
            KeyRef::Int(n) => {
                out.push(b'"');
                write_i64(out, n);
                out.push(b'"');
            }
            KeyRef::Big {
                negative,
                magnitude,
            } => {
                out.push(b'"');
                if negative {
                    out.push(b'-');
                }
                out.extend_from_slice(magnitude);
                out.push(b'"');
            }
            KeyRef::Float(f) => {
                out.push(b'"');
                write_float_repr(out, f);
                out.push(b'"');
            }
        }
    }
}

/// Python's `<` between two keys of the same kind (strings by code point, numbers exactly).
pub fn cmp_keys(a: &KeyRef<'_>, b: &KeyRef<'_>) -> Ordering {
    match (a, b) {
        (KeyRef::Str(x), KeyRef::Str(y)) => x.cmp(y),
        (KeyRef::Int(x), KeyRef::Int(y)) => x.cmp(y),
        (KeyRef::Str(_), _) => Ordering::Less,
        (_, KeyRef::Str(_)) => Ordering::Greater,
        (KeyRef::Null, KeyRef::Null) => Ordering::Equal,
        (KeyRef::Null, _) => Ordering::Less,
        (_, KeyRef::Null) => Ordering::Greater,
        _ => cmp_numbers(a, b),
    }
}

fn cmp_numbers(a: &KeyRef<'_>, b: &KeyRef<'_>) -> Ordering {
    use KeyRef::{Big, Bool, Float, Int};
    let a = if let Bool(x) = *a {
        Int(i64::from(x))
    } else {
        *a
    };
    let b = if let Bool(x) = *b {
        Int(i64::from(x))
    } else {
        *b
    };
    match (a, b) {
        (Int(x), Int(y)) => x.cmp(&y),
        (Float(x), Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Int(x), Float(y)) => cmp_int_float(x, y),
        (Float(x), Int(y)) => cmp_int_float(y, x).reverse(),
        // A Big is outside the i64 range, so its sign decides against any Int.
        (Big { negative, .. }, Int(_)) => sign_order(negative),
        (Int(_), Big { negative, .. }) => sign_order(negative).reverse(),
        (
            Big {
                negative: n1,
                magnitude: m1,
            },
            Big {
                negative: n2,
                magnitude: m2,
            },
        ) => match (n1, n2) {
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => signed(n1, cmp_magnitudes(m1, m2)),
        },
        (
            Big {
                negative,
                magnitude,
            },
            Float(y),
        ) => cmp_big_float(negative, magnitude, y),
        (
            Float(x),
            Big {
                negative,
                magnitude,
            },
        ) => cmp_big_float(negative, magnitude, x).reverse(),
        _ => Ordering::Equal,
    }
}

fn sign_order(negative: bool) -> Ordering {
    if negative {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

fn signed(negative: bool, magnitude_order: Ordering) -> Ordering {
    if negative {
        magnitude_order.reverse()
    } else {
        magnitude_order
    }
}

fn cmp_magnitudes(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Compare an integer with a (non-NaN) float exactly, as Python does.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // |whole| < 2^63, so the conversion is exact, and f - whole is exact too.
    match i.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - whole)).unwrap_or(Ordering::Equal),
        other => other,
    }
}

/// Compare an integer outside `i64` with a (non-NaN) float exactly.
fn cmp_big_float(negative: bool, magnitude: &[u8], f: f64) -> Ordering {
    if f.is_infinite() {
        return if f > 0.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    if f.abs() < 9_223_372_036_854_775_808.0 || negative != (f < 0.0) {
        return sign_order(negative);
    }
    // |f| >= 2^63 is a whole number: compare its exact decimal digits.
    signed(
        negative,
        cmp_magnitudes(magnitude, &exact_integer_digits(f.abs())),
    )
}

/// The exact decimal digits of a whole, finite, positive double.
fn exact_integer_digits(f: f64) -> Vec<u8> {
    let bits = f.to_bits();
    let mantissa = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1075;
    // Little-endian base-10^9 limbs.
    const BASE: u64 = 1_000_000_000;
    let mut limbs = vec![
        mantissa % BASE,
        (mantissa / BASE) % BASE,
        mantissa / (BASE * BASE),
    ];
    for _ in 0..exponent.max(0) {
        let mut carry = 0;
        for limb in limbs.iter_mut() {
            let v = *limb * 2 + carry;
            *limb = v % BASE;
            carry = v / BASE;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    while limbs.len() > 1 && limbs.last() == Some(&0) {
        limbs.pop();
    }
    let mut text = limbs.last().map(u64::to_string).unwrap_or_default();
    for limb in limbs.iter().rev().skip(1) {
        text.push_str(&format!("{limb:09}"));
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(text: &'static str) -> KeyRef<'static> {
        match text.strip_prefix('-') {
            Some(m) => KeyRef::Big {
                negative: true,
                magnitude: m.as_bytes(),
            },
            None => KeyRef::Big {
                negative: false,
                magnitude: text.as_bytes(),
            },
        }
    }

    #[test]
    fn numbers_compare_exactly() {
        use KeyRef::{Bool, Float, Int};
        let less = |a: KeyRef<'_>, b: KeyRef<'_>| {
            assert_eq!(cmp_keys(&a, &b), Ordering::Less, "{a:?} < {b:?}");
            assert_eq!(cmp_keys(&b, &a), Ordering::Greater, "{b:?} > {a:?}");
        };
        less(Int(9), Int(10));
        less(Int(1), Float(1.5));
        less(Float(-0.5), Bool(false));
        less(Bool(true), Float(1.0000000000000002));
        less(Int(9_007_199_254_740_992), Int(9_007_199_254_740_993));
        less(Float(9_007_199_254_740_992.0), Int(9_007_199_254_740_993));
        less(Int(i64::MAX), Float(9_223_372_036_854_775_808.0));
        less(
            Float(9_223_372_036_854_775_808.0),
            big("9223372036854775809"),
        );
        less(
            big("9223372036854775808"),
            Float(9_223_372_036_854_775_808.0 * 2.0),
        );
        less(big("-99999999999999999999"), Int(i64::MIN));
        less(big("-99999999999999999999"), big("-10000000000000000000"));
        less(big("10000000000000000000"), big("99999999999999999999"));
        less(Float(f64::NEG_INFINITY), big("-99999999999999999999"));
        less(Float(1e300), big("1".repeat(400).leak()));
        less(big("1".repeat(310).leak()), Float(f64::INFINITY));
        assert_eq!(
            cmp_keys(
                &big("9223372036854775808"),
                &Float(9_223_372_036_854_775_808.0)
            ),
            Ordering::Equal
        );
        assert_eq!(cmp_keys(&Int(1), &Float(1.0)), Ordering::Equal);
    }

    #[test]
    fn exact_digits_of_large_floats() {
        assert_eq!(
            exact_integer_digits(9_223_372_036_854_775_808.0),
            b"9223372036854775808"
        );
        assert_eq!(exact_integer_digits(1e22), b"10000000000000000000000");
        assert_eq!(exact_integer_digits(1e23), b"99999999999999991611392");
    }
}
