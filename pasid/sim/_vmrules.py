"""The VM trace's vocabulary (``pasid-trace 2``), its messages and its checks: one home.

A version-2 trace is the work of :mod:`pasid.sim.vms` (VMs on several hosts,
guest processes, device teardowns, live migrations) independent of the guest
PASID design, so one trace replays under identity, translated and
identity-split (:mod:`pasid.sim.vmtrace` documents the format). This module
holds what the reader, the writer, the checker and both replay twins share:
the operation codes (C constants in ``pasid/sim/_opcodes.pxd``, checked at
import), the header rules and :func:`check`, which walks a trace's history
once and raises :class:`~pasid.sim._tracerules.TraceError` naming the first
bad line (text, ``source:line: ...``) or operation (binary, ``source: operation i: ...``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pasid._args import MAX_BITS, STRATEGIES, as_bits, as_drain, as_grace
from pasid.sim._tracerules import TraceError, _number, _time

if TYPE_CHECKING:
    from pasid.sim.vmtrace import VMTrace

VM_VERSION = 2          # the text header's version of a VM trace: ``pasid-trace 2``
VM_BINARY_VERSION = 2   # header.json's "version" of a VM trace's .npz
MAX_HOSTS = 64

VM_ARRIVE, VM_END, VM_ACCESS, VM_UNBIND, VM_MIGRATE = range(5)
VM_OP_NAMES = ("arrive", "end", "access", "unbind", "migrate")
VM_OP_CODES = {name: code for code, name in enumerate(VM_OP_NAMES)}


def check_vm_op_codes(module: str, codes: tuple[int, ...]) -> None:
    """ImportError unless ``codes`` (a compiled module's C constants, in
    ``VM_OP_NAMES`` order) are the VM operation codes."""
    if codes != (VM_ARRIVE, VM_END, VM_ACCESS, VM_UNBIND, VM_MIGRATE):
        raise ImportError(f"{module}: VM operation codes differ from pasid.sim._vmrules")


@dataclass(frozen=True)
class VMSpec:
    """A VM of a trace: its name, the host it starts on, its identity-split slice
    ``(min, max)`` of the host range, its devices' drain time and its devices."""

    name: str
    host: int
    split: tuple[int, int]
    drain: float
    devices: tuple[str, ...]


def check_header(bits: int, grace: float, strategy: str, quota: int | None,
                 host_seeds: list[int], vms: list[VMSpec]) -> None:
    """The header by the allocator's rules; TraceError saying what is wrong."""
    try:
        as_grace(grace)
        as_bits(bits, "bits")
    except ValueError as error:
        raise TraceError(str(error)) from None
    if strategy not in STRATEGIES:
        raise TraceError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if quota is not None and quota < 0:
        raise TraceError(f"quota must be >= 0 or none, got {quota}")
    if not 1 <= len(host_seeds) <= MAX_HOSTS:
        raise TraceError(f"a VM trace needs 1..{MAX_HOSTS} hosts, got {len(host_seeds)}")
    if any(not 0 <= s < 1 << 64 for s in host_seeds):
        raise TraceError("host seeds must be in 0..2**64-1")
    if not vms:
        raise TraceError("a VM trace needs at least one vm line")
    names: set[str] = set()
    devices: set[str] = set()
    top = (1 << bits) - 1
    for vm in vms:
        if vm.name in names:
            raise TraceError(f"vm {vm.name!r} declared twice")
        names.add(vm.name)
        if not 0 <= vm.host < len(host_seeds):
            raise TraceError(f"vm {vm.name!r}: host {vm.host} is not one of the "
                             f"{len(host_seeds)} hosts")
        lo, hi = vm.split
        if not 1 <= lo <= hi <= top:
            raise TraceError(f"vm {vm.name!r}: split {lo}..{hi} is not inside 1..{top}")
        try:
            as_drain(vm.drain)
        except ValueError as error:
            raise TraceError(f"vm {vm.name!r}: {error}") from None
        if not vm.devices:
            raise TraceError(f"vm {vm.name!r} has no devices")
        for device in vm.devices:
            if device in devices:
                raise TraceError(f"device {device!r} belongs to two VMs")
            devices.add(device)


