"""The text trace reader and writer with the per-line work in C.

The twin of ``pasid/sim/_textread_py.py`` (see there for what a
:class:`TextParser` keeps and returns): the same state, the same columns, the
same errors. Here a block of bytes is split into lines and fields in C, the
numbers are checked against the format's rules and converted in C (exact
decimal fast path, else ``PyOS_string_to_double``, which ignores the locale),
and the handle, owner and device names live in C hash tables (the name's
UTF-8 bytes in one arena, a number each: about 40 bytes a name), so an
operation line costs no Python object at all.

The lines this parser leaves to Python, through the helpers it shares with
its twin: the first line, the header lines, the comment lines after the
first, and any line with a byte that is not ASCII (decoded and split by
``str.split``, so the blanks of other scripts split as in Python; its fields
then go through the same C path). An error's message is built where it is
found, in the twin's words (the shared test suite holds the two to it).
"""

cimport cython
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.math cimport floor
from libc.string cimport memchr, memcmp, memcpy

import os as _os

import numpy as np

from pasid.sim import _textread_py as _py
from pasid.sim import _tracerules as _trace
from pasid.sim._tracerules import TraceError

cdef extern from "Python.h":
    double PyOS_string_to_double(const char *s, char **endptr,
                                 PyObject* overflow_exception) except? -1.0
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *ptype) except NULL
    int Py_DTSF_ADD_DOT_0
    void PyMem_Free(void *p)
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t *size) except NULL
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)

from pasid.sim._opcodes cimport ACCESS, ADVANCE, ALLOC, BIND, EXIT, GET, PUT, UNBIND

from pasid.sim import _tracerules as _rules

_rules.check_op_codes("pasid.sim._textread", (ALLOC, GET, PUT, BIND, UNBIND, ACCESS, EXIT, ADVANCE))

cdef enum:
    MAX_FIELDS = 6          # an operation line has at most 5; one more says "too many"
cdef double MAX_TIME = 1e300
cdef const char* OP_TEXT[8]
cdef Py_ssize_t OP_LENGTH[8]
OP_TEXT[0] = "alloc"
OP_TEXT[1] = "get"
OP_TEXT[2] = "put"
OP_TEXT[3] = "bind"
OP_TEXT[4] = "unbind"
OP_TEXT[5] = "access"
OP_TEXT[6] = "exit"
OP_TEXT[7] = "advance"
for _i in range(8):
    OP_LENGTH[_i] = len(_trace.OP_NAMES[_i])
    if OP_TEXT[_i] != _trace.OP_NAMES[_i].encode():
        raise ImportError("pasid.sim._textread: operation names differ from pasid.sim.trace")
_OPS_LIST = ", ".join(_trace.OP_NAMES)

# a per-process seed: names chosen to collide on one machine do not on another
cdef uint64_t SEED = int.from_bytes(_os.urandom(8), "little") | 1

# powers of ten exact as doubles: the decimal fast path (Clinger)
cdef double POW10[23]
POW10[:] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14,
            1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]


# ---------------------------------------------------------------- names

cdef struct Names:
    Py_ssize_t count        # names held; a name's number is its rank of addition
    Py_ssize_t cap          # entries allocated (hashes, offsets + 1)
    uint64_t* hashes
    Py_ssize_t* offsets     # name i is arena[offsets[i]:offsets[i + 1]]
    char* arena
    Py_ssize_t used, arena_cap
    Py_ssize_t* slots       # open addressing: entry number, or -1
    Py_ssize_t mask         # len(slots) - 1, a power of two minus one


cdef inline uint64_t hash_bytes(const char* p, Py_ssize_t n) noexcept nogil:
    """FNV-1a over the bytes from a per-process seed, then murmur3's finaliser."""
    cdef uint64_t h = 14695981039346656037ULL ^ SEED
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ <uint8_t>p[i]) * 1099511628211ULL
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


