"""Workloads: seeded, event-driven generators of what an IOMMU sees.

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

Determinism: one ``random.Random(seed)`` per call, of which only
``random()`` is used (Python guarantees its sequence for a seed across
versions and platforms); the exponential draws use ``math.log``. Times are
rounded to ``10**-TIME_DIGITS`` units, which keeps the text short and absorbs
last-bit differences between platforms' ``log``. Events at equal times run in
the order they were scheduled.
"""

import dataclasses
from heapq import heappop, heappush
import itertools
import math
import numbers
import operator
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, TypeVar

from pasid._args import MAX_BITS, as_bits, as_duration
from pasid.sim.trace import Trace, TraceBuilder

__all__ = ["DeviceSpec", "PRESETS", "SETUP_FRACTION", "TIME_DIGITS", "Workload", "generate",
           "parse_overrides", "preset"]

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

def generate(workload: Workload, seed: int) -> Trace:
    """The trace of ``workload`` under ``seed`` (an int >= 0): deterministic, checked.

    Event-driven: a heap of future events popped in time order, each writing
    its operations at its time. Cost O(n log n) in the operations generated
    (a few microseconds each), plus :meth:`TraceBuilder.build`'s check.

    >>> tiny = Workload("tiny", duration=100, arrival=0.5, lifetime=10, kill=0.2,
    ...                 dup=0.3, vm_arrival=0.05, vm_lifetime=40, grace=1, binds=(1, 2),
    ...                 devices=(DeviceSpec("gpu0", drain=2, ack=3),
    ...                          DeviceSpec("nic0", bits=8, drain=1, ack=2, late=False)))
    >>> trace = generate(tiny, seed=1)
    >>> len(trace), trace.counts()["alloc"], trace.counts()["exit"]
    (394, 66, 11)
    >>> for line in trace.to_text().splitlines()[:7]:
    ...     print(line)
    pasid-trace 1
    bits 20
    grace 1
    device gpu0 bits=20 drain=2
    device nic0 bits=8 drain=1
    0.289 alloc h0 p0
    0.308 bind h0 gpu0
    >>> generate(tiny, seed=1).to_text() == trace.to_text()
    True
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"generate needs a Workload, got {type(workload).__name__}")
    seed = operator.index(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return _Generator(workload, seed).run()


class _Generator:
    """One generation: the random stream, the event heap and the trace being built."""

    def __init__(self, workload: Workload, seed: int) -> None:
        self.workload = workload
        self.uniform = random.Random(seed).random   # in [0, 1)
        self.builder = TraceBuilder(bits=workload.bits, grace=workload.grace)
        for device in workload.devices:
            drain = device.drain if workload.drain is None else workload.drain
            self.builder.device(device.name, bits=device.bits, drain=drain)
        full_width = [device for device in workload.devices if device.bits >= workload.bits]
        self.vm_devices = full_width or list(workload.devices)
        # heap of (time, order, action, args)
        self.events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.order = itertools.count()  # ties run in the order scheduled
        self.processes = 0

    def run(self) -> Trace:
        """Pop and run events until none is left; the checked trace."""
        workload = self.workload
        if workload.arrival > 0:
            self.schedule_within_duration(self.interval(workload.arrival), self.arrive)
        if workload.vm_arrival > 0:
            self.schedule_within_duration(self.interval(workload.vm_arrival), self.vm_arrive)
        now = 0.0
        while self.events:
            now, _, action, args = heappop(self.events)
            action(now, *args)
        self.builder.advance(now)
        return self.builder.build()

    # ------------------------------------------------------------ helpers

    def schedule(self, time: float, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(time, *args)`` at ``time`` (rounded to TIME_DIGITS)."""
        heappush(self.events, (round(time, TIME_DIGITS), next(self.order), action, args))

    def schedule_within_duration(self, time: float, action: Callable[..., None],
                                 *args: Any) -> None:
        """Schedule, but only if ``time`` (rounded) is before the workload's duration."""
        if round(time, TIME_DIGITS) < self.workload.duration:
            self.schedule(time, action, *args)

    def exponential(self, mean: float) -> float:
        """An exponential draw of mean ``mean`` (inversion: one uniform, one log)."""
        return -mean * math.log(1.0 - self.uniform())

    def interval(self, rate: float) -> float:
        """The time to the next arrival of a Poisson process of ``rate`` per unit."""
        return self.exponential(1 / rate)

    def choose_devices(self) -> list[DeviceSpec]:
        """``binds`` distinct devices, uniformly (a partial Fisher-Yates shuffle)."""
        lo, hi = self.workload.binds
        count = lo + int(self.uniform() * (hi - lo + 1))
        pool = list(self.workload.devices)
        for i in range(count):
            j = i + int(self.uniform() * (len(pool) - i))
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:count]

    def fits(self, devices: Sequence[DeviceSpec]) -> str | None:
        """The name of the narrowest of ``devices`` if it is narrower than the trace, else None."""
        narrowest = min(devices, key=lambda device: device.bits)
        return narrowest.name if narrowest.bits < self.workload.bits else None

    def tear_down(self, told_at: float, handle: int, devices: Iterable[DeviceSpec]) -> float:
        """The devices drain ``handle`` from ``told_at``; returns the time of the last unbind."""
        last_unbind = told_at
        for device in devices:
            ack = device.ack * (0.5 + self.uniform())
            if device.late:
                self.schedule(told_at + self.uniform() * ack, self.builder.access, handle,
                              device.name)
            self.schedule(told_at + ack, self.builder.unbind, handle, device.name)
            last_unbind = max(last_unbind, told_at + ack)
        return last_unbind

    # ------------------------------------------------------------ events

    def arrive(self, now: float) -> None:
        """A process arrives: it allocates, binds its devices, maybe dups; its end is scheduled."""
        workload = self.workload
        self.schedule_within_duration(now + self.interval(workload.arrival), self.arrive)
        owner = f"p{self.processes}"
        self.processes += 1
        life = self.exponential(workload.lifetime)
        devices = self.choose_devices()
        handle = self.builder.alloc(now, owner=owner, fits=self.fits(devices))
        setup = life * SETUP_FRACTION
        for device in devices:
            self.schedule(now + self.uniform() * setup, self.builder.bind, handle, device.name)
        dup = self.uniform() < workload.dup
        if dup:
            self.schedule(now + setup, self.builder.get, handle)
        self.schedule_within_duration(now + life, self.end, handle, owner, devices, dup, setup)

    def end(self, now: float, handle: int, owner: str, devices: list[DeviceSpec], dup: bool,
            setup: float) -> None:
        """A process ends: killed, orderly, or orderly with its devices unbinding first."""
        workload = self.workload
        if self.uniform() < workload.kill:
            self.builder.exit(now, owner)
            self.tear_down(now, handle, devices)
            return
        release_at = now
        if dup:
            self.builder.put(now, handle)
            release_at = now + self.uniform() * setup
        if self.uniform() < workload.unbind_first:
            release_at = max(release_at, self.tear_down(now, handle, devices))
            self.schedule(release_at, self.builder.put, handle)
        else:
            self.schedule(release_at, self.release, handle, devices)

    def release(self, now: float, handle: int, devices: Iterable[DeviceSpec]) -> None:
        """The last ``put``; the devices still bound tear down."""
        self.builder.put(now, handle)
        self.tear_down(now, handle, devices)

    def vm_arrive(self, now: float) -> None:
        """A VM context: an owner-less PASID bound to one device, released after its life."""
        workload = self.workload
        self.schedule_within_duration(now + self.interval(workload.vm_arrival), self.vm_arrive)
        life = self.exponential(workload.vm_lifetime)
        device = self.vm_devices[int(self.uniform() * len(self.vm_devices))]
        handle = self.builder.alloc(now, owner=None, fits=self.fits((device,)))
        self.schedule(now + self.uniform() * life * SETUP_FRACTION, self.builder.bind, handle,
                      device.name)
        self.schedule_within_duration(now + life, self.release, handle, (device,))
