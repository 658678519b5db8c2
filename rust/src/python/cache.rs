//! What a thread keeps between calls: the reusable buffers, the texts of recent floats
//! and the shape (key order and key text) of the last flat dict.
//!
//! A sweep hashes many dicts with the same keys and, often, repeated values; these
//! caches turn the second and later of them into copies of text already made.

use std::cell::Cell;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;

use super::dict::Entry;
use super::walk::{float_value, is_leaf, Step, Walker};
use crate::float::{write_round12_repr, write_short_round12, SHORT_REPR};
use crate::json::{write_i64_at, I64_TEXT};
use crate::MAX_DEPTH;

/// Buffers kept between calls on one thread, so a call allocates nothing in the common case.
#[derive(Default)]
pub(super) struct Scratch {
    /// The canonical text of the parameter set being walked.
    pub(super) out: Vec<u8>,
    /// The entries of every dict being walked, innermost last.
    pub(super) entries: Vec<Entry>,
    /// The key path of the value being walked.
    pub(super) path: Vec<Step>,
    shape: Shape,
    leaves: Vec<*mut ffi::PyObject>,
    /// For each of `leaves`, the text of a float value when it takes the common layout
    /// (its length, 0 otherwise), made before any of them is copied into `out`.
    leaf_texts: Vec<([u8; SHORT], usize)>,
    floats: FloatCache,
}

/// Recently written floats by bit pattern: sweeps repeat the same values (a grid's
/// points, fixed settings), and copying their text beats formatting it again.
///
/// A slot first records a value's bits alone (text length 0); its text is kept when
/// the same value comes again, so values seen once cost no copy into the cache.
struct FloatCache {
    slots: [(u64, u8, [u8; SHORT]); 64],
}

impl FloatCache {
    fn index(bits: u64) -> usize {
        (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
    }

    /// Write `repr(round(x, 12))` at `p` from the cache, or formatted (and noted in the
    /// cache) when it takes the common layout; return its length, or 0 when neither
    /// applies.
    ///
    /// # Safety
    /// `p` must be valid for writes of SHORT bytes.
    #[inline(always)]
    unsafe fn write_short(&mut self, p: *mut u8, x: f64) -> usize {
        let bits = x.to_bits();
        let slot = &mut self.slots[Self::index(bits)];
        if slot.0 == bits && slot.1 != 0 {
            // SAFETY (caller): p is valid for SHORT bytes; the slot holds SHORT.
            unsafe { ptr::copy_nonoverlapping(slot.2.as_ptr(), p, SHORT) };
            return usize::from(slot.1);
        }
        // SAFETY (caller): p is valid for SHORT >= SHORT_REPR bytes.
        let len = unsafe { write_short_round12(p, x) };
        if len == 0 {
            return 0;
        }
        if slot.0 == bits {
            // Seen before: keep the text.
            // SAFETY: the text just written at p has len <= SHORT_REPR <= SHORT bytes.
            unsafe { ptr::copy_nonoverlapping(p, slot.2.as_mut_ptr(), len) };
            slot.1 = len as u8;
        } else {
            slot.0 = bits;
            slot.1 = 0;
        }
        len
    }
}

impl Default for FloatCache {
    fn default() -> Self {
        FloatCache {
            slots: [(0, 0, [0; SHORT]); 64],
        }
    }
}

/// Longest text copied with one fixed-size move (a float's repr, a flat dict's key prefix).
const SHORT: usize = 32;
const _: () = assert!(SHORT >= SHORT_REPR);

/// The key order of the last flat dict seen: a sweep hashes many dicts with the same
/// key objects in the same insertion order, so their sort and key text are reused.
///
/// Holds strong references to its keys (so no other object can reuse their addresses);
/// they are released when the shape is replaced, and deliberately never at exit.
#[derive(Default)]
struct Shape {
    /// Exact-str keys in insertion order.
    keys: Vec<*mut ffi::PyObject>,
    /// For each sorted position, the insertion index of its key.
    order: Vec<usize>,
    /// For each sorted position, what precedes its value: `{` or `,`, the key's JSON
    /// text and `:`, with its length.
    prefixes: Vec<([u8; SHORT], usize)>,
}

impl Shape {
    fn release(&mut self) {
        for &key in &self.keys {
            // SAFETY: each key was increfed when stored; callers hold the GIL.
            unsafe { ffi::Py_DECREF(key) };
        }
        self.keys.clear();
        self.order.clear();
        self.prefixes.clear();
    }
}

/// Buffer capacity (bytes of canonical text) kept per thread between calls.
const KEPT_CAPACITY: usize = 1 << 16;

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

impl Scratch {
    /// The thread's scratch, or a new one when a call on this thread already holds it.
    pub(super) fn take() -> Box<Scratch> {
        SCRATCH.with(Cell::take).unwrap_or_default()
    }

