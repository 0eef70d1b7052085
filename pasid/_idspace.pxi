# The ID space of the compiled core: a radix tree of 64-bit bitmap words.
# The twin of pasid/pure/idspace.py: space_X(space, ...) here is IdSpace.X there,
# node_X is node_X, and _IdSpaceForTests (at the end) puts this Space behind
# IdSpace's method names for tests/test_idspace.py.
#
# A node of height h covers 2**(12 + 6h) IDs in 64 slots. A leaf (h = 0)
# holds 64 bitmap words (bit set = the ID is free); an inner node holds 64
# child pointers, NULL meaning "every ID below is free" (children are made
# when an ID below is first taken and freed again when all below is free, so
# memory follows use, not the range). Every node carries summaries:
#   free_mask  bit i set: slot i has a free ID below it
#   used_mask  bit i set: slot i has a taken ID below it
#   nfree      free IDs under the node (for rank and select)
# The lowest free ID at or above ``lo`` is one masked word test per level and
# one count-trailing-zeros per level on the way down: O(log64 N) whatever the
# occupancy. As in the kernel's xarray, the tree is only as tall as the largest
# ID taken needs (it grows by a new root above the old one, and is reset by
# ``space_clear``): everything beyond the root's span is free. Callers bound
# every search by their own ``hi`` (the space may report free IDs past its
# capacity).
#
# The lowest free ID is what most allocations want, so the space keeps a hint:
# ``low_leaf``, a leaf with every ID below it taken (``low_base``, its first ID),
# and the nodes above it (``low_path``). While that leaf has a free ID, the
# lowest free ID is its first free bit: two loads instead of a descent from the
# root. Taking never breaks the hint; releasing an ID below it, freeing its leaf
# and a new root clear it (NULL), and the next descent to a leaf sets it again.
#
# Every function here is C only: ``noexcept nogil`` kernels return -1 for
# "none" and let the caller raise; the two that allocate return -1 on
# MemoryError with nothing changed (a new all-free node is the same as NULL).

from libc.stdlib cimport malloc, free

cdef extern from *:
    """
    static inline int pasid_ctz64(uint64_t x) { return __builtin_ctzll(x); }
    #define PASID_ALL 0xFFFFFFFFFFFFFFFFULL
    #define PASID_ONES 0x0101010101010101ULL
    #define PASID_HIGHS 0x8080808080808080ULL
    /* The set bits of each byte of x, in that byte (the classic SWAR count). */
    static inline uint64_t pasid_byte_counts(uint64_t x) {
        x = x - ((x >> 1) & 0x5555555555555555ULL);
        x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
        return (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    }
    /* x86-64 without -mpopcnt (the portable build) turns __builtin_popcountll
       into a call to libgcc's __popcountdi2: the same arithmetic inline costs
       less. Elsewhere (or with -mpopcnt) the builtin is one instruction or two. */
    static inline int pasid_popcount64(uint64_t x) {
    #if (defined(__x86_64__) || defined(__i386__)) && !defined(__POPCNT__)
        return (int)((pasid_byte_counts(x) * PASID_ONES) >> 56);
    #else
        return __builtin_popcountll(x);
    #endif
    }
    /* The position of the set bit of rank r (0-based, from bit 0) of x, for
       r < popcount(x): branch-free to the byte that holds it (running counts
       of the bytes, compared with r in every byte at once), then at most 7 bits
       cleared in that byte. No pdep: portable, and as fast on CPUs whose pdep
       is microcoded. Defined for any arguments (r is taken mod 64, the byte is
       at most the 8th, ctz never sees 0); the answer is meaningful only for
       r < popcount(x). */
    static inline int pasid_select64(uint64_t x, uint64_t r) {
        uint64_t upto = pasid_byte_counts(x) * PASID_ONES;   /* byte i: bits in bytes 0..i */
        uint64_t le, byte;
        int k;
        r &= 63;
        /* bit 7 of byte i (i < 7) set iff upto_i <= r; no borrow between bytes,
           as (r | 0x80) >= 0x80 > 64 >= upto_i. Byte 7 holds popcount(x) > r. */
        le = (((r * PASID_ONES) | PASID_HIGHS) - upto) & 0x0080808080808080ULL;
        k = (int)(((le >> 7) * PASID_ONES) >> 56);          /* the byte: bytes before it end <= r */
        if (k > 0)
            r -= (upto >> (8 * k - 8)) & 0xFF;
        byte = (x >> (8 * k)) & 0xFF;
        while (r > 0) {
            byte &= byte - 1;
            r--;
        }
        return 8 * k + __builtin_ctzll(byte | 0x100);
    }
    """
    int ctz64 "pasid_ctz64"(uint64_t x) noexcept nogil
    int popcount64 "pasid_popcount64"(uint64_t x) noexcept nogil
    int select64 "pasid_select64"(uint64_t x, uint64_t r) noexcept nogil
    const uint64_t ALL "PASID_ALL"

