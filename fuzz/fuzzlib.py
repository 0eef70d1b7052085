"""The engine shared by the fuzz harnesses, the stress script and tests/test_fuzz.py.

Three things are fuzzed, each driven by a *source* of choices (``RandomSource``
for the stress script, ``AtherisSource`` for coverage-guided runs,
``DataSource`` for Hypothesis in the test suite), so one input replays the
same run:

``OpRunner``
    operation sequences on a PasidAllocator. In *re-entrant* mode the owners
    and devices are ``Key`` objects whose ``__hash__``/``__eq__`` are Python
    code, the clock is Python code, devices have ``on_teardown`` callbacks,
    and each of these may call back into the allocator (any operation,
    snapshots included) or raise. In *differential* mode there is no user
    code: the compiled core and the pure backend run the same sequence and
    must agree on every result, every error and every snapshot byte.

    After every top-level operation: ``_check()`` passes; every exception is
    a documented one (``PasidError`` subclasses, ``ValueError``,
    ``TypeError``, ``OverflowError``, ``RuntimeError`` for a refused
    re-entry, ``HookError`` raised on purpose by user code); the ACTIVE
    PASIDs, their refcounts, generations and owners are exactly those the
    run holds (an allocation never returns a PASID still held, a failed
    call changes nothing the run can see); the counters add up; with no
    user code, a failed call leaves ``_export()`` as it was (but for the
    ``failures`` counter of a refused allocation).

``snapshot_case``
    ``from_bytes`` on mutated snapshots: raw byte mutations (with and without
    a fixed checksum) and structured ones (a field of the decoded value
    replaced, tweaked, truncated or extended, then encoded and checksummed
    again), of plain allocators and of hosts with VMs (version 3; half the
    structured changes go into a VM). Each backend must raise ``SnapshotError`` or load an allocator
    whose ``_check()`` passes and whose ``to_bytes()`` loads back to the same
    bytes; both backends must agree; a loaded allocator then runs a short
    differential operation sequence.

``pasid.pure`` is always available; the compiled core is used when it imports.
A broken promise raises ``Bug`` (an AssertionError) with the operation log.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import random
import struct
import sys
import traceback
import zlib

import numpy as np

import pasid.pure
from pasid import PasidError, SnapshotError, _snapshot
from pasid._args import MAX_BITS, STRATEGIES

try:
    import pasid._core as core
except ImportError:          # PASID_NO_EXTENSION runs, or a checkout without a build
    core = None

# FUZZ_TRACE=1: print every operation as it runs (for a crash, which leaves no log)
TRACE = os.environ.get("FUZZ_TRACE") == "1"


# Bugs found and reported, not fixed yet: the runs steer around their triggers so they
# can find others. Empty this (or run the harness with --no-avoid) once they are fixed.
KNOWN: dict[str, str] = {
    # name -> the regression test of a failure found and not yet fixed. Every one
    # found so far is fixed (tests/test_hardening.py, "found by the fuzzers"); the
    # names the harness still checks for were:
    # "owner-record-reclaimed", "hash-raises-late", "remove-device-refused",
    # "pure-hold-precision", "snapshot-ranges", "gil-critical-section".
}


def known_load_error(exc):
    """A from_bytes error of a kind already reported (see KNOWN["snapshot-ranges"])."""
    text = str(exc)
    return (isinstance(exc, ValueError) and "finite and within" in text) or (
        isinstance(exc, OverflowError) and ("too large to convert" in text))


def extreme_snapshot(blob):
    """Does a loadable snapshot hold a time or counter the known bugs trip on?"""
    names = _snapshot.FIELDS_OF.get(blob[len(_snapshot.MAGIC)], _snapshot.FIELDS)
    try:
        values = dict(zip(names, _snapshot.decode(blob[len(_snapshot.MAGIC) + 1:-4])))
    except SnapshotError:
        return False
    times = [values["now"], values["grace"]] + [d[2] for d in values["devices"]]
    holds = np.frombuffer(values["holds"][1], dtype="<f8") if len(values["holds"][1]) % 8 == 0 \
        else np.zeros(0)
    big = 2.0**52
    return (any(abs(t) > big for t in times) or bool(np.any(np.abs(holds) > big))
            or any(c >= 2**62 for c in values["counters"]))


class Bug(AssertionError):
    """A promise of SPEC §3 broken; the message carries the operation log."""


class HookError(Exception):
    """Raised on purpose by user code (a hash, an __eq__, a clock): it must propagate as is."""


class Stop(Exception):
    """The source ran out of input (atheris): end the run quietly."""


NO_EXTENSION = os.environ.get("PASID_NO_EXTENSION") == "1"


def backends(which="both"):
    """The backend modules to run: ``"both"`` (the core when it imports and
    PASID_NO_EXTENSION is not set), ``"cython"`` or ``"python"``."""
    if which == "python" or (which == "both" and (core is None or NO_EXTENSION)):
        return [pasid.pure]
    if which == "cython":
        if core is None:
            raise SystemExit("the compiled core does not import (built in place?)")
        return [core]
    return [core, pasid.pure]


# ---------------------------------------------------------------- sources of choices

class RandomSource:
    """Choices from a seeded ``random.Random`` (the stress script, replayable by seed)."""

    def __init__(self, seed):
        self.seed = seed
        self.rnd = random.Random(seed)

    def int(self, lo, hi):
        return self.rnd.randint(lo, hi)

    def chance(self, p):
        return self.rnd.random() < p

    def pick(self, seq):
        return seq[self.rnd.randrange(len(seq))]

    def raw(self, n):
        return self.rnd.randbytes(n)

    def done(self):
        return False


class AtherisSource:
    """Choices from an atheris ``FuzzedDataProvider``; ``done()`` once the input is spent."""

    def __init__(self, fdp):
        self.fdp = fdp

    def int(self, lo, hi):
        return self.fdp.ConsumeIntInRange(lo, hi)

    def chance(self, p):
        # a spent input says no (ConsumeIntInRange would keep answering 0: always yes)
        return self.fdp.remaining_bytes() > 0 and self.fdp.ConsumeIntInRange(0, 255) < p * 256

    def pick(self, seq):
        return seq[self.fdp.ConsumeIntInRange(0, len(seq) - 1)]

    def raw(self, n):
        return self.fdp.ConsumeBytes(n)

    def done(self):
        return self.fdp.remaining_bytes() == 0


class DataSource:
    """Choices drawn from Hypothesis's ``data`` (shrinkable)."""

    def __init__(self, data):
        from hypothesis import strategies as st

        self.data = data
        self.st = st

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))

    def chance(self, p):
        return self.data.draw(self.st.integers(0, 255)) < p * 256

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def raw(self, n):
        return self.data.draw(self.st.binary(min_size=n, max_size=n))

    def done(self):
        return False


