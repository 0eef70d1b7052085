"""PASIDs as a SimPy resource: :class:`PasidPool`.

A SimPy model asks the pool for a PASID with ``p = yield pool.get(...)`` and
gives it back with ``pool.put(p)``. The pool wraps a
:class:`pasid.PasidAllocator` whose clock is the environment's
(``clock=lambda: env.now``), so the allocator reclaims lazily at simulation
time: a released PASID is FREE again exactly at its ``release_at``
(SPEC §3.1), with nothing stepping the allocator's clock.

When nothing in a request's range is FREE the request waits, and the pool
wakes it without polling:

* at ``allocator.next_release_time()``, by one SimPy timeout scheduled for
  that time while someone waits (replaced when an earlier release time
  appears; none at all when nothing is QUARANTINED);
* at once, when a release through the pool makes a PASID FREE: ``put`` with no
  grace and no device bound, the last ``unbind``, ``remove_device``,
  ``exit_owner``, ``unreserve``, a device's drain process.

Devices declared with :meth:`PasidPool.add_device` answer a teardown like
hardware does: the allocator's ``on_teardown`` starts a SimPy *drain process*
that waits the device's ``ack`` latency, then unbinds the PASID through the
pool (which wakes waiters). The PASID is reusable at
``max(release + grace, unbind + drain)``.

**Virtual machines** (SPEC §7). A VM's guest processes get *guest* PASIDs
from a :class:`GuestPool`, made by the host's pool: ``vm = pool.add_vm(name,
...)`` (also :meth:`PasidPool.import_vm` for a migration, :meth:`PasidPool.vm`
for a VM the allocator already has). ``g = yield vm.get()``, ``vm.put(g)``,
``vm.bind(g, device)`` go through the VM's :class:`~pasid.pure.guest.GuestSpace`
(``vm.vm``). A guest request waits when the VM is at its quota, when its host
range has nothing FREE, or (translated) when its guest namespace is full,
exactly as a host request waits for its range.

Why a GuestPool made by the host's pool rather than a pool of its own: one
host allocator's release can unblock any of its VMs (and the host's own
requests), so the host's requests and every VM's share *one* queue, one
release timer and one set of drain processes, kept by the host's
:class:`PasidPool`. Any wake-up (a reclaim at ``next_release_time``, a put,
an unbind, a drain process, :meth:`PasidPool.remove_vm`) tries all of them,
oldest first, with the first-fit rule of :class:`PasidPool`. A model of
several hosts has one :class:`PasidPool` per host; a VM that migrates gets a
new :class:`GuestPool` from the destination's pool. Devices stay the host's:
declare them with :meth:`PasidPool.add_device`; their drain processes unbind
the *host* PASID (``on_teardown`` is called with host PASIDs).

Needs simpy (``pip install 'pasid[simpy]'``); ``import pasid`` never imports
this module or simpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Hashable, Iterable
from typing import TYPE_CHECKING, Any, SupportsIndex, Union, cast

try:
    import simpy
except ImportError as _exc:  # pragma: no cover - exercised by a test with simpy hidden
    raise ImportError("pasid.simpy needs simpy: pip install 'pasid[simpy]'") from _exc

import numpy as np

from pasid._args import as_int, as_time
from pasid._errors import InvalidPasid, PasidExhausted, QuotaExceeded, StateError
from pasid._messages import vm_removed
from pasid._state import State

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

    import pasid
    from pasid.pure.guest import GuestSpace

    # the allocator a pool wraps: either backend's
    _Allocator: TypeAlias = "pasid.PasidAllocator | pasid.pure.PasidAllocator"

__all__ = ["GuestPool", "PasidPool", "PasidRequest"]

# A device's answer to a teardown: a latency, a function of the PASID giving
# one, or None (the device never answers by itself; the model unbinds).
Ack = Union[float, Callable[[int], float], None]

# The life of a request
_QUEUED = "queued"            # waiting, in the pool's queue
_WITHDRAWN = "withdrawn"      # pending, out of the queue: nobody waits on it any more
_CANCELLED = "cancelled"      # pending, out of the queue for good: cancel()
_DONE = "done"                # granted (its value is the PASID) or failed


class _Waiters(list[Callable[[simpy.Event], None]]):
    """A request's ``callbacks``: notices when the last waiter stops waiting.

    SimPy removes a process's callback from the event it waits on when the
    process is interrupted, and a condition (``req | timeout``) removes its
    own once it has triggered; both go through ``remove``. Waiting again goes
    through ``append``.
    """

    __slots__ = ("request",)

    def __init__(self, request: PasidRequest) -> None:
        super().__init__()
        self.request = request

    def append(self, callback: Callable[[simpy.Event], None]) -> None:
        super().append(callback)
        self.request._waited_on()

    def remove(self, callback: Callable[[simpy.Event], None]) -> None:
        super().remove(callback)
        if not self:
            self.request._abandoned()


class PasidRequest(simpy.Event):
    """The event :meth:`PasidPool.get` returns: its value is the PASID.

    It succeeds when the pool allocates a PASID for it, or fails with
    :class:`~pasid.QuotaExceeded` when its owner is at its quota when it is
    tried. Attributes: ``pool`` (the pool asked), ``owner``, ``data``,
    ``min``, ``max`` (the inclusive range asked), ``requested_at`` and
    ``granted_at`` (simulation times; ``granted_at`` is None until granted).

    A guest request (:meth:`GuestPool.get`) is one too: its value is a guest
    PASID, ``min``/``max`` are the guest PASIDs it may get; it waits at its
    VM's quota instead of failing, and fails with :class:`~pasid.StateError`
    if its VM is removed while it waits.

    A granted request's PASID belongs to the caller even if the caller
    stopped waiting at the same instant (a renege that lost the race): test
    ``req.triggered and req.ok`` rather than membership in a condition's value,
    and ``pool.put(req.value)`` what is not wanted.

    A pending request leaves the pool's queue when it is cancelled
    (:meth:`cancel`, or leaving a ``with`` block) or when nobody waits on it
    any more: the process waiting on it was interrupted, or it was part of a
    condition (``req | env.timeout(patience)``, a renege) that triggered
    without it. Waiting on it again (``yield req`` after the interrupt) puts
    it back in its original place; a cancelled request never triggers. A
    request created and not yet yielded is waiting: it keeps its place.
    """

    def __init__(self, pool: PasidPool | GuestPool, owner: Any, data: Any, lo: int, hi: int,
                 seq: int) -> None:
        super().__init__(pool.env)
        self.callbacks = _Waiters(self)
        self.pool = pool
        # the host's pool, whose queue holds it, and the VM it asks of (None: the host)
        self._queue: PasidPool = pool if isinstance(pool, PasidPool) else pool.host
        self._space: GuestSpace | None = None if isinstance(pool, PasidPool) else pool.vm
        self.owner = owner
        self.data = data
        self.min = lo
        self.max = hi
        self.requested_at = pool.env.now
        self.granted_at: float | None = None
        self._seq = seq
        self._status = _QUEUED

    def _desc(self) -> str:
        vm = "" if self._space is None else f"vm={self._space.name!r}, "
        return f"PasidRequest({vm}owner={self.owner!r}, min={self.min}, max={self.max})"

    @property
    def waiting(self) -> bool:
        """True while the request is in the pool's queue."""
        return self._status is _QUEUED

    def cancel(self) -> None:
        """Withdraw a pending request for good (it never triggers). O(1).

        A granted request is not undone: its PASID belongs to the caller
        (``pool.put(req.value)`` gives it back).
        """
        if self._status is _QUEUED:
            self._queue._dequeue(self)
            self._queue._tally(self, "cancelled")
        if self._status is not _DONE:
            self._status = _CANCELLED

    def __enter__(self) -> PasidRequest:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    # -- called by the callbacks list (_Waiters)
    def _abandoned(self) -> None:
        if self._status is _QUEUED:
            self._queue._dequeue(self)
            self._queue._tally(self, "withdrawn")
            self._status = _WITHDRAWN

    def _waited_on(self) -> None:
        if self._status is _WITHDRAWN:
            self._status = _QUEUED
            self._queue._tally(self, "withdrawn", -1)
            self._queue._enqueue(self)
            self._queue._serve()


