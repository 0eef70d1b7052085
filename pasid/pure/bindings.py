"""Bindings and devices of the pure PasidAllocator.

A record per declared device (its settings, handle and the PASIDs bound to
it), found through the device table (a dict keyed by the device object,
changed under the registry lock); per PASID its bindings by device handle in
bind order, each with its bind count and the driver's data. The twin of
``pasid/_bindings.pxi``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from pasid import _args, _messages
from pasid._errors import InvalidPasid, StateError
from pasid._state import ACTIVE, DRAINING
from pasid.pure.release import settle

if TYPE_CHECKING:
    from pasid.pure.allocator import PasidAllocator

__all__ = ["bind_in", "device_record", "device_remove", "device_settings", "unbind_in"]

COUNT_MAX = _args.COUNT_MAX
_STATE_NAMES = _args.STATE_NAMES


class _Later(Exception):
    """An error found under the lock whose message names a user object: the message
    (``pasid._messages``: the object's ``repr``, user code that may call back) is
    built once the lock is free."""

    def __init__(self, error: type[Exception], message: Callable[..., str], *args: Any) -> None:
        super().__init__()
        self.error, self.message, self.args_ = error, message, args

    def build(self) -> Exception:
        return self.error(self.message(*self.args_))


class _Device:
    """A declared device: its settings, handle and the PASIDs bound to it."""

    __slots__ = ("key", "handle", "bits", "drain", "on_teardown", "gone", "bound")

    def __init__(self, key: Hashable, handle: int) -> None:
        self.key = key
        self.handle = handle
        self.bits = _args.MAX_BITS
        self.drain = 0.0
        self.on_teardown: Callable[[int], object] | None = None
        self.gone = False
        self.bound: set[int] = set()


# ---------------------------------------------------------------- the device table (phase 1)


def device_record(a: PasidAllocator, device: Hashable, declare: bool) -> _Device | None:
    """The current record of ``device``; None if it is not declared and ``declare``
    is false, else declared with the defaults."""
    found = a._devices.get(device)
    if found is not None and not found.gone:
        return found
    if not declare:
        return None
    a._enter_registry()
    try:
        found = a._devices.get(device)
        if found is not None and not found.gone:
            return found
        info = _Device(device, len(a._device_list))
        a._device_list.append(info)
        try:
            a._devices[device] = info
        except BaseException:
            a._device_list.pop()
            raise
    finally:
        a._leave_registry()
    return info


# ---------------------------------------------------------------- bindings (phase 2)


def bind_in(a: PasidAllocator, p: int, info: _Device, data: object) -> None:
    """The body of bind (lock held, time settled, ``info`` current)."""
    if a._state[p] != ACTIVE:
        raise StateError(_messages.not_active("bind", p, _STATE_NAMES[a._state[p]]))
    if p >> info.bits:
        raise _Later(InvalidPasid, _messages.too_wide, p, info.key, info.bits)
    bindings = a._bindings.get(p)
    entry = None if bindings is None else bindings.get(info.handle)
    if entry is not None:
        if entry[0] == COUNT_MAX:
            raise _Later(OverflowError, _messages.bind_limit, p, info.key)
        entry[0] += 1
        if data is not None:
            a._graveyard.append(entry[1])
            entry[1] = data
        return
    if bindings is None:
        bindings = a._bindings[p] = {}
    bindings[info.handle] = [1, data]
    info.bound.add(p)


def unbind_in(a: PasidAllocator, p: int, info: _Device, now: float) -> int:
    """The body of unbind (lock held, time settled); the state after."""
    state = a._state[p]
    bindings = a._bindings.get(p)
    entry = None if bindings is None else bindings.get(info.handle)
    if entry is None:
        raise _Later(StateError, _messages.not_bound, p, info.key)
    assert bindings is not None
    if entry[0] > 1:
        entry[0] -= 1
        return state
    hold = now + info.drain
    held = a._hold.get(p)
    if held is None or hold > held:
        a._hold[p] = hold
    del bindings[info.handle]
    if entry[1] is not None:
        a._graveyard.append(entry[1])
    info.bound.discard(p)
    if not bindings:
        del a._bindings[p]
        if state == DRAINING:
            settle(a, p, now)
    return a._state[p]


# ---------------------------------------------------------------- declaring and removing devices


def device_settings(a: PasidAllocator, device: Hashable, width: int, drain_time: float,
                    callback_given: bool, callback: Callable[[int], object] | None) -> int:
    """The body of add_device: ``device`` declared with the defaults if it is not,
    then the settings given (``width`` >= 0, ``drain_time`` >= 0, ``callback``
    when ``callback_given``) set, all or none; its handle. Narrower than a PASID
    bound to it: InvalidPasid, nothing changed."""
    while True:
        info = device_record(a, device, True)
        assert info is not None
        with a._lock:
            if not info.gone:
                widest = max(info.bound, default=-1)
                wider = width >= 0 and widest >= 0 and widest >> width
                if not wider:
                    if width >= 0:
                        info.bits = width
                    if drain_time >= 0:
                        info.drain = drain_time
                    if callback_given:
                        # the old callback is dropped once the lock is free
                        callback, info.on_teardown = info.on_teardown, callback
                    return info.handle
        if not info.gone:
            raise InvalidPasid(_messages.narrower_than_bound(device, widest, width))


def device_remove(a: PasidAllocator, device: Hashable) -> None:
    """The body of remove_device up to its phase 3 (the caller's ``_after``): every
    binding of ``device`` dropped at once (no drain hold, no callback), the PASIDs
    left DRAINING by it settled in PASID order, its record marked gone and dropped
    from the device table. Unknown device: StateError, nothing changed."""
    # called from a __hash__/__eq__ while this thread changes the tables, its own
    # table update could not run after the change: refused before anything changes
    a._refuse_reentry()
    info = device_record(a, device, False)
    if info is None:
        raise StateError(_messages.unknown_device(device))
    reading = a._reading()
    with a._lock:
        gone = info.gone
        if not gone:
            now = a._time(reading)
            a._settle_time(now)
            drained = []
            for p in info.bound:
                bindings = a._bindings[p]
                entry = bindings.pop(info.handle)
                if entry[1] is not None:
                    a._graveyard.append(entry[1])
                if not bindings:
                    del a._bindings[p]
                    if a._state[p] == DRAINING:
                        drained.append(p)
            info.bound.clear()
            for p in sorted(drained):
                settle(a, p, now)
            info.gone = True
            a._device_list[info.handle] = None
    if gone:
        raise StateError(_messages.unknown_device(device))
    # the device's __hash__/__eq__ may raise here, after the change; then its record
    # stays in the table, marked gone (look-ups treat it as absent)
    a._enter_registry()
    try:
        if a._devices.get(device) is info:
            del a._devices[device]
    except Exception:
        pass
    finally:
        a._leave_registry()