# ---------------------------------------------------------------- user code

class Key:
    """An owner or a device whose ``__hash__``/``__eq__`` are Python code.

    While its controller is live, each hash and each comparison may fire the
    controller: call back into the allocator, or raise ``HookError``.
    Pickled or deep-copied, it becomes a plain ``Key`` with no controller.
    """

    __slots__ = ("name", "ctl")

    def __init__(self, name, ctl=None):
        self.name = name
        self.ctl = ctl

    def __hash__(self):
        ctl = self.ctl
        if ctl is not None and ctl.live:
            ctl.fire("hash")
        return hash(self.name)

    def __eq__(self, other):
        ctl = self.ctl
        if ctl is not None and ctl.live:
            ctl.fire("eq")
        return isinstance(other, Key) and other.name == self.name

    def __repr__(self):
        return f"Key({self.name!r})"

    def __reduce__(self):
        return (Key, (self.name,))


class Clock:
    """A callable clock in Python: returns ``t`` (set by the run); may fire the controller."""

    def __init__(self, ctl=None):
        self.t = 0.0
        self.ctl = ctl
        self.bad = None          # a value to return once (NaN, a str, ...)
        self.reads = 0

    def __call__(self):
        self.reads += 1
        ctl = self.ctl
        if ctl is not None and ctl.live:
            ctl.fire("clock")
        if self.bad is not None:
            return self.bad          # until the run clears it (every backend sees it)
        return self.t


class Teardown:
    """An ``on_teardown`` callback: records the PASIDs, may fire the controller."""

    def __init__(self, ctl, name):
        self.ctl = ctl
        self.name = name
        self.calls = []

    def __call__(self, p):
        self.calls.append(p)
        ctl = self.ctl
        if ctl is not None and ctl.live:
            ctl.fire("teardown", swallow=True)


class Reentry:
    """Decides, from the source, when user code calls back into the allocator.

    ``live`` is on only while the allocator runs a call for the run, so the
    run's own bookkeeping (which compares keys) never fires anything.
    """

    def __init__(self, runner, rate, max_depth=2):
        self.runner = runner
        self.rate = rate
        self.max_depth = max_depth
        self.live = False
        self.depth = 0
        self.fired = 0
        self.sites = {}
        self.stack = []          # the sites of the user code running, outermost first

    def fire(self, site, swallow=False):
        if self.depth >= self.max_depth or not self.runner.src.chance(self.rate):
            return
        src = self.runner.src
        kind = src.int(0, 15)
        if site in ("hash", "eq") and "hash-raises-late" in self.runner.avoid:
            swallow = True
        if kind == 0 and not swallow:
            self.fired += 1
            raise HookError(f"{site} raised on purpose")
        self.depth += 1
        self.live = False
        self.fired += 1
        self.sites[site] = self.sites.get(site, 0) + 1
        self.stack.append(site)
        try:
            error = self.runner.step(nested=site)
        finally:
            self.stack.pop()
            self.depth -= 1
            self.live = True
        if error is not None and kind == 1 and not swallow:
            raise error          # user code that lets the allocator's error through

    def under_hash(self):
        return "hash" in self.stack or "eq" in self.stack


# ---------------------------------------------------------------- the run's holdings

class Held:
    """A PASID the run holds: its generation, references and owner.

    ``claims``: releases in flight (an operation that may drop references of
    this life has begun and not returned; user code it runs may meanwhile see
    the release done). ``superseded``: the allocator handed the PASID out
    again while a claim was in flight (the claimed release took effect).
    ``released``: every reference was dropped by an operation that returned.
    """

    __slots__ = ("gen", "refs", "owner", "claims", "superseded", "released", "exited")

    def __init__(self, gen, refs, owner):
        self.gen = gen
        self.refs = refs
        self.owner = owner
        self.claims = []          # [n]: n references (ALL: every one) being released
        self.superseded = False
        self.released = False
        self.exited = False       # released whole (exit_owner), whatever was claimed

    def claimed(self):
        return sum(self.refs if n == ALL else n for n in self.claims)

    def __repr__(self):
        extra = ""
        if self.claims:
            extra += f", claims={self.claims}"
        if self.superseded:
            extra += ", superseded"
        return f"Held(gen={self.gen}, refs={self.refs}, owner={self.owner!r}{extra})"


ALL = -1


def same_key(x, y):
    """Owner equality as the allocator sees it (hooks must be off)."""
    return x == y


def allowed(exc):
    """Is ``exc`` an exception an operation may raise?"""
    if isinstance(exc, HookError):
        return True
    if isinstance(exc, MemoryError):
        return False
    if type(exc) is RuntimeError:
        return "re-entrant" in str(exc)
    return isinstance(exc, (PasidError, ValueError, TypeError, OverflowError))


def describe(value):
    """A comparable form of an operation's result."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.tolist())
    if type(value).__name__ == "PasidAllocator":
        try:
            return ("allocator", value.to_bytes())
        except TypeError:
            return ("allocator", list(value))
    if isinstance(value, pasid.PasidHandle):
        return ("handle", value.pasid, value.generation)
    if type(value).__name__ == "State":
        return ("state", int(value))
    if isinstance(value, list):
        return ("list", [describe(v) for v in value])
    if isinstance(value, tuple):
        return ("tuple", [describe(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    return ("value", value)


def counters_add_up(stats, size):
    """SPEC §3's counters, for an allocator built by operations (not a loaded snapshot)."""
    states = (stats["free"] + stats["reserved"] + stats["active"] + stats["draining"]
              + stats["quarantined"])
    problems = []
    if states != size:
        problems.append(f"state counts sum to {states}, not {size}")
    if stats["allocations"] - stats["releases"] != stats["active"]:
        problems.append("allocations - releases != active")
    if stats["releases"] - stats["reclaimed"] != stats["draining"] + stats["quarantined"]:
        problems.append("releases - reclaimed != draining + quarantined")
    if stats["high_water"] < stats["active"]:
        problems.append("high_water below active")
    return problems


