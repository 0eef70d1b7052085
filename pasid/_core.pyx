"""The compiled core of pasid: IDA and PasidAllocator.

This file holds the design and the includes; each ``.pxi`` is the twin of a
pure-Python module of the same name (listed below), so a reader moves between
them by name. Two rooms: the ID space (``_idspace.pxi``: a radix tree of 64-bit
bitmap words) and the strategies decide which FREE ID an allocation gets; the
lifecycle (``_allocator.pxi`` and its components) decides when an ID is FREE
again.

**Phases.** Every operation runs in three, so that no Python code of the
user's (a callable clock, an owner's or a device's ``__hash__``/``__eq__``, a
callback) runs between a check and the mutation it guards, whether that code
calls back into the allocator or lets another thread in:

1. prepare, outside the critical section: convert the arguments, read a
   callable clock once, find the owner's and the device's records (their
   ``__hash__``/``__eq__`` may run) and pin the owner's. The owner and device
   tables change only under the registry lock, which refuses a change
   re-entered from the same thread (an ``__eq__`` that calls back to declare a
   device, say).
2. act, in the object's critical section, in C: check the state, then change
   it. A pinned owner record stays current; the dictionaries touched here are
   keyed by C integers or by identity, so no user code runs.
3. report: build the result and the teardown callbacks from the new state,
   unpin the owner's record (dropped if it holds nothing), run the callbacks.

On the GIL build the critical section is only the GIL, and the GIL passes to
another thread wherever Python code runs: so phase 2 runs none. The user
objects a change lets go (a PASID's data, a binding's data) are kept in a
graveyard until phase 3, since dropping them may run a finalizer; where phase
2 builds Python objects (teardown lists, exit_owner's result, lists read by
queries, a snapshot's tables) the garbage collector is paused, since a
collection runs finalizers and gc callbacks. Phase 3 hashes owners and devices
only to tidy the tables: what it raises is swallowed (the change stands), and
a record left behind is marked gone, which look-ups skip. The free-threaded
build's critical section is the object's own lock.

**Threads.** The C loops of a batch run without the GIL from RELEASE_MIN IDs on
(``_batch.pxi``: the gate every critical section waits on while one runs);
they touch only memory the allocator owns. Per-ID calls keep the GIL: taking it
back from a thread running Python code costs up to a switch interval. fork()
holds every allocator's gate (and the pure backend's locks) across
(``pasid/_fork.py``).

**Layout.** Per PASID, C arrays: a two-byte Slot (state and flags; the low byte
of the generation) that every call touches, the generation's high bits, the
refcount beyond 1, the release time so far, the owner links (``_owners.pxi``),
the first binding (``_bindings.pxi``). The release queue is a binary heap in C
arrays (``_release.pxi``). Owners: a record per owner object, found through one
dict look-up per call that names an owner. Devices: a record per device, named
in C by its handle. Docstrings: the pure twins', taken at import (below).
"""

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.unicode cimport PyUnicode_Compare
from libc.math cimport NAN, isfinite
from libc.stdint cimport (INT64_MAX, INT64_MIN, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uint64_t)
from libc.stdlib cimport calloc, free, malloc

cdef extern from *:
    """
    /* The per-PASID tables (a slot, owner links, bindings, hold times a PASID): calloc,
       or, where the caller asks for huge pages, a mapping of their own, aligned to 2 MiB
       and advised for transparent huge pages (MADV_HUGEPAGE). Two callers ask:
       - "random" for all its tables. It spreads its PASIDs over the whole space, so its
         tables are touched everywhere a few hundred allocations in, each 4 KiB page in
         a fault of its own (about 9,000 for a 20-bit space: 40% of a random replay's
         time); where the kernel gives huge pages, each 2 MiB comes in one.
       - every strategy for the slot table, the one every free and alloc touches at a
         random PASID. On 4 KiB pages each such touch of a cold table is a TLB miss
         whose page walk misses too; on one 2 MiB page it is one entry (a cold W1 pair
         went from 1.4-1.7x IDA's to 1.2x: benchmarks/ratios.py, W1-cold).
       Not in the sanitizers' build (AddressSanitizer sees the heap, not mappings),
       not for tables under 2 MiB, and not where the system has no MADV_HUGEPAGE. */
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    #include <stdint.h>
    #define PASID_HUGE ((size_t)2 << 20)
    static int pasid_table_mapped(size_t bytes, int huge) {
    #if defined(MADV_HUGEPAGE) && !defined(__SANITIZE_ADDRESS__)
        return huge && bytes >= PASID_HUGE;
    #else
        (void)bytes; (void)huge;
        return 0;
    #endif
    }
    static size_t pasid_table_span(size_t bytes) {
        return (bytes + PASID_HUGE - 1) & ~(PASID_HUGE - 1);
    }
    /* n items of `item` bytes, zeroed (pages made as they are first touched); NULL out
       of memory. Freed by pasid_table_free with the same n, item and huge. */
    static void* pasid_table_new(size_t n, size_t item, int huge) {
        size_t bytes = n * item;
        if (!pasid_table_mapped(bytes, huge))
            return calloc(n, item);
    #if defined(MADV_HUGEPAGE) && !defined(__SANITIZE_ADDRESS__)
        size_t span = pasid_table_span(bytes);
        char* raw = (char*)mmap(NULL, span + PASID_HUGE, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == (char*)MAP_FAILED)
            return NULL;
        char* start = (char*)(((uintptr_t)raw + PASID_HUGE - 1) & ~(uintptr_t)(PASID_HUGE - 1));
        if (start > raw)
            munmap(raw, (size_t)(start - raw));
        if (raw + span + PASID_HUGE > start + span)
            munmap(start + span, (size_t)(raw + span + PASID_HUGE - (start + span)));
        madvise(start, span, MADV_HUGEPAGE);    /* a hint: refused, the pages stay 4 KiB */
        return start;
    #else
        return NULL;
    #endif
    }
    static void pasid_table_free(void* table, size_t n, size_t item, int huge) {
        if (table == NULL)
            return;
    #if defined(MADV_HUGEPAGE) && !defined(__SANITIZE_ADDRESS__)
        if (pasid_table_mapped(n * item, huge)) {
            munmap(table, pasid_table_span(n * item));
            return;
        }
    #endif
        free(table);
    }
    """
    size_t PASID_HUGE
    int pasid_table_mapped(size_t bytes, int huge) noexcept nogil
    void* pasid_table_new(size_t n, size_t item, int huge) noexcept nogil
    void pasid_table_free(void* table, size_t n, size_t item, int huge) noexcept nogil

