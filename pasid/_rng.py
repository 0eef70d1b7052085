"""SplitMix64, the generator of the ``random`` strategy (pure-Python rendering).

The compiled core implements the same generator in C; both backends draw the
same numbers from the same seed, so the same calls give the same IDs.

The generator (Steele, Lea and Flood, 2014), all arithmetic modulo 2**64::

    state += 0x9E3779B97F4A7C15
    z = state
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)

A draw below ``n`` rejects the ``2**64 mod n`` lowest outputs and returns the
next output ``mod n``: exactly uniform, and usually a single output.

>>> g = SplitMix64(0)
>>> hex(g.next())
'0xe220a8397b1dcdaf'
>>> g = SplitMix64(1)
>>> [g.below(10) for _ in range(6)]
[5, 9, 0, 5, 1, 8]
"""

from __future__ import annotations

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


class SplitMix64:
    """The state of one SplitMix64 stream: one 64-bit integer."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK

    def next(self) -> int:
        """The next 64-bit output."""
        self.state = z = (self.state + GOLDEN) & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """A uniform integer in ``0 .. n-1`` (``n >= 1``)."""
        threshold = ((1 << 64) - n) % n
        while True:
            x = self.next()
            if x >= threshold:
                return x % n