cdef enum:
    LEAF_SHIFT = 12          # log2 of the IDs under one leaf
    MAX_HEIGHT = 4           # 2**(12 + 6*4) >= 2**31


cdef inline int slot_shift(int height) noexcept nogil:
    """log2 of the IDs under one slot of a node of this height."""
    return 6 + 6 * height


# Fault injection for the tests (pasid._core._fail_node_allocations): when
# >= 0, the number of node allocations left to succeed before they fail.
cdef int64_t nodes_until_failure = -1


cdef Node* node_new(int height) noexcept nogil:
    """A node with every ID free, or NULL when out of memory."""
    cdef Node* node
    cdef int i
    global nodes_until_failure
    if nodes_until_failure >= 0:
        if nodes_until_failure == 0:
            return NULL
        nodes_until_failure -= 1
    node = <Node*>malloc(sizeof(Node))
    if node == NULL:
        return NULL
    node.free_mask = ALL
    node.used_mask = 0
    node.nfree = (<uint64_t>1) << (LEAF_SHIFT + 6 * height)
    for i in range(64):
        node.slot[i] = ALL if height == 0 else 0
    return node


cdef void node_destroy(Node* node, int height) noexcept nogil:
    cdef int i
    if node == NULL:
        return
    if height > 0:
        for i in range(64):
            node_destroy(<Node*>node.slot[i], height - 1)
    free(node)


cdef int space_init(Space* space, int64_t capacity) noexcept nogil:
    """Make an all-free space of ``capacity`` IDs (one leaf to start); -1 when out of memory."""
    space.height = 0
    space.capacity = capacity
    space.nodes = 1
    space.low_leaf = NULL
    space.low_base = 0
    space.root = node_new(0)
    return -1 if space.root == NULL else 0


cdef inline int64_t space_span(Space* space) noexcept nogil:
    """The IDs under the root; every ID from here on is free."""
    return (<int64_t>1) << (LEAF_SHIFT + 6 * space.height)


cdef int space_grow(Space* space) noexcept nogil:
    """Put a root one level taller above the current one; -1 when out of memory."""
    cdef Node* old = space.root
    cdef Node* root = node_new(space.height + 1)
    if root == NULL:
        return -1
    if old.used_mask == 0:
        # nothing taken below: the old root is the same as NULL
        free(old)
        space.nodes -= 1
    else:
        root.slot[0] = <uint64_t>old
        root.used_mask = 1
        root.nfree -= space_span(space) - <int64_t>old.nfree
        if old.free_mask == 0:
            root.free_mask &= ~(<uint64_t>1)
    space.root = root
    space.height += 1
    space.nodes += 1
    space.low_leaf = NULL               # its path has a new top
    return 0


cdef void space_destroy(Space* space) noexcept nogil:
    node_destroy(space.root, space.height)
    space.root = NULL
    space.low_leaf = NULL


cdef int space_clear(Space* space) noexcept nogil:
    """Free every ID (and every node but a fresh root); -1 when out of memory."""
    cdef Node* root = node_new(0)
    if root == NULL:
        return -1
    node_destroy(space.root, space.height)
    space.root = root
    space.height = 0
    space.nodes = 1
    space.low_leaf = NULL
    return 0


