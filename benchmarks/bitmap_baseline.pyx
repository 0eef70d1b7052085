# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A minimal hierarchical bitmap over 2**20 IDs: the floor a batch call can reach.

The yardstick of benchmarks/test_batch_limit.py (issue: alloc_many and
free_many within 1.2x of "a minimal Cython bitmap measured side by side"). It
does what a bare bitmap allocator must and nothing more: 16,384 leaf words (a
set bit is a free ID), 256 and 4 summary words and a root word (a set bit: the
word below has a free ID); alloc_many takes the lowest free IDs into an array,
peeling every free bit of a word before consulting the summaries again;
free_many sets the bits of an array of taken IDs, summaries changed only on a
word's transition. No per-ID state, no checks beyond what the loops need.
"""

from libc.stdint cimport uint32_t, uint64_t

cdef extern from *:
    """
    static inline int baseline_ctz(unsigned long long x) { return __builtin_ctzll(x); }
    """
    int ctz "baseline_ctz"(unsigned long long x) nogil

cdef enum:
    LEAVES = 16384
    MIDS = 256
    TOPS = 4

cdef uint64_t ALL = 0xFFFFFFFFFFFFFFFF


cdef class Bitmap:
    """2**20 IDs, all free; ``alloc_many(out)`` and ``free_many(ids)``."""

    cdef uint64_t leaf[LEAVES]
    cdef uint64_t mid[MIDS]
    cdef uint64_t top[TOPS]
    cdef uint64_t root
    cdef Py_ssize_t free_ids

    def __cinit__(self):
        cdef Py_ssize_t i
        for i in range(LEAVES):
            self.leaf[i] = ALL
        for i in range(MIDS):
            self.mid[i] = ALL
        for i in range(TOPS):
            self.top[i] = ALL
        self.root = (<uint64_t>1 << TOPS) - 1
        self.free_ids = LEAVES * 64

    def alloc_many(self, uint32_t[::1] out):
        """The lowest ``len(out)`` free IDs into ``out``; ValueError if fewer are free."""
        cdef Py_ssize_t n = out.shape[0], done = 0
        cdef int t, m, w
        cdef uint64_t word
        cdef uint32_t base
        if n > self.free_ids:
            raise ValueError("not that many free IDs")
        with nogil:
            while done < n:
                t = ctz(self.root)
                m = (t << 6) + ctz(self.top[t])
                w = (m << 6) + ctz(self.mid[m])
                word = self.leaf[w]
                base = <uint32_t>(w << 6)
                while word and done < n:
                    out[done] = base + ctz(word)
                    word &= word - 1
                    done += 1
                self.leaf[w] = word
                if word == 0:
                    self.mid[m] &= ~(<uint64_t>1 << (w & 63))
                    if self.mid[m] == 0:
                        self.top[t] &= ~(<uint64_t>1 << (m & 63))
                        if self.top[t] == 0:
                            self.root &= ~(<uint64_t>1 << t)
        self.free_ids -= n

    def free_many(self, const uint32_t[::1] ids):
        """Set the bits of ``ids`` (taken IDs, each once)."""
        cdef Py_ssize_t i, n = ids.shape[0]
        cdef uint32_t p
        cdef int w, m, t
        with nogil:
            for i in range(n):
                p = ids[i]
                w = p >> 6
                if self.leaf[w] == 0:
                    m = w >> 6
                    if self.mid[m] == 0:
                        t = m >> 6
                        if self.top[t] == 0:
                            self.root |= <uint64_t>1 << t
                        self.top[t] |= <uint64_t>1 << (m & 63)
                    self.mid[m] |= <uint64_t>1 << (w & 63)
                self.leaf[w] |= <uint64_t>1 << (p & 63)
        self.free_ids += n