def _delay_until(now: float, at: float) -> float:
    """The smallest delay ``d >= at - now`` with ``now + d >= at`` in floating point.

    SimPy fires a timeout at ``now + delay``; ``now + (at - now)`` can round
    below ``at``, and the allocator would not yet reclaim then.
    """
    delay = max(at - now, 0.0)
    while now + delay < at:
        delay = math.nextafter(delay, math.inf)
    return delay


class PasidPool:
    """PASIDs for SimPy processes: ``p = yield pool.get()``, ``pool.put(p)``.

    Builds ``allocator_class(bits, reserved=..., strategy=..., grace=...,
    seed=..., clock=lambda: env.now)`` (default :class:`pasid.PasidAllocator`,
    the compiled backend unless ``PASID_NO_EXTENSION=1``; pass
    ``pasid.pure.PasidAllocator`` or ``pasid._core.PasidAllocator`` to choose)
    and exposes it as :attr:`allocator` for queries. Release PASIDs through
    the pool (:meth:`put`, :meth:`unbind`, :meth:`exit_owner`,
    :meth:`remove_device`, :meth:`unreserve`) so that waiters are woken; after
    changing :attr:`allocator` directly (a handle's ``close``, a direct
    ``put``), call :meth:`wake`. Taking one more reference frees nothing:
    ``pool.allocator.get(p)`` is fine (``pool.get`` is the SimPy request).

    **Wake-ups.** While someone waits and something is QUARANTINED, one
    SimPy timeout is pending at the earliest release time; a release that
    becomes due earlier schedules one for that time (the later one stays
    scheduled, fires and does nothing, or is reused if that time is the next
    one waited for). Nothing else is scheduled: no periodic check.

    **Order.** Requests are served first-fit in request order: on every
    wake-up the pool tries the waiting requests oldest first, and a request is
    skipped, keeping its place, while nothing in its range is FREE. So a later
    request whose range can be satisfied is served before an earlier one whose
    range cannot, but only with a PASID outside the earlier one's range (the
    earlier one was tried first and found nothing there): no request ever
    loses a PASID it could have used to a younger one.

    **Quota.** A request whose owner is at its quota when it is tried fails
    with :class:`~pasid.QuotaExceeded` (raised in the waiting process) rather
    than waiting: at once in :meth:`get`, or when it is tried on a wake-up,
    which is when a PASID in its range is FREE (a wake-up that frees PASIDs
    only outside its range leaves it waiting, whatever its owner holds).
    A VM's quota is different: it is what the VM has, so a guest request
    (:class:`GuestPool`) at its VM's quota waits like one whose range is full.

    **VMs.** :meth:`add_vm`, :meth:`import_vm` and :meth:`vm` give the
    :class:`GuestPool` of a VM of :attr:`allocator`; its requests join this
    pool's queue (the order above is over the host's and every VM's requests
    together). Remove a VM with :meth:`remove_vm`: its host PASIDs are
    released (waking the others) and its waiting requests fail with
    StateError.

    **Counters: what the model asked.** A request is one allocation, tried
    when it is made: the allocator's ``stats()["failures"]`` counts it once if
    it has to wait (nothing FREE in its range; the pool's
    ``stats()["waited"]`` counts the same requests) and once if it is refused
    at its owner's quota. While it waits, the pool retries it only when the
    allocator will not refuse it for want of a PASID: a wake-up looks at the
    states first (a FREE count, and the states of the range for a request
    narrower than the space), so retries never reach the failure counter.
    Under the pool, with no direct allocator calls, ``allocator.stats()
    ["failures"] == pool.stats()["waited"]`` plus the quota refusals, however
    long the requests wait. A :class:`GuestPool`'s requests follow the same
    rule (the VM's ``stats()["failures"]`` counts a guest request that waits
    once). The pool's own counters are :meth:`stats`.

    Cost: :meth:`get` is the allocator's O(log64 N) when it is served at
    once; a wake-up is O(W) for W waiting requests, plus O(log64 N) per
    allocation, plus, per distinct range narrower than the space of K
    PASIDs, a look at min(K, N - K) states (a range found empty is not
    looked at again in the same wake-up).

    >>> import simpy
    >>> from pasid.simpy import PasidPool
    >>> env = simpy.Environment()
    >>> pool = PasidPool(env, bits=2, grace=5)      # PASIDs 1..3; 0 is reserved
    >>> taken = [pool.allocator.alloc() for _ in range(3)]
    >>> log = []
    >>> def user(env, pool):
    ...     p = yield pool.get(owner="proc")      # nothing FREE: waits
    ...     log.append((env.now, p))
    >>> def closer(env, pool):
    ...     yield env.timeout(2)
    ...     pool.put(taken[0])                    # QUARANTINED until 2 + grace
    >>> _ = env.process(user(env, pool)); _ = env.process(closer(env, pool))
    >>> env.run()
    >>> log
    [(7.0, 1)]
    """

    def __init__(self, env: simpy.Environment, bits: int = 20, *,
                 reserved: Iterable[Any] = (0,), strategy: str = "lowest", grace: float = 0,
                 seed: int | None = None,
                 allocator_class: type[_Allocator] | None = None) -> None:
        if allocator_class is None:
            from pasid import PasidAllocator

            allocator_class = PasidAllocator
        self._env = env
        self._allocator: _Allocator = allocator_class(bits, reserved=reserved, strategy=strategy,
                                          grace=grace, seed=seed, clock=lambda: env.now)
        self._size = 1 << self._allocator.bits
        self._waiting: dict[PasidRequest, None] = {}     # insertion order = request order
        self._seq = 0
        self._acks: dict[Hashable, Ack] = {}
        self._timer: simpy.Event | None = None
        self._timer_at = math.inf
        self._scheduled: dict[float, simpy.Event] = {}   # release time -> timeout not yet fired
        self._serving = False
        self._again = False
        self._new: PasidRequest | None = None
        self._counts = {"requests": 0, "granted": 0, "waited": 0, "refused": 0,
                        "cancelled": 0, "withdrawn": 0, "drains": 0, "timers": 0}
        self._wait_total = 0.0
        self._wait_max = 0.0
        self._guests: dict[GuestSpace, GuestPool] = {}    # the VMs' pools, made once each

    # ------------------------------------------------------------ properties

    @property
    def env(self) -> simpy.Environment:
        """The SimPy environment whose clock the allocator reads."""
        return self._env

    @property
    def allocator(self) -> _Allocator:
        """The wrapped allocator (queries; release through the pool)."""
        return self._allocator

    @property
    def get_queue(self) -> list[PasidRequest]:
        """The waiting requests, oldest first (a copy). O(W)."""
        return list(self._waiting)

    def __repr__(self) -> str:
        return (f"<PasidPool bits={self._allocator.bits} strategy={self._allocator.strategy!r} "
                f"waiting={len(self._waiting)} at {self._env.now}>")

    # ------------------------------------------------------------ requests

    def get(self, owner: Hashable | None = None, *, data: Any = None, min: int | None = None,
            max: int | None = None) -> PasidRequest:
        """A PASID in ``[min, max]`` (inclusive; default the whole space) for ``owner``.

        Returns a :class:`PasidRequest` to ``yield``; its value is the PASID
        (ACTIVE, refcount 1, allocated by the allocator's strategy with
        ``owner`` and ``data``). It succeeds at once when something in range is
        FREE and no older request can use it; otherwise it joins the queue (see
        the class docstring for the order and the wake-ups). It fails with
        QuotaExceeded if the owner is at its quota when tried. Raises at once
        InvalidPasid for a bound outside the space or ``min > max``, TypeError
        for a non-integer bound or an unhashable owner. Cost: O(log64 N) served
        at once, plus a wake-up pass over the queue when others wait.
        """
        lo = 0 if min is None else self._bound(min)
        hi = self._size - 1 if max is None else self._bound(max)
        if lo > hi:
            raise InvalidPasid(f"empty range {lo}..{hi}")
        if owner is not None:
            hash(owner)
        return self._submit(self, owner, data, lo, hi)

    def _submit(self, pool: PasidPool | GuestPool, owner: Any, data: Any, lo: int,
                hi: int) -> PasidRequest:
        """A new request of ``pool`` (this one or one of its VMs'), tried at once."""
        self._seq += 1
        request = PasidRequest(pool, owner, data, lo, hi, self._seq)
        self._tally(request, "requests")
        self._waiting[request] = None
        self._new = request
        try:
            self._serve()
        finally:
            self._new = None
        if request._status is _QUEUED:
            self._tally(request, "waited")
        return request

    def _bound(self, value: Any) -> int:
        p = as_int(value, "PASID")
        if not 0 <= p < self._size:
            raise InvalidPasid(f"PASID {p} out of range 0..{self._size - 1}")
        return p

    # ------------------------------------------------------------ releases

    def put(self, pasid: int) -> None:
        """Drop one reference (the allocator's ``put``); wakes waiters if one became FREE.

        Never waits: a plain call, not an event. The last put releases the
        PASID (DRAINING while a device is bound, then QUARANTINED or FREE);
        bound devices' drain processes start. StateError unless ACTIVE.
        Cost: the allocator's O(log64 N), plus a wake-up pass if anyone waits.
        """
        try:
            self._allocator.put(pasid)
        finally:
            self._serve()   # a teardown callback may raise after the release stands

    free = put

    def unbind(self, pasid: int, device: Hashable) -> None:
        """``device`` has drained ``pasid`` (the allocator's ``unbind``); wakes waiters.

        Cost: the allocator's O(log64 N), plus a wake-up pass if anyone waits.
        """
        try:
            self._allocator.unbind(pasid, device)
        finally:
            self._serve()

    def exit_owner(self, owner: Hashable) -> list[int]:
        """Release every ACTIVE PASID of ``owner`` at once (the allocator's ``exit_owner``).

        Returns them ascending; wakes waiters. Cost: O(k log k) for k PASIDs,
        plus a wake-up pass.
        """
        try:
            return self._allocator.exit_owner(owner)
        finally:
            self._serve()

    def unreserve(self, lo: int, hi: int | None = None) -> None:
        """RESERVED ``lo..hi`` become FREE (the allocator's ``unreserve``); wakes waiters."""
        try:
            self._allocator.unreserve(lo, hi)
        finally:
            self._serve()

    def wake(self) -> None:
        """Serve the waiting requests now and re-arm the release timer. O(W).

        Needed only after changing :attr:`allocator` directly (a direct
        ``put`` or ``unbind`` does not wake anyone; a VM removed directly
        fails its waiting requests here).
        """
        self._fail_removed()
        self._serve()

    # ------------------------------------------------------------ virtual machines

    def _vm_host(self) -> pasid.pure.PasidAllocator:
        # both backends' allocators have the VM methods (SPEC §7); the compiled
        # stubs gain them with the compiled GuestSpace
        return cast("pasid.pure.PasidAllocator", self._allocator)

    def _guest_pool(self, space: GuestSpace) -> GuestPool:
        pool = self._guests.get(space)
        if pool is None:
            pool = self._guests[space] = GuestPool(self, space)
        return pool

    def add_vm(self, vm: Hashable, *, mode: str = "translated",
               bits: SupportsIndex | None = None, quota: SupportsIndex | None = None,
               min: SupportsIndex | None = None, max: SupportsIndex | None = None,
               devices: Iterable[Hashable] = ()) -> GuestPool:
        """A new VM on the allocator (its ``add_vm``, same arguments and errors): its :class:`GuestPool`.

        Declare its ``devices`` with :meth:`add_device` first, so that they
        have drain processes. Cost: the allocator's O(devices).

        >>> import simpy, pasid.pure
        >>> from pasid.simpy import PasidPool
        >>> pool = PasidPool(simpy.Environment(), 8, allocator_class=pasid.pure.PasidAllocator)
        >>> vm = pool.add_vm("vm0", quota=4); vm
        <GuestPool 'vm0' translated waiting=0 at 0>
        >>> vm.vm is pool.allocator.vm("vm0") and pool.vm("vm0") is vm
        True
        """
        return self._guest_pool(self._vm_host().add_vm(
            vm, mode=mode, bits=bits, quota=quota, min=min, max=max, devices=devices))

    def import_vm(self, blob: bytes, vm: Hashable, *, mode: str | None = None,
                  bits: SupportsIndex | None = None, quota: SupportsIndex | None = None,
                  min: SupportsIndex | None = None, max: SupportsIndex | None = None,
                  devices: Iterable[Hashable] | None = None) -> GuestPool:
        """A VM migrated here (the allocator's ``import_vm``, all or nothing): its :class:`GuestPool`.

        ``blob`` is ``GuestSpace.export()`` from the source (``src_vm.vm.export()``);
        MigrationConflict, QuotaExceeded, PasidExhausted, StateError, InvalidPasid
        and SnapshotError as the allocator raises them. The source's waiting
        requests do not move: they fail when the source removes the VM.
        Cost: the allocator's O(k log64 N) for k guest PASIDs.
        """
        return self._guest_pool(self._vm_host().import_vm(
            blob, vm, mode=mode, bits=bits, quota=quota, min=min, max=max, devices=devices))

    def vm(self, vm: Hashable) -> GuestPool:
        """The :class:`GuestPool` of the allocator's VM ``vm`` (StateError for none). O(1)."""
        return self._guest_pool(self._vm_host().vm(vm))

    def remove_vm(self, vm: Hashable) -> list[int]:
        """Remove VM ``vm`` (the allocator's ``remove_vm``): its host PASIDs, ascending.

        Never waits. The host PASIDs are released (bound devices' drain
        processes start; those with no device and no grace are FREE at once),
        the VM's waiting requests fail with StateError and the others are
        woken. StateError for no such VM. Cost: O(k log k) for k PASIDs, plus
        a pass over the queue.

        >>> import simpy, pasid.pure
        >>> from pasid.simpy import PasidPool
        >>> pool = PasidPool(simpy.Environment(), 1, allocator_class=pasid.pure.PasidAllocator)
        >>> vm0, vm1 = pool.add_vm("vm0"), pool.add_vm("vm1")
        >>> g = vm0.get().value                          # the host's only PASID
        >>> waiting, stranded = vm1.get(), vm0.get()
        >>> pool.remove_vm("vm0"), waiting.value, stranded.value
        ([1], 1, StateError("VM 'vm0' has been removed"))
        """
        try:
            return self._vm_host().remove_vm(vm)
        finally:
            self._fail_removed()
            self._serve()

    def _fail_removed(self) -> None:
        """Fail the waiting requests of removed VMs; forget their pools. O(W)."""
        removed = [space for space in self._guests if space.removed]
        if not removed:
            return
        for space in removed:
            del self._guests[space]
        for request in list(self._waiting):
            asked = request._space
            if asked is not None and asked.removed:
                self._refuse(request, StateError(vm_removed(asked.name)))

    # ------------------------------------------------------------ pass-throughs

    def bind(self, pasid: int, device: Hashable, *, data: Any = None) -> None:
        """Bind an ACTIVE PASID to ``device`` (the allocator's ``bind``). O(1) dict work.

        Declare the device with :meth:`add_device` first, or it has no drain
        process and the model must unbind it.
        """
        self._allocator.bind(pasid, device, data=data)

    def reserve(self, lo: int, hi: int | None = None) -> None:
        """FREE ``lo..hi`` become RESERVED (the allocator's ``reserve``)."""
        self._allocator.reserve(lo, hi)

    def set_quota(self, owner: Hashable, n: int | None) -> None:
        """The allocator's ``set_quota``; requests over it fail (they never wait on it)."""
        self._allocator.set_quota(owner, n)

    # ------------------------------------------------------------ devices

    def add_device(self, device: Hashable, *, bits: int = 20, drain: float = 0,
                   ack: Ack = 0) -> int:
        """Declare ``device`` (or update it); returns its handle (the allocator's).

        ``bits`` and ``drain`` are the allocator's (PASID width; quarantine
        time after the device unbinds). ``ack`` is how long the device takes
        to answer a teardown: when a PASID bound to it is released, a drain
        process waits ``ack`` (a number, or ``ack(pasid)`` called at the
        teardown, e.g. a random latency) and then unbinds the PASID through
        the pool, every binding the device holds on it, which wakes waiters.
        ``ack=None``: no drain process, the device answers only when the model
        calls :meth:`unbind` (a device that never answers keeps the PASID
        DRAINING, visibly). A drain process does nothing if the PASID was
        unbound meanwhile (by the model or :meth:`remove_device`). O(1).
        """
        if ack is not None and not callable(ack):
            ack = as_time(ack, "ack")
            if ack < 0:
                raise ValueError(f"ack must be >= 0, got {ack}")
        handle = self._allocator.add_device(
            device, bits=bits, drain=drain, on_teardown=lambda p: self._teardown(device, p))
        self._acks[device] = ack
        return handle

    def remove_device(self, device: Hashable) -> None:
        """Hot-unplug (the allocator's ``remove_device``): its bindings drop; wakes waiters."""
        try:
            self._allocator.remove_device(device)
            self._acks.pop(device, None)
        finally:
            self._serve()

    def _teardown(self, device: Hashable, pasid: int) -> None:
        """``on_teardown`` of a pool device: start its drain process (SPEC §3.2: runs
        after the release is complete, may call back into the allocator)."""
        ack = self._acks.get(device)
        if ack is None:
            return
        latency = as_time(ack(pasid), "ack(pasid)") if callable(ack) else ack
        if latency < 0:
            raise ValueError(f"ack({pasid}) for device {device!r} gave {latency} < 0")
        generation = self._allocator.generation(pasid)
        self._counts["drains"] += 1
        self._env.process(self._drain(device, pasid, generation, latency))

    def _drain(self, device: Hashable, pasid: int, generation: int,
               latency: float) -> Generator[simpy.Event, Any, None]:
        """The drain process: after ``latency``, unbind ``pasid`` from ``device``
        if it is still the same life and still bound there."""
        yield self._env.timeout(latency)
        allocator = self._allocator
        if allocator.generation(pasid) != generation:
            return
        try:
            while device in allocator.devices(pasid):
                allocator.unbind(pasid, device)
        finally:
            self._serve()

    # ------------------------------------------------------------ serving

    def _enqueue(self, request: PasidRequest) -> None:
        """Put a withdrawn request back in its original place. O(W log W), rare."""
        waiting = self._waiting
        if waiting and request._seq < next(reversed(waiting))._seq:
            self._waiting = dict.fromkeys(sorted([*waiting, request], key=lambda r: r._seq))
        else:
            waiting[request] = None

    def _dequeue(self, request: PasidRequest) -> None:
        del self._waiting[request]

    def _serve(self) -> None:
        """Try the waiting requests (one pass, repeated if re-entered), then re-arm the timer."""
        if self._serving:
            self._again = True
            return
        self._serving = True
        try:
            while True:
                self._again = False
                self._pass()
                if not self._again:
                    break
        finally:
            self._serving = False
        self._arm()

    def _pass(self) -> None:
        """First-fit in request order (see the class docstring), host and guest requests alike.

        Every allocation, a guest's too, takes one FREE host PASID: with none,
        nobody but a new request (whose refusal is counted) is tried. A guest
        request is skipped when its VM already found nothing in this pass, or
        its VM's host range lies inside a range found empty."""
        if not self._waiting:
            return
        allocator = self._allocator
        free = allocator.stats()["free"]
        new = self._new
        if not free and (new is None or new._status is not _QUEUED):
            return
        alloc = allocator.alloc
        empty: list[tuple[int, int]] = []     # host ranges found with nothing FREE in this pass
        full: set[GuestSpace] = set()         # VMs that found nothing in this pass
        for request in list(self._waiting):
            space = request._space
            if request is not new:
                # a retry: asked of the allocator only when it will not be refused for
                # want of a PASID (a refusal would count in its failures)
                if not free or space in full:
                    continue
                lo, hi = (request.min, request.max) if space is None else space.host_range
                if any(elo <= lo and hi <= ehi for elo, ehi in empty):
                    continue
                if space is None:
                    if not self._free_in(lo, hi, free):
                        empty.append((lo, hi))
                        continue
                elif not self._guest_room(space, free):
                    full.add(space)
                    continue
            if space is None:
                try:
                    pasid = alloc(request.owner, data=request.data, min=request.min,
                                  max=request.max)
                except QuotaExceeded as exc:
                    self._refuse(request, exc)
                    continue
                except PasidExhausted:
                    empty.append((request.min, request.max))
                    continue
            else:
                try:
                    got = space.try_alloc(request.owner, data=request.data)   # quota: None
                except StateError as exc:      # its VM was removed
                    self._refuse(request, exc)
                    continue
                if got is None:
                    full.add(space)
                    continue
                pasid = got
            self._dequeue(request)
            request._status = _DONE
            now = self._env.now
            request.granted_at = now
            self._tally(request, "granted")
            self._waited(request, now - request.requested_at)
            request.succeed(pasid)
            free -= 1

    def _free_in(self, lo: int, hi: int, free: int) -> bool:
        """Whether a PASID in ``lo..hi`` is FREE, ``free`` being how many are: asked of
        the allocator's states, not by an allocation (whose refusal it would count).
        O(1) for the whole space, else O(min(K, N - K)) for K PASIDs in the range."""
        if free <= 0:
            return False
        size = self._size
        inside = hi - lo + 1
        if inside >= size:
            return True
        states = self._allocator.states
        if inside <= size - inside:
            return bool(np.any(states(np.arange(lo, hi + 1, dtype=np.int64)) == State.FREE))
        outside = np.concatenate((np.arange(0, lo, dtype=np.int64),
                                  np.arange(hi + 1, size, dtype=np.int64)))
        return int(np.count_nonzero(states(outside) == State.FREE)) < free

    def _guest_room(self, space: GuestSpace, free: int) -> bool:
        """Whether VM ``space`` can allocate now (below its quota, a guest number FREE if
        translated, a host PASID FREE in its range), asked without an allocation; True for
        a removed VM (the try fails its request). Cost: :meth:`_free_in`'s."""
        if space.removed:
            return True
        counts = space.stats()
        held = counts["active"] + counts["host_held"]      # what its quota counts
        if 0 <= counts["quota"] <= held:
            return False
        if space.mode == "translated" and counts["active"] >= (1 << space.bits) - 1:
            return False
        return self._free_in(*space.host_range, free)

    def _refuse(self, request: PasidRequest, exc: Exception) -> None:
        self._dequeue(request)
        request._status = _DONE
        self._tally(request, "refused")
        request.fail(exc)

    def _tally(self, request: PasidRequest, key: str, delta: int = 1) -> None:
        """Count in this pool's books and, for a guest request, its VM pool's."""
        self._counts[key] += delta
        if request.pool is not self:
            request.pool._counts[key] += delta

    def _waited(self, request: PasidRequest, wait: float) -> None:
        """A grant's wait, in this pool's books and, for a guest request, its VM pool's."""
        self._wait_total += wait
        self._wait_max = wait if wait > self._wait_max else self._wait_max
        guest = request.pool
        if guest is not self:
            guest._wait_total += wait
            guest._wait_max = wait if wait > guest._wait_max else guest._wait_max

    def _arm(self) -> None:
        """One timeout at the earliest release time while anyone waits; none otherwise."""
        if not self._waiting:
            return
        at = self._allocator.next_release_time()
        if at is None or at >= self._timer_at:
            return          # nothing to wait for, or the current timer fires first
        timer = self._scheduled.get(at)     # one replaced earlier, still to fire: reuse it
        if timer is None:
            timer = self._scheduled[at] = self._env.timeout(_delay_until(self._env.now, at))
            timer.callbacks.append(lambda event: self._on_timer(event, at))   # at: not rebound
            self._counts["timers"] += 1
        self._timer, self._timer_at = timer, at

    def _on_timer(self, event: simpy.Event, at: float) -> None:
        del self._scheduled[at]
        if event is not self._timer:
            return          # replaced by an earlier one
        self._timer, self._timer_at = None, math.inf
        self._serve()

    # ------------------------------------------------------------ counters

    def stats(self) -> dict[str, float]:
        """The pool's counters since construction. O(1).

        ``requests`` (gets made, its VMs' included), ``granted``, ``waited``
        (requests not served inside their ``get`` call), ``refused`` (failed:
        quota, or the VM removed),
        ``cancelled`` (by :meth:`PasidRequest.cancel`), ``withdrawn`` (out of
        the queue because nobody waits on them now), ``waiting`` (in the queue
        now), ``drains`` (drain processes started), ``timers`` (release
        timeouts scheduled), ``wait_total`` and ``wait_max`` (simulation time
        from request to grant, over granted requests).
        """
        return {**self._counts, "waiting": len(self._waiting),
                "wait_total": self._wait_total, "wait_max": self._wait_max}