cdef inline int64_t node_lowest_free(Node* node, int height, int64_t base) noexcept nogil:
    """The lowest free ID under a node whose free_mask is not zero."""
    cdef int i
    cdef Node* child
    while height > 0:
        i = ctz64(node.free_mask)
        base += (<int64_t>i) << slot_shift(height)
        child = <Node*>node.slot[i]
        if child == NULL:
            return base
        node = child
        height -= 1
    i = ctz64(node.free_mask)
    return base + (i << 6) + ctz64(node.slot[i])


cdef int64_t node_find_free(Node* node, int height, int64_t base, int64_t lo) noexcept nogil:
    """The lowest free ID >= lo under ``node`` (covering base..), or -1."""
    cdef int shift = slot_shift(height)
    cdef int64_t offset = lo - base
    cdef int i
    cdef uint64_t mask
    cdef Node* child
    cdef int64_t found
    if offset < 0:
        offset = 0
    i = <int>(offset >> shift)
    if height == 0:
        mask = node.slot[i] & (ALL << (offset & 63))
        if mask:
            return base + (i << 6) + ctz64(mask)
    elif (node.free_mask >> i) & 1:
        child = <Node*>node.slot[i]
        if child == NULL:
            return base + offset
        found = node_find_free(child, height - 1, base + ((<int64_t>i) << shift), lo)
        if found >= 0:
            return found
    if i == 63:
        return -1
    mask = node.free_mask & (ALL << (i + 1))
    if mask == 0:
        return -1
    i = ctz64(mask)
    if height == 0:
        return base + (i << 6) + ctz64(node.slot[i])
    child = <Node*>node.slot[i]
    base += (<int64_t>i) << shift
    if child == NULL:
        return base
    return node_lowest_free(child, height - 1, base)


cdef inline int64_t space_find_free(Space* space, int64_t lo) noexcept nogil:
    """The lowest free ID >= lo (may exceed the capacity: bound it)."""
    cdef int64_t found
    if lo >= space_span(space):
        return lo
    if lo <= 0:
        if space.root.free_mask == 0:
            return space_span(space)
        return node_lowest_free(space.root, space.height, 0)
    found = node_find_free(space.root, space.height, 0, lo)
    return found if found >= 0 else space_span(space)


cdef int64_t node_find_used(Node* node, int height, int64_t base, int64_t lo) noexcept nogil:
    """The lowest taken ID >= lo under ``node``, or -1."""
    cdef int shift = slot_shift(height)
    cdef int64_t offset = lo - base
    cdef int i
    cdef uint64_t mask
    cdef int64_t found
    if offset < 0:
        offset = 0
    i = <int>(offset >> shift)
    if height == 0:
        mask = ~node.slot[i] & (ALL << (offset & 63))
        if mask:
            return base + (i << 6) + ctz64(mask)
    elif (node.used_mask >> i) & 1:
        found = node_find_used(<Node*>node.slot[i], height - 1,
                               base + ((<int64_t>i) << shift), lo)
        if found >= 0:
            return found
    if i == 63:
        return -1
    mask = node.used_mask & (ALL << (i + 1))
    while mask:
        i = ctz64(mask)
        if height == 0:
            return base + (i << 6) + ctz64(~node.slot[i])
        found = node_find_used(<Node*>node.slot[i], height - 1,
                               base + ((<int64_t>i) << shift), 0)
        if found >= 0:
            return found
        mask &= mask - 1
    return -1


cdef inline int64_t space_find_used(Space* space, int64_t lo) noexcept nogil:
    """The lowest taken ID >= lo, or -1."""
    if lo >= space_span(space):
        return -1
    return node_find_used(space.root, space.height, 0, lo)


cdef Node* space_leaf(Space* space, int64_t pasid, Node** path) noexcept nogil:
    """The leaf holding ``pasid``, creating missing nodes on the way; NULL when out of memory.

    ``path[h]`` receives the node of height h on the way (h >= 1).
    """
    cdef Node* node
    cdef Node* child
    cdef int height
    cdef int i
    while pasid >= space_span(space):
        if space_grow(space) < 0:
            return NULL
    node = space.root
    height = space.height
    while height > 0:
        path[height] = node
        i = (pasid >> slot_shift(height)) & 63
        child = <Node*>node.slot[i]
        if child == NULL:
            child = node_new(height - 1)
            if child == NULL:
                return NULL
            node.slot[i] = <uint64_t>child
            space.nodes += 1
        node = child
        height -= 1
    return node


