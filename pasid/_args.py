"""Argument rules and constants: one home, shared by both backends and the snapshot checker.

What an argument may be and what the error says, written once. The pure
backend calls these for every argument; the compiled core checks the common
case inline (an int that fits a machine word, a float, a name it knows) and
calls these for everything else, so the two backends' messages are the same
by construction.

>>> as_int(7, "PASID"), as_time(2, "grace")
(7, 2.0)
>>> as_int(True, "PASID")
Traceback (most recent call last):
    ...
TypeError: PASID must be an integer, not bool
"""

from __future__ import annotations

import inspect
import math
import operator
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from pasid._errors import InvalidPasid
from pasid._state import State

__all__ = [
    "COUNT_MAX",
    "COUNTER_MAX",
    "MAX_BITS",
    "MAX_TIME",
    "QUOTA_MAX",
    "STATE_NAMES",
    "STRATEGIES",
    "VM_MODES",
    "as_bits",
    "as_count",
    "as_drain",
    "as_duration",
    "as_grace",
    "as_int",
    "as_quota",
    "as_seed",
    "as_strategy",
    "as_vm_mode",
    "as_time",
    "check_callable",
    "bind_arguments",
    "exhausted_message",
    "UNSET",
    "Unset",
    "check_time",
    "id_array",
    "parse_reserved",
]

STRATEGIES = ("lowest", "cyclic", "fifo", "random")
VM_MODES = ("identity", "translated")      # a GuestSpace's modes, by index
STATE_NAMES = tuple(state.name for state in State)     # by code: STATE_NAMES[2] == "ACTIVE"
MAX_BITS = 20
# Times, graces and drains stay within +-MAX_TIME, so that a time plus a grace
# or a drain is still finite: a release time never overflows to infinity.
MAX_TIME = 1e300
COUNT_MAX = 2**32 - 1        # refcounts and bind counts refuse to pass it
QUOTA_MAX = 2**63 - 1
# The stats counters are 64-bit in the core. A snapshot holds them up to 2**62, so
# that an allocator loaded from one counts on for a century of nanosecond
# operations before any counter could pass 2**63 - 1.
COUNTER_MAX = 2**62


class Unset:
    """The type of ``UNSET``, the default of a setting not given (``add_device``):
    keep it as it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "unset"


UNSET = Unset()


def as_int(value: Any, what: str) -> int:
    """``value`` as a Python int: ints and numpy integers; TypeError for bools and the rest."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be an integer, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}") from None


def check_time(value: float, what: str) -> float:
    """``value`` if it is finite and within +-1e300, else ValueError."""
    if not -MAX_TIME <= value <= MAX_TIME:
        raise ValueError(f"{what} must be finite and within +-1e300, got {value}")
    return value


def as_time(value: Any, what: str) -> float:
    """``value`` as a float time or duration: ints, floats, numpy numbers (not bools),
    finite and within +-1e300. TypeError for other types, ValueError for the rest."""
    if type(value) is not float and (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, (int, float, np.integer, np.floating))):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"{what} must be finite and within +-1e300, got {value}") from None
    return check_time(result, what)


def as_bits(value: Any, what: str = "bits") -> int:
    """A PASID width: an int in 1..20."""
    bits = as_int(value, what)
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"{what} must be in 1..{MAX_BITS}, got {bits}")
    return bits


def as_strategy(value: Any) -> int:
    """The index of a strategy name in STRATEGIES."""
    if not isinstance(value, str) or value not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {value!r}")
    return STRATEGIES.index(value)


def as_vm_mode(value: Any) -> int:
    """The index of a VM mode in VM_MODES."""
    if not isinstance(value, str) or value not in VM_MODES:
        raise ValueError(f"mode must be one of {', '.join(VM_MODES)}, got {value!r}")
    return VM_MODES.index(value)


def as_duration(value: Any, what: str) -> float:
    """A time span (a grace, a drain, a workload's rate or mean): a time (:func:`as_time`)
    that is >= 0."""
    duration = as_time(value, what)
    if duration < 0:
        raise ValueError(f"{what} must be >= 0, got {duration}")
    return duration


def as_grace(value: Any) -> float:
    return as_duration(value, "grace")


def as_drain(value: Any) -> float:
    return as_duration(value, "drain")


def as_seed(value: Any) -> int:
    """The generator's seed as 64 bits; None: from the OS."""
    if value is None:
        return int.from_bytes(os.urandom(8), "little")
    return as_int(value, "seed") & 0xFFFF_FFFF_FFFF_FFFF


def as_quota(value: Any) -> int:
    """A quota: an int in 0..2**63-1; None (no quota) as -1."""
    if value is None:
        return -1
    quota = as_int(value, "quota")
    if not 0 <= quota <= QUOTA_MAX:
        raise ValueError(f"quota must be in 0..{QUOTA_MAX}, got {quota}")
    return quota


def as_count(value: Any, what: str) -> int:
    """A number of things asked for (``n``): an int >= 0."""
    n = as_int(value, what)
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return n


def check_callable(value: Any, what: str, kind: str = "callable") -> None:
    """TypeError unless ``value`` is None or callable (``kind`` says which callable)."""
    if value is not None and not callable(value):
        raise TypeError(f"{what} must be None or {kind}")


