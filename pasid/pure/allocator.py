"""The pure-Python PasidAllocator: the same behaviour, errors and snapshots as the compiled core.

The twin of ``pasid/_allocator.pxi``, in the same order and with the same
names, so a reader moves between them. The ID space (``idspace.IdSpace``) and
the strategies decide *which* FREE ID an allocation gets; the lifecycle tables
(state, refcount, generation and release time per PASID) and its components
decide *when* an ID is FREE again: the release queue (``release.py``), owners
(``owners.py``), bindings and devices (``bindings.py``), batches
(``batch.py``), snapshots (``export.py``), the invariant check (``check.py``).
The docstrings here are the reference both backends show (the compiled
classes take them at import).

Every operation runs in the core's three phases, so no user code (a callable
clock, an owner's or a device's ``__hash__``/``__eq__``, a callback) runs
between a check and the mutation it guards:

1. prepare, without the lock: convert the arguments (``pasid._args``, the
   rules both backends share), read a callable clock once, find the owner's
   and the device's records and pin the owner's. The owner and device tables
   change only under the registry lock, which refuses a change re-entered
   from the same thread.
2. act, under the lock (a plain lock: nothing in this phase can call back):
   check the state, change it. The tables touched here are keyed by PASIDs,
   device handles and records (by identity).
3. report: build the result and the teardown callbacks, unpin the owner's
   record (dropped if it holds nothing), run the callbacks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, SupportsIndex

import numpy as np
import numpy.typing as npt

from pasid import _args, _fork, _messages, _snapshot
from pasid._callbacks import Teardown, run_teardown
from pasid._errors import InvalidPasid, PasidExhausted, QuotaExceeded, StateError
from pasid._handle import PasidHandle
from pasid._rng import SplitMix64
from pasid._state import ACTIVE, DRAINING, FREE, QUARANTINED, RESERVED, State
from pasid.pure.batch import batch_fill, free_many_in
from pasid.pure.bindings import (_Device, _Later, bind_in, device_record, device_remove,
                                 device_settings, unbind_in)
from pasid.pure.check import check_allocator
from pasid.pure.export import export_state, load_state
from pasid.pure.fifo import FifoQueue
from pasid.pure.guest import VMHost, VMTable
from pasid.pure.idspace import IdSpace
from pasid.pure.owners import (_Owner, drop_gone_owners, owner_lookup, owner_pin, owner_record,
                               owner_tag, owner_unpin, over_quota)
from pasid.pure.release import ReleaseQueue, make_free, reclaim, release, teardown_of

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["PasidAllocator"]

STRATEGIES = _args.STRATEGIES
_STATE_NAMES = _args.STATE_NAMES
COUNT_MAX = _args.COUNT_MAX


class PasidAllocator(VMHost):
    """PASIDs with the lifecycle IOMMU drivers need (pure-Python backend).

    See :class:`pasid.PasidAllocator` for the contract; this class implements
    it with the same behaviour, errors and snapshot bytes.

    >>> from pasid.pure import PasidAllocator
    >>> a = PasidAllocator(bits=8, grace=10)
    >>> p = a.alloc(owner="vm0")
    >>> p, a.state(p).name
    (1, 'ACTIVE')
    >>> a.free(p)
    >>> a.state(p).name, a.next_release_time()
    ('QUARANTINED', 10.0)
    >>> a.advance(by=10), a.state(p).name
    (1, 'FREE')
    """

    def __init__(self, bits: SupportsIndex = 20, *,
                 reserved: Iterable[SupportsIndex | tuple[SupportsIndex, SupportsIndex]
                                    | range] = (0,),
                 strategy: str = "lowest", grace: float = 0,
                 clock: Callable[[], float] | None = None,
                 seed: SupportsIndex | None = None) -> None:
        # the argument rules of both backends: pasid/_args.py
        nbits = _args.as_bits(bits)
        strategy_index = _args.as_strategy(strategy)
        grace_time = _args.as_grace(grace)
        _args.check_callable(clock, "clock", "a zero-argument callable")
        seed_bits = _args.as_seed(seed)
        size = 1 << nbits
        ranges = _args.parse_reserved(reserved, size)

        self._bits = nbits
        self._size = size
        self._strategy = STRATEGIES[strategy_index]
        self._grace = grace_time
        self._clock = clock
        self._now = 0.0              # the logical clock; with a callable one, its highest reading
        self._rng = SplitMix64(seed_bits)
        self._cursor = 0
        # the ID space and the per-PASID tables
        self._space = IdSpace(size)
        self._state = bytearray(size)
        self._refcount = [0] * size
        self._generation = [0] * size
        self._hold: dict[int, float] = {}            # PASID -> release_at so far
        self._owner_of: dict[int, _Owner] = {}
        self._data: dict[int, Any] = {}
        # PASID -> {device handle: [count, data]} in bind order
        self._bindings: dict[int, dict[int, list[Any]]] = {}
        self._fifo = FifoQueue(size, range(size)) if self._strategy == "fifo" else None
        # the release queue: a heap of (release_at, PASID), one entry per QUARANTINED
        self._queue = ReleaseQueue()
        # owners and devices
        self._owners: dict[Hashable, _Owner] = {}
        # owner record -> quota, in the order quotas were set (keyed by record, by
        # identity: changing it runs no user code)
        self._quota: dict[_Owner, int] = {}
        self._devices: dict[Hashable, _Device] = {}
        self._device_list: list[_Device | None] = []   # handle -> device (None once removed)
        self._vms: VMTable | None = None               # its VMs (pasid/pure/guest.py)
        self._gone: list[_Owner] = []                  # records to drop after the operation
        self._last: _Owner | None = None               # the last record named: kept idle
        self._graveyard: list[object] = []             # user objects to drop after it
        self._lock = threading.Lock()
        self._registry = threading.Lock()
        self._registry_thread = 0
        # counters
        self._counts = [size, 0, 0, 0, 0]
        self._allocations = 0
        self._releases = 0
        self._reclaimed = 0
        self._failures = 0
        self._high_water = 0

        for lo, hi in ranges:
            for p in range(lo, hi + 1):
                if self._state[p] == FREE:
                    self._take_state(p, RESERVED)
        _fork.register(self)

    # ------------------------------------------------------------ phase 1: prepare

    def _check_id(self, value: Any) -> int:
        p = _args.as_int(value, "PASID")
        if not 0 <= p < self._size:
            raise InvalidPasid(_messages.out_of_range(value, self._size))
        return p

    def _bounds(self, min: SupportsIndex | None, max: SupportsIndex | None) -> tuple[int, int]:
        lo = 0 if min is None else self._check_id(min)
        hi = self._size - 1 if max is None else self._check_id(max)
        if lo > hi:
            raise InvalidPasid(_messages.empty_range(lo, hi))
        return lo, hi

    def _reading(self) -> float:
        """A callable clock's reading (read once per operation, before anything is
        checked), or the logical clock's value."""
        if self._clock is None:
            return self._now
        return _args.as_time(self._clock(), "clock()")

    def _refuse_reentry(self) -> None:
        """RuntimeError if this thread holds the registry lock: a __hash__/__eq__
        called back to change the owner or device tables while they change."""
        if self._registry_thread == threading.get_ident():
            raise RuntimeError(
                _messages.REENTRY)

    def _enter_registry(self) -> None:
        """Take the registry lock; refuse a change re-entered from the thread holding it."""
        self._refuse_reentry()
        self._registry.acquire()
        self._registry_thread = threading.get_ident()

    def _leave_registry(self) -> None:
        self._registry_thread = 0
        self._registry.release()

    def _after(self) -> None:
        """Phase 3 of a change: drop the user objects it let go (data, a binding's data)
        and the owner records it left idle. Finalizers and __hash__/__eq__ run here,
        with the lock free; what the change did stands whatever they raise."""
        if self._graveyard:
            with self._lock:
                dropped, self._graveyard = self._graveyard, []
            del dropped
        if self._gone:
            drop_gone_owners(self)

    # fork() (pasid/_fork.py): the lock is held across the fork, so the child gets the
    # tables whole; phase 2 runs no user code, so waiting for it never waits on the program

    def _fork_prepare(self) -> None:
        """Before a fork: wait for the change in progress, keep new ones out."""
        self._lock.acquire()

    def _fork_parent(self) -> None:
        """After a fork, in the parent."""
        self._lock.release()

    def _fork_child(self) -> None:
        """After a fork, in the child: the only thread left is this one. A registry
        lock another thread held is replaced, and a device it was declaring (in
        the handle table, not yet in the device table) is dropped."""
        self._lock.release()
        # (a thread may have taken the lock and not yet the GIL back: it is not
        # 'locked()' yet, and still it is held; only this thread's own hold is known)
        if self._registry_thread != threading.get_ident():
            self._registry = threading.Lock()
            self._registry_thread = 0
            declared = {id(info) for info in self._devices.values()}
            for handle, info in enumerate(self._device_list):
                if info is not None and id(info) not in declared:
                    info.gone = True
                    self._device_list[handle] = None

    def _exhausted(self, asked: str) -> str:
        """The message of a refused allocation: with how many PASIDs are only waiting
        (DRAINING, QUARANTINED) and the next release time (pasid._args)."""
        with self._lock:
            draining, quarantined = self._counts[DRAINING], self._counts[QUARANTINED]
            next_release = self._queue.next()
        return _args.exhausted_message(asked, draining, quarantined, next_release)

    # ------------------------------------------------------------ phase 2: act

    def _time(self, reading: float) -> float:
        """The operation's time. A callable clock's reading never moves the allocator back."""
        if self._clock is not None and reading > self._now:
            self._now = reading
        return self._now

    def _settle_time(self, now: float) -> None:
        """Reclaim what has expired by ``now``: every operation sees the allocator as of now."""
        if self._queue.due(now):
            reclaim(self, now)

    def _take_state(self, p: int, state: int) -> None:
        """A FREE PASID leaves the FREE set."""
        self._space.take(p)
        if self._fifo is not None:
            self._fifo.remove(p)
        counts = self._counts
        counts[FREE] -= 1
        counts[state] += 1
        self._state[p] = state

    def _ref_inc(self, p: int) -> None:
        """One more reference to an ACTIVE PASID; OverflowError at the limit, nothing changed."""
        if self._refcount[p] == COUNT_MAX:
            raise OverflowError(_messages.reference_limit(p))
        self._refcount[p] += 1

    def _choose(self, lo: int, hi: int) -> int:
        """The FREE ID the strategy gives in [lo, hi], or -1. Moves nothing but the generator."""
        strategy = self._strategy
        space = self._space
        if strategy == "lowest":
            return space.find_free(lo, hi)
        if strategy == "cyclic":
            start = self._cursor
            if lo <= start <= hi:
                p = space.find_free(start, hi)
                if p >= 0:
                    return p
            return space.find_free(lo, hi)
        fifo = self._fifo
        if fifo is not None:        # the fifo strategy: its queue exists only then
            return fifo.first(lo, hi)
        count = space.count_free(lo, hi)
        if not count:
            return -1
        return space.select(space.rank(lo) + self._rng.below(count))

    def _alloc_in(self, owner: _Owner | None, data: object, lo: int, hi: int) -> int:
        """An allocation in a checked range, the owner's record current, quota passed,
        time settled: the PASID, or -1 (failures += 1) when nothing there is FREE."""
        rng = self._rng.state
        p = self._choose(lo, hi)
        if p < 0:
            self._failures += 1
            return -1
        if self._generation[p] == COUNT_MAX:
            self._rng.state = rng
            raise OverflowError(_messages.generation_limit(p))
        self._activate(p, owner, data)
        if self._counts[ACTIVE] > self._high_water:
            self._high_water = self._counts[ACTIVE]
        return p

    def _activate(self, p: int, owner: _Owner | None, data: object) -> None:
        """The tables follow ``p``, FREE and chosen for an allocation: ACTIVE with one
        reference, generation + 1, counted (the high water is the caller's)."""
        self._take_state(p, ACTIVE)
        self._refcount[p] = 1
        if data is not None:
            self._data[p] = data
        self._generation[p] += 1
        if owner is not None:
            owner_tag(self, p, owner)
        self._allocations += 1
        if self._strategy == "cyclic":
            self._cursor = p + 1

    def _alloc_checked(self, owner: Hashable | None, data: object, lo: int, hi: int,
                       quota_raises: bool) -> tuple[int, int]:
        """The three phases of an allocation in ``lo..hi`` (checked): (the PASID, its
        generation), or -1 when nothing is FREE there (or the owner is at its quota
        and not ``quota_raises``); QuotaExceeded when it is and ``quota_raises``."""
        record: _Owner | None = None
        p, generation, over = -1, 0, False
        reading = self._reading()
        if owner is not None:
            record = owner_record(self, owner)         # pinned: current until unpinned
        try:
            with self._lock:
                self._settle_time(self._time(reading))
                over = over_quota(record, 1)
                if over:
                    self._failures += 1
                else:
                    p = self._alloc_in(record, data, lo, hi)
                    if p >= 0:
                        generation = self._generation[p]
        finally:
            if record is not None:
                owner_unpin(self, record)
        if self._gone or self._graveyard:
            self._after()
        if over and quota_raises:
            assert record is not None
            raise QuotaExceeded(_messages.at_quota(owner, record.quota))
        return p, generation

    # ------------------------------------------------------------ allocation

    def alloc(self, owner: Hashable | None = None, *, data: object = None,
              min: SupportsIndex | None = None, max: SupportsIndex | None = None) -> int:
        """Allocate a PASID by the strategy: ACTIVE, refcount 1, generation + 1. O(log64 N).

        ``owner`` is a tag (hashable; None for a PASID without a process);
        ``data`` is kept with the PASID. ``min``/``max`` bound the choice
        (inclusive). Raises PasidExhausted when nothing in range is FREE,
        QuotaExceeded past the owner's quota, InvalidPasid for a bound outside
        the space or ``min > max``.

        >>> a = PasidAllocator(bits=4)
        >>> a.alloc(), a.alloc(min=8), a.alloc(owner="proc", data={"asid": 7})
        (1, 8, 2)
        """
        lo, hi = self._bounds(min, max)
        p, _ = self._alloc_checked(owner, data, lo, hi, True)
        if p < 0:
            raise PasidExhausted(self._exhausted(_messages.no_free(lo, hi)))
        return p

    def try_alloc(self, owner: Hashable | None = None, *, data: object = None,
                  min: SupportsIndex | None = None,
                  max: SupportsIndex | None = None) -> int | None:
        """Like :meth:`alloc`, but None where alloc raises PasidExhausted (quota included). O(log64 N).

        >>> a = PasidAllocator(bits=1); a.try_alloc(), a.try_alloc()
        (1, None)
        """
        lo, hi = self._bounds(min, max)
        p, _ = self._alloc_checked(owner, data, lo, hi, False)
        return p if p >= 0 else None

    def alloc_exact(self, pasid: SupportsIndex, owner: Hashable | None = None, *,
                    data: object = None) -> int:
        """Allocate exactly ``pasid``. O(log64 N).

        StateError unless it is FREE; the quota applies; the cyclic cursor
        does not move.

        >>> a = PasidAllocator(bits=8); a.alloc_exact(42), a.state(42).name
        (42, 'ACTIVE')
        """
        p = self._check_id(pasid)
        record: _Owner | None = None
        over, state = False, FREE
        reading = self._reading()
        if owner is not None:
            record = owner_record(self, owner)         # pinned: current until unpinned
        try:
            with self._lock:
                self._settle_time(self._time(reading))
                state = self._state[p]
                if state == FREE and self._generation[p] == COUNT_MAX:
                    raise OverflowError(
                        _messages.generation_limit(p))
                if state == FREE:
                    over = over_quota(record, 1)
                    if over:
                        self._failures += 1
                    else:
                        self._take_state(p, ACTIVE)
                        self._refcount[p] = 1
                        if data is not None:
                            self._data[p] = data
                        self._generation[p] += 1
                        if record is not None:
                            owner_tag(self, p, record)
                        self._allocations += 1
                        if self._counts[ACTIVE] > self._high_water:
                            self._high_water = self._counts[ACTIVE]
        finally:
            if record is not None:
                owner_unpin(self, record)
        if self._gone or self._graveyard:
            self._after()
        if state != FREE:
            raise StateError(_messages.not_free(p, _STATE_NAMES[state]))
        if over:
            assert record is not None
            raise QuotaExceeded(_messages.at_quota(owner, record.quota))
        return p

    def open(self, owner: Hashable | None = None, *, data: object = None,
             min: SupportsIndex | None = None, max: SupportsIndex | None = None) -> PasidHandle:
        """Allocate like :meth:`alloc` and wrap the reference in a :class:`~pasid.PasidHandle`. O(log64 N).

        >>> a = PasidAllocator(bits=8)
        >>> with a.open() as h:
        ...     h.pasid, h.valid
        (1, True)
        """
        lo, hi = self._bounds(min, max)
        p, generation = self._alloc_checked(owner, data, lo, hi, True)
        if p < 0:
            raise PasidExhausted(self._exhausted(_messages.no_free(lo, hi)))
        return PasidHandle(self, p, generation)

    def alloc_many(self, n: SupportsIndex, owner: Hashable | None = None, *,
                   data: object = None) -> npt.NDArray[np.uint32]:
        """``n`` PASIDs as a uint32 array: the same IDs as ``n`` calls of :meth:`alloc`.

        All or nothing: PasidExhausted if fewer than ``n`` are FREE,
        QuotaExceeded past the quota; ``n < 0``: ValueError. O(n + log64 N) for
        ``lowest`` (the compiled core runs the loop in C, from 65,536 IDs on
        without the GIL).

        >>> PasidAllocator(bits=8).alloc_many(4)
        array([1, 2, 3, 4], dtype=uint32)
        """
        asked = _args.as_count(n, "n")
        count = min(asked, self._size + 1)      # more than can be FREE: refused below
        record: _Owner | None = None
        over, short, free_ids = False, False, 0
        out = np.empty(count, dtype=np.uint32)
        reading = self._reading()
        if owner is not None:
            record = owner_record(self, owner)         # pinned: current until unpinned
        try:
            with self._lock:
                self._settle_time(self._time(reading))
                over = over_quota(record, count)
                short = count > self._counts[FREE]
                free_ids = self._counts[FREE]
                if over or short:
                    self._failures += 1
                else:
                    batch_fill(self, out, record, data)
        finally:
            if record is not None:
                owner_unpin(self, record)
        if self._gone or self._graveyard:
            self._after()
        if short:
            raise PasidExhausted(self._exhausted(_messages.too_few_free(asked, free_ids)))
        if over:
            assert record is not None
            raise QuotaExceeded(_messages.at_quota(owner, record.quota))
        return out

    # ------------------------------------------------------------ references

    def get(self, pasid: SupportsIndex) -> None:
        """Take one more reference to an ACTIVE PASID (StateError otherwise). O(1).

        OverflowError, nothing changed, at 2**32 - 1 references.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.get(p); a.refcount(p)
        2
        """
        p = self._check_id(pasid)
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            if self._state[p] != ACTIVE:
                raise StateError(_messages.not_active("get", p, _STATE_NAMES[self._state[p]]))
            self._ref_inc(p)

    def _put_id(self, p: int, generation: int) -> int:
        """Drop one reference to ``p``; its state after. ``generation >= 0``: only if
        ``p`` is ACTIVE in that generation (a handle's close); -2 when not, nothing done."""
        reading = self._reading()
        teardown: Teardown = []
        with self._lock:
            now = self._time(reading)
            self._settle_time(now)
            state = self._state[p]
            if generation >= 0 and (state != ACTIVE or self._generation[p] != generation):
                return -2
            if state != ACTIVE:
                raise StateError(_messages.not_active("free", p, _STATE_NAMES[state]))
            if self._refcount[p] > 1:
                self._refcount[p] -= 1
            else:
                release(self, p, now)
                teardown_of(self, p, teardown)
            state = self._state[p]
        if self._gone or self._graveyard:
            self._after()
        if teardown:
            run_teardown(teardown)
        return state

    def put(self, pasid: SupportsIndex) -> None:
        """Drop one reference to an ACTIVE PASID; the last put releases it. O(log64 N).

        Released, it is DRAINING while a device is bound, else QUARANTINED
        until ``release_at``, else FREE; bound devices' ``on_teardown`` run
        after the change. StateError unless ACTIVE (a double free).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.put(p); a.state(p).name
        'FREE'
        """
        self._put_id(self._check_id(pasid), -1)

    def free(self, pasid: SupportsIndex) -> None:
        """The same as :meth:`put`: drop one reference; the last releases. O(log64 N).

        >>> a = PasidAllocator(bits=8); a.free(a.alloc()); len(a)
        0
        """
        self._put_id(self._check_id(pasid), -1)

    def _put_if(self, pasid: SupportsIndex, generation: SupportsIndex) -> bool:
        """Put ``pasid`` if it is ACTIVE in ``generation`` (a handle's close); True if it did."""
        return self._put_id(self._check_id(pasid), _args.as_int(generation, "generation")) != -2

    def _get_if(self, pasid: SupportsIndex, generation: SupportsIndex) -> bool:
        """Get ``pasid`` if it is ACTIVE in ``generation`` (a handle's dup); True if it did."""
        p = self._check_id(pasid)
        expected = _args.as_int(generation, "generation")
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            if self._state[p] != ACTIVE or self._generation[p] != expected:
                return False
            self._ref_inc(p)
        return True

    def free_many(self, ids: Sequence[SupportsIndex] | npt.NDArray[np.integer[Any]]) -> None:
        """As successive :meth:`free` calls over ``ids``, all or nothing. O(len(ids) log64 N).

        A duplicate is a double free unless the refcount allows it; PASIDs are
        released in the order successive calls would release them.

        >>> a = PasidAllocator(bits=8); a.free_many(a.alloc_many(3)); len(a)
        0
        """
        free_many_in(self, _args.id_array(ids, self._size).tolist())   # a private copy

    # ------------------------------------------------------------ reservation

    def _range(self, lo: SupportsIndex, hi: SupportsIndex | None) -> tuple[int, int]:
        first = self._check_id(lo)
        last = first if hi is None else self._check_id(hi)
        if first > last:
            raise InvalidPasid(_messages.empty_range(first, last))
        return first, last

    def reserve(self, lo: SupportsIndex, hi: SupportsIndex | None = None) -> None:
        """FREE IDs ``lo..hi`` (inclusive) become RESERVED, all or none. O(range log64 N).

        StateError names the first ID that is not FREE; ``lo > hi``: InvalidPasid.

        >>> a = PasidAllocator(bits=8); a.reserve(1, 3); a.alloc()
        4
        """
        first, last = self._range(lo, hi)
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            state = self._state
            for p in range(first, last + 1):
                if state[p] != FREE:
                    raise StateError(_messages.cannot_reserve(p, _STATE_NAMES[state[p]]))
            for p in range(first, last + 1):
                self._take_state(p, RESERVED)

    def unreserve(self, lo: SupportsIndex, hi: SupportsIndex | None = None) -> None:
        """RESERVED IDs ``lo..hi`` (inclusive) become FREE, all or none. O(range log64 N).

        >>> a = PasidAllocator(bits=8); a.unreserve(0); a.alloc()
        0
        """
        first, last = self._range(lo, hi)
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            state = self._state
            for p in range(first, last + 1):
                if state[p] != RESERVED:
                    raise StateError(_messages.cannot_unreserve(p, _STATE_NAMES[state[p]]))
            for p in range(first, last + 1):
                make_free(self, p)

    # ------------------------------------------------------------ devices and bindings

    def add_device(self, device: Hashable, *, bits: SupportsIndex | _args.Unset = _args.UNSET,
                   drain: float | _args.Unset = _args.UNSET,
                   on_teardown: Callable[[int], object] | None | _args.Unset = _args.UNSET
                   ) -> int:
        """Declare ``device`` or update its settings; returns its handle. O(devices bound).

        ``bits``: the device's PASID width (1..20, default 20); ``drain``: its
        quarantine time after it unbinds (default 0); ``on_teardown(pasid)``:
        called when a PASID bound to it is released (default none; None
        removes one). A setting left out keeps its value on a declared device.
        Narrowing below a bound PASID: InvalidPasid, nothing changed.
        The handle is a small int naming the device in the C-level API
        (``c_bind``/``c_unbind``), stable until :meth:`remove_device`, never
        reused by this allocator (a snapshot's devices get 0, 1, ... in
        declaration order).

        >>> a = PasidAllocator(bits=8); a.add_device("gpu", drain=5), a.pending("gpu")
        (0, [])
        """
        width = -1 if isinstance(bits, _args.Unset) else _args.as_bits(bits, "device bits")
        drain_time = -1.0 if isinstance(drain, _args.Unset) else _args.as_drain(drain)
        callback: Callable[[int], object] | None = None
        callback_given = not isinstance(on_teardown, _args.Unset)
        if not isinstance(on_teardown, _args.Unset):
            _args.check_callable(on_teardown, "on_teardown")
            callback = on_teardown
        return device_settings(self, device, width, drain_time, callback_given, callback)

    def remove_device(self, device: Hashable) -> None:
        """Hot-unplug: drop all of ``device``'s bindings at once, no drain hold, no callback.

        Unknown device: StateError. O(bindings of the device).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "nic"); a.free(p)
        >>> a.state(p).name; a.remove_device("nic"); a.state(p).name
        'DRAINING'
        'FREE'
        """
        device_remove(self, device)
        if self._gone or self._graveyard:
            self._after()

    def bind(self, pasid: SupportsIndex, device: Hashable, *, data: object = None) -> None:
        """Bind an ACTIVE PASID to ``device``, counted per pair. O(devices bound to the PASID).

        ``data`` is the driver's value for this pair (kept from the first bind;
        a later bind with data replaces it). An undeclared device is declared
        with the defaults. StateError unless ACTIVE; InvalidPasid if the PASID
        is wider than the device's bits; OverflowError at 2**32 - 1 binds.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "gpu", data="ctx")
        >>> a.devices(p), a.binding(p, "gpu")
        (['gpu'], 'ctx')
        """
        p = self._check_id(pasid)
        stale = True
        while stale:
            reading = self._reading()
            info = device_record(self, device, False)
            if info is None:
                # declare it only for a bind that can succeed
                with self._lock:
                    self._settle_time(self._time(reading))
                    if self._state[p] != ACTIVE:
                        raise StateError(_messages.not_active("bind", p, _STATE_NAMES[self._state[p]]))
                info = device_record(self, device, True)
                assert info is not None
            try:
                with self._lock:
                    stale = info.gone
                    if not stale:
                        self._settle_time(self._time(reading))
                        bind_in(self, p, info, data)
            except _Later as late:
                raise late.build() from None

    def unbind(self, pasid: SupportsIndex, device: Hashable) -> None:
        """``device`` says it has drained ``pasid`` (ACTIVE or DRAINING). O(devices bound to it).

        The unbind that drops the pair's count to zero holds the PASID until
        now + the device's drain; the last unbind of a DRAINING PASID sends it
        to QUARANTINED or FREE. StateError if not bound.

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "gpu"); a.free(p)
        >>> a.unbind(p, "gpu"); a.state(p).name
        'FREE'
        """
        p = self._check_id(pasid)
        info = device_record(self, device, False)
        reading = self._reading()
        try:
            with self._lock:
                if info is None or info.gone:
                    raise _Later(StateError, _messages.not_bound, p, device)
                now = self._time(reading)
                self._settle_time(now)
                unbind_in(self, p, info, now)
        except _Later as late:
            raise late.build() from None
        if self._gone or self._graveyard:
            self._after()

    # ------------------------------------------------------------ owners

    def exit_owner(self, owner: Hashable) -> list[int]:
        """Release every ACTIVE PASID of ``owner`` at once, whatever its refcount; never waits.

        Returns them ascending; their handles become stale; bound devices'
        ``on_teardown`` run after the change. ``owner=None``: ValueError.
        O(k log k) for k PASIDs.

        >>> a = PasidAllocator(bits=8); h = a.open("proc"); h2 = h.dup()
        >>> a.exit_owner("proc"), h.valid
        ([1], False)
        """
        if owner is None:
            raise ValueError(_messages.EXIT_NONE)
        released: list[int] | None = None
        teardown: Teardown = []
        while released is None:
            record = owner_lookup(self, owner)
            reading = self._reading()
            with self._lock:
                now = self._time(reading)
                self._settle_time(now)
                if record is None:
                    released = []
                elif not record.gone:
                    released = sorted(record.active)
                    for p in released:
                        release(self, p, now)
                    for p in released:
                        teardown_of(self, p, teardown)
        if self._gone or self._graveyard:
            self._after()
        if teardown:
            run_teardown(teardown)
        return released

    def set_quota(self, owner: Hashable, n: SupportsIndex | None) -> None:
        """At most ``n`` PASIDs of ``owner`` ACTIVE, DRAINING or QUARANTINED; None lifts it. O(1).

        A quota below current use refuses new allocations until use drops.
        ``owner=None`` or ``n < 0``: ValueError.

        >>> a = PasidAllocator(bits=8); a.set_quota("vm", 1); _ = a.alloc("vm")
        >>> a.try_alloc("vm") is None
        True
        """
        if owner is None:
            raise ValueError(_messages.QUOTA_NONE)
        quota = _args.as_quota(n)      # -1: no quota
        if quota >= 0:
            record = owner_record(self, owner)         # pinned: current until unpinned
        else:
            # lifting a quota makes no record: an owner without one has no quota
            found = owner_lookup(self, owner)
            if found is None or not owner_pin(self, found):
                return
            record = found
        try:
            with self._lock:
                record.quota = quota
                if quota >= 0:
                    self._quota[record] = quota
                else:
                    self._quota.pop(record, None)
        finally:
            owner_unpin(self, record)                        # idle with no quota: marked gone
        if self._gone or self._graveyard:
            self._after()

    # ------------------------------------------------------------ time

    @property
    def now(self) -> float:
        """The current time: the logical clock, or the callable clock's reading (a float;
        a clock that goes back is held at its highest reading). O(1), and any reclaim due.
        """
        reading = self._reading()
        with self._lock:
            return self._time(reading)

    def advance(self, to: float | None = None, *, by: float | None = None) -> int:
        """Move the logical clock forward and reclaim; returns how many became FREE.

        ``to``: the new time; ``by``: how far to move. With neither, reclaim at
        the current time, on both clock kinds (a simulator's "settle now").
        Both, backwards, either with a callable clock, or a time beyond the
        finite range: ValueError. O(k log N) for k expired.

        >>> a = PasidAllocator(bits=8, grace=3); a.free(a.alloc()); a.advance(to=3)
        1
        """
        if to is not None and by is not None:
            raise ValueError(_messages.ADVANCE_BOTH)
        if to is None and by is None:
            reading = self._reading()
            with self._lock:
                reclaimed = reclaim(self, self._time(reading))
            if self._gone or self._graveyard:
                self._after()
            return reclaimed
        if self._clock is not None:
            raise ValueError(_messages.ADVANCE_CALLABLE)
        target = step = 0.0
        if to is not None:
            target = _args.as_time(to, "to")
        else:
            step = _args.as_time(by, "by")
        with self._lock:
            if to is None:
                target = self._now + step
                if step < 0:
                    raise ValueError(_messages.clock_back(self._now, target))
            _args.check_time(target, "the clock")
            if target < self._now:
                raise ValueError(_messages.clock_back(self._now, target))
            self._now = target
            reclaimed = reclaim(self, target)
        if self._gone or self._graveyard:
            self._after()
        return reclaimed

    def next_release_time(self) -> float | None:
        """The earliest ``release_at`` waiting, or None. O(1).

        >>> PasidAllocator(bits=8).next_release_time() is None
        True
        """
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            return self._queue.next()

    # ------------------------------------------------------------ queries

    def state(self, pasid: SupportsIndex) -> State:
        """The :class:`~pasid.State` of ``pasid``. O(1).

        >>> PasidAllocator(bits=8).state(0).name
        'RESERVED'
        """
        p = self._check_id(pasid)
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            return State(self._state[p])

    def states(self, ids: Sequence[SupportsIndex] | npt.NDArray[np.integer[Any]]
               ) -> npt.NDArray[np.uint8]:
        """The states of ``ids`` as a uint8 array. O(len(ids)).

        >>> PasidAllocator(bits=8).states([0, 1])
        array([1, 0], dtype=uint8)
        """
        pasids = _args.id_array(ids, self._size).tolist()   # a private copy, checked
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            state = self._state
            return np.array([state[p] for p in pasids], dtype=np.uint8)

    def owner(self, pasid: SupportsIndex) -> Any:
        """The owner tag of ``pasid``, kept until it is FREE (None if owner-less). O(1).

        >>> a = PasidAllocator(bits=8); a.owner(a.alloc("vm1"))
        'vm1'
        """
        p = self._check_id(pasid)
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            record = self._owner_of.get(p)
            return None if record is None else record.key

    def data(self, pasid: SupportsIndex) -> Any:
        """The data given at allocation, kept until FREE (None if none). O(1).

        >>> a = PasidAllocator(bits=8); a.data(a.alloc(data="ctx"))
        'ctx'
        """
        p = self._check_id(pasid)
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            return self._data.get(p)

    def refcount(self, pasid: SupportsIndex) -> int:
        """References held on ``pasid`` (0 unless ACTIVE). O(1).

        >>> a = PasidAllocator(bits=8); a.refcount(a.alloc())
        1
        """
        p = self._check_id(pasid)
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            return self._refcount[p]

    def generation(self, pasid: SupportsIndex) -> int:
        """How many times ``pasid`` has been allocated. O(1).

        >>> a = PasidAllocator(bits=8); a.free(a.alloc()); a.generation(1)
        1
        """
        p = self._check_id(pasid)
        with self._lock:                     # a batch under way is seen whole or not at all
            return self._generation[p]

    def devices(self, pasid: SupportsIndex) -> list[Any]:
        """The devices ``pasid`` is bound to, in bind order. O(devices).

        >>> PasidAllocator(bits=8).devices(1)
        []
        """
        p = self._check_id(pasid)
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            found = []
            for handle in self._bindings.get(p, ()):
                info = self._device_list[handle]
                assert info is not None
                found.append(info.key)
            return found

    def binding(self, pasid: SupportsIndex, device: Hashable) -> Any:
        """The data given to :meth:`bind` for this (PASID, device) pair; StateError if not bound.
        O(devices bound to the PASID).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, 7); a.binding(p, 7) is None
        True
        """
        p = self._check_id(pasid)
        info = device_record(self, device, False)
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            entry = None
            if info is not None and not info.gone:
                entry = self._bindings.get(p, {}).get(info.handle)
            if entry is not None:
                return entry[1]
        raise StateError(_messages.not_bound(p, device))

    def pending(self, device: Hashable) -> list[int]:
        """The DRAINING PASIDs still bound to ``device``, ascending; unknown device: StateError.

        O(bindings of the device).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); a.bind(p, "gpu"); a.free(p)
        >>> a.pending("gpu")
        [1]
        """
        info = device_record(self, device, False)
        reading = self._reading()
        with self._lock:
            known = info is not None and not info.gone
            if known:
                assert info is not None
                self._settle_time(self._time(reading))
                state = self._state
                found = [p for p in info.bound if state[p] == DRAINING]
        if not known:
            raise StateError(_messages.unknown_device(device))
        found.sort()
        return found

    def stats(self) -> dict[str, int]:
        """Counts per state and the counters since construction, as a dict. O(1).

        >>> s = PasidAllocator(bits=8).stats(); s["free"], s["reserved"]
        (255, 1)
        """
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            counts = self._counts
            return {
                "free": counts[FREE],
                "reserved": counts[RESERVED],
                "active": counts[ACTIVE],
                "draining": counts[DRAINING],
                "quarantined": counts[QUARANTINED],
                "allocations": self._allocations,
                "releases": self._releases,
                "reclaimed": self._reclaimed,
                "failures": self._failures,
                "high_water": self._high_water,
            }

    @property
    def bits(self) -> int:
        """The PASID width: IDs are 0 .. 2**bits - 1. O(1)."""
        return self._bits

    @property
    def strategy(self) -> str:
        """The allocation strategy: lowest, cyclic, fifo or random. O(1)."""
        return self._strategy

    @property
    def grace(self) -> float:
        """The minimum time from release to reuse (a float). O(1)."""
        return self._grace

    def __len__(self) -> int:
        """How many PASIDs are ACTIVE. O(1).

        >>> a = PasidAllocator(bits=8); _ = a.alloc(); len(a)
        1
        """
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            return self._counts[ACTIVE]

    def __iter__(self) -> Iterator[int]:
        """The ACTIVE PASIDs, ascending (a list taken at the call). O(N): a pass over the table.

        >>> a = PasidAllocator(bits=8); _ = a.alloc_many(3); list(a)
        [1, 2, 3]
        """
        reading = self._reading()
        with self._lock:
            self._settle_time(self._time(reading))
            state = self._state
            found = []
            p = state.find(ACTIVE)
            while p >= 0:
                found.append(p)
                p = state.find(ACTIVE, p + 1)
        return iter(found)

    def __contains__(self, pasid: object) -> bool:
        """True only for an ACTIVE PASID; never raises (a clock that raises: the last time). O(1).

        >>> a = PasidAllocator(bits=8); p = a.alloc(); p in a, 2 in a, "x" in a
        (True, False, False)
        """
        try:
            p = _args.as_int(pasid, "PASID")
        except TypeError:
            return False
        if not 0 <= p < self._size:
            return False
        try:
            reading = self._reading()
        except Exception:
            reading = self._now
        with self._lock:
            self._settle_time(self._time(reading))
            return self._state[p] == ACTIVE

    def __repr__(self) -> str:
        """The width, strategy and how many PASIDs are ACTIVE and FREE, read at once. O(1).

        >>> 'active=0 free=255' in repr(PasidAllocator(bits=8))
        True
        """
        with self._lock:
            active, free = self._counts[ACTIVE], self._counts[FREE]
        return (f"<pasid.pure.PasidAllocator bits={self._bits} strategy={self._strategy!r} "
                f"active={active} free={free}>")

    # ------------------------------------------------------------ snapshots

    @classmethod
    def _restore(cls, snap: dict[str, Any], clock: Callable[[], float] | None) -> Self:
        """A new allocator holding a checked snapshot (``pasid/pure/export.py``)."""
        a = cls(snap["bits"], reserved=(), strategy=snap["strategy"], grace=snap["grace"],
                clock=clock, seed=snap["rng"])
        if clock is None:
            a._now = snap["now"]
        load_state(a, snap)
        return a

    def _export(self) -> dict[str, Any]:
        """The whole state as the dict of ``pasid._snapshot.FIELDS`` (``pasid/pure/export.py``)."""
        return export_state(self)

    def to_bytes(self) -> bytes:
        """The whole allocator as snapshot bytes: versioned, checksummed, the same on both backends.

        Everything travels but callbacks and a callable clock (its reading
        does, read once). Owners, data and devices must be plain data, else
        TypeError naming the value. O(N).

        >>> a = PasidAllocator(bits=8); p = a.alloc("vm")
        >>> b = PasidAllocator.from_bytes(a.to_bytes()); b.owner(p), b.to_bytes() == a.to_bytes()
        ('vm', True)
        """
        return _snapshot.dumps(export_state(self))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *,
                   clock: Callable[[], float] | None = None) -> Self:
        """An allocator from :meth:`to_bytes` output (of either backend).

        ``clock``: a callable clock; without one, a logical clock at the saved
        time. Corrupt, truncated or unknown bytes: SnapshotError. O(N).

        >>> PasidAllocator.from_bytes(PasidAllocator(bits=8).to_bytes()).bits
        8
        """
        return cls._restore(_snapshot.loads(data), clock)

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> Self:
        return cls._restore(_snapshot.check(state), None)

    def __reduce__(self) -> tuple[Callable[[dict[str, Any]], Self], tuple[dict[str, Any]]]:
        return (type(self)._from_state, (export_state(self),))

    # ------------------------------------------------------------ invariants

    def _check(self) -> None:
        """Verify every invariant (``pasid/pure/check.py``); AssertionError on the first that fails."""
        check_allocator(self)
