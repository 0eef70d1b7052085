"""The VM replay loop in C: the twin of ``pasid/sim/_vmreplay_py.py`` (read that one first).

The same walk and the same allocator calls in the same order, so the same rows.
The loop, the trace's columns and the per-process bookkeeping are C; the hosts'
and the guests' operations go through pasid's public C-level API table
(``pasid/capi.pxd``: ``guest_alloc``, ``guest_to_host``, ``guest_free``, and the
hosts' ``bind``, ``unbind``, ``advance``, ``generation``, ``count``), each device
named by the handle ``add_device`` gave (a VM's devices are its host's: a bind of
its host PASID is the guest's bind, the trace checked the assignment). A refused
guest allocation is told apart (quota or exhausted) by the VM's ``stats()``, as the
twin's exception says. Migrations (export, ``import_vm``, ``remove_vm``) stay
Python calls: they are rare.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport INFINITY, isnan
from libc.stdint cimport int32_t, int64_t, uint8_t

from pasid.capi cimport import_pasid_capi, pasid_allocator_t, pasid_capi_t, pasid_guest_t
from pasid.sim._opcodes cimport VM_ACCESS, VM_ARRIVE, VM_END, VM_MIGRATE, VM_UNBIND

import heapq
import time as _time

from pasid import _state
from pasid._errors import InvalidPasid, MigrationConflict, PasidExhausted, StateError
from pasid.sim import _vmrules

_vmrules.check_vm_op_codes("pasid.sim._vmreplay",
                           (VM_ARRIVE, VM_END, VM_ACCESS, VM_UNBIND, VM_MIGRATE))

cdef enum:
    DRAINING = 3
    QUARANTINED = 4
    PROGRESS_EVERY = 4096

if (DRAINING, QUARANTINED) != (_state.DRAINING, _state.QUARANTINED):
    raise ImportError("pasid.sim._vmreplay: state codes differ from pasid._state")

cdef const pasid_capi_t* api = import_pasid_capi()


cdef class _Loop:
    """The hosts as C pointers and the counters the loop's helpers share."""
    cdef pasid_allocator_t** host
    cdef pasid_guest_t** vm     # each VM's GuestSpace where it runs now
    cdef Py_ssize_t nhosts
    cdef object hosts           # keeps the allocators alive while their pointers are used
    cdef double now
    cdef int64_t ops, stale, cross
    cdef list taker

    def __dealloc__(self):
        PyMem_Free(self.host)
        PyMem_Free(self.vm)

    cdef int advance(self, double t) except -1:
        cdef Py_ssize_t x
        if t > self.now:
            for x in range(self.nhosts):
                api.advance(self.host[x], t)
            self.now = t
        return 0

    cdef int64_t held(self) except -1:
        cdef Py_ssize_t x
        cdef int64_t total = 0
        for x in range(self.nhosts):
            total += api.count(self.host[x], DRAINING) + api.count(self.host[x], QUARANTINED)
        return total

    cdef int touch(self, Py_ssize_t x, int64_t h, int64_t generation, int32_t owner) except -1:
        self.ops += 1
        if api.generation(self.host[x], h) != generation:
            self.stale += 1
            if (<dict>self.taker[x]).get(h) != owner:
                self.cross += 1
        return 0


