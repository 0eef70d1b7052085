"""Workloads: seeded, vectorised generators of what an IOMMU sees.

A :class:`Workload` describes a population; :func:`generate` turns it and a
seed into a checked :class:`~pasid.sim.trace.Trace`, the same one for the
same (workload, seed) on every run and platform. Time is in abstract units
(think microseconds); rates are per unit.

The model
---------
*Processes* arrive as a Poisson process (``arrival`` per unit) and live an
exponential time (mean ``lifetime``). A process allocates a PASID (its owner
is ``p<N>``, N counting arrivals from 0) and binds between ``binds[0]``
and ``binds[1]`` (default 1 and 3) distinct devices, chosen uniformly. If
one of them is narrower than the trace (``bits``), the allocation names the
narrowest as FITS, so the PASID fits every device it binds. The binds come
in the *setup window*, the first ``SETUP_FRACTION`` of the process's life; a
fraction ``dup`` of the processes then take a second reference (``get``, a
forked file descriptor).

A process ends at arrival + lifetime, in one of three ways:

* killed (fraction ``kill``): ``exit OWNER`` releases its PASID whatever the
  references, and the bound devices are told to tear down;
* orderly (the rest): the ``put`` calls; with ``dup``, one at the end and the
  last, the release, up to a setup window later. Then the devices tear down;
* orderly with the devices first (fraction ``unbind_first`` of the orderly
  ones): at the end the process tells its devices to stop, they tear down
  while the PASID is still ACTIVE, and the last ``put`` comes once the last
  device has unbound (with ``dup``, the first ``put`` at the end).

A device *tears down* a PASID from the moment it is told (the release, or
the end for ``unbind_first``): it takes ``ack`` drawn uniformly in
``[0.5, 1.5) x`` its :attr:`DeviceSpec.ack` to drain its queues, then
unbinds it; a device with :attr:`DeviceSpec.late` makes one last
``access`` at a uniform point of that interval (a page request or an
interrupt still queued). A device's accesses to a PASID therefore always
precede its unbind: with device quarantine none can hit a reused PASID, and
without it (:meth:`~pasid.sim.trace.Trace.without_quarantine`) those after
``grace`` may.

*VM contexts* arrive as a second Poisson process (``vm_arrival``) and live
an exponential ``vm_lifetime``: an owner-less PASID (``alloc HANDLE -``)
bound to one device, chosen uniformly among the full-width ones (the GPUs;
among all devices, with FITS, if none is full width), released by a ``put``
and torn down like a process's.

Arrivals stop at ``duration``, and only ends before it happen: processes and
VMs alive then stay alive. What was already under way completes (binds of a
late arrival, teardowns of a release), so the trace may run a little past
``duration``; it closes with an ``advance`` at its last time.

Generation (version :data:`GENERATOR_VERSION`, 2): the processes and VMs
are independent given their arrival times, so :func:`stream` draws them as
arrays, a window of arrivals at a time, and :func:`generate` gathers the
stream into a checked trace. Version 1, an event-driven Python generator,
gave other traces for the same seeds; a change of the traces a (workload,
seed) gives is a new version.

Determinism: each purpose has its own stream, ``numpy.random.PCG64`` seeded
with ``SeedSequence([seed, purpose])`` (process arrivals 0, process draws 1,
VM arrivals 2, VM draws 3; numpy keeps its bit generators' streams the same
from version to version), of which only ``random()`` is used: the
intervals between arrivals one uniform each, every process ``6 + 4 *
binds[1]`` and every VM 5, whatever it ends up using. Exponential draws are
by inversion, ``-mean * log1p(-u)``. Arrival times are the intervals summed
one by one; every time is then a whole number of *ticks* of
``10**-TIME_DIGITS`` units (an arrival's time rounded, plus each offset from
it rounded), and the trace's time is ticks / ``10**TIME_DIGITS``. The
rounding keeps the text short and absorbs last-bit differences between
platforms' ``log``. Handles are numbered in the order of arrival, a process
before a VM arriving at the same tick; the owner of the N-th process
(from 0) is ``p<N>``. Operations at equal times run by handle, and a
handle's in the order of its script (its allocation, binds, ``get``, the
end, the accesses before the unbinds, a ``put`` that waits for the unbinds
last), so rounding never puts an operation before one it needs. None of it
depends on the window (:func:`stream`'s ``window``), only the chunks do.
"""

import dataclasses
import math
import numbers
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from pasid._args import MAX_BITS, as_bits, as_duration
from pasid.sim.chunk import Chunk, Numbered, StreamHeader, concatenate
from pasid.sim.trace import (OP_ACCESS, OP_ADVANCE, OP_ALLOC, OP_BIND, OP_EXIT, OP_GET, OP_PUT,
                             OP_UNBIND, Device, Trace, check)

__all__ = ["DeviceSpec", "GENERATOR_VERSION", "PRESETS", "SETUP_FRACTION", "TIME_DIGITS",
           "Workload", "default_window", "end_estimate", "expected_ops", "generate",
           "parse_overrides", "preset", "stream"]

