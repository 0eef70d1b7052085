# Guests: PASIDs a VMM allocates on a host for its virtual machines (SPEC §7).
# The twin of pasid/pure/guest.py, whose docstrings both show (taken at import) and
# whose module docstring has the design: a GuestSpace per VM, the VM's name owning its
# host PASIDs through a record pinned for the VM's life that points back at it
# (_Owner.guest), and the host's release unmapping a guest PASID in one place
# (owned_unlink in _owners.pxi calls guest_unmap).
#
# In C: per VM, guest -> host in pages of 1,024 made on demand (GuestMap); per host, host
# -> guest in one array (_VMTable.guest_of); a translated VM's free guest numbers in an
# ID space of its own (_idspace.pxi). Memory a change needs (a page, a node of the guest
# space) is taken before anything changes. Every operation runs in the host's phases and
# critical section; messages that name the VM or a device are built before any change.

from pasid cimport _vcmd as vcmd

cdef enum:
    PAGE_SHIFT = 10
    PAGE_SIZE = 1024
    IDENTITY = 0                 # the modes: their index in _args.VM_MODES
    TRANSLATED = 1


# ---------------------------------------------------------------- GuestMap

cdef int guestmap_init(GuestMap* m, int bits) noexcept nogil:
    """An empty map of ``2**bits`` guest PASIDs (no page yet); -1 when out of memory."""
    m.npages = ((<int64_t>1 << bits) + PAGE_SIZE - 1) >> PAGE_SHIFT
    m.pages = <int32_t**>calloc(m.npages, sizeof(int32_t*))
    return -1 if m.pages == NULL else 0


cdef void guestmap_destroy(GuestMap* m) noexcept nogil:
    cdef int64_t i
    if m.pages != NULL:
        for i in range(m.npages):
            free(m.pages[i])
        free(m.pages)
        m.pages = NULL


cdef int guestmap_reserve(GuestMap* m, int64_t g) except -1:
    """The page of ``g`` exists (MemoryError, nothing changed, when it cannot)."""
    cdef int32_t* page
    cdef int64_t i
    if m.pages[g >> PAGE_SHIFT] != NULL:
        return 0
    page = <int32_t*>malloc(PAGE_SIZE * sizeof(int32_t))
    if page == NULL:
        raise MemoryError()
    for i in range(PAGE_SIZE):
        page[i] = -1
    m.pages[g >> PAGE_SHIFT] = page
    return 0


cdef inline int64_t guestmap_get(const GuestMap* m, int64_t g) noexcept nogil:
    """The host PASID of guest PASID ``g``, or -1."""
    cdef int32_t* page = m.pages[g >> PAGE_SHIFT]
    return -1 if page == NULL else page[g & (PAGE_SIZE - 1)]


cdef inline void guestmap_set(GuestMap* m, int64_t g, int64_t h) noexcept nogil:
    """Map ``g`` (its page reserved) to ``h`` (-1: unmapped)."""
    m.pages[g >> PAGE_SHIFT][g & (PAGE_SIZE - 1)] = <int32_t>h


# ---------------------------------------------------------------- the host's VMs

@cython.final
cdef class _VMTable:
    """A host's VMs (made at its first add_vm): the twin of pure/guest.py's VMTable."""

    def __cinit__(self, int64_t size):
        cdef int64_t i
        self.vms = []
        self.assigned = {}
        self.guest_of = <int32_t*>malloc(size * sizeof(int32_t))
        if self.guest_of == NULL:
            raise MemoryError()
        for i in range(size):
            self.guest_of[i] = -1

    def __dealloc__(self):
        free(self.guest_of)


cdef inline void guest_unmap(PasidAllocator host, GuestSpace vm, int64_t h) noexcept:
    """Host PASID ``h`` of ``vm`` (on ``host``, its host) left ACTIVE (the host's
    release, critical section held): its guest PASID goes, FREE at once in a
    translated guest."""
    cdef int64_t g = vm._guest_of[h]
    if g >= 0:                                   # (else: the VM's name used as a host owner)
        guest_forget(host, vm, g, h)


cdef inline void guest_forget(PasidAllocator host, GuestSpace vm, int64_t g, int64_t h) noexcept:
    """:func:`guest_unmap` of guest PASID ``g`` (mapped to ``h``: the caller knows it)."""
    vm._guest_of[h] = -1
    vm._active -= 1
    if vm._translated:
        guestmap_set(&vm._map, g, -1)
        space_release(&vm._space, g)
    if vm._tags is not None and vm._tags[g] is not None:
        host._bury(vm._tags[g])                  # dropped in phase 3
        vm._tags[g] = None


cdef object _MAKE = object()                     # vm_make's token: GuestSpace.__cinit__


