//! The `entropic._core` extension: the hash walked straight over Python objects.
//!
//! Rules 1-8 of docs/hashing.md are applied in the reference's order, and the canonical
//! JSON is written into one reusable buffer during the walk, with no intermediate tree.
//! Dict keys are checked in insertion order and values visited in canonical key order,
//! exactly as `entropic._pyhash` does, so both report the same first error.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::mem::ManuallyDrop;
use std::ptr;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyType};

use crate::canonical::push_key_segment;
use crate::digest::{id_bytes, ID_LEN};
use crate::error::HashError;
use crate::float::write_round12_repr;
use crate::json::{write_i64, write_str};
use crate::keys::{cmp_keys, KeyKind, KeyRef};
use crate::value::Text;
use crate::MAX_DEPTH;

pyo3::import_exception!(entropic.errors, ParamsTypeError);
pyo3::import_exception!(entropic.errors, ParamsDepthError);

static MAPPING_ABC: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INT_REPR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

const UTF8: &CStr = c"utf-8";
const SURROGATEPASS: &CStr = c"surrogatepass";

/// One dict entry during a walk. `key` and `value` are strong references (so a
/// `__str__` that mutates the dict cannot free them under us); `sort` borrows from
/// `key`, or from `owner` when the key's text had to be made (lone surrogates, big ints).
#[derive(Clone, Copy)]
struct Entry {
    key: *mut ffi::PyObject,
    /// Null for dict subclasses, whose `__getitem__` is called at visit time.
    value: *mut ffi::PyObject,
    owner: *mut ffi::PyObject,
    sort: KeyRef<'static>,
    /// `int.__repr__` raised for this key; the reference raises it when it builds the path.
    repr_failed: bool,
    /// Position in the dict's insertion order.
    index: usize,
}

/// One step of the key path, rendered only when an error is raised.
#[derive(Clone, Copy)]
enum Step {
    Key(*mut ffi::PyObject, KeyRef<'static>),
    Index(usize),
    SetItem,
}

/// Buffers kept between calls on one thread, so a call allocates nothing in the common case.
#[derive(Default)]
struct Scratch {
    out: Vec<u8>,
    entries: Vec<Entry>,
    path: Vec<Step>,
    shape: Shape,
    leaves: Vec<*mut ffi::PyObject>,
    floats: FloatCache,
}

/// Recently written floats by bit pattern: sweeps repeat the same values (a grid's
/// points, fixed settings), and copying their text beats formatting it again.
struct FloatCache {
    slots: [(u64, u8, [u8; SHORT]); 64],
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

/// Append `text[..len]` with one fixed-size copy (`len <= SHORT`).
fn push_short(out: &mut Vec<u8>, text: &[u8; SHORT], len: usize) {
    debug_assert!(len <= SHORT);
    out.reserve(SHORT);
    // SAFETY: SHORT bytes are reserved past the end; only `len` of them become part of it.
    unsafe {
        let end = out.len();
        ptr::copy_nonoverlapping(text.as_ptr(), out.as_mut_ptr().add(end), SHORT);
        out.set_len(end + len);
    }
}

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

/// Exact str, int, float, bool or None: written without running any Python code.
///
/// # Safety
/// `obj` must be a live object.
unsafe fn is_leaf(obj: *mut ffi::PyObject) -> bool {
    let tp = ffi::Py_TYPE(obj);
    tp == &raw mut ffi::PyUnicode_Type
        || tp == &raw mut ffi::PyFloat_Type
        || tp == &raw mut ffi::PyLong_Type
        || tp == &raw mut ffi::PyBool_Type
        || obj == ffi::Py_None()
}

/// Buffer capacity (bytes of canonical text) kept per thread between calls.
const KEPT_CAPACITY: usize = 1 << 16;

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

struct Walker<'py> {
    py: Python<'py>,
    /// Given back to the thread in `drop` (ManuallyDrop: no placeholder to allocate).
    s: ManuallyDrop<Box<Scratch>>,
    /// An error the reference would only raise later, when json.dumps writes the value
    /// (an int too long for `int.__repr__`): kept until normalisation has finished.
    deferred: Option<PyErr>,
}

impl Drop for Walker<'_> {
    fn drop(&mut self) {
        // A re-entrant call (a __str__ that hashes) took a fresh Scratch; keep the latest.
        // SAFETY: `self.s` is not used again after this.
        let mut s = unsafe { ManuallyDrop::take(&mut self.s) };
        s.out.clear();
        s.entries.clear();
        s.path.clear();
        s.leaves.clear();
        // Keep what a typical parameter set needs, not what the largest one took.
        s.out.shrink_to(KEPT_CAPACITY);
        s.entries.shrink_to(KEPT_CAPACITY / 64);
        s.path.shrink_to(MAX_DEPTH + 1);
        s.leaves.shrink_to(KEPT_CAPACITY / 64);
        if let Some(mut older) = SCRATCH.with(|cell| cell.replace(Some(s))) {
            older.shape.release();
        }
    }
}

