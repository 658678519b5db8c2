//! The walk over Python objects: rules 1-8 of docs/hashing.md in the reference's order,
//! the canonical JSON written into one reusable buffer as it goes, no intermediate tree.
//!
//! Exact builtin types take fast paths that apply the same rules without running Python
//! code; everything else is checked as `entropic._pyhash` checks it, in the same order,
//! so both backends report the same first error.

use std::cell::Cell;
use std::mem::ManuallyDrop;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

use super::cache::Scratch;
use super::errors::to_pyerr;
use super::numpy;
use super::text::{bytes_of_str, has_address, int_repr, type_name};
use crate::canonical::push_key_segment;
use crate::error::HashError;
use crate::json::{write_i64, write_str};
use crate::keys::KeyRef;
use crate::value::Text;
use crate::{MAX_DEPTH, MAX_NESTED_CALLS};

static MAPPING_ABC: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// One step of the key path, rendered only when an error is raised.
#[derive(Clone, Copy)]
pub(super) enum Step {
    /// A dict key, borrowed from its entry (which keeps the key alive).
    Key(KeyRef<'static>),
    Index(usize),
    SetItem,
}

/// Exact str, int, float, bool or None: written without running any Python code.
///
/// # Safety
/// `obj` must be a live object.
pub(super) unsafe fn is_leaf(obj: *mut ffi::PyObject) -> bool {
    let tp = ffi::Py_TYPE(obj);
    tp == &raw mut ffi::PyFloat_Type
        || tp == &raw mut ffi::PyUnicode_Type
        || tp == &raw mut ffi::PyLong_Type
        || tp == &raw mut ffi::PyBool_Type
        || obj == ffi::Py_None()
}

/// The double held by a float object (exact or subclass): `PyFloat_AS_DOUBLE`, which the
/// limited API only offers as a call.
///
/// # Safety
/// `obj` must be a live float (`PyFloat_Check`).
#[inline(always)]
pub(super) unsafe fn float_value(obj: *mut ffi::PyObject) -> f64 {
    /// `PyFloatObject`: the object header, then the double.
    #[repr(C)]
    struct FloatObject {
        ob_base: ffi::PyObject,
        ob_fval: f64,
    }
    // SAFETY (caller): a float object starts with this layout.
    unsafe { (*obj.cast::<FloatObject>()).ob_fval }
}

/// One walk over one or more parameter sets, holding the thread's scratch meanwhile.
pub(super) struct Walker<'py> {
    pub(super) py: Python<'py>,
    /// Given back to the thread in `drop` (ManuallyDrop: no placeholder to allocate).
    pub(super) s: ManuallyDrop<Box<Scratch>>,
    /// An error the reference would only raise later, when json.dumps writes the value
    /// (an int too long for `int.__repr__`): kept until normalisation has finished.
    deferred: Option<PyErr>,
}

thread_local! {
    /// Walkers alive on this thread: more than one when a value's method hashes.
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

impl Drop for Walker<'_> {
    fn drop(&mut self) {
        CALLS.set(CALLS.get() - 1);
        // SAFETY: `self.s` is not used again after this.
        Scratch::give_back(unsafe { ManuallyDrop::take(&mut self.s) });
    }
}

impl<'py> Walker<'py> {
    /// A walker, unless `MAX_NESTED_CALLS` are running on this thread already: each may
    /// nest `MAX_DEPTH` levels on the stack, so their number is bounded too.
    pub(super) fn new(py: Python<'py>) -> PyResult<Self> {
        let calls = CALLS.get();
        if calls >= MAX_NESTED_CALLS {
            return Err(to_pyerr(py, HashError::NestedCalls));
        }
        CALLS.set(calls + 1);
        Ok(Walker {
            py,
            s: ManuallyDrop::new(Scratch::take()),
            deferred: None,
        })
    }

    /// Write the canonical JSON of a whole parameter set into `self.s.out`.
    pub(super) fn params(&mut self, params: &Bound<'py, PyAny>) -> PyResult<()> {
        self.s.out.clear();
        self.deferred = None;
        // SAFETY: type checks on a live object.
        if unsafe { ffi::Py_TYPE(params.as_ptr()) } == &raw mut ffi::PyDict_Type {
            // What `walk` does for an exact dict, without its checks for the leaf types
            // and `PyDict_Check` (a call under the limited API).
            self.walk_dict(params.as_ptr(), 0, true)?;
        } else if unsafe { ffi::PyDict_Check(params.as_ptr()) } != 0 {
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

    pub(super) fn error(&self, make: impl FnOnce(Text) -> HashError) -> PyErr {
        to_pyerr(self.py, make(self.render_path()))
    }

    pub(super) fn check_depth(&self, depth: usize) -> PyResult<()> {
        if depth >= MAX_DEPTH {
            return Err(self.error(|path| HashError::TooDeep { path }));
        }
        Ok(())
    }

    /// The path of the value being walked; a str key (of a subclass too) by its text.
    fn render_path(&self) -> Text {
        let mut out = b"params".to_vec();
        for step in &self.s.path {
            match step {
                Step::Key(sort) => push_key_segment(&mut out, sort),
                Step::Index(i) => {
                    out.push(b'[');
                    write_i64(&mut out, *i as i64);
                    out.push(b']');
                }
                Step::SetItem => out.extend_from_slice(b"[set item]"),
            }
        }
        Text::from_bytes(out).unwrap_or_default()
    }

    // Recursion is bounded: containers, numpy and `.value` unwrapping check the depth first.
    pub(super) fn walk(&mut self, obj: *mut ffi::PyObject, depth: usize) -> PyResult<()> {
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
            // Rule 5: numpy arrays and scalars (by type) hash as their .tolist().
            if numpy::is_array_or_scalar(self.py, obj)? {
                self.check_depth(depth)?;
                let listed = value.call_method0(intern!(self.py, "tolist"))?;
                if numpy::is_array_or_scalar(self.py, listed.as_ptr())? {
                    let type_name = type_name(&value)?;
                    return Err(self.error(|path| HashError::NumpyNotPython { path, type_name }));
                }
                return self.walk(listed.as_ptr(), depth + 1);
            }
            // Other numpy objects (dtypes, ufuncs, generators) are not values to hash.
            if numpy::defined_in_numpy(&value)? {
                let type_name = type_name(&value)?;
                return Err(self.error(|path| HashError::NumpyNotAValue { path, type_name }));
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

    /// Write a value `is_leaf` accepted.
    pub(super) fn write_leaf(&mut self, obj: *mut ffi::PyObject) -> PyResult<()> {
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
                self.s.out.extend_from_slice(if obj == ffi::Py_None() {
                    b"null"
                } else if obj == ffi::Py_True() {
                    b"true"
                } else {
                    b"false"
                });
                Ok(())
            }
        }
    }

    pub(super) fn write_str_obj(&mut self, obj: *mut ffi::PyObject) -> PyResult<()> {
        let (bytes, owner) = bytes_of_str(obj)?;
        write_str(&mut self.s.out, bytes);
        // SAFETY: owner is null or a new reference we own.
        unsafe { ffi::Py_XDECREF(owner) };
        Ok(())
    }

    pub(super) fn write_int(&mut self, obj: *mut ffi::PyObject) -> PyResult<()> {
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
}
