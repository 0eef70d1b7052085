"""The VM replay loop in Python: the reference twin of ``pasid/sim/_vmreplay.pyx``.

:func:`run` walks a checked :class:`~pasid.sim.vmtrace.VMTrace` on hosts and VMs
set up by :func:`pasid.sim.vms.replay_vm` (its ``_Setup``) and fills a
:class:`~pasid.sim.vms.VMRun`. Both twins make the same allocator calls in the
same order, so they give the same rows on the same backend; this one takes
either backend, the compiled one the compiled allocator.

The walk (the model of :mod:`pasid.sim.vms`):

- Every host's logical clock is advanced to an event's time before it runs.
- ``arrive``: the VM's guest allocates (a refusal is counted; the process's
  later operations are skipped), then binds every device of the VM.
- ``end``: without quarantine the devices unbind first; the guest frees; the
  host PASID, its host and generation are noted for the devices' teardown.
- ``access``: a late access, stale if the host PASID's generation changed.
- ``unbind``: the device has drained (with quarantine only: without it the
  device unbound at ``end``).
- ``migrate``: export, the devices declared on the destination, ``import_vm``;
  on success ``remove_vm`` on the source, and each (host PASID, device) left
  bound tears down with the migration's next draw: with quarantine an unbind
  ACK later (and a late access if the draw has one), without it an unbind at
  once (the late access kept). These events wait in a heap and run before any
  trace event of a later time, after those of the same time, in the order
  they were made.
- Peak held (DRAINING + QUARANTINED over all hosts) is read after every
  ``end`` and successful ``migrate``; peak active counts guest PASIDs held.
"""

from __future__ import annotations

import heapq
import math
import time as _time
from collections.abc import Callable
from typing import Any

from pasid._errors import InvalidPasid, MigrationConflict, PasidExhausted, QuotaExceeded, StateError
from pasid.sim._vmrules import VM_ACCESS, VM_ARRIVE, VM_END, VM_MIGRATE, VM_UNBIND

PROGRESS_EVERY = 4096