cdef inline Node* space_find_leaf(Space* space, int64_t pasid, Node** path) noexcept nogil:
    """The existing leaf holding ``pasid`` (which is taken, so the leaf exists)."""
    cdef Node* node = space.root
    cdef int height = space.height
    while height > 0:
        path[height] = node
        node = <Node*>node.slot[(pasid >> slot_shift(height)) & 63]
        height -= 1
    return node


cdef inline void leaf_take_bits(Node* leaf, int w, uint64_t bits, int n) noexcept nogil:
    """Take the ``n`` free ``bits`` of the leaf's word ``w``; the leaf's summaries
    change on transitions. The nodes above follow by :func:`space_path_take`."""
    leaf.slot[w] &= ~bits
    leaf.nfree -= n
    leaf.used_mask |= (<uint64_t>1) << w
    if leaf.slot[w] == 0:
        leaf.free_mask &= ~((<uint64_t>1) << w)


cdef inline void space_path_take(Space* space, Node* leaf, Node** path,
                                 int64_t pasid, int64_t n) noexcept nogil:
    """The nodes above ``leaf`` (reached by ``path``, holding ``pasid``) follow ``n``
    IDs taken from it: counts, and the summaries on transitions."""
    cdef int height, i
    cdef Node* child = leaf
    cdef Node* parent
    for height in range(1, space.height + 1):
        parent = path[height]
        i = (pasid >> slot_shift(height)) & 63
        parent.nfree -= n
        parent.used_mask |= (<uint64_t>1) << i
        if child.free_mask == 0:
            parent.free_mask &= ~((<uint64_t>1) << i)
        child = parent


cdef inline void space_take_bits(Space* space, Node* leaf, Node** path,
                                 int64_t pasid, uint64_t bits, int n) noexcept nogil:
    """Take the ``n`` free ``bits`` of the word holding ``pasid``; summaries change on transitions."""
    leaf_take_bits(leaf, (pasid >> 6) & 63, bits, n)
    space_path_take(space, leaf, path, pasid, n)


cdef inline int64_t space_take_lowest(Space* space, int64_t hi) noexcept nogil:
    """Take the lowest free ID if it is <= hi and return it.

    -2: the lowest free ID is above ``hi`` (nothing taken); -1: taking it
    needs a new node, nothing taken.

    The fast path of every lowest-free allocation: while the hint's leaf has
    a free ID, that is the one; else a descent from the root finds it, records
    the path that taking it updates and makes its leaf the hint. When the
    lowest free ID lies under a missing node (or beyond the root) the caller
    takes the general way (``space_find_free`` + ``space_take``).
    """
    cdef Node* node = space.low_leaf
    cdef int64_t base
    cdef int i
    if node == NULL or node.free_mask == 0:
        node = space_lowest_leaf(space)
        if node == NULL:
            return -2 if space_find_free(space, 0) > hi else -1
    i = ctz64(node.free_mask)
    base = space.low_base + (i << 6) + ctz64(node.slot[i])
    if base > hi:
        return -2
    space_take_bits(space, node, space.low_path, base, (<uint64_t>1) << (base & 63), 1)
    return base


cdef inline int64_t space_lowest(Space* space, int64_t hi) noexcept nogil:
    """:func:`space_take_lowest` without the taking: the lowest free ID if it is <= hi,
    its leaf made the hint, so that :func:`space_take_hinted` takes it with nothing
    made (a caller that must do something that may fail first: a guest allocation
    takes its host PASID between the two). -2 and -1 as there."""
    cdef Node* node = space.low_leaf
    cdef int64_t base
    cdef int i
    if node == NULL or node.free_mask == 0:
        node = space_lowest_leaf(space)
        if node == NULL:
            return -2 if space_find_free(space, 0) > hi else -1
    i = ctz64(node.free_mask)
    base = space.low_base + (i << 6) + ctz64(node.slot[i])
    return -2 if base > hi else base


cdef inline void space_take_hinted(Space* space, int64_t pasid) noexcept nogil:
    """Take the ID :func:`space_lowest` just gave, the space unchanged since (its leaf
    is the hint's: nothing to make, nothing to fail)."""
    space_take_bits(space, space.low_leaf, space.low_path, pasid,
                    (<uint64_t>1) << (pasid & 63), 1)