class Stats:
    """Counts across runs (what a harness reports)."""

    def __init__(self):
        self.runs = 0
        self.ops = 0
        self.nested = 0
        self.errors = {}
        self.snapshots = 0
        self.loads = {}

    def error(self, exc):
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def merge(self, other):
        self.runs += other.runs
        self.ops += other.ops
        self.nested += other.nested
        self.snapshots += other.snapshots
        for name, n in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + n
        for name, n in other.loads.items():
            self.loads[name] = self.loads.get(name, 0) + n

    def line(self):
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items()))
        loads = ", ".join(f"{k} {v}" for k, v in sorted(self.loads.items()))
        return (f"runs {self.runs}, operations {self.ops} ({self.nested} from user code), "
                f"snapshots {self.snapshots}; errors raised: {errors or 'none'}"
                + (f"; from_bytes outcomes: {loads}" if loads else ""))


# ---------------------------------------------------------------- operation runs

class OpRunner:
    """One run of operations on one allocator (re-entrant) or on both backends (differential).

    ``mods``: the backend modules, one allocator each, driven in lockstep
    (differential: no user code, results compared). ``reentrant``: a single
    backend with Python keys, a Python clock and callbacks that call back.
    """

    def __init__(self, mods, src, *, reentrant, rate=0.08, stats=None, allocators=None,
                 avoid=None):
        self.mods = list(mods)
        self.src = src
        self.reentrant = reentrant
        self.stats = stats if stats is not None else Stats()
        self.avoid = set(KNOWN) if avoid is None else set(avoid)
        self.log = []
        self.ctl = Reentry(self, rate) if reentrant else None
        self.held = {}            # p -> Held
        self.orphans = {}         # p -> what user code did to it before its allocation returned
        self.exiting = []         # the owners of the exit_owner calls in flight
        self.handles = []         # PasidHandle objects still open (maybe stale)
        self.teardowns = []
        if reentrant and len(self.mods) != 1:
            raise ValueError("re-entrant runs use one backend")
        if allocators is not None:
            self._adopt(allocators)
        else:
            self._configure()
        self.size = 1 << self.allocs[0].bits
        self.owners = self._owner_pool()
        self.devices = self._device_pool()

    # ---- set-up

    def _configure(self):
        src = self.src
        bits = src.pick([1, 2, 3, 3, 4, 4, 5, 6])
        size = 1 << bits
        reserved = [0] if src.chance(0.8) else []
        if src.chance(0.2) and size > 4:
            lo = src.int(1, size - 2)
            reserved.append((lo, src.int(lo, min(size - 1, lo + 3))))
        self.kwargs = dict(bits=bits, reserved=reserved, strategy=src.pick(STRATEGIES),
                           grace=src.pick([0, 0, 1, 2.5]), seed=src.int(0, 2**64 - 1))
        kind = src.pick(["logical", "logical", "python"])
        self.clock = Clock(self.ctl) if kind == "python" else None
        self.allocs = [mod.PasidAllocator(**self.kwargs, clock=self.clock) for mod in self.mods]
        self.note(f"PasidAllocator(**{self.kwargs!r}, clock={'Clock()' if self.clock else None})")

    def _adopt(self, allocators):
        """Drive allocators made elsewhere (loaded snapshots): hold what is ACTIVE in them."""
        self.allocs = list(allocators)
        self.clock = None
        self.kwargs = None
        a = self.allocs[0]
        for p in a:
            self.held[p] = Held(a.generation(p), a.refcount(p), a.owner(p))

    def _owner_pool(self):
        if self.reentrant:
            ctl = self.ctl
            return [None, None, Key("o1", ctl), Key("o1", ctl), Key("o2", ctl), "o3", ("vm", 4)]
        return [None, None, "o1", "o2", ("vm", 4), 7]

    def _device_pool(self):
        if self.reentrant:
            ctl = self.ctl
            return [Key("d1", ctl), Key("d1", ctl), Key("d2", ctl), "d3", 5]
        return ["d1", "d2", ("dev", 3), 5]

    def note(self, text):
        self.log.append(("  " * (self.ctl.depth if self.ctl else 0)) + text)
        if TRACE:
            print(self.log[-1], file=sys.stderr, flush=True)
        if len(self.log) > 400:
            del self.log[:100]

    def fail(self, message):
        log = "\n".join(self.log[-60:])
        raise Bug(f"{message}\n--- the last operations:\n{log}")

    # ---- choices

    def pasid(self, bad=True):
        """Mostly a PASID the run holds, else any ID, sometimes bad input."""
        src = self.src
        if self.held and src.chance(0.6):
            return src.pick(sorted(self.held))
        if bad and src.chance(0.06):
            return src.pick([-1, self.size, True, 1.5, 2**70, np.int64(1), "1"])
        return src.int(0, self.size - 1)

    def owner(self):
        return self.src.pick(self.owners)

    def device(self):
        if self.src.chance(0.03):
            return [1]                   # unhashable
        return self.src.pick(self.devices)

    def data(self):
        return self.src.pick([None, None, None, "ctx", 3, [1, 2], {"k": (1, b"x")}])

    def time(self):
        return self.src.pick([0, 0.5, 1, 2, 3, 7.25])

    # ---- calling the allocators

    def invoke(self, a, call):
        """Run ``call(a)`` with user code live; (result, exception)."""
        ctl = self.ctl
        if ctl is not None:
            ctl.live = True
        try:
            return call(a), None
        except Exception as exc:                 # classified by the caller
            return None, exc
        finally:
            if ctl is not None:
                ctl.live = False

    def run_call(self, name, call, refusal=False):
        """Call every allocator; compare them (differential); return (result, exception).

        ``refusal``: an allocation, whose refusal (PasidExhausted, QuotaExceeded)
        counts one failure and changes nothing else.
        """
        nested = self.ctl is not None and self.ctl.depth > 0
        if self.src.done() and not nested:
            raise Stop()
        before = None
        if (self.ctl is None and (self.clock is None or self.clock.bad is None)
                and self.src.chance(0.3)):
            # every allocator reads the clock alike (a callable one holds its highest reading)
            before = [a._export() for a in self.allocs][0]
        outcomes = [self.invoke(a, call) for a in self.allocs]
        if self.clock is not None:
            self.clock.bad = None
        result, exc = outcomes[0]
        self.note(f"{name} -> {'!' + type(exc).__name__ + ': ' + str(exc) if exc else repr(result)}")
        for other_result, other_exc in outcomes:
            if other_exc is not None and not allowed(other_exc):
                self.fail(f"{name} raised an undocumented exception:\n"
                          + "".join(traceback.format_exception(other_exc)))
        if exc is not None:
            self.stats.error(exc)
        if len(outcomes) > 1:
            first = self.outcome(outcomes[0])
            for other in outcomes[1:]:
                if self.outcome(other) != first:
                    self.fail(f"{name}: the backends disagree: {first} != {self.outcome(other)}")
            blobs = [a.to_bytes() for a in self.allocs]
            if any(b != blobs[0] for b in blobs[1:]):
                fields = [_snapshot.decode(b[len(_snapshot.MAGIC) + 1:-4]) for b in blobs]
                differ = [(key, fields[0][i], fields[1][i]) for i, key in
                          enumerate(_snapshot.FIELDS) if fields[0][i] != fields[1][i]]
                self.fail(f"{name}: the backends' snapshots differ: {differ}")
        if before is not None and exc is not None:
            after = self.allocs[0]._export()
            failures = after["counters"][3] - before["counters"][3]
            if refusal and isinstance(exc, pasid.PasidExhausted) and failures == 1:
                after["counters"][3] -= 1
            if before != after:
                changed = [k for k in before if before[k] != after[k]]
                self.fail(f"{name} raised {type(exc).__name__} but changed {changed}: "
                          f"{[(before[k], after[k]) for k in changed]}")
        return result, exc

    @staticmethod
    def outcome(pair):
        result, exc = pair
        if exc is not None:
            return ("error", type(exc).__name__, str(exc))
        return ("ok", describe(result))

    # ---- the operations

    def step(self, nested=None):
        """One operation chosen by the source; returns the exception it raised, if any."""
        src = self.src
        if nested and src.done():
            return None
        self.stats.ops += 1
        if nested:
            self.stats.nested += 1
        ops = OPS_NESTED if nested else OPS
        name, weight_op = ops[src.int(0, len(ops) - 1)]
        if nested:
            self.note(f"[from {nested}]")
        error = weight_op(self)
        if not nested:
            self.quiet_check(name)
        return error

    def run(self, max_ops):
        """Up to ``max_ops`` top-level operations (fewer when an atheris input is spent)."""
        self.stats.runs += 1
        try:
            for _ in range(max_ops):
                self.step()
        except Stop:
            pass
        self.final_check()

    # ---- checks

    def quiet_check(self, name):
        """Between top-level operations: the invariants and the run's holdings, on every
        allocator alike (queries read the clock and reclaim: the backends must see the same).

        Half the time only ``_check()``, which reads no clock: what expired since
        the last operation is then reclaimed inside the next one, not here.
        """
        self.no_orphans(name)
        full = self.src.chance(0.5)
        for a in self.allocs:
            try:
                a._check()
            except AssertionError as exc:
                self.fail(f"after {name}: _check() failed on {type(a).__module__}: {exc}")
            if not full:
                continue
            active = list(a)
            if set(active) != set(self.held):
                self.fail(f"after {name}: ACTIVE {sorted(active)} but the run holds "
                          f"{sorted(self.held)}")
            for p, held in self.held.items():
                if a.refcount(p) != held.refs or a.generation(p) != held.gen:
                    self.fail(f"after {name}: PASID {p} has refcount {a.refcount(p)} generation "
                              f"{a.generation(p)}, the run holds {held}")
                if not same_key(a.owner(p), held.owner):
                    self.fail(f"after {name}: PASID {p} owned by {a.owner(p)!r}, the run "
                              f"holds {held}")
            if self.kwargs is not None:
                problems = counters_add_up(a.stats(), self.size)
                if problems:
                    self.fail(f"after {name}: counters: {problems}: {a.stats()}")

    def final_check(self):
        self.src = RandomSource(0)           # a spent atheris input: still check everything
        self.quiet_check("the last operation")

    # ---- bookkeeping helpers
    #
    # User code may call back into the allocator before an operation acts (a
    # clock, a hash) or after (phase 3: teardown callbacks, the hashes of
    # owners dropped from the table). So a release claims the references it
    # means to drop before the call and settles the claim after; an
    # allocation that user code sees (and frees) before the allocation
    # returns leaves an "orphan" settled when it does.

    def claim(self, p, n=1):
        """A release of ``n`` references of ``p`` (ALL: every one) is about to run."""
        held = self.held.get(p)
        if held is not None:
            held.claims.append(n)
        return held

    def settle(self, p, held, n, ok, what):
        """A release claimed as ``held`` returned: ``ok`` (it dropped ``n``) or not."""
        if held is not None:
            held.claims.remove(n)
            if not ok:
                if held.superseded and not held.claims:
                    self.fail(f"{what} raised, but its release of PASID {p} had taken effect: "
                              f"the allocator handed the PASID out again meanwhile")
                return
            if held.superseded:
                return                     # the release the claim announced
            if self.held.get(p) is held:
                self.drop(p, held, n, what)
                return
        if not ok:
            return
        # the life claimed was released meanwhile (by user code): this call
        # released the life that followed
        current = self.held.get(p)
        if current is not None and current.refs - current.claimed() >= (1 if n == ALL else n):
            self.drop(p, current, n, what)
        elif held is not None and held.exited:
            pass        # user code's exit_owner released the life whole, this call's part too
        elif self.ctl is not None and self.ctl.depth > 0:
            self.orphans.setdefault(p, []).append(("drop", n, what))
        else:
            self.fail(f"{what} of PASID {p} succeeded, but the run holds {current}")

    def drop(self, p, held, n, what):
        if n == ALL:
            n = held.refs
            held.exited = True
        if held.refs < n:
            self.fail(f"{what} of PASID {p} dropped {n} references, the run holds {held}")
        held.refs -= n
        if held.refs == 0:
            held.released = True
            del self.held[p]

    def took(self, p, owner, what):
        """The allocator handed out ``p``: nobody may hold it (but a release in flight)."""
        held = self.held.get(p)
        if held is not None:
            if held.claims and held.claimed() >= held.refs:
                held.superseded = True
            else:
                self.fail(f"{what} handed out PASID {p}, which the run still holds: {held}")
        held = self.held[p] = Held(self.allocs[0].generation(p), 1, owner)
        for kind, n, by in self.orphans.pop(p, ()):
            if kind == "get":
                held.refs += n
            else:
                self.drop(p, held, n, by)
                if p not in self.held:
                    break

    def gotten(self, p, what):
        """A reference more to ``p`` (get, dup)."""
        held = self.held.get(p)
        if held is not None:
            held.refs += 1
        elif self.ctl is not None and self.ctl.depth > 0:
            self.orphans.setdefault(p, []).append(("get", 1, what))
        else:
            self.fail(f"{what} of PASID {p} succeeded on a PASID the run does not hold")

    def no_orphans(self, name):
        if self.orphans:
            orphans, self.orphans = self.orphans, {}
            self.fail(f"after {name}: user code released or took references of PASIDs no "
                      f"operation handed out: {orphans}")


