"""Virtual machines on several hosts: which guest PASID design costs what (SPEC §7).

``pasid simulate --workload vms`` runs one :class:`VMWorkload` under each
guest PASID design and prints one row per design (:func:`simulate_vms`):

``identity``
    The guest sees host PASID numbers (ENQCMD's system-wide namespace); every
    VM may take any host PASID. A migration needs each of the VM's numbers
    FREE on the destination, else :class:`~pasid._errors.MigrationConflict`.
``translated``
    Each VM has its own namespace; guest PASID g maps to a host PASID. A
    migration keeps the guest numbers and takes new host PASIDs: no conflicts.
``identity-split``
    Identity, with the host range cut into disjoint per-VM slices: the range
    ``1 .. 2**bits - 1`` in ``hosts * vms_per_host`` equal slices (the rest
    unused), slice *i* given to VM *i* when it is created and following it to
    any host (``add_vm``/``import_vm`` with that ``min``/``max``). No two VMs
    share a host PASID anywhere, so a migration can only collide with the
    VM's own PASIDs left on the destination by an earlier stay (counted as
    ``migrations_busy``, never ``migrations_conflict``); the price is that a
    VM can never hold more than its slice.

The model
---------
``hosts`` hosts, each a ``PasidAllocator(bits, strategy=..., grace=...)``
on one shared clock (a callable: every call sees the simulation's time).
``vms_per_host`` VMs start on each host (VM *i* on host ``i //
vms_per_host``, named ``vm<i>``), each with between ``devices[0]`` and
``devices[1]`` assigned devices (``vm<i>.dev<k>``, drain ``drain``), drawn
uniformly. *Guest processes* arrive in each VM as a Poisson process
(``arrival`` per VM per unit, arrivals in ``[0, duration)``); each allocates
a guest PASID (refused: counted, the process does nothing more), binds every
device of its VM, lives an exponential time (mean ``lifetime``), then frees
it, if that is before ``duration``. Each bound device then *tears down*: it
takes ``ack`` drawn uniformly in ``[0.5, 1.5) x ack`` to drain its queues and
the host unbinds the host PASID (``host.unbind(h, device)``; the host's drain
and grace follow); with probability ``late`` it makes one last access at a
uniform point of that interval. *Live migrations* come as a Poisson process
(``migration`` per VM per unit, VM uniform, destination uniform among the
other hosts): ``export`` on the source, the devices declared on the
destination, ``import_vm`` there (the same mode, range and quota), and on
success ``remove_vm`` on the source, whose host PASIDs still bound tear down
as above; a refused migration leaves the VM where it was. A migration is
instantaneous: the guest's processes carry on on the destination.

Each design runs twice on the same draws: with device quarantine (the row's
metrics), and without it (a device unbinds as the guest frees, drain 0, its
late accesses where they were), for the stale accesses quarantine prevents,
as :mod:`pasid.sim.replay` does for single hosts.

The metrics (a row, :func:`vm_row`)
-----------------------------------
``ops``, ``seconds``, ``ops_per_s``
    Allocator calls made by the quarantine run (guest alloc, bind, unbind,
    free, host unbind, generation reads of late accesses, export, device
    declarations, import_vm, remove_vm; not the ``stats`` reads the peak
    needs), the run's wall time, their ratio.
``arrivals``, ``allocations``, ``alloc_refused``
    Guest processes that came, got a guest PASID, were refused;
    ``alloc_exhausted`` and ``alloc_quota`` split the refusals (nothing FREE
    in the guest or its host range; the VM's quota). ``arrivals ==
    allocations + alloc_refused``.
``migrations_attempted``, ``migrations``, ``migrations_conflict``, ``migrations_busy``, ``migrations_refused``
    Attempts, and how they ended: done; MigrationConflict naming a PASID that
    another VM holds (or held last) on the destination; refused because the
    VM's own earlier stay there still holds host PASIDs (a MigrationConflict
    on only its own, or StateError); any other refusal (quota, a full host
    range). They add up to the attempts.
``peak_held``
    The most host PASIDs DRAINING + QUARANTINED at once, summed over hosts
    (read from each host's ``stats()`` whenever a release may have raised it).
``peak_active``
    The most guest PASIDs held at once, over all VMs.
``guest_reuse``
    Guest reuse distance: for every allocation of a guest number that the
    same VM (wherever it ran) had freed before, the time since that free.
    ``count``, ``min``, ``p1``, ``median``, ``hist`` as
    :func:`pasid.sim.replay.reuse_summary`, and ``mean``. Translated guests
    reuse numbers at once; identity numbers wait out the host's release.
``stale``, ``stale_cross_vm``
    Late device accesses to a host PASID whose generation changed since the
    guest freed it (allocated again: the replay's definition), and of those,
    ones where it was allocated again to another VM. Zero with quarantine.
``stale_no_quarantine``, ``stale_cross_vm_no_quarantine``
    The same, counted in the run without quarantine.

Determinism: every draw comes from ``numpy.random.PCG64`` seeded with
``SeedSequence([seed, purpose])`` (layout 0, arrivals 1, process draws 2,
migrations 3, migration teardowns 4), only ``random()`` used, exponentials by
inversion; the arrivals, processes and migrations are drawn before the run,
a fixed number of uniforms each, so every design and both runs see the same
work. Events at equal times run in the order they were scheduled. The rows
depend on (workload, seed) alone, not on the backend; :data:`VM_SIM_VERSION`
changes whenever they would change.
"""

