"""The reference model of a PasidAllocator: SPEC §3 written with plain lists and dicts.

One model for every test that needs an oracle: the state machine
(tests/test_statemachine.py, which draws the strategy) and the strategy runs of
tests/test_allocator.py. Per PASID its state, refcount, owner, generation,
bindings (count per device, in bind order) and release time so far; per owner
its quota; and the strategy's own state, kept the obvious way:

- ``lowest``: the smallest FREE ID in range;
- ``cyclic``: the smallest FREE ID at or above the cursor when the cursor is
  in range, else the smallest in range; the cursor becomes the ID + 1;
- ``fifo``: a list of FREE IDs in the order they became FREE (ascending at
  construction, ascending among IDs freed by one reclaim or unreserve);
- ``random``: the k-th FREE ID of the range, ascending, with k drawn below
  their count from SplitMix64 (written out again here: the model shares no
  code with the backends).

Where SPEC is silent the model follows the backends' documented choices:
argument errors and ``alloc_exact`` of a non-FREE PASID are not failures; a
quota refusal and an exhaustion count once; ``free_many`` releases in the
order successive ``free`` calls would.
"""

FREE, RESERVED, ACTIVE, DRAINING, QUARANTINED = range(5)
LIVE = (ACTIVE, DRAINING, QUARANTINED)
STRATEGIES = ("lowest", "cyclic", "fifo", "random")
_MASK = (1 << 64) - 1


class SplitMix64:
    """SPEC §3's generator for ``random``; a draw below n rejects the 2**64 mod n lowest outputs.

    Written from the documentation (SPEC §3, pasid/_rng.py's docstring), never
    imported from the backends, so a bug in their generator is a disagreement;
    tests/test_allocator.py checks this one against the published outputs.
    """

    def __init__(self, seed):
        self.state = seed & _MASK

    def next(self):
        self.state = z = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def below(self, n):
        while True:
            x = self.next()
            if x >= ((1 << 64) - n) % n:
                return x % n


class Model:
    """One PasidAllocator of ``size`` IDs, the PASIDs ``reserved`` RESERVED, a logical clock."""

    def __init__(self, size, grace, *, strategy="lowest", seed=0, reserved=(0,), devices=()):
        self.size = size
        self.grace = grace
        self.strategy = strategy
        self.rng = SplitMix64(seed)
        self.cursor = 0
        self.now = 0
        self.state = [FREE] * size
        for p in reserved:
            self.state[p] = RESERVED
        self.fifo = [p for p in range(size) if self.state[p] == FREE]
        self.refcount = [0] * size
        self.owner = [None] * size
        self.generation = [0] * size
        self.bindings = [dict() for _ in range(size)]   # device -> count, bind order
        self.hold = [None] * size                       # release_at so far in this life
        self.devices = {name: list(spec) for name, spec in devices}   # name -> [bits, drain]
        self.quota = {}
        self.allocations = self.releases = self.reclaimed = self.failures = 0
        self.high_water = 0
        self.vms = {}                                   # name -> VM (SPEC §7), in order

    # ---- queries
    def count(self, state):
        return sum(1 for s in self.state if s == state)

    def ids(self, state):
        return [p for p in range(self.size) if self.state[p] == state]

    def use(self, owner):
        return sum(1 for p in range(self.size) if self.owner[p] == owner and self.state[p] in LIVE)

    def quota_refuses(self, owner, n):
        if owner is None or self.quota.get(owner) is None:
            return False
        return self.use(owner) + n > self.quota[owner]

    def stats(self):
        return {
            "free": self.count(FREE),
            "reserved": self.count(RESERVED),
            "active": self.count(ACTIVE),
            "draining": self.count(DRAINING),
            "quarantined": self.count(QUARANTINED),
            "allocations": self.allocations,
            "releases": self.releases,
            "reclaimed": self.reclaimed,
            "failures": self.failures,
            "high_water": self.high_water,
        }

    def next_release_time(self):
        times = [self.hold[p] for p in self.ids(QUARANTINED)]
        return min(times) if times else None

    def pending(self, device):
        return [p for p in range(self.size)
                if self.state[p] == DRAINING and device in self.bindings[p]]

    # ---- the strategy
    def choose(self, lo, hi):
        """The ID the strategy gives in [lo, hi] (None if none is FREE); moves the generator."""
        free = [p for p in range(lo, hi + 1) if self.state[p] == FREE]
        if not free:
            return None
        if self.strategy == "lowest":
            return free[0]
        if self.strategy == "cyclic":
            if lo <= self.cursor <= hi:
                above = [p for p in free if p >= self.cursor]
                if above:
                    return above[0]
            return free[0]
        if self.strategy == "fifo":
            return next(p for p in self.fifo if lo <= p <= hi)
        return free[self.rng.below(len(free))]

    # ---- transitions
    def activate(self, p, owner, by_strategy=True):
        """``p`` (FREE) is allocated; ``by_strategy``: not by alloc_exact (the cursor moves)."""
        self.state[p] = ACTIVE
        self.fifo.remove(p)
        if by_strategy and self.strategy == "cyclic":
            self.cursor = p + 1
        self.refcount[p] = 1
        self.owner[p] = owner
        self.generation[p] += 1
        self.allocations += 1
        self.high_water = max(self.high_water, self.count(ACTIVE))

    def make_free(self, p):
        self.state[p] = FREE
        self.fifo.append(p)
        self.refcount[p] = 0
        self.owner[p] = None
        self.hold[p] = None

    def reserve(self, p):
        self.state[p] = RESERVED
        self.fifo.remove(p)

    def unreserve(self, p):
        self.state[p] = FREE
        self.fifo.append(p)

    def settle(self, p):
        if self.hold[p] <= self.now:
            self.make_free(p)
            self.reclaimed += 1
        else:
            self.state[p] = QUARANTINED

    def raise_hold(self, p, release_at):
        if self.hold[p] is None or release_at > self.hold[p]:
            self.hold[p] = release_at

    def release(self, p):
        vm = self.vms.get(self.owner[p]) if self.owner[p] is not None else None
        if vm is not None:
            vm.unmap(p)                 # a VM's host PASID left ACTIVE: its guest PASID goes
        self.releases += 1
        self.refcount[p] = 0
        self.raise_hold(p, self.now + self.grace)
        if self.bindings[p]:
            self.state[p] = DRAINING
        else:
            self.settle(p)

    def put(self, p):
        self.refcount[p] -= 1
        if self.refcount[p] == 0:
            self.release(p)

    def unbind(self, p, device):
        bindings = self.bindings[p]
        bindings[device] -= 1
        if bindings[device]:
            return
        del bindings[device]
        self.raise_hold(p, self.now + self.devices[device][1])
        if not bindings and self.state[p] == DRAINING:
            self.settle(p)

    def remove_device(self, device):
        del self.devices[device]
        for p in range(self.size):
            if device in self.bindings[p]:
                del self.bindings[p][device]
                if not self.bindings[p] and self.state[p] == DRAINING:
                    self.settle(p)

    def reclaim(self):
        expired = [p for p in self.ids(QUARANTINED) if self.hold[p] <= self.now]
        for p in expired:
            self.make_free(p)
        self.reclaimed += len(expired)
        return len(expired)