    /// Give the scratch back to the thread, emptied and trimmed to a typical size.
    pub(super) fn give_back(mut s: Box<Scratch>) {
        s.out.clear();
        s.entries.clear();
        s.path.clear();
        s.leaves.clear();
        s.leaf_texts.clear();
        // Keep what a typical parameter set needs, not what the largest one took.
        s.out.shrink_to(KEPT_CAPACITY);
        s.entries.shrink_to(KEPT_CAPACITY / 64);
        s.path.shrink_to(MAX_DEPTH + 1);
        s.leaves.shrink_to(KEPT_CAPACITY / 64);
        s.leaf_texts.shrink_to(KEPT_CAPACITY / 64);
        // A re-entrant call (a __str__ that hashes) took a fresh Scratch; keep the latest.
        if let Some(mut older) = SCRATCH.with(|cell| cell.replace(Some(s))) {
            older.shape.release();
        }
    }
}

/// Write an exact int's text into `text` and return its length, when it fits in an i64;
/// otherwise return 0 (the int is written later, the slower way).
///
/// # Safety
/// `value` must be a live int.
#[inline(always)]
unsafe fn write_int_text(text: &mut [u8; SHORT], value: *mut ffi::PyObject) -> usize {
    // SAFETY (caller): a live int; the GIL is held.
    unsafe {
        let mut overflow = 0;
        // Raises nothing for an exact int, so allocates nothing.
        let n = ffi::PyLong_AsLongLongAndOverflow(value, &mut overflow);
        if overflow != 0 {
            // Too large for an i64: `write_int` deals with it.
            return 0;
        }
        // SAFETY: text holds SHORT >= I64_TEXT bytes.
        write_i64_at(text.as_mut_ptr(), n)
    }
}

/// Write an exact str's JSON text into `text` and return its length, when the str is
/// printable ASCII with nothing to escape and short enough; otherwise `Some(0)` (the str
/// is written later, the slower way). None when the str holds a lone surrogate: the
/// error raised and cleared on the way may have run a garbage collection.
///
/// # Safety
/// `value` must be a live str.
#[inline(always)]
unsafe fn write_str_text(text: &mut [u8; SHORT], value: *mut ffi::PyObject) -> Option<usize> {
    let mut size: ffi::Py_ssize_t = 0;
    // SAFETY (caller): a live str; its UTF-8 is cached in it and lives as long as it does.
    // Making that UTF-8 allocates no object a collection counts; only the error does.
    let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(value, &mut size) };
    if data.is_null() {
        // SAFETY: the GIL is held.
        unsafe { ffi::PyErr_Clear() };
        return None;
    }
    let size = size as usize;
    if size + 2 > SHORT {
        return Some(0);
    }
    // SAFETY: `data` holds `size` bytes (see above).
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) };
    text[0] = b'"';
    for (slot, &b) in text[1..=size].iter_mut().zip(bytes) {
        if !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\' {
            return Some(0);
        }
        *slot = b;
    }
    text[size + 1] = b'"';
    Some(size + 2)
}

const _: () = assert!(SHORT >= I64_TEXT);

