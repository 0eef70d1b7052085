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

import operator
import os

import numpy as np

from pasid import _args, _fork, _snapshot
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
include "_capi.pxi"         # the public C-level API: a versioned table (pasid/capi.pxd)