GENERATOR_VERSION = 2   # changes whenever the same (workload, seed) gives another trace

SETUP_FRACTION = 0.01   # the setup window (binds, get) and the gap between dup's two puts
TIME_DIGITS = 3         # times are rounded to 10**-TIME_DIGITS units


# ---------------------------------------------------------------- validation helpers

_T = TypeVar("_T")


def _rule(check: Callable[[object, str], _T], where: str, name: str, value: object) -> _T:
    """``check(value, name)``, a rule of :mod:`pasid._args` (the allocator's own), its
    error a ValueError naming ``where``, in the same words."""
    try:
        return check(value, name)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_bits(where: str, name: str, value: object) -> int:
    """A PASID width (:func:`pasid._args.as_bits`), as an int."""
    return _rule(as_bits, where, name, value)


def _check_time(where: str, name: str, value: object) -> float:
    """A time, a rate or a mean (:func:`pasid._args.as_duration`: finite, within
    +-1e300, >= 0), as a float."""
    return _rule(as_duration, where, name, value)


def _check_fraction(where: str, name: str, value: object) -> float:
    """A number in 0..1, as a float."""
    value = _check_time(where, name, value)
    if value > 1:
        raise ValueError(f"{where}: {name} is a fraction and must be in 0..1, got {value!r}")
    return value


def _check_binds(where: str, binds: object, devices: int) -> tuple[int, int]:
    """``(lo, hi)`` with ``1 <= lo <= hi <= devices``, as a tuple of ints."""
    if (not isinstance(binds, (tuple, list)) or len(binds) != 2
            or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in binds)
            or not 1 <= binds[0] <= binds[1] <= devices):
        raise ValueError(f"{where}: binds must be (lo, hi) with 1 <= lo <= hi <= {devices} "
                         f"(the number of devices), got {binds!r}")
    return int(binds[0]), int(binds[1])


# ---------------------------------------------------------------- devices and workloads

@dataclass(frozen=True)
class DeviceSpec:
    """A device of a workload.

    ``name``: a word, as in the trace. ``bits``: its PASID width, 1..20 (a
    *narrow* device has fewer bits than the workload). ``drain``: its
    quarantine after it unbinds a PASID (time units). ``ack``: its mean time
    from being told to tear a PASID down (the release, or the process's end)
    to its ``unbind``; each teardown draws uniformly in ``[0.5, 1.5) x ack``.
    ``late``: whether it makes one last ``access`` during that time.

    >>> DeviceSpec("nic0", bits=10, drain=5, ack=20)
    DeviceSpec(name='nic0', bits=10, drain=5.0, ack=20.0, late=True)
    """

    name: str
    _: KW_ONLY
    bits: int = MAX_BITS
    drain: float
    ack: float
    late: bool = True

    def __post_init__(self) -> None:
        where = f"device {self.name!r}"
        if not isinstance(self.name, str) or len(self.name.split()) != 1 or "#" in self.name:
            raise ValueError(f"{where}: name must be one word, without blanks or '#'")
        object.__setattr__(self, "bits", _check_bits(where, "bits", self.bits))
        object.__setattr__(self, "drain", _check_time(where, "drain", self.drain))
        object.__setattr__(self, "ack", _check_time(where, "ack", self.ack))
        if not isinstance(self.late, bool):
            raise ValueError(f"{where}: late must be True or False, got {self.late!r}")


