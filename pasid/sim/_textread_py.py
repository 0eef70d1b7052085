"""The text trace reader and writer in Python: one line, one operation, at a time.

The twin of ``pasid/sim/_textread.pyx`` (the same parser with the per-line
work in C): the same state, the same columns, the same errors. This one is
the reader when the extension is absent (``PASID_NO_EXTENSION=1``, a pure
install) and the only one for text that is not a file of bytes (a text file
object, an iterable of lines). :mod:`pasid.sim.traceio` chooses between them
and cuts what they parse into chunks.

A :class:`TextParser` is fed the trace a block of complete lines at a time
(:meth:`TextParser.feed`: bytes, lines ended by ``\\n``, ``\\r\\n`` or
``\\r`` as when Python reads a text file; :meth:`TextParser.feed_lines`: str
lines) and returns the operations of each block as columns. What it keeps
between blocks is the header and the names: for each handle and owner its
name and number (a dict and a list). That is the one thing that grows with
the trace, a few dozen bytes a name; the operations themselves are handed on.

The helpers below the class (the first line, the header lines, decoding and
splitting a line) are shared: the compiled twin calls them for the lines it
leaves to Python (the header, and any line that is not ASCII), so the two
agree there by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from pasid._args import MAX_BITS, as_bits, as_drain, as_grace
from pasid.sim._tracerules import (
    _BOM, _OP_CODES, MAGIC, OP_ALLOC, OP_BIND, OP_EXIT, OP_GET, OP_NAMES, OP_PUT, OP_UNBIND,
    OP_ACCESS, VERSION, Device, TraceError, _decimal, _integer, _keep, _number, _time,
    unknown_device,
)

__all__ = ["TextParser", "format_ops"]

Columns = tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8], npt.NDArray[np.int32],
                npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int64]]

_BOM_BYTES = _BOM.encode("utf-8")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")       # what ends a line in a file (Python's reading)
_TEXT_LINE_ENDS = re.compile("\r\n|\r|\n")


class TextParser:
    """The state of one text trace being read (see the module).

    ``bits``, ``grace``: the header's (final once ``header_open`` is False);
    ``devices``: the devices the header declares (:class:`~pasid.sim.trace.Device`;
    an operation naming any other is a TraceError); ``declared``: how many;
    ``comment``: the ``#`` lines right after the first line (None if there are none); ``handles``,
    ``owners``: how many are named so far; ``line``: the last line read.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.bits = MAX_BITS
        self.grace = 0.0
        self.comment: str | None = None
        self.devices: list[Device] = []
        self.declared = 0                # how many devices the header declares
        self.line = 0
        self.seen_magic = False
        self.header_open = True
        self._comment_open = False       # just after the first line: '#' lines are the comment
        self._given: set[str] = set()    # the header lines seen of those given once
        self._device_index: dict[str, int] = {}
        self._handle_index: dict[str, int] = {}
        self._handle_names: list[str] = []
        self._owner_index: dict[str, int] = {}
        self._owner_names: list[str] = []

    @property
    def handles(self) -> int:
        return len(self._handle_names)

    @property
    def owners(self) -> int:
        return len(self._owner_names)

    def handle_names(self) -> list[str]:
        """The names of the handles so far, by number."""
        return self._handle_names

    def owner_names(self) -> list[str]:
        """The names of the owners so far, by number."""
        return self._owner_names

    def handle_name(self, number: int) -> str:
        """The name of handle ``number`` (IndexError past the handles named so far)."""
        return self._handle_names[number]

    def owner_name(self, number: int) -> str:
        """The name of owner ``number``."""
        return self._owner_names[number]

    def finish(self) -> None:
        """The end of the trace: TraceError if it had no first line."""
        if not self.seen_magic:
            raise TraceError(f"empty trace: the first line must be '{MAGIC} {VERSION}'",
                             None, self.source)

    # ------------------------------------------------------------ input

    def feed(self, block: bytes) -> Columns:
        """Parse ``block``, whole lines of UTF-8 (the last may lack its line end only
        at the end of the trace), and return its operations. O(len(block))."""
        if self.line == 0 and block.startswith(_BOM_BYTES):
            block = block[len(_BOM_BYTES):]
        if not block:
            return self.feed_lines(())
        lines: Iterable[str]
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:  # name the line: decode each, up to the bad one
            raw: list[bytes] = _LINE_ENDS.split(block)
            if raw[-1] == b"":
                raw.pop()
            lines = _decoding(raw, self)
        else:
            split: list[str] = _TEXT_LINE_ENDS.split(text)
            if split[-1] == "":     # the block ends with a line end
                split.pop()
            lines = split
        return self.feed_lines(lines, bom=False)

    def feed_lines(self, lines: Iterable[str], *, bom: bool = True) -> Columns:
        """Parse ``lines`` (str, one line each, its line end optional) and return their
        operations. A byte-order mark at the start of the trace's first line is skipped
        (``bom``: when the first line is this call's)."""
        times: list[float] = []
        ops: list[int] = []
        hs: list[int] = []
        os_: list[int] = []
        ds: list[int] = []
        numbers: list[int] = []
        devices, device_list = self._device_index, self.devices
        handles, handle_names = self._handle_index, self._handle_names
        owners, owner_names = self._owner_index, self._owner_names
        source = self.source
        number = self.line

        def fail(message: str) -> NoReturn:
            self.line = number
            raise TraceError(message, number, source)

        def handle_index(name: str) -> int:
            index = handles.get(name)
            if index is None:
                fail(f"unknown handle {name!r} (no alloc names it)")
            return index

        def owner_index(name: str) -> int:
            index = owners.get(name)
            if index is None:
                index = owners[name] = len(owner_names)
                owner_names.append(name)
            return index

        def device_index(name: str) -> int:
            index = devices.get(name)
            if index is None:
                fail(unknown_device(name, device_list))
            return index

        for raw in lines:
            number += 1
            if number == 1 and bom and raw.startswith(_BOM):
                raw = raw[1:]
            if self._comment_open:
                if raw.startswith("#"):
                    self._add_comment(raw)
                    continue
                self._comment_open = False
            text = split_line(raw)
            if not text:
                continue
            if not self.seen_magic:
                magic_line(text, fail)
                self.seen_magic = self._comment_open = True
                continue
            word = text[0]
            if word in ("bits", "grace", "device"):
                key, value = header_line(text, self.header_open, self._given, devices, fail)
                if key == "bits":
                    self.bits = value
                elif key == "grace":
                    self.grace = value
                else:
                    devices[value.name] = len(device_list)
                    device_list.append(value)
                    self.declared += 1
                continue
            self.header_open = False
            if len(text) < 2:
                fail("expected 'TIME OP ...'")
            t = _keep(fail, _time, _decimal(text[0], "time", fail))
            op = _OP_CODES.get(text[1])
            if op is None:
                fail(f"unknown operation {text[1]!r} (one of {', '.join(OP_NAMES)})")
            args = text[2:]
            h = o = d = -1
            if op == OP_ALLOC:
                if not 1 <= len(args) <= 3:
                    fail("expected 'TIME alloc HANDLE [OWNER|-] [FITS]'")
                if args[0] in handles:
                    fail(f"handle {args[0]!r} allocated twice")
                h = handles[args[0]] = len(handle_names)
                handle_names.append(args[0])
                if len(args) > 1 and args[1] != "-":
                    o = owner_index(args[1])
                if len(args) > 2:
                    d = device_index(args[2])
            elif op == OP_GET or op == OP_PUT:
                if len(args) != 1:
                    fail(f"expected 'TIME {text[1]} HANDLE'")
                h = handle_index(args[0])
            elif op == OP_BIND or op == OP_UNBIND or op == OP_ACCESS:
                if len(args) != 2:
                    fail(f"expected 'TIME {text[1]} HANDLE DEVICE'")
                h = handle_index(args[0])
                d = device_index(args[1])
            elif op == OP_EXIT:
                if len(args) != 1 or args[0] == "-":
                    fail("expected 'TIME exit OWNER'")
                o = owner_index(args[0])
            elif args:
                fail("expected 'TIME advance'")
            times.append(t)
            ops.append(op)
            hs.append(h)
            os_.append(o)
            ds.append(d)
            numbers.append(number)
        self.line = number
        return (np.array(times, dtype=np.float64), np.array(ops, dtype=np.uint8),
                np.array(hs, dtype=np.int32), np.array(os_, dtype=np.int32),
                np.array(ds, dtype=np.int32), np.array(numbers, dtype=np.int64))

    def _add_comment(self, raw: str) -> None:
        text = raw[1:].rstrip("\r\n")
        if text.startswith(" "):
            text = text[1:]
        self.comment = text if self.comment is None else f"{self.comment}\n{text}"


