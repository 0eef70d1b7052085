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
inversion; everything is drawn before the run, so every design and both runs
see the same work: a migration's teardowns come from its own pool, three
uniforms for every device of every process alive in the VM then (the most
its removal can leave bound), used in order. The work is a
:class:`~pasid.sim.vmtrace.VMTrace` (:func:`record_vms`) and every run is a
replay of it (:func:`replay_vm`, the loop of ``_vmreplay_py.py`` and its
compiled twin), so ``pasid replay`` of a recorded trace gives simulate's rows.
Operations at equal times run in trace order (arrivals, migrations, ends,
device teardowns); the teardowns a migration makes run after the trace's
operations of their time. The rows depend on (workload, seed) alone, not on
the backend or the loop; :data:`VM_SIM_VERSION` changes whenever they would
change (2: the per-migration teardown pools).
"""

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import pasid
from pasid._args import MAX_BITS, STRATEGIES
from pasid.sim import _vmreplay_py
from pasid.sim._vmrules import VM_ACCESS, VM_ARRIVE, VM_END, VM_MIGRATE, VM_UNBIND, VMSpec
from pasid.sim._vmrules import check as check_vm_trace
from pasid.sim.replay import one_line_repr
from pasid.sim.workload import _parse_binds as _parse_range     # "LO..HI" or "N"
from pasid.sim.vmtrace import VMTrace

_vmreplay_compiled: Any
if os.environ.get("PASID_NO_EXTENSION") == "1":
    _vmreplay_compiled = None
else:
    try:
        from pasid.sim import _vmreplay as _vmreplay_compiled
    except ImportError:  # pragma: no cover - a pure install has no compiled loop
        _vmreplay_compiled = None

__all__ = ["MODES", "VM_PRESETS", "VM_SIM_VERSION", "VMRun", "VMWorkload", "allocator_class",
           "expected_events", "loop_module", "parse_vm_overrides", "record_vms", "replay_vm",
           "replay_vms", "run_vms", "simulate_vms", "vm_preset", "vm_row"]

VM_SIM_VERSION = 2      # changes whenever the same (workload, seed) gives other rows
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

@dataclass(repr=False)
class VMRun:
    """One design, one run (with or without quarantine): the counters of the module docstring.

    Its ``repr`` is one line (``distances=<list[812]>``, not the values).
    """

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
    loop: str = "python"        # the replay loop that ran: "compiled" or "python"

    @property
    def ops_per_s(self) -> float | None:
        """Operations per second of the replay loop (None for a loop too quick to time)."""
        return self.ops / self.seconds if self.seconds > 0 else None

    def __repr__(self) -> str:
        return one_line_repr(self)


# ---------------------------------------------------------------- the trace

def record_vms(workload: VMWorkload, seed: int = 0, *, draws: _Draws | None = None) -> VMTrace:
    """The work of ``workload`` with ``seed`` as a :class:`~pasid.sim.vmtrace.VMTrace`
    (version 2), the same for every design: what :func:`replay_vms` replays and
    ``pasid simulate --workload vms --record FILE`` writes. O(events log events).

    Operations at equal times keep the order arrivals, migrations, ends, then the
    devices' accesses and unbinds (by process, device, access first).

    >>> t = record_vms(vm_preset(duration=50, hosts=2, vms_per_host=2), seed=1)
    >>> t.hosts, [vm.name for vm in t.vms], t.counts()["arrive"] == len(t.processes)
    (2, ['vm0', 'vm1', 'vm2', 'vm3'], True)
    """
    w = workload
    d = _draw(w, seed) if draws is None else draws
    n = w.vm_count
    host_seeds = np.random.SeedSequence([seed, 5]).generate_state(w.hosts, dtype=np.uint64)
    vms = [VMSpec(f"vm{i}", i // w.vms_per_host, w.split(i), w.drain,
                  tuple(f"vm{i}.dev{k}" for k in range(d.vm_devices[i]))) for i in range(n)]
    arrive = np.asarray(d.process_time, dtype=np.float64)
    count = len(arrive)
    vm_of = np.asarray(d.process_vm, dtype=np.int64).reshape(count)
    end = arrive + np.asarray(d.process_life, dtype=np.float64).reshape(count)
    ends = np.flatnonzero(end < w.duration)
    hi = w.devices[1]
    ack = np.asarray(d.process_ack, dtype=np.float64).reshape(count, hi)
    late = np.asarray(d.process_late, dtype=bool).reshape(count, hi)
    access = np.asarray(d.process_access, dtype=np.float64).reshape(count, hi)
    slots = np.asarray(d.vm_devices, dtype=np.int64)[vm_of[ends]]
    migrating = w.hosts >= 2 and len(d.migration_time) > 0
    mig_time = np.asarray(d.migration_time if migrating else [], dtype=np.float64)
    mig_vm = np.asarray(d.migration_vm if migrating else [], dtype=np.int64)
    picks = np.asarray(d.migration_pick if migrating else [], dtype=np.float64)
    offset = 1 + np.minimum((picks * (w.hosts - 1)).astype(np.int64), w.hosts - 2)
    def full(length: int, value: int) -> npt.NDArray[np.int64]:
        return np.full(length, value, dtype=np.int64)

    # (time, op, process, vm, arg) per kind of operation, in the order ties keep
    parts: list[tuple[npt.NDArray[Any], ...]] = [
        (arrive, full(count, VM_ARRIVE), np.arange(count), vm_of, full(count, -1)),
        (mig_time, full(len(mig_time), VM_MIGRATE), full(len(mig_time), -1), mig_vm, offset),
        (end[ends], full(len(ends), VM_END), ends, full(len(ends), -1), full(len(ends), -1)),
    ]
    # the devices' teardown: per ended process, per device slot, its access (if late), unbind
    tear: list[list[npt.NDArray[Any]]] = [[], [], [], []]     # time, op, process, slot
    for slot in range(hi):
        who = ends[slot < slots]
        lates = who[late[who, slot]]
        for t, op, k in ((end[lates] + access[lates, slot] * ack[lates, slot], VM_ACCESS, lates),
                         (end[who] + ack[who, slot], VM_UNBIND, who)):
            tear[0].append(t)
            tear[1].append(full(len(k), op))
            tear[2].append(k)
            tear[3].append(full(len(k), slot))
    t_all, o_all, k_all, s_all = (np.concatenate(column) for column in tear)
    by_process = np.lexsort((o_all, s_all, k_all))          # by process, slot, access first
    parts.append((t_all[by_process], o_all[by_process], k_all[by_process],
                  full(len(by_process), -1), s_all[by_process]))
    time_col = np.concatenate([part[0] for part in parts]).astype(np.float64)
    order = np.argsort(time_col, kind="stable")
    op_col = np.concatenate([part[1] for part in parts]).astype(np.uint8)[order]
    proc_col = np.concatenate([part[2] for part in parts]).astype(np.int32)[order]
    vm_col = np.concatenate([part[3] for part in parts]).astype(np.int32)[order]
    arg_col = np.concatenate([part[4] for part in parts]).astype(np.int32)[order]
    time_col = np.ascontiguousarray(time_col[order])
    # each migration's draws: one per device of each process alive in its VM then
    alive = [0] * n
    needs = []
    procs_list, op_list = proc_col.tolist(), op_col.tolist()
    vm_list = vm_col.tolist()
    for op, k, v in zip(op_list, procs_list, vm_list):
        if op == VM_ARRIVE:
            alive[v] += 1
        elif op == VM_END:
            alive[int(vm_of[k])] -= 1
        elif op == VM_MIGRATE:
            needs.append(alive[v] * d.vm_devices[v])
    pool_offset = np.zeros(len(needs) + 1, dtype=np.int64)
    np.cumsum(needs, out=pool_offset[1:])
    uniforms = _uniforms(seed, _TEARDOWNS).random((int(pool_offset[-1]), 3))
    pool_ack = w.ack * (0.5 + uniforms[:, 0])
    pool_access = np.where(uniforms[:, 1] < w.late, uniforms[:, 2], np.nan)
    trace = VMTrace(
        bits=w.bits, grace=w.grace, strategy=w.strategy, quota=w.quota,
        host_seeds=[int(s) for s in host_seeds], vms=vms,
        processes=[f"p{k}" for k in range(count)], time=time_col, op=op_col,
        process=proc_col, vm=vm_col, arg=arg_col,
        pool_ack=np.ascontiguousarray(pool_ack, dtype=np.float64),
        pool_access=np.ascontiguousarray(pool_access, dtype=np.float64),
        pool_offset=pool_offset, source=f"workload {w.name}",
        comment=f"pasid simulate --workload {w.name} --seed {seed} (vm sim {VM_SIM_VERSION})")
    return check_vm_trace(trace)


# ---------------------------------------------------------------- replaying it

def loop_module(engine: str = "auto", cls: type | None = None) -> Any:
    """The VM replay loop for ``engine``: the compiled one (``pasid.sim._vmreplay``) for
    ``"compiled"``, the Python twin for ``"python"``; ``"auto"``: compiled when it is
    built and ``cls`` is the compiled allocator. ValueError for a compiled loop that is
    missing or given the pure allocator."""
    compiled_cls = cls is not None and cls.__module__ == "pasid._core"
    if engine == "python":
        return _vmreplay_py
    if engine not in ("auto", "compiled"):
        raise ValueError(f"engine must be auto, compiled or python, got {engine!r}")
    if _vmreplay_compiled is None or not compiled_cls:
        if engine == "compiled":
            raise ValueError("the compiled VM replay loop needs the compiled allocator and "
                             "pasid.sim._vmreplay (not built, or PASID_NO_EXTENSION=1)")
        return _vmreplay_py
    return _vmreplay_compiled


@dataclass
class _Setup:
    """The hosts and VMs a replay starts from, made the same way for both loops."""

    hosts: list[Any]
    spaces: list[Any]
    handles: npt.NDArray[np.int32]      # [host, device number]: add_device's handle, or -1
    first_device: list[int]             # per VM: its first device's number
    vm_options: list[dict[str, Any]]    # per VM: import_vm's keywords (mode, range, quota)
    drain: float
    quarantine: bool
    ops: int


def _set_up(trace: VMTrace, mode: str, quarantine: bool, cls: type) -> _Setup:
    drain_off = not quarantine
    hosts = [cls(trace.bits, strategy=trace.strategy, grace=trace.grace, seed=seed)
             for seed in trace.host_seeds]
    host_mode = "translated" if mode == "translated" else "identity"
    quota = {} if trace.quota is None else {"quota": trace.quota}
    first, total = [], 0
    for vm in trace.vms:
        first.append(total)
        total += len(vm.devices)
    handles = np.full((len(hosts), total), -1, dtype=np.int32)
    options, spaces = [], []
    ops = 0
    for i, vm in enumerate(trace.vms):
        ranges = dict(zip(("min", "max"), vm.split)) if mode == "identity-split" else {}
        options.append({"mode": host_mode, **ranges, **quota})
        host = hosts[vm.host]
        for slot, device in enumerate(vm.devices):
            handles[vm.host, first[i] + slot] = host.add_device(
                device, drain=0.0 if drain_off else vm.drain)
        spaces.append(host.add_vm(vm.name, devices=vm.devices, **options[i]))
        ops += 1 + len(vm.devices)
    # every VM's devices keep one drain: the same on any host it migrates to
    drain = 0.0 if drain_off else (trace.vms[0].drain if trace.vms else 0.0)
    return _Setup(hosts, spaces, handles, first, options, drain, quarantine, ops)


def replay_vm(trace: VMTrace, mode: str, *, quarantine: bool = True, engine: str = "auto",
              allocator: str | type | None = None,
              progress: Callable[[int, int], object] | None = None) -> VMRun:
    """Replay the checked ``trace`` under design ``mode``: a :class:`VMRun`.

    ``allocator``: the hosts' class, or ``"compiled"``/``"python"``/``"auto"`` as
    :func:`allocator_class` (default: the one ``engine`` names, else the backend
    in use); ``engine``: the loop (:func:`loop_module`). ``progress(done, total)``
    every few thousand events. Cost: O(events) allocator calls.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if allocator is None:
        allocator = engine
    cls = allocator if isinstance(allocator, type) else allocator_class(allocator)
    loop = loop_module(engine, cls)
    if len({vm.drain for vm in trace.vms}) > 1:
        raise ValueError("the VM replay gives every device one drain: this trace's VMs differ")
    setup = _set_up(trace, mode, quarantine, cls)
    run = VMRun(mode=mode, quarantine=quarantine, engine=_engine_name(cls),
                loop="compiled" if loop is not _vmreplay_py else "python")
    loop.run(trace, setup, run, progress)
    return run