cdef int names_init(Names* t) except -1:
    t.count = 0
    t.cap = 64
    t.used = 0
    t.arena_cap = 1024
    t.mask = 127
    t.hashes = <uint64_t*>malloc(t.cap * sizeof(uint64_t))
    t.offsets = <Py_ssize_t*>malloc((t.cap + 1) * sizeof(Py_ssize_t))
    t.arena = <char*>malloc(t.arena_cap)
    t.slots = <Py_ssize_t*>malloc((t.mask + 1) * sizeof(Py_ssize_t))
    if not (t.hashes and t.offsets and t.arena and t.slots):
        raise MemoryError()
    t.offsets[0] = 0
    for i in range(t.mask + 1):
        t.slots[i] = -1
    return 0


cdef void names_free(Names* t) noexcept:
    free(t.hashes)
    free(t.offsets)
    free(t.arena)
    free(t.slots)
    t.hashes = NULL
    t.offsets = NULL
    t.arena = NULL
    t.slots = NULL


cdef inline Py_ssize_t names_find(const Names* t, const char* p, Py_ssize_t n,
                                  uint64_t h) noexcept nogil:
    """The number of the name ``p[:n]`` (hash ``h``), or -1. O(1) expected."""
    cdef Py_ssize_t at = <Py_ssize_t>(h & <uint64_t>t.mask)
    cdef Py_ssize_t e
    while True:
        e = t.slots[at]
        if e < 0:
            return -1
        if (t.hashes[e] == h and t.offsets[e + 1] - t.offsets[e] == n
                and memcmp(t.arena + t.offsets[e], p, n) == 0):
            return e
        at = (at + 1) & t.mask


cdef Py_ssize_t names_add(Names* t, const char* p, Py_ssize_t n, uint64_t h) except -1:
    """Add the name ``p[:n]`` (not held: the caller looked first); its number."""
    cdef Py_ssize_t e = t.count, at, size, i
    cdef void* grown
    if e == t.cap:
        grown = realloc(t.hashes, 2 * t.cap * sizeof(uint64_t))
        if grown == NULL:
            raise MemoryError()
        t.hashes = <uint64_t*>grown
        grown = realloc(t.offsets, (2 * t.cap + 1) * sizeof(Py_ssize_t))
        if grown == NULL:
            raise MemoryError()
        t.offsets = <Py_ssize_t*>grown
        t.cap *= 2
    while t.used + n > t.arena_cap:
        grown = realloc(t.arena, 2 * t.arena_cap)
        if grown == NULL:
            raise MemoryError()
        t.arena = <char*>grown
        t.arena_cap *= 2
    if 2 * (e + 1) > t.mask + 1:        # keep the load at most one half
        size = 2 * (t.mask + 1)
        grown = malloc(size * sizeof(Py_ssize_t))
        if grown == NULL:
            raise MemoryError()
        free(t.slots)
        t.slots = <Py_ssize_t*>grown
        t.mask = size - 1
        for i in range(size):
            t.slots[i] = -1
        for i in range(e):
            at = <Py_ssize_t>(t.hashes[i] & <uint64_t>t.mask)
            while t.slots[at] >= 0:
                at = (at + 1) & t.mask
            t.slots[at] = i
    memcpy(t.arena + t.used, p, n)
    t.used += n
    t.hashes[e] = h
    t.offsets[e + 1] = t.used
    at = <Py_ssize_t>(h & <uint64_t>t.mask)
    while t.slots[at] >= 0:
        at = (at + 1) & t.mask
    t.slots[at] = e
    t.count = e + 1
    return e


cdef inline object names_get(const Names* t, Py_ssize_t e):
    return PyUnicode_DecodeUTF8(t.arena + t.offsets[e], t.offsets[e + 1] - t.offsets[e], NULL)


# ---------------------------------------------------------------- numbers

cdef inline bint is_blank(uint8_t c) noexcept nogil:
    """ASCII whitespace as ``str.split`` sees it."""
    return c == 32 or 9 <= c <= 13 or 28 <= c <= 31