import dataclasses
import heapq
import math
import time as _time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import pasid
from pasid._args import MAX_BITS, STRATEGIES
from pasid._errors import InvalidPasid, MigrationConflict, PasidExhausted, QuotaExceeded, StateError

__all__ = ["MODES", "VM_PRESETS", "VM_SIM_VERSION", "VMWorkload", "allocator_class",
           "expected_events", "parse_vm_overrides", "run_vms", "simulate_vms", "vm_preset",
           "vm_row"]

VM_SIM_VERSION = 1      # changes whenever the same (workload, seed) gives other rows
MODES = ("identity", "translated", "identity-split")

# The random streams, one per purpose: SeedSequence([seed, purpose]).
_LAYOUT, _ARRIVALS, _PROCESSES, _MIGRATIONS, _TEARDOWNS = range(5)


def _check(where: str, name: str, value: object, kind: type, least: float,
           most: float = math.inf) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where}: {name} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
    number: float = float(value) if kind is float else int(value)
    if not least <= number <= most or not math.isfinite(number):
        top = "" if most == math.inf else f" and <= {most}"
        raise ValueError(f"{where}: {name} must be >= {least}{top}, got {value!r}")
    return number


@dataclass(frozen=True)
class VMWorkload:
    """What :func:`simulate_vms` runs (see the module docstring for the model).

    ``hosts``, ``vms_per_host``: the cluster. ``bits``: the hosts' PASID
    width. ``devices``: ``(lo, hi)`` devices per VM, 1..8. ``duration``:
    arrivals, ends and migrations happen in ``[0, duration)``. ``arrival``:
    guest processes per VM per unit; ``lifetime``: their mean life. ``ack``:
    a device's mean teardown time; ``drain``: its hold after it unbinds;
    ``late``: the fraction of teardowns with a late access; ``grace``: the
    hosts'. ``migration``: attempts per VM per unit. ``quota``: each VM's
    host PASIDs at most (None: no quota). ``strategy``: the hosts'. ``mode``:
    one of :data:`MODES`, or ``"all"`` for all three. Invalid values raise
    ValueError naming the field.

    The default (``vm_preset("vms")``) is small so that VMs contend: a
    10-bit host (1023 PASIDs) shared by 8 VMs each holding ~25 PASIDs live
    and ~6 in release (identity-split slices of 31 fill now and then), and
    ~100 migration attempts, ~6,400 guest processes per run.
    """

    name: str = "vms"
    _: KW_ONLY
    hosts: int = 4
    vms_per_host: int = 8
    bits: int = 10
    devices: tuple[int, int] = (1, 2)
    duration: float = 800.0
    arrival: float = 0.25
    lifetime: float = 100.0
    ack: float = 10.0
    drain: float = 2.0
    late: float = 1.0
    grace: float = 10.0
    migration: float = 0.004
    quota: int | None = None
    strategy: str = "lowest"
    mode: str = "all"

    def __post_init__(self) -> None:
        where = f"workload {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"{where}: name must be a non-empty string")
        fix = object.__setattr__
        fix(self, "hosts", _check(where, "hosts", self.hosts, int, 1, 64))
        fix(self, "vms_per_host", _check(where, "vms_per_host", self.vms_per_host, int, 1, 4096))
        fix(self, "bits", _check(where, "bits", self.bits, int, 1, MAX_BITS))
        for name in ("duration", "arrival", "lifetime", "ack", "drain", "grace", "migration"):
            fix(self, name, _check(where, name, getattr(self, name), float, 0, 1e300))
        fix(self, "late", _check(where, "late", self.late, float, 0, 1))
        if self.quota is not None:
            fix(self, "quota", _check(where, "quota", self.quota, int, 0))
        devices = self.devices
        if (not isinstance(devices, (tuple, list)) or len(devices) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in devices)
                or not 1 <= devices[0] <= devices[1] <= 8):
            raise ValueError(f"{where}: devices must be (lo, hi) with 1 <= lo <= hi <= 8, "
                             f"got {devices!r}")
        fix(self, "devices", (int(devices[0]), int(devices[1])))
        if self.strategy not in STRATEGIES:
            raise ValueError(f"{where}: strategy must be one of {', '.join(STRATEGIES)}, "
                             f"got {self.strategy!r}")
        if self.mode != "all" and self.mode not in MODES:
            raise ValueError(f"{where}: mode must be all or one of {', '.join(MODES)}, "
                             f"got {self.mode!r}")
        if self.hosts * self.vms_per_host > (1 << self.bits) - 1:
            raise ValueError(f"{where}: {self.hosts * self.vms_per_host} VMs cannot each have "
                             f"a slice of a {self.bits}-bit host range (identity-split)")

    @property
    def vm_count(self) -> int:
        """VMs in the cluster."""
        return self.hosts * self.vms_per_host

    def modes(self) -> tuple[str, ...]:
        """The designs a run covers: all three, or ``mode``."""
        return MODES if self.mode == "all" else (self.mode,)

    def split(self, vm: int) -> tuple[int, int]:
        """VM ``vm``'s slice of the host range under identity-split: ``(min, max)``.

        >>> VMWorkload().split(0), VMWorkload().split(31)
        ((1, 31), (962, 992))
        """
        size = ((1 << self.bits) - 1) // self.vm_count
        return 1 + vm * size, vm * size + size

    def with_(self, **overrides: Any) -> "VMWorkload":
        """A copy with fields replaced; string values parsed by the field's type
        (:func:`parse_vm_overrides`).

        >>> VMWorkload().with_(mode="translated", hosts="2").hosts
        2
        """
        return dataclasses.replace(self, **_convert(overrides))