@dataclass(frozen=True)
class Workload:
    """What :func:`generate` simulates: the knobs of the model (see the module docstring).

    Times are in abstract units (think microseconds), rates per unit; every
    time, rate and mean is at least 0 and at most 1e300 (the allocator's rules,
    :mod:`pasid._args`).

    ``name``: a label (the preset's name). ``bits``: the PASID width of the
    trace, 1..20. ``duration``: arrivals and ends happen in ``[0, duration)``.
    ``arrival``: process arrivals per unit (Poisson). ``lifetime``: mean
    process lifetime (exponential). ``kill``: fraction of processes killed
    (``exit OWNER``) rather than ending with ``put``. ``dup``: fraction that
    take a second reference (``get``) and end with two ``put`` calls.
    ``unbind_first``: fraction of the orderly processes whose devices unbind
    before the last ``put``, while ACTIVE. ``vm_arrival``, ``vm_lifetime``:
    the same for VM contexts (owner-less PASIDs bound to one device).
    ``grace``: the trace's release-to-reuse time. ``drain``: when not
    ``None``, every device's drain time. ``devices``: the devices, in the
    trace header's order (names distinct). ``binds``: ``(lo, hi)``, each
    process binds between ``lo`` and ``hi`` distinct devices, uniformly,
    ``1 <= lo <= hi <= len(devices)``.

    Invalid knobs raise :class:`ValueError` naming the field. Size: at most
    about ``duration * (arrival * (2 + 3 * mean binds + 2 * dup) + 5 *
    vm_arrival)`` operations; fewer when devices have ``late=False`` or many
    processes and VMs are still alive at the end (a duration not much longer
    than the lifetimes).
    """

    name: str
    _: KW_ONLY
    bits: int = MAX_BITS
    duration: float
    arrival: float
    lifetime: float
    kill: float = 0.0
    dup: float = 0.0
    unbind_first: float = 0.0
    vm_arrival: float = 0.0
    vm_lifetime: float = 0.0
    grace: float = 0.0
    drain: float | None = None
    devices: tuple[DeviceSpec, ...]
    binds: tuple[int, int] = (1, 3)

    def __post_init__(self) -> None:
        where = f"workload {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"{where}: name must be a non-empty string")
        object.__setattr__(self, "bits", _check_bits(where, "bits", self.bits))
        for name in ("duration", "arrival", "lifetime", "vm_arrival", "vm_lifetime", "grace"):
            object.__setattr__(self, name, _check_time(where, name, getattr(self, name)))
        for name in ("kill", "dup", "unbind_first"):
            object.__setattr__(self, name, _check_fraction(where, name, getattr(self, name)))
        if self.drain is not None:
            object.__setattr__(self, "drain", _check_time(where, "drain", self.drain))
        if (not isinstance(self.devices, (tuple, list)) or not self.devices
                or not all(isinstance(device, DeviceSpec) for device in self.devices)):
            raise ValueError(f"{where}: devices must be a non-empty tuple of DeviceSpec, "
                             f"got {self.devices!r}")
        names = [device.name for device in self.devices]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: devices must have distinct names, got {names}")
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "binds", _check_binds(where, self.binds, len(self.devices)))

    def with_(self, **overrides: Any) -> "Workload":
        """A copy with the given fields replaced; string values are parsed by the field's type.

        Unknown names: :class:`ValueError` listing the known ones.

        >>> preset("default").with_(arrival="0.5", kill=0.25).arrival
        0.5
        """
        return dataclasses.replace(self, **_convert(overrides))


# ---------------------------------------------------------------- overrides from text