def replay_vms(trace: VMTrace, *, modes: Sequence[str] | None = None, engine: str = "auto",
               allocator: str | type | None = None,
               progress: Callable[[int, int], object] | None = None) -> list[dict[str, Any]]:
    """Each design of ``modes`` (default all three) on ``trace``, with and without
    quarantine: one :func:`vm_row` each, in that order (what ``pasid replay`` prints for a
    VM trace)."""
    chosen = MODES if modes is None else tuple(modes)
    for mode in chosen:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    total = 2 * len(chosen) * max(len(trace), 1)
    rows = []
    for index, mode in enumerate(chosen):
        runs = []
        for half, quarantine in enumerate((True, False)):
            offset = (2 * index + half) * max(len(trace), 1)
            report = None if progress is None else (
                lambda done, _total, offset=offset: progress(offset + done, total))
            runs.append(replay_vm(trace, mode, quarantine=quarantine, engine=engine,
                                  allocator=allocator, progress=report))
        rows.append(vm_row(runs[0], runs[1], trace.strategy))
    return rows


def run_vms(workload: VMWorkload, mode: str, seed: int = 0, *, quarantine: bool = True,
            engine: str = "auto", progress: Callable[[int, int], object] | None = None,
            draws: _Draws | None = None) -> VMRun:
    """Run ``workload`` under design ``mode`` (one of :data:`MODES`): a :class:`VMRun`.

    Records the work (:func:`record_vms`) and replays it (:func:`replay_vm`).
    ``quarantine=False``: devices unbind as the guest frees and drain nothing
    (the stale accesses quarantine prevents). ``engine`` picks the allocator
    (:func:`allocator_class`) and, with it, the loop (compiled with the compiled
    allocator). ``progress(done, total)`` is called every few thousand events.
    Cost: O(events) allocator calls.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    cls = allocator_class(engine)
    trace = record_vms(workload, seed, draws=draws)
    return replay_vm(trace, mode, quarantine=quarantine, engine="auto", allocator=cls,
                     progress=progress)


# ---------------------------------------------------------------- rows

def vm_row(on: VMRun, off: VMRun | None, strategy: str | VMWorkload) -> dict[str, Any]:
    """One design's metrics as a JSON-ready dict: ``on`` with quarantine, ``off`` without;
    ``strategy``: the hosts' (or the workload whose it is)."""
    from pasid.sim.replay import reuse_summary

    reuse = reuse_summary(on.distances)
    reuse["mean"] = float(np.mean(on.distances)) if on.distances else None
    return {
        "mode": on.mode,
        "strategy": strategy if isinstance(strategy, str) else strategy.strategy,
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
    """Each design of ``modes`` (default ``workload.modes()``) on the same work, with and
    without quarantine: one :func:`vm_row` each, in that order. The work is recorded
    (:func:`record_vms`) and replayed (:func:`replay_vms`, the compiled loop with the
    compiled allocator): ``pasid replay`` of the recorded trace gives the same rows.

    >>> rows = simulate_vms(vm_preset(duration=150, hosts=2, vms_per_host=2), seed=1,
    ...                     engine="python")
    >>> [row["mode"] for row in rows], [row["migrations_conflict"] for row in rows][1:]
    (['identity', 'translated', 'identity-split'], [0, 0])
    """
    chosen = workload.modes() if modes is None else tuple(modes)
    for mode in chosen:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    cls = allocator_class(engine)           # refuse a missing backend before anything runs
    return replay_vms(record_vms(workload, seed), modes=chosen, allocator=cls,
                      progress=progress)