@cython.final
cdef class GuestSpace:

    def __cinit__(self, *args):
        self._map.pages = NULL
        self._space.root = NULL
        if len(args) != 1 or args[0] is not _MAKE:
            # every method reads the host and the tables vm_make set: no object without them
            raise TypeError("GuestSpace is made by PasidAllocator.add_vm")

    def __dealloc__(self):
        guestmap_destroy(&self._map)
        if self._space.root != NULL:
            space_destroy(&self._space)

    def __init__(self, *args, **kwargs):
        raise TypeError("GuestSpace is made by PasidAllocator.add_vm")

    # ------------------------------------------------------------ phase 1: prepare

    cdef inline int64_t _check_guest(self, object value) except -1:
        return self._check_guest_id(as_int64(value, "guest PASID"))

    cdef inline int64_t _check_guest_id(self, int64_t g) except -1:
        """``g``; InvalidPasid outside the guest's space (as _check_guest, from C)."""
        if not 0 <= g < (<int64_t>1 << self._bits):
            raise InvalidPasid(out_of_range(g, <int64_t>1 << self._bits))
        return g

    cdef inline int64_t _host_of(self, int64_t g) noexcept:
        """The host PASID of guest PASID ``g`` (in range), or -1. Identity keeps no
        map of its own: ``g`` is mapped while the host has it as the VM's guest PASID."""
        cdef PasidAllocator host
        if self._translated:
            return guestmap_get(&self._map, g)
        host = self._host
        if self._guest_of[g] == g and host._owned.owner_of[g] == <void*>self._record:
            return g
        return -1

    cdef inline int64_t _host_lo(self) noexcept:
        """The VM's lowest host PASID, as the host's fast path takes it: 0 for 1 when
        host PASID 0 is not FREE (the same lowest FREE PASID either way)."""
        if self._lo == 1 and (self._host._slots[0].meta & STATE_MASK) != FREE:
            return 0
        return self._lo

    cdef inline int64_t _to_host(self, int64_t g) except -2:
        """The host PASID behind guest PASID ``g`` (in range; critical section held),
        or -1; StateError for a removed VM (host_pasid's rule; the C API's guest_to_host)."""
        if self._removed:
            raise StateError(vm_removed(self._name))
        return self._host_of(g)

    cdef inline int64_t _to_guest(self, int64_t h) except -2:
        """The guest PASID of host PASID ``h`` (in the host's space; critical section
        held), or -1 unless ``h`` is one of the VM's ACTIVE host PASIDs; StateError for a
        removed VM (guest_pasid's rule; the C API's host_to_guest)."""
        cdef PasidAllocator host = self._host
        cdef int64_t g
        if self._removed:
            raise StateError(vm_removed(self._name))
        g = host._vms.guest_of[h]
        if g < 0 or not (host._slots[h].meta & HAS_OWNER) or (
                host._owned.owner_of[h] != <void*>self._record):
            return -1
        return g

    cdef int64_t _mapped(self, str what, int64_t g) except -1:
        """The host PASID behind guest PASID ``g`` (critical section held); StateError
        if none."""
        cdef int64_t h = self._to_host(g)
        if h < 0:
            raise StateError(not_active(what, g, _STATE_NAMES[self._state_in(g)]))
        return h

    # ------------------------------------------------------------ allocation

    cdef int64_t _alloc_in(self, int64_t g, object owner, object data) except -3:
        """Phase 2 of an allocation (critical section held, time settled, the tag
        table made if ``owner``, the host's data table if ``data``): guest PASID ``g``
        (-1: the lowest FREE) backed by a new host PASID; -1 when nothing is FREE,
        -2 at the quota (both counted as failures)."""
        cdef PasidAllocator host = self._host
        cdef _Owner record = self._record
        cdef int64_t h, top
        cdef bint hinted = False
        if record.quota >= 0 and record.use >= record.quota:
            host._failures += 1
            self._failures += 1
            return -2
        if self._translated:
            top = (<int64_t>1 << self._bits) - 1
            if g < 0:
                g = space_lowest(&self._space, top)          # (0 is taken: never 0)
                if g == -2:
                    self._failures += 1
                    return -1
                hinted = g >= 0
                if not hinted:
                    # the general way: the lowest FREE needs a new node
                    g = space_find_free(&self._space, 1)
            if self._map.pages[g >> PAGE_SHIFT] == NULL:
                guestmap_reserve(&self._map, g)              # MemoryError: nothing changed
            if hinted:
                # as pure/guest.py: the host's PASID first (nothing of the guest's has
                # changed if that fails), then g, in the hint's leaf: nothing to fail
                h = host._alloc_in(record, data, self._host_lo(), self._hi)
                if h < 0:
                    self._failures += 1
                    return -1
                space_take_hinted(&self._space, g)
            else:
                # g may need a node, which may fail: taken first, undone if the host fails
                if space_is_free(&self._space, g) and space_take(&self._space, g) < 0:
                    raise MemoryError()
                try:
                    h = host._alloc_in(record, data, self._host_lo(), self._hi)
                except BaseException:
                    space_release(&self._space, g)
                    raise
                if h < 0:
                    space_release(&self._space, g)
                    self._failures += 1
                    return -1
        elif g < 0:
            h = host._alloc_in(record, data, self._host_lo(), self._hi)
            if h < 0:
                self._failures += 1
                return -1
            g = h
        else:
            if space_take(&host.space, g) < 0:
                raise MemoryError()
            h = host._activate(g, record, data, host._rng)
        if self._translated:
            guestmap_set(&self._map, g, h)
        self._guest_of[h] = <int32_t>g
        if owner is not None:
            self._tags[g] = owner
        self._active += 1
        self._allocations += 1
        return g

    cdef int64_t _alloc(self, int64_t g, object owner, object data) except -1:
        cdef PasidAllocator host = self._host
        cdef double reading
        cdef int64_t got
        cdef int state
        if owner is not None and self._tags is None:
            self._tags = [None] * (<int64_t>1 << self._bits)
        if data is not None and host._data is None:
            host._data = [None] * host._size
        reading = host._reading()
        with cython.critical_section(host):
            wait_batch(host)
            if self._removed:
                raise StateError(vm_removed(self._name))
            host._settle_time(host._time(reading))
            if g >= 0:
                state = self._state_in(g)
                if state != FREE:
                    raise StateError(not_free(g, _STATE_NAMES[state]))
            got = self._alloc_in(g, owner, data)
        host._after()
        if got < 0:
            self._refused(got)
        return got

    cdef int _refused(self, int64_t got) except -1:
        """The error of an allocation refused (-2: at the quota; -1: nothing FREE)."""
        if got == -2:
            raise QuotaExceeded(at_quota(self._name, self._record.quota))
        raise PasidExhausted(self._host._exhausted(guest_no_free(self._name)))

    def alloc(self, owner=None, *, data=None):
        cdef PasidAllocator host = self._host
        cdef int64_t got = -3
        if owner is None and data is None and host._clock is None:
            # the common call (as the host's alloc()): no user code can run, one step
            with cython.critical_section(host):
                wait_batch(host)
                if not self._removed:
                    if release_due(&host._queue, host._now):
                        reclaim(host, host._now)
                    got = self._alloc_in(-1, None, None)
            host._after()
            if got >= 0:
                return got
            if got != -3:
                self._refused(got)
        return self._alloc(-1, owner, data)

    def alloc_exact(self, pasid, owner=None, *, data=None):
        return self._alloc(self._check_guest(pasid), owner, data)

    def try_alloc(self, owner=None, *, data=None):
        cdef int64_t got = self._try_alloc(owner, data)
        return got if got >= 0 else None

    cdef int64_t _try_alloc(self, object owner, object data) except -2:
        """try_alloc's phases (and the C API's guest_alloc): the guest PASID, or -1 when
        none is available (nothing FREE, or the quota: counted failures)."""
        cdef PasidAllocator host = self._host
        cdef double reading
        cdef int64_t got
        if owner is not None and self._tags is None:
            self._tags = [None] * (<int64_t>1 << self._bits)
        if data is not None and host._data is None:
            host._data = [None] * host._size
        reading = host._reading()
        with cython.critical_section(host):
            wait_batch(host)
            if self._removed:
                raise StateError(vm_removed(self._name))
            host._settle_time(host._time(reading))
            got = self._alloc_in(-1, owner, data)
        host._after()
        return got if got >= 0 else -1

    # ------------------------------------------------------------ references

    def get(self, pasid):
        cdef int64_t g = self._check_guest(pasid)
        cdef PasidAllocator host = self._host
        cdef double reading = host._reading()
        cdef int64_t h
        with cython.critical_section(host):
            wait_batch(host)
            h = self._mapped("get", g)
            host._settle_time(host._time(reading))
            host._ref_inc(h)

    cdef int _put(self, int64_t g) except -1:
        cdef PasidAllocator host = self._host
        cdef int64_t h
        cdef bint plain = False
        if host._clock is None:
            # the common call (as the host's put): no user code can run, and a guest PASID
            # with one reference, nothing bound, no data and no grace is FREE in one step
            with cython.critical_section(host):
                wait_batch(host)
                if release_due(&host._queue, host._now):
                    reclaim(host, host._now)
                h = self._host_of(g)
                plain = h >= 0 and self._put_plain(g, h)
            if plain:
                host._after()
                return 0
        return self._put_id(g)

    cdef inline bint _put_plain(self, int64_t g, int64_t h) noexcept:
        """The last reference to guest PASID ``g``, mapped to host PASID ``h``, with
        nothing bound, no data and no grace period: FREE at once, ``g`` unmapped (True).
        Anything else is left alone (False)."""
        cdef PasidAllocator host = self._host
        cdef _Owner record
        if host._slots[h].meta != (ACTIVE | HAS_OWNER) or host._grace > 0:
            return False
        record = self._record                    # h's owner: the VM's, by the maps
        owned_unlink_from(host, h, record)
        guest_forget(host, self, g, h)
        owner_untag_from(host, h, record)        # (pinned: the VM's record stays)
        host._freed_plain(h)
        space_release(&host.space, h)
        return True

    cdef int _put_id(self, int64_t g) except -1:
        """:meth:`_put` in three phases: any clock, any PASID."""
        cdef PasidAllocator host = self._host
        cdef double reading = host._reading()
        cdef double now
        cdef int64_t h
        cdef list teardown = None
        cdef int was_enabled
        with cython.critical_section(host):
            wait_batch(host)
            h = self._mapped("free", g)
            now = host._time(reading)
            host._settle_time(now)
            if host._slots[h].meta & MULTI:
                host._ref_dec(h)
            else:
                release(host, h, now)            # unmaps g (guest_unmap)
                if host._slots[h].meta & HAS_BINDINGS:
                    was_enabled = _gc_pause()
                    try:
                        teardown = teardown_of(host, h, None)
                    finally:
                        _gc_resume(was_enabled)
        host._after()
        if teardown:
            run_teardown(teardown)
        return 0

    def put(self, pasid):
        self._put(self._check_guest(pasid))

    def free(self, pasid):
        self._put(self._check_guest(pasid))

    # ------------------------------------------------------------ devices

    cdef _Device _device(self, object device):
        """Phase 1: the record of one of the VM's devices (StateError otherwise)."""
        cdef _Device info = device_record(self._host, device, False)
        if info is None or info not in self._devices:
            raise StateError(not_assigned(device, self._name))
        return info

    def bind(self, pasid, device, *, data=None):
        cdef int64_t g = self._check_guest(pasid)
        cdef _Device info = self._device(device)
        cdef PasidAllocator host = self._host
        cdef double reading = host._reading()
        cdef int64_t h
        with cython.critical_section(host):
            wait_batch(host)
            h = self._mapped("bind", g)
            if info.gone or host._vms.assigned.get(info) is not self:
                raise StateError(not_assigned(device, self._name))
            host._settle_time(host._time(reading))
            bind_in(host, h, info, data)

    def unbind(self, pasid, device):
        cdef int64_t g = self._check_guest(pasid)
        cdef _Device info = self._device(device)
        cdef PasidAllocator host = self._host
        cdef double reading = host._reading()
        cdef double now
        cdef int64_t h
        with cython.critical_section(host):
            wait_batch(host)
            h = self._mapped("unbind", g)
            now = host._time(reading)
            host._settle_time(now)
            unbind_in(host, h, info, now)
        host._after()

    # ------------------------------------------------------------ queries

    cdef int _state_in(self, int64_t g) noexcept:
        """The guest's view of ``g`` (critical section held)."""
        cdef PasidAllocator host = self._host
        cdef int state
        if self._host_of(g) >= 0:
            return ACTIVE
        if self._removed:
            return RESERVED
        if self._translated:
            return RESERVED if g == 0 else FREE
        state = host._slots[g].meta & STATE_MASK
        if (state != ACTIVE and host._slots[g].meta & HAS_OWNER
                and host._owned.owner_of[g] == <void*>self._record):
            return state                         # its own, in the host's release
        if state == FREE and self._lo <= g <= self._hi:
            return FREE
        return RESERVED                          # the host's, another VM's, or out of range

    def state(self, pasid):
        cdef int64_t g = self._check_guest(pasid)
        cdef PasidAllocator host = self._host
        cdef double reading = host._reading()
        cdef int state
        with cython.critical_section(host):
            wait_batch(host)
            host._settle_time(host._time(reading))
            state = self._state_in(g)
        return State(state)

    def host_pasid(self, pasid):
        cdef int64_t g = self._check_guest(pasid)
        with cython.critical_section(self._host):
            wait_batch(self._host)
            return self._mapped("host_pasid", g)

    def guest_pasid(self, host_pasid):
        cdef PasidAllocator host = self._host
        cdef int64_t h = host._check_id(host_pasid)
        cdef int64_t g
        with cython.critical_section(host):
            wait_batch(host)
            g = self._to_guest(h)
        if g < 0:
            raise StateError(not_guest(h, self._name))
        return g

    def owner(self, pasid):
        cdef int64_t g = self._check_guest(pasid)
        with cython.critical_section(self._host):
            wait_batch(self._host)
            self._mapped("owner", g)
            return None if self._tags is None else self._tags[g]

    def stats(self):
        cdef _Owner record = self._record
        with cython.critical_section(self._host):
            wait_batch(self._host)
            return {"active": self._active, "host_held": record.use - record.active,
                    "quota": record.quota, "allocations": self._allocations,
                    "failures": self._failures}

    # ------------------------------------------------------------ the virtual command

    cdef uint64_t _vcmd(self, uint64_t word, int encoding) except? 0xFFFFFFFFFFFFFFFF:
        """The virtual command on a word in 0 .. 2**64 - 1, in the layout of index
        ``encoding`` (ValueError for another): the response word. The C-level API's
        ``vcmd`` entry is this method itself (_capi.pxi): one call from a simulator.

        The common calls in one step, as the host's own (no callable clock: no
        user code can run): an ALLOC, and a FREE of a guest PASID that becomes
        FREE at once; anything else (a removed VM too) is :meth:`_vcmd_id`."""
        cdef PasidAllocator host = self._host
        cdef int64_t command = vcmd.vcmd_command(word, encoding)
        cdef int64_t operand, status = vcmd.VCMD_SUCCESS, result = 0, h
        if encoding != vcmd.VCMD_ENCODING_31 and encoding != vcmd.VCMD_ENCODING_33:
            # (the C-level API's caller gave it; a message built here, inline, made
            # the common calls pay for the registers its formatting needs)
            raise ValueError(capi_vcmd_encoding(encoding))
        if host._clock is not None:
            return self._vcmd_id(word, encoding)
        if command == vcmd.VCMD_ALLOC:
            with cython.critical_section(host):
                wait_batch(host)
                if self._removed:
                    result = -3
                else:
                    if release_due(&host._queue, host._now):
                        reclaim(host, host._now)
                    result = self._alloc_in(-1, None, None)
            if result == -3:
                return self._vcmd_id(word, encoding)     # StateError: the VM is removed
            if untidy(<PyObject*>host._gone, <PyObject*>host._graveyard):
                host._tidy()                     # host._after(), its test inline
            if result < 0:
                return vcmd.vcmd_respond(vcmd.VCMD_NO_PASID, 0, encoding)
            return vcmd.vcmd_respond(vcmd.VCMD_SUCCESS, result, encoding)
        if command == vcmd.VCMD_FREE:
            operand = <int64_t>(word >> vcmd.vcmd_operand_shift(encoding))
            with cython.critical_section(host):
                wait_batch(host)
                if release_due(&host._queue, host._now):
                    reclaim(host, host._now)
                h = -1
                if self._removed:
                    status = -1
                elif operand < (<int64_t>1 << self._bits):
                    h = self._host_of(operand)
                if status < 0:
                    pass
                elif h < 0:
                    status = vcmd.VCMD_INVALID_PASID
                elif not self._put_plain(operand, h):
                    status = -1
            if status < 0:
                return self._vcmd_id(word, encoding)     # nothing done: the general way
            if untidy(<PyObject*>host._gone, <PyObject*>host._graveyard):
                host._tidy()                     # host._after(), its test inline
            return vcmd.vcmd_respond(status, 0, encoding)
        return vcmd.vcmd_respond(vcmd.VCMD_UNDEFINED_COMMAND, 0, encoding)

    cdef uint64_t _vcmd_id(self, uint64_t word, int64_t encoding) except? 0xFFFFFFFFFFFFFFFF:
        """:meth:`_vcmd` in three phases: any clock, any PASID, a removed VM."""
        cdef PasidAllocator host = self._host
        cdef double reading = host._reading()
        cdef double now
        cdef int64_t command = vcmd.vcmd_command(word, encoding)
        cdef int64_t operand = 0
        cdef int64_t status = vcmd.VCMD_SUCCESS, result = 0, h
        if command == vcmd.VCMD_FREE:            # (vcmd_operand, its command known)
            operand = <int64_t>(word >> vcmd.vcmd_operand_shift(encoding))
        cdef list teardown = None
        cdef int was_enabled
        with cython.critical_section(host):
            wait_batch(host)
            if self._removed:
                raise StateError(vm_removed(self._name))
            now = host._time(reading)
            host._settle_time(now)
            if command == vcmd.VCMD_ALLOC:
                result = self._alloc_in(-1, None, None)
                if result < 0:
                    status = vcmd.VCMD_NO_PASID
                    result = 0
            elif command == vcmd.VCMD_FREE:
                h = -1
                if operand < (<int64_t>1 << self._bits):
                    h = self._host_of(operand)
                if h < 0:
                    status = vcmd.VCMD_INVALID_PASID
                elif self._put_plain(operand, h):
                    pass                         # FREE at once
                elif host._slots[h].meta & MULTI:
                    host._ref_dec(h)
                else:
                    release(host, h, now)
                    if host._slots[h].meta & HAS_BINDINGS:
                        was_enabled = _gc_pause()
                        try:
                            teardown = teardown_of(host, h, None)
                        finally:
                            _gc_resume(was_enabled)
            else:
                status = vcmd.VCMD_UNDEFINED_COMMAND
        host._after()
        if teardown:
            run_teardown(teardown)
        return vcmd.vcmd_respond(status, result, encoding)

    def vcmd(self, word, *, encoding="3.3"):
        cdef int64_t layout = _vcmd_py.LAYOUTS[_vcmd_py.check_encoding(encoding)].index
        cdef object value = _args.as_int(word, "a command word")
        if not 0 <= value < 2**64:
            if self._removed:
                raise StateError(vm_removed(self._name))
            return vcmd.vcmd_respond(vcmd.VCMD_UNDEFINED_COMMAND, 0, layout)
        return self._vcmd(<uint64_t>value, layout)

    # ------------------------------------------------------------ migration

    def export(self):
        cdef PasidAllocator host = self._host
        cdef dict handles
        cdef int64_t g, h, n, row = 0, lo, hi
        cdef int32_t record
        cdef int was_enabled
        cdef int64_t[::1] guest_view, count_view
        cdef list tag_rows = [], tag_values = [], data_rows = [], data_values = []
        cdef list bind_rows = [], bind_devices = [], bind_counts = [], value_rows = [], values = []
        handles = {(<_Device>info).handle: i for i, info in enumerate(self._devices)}
        while True:
            # the columns are made first (that may run Python code); then one pass in C
            n = self._active
            guests = np.empty(n, dtype=np.int64)
            refcounts = np.empty(n, dtype=np.int64)
            guest_view, count_view = guests, refcounts
            with cython.critical_section(host):
                wait_batch(host)
                if self._removed:
                    raise StateError(vm_removed(self._name))
                if self._active != n:
                    continue                     # changed meanwhile: again
                lo, hi = self._lo, self._hi
                if self._translated:
                    lo, hi = 1, (<int64_t>1 << self._bits) - 1
                was_enabled = _gc_pause()
                try:
                    g = lo
                    while g <= hi:
                        if self._translated and self._map.pages[g >> PAGE_SHIFT] == NULL:
                            g = ((g >> PAGE_SHIFT) + 1) << PAGE_SHIFT
                            continue
                        h = self._host_of(g)
                        if h >= 0:
                            guest_view[row] = g
                            count_view[row] = host._refcount[h] if host._slots[h].meta & MULTI else 1
                            if self._tags is not None and self._tags[g] is not None:
                                tag_rows.append(row)
                                tag_values.append(self._tags[g])
                            if host._slots[h].meta & HAS_DATA:
                                data_rows.append(row)
                                data_values.append(host._data[h])
                            if host._slots[h].meta & HAS_BINDINGS:
                                record = host._bindings.first[h]
                                while record >= 0:
                                    index = handles.get(host._bindings.recs[record].device)
                                    if index is not None:
                                        if host._bind_data[record] is not None:
                                            value_rows.append(len(bind_rows))
                                            values.append(host._bind_data[record])
                                        bind_rows.append(row)
                                        bind_devices.append(index)
                                        bind_counts.append(host._bindings.recs[record].count)
                                    record = host._bindings.recs[record].next
                            row += 1
                        g += 1
                finally:
                    _gc_resume(was_enabled)
            break
        state = {"mode": _args.VM_MODES[self._mode], "bits": self._bits,
                 "devices": [(<_Device>info).key for info in self._devices],
                 "guests": guests, "refcounts": refcounts, "tags": (tag_rows, tag_values),
                 "data": (data_rows, data_values),
                 "bindings": (bind_rows, bind_devices, bind_counts),
                 "binding_data": (value_rows, values)}
        return _vmblob.dumps(state)

    # ------------------------------------------------------------ the guest's PASIDs

    @property
    def name(self):
        return self._name

    @property
    def mode(self):
        return _args.VM_MODES[self._mode]

    @property
    def bits(self):
        return self._bits

    @property
    def host_range(self):
        return self._lo, self._hi

    @property
    def devices(self):
        return tuple((<_Device>info).key for info in self._devices)

    @property
    def removed(self):
        return bool(self._removed)

    def __len__(self):
        return self._active

    cdef list _guests(self):
        """The ACTIVE guest PASIDs, ascending (critical section held)."""
        cdef list found = []
        cdef int64_t g, lo = 1, hi = (<int64_t>1 << self._bits) - 1
        if not self._translated:
            lo, hi = self._lo, self._hi
        g = lo
        while g <= hi:
            if self._translated and self._map.pages[g >> PAGE_SHIFT] == NULL:
                g = ((g >> PAGE_SHIFT) + 1) << PAGE_SHIFT
                continue
            if self._host_of(g) >= 0:
                found.append(g)
            g += 1
        return found

    def __iter__(self):
        cdef list found
        with cython.critical_section(self._host):
            wait_batch(self._host)
            found = self._guests()
        return iter(found)

    def __contains__(self, pasid):
        cdef int64_t g
        try:
            g = _args.as_int(pasid, "guest PASID")
        except (TypeError, OverflowError):
            return False
        if not 0 <= g < (<int64_t>1 << self._bits):
            return False
        with cython.critical_section(self._host):
            return self._host_of(g) >= 0

    def __repr__(self):
        return (f"<GuestSpace {self._name!r} {_args.VM_MODES[self._mode]} bits={self._bits} "
                f"host {self._lo}..{self._hi} active={self._active}"
                f"{' removed' if self._removed else ''}>")