cdef Node* space_lowest_leaf(Space* space) noexcept nogil:
    """The leaf of the lowest free ID, made the hint; NULL (the hint cleared) when
    no ID is free under the root or the lowest lies under a missing node."""
    cdef Node* node = space.root
    cdef int height = space.height
    cdef int64_t base = 0
    cdef int i
    space.low_leaf = NULL
    if node.free_mask == 0:
        return NULL
    while height > 0:
        space.low_path[height] = node
        i = ctz64(node.free_mask)
        base += (<int64_t>i) << slot_shift(height)
        node = <Node*>node.slot[i]
        if node == NULL:
            return NULL
        height -= 1
    space.low_leaf = node
    space.low_base = base
    return node


cdef inline int space_take(Space* space, int64_t pasid) noexcept nogil:
    """Take the free ``pasid``; -1 when out of memory, nothing changed."""
    cdef Node* path[MAX_HEIGHT + 1]
    cdef Node* leaf = space_leaf(space, pasid, path)
    if leaf == NULL:
        return -1
    space_take_bits(space, leaf, path, pasid, (<uint64_t>1) << (pasid & 63), 1)
    return 0


cdef Node* space_taken_leaf(Space* space, int64_t pasid, Node** path) noexcept nogil:
    """The leaf holding ``pasid`` if ``pasid`` is taken, else NULL; fills ``path``."""
    cdef Node* node = space.root
    cdef int height = space.height
    if pasid >= space_span(space):
        return NULL
    while height > 0:
        path[height] = node
        node = <Node*>node.slot[(pasid >> slot_shift(height)) & 63]
        if node == NULL:
            return NULL
        height -= 1
    if (node.slot[(pasid >> 6) & 63] >> (pasid & 63)) & 1:
        return NULL
    return node


cdef inline void space_release_bits(Space* space, int64_t pasid, uint64_t bits,
                                    int n) noexcept nogil:
    """Free the ``n`` taken ``bits`` of the word holding ``pasid``."""
    cdef Node* path[MAX_HEIGHT + 1]
    space_release_path(space, space_find_leaf(space, pasid, path), path, pasid, bits, n)


cdef inline void space_release_path(Space* space, Node* leaf, Node** path,
                                    int64_t pasid, uint64_t bits, int n) noexcept nogil:
    """Free the ``n`` taken ``bits`` of ``leaf`` (reached by ``path``); all-free nodes are freed.

    The caller passes ``n`` (it knows it; a portable build has no popcount instruction).
    """
    cdef int w = (pasid >> 6) & 63
    cdef int height, i
    cdef Node* child = leaf
    cdef Node* parent
    if pasid < space.low_base or (leaf == space.low_leaf
                                  and leaf.nfree + n == (<uint64_t>1) << LEAF_SHIFT):
        space.low_leaf = NULL       # an ID below the hint, or its leaf all free (and freed)
    leaf.slot[w] |= bits
    leaf.nfree += n
    leaf.free_mask |= (<uint64_t>1) << w
    if leaf.slot[w] == ALL:
        leaf.used_mask &= ~((<uint64_t>1) << w)
    for height in range(1, space.height + 1):
        parent = path[height]
        i = (pasid >> slot_shift(height)) & 63
        parent.nfree += n
        parent.free_mask |= (<uint64_t>1) << i
        if child.used_mask == 0:
            parent.used_mask &= ~((<uint64_t>1) << i)
            parent.slot[i] = 0
            free(child)
            space.nodes -= 1
        child = parent


ctypedef struct Gather:       # IDs going back to the space, gathered by 64-ID word
    int64_t base             # the word's first ID; -1 before the first
    uint64_t bits
    int n


cdef inline void gather_start(Gather* g) noexcept nogil:
    g.base = -1
    g.bits = 0
    g.n = 0


cdef inline bint gather_full(Gather* g, int64_t pasid) noexcept nogil:
    """Whether ``pasid`` lies outside the word being gathered, which has bits: the
    caller takes that word (``g``'s fields) before :func:`gather_add` moves on."""
    return (pasid & ~63) != g.base and g.bits != 0