def parse_reserved(reserved: Any, size: int) -> list[tuple[int, int]]:
    """The ``reserved`` argument as inclusive ``(lo, hi)`` pairs, checked.

    Items are IDs, ``range`` objects (step 1) or ``(lo, hi)`` inclusive
    pairs. A bare tuple of two ints is refused: ``(0, 15)`` could mean two
    IDs or sixteen.

    >>> parse_reserved([0, (4, 7), range(10, 12)], 16)
    [(0, 0), (4, 7), (10, 11)]
    """
    if (isinstance(reserved, tuple) and len(reserved) == 2
            and not any(isinstance(item, (tuple, range)) for item in reserved)):
        raise ValueError(
            f"reserved={reserved!r} is ambiguous: write reserved=[{reserved[0]!r}, "
            f"{reserved[1]!r}] for two IDs, or reserved=[({reserved[0]!r}, {reserved[1]!r})] "
            f"(inclusive) or reserved=[range(...)] for a range")
    if not isinstance(reserved, Iterable):
        raise TypeError(f"reserved must be an iterable of IDs, ranges and (lo, hi) pairs, "
                        f"not {type(reserved).__name__}")
    ranges = []
    for item in reserved:
        if isinstance(item, range):
            if item.step != 1:
                raise ValueError(f"a reserved range must have step 1, got {item!r}")
            if not item:
                raise InvalidPasid(f"empty reserved range {item!r}")
            lo, hi = item.start, item.stop - 1
        elif isinstance(item, tuple):
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


def id_array(ids: Any, size: int) -> npt.NDArray[np.uint32]:
    """``ids`` as a new contiguous uint32 array (a copy its caller cannot change),
    every one an integer in ``0..size-1``: TypeError (bools included), InvalidPasid.

    The copy comes first and the checks read the copy: numpy may let the GIL go
    while it reads, and another thread writing into the caller's array then can
    only change what was copied, never what was checked. O(len(ids)).

    >>> id_array([3, 1], 4)
    array([3, 1], dtype=uint32)
    >>> id_array(np.array([[0], [5]]), 4)
    Traceback (most recent call last):
        ...
    pasid._errors.InvalidPasid: PASID 5 out of range 0..3
    """
    if isinstance(ids, (list, tuple)):
        for value in ids:
            if isinstance(value, (bool, np.bool_)):
                raise TypeError("ids must be integers, not bool")
    array = np.array(ids).reshape(-1)        # always a new array: ours alone from here
    if array.dtype == object:
        # Python ints too large for any integer dtype: checked one by one
        for value in array:
            p = as_int(value, "PASID")
            if not 0 <= p < size:
                raise InvalidPasid(f"PASID {value} out of range 0..{size - 1}")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu" and (array.size or array.dtype.kind in "bm"):
        # bools and timedelta64 (numpy counts it as an integer) included
        raise TypeError(f"ids must be integers, not {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= size):
        bad = (array < 0) | (array >= size)
        raise InvalidPasid(f"PASID {int(array[bad.argmax()])} out of range 0..{size - 1}")
    return array.astype(np.uint32, order="C", copy=False)


def exhausted_message(asked: str, draining: int, quarantined: int,
                      next_release: float | None) -> str:
    """The message of an allocation refused for want of FREE PASIDs: what was asked,
    and, when some are only waiting to be reusable, how many and until when.

    >>> exhausted_message("no FREE PASID in 1..15", 3, 2, 12.5)
    'no FREE PASID in 1..15 (3 DRAINING and 2 QUARANTINED, not reusable yet; the next at 12.5)'
    """
    if not draining and not quarantined:
        return asked
    waiting = f"{draining} DRAINING and {quarantined} QUARANTINED, not reusable yet"
    if next_release is not None:
        waiting += f"; the next at {next_release}"
    else:
        waiting += "; they wait for their devices to unbind"
    return f"{asked} ({waiting})"


def _allocator(bits: Any = 20, *, reserved: Any = (0,), strategy: Any = "lowest",
               grace: Any = 0, clock: Any = None, seed: Any = None) -> None:
    """PasidAllocator's constructor signature, for the compiled class (whose
    ``__cinit__`` takes ``*args, **kwargs``) to bind its arguments to."""


ALLOCATOR_SIGNATURE = inspect.signature(_allocator)
NO_ARGUMENTS = inspect.Signature()


def bind_arguments(name: str, signature: inspect.Signature, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> dict[str, Any]:
    """A constructor's arguments bound to ``signature`` (defaults applied), with the
    errors Python gives a function of that name (``PasidAllocator() got ...``).

    >>> def f(bits=20, *, seed=None): ...
    >>> bind_arguments("A", inspect.signature(f), (8,), {})
    {'bits': 8, 'seed': None}
    >>> bind_arguments("A", inspect.signature(f), (), {"sed": 1})
    Traceback (most recent call last):
        ...
    TypeError: A() got an unexpected keyword argument 'sed'
    """
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        message = str(exc)
        if message.startswith("got ") or message.startswith("too many"):
            message = f"{name}() {message}"
        else:
            message = f"{name}(): {message}"
        raise TypeError(message) from None
    bound.apply_defaults()
    return dict(bound.arguments)