# ---------------------------------------------------------------- the host's side
#
# The phases of PasidAllocator.add_vm, remove_vm, vm, import_vm (the methods in
# _allocator.pxi call these). Phase 1 is pure/guest.py's (_devices_of, _layout: the
# same Python, no C to gain); phases 2 and 3 are here.

cdef list devices_of(PasidAllocator a, object devices):
    """Phase 1: the records of ``devices`` (declared, each once)."""
    cdef list records = []
    cdef _Device info
    if isinstance(devices, (str, bytes)):
        devices = (devices,)
    for device in devices:
        info = device_record(a, device, False)
        if info is None:
            raise StateError(undeclared_device(device))
        if info in records:
            raise ValueError(device_twice(device))
        records.append(info)
    return records


cdef tuple vm_layout(PasidAllocator a, object mode, object bits, object min, object max,
                     list records):
    """Phase 1: (mode, guest bits, lowest, highest host PASID) from add_vm's arguments."""
    cdef int index = _args.as_vm_mode(mode)
    cdef int narrowest = a._bits, width
    cdef int64_t lo, hi, top
    for info in records:
        if (<_Device>info).bits < narrowest:
            narrowest = (<_Device>info).bits
    width = narrowest if bits is None else _args.as_bits(bits, "guest bits")
    if width > narrowest:
        raise InvalidPasid(guest_too_wide(width, narrowest))
    lo = 0 if min is None else a._check_id(min)
    hi = a._size - 1 if max is None else a._check_id(max)
    if lo > hi:
        raise InvalidPasid(empty_range(lo, hi))
    lo = lo if lo else 1                         # PASID 0 is no guest's (RID_PASID in VT-d)
    top = (<int64_t>1 << (width if index == IDENTITY else narrowest)) - 1
    hi = hi if hi < top else top
    if lo > hi:
        raise InvalidPasid(empty_range(lo, hi))
    return index, width, lo, hi


