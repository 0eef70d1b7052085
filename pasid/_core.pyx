"""The compiled core of pasid: IDA and PasidAllocator.

This file holds only the design and the includes; each ``.pxi`` is the twin
of a pure-Python module of the same name (listed below). Two rooms, as in the
pure backend: the ID space (``_idspace.pxi``: a radix tree of 64-bit bitmap
words) and the strategies decide which FREE ID an allocation gets; the
lifecycle tables (``_allocator.pxi``: state, refcount, generation and release
time per PASID in C arrays; owners, data, bindings in side tables touched only
when a per-PASID flag says so) decide when an ID is FREE again.

Every public operation validates first and then mutates; the only step that
can fail after a mutation began is a memory allocation, which is undone.
Operations hold the object's critical section: the GIL on the normal build, a
per-object lock on the free-threaded build.
"""

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.math cimport isfinite
from libc.stdint cimport INT64_MAX, INT64_MIN, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc

import operator
import os

import numpy as np

from pasid import _snapshot
from pasid._callbacks import run_teardown
from pasid._errors import InvalidPasid, PasidExhausted, QuotaExceeded, StateError
from pasid._handle import PasidHandle
from pasid._state import State

__all__ = ["IDA", "PasidAllocator"]

# The core mirrors the pure backend file by file (a reader moves between twins by name):
include "_convert.pxi"      # pasid/pure/_args.py: arguments as C integers and doubles
include "_rng.pxi"          # pasid/_rng.py: SplitMix64 and its range reduction
include "_idspace.pxi"      # pasid/pure/idspace.py: the ID space and its invariant check
include "_ida.pxi"          # pasid/pure/ida.py: IDA
include "_allocator.pxi"    # pasid/pure/allocator.py: PasidAllocator
