"""Owners and quotas of the pure PasidAllocator.

A record per owner object (its use, what its quota counts; its quota; its
ACTIVE PASIDs), found through the owner table (a dict keyed by the owner
object: its ``__hash__``/``__eq__`` run in phase 1 only, the table changing
under the registry lock). A record is pinned from an operation's phase 1 to
its phase 3 and dropped once it holds nothing, has no quota and no pin, unless
it is the last record an operation named (``_last``): that one is kept while
idle, so an owner that frees its only PASID and allocates again finds its
record without the registry lock or a new record; the same owner object again
is found by identity, with no look-up. At most one idle record is kept: the
previous one is dropped when another owner is named. The twin of
``pasid/_owners.pxi``, which in addition keeps the last record out of its table
while its key is an exact str or int (a storage choice for speed: what lives and
what a look-up finds are the same).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pasid.pure.allocator import PasidAllocator

__all__ = ["drop_gone_owners", "over_quota", "owner_lookup", "owner_pin", "owner_record",
           "owner_tag", "owner_unpin", "owner_untag"]


class _Owner:
    """An owner's record: its use (what its quota counts), quota and ACTIVE PASIDs."""

    __slots__ = ("key", "use", "quota", "active", "gone", "pins", "guest")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.use = 0                 # PASIDs ACTIVE, DRAINING or QUARANTINED
        self.quota = -1              # -1: none
        self.active: set[int] = set()
        self.gone = False            # dropped (or about to be) from the owner table
        self.pins = 0                # operations between their phase 1 and phase 3 holding
                                     # it: never marked gone while pinned
        self.guest: Any = None       # a VM's record: its GuestSpace (pasid/pure/guest.py)


# ---------------------------------------------------------------- the owner table (phase 1, 3)


def owner_lookup(a: PasidAllocator, owner: Hashable) -> _Owner | None:
    """The current record of ``owner``, or None: it holds no PASID and has no quota."""
    found = a._owners.get(owner)
    if found is None or found.gone:
        return None
    return found


def owner_record(a: PasidAllocator, owner: Hashable) -> _Owner:
    """The current record of ``owner``, made if it has none, pinned (phase 1).

    A pinned record is never marked gone, so it stays current through the
    operation's phase 2, and a record made for it is not "idle" to
    :meth:`_check` while the operation is in flight. Every caller unpins it
    in its phase 3 (:meth:`_unpin`, in a ``finally``). The same object as the
    last owner named costs no look-up (an identity test: no user code runs)."""
    record = owner_last(a, owner)
    if record is not None:
        return record
    record = owner_lookup(a, owner)
    if record is None or not owner_pin(a, record):
        record = owner_make(a, owner)
    owner_remember(a, record)
    return record


def owner_last(a: PasidAllocator, owner: Hashable) -> _Owner | None:
    """The last record named, pinned, if ``owner`` is its very key object; else None."""
    with a._lock:
        record = a._last
        if record is None or record.key is not owner or record.gone:
            return None
        record.pins += 1
        return record


def owner_make(a: PasidAllocator, owner: Hashable) -> _Owner:
    """:func:`owner_record`'s slow path: under the registry lock, the record in the
    table (a thread may have made it meanwhile) or a new one, pinned."""
    a._enter_registry()
    try:
        found = a._owners.get(owner)
        if found is not None and owner_pin(a, found):
            return found
        record = _Owner(owner)
        record.pins = 1                  # no other thread sees it before the insert
        a._owners[owner] = record
    finally:
        a._leave_registry()
    return record


def owner_remember(a: PasidAllocator, record: _Owner) -> None:
    """``record`` (pinned) becomes the last named; the one before, if idle, is
    marked gone (dropped in phase 3)."""
    with a._lock:
        before = a._last
        if before is record:
            return
        a._last = record
        if before is not None and owner_idle(before) and not before.gone:
            owner_drop(a, before)


def owner_idle(record: _Owner) -> bool:
    """Nothing held, no quota, no operation holding it."""
    return record.use == 0 and record.quota < 0 and record.pins == 0


def owner_drop(a: PasidAllocator, record: _Owner) -> None:
    """Mark ``record`` gone, to be dropped from the table in phase 3."""
    record.gone = True
    a._gone.append(record)


def owner_pin(a: PasidAllocator, record: _Owner) -> bool:
    """Pin ``record`` unless it is gone; True if pinned."""
    with a._lock:
        if record.gone:
            return False
        record.pins += 1
        return True


def owner_unpin(a: PasidAllocator, record: _Owner) -> None:
    """Phase 3: the operation lets go of the record it pinned. Left with nothing,
    no quota and no other pin, the record is marked gone (dropped by
    :meth:`_after`)."""
    with a._lock:
        record.pins -= 1
        if owner_idle(record) and not record.gone and record is not a._last:
            owner_drop(a, record)


def drop_gone_owners(a: PasidAllocator) -> None:
    """Phase 3: drop from the owner table the records operations left idle.

    Skipped while this thread is changing the table further up the stack: a
    later operation drops them.
    """
    if not a._gone or a._registry_thread == threading.get_ident():
        return
    # only the owners' __hash__/__eq__ run here, after the change: whatever they
    # raise is swallowed, as the operation has taken effect
    a._enter_registry()
    try:
        while True:
            with a._lock:
                if not a._gone:
                    break
                record = a._gone.pop()
            try:
                if a._owners.get(record.key) is record:
                    del a._owners[record.key]
            except Exception:
                # the owner's __hash__/__eq__ raised (or called back and was
                # refused) after the operation took effect: the record stays
                # in the table, marked gone, which every look-up treats as absent
                pass
    finally:
        a._leave_registry()


# ---------------------------------------------------------------- a PASID's owner (phase 2)


def owner_tag(a: PasidAllocator, p: int, owner: _Owner) -> None:
    a._owner_of[p] = owner
    owner.use += 1
    owner.active.add(p)


def owner_untag(a: PasidAllocator, p: int) -> None:
    """A PASID of an owner became FREE; an owner left with nothing, no quota and no
    pin is marked gone, to be dropped from the table in phase 3 (unless it is the
    last one named: :func:`owner_remember`)."""
    owner = a._owner_of.pop(p)
    owner.use -= 1
    if owner_idle(owner) and not owner.gone and owner is not a._last:
        owner_drop(a, owner)


def over_quota(owner: _Owner | None, n: int) -> bool:
    """True if ``n`` more would pass the owner's quota."""
    return owner is not None and owner.quota >= 0 and owner.use + n > owner.quota