def _decoding(raw: list[bytes], parser: TextParser) -> Iterable[str]:
    """Each line of ``raw`` decoded, the one that is not UTF-8 a TraceError naming it
    (when it is reached: the lines before it are parsed first)."""
    for offset, line in enumerate(raw, 1):
        yield decode_line(line, parser.source, parser.line + offset)


# ---------------------------------------------------------------- shared by both twins

def decode_line(raw: bytes, source: str, number: int) -> str:
    """A line of a trace file as text; TraceError naming it if it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TraceError(f"not UTF-8 text: {error.reason} at byte {error.start + 1} of the line",
                         number, source) from None


def split_line(raw: str) -> list[str]:
    """The fields of a line: its text before any ``#``, split at blanks (``str.split``)."""
    return raw.split("#", 1)[0].split()


def magic_line(text: list[str], fail: Callable[[str], NoReturn]) -> None:
    """Check the first line's fields (``pasid-trace 1``)."""
    if text[0] != MAGIC or len(text) != 2:
        fail(f"not a trace: the first line must be '{MAGIC} {VERSION}'")
    if text[1] != str(VERSION):
        fail(f"unknown trace version {text[1]!r} (this reader knows {VERSION})")


def header_line(text: list[str], header_open: bool, given: set[str], devices: Any,
                fail: Callable[[str], NoReturn]) -> tuple[str, Any]:
    """A header line's setting: ``("bits", int)``, ``("grace", float)`` or ``("device",
    Device)``. ``given``: the once-only lines seen (updated); ``devices``: the names
    declared so far (``in`` works on it)."""
    word = text[0]
    if not header_open:
        fail(f"'{word}' belongs in the header, before the first operation")
    if word in given:
        fail(f"{word} declared twice")
    if word == "bits":
        if len(text) != 2:
            fail("expected 'bits N'")
        given.add(word)
        return word, _keep(fail, as_bits, _integer(text[1], "bits", fail), "bits")
    if word == "grace":
        if len(text) != 2:
            fail("expected 'grace TIME'")
        given.add(word)
        return word, _keep(fail, as_grace, _decimal(text[1], "grace", fail))
    if len(text) < 2:
        fail("expected 'device NAME [bits=N] [drain=TIME]'")
    name = text[1]
    if name in devices:
        fail(f"device {name!r} declared twice")
    settings: dict[str, Any] = {}
    for item in text[2:]:
        key, sep, value = item.partition("=")
        if not sep or key not in ("bits", "drain"):
            fail(f"unknown device setting {item!r} (bits=N, drain=TIME)")
        if key in settings:
            fail(f"device {name!r}: {key} given twice")
        if key == "bits":
            width = _integer(value, "device bits", fail)
            settings[key] = _keep(fail, as_bits, width, "device bits")
        else:
            settings[key] = _keep(fail, as_drain, _decimal(value, "drain", fail))
    return "device", Device(name, **settings)