# Each operation: a function of the runner that draws its arguments, runs the
# call on every allocator, and updates the holdings. Returns the exception.

def op_alloc(r):
    owner, data = r.owner(), r.data()
    how = r.src.int(0, 3)
    lo = hi = None
    if r.src.chance(0.3):
        lo = r.src.int(0, r.size - 1)
        hi = r.src.pick([None, r.size - 1, r.src.int(0, r.size - 1), r.size])
    if how == 0:
        result, exc = r.run_call(f"alloc({owner!r}, data={data!r}, min={lo}, max={hi})",
                                 lambda a: a.alloc(owner, data=data, min=lo, max=hi), True)
    elif how == 1:
        result, exc = r.run_call(f"try_alloc({owner!r}, min={lo}, max={hi})",
                                 lambda a: a.try_alloc(owner, data=data, min=lo, max=hi), True)
    elif how == 2:
        p = r.pasid()
        result, exc = r.run_call(f"alloc_exact({p!r}, {owner!r})",
                                 lambda a: a.alloc_exact(p, owner, data=data), True)
    else:
        result, exc = r.run_call(f"open({owner!r}, min={lo}, max={hi})",
                                 lambda a: a.open(owner, data=data, min=lo, max=hi), True)
        if exc is None:
            r.handles.append(result)
            result = result.pasid
    if exc is None and result is not None:
        r.took(result, owner, "alloc")
    return exc


