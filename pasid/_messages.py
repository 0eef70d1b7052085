"""Every error message the two backends raise, written once.

Each function returns the text of one message; the backends raise the
documented exception with it, so their messages agree by construction (the
differential tests compare them). They run only when an error is raised. A
message that names a user object (an owner, a device) formats it with
``repr``, which is user code: the backends build those messages outside their
critical sections.

>>> out_of_range(300, 256)
'PASID 300 out of range 0..255'
>>> not_active("free", 5, "QUARANTINED")
'free of PASID 5, which is QUARANTINED'
"""

from __future__ import annotations

from typing import Any

from pasid._args import COUNT_MAX

# ---------------------------------------------------------------- PASIDs and ranges


def out_of_range(value: Any, size: int) -> str:
    """An ID outside the space ``0 .. size - 1`` (InvalidPasid)."""
    return f"PASID {value} out of range 0..{size - 1}"


def empty_range(lo: int, hi: int) -> str:
    """``lo > hi`` (InvalidPasid)."""
    return f"empty range {lo}..{hi}"


def bad_range(lo: int, hi: int, size: int) -> str:
    """A C-level range empty or outside the space (InvalidPasid)."""
    return f"range {lo}..{hi} is empty or outside 0..{size - 1}"


def negative_count(n: int) -> str:
    """A batch of ``n < 0`` IDs (ValueError)."""
    return f"n must be >= 0, got {n}"


def bad_state_code(state: int) -> str:
    """A state code outside 0..4 (ValueError)."""
    return f"state must be 0..4, got {state}"


# ---------------------------------------------------------------- states


def not_active(what: str, p: int, state: str) -> str:
    """``what`` (get, free, bind) of a PASID that is not ACTIVE (StateError)."""
    return f"{what} of PASID {p}, which is {state}"


def not_free(p: int, state: str) -> str:
    """alloc_exact of a PASID that is not FREE (StateError)."""
    return f"PASID {p} is {state}, not FREE"


def cannot_reserve(p: int, state: str) -> str:
    return f"cannot reserve PASID {p}: it is {state}"


def cannot_unreserve(p: int, state: str) -> str:
    return f"cannot unreserve PASID {p}: it is {state}"


def no_free(lo: int, hi: int) -> str:
    """An allocation that found nothing FREE in ``lo..hi`` (PasidExhausted; the
    allocators add what is only waiting: pasid._args.exhausted_message)."""
    return f"no FREE PASID in {lo}..{hi}"


def too_few_free(asked: Any, free: int) -> str:
    """alloc_many of more than are FREE (PasidExhausted)."""
    return f"{asked} PASIDs asked, {free} FREE"


# ---------------------------------------------------------------- limits


def generation_limit(p: int | None = None) -> str:
    """A PASID allocated COUNT_MAX times (OverflowError); ``None``: one of a batch."""
    which = "a PASID" if p is None else f"PASID {p}"
    return f"{which} has been allocated {COUNT_MAX} times, the limit"


def reference_limit(p: int) -> str:
    return f"PASID {p} holds {COUNT_MAX} references, the limit"


def bind_limit(p: int, device: Any) -> str:
    return f"PASID {p} is bound {COUNT_MAX} times to device {device!r}, the limit"


# ---------------------------------------------------------------- owners


def at_quota(owner: Any, quota: int) -> str:
    """An allocation past the owner's quota (QuotaExceeded)."""
    return f"owner {owner!r} is at its quota of {quota} PASIDs"


EXIT_NONE = "exit_owner(None): owner-less PASIDs have no owner to exit"
QUOTA_NONE = "set_quota(None, ...): owner-less PASIDs have no quota"


# ---------------------------------------------------------------- devices


def unknown_device(device: Any) -> str:
    return f"unknown device {device!r}"


def no_handle(handle: int) -> str:
    """A C-level device handle no device has (StateError)."""
    return f"no device has handle {handle}"


def not_bound(p: int, device: Any) -> str:
    return f"PASID {p} is not bound to device {device!r}"


def too_wide(p: int, device: Any, bits: int) -> str:
    """A bind of a PASID wider than the device (InvalidPasid)."""
    return f"PASID {p} is wider than device {device!r}'s {bits} bits"


def narrower_than_bound(device: Any, widest: int, width: int) -> str:
    """add_device narrowing below a PASID bound (InvalidPasid)."""
    return f"device {device!r} has PASID {widest} bound, wider than {width} bits"


REENTRY = ("re-entrant call: an owner's or a device's __hash__/__eq__ called back into "
           "the allocator to change its owners or devices while they were changing")


# ---------------------------------------------------------------- virtual machines

VM_NONE = "a VM needs a name (None names the owner-less PASIDs)"