cdef GuestSpace vm_create(PasidAllocator a, object vm, int index, int width, int64_t lo,
                          int64_t hi, int64_t quota, list records, _Owner record,
                          _VMTable table):
    """Phase 2 of add_vm and import_vm (critical section held): the checks, then the VM
    (its memory made before: ``table`` is the host's, or a new one for a host that had
    none then; another thread's add_vm may have given it one since: that one stands)."""
    if a._vms is not None:
        table = a._vms
    if record.guest is not None:
        raise StateError(vm_exists(vm))
    if record.use:
        raise StateError(owner_busy(vm, record.use))
    for info in records:
        if (<_Device>info).gone:
            raise StateError(undeclared_device((<_Device>info).key))
        if info in table.assigned:
            raise StateError(device_taken((<_Device>info).key,
                                          (<GuestSpace>table.assigned[info])._name))
    return vm_make(a, vm, index, width, lo, hi, quota, records, record, table)


cdef GuestSpace vm_make(PasidAllocator a, object vm, int index, int width, int64_t lo,
                        int64_t hi, int64_t quota, list records, _Owner record,
                        _VMTable table):
    """The VM made and linked, checked before (critical section held): by vm_create,
    and by a snapshot's load (_export.pxi), whose check stands for add_vm's."""
    cdef GuestSpace space = GuestSpace.__new__(GuestSpace, _MAKE)
    space._host = a
    space._name = vm
    space._mode = index
    space._translated = index == TRANSLATED
    space._bits = width
    space._lo, space._hi = lo, hi
    space._record = record
    space._devices = records
    space._guest_of = table.guest_of             # (the host keeps its table for good)
    if space._translated:
        if guestmap_init(&space._map, width) < 0:
            raise MemoryError()
        if space_init(&space._space, <int64_t>1 << width) < 0 or space_take(&space._space, 0) < 0:
            raise MemoryError()
    a._vms = table
    table.vms.append(space)
    for info in records:
        table.assigned[info] = space
    record.guest = space
    if quota >= 0:
        record.quota = quota
        a._quota[record] = quota
    return space