# ---------------------------------------------------------------- virtual machines (SPEC §7)


class VM:
    """A VM's guest PASIDs on a Model host: its mode, guest width, host range and devices,
    guest -> host PASID while ACTIVE, owner tags, counters. The host PASIDs are the
    Model's, owned by the VM's name."""

    def __init__(self, name, mode, bits, lo, hi, devices):
        self.name, self.mode, self.bits, self.lo, self.hi = name, mode, bits, lo, hi
        self.devices = list(devices)
        self.host_of = {}
        self.tags = {}
        self.allocations = self.failures = 0

    def unmap(self, h):
        for g, mapped in self.host_of.items():
            if mapped == h:
                del self.host_of[g]
                self.tags.pop(g, None)
                return

    def guest_of(self, h):
        return next((g for g, mapped in self.host_of.items() if mapped == h), None)


def vm_range(model, mode, bits, lo, hi, device_bits):
    """add_vm's layout: (guest bits, lowest, highest host PASID), or None for an empty range.
    Guest bits are the narrowest of the host and the devices unless given; the host range
    leaves out PASID 0 and is narrowed to what the devices (and identity's guest) address."""
    narrowest = min([model.size.bit_length() - 1] + list(device_bits))
    width = narrowest if bits is None else bits
    top = (1 << (width if mode == "identity" else narrowest)) - 1
    lo, hi = max(lo, 1), min(hi, top)
    return None if lo > hi else (width, lo, hi)


def guest_alloc(model, vm):
    """A guest allocation's outcome: the guest PASID, "quota" or "exhausted" (counted)."""
    if model.quota_refuses(vm.name, 1):
        model.failures += 1
        vm.failures += 1
        return "quota"
    if vm.mode == "translated":
        free = [g for g in range(1, 1 << vm.bits) if g not in vm.host_of]
        if not free:
            vm.failures += 1
            return "exhausted"
    h = model.choose(vm.lo, vm.hi)
    if h is None:
        model.failures += 1
        vm.failures += 1
        return "exhausted"
    model.activate(h, vm.name)
    g = free[0] if vm.mode == "translated" else h
    vm.host_of[g] = h
    vm.allocations += 1
    return g


def remove_vm(model, name):
    """remove_vm: every ACTIVE host PASID of the VM released (ascending, returned), its
    quota lifted."""
    released = [p for p in model.ids(ACTIVE) if model.owner[p] == name]
    for p in released:
        model.release(p)
    del model.vms[name]
    model.quota.pop(name, None)
    return released


def export_vm(model, vm):
    """What export carries: per ACTIVE guest PASID (ascending) its refcount, tag and the
    bindings to the VM's devices (device, count) in bind order."""
    return [(g, model.refcount[h], vm.tags.get(g),
             [(d, n) for d, n in model.bindings[h].items() if d in vm.devices])
            for g, h in sorted(vm.host_of.items())]


def import_vm(model, name, mode, bits, lo, hi, devices, entries):
    """import_vm once every check passed: the VM and its PASIDs (identity: the same
    numbers; translated: host PASIDs by the strategy, in guest order)."""
    vm = model.vms[name] = VM(name, mode, bits, lo, hi, devices)
    for g, refcount, tag, binds in entries:
        h = g if mode == "identity" else model.choose(lo, hi)
        model.activate(h, name)
        model.refcount[h] = refcount
        for device, count in binds:
            model.bindings[h][device] = count
        vm.host_of[g] = h
        if tag is not None:
            vm.tags[g] = tag
    vm.allocations = len(entries)
    return vm