cdef int parse_decimal(const char* p, Py_ssize_t n, double* out) except -1:
    """``p[:n]`` as a decimal number of the format into ``out``: 1, or 0 if it is not one."""
    cdef Py_ssize_t i = 0, digits = 0, frac = 0, significant = 0
    cdef bint negative = False, exp_negative = False
    cdef uint64_t mantissa = 0
    cdef int64_t exponent = 0, e10
    cdef uint8_t c
    cdef char small[64]
    cdef char* text
    cdef double value
    if i < n and (p[i] == b'+' or p[i] == b'-'):
        negative = p[i] == b'-'
        i += 1
    while i < n and 48 <= p[i] <= 57:
        c = <uint8_t>(p[i] - 48)
        if significant or c:
            significant += 1
            if significant <= 19:
                mantissa = mantissa * 10 + c
        digits += 1
        i += 1
    if i < n and p[i] == b'.':
        i += 1
        while i < n and 48 <= p[i] <= 57:
            c = <uint8_t>(p[i] - 48)
            if significant or c:
                significant += 1
                if significant <= 19:
                    mantissa = mantissa * 10 + c
            digits += 1
            frac += 1
            i += 1
    if digits == 0:
        return 0
    if i < n and (p[i] == b'e' or p[i] == b'E'):
        i += 1
        if i < n and (p[i] == b'+' or p[i] == b'-'):
            exp_negative = p[i] == b'-'
            i += 1
        if not (i < n and 48 <= p[i] <= 57):
            return 0
        while i < n and 48 <= p[i] <= 57:
            if exponent < 100000:
                exponent = exponent * 10 + (p[i] - 48)
            i += 1
        if exp_negative:
            exponent = -exponent
    if i != n:
        return 0
    e10 = exponent - frac
    if significant <= 15 and -22 <= e10 <= 22:
        # both exact doubles: one IEEE operation rounds the decimal correctly
        value = <double>mantissa
        if e10 >= 0:
            value = value * POW10[e10]
        else:
            value = value / POW10[-e10]
        out[0] = -value if negative else value
        return 1
    if n < 64:
        memcpy(small, p, n)
        small[n] = 0
        out[0] = PyOS_string_to_double(small, NULL, NULL)
        return 1
    text = <char*>malloc(n + 1)
    if text == NULL:
        raise MemoryError()
    memcpy(text, p, n)
    text[n] = 0
    try:
        out[0] = PyOS_string_to_double(text, NULL, NULL)
    finally:
        free(text)
    return 1


# ---------------------------------------------------------------- the parser