def op_alloc_many(r):
    n, owner = r.src.pick([0, 1, 2, 3, r.size, -1]), r.owner()
    result, exc = r.run_call(f"alloc_many({n}, {owner!r})", lambda a: a.alloc_many(n, owner), True)
    if exc is None:
        for p in result.tolist():
            r.took(p, owner, "alloc_many")
    return exc


def op_free(r):
    p = r.pasid()
    how = r.src.pick(["free", "put"])
    key = int(p) if isinstance(p, (int, np.integer)) and not isinstance(p, bool) else None
    claim = r.claim(key) if key is not None else None
    result, exc = r.run_call(f"{how}({p!r})", lambda a: getattr(a, how)(p))
    if key is not None or exc is None:
        r.settle(int(p), claim, 1, exc is None, how)
    return exc


def op_get(r):
    p = r.pasid()
    result, exc = r.run_call(f"get({p!r})", lambda a: a.get(p))
    if exc is None:
        r.gotten(int(p), "get")
    return exc


def op_free_many(r):
    ids = [r.pasid(bad=r.src.chance(0.1)) for _ in range(r.src.int(0, 4))]
    keys = [int(p) for p in ids if isinstance(p, (int, np.integer)) and not isinstance(p, bool)]
    claims = [(p, r.claim(p)) for p in keys]
    result, exc = r.run_call(f"free_many({ids!r})", lambda a: a.free_many(ids))
    if exc is None and len(keys) != len(ids):
        r.fail(f"free_many({ids!r}) accepted a bad ID")
    for p, held in claims:
        r.settle(p, held, 1, exc is None, "free_many")
    return exc


def op_handle(r):
    """A handle's close or dup, through the atomic calls it makes (``_put_if``/``_get_if``)
    on every allocator; judged by what the call reports against the run's holdings."""
    if not r.handles:
        return op_alloc(r)
    h = r.src.pick(r.handles)
    p, gen = h.pasid, h.generation
    if r.src.chance(0.5):
        r.handles.remove(h)
        held = r.held.get(p)
        claim = r.claim(p) if held is not None and held.gen == gen else None
        result, exc = r.run_call(f"handle({p}, gen {gen}).close()", lambda a: a._put_if(p, gen))
        if claim is not None:
            r.settle(p, claim, 1, exc is None and result, "close")
        elif exc is None and result:
            r.fail(f"close of a handle on PASID {p} gen {gen} put it; the run holds "
                   f"{r.held.get(p)}")
        if (exc is None and not result and claim is not None and r.held.get(p) is claim
                and not r.reentrant):
            r.fail(f"close of a live handle on PASID {p} gen {gen} did nothing")
        return exc
    result, exc = r.run_call(f"handle({p}, gen {gen}).dup()", lambda a: a._get_if(p, gen))
    if exc is None and result:
        held = r.held.get(p)
        if held is not None and held.gen != gen:
            r.fail(f"dup of a handle on PASID {p} gen {gen} worked, the run holds {held}")
        r.gotten(p, "dup")
        r.handles.append(pasid.PasidHandle(r.allocs[0], p, gen))
    return exc


def op_bind(r):
    p, device, data = r.pasid(), r.device(), r.data()
    return r.run_call(f"bind({p!r}, {device!r}, data={data!r})",
                      lambda a: a.bind(p, device, data=data))[1]


def op_unbind(r):
    p, device = r.pasid(), r.device()
    if r.src.chance(0.7):
        # a pair that is bound, if there is one
        for q in range(r.size):
            found = [a.devices(q) for a in r.allocs][0]   # user code is off: no call back
            if found and r.src.chance(0.5):
                p, device = q, r.src.pick(found)
                break
    return r.run_call(f"unbind({p!r}, {device!r})", lambda a: a.unbind(p, device))[1]


def op_device(r):
    device = r.device()
    if r.src.chance(0.25) and not ("remove-device-refused" in r.avoid and r.ctl is not None
                                   and r.ctl.under_hash()):
        return r.run_call(f"remove_device({device!r})", lambda a: a.remove_device(device))[1]
    kwargs = {}
    if r.src.chance(0.5):
        kwargs["bits"] = r.src.pick([1, 2, 3, MAX_BITS, 0])
    if r.src.chance(0.5):
        kwargs["drain"] = r.src.pick([0, 1, 3, -1])
    if r.src.chance(0.5):
        if r.src.chance(0.2):
            kwargs["on_teardown"] = None
        else:
            callback = Teardown(r.ctl, f"t{len(r.teardowns)}")
            r.teardowns.append(callback)
            kwargs["on_teardown"] = callback
    shown = {k: (v if not isinstance(v, Teardown) else v.name) for k, v in kwargs.items()}
    return r.run_call(f"add_device({device!r}, **{shown})",
                      lambda a: a.add_device(device, **kwargs))[1]