cdef inline void gather_add(Gather* g, int64_t pasid) noexcept nogil:
    """Gather ``pasid``, starting its word afresh if it is another."""
    if (pasid & ~63) != g.base:
        g.base = pasid & ~63
        g.bits = 0
        g.n = 0
    g.bits |= (<uint64_t>1) << (pasid & 63)
    g.n += 1


cdef inline void space_release_gathered(Space* space, Gather* g, int64_t pasid) noexcept nogil:
    """Free the taken ``pasid``, a word's IDs at once: a word's bits go back when an
    ID of another word comes, and at :func:`space_release_rest`."""
    if gather_full(g, pasid):
        space_release_bits(space, g.base, g.bits, g.n)
    gather_add(g, pasid)


cdef inline void space_release_rest(Space* space, Gather* g) noexcept nogil:
    """Free what :func:`space_release_gathered` still holds."""
    if g.bits:
        space_release_bits(space, g.base, g.bits, g.n)
    gather_start(g)


cdef inline void space_release(Space* space, int64_t pasid) noexcept nogil:
    """Free the taken ``pasid``. In the hint's leaf (the lowest-free allocation's, where
    a churn's IDs come back) its recorded path serves: no descent."""
    if space.low_leaf != NULL and <uint64_t>(pasid - space.low_base) < (
            (<uint64_t>1) << LEAF_SHIFT):
        space_release_path(space, space.low_leaf, space.low_path, pasid,
                           (<uint64_t>1) << (pasid & 63), 1)
    else:
        space_release_bits(space, pasid, (<uint64_t>1) << (pasid & 63), 1)


cdef inline bint space_is_free(Space* space, int64_t pasid) noexcept nogil:
    cdef Node* node = space.root
    cdef int height = space.height
    if pasid >= space_span(space):
        return True
    while height > 0:
        node = <Node*>node.slot[(pasid >> slot_shift(height)) & 63]
        if node == NULL:
            return True
        height -= 1
    return (node.slot[(pasid >> 6) & 63] >> (pasid & 63)) & 1


cdef inline int64_t child_free(Node* node, int j, int shift) noexcept nogil:
    """The free IDs under slot ``j`` of an inner node whose slots cover 2**shift IDs."""
    cdef Node* child = <Node*>node.slot[j]
    return (<int64_t>child.nfree) if child != NULL else ((<int64_t>1) << shift)


cdef int64_t space_rank(Space* space, int64_t x) noexcept nogil:
    """How many free IDs are below ``x``. O(32 log64 N): in each node, the slots
    below ``x`` or the slots from ``x`` up, whichever are fewer, are counted (the
    node's ``nfree`` gives the one from the other)."""
    cdef Node* node = space.root
    cdef Node* child
    cdef int height = space.height
    cdef int64_t base = 0
    cdef int64_t total = 0
    cdef int64_t part
    cdef int shift, i, j
    cdef uint64_t below
    if x <= 0:
        return 0
    if x >= space_span(space):
        return <int64_t>node.nfree + (x - space_span(space))
    while True:
        shift = slot_shift(height)
        i = <int>((x - base) >> shift)
        if height == 0:
            below = ((<uint64_t>1) << (x & 63)) - 1
            if i < 32:
                for j in range(i):
                    total += popcount64(node.slot[j])
                return total + popcount64(node.slot[i] & below)
            part = <int64_t>node.nfree - popcount64(node.slot[i] & ~below)
            for j in range(i + 1, 64):
                part -= popcount64(node.slot[j])
            return total + part
        if i < 32:
            for j in range(i):
                total += child_free(node, j, shift)
        else:
            part = <int64_t>node.nfree
            for j in range(i, 64):
                part -= child_free(node, j, shift)
            total += part
        base += (<int64_t>i) << shift
        child = <Node*>node.slot[i]
        if child == NULL:
            return total + (x - base)
        node = child
        height -= 1


