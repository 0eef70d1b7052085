"""The pure-Python PasidAllocator: the same behaviour, errors and snapshots as the compiled core.

The inner split mirrors ``pasid/_core.pyx``: the ID space (``idspace.IdSpace``
and the strategies) decides *which* FREE ID an allocation gets; the lifecycle
tables (state, refcount, generation per PASID; owners, data, bindings and the
release queue in side tables) decide *when* an ID is FREE again.
"""

from __future__ import annotations

import heapq
import math
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, SupportsIndex

import numpy as np
import numpy.typing as npt

from pasid._errors import InvalidPasid, PasidExhausted, QuotaExceeded, StateError
from pasid._handle import PasidHandle
from pasid import _snapshot
from pasid._callbacks import Teardown, run_teardown
from pasid._rng import SplitMix64
from pasid._state import State
from pasid.pure._args import as_int, as_time
from pasid.pure.fifo import FifoQueue
from pasid.pure.idspace import IdSpace

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["PasidAllocator"]

FREE, RESERVED, ACTIVE, DRAINING, QUARANTINED = range(5)
_STATE_NAMES = ("FREE", "RESERVED", "ACTIVE", "DRAINING", "QUARANTINED")
STRATEGIES = ("lowest", "cyclic", "fifo", "random")
_NO_HOLD = -math.inf


class _Device:
    """A declared device: its settings and its handle (index in ``_device_list``)."""

    __slots__ = ("bits", "drain", "on_teardown", "handle")

    def __init__(self, bits: int, drain: float, on_teardown: Callable[[int], object] | None,
                 handle: int) -> None:
        self.bits = bits
        self.drain = drain
        self.on_teardown = on_teardown
        self.handle = handle