def check(trace: VMTrace) -> VMTrace:
    """Check a VM trace's own history (independent of the design); TraceError on the first
    bad operation, naming its line (or ``operation i``). O(n).

    Times follow the allocator's rule and never decrease; a process arrives once,
    in a known VM, and ends at most once, after it arrived (it frees only what it
    holds); its VM's devices access and unbind it only after it ended, each device
    unbinding it once and accessing it only before that unbind; a migration names a
    known VM and a host offset in ``1..hosts-1``, and carries a teardown draw (an
    ack time >= 0 and a late-access fraction in [0, 1] or none) for every device of
    every process of the VM alive then: the most its removal can leave bound.
    """
    check_header(trace.bits, trace.grace, trace.strategy, trace.quota, trace.host_seeds,
                 trace.vms)
    n = len(trace.op)
    columns = (trace.time, trace.process, trace.vm, trace.arg)
    if any(len(c) != n for c in columns) or (trace.lines is not None and len(trace.lines) != n):
        raise TraceError("trace columns differ in length")
    nvms, nhosts, nproc = len(trace.vms), len(trace.host_seeds), len(trace.processes)
    ndevices = [len(vm.devices) for vm in trace.vms]
    lines = None if trace.lines is None else trace.lines.tolist()
    source = trace.source or "trace"

    def fail(i: int, text: str) -> TraceError:
        if lines is not None:
            return TraceError(text, lines[i], source)
        return TraceError(f"{source}: operation {i}: {text}")

    if trace.pool_offset.ndim != 1 or len(trace.pool_offset) < 1 or trace.pool_offset[0] != 0 \
            or np.any(np.diff(trace.pool_offset) < 0) \
            or trace.pool_offset[-1] != len(trace.pool_ack) \
            or len(trace.pool_access) != len(trace.pool_ack):
        raise TraceError("the migrations' teardown draws are not laid out in order")
    if int(np.count_nonzero(trace.op == VM_MIGRATE)) != len(trace.pool_offset) - 1:
        raise TraceError("the migrations' teardown draws do not match the migrations")
    vm_of = [-1] * nproc               # the VM a process arrived in; -1 not yet
    state = [0] * nproc                # 0 not arrived, 1 alive, 2 ended
    unbound: set[tuple[int, int]] = set()
    alive = [0] * nvms
    previous = 0.0
    migration = 0
    times, ops = trace.time.tolist(), trace.op.tolist()
    procs, vms, args = trace.process.tolist(), trace.vm.tolist(), trace.arg.tolist()
    offsets = trace.pool_offset.tolist()
    for i in range(n):
        t = times[i]
        try:
            _time(t)
        except ValueError as error:
            raise fail(i, str(error)) from None
        if t < previous:
            raise fail(i, f"time goes backwards: {_number(t)} after {_number(previous)}")
        previous = t
        op, k, v, a = ops[i], procs[i], vms[i], args[i]
        if op > VM_MIGRATE:
            raise fail(i, f"unknown VM operation code {op}")
        if op == VM_MIGRATE:
            if not 0 <= v < nvms:
                raise fail(i, f"migrate of an unknown VM (number {v})")
            if not 1 <= a < nhosts:
                raise fail(i, f"migrate of vm {trace.vms[v].name!r} by {a} hosts: the offset "
                              f"must be in 1..{nhosts - 1} ({nhosts} hosts)")
            start, stop = offsets[migration], offsets[migration + 1]
            migration += 1
            need = alive[v] * ndevices[v]
            if stop - start < need:
                raise fail(i, f"migrate of vm {trace.vms[v].name!r} carries {stop - start} "
                              f"teardown draws; its {alive[v]} live processes on "
                              f"{ndevices[v]} devices may need {need}")
            for j in range(start, stop):
                ack, access = float(trace.pool_ack[j]), float(trace.pool_access[j])
                if not (math.isfinite(ack) and 0 <= ack <= 1e300):
                    raise fail(i, f"teardown ack time must be >= 0, got {_number(ack)}")
                if not (math.isnan(access) or 0 <= access <= 1):
                    raise fail(i, f"late-access fraction must be in [0, 1], got {access!r}")
            continue
        if not 0 <= k < nproc:
            raise fail(i, f"{VM_OP_NAMES[op]} of an unknown process (number {k})")
        name = trace.processes[k]
        if op == VM_ARRIVE:
            if state[k]:
                raise fail(i, f"process {name!r} arrives twice")
            if not 0 <= v < nvms:
                raise fail(i, f"process {name!r} arrives in an unknown VM (number {v})")
            vm_of[k], state[k] = v, 1
            alive[v] += 1
            continue
        if not state[k]:
            raise fail(i, f"{VM_OP_NAMES[op]} of process {name!r} before it arrived")
        if op == VM_END:
            if state[k] == 2:
                raise fail(i, f"end of process {name!r}, which has already ended: "
                              "a process frees only what it holds")
            state[k] = 2
            alive[vm_of[k]] -= 1
            continue
        vm = trace.vms[vm_of[k]]
        if not 0 <= a < len(vm.devices):
            raise fail(i, f"{VM_OP_NAMES[op]} of process {name!r} by device number {a}, "
                          f"not one of vm {vm.name!r}'s {len(vm.devices)} "
                          f"({', '.join(vm.devices)})")
        if state[k] != 2:
            raise fail(i, f"{VM_OP_NAMES[op]} of process {name!r} by {vm.devices[a]!r} before "
                          "the process ended: devices tear down what the guest freed")
        if (k, a) in unbound:
            if op == VM_UNBIND:
                raise fail(i, f"unbind of process {name!r} by {vm.devices[a]!r} twice")
            raise fail(i, f"access of process {name!r} by {vm.devices[a]!r} after its unbind, "
                          "which says the device has drained")
        if op == VM_UNBIND:
            unbound.add((k, a))
    return trace


def device_index(vm: VMSpec, device: str) -> int:
    """The slot of ``device`` in ``vm``'s devices, or -1."""
    try:
        return vm.devices.index(device)
    except ValueError:
        return -1


__all__ = ["MAX_BITS", "MAX_HOSTS", "VMSpec", "VM_ACCESS", "VM_ARRIVE", "VM_BINARY_VERSION",
           "VM_END", "VM_MIGRATE", "VM_OP_CODES", "VM_OP_NAMES", "VM_UNBIND", "VM_VERSION",
           "check", "check_header", "check_vm_op_codes"]