fn bytes_of_str<'a>(obj: *mut ffi::PyObject) -> PyResult<(&'a [u8], *mut ffi::PyObject)> {
    // SAFETY: `obj` is a live str; the UTF-8 buffer is cached in it (or in the returned
    // owner) and lives as long as the caller keeps that object alive.
    unsafe {
        let mut size: ffi::Py_ssize_t = 0;
        let data = ffi::PyUnicode_AsUTF8AndSize(obj, &mut size);
        if !data.is_null() {
            return Ok((
                std::slice::from_raw_parts(data.cast::<u8>(), size as usize),
                ptr::null_mut(),
            ));
        }
        let py = Python::assume_attached();
        // Lone surrogates have no UTF-8; Python's "surrogatepass" gives generalised UTF-8.
        if ffi::PyErr_ExceptionMatches(ffi::PyExc_UnicodeEncodeError) == 0 {
            return Err(PyErr::fetch(py));
        }
        ffi::PyErr_Clear();
        let owner = ffi::PyUnicode_AsEncodedString(obj, UTF8.as_ptr(), SURROGATEPASS.as_ptr());
        if owner.is_null() {
            return Err(PyErr::fetch(py));
        }
        let data = ffi::PyBytes_AsString(owner);
        let size = ffi::PyBytes_Size(owner);
        Ok((
            std::slice::from_raw_parts(data.cast::<u8>(), size as usize),
            owner,
        ))
    }
}

/// Text (generalised UTF-8) to a Python str, lone surrogates included.
fn py_text<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: a valid buffer and length; the result is a new reference or null with an error set.
    unsafe {
        let obj = ffi::PyUnicode_DecodeUTF8(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            SURROGATEPASS.as_ptr(),
        );
        Bound::from_owned_ptr_or_err(py, obj)
    }
}

fn to_pyerr(py: Python<'_>, err: HashError) -> PyErr {
    let message = match py_text(py, &err.message()) {
        Ok(m) => m,
        Err(e) => return e,
    };
    if err.is_depth() {
        ParamsDepthError::new_err(message.unbind())
    } else {
        ParamsTypeError::new_err(message.unbind())
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> PyResult<Text> {
    let name = obj.get_type().name()?;
    let (bytes, owner) = bytes_of_str(name.as_ptr())?;
    let text = Text::from_bytes(bytes.to_vec()).unwrap_or_default();
    // SAFETY: owner is null or a new reference we own.
    unsafe { ffi::Py_XDECREF(owner) };
    Ok(text)
}

/// True if `text` holds a default repr's address: ` at 0x` + hex digits + `>`.
fn has_address(text: &[u8]) -> bool {
    const MARK: &[u8] = b" at 0x";
    text.windows(MARK.len()).enumerate().any(|(i, w)| {
        if w != MARK {
            return false;
        }
        let rest = &text[i + MARK.len()..];
        let hex = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        hex > 0 && rest.get(hex) == Some(&b'>')
    })
}

fn int_repr<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let repr = INT_REPR.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py
            .get_type::<pyo3::types::PyInt>()
            .getattr("__repr__")?
            .unbind())
    })?;
    repr.bind(py).call1((obj,))
}