cdef GuestSpace add_vm(PasidAllocator a, object vm, object mode, object bits, object quota,
                       object min, object max, object devices):
    """The phases of PasidAllocator.add_vm."""
    if vm is None:
        raise ValueError(VM_NONE)
    cdef list records = devices_of(a, devices)
    cdef tuple layout = vm_layout(a, mode, bits, min, max, records)
    cdef int64_t limit = -1 if quota is None else _args.as_quota(quota)
    cdef _VMTable table = a._vms if a._vms is not None else _VMTable(a._size)
    cdef _Owner record = owner_record(a, vm)     # pinned: the VM keeps the pin
    cdef GuestSpace space = None
    try:
        with cython.critical_section(a):
            wait_batch(a)
            space = vm_create(a, vm, layout[0], layout[1], layout[2], layout[3], limit,
                              records, record, table)
    finally:
        if space is None:
            owner_unpin(a, record)
    a._after()
    return space


cdef GuestSpace find_vm(PasidAllocator a, object vm):
    """Phase 1: the GuestSpace named ``vm`` (StateError if there is none)."""
    cdef _Owner record = owner_lookup(a, vm)
    if record is None or record.guest is None:
        raise StateError(unknown_vm(vm))
    return <GuestSpace>record.guest


cdef list remove_vm(PasidAllocator a, object vm):
    """The phases of PasidAllocator.remove_vm."""
    cdef GuestSpace space = find_vm(a, vm)
    cdef _Owner record = space._record
    cdef list released, teardown = None
    cdef double reading = a._reading(), now
    cdef int was_enabled
    with cython.critical_section(a):
        wait_batch(a)
        if space._removed:
            raise StateError(unknown_vm(vm))
        now = a._time(reading)
        a._settle_time(now)
        was_enabled = _gc_pause()
        try:
            released = exit_in(a, record, now)   # unmaps each guest PASID
            for p in released:
                teardown = teardown_of(a, p, teardown)
            a._vms.vms.remove(space)
            for info in space._devices:
                if a._vms.assigned.get(info) is space:
                    del a._vms.assigned[info]
            a._quota.pop(record, None)
        finally:
            _gc_resume(was_enabled)
        record.quota = -1
        record.guest = None
        space._removed = 1
    owner_unpin(a, record)                       # the VM's pin: idle now, it is dropped
    a._after()
    if teardown:
        run_teardown(teardown)
    return released