def _parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() == "none" else int(text)


def _parse_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("..")
    return (int(lo), int(hi)) if sep else (int(text),) * 2


_FIELDS = {field.name: field for field in dataclasses.fields(VMWorkload)}
_TEXT_PARSERS: dict[object, tuple[Callable[[str], object], str]] = {
    str: (str, "text"),
    int: (int, "an integer"),
    float: (float, "a number"),
    int | None: (_parse_optional_int, "an integer or 'none'"),
    tuple[int, int]: (_parse_range, "'LO..HI' or 'N'"),
}


def _convert(overrides: Mapping[str, Any]) -> dict[str, Any]:
    converted = {}
    for name, value in overrides.items():
        if name not in _FIELDS or name == "_":
            known = ", ".join(n for n in _FIELDS if n != "_")
            raise ValueError(f"unknown vms workload parameter {name!r} (known: {known})")
        if isinstance(value, str) and _FIELDS[name].type is not str:
            parse, expected = _TEXT_PARSERS[_FIELDS[name].type]
            try:
                value = parse(value)
            except ValueError:
                raise ValueError(f"vms workload parameter {name!r} must be {expected}, "
                                 f"got {value!r}") from None
        converted[name] = value
    return converted


def parse_vm_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings into ``{name: value}``, as
    :func:`pasid.sim.workload.parse_overrides` does for the single-host workloads.

    >>> parse_vm_overrides(["mode=translated", "devices=2", "quota=none", "hosts=2"])
    {'mode': 'translated', 'devices': (2, 2), 'quota': None, 'hosts': 2}
    """
    pieces = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        pieces[name.strip()] = value.strip()
    return _convert(pieces)


VM_PRESETS = {"vms": VMWorkload("vms")}


def vm_preset(name: str = "vms", **overrides: Any) -> VMWorkload:
    """The VM preset ``name`` (``"vms"``) with ``overrides`` (as :meth:`VMWorkload.with_`).

    >>> vm_preset("vms", duration=100).duration
    100.0
    """
    found = VM_PRESETS.get(name)
    if found is None:
        raise ValueError(f"unknown VM workload {name!r} (one of {', '.join(VM_PRESETS)})")
    return found.with_(**overrides) if overrides else found


def expected_events(workload: VMWorkload) -> int:
    """About how many events a run handles (progress shows it as the total): per process
    an arrival, an end and each device's unbind and late access; the migrations.

    >>> 20_000 < expected_events(VMWorkload()) < 40_000
    True
    """
    w = workload
    devices = (w.devices[0] + w.devices[1]) / 2
    per_process = 2 + devices * (1 + w.late)
    return int(w.vm_count * w.duration * (w.arrival * per_process + w.migration)) + 1


# ---------------------------------------------------------------- the draws

def _uniforms(seed: int, purpose: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose])))


def _poisson(rate: float, duration: float,
             uniforms: np.random.Generator) -> npt.NDArray[np.float64]:
    """Arrival times of a Poisson process of ``rate`` in ``[0, duration)``."""
    if rate <= 0 or duration <= 0:
        return np.empty(0)
    times: list[npt.NDArray[np.float64]] = []
    last, mean = 0.0, 1 / rate
    batch = max(64, min(1 << 16, int(rate * duration * 1.1) + 64))
    while True:
        intervals = -mean * np.log1p(-uniforms.random(batch))
        intervals[0] += last
        chunk = np.add.accumulate(intervals)
        inside = chunk[chunk < duration]
        times.append(inside)
        if len(inside) < batch:
            return np.concatenate(times)
        last = float(chunk[-1])


@dataclass(frozen=True)
class _Draws:
    """Everything drawn before a run, the same for every design."""

    vm_devices: list[int]           # per VM, its number of devices
    process_time: list[float]       # per process, in arrival order
    process_vm: list[int]
    process_life: list[float]
    process_ack: list[list[float]]      # per process, per device slot: teardown time
    process_late: list[list[bool]]      # ... whether it makes a late access
    process_access: list[list[float]]   # ... when, as a fraction of the teardown time
    migration_time: list[float]
    migration_vm: list[int]
    migration_pick: list[float]     # uniform: the destination among the other hosts


def _draw(w: VMWorkload, seed: int) -> _Draws:
    n = w.vm_count
    lo, hi = w.devices
    layout = _uniforms(seed, _LAYOUT).random(n)
    vm_devices = np.minimum(lo + (layout * (hi - lo + 1)).astype(np.int64), hi)
    arrivals = _uniforms(seed, _ARRIVALS)
    times = _poisson(w.arrival * n, w.duration, arrivals)
    vms = np.minimum((arrivals.random(len(times)) * n).astype(np.int64), n - 1)
    draws = _uniforms(seed, _PROCESSES).random((len(times), 1 + 3 * hi))
    life = -w.lifetime * np.log1p(-draws[:, 0])
    ack = w.ack * (0.5 + draws[:, 1:1 + hi])
    late = draws[:, 1 + hi:1 + 2 * hi] < w.late
    access = draws[:, 1 + 2 * hi:]
    migrations = _uniforms(seed, _MIGRATIONS)
    when = _poisson(w.migration * n, w.duration, migrations)
    picks = migrations.random((len(when), 2))
    return _Draws(vm_devices=vm_devices.tolist(), process_time=times.tolist(),
                  process_vm=vms.tolist(), process_life=life.tolist(),
                  process_ack=ack.tolist(), process_late=late.tolist(),
                  process_access=access.tolist(), migration_time=when.tolist(),
                  migration_vm=np.minimum((picks[:, 0] * n).astype(np.int64), n - 1).tolist(),
                  migration_pick=picks[:, 1].tolist())


# ---------------------------------------------------------------- the allocator

def allocator_class(engine: str = "auto") -> type:
    """The host allocator class for ``engine``: ``"compiled"`` (``pasid._core``),
    ``"python"`` (``pasid.pure``) or ``"auto"`` (``pasid.PasidAllocator``, the
    backend in use). ValueError when the compiled class is missing."""
    if engine == "python":
        return pasid.pure.PasidAllocator
    if engine == "compiled":
        try:
            import pasid._core as core
        except ImportError:
            raise ValueError("the compiled allocator is not available") from None
        return core.PasidAllocator
    if engine != "auto":
        raise ValueError(f"engine must be auto, compiled or python, got {engine!r}")
    return pasid.PasidAllocator


def _engine_name(cls: type) -> str:
    return "compiled" if cls.__module__ == "pasid._core" else "python"


# ---------------------------------------------------------------- one run

_ARRIVE, _END, _ACCESS, _UNBIND, _MIGRATE = range(5)


@dataclass
class VMRun:
    """One design, one run (with or without quarantine): the counters of the module docstring."""

    mode: str
    quarantine: bool
    engine: str
    ops: int = 0
    seconds: float = 0.0
    arrivals: int = 0
    allocations: int = 0
    alloc_exhausted: int = 0
    alloc_quota: int = 0
    migrations_attempted: int = 0
    migrations: int = 0
    migrations_conflict: int = 0
    migrations_busy: int = 0
    migrations_refused: int = 0
    peak_held: int = 0
    peak_active: int = 0
    stale: int = 0
    stale_cross_vm: int = 0
    distances: list[float] = dataclasses.field(default_factory=list)

    @property
    def ops_per_s(self) -> float | None:
        return self.ops / self.seconds if self.seconds > 0 else None


def run_vms(workload: VMWorkload, mode: str, seed: int = 0, *, quarantine: bool = True,
            engine: str = "auto", progress: Callable[[int, int], object] | None = None,
            draws: _Draws | None = None) -> VMRun:
    """Run ``workload`` under design ``mode`` (one of :data:`MODES`): a :class:`VMRun`.

    ``quarantine=False``: devices unbind as the guest frees and drain nothing
    (the stale accesses quarantine prevents). ``engine`` picks the allocator
    (:func:`allocator_class`). ``progress(done, total)`` is called every few
    thousand events. Cost: O(events) allocator calls.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    cls = allocator_class(engine)
    w = workload
    d = _draw(w, seed) if draws is None else draws
    run = VMRun(mode=mode, quarantine=quarantine, engine=_engine_name(cls))
    clock = [0.0]
    drain = w.drain if quarantine else 0.0
    host_seeds = np.random.SeedSequence([seed, 5]).generate_state(w.hosts, dtype=np.uint64)
    hosts = [cls(w.bits, strategy=w.strategy, grace=w.grace, clock=lambda: clock[0],
                 seed=int(host_seeds[x])) for x in range(w.hosts)]
    host_mode = "translated" if mode == "translated" else "identity"
    n = w.vm_count
    names = [f"vm{i}" for i in range(n)]
    devices = [[f"vm{i}.dev{k}" for k in range(d.vm_devices[i])] for i in range(n)]
    ranges: list[dict[str, int]] = [{} for _ in range(n)]
    if mode == "identity-split":
        ranges = [dict(zip(("min", "max"), w.split(i))) for i in range(n)]
    quota = {} if w.quota is None else {"quota": w.quota}
    where = [i // w.vms_per_host for i in range(n)]
    spaces = []
    ops = 0
    for i in range(n):
        host = hosts[where[i]]
        for device in devices[i]:
            host.add_device(device, drain=drain)
        spaces.append(host.add_vm(names[i], mode=host_mode, devices=devices[i],
                                  **ranges[i], **quota))
        ops += 1 + len(devices[i])
    # per host: host PASID -> the VM that took its latest generation
    taker: list[dict[int, int]] = [{} for _ in range(w.hosts)]
    last_free: list[dict[int, int]] = [{} for _ in range(n)]
    held = [0] * w.hosts
    peak_held = active = peak_active = 0
    stale = cross = 0
    distances = run.distances
    teardowns = _uniforms(seed, _TEARDOWNS)

    events: list[tuple[Any, ...]] = [(t, k, _ARRIVE, k) for k, t in enumerate(d.process_time)]
    base = len(events)
    events += [(t, base + m, _MIGRATE, m) for m, t in enumerate(d.migration_time)]
    heapq.heapify(events)
    order = len(events)
    push, pop = heapq.heappush, heapq.heappop
    guest = [-1] * len(d.process_time)
    total = expected_events(w)
    handled = 0

    def held_now() -> int:
        """Refresh every host's DRAINING + QUARANTINED count; their sum."""
        for x, host in enumerate(hosts):
            s = host.stats()
            held[x] = s["draining"] + s["quarantined"]
        return sum(held)

    def tear_down(x: int, h: int, device: str, owner: int, now: float, ack: float,
                  late: bool, access: float) -> None:
        """A device tears down host PASID ``h`` of host ``x`` from ``now``: its late access,
        then its unbind (without quarantine, now, if the device is still bound)."""
        nonlocal order, ops
        if late:
            push(events, (now + access * ack, order, _ACCESS, x, h, hosts[x].generation(h),
                          owner))
            order += 1
        if quarantine:
            push(events, (now + ack, order, _UNBIND, x, h, device))
            order += 1
        elif device in hosts[x].devices(h):     # the migration's source: still bound
            hosts[x].unbind(h, device)
            ops += 1

    began = _time.perf_counter()
    while events:
        event = pop(events)
        now = event[0]
        clock[0] = now
        kind = event[2]
        handled += 1
        if progress is not None and not handled & 4095:
            progress(handled, total)
        if kind == _ARRIVE:
            k = event[3]
            i = d.process_vm[k]
            space = spaces[i]
            run.arrivals += 1
            ops += 1
            try:
                g = space.alloc()
            except QuotaExceeded:
                run.alloc_quota += 1
                continue
            except PasidExhausted:
                run.alloc_exhausted += 1
                continue
            guest[k] = g
            run.allocations += 1
            freed = last_free[i].get(g)
            if freed is not None:
                distances.append(now - freed)
            taker[where[i]][space.host_pasid(g)] = i
            for device in devices[i]:
                space.bind(g, device)
            ops += 1 + len(devices[i])
            active += 1
            if active > peak_active:
                peak_active = active
            end = now + d.process_life[k]
            if end < w.duration:
                push(events, (end, order, _END, k))
                order += 1
        elif kind == _END:
            k = event[3]
            i = d.process_vm[k]
            g = guest[k]
            space = spaces[i]
            x = where[i]
            h = space.host_pasid(g)
            if not quarantine:
                for device in devices[i]:
                    space.unbind(g, device)
                ops += len(devices[i])
            space.free(g)
            ops += 2
            active -= 1
            last_free[i][g] = now
            acks, lates, accesses = d.process_ack[k], d.process_late[k], d.process_access[k]
            for slot, device in enumerate(devices[i]):
                tear_down(x, h, device, i, now, acks[slot], lates[slot], accesses[slot])
            total_held = held_now()
            if total_held > peak_held:
                peak_held = total_held
        elif kind == _ACCESS:
            _, _, _, x, h, generation, owner = event
            ops += 1
            if hosts[x].generation(h) != generation:
                stale += 1
                if taker[x].get(h) != owner:
                    cross += 1
        elif kind == _UNBIND:
            _, _, _, x, h, device = event
            hosts[x].unbind(h, device)
            ops += 1
        else:   # _MIGRATE
            m = event[3]
            i = d.migration_vm[m]
            if w.hosts < 2:
                continue
            run.migrations_attempted += 1
            source = where[i]
            target = (source + 1 + min(int(d.migration_pick[m] * (w.hosts - 1)),
                                       w.hosts - 2)) % w.hosts
            space = spaces[i]
            blob = space.export()
            for device in devices[i]:
                hosts[target].add_device(device, drain=drain)
            ops += 2 + len(devices[i])
            try:
                moved = hosts[target].import_vm(blob, names[i], mode=host_mode, **ranges[i],
                                                **quota)
            except MigrationConflict as exc:
                if all(taker[target].get(p) == i for p in exc.pasids):
                    run.migrations_busy += 1
                else:
                    run.migrations_conflict += 1
                continue
            except StateError:
                run.migrations_busy += 1            # its earlier stay still holds PASIDs there
                continue
            except (PasidExhausted, InvalidPasid):
                run.migrations_refused += 1
                continue
            released = hosts[source].remove_vm(names[i])
            ops += 1
            run.migrations += 1
            old = hosts[source]
            for h in released:
                for device in old.devices(h):
                    ack, late, access = teardowns.random(3).tolist()
                    tear_down(source, h, device, i, now, w.ack * (0.5 + ack), late < w.late,
                              access)
            for g in moved:
                taker[target][moved.host_pasid(g)] = i
            spaces[i] = moved
            where[i] = target
            total_held = held_now()
            if total_held > peak_held:
                peak_held = total_held
    run.seconds = _time.perf_counter() - began
    run.ops = ops
    run.peak_held, run.peak_active = peak_held, peak_active
    run.stale, run.stale_cross_vm = stale, cross
    return run


# ---------------------------------------------------------------- rows

def vm_row(on: VMRun, off: VMRun | None, workload: VMWorkload) -> dict[str, Any]:
    """One design's metrics as a JSON-ready dict: ``on`` with quarantine, ``off`` without."""
    from pasid.sim.replay import reuse_summary

    reuse = reuse_summary(on.distances)
    reuse["mean"] = float(np.mean(on.distances)) if on.distances else None
    return {
        "mode": on.mode,
        "strategy": workload.strategy,
        "engine": on.engine,
        "ops": on.ops,
        "seconds": on.seconds,
        "ops_per_s": on.ops_per_s,
        "arrivals": on.arrivals,
        "allocations": on.allocations,
        "alloc_refused": on.alloc_exhausted + on.alloc_quota,
        "alloc_exhausted": on.alloc_exhausted,
        "alloc_quota": on.alloc_quota,
        "migrations_attempted": on.migrations_attempted,
        "migrations": on.migrations,
        "migrations_conflict": on.migrations_conflict,
        "migrations_busy": on.migrations_busy,
        "migrations_refused": on.migrations_refused,
        "peak_held": on.peak_held,
        "peak_active": on.peak_active,
        "guest_reuse": reuse,
        "stale": on.stale,
        "stale_cross_vm": on.stale_cross_vm,
        "stale_no_quarantine": None if off is None else off.stale,
        "stale_cross_vm_no_quarantine": None if off is None else off.stale_cross_vm,
    }


def simulate_vms(workload: VMWorkload, seed: int = 0, *, modes: Sequence[str] | None = None,
                 engine: str = "auto", progress: Callable[[int, int], object] | None = None,
                 ) -> list[dict[str, Any]]:
    """Each design of ``modes`` (default ``workload.modes()``) on the same draws, with and
    without quarantine: one :func:`vm_row` each, in that order.

    >>> rows = simulate_vms(vm_preset(duration=150, hosts=2, vms_per_host=2), seed=1,
    ...                     engine="python")
    >>> [row["mode"] for row in rows], [row["migrations_conflict"] for row in rows][1:]
    (['identity', 'translated', 'identity-split'], [0, 0])
    """
    chosen = workload.modes() if modes is None else tuple(modes)
    for mode in chosen:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    allocator_class(engine)                 # refuse a missing backend before anything runs
    draws = _draw(workload, seed)
    total = 2 * len(chosen) * expected_events(workload)
    rows = []
    for index, mode in enumerate(chosen):
        runs = []
        for half, quarantine in enumerate((True, False)):
            offset = (2 * index + half) * expected_events(workload)
            report = None if progress is None else (
                lambda done, _total, offset=offset: progress(offset + done, total))
            runs.append(run_vms(workload, mode, seed, quarantine=quarantine, engine=engine,
                                progress=report, draws=draws))
        rows.append(vm_row(runs[0], runs[1], workload))
    return rows
