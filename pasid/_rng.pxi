# SplitMix64, the generator of the random strategy, and its exact range reduction.
# The twin of pasid/_rng.py (which documents the generator); included by pasid/_core.pyx.

cdef inline uint64_t splitmix64(uint64_t* state) noexcept nogil:
    """SplitMix64 (see pasid/_rng.py, the pure rendering): one 64-bit output."""
    cdef uint64_t z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t draw_below(uint64_t* state, uint64_t n) noexcept nogil:
    """Uniform in 0..n-1 by rejecting the 2**64 mod n lowest outputs (n >= 1)."""
    cdef uint64_t threshold = (0 - n) % n
    cdef uint64_t x = splitmix64(state)
    while x < threshold:
        x = splitmix64(state)
    return x % n