cdef GuestSpace import_vm(PasidAllocator a, object blob, object vm, object mode, object bits,
                          object quota, object min, object max, object devices):
    """The phases of PasidAllocator.import_vm: all or nothing."""
    if vm is None:
        raise ValueError(VM_NONE)
    cdef dict state = _vmblob.loads(blob)
    cdef list records = devices_of(a, state["devices"] if devices is None else devices)
    if len(records) < len(state["devices"]):
        raise StateError(devices_missing(len(state["devices"]), len(records)))
    cdef tuple layout = vm_layout(a, state["mode"] if mode is None else mode,
                                  state["bits"] if bits is None else bits, min, max, records)
    cdef int index = layout[0], width = layout[1]
    cdef int64_t lo = layout[2], hi = layout[3]
    cdef int64_t limit = -1 if quota is None else _args.as_quota(quota)
    cdef const int64_t[::1] guests = state["guests"]
    cdef list conflicts = []
    cdef int64_t n = guests.shape[0], i
    if n and guests[n - 1] >> width:
        raise InvalidPasid(guest_number_too_wide(guests[n - 1], width))
    if index == IDENTITY and n and (guests[0] < lo or guests[n - 1] > hi):
        outside = [g for g in state["guests"].tolist() if not lo <= g <= hi]
        raise InvalidPasid(import_outside(outside, lo, hi))
    cdef _VMTable table = a._vms if a._vms is not None else _VMTable(a._size)
    cdef _Owner record = owner_record(a, vm)     # pinned: the VM keeps the pin
    cdef GuestSpace space = None
    cdef double reading = a._reading()
    try:
        with cython.critical_section(a):
            wait_batch(a)
            a._settle_time(a._time(reading))
            conflicts = import_check(a, guests, index, lo, hi, limit, record)
            if not conflicts:
                space = vm_create(a, vm, index, width, lo, hi, limit, records, record, table)
                try:
                    import_fill(a, space, guests, state, records)
                except BaseException:
                    vm_undo(a, space)
                    space = None
                    raise
    finally:
        if space is None:
            owner_unpin(a, record)
    a._after()
    if conflicts:
        raise MigrationConflict(migration_conflict(vm, conflicts), conflicts)
    return space