/// Release the references held by `entries[start..]` and drop them.
fn release_entries(entries: &mut Vec<Entry>, start: usize) {
    for e in entries.drain(start..) {
        // SAFETY: each pointer is a strong reference taken when the entry was pushed.
        unsafe {
            ffi::Py_DECREF(e.key);
            ffi::Py_XDECREF(e.value);
            ffi::Py_XDECREF(e.owner);
        }
    }
}

impl<'py> Walker<'py> {
    fn new(py: Python<'py>) -> Self {
        let s = SCRATCH.with(Cell::take).unwrap_or_default();
        Walker {
            py,
            s: ManuallyDrop::new(s),
            deferred: None,
        }
    }

    /// Write the canonical JSON of a whole parameter set into `self.s.out`.
    fn params(&mut self, params: &Bound<'py, PyAny>) -> PyResult<()> {
        self.s.out.clear();
        self.deferred = None;
        // SAFETY: type checks on a live object.
        if unsafe { ffi::PyDict_Check(params.as_ptr()) } != 0 {
            self.walk(params.as_ptr(), 0)?;
        } else {
            let mapping = MAPPING_ABC.import(self.py, "collections.abc", "Mapping")?;
            if !params.is_instance(mapping)? {
                let type_name = type_name(params)?;
                return Err(to_pyerr(self.py, HashError::NotAMapping { type_name }));
            }
            let converted = self.py.get_type::<PyDict>().call1((params,))?;
            self.walk(converted.as_ptr(), 0)?;
        }
        match self.deferred.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn error(&self, make: impl FnOnce(Text) -> HashError) -> PyErr {
        match self.render_path() {
            Ok(path) => to_pyerr(self.py, make(path)),
            Err(e) => e,
        }
    }

    fn check_depth(&self, depth: usize) -> PyResult<()> {
        if depth >= MAX_DEPTH {
            return Err(self.error(|path| HashError::TooDeep { path }));
        }
        Ok(())
    }

    fn render_path(&self) -> PyResult<Text> {
        let mut out = b"params".to_vec();
        for step in &self.s.path {
            match *step {
                // SAFETY: the key is kept alive by its entry while the path holds it.
                Step::Key(key, sort) => unsafe {
                    if ffi::PyUnicode_Check(key) != 0 && ffi::PyUnicode_CheckExact(key) == 0 {
                        // The reference builds f'["{key}"]', which calls format() on a subclass.
                        let spec = PyString::new(self.py, "");
                        let formatted = Bound::from_owned_ptr_or_err(
                            self.py,
                            ffi::PyObject_Format(key, spec.as_ptr()),
                        )?;
                        let (bytes, owner) = bytes_of_str(formatted.as_ptr())?;
                        out.extend_from_slice(b"[\"");
                        out.extend_from_slice(bytes);
                        out.extend_from_slice(b"\"]");
                        ffi::Py_XDECREF(owner);
                    } else {
                        push_key_segment(&mut out, &sort);
                    }
                },
                Step::Index(i) => {
                    out.push(b'[');
                    write_i64(&mut out, i as i64);
                    out.push(b']');
                }
                Step::SetItem => out.extend_from_slice(b"[set item]"),
            }
        }
        Ok(Text::from_bytes(out).unwrap_or_default())
    }

    // Recursion is bounded: containers and `.value` unwrapping check the depth first.
    fn walk(&mut self, obj: *mut ffi::PyObject, depth: usize) -> PyResult<()> {
        // SAFETY: `obj` is a live object, kept alive by the caller for the whole call.
        unsafe {
            let tp = ffi::Py_TYPE(obj);
            // Fast paths for the exact builtin types (the same rules, checked cheaply).
            if tp == &raw mut ffi::PyUnicode_Type {
                return self.write_str_obj(obj);
            }
            if tp == &raw mut ffi::PyFloat_Type {
                self.write_float(ffi::PyFloat_AsDouble(obj));
                return Ok(());
            }
            if tp == &raw mut ffi::PyLong_Type {
                return self.write_int(obj);
            }
            if tp == &raw mut ffi::PyDict_Type {
                return self.walk_dict(obj, depth, true);
            }
            if tp == &raw mut ffi::PyList_Type {
                return self.walk_list(obj, depth);
            }
            if tp == &raw mut ffi::PyTuple_Type {
                return self.walk_tuple(obj, depth);
            }
            if obj == ffi::Py_None() {
                self.s.out.extend_from_slice(b"null");
                return Ok(());
            }
            if obj == ffi::Py_True() {
                self.s.out.extend_from_slice(b"true");
                return Ok(());
            }
            if obj == ffi::Py_False() {
                self.s.out.extend_from_slice(b"false");
                return Ok(());
            }
            // Rule 1-4 for subclasses.
            if ffi::PyDict_Check(obj) != 0 {
                return self.walk_dict(obj, depth, false);
            }
            if ffi::PyList_Check(obj) != 0 || ffi::PyTuple_Check(obj) != 0 {
                return self.walk_iterable(obj, depth, false);
            }
            if ffi::PyFloat_Check(obj) != 0 {
                // The C double itself, as float.__round__ reads it (no __float__, no __round__).
                self.write_float(ffi::PyFloat_AsDouble(obj));
                return Ok(());
            }
            if ffi::PyLong_Check(obj) != 0 {
                return self.write_int(obj);
            }
            if ffi::PyUnicode_Check(obj) != 0 {
                return self.write_str_obj(obj);
            }
            let value = Bound::from_borrowed_ptr(self.py, obj);
            // Rule 5: numpy scalars and arrays hash as their .tolist().
            if self.is_numpy(&value)? {
                let listed = value.call_method0(intern!(self.py, "tolist"))?;
                return self.walk(listed.as_ptr(), depth);
            }
            // Rule 6: sets become lists sorted by each member's canonical text.
            if ffi::PyAnySet_Check(obj) != 0 {
                return self.walk_iterable(obj, depth, true);
            }
            // Rule 7: anything with a `value` attribute (enums) hashes as that value.
            let name = intern!(self.py, "value");
            if value.hasattr(name)? {
                self.check_depth(depth)?;
                let inner = value.getattr(name)?;
                return self.walk(inner.as_ptr(), depth + 1);
            }
            // Rule 8: str(), unless it holds a memory address.
            let text = value.str()?;
            let (bytes, owner) = bytes_of_str(text.as_ptr())?;
            if has_address(bytes) {
                ffi::Py_XDECREF(owner);
                let type_name = type_name(&value)?;
                return Err(self.error(|path| HashError::AddressInText { path, type_name }));
            }
            write_str(&mut self.s.out, bytes);
            ffi::Py_XDECREF(owner);
            Ok(())
        }
    }

    /// Write `repr(round(x, 12))`, from the cache when `x` was written lately.
    fn write_float(&mut self, x: f64) {
        let bits = x.to_bits();
        let index = (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize;
        let s = &mut **self.s;
        let slot = &mut s.floats.slots[index];
        if slot.0 == bits && slot.1 > 0 {
            push_short(&mut s.out, &slot.2, usize::from(slot.1));
            return;
        }
        let start = s.out.len();
        write_round12_repr(&mut s.out, x);
        let text = &s.out[start..];
        if text.len() <= SHORT {
            slot.0 = bits;
            slot.1 = text.len() as u8;
            slot.2[..text.len()].copy_from_slice(text);
        }
    }

    /// Write a value `is_leaf` accepted.
    fn write_leaf(&mut self, obj: *mut ffi::PyObject) -> PyResult<()> {
        // SAFETY: `obj` is a live leaf (exact str, float, int, bool or None).
        unsafe {
            let tp = ffi::Py_TYPE(obj);
            if tp == &raw mut ffi::PyFloat_Type {
                self.write_float(ffi::PyFloat_AsDouble(obj));
                Ok(())
            } else if tp == &raw mut ffi::PyUnicode_Type {
                self.write_str_obj(obj)
            } else if tp == &raw mut ffi::PyLong_Type {
                self.write_int(obj)
            } else {
                self.walk(obj, 0)
            }
        }
    }

    fn is_numpy(&self, value: &Bound<'py, PyAny>) -> PyResult<bool> {
        let module = value.get_type().getattr(intern!(self.py, "__module__"))?;
        if let Ok(name) = module.cast::<PyString>() {
            let name = name.to_cow()?;
            return Ok(name == "numpy" || name.starts_with("numpy."));
        }
        if module.eq("numpy")? {
            return Ok(true);
        }
        module
            .call_method1(intern!(self.py, "startswith"), ("numpy.",))?
            .is_truthy()
    }

    fn write_str_obj(&mut self, obj: *mut ffi::PyObject) -> PyResult<()> {
        let (bytes, owner) = bytes_of_str(obj)?;
        write_str(&mut self.s.out, bytes);
        // SAFETY: owner is null or a new reference we own.
        unsafe { ffi::Py_XDECREF(owner) };
        Ok(())
    }

    fn write_int(&mut self, obj: *mut ffi::PyObject) -> PyResult<()> {
        // SAFETY: `obj` is a live int (or subclass); its value is read directly.
        unsafe {
            let n = ffi::PyLong_AsLongLong(obj);
            if n != -1 || ffi::PyErr_Occurred().is_null() {
                write_i64(&mut self.s.out, n);
                return Ok(());
            }
            ffi::PyErr_Clear();
            let value = Bound::from_borrowed_ptr(self.py, obj);
            match int_repr(self.py, &value) {
                Ok(text) => {
                    let (bytes, owner) = bytes_of_str(text.as_ptr())?;
                    self.s.out.extend_from_slice(bytes);
                    ffi::Py_XDECREF(owner);
                }
                // Too many digits for int.__repr__: json.dumps would raise this only when
                // it writes the value, after any normalisation error.
                Err(err) if err.is_instance_of::<PyValueError>(self.py) => {
                    if self.deferred.is_none() {
                        self.deferred = Some(err);
                    }
                    self.s.out.push(b'0');
                }
                Err(err) => return Err(err),
            }
            Ok(())
        }
    }

    fn walk_list(&mut self, obj: *mut ffi::PyObject, depth: usize) -> PyResult<()> {
        self.check_depth(depth)?;
        self.s.out.push(b'[');
        let mut i = 0;
        // SAFETY: the size is re-read each step, as a list iterator does; each item is
        // held by a strong reference while it is walked.
        unsafe {
            while i < ffi::PyList_Size(obj) as usize {
                let item = ffi::PyList_GetItem(obj, i as ffi::Py_ssize_t);
                ffi::Py_INCREF(item);
                if i > 0 {
                    self.s.out.push(b',');
                }
                self.s.path.push(Step::Index(i));
                let result = self.walk(item, depth + 1);
                self.s.path.pop();
                ffi::Py_DECREF(item);
                result?;
                i += 1;
            }
        }
        self.s.out.push(b']');
        Ok(())
    }

    fn walk_tuple(&mut self, obj: *mut ffi::PyObject, depth: usize) -> PyResult<()> {
        self.check_depth(depth)?;
        self.s.out.push(b'[');
        // SAFETY: a tuple is immutable and kept alive by the caller, so its items are too.
        unsafe {
            for i in 0..ffi::PyTuple_Size(obj) as usize {
                let item = ffi::PyTuple_GetItem(obj, i as ffi::Py_ssize_t);
                if i > 0 {
                    self.s.out.push(b',');
                }
                self.s.path.push(Step::Index(i));
                let result = self.walk(item, depth + 1);
                self.s.path.pop();
                result?;
            }
        }
        self.s.out.push(b']');
        Ok(())
    }

    /// Lists and tuples of subclass types (their own `__iter__`), and sets.
    fn walk_iterable(
        &mut self,
        obj: *mut ffi::PyObject,
        depth: usize,
        is_set: bool,
    ) -> PyResult<()> {
        self.check_depth(depth)?;
        // SAFETY: the caller keeps `obj` alive; the bound reference holds it too.
        let iter = unsafe { Bound::from_borrowed_ptr(self.py, obj) }.try_iter()?;
        let base = self.s.out.len();
        let had_deferred = self.deferred.is_some();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        if !is_set {
            self.s.out.push(b'[');
        }
        for (i, item) in iter.enumerate() {
            let item = item?;
            if !is_set && i > 0 {
                self.s.out.push(b',');
            }
            let start = self.s.out.len();
            self.s.path.push(if is_set {
                Step::SetItem
            } else {
                Step::Index(i)
            });
            let result = self.walk(item.as_ptr(), depth + 1);
            self.s.path.pop();
            result?;
            spans.push((start - base, self.s.out.len() - base));
        }
        if !is_set {
            self.s.out.push(b']');
            return Ok(());
        }
        // sorted(members, key=json.dumps) writes every member, so it raises here.
        if !had_deferred {
            if let Some(err) = self.deferred.take() {
                return Err(err);
            }
        }
        let members = self.s.out.split_off(base);
        spans.sort_by(|a, b| members[a.0..a.1].cmp(&members[b.0..b.1]));
        self.s.out.push(b'[');
        for (i, &(start, end)) in spans.iter().enumerate() {
            if i > 0 {
                self.s.out.push(b',');
            }
            self.s.out.extend_from_slice(&members[start..end]);
        }
        self.s.out.push(b']');
        Ok(())
    }

    fn walk_dict(&mut self, obj: *mut ffi::PyObject, depth: usize, exact: bool) -> PyResult<()> {
        self.check_depth(depth)?;
        if exact && self.write_known_shape(obj)? {
            return Ok(());
        }
        let start = self.s.entries.len();
        let result = self
            .collect_entries(obj, exact)
            .and_then(|python_order| self.sort_entries(start, python_order))
            .and_then(|()| self.write_entries(obj, start, depth));
        if result.is_ok() && exact {
            self.remember_shape(start);
        }
        release_entries(&mut self.s.entries, start);
        result
    }

    /// If `obj` (an exact dict) has the remembered shape and only leaf values, write it
    /// from the shape and return true. Reads nothing else and runs no Python code.
    fn write_known_shape(&mut self, obj: *mut ffi::PyObject) -> PyResult<bool> {
        let s = &mut *self.s;
        // SAFETY: `obj` is a live exact dict; borrowed keys and values are used only
        // while no Python code can run (leaf values are written by plain C calls).
        unsafe {
            if ffi::PyDict_Size(obj) as usize != s.shape.keys.len() || s.shape.keys.is_empty() {
                return Ok(false);
            }
            s.leaves.clear();
            let mut pos: ffi::Py_ssize_t = 0;
            let mut key = ptr::null_mut();
            let mut value = ptr::null_mut();
            let mut i = 0;
            while ffi::PyDict_Next(obj, &mut pos, &mut key, &mut value) != 0 {
                if s.shape.keys.get(i) != Some(&key) || !is_leaf(value) {
                    return Ok(false);
                }
                s.leaves.push(value);
                i += 1;
            }
        }
        for j in 0..self.s.shape.order.len() {
            let s = &mut *self.s;
            let (text, len) = &s.shape.prefixes[j];
            push_short(&mut s.out, text, *len);
            let value = s.leaves[s.shape.order[j]];
            self.write_leaf(value)?;
        }
        self.s.out.push(b'}');
        Ok(true)
    }

    /// Remember the sorted entries `start..` as the shape, if the dict was flat: exact
    /// str keys (plain UTF-8) and leaf values only.
    fn remember_shape(&mut self, start: usize) {
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

    /// Push the dict's entries, checking each key in insertion order as the reference
    /// does. Returns true if the keys must be ordered by Python's own `<` (subclass keys).
    fn collect_entries(&mut self, obj: *mut ffi::PyObject, exact: bool) -> PyResult<bool> {
        let start = self.s.entries.len();
        let mut kinds = 0u8;
        let mut python_order = false;
        // SAFETY: every pointer pushed is a new strong reference; PyDict_Next gives
        // borrowed ones, which are increfed before anything can run Python code.
        unsafe {
            if exact {
                let mut pos: ffi::Py_ssize_t = 0;
                let mut key = ptr::null_mut();
                let mut value = ptr::null_mut();
                while ffi::PyDict_Next(obj, &mut pos, &mut key, &mut value) != 0 {
                    ffi::Py_INCREF(key);
                    ffi::Py_INCREF(value);
                    self.push_entry(key, value, start, &mut kinds, &mut python_order)?;
                }
            } else {
                let iter = Bound::from_borrowed_ptr(self.py, obj).try_iter()?;
                for key in iter {
                    let key = key?.into_ptr();
                    self.push_entry(key, ptr::null_mut(), start, &mut kinds, &mut python_order)?;
                }
            }
        }
        if kinds.count_ones() > 1 {
            let mut type_names = Vec::new();
            for e in &self.s.entries[start..] {
                // SAFETY: the entry holds the key alive.
                type_names.push(type_name(unsafe {
                    &Bound::from_borrowed_ptr(self.py, e.key)
                })?);
            }
            return Err(self.error(|path| HashError::MixedKeys { path, type_names }));
        }
        Ok(python_order)
    }

    /// Classify one key (taking ownership of `key` and `value`) and push its entry.
    unsafe fn push_entry(
        &mut self,
        key: *mut ffi::PyObject,
        value: *mut ffi::PyObject,
        start: usize,
        kinds: &mut u8,
        python_order: &mut bool,
    ) -> PyResult<()> {
        let index = self.s.entries.len() - start;
        let mut entry = Entry {
            key,
            value,
            owner: ptr::null_mut(),
            sort: KeyRef::Null,
            repr_failed: false,
            index,
        };
        // Pushed first, so the caller releases it whatever happens next.
        self.s.entries.push(entry);
        let tp = ffi::Py_TYPE(key);
        let exact_type = tp == &raw mut ffi::PyUnicode_Type
            || tp == &raw mut ffi::PyLong_Type
            || tp == &raw mut ffi::PyFloat_Type
            || tp == &raw mut ffi::PyBool_Type
            || key == ffi::Py_None();
        if ffi::PyUnicode_Check(key) != 0 {
            let (bytes, owner) = bytes_of_str(key)?;
            entry.sort = KeyRef::Str(bytes);
            entry.owner = owner;
        } else if key == ffi::Py_True() || key == ffi::Py_False() {
            entry.sort = KeyRef::Bool(key == ffi::Py_True());
        } else if ffi::PyLong_Check(key) != 0 {
            let n = ffi::PyLong_AsLongLong(key);
            if n != -1 || ffi::PyErr_Occurred().is_null() {
                entry.sort = KeyRef::Int(n);
            } else {
                ffi::PyErr_Clear();
                let bound = Bound::from_borrowed_ptr(self.py, key);
                match int_repr(self.py, &bound) {
                    Ok(text) => {
                        let owner = text.into_ptr();
                        let (bytes, extra) = bytes_of_str(owner)?;
                        ffi::Py_XDECREF(extra); // repr text is ASCII: never needed
                        let (negative, magnitude) = match bytes.split_first() {
                            Some((b'-', rest)) => (true, rest),
                            _ => (false, bytes),
                        };
                        entry.owner = owner;
                        entry.sort = KeyRef::Big {
                            negative,
                            magnitude,
                        };
                    }
                    Err(err) if err.is_instance_of::<PyValueError>(self.py) => {
                        // Ordered by Python; the error is raised again when the path is built.
                        entry.repr_failed = true;
                        entry.sort = KeyRef::Int(0);
                        *python_order = true;
                    }
                    Err(err) => return Err(err),
                }
            }
        } else if ffi::PyFloat_Check(key) != 0 {
            let f = ffi::PyFloat_AsDouble(key);
            entry.sort = KeyRef::Float(f);
            if f.is_nan() {
                return Err(self.error(|path| HashError::NanKey { path }));
            }
        } else if key == ffi::Py_None() {
            entry.sort = KeyRef::Null;
        } else {
            let type_name = type_name(&Bound::from_borrowed_ptr(self.py, key))?;
            return Err(self.error(|path| HashError::BadKeyType { path, type_name }));
        }
        *kinds |= match entry.sort.kind() {
            KeyKind::Str => 1,
            KeyKind::Number => 2,
            KeyKind::Null => 4,
        };
        *python_order |= !exact_type;
        *self.s.entries.last_mut().expect("pushed above") = entry;
        Ok(())
    }

    fn sort_entries(&mut self, start: usize, python_order: bool) -> PyResult<()> {
        let entries = &mut self.s.entries[start..];
        if !python_order {
            entries.sort_unstable_by(|a, b| cmp_keys(&a.sort, &b.sort));
            return Ok(());
        }
        // Keys of subclass types compare with their own `<`: let Python sort them.
        let keys = PyList::empty(self.py);
        for e in entries.iter() {
            // SAFETY: the entry holds the key alive.
            keys.append(unsafe { Bound::from_borrowed_ptr(self.py, e.key) })?;
        }
        keys.sort()?;
        let by_ptr: HashMap<usize, Entry> = entries.iter().map(|e| (e.key as usize, *e)).collect();
        for (slot, key) in entries.iter_mut().zip(keys.iter()) {
            *slot = by_ptr[&(key.as_ptr() as usize)];
        }
        Ok(())
    }

    fn write_entries(
        &mut self,
        obj: *mut ffi::PyObject,
        start: usize,
        depth: usize,
    ) -> PyResult<()> {
        self.s.out.push(b'{');
        let end = self.s.entries.len();
        for i in start..end {
            // Copied out: walking the value may push (and reallocate) more entries.
            let e = self.s.entries[i];
            if e.repr_failed {
                // SAFETY: the entry holds the key alive.
                int_repr(self.py, unsafe {
                    &Bound::from_borrowed_ptr(self.py, e.key)
                })?;
            }
            if i > start {
                self.s.out.push(b',');
            }
            e.sort.write_json(&mut self.s.out);
            self.s.out.push(b':');
            self.s.path.push(Step::Key(e.key, e.sort));
            let result = if e.value.is_null() {
                // A dict subclass: the reference reads `value[key]`, through its __getitem__.
                // SAFETY: both objects are alive; the item is a new reference held here.
                unsafe { Bound::from_borrowed_ptr(self.py, obj) }
                    .get_item(unsafe { Bound::from_borrowed_ptr(self.py, e.key) })
                    .and_then(|item| self.walk(item.as_ptr(), depth + 1))
            } else {
                self.walk(e.value, depth + 1)
            };
            self.s.path.pop();
            result?;
        }
        self.s.out.push(b'}');
        Ok(())
    }
}

fn id_string<'py>(py: Python<'py>, canonical: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let id = id_bytes(canonical);
    // SAFETY: 16 ASCII bytes; a new reference or null with an error set.
    unsafe {
        let obj = ffi::PyUnicode_FromStringAndSize(id.as_ptr().cast(), ID_LEN as ffi::Py_ssize_t);
        Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked())
    }
}

/// Return the 16-hex-character id of one parameter set.
#[pyfunction]
#[pyo3(signature = (params))]
fn hash_params<'py>(py: Python<'py>, params: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    let mut walker = Walker::new(py);
    walker.params(params)?;
    id_string(py, &walker.s.out)
}