@cython.boundscheck(True)
def run(trace, setup, out, progress=None):
    """Replay ``trace`` on ``setup``'s hosts (the compiled allocator: TypeError
    otherwise) and VMs, filling ``out`` (a VMRun). As the Python twin's ``run``."""
    cdef const double[::1] times = trace.time
    cdef const uint8_t[::1] ops = trace.op
    cdef const int32_t[::1] procs = trace.process
    cdef const int32_t[::1] vm_col = trace.vm
    cdef const int32_t[::1] args = trace.arg
    cdef const double[::1] acks = trace.pool_ack
    cdef const double[::1] accesses = trace.pool_access
    cdef const int64_t[::1] offsets = trace.pool_offset
    cdef int32_t[:, ::1] handles = setup.handles
    cdef Py_ssize_t n = times.shape[0], nproc = len(trace.processes)
    cdef Py_ssize_t nvms = len(trace.vms)
    cdef bint quarantine = setup.quarantine
    cdef _Loop L = _Loop()
    cdef list hosts = list(setup.hosts)
    cdef list spaces = list(setup.spaces)
    cdef list devices = [list(vm.devices) for vm in trace.vms]
    cdef list names = [vm.name for vm in trace.vms]
    cdef list options = setup.vm_options
    cdef list first_device = setup.first_device
    cdef list last_free = [{} for _ in range(nvms)]
    cdef list distances = out.distances
    cdef list pending = []
    cdef int64_t[::1] where
    cdef int64_t[::1] guest, proc_h, proc_gen
    cdef int32_t[::1] proc_vm, proc_host
    cdef Py_ssize_t i, j, x, source, target, first, last, draw, slot
    cdef int32_t k, v
    cdef int a, op
    cdef int64_t g, h, active = 0, peak_active = 0, peak_held = 0, held
    cdef int64_t made = 0, migration = 0, handled = 0
    cdef double t, ack, fraction
    cdef object space, moved, old, device, freed

    import numpy as np
    where = np.array([vm.host for vm in trace.vms], dtype=np.int64)
    guest = np.full(nproc, -1, dtype=np.int64)
    proc_h = np.zeros(nproc, dtype=np.int64)
    proc_gen = np.zeros(nproc, dtype=np.int64)
    proc_vm = np.full(nproc, -1, dtype=np.int32)
    proc_host = np.zeros(nproc, dtype=np.int32)
    if ops.shape[0] != n or procs.shape[0] != n or vm_col.shape[0] != n or args.shape[0] != n:
        raise _vmrules.TraceError("trace columns differ in length")
    L.nhosts = len(hosts)
    L.hosts = hosts
    L.host = <pasid_allocator_t**>PyMem_Malloc(L.nhosts * sizeof(pasid_allocator_t*))
    if L.host == NULL:
        raise MemoryError()
    for x in range(L.nhosts):
        L.host[x] = api.allocator(hosts[x])
    L.vm = <pasid_guest_t**>PyMem_Malloc((nvms if nvms else 1) * sizeof(pasid_guest_t*))
    if L.vm == NULL:
        raise MemoryError()
    for j in range(nvms):
        L.vm[j] = api.guest(spaces[j])      # (spaces keeps each alive)
    L.now = api.now(L.host[0])
    L.ops = setup.ops
    L.taker = [{} for _ in range(L.nhosts)]

    began = _time.perf_counter()
    i = 0
    while i <= n:
        # the teardowns migrations made, due before this event (all of them at the end)
        t = times[i] if i < n else INFINITY
        while pending and (<tuple>pending[0])[0] < t:
            item = heapq.heappop(pending)
            L.advance(item[0])
            handled += 1
            if item[2]:
                L.touch(item[3], item[4], item[6], item[7])
            else:
                api.unbind(L.host[<Py_ssize_t>item[3]], item[4], item[5])
                L.ops += 1
        if i == n:
            break
        L.advance(t)
        handled += 1
        if progress is not None and handled % PROGRESS_EVERY == 0:
            progress(handled, n)
        op, k, v, a = ops[i], procs[i], vm_col[i], args[i]
        i += 1
        if op == VM_ARRIVE:
            space = spaces[v]
            out.arrivals += 1
            L.ops += 1
            g = api.guest_alloc(L.vm[v], None)
            if g < 0:
                stats = space.stats()
                if 0 <= stats["quota"] <= stats["active"] + stats["host_held"]:
                    out.alloc_quota += 1
                else:
                    out.alloc_exhausted += 1
                continue
            guest[k] = g
            proc_vm[k] = v
            out.allocations += 1
            freed = (<dict>last_free[v]).get(g)
            if freed is not None:
                distances.append(t - <double>freed)
            x = where[v]
            h = api.guest_to_host(L.vm[v], g)
            (<dict>L.taker[x])[h] = v
            for slot in range(len(<list>devices[v])):
                api.bind(L.host[x], h, handles[x, <Py_ssize_t>first_device[v] + slot])
            L.ops += 1 + len(<list>devices[v])
            active += 1
            if active > peak_active:
                peak_active = active
        elif op == VM_END:
            g = guest[k]
            if g < 0:
                continue
            v = proc_vm[k]
            space = spaces[v]
            x = where[v]
            h = api.guest_to_host(L.vm[v], g)
            if not quarantine:
                for slot in range(len(<list>devices[v])):
                    api.unbind(L.host[x], h, handles[x, <Py_ssize_t>first_device[v] + slot])
                L.ops += len(<list>devices[v])
            api.guest_free(L.vm[v], g)
            L.ops += 2
            active -= 1
            (<dict>last_free[v])[g] = t
            proc_host[k] = <int32_t>x
            proc_h[k] = h
            proc_gen[k] = api.generation(L.host[x], h)
            held = L.held()
            if held > peak_held:
                peak_held = held
        elif op == VM_ACCESS:
            if guest[k] >= 0:
                L.touch(proc_host[k], proc_h[k], proc_gen[k], proc_vm[k])
        elif op == VM_UNBIND:
            if guest[k] >= 0 and quarantine:
                x = proc_host[k]
                slot = <Py_ssize_t>first_device[proc_vm[k]] + a
                api.unbind(L.host[x], proc_h[k], handles[x, slot])
                L.ops += 1
        elif op == VM_MIGRATE:
            first, last = offsets[migration], offsets[migration + 1]
            migration += 1
            out.migrations_attempted += 1
            source = where[v]
            target = (source + a) % L.nhosts
            space = spaces[v]
            blob = space.export()
            for slot, device in enumerate(<list>devices[v]):
                handles[target, <Py_ssize_t>first_device[v] + slot] = hosts[target].add_device(
                    device, drain=setup.drain)
            L.ops += 2 + len(<list>devices[v])
            try:
                moved = hosts[target].import_vm(blob, names[v], **options[v])
            except MigrationConflict as exc:
                if all((<dict>L.taker[target]).get(p) == v for p in exc.pasids):
                    out.migrations_busy += 1
                else:
                    out.migrations_conflict += 1
                continue
            except StateError:
                out.migrations_busy += 1
                continue
            except (PasidExhausted, InvalidPasid):
                out.migrations_refused += 1
                continue
            old = hosts[source]
            released = old.remove_vm(names[v])
            L.ops += 1
            out.migrations += 1
            draw = first
            for h in released:
                for device in old.devices(h):
                    if draw == last:
                        raise ValueError(f"migrate of vm {names[v]!r} at {t}: more bound "
                                         "devices than teardown draws (an unchecked trace?)")
                    ack, fraction = acks[draw], accesses[draw]
                    draw += 1
                    slot = <Py_ssize_t>first_device[v] + (<list>devices[v]).index(device)
                    if not isnan(fraction):
                        heapq.heappush(pending, (t + fraction * ack, made, True, source, h,
                                                 -1, api.generation(L.host[source], h), v))
                        made += 1
                    if quarantine:
                        heapq.heappush(pending, (t + ack, made, False, source, h,
                                                 handles[source, slot], 0, v))
                        made += 1
                    else:
                        api.unbind(L.host[source], h, handles[source, slot])
                        L.ops += 1
            for g in moved:
                (<dict>L.taker[target])[moved.host_pasid(g)] = v
            spaces[v] = moved
            L.vm[v] = api.guest(moved)
            where[v] = target
            held = L.held()
            if held > peak_held:
                peak_held = held
        else:
            raise _vmrules.TraceError(f"operation {i - 1}: unknown VM operation code {op}: "
                                      "was the trace changed after it was checked?")
    out.seconds = _time.perf_counter() - began
    out.ops = L.ops
    out.peak_held, out.peak_active = peak_held, peak_active
    out.stale, out.stale_cross_vm = L.stale, L.cross
