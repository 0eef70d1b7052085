# IDA: the Linux-IDA-compatible allocator over the ID space.
# The twin of pasid/pure/ida.py; included by pasid/_core.pyx.

cdef int64_t IDA_MAX = 2147483647


@cython.final
cdef class IDA:
    """IDA()
--

    A Linux-IDA-compatible ID allocator over 0 .. 2**31 - 1.

    The lowest free ID in a range, as the kernel's ``ida_alloc_range``; memory
    grows with what is allocated, not with the range. Thread-safe: every
    operation is atomic.

    >>> from pasid import IDA
    >>> ida = IDA()
    >>> ida.alloc(), ida.alloc(), ida.alloc_min(10)
    (0, 1, 10)
    >>> ida.free(1); ida.alloc()
    1
    >>> list(ida), len(ida), 10 in ida
    ([0, 1, 10], 3, True)
    """

    def __cinit__(self, *args, **kwargs):
        if args or kwargs:
            _args.bind_arguments("IDA", _args.NO_ARGUMENTS, args, kwargs)
        if space_init(&self.space, IDA_MAX + 1) < 0:
            raise MemoryError()
        self.count = 0

    def __dealloc__(self):
        space_destroy(&self.space)

    # ---- the C-level API (the ida_* entries of pasid/capi.pxd): C integers in and out,
    # atomic like the methods

    cdef int64_t c_alloc(self, int64_t lo, int64_t hi) except -2:
        """The lowest free ID in ``lo..hi`` (``hi`` capped at 2**31 - 1), taken; -1 when
        there is none (``lo > hi`` included). InvalidPasid for a negative bound."""
        cdef int64_t p
        if lo < 0:
            raise InvalidPasid(ida_negative("min", lo))
        if hi < 0:
            raise InvalidPasid(ida_negative("max", hi))
        if hi > IDA_MAX:
            hi = IDA_MAX
        if lo > hi:
            return -1
        with cython.critical_section(self):
            p = space_take_lowest(&self.space, hi) if lo == 0 else -1
            if p == -2:
                return -1
            if p == -1:
                p = space_find_free(&self.space, lo)
                if p > hi:
                    return -1
                if space_take(&self.space, p) < 0:
                    raise MemoryError()
            self.count += 1
        return p

    cdef int c_free(self, int64_t id) except -1:
        """Free an allocated ID; returns 0. StateError if it is not allocated,
        InvalidPasid outside 0..2**31 - 1 (nothing changes)."""
        cdef Node* path[MAX_HEIGHT + 1]
        cdef Node* leaf
        if id < 0 or id > IDA_MAX:
            raise InvalidPasid(ida_id_range(id, IDA_MAX))
        with cython.critical_section(self):
            leaf = space_taken_leaf(&self.space, id, path)
            if leaf == NULL:
                raise StateError(ida_not_allocated(id))
            space_release_path(&self.space, leaf, path, id, (<uint64_t>1) << (id & 63), 1)
            self.count -= 1
        return 0

    cdef bint c_exists(self, int64_t id) noexcept:
        """True if ``id`` is allocated (any int64; never fails)."""
        if id < 0 or id > IDA_MAX:
            return False
        with cython.critical_section(self):
            return not space_is_free(&self.space, id)

    cdef int64_t _alloc(self, int64_t lo, int64_t hi) except -1:
        """c_alloc, with the Python methods' errors."""
        cdef int64_t p = self.c_alloc(lo, hi)
        if p < 0:
            if lo > min(hi, IDA_MAX):
                raise PasidExhausted(ida_no_free(lo, min(hi, IDA_MAX)))
            raise PasidExhausted(ida_no_free(lo, min(hi, IDA_MAX)))
        return p

    def alloc(self):
        return self._alloc(0, IDA_MAX)

    def alloc_min(self, min):
        return self._alloc(as_int64(min, "min"), IDA_MAX)

    def alloc_max(self, max):
        return self._alloc(0, as_int64(max, "max"))

    def alloc_range(self, min, max):
        return self._alloc(as_int64(min, "min"), as_int64(max, "max"))

    def free(self, id):
        cdef int64_t p = as_int64(id, "id")
        if p < 0 or p > IDA_MAX:
            raise InvalidPasid(ida_id_range(id, IDA_MAX))
        self.c_free(p)

    def find_first(self):
        return self.find_first_range(0, IDA_MAX)

    def find_first_range(self, min, max):
        cdef int64_t lo = as_int64(min, "min")
        cdef int64_t hi = as_int64(max, "max")
        cdef int64_t p
        if lo < 0:
            raise InvalidPasid(ida_negative("min", lo))
        if hi > IDA_MAX:
            hi = IDA_MAX
        if lo > hi:
            return None
        with cython.critical_section(self):
            p = space_find_used(&self.space, lo)
        return p if 0 <= p <= hi else None

    def exists(self, id):
        cdef int64_t p
        try:
            p = as_int64(id, "id")
        except TypeError:
            return False
        if p < 0 or p > IDA_MAX:
            return False
        with cython.critical_section(self):
            return not space_is_free(&self.space, p)

    def __contains__(self, id):
        return self.exists(id)

    def is_empty(self):
        return self.count == 0

    def destroy(self):
        with cython.critical_section(self):
            if space_clear(&self.space) < 0:
                raise MemoryError()
            self.count = 0

    def __len__(self):
        return self.count

    def __iter__(self):
        cdef list found = []
        cdef int64_t p
        with cython.critical_section(self):
            p = space_find_used(&self.space, 0)
            while p >= 0:
                found.append(p)
                p = space_find_used(&self.space, p + 1)
        return iter(found)

    def __repr__(self):
        return f"<pasid.IDA allocated={self.count}>"

    def __reduce__(self):
        """Pickle, copy and deepcopy: the allocated IDs, ascending (a new, independent IDA)."""
        return (_ida_from_ids, (type(self), np.asarray(list(self), dtype=np.int64)))

    def _memory(self):
        """Bytes held by the bitmap tree (nodes of 64 words plus summaries)."""
        return self.space.nodes * sizeof(Node)

    def _check(self):
        """Verify every summary, count and node against the bitmap words below."""
        with cython.critical_section(self):
            used, nodes = _check_node(self.space.root, self.space.height)
            _check_hint(&self.space)
            if used != self.count:
                raise AssertionError(f"count {self.count} != {used} taken bits")
            if nodes != self.space.nodes:
                raise AssertionError(f"nodes {self.space.nodes} != {nodes} in the tree")


def _ida_from_ids(cls, ids):
    """An IDA of class ``cls`` with exactly ``ids`` allocated (what __reduce__ saves)."""
    ida = cls()
    for p in np.asarray(ids, dtype=np.int64).tolist():
        if ida.alloc_range(p, p) != p:   # pragma: no cover - alloc_range raises instead
            raise ValueError(f"ID {p} twice")
    return ida