def unknown_vm(vm: Any) -> str:
    """A VM name no VM has, or a removed VM's (StateError)."""
    return f"no VM {vm!r}"


def vm_exists(vm: Any) -> str:
    return f"VM {vm!r} exists already"


def vm_removed(vm: Any) -> str:
    """An operation on a removed GuestSpace (StateError)."""
    return f"VM {vm!r} has been removed"


def owner_busy(vm: Any, use: int) -> str:
    """add_vm with a name that owns host PASIDs already (StateError)."""
    return f"owner {vm!r} already holds {use} host PASIDs: a VM's name must be a new owner"


def undeclared_device(device: Any) -> str:
    """A VM given a device the host has not declared (StateError)."""
    return f"unknown device {device!r}: declare it with add_device before assigning it to a VM"


def device_twice(device: Any) -> str:
    return f"device {device!r} is listed twice"


def device_taken(device: Any, vm: Any) -> str:
    """A device assigned to another VM (StateError)."""
    return f"device {device!r} is assigned to VM {vm!r}"


def capi_vcmd_encoding(encoding: int) -> str:
    """The C-level API's ``vcmd`` given a layout index that is neither layout
    (ValueError; compiled only: the Python method takes the layout's name)."""
    return f"encoding must be PASID_VCMD_31 (0) or PASID_VCMD_33 (1), not {encoding}"


def not_assigned(device: Any, vm: Any) -> str:
    """A guest's bind to a device that is not the VM's (StateError)."""
    return f"device {device!r} is not assigned to VM {vm!r}"


def guest_too_wide(bits: int, narrowest: int) -> str:
    """Guest bits wider than the host or a device (InvalidPasid)."""
    return f"guest bits {bits} wider than the host's and the VM's devices' {narrowest}"


def guest_no_free(vm: Any) -> str:
    """A guest allocation with nothing FREE (PasidExhausted)."""
    return f"no free PASID for VM {vm!r} (its guest space or its host range is full)"


def not_guest(h: int, vm: Any) -> str:
    """guest_pasid of a host PASID the VM does not hold (StateError)."""
    return f"host PASID {h} is not an ACTIVE PASID of VM {vm!r}"


def devices_missing(needed: int, given: int) -> str:
    """import_vm given fewer devices than the exported VM had (StateError)."""
    return f"the exported VM had {needed} devices, {given} given"


def guest_number_too_wide(g: int, bits: int) -> str:
    """import_vm into guest bits too narrow for an exported number (InvalidPasid)."""
    return f"guest PASID {g} does not fit in {bits} bits"


def import_outside(pasids: list[int], lo: int, hi: int) -> str:
    """An identity import with PASIDs outside the VM's host range (InvalidPasid)."""
    return f"guest PASIDs {_listed(pasids)} outside the VM's host range {lo}..{hi}"


def import_short(n: int, lo: int, hi: int) -> str:
    """A translated import with fewer FREE host PASIDs than it needs (PasidExhausted)."""
    return f"{n} host PASIDs needed, fewer are FREE in {lo}..{hi}"


def migration_conflict(vm: Any, pasids: list[int]) -> str:
    """An identity import whose PASIDs are taken on this host (MigrationConflict)."""
    return f"VM {vm!r} cannot move here: PASIDs {_listed(pasids)} are not FREE on this host"


def _listed(pasids: list[int], most: int = 16) -> str:
    shown = ", ".join(str(p) for p in pasids[:most])
    return shown if len(pasids) <= most else f"{shown}, ... ({len(pasids)} in all)"


# ---------------------------------------------------------------- time


ADVANCE_BOTH = "advance() takes one of to= and by=, not both"
ADVANCE_CALLABLE = ("advance(to=, by=) needs the logical clock; this allocator has a "
                    "callable clock (advance() with no argument settles it)")


def clock_back(now: float, target: float) -> str:
    return f"the clock cannot go back from {now} to {target}"


# ---------------------------------------------------------------- IDA


def ida_negative(what: str, value: int) -> str:
    """A negative ``min`` or ``max`` (InvalidPasid)."""
    return f"{what} must be >= 0, got {value}"


def ida_id_range(value: int, limit: int) -> str:
    """An ID to free outside 0..2**31 - 1 (InvalidPasid)."""
    return f"id must be in 0..{limit}, got {value}"


def ida_not_allocated(value: int) -> str:
    """ida_free of an ID not allocated (StateError), in the kernel's words."""
    return f"ida_free called for id={value} which is not allocated"


def ida_no_free(lo: int, hi: int) -> str:
    """Nothing free in ``lo..hi``, or ``lo > hi`` after the clamp (PasidExhausted)."""
    return f"no free ID in {lo}..{hi}"
