//! `json.loads` of plain JSON text, for the JSON columns a warm sweep reads back.
//!
//! The reader takes the UTF-8 of an exact str and builds the value `json.loads` gives
//! it: objects as dicts (a repeated key keeps its last value, in its first place),
//! arrays as lists, strings as str, numbers without a fraction or exponent as int,
//! the others as float (correctly rounded, as Python's `float` rounds), and
//! `true`, `false`, `null`. It gives up on anything else: text that is not JSON,
//! `NaN` and `Infinity`, an int beyond 64 bits, a string holding a raw control
//! character or an escaped lone surrogate, nesting deeper than `MAX_DEPTH`. The
//! caller then leaves the text to `json.loads`, which reads it or raises as it
//! always does. Short dict keys are kept per thread and their str reused by later
//! calls, as records read one after another mostly share their keys.

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};

use crate::MAX_DEPTH;

/// Keys longer than this (in UTF-8 bytes) are made anew each time, never kept.
const KEY_LEN: usize = 32;
const KEY_SLOTS: usize = 64;

/// The str objects of recently read dict keys, by their text. Records read one after
/// another mostly share their keys; a kept str is reused with its hash already made.
struct KeyCache {
    slots: Vec<Option<KeptKey>>,
}

/// A key's UTF-8 text and its str.
type KeptKey = (Box<[u8]>, Py<PyString>);

impl KeyCache {
    fn slot(text: &[u8]) -> usize {
        let mut h: u64 = text.len() as u64;
        for &b in text {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
    }
}

thread_local! {
    static KEYS: RefCell<KeyCache> = RefCell::new(KeyCache {
        slots: (0..KEY_SLOTS).map(|_| None).collect(),
    });
}

/// The str of a dict key's text: a kept one if the same text was read recently.
fn key_str<'py>(py: Python<'py>, text: &str) -> Bound<'py, PyString> {
    if text.len() > KEY_LEN {
        return PyString::new(py, text);
    }
    KEYS.with(|keys| {
        let Ok(mut keys) = keys.try_borrow_mut() else {
            return PyString::new(py, text);
        };
        let slot = &mut keys.slots[KeyCache::slot(text.as_bytes())];
        if let Some((kept, obj)) = slot {
            if **kept == *text.as_bytes() {
                return obj.bind(py).clone();
            }
        }
        let obj = PyString::new(py, text);
        *slot = Some((text.as_bytes().into(), obj.clone().unbind()));
        obj
    })
}

/// Why reading stopped: the text is left to `json.loads`, or Python raised (memory).
pub(super) enum Stop {
    GiveUp,
    Python(PyErr),
}

impl From<PyErr> for Stop {
    fn from(err: PyErr) -> Self {
        Stop::Python(err)
    }
}

type Read<T> = Result<T, Stop>;

/// The value of `text` if it is exactly one JSON value (whitespace around it allowed).
pub(super) fn read<'py>(py: Python<'py>, text: &str) -> Read<Bound<'py, PyAny>> {
    let mut reader = Reader {
        py,
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    reader.skip_whitespace();
    let value = reader.value(0)?;
    reader.skip_whitespace();
    if reader.pos != reader.bytes.len() {
        return Err(Stop::GiveUp);
    }
    Ok(value)
}

