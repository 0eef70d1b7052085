"""Guests: PASIDs a VMM allocates on a host for its virtual machines (SPEC §7).

The twin of ``pasid/_guest.pxi``. A :class:`GuestSpace` is one VM's view of
the host allocator. Two modes:

- **identity**: guest PASID == host PASID (one system-wide namespace: what
  ENQCMD needs, what Linux's VCMD support and VFIO PASID attach do);
- **translated**: the VM has its own namespace ``1 .. 2**bits - 1`` (0
  reserved); guest PASID g maps to a host PASID h, so two VMs may both hold
  g = 101, and a migrated guest keeps its numbers.

How it sits on the host::

    guest driver --VCMD--> GuestSpace --alloc/free/bind--> PasidAllocator --> devices
          g                  g <-> h (O(1) both ways)          h

Every host PASID of a VM is owned by the VM: the owner key is the VM's name,
whose owner record is pinned for the VM's life and points back at its
GuestSpace (``_Owner.guest``). So the host's quota, grace, device drain and
quarantine apply to a guest's PASIDs as to any other, and a host PASID leaves
its guest in one place: the host's release (``release.py`` calls
:func:`guest_unmap` when an ACTIVE PASID of a VM's record is released, by the
guest's last put, the host's own free, ``exit_owner`` or :meth:`remove_vm`).
A translated guest number is FREE again at that moment, while the host PASID
drains and sits out its quarantine; an identity guest number is the host
PASID, so it comes back when the host's does.

Tables (the compiled twin keeps them in C arrays): per VM, ``_host_of``
guest -> host; per host (``VMTable.guest_of``), host -> guest for every
mapped host PASID; a translated VM's free guest numbers in an ID space of its
own (the lowest FREE is given). Every operation runs in the host's phases and
under its lock, so a check and the change it guards are one step.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, SupportsIndex, cast

from pasid import _args, _messages, _vcmd
from pasid import _vmblob as _vm_blob
from pasid._callbacks import Teardown, run_teardown
from pasid._errors import InvalidPasid, MigrationConflict, PasidExhausted, QuotaExceeded, StateError
from pasid._state import ACTIVE, FREE, RESERVED, State
from pasid.pure.batch import batch_unfill
from pasid.pure.bindings import _Device, _Later, bind_in, device_record, unbind_in
from pasid.pure.idspace import IdSpace
from pasid.pure.owners import _Owner, owner_lookup, owner_record, owner_unpin
from pasid.pure.release import release, teardown_of

if TYPE_CHECKING:
    from pasid.pure.allocator import PasidAllocator

__all__ = ["GuestSpace", "VMHost", "VMTable", "add_vm", "find_vm", "import_vm", "make_vm",
           "remove_vm"]

COUNT_MAX = _args.COUNT_MAX
_STATE_NAMES = _args.STATE_NAMES
MODES = _args.VM_MODES            # ("identity", "translated"): a mode is its index
IDENTITY, TRANSLATED = 0, 1


class VMTable:
    """A host's VMs: made at its first :meth:`add_vm`.

    ``vms`` in the order they were added; ``guest_of`` host PASID -> guest
    PASID for every mapped host PASID; ``assigned`` device record -> its VM.
    """

    __slots__ = ("vms", "guest_of", "assigned")

    def __init__(self) -> None:
        self.vms: list[GuestSpace] = []
        self.guest_of: dict[int, int] = {}
        self.assigned: dict[_Device, GuestSpace] = {}


class GuestSpace:
    """One VM's PASIDs on a host (pure-Python backend): made by ``PasidAllocator.add_vm``.

    ``alloc``/``free``/``get``/``put``/``bind``/``unbind`` take guest PASIDs
    and act on the host PASIDs behind them; ``len``, ``iter`` and ``in`` see
    the guest PASIDs that are ACTIVE. A removed VM refuses everything with
    StateError.

    >>> from pasid.pure import PasidAllocator
    >>> host = PasidAllocator(bits=8, grace=10)
    >>> _ = host.add_device("vf0")
    >>> vm = host.add_vm("vm0", devices=("vf0",), min=100)
    >>> g = vm.alloc(); h = vm.host_pasid(g)
    >>> g, h, vm.guest_pasid(h), host.owner(h)
    (1, 100, 1, 'vm0')
    >>> vm.free(g); vm.state(g).name, host.state(h).name
    ('FREE', 'QUARANTINED')
    """

    __slots__ = ("_host", "_name", "_mode", "_bits", "_lo", "_hi", "_record", "_devices",
                 "_space", "_host_of", "_owner", "_removed", "_allocations", "_failures",
                 "_table")

    def __init__(self, host: PasidAllocator, name: Hashable, mode: int, bits: int, lo: int,
                 hi: int, record: _Owner, devices: list[_Device], table: VMTable) -> None:
        self._host = host
        self._table = table                      # the host's VMs
        self._name = name
        self._mode = mode
        self._bits = bits
        self._lo, self._hi = lo, hi              # the host PASIDs it may take
        self._record = record                    # its owner record on the host, pinned
        self._devices = devices
        self._space: IdSpace | None = None       # translated: the guest numbers
        if mode == TRANSLATED:
            self._space = IdSpace(1 << bits)
            self._space.take(0)                  # guest PASID 0 is reserved
        self._host_of: dict[int, int] = {}       # guest PASID -> host PASID, while ACTIVE
        self._owner: dict[int, Any] = {}         # guest PASID -> its owner tag
        self._removed = False
        self._allocations = 0
        self._failures = 0

    def _unmap(self, h: int) -> None:
        """Host PASID ``h`` of the VM left ACTIVE (the host's ``release``, lock held):
        its guest PASID goes, FREE at once in a translated guest."""
        host = self._host
        g = self._table.guest_of.pop(h, None)
        if g is None:
            return                               # the VM's name used as a host owner
        del self._host_of[g]
        if self._space is not None:
            self._space.release(g)
        tag = self._owner.pop(g, None)
        if tag is not None:
            host._graveyard.append(tag)          # dropped in phase 3

    # ------------------------------------------------------------ phase 1: prepare

    def _check_guest(self, value: Any) -> int:
        g = _args.as_int(value, "guest PASID")
        if not 0 <= g < 1 << self._bits:
            raise InvalidPasid(_messages.out_of_range(value, 1 << self._bits))
        return g

    def _mapped(self, what: str, g: int) -> int:
        """The host PASID behind guest PASID ``g`` (lock held); StateError if none."""
        if self._removed:
            raise StateError(_messages.vm_removed(self._name))
        h = self._host_of.get(g)
        if h is None:
            raise StateError(_messages.not_active(what, g, self._state_in(g).name))
        return h

    # ------------------------------------------------------------ allocation

    def _alloc_in(self, g: int, owner: object, data: object) -> int:
        """Phase 2 of an allocation (lock held, time settled): guest PASID ``g`` (-1:
        the lowest FREE) backed by a new host PASID; -1 when nothing is FREE, -2 at
        the quota (both counted as failures)."""
        host, record = self._host, self._record
        if record.quota >= 0 and record.use >= record.quota:
            host._failures += 1
            self._failures += 1
            return -2
        space = self._space
        if space is not None:
            if g < 0:
                g = space.find_free(1, (1 << self._bits) - 1)
                if g < 0:
                    self._failures += 1
                    return -1
            h = host._alloc_in(record, data, self._lo, self._hi)
            if h < 0:
                self._failures += 1
                return -1
            space.take(g)
        else:
            if g < 0:
                h = host._alloc_in(record, data, self._lo, self._hi)
                if h < 0:
                    self._failures += 1
                    return -1
            else:
                h = g
                if host._generation[h] == COUNT_MAX:
                    raise OverflowError(_messages.generation_limit(h))
                host._activate(h, record, data)
                if host._counts[ACTIVE] > host._high_water:
                    host._high_water = host._counts[ACTIVE]
            g = h
        self._host_of[g] = h
        self._table.guest_of[h] = g
        if owner is not None:
            self._owner[g] = owner
        self._allocations += 1
        return g

    def _alloc(self, g: int, owner: object, data: object) -> int:
        host = self._host
        reading = host._reading()
        with host._lock:
            if self._removed:
                raise StateError(_messages.vm_removed(self._name))
            host._settle_time(host._time(reading))
            if g >= 0:
                state = self._state_in(g)
                if state != FREE:
                    raise StateError(_messages.not_free(g, state.name))
            got = self._alloc_in(g, owner, data)
        if host._gone or host._graveyard:
            host._after()
        if got == -2:
            raise QuotaExceeded(_messages.at_quota(self._name, self._record.quota))
        if got < 0:
            raise PasidExhausted(host._exhausted(_messages.guest_no_free(self._name)))
        return got

    def alloc(self, owner: object = None, *, data: object = None) -> int:
        """A guest PASID, backed by a host PASID the VM owns: ACTIVE, refcount 1. O(log64 N).

        Translated: the lowest FREE guest number, and a host PASID in the VM's
        range by the host's strategy; identity: the host PASID itself.
        ``owner`` tags it in the guest (a guest process, say: kept, exported,
        never hashed); ``data`` is kept with the host PASID. PasidExhausted
        when the guest or the VM's host range has nothing FREE, QuotaExceeded
        at the VM's quota.

        >>> from pasid.pure import PasidAllocator
        >>> host = PasidAllocator(bits=8); vm = host.add_vm("vm0", min=200)
        >>> vm.alloc(owner="guest-proc"), vm.host_pasid(1)
        (1, 200)
        """
        return self._alloc(-1, owner, data)

    def alloc_exact(self, pasid: SupportsIndex, owner: object = None, *,
                    data: object = None) -> int:
        """Allocate guest PASID ``pasid`` (StateError unless FREE in the guest). O(log64 N).

        >>> from pasid.pure import PasidAllocator
        >>> vm = PasidAllocator(bits=8).add_vm("vm0"); vm.alloc_exact(42)
        42
        """
        return self._alloc(self._check_guest(pasid), owner, data)

    # ------------------------------------------------------------ references

    def get(self, pasid: SupportsIndex) -> None:
        """One more reference to an ACTIVE guest PASID (its host PASID's). O(1).

        >>> from pasid.pure import PasidAllocator
        >>> host = PasidAllocator(bits=8); vm = host.add_vm("vm0")
        >>> g = vm.alloc(); vm.get(g); host.refcount(vm.host_pasid(g))
        2
        """
        g = self._check_guest(pasid)
        host = self._host
        reading = host._reading()
        with host._lock:
            h = self._mapped("get", g)
            host._settle_time(host._time(reading))
            host._ref_inc(h)

    def put(self, pasid: SupportsIndex) -> None:
        """Drop one reference to an ACTIVE guest PASID; the last releases its host PASID. O(log64 N).

        Released, the host PASID drains, sits out the host's grace and goes
        FREE as any other; a translated guest number is FREE at once.
        StateError unless ACTIVE in the guest.

        >>> from pasid.pure import PasidAllocator
        >>> host = PasidAllocator(bits=8, grace=5); vm = host.add_vm("vm0")
        >>> g = vm.alloc(); vm.put(g); g in vm, vm.stats()["host_held"]
        (False, 1)
        """
        g = self._check_guest(pasid)
        host = self._host
        reading = host._reading()
        teardown: Teardown = []
        with host._lock:
            h = self._mapped("free", g)
            now = host._time(reading)
            host._settle_time(now)
            if host._refcount[h] > 1:
                host._refcount[h] -= 1
            else:
                release(host, h, now)            # unmaps g (guest_unmap)
                teardown_of(host, h, teardown)
        if host._gone or host._graveyard:
            host._after()
        if teardown:
            run_teardown(teardown)

    def free(self, pasid: SupportsIndex) -> None:
        """The same as :meth:`put`. O(log64 N).

        >>> from pasid.pure import PasidAllocator
        >>> vm = PasidAllocator(bits=8).add_vm("vm0"); vm.free(vm.alloc()); len(vm)
        0
        """
        self.put(pasid)

    # ------------------------------------------------------------ devices

    def _device(self, device: Hashable) -> _Device:
        """Phase 1: the record of one of the VM's devices (StateError otherwise)."""
        info = device_record(self._host, device, False)
        if info is None or info not in self._devices:
            raise StateError(_messages.not_assigned(device, self._name))
        return info

    def bind(self, pasid: SupportsIndex, device: Hashable, *, data: object = None) -> None:
        """Bind an ACTIVE guest PASID's host PASID to one of the VM's devices. O(devices bound).

        As the host's ``bind``; StateError for a device not assigned to the VM.

        >>> from pasid.pure import PasidAllocator
        >>> host = PasidAllocator(bits=8); _ = host.add_device("vf0")
        >>> vm = host.add_vm("vm0", devices=["vf0"]); g = vm.alloc(); vm.bind(g, "vf0")
        >>> host.devices(vm.host_pasid(g))
        ['vf0']
        """
        g = self._check_guest(pasid)
        info = self._device(device)
        host = self._host
        reading = host._reading()
        try:
            with host._lock:
                h = self._mapped("bind", g)
                if info.gone or self._table.assigned.get(info) is not self:
                    raise _Later(StateError, _messages.not_assigned, device, self._name)
                host._settle_time(host._time(reading))
                bind_in(host, h, info, data)
        except _Later as late:
            raise late.build() from None

    def unbind(self, pasid: SupportsIndex, device: Hashable) -> None:
        """The device has drained an ACTIVE guest PASID. O(devices bound).

        Once the guest has freed it, the host PASID (DRAINING) is the host's
        to unbind: ``host.unbind(h, device)``, ``h`` from the teardown
        callback or :meth:`host_pasid` taken before.

        >>> from pasid.pure import PasidAllocator
        >>> host = PasidAllocator(bits=8); _ = host.add_device("vf0")
        >>> vm = host.add_vm("vm0", devices=["vf0"]); g = vm.alloc(); vm.bind(g, "vf0")
        >>> vm.unbind(g, "vf0"); host.devices(vm.host_pasid(g))
        []
        """
        g = self._check_guest(pasid)
        info = self._device(device)
        host = self._host
        reading = host._reading()
        try:
            with host._lock:
                h = self._mapped("unbind", g)
                now = host._time(reading)
                host._settle_time(now)
                unbind_in(host, h, info, now)
        except _Later as late:
            raise late.build() from None
        if host._gone or host._graveyard:
            host._after()

    # ------------------------------------------------------------ queries

    def _state_in(self, g: int) -> State:
        """The guest's view of ``g`` (lock held)."""
        if g in self._host_of:
            return State.ACTIVE
        if self._removed:
            return State.RESERVED
        if self._mode == TRANSLATED:
            return State.RESERVED if g == 0 else State.FREE
        host = self._host
        state = host._state[g]
        if host._owner_of.get(g) is self._record and state != ACTIVE:
            return State(state)                  # its own, in the host's release
        if state == FREE and self._lo <= g <= self._hi:
            return State.FREE
        return State.RESERVED                    # the host's, another VM's, or out of range

    def state(self, pasid: SupportsIndex) -> State:
        """The guest's view of a guest PASID. O(1).

        ACTIVE: the VM holds it. Translated: every other number is FREE (0:
        RESERVED). Identity: the VM's own host PASID in release shows the
        host's state (DRAINING, QUARANTINED); a FREE host PASID in the VM's
        range is FREE; anything else (the host's, another VM's, outside the
        range) is RESERVED.

        >>> from pasid.pure import PasidAllocator
        >>> host = PasidAllocator(bits=8, grace=5); vm = host.add_vm("vm0", mode="identity")
        >>> g = vm.alloc(); vm.free(g); vm.state(g).name
        'QUARANTINED'
        """
        g = self._check_guest(pasid)
        host = self._host
        reading = host._reading()
        with host._lock:
            host._settle_time(host._time(reading))
            return self._state_in(g)

    def host_pasid(self, pasid: SupportsIndex) -> int:
        """The host PASID behind an ACTIVE guest PASID (StateError otherwise). O(1).

        >>> from pasid.pure import PasidAllocator
        >>> vm = PasidAllocator(bits=8).add_vm("vm0", mode="identity"); vm.host_pasid(vm.alloc())
        1
        """
        g = self._check_guest(pasid)
        with self._host._lock:
            return self._mapped("host_pasid", g)

    def guest_pasid(self, host_pasid: SupportsIndex) -> int:
        """The guest PASID of one of the VM's ACTIVE host PASIDs (StateError otherwise). O(1).

        >>> from pasid.pure import PasidAllocator
        >>> host = PasidAllocator(bits=8); vm = host.add_vm("vm0", min=50)
        >>> vm.guest_pasid(vm.host_pasid(vm.alloc()))
        1
        """
        host = self._host
        h = host._check_id(host_pasid)
        with host._lock:
            if self._removed:
                raise StateError(_messages.vm_removed(self._name))
            g = self._table.guest_of.get(h)
            if g is None or host._owner_of.get(h) is not self._record:
                raise StateError(_messages.not_guest(h, self._name))
            return g

    def owner(self, pasid: SupportsIndex) -> Any:
        """The guest owner tag of an ACTIVE guest PASID, or None. O(1).

        >>> from pasid.pure import PasidAllocator
        >>> vm = PasidAllocator(bits=8).add_vm("vm0"); vm.owner(vm.alloc("init"))
        'init'
        """
        g = self._check_guest(pasid)
        with self._host._lock:
            self._mapped("owner", g)
            return self._owner.get(g)

    def stats(self) -> dict[str, int]:
        """Counters: ``active`` guest PASIDs, ``host_held`` (the VM's host PASIDs
        DRAINING or QUARANTINED), ``quota`` (-1: none), ``allocations``,
        ``failures``. O(1).

        >>> from pasid.pure import PasidAllocator
        >>> vm = PasidAllocator(bits=8).add_vm("vm0", quota=1); _ = vm.alloc()
        >>> vm.try_alloc() is None, vm.stats()["failures"]
        (True, 1)
        """
        with self._host._lock:
            record = self._record
            return {"active": len(self._host_of), "host_held": record.use - len(record.active),
                    "quota": record.quota, "allocations": self._allocations,
                    "failures": self._failures}

    def try_alloc(self, owner: object = None, *, data: object = None) -> int | None:
        """Like :meth:`alloc`, but None where alloc raises PasidExhausted (quota included). O(log64 N).

        >>> from pasid.pure import PasidAllocator
        >>> vm = PasidAllocator(bits=1).add_vm("vm0"); vm.try_alloc(), vm.try_alloc()
        (1, None)
        """
        host = self._host
        reading = host._reading()
        with host._lock:
            if self._removed:
                raise StateError(_messages.vm_removed(self._name))
            host._settle_time(host._time(reading))
            got = self._alloc_in(-1, owner, data)
        if host._gone or host._graveyard:
            host._after()
        return got if got >= 0 else None

    # ------------------------------------------------------------ the virtual command

    def vcmd(self, word: SupportsIndex, *, encoding: str = "3.3") -> int:
        """The virtual command register: a command word in, the response word out. O(log64 N).

        ALLOC (1) allocates a guest PASID as :meth:`alloc` does; FREE (2)
        frees the guest PASID in the operand as :meth:`free` does. The
        response carries the status (success, no PASID available, invalid
        PASID, undefined command) and ALLOC's PASID, in the register layout
        ``encoding`` names (``pasid._vcmd`` has both, and the driver's macros
        they come from). A bad word is answered with a status, never raised,
        and changes nothing; a removed VM raises StateError.

        >>> from pasid.pure import PasidAllocator
        >>> from pasid._vcmd import ALLOC, FREE
        >>> vm = PasidAllocator(bits=8).add_vm("vm0")
        >>> hex(vm.vcmd(ALLOC)), hex(vm.vcmd(FREE | 1 << 16))
        ('0x10000', '0x0')
        >>> hex(vm.vcmd(FREE | 1 << 16))        # no longer allocated: invalid PASID
        '0x20'
        """
        cmd, operand = _vcmd.decode(word, encoding)
        host = self._host
        reading = host._reading()
        teardown: Teardown = []
        status, result = _vcmd.Status.SUCCESS, 0
        with host._lock:
            if self._removed:
                raise StateError(_messages.vm_removed(self._name))
            now = host._time(reading)
            host._settle_time(now)
            if cmd == _vcmd.ALLOC:
                got = self._alloc_in(-1, None, None)
                if got < 0:
                    status = _vcmd.Status.NO_PASID
                else:
                    result = got
            elif cmd == _vcmd.FREE:
                h = self._host_of.get(operand) if operand < 1 << self._bits else None
                if h is None:
                    status = _vcmd.Status.INVALID_PASID
                elif host._refcount[h] > 1:
                    host._refcount[h] -= 1
                else:
                    release(host, h, now)
                    teardown_of(host, h, teardown)
            else:
                status = _vcmd.Status.UNDEFINED_COMMAND
        if host._gone or host._graveyard:
            host._after()
        if teardown:
            run_teardown(teardown)
        return _vcmd.respond(status, result, encoding)

    # ------------------------------------------------------------ migration

    def export(self) -> bytes:
        """The VM's ACTIVE guest PASIDs, for :meth:`PasidAllocator.import_vm` on another host. O(k).

        Each with its number, refcount, owner tag, data and bindings to the
        VM's devices (by name); versioned and checksummed like snapshots. The
        VM is unchanged: the VMM removes it once the destination has it.

        >>> from pasid.pure import PasidAllocator
        >>> src = PasidAllocator(bits=8); vm = src.add_vm("vm0"); g = vm.alloc(data="ctx")
        >>> dst = PasidAllocator(bits=8); _ = dst.alloc_many(10)
        >>> moved = dst.import_vm(vm.export(), "vm0"); list(moved), moved.host_pasid(g)
        ([1], 11)
        """
        host = self._host
        with host._lock:
            if self._removed:
                raise StateError(_messages.vm_removed(self._name))
            handles = {info.handle: i for i, info in enumerate(self._devices)}
            guests = sorted(self._host_of)
            hosts = [self._host_of[g] for g in guests]
            tags: tuple[list[int], list[Any]] = ([], [])
            data: tuple[list[int], list[Any]] = ([], [])
            bindings: tuple[list[int], list[int], list[int]] = ([], [], [])
            binding_data: tuple[list[int], list[Any]] = ([], [])
            for row, (g, h) in enumerate(zip(guests, hosts)):
                if g in self._owner:
                    tags[0].append(row)
                    tags[1].append(self._owner[g])
                if h in host._data:
                    data[0].append(row)
                    data[1].append(host._data[h])
                for handle, (count, value) in host._bindings.get(h, {}).items():
                    if handle in handles:
                        if value is not None:
                            binding_data[0].append(len(bindings[0]))
                            binding_data[1].append(value)
                        bindings[0].append(row)
                        bindings[1].append(handles[handle])
                        bindings[2].append(count)
            state = {"mode": MODES[self._mode], "bits": self._bits,
                     "devices": [info.key for info in self._devices], "guests": guests,
                     "refcounts": [host._refcount[h] for h in hosts], "tags": tags,
                     "data": data, "bindings": bindings, "binding_data": binding_data}
        return _vm_blob.dumps(state)

    # ------------------------------------------------------------ the guest's PASIDs

    @property
    def name(self) -> Hashable:
        """The VM's name: its owner key on the host. O(1)."""
        return self._name

    @property
    def mode(self) -> str:
        """``"identity"`` or ``"translated"``. O(1)."""
        return MODES[self._mode]

    @property
    def bits(self) -> int:
        """The guest's PASID width. O(1)."""
        return self._bits

    @property
    def host_range(self) -> tuple[int, int]:
        """(lowest, highest) host PASID the VM may take. O(1)."""
        return self._lo, self._hi

    @property
    def devices(self) -> tuple[Hashable, ...]:
        """The devices assigned to the VM, in the order given. O(devices)."""
        return tuple(info.key for info in self._devices)

    @property
    def removed(self) -> bool:
        """True once :meth:`PasidAllocator.remove_vm` has removed it. O(1)."""
        return self._removed

    def __len__(self) -> int:
        with self._host._lock:
            return len(self._host_of)

    def __iter__(self) -> Iterator[int]:
        with self._host._lock:
            return iter(sorted(self._host_of))

    def __contains__(self, pasid: object) -> bool:
        try:
            g = _args.as_int(pasid, "guest PASID")
        except TypeError:
            return False
        with self._host._lock:
            return g in self._host_of

    def __repr__(self) -> str:
        return (f"<GuestSpace {self._name!r} {MODES[self._mode]} bits={self._bits} "
                f"host {self._lo}..{self._hi} active={len(self)}"
                f"{' removed' if self._removed else ''}>")


# ---------------------------------------------------------------- the host's side


def _devices_of(a: PasidAllocator, devices: Any) -> list[_Device]:
    """Phase 1: the records of ``devices`` (declared, each once)."""
    if isinstance(devices, (str, bytes)):
        devices = (devices,)
    records: list[_Device] = []
    for device in devices:
        info = device_record(a, device, False)
        if info is None:
            raise StateError(_messages.undeclared_device(device))
        if info in records:
            raise ValueError(_messages.device_twice(device))
        records.append(info)
    return records


def _layout(a: PasidAllocator, mode: Any, bits: Any, min: Any, max: Any,
            records: list[_Device]) -> tuple[int, int, int, int]:
    """Phase 1: (mode, guest bits, lowest, highest host PASID) from add_vm's arguments.

    The VM's host PASIDs are bound to its devices, and identity's are guest
    PASIDs too: the range is narrowed to what they can address."""
    index = _args.as_vm_mode(mode)
    narrowest = a._bits
    for info in records:
        narrowest = info.bits if info.bits < narrowest else narrowest
    width = narrowest if bits is None else _args.as_bits(bits, "guest bits")
    if width > narrowest:
        raise InvalidPasid(_messages.guest_too_wide(width, narrowest))
    lo, hi = a._bounds(min, max)
    lo = lo if lo else 1                         # PASID 0 is no guest's (RID_PASID in VT-d)
    top = (1 << (width if index == IDENTITY else narrowest)) - 1
    hi = hi if hi < top else top
    if lo > hi:
        raise InvalidPasid(_messages.empty_range(lo, hi))
    return index, width, lo, hi


def _create(a: PasidAllocator, vm: Hashable, index: int, width: int, lo: int, hi: int,
            quota: int, records: list[_Device], record: _Owner) -> GuestSpace:
    """Phase 2 of add_vm and import_vm (lock held): the checks, then the VM."""
    if record.guest is not None:
        raise _Later(StateError, _messages.vm_exists, vm)
    if record.use:
        raise _Later(StateError, _messages.owner_busy, vm, record.use)
    table = a._vms if a._vms is not None else VMTable()
    for info in records:
        if info.gone:
            raise _Later(StateError, _messages.undeclared_device, info.key)
        if info in table.assigned:
            raise _Later(StateError, _messages.device_taken, info.key,
                         table.assigned[info]._name)
    return make_vm(a, vm, index, width, lo, hi, quota, records, record)


def make_vm(a: PasidAllocator, vm: Hashable, index: int, width: int, lo: int, hi: int,
            quota: int, records: list[_Device], record: _Owner) -> GuestSpace:
    """The VM made and linked, checked before (lock held): by :func:`_create`, and by
    a snapshot's load (``export.py``), whose check stands for add_vm's."""
    table = a._vms if a._vms is not None else VMTable()
    space = GuestSpace(a, vm, index, width, lo, hi, record, records, table)
    a._vms = table
    table.vms.append(space)
    for info in records:
        table.assigned[info] = space
    record.guest = space
    if quota >= 0:
        record.quota = quota
        a._quota[record] = quota
    return space


def add_vm(a: PasidAllocator, vm: Hashable, mode: Any, bits: Any, quota: Any, min: Any,
           max: Any, devices: Any) -> GuestSpace:
    """The phases of :meth:`PasidAllocator.add_vm`."""
    if vm is None:
        raise ValueError(_messages.VM_NONE)
    records = _devices_of(a, devices)
    index, width, lo, hi = _layout(a, mode, bits, min, max, records)
    limit = -1 if quota is None else _args.as_quota(quota)
    record = owner_record(a, vm)                 # pinned: the VM keeps the pin
    created = False
    try:
        with a._lock:
            space = _create(a, vm, index, width, lo, hi, limit, records, record)
            created = True
    except _Later as late:
        raise late.build() from None
    finally:
        if not created:
            owner_unpin(a, record)
    if a._gone or a._graveyard:
        a._after()
    return space


def find_vm(a: PasidAllocator, vm: Hashable) -> GuestSpace:
    """Phase 1: the GuestSpace named ``vm`` (StateError if there is none)."""
    record = owner_lookup(a, vm)
    space = None if record is None else record.guest
    if space is None:
        raise StateError(_messages.unknown_vm(vm))
    return cast(GuestSpace, space)


def remove_vm(a: PasidAllocator, vm: Hashable) -> list[int]:
    """The phases of :meth:`PasidAllocator.remove_vm`."""
    space = find_vm(a, vm)
    record = space._record
    teardown: Teardown = []
    reading = a._reading()
    with a._lock:
        if space._removed:
            raise StateError(_messages.unknown_vm(vm))
        now = a._time(reading)
        a._settle_time(now)
        released = sorted(record.active)
        for h in released:
            release(a, h, now)                   # unmaps each guest PASID
        for h in released:
            teardown_of(a, h, teardown)
        table = space._table
        table.vms.remove(space)
        for info in space._devices:
            if table.assigned.get(info) is space:
                del table.assigned[info]
        a._quota.pop(record, None)
        record.quota = -1
        record.guest = None
        space._removed = True
    owner_unpin(a, record)                       # the VM's pin: idle now, it is dropped
    if a._gone or a._graveyard:
        a._after()
    if teardown:
        run_teardown(teardown)
    return released


def import_vm(a: PasidAllocator, blob: Any, vm: Hashable, mode: Any, bits: Any, quota: Any,
              min: Any, max: Any, devices: Any) -> GuestSpace:
    """The phases of :meth:`PasidAllocator.import_vm`: all or nothing."""
    if vm is None:
        raise ValueError(_messages.VM_NONE)
    state = _vm_blob.loads(blob)
    records = _devices_of(a, state["devices"] if devices is None else devices)
    if len(records) < len(state["devices"]):
        raise StateError(_messages.devices_missing(len(state["devices"]), len(records)))
    index, width, lo, hi = _layout(a, state["mode"] if mode is None else mode,
                                   state["bits"] if bits is None else bits, min, max, records)
    limit = -1 if quota is None else _args.as_quota(quota)
    guests = state["guests"].tolist()
    if guests and guests[-1] >> width:
        raise InvalidPasid(_messages.guest_number_too_wide(guests[-1], width))
    if index == IDENTITY:
        outside = [g for g in guests if not lo <= g <= hi]
        if outside:
            raise InvalidPasid(_messages.import_outside(outside, lo, hi))
    record = owner_record(a, vm)                 # pinned: the VM keeps the pin
    created = False
    conflicts: list[int] = []
    reading = a._reading()
    try:
        with a._lock:
            a._settle_time(a._time(reading))
            conflicts = _import_check(a, guests, index, lo, hi, limit, record)
            if not conflicts:
                space = _create(a, vm, index, width, lo, hi, limit, records, record)
                _import_fill(a, space, guests, state, records)
                created = True
    except _Later as late:
        raise late.build() from None
    finally:
        if not created:
            owner_unpin(a, record)
    if a._gone or a._graveyard:
        a._after()
    if conflicts:
        raise MigrationConflict(_messages.migration_conflict(vm, conflicts), tuple(conflicts))
    return space


def _import_check(a: PasidAllocator, guests: list[int], index: int, lo: int, hi: int,
                  limit: int, record: _Owner) -> list[int]:
    """Phase 2 of import_vm, before anything changes: every reason to refuse; an identity
    import's PASIDs that are not FREE here (MigrationConflict) are returned."""
    quota = limit if limit >= 0 else record.quota
    if 0 <= quota < len(guests):
        raise _Later(QuotaExceeded, _messages.at_quota, record.key, quota)
    if index == TRANSLATED:
        if a._space.count_free(lo, hi) < len(guests):
            raise PasidExhausted(_messages.import_short(len(guests), lo, hi))
        return []
    conflicts = [g for g in guests if a._state[g] != FREE]
    if not conflicts:
        for g in guests:
            if a._generation[g] == COUNT_MAX:
                raise OverflowError(_messages.generation_limit(g))
    return conflicts


def _import_fill(a: PasidAllocator, space: GuestSpace, guests: list[int], state: dict[str, Any],
                 records: list[_Device]) -> None:
    """Phase 2 of import_vm, checked: the host PASIDs, then their tables. A host PASID at
    the generation limit (translated) undoes everything (OverflowError)."""
    record = space._record
    rng, cursor = a._rng.state, a._cursor
    hosts: list[int] = []
    for g in guests:
        if space._mode == IDENTITY:
            h = g
        else:
            h = a._choose(space._lo, space._hi)
            if a._generation[h] == COUNT_MAX:
                for q in reversed(hosts):
                    batch_unfill(a, q, record)
                a._rng.state, a._cursor = rng, cursor
                _undo_create(a, space)
                raise OverflowError(_messages.generation_limit(h))
        a._activate(h, record, None)
        hosts.append(h)
    if a._counts[ACTIVE] > a._high_water:
        a._high_water = a._counts[ACTIVE]
    table = space._table
    for g, h, refcount in zip(guests, hosts, state["refcounts"].tolist()):
        space._host_of[g] = h
        table.guest_of[h] = g
        if space._space is not None:
            space._space.take(g)
        a._refcount[h] = refcount
    for row, tag in zip(state["tags"][0].tolist(), state["tags"][1]):
        space._owner[guests[row]] = tag
    for row, value in zip(state["data"][0].tolist(), state["data"][1]):
        a._data[hosts[row]] = value
    rows, devices, counts = (column.tolist() for column in state["bindings"])
    values: list[Any] = [None] * len(rows)
    for index, value in zip(state["binding_data"][0].tolist(), state["binding_data"][1]):
        values[index] = value
    for row, device, count, value in zip(rows, devices, counts, values):
        info, h = records[device], hosts[row]
        a._bindings.setdefault(h, {})[info.handle] = [count, value]
        info.bound.add(h)
    space._allocations = len(guests)


def _undo_create(a: PasidAllocator, space: GuestSpace) -> None:
    """Take back :func:`_create` (lock held)."""
    table = space._table
    table.vms.remove(space)
    for info in space._devices:
        del table.assigned[info]
    record = space._record
    a._quota.pop(record, None)
    record.quota = -1
    record.guest = None
    space._removed = True


class VMHost:
    """The allocator's VM methods (SPEC §7), here beside what they call: a base of the
    pure ``PasidAllocator``; the compiled class defines them in ``_allocator.pxi``
    and takes these docstrings."""

    __slots__ = ()


    def add_vm(self, vm: Hashable, *, mode: str = "translated",
               bits: SupportsIndex | None = None, quota: SupportsIndex | None = None,
               min: SupportsIndex | None = None, max: SupportsIndex | None = None,
               devices: Iterable[Hashable] = ()) -> GuestSpace:
        """A VM named ``vm``, its PASIDs allocated here: its :class:`GuestSpace`. O(devices).

        ``vm`` owns the VM's host PASIDs (``quota`` is its quota); ``min``/``max``
        bound them. ``devices``, declared here and no other VM's, are the ones
        it may bind. ``bits``: the guest's width, by default the narrowest of
        the host's and the devices'. StateError for a name in use, a device
        unknown or taken; InvalidPasid for bits too wide or an empty range.

        >>> from pasid.pure import PasidAllocator
        >>> a = PasidAllocator(bits=8); vm = a.add_vm("vm0", mode="identity")
        >>> vm.mode, vm.bits, a.vms()
        ('identity', 8, ['vm0'])
        """
        return add_vm(_host(self), vm, mode, bits, quota, min, max, devices)

    def remove_vm(self, vm: Hashable) -> list[int]:
        """Remove VM ``vm`` without waiting: its host PASIDs released (returned, ascending). O(k log k).

        As :meth:`exit_owner` for each: bound devices' ``on_teardown`` run,
        the PASIDs drain and sit out the grace as usual. Its quota and devices
        are freed; other VMs are untouched. StateError for no such VM.

        >>> from pasid.pure import PasidAllocator
        >>> a = PasidAllocator(bits=8); vm = a.add_vm("vm0"); g = vm.alloc()
        >>> a.remove_vm("vm0"), vm.removed
        ([1], True)
        """
        return remove_vm(_host(self), vm)

    def vm(self, vm: Hashable) -> GuestSpace:
        """The :class:`GuestSpace` of VM ``vm`` (StateError for no such VM). O(1).

        >>> from pasid.pure import PasidAllocator
        >>> a = PasidAllocator(bits=8); _ = a.add_vm("vm0"); a.vm("vm0").name
        'vm0'
        """
        return find_vm(_host(self), vm)

    def vms(self) -> list[Any]:
        """The VMs' names, in the order they were added. O(VMs).

        >>> from pasid.pure import PasidAllocator
        >>> PasidAllocator(bits=8).vms()
        []
        """
        host = _host(self)
        with host._lock:
            return [] if host._vms is None else [space.name for space in host._vms.vms]

    def import_vm(self, blob: bytes, vm: Hashable, *, mode: str | None = None,
                  bits: SupportsIndex | None = None, quota: SupportsIndex | None = None,
                  min: SupportsIndex | None = None, max: SupportsIndex | None = None,
                  devices: Iterable[Hashable] | None = None) -> GuestSpace:
        """Add VM ``vm`` holding what :meth:`GuestSpace.export` gave: a migration. O(k log64 N).

        Arguments as :meth:`add_vm`; ``mode``, ``bits`` and ``devices`` default
        to the exported VM's (``devices``: in its order). Translated keeps every
        guest number on new host PASIDs; identity needs those numbers FREE
        here, else MigrationConflict lists them. All or nothing: refused on
        quota (QuotaExceeded), range (InvalidPasid, PasidExhausted) or devices
        (StateError); bad bytes: SnapshotError.

        >>> from pasid.pure import PasidAllocator
        >>> src = PasidAllocator(bits=8); g = src.add_vm("vm0", mode="identity").alloc()
        >>> dst = PasidAllocator(bits=8); _ = dst.alloc()
        >>> dst.import_vm(src.vm("vm0").export(), "vm0")
        Traceback (most recent call last):
        pasid._errors.MigrationConflict: VM 'vm0' cannot move here: PASIDs 1 are not FREE on this host
        """
        return import_vm(_host(self), blob, vm, mode, bits, quota, min, max, devices)



def _host(base: VMHost) -> PasidAllocator:
    """The allocator a VMHost method runs on (its only subclass)."""
    return cast("PasidAllocator", base)