class GuestPool:
    """One VM's guest PASIDs for SimPy processes: ``g = yield vm.get()``, ``vm.put(g)``.

    Made by the host's pool (:meth:`PasidPool.add_vm`, :meth:`PasidPool.import_vm`,
    :meth:`PasidPool.vm`), never directly; :attr:`vm` is the VM's
    :class:`~pasid.pure.guest.GuestSpace`, for queries (``host_pasid``,
    ``state``, ``stats``, ``export``). Its requests wait in the host pool's
    queue, served first-fit in request order with the host's and the other
    VMs' requests, and are woken by the same events (see the module
    docstring). A request waits while the VM is at its quota, its host range
    has nothing FREE, or (translated) its guest namespace is full; it fails
    with StateError if the VM is removed while it waits. As for the host's
    requests, a guest request that waits counts once in the VM's (and, at the
    quota or with its host range empty, the host's) ``stats()["failures"]``,
    when made; the retries while it waits look at the VM's counts and the
    host's states first and are never refused.

    Release guest PASIDs through this pool (:meth:`put`, :meth:`unbind`,
    :meth:`vcmd`) so that waiters are woken; host PASIDs the guest has freed
    (still DRAINING) are the host's: its pool's ``unbind``, or the device's
    drain process.

    >>> import simpy, pasid.pure
    >>> from pasid.simpy import PasidPool
    >>> env = simpy.Environment()
    >>> host = PasidPool(env, 8, grace=5, allocator_class=pasid.pure.PasidAllocator)
    >>> vm = host.add_vm("vm0", quota=1)
    >>> g = vm.vm.alloc()                        # the VM at its quota
    >>> log = []
    >>> def guest(env, vm):
    ...     g = yield vm.get(owner="guest-proc")  # waits for the quota
    ...     log.append((env.now, g, vm.vm.host_pasid(g)))
    >>> def closer(env, vm):
    ...     yield env.timeout(2)
    ...     vm.put(g)                             # guest number 1 FREE; host PASID held to 7
    >>> _ = env.process(guest(env, vm)); _ = env.process(closer(env, vm))
    >>> env.run()
    >>> log
    [(7.0, 1, 1)]
    """

    def __init__(self, host: PasidPool, space: GuestSpace) -> None:
        self._host = host
        self._space = space
        self._counts = {"requests": 0, "granted": 0, "waited": 0, "refused": 0,
                        "cancelled": 0, "withdrawn": 0}
        self._wait_total = 0.0
        self._wait_max = 0.0

    # ------------------------------------------------------------ properties

    @property
    def env(self) -> simpy.Environment:
        """The SimPy environment (the host pool's)."""
        return self._host.env

    @property
    def host(self) -> PasidPool:
        """The host's pool: its queue, release timer and drain processes serve this VM."""
        return self._host

    @property
    def vm(self) -> GuestSpace:
        """The VM's GuestSpace (queries; release through this pool)."""
        return self._space

    @property
    def name(self) -> Hashable:
        """The VM's name (its owner key on the host)."""
        return self._space.name

    @property
    def get_queue(self) -> list[PasidRequest]:
        """This VM's waiting requests, oldest first (a copy). O(W) for W waiting on the host."""
        return [request for request in self._host._waiting if request.pool is self]

    def __repr__(self) -> str:
        state = " removed" if self._space.removed else ""
        return (f"<GuestPool {self._space.name!r} {self._space.mode} "
                f"waiting={len(self.get_queue)} at {self.env.now}{state}>")

    # ------------------------------------------------------------ requests

    def get(self, owner: Any = None, *, data: Any = None) -> PasidRequest:
        """A guest PASID for the guest's ``owner`` tag (kept, never hashed): a :class:`PasidRequest`.

        Its value is what ``vm.alloc(owner, data=data)`` returns (translated:
        the lowest FREE guest number; identity: the host PASID), given at
        once if it can be and no older request of the host can use the host
        PASID, else when a wake-up finds one. StateError at once for a removed
        VM. Cost: O(log64 N) served at once, plus a wake-up pass over the
        host's queue when others wait.
        """
        space = self._space
        if space.removed:
            raise StateError(vm_removed(space.name))
        if space.mode == "translated":
            lo, hi = 1, (1 << space.bits) - 1
        else:
            lo, hi = space.host_range
        return self._host._submit(self, owner, data, lo, hi)

    # ------------------------------------------------------------ releases

    def put(self, pasid: SupportsIndex) -> None:
        """Drop one reference to a guest PASID (the VM's ``put``); wakes waiters.

        Never waits. The last put releases the host PASID: bound devices'
        drain processes start, and the host PASID is FREE at
        ``max(release + grace, unbind + drain)``; a translated guest number
        is FREE at once. StateError unless ACTIVE in the guest. Cost:
        O(log64 N), plus a wake-up pass if anyone waits.
        """
        try:
            self._space.put(pasid)
        finally:
            self._host._serve()

    free = put

    def unbind(self, pasid: SupportsIndex, device: Hashable) -> None:
        """``device`` has drained an ACTIVE guest PASID (the VM's ``unbind``); wakes waiters.

        Cost: O(devices bound), plus a wake-up pass if anyone waits.
        """
        try:
            self._space.unbind(pasid, device)
        finally:
            self._host._serve()

    def vcmd(self, word: SupportsIndex, *, encoding: str = "3.3") -> int:
        """The VM's virtual command register (its ``vcmd``): the response word; wakes waiters.

        An ALLOC through the register does not wait: it answers "no PASID
        available" where :meth:`get` would wait. Cost: O(log64 N), plus a
        wake-up pass if anyone waits.
        """
        try:
            return self._space.vcmd(word, encoding=encoding)
        finally:
            self._host._serve()

    def wake(self) -> None:
        """The host pool's :meth:`PasidPool.wake`. O(W)."""
        self._host.wake()

    # ------------------------------------------------------------ pass-throughs

    def bind(self, pasid: SupportsIndex, device: Hashable, *, data: Any = None) -> None:
        """Bind an ACTIVE guest PASID to one of the VM's devices (the VM's ``bind``). O(devices bound).

        Declare the device with the host pool's :meth:`PasidPool.add_device`
        so that a release starts its drain process.
        """
        self._space.bind(pasid, device, data=data)

    # ------------------------------------------------------------ counters

    def stats(self) -> dict[str, float]:
        """This VM's request counters, as :meth:`PasidPool.stats` counts them. O(W).

        ``requests``, ``granted``, ``waited``, ``refused`` (its VM removed),
        ``cancelled``, ``withdrawn``, ``waiting``, ``wait_total``,
        ``wait_max``; the host pool's counters include these.
        """
        return {**self._counts, "waiting": len(self.get_queue),
                "wait_total": self._wait_total, "wait_max": self._wait_max}