cdef int64_t space_select(Space* space, int64_t rank) noexcept nogil:
    """The free ID of the given rank (0-based, ascending); rank < free IDs.

    O(32 log64 N): in each node the slots are counted from the nearer end (the
    node's ``nfree`` tells which), so a uniform rank counts 16 slots a level on
    average rather than 32; in the leaf word, :func:`select64` finds the bit
    without clearing the bits below it one at a time."""
    cdef Node* node = space.root
    cdef Node* child
    cdef int height = space.height
    cdef int64_t base = 0
    cdef int64_t count = 0
    cdef int64_t nfree
    cdef int shift, j = 0
    if rank >= <int64_t>node.nfree:
        return space_span(space) + (rank - <int64_t>node.nfree)
    while height > 0:
        shift = slot_shift(height)
        nfree = <int64_t>node.nfree
        if rank < nfree - rank:
            for j in range(64):
                count = child_free(node, j, shift)
                if rank < count:
                    break
                rank -= count
        else:
            rank = nfree - 1 - rank             # the rank from the top
            for j in range(63, -1, -1):
                count = child_free(node, j, shift)
                if rank < count:
                    break
                rank -= count
            rank = count - 1 - rank
        base += (<int64_t>j) << shift
        child = <Node*>node.slot[j]
        if child == NULL:
            return base + rank
        node = child
        height -= 1
    nfree = <int64_t>node.nfree
    if rank < nfree - rank:
        for j in range(64):
            count = popcount64(node.slot[j])
            if rank < count:
                break
            rank -= count
    else:
        rank = nfree - 1 - rank
        for j in range(63, -1, -1):
            count = popcount64(node.slot[j])
            if rank < count:
                break
            rank -= count
        rank = count - 1 - rank
    return base + (j << 6) + select64(node.slot[j], <uint64_t>rank)


# ---------------------------------------------------------------- invariants

cdef tuple _check_node(Node* node, int height):
    """(taken IDs, nodes) under ``node``, raising AssertionError on any disagreement."""
    cdef int i
    cdef uint64_t free_mask = 0, used_mask = 0
    cdef int64_t span = (<int64_t>1) << (LEAF_SHIFT + 6 * height)
    cdef int64_t used = 0, nodes = 1, child_used, child_nodes, child_span
    cdef Node* child
    if height == 0:
        for i in range(64):
            if node.slot[i]:
                free_mask |= (<uint64_t>1) << i
            if node.slot[i] != ALL:
                used_mask |= (<uint64_t>1) << i
            used += 64 - popcount64(node.slot[i])
    else:
        child_span = (<int64_t>1) << slot_shift(height)
        for i in range(64):
            child = <Node*>node.slot[i]
            if child == NULL:
                free_mask |= (<uint64_t>1) << i
                continue
            child_used, child_nodes = _check_node(child, height - 1)
            if child_used == 0:
                raise AssertionError(f"an all-free node is kept at height {height - 1}")
            if child_used < child_span:
                free_mask |= (<uint64_t>1) << i
            used_mask |= (<uint64_t>1) << i
            used += child_used
            nodes += child_nodes
    if free_mask != node.free_mask or used_mask != node.used_mask:
        raise AssertionError(f"summary masks disagree at height {height}")
    if <int64_t>node.nfree != span - used:
        raise AssertionError(f"nfree {node.nfree} != {span - used} at height {height}")
    return used, nodes


cdef int _check_hint(Space* space) except -1:
    """Raise AssertionError unless the lowest-free hint (when set) is the leaf at
    ``low_base`` with its path, and every ID below ``low_base`` is taken."""
    cdef Node* node = space.root
    cdef int height = space.height
    cdef int64_t base = space.low_base
    if space.low_leaf == NULL:
        return 0
    if base < 0 or base & ((1 << LEAF_SHIFT) - 1) or base >= space_span(space):
        raise AssertionError(f"the hint's base {base} is not a leaf's first ID")
    while height > 0:
        if space.low_path[height] != node:
            raise AssertionError(f"the hint's path differs at height {height}")
        node = <Node*>node.slot[(base >> slot_shift(height)) & 63]
        height -= 1
    if node != space.low_leaf:
        raise AssertionError(f"the hint's leaf is not the leaf of ID {base}")
    if space_find_free(space, 0) < base:
        raise AssertionError(f"ID {space_find_free(space, 0)} is free, below the hint's {base}")
    return 0