class PasidAllocator:
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
                 reserved: Iterable[SupportsIndex | tuple[SupportsIndex, SupportsIndex]] = (0,),
                 strategy: str = "lowest", grace: float = 0,
                 clock: Callable[[], float] | None = None,
                 seed: SupportsIndex | None = None) -> None:
        bits = as_int(bits, "bits")
        if not 1 <= bits <= 20:
            raise ValueError(f"bits must be in 1..20, got {bits}")
        if strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
            )
        grace = as_time(grace, "grace")
        if grace < 0:
            raise ValueError(f"grace must be >= 0, got {grace}")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be None or a zero-argument callable")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        else:
            seed = as_int(seed, "seed")
        size = 1 << bits
        ranges = self._parse_reserved(reserved, size)

        self._lock = threading.RLock()
        self._bits = bits
        self._size = size
        self._strategy = strategy
        self._grace = grace
        self._clock = clock
        self._now = 0.0
        self._rng = SplitMix64(seed)
        self._cursor = 0
        # ID space and per-PASID tables
        self._space = IdSpace(size)
        self._state = bytearray(size)
        self._refcount = [0] * size
        self._generation = [0] * size
        self._owner: dict[int, Hashable] = {}
        self._data: dict[int, Any] = {}
        # PASID -> release_at so far (unbind holds, release + grace)
        self._hold: dict[int, float] = {}
        # PASID -> {device: [count, data]} in bind order
        self._bindings: dict[int, dict[Hashable, list[Any]]] = {}
        # heap of (release_at, PASID), one entry per QUARANTINED
        self._queue: list[tuple[float, int]] = []
        self._fifo = FifoQueue(size, range(size)) if strategy == "fifo" else None
        # devices and owners
        self._devices: dict[Hashable, _Device] = {}
        self._device_list: list[Hashable | None] = []   # handle -> device (None once removed)
        self._bound: dict[Hashable, set[int]] = {}      # device -> set of PASIDs bound to it
        self._owned: dict[Hashable, set[int]] = {}      # owner -> set of ACTIVE PASIDs
        self._use: dict[Hashable, int] = {}             # owner -> ACTIVE + DRAINING + QUARANTINED
        self._quota: dict[Hashable, int] = {}
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
                    self._take(p, RESERVED)

    @staticmethod
    def _parse_reserved(reserved: Iterable[SupportsIndex | tuple[SupportsIndex, SupportsIndex]],
                        size: int) -> list[tuple[int, int]]:
        ranges = []
        for item in reserved:
            if isinstance(item, tuple):
                if len(item) != 2:
                    raise ValueError(f"a reserved range is a (lo, hi) pair, got {item!r}")
                lo, hi = as_int(item[0], "PASID"), as_int(item[1], "PASID")
            else:
                lo = hi = as_int(item, "PASID")
            for p in (lo, hi):
                if not 0 <= p < size:
                    raise InvalidPasid(f"reserved PASID {p} out of range 0..{size - 1}")
            if lo > hi:
                raise InvalidPasid(f"empty reserved range {lo}..{hi}")
            ranges.append((lo, hi))
        return ranges

    # ------------------------------------------------------------------ helpers

    def _pasid(self, value: Any) -> int:
        p = as_int(value, "PASID")
        if not 0 <= p < self._size:
            raise InvalidPasid(f"PASID {p} out of range 0..{self._size - 1}")
        return p

    def _bounds(self, min: SupportsIndex | None, max: SupportsIndex | None) -> tuple[int, int]:
        lo = 0 if min is None else self._pasid(min)
        hi = self._size - 1 if max is None else self._pasid(max)
        if lo > hi:
            raise InvalidPasid(f"empty range {lo}..{hi}")
        return lo, hi

    def _read_clock(self) -> float:
        if self._clock is None:
            return self._now
        return as_time(self._clock(), "clock()")

    def _sync(self) -> None:
        """Reclaim what has expired by now (only a callable clock moves by itself)."""
        if self._clock is not None and self._queue:
            now = self._read_clock()
            if self._queue[0][0] <= now:
                self._reclaim(now)

    def _take(self, p: int, state: int) -> None:
        """A FREE PASID leaves the FREE set."""
        self._space.take(p)
        if self._fifo is not None:
            self._fifo.remove(p)
        counts = self._counts
        counts[FREE] -= 1
        counts[state] += 1
        self._state[p] = state

    def _make_free(self, p: int) -> None:
        """A PASID whose release is complete becomes FREE; its tags go."""
        counts = self._counts
        counts[self._state[p]] -= 1
        counts[FREE] += 1
        self._state[p] = FREE
        self._space.release(p)
        if self._fifo is not None:
            self._fifo.push(p)
        self._refcount[p] = 0
        self._data.pop(p, None)
        self._hold.pop(p, None)
        owner = self._owner.pop(p, None)
        if owner is not None:
            use = self._use[owner] - 1
            if use:
                self._use[owner] = use
            else:
                del self._use[owner]

    def _reclaim(self, now: float) -> int:
        queue = self._queue
        expired = []
        while queue and queue[0][0] <= now:
            expired.append(heapq.heappop(queue)[1])
        expired.sort()
        for p in expired:
            self._make_free(p)
        self._reclaimed += len(expired)
        return len(expired)

    def _settle(self, p: int, now: float) -> None:
        """A released PASID with no device bound: QUARANTINED until its release_at, or FREE."""
        release_at = self._hold[p]
        if release_at <= now:
            self._make_free(p)
            self._reclaimed += 1
        else:
            counts = self._counts
            counts[self._state[p]] -= 1
            counts[QUARANTINED] += 1
            self._state[p] = QUARANTINED
            heapq.heappush(self._queue, (release_at, p))

    def _release(self, p: int, now: float, teardown: Teardown) -> None:
        """An ACTIVE PASID is released: DRAINING, QUARANTINED or FREE."""
        self._releases += 1
        self._refcount[p] = 0
        owner = self._owner.get(p)
        if owner is not None:
            owned = self._owned[owner]
            owned.discard(p)
            if not owned:
                del self._owned[owner]
        self._hold[p] = max(self._hold.get(p, _NO_HOLD), now + self._grace)
        bindings = self._bindings.get(p)
        if bindings:
            counts = self._counts
            counts[ACTIVE] -= 1
            counts[DRAINING] += 1
            self._state[p] = DRAINING
            for device in bindings:
                callback = self._devices[device].on_teardown
                if callback is not None:
                    teardown.append((callback, p))
        else:
            self._settle(p, now)

    def _choose(self, lo: int, hi: int) -> int:
        """The FREE ID the strategy gives in [lo, hi], or -1. Moves nothing."""
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

    def _check_quota(self, owner: Hashable | None, n: int) -> None:
        if owner is None:
            return
        quota = self._quota.get(owner)
        if quota is not None and self._use.get(owner, 0) + n > quota:
            self._failures += 1
            raise QuotaExceeded(
                f"owner {owner!r} is at its quota of {quota} PASIDs"
            )

    def _activate(self, p: int, owner: Hashable | None, data: object) -> None:
        self._take(p, ACTIVE)
        self._refcount[p] = 1
        self._generation[p] += 1
        if owner is not None:
            self._owner[p] = owner
            self._use[owner] = self._use.get(owner, 0) + 1
            owned = self._owned.get(owner)
            if owned is None:
                self._owned[owner] = {p}
            else:
                owned.add(p)
        if data is not None:
            self._data[p] = data
        self._allocations += 1
        if self._counts[ACTIVE] > self._high_water:
            self._high_water = self._counts[ACTIVE]

    def _alloc(self, owner: Hashable | None, data: object, min: SupportsIndex | None,
               max: SupportsIndex | None) -> int:
        lo, hi = self._bounds(min, max)
        self._sync()
        self._check_quota(owner, 1)
        p = self._choose(lo, hi)
        if p < 0:
            self._failures += 1
            raise PasidExhausted(f"no FREE PASID in {lo}..{hi}")
        if self._strategy == "cyclic":
            self._cursor = p + 1
        self._activate(p, owner, data)
        return p

    # ------------------------------------------------------------ allocation

    def alloc(self, owner: Hashable | None = None, *, data: object = None,
              min: SupportsIndex | None = None, max: SupportsIndex | None = None) -> int:
        """Allocate a PASID by the strategy; refcount 1, ACTIVE. O(log64 N)."""
        with self._lock:
            return self._alloc(owner, data, min, max)

    def try_alloc(self, owner: Hashable | None = None, *, data: object = None,
                  min: SupportsIndex | None = None,
                  max: SupportsIndex | None = None) -> int | None:
        """Like :meth:`alloc`, but ``None`` where alloc raises PasidExhausted (quota included)."""
        with self._lock:
            try:
                return self._alloc(owner, data, min, max)
            except PasidExhausted:
                return None

    def alloc_exact(self, pasid: SupportsIndex, owner: Hashable | None = None, *,
                    data: object = None) -> int:
        """Allocate exactly ``pasid``; StateError unless FREE. The cursor does not move. O(log64 N)."""
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            if self._state[p] != FREE:
                raise StateError(f"PASID {p} is {_STATE_NAMES[self._state[p]]}, not FREE")
            self._check_quota(owner, 1)
            self._activate(p, owner, data)
            return p

    def open(self, owner: Hashable | None = None, *, data: object = None,
             min: SupportsIndex | None = None, max: SupportsIndex | None = None) -> PasidHandle:
        """Allocate like :meth:`alloc` and wrap the reference in a :class:`PasidHandle`."""
        with self._lock:
            p = self._alloc(owner, data, min, max)
            return PasidHandle(self, p, self._generation[p])

    def alloc_many(self, n: SupportsIndex, owner: Hashable | None = None, *,
                   data: object = None) -> npt.NDArray[np.uint32]:
        """``n`` PASIDs, the same as ``n`` calls of :meth:`alloc`, as a uint32 array; all or nothing."""
        n = as_int(n, "n")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._lock:
            self._sync()
            self._check_quota(owner, n)
            if n > self._counts[FREE]:
                self._failures += 1
                raise PasidExhausted(
                    f"{n} PASIDs asked, {self._counts[FREE]} FREE"
                )
            out = np.empty(n, dtype=np.uint32)
            hi = self._size - 1
            for i in range(n):
                p = self._choose(0, hi)
                if self._strategy == "cyclic":
                    self._cursor = p + 1
                self._activate(p, owner, data)
                out[i] = p
            return out

    # ------------------------------------------------------------ references

    def get(self, pasid: SupportsIndex) -> None:
        """Take one more reference to an ACTIVE PASID. O(1)."""
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            if self._state[p] != ACTIVE:
                raise StateError(f"get of PASID {p}, which is {_STATE_NAMES[self._state[p]]}")
            self._refcount[p] += 1

    def put(self, pasid: SupportsIndex) -> None:
        """Drop one reference to an ACTIVE PASID; the last put releases it. O(log64 N)."""
        teardown: Teardown = []
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            if self._state[p] != ACTIVE:
                raise StateError(f"free of PASID {p}, which is {_STATE_NAMES[self._state[p]]}")
            refcount = self._refcount[p] - 1
            if refcount:
                self._refcount[p] = refcount
            else:
                self._release(p, self._read_clock(), teardown)
        if teardown:
            run_teardown(teardown)

    free = put

    def free_many(self, ids: Sequence[SupportsIndex] | npt.NDArray[np.integer[Any]]) -> None:
        """As successive :meth:`free` calls, all or nothing."""
        pasids = self._id_list(ids)
        teardown: Teardown = []
        with self._lock:
            self._sync()
            now = self._read_clock()    # a clock that raises does so before any change
            refcount = self._refcount
            state = self._state
            for i, p in enumerate(pasids):
                if state[p] != ACTIVE or refcount[p] == 0:
                    for q in pasids[:i]:
                        refcount[q] += 1
                    name = "ACTIVE, already freed" if state[p] == ACTIVE else _STATE_NAMES[state[p]]
                    raise StateError(f"free of PASID {p}, which is {name}")
                refcount[p] -= 1
            for p in pasids:
                if refcount[p] == 0 and state[p] == ACTIVE:
                    self._release(p, now, teardown)
        if teardown:
            run_teardown(teardown)

    def _id_list(self, ids: object) -> list[int]:
        array = np.asarray(ids)
        if array.dtype == object:
            # Python ints too large for any integer dtype: checked one by one
            for value in array.reshape(-1):
                self._pasid(value)
            array = array.astype(np.int64)
        if array.dtype == np.bool_ or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise TypeError(f"ids must be integers, not {array.dtype}")
        array = array.reshape(-1)
        ids = [int(p) for p in array]
        for p in ids:
            if not 0 <= p < self._size:
                raise InvalidPasid(f"PASID {p} out of range 0..{self._size - 1}")
        return ids

    # ------------------------------------------------------------ reservation

    def _range(self, lo: SupportsIndex, hi: SupportsIndex | None) -> tuple[int, int]:
        lo = self._pasid(lo)
        hi = lo if hi is None else self._pasid(hi)
        if lo > hi:
            raise InvalidPasid(f"empty range {lo}..{hi}")
        return lo, hi

    def reserve(self, lo: SupportsIndex, hi: SupportsIndex | None = None) -> None:
        """FREE IDs ``lo..hi`` (inclusive) become RESERVED, all or none. O(range x log64 N)."""
        with self._lock:
            lo, hi = self._range(lo, hi)
            self._sync()
            state = self._state
            for p in range(lo, hi + 1):
                if state[p] != FREE:
                    raise StateError(f"cannot reserve PASID {p}: it is {_STATE_NAMES[state[p]]}")
            for p in range(lo, hi + 1):
                self._take(p, RESERVED)

    def unreserve(self, lo: SupportsIndex, hi: SupportsIndex | None = None) -> None:
        """RESERVED IDs ``lo..hi`` (inclusive) become FREE, all or none. O(range x log64 N)."""
        with self._lock:
            lo, hi = self._range(lo, hi)
            self._sync()
            state = self._state
            for p in range(lo, hi + 1):
                if state[p] != RESERVED:
                    raise StateError(f"cannot unreserve PASID {p}: it is {_STATE_NAMES[state[p]]}")
            for p in range(lo, hi + 1):
                self._make_free(p)

    # ------------------------------------------------------------ devices

    def add_device(self, device: Hashable, *, bits: SupportsIndex = 20, drain: float = 0,
                   on_teardown: Callable[[int], object] | None = None) -> int:
        """Declare ``device`` (or update its settings): PASID width, drain time, teardown callback.

        Returns the device's handle (see :meth:`pasid.PasidAllocator.add_device`).
        """
        bits = as_int(bits, "bits")
        if not 1 <= bits <= 20:
            raise ValueError(f"device bits must be in 1..20, got {bits}")
        drain = as_time(drain, "drain")
        if drain < 0:
            raise ValueError(f"drain must be >= 0, got {drain}")
        if on_teardown is not None and not callable(on_teardown):
            raise TypeError("on_teardown must be None or callable")
        hash(device)
        with self._lock:
            bound = self._bound.get(device)
            if bound:
                widest = max(bound)
                if widest >> bits:
                    raise InvalidPasid(
                        f"device {device!r} has PASID {widest} bound, wider than {bits} bits"
                    )
            info = self._devices.get(device)
            if info is None:
                info = self._new_device(device, bits, drain, on_teardown)
            else:
                info.bits, info.drain, info.on_teardown = bits, drain, on_teardown
            return info.handle

    def _new_device(self, device: Hashable, bits: int, drain: float,
                    on_teardown: Callable[[int], object] | None) -> _Device:
        """Declare a device: its entry, its bound set and its handle (never reused)."""
        info = self._devices[device] = _Device(bits, drain, on_teardown, len(self._device_list))
        self._device_list.append(device)
        self._bound[device] = set()
        return info

    def remove_device(self, device: Hashable) -> None:
        """Hot-unplug: drop all of ``device``'s bindings at once, no drain hold, no callback."""
        with self._lock:
            if device not in self._devices:
                raise StateError(f"unknown device {device!r}")
            self._sync()
            now = self._read_clock()
            for p in sorted(self._bound[device]):
                bindings = self._bindings[p]
                del bindings[device]
                if not bindings:
                    del self._bindings[p]
                    if self._state[p] == DRAINING:
                        self._settle(p, now)
            del self._bound[device]
            self._device_list[self._devices[device].handle] = None
            del self._devices[device]

    def bind(self, pasid: SupportsIndex, device: Hashable, *, data: object = None) -> None:
        """Bind an ACTIVE PASID to ``device`` (counted per pair). O(1) dict work."""
        with self._lock:
            p = self._pasid(pasid)
            hash(device)
            self._sync()
            if self._state[p] != ACTIVE:
                raise StateError(f"bind of PASID {p}, which is {_STATE_NAMES[self._state[p]]}")
            info = self._devices.get(device)
            if info is not None and p >> info.bits:
                raise InvalidPasid(f"PASID {p} is wider than device {device!r}'s {info.bits} bits")
            if info is None:
                self._new_device(device, 20, 0.0, None)
            bindings = self._bindings.get(p)
            if bindings is None:
                bindings = self._bindings[p] = {}
            entry = bindings.get(device)
            if entry is None:
                bindings[device] = [1, data]
                self._bound[device].add(p)
            else:
                entry[0] += 1
                if data is not None:
                    entry[1] = data

    def unbind(self, pasid: SupportsIndex, device: Hashable) -> None:
        """``device`` says it has drained ``pasid`` (ACTIVE or DRAINING). O(log64 N)."""
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            state = self._state[p]
            bindings = self._bindings.get(p)
            if state not in (ACTIVE, DRAINING) or not bindings or device not in bindings:
                raise StateError(f"PASID {p} is not bound to device {device!r}")
            entry = bindings[device]
            if entry[0] > 1:
                entry[0] -= 1
                return
            now = self._read_clock()    # a clock that raises does so before any change
            entry[0] = 0
            del bindings[device]
            self._bound[device].discard(p)
            hold = now + self._devices[device].drain
            if hold > self._hold.get(p, _NO_HOLD):
                self._hold[p] = hold
            if not bindings:
                del self._bindings[p]
                if state == DRAINING:
                    self._settle(p, now)

    # ------------------------------------------------------------ owners

    def exit_owner(self, owner: Hashable) -> list[int]:
        """Release every ACTIVE PASID of ``owner`` at once, whatever its refcount; never waits."""
        if owner is None:
            raise ValueError("exit_owner(None): owner-less PASIDs have no owner to exit")
        teardown: Teardown = []
        with self._lock:
            self._sync()
            released = sorted(self._owned.get(owner, ()))
            now = self._read_clock()
            for p in released:
                self._release(p, now, teardown)
        if teardown:
            run_teardown(teardown)
        return released

    def set_quota(self, owner: Hashable, n: SupportsIndex | None) -> None:
        """At most ``n`` PASIDs of ``owner`` ACTIVE, DRAINING or QUARANTINED; ``None`` lifts it."""
        if owner is None:
            raise ValueError("set_quota(None, ...): owner-less PASIDs have no quota")
        if n is not None:
            n = as_int(n, "quota")
            if n < 0:
                raise ValueError(f"quota must be >= 0, got {n}")
        with self._lock:
            if n is None:
                self._quota.pop(owner, None)
            else:
                self._quota[owner] = n

    # ------------------------------------------------------------ time

    @property
    def now(self) -> float:
        """The current time: the logical clock, or the callable clock's reading."""
        with self._lock:
            return self._read_clock()

    def advance(self, to: float | None = None, *, by: float | None = None) -> int:
        """Move the logical clock forward and reclaim; returns how many became FREE."""
        with self._lock:
            if self._clock is not None:
                raise ValueError("advance() needs the logical clock; this allocator has a callable clock")
            if (to is None) == (by is None):
                raise ValueError("advance() takes exactly one of to= and by=")
            if to is not None:
                target = as_time(to, "to")
            else:
                target = self._now + as_time(by, "by")
            if target < self._now:
                raise ValueError(f"the clock cannot go back from {self._now} to {target}")
            self._now = target
            return self._reclaim(target)

    def next_release_time(self) -> float | None:
        """The earliest release_at of a QUARANTINED PASID, or None. O(1)."""
        with self._lock:
            self._sync()
            return self._queue[0][0] if self._queue else None

    # ------------------------------------------------------------ queries

    def state(self, pasid: SupportsIndex) -> State:
        """The :class:`~pasid.State` of ``pasid``. O(1)."""
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            return State(self._state[p])

    def states(self, ids: Sequence[SupportsIndex] | npt.NDArray[np.integer[Any]]
               ) -> npt.NDArray[np.uint8]:
        """The states of ``ids`` as a uint8 array. O(len(ids))."""
        pasids = self._id_list(ids)
        with self._lock:
            self._sync()
            state = self._state
            return np.array([state[p] for p in pasids], dtype=np.uint8)

    def owner(self, pasid: SupportsIndex) -> Any:
        """The owner tag of ``pasid`` (None when FREE or owner-less). O(1)."""
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            return self._owner.get(p)

    def data(self, pasid: SupportsIndex) -> Any:
        """The data given at allocation (None when FREE). O(1)."""
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            return self._data.get(p)

    def refcount(self, pasid: SupportsIndex) -> int:
        """References held on ``pasid`` (0 unless ACTIVE). O(1)."""
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            return self._refcount[p]

    def generation(self, pasid: SupportsIndex) -> int:
        """How many times ``pasid`` has been allocated. O(1)."""
        with self._lock:
            return self._generation[self._pasid(pasid)]

    def devices(self, pasid: SupportsIndex) -> list[Any]:
        """The devices ``pasid`` is bound to, in bind order."""
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            return list(self._bindings.get(p, ()))

    def binding(self, pasid: SupportsIndex, device: Hashable) -> Any:
        """The data given to :meth:`bind` for this (PASID, device) pair."""
        with self._lock:
            p = self._pasid(pasid)
            self._sync()
            bindings = self._bindings.get(p)
            if not bindings or device not in bindings:
                raise StateError(f"PASID {p} is not bound to device {device!r}")
            return bindings[device][1]

    def pending(self, device: Hashable) -> list[int]:
        """The DRAINING PASIDs still bound to ``device``, ascending."""
        with self._lock:
            if device not in self._devices:
                raise StateError(f"unknown device {device!r}")
            self._sync()
            state = self._state
            return sorted(p for p in self._bound[device] if state[p] == DRAINING)

    def stats(self) -> dict[str, int]:
        """Counts per state and the counters since construction, as a dict."""
        with self._lock:
            self._sync()
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
        """The PASID width: IDs are 0 .. 2**bits - 1."""
        return self._bits

    @property
    def strategy(self) -> str:
        """The allocation strategy: lowest, cyclic, fifo or random."""
        return self._strategy

    @property
    def grace(self) -> float:
        """The minimum time from release to reuse."""
        return self._grace

    def __len__(self) -> int:
        return self._counts[ACTIVE]

    def __iter__(self) -> Iterator[int]:
        with self._lock:
            state = self._state
            found = []
            p = state.find(ACTIVE)
            while p >= 0:
                found.append(p)
                p = state.find(ACTIVE, p + 1)
        return iter(found)

    def __contains__(self, pasid: object) -> bool:
        try:
            p = as_int(pasid, "PASID")
        except TypeError:
            return False
        if not 0 <= p < self._size:
            return False
        with self._lock:
            self._sync()
            return self._state[p] == ACTIVE

    def __repr__(self) -> str:
        return (
            f"<pasid.pure.PasidAllocator bits={self._bits} strategy={self._strategy!r} "
            f"active={self._counts[ACTIVE]} free={self._counts[FREE]}>"
        )

    # ------------------------------------------------------------ snapshots

    def _export(self) -> dict[str, Any]:
        """The whole state as the dict of ``pasid._snapshot.FIELDS`` (shared with the compiled core)."""
        self._sync()
        state = np.frombuffer(bytes(self._state), dtype=np.uint8)
        ids = np.flatnonzero(state)
        refcount = self._refcount
        multi = [p for p in ids.tolist() if refcount[p] >= 2]
        generation = np.array(self._generation, dtype=np.uint32)
        generated = np.flatnonzero(generation)
        holds = sorted(self._hold.items())
        return {
            "bits": self._bits,
            "strategy": self._strategy,
            "grace": self._grace,
            "now": self._read_clock(),
            "rng": self._rng.state,
            "cursor": self._cursor,
            "counters": [self._allocations, self._releases, self._reclaimed,
                         self._failures, self._high_water],
            "states": _snapshot.arrays(ids, state[ids], "u1"),
            "refcounts": _snapshot.arrays(multi, [refcount[p] for p in multi], "<u4"),
            "generations": _snapshot.arrays(generated, generation[generated], "<u4"),
            "holds": _snapshot.arrays([p for p, _ in holds], [t for _, t in holds], "<f8"),
            "owners": sorted(self._owner.items()),
            "data": sorted(self._data.items()),
            "bindings": [
                (p, [(device, entry[0], entry[1]) for device, entry in bindings.items()])
                for p, bindings in sorted(self._bindings.items())
            ],
            "devices": [(d, info.bits, info.drain) for d, info in self._devices.items()],
            "quotas": list(self._quota.items()),
            "fifo": (np.fromiter(self._fifo, dtype="<u4", count=len(self._fifo)).tobytes()
                     if self._fifo is not None else None),
        }

    @classmethod
    def _restore(cls, snap: dict[str, Any], clock: Callable[[], float] | None) -> Self:
        """A new allocator holding a checked snapshot (``pasid._snapshot.check``)."""
        a = cls(snap["bits"], reserved=(), strategy=snap["strategy"], grace=snap["grace"],
                clock=clock, seed=snap["rng"])
        if clock is None:
            a._now = snap["now"]
        a._cursor = snap["cursor"]
        (a._allocations, a._releases, a._reclaimed, a._failures,
         a._high_water) = snap["counters"]
        ids, states = snap["states"]
        for p, state in zip(ids.tolist(), states.tolist()):
            a._take(p, state)
            if state == ACTIVE:
                a._refcount[p] = 1
        for p, count in zip(*(x.tolist() for x in snap["refcounts"])):
            a._refcount[p] = count
        for p, generation in zip(*(x.tolist() for x in snap["generations"])):
            a._generation[p] = generation
        a._hold = dict(zip(*(x.tolist() for x in snap["holds"])))
        for p, owner in snap["owners"]:
            a._owner[p] = owner
            a._use[owner] = a._use.get(owner, 0) + 1
            if a._state[p] == ACTIVE:
                a._owned.setdefault(owner, set()).add(p)
        a._data = dict(snap["data"])
        for device, bits, drain in snap["devices"]:
            a._new_device(device, bits, float(drain), None)
        for p, pairs in snap["bindings"]:
            a._bindings[p] = {device: [count, data] for device, count, data in pairs}
            for device, _, _ in pairs:
                a._bound[device].add(p)
        a._quota = dict(snap["quotas"])
        if a._fifo is not None:
            a._fifo = FifoQueue(a._size, snap["fifo"].tolist())
        a._queue = [(a._hold[p], p) for p in ids.tolist() if a._state[p] == QUARANTINED]
        heapq.heapify(a._queue)
        return a

    def to_bytes(self) -> bytes:
        """The whole allocator as snapshot bytes: versioned, checksummed, the same on both backends.

        Everything travels but callbacks and a callable clock (its reading
        does). Owners, data and devices must be plain data, else TypeError
        naming the value. O(N).
        """
        with self._lock:
            return _snapshot.dumps(self._export())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *,
                   clock: Callable[[], float] | None = None) -> Self:
        """An allocator from :meth:`to_bytes` output (of either backend).

        ``clock``: a callable clock; without one, a logical clock at the saved
        time. Corrupt, truncated or unknown bytes: SnapshotError. O(N).
        """
        return cls._restore(_snapshot.loads(data), clock)

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> Self:
        return cls._restore(_snapshot.check(state), None)

    def __reduce__(self) -> tuple[Callable[[dict[str, Any]], Self], tuple[dict[str, Any]]]:
        with self._lock:
            return (type(self)._from_state, (self._export(),))

    # ------------------------------------------------------------ invariants

    def _check(self) -> None:
        """Verify every invariant; raise AssertionError on the first that fails."""
        with self._lock:
            self._space._check()
            counts = [0] * 5
            for p in range(self._size):
                s = self._state[p]
                counts[s] += 1
                if self._space.is_free(p) != (s == FREE):
                    raise AssertionError(f"PASID {p}: space and state {s} disagree")
                if (self._refcount[p] > 0) != (s == ACTIVE):
                    raise AssertionError(f"PASID {p}: refcount {self._refcount[p]} in state {s}")
            if counts != self._counts:
                raise AssertionError(f"counts {self._counts} != {counts}")
            queued = [p for _, p in self._queue]
            if sorted(queued) != [p for p in range(self._size) if self._state[p] == QUARANTINED]:
                raise AssertionError("every QUARANTINED PASID needs exactly one queue entry")
            for release_at, p in self._queue:
                if self._hold.get(p) != release_at:
                    raise AssertionError(f"PASID {p}: queue time {release_at} != {self._hold.get(p)}")
            for p, bindings in self._bindings.items():
                if not bindings or self._state[p] not in (ACTIVE, DRAINING):
                    raise AssertionError(f"PASID {p}: bindings in state {self._state[p]}")
                for device, (count, _) in bindings.items():
                    if count <= 0 or p not in self._bound[device]:
                        raise AssertionError(f"PASID {p}: bad binding to {device!r}")
            for device, bound in self._bound.items():
                for p in bound:
                    if device not in self._bindings.get(p, ()):
                        raise AssertionError(f"device {device!r}: stale PASID {p}")
            for p in range(self._size):
                if self._state[p] == DRAINING and p not in self._bindings:
                    raise AssertionError(f"PASID {p} DRAINING with no device bound")
            use: dict[Hashable, int] = {}
            owned: dict[Hashable, set[int]] = {}
            for p, owner in self._owner.items():
                if self._state[p] in (FREE, RESERVED):
                    raise AssertionError(f"PASID {p}: owner kept in state {self._state[p]}")
                use[owner] = use.get(owner, 0) + 1
                if self._state[p] == ACTIVE:
                    owned.setdefault(owner, set()).add(p)
            if use != self._use or owned != self._owned:
                raise AssertionError("owner tables disagree with the PASIDs")
            if self._fifo is not None:
                self._fifo._check({p for p in range(self._size) if self._state[p] == FREE})