import inspect
import operator
import os

import numpy as np

from pasid import _args, _fork, _snapshot, _state, _vmblob
from pasid import _vcmd as _vcmd_py
from pasid._messages import (
    ADVANCE_BOTH, ADVANCE_CALLABLE, EXIT_NONE, QUOTA_NONE, REENTRY, at_quota, bad_range,
    bad_state_code, bind_limit, cannot_reserve, cannot_unreserve, clock_back, empty_range,
    generation_limit, ida_id_range, ida_negative, ida_no_free, ida_not_allocated,
    narrower_than_bound, negative_count, no_free, no_handle, not_active, not_bound, not_free,
    out_of_range, reference_limit, too_few_free, too_wide, unknown_device, VM_NONE,
    device_taken, device_twice, devices_missing, guest_no_free, guest_number_too_wide,
    guest_too_wide, import_outside, import_short, migration_conflict, not_assigned, not_guest,
    owner_busy, undeclared_device, unknown_vm, vm_exists, vm_removed, capi_vcmd_encoding)
from pasid._callbacks import run_teardown
from pasid._errors import InvalidPasid, MigrationConflict, PasidExhausted, QuotaExceeded, StateError
from pasid._handle import PasidHandle
from pasid._state import State

__all__ = ["GuestSpace", "IDA", "PasidAllocator"]

# 1 where the slot table and "random"'s tables are mappings of their own, advised for
# huge pages (above); 0 in the sanitizers' build and where the system has no
# MADV_HUGEPAGE (calloc's): tests
_HUGE_TABLES = pasid_table_mapped(PASID_HUGE, 1)

# The core mirrors the pure backend file by file (a reader moves between twins by name):
include "_convert.pxi"      # pasid/_args.py: the shared rules, the common cases inline
include "_rng.pxi"          # pasid/_rng.py: SplitMix64 and its range reduction
include "_idspace.pxi"      # pasid/pure/idspace.py: the ID space and its invariant check
include "_ida.pxi"          # pasid/pure/ida.py: IDA
include "_fifo.pxi"         # pasid/pure/fifo.py: the fifo strategy's queue
include "_allocator.pxi"    # pasid/pure/allocator.py: PasidAllocator, its phases and methods
include "_release.pxi"      # pasid/pure/release.py: the release queue and reclaim
include "_owners.pxi"       # pasid/pure/owners.py: owners and quotas
include "_bindings.pxi"     # pasid/pure/bindings.py: bindings and devices
include "_batch.pxi"        # pasid/pure/batch.py: batches and their gate
include "_export.pxi"       # pasid/pure/export.py: snapshots out and in
include "_check.pxi"        # pasid/pure/check.py: the invariant check
include "_guest.pxi"        # pasid/pure/guest.py: GuestSpace, the VMs of a host
include "_capi.pxi"         # (compiled only) the public C-level API: a versioned table
                            # of functions, declared in pasid/capi.pxd


# ---------------------------------------------------------------- docstrings
#
# The public classes' docstrings have one home: their pure twins (pasid/pure/),
# the reference both backends document and doctest. At import, each method and
# property of a compiled class takes its twin's text, its own signature kept
# (``embedsignature``): the C pointer behind the descriptor's ``__doc__`` is
# pointed at a copy the module keeps. Slot methods (``__len__``...) keep
# CPython's texts: theirs are shared by every type.

from pasid import pure as _pure
from pasid.pure import guest as _pure_guest

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
_take_docs(PasidAllocator, _pure_guest.VMHost)
_take_docs(GuestSpace, _pure_guest.GuestSpace)
_take_docs(IDA, _pure.IDA)