def op_exit(r):
    owner = r.src.pick(r.owners[2:] + [None])
    claims = {p: r.claim(p, ALL) for p, held in sorted(r.held.items())
              if held.owner is not None and same_key(held.owner, owner)}
    r.exiting.append(owner)
    try:
        result, exc = r.run_call(f"exit_owner({owner!r})", lambda a: a.exit_owner(owner))
    finally:
        r.exiting.pop()
    outer_exit = any(same_key(other, owner) for other in r.exiting)
    if exc is None:
        if not r.reentrant and result != sorted(claims):
            r.fail(f"exit_owner({owner!r}) returned {result}, the run expected {sorted(claims)}")
        for p in result:
            held = claims.pop(p, None)
            if held is None:
                # allocated for the owner by user code the call ran first
                held = r.held.get(p)
                if held is None and r.ctl is not None and r.ctl.depth > 0:
                    # an allocation for the owner that has not returned yet
                    r.orphans.setdefault(p, []).append(("drop", ALL, "exit_owner"))
                    continue
                if held is None or held.owner is None or not same_key(held.owner, owner):
                    r.fail(f"exit_owner({owner!r}) released PASID {p}, the run holds {held}")
                r.drop(p, held, ALL, "exit_owner")
            else:
                r.settle(p, held, ALL, True, "exit_owner")
    for p, held in claims.items():
        if exc is None:
            held.claims.remove(ALL)
            if not held.released and not held.superseded and not held.claims and not outer_exit:
                # (with a release in flight, that release may have taken it already)
                r.fail(f"exit_owner({owner!r}) left PASID {p} of the owner ACTIVE: {held}")
        else:
            r.settle(p, held, ALL, False, "exit_owner")
    return exc


def op_quota(r):
    owner, n = r.owner(), r.src.pick([None, 0, 1, 2, 5, -1])
    return r.run_call(f"set_quota({owner!r}, {n})", lambda a: a.set_quota(owner, n))[1]


def op_reserve(r):
    lo = r.src.int(0, r.size - 1)
    hi = r.src.pick([None, lo, min(r.size - 1, lo + r.src.int(0, 3)), r.src.int(0, r.size - 1)])
    how = r.src.pick(["reserve", "unreserve"])
    return r.run_call(f"{how}({lo}, {hi})", lambda a: getattr(a, how)(lo, hi))[1]


def op_time(r):
    how = r.src.int(0, 5)
    if how == 0 and r.clock is not None:
        # the Python clock moves (sometimes back, sometimes to a bad value)
        if r.src.chance(0.15):
            bad = r.src.pick([float("nan"), float("inf"), "1", True, 1e301, -1e301, [0]])
            r.clock.bad = bad
            result, exc = r.run_call(f"alloc() with the clock at {bad!r}", lambda a: a.alloc(),
                                     True)
            if exc is None:
                r.took(result, None, "alloc")
            return exc
        else:
            step = r.src.pick([0.5, 1, 2, 4, -1])
            if len(r.allocs) > 1:
                step = abs(step)     # a clock going back: one backend's queries would settle it
            r.clock.t = max(0.0, r.clock.t + step)
            r.note(f"clock at {r.clock.t}")
            if "owner-record-reclaimed" in r.avoid:
                for a in r.allocs:
                    a.advance()
        return None
    if how == 1 and r.clock is None and r.src.chance(0.1) and "pure-hold-precision" not in r.avoid:
        to = r.src.pick([2.0**53, 1.7e18, 1e300])
        return r.run_call(f"advance(to={to})", lambda a: a.advance(to=to))[1]
    if how <= 2:
        return r.run_call("advance()", lambda a: a.advance())[1]
    if how == 3:
        by = r.src.pick([0, 0.5, 1, 2, 5, -1])
        return r.run_call(f"advance(by={by})", lambda a: a.advance(by=by))[1]
    return r.run_call("next_release_time(), now",
                      lambda a: (a.next_release_time(), a.now))[1]


def op_query(r):
    p = r.pasid()
    how = r.src.int(0, 7)
    if how == 0:
        return r.run_call(f"state/owner/data({p!r})",
                          lambda a: (a.state(p), a.owner(p), a.data(p)))[1]
    if how == 1:
        return r.run_call(f"refcount/generation/devices({p!r})",
                          lambda a: (a.refcount(p), a.generation(p), a.devices(p)))[1]
    if how == 2:
        device = r.device()
        return r.run_call(f"binding({p!r}, {device!r})", lambda a: a.binding(p, device))[1]
    if how == 3:
        device = r.device()
        return r.run_call(f"pending({device!r})", lambda a: a.pending(device))[1]
    if how == 4:
        ids = [r.pasid(bad=r.src.chance(0.1)) for _ in range(r.src.int(0, 3))]
        return r.run_call(f"states({ids!r})", lambda a: a.states(ids))[1]
    if how == 5:
        return r.run_call("stats(), len, iter", lambda a: (a.stats(), len(a), list(a)))[1]
    return r.run_call(f"{p!r} in a", lambda a: p in a)[1]


def op_snapshot(r):
    """A snapshot of each kind; each loads and passes _check()."""
    how = r.src.int(0, 3)
    r.stats.snapshots += 1
    if how == 0:
        result, exc = r.run_call("to_bytes()", lambda a: a.to_bytes())
        if exc is None:
            for mod in set(type(a) for a in r.allocs) | {pasid.pure.PasidAllocator}:
                try:
                    loaded = mod.from_bytes(result)
                    loaded._check()
                    again = loaded.to_bytes()
                except Exception as error:
                    r.fail(f"{mod.__module__}.from_bytes of a snapshot the allocator made: "
                           + "".join(traceback.format_exception(error)))
                if again != result:
                    r.fail(f"{mod.__module__}: a loaded snapshot saves different bytes")
                if r.kwargs is not None:
                    problems = counters_add_up(loaded.stats(), r.size)
                    if problems:
                        r.fail(f"a snapshot's counters do not add up: {problems}")
        return exc
    if how == 1:
        result, exc = r.run_call("pickle", lambda a: pickle.loads(pickle.dumps(a)))
    elif how == 2:
        result, exc = r.run_call("deepcopy", lambda a: copy.deepcopy(a))
    else:
        result, exc = r.run_call("copy", lambda a: copy.copy(a))
    if exc is None:
        result._check()
        if r.kwargs is not None:
            problems = counters_add_up(result.stats(), r.size)
            if problems:
                r.fail(f"a copy's counters do not add up: {problems}")
    return exc


