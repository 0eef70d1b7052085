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
        if lo < 0 or hi < 0:
            raise InvalidPasid(f"negative ID bound {min(lo, hi)}")
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
            raise InvalidPasid(f"id {id} out of range 0..{IDA_MAX}")
        with cython.critical_section(self):
            leaf = space_taken_leaf(&self.space, id, path)
            if leaf == NULL:
                raise StateError(f"ida_free called for id={id} which is not allocated")
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
                raise PasidExhausted(f"no space: min {lo} > max {hi if hi <= IDA_MAX else IDA_MAX}")
            raise PasidExhausted(f"no free ID in {lo}..{min(hi, IDA_MAX)}")
        return p

    def alloc(self):
        """The lowest free ID. O(log64 N). Raises PasidExhausted when all 2**31 are taken.

        >>> IDA().alloc()
        0
        """
        return self._alloc(0, IDA_MAX)

    def alloc_min(self, min):
        """The lowest free ID >= ``min``. O(log64 N).

        ``min`` above 2**31-1: PasidExhausted; negative: InvalidPasid.

        >>> IDA().alloc_min(5)
        5
        """
        return self._alloc(as_int64(min, "min"), IDA_MAX)

    def alloc_max(self, max):
        """The lowest free ID <= ``max`` (clamped at 2**31-1). O(log64 N).

        >>> ida = IDA(); ida.alloc_max(0)
        0
        >>> ida.alloc_max(0)
        Traceback (most recent call last):
        ...
        pasid._errors.PasidExhausted: no free ID in 0..0
        """
        return self._alloc(0, as_int64(max, "max"))

    def alloc_range(self, min, max):
        """The lowest free ID in ``[min, max]`` (inclusive). O(log64 N).

        As in the kernel: ``max`` above 2**31-1 is clamped; ``min > max`` or a
        full range raises PasidExhausted; a negative bound, InvalidPasid.

        >>> ida = IDA(); ida.alloc_range(7, 9), ida.alloc_range(7, 2**40)
        (7, 8)
        """
        return self._alloc(as_int64(min, "min"), as_int64(max, "max"))

    def free(self, id):
        """Free an allocated ID. O(log64 N).

        Not allocated: StateError, nothing changes; negative or above
        2**31-1: InvalidPasid.

        >>> ida = IDA(); ida.free(ida.alloc()); ida.free(0)
        Traceback (most recent call last):
        ...
        pasid._errors.StateError: ida_free called for id=0 which is not allocated
        """
        cdef int64_t p = as_int64(id, "id")
        if p < 0 or p > IDA_MAX:
            raise InvalidPasid(f"id {id} out of range 0..{IDA_MAX}")
        self.c_free(p)

    def find_first(self):
        """The lowest allocated ID, or None. O(log64 N).

        >>> ida = IDA(); ida.find_first() is None
        True
        """
        return self.find_first_range(0, IDA_MAX)

    def find_first_range(self, min, max):
        """The lowest allocated ID in ``[min, max]``, or None. O(log64 N).

        Negative ``min``: InvalidPasid; ``min > max``: None. Unlike the kernel,
        the whole range is searched, not only its first chunk.

        >>> ida = IDA(); _ = ida.alloc_min(3000); ida.find_first_range(1, 5000)
        3000
        """
        cdef int64_t lo = as_int64(min, "min")
        cdef int64_t hi = as_int64(max, "max")
        cdef int64_t p
        if lo < 0:
            raise InvalidPasid(f"negative min {lo}")
        if hi > IDA_MAX:
            hi = IDA_MAX
        if lo > hi:
            return None
        with cython.critical_section(self):
            p = space_find_used(&self.space, lo)
        return p if 0 <= p <= hi else None

    def exists(self, id):
        """True if ``id`` is allocated; never raises. O(log64 N).

        >>> IDA().exists(-1), IDA().exists("x")
        (False, False)
        """
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
        """True when no ID is allocated. O(1).

        >>> IDA().is_empty()
        True
        """
        return self.count == 0

    def destroy(self):
        """Free every ID and the memory behind them. O(allocated).

        >>> ida = IDA(); _ = ida.alloc_min(99); ida.destroy(); ida.is_empty()
        True
        """
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