impl Walker<'_> {
    /// Write `repr(round(x, 12))`, from the cache when `x` was written lately.
    #[inline(always)]
    pub(super) fn write_float(&mut self, x: f64) {
        let s = &mut **self.s;
        s.out.reserve(SHORT);
        // SAFETY: SHORT bytes are reserved past the end; only those written are kept.
        unsafe {
            let end = s.out.len();
            let written = s.floats.write_short(s.out.as_mut_ptr().add(end), x);
            if written != 0 {
                s.out.set_len(end + written);
                return;
            }
        }
        let start = s.out.len();
        write_round12_repr(&mut s.out, x);
        let text = &s.out[start..];
        if text.len() <= SHORT {
            let slot = &mut s.floats.slots[FloatCache::index(x.to_bits())];
            slot.0 = x.to_bits();
            slot.1 = text.len() as u8;
            slot.2[..text.len()].copy_from_slice(text);
        }
    }

    /// If `obj` (an exact dict) has the remembered shape and only leaf values, write it
    /// from the shape and return true.
    ///
    /// Its values are read through the references the dict holds while no Python code
    /// can run and nothing can start a garbage collection (whose finalizers could change
    /// the dict). Before the rarer leaves, whose writing can, they are held by strong
    /// references; a str with a lone surrogate, whose check raises, is left to the walk.
    pub(super) fn write_known_shape(&mut self, obj: *mut ffi::PyObject) -> PyResult<bool> {
        let made = self.collect_leaves(obj) && self.make_leaf_texts();
        if !made {
            self.s.leaves.clear();
            return Ok(false);
        }
        if self.s.leaf_texts.iter().all(|&(_, len)| len != 0) {
            self.copy_leaf_texts();
            self.s.leaves.clear();
            return Ok(true);
        }
        for &value in &self.s.leaves {
            // SAFETY: each is still alive: nothing has run since the dict gave it.
            unsafe { ffi::Py_INCREF(value) };
        }
        let written = self.write_with_rarer_leaves();
        for value in self.s.leaves.drain(..) {
            // SAFETY: the strong references taken above (dropping one may run a
            // finalizer: nothing of the values is read afterwards).
            unsafe { ffi::Py_DECREF(value) };
        }
        written.map(|()| true)
    }

    /// Put the values of `obj` in `leaves` (borrowed, in insertion order) and return true
    /// if `obj` has the remembered shape and only leaf values.
    fn collect_leaves(&mut self, obj: *mut ffi::PyObject) -> bool {
        let s = &mut *self.s;
        let n = s.shape.keys.len();
        s.leaves.clear();
        // SAFETY: `obj` is a live exact dict; nothing here runs Python code.
        unsafe {
            if n == 0 || ffi::PyDict_Size(obj) as usize != n {
                return false;
            }
            let mut pos: ffi::Py_ssize_t = 0;
            let mut key = ptr::null_mut();
            let mut value = ptr::null_mut();
            // The dict has n entries, so n steps visit them all.
            for &expected in &s.shape.keys {
                if ffi::PyDict_Next(obj, &mut pos, &mut key, &mut value) == 0
                    || key != expected
                    || !is_leaf(value)
                {
                    return false;
                }
                s.leaves.push(value);
            }
        }
        true
    }

    /// Make the text of each leaf that takes a common form (length 0 for the others), in
    /// insertion order; false if a str holds a lone surrogate.
    ///
    /// The texts come first: each float's is a long chain of arithmetic but independent
    /// of the others, so the CPU overlaps them. Written straight into `out`, each would
    /// wait for the length of the text before it.
    fn make_leaf_texts(&mut self) -> bool {
        let s = &mut *self.s;
        s.leaf_texts.resize(s.leaves.len(), ([0; SHORT], 0));
        for (&value, (text, len)) in s.leaves.iter().zip(s.leaf_texts.iter_mut()) {
            *len = 0;
            // SAFETY: `value` is a live leaf (nothing that can free it has run since the
            // dict gave it: see `write_int_text` and `write_str_text`); `text` holds
            // SHORT bytes.
            unsafe {
                let tp = ffi::Py_TYPE(value);
                if tp == &raw mut ffi::PyFloat_Type {
                    *len = s.floats.write_short(text.as_mut_ptr(), float_value(value));
                } else if tp == &raw mut ffi::PyLong_Type {
                    *len = write_int_text(text, value);
                } else if tp == &raw mut ffi::PyUnicode_Type {
                    match write_str_text(text, value) {
                        Some(written) => *len = written,
                        // The error was an allocation: the values may have changed since.
                        None => return false,
                    }
                }
            }
        }
        true
    }

    /// Room for `left` prefixes and values copied as whole SHORT blocks, and the `}`.
    fn room(left: usize) -> usize {
        left * 2 * SHORT + 1
    }

    /// Write the dict from the shape's prefixes and the texts of all its values, the
    /// length kept in a register rather than in `out`.
    fn copy_leaf_texts(&mut self) {
        let s = &mut *self.s;
        let n = s.leaf_texts.len();
        s.out.reserve(Self::room(n));
        let texts = &s.leaf_texts[..n];
        let start = s.out.len();
        // SAFETY: `room(n)` bytes are reserved past `start`; entry j starts at most
        // 2 * SHORT * j bytes in and writes two SHORT blocks, and the `}` comes at most
        // 2 * SHORT * n bytes in. Only the bytes written become part of `out`.
        unsafe {
            let base = s.out.as_mut_ptr().add(start);
            let mut at = 0;
            for (&(ref prefix, prefix_len), &i) in s.shape.prefixes.iter().zip(&s.shape.order) {
                let (text, len) = &texts[i];
                ptr::copy_nonoverlapping(prefix.as_ptr(), base.add(at), SHORT);
                ptr::copy_nonoverlapping(text.as_ptr(), base.add(at + prefix_len), SHORT);
                at += prefix_len + len;
            }
            *base.add(at) = b'}';
            s.out.set_len(start + at + 1);
        }
    }

    /// Write the dict from the shape, the values without a text made the slower way
    /// (bool, None, floats of other layouts, big ints, strs to escape or long). The
    /// caller holds strong references to `leaves`.
    fn write_with_rarer_leaves(&mut self) -> PyResult<()> {
        let n = self.s.leaf_texts.len();
        self.s.out.reserve(Self::room(n));
        for j in 0..n {
            let s = &mut **self.s;
            let (prefix, prefix_len) = &s.shape.prefixes[j];
            let i = s.shape.order[j];
            let (text, len) = &s.leaf_texts[i];
            // SAFETY: two SHORT blocks for this entry are reserved past the end; only the
            // bytes written become part of `out`.
            unsafe {
                let end = s.out.len();
                let p = s.out.as_mut_ptr().add(end);
                ptr::copy_nonoverlapping(prefix.as_ptr(), p, SHORT);
                ptr::copy_nonoverlapping(text.as_ptr(), p.add(*prefix_len), SHORT);
                s.out.set_len(end + prefix_len + len);
            }
            if *len == 0 {
                let value = s.leaves[i];
                self.write_leaf(value)?;
                self.s.out.reserve(Self::room(n - j));
            }
        }
        self.s.out.push(b'}');
        Ok(())
    }

    /// Remember the sorted entries `start..` as the shape, if the dict was flat: exact
    /// str keys (plain UTF-8) and leaf values only.
    pub(super) fn remember_shape(&mut self, start: usize) {
        let s = &mut *self.s;
        let entries = &s.entries[start..];
        // SAFETY: the entries hold their keys and values alive.
        let flat = !entries.is_empty()
            && entries.iter().all(|e| unsafe {
                ffi::Py_TYPE(e.key) == &raw mut ffi::PyUnicode_Type
                    && e.owner.is_null()
                    && !e.value.is_null()
                    && is_leaf(e.value)
            });
        if !flat {
            return;
        }
        let mut prefixes = Vec::with_capacity(entries.len());
        let mut text = Vec::with_capacity(SHORT);
        for (j, e) in entries.iter().enumerate() {
            text.clear();
            text.push(if j == 0 { b'{' } else { b',' });
            e.sort.write_json(&mut text);
            text.push(b':');
            if text.len() > SHORT {
                return; // long keys: not worth a shape
            }
            let mut slot = [0u8; SHORT];
            slot[..text.len()].copy_from_slice(&text);
            prefixes.push((slot, text.len()));
        }
        s.shape.release();
        s.shape.prefixes = prefixes;
        s.shape.keys.resize(entries.len(), ptr::null_mut());
        for e in entries {
            s.shape.keys[e.index] = e.key;
            // SAFETY: a new strong reference, released by Shape::release.
            unsafe { ffi::Py_INCREF(e.key) };
            s.shape.order.push(e.index);
        }
    }
}
