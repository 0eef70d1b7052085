"""A small, fully typed program on pasid's public API.

It is what a user's code looks like when it is type-checked: ``mypy --strict
examples/typed_program.py`` passes (``tests/test_typing.py`` checks that, and
that the program runs). It touches every part of the API a typed program is
likely to: PasidAllocator (handles, devices, the lifecycle, quotas, batches,
snapshots), IDA, State, the exceptions, and pasid.sim.

    python examples/typed_program.py
"""

from __future__ import annotations

import copy
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt

import pasid
from pasid import (
    IDA,
    InvalidPasid,
    PasidAllocator,
    PasidError,
    PasidExhausted,
    PasidHandle,
    QuotaExceeded,
    SnapshotError,
    State,
    StateError,
)
from pasid.sim import Run, Trace, Workload, generate, preset, replay, simulate


class Gpu:
    """A device the driver knows; the allocator knows it by name (any hashable value
    names a device, and plain data such as a str also travels in snapshots)."""

    def __init__(self, name: str, bits: int) -> None:
        self.name = name
        self.bits = bits
        self.torn_down: list[int] = []

    def on_teardown(self, pasid: int) -> None:
        """The allocator released a PASID bound to this GPU: drain its queues, later."""
        self.torn_down.append(pasid)



@contextmanager
def vm_context(allocator: PasidAllocator, owner: str) -> Iterator[PasidHandle]:
    """An owner's PASID for the length of a ``with`` block."""
    with allocator.open(owner, data={"kind": "vm"}) as handle:
        yield handle


def lifecycle(allocator: PasidAllocator, gpu: Gpu) -> dict[str, int]:
    """Allocate, bind, release, drain, reclaim: one PASID through every state."""
    device = gpu.name
    device_handle: int = allocator.add_device(device, bits=gpu.bits, drain=2.0,
                                              on_teardown=gpu.on_teardown)
    assert device_handle >= 0

    with vm_context(allocator, "vm0") as handle:
        pasid_id: int = handle.pasid
        second = handle.dup()                   # one more reference, like a forked FD
        allocator.bind(pasid_id, device, data=("queue", 3))
        binding: object = allocator.binding(pasid_id, device)
        assert binding == ("queue", 3)
        assert allocator.refcount(pasid_id) == 2 and handle.valid
        second.close()
    assert handle.closed and not handle.valid

    state: State = allocator.state(pasid_id)    # bound, released: the GPU must drain it
    assert state is State.DRAINING and allocator.pending(device) == [pasid_id]
    assert gpu.torn_down == [pasid_id]

    allocator.unbind(pasid_id, device)          # the GPU has drained; its drain time runs
    release_at: float | None = allocator.next_release_time()
    assert allocator.state(pasid_id) == State.QUARANTINED and release_at is not None
    freed: int = allocator.advance(to=release_at)
    assert freed == 1 and allocator.state(pasid_id) == State.FREE
    assert allocator.advance(by=0.5) == 0 and allocator.now == release_at + 0.5
    return allocator.stats()


def owners_and_quotas(allocator: PasidAllocator) -> list[int]:
    """An owner at its quota is refused; its exit releases everything it held."""
    allocator.set_quota("proc1", 2)
    held = [allocator.alloc("proc1"), allocator.alloc("proc1", min=100, max=200)]
    try:
        allocator.alloc("proc1")
    except QuotaExceeded as exc:                # a PasidExhausted too
        assert isinstance(exc, PasidExhausted)
    assert allocator.try_alloc("proc1") is None
    assert sorted(p for p in allocator if allocator.owner(p) == "proc1") == sorted(held)
    released: list[int] = allocator.exit_owner("proc1")
    allocator.set_quota("proc1", None)
    return released


def batches(allocator: PasidAllocator) -> npt.NDArray[np.uint8]:
    """Many PASIDs at once as numpy arrays."""
    ids: npt.NDArray[np.uint32] = allocator.alloc_many(64, owner="batch")
    assert len(allocator) >= 64 and int(ids[0]) in allocator
    allocator.free_many(ids[:32])
    allocator.free_many([int(p) for p in ids[32:48]])
    allocator.free_many(ids[48:].astype(np.int64))
    return allocator.states(ids)


def errors(allocator: PasidAllocator) -> list[str]:
    """Each error is a PasidError, and says what was wrong."""
    caught: list[str] = []
    attempts = (
        lambda: allocator.free(5),                      # not ACTIVE: StateError
        lambda: allocator.state(1 << 30),               # out of range: InvalidPasid
        lambda: allocator.reserve(0),                   # PASID 0 starts RESERVED
        lambda: PasidAllocator.from_bytes(b"not a snapshot"),
    )
    for attempt in attempts:
        try:
            attempt()
        except (StateError, InvalidPasid, SnapshotError) as exc:
            assert isinstance(exc, PasidError)
            caught.append(type(exc).__name__)
    return caught


def snapshots(allocator: PasidAllocator) -> PasidAllocator:
    """The whole allocator as bytes, and back; pickle and copy too."""
    blob: bytes = allocator.to_bytes()
    restored = PasidAllocator.from_bytes(blob)
    assert restored.to_bytes() == blob
    assert pickle.loads(pickle.dumps(allocator)).stats() == allocator.stats()
    return copy.deepcopy(restored)


def ida() -> list[int]:
    """The kernel's IDA: the lowest free ID in a range."""
    ids = IDA()
    first = [ids.alloc(), ids.alloc(), ids.alloc_min(1000), ids.alloc_range(10, 20)]
    ids.free(first[1])
    assert ids.alloc_max(5) == first[1] and 1000 in ids and ids.find_first() == 0
    found: int | None = ids.find_first_range(11, 999)
    assert found is None and not ids.is_empty() and len(ids) == 4
    ordered = list(ids)
    ids.destroy()
    return ordered


def simulation() -> list[Run]:
    """A short workload, replayed under two strategies."""
    workload: Workload = preset("default", duration=2_000, arrival=0.05, lifetime=400,
                                vm_arrival=0.0)
    trace: Trace = generate(workload, seed=7)
    one: Run = replay(trace, "fifo", seed=7)
    rows, runs = simulate(trace, ["lowest", "random"], seed=7, samples=10)
    assert [row["strategy"] for row in rows] == ["lowest", "random"]
    assert one.ops == len(trace) and one.failures == 0
    return [one, *runs]


def main() -> int:
    allocator = PasidAllocator(bits=12, reserved=[0, (4000, 4095)], strategy="lowest",
                               grace=1.0, seed=42)
    gpu = Gpu("gpu0", bits=12)
    stats = lifecycle(allocator, gpu)
    released = owners_and_quotas(allocator)
    states = batches(allocator)
    caught = errors(allocator)
    copied = snapshots(allocator)
    ida_ids = ida()
    runs = simulation()

    print(f"pasid {pasid.__version__} on the {pasid.BACKEND} backend")
    print(f"lifecycle: {stats['allocations']} allocations, {stats['reclaimed']} reclaimed")
    print(f"exit_owner released {released}; batch states {sorted(set(states.tolist()))}")
    print(f"errors: {', '.join(caught)}; snapshot copy holds {len(copied)} ACTIVE")
    print(f"IDA held {ida_ids}")
    for run in runs:
        print(f"{run.strategy:>7}: {run.ops} ops, peak ACTIVE {run.peak_active}, "
              f"reuse median {run.reuse()['median']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