OPS = [
    ("alloc", op_alloc), ("alloc", op_alloc), ("alloc", op_alloc), ("alloc_many", op_alloc_many),
    ("free", op_free), ("free", op_free), ("get", op_get), ("free_many", op_free_many),
    ("handle", op_handle), ("bind", op_bind), ("bind", op_bind), ("unbind", op_unbind),
    ("unbind", op_unbind), ("device", op_device), ("exit_owner", op_exit), ("quota", op_quota),
    ("reserve", op_reserve), ("time", op_time), ("time", op_time), ("query", op_query),
    ("snapshot", op_snapshot),
]
# what user code does when it calls back: everything but handles (their objects
# are the run's) and re-entrant snapshots of the allocator's tables (kept, below)
OPS_NESTED = [op for op in OPS if op[0] != "handle"]


# ---------------------------------------------------------------- snapshots

def seed_snapshots(count=12, seed=0):
    """Varied snapshots to mutate: each a differential run's allocator, saved; then
    ``max(2, count // 4)`` hosts with VMs (version 3, :func:`vm_host`)."""
    blobs = []
    for i in range(count):
        runner = OpRunner([pasid.pure], RandomSource(seed * 1000 + i), reentrant=False)
        runner.run(40 + 20 * (i % 4))
        blobs.append(runner.allocs[0].to_bytes())
    for i in range(max(2, count // 4)):
        blobs.append(vm_host(RandomSource(seed * 1000 + 500 + i)).to_bytes())
    return blobs


def vm_host(src, steps=40):
    """A pure host with VMs made by a short random run: both modes, ranges, quotas,
    devices (one narrow), guest tags and data, bindings, host PASIDs tagged with a
    VM's name, guest PASIDs in the host's release, removed and migrated VMs."""
    host = pasid.pure.PasidAllocator(bits=src.pick([6, 8]), grace=src.pick([0, 2.5]),
                                     strategy=src.pick(STRATEGIES), seed=src.int(0, 99))
    host.add_device("d0", drain=1)
    host.add_device("d1", drain=0)
    host.add_device("d2", bits=5, drain=2)
    serial = 0
    for _ in range(steps):
        names = host.vms()
        how = src.int(0, 9) if names else 0
        try:
            if how == 0 and len(names) < 3:
                host.add_vm(f"vm{serial}" if src.chance(0.7) else ("vm", serial),
                            mode=src.pick(["identity", "translated"]),
                            quota=src.pick([None, None, 4]), min=src.pick([None, 8, 20]),
                            devices=src.pick([(), ("d0",), ("d1",), ("d2",), ("d0", "d1")]))
                serial += 1
                continue
            if not names:
                continue
            vm = host.vm(src.pick(names))
            if how <= 3:
                vm.alloc(owner=src.pick([None, "p1", ("p", 2)]), data=src.pick([None, 7]))
            elif how == 4 and len(vm):
                vm.free(src.pick(list(vm)))
            elif how == 5 and len(vm):
                g = src.pick(list(vm))
                if src.chance(0.7):
                    vm.bind(g, src.pick(list(vm.devices) or ["d0"]))
                else:
                    vm.get(g)
            elif how == 6:
                host.alloc(owner=vm.name)         # the host's own, tagged with the VM's name
            elif how == 7:
                host.advance(by=src.pick([1, 3]))
            elif how == 8 and src.chance(0.3):
                host.remove_vm(vm.name)
            elif how == 9:
                blob = vm.export()
                host.remove_vm(vm.name)
                host.import_vm(blob, f"vm{serial}", mode=src.pick([None, "translated"]))
                serial += 1
        except (PasidError, TypeError, ValueError):
            pass
    if not host.vms():
        host.add_vm("last").alloc()
    return host


def frame(payload, version=_snapshot.VERSION):
    """Snapshot bytes around an encoded payload, with a correct checksum."""
    body = bytearray(_snapshot.MAGIC)
    body.append(version)
    body += payload
    body += struct.pack("<I", zlib.crc32(body))
    return bytes(body)


INTS = [0, 1, -1, 2, 3, 4, 15, 16, 20, 21, 255, 2**20, 2**31 - 1, 2**32 - 1, 2**32, 2**63 - 1,
        2**63, 2**64 - 1, 2**64, -(2**63), 10**400]
FLOATS = [0.0, -0.0, 0.5, 1.0, -1.0, 1e300, 1e301, -1e301, 1.7e308, float("inf"),
          float("-inf"), float("nan"), 5e-324]


def plain_value(src, depth=0):
    """A random plain-data value (what a snapshot may hold)."""
    kind = src.int(0, 9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return src.chance(0.5)
    if kind == 2:
        return src.pick(INTS)
    if kind == 3:
        return src.pick(FLOATS)
    if kind == 4:
        return src.pick(["", "lowest", "fifo", "o1", "d1", "\ud800", "x" * 3])
    if kind == 5:
        return src.pick([b"", b"\x00", b"\x01\x00\x00\x00", b"\xff" * 4, b"\x00" * 8])
    if kind == 6:
        return src.int(-3, 40)
    items = [plain_value(src, depth + 1) for _ in range(src.int(0, 3))]
    if kind == 7:
        return items
    if kind == 8:
        return tuple(items)
    try:
        return {items[i]: plain_value(src, depth + 1) for i in range(len(items))}
    except TypeError:
        return {}


def mutate_value(src, value, depth=0):
    """``value`` changed a little (or replaced), keeping its shape most of the time."""
    if src.chance(0.15) or depth > 4:
        return plain_value(src)
    kind = type(value)
    if kind is bool or value is None:
        return plain_value(src)
    if kind is int:
        return src.pick([value + 1, value - 1, -value, value * 2 + 1, src.pick(INTS),
                         float(value) if abs(value) < 2**1000 else 1e308])
    if kind is float:
        return src.pick([value + 1, -value, value * 1e10, src.pick(FLOATS), int(value)
                         if math.isfinite(value) else 0])
    if kind is str:
        return src.pick([value + "x", value[:-1], value.upper(), "", "o1"])
    if kind is bytes:
        raw = bytearray(value)
        how = src.int(0, 4)
        if how == 0 and raw:
            raw[src.int(0, len(raw) - 1)] = src.int(0, 255)
        elif how == 1:
            raw += src.raw(src.pick([1, 4, 8]))
        elif how == 2 and raw:
            del raw[-src.pick([1, 4, 8]):]
        elif how == 3 and len(raw) >= 8:
            i, j = 4 * src.int(0, len(raw) // 4 - 1), 4 * src.int(0, len(raw) // 4 - 1)
            raw[i:i + 4], raw[j:j + 4] = raw[j:j + 4], raw[i:i + 4]
        else:
            raw = bytearray(src.raw(src.int(0, 12)))
        return bytes(raw)
    if kind in (list, tuple):
        items = list(value)
        how = src.int(0, 4)
        if items and how <= 1:
            i = src.int(0, len(items) - 1)
            items[i] = mutate_value(src, items[i], depth + 1)
        elif how == 2 and items:
            del items[src.int(0, len(items) - 1)]
        elif how == 3 and items:
            items.insert(src.int(0, len(items)), copy.deepcopy(src.pick(items)))
        else:
            items.append(plain_value(src))
        return items if kind is list else tuple(items)
    if kind is dict:
        return {k: mutate_value(src, v, depth + 1) for k, v in value.items()}
    return plain_value(src)


def mutate_snapshot(src, blob):
    """A mutated snapshot: raw bytes (checksum fixed or not) or a structured change."""
    how = src.int(0, 9)
    if how <= 2:
        raw = bytearray(blob)
        for _ in range(src.int(1, 4)):
            what = src.int(0, 4)
            at = src.int(0, len(raw)) if raw else 0
            if what == 0 and raw:
                raw[min(at, len(raw) - 1)] ^= 1 << src.int(0, 7)
            elif what == 1:
                raw[at:at] = src.raw(src.int(1, 8))
            elif what == 2 and raw:
                del raw[at:at + src.int(1, 8)]
            elif what == 3:
                del raw[at:]
            else:
                raw += src.raw(src.int(1, 16))
        if how >= 1 and len(raw) >= len(_snapshot.MAGIC) + 5:
            raw[-4:] = struct.pack("<I", zlib.crc32(bytes(raw[:-4])))
        return bytes(raw)
    payload = blob[len(_snapshot.MAGIC) + 1:-4]
    values = _snapshot.decode(payload)
    if how == 3:
        return frame(payload, version=src.pick([0, 1, _snapshot.VERSION + 1, 255]))
    for _ in range(src.int(1, 3)):
        # a host's VMs (version 3: the last field) half the time: a VM's field
        i = len(values) - 1 if len(values) == len(_snapshot.FIELDS_V3) and src.chance(0.5) \
            else src.int(0, len(values) - 1)
        values[i] = mutate_value(src, values[i])
    if how == 4 and src.chance(0.5):
        values = values[:-1] if src.chance(0.5) else values + [None]
    return frame(_snapshot.encode(values), version=blob[len(_snapshot.MAGIC)])


def load_outcome(mod, blob, clock=None):
    """("error",) for SnapshotError (or TypeError for a non-bytes input), else ("ok", bytes, a)."""
    try:
        a = mod.PasidAllocator.from_bytes(blob, clock=clock)
    except SnapshotError:
        return ("SnapshotError",), None
    except TypeError:
        if isinstance(blob, (bytes, bytearray, memoryview)):
            raise
        return ("TypeError",), None
    a._check()
    saved = a.to_bytes()
    again = mod.PasidAllocator.from_bytes(saved)
    again._check()
    if again.to_bytes() != saved:
        raise Bug(f"{mod.__name__}: a loaded snapshot does not save the same bytes twice")
    return ("ok", saved), a


def snapshot_case(src, mods, seeds, stats=None, ops=12, avoid=None, mutate=True, show=False):
    """One mutated snapshot through every backend's from_bytes, then a few operations.

    ``mutate=False``: the (single) seed as it is. Returns the outcome's name."""
    stats = stats if stats is not None else Stats()
    blob = mutate_snapshot(src, src.pick(seeds)) if mutate else seeds[0]
    if mutate and src.chance(0.02):
        blob = src.pick([bytearray(blob), memoryview(blob), blob.decode("latin-1"), None])
    if show:
        print(f"the bytes: {blob!r}")
    outcomes, loaded = [], []
    avoid = set(KNOWN) if avoid is None else set(avoid)
    for mod in mods:
        try:
            outcome, a = load_outcome(mod, blob)
        except Bug:
            raise
        except Exception as exc:
            if "snapshot-ranges" in avoid and known_load_error(exc):
                stats.loads["known"] = stats.loads.get("known", 0) + 1
                return "known"
            raise Bug(f"{mod.__name__}.PasidAllocator.from_bytes raised {type(exc).__name__}: "
                      f"{exc} (SnapshotError or a load that passes _check expected)\n"
                      + "".join(traceback.format_exception(exc))
                      + f"\n--- the bytes:\n{blob!r}") from None
        outcomes.append(outcome)
        loaded.append(a)
    stats.loads[outcomes[0][0]] = stats.loads.get(outcomes[0][0], 0) + 1
    stats.snapshots += 1
    if any(o != outcomes[0] for o in outcomes[1:]):
        raise Bug(f"the backends disagree on from_bytes({blob!r}): "
                  + " / ".join(f"{m.__name__}: {o[0]}" for m, o in zip(mods, outcomes)))
    if outcomes[0][0] == "ok" and ops and not (
            avoid & {"snapshot-ranges", "pure-hold-precision"} and extreme_snapshot(blob)):
        runner = OpRunner(mods, src, reentrant=False, stats=stats, allocators=loaded, avoid=avoid)
        try:
            runner.run(ops)
        except Bug as bug:
            raise Bug(f"after loading a snapshot: {bug}\n--- the bytes:\n{blob!r}") from None
    return outcomes[0][0]


def run_reentrant(mod, src, max_ops, stats=None, rate=0.08, avoid=None):
    runner = OpRunner([mod], src, reentrant=True, stats=stats, rate=rate, avoid=avoid)
    runner.run(max_ops)
    return runner


def run_differential(mods, src, max_ops, stats=None, avoid=None):
    runner = OpRunner(mods, src, reentrant=False, stats=stats, avoid=avoid)
    runner.run(max_ops)
    return runner
