"""An IOMMU in SimPy: processes, devices and PASIDs through pasid.simpy.PasidPool.

Processes arrive at random. Each asks the pool for a PASID (waiting when none
is FREE, giving up after its patience), binds the devices it uses, works, and
closes: the last put releases the PASID, every bound device is told
(``on_teardown``) and answers after its own latency (a drain process unbinds
it), the PASID sits in quarantine until max(release + grace, unbind + drain),
and only then is FREE for the next process. Some processes are killed
instead (``exit_owner``). The NIC is narrow (5 PASID bits), so a process that
uses it asks for a PASID below 32.

The workload is drawn up front from ``--seed`` (common random numbers), so
two runs with different strategies see the same arrivals, work and patience;
device latencies come from one generator per device.

    python examples/simpy_iommu.py                      # 3,000 processes, strategy lowest
    python examples/simpy_iommu.py --strategy cyclic --seed 7
    python examples/simpy_iommu.py --quick              # a few hundred processes

Needs simpy: pip install 'pasid[simpy]'.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
from dataclasses import dataclass

import simpy

from pasid.simpy import PasidPool

NIC_BITS = 5                       # the narrow device: PASIDs 0..31
# device: (PASID bits, drain after unbind, mean latency to answer a teardown,
#          share of processes using it)
DEVICES = {
    "gpu": (20, 5.0, 10.0, 0.7),
    "nic": (NIC_BITS, 2.0, 1.0, 0.05),
    "accel": (20, 50.0, 30.0, 0.2),
}


@dataclass(frozen=True)
class Params:
    processes: int = 3000
    bits: int = 8                  # 255 usable PASIDs (0 is reserved)
    interarrival: float = 1.0      # mean time between arrivals
    work: float = 200.0            # mean time a process holds its PASID
    patience: float = 300.0        # a process gives up after waiting this long
    kill: float = 0.1              # share of processes killed (exit_owner) instead of closing
    grace: float = 20.0            # release to reuse, at least


QUICK = Params(processes=500)


@dataclass(frozen=True)
class Job:
    """One process's part of the workload, drawn before the run."""

    arrival: float
    work: float
    devices: tuple
    killed: bool


def workload(params: Params, seed: int) -> list[Job]:
    rng = random.Random(seed)
    jobs, t = [], 0.0
    for _ in range(params.processes):
        t += rng.expovariate(1 / params.interarrival)
        devices = tuple(d for d, (*_, share) in DEVICES.items() if rng.random() < share)
        jobs.append(Job(t, rng.expovariate(1 / params.work), devices,
                        rng.random() < params.kill))
    return jobs


class Model:
    """The SimPy model and its books (the pool keeps its own counters too)."""

    def __init__(self, strategy: str = "lowest", seed: int = 0, params: Params = Params(),
                 allocator_class=None):
        self.params = params
        self.env = simpy.Environment()
        self.pool = PasidPool(self.env, params.bits, strategy=strategy, grace=params.grace,
                              seed=seed, allocator_class=allocator_class)
        for name, (bits, drain, latency, _) in DEVICES.items():
            rng = random.Random(f"{seed}:{name}")
            self.pool.add_device(name, bits=bits, drain=drain,
                                 ack=lambda pasid, rng=rng, mean=latency: rng.expovariate(1 / mean))
        self.jobs = workload(params, seed)
        self.waits = []              # (wait, narrow) per granted request
        self.gave_up = 0
        self.killed = 0
        self.closed = 0
        self.peak_held = 0
        self.last_release = {}       # PASID -> time it last left ACTIVE
        self.reuse = []              # release -> next allocation of the same PASID

    def run(self) -> dict:
        self.env.process(self.arrivals())
        self.env.run()
        return self.summary()

    def arrivals(self):
        for index, job in enumerate(self.jobs):
            yield self.env.timeout(max(job.arrival - self.env.now, 0.0))
            self.env.process(self.process(index, job))

    def observe(self):
        s = self.pool.allocator.stats()
        self.peak_held = max(self.peak_held, s["draining"] + s["quarantined"])

    def process(self, index: int, job: Job):
        env, pool = self.env, self.pool
        owner = f"proc{index}"
        narrow = "nic" in job.devices
        request = pool.get(owner=owner, max=(1 << NIC_BITS) - 1 if narrow else None)
        yield request | env.timeout(self.params.patience)
        if not (request.triggered and request.ok):
            self.gave_up += 1            # the pool dropped the request: nobody waits on it
            return
        p = request.value
        self.waits.append((env.now - request.requested_at, narrow))
        if p in self.last_release:
            self.reuse.append(env.now - self.last_release[p])
        for device in job.devices:
            pool.bind(p, device)
        yield env.timeout(job.work)
        if job.killed:
            pool.exit_owner(owner)       # never waits: the devices drain later
            self.killed += 1
        else:
            pool.put(p)
            self.closed += 1
        self.last_release[p] = env.now
        self.observe()

    def summary(self) -> dict:
        waits = [w for w, _ in self.waits]
        narrow = [w for w, n in self.waits if n]
        a = self.pool.allocator.stats()
        p = self.pool.stats()
        return {
            "strategy": self.pool.allocator.strategy,
            "processes": len(self.jobs),
            "served": len(waits),
            "waited": sum(w > 0 for w in waits),
            "mean_wait": sum(waits) / len(waits) if waits else 0.0,
            "max_wait": max(waits, default=0.0),
            "narrow_waited": sum(w > 0 for w in narrow),
            "narrow_mean_wait": sum(narrow) / len(narrow) if narrow else 0.0,
            "gave_up": self.gave_up,
            "killed": self.killed,
            "peak_active": a["high_water"],
            "peak_held": self.peak_held,
            "min_reuse": min(self.reuse, default=float("nan")),
            "median_reuse": statistics.median(self.reuse) if self.reuse else float("nan"),
            "drains": p["drains"],
            "timers": p["timers"],
            "end": self.env.now,
            "end_states": (a["active"], a["draining"], a["quarantined"]),
        }


def run(strategy: str = "lowest", seed: int = 0, params: Params = Params(),
        allocator_class=None) -> dict:
    """One run of the model; its summary (a dict)."""
    return Model(strategy, seed, params, allocator_class).run()


def print_summary(s: dict, out=sys.stdout) -> None:
    print(f"IOMMU model: {s['processes']} processes, strategy {s['strategy']}, "
          f"ended at t={s['end']:.1f}", file=out)
    print(f"  served {s['served']}, waited {s['waited']} (mean wait {s['mean_wait']:.2f}, "
          f"max {s['max_wait']:.2f}), gave up {s['gave_up']}, killed {s['killed']}", file=out)
    print(f"  narrow NIC requests waited {s['narrow_waited']} "
          f"(mean wait {s['narrow_mean_wait']:.2f})", file=out)
    print(f"  peak ACTIVE {s['peak_active']}, peak DRAINING+QUARANTINED {s['peak_held']}; "
          f"reuse distance min {s['min_reuse']:.2f}, median {s['median_reuse']:.2f}", file=out)
    active, draining, quarantined = s["end_states"]
    print(f"  drain processes {s['drains']}, release timers {s['timers']}; at the end ACTIVE "
          f"{active}, DRAINING {draining}, QUARANTINED {quarantined} (quarantine running)",
          file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="lowest",
                        choices=["lowest", "cyclic", "fifo", "random"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, help="how many processes arrive")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.processes} processes")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else Params()
    if args.processes is not None:
        if args.processes < 1:
            parser.error("--processes must be at least 1")
        params = dataclasses.replace(params, processes=args.processes)
    print_summary(run(args.strategy, args.seed, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