struct Reader<'py, 'a> {
    py: Python<'py>,
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'py, 'a> Reader<'py, 'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skip JSON's whitespace: space, tab, newline and carriage return.
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Read<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Stop::GiveUp)
        }
    }

    fn value(&mut self, depth: usize) -> Read<Bound<'py, PyAny>> {
        let py = self.py;
        match self.peek() {
            Some(b'"') => Ok(self.string(false)?.into_any()),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true", || PyBool::new(py, true).to_owned().into_any()),
            Some(b'f') => self.literal(b"false", || PyBool::new(py, false).to_owned().into_any()),
            Some(b'n') => self.literal(b"null", || py.None().into_bound(py)),
            _ => Err(Stop::GiveUp),
        }
    }

    fn literal(
        &mut self,
        word: &[u8],
        value: impl FnOnce() -> Bound<'py, PyAny>,
    ) -> Read<Bound<'py, PyAny>> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value())
        } else {
            Err(Stop::GiveUp)
        }
    }

    fn object(&mut self, depth: usize) -> Read<Bound<'py, PyAny>> {
        if depth >= MAX_DEPTH {
            return Err(Stop::GiveUp);
        }
        self.pos += 1; // '{'
        let dict = PyDict::new(self.py);
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(dict.into_any());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(Stop::GiveUp);
            }
            let key = self.string(true)?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            let value = self.value(depth + 1)?;
            dict.set_item(key, value)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(dict.into_any());
                }
                _ => return Err(Stop::GiveUp),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Read<Bound<'py, PyAny>> {
        if depth >= MAX_DEPTH {
            return Err(Stop::GiveUp);
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(PyList::empty(self.py).into_any());
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(PyList::new(self.py, items)?.into_any());
                }
                _ => return Err(Stop::GiveUp),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number as JSON writes it: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`.
    fn number(&mut self) -> Read<Bound<'py, PyAny>> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Stop::GiveUp), // "-Infinity" or a lone minus
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Stop::GiveUp);
            }
            integral = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Stop::GiveUp);
            }
            integral = false;
        }
        let text = self.span(start, self.pos)?;
        if integral {
            // Python's int takes any length; beyond 64 bits is left to json.loads.
            let n: i64 = text.parse().map_err(|_| Stop::GiveUp)?;
            let Ok(int) = n.into_pyobject(self.py);
            Ok(int.into_any())
        } else {
            // Rust's parse rounds correctly, as Python's float does, to inf on overflow too.
            let x: f64 = text.parse().map_err(|_| Stop::GiveUp)?;
            Ok(PyFloat::new(self.py, x).into_any())
        }
    }

    /// The text between two ASCII bytes of the input (so on char boundaries).
    fn span(&self, start: usize, end: usize) -> Read<&'a str> {
        self.text.get(start..end).ok_or(Stop::GiveUp)
    }

    /// A string, at its opening quote (a dict key if `key`).
    fn string(&mut self, key: bool) -> Read<Bound<'py, PyString>> {
        self.pos += 1; // '"'
        let start = self.pos;
        // Most strings hold no escape: their text is the input's own.
        loop {
            match self.peek() {
                Some(b'"') => {
                    let text = self.span(start, self.pos)?;
                    self.pos += 1;
                    if key {
                        return Ok(key_str(self.py, text));
                    }
                    return Ok(PyString::new(self.py, text));
                }
                Some(b'\\') => break,
                Some(0..=0x1f) | None => return Err(Stop::GiveUp),
                Some(_) => self.pos += 1,
            }
        }
        let mut out = String::from(self.span(start, self.pos)?);
        self.escaped_rest(&mut out)?;
        Ok(PyString::new(self.py, &out))
    }

    /// The rest of a string from a backslash to its closing quote, unescaped into `out`.
    fn escaped_rest(&mut self, out: &mut String) -> Read<()> {
        let mut run = self.pos; // the start of the bytes to copy as they are
        loop {
            match self.peek() {
                Some(b'"') => {
                    out.push_str(self.span(run, self.pos)?);
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    out.push_str(self.span(run, self.pos)?);
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'u') => {
                            self.pos += 1;
                            self.unicode_escape()?
                        }
                        Some(letter) => {
                            self.pos += 1;
                            match letter {
                                b'"' => '"',
                                b'\\' => '\\',
                                b'/' => '/',
                                b'b' => '\u{8}',
                                b'f' => '\u{c}',
                                b'n' => '\n',
                                b'r' => '\r',
                                b't' => '\t',
                                _ => return Err(Stop::GiveUp),
                            }
                        }
                        None => return Err(Stop::GiveUp),
                    };
                    out.push(c);
                    run = self.pos;
                }
                Some(0..=0x1f) | None => return Err(Stop::GiveUp),
                Some(_) => self.pos += 1,
            }
        }
    }

    fn hex4(&mut self) -> Read<u32> {
        let hex = self.bytes.get(self.pos..self.pos + 4).ok_or(Stop::GiveUp)?;
        let mut n = 0;
        for &b in hex {
            let digit = (b as char).to_digit(16).ok_or(Stop::GiveUp)?;
            n = n * 16 + digit;
        }
        self.pos += 4;
        Ok(n)
    }

    /// The char of a `\uXXXX` escape (after its `\u`), a surrogate pair read as one;
    /// a lone surrogate is left to `json.loads`.
    fn unicode_escape(&mut self) -> Read<char> {
        let first = self.hex4()?;
        let code = match first {
            0xd800..=0xdbff => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(Stop::GiveUp);
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err(Stop::GiveUp);
                }
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            _ => first,
        };
        char::from_u32(code).ok_or(Stop::GiveUp)
    }
}
