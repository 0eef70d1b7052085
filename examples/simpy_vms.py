"""Two hosts migrating VMs in SimPy: guest PASIDs through pasid.simpy.GuestPool.

Each host is a PasidAllocator behind a PasidPool (strategy cyclic, as
``idr_alloc_cyclic``), with a grace and one device per VM (declared on both
hosts) that answers a teardown after a random latency and then drains. Each VM's guest processes arrive at random, get a
guest PASID from the VM's pool (waiting while the VM is at its quota), bind
the VM's device, work, and free it: the device's drain process unbinds the
host PASID, which the host then holds for its grace. Every so often a VM moves
to the other host: ``blob = vm.export()``, ``dst.import_vm(blob, name)``, then
``src.remove_vm(name)``. A translated VM keeps its guest numbers on new host
PASIDs; an identity VM needs its numbers FREE on the destination, else the
move is refused with MigrationConflict and the VM stays. A guest request still
waiting on the source when its VM leaves fails (StateError) and is asked again
of the destination.

    python examples/simpy_vms.py [--quick] [--seed 3]   # both modes; needs simpy
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass

import simpy

from pasid import PasidExhausted, StateError
from pasid._errors import MigrationConflict
from pasid.simpy import GuestPool, PasidPool


@dataclass(frozen=True)
class Params:
    vms: int = 4
    bits: int = 10                 # 1023 host PASIDs a host (0 is reserved)
    quota: int = 12                # host PASIDs a VM may hold (ACTIVE, DRAINING, QUARANTINED)
    interarrival: float = 2.0      # mean time between a VM's guest processes
    work: float = 6.0              # mean time a guest process holds its PASID
    grace: float = 10.0            # host: release to reuse, at least
    drain: float = 2.0             # a device's quarantine after it unbinds
    ack: float = 1.0               # a device's mean latency to answer a teardown
    migrate_every: float = 20.0    # one VM moves (round robin) this often
    until: float = 1000.0


QUICK = Params(until=300.0)


class Model:
    def __init__(self, mode: str, seed: int = 0, params: Params = Params(),
                 allocator_class=None):
        self.mode, self.params = mode, params
        self.env = simpy.Environment()
        self.rng = random.Random(f"{seed}:guests")
        self.hosts = [PasidPool(self.env, params.bits, strategy="cyclic", grace=params.grace,
                                allocator_class=allocator_class) for _ in range(2)]
        self.names = [f"vm{i}" for i in range(params.vms)]
        for h, host in enumerate(self.hosts):
            for name in self.names:
                rng = random.Random(f"{seed}:{h}:{name}")
                host.add_device(f"vf-{name}", drain=params.drain,
                                ack=lambda pasid, rng=rng: rng.expovariate(1 / params.ack))
        self.where: dict[str, GuestPool] = {     # each VM's pool on its current host
            name: self.hosts[i % 2].add_vm(name, mode=mode, quota=params.quota,
                                           devices=[f"vf-{name}"])
            for i, name in enumerate(self.names)}
        self.counts = dict.fromkeys(
            ["done", "conflicts", "short", "kept", "granted", "waited", "retried"], 0)
        self.peak_held = 0

    def run(self) -> dict:
        for name in self.names:
            self.env.process(self.arrivals(name))
        self.env.process(self.migrations())
        self.env.run(until=self.params.until)
        return {"mode": self.mode, **self.counts, "peak_held": self.peak_held}

    def observe(self) -> None:
        held = sum(s["active"] + s["draining"] + s["quarantined"]
                   for s in (host.allocator.stats() for host in self.hosts))
        self.peak_held = max(self.peak_held, held)

    def arrivals(self, name: str):
        while True:
            yield self.env.timeout(self.rng.expovariate(1 / self.params.interarrival))
            self.env.process(self.guest(name, self.rng.expovariate(1 / self.params.work)))

    def guest(self, name: str, work: float):
        asked = self.env.now
        while True:
            try:
                g = yield self.where[name].get(owner="guest")
                break
            except StateError:           # the VM left that host while this waited
                self.counts["retried"] += 1
        self.counts["granted"] += 1
        self.counts["waited"] += self.env.now > asked
        self.where[name].bind(g, f"vf-{name}")
        self.observe()
        yield self.env.timeout(work)
        self.where[name].put(g)          # bound: the device drains the host PASID first
        self.observe()

    def migrations(self):
        for turn in range(sys.maxsize):
            yield self.env.timeout(self.params.migrate_every)
            name = self.names[turn % len(self.names)]
            src = self.where[name]
            dst = self.hosts[1 - self.hosts.index(src.host)]
            numbers = list(src.vm)
            try:
                moved = dst.import_vm(src.vm.export(), name, quota=self.params.quota)
            except MigrationConflict:    # identity: its numbers are taken there
                self.counts["conflicts"] += 1
                continue
            except PasidExhausted:       # quota or range: not enough room there
                self.counts["short"] += 1
                continue
            src.host.remove_vm(name)     # its host PASIDs drain and sit out the grace
            self.where[name] = moved
            self.counts["done"] += 1
            self.counts["kept"] += list(moved.vm) == numbers
            self.observe()


def run(mode: str, seed: int = 0, params: Params = Params(), allocator_class=None) -> dict:
    """One run of the model; its summary (a dict)."""
    return Model(mode, seed, params, allocator_class).run()


def print_summary(s: dict, out=sys.stdout) -> None:
    print(f"{s['mode']}: migrations {s['done']} done, refused {s['conflicts']} (Migration"
          f"Conflict) + {s['short']} (no room); guest numbers kept in {s['kept']}/{s['done']}\n"
          f"  guest allocations {s['granted']}, waited {s['waited']} (asked again after a move "
          f"{s['retried']}); peak host PASIDs held (both hosts) {s['peak_held']}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"until t={QUICK.until:g}")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else Params()
    print(f"Two hosts, {params.vms} VMs, one VM moves every {params.migrate_every:g}, "
          f"until t={params.until:g}, seed {args.seed}")
    for mode in ("translated", "identity"):
        print_summary(run(mode, args.seed, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