# ---------------------------------------------------------------- output

class _Prefixed:
    """Numbered names, ``_Prefixed("h")[3] == "h3"``, indexed as a list would be."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __getitem__(self, number: int) -> str:
        if number < 0:
            raise IndexError(f"name number {number} out of range")
        return f"{self.prefix}{number}"


def format_ops(time: npt.NDArray[np.float64], op: npt.NDArray[np.uint8],
               handle: npt.NDArray[np.int32], owner: npt.NDArray[np.int32],
               device: npt.NDArray[np.int32], handle_names: Any, owner_names: Any,
               device_names: Any) -> bytes:
    """Operations as lines of the text format (each ended by ``\\n``), UTF-8. The names are
    looked up by number: ``handle_names[h]`` (a list, or anything indexable); handle and
    owner names may be a str instead, the prefix of numbered names. O(n)."""
    if isinstance(handle_names, str):
        handle_names = _Prefixed(handle_names)
    if isinstance(owner_names, str):
        owner_names = _Prefixed(owner_names)
    lines: list[str] = []
    append = lines.append
    for t, o_p, h, o, d in zip(time.tolist(), op.tolist(), handle.tolist(), owner.tolist(),
                               device.tolist()):
        t = _number(t)
        if o_p == OP_ALLOC:
            owner_text = owner_names[o] if o >= 0 else "-"
            if d >= 0:
                append(f"{t} alloc {handle_names[h]} {owner_text} {device_names[d]}\n")
            else:
                append(f"{t} alloc {handle_names[h]} {owner_text}\n")
        elif o_p == OP_GET or o_p == OP_PUT:
            append(f"{t} {OP_NAMES[o_p]} {handle_names[h]}\n")
        elif o_p == OP_EXIT:
            append(f"{t} exit {owner_names[o]}\n")
        elif o_p == OP_BIND or o_p == OP_UNBIND or o_p == OP_ACCESS:
            append(f"{t} {OP_NAMES[o_p]} {handle_names[h]} {device_names[d]}\n")
        else:
            append(f"{t} advance\n")
    return "".join(lines).encode("utf-8")