def _parse_optional_float(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def _parse_binds(text: str) -> tuple[int, int]:
    """``"LO..HI"``, or ``"N"`` for exactly N: a ``binds`` range."""
    lo, sep, hi = text.partition("..")
    return (int(lo), int(hi)) if sep else (int(text),) * 2


# How a string becomes a value of each field type, and what it should look like.
_TEXT_PARSERS: dict[object, tuple[Callable[[str], object], str]] = {
    str: (str, "text"),
    int: (int, "an integer"),
    float: (float, "a number"),
    float | None: (_parse_optional_float, "a number or 'none'"),
    tuple[int, int]: (_parse_binds, "'LO..HI' or 'N'"),
}
_FIELDS = {field.name: field for field in dataclasses.fields(Workload)}


def _convert(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` with string values parsed by field type; ValueError on an unknown name."""
    converted = {}
    for name, value in overrides.items():
        if name not in _FIELDS:
            raise ValueError(f"unknown workload parameter {name!r} "
                             f"(known: {', '.join(_FIELDS)})")
        if isinstance(value, str):
            parser = _TEXT_PARSERS.get(_FIELDS[name].type)
            if parser is None:
                raise ValueError(f"workload parameter {name!r} cannot be given as text")
            parse, expected = parser
            try:
                value = parse(value)
            except ValueError:
                raise ValueError(f"workload parameter {name!r} must be {expected}, "
                                 f"got {value!r}") from None
        converted[name] = value
    return converted


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``NAME=VALUE`` strings (as a command line gives them) into ``{name: value}``.

    Values are converted by the field's type: numbers for times, rates and
    fractions, ``none`` for a ``drain`` that does not override, ``LO..HI`` or
    ``N`` for ``binds``. Unknown names or unreadable values: :class:`ValueError`
    with a clear message. The values are not range-checked here; building the
    workload (:meth:`Workload.with_`, :func:`preset`) does that.

    >>> parse_overrides(["arrival=5", "kill=0.2", "binds=1..2", "drain=none"])
    {'arrival': 5.0, 'kill': 0.2, 'binds': (1, 2), 'drain': None}
    """
    pieces = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        pieces[name.strip()] = value.strip()
    return _convert(pieces)


# ---------------------------------------------------------------- presets

_GPUS = (DeviceSpec("gpu0", drain=10, ack=50), DeviceSpec("gpu1", drain=10, ack=50))
_SLOW = DeviceSpec("slow0", drain=100, ack=5000)

PRESETS = {
    # ~180k operations; ~3000 ACTIVE processes and ~150 VMs in steady state.
    # grace (20) is below most GPU acks and far below the slow device's, so
    # without quarantine many late accesses could find their PASID reused.
    # The NIC's 12 bits hold every PASID live or held (~3500) even when all
    # are packed at the bottom (strategy "lowest"), so nothing fails.
    "default": Workload(
        "default", bits=20, duration=150_000, arrival=0.15, lifetime=20_000,
        kill=0.1, dup=0.2, unbind_first=0.3, vm_arrival=0.002, vm_lifetime=100_000,
        grace=20, devices=_GPUS + (DeviceSpec("nic0", bits=12, drain=5, ack=20), _SLOW)),
    # ~155k operations in an 11-bit space (2048): ~1600 ACTIVE and ~300 held,
    # mostly by the slow device. The 10-bit NIC's range fills when a strategy
    # packs PASIDs low (lowest, and cyclic, whose cursor every NIC allocation
    # sends back below 1024): thousands of failures there, few or none under
    # fifo and random.
    "exhaustion": Workload(
        "exhaustion", bits=11, duration=150_000, arrival=0.13, lifetime=12_000,
        kill=0.1, dup=0.2, unbind_first=0.3, vm_arrival=0.001, vm_lifetime=50_000,
        grace=20, devices=_GPUS + (DeviceSpec("nic0", bits=10, drain=5, ack=20), _SLOW)),
    # ~150k operations: VM contexts churning (~2000 live, half of them on the
    # slow device) and a few hundred processes.
    "vm-churn": Workload(
        "vm-churn", bits=20, duration=120_000, arrival=0.04, lifetime=5_000,
        kill=0.2, dup=0.1, unbind_first=0.2, vm_arrival=0.2, vm_lifetime=10_000,
        grace=20, binds=(1, 2),
        devices=(_GPUS[0], _SLOW, DeviceSpec("nic0", bits=12, drain=5, ack=20))),
}


def preset(name: str, **overrides: Any) -> Workload:
    """The preset workload ``name`` with ``overrides`` (as :meth:`Workload.with_`).

    Unknown name: :class:`ValueError` listing the presets.

    >>> preset("vm-churn", duration=1000).duration
    1000.0
    """
    found = PRESETS.get(name)
    if found is None:
        raise ValueError(f"unknown workload {name!r} (one of {', '.join(PRESETS)})")
    return found.with_(**overrides) if overrides else found


# ---------------------------------------------------------------- generation

# The random streams, one per purpose: SeedSequence([seed, purpose]).
_PROCESS_ARRIVALS, _PROCESS_DRAWS, _VM_ARRIVALS, _VM_DRAWS = range(4)
_TICKS: int = 10 ** TIME_DIGITS    # ticks per time unit
_CHUNK_OPS = 2 ** 17           # what the default window aims at, in operations
_ARRIVAL_BATCH = 4096          # arrival intervals drawn at a time (the values do not depend on it)


def _uniforms(seed: int, purpose: int) -> np.random.Generator:
    """The stream of ``purpose`` under ``seed``: of it, only ``.random()`` is used."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose])))


def _ticks(time: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Times (or offsets) in whole ticks of ``10**-TIME_DIGITS`` units, as float64."""
    ticks: npt.NDArray[np.float64] = np.rint(time * _TICKS)
    return ticks


class _Arrivals:
    """A Poisson process's arrival ticks, before the duration, in order.

    The intervals are drawn ``_ARRIVAL_BATCH`` at a time from their own
    stream and summed in order, carrying the last time from batch to batch:
    the arrivals depend on the seed alone, not on what is taken when.
    """

    def __init__(self, rate: float, duration: float, uniforms: np.random.Generator) -> None:
        self.mean = 1 / rate if rate > 0 else 0.0
        self.duration = duration
        self.uniforms = uniforms
        self.last = 0.0                                     # the last arrival time drawn
        self.ready = np.empty(0, dtype=np.float64)          # ticks drawn, not yet taken
        self.exhausted = rate <= 0 or duration <= 0         # nothing more to draw
        self.taken = 0                                      # arrivals taken so far

    def next_tick(self) -> float:
        """The tick of the next arrival not taken (inf if none is left)."""
        while not len(self.ready) and not self.exhausted:
            self._draw()
        return float(self.ready[0]) if len(self.ready) else math.inf

    def take(self, before: float) -> tuple[int, npt.NDArray[np.float64]]:
        """``(index of the first, ticks)`` of the arrivals not taken whose tick is < ``before``."""
        while not self.exhausted and (not len(self.ready) or self.ready[-1] < before):
            self._draw()
        count = int(np.searchsorted(self.ready, before, side="left"))
        taken, self.ready = self.ready[:count], self.ready[count:]
        first, self.taken = self.taken, self.taken + count
        return first, taken

    def _draw(self) -> None:
        intervals = -self.mean * np.log1p(-self.uniforms.random(_ARRIVAL_BATCH))
        intervals[0] += self.last
        times = np.add.accumulate(intervals)
        self.last = float(times[-1])
        ticks = _ticks(times)
        inside = int(np.searchsorted(ticks / _TICKS, self.duration, side="left"))
        if inside < len(ticks):         # this one, and every later, at or after the duration
            self.exhausted = True
        self.ready = np.concatenate((self.ready, ticks[:inside]))


class _Rows:
    """Operations as columns: the pending buffer and what each window adds.

    ``tick``: the time in ticks (float64 holding whole numbers); ``order``:
    ``handle * slots + slot`` (:attr:`_Plan.slots`), the tie rule (an entity's operations in the
    order of its script); ``op``, ``owner``, ``device`` as in a trace.
    """

    __slots__ = ("tick", "order", "op", "owner", "device")

    def __init__(self, tick: Any, order: Any, op: Any, owner: Any, device: Any) -> None:
        self.tick, self.order, self.op, self.owner, self.device = tick, order, op, owner, device

    @classmethod
    def empty(cls) -> "_Rows":
        return cls(np.empty(0, np.float64), np.empty(0, np.int64), np.empty(0, np.uint8),
                   np.empty(0, np.int32), np.empty(0, np.int32))

    @classmethod
    def join(cls, parts: Sequence["_Rows"]) -> "_Rows":
        return cls(*(np.concatenate([getattr(part, name) for part in parts])
                     for name in cls.__slots__))

    def __len__(self) -> int:
        return len(self.tick)

    def take(self, which: Any) -> "_Rows":
        return _Rows(*(getattr(self, name)[which] for name in self.__slots__))

    def sorted(self, which: npt.NDArray[np.bool_] | None = None) -> "_Rows":
        """The rows (those ``which`` selects) by (tick, order): by time, then handle,
        then the entity's script. O(k log k) for k rows."""
        rows = np.arange(len(self)) if which is None else np.flatnonzero(which)
        if not len(rows):
            return self.take(rows)
        tick, order = self.tick[rows], self.order[rows]
        low, high = order.min(), order.max()
        first = tick.min()
        span = float(high - low + 1)
        if (tick.max() - first + 1) * span < 2.0 ** 62:     # one int64 key
            key = (tick - first).astype(np.int64) * np.int64(span) + (order - low)
            permutation = np.argsort(key)       # the keys are unique: any sort will do
        else:
            permutation = np.lexsort((order, tick))
        return self.take(rows[permutation])


@dataclass(frozen=True)
class _Plan:
    """What generation needs of a workload, as arrays: devices, widths, acks."""

    workload: Workload
    widths: npt.NDArray[np.int64]       # per device
    acks: npt.NDArray[np.float64]       # per device, mean ack in ticks
    late: npt.NDArray[np.bool_]         # per device
    vm_devices: npt.NDArray[np.int64]   # the devices a VM may bind
    slots: int                          # the most operations of one entity's script


def _plan(workload: Workload) -> _Plan:
    devices = workload.devices
    widths = np.array([device.bits for device in devices], dtype=np.int64)
    full = np.flatnonzero(widths >= workload.bits)
    return _Plan(workload=workload, widths=widths,
                 acks=np.array([device.ack * _TICKS for device in devices], dtype=np.float64),
                 late=np.array([device.late for device in devices], dtype=np.bool_),
                 vm_devices=full if len(full) else np.arange(len(devices)),
                 slots=max(_VM_SLOTS, 3 * workload.binds[1] + 5))


def _fits(plan: _Plan, device: npt.NDArray[np.int64],
          chosen: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.int32]:
    """Per entity, the FITS device: the narrowest of ``device[i, :]`` (where ``chosen``),
    the first of them on a tie, if narrower than the trace; else -1."""
    widths = plan.widths[device]
    if chosen is not None:
        widths = np.where(chosen, widths, MAX_BITS + 1)
    narrowest = np.argmin(widths, axis=1)
    rows = np.arange(len(device))
    return np.where(widths[rows, narrowest] < plan.workload.bits, device[rows, narrowest],
                    -1).astype(np.int32)


def _scatter(tick: Any, op: Any, owner: Any, device: Any, valid: Any,
             handle: npt.NDArray[np.int64], slots: int) -> _Rows:
    """The valid cells of per-entity slot tables (entities x slots) as rows."""
    order = handle[:, None] * slots + np.arange(tick.shape[1])
    return _Rows(tick[valid], order[valid], op[valid], owner[valid], device[valid])


# ------------------------------------------------------------ processes

# A process's script, slot by slot (its order among equal times):
#   0 alloc; 1..hi binds; hi+1 get; hi+2 exit (killed) or the first put (dup);
#   hi+3 the last put (orderly); then the accesses, then the unbinds (hi each);
#   last, the last put of unbind_first (after every unbind).

def _processes(plan: _Plan, uniforms: npt.NDArray[np.float64], arrival: npt.NDArray[np.float64],
               first: int, handle: npt.NDArray[np.int64]) -> _Rows:
    """The rows of processes ``first``, ``first + 1``, ... arriving at ``arrival`` (ticks),
    from their draws ``uniforms`` (one row each)."""
    workload = plan.workload
    n = len(arrival)
    lo, hi = workload.binds
    ndev = len(plan.widths)
    u_life, u_count, u_dup, u_kill, u_first, u_gap = uniforms[:, :6].T
    u_shuffle, u_bind, u_ack, u_access = (uniforms[:, 6 + k * hi:6 + (k + 1) * hi]
                                          for k in range(4))
    life = -workload.lifetime * np.log1p(-u_life) * _TICKS
    setup = life * SETUP_FRACTION
    end = arrival + np.rint(life)
    ends = end / _TICKS < workload.duration
    count = np.minimum(lo + (u_count * (hi - lo + 1)).astype(np.int64), hi)
    # the devices: a partial Fisher-Yates shuffle of hi steps, the first count kept
    pool = np.tile(np.arange(ndev, dtype=np.int64), (n, 1))
    rows = np.arange(n)
    for i in range(hi):
        j = np.minimum(i + (u_shuffle[:, i] * (ndev - i)).astype(np.int64), ndev - 1)
        swap = pool[rows, j]
        pool[rows, j] = pool[:, i]
        pool[:, i] = swap
    device = pool[:, :hi]
    chosen = np.arange(hi) < count[:, None]
    dup = u_dup < workload.dup
    killed = ends & (u_kill < workload.kill)
    orderly = ends & ~killed
    first_unbinds = orderly & (u_first < workload.unbind_first)
    release = end + np.where(dup, np.rint(u_gap * setup), 0.0)
    told = np.where(orderly & ~first_unbinds, release, end)
    ack = plan.acks[device] * (0.5 + u_ack)
    unbind = told[:, None] + np.rint(ack)
    access = told[:, None] + np.rint(u_access * ack)
    last_put = np.maximum(release, np.where(chosen, unbind, -math.inf).max(axis=1))

    slots = 3 * hi + 5
    tick = np.empty((n, slots), dtype=np.float64)
    op = np.empty((n, slots), dtype=np.uint8)
    dev = np.full((n, slots), -1, dtype=np.int32)
    owner = np.full((n, slots), -1, dtype=np.int32)
    valid = np.zeros((n, slots), dtype=np.bool_)
    numbers = np.arange(first, first + n, dtype=np.int32)
    # alloc
    tick[:, 0], op[:, 0], owner[:, 0], dev[:, 0], valid[:, 0] = (
        arrival, OP_ALLOC, numbers, _fits(plan, device, chosen), True)
    # binds
    binds = slice(1, hi + 1)
    tick[:, binds] = arrival[:, None] + np.rint(u_bind * setup[:, None])
    op[:, binds], dev[:, binds], valid[:, binds] = OP_BIND, device, chosen
    # get
    tick[:, hi + 1], op[:, hi + 1], valid[:, hi + 1] = arrival + np.rint(setup), OP_GET, dup
    # exit, or the first of dup's two puts
    tick[:, hi + 2] = end
    op[:, hi + 2] = np.where(killed, OP_EXIT, OP_PUT)
    owner[:, hi + 2] = np.where(killed, numbers, -1)
    valid[:, hi + 2] = killed | (orderly & dup)
    # the last put, devices after
    tick[:, hi + 3], op[:, hi + 3], valid[:, hi + 3] = release, OP_PUT, orderly & ~first_unbinds
    # the devices' late accesses, then their unbinds
    accesses, unbinds = slice(hi + 4, 2 * hi + 4), slice(2 * hi + 4, 3 * hi + 4)
    torn = chosen & ends[:, None]
    tick[:, accesses], op[:, accesses], dev[:, accesses] = access, OP_ACCESS, device
    valid[:, accesses] = torn & plan.late[device]
    tick[:, unbinds], op[:, unbinds], dev[:, unbinds], valid[:, unbinds] = (
        unbind, OP_UNBIND, device, torn)
    # the last put, devices first
    tick[:, -1], op[:, -1], valid[:, -1] = last_put, OP_PUT, first_unbinds
    return _scatter(tick, op, owner, dev, valid, handle, plan.slots)


# ------------------------------------------------------------ VM contexts

_VM_SLOTS = 5   # alloc, bind, put, access, unbind
_VM_DRAWS_EACH = 5   # life, device, bind, ack, access


def _vms(plan: _Plan, uniforms: npt.NDArray[np.float64], arrival: npt.NDArray[np.float64],
         handle: npt.NDArray[np.int64]) -> _Rows:
    """The rows of the VM contexts arriving at ``arrival`` (ticks), from their draws."""
    workload = plan.workload
    n = len(arrival)
    u_life, u_device, u_bind, u_ack, u_access = uniforms.T
    life = -workload.vm_lifetime * np.log1p(-u_life) * _TICKS
    end = arrival + np.rint(life)
    ends = end / _TICKS < workload.duration
    pick = np.minimum((u_device * len(plan.vm_devices)).astype(np.int64),
                      len(plan.vm_devices) - 1)
    device = plan.vm_devices[pick]
    ack = plan.acks[device] * (0.5 + u_ack)
    tick = np.stack((arrival, arrival + np.rint(u_bind * life * SETUP_FRACTION), end,
                     end + np.rint(u_access * ack), end + np.rint(ack)), axis=1)
    op = np.broadcast_to(np.array([OP_ALLOC, OP_BIND, OP_PUT, OP_ACCESS, OP_UNBIND],
                                  dtype=np.uint8), (n, _VM_SLOTS))
    dev32 = device.astype(np.int32)
    devs = np.stack((_fits(plan, device[:, None]), dev32, np.full(n, -1, np.int32),
                     dev32, dev32), axis=1)
    owner = np.broadcast_to(np.int32(-1), (n, _VM_SLOTS))
    valid = np.stack((np.ones(n, np.bool_), np.ones(n, np.bool_), ends,
                      ends & plan.late[device], ends), axis=1)
    return _scatter(tick, op, owner, devs, valid, handle, plan.slots)


# ------------------------------------------------------------ the stream

def _check_arguments(workload: object, seed: int) -> int:
    """``seed`` as an int, after checking both arguments as :func:`generate` documents."""
    if not isinstance(workload, Workload):
        raise TypeError(f"generate needs a Workload, got {type(workload).__name__}")
    seed = operator.index(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


def default_window(workload: Workload) -> int:
    """The window :func:`stream` uses by default, in ticks: about ``2**17`` operations'
    worth of arrivals at the workload's rates (at least one tick).

    >>> default_window(preset("default"))
    103206300
    """
    lo, hi = workload.binds
    per_unit = (workload.arrival * (2 + 3 * (lo + hi) / 2 + 2 * workload.dup)
                + 5 * workload.vm_arrival)
    if per_unit <= 0:
        return max(1, math.ceil(min(workload.duration, 1e15) * _TICKS))
    return max(1, math.ceil(min(_CHUNK_OPS / per_unit, 1e15) * _TICKS))


def stream(workload: Workload, seed: int, *,
           window: int | None = None) -> tuple[StreamHeader, Iterator[Chunk]]:
    """The trace of ``workload`` under ``seed`` as a header and its chunks, generated
    ``window`` ticks (``10**-TIME_DIGITS`` units) of arrivals at a time.

    The trace does not depend on ``window`` (by default :func:`default_window`,
    about ``2**17`` operations a chunk): only the chunks' boundaries do. Memory
    follows the entities alive in a window, not the trace's length. The chunks
    are not checked here (:func:`generate` checks its trace). Cost O(n log k)
    for n operations, k a chunk's (sorting each chunk), a fraction of a
    microsecond each.

    >>> header, chunks = stream(preset("default", duration=1000), 7, window=300_000)
    >>> header.comment
    'pasid generator 2: workload default, seed 7'
    >>> [(c.start, len(c), c.handles, c.owners) for c in chunks]
    [(0, 106, 46, 45), (106, 154, 93, 91), (260, 146, 138, 136), (406, 73, 150, 148)]
    """
    seed = _check_arguments(workload, seed)
    if window is None:
        window = default_window(workload)
    window = operator.index(window)
    if window < 1:
        raise ValueError(f"window must be >= 1 tick, got {window}")
    devices = tuple(Device(device.name, device.bits,
                           device.drain if workload.drain is None else workload.drain)
                    for device in workload.devices)
    header = StreamHeader(bits=workload.bits, grace=workload.grace, source="generated trace",
                          handle_name=Numbered("h"), owner_name=Numbered("p"),
                          comment=f"pasid generator {GENERATOR_VERSION}: workload "
                                  f"{workload.name}, seed {seed}")
    return header, _chunks(_plan(workload), seed, window, devices)


def _chunks(plan: _Plan, seed: int, window: int, devices: tuple[Device, ...]) -> Iterator[Chunk]:
    workload = plan.workload
    processes = _Arrivals(workload.arrival, workload.duration,
                          _uniforms(seed, _PROCESS_ARRIVALS))
    vms = _Arrivals(workload.vm_arrival, workload.duration, _uniforms(seed, _VM_ARRIVALS))
    process_draws, vm_draws = _uniforms(seed, _PROCESS_DRAWS), _uniforms(seed, _VM_DRAWS)
    process_width = 6 + 4 * workload.binds[1]
    pending = _Rows.empty()
    held: _Rows | None = None       # the rows of the last window, not yet emitted
    start = handles = owners = 0
    last_tick = 0.0

    def emit(rows: _Rows, closing: bool) -> Chunk:
        nonlocal start, handles, owners, last_tick
        time = rows.tick / _TICKS
        op, owner, device = rows.op, rows.owner, rows.device
        handle = np.where(op == OP_EXIT, -1, rows.order // plan.slots).astype(np.int32)
        if len(rows):
            last_tick = float(rows.tick[-1])
        if closing:
            time = np.append(time, last_tick / _TICKS)
            op = np.append(op, np.uint8(OP_ADVANCE))
            handle, owner, device = (np.append(column, np.int32(-1))
                                     for column in (handle, owner, device))
        allocs = op == OP_ALLOC
        handles += int(np.count_nonzero(allocs))
        owners += int(np.count_nonzero(owner[allocs] >= 0))
        chunk = Chunk(time=time, op=op, handle=handle, owner=owner, device=device, lines=None,
                      start=start, handles=handles, owners=owners, devices=devices)
        start += len(op)
        return chunk

    while True:
        following = min(processes.next_tick(), vms.next_tick())
        if following == math.inf:
            break
        stop = (math.floor(following / window) + 1) * window   # the window holding it, its end
        first_process, process_ticks = processes.take(stop)
        _, vm_ticks = vms.take(stop)
        base = processes.taken - len(process_ticks) + vms.taken - len(vm_ticks)
        # handles in arrival order, a process before a VM arriving at the same tick
        process_handles = (base + np.arange(len(process_ticks))
                           + np.searchsorted(vm_ticks, process_ticks, side="left"))
        vm_handles = (base + np.arange(len(vm_ticks))
                      + np.searchsorted(process_ticks, vm_ticks, side="right"))
        parts = [pending]
        if len(process_ticks):
            parts.append(_processes(plan, process_draws.random((len(process_ticks),
                                                                 process_width)),
                                    process_ticks, first_process, process_handles))
        if len(vm_ticks):
            parts.append(_vms(plan, vm_draws.random((len(vm_ticks), _VM_DRAWS_EACH)),
                              vm_ticks, vm_handles))
        rows = _Rows.join(parts)
        due = rows.tick < stop      # every later arrival, so every later row, is at or after
        pending = rows.take(~due)
        if due.any():
            # held back one window, so that the closing advance joins the last rows
            if held is not None:
                yield emit(held, closing=False)
            held = rows.sorted(due)
    yield emit(pending.sorted() if held is None else _Rows.join((held, pending.sorted())),
               closing=True)


def generate(workload: Workload, seed: int) -> Trace:
    """The trace of ``workload`` under ``seed`` (an int >= 0): deterministic, checked.

    :func:`stream`'s chunks in one :class:`~pasid.sim.trace.Trace`, checked
    (:func:`pasid.sim.trace.check`). Cost O(n log n) in the operations
    generated, plus the check.

    >>> tiny = Workload("tiny", duration=100, arrival=0.5, lifetime=10, kill=0.2,
    ...                 dup=0.3, vm_arrival=0.05, vm_lifetime=40, grace=1, binds=(1, 2),
    ...                 devices=(DeviceSpec("gpu0", drain=2, ack=3),
    ...                          DeviceSpec("nic0", bits=8, drain=1, ack=2, late=False)))
    >>> trace = generate(tiny, seed=1)
    >>> len(trace), trace.counts()["alloc"], trace.counts()["exit"]
    (317, 55, 12)
    >>> for line in trace.to_text().splitlines()[:8]:
    ...     print(line)
    pasid-trace 1
    # pasid generator 2: workload tiny, seed 1
    bits 20
    grace 1
    device gpu0 bits=20 drain=2
    device nic0 bits=8 drain=1
    1.434 alloc h0 p0 nic0
    1.467 bind h0 nic0
    >>> generate(tiny, seed=1).to_text() == trace.to_text()
    True
    """
    header, chunks = stream(workload, seed)
    whole = concatenate(chunks)
    assert whole is not None        # the closing advance is always there
    trace = Trace(
        bits=header.bits, grace=float(header.grace), devices=list(whole.devices),
        owners=[f"p{number}" for number in range(whole.owners)],
        handles=[f"h{number}" for number in range(whole.handles)],
        time=whole.time, op=whole.op, handle=whole.handle, owner=whole.owner,
        device=whole.device, source=header.source, comment=header.comment)
    return check(trace)


# ---------------------------------------------------------------- sizes, for progress

def expected_ops(workload: Workload) -> int:
    """About how many operations :func:`stream` gives for ``workload`` (the model's
    means: arrivals, binds, the share of lives that end before ``duration``, late
    accesses); progress shows it as the total. O(devices).

    >>> 150_000 < expected_ops(preset("default")) < 250_000
    True
    """
    w = workload

    def ended(lifetime: float) -> float:
        # the share of arrivals in [0, duration) whose exponential life ends before it
        if lifetime <= 0 or w.duration <= 0:
            return 1.0
        ratio = w.duration / lifetime
        return 1.0 - (1.0 - math.exp(-min(ratio, 700.0))) / ratio
    late = sum(device.late for device in w.devices) / len(w.devices)
    full_width = [d for d in w.devices if d.bits >= w.bits] or list(w.devices)
    vm_late = sum(device.late for device in full_width) / len(full_width)
    binds = (w.binds[0] + w.binds[1]) / 2
    process = (1 + binds + w.dup + ended(w.lifetime)
               * (1 + w.dup * (1 - w.kill) + binds * (1 + late)))
    vm = 2 + ended(w.vm_lifetime) * (2 + vm_late)
    return int(w.duration * (w.arrival * process + w.vm_arrival * vm)) + 1


def end_estimate(workload: Workload) -> float:
    """About when :func:`stream`'s last operation comes: ``duration``, plus the setup
    window of a life as long as the run and the slowest teardown (a process that lives
    past ``duration`` may still bind later; the replay's sampling copes). O(devices).

    >>> end_estimate(preset("default"))     # 150,000, +2%, + 1.5 x the slow device's ack
    160500.0
    """
    slowest = max(device.ack for device in workload.devices)
    return workload.duration * (1 + 2 * SETUP_FRACTION) + 1.5 * slowest