/// Return the ids of many parameter sets, consuming the iterable once, in order.
#[pyfunction]
#[pyo3(signature = (params))]
fn hash_many<'py>(py: Python<'py>, params: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let mut walker = Walker::new(py);
    let mut ids: Vec<Bound<'py, PyString>> = Vec::new();
    if let Ok(list) = params.cast_exact::<PyList>() {
        // A list is read by index, as its iterator would (the length is re-read each step).
        let mut i = 0;
        while i < list.len() {
            let item = list.get_item(i)?;
            walker.params(&item)?;
            ids.push(id_string(py, &walker.s.out)?);
            i += 1;
        }
    } else {
        for item in params.try_iter()? {
            walker.params(&item?)?;
            ids.push(id_string(py, &walker.s.out)?);
        }
    }
    PyList::new(py, ids)
}

/// Return the canonical JSON text whose SHA-256 is the id of ``params``.
#[pyfunction]
#[pyo3(signature = (params))]
fn canonical_json<'py>(
    py: Python<'py>,
    params: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyString>> {
    let mut walker = Walker::new(py);
    walker.params(params)?;
    // SAFETY: canonical JSON is ASCII.
    unsafe {
        let out = &walker.s.out;
        let obj =
            ffi::PyUnicode_FromStringAndSize(out.as_ptr().cast(), out.len() as ffi::Py_ssize_t);
        Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked())
    }
}

/// entropic's compiled hashing core (see entropic.hashing, which picks the backend).
#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MAX_DEPTH", MAX_DEPTH)?;
    m.add_function(wrap_pyfunction!(hash_params, m)?)?;
    m.add_function(wrap_pyfunction!(hash_many, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_json, m)?)?;
    Ok(())
}