@cython.final
cdef class TextParser:
    """The state of one text trace being read: see ``pasid/sim/_textread_py.py``."""

    cdef readonly str source
    cdef readonly int bits
    cdef readonly double grace
    cdef readonly object comment
    cdef readonly list devices
    cdef readonly Py_ssize_t declared
    cdef readonly int64_t line
    cdef readonly bint seen_magic
    cdef readonly bint header_open
    cdef bint comment_open
    cdef set given
    cdef dict declared_names
    cdef Names handle_table
    cdef Names owner_table
    cdef Names device_table
    # the fields of the line at hand
    cdef const char* field[MAX_FIELDS]
    cdef Py_ssize_t length[MAX_FIELDS]
    cdef Py_ssize_t nfields
    cdef list keep          # the fields of a line that is not ASCII, while it is parsed

    def __cinit__(self, str source):
        self.source = source
        self.bits = _trace.MAX_BITS
        self.grace = 0.0
        self.comment = None
        self.devices = []
        self.declared = 0
        self.line = 0
        self.seen_magic = False
        self.header_open = True
        self.comment_open = False
        self.given = set()
        self.declared_names = {}
        names_init(&self.handle_table)
        names_init(&self.owner_table)
        names_init(&self.device_table)

    def __dealloc__(self):
        names_free(&self.handle_table)
        names_free(&self.owner_table)
        names_free(&self.device_table)

    @property
    def handles(self):
        return self.handle_table.count

    @property
    def owners(self):
        return self.owner_table.count

    def handle_name(self, Py_ssize_t number):
        """The name of handle ``number`` (IndexError past the handles named so far)."""
        if not 0 <= number < self.handle_table.count:
            raise IndexError(f"handle number {number} out of range")
        return names_get(&self.handle_table, number)

    def owner_name(self, Py_ssize_t number):
        """The name of owner ``number``."""
        if not 0 <= number < self.owner_table.count:
            raise IndexError(f"owner number {number} out of range")
        return names_get(&self.owner_table, number)

    def handle_names(self):
        """The names of the handles so far, by number (a new list)."""
        return [names_get(&self.handle_table, i) for i in range(self.handle_table.count)]

    def owner_names(self):
        """The names of the owners so far, by number (a new list)."""
        return [names_get(&self.owner_table, i) for i in range(self.owner_table.count)]

    def finish(self):
        """The end of the trace: TraceError if it had no first line."""
        if not self.seen_magic:
            raise TraceError(f"empty trace: the first line must be "
                             f"'{_trace.MAGIC} {_trace.VERSION}'", None, self.source)

    # ------------------------------------------------------------ errors

    cdef int fail(self, str message) except -1:
        raise TraceError(message, self.line, self.source)

    cdef str text_of(self, Py_ssize_t k):
        return PyUnicode_DecodeUTF8(self.field[k], self.length[k], NULL)

    def _fail(self, message):
        self.fail(message)

    # ------------------------------------------------------------ input

    def feed(self, bytes block not None):
        """Parse ``block``, whole lines of UTF-8 (the last may lack its line end only at
        the end of the trace), and return its operations as columns. O(len(block))."""
        cdef const char* data = PyBytes_AS_STRING(block)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(block)
        cdef Py_ssize_t pos = 0, end, cap = 1, k = 0, i, line_start
        cdef const char* found
        cdef uint8_t c
        cdef bint ascii
        if self.line == 0 and n >= 3 and memcmp(data, b"\xef\xbb\xbf", 3) == 0:
            pos = 3
        # an upper bound on the lines: each ends with \n or \r, or the block does
        i = pos
        while i < n:
            found = <const char*>memchr(data + i, b'\n', n - i)
            if found == NULL:
                break
            cap += 1
            i = found - data + 1
        i = pos
        while i < n:
            found = <const char*>memchr(data + i, b'\r', n - i)
            if found == NULL:
                break
            cap += 1
            i = found - data + 1
        time_a = np.empty(cap, np.float64)
        op_a = np.empty(cap, np.uint8)
        handle_a = np.empty(cap, np.int32)
        owner_a = np.empty(cap, np.int32)
        device_a = np.empty(cap, np.int32)
        lines_a = np.empty(cap, np.int64)
        cdef double[::1] times = time_a
        cdef uint8_t[::1] ops = op_a
        cdef int32_t[::1] handles = handle_a
        cdef int32_t[::1] owners = owner_a
        cdef int32_t[::1] devices = device_a
        cdef int64_t[::1] numbers = lines_a
        cdef int32_t h, o, d
        cdef uint8_t op
        cdef double t
        while pos < n:
            # the line: up to \n, \r or \r\n
            end = pos
            while end < n and data[end] != b'\n' and data[end] != b'\r':
                end += 1
            self.line += 1
            line_start = pos
            pos = end + 1
            if end < n and data[end] == b'\r' and pos < n and data[pos] == b'\n':
                pos += 1
            if self.comment_open:
                if end > line_start and data[line_start] == b'#':
                    self.python_line(data + line_start, end - line_start)
                    continue
                self.comment_open = False
            # the fields, before any '#'
            ascii = True
            for i in range(line_start, end):
                if <uint8_t>data[i] >= 0x80:
                    ascii = False
                    break
            if not ascii or not self.seen_magic:
                if self.python_line(data + line_start, end - line_start):
                    if self.operation(&t, &op, &h, &o, &d):
                        times[k] = t
                        ops[k] = op
                        handles[k] = h
                        owners[k] = o
                        devices[k] = d
                        numbers[k] = self.line
                        k += 1
                continue
            self.nfields = 0
            i = line_start
            while i < end:
                c = <uint8_t>data[i]
                if c == b'#':
                    break
                if is_blank(c):
                    i += 1
                    continue
                if self.nfields == MAX_FIELDS:
                    self.nfields += 1       # too many: the count is all that matters
                    break
                self.field[self.nfields] = data + i
                while i < end and not is_blank(<uint8_t>data[i]) and data[i] != b'#':
                    i += 1
                self.length[self.nfields] = data + i - self.field[self.nfields]
                self.nfields += 1
            if self.nfields == 0:
                continue
            if self.header_word():
                self.python_line(data + line_start, end - line_start)
                continue
            if self.operation(&t, &op, &h, &o, &d):
                times[k] = t
                ops[k] = op
                handles[k] = h
                owners[k] = o
                devices[k] = d
                numbers[k] = self.line
                k += 1
        return (time_a[:k], op_a[:k], handle_a[:k], owner_a[:k], device_a[:k], lines_a[:k])

    cdef bint header_word(self) noexcept:
        cdef const char* p = self.field[0]
        cdef Py_ssize_t n = self.length[0]
        return ((n == 4 and memcmp(p, b"bits", 4) == 0)
                or (n == 5 and memcmp(p, b"grace", 5) == 0)
                or (n == 6 and memcmp(p, b"device", 6) == 0))

    cdef int python_line(self, const char* p, Py_ssize_t n) except -1:
        """A line Python reads: the first, a comment after it, a header line, or one
        not ASCII. 1 if it is an operation line, its fields (as UTF-8) left for
        :meth:`operation`; else 0."""
        raw = PyBytes_FromStringAndSize(p, n)
        text = _py.decode_line(raw, self.source, self.line)
        if self.comment_open and text.startswith("#"):
            text = text[1:].rstrip("\r\n")
            if text.startswith(" "):
                text = text[1:]
            self.comment = text if self.comment is None else f"{self.comment}\n{text}"
            return 0
        self.comment_open = False
        fields = _py.split_line(text)
        self.nfields = 0
        if not fields:
            return 0
        if not self.seen_magic:
            _py.magic_line(fields, self._fail)
            self.seen_magic = self.comment_open = True
            return 0
        word = fields[0]
        if word in ("bits", "grace", "device"):
            key, value = _py.header_line(fields, self.header_open, self.given,
                                         self.declared_names, self._fail)
            if key == "bits":
                self.bits = value
            elif key == "grace":
                self.grace = value
            else:
                self.add_device(value)
                self.declared_names[value.name] = True
                self.declared += 1
            return 0
        # an operation line that is not ASCII: its fields, as UTF-8, kept alive on self
        self.keep = [f.encode("utf-8") for f in fields[:MAX_FIELDS]]
        self.nfields = min(len(fields), MAX_FIELDS + 1)
        for i in range(len(self.keep)):
            self.field[i] = PyBytes_AS_STRING(self.keep[i])
            self.length[i] = PyBytes_GET_SIZE(self.keep[i])
        return 1

    cdef Py_ssize_t add_device(self, device) except -1:
        name = device.name.encode("utf-8")
        cdef const char* p = PyBytes_AS_STRING(name)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
        self.devices.append(device)
        return names_add(&self.device_table, p, n, hash_bytes(p, n))

    cdef int handle_of(self, Py_ssize_t k, int32_t* out) except -1:
        cdef uint64_t hh = hash_bytes(self.field[k], self.length[k])
        cdef Py_ssize_t e = names_find(&self.handle_table, self.field[k], self.length[k], hh)
        if e < 0:
            self.fail(f"unknown handle {self.text_of(k)!r} (no alloc names it)")
        out[0] = <int32_t>e
        return 0

    cdef int owner_of(self, Py_ssize_t k, int32_t* out) except -1:
        cdef uint64_t hh = hash_bytes(self.field[k], self.length[k])
        cdef Py_ssize_t e = names_find(&self.owner_table, self.field[k], self.length[k], hh)
        if e < 0:
            if self.owner_table.count >= 0x7fffffff:
                self.fail("more than 2**31 - 1 owners")
            e = names_add(&self.owner_table, self.field[k], self.length[k], hh)
        out[0] = <int32_t>e
        return 0

    cdef int device_of(self, Py_ssize_t k, int32_t* out) except -1:
        cdef uint64_t hh = hash_bytes(self.field[k], self.length[k])
        cdef Py_ssize_t e = names_find(&self.device_table, self.field[k], self.length[k], hh)
        if e < 0:
            self.fail(_rules.unknown_device(self.text_of(k), self.devices))
        out[0] = <int32_t>e
        return 0

    cdef int operation(self, double* t, uint8_t* op, int32_t* h, int32_t* o,
                       int32_t* d) except -1:
        """The operation line in ``field``: its columns, or a TraceError."""
        cdef Py_ssize_t nargs = self.nfields - 2, i
        cdef uint64_t hh
        cdef Py_ssize_t e
        self.header_open = False
        if self.nfields < 2:
            self.fail("expected 'TIME OP ...'")
        if not parse_decimal(self.field[0], self.length[0], t):
            self.fail(f"time must be a decimal number, got {self.text_of(0)!r}")
        if not 0.0 <= t[0] <= MAX_TIME:
            _trace._keep(self._fail, _trace._time, t[0])
        op[0] = 255
        for i in range(8):
            if (self.length[1] == OP_LENGTH[i]
                    and memcmp(self.field[1], OP_TEXT[i], self.length[1]) == 0):
                op[0] = <uint8_t>i
                break
        if op[0] == 255:
            self.fail(f"unknown operation {self.text_of(1)!r} (one of {_OPS_LIST})")
        h[0] = o[0] = d[0] = -1
        if op[0] == ALLOC:
            if not 1 <= nargs <= 3:
                self.fail("expected 'TIME alloc HANDLE [OWNER|-] [FITS]'")
            hh = hash_bytes(self.field[2], self.length[2])
            if names_find(&self.handle_table, self.field[2], self.length[2], hh) >= 0:
                self.fail(f"handle {self.text_of(2)!r} allocated twice")
            if self.handle_table.count >= 0x7fffffff:
                self.fail("more than 2**31 - 1 handles")
            h[0] = <int32_t>names_add(&self.handle_table, self.field[2], self.length[2], hh)
            if nargs > 1 and not (self.length[3] == 1 and self.field[3][0] == b'-'):
                self.owner_of(3, o)
            if nargs > 2:
                self.device_of(4, d)
        elif op[0] == GET or op[0] == PUT:
            if nargs != 1:
                self.fail(f"expected 'TIME {self.text_of(1)} HANDLE'")
            self.handle_of(2, h)
        elif op[0] == BIND or op[0] == UNBIND or op[0] == ACCESS:
            if nargs != 2:
                self.fail(f"expected 'TIME {self.text_of(1)} HANDLE DEVICE'")
            self.handle_of(2, h)
            self.device_of(3, d)
        elif op[0] == EXIT:
            if nargs != 1 or (self.length[2] == 1 and self.field[2][0] == b'-'):
                self.fail("expected 'TIME exit OWNER'")
            self.owner_of(2, o)
        elif nargs:
            self.fail("expected 'TIME advance'")
        return 1