def run(trace: Any, setup: Any, out: Any, progress: Callable[[int, int], object] | None = None
        ) -> None:
    """Replay ``trace`` on ``setup``'s hosts and VMs, filling ``out`` (a VMRun)."""
    hosts, spaces = setup.hosts, list(setup.spaces)
    quarantine = setup.quarantine
    vms = trace.vms
    nhosts = len(hosts)
    devices = [list(vm.devices) for vm in vms]
    names = [vm.name for vm in vms]
    where = [vm.host for vm in vms]
    nproc = len(trace.processes)
    guest = [-1] * nproc
    proc_vm = [-1] * nproc
    proc_host = [0] * nproc
    proc_h = [0] * nproc
    proc_gen = [0] * nproc
    taker: list[dict[int, int]] = [{} for _ in range(nhosts)]
    last_free: list[dict[int, float]] = [{} for _ in vms]
    distances = out.distances
    pending: list[tuple[float, int, bool, int, int, Any, int, int]] = []
    made = 0
    ops = setup.ops
    active = peak_active = peak_held = stale = cross = 0
    migration = 0
    handled = 0
    total = len(trace)
    now = 0.0
    acks, accesses = trace.pool_ack.tolist(), trace.pool_access.tolist()
    offsets = trace.pool_offset.tolist()

    def held_now() -> int:
        total = 0
        for host in hosts:
            s = host.stats()
            total += s["draining"] + s["quarantined"]
        return total

    def advance(t: float) -> None:
        nonlocal now
        if t > now:
            for host in hosts:
                host.advance(t)
            now = t

    def touch(x: int, h: int, generation: int, owner: int) -> None:
        nonlocal stale, cross, ops
        ops += 1
        if hosts[x].generation(h) != generation:
            stale += 1
            if taker[x].get(h) != owner:
                cross += 1

    def due(until: float) -> None:
        """Run the teardown events made by migrations that fall before ``until``."""
        nonlocal ops, handled
        while pending and pending[0][0] < until:
            t, _, is_access, x, h, device, generation, owner = heapq.heappop(pending)
            advance(t)
            handled += 1
            if is_access:
                touch(x, h, generation, owner)
            else:
                hosts[x].unbind(h, device)
                ops += 1

    began = _time.perf_counter()
    for t, op, k, v, a in zip(trace.time.tolist(), trace.op.tolist(), trace.process.tolist(),
                              trace.vm.tolist(), trace.arg.tolist()):
        due(t)
        advance(t)
        handled += 1
        if progress is not None and not handled % PROGRESS_EVERY:
            progress(handled, total)
        if op == VM_ARRIVE:
            space = spaces[v]
            out.arrivals += 1
            ops += 1
            try:
                g = space.alloc()
            except QuotaExceeded:
                out.alloc_quota += 1
                continue
            except PasidExhausted:
                out.alloc_exhausted += 1
                continue
            guest[k] = g
            proc_vm[k] = v
            out.allocations += 1
            freed = last_free[v].get(g)
            if freed is not None:
                distances.append(t - freed)
            taker[where[v]][space.host_pasid(g)] = v
            for device in devices[v]:
                space.bind(g, device)
            ops += 1 + len(devices[v])
            active += 1
            if active > peak_active:
                peak_active = active
        elif op == VM_END:
            g = guest[k]
            if g < 0:
                continue
            i = proc_vm[k]
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
            last_free[i][g] = t
            proc_host[k], proc_h[k], proc_gen[k] = x, h, hosts[x].generation(h)
            held = held_now()
            if held > peak_held:
                peak_held = held
        elif op == VM_ACCESS:
            if guest[k] >= 0:
                touch(proc_host[k], proc_h[k], proc_gen[k], proc_vm[k])
        elif op == VM_UNBIND:
            if guest[k] >= 0 and quarantine:
                hosts[proc_host[k]].unbind(proc_h[k], devices[proc_vm[k]][a])
                ops += 1
        elif op == VM_MIGRATE:
            first, last = offsets[migration], offsets[migration + 1]
            migration += 1
            out.migrations_attempted += 1
            source = where[v]
            target = (source + a) % nhosts
            space = spaces[v]
            blob = space.export()
            for device in devices[v]:
                hosts[target].add_device(device, drain=setup.drain)
            ops += 2 + len(devices[v])
            try:
                moved = hosts[target].import_vm(blob, names[v], **setup.vm_options[v])
            except MigrationConflict as exc:
                if all(taker[target].get(p) == v for p in exc.pasids):
                    out.migrations_busy += 1
                else:
                    out.migrations_conflict += 1
                continue
            except StateError:
                out.migrations_busy += 1            # its earlier stay still holds PASIDs there
                continue
            except (PasidExhausted, InvalidPasid):
                out.migrations_refused += 1
                continue
            old = hosts[source]
            released = old.remove_vm(names[v])
            ops += 1
            out.migrations += 1
            draw = first
            for h in released:
                for device in old.devices(h):
                    if draw == last:
                        raise ValueError(f"migrate of vm {names[v]!r} at {t}: more bound "
                                         "devices than teardown draws (an unchecked trace?)")
                    ack, fraction = acks[draw], accesses[draw]
                    draw += 1
                    if not math.isnan(fraction):
                        heapq.heappush(pending, (t + fraction * ack, made, True, source, h,
                                                 None, old.generation(h), v))
                        made += 1
                    if quarantine:
                        heapq.heappush(pending, (t + ack, made, False, source, h, device, 0, v))
                        made += 1
                    else:
                        old.unbind(h, device)
                        ops += 1
            for g in moved:
                taker[target][moved.host_pasid(g)] = v
            spaces[v] = moved
            where[v] = target
            held = held_now()
            if held > peak_held:
                peak_held = held
    due(math.inf)
    out.seconds = _time.perf_counter() - began
    out.ops = ops
    out.peak_held, out.peak_active = peak_held, peak_active
    out.stale, out.stale_cross_vm = stale, cross