cdef list import_check(PasidAllocator a, const int64_t[::1] guests, int index, int64_t lo,
                       int64_t hi, int64_t limit, _Owner record):
    """Phase 2 of import_vm, before anything changes: every reason to refuse; an identity
    import's PASIDs that are not FREE here (MigrationConflict) are returned."""
    cdef int64_t quota = limit if limit >= 0 else record.quota
    cdef int64_t g, i, n = guests.shape[0]
    cdef list conflicts = []
    if 0 <= quota < n:
        raise QuotaExceeded(at_quota(record.key, quota))
    if index == TRANSLATED:
        if space_rank(&a.space, hi + 1) - space_rank(&a.space, lo) < n:
            raise PasidExhausted(import_short(n, lo, hi))
        return conflicts
    for i in range(n):
        g = guests[i]
        if (a._slots[g].meta & STATE_MASK) != FREE:
            conflicts.append(g)
    if not conflicts:
        for i in range(n):
            if a._generation_full(guests[i]):
                raise OverflowError(generation_limit(guests[i]))
    return conflicts


cdef int import_fill(PasidAllocator a, GuestSpace space, const int64_t[::1] guests, dict state,
                     list records) except -1:
    """Phase 2 of import_vm, checked: the host PASIDs, then their tables. Memory is
    made first; a host PASID at the generation limit (translated) undoes everything
    (OverflowError)."""
    cdef _Owner record = space._record
    cdef uint64_t rng = a._rng
    cdef int64_t cursor = a._cursor, high_water = a._high_water
    cdef int64_t g, h, i, done = 0, n = guests.shape[0]
    cdef const int64_t[::1] refcounts = state["refcounts"]
    cdef const int64_t[::1] rows = state["bindings"][0]
    cdef const int64_t[::1] devices = state["bindings"][1]
    cdef const int64_t[::1] counts = state["bindings"][2]
    cdef const int64_t[::1] tag_rows = state["tags"][0]
    cdef const int64_t[::1] data_rows = state["data"][0]
    cdef list tags = state["tags"][1], data = state["data"][1]
    cdef int64_t* hosts = <int64_t*>malloc((n if n else 1) * sizeof(int64_t))
    cdef list bind_values
    cdef _Device info
    if hosts == NULL:
        raise MemoryError()
    try:
        # every object the change stores is made before it begins
        if data and a._data is None:
            a._data = [None] * a._size
        if tags and space._tags is None:
            space._tags = [None] * (<int64_t>1 << space._bits)
        bind_values = [None] * rows.shape[0]
        for i, value in zip(state["binding_data"][0].tolist(), state["binding_data"][1]):
            bind_values[i] = value
        if space._translated:
            for i in range(n):
                guestmap_reserve(&space._map, guests[i])
                if space_take(&space._space, guests[i]) < 0:
                    raise MemoryError()          # (the caller undoes the VM)
        binds_room(a, rows.shape[0])
        try:
            for i in range(n):
                if space._translated:
                    h = a._alloc_in(record, None, space._lo, space._hi)
                else:
                    h = guests[i]
                    if space_take(&a.space, h) < 0:
                        raise MemoryError()
                    a._activate(h, record, None, a._rng)
                hosts[i] = h
                done += 1
        except BaseException:
            for i in range(done - 1, -1, -1):
                unactivate(a, hosts[i], record)
            a._rng, a._cursor, a._high_water = rng, cursor, high_water
            raise
        for i in range(n):
            g, h = guests[i], hosts[i]
            if space._translated:
                guestmap_set(&space._map, g, h)
            a._vms.guest_of[h] = <int32_t>g
            if refcounts[i] > 1:
                a._refcount[h] = <uint32_t>refcounts[i]
                a._slots[h].meta |= MULTI
        for i in range(tag_rows.shape[0]):
            space._tags[guests[tag_rows[i]]] = tags[i]
        for i in range(data_rows.shape[0]):
            a._data[hosts[data_rows[i]]] = data[i]
            a._slots[hosts[data_rows[i]]].meta |= HAS_DATA
        for i in range(rows.shape[0]):
            info = <_Device>records[devices[i]]
            bind_link(a, hosts[rows[i]], info, bind_values[i], <uint32_t>counts[i])
    finally:
        free(hosts)
    space._active = n
    space._allocations = n
    return 0


cdef void vm_undo(PasidAllocator a, GuestSpace space) noexcept:
    """Take back vm_create (critical section held)."""
    a._vms.vms.remove(space)
    for info in space._devices:
        a._vms.assigned.pop(info, None)
    cdef _Owner record = space._record
    a._quota.pop(record, None)
    record.quota = -1
    record.guest = None
    space._removed = 1


cdef void unactivate(PasidAllocator a, int64_t p, _Owner owner) noexcept:
    """Undo an allocation of import_fill (its last first): ``p`` FREE again, untagged,
    its generation back; the fifo queue gets it back at its head."""
    owned_unlink(a, p)                           # (no guest PASID is mapped yet)
    a._owned.owner_of[p] = NULL
    owner.use -= 1
    space_release(&a.space, p)
    if a._fifo.prev != NULL:
        fifo_push_front(&a._fifo, p)
    a._slots[p].meta = FREE
    a._generation_dec(p)
    a._counts[FREE] += 1
    a._counts[ACTIVE] -= 1
    a._allocations -= 1