# ---------------------------------------------------------------- output

cdef struct Buffer:
    char* data
    Py_ssize_t size, cap


cdef int buffer_reserve(Buffer* b, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap = b.cap
    cdef void* grown
    if b.size + more <= cap:
        return 0
    while b.size + more > cap:
        cap = 2 * cap if cap else 1 << 16
    grown = realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data = <char*>grown
    b.cap = cap
    return 0


cdef inline int put_text(Buffer* b, const char* p, Py_ssize_t n) except -1:
    buffer_reserve(b, n + 1)
    memcpy(b.data + b.size, p, n)
    b.size += n
    return 0


cdef inline int put_char(Buffer* b, char c) except -1:
    buffer_reserve(b, 1)
    b.data[b.size] = c
    b.size += 1
    return 0


cdef int put_name(Buffer* b, object names, Py_ssize_t i) except -1:
    """Name number ``i``: ``names[i]`` of a list, or of a str, that prefix and the number
    (a generated trace's names, ``h0``, ``h1``, ...: no list of them)."""
    cdef Py_ssize_t n
    cdef const char* p
    cdef char digits[24]
    cdef int k = 0
    cdef uint64_t rest
    if type(names) is str:
        if i < 0:
            raise IndexError(f"name number {i} out of range")
        p = PyUnicode_AsUTF8AndSize(names, &n)
        put_text(b, p, n)
        rest = <uint64_t>i
        while True:                 # the digits, last first
            digits[23 - k] = <char>(48 + rest % 10)
            k += 1
            rest //= 10
            if rest == 0:
                break
        return put_text(b, &digits[24 - k], k)
    if not 0 <= i < len(<list>names):
        raise IndexError(f"name number {i} out of range")
    p = PyUnicode_AsUTF8AndSize((<list>names)[i], &n)
    return put_text(b, p, n)


cdef int put_time(Buffer* b, double value) except -1:
    """``pasid.sim.trace._number``: an integral time under 1e15 as an int, else repr."""
    cdef char digits[24]
    cdef int64_t whole
    cdef int n = 0
    cdef char* text
    if -1e15 < value < 1e15 and value == floor(value):
        whole = <int64_t>value
        if whole < 0:
            put_char(b, b'-')
            whole = -whole
        while True:
            digits[n] = <char>(48 + whole % 10)
            n += 1
            whole //= 10
            if whole == 0:
                break
        buffer_reserve(b, n)
        while n:
            n -= 1
            b.data[b.size] = digits[n]
            b.size += 1
        return 0
    text = PyOS_double_to_string(value, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        n = 0
        while text[n]:
            n += 1
        put_text(b, text, n)
    finally:
        PyMem_Free(text)
    return 0


def format_ops(const double[::1] time, const uint8_t[::1] op, const int32_t[::1] handle,
               const int32_t[::1] owner, const int32_t[::1] device, object handle_names,
               object owner_names, list device_names):
    """Operations as lines of the text format (each ended by ``\\n``), UTF-8 bytes. The
    names are looked up by number in the lists (IndexError out of range); handle and
    owner names may be a str instead, the prefix of numbered names. O(n)."""
    for names in (handle_names, owner_names):
        if type(names) is not list and type(names) is not str:
            raise TypeError(f"names must be a list or a str prefix, not {type(names).__name__}")
    cdef Py_ssize_t n = time.shape[0], i
    cdef Buffer b
    cdef uint8_t code
    if not (op.shape[0] == handle.shape[0] == owner.shape[0] == device.shape[0] == n):
        raise ValueError("columns differ in length")
    b.data = NULL
    b.size = b.cap = 0
    try:
        buffer_reserve(&b, 32 * n + 1)
        for i in range(n):
            code = op[i]
            if code > ADVANCE:
                raise ValueError(f"unknown operation code {code}")
            put_time(&b, time[i])
            put_char(&b, b' ')
            put_text(&b, OP_TEXT[code], OP_LENGTH[code])
            if code == ALLOC:
                put_char(&b, b' ')
                put_name(&b, handle_names, handle[i])
                put_char(&b, b' ')
                if owner[i] >= 0:
                    put_name(&b, owner_names, owner[i])
                else:
                    put_char(&b, b'-')
                if device[i] >= 0:
                    put_char(&b, b' ')
                    put_name(&b, device_names, device[i])
            elif code == GET or code == PUT:
                put_char(&b, b' ')
                put_name(&b, handle_names, handle[i])
            elif code == EXIT:
                put_char(&b, b' ')
                put_name(&b, owner_names, owner[i])
            elif code != ADVANCE:
                put_char(&b, b' ')
                put_name(&b, handle_names, handle[i])
                put_char(&b, b' ')
                put_name(&b, device_names, device[i])
            put_char(&b, b'\n')
        return PyBytes_FromStringAndSize(b.data, b.size)
    finally:
        free(b.data)
