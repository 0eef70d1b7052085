"""What a test can see of an allocator through its public API, for "nothing changed" checks."""


def observable(a):
    """Everything observable that a failed call must leave unchanged."""
    size = 1 << a.bits
    return (
        a.states(range(size)).tolist(),
        a.stats(),
        [a.refcount(p) for p in range(size)],
        [a.generation(p) for p in range(size)],
        [a.owner(p) for p in range(size)],
        [a.data(p) for p in range(size)],
        [a.devices(p) for p in range(size)],
        list(a),
        a.next_release_time(),
    )