def _fail_node_allocations(n):
    """For the tests: after ``n`` more node allocations succeed, every one fails
    (as when out of memory) until ``_fail_node_allocations(None)``."""
    global nodes_until_failure
    nodes_until_failure = -1 if n is None else n


# ---------------------------------------------------------------- the tests' handle

@cython.final
cdef class _IdSpaceForTests:
    """_IdSpaceForTests(capacity)
--

    A ``Space`` behind the method names of its twin, ``pasid.pure.idspace.IdSpace``,
    so one state machine (tests/test_idspace.py) runs on both. For the tests only:
    not exported, not thread-safe. It refuses (ValueError) what would corrupt the
    C structure, which the pure twin leaves to its callers: an ID outside
    0 .. 2**36 - 1, taking a taken ID, releasing a free one.

    >>> space = _IdSpaceForTests(1 << 20)
    >>> for p in (0, 1, 2, 5000):
    ...     space.take(p)
    >>> space.find_free(0), space.find_free(5000), space.height, space.nodes
    (3, 5001, 1, 3)
    >>> space.take_lowest(10), space.rank(10), space.select(0)
    (3, 6, 4)
    >>> space.release(5000); space.nodes       # its leaf, all free again, is dropped
    2
    >>> space._check()
    """
    cdef Space space

    def __cinit__(self, int64_t capacity):
        if space_init(&self.space, capacity) < 0:
            raise MemoryError()

    def __dealloc__(self):
        space_destroy(&self.space)

    @property
    def height(self):
        return self.space.height

    @property
    def nodes(self):
        return self.space.nodes

    @property
    def capacity(self):
        return self.space.capacity

    cdef int _id(self, int64_t pasid) except -1:
        if not 0 <= pasid < (<int64_t>1) << (LEAF_SHIFT + 6 * MAX_HEIGHT):
            raise ValueError(f"ID {pasid} is outside the space")
        return 0

    def span(self):
        return space_span(&self.space)

    def find_free(self, int64_t lo):
        return space_find_free(&self.space, lo)

    def find_used(self, int64_t lo):
        return space_find_used(&self.space, lo)

    def take(self, int64_t pasid):
        self._id(pasid)
        if not space_is_free(&self.space, pasid):
            raise ValueError(f"ID {pasid} is taken")
        if space_take(&self.space, pasid) < 0:
            raise MemoryError()

    def take_lowest(self, int64_t hi):
        return space_take_lowest(&self.space, hi)

    def lowest(self, int64_t hi):
        return space_lowest(&self.space, hi)

    def take_hinted(self, int64_t pasid):
        space_take_hinted(&self.space, pasid)

    def release(self, int64_t pasid):
        self._id(pasid)
        if space_is_free(&self.space, pasid):
            raise ValueError(f"ID {pasid} is free")
        space_release(&self.space, pasid)

    def release_bits(self, int64_t pasid, uint64_t bits, int n):
        cdef int64_t first = pasid & ~(<int64_t>63)
        cdef int i
        self._id(pasid)
        if bits == 0 or n != popcount64(bits):
            raise ValueError(f"{n} is not the number of bits in {bits:#x}")
        for i in range(64):
            if (bits >> i) & 1 and space_is_free(&self.space, first + i):
                raise ValueError(f"ID {first + i} is free")
        space_release_bits(&self.space, pasid, bits, n)

    def is_free(self, int64_t pasid):
        self._id(pasid)
        return space_is_free(&self.space, pasid)

    def rank(self, int64_t x):
        if x < 0:
            raise ValueError(f"rank of a negative ID {x}")
        return space_rank(&self.space, x)

    def select(self, int64_t rank):
        if rank < 0:
            raise ValueError(f"negative rank {rank}")
        return space_select(&self.space, rank)

    def clear(self):
        if space_clear(&self.space) < 0:
            raise MemoryError()

    def _check(self):
        """What ``IDA._check`` verifies of its space: the nodes, their summaries and
        counts, the hint, and the number of nodes."""
        used, nodes = _check_node(self.space.root, self.space.height)
        _check_hint(&self.space)
        if nodes != self.space.nodes:
            raise AssertionError(f"nodes {self.space.nodes} != {nodes} in the tree")
