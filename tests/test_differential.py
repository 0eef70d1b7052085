"""Differential test: random operation sequences, bad input included, on both
backends side by side; equal results, equal errors, equal snapshot bytes at
every step, and each backend loads the other's snapshot."""

import random

import numpy as np
import pytest

import pasid.pure
from pasid import PasidError

pytestmark = pytest.mark.skipif(
    __import__("os").environ.get("PASID_NO_EXTENSION") == "1",
    reason="needs the compiled core beside the pure one",
)

STRATEGIES = ["lowest", "cyclic", "fifo", "random"]
DEVICES = ["gpu", "nic", 3]
OWNERS = [None, None, "a", "b", ("vm", 1)]


def outcome(call):
    """What a call did: ("ok", value) or ("error", type, message)."""
    try:
        value = call()
    except (PasidError, ValueError, TypeError) as exc:
        return ("error", type(exc).__name__, str(exc))
    if isinstance(value, np.ndarray):
        return ("ok", value.dtype.str, value.tolist())
    if hasattr(value, "pasid"):
        return ("ok", "handle", value.pasid, value.generation)
    return ("ok", value)


def draining(a):
    """The DRAINING PASIDs, through the public ``pending`` query."""
    found = []
    for device in DEVICES:
        try:
            found += a.pending(device)
        except PasidError:
            pass
    return found


def random_op(rnd, bits, grace_used):
    size = 1 << bits

    def pid(a=None):
        """Mostly a live PASID (the same on both backends: their states are equal), sometimes bad input."""
        if a is not None and rnd.random() < 0.7:
            live = list(a) + draining(a)
            if live:
                return rnd.choice(live)
        return rnd.choice([rnd.randrange(size), rnd.randrange(size), rnd.randrange(size), -1, size, True, 1.5])

    def bound(a):
        """A (PASID, device) pair that is bound, if any."""
        for p in rnd.sample(range(size), size):
            devices = a.devices(p)
            if devices:
                return p, rnd.choice(devices)
        return pid(), rnd.choice(DEVICES)
    ops = [
        lambda a: a.alloc(rnd.choice(OWNERS), data=rnd.choice([None, "d"])),
        lambda a: a.try_alloc(rnd.choice(OWNERS), min=rnd.randrange(size), max=rnd.choice([None, size - 1, size])),
        lambda a: a.alloc_exact(pid(), rnd.choice(OWNERS)),
        lambda a: a.free(pid(a)),
        lambda a: a.put(pid(a)),
        lambda a: a.get(pid(a)),
        lambda a: a.alloc_many(rnd.choice([0, 1, 3, size, -1]), rnd.choice(OWNERS)),
        lambda a: a.free_many([pid(a) for _ in range(rnd.randrange(4))]),
        lambda a: a.states([rnd.randrange(size) for _ in range(3)]),
        lambda a: a.reserve(rnd.randrange(size), rnd.choice([None, rnd.randrange(size)])),
        lambda a: a.unreserve(rnd.randrange(size), rnd.choice([None, rnd.randrange(size)])),
        lambda a: a.bind(pid(a), rnd.choice(DEVICES), data=rnd.choice([None, 7])),
        lambda a: a.unbind(*bound(a)),
        lambda a: a.unbind(*bound(a)),
        lambda a: a.add_device(rnd.choice(DEVICES), bits=rnd.choice([bits, max(1, bits - 1), 20]),
                               drain=rnd.choice([0, 1, 2.5])),
        lambda a: a.remove_device(rnd.choice(DEVICES)),
        lambda a: a.exit_owner(rnd.choice(OWNERS)),
        lambda a: a.set_quota(rnd.choice(OWNERS), rnd.choice([None, 0, 1, 2, -1])),
        lambda a: a.advance(by=rnd.choice([0, 0.5, 1, 3, -1])),
        lambda a: a.next_release_time(),
        lambda a: a.pending(rnd.choice(DEVICES)),
        lambda a: a.devices(pid(a)),
        lambda a: a.binding(*bound(a)),
        lambda a: a.state(pid(a)),
        lambda a: (a.owner(pid(a)), a.data(pid(a))),
        lambda a: (a.refcount(pid(a)), a.generation(pid(a))),
        lambda a: (len(a), list(a), pid() in a, a.stats()),
    ]
    return rnd.randrange(len(ops)), ops


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", range(3))
def test_backends_agree(strategy, seed):
    import pasid._core

    rnd = random.Random(seed * 100 + STRATEGIES.index(strategy))
    bits = rnd.choice([3, 5, 7])
    grace = rnd.choice([0, 1, 2])
    kwargs = dict(bits=bits, strategy=strategy, grace=grace, seed=seed,
                  reserved=(0, (1, 2)) if seed == 1 else (0,))
    compiled = pasid._core.PasidAllocator(**kwargs)
    pure = pasid.pure.PasidAllocator(**kwargs)
    for step in range(400):
        choice_seed = rnd.random()
        index, ops = random_op(random.Random(choice_seed), bits, grace)
        # the same random arguments for both: rebuild the op list from one seed
        op_c = random_op(random.Random(choice_seed), bits, grace)[1][index]
        op_p = random_op(random.Random(choice_seed), bits, grace)[1][index]
        got_c = outcome(lambda: op_c(compiled))
        got_p = outcome(lambda: op_p(pure))
        assert got_c == got_p, (step, index)
        assert compiled.stats() == pure.stats(), step
        assert list(compiled) == list(pure), step
        snapshot = compiled.to_bytes()
        assert snapshot == pure.to_bytes(), step
        if step % 50 == 0:
            compiled._check()
            pure._check()
            # swap: each backend goes on from the other's snapshot
            compiled = pasid._core.PasidAllocator.from_bytes(pure.to_bytes())
            pure = pasid.pure.PasidAllocator.from_bytes(snapshot)
            assert compiled.to_bytes() == pure.to_bytes() == snapshot, step
    compiled._check()
    pure._check()
