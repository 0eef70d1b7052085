"""The compiled core of pasid: IDA and PasidAllocator.

This file holds only the design and the includes; each ``.pxi`` is the twin
of a pure-Python module of the same name (listed below). Two rooms, as in the
pure backend: the ID space (``_idspace.pxi``: a radix tree of 64-bit bitmap
words) and the strategies decide which FREE ID an allocation gets; the
lifecycle (``_allocator.pxi``) decides when an ID is FREE again: per PASID a
byte of state and flags, the refcount, generation and release time in C
arrays; an owner's record (use, quota, ACTIVE list) found by one dict look-up;
bindings in a pool of C records linked per PASID and per device.

Every operation runs in three phases (``_allocator.pxi`` says how): user code
(a clock, an owner's or device's ``__hash__``/``__eq__``, a callback) runs
only before the critical section or after it, never between a check and the
mutation it guards. The critical section is the GIL on the normal build and a
per-object lock on the free-threaded one.
"""

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.math cimport NAN, isfinite
from libc.stdint cimport (INT64_MAX, INT64_MIN, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t)
from libc.stdlib cimport calloc, free, malloc

import inspect
import operator
import os

import numpy as np

from pasid import _args, _fork, _messages, _snapshot, _state
from pasid._callbacks import run_teardown
from pasid._errors import InvalidPasid, PasidExhausted, QuotaExceeded, StateError
from pasid._handle import PasidHandle
from pasid._state import State

__all__ = ["IDA", "PasidAllocator"]

# The core mirrors the pure backend file by file (a reader moves between twins by name):
include "_convert.pxi"      # pasid/_args.py: the shared rules, the common cases inline
include "_rng.pxi"          # pasid/_rng.py: SplitMix64 and its range reduction
include "_idspace.pxi"      # pasid/pure/idspace.py: the ID space and its invariant check
include "_ida.pxi"          # pasid/pure/ida.py: IDA
include "_fifo.pxi"         # pasid/pure/fifo.py: the fifo strategy's queue
include "_allocator.pxi"    # pasid/pure/allocator.py: PasidAllocator
include "_batch.pxi"        # pasid/pure/batch.py: batches and their gate
include "_bindings.pxi"     # pasid/pure/bindings.py: bindings and devices
include "_owners.pxi"       # pasid/pure/owners.py: owners and quotas
include "_release.pxi"      # pasid/pure/release.py: the release queue and reclaim
include "_export.pxi"       # pasid/pure/export.py: its snapshots
include "_check.pxi"        # pasid/pure/check.py: its invariant check


# ---------------------------------------------------------------- docstrings
#
# The public classes' docstrings have one home: their pure twins (pasid/pure/),
# the reference both backends document and doctest. At import, each method and
# property of a compiled class takes its twin's text, its own signature kept
# (``embedsignature``): the C pointer behind the descriptor's ``__doc__`` is
# pointed at a copy the module keeps. Slot methods (``__len__``...) keep
# CPython's texts: theirs are shared by every type.

from pasid import pure as _pure

cdef extern from "Python.h":
    ctypedef struct PyMethodDef:
        const char* ml_doc
    ctypedef struct PyMethodDescrObject:
        PyMethodDef* d_method
    ctypedef struct PyGetSetDef:
        const char* doc
    ctypedef struct PyGetSetDescrObject:
        PyGetSetDef* d_getset

cdef list _doc_texts = []     # the texts the descriptors point at, kept for good


cdef int _take_docs(type compiled, type reference) except -1:
    """Give ``compiled``'s methods and properties the docstrings of ``reference``'s."""
    cdef PyMethodDef* method
    cdef bytes text, signature
    for name, member in vars(reference).items():
        doc = getattr(member, "__doc__", None)
        target = vars(compiled).get(name)
        if doc is None or target is None:
            continue
        text = inspect.cleandoc(doc).encode()
        kind = type(target).__name__
        if kind in ("method_descriptor", "classmethod_descriptor"):
            method = (<PyMethodDescrObject*><void*>target).d_method
            # keep the text signature Cython wrote: "name($self, ...)\n--\n\n"
            signature = b""
            if method.ml_doc != NULL and b"\n--\n\n" in <bytes>method.ml_doc:
                signature = (<bytes>method.ml_doc).split(b"\n--\n\n", 1)[0] + b"\n--\n\n"
            text = signature + text
            _doc_texts.append(text)
            method.ml_doc = <const char*>text
        elif kind == "getset_descriptor":
            _doc_texts.append(text)
            (<PyGetSetDescrObject*><void*>target).d_getset.doc = <const char*>text
    return 0


_take_docs(PasidAllocator, _pure.PasidAllocator)
_take_docs(IDA, _pure.IDA)
