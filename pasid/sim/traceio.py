"""Trace files a chunk at a time: the text format read fast, and a binary format.

:func:`open_trace` reads a trace file as a :class:`~pasid.sim.chunk.StreamHeader`
and an iterator of :class:`~pasid.sim.chunk.Chunk` objects (consecutive
operations, numbered globally, see :mod:`pasid.sim.chunk`);
:func:`write_trace` writes one from such a stream. The format follows the
file's suffix: ``.npz`` is the binary format below, anything else the text
format (version 1, specified in :mod:`pasid.sim.trace`).

Memory: the operations are read and handed on a chunk at a time, and a text
file is read in blocks of a few MB. What grows with the trace is the names:
each handle and owner named keeps its name and number (the text reader needs
them to resolve later references and to name them in errors), a few dozen
bytes each; a binary trace of numbered names (``h0``, ``h1``, ...) keeps none.

The text reader does its per-line work in C (``pasid/sim/_textread.pyx``)
when the extension is built, in Python otherwise (``_textread_py.py``, also
the reader for text file objects and iterables of lines); both give the same
chunks and the same errors. Syntax errors, numbers out of range, a handle
allocated twice, an unknown handle, an unknown FITS device are the reader's
(:class:`~pasid.sim.trace.TraceError` naming the line, raised by
:func:`open_trace` for the header and while iterating for the rest); what the
trace's history forbids (a ``put`` of a released handle, times going
backwards, ...) is the checker's, fed the chunks.

Devices: a trace file declares every device its operations name (the text
header's ``device`` lines, the binary ``header.json``'s ``devices``); an
operation naming another is a :class:`~pasid.sim.trace.TraceError` naming the
line (text) or the operation (binary) and the devices declared, so a typo
(``bind h0 gpu11`` for ``gpu1``) stops the run. (The Python API,
:class:`~pasid.sim.trace.TraceBuilder`, still declares a device at its first
bind: a :class:`~pasid.sim.trace.Trace` holds every device it uses.)
:func:`write_trace` declares the first chunk's devices (or ``devices``); a text
trace's header is written before its operations, so an operation of a later
chunk naming a device not declared is a ValueError naming it (give
``devices`` to declare it up front); the binary form declares every device the
chunks list, its header being written last.

The binary format, version 1: an uncompressed zip (members stored, so each is
read straight into its array), written and read a chunk at a time::

    chunk000000/time.npy     float64  (little-endian, 1-D)  one per operation
    chunk000000/op.npy       uint8                          the OP_* codes
    chunk000000/handle.npy   int32    handle number or -1
    chunk000000/owner.npy    int32    owner number or -1
    chunk000000/device.npy   int32    device index or -1
    chunk000001/...                   the next chunk (any number, numbered from 0)
    handles.txt, owners.txt           the names, UTF-8, one a line by number
                                      (absent when the names are numbered)
    header.json                       written last

``header.json``: ``{"format": "pasid-trace-npz", "version": 1, "bits": 20,
"grace": 0.5, "comment": null, "devices": [[name, bits, drain], ...],
"declared": 2, "chunks": [ops of chunk 0, ...], "handles": {"count": N,
"numbered": "h"}, "owners": {"count": M, "numbered": null}}`` (``numbered``:
the prefix when the names are the prefix and the number, else null and the
names are in the ``.txt`` member). ``declared``: how many of ``devices``
are declared, the first ones; an operation may name only those (files of
earlier versions of this writer may list more, which their operations then
may not use).
Operations of a binary trace have no lines: an error names an operation by
its index (``operation 12: ...``).

Loading checks the file as a snapshot is checked: the format and version,
every member present, every column of the right dtype and shape and each
chunk's columns of one length, the codes in range, handles numbered in
allocation order and used only once allocated, owners numbered in order of
first appearance, devices declared, the names as many as the numbers;
anything else is a :class:`~pasid.sim.trace.TraceError` saying what, never a
crash. The history is then the checker's, as for text.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from pasid.sim import _textread_py
from pasid.sim.chunk import Chunk, Numbered, StreamHeader
from pasid.sim._tracerules import (
    MAGIC, OP_ACCESS, OP_ADVANCE, OP_ALLOC, OP_BIND, OP_EXIT, OP_GET, OP_PUT, OP_UNBIND,
    VERSION, Device, TraceError, _number, unknown_device,
)

# the .npy format's reader and writer (numpy 1.24's stubs leave them untyped)
_npy_format: Any = np.lib.format

_compiled: Any
if os.environ.get("PASID_NO_EXTENSION") == "1":
    _compiled = None
else:
    try:
        from pasid.sim import _textread as _compiled
    except ImportError:  # pragma: no cover - a pure install
        _compiled = None

__all__ = ["BINARY_FORMAT", "BINARY_SUFFIXES", "BINARY_VERSION", "CHUNK", "TraceWriter",
           "open_trace", "recorded", "write_trace"]

CHUNK = 1 << 18             # operations a chunk, by default
BLOCK = 1 << 22             # bytes of a text file parsed at a time
BINARY_FORMAT = "pasid-trace-npz"
BINARY_VERSION = 1
BINARY_SUFFIXES = (".npz",)
COLUMNS = ("time", "op", "handle", "owner", "device")
DTYPES: dict[str, np.dtype[Any]] = {"time": np.dtype("<f8"), "op": np.dtype("u1"), "handle": np.dtype("<i4"),
          "owner": np.dtype("<i4"), "device": np.dtype("<i4")}
_CHUNK_MEMBER = re.compile(r"chunk([0-9]{6,})/([a-z]+)\.npy")

# time, op, handle, owner, device, lines (None for a binary trace: its operations have none)
Columns = tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any],
                npt.NDArray[Any], npt.NDArray[Any] | None]


def text_parser() -> type:
    """The text parser class :func:`open_trace` uses for files: the compiled one when built."""
    return _compiled.TextParser if _compiled is not None else _textread_py.TextParser


def _is_binary_path(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).lower().endswith(BINARY_SUFFIXES)


# ---------------------------------------------------------------- reading

def open_trace(source: str | os.PathLike[str] | IO[Any] | Iterable[str], *, chunk: int = CHUNK,
               name: str | None = None) -> tuple[StreamHeader, Iterator[Chunk]]:
    """The trace in ``source`` as a header and its operations ``chunk`` at a time.

    ``source``: a path (``.npz``: the binary format, else text), a binary file
    object (text), a text file object or an iterable of lines (text, read by
    the Python parser). ``name``: the source in error messages (default the
    path, the file's name, or ``trace``). The header is read here (its errors
    raised here); the rest as the iterator is walked: every chunk but the last
    has ``chunk`` operations, and a trace without operations gives one empty
    chunk. A file opened here is closed when the iterator ends or is dropped.
    O(operations) in all; memory O(chunk + block) plus the names.
    """
    if isinstance(source, (str, os.PathLike)):
        from pasid.sim.vmtrace import trace_version

        if trace_version(source) == 2:
            raise TraceError(f"{name or os.fspath(source)}: a VM trace (pasid-trace 2) has no "
                             "chunks of handles: read it with pasid.sim.trace.read_trace")
    stream = _open(source, chunk, name)
    return stream.header, stream.chunks()


class _Stream:
    """An open trace: its parser (or binary reader), the header, and the chunks to come."""

    header: StreamHeader
    handle_names: Any
    owner_names: Any

    def chunks(self) -> Iterator[Chunk]:
        raise NotImplementedError


def _open(source: Any, chunk: int, name: str | None) -> _Stream:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    if isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        if _is_binary_path(source):
            return _BinaryStream(source, chunk, label)
        file = open(source, "rb")
        try:
            return _TextStream(text_parser()(label), _byte_blocks(file), chunk, file)
        except BaseException:
            file.close()
            raise
    label = name or getattr(source, "name", None) or "trace"
    if not isinstance(label, str):
        label = str(label)
    if isinstance(source, (io.RawIOBase, io.BufferedIOBase)):
        return _TextStream(text_parser()(label), _byte_blocks(source), chunk, None)
    parser = _textread_py.TextParser(label)
    return _TextStream(parser, _line_batches(source), chunk, None)


def _byte_blocks(file: IO[bytes] | io.RawIOBase | io.BufferedIOBase) -> Iterator[bytes]:
    """The file's bytes in blocks of whole lines (split after the last ``\\n``)."""
    rest = b""
    while True:
        data = file.read(BLOCK)
        if not data:
            if rest:
                yield rest
            return
        data = rest + data if rest else data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data             # no line end yet: read on
            continue
        rest = data[cut:]
        yield data[:cut]


def _line_batches(lines: Iterable[str]) -> Iterator[list[str]]:
    it = iter(lines)
    while True:
        batch = list(itertools.islice(it, 1 << 16))
        if not batch:
            return
        yield batch


class _TextStream(_Stream):
    def __init__(self, parser: Any, blocks: Iterator[Any], chunk: int, file: IO[bytes] | None):
        self.parser = parser
        self.blocks = blocks
        self.size = chunk
        self.file = file
        self.pending: deque[Columns] = deque()
        self.done = False
        # the header: up to the first operation, or the end
        while parser.header_open:
            if not self._more():
                break
        self.header = StreamHeader(bits=parser.bits, grace=parser.grace, source=parser.source,
                                   handle_name=parser.handle_name, owner_name=parser.owner_name,
                                   comment=parser.comment)
        self.declared = parser.declared

    def _more(self) -> bool:
        """Parse one more block; False at the end of the trace."""
        try:
            block = next(self.blocks)
        except StopIteration:
            self.done = True
            self.parser.finish()
            self._close()
            return False
        except BaseException:
            self._close()
            raise
        try:
            if isinstance(block, list):
                columns = self.parser.feed_lines(block)
            else:
                columns = self.parser.feed(block)
        except BaseException:
            self._close()
            raise
        if len(columns[0]):
            self.pending.append(columns)
        return True

    def _close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def chunks(self) -> Iterator[Chunk]:
        try:
            pieces = self._pieces()
            yield from _rechunk(pieces, self.size, self.declared, self.parser.devices)
        finally:
            self._close()

    def _pieces(self) -> Iterator[Columns]:
        while True:
            while self.pending:
                yield self.pending.popleft()
            if self.done or not self._more():
                return

    @property
    def handle_names(self) -> Any:
        return self.parser.handle_names()

    @property
    def owner_names(self) -> Any:
        return self.parser.owner_names()


def _rechunk(pieces: Iterable[Columns], size: int, declared: int,
             devices: Sequence[Device]) -> Iterator[Chunk]:
    """Runs of columns cut and joined into chunks of ``size`` operations, numbered: the
    handles and owners named so far (the running maximum), the devices declared or used."""
    queue: deque[Columns] = deque()
    queued = 0
    start = handles = owners = 0
    ndev = declared
    emitted = False
    it = iter(pieces)
    exhausted = False
    while True:
        while not exhausted and queued < size:
            piece = next(it, None)
            if piece is None:
                exhausted = True
            else:
                queue.append(piece)
                queued += len(piece[0])
        if queued == 0:
            if not emitted:
                yield Chunk(time=np.empty(0, np.float64), op=np.empty(0, np.uint8),
                            handle=np.empty(0, np.int32), owner=np.empty(0, np.int32),
                            device=np.empty(0, np.int32), lines=None, start=0,
                            handles=0, owners=0, devices=tuple(devices[:ndev]))
            return
        take = min(size, queued)
        columns = _take(queue, take)
        queued -= take
        if take:
            handles = max(handles, int(columns[2].max()) + 1)
            owners = max(owners, int(columns[3].max()) + 1)
            ndev = max(ndev, int(columns[4].max()) + 1)
        yield Chunk(time=columns[0], op=columns[1], handle=columns[2], owner=columns[3],
                    device=columns[4], lines=columns[5], start=start, handles=handles,
                    owners=owners, devices=tuple(devices[:ndev]))
        emitted = True
        start += take


def _take(queue: deque[Columns], n: int) -> Columns:
    """The first ``n`` operations of the queued runs (removed from it)."""
    parts: list[Columns] = []
    need = n
    while need:
        piece = queue[0]
        k = len(piece[0])
        if k <= need:
            parts.append(piece)
            queue.popleft()
            need -= k
        else:
            parts.append(_cut(piece, slice(None, need)))
            queue[0] = _cut(piece, slice(need, None))
            need = 0
    if len(parts) == 1:
        return parts[0]
    time, op, handle, owner, device = (np.concatenate([p[i] for p in parts]) for i in range(5))
    # the runs of one stream all have lines (text) or none have (binary)
    lines = None if parts[0][5] is None else np.concatenate([p[5] for p in parts
                                                             if p[5] is not None])
    return time, op, handle, owner, device, lines


def _cut(piece: Columns, part: slice) -> Columns:
    """The operations ``part`` of a run of columns."""
    time, op, handle, owner, device, lines = piece
    return (time[part], op[part], handle[part], owner[part], device[part],
            None if lines is None else lines[part])


# ---------------------------------------------------------------- writing

def write_trace(target: str | os.PathLike[str] | IO[Any], header: StreamHeader,
                chunks: Iterable[Chunk], devices: Sequence[Device] | None = None) -> None:
    """Write a trace from its header and chunks: binary to a ``.npz`` path, else text
    (to a path, or a file object: text or binary).

    ``devices``: the devices to declare up front (default: the first chunk's);
    devices that appear later follow the rule in the module docstring
    (ValueError otherwise). A comment (``header.comment``) is written as ``#``
    lines after the first line (line breaks as ``\\n``). O(operations), a chunk
    at a time (:class:`TraceWriter`).
    """
    with TraceWriter(target, header, devices) as writer:
        for c in chunks:
            writer.write(c)


def recorded(target: str | os.PathLike[str], header: StreamHeader,
             chunks: Iterable[Chunk]) -> Iterator[Chunk]:
    """``chunks``, passed on as they come, each written to ``target`` as it passes
    (``pasid simulate --record``: the trace is written while it is replayed, never
    whole in memory). The file is complete once the chunks are; if they stop with an
    error, the partial file is removed."""
    writer = TraceWriter(target, header)
    try:
        for c in chunks:
            writer.write(c)
            yield c
    except BaseException:
        writer.abandon()
        raise
    writer.close()


class TraceWriter:
    """A trace written a chunk at a time: ``write(chunk)`` for each, in order, then
    ``close()`` (or use it as a context manager). Binary to a ``.npz`` path, else
    text; see :func:`write_trace`. Nothing is written before the first chunk or
    ``close()`` (the declared devices are the first chunk's, unless given)."""

    def __init__(self, target: str | os.PathLike[str] | IO[Any], header: StreamHeader,
                 devices: Sequence[Device] | None = None) -> None:
        self.header = header
        self.devices = devices
        self.known: _Devices | None = None
        self.handles, self.owners = _Names(header.handle_name), _Names(header.owner_name)
        self.path: str | os.PathLike[str] | None = None
        self.out: IO[Any] | None = None
        self.zip: zipfile.ZipFile | None = None
        self.owned = False
        if isinstance(target, (str, os.PathLike)):
            self.path = target
            self.binary_format = _is_binary_path(target)
            if self.binary_format:
                self.zip = zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED,
                                           allowZip64=True)
            else:
                self.out = open(target, "wb")
                self.owned = True
            self.binary = True
        else:
            self.binary_format = False
            self.out = target
            self.binary = isinstance(target, (io.RawIOBase, io.BufferedIOBase))
        # the binary form's books
        self.sizes: list[int] = []
        self.nhandles = self.nowners = 0
        # the text form's
        self.device_names: list[str] = []
        self.format_ops = (_compiled.format_ops if _compiled is not None
                           else _textread_py.format_ops)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()

    def _start(self, first: Chunk | None) -> _Devices:
        known = _Devices(self.devices if self.devices is not None
                         else first.devices if first is not None else ())
        if not self.binary_format:
            header = self.header
            head = [f"{MAGIC} {VERSION}\n", _comment_lines(header.comment),
                    f"bits {header.bits}\n", f"grace {_number(header.grace)}\n"]
            head += [f"device {d.name} bits={d.bits} drain={_number(d.drain)}\n"
                     for d in known.devices]
            self._put("".join(head))
        self.known = known
        return known

    def _put(self, text: str | bytes) -> None:
        assert self.out is not None
        if self.binary:
            self.out.write(text.encode("utf-8") if isinstance(text, str) else text)
        else:
            self.out.write(text if isinstance(text, str) else text.decode("utf-8"))

    def write(self, c: Chunk) -> None:
        """The next chunk. ValueError for a device the rule does not allow."""
        known = self.known if self.known is not None else self._start(c)
        if not self.binary_format:
            known.admit(c, text=True)
            self.device_names.extend(d.name for d in known.devices[len(self.device_names):])
            self._put(self.format_ops(c.time, c.op, c.handle, c.owner, c.device,
                                      self.handles.numbered_or_upto(c.handles),
                                      self.owners.numbered_or_upto(c.owners),
                                      self.device_names))
            return
        known.admit(c, text=False)
        if not len(c.op):
            return
        assert self.zip is not None
        for column in COLUMNS:
            array = np.ascontiguousarray(getattr(c, column), dtype=DTYPES[column])
            with self.zip.open(f"chunk{len(self.sizes):06d}/{column}.npy", "w",
                               force_zip64=array.nbytes > 1 << 30) as member:
                _npy_format.write_array(member, array, allow_pickle=False)
        self.sizes.append(len(c.op))
        self.nhandles, self.nowners = max(self.nhandles, c.handles), max(self.nowners, c.owners)

    def close(self) -> None:
        """The end of the trace: the binary form's header written, the file closed."""
        known = self.known if self.known is not None else self._start(None)
        if self.zip is not None:
            header = self.header
            meta = {"format": BINARY_FORMAT, "version": BINARY_VERSION, "bits": header.bits,
                    "grace": header.grace, "comment": header.comment,
                    "devices": [[d.name, d.bits, d.drain] for d in known.devices],
                    "declared": len(known.devices), "chunks": self.sizes}
            for key, names, count, prefix in (("handles", self.handles, self.nhandles, "h"),
                                              ("owners", self.owners, self.nowners, "p")):
                numbered = names.prefix
                if numbered is None:
                    listed = names.upto(count)[:count]
                    if listed == [f"{prefix}{i}" for i in range(count)]:
                        numbered = prefix
                    else:
                        self.zip.writestr(f"{key}.txt", "".join(f"{n}\n" for n in listed))
                meta[key] = {"count": count, "numbered": numbered}
            self.zip.writestr("header.json", json.dumps(meta, indent=1))
            self.zip.close()
            self.zip = None
        elif self.owned and self.out is not None:
            self.out.close()
            self.out = None

    def abandon(self) -> None:
        """Stop without finishing: a file this writer opened is closed and removed."""
        if self.zip is not None:
            self.zip.close()
            self.zip = None
        elif self.owned and self.out is not None:
            self.out.close()
            self.out = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.remove(self.path)


class _Names:
    """Names by number from a header's ``*_name`` callable, kept as a list (or the
    caller's list itself, when the callable is a list's ``__getitem__``)."""

    def __init__(self, lookup: Any) -> None:
        owner = getattr(lookup, "__self__", None)
        self.names: list[str]
        if isinstance(owner, list) and getattr(lookup, "__name__", "") == "__getitem__":
            self.fixed = True
            self.names = owner
        else:
            self.fixed = False
            self.names = []
        self.prefix = lookup.prefix if isinstance(lookup, Numbered) else None
        self.lookup = lookup

    def numbered_or_upto(self, count: int) -> list[str] | str:
        """The prefix of numbered names (no list of them kept), else :meth:`upto`."""
        return self.prefix if self.prefix is not None else self.upto(count)

    def upto(self, count: int) -> list[str]:
        if not self.fixed and len(self.names) < count:
            self.names.extend(self.lookup(i) for i in range(len(self.names), count))
        return self.names


class _Devices:
    """The devices a writer declares, and the rule for those a later chunk lists."""

    def __init__(self, declared: Sequence[Device]) -> None:
        self.devices = list(declared)

    def admit(self, chunk: Chunk, *, text: bool) -> None:
        """Check ``chunk``'s devices against the rule (ValueError), then know them: a
        binary trace declares every device listed (its header is written last); a text
        trace's header is written, so an operation naming a device it does not declare
        is refused."""
        have = len(self.devices)
        listed = chunk.devices
        for i in range(min(have, len(listed))):
            if listed[i] != self.devices[i]:
                raise ValueError(f"device {i} changed between chunks: {self.devices[i]} "
                                 f"then {listed[i]}")
        top = int(chunk.device.max()) if len(chunk.op) else -1
        if top >= len(listed):
            raise ValueError(f"device number {top} out of range (the chunk lists "
                             f"{len(listed)} devices)")
        if not text:
            self.devices.extend(listed[have:])
        elif top >= have:
            d = listed[int(chunk.device[np.argmax(chunk.device >= have)])]
            raise ValueError(f"device {d.name!r} first appears after the first chunk, and a "
                             "text trace declares its devices in its header: declare the "
                             "devices up front (devices=...)")


def _comment_lines(comment: str | None) -> str:
    if comment is None:
        return ""
    return "".join(f"# {line}\n" for line in re.split("\r\n|\r|\n", comment))


# ---------------------------------------------------------------- binary reading

class _BinaryStream(_Stream):
    def __init__(self, path: str | os.PathLike[str], chunk: int, source: str) -> None:
        self.source = source
        self.size = chunk

        def bad(message: str) -> TraceError:
            return TraceError(f"{source}: not a valid binary trace: {message}")
        self.bad = bad
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as error:
            raise bad(f"not a readable zip file ({error})") from None
        try:
            self._read_header()
        except BaseException:
            self.zf.close()
            raise

    def _member(self, name: str) -> bytes:
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise self.bad(f"member {name} missing") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise self.bad(f"member {name} is compressed (members are stored)")
        try:
            return self.zf.read(info)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
            raise self.bad(f"member {name} unreadable ({error})") from None

    def _read_header(self) -> None:
        bad = self.bad
        try:
            meta = json.loads(self._member("header.json").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise bad(f"header.json is not JSON ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != BINARY_FORMAT:
            raise bad(f"header.json does not name the format {BINARY_FORMAT!r}")
        if meta.get("version") != BINARY_VERSION:
            raise bad(f"unknown version {meta.get('version')!r} (this reader knows "
                      f"{BINARY_VERSION})")
        from pasid._args import as_bits, as_drain, as_grace

        def field(key: str, kinds: Any, what: str) -> Any:
            value = meta.get(key)
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise bad(f"header.json: {key} must be {what}, got {value!r}")
            return value
        try:
            bits = as_bits(field("bits", int, "an int"))
            grace = as_grace(float(field("grace", (int, float), "a number")))
            devices = []
            for entry in field("devices", list, "a list"):
                if (not isinstance(entry, list) or len(entry) != 3
                        or not isinstance(entry[0], str) or isinstance(entry[1], bool)
                        or not isinstance(entry[1], int)
                        or not isinstance(entry[2], (int, float))
                        or isinstance(entry[2], bool)):
                    raise ValueError(f"device entries are [name, bits, drain], got {entry!r}")
                devices.append(Device(entry[0], as_bits(entry[1], "device bits"),
                                      as_drain(float(entry[2]))))
        except (TypeError, ValueError) as error:
            raise bad(f"header.json: {error}") from None
        names = [d.name for d in devices]
        if len(set(names)) != len(names):
            raise bad("header.json: a device is listed twice")
        declared = field("declared", int, "an int")
        if not 0 <= declared <= len(devices):
            raise bad(f"header.json: declared must be in 0..{len(devices)}, got {declared}")
        comment = meta.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise bad("header.json: comment must be a string or null")
        sizes = field("chunks", list, "a list")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise bad("header.json: chunks must be a list of ints >= 1")
        found: dict[int, set[str]] = {}
        for info in self.zf.infolist():
            match = _CHUNK_MEMBER.fullmatch(info.filename)
            if match:
                found.setdefault(int(match.group(1)), set()).add(match.group(2))
        if sorted(found) != list(range(len(sizes))):
            raise bad(f"the chunk members do not match header.json's {len(sizes)} chunks")
        self.devices, self.declared, self.sizes = devices, declared, sizes
        self.counts = {}
        self.lookups = {}
        for key in ("handles", "owners"):
            entry = meta.get(key)
            if not isinstance(entry, dict):
                raise bad(f"header.json: {key} must be an object")
            count, prefix = entry.get("count"), entry.get("numbered")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise bad(f"header.json: {key} count must be an int >= 0, got {count!r}")
            if prefix is not None:
                if not isinstance(prefix, str):
                    raise bad(f"header.json: {key} numbered must be a string or null")
                lookup: Any = Numbered(prefix)
            else:
                try:
                    listed = self._member(f"{key}.txt").decode("utf-8").split("\n")
                except UnicodeDecodeError:
                    raise bad(f"{key}.txt is not UTF-8") from None
                if listed[-1] != "" or len(listed) - 1 != count:
                    raise bad(f"{key}.txt names {len(listed) - 1} {key}, header.json {count}")
                listed.pop()
                lookup = listed
            self.counts[key] = count
            self.lookups[key] = lookup
        self.header = StreamHeader(
            bits=bits, grace=grace, source=self.source,
            handle_name=_lookup(self.lookups["handles"]),
            owner_name=_lookup(self.lookups["owners"]), comment=comment)

    @property
    def handle_names(self) -> Any:
        return _listed(self.lookups["handles"], self.counts["handles"])

    @property
    def owner_names(self) -> Any:
        return _listed(self.lookups["owners"], self.counts["owners"])

    def _column(self, k: int, column: str, size: int) -> npt.NDArray[Any]:
        name = f"chunk{k:06d}/{column}.npy"
        data = self._member(name)
        stream = io.BytesIO(data)
        try:
            major, minor = _npy_format.read_magic(stream)
            if (major, minor) == (1, 0):
                shape, fortran, dtype = _npy_format.read_array_header_1_0(stream)
            elif (major, minor) == (2, 0):
                shape, fortran, dtype = _npy_format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"npy version {major}.{minor}")
        except ValueError as error:
            raise self.bad(f"{name}: not an npy array ({error})") from None
        if dtype != DTYPES[column] or dtype.hasobject:
            raise self.bad(f"{name}: dtype {dtype.str}, expected {DTYPES[column].str}")
        if shape != (size,) or fortran:
            raise self.bad(f"{name}: shape {shape}, expected ({size},) as header.json says")
        offset = stream.tell()
        if len(data) - offset != size * dtype.itemsize:
            raise self.bad(f"{name}: {len(data) - offset} bytes of data for {size} values")
        return np.frombuffer(data, dtype=dtype, count=size, offset=offset)

    def _pieces(self) -> Iterator[Columns]:
        bad = self.bad
        handles = 0
        owners = 0
        start = 0
        for k, size in enumerate(self.sizes):
            time, op, handle, owner, device = (self._column(k, c, size) for c in COLUMNS)
            where = f"chunk {k}"

            def first(mask: npt.NDArray[np.bool_], message: str) -> None:
                if mask.any():
                    i = int(np.argmax(mask))
                    raise bad(f"{where}: operation {start + i}: {message}")
            first(op > OP_ADVANCE, "unknown operation code")
            alloc = op == OP_ALLOC
            with_handle = (op == OP_GET) | (op == OP_PUT) | (op == OP_BIND) | (op == OP_UNBIND) \
                | (op == OP_ACCESS)
            with_device = (op == OP_BIND) | (op == OP_UNBIND) | (op == OP_ACCESS)
            named = handles + np.cumsum(alloc, dtype=np.int64)     # handles named, with this op
            first(alloc & (handle != named - 1), "handles are not numbered in allocation order")
            first(with_handle & ((handle < 0) | (handle >= named)),
                  "handle number not yet allocated")
            first(~alloc & ~with_handle & (handle != -1), "a handle where the operation has none")
            first((op == OP_EXIT) & (owner < 0), "exit without an owner")
            first(~alloc & (op != OP_EXIT) & (owner != -1), "an owner where the operation has none")
            seen = _seen_before(owner, owners - 1)
            first(owner > seen + 1, "owners are not numbered in order of first appearance")
            first(with_device & (device < 0), "the operation needs a device")
            first(~alloc & ~with_device & (device != -1), "a device where the operation has none")
            first(device >= len(self.devices), "device number out of range")
            undeclared = device >= self.declared
            if undeclared.any():
                i = int(np.argmax(undeclared))
                raise TraceError(f"{self.source}: operation {start + i}: " + unknown_device(
                    self.devices[int(device[i])].name, self.devices[:self.declared]))
            handles = int(named[-1])
            owners = max(owners, int(owner.max()) + 1)
            start += size
            yield (time, op, handle, owner, device, None)
        if handles != self.counts["handles"] or owners != self.counts["owners"]:
            raise bad(f"header.json counts {self.counts['handles']} handles and "
                      f"{self.counts['owners']} owners, the operations {handles} and {owners}")

    def chunks(self) -> Iterator[Chunk]:
        try:
            yield from _rechunk(self._pieces(), self.size, self.declared, self.devices)
        finally:
            self.zf.close()


def _seen_before(column: npt.NDArray[np.int32], before: int) -> npt.NDArray[np.int64]:
    """Per entry: the greatest number in ``column`` before it, or ``before``."""
    most = np.maximum.accumulate(column.astype(np.int64))
    return np.concatenate(([before], np.maximum(most[:-1], before)))


def _lookup(names: Any) -> Any:
    return names if isinstance(names, Numbered) else names.__getitem__


def _listed(names: Any, count: int) -> list[str]:
    return [names(i) for i in range(count)] if isinstance(names, Numbered) else names


# ---------------------------------------------------------------- whole traces

def read_whole(source: Any, name: str | None = None,
               ) -> tuple[StreamHeader, Chunk, list[str], list[str]]:
    """The trace in ``source`` whole and unchecked: its header, its operations as one
    chunk, and its owner and handle names (what :func:`pasid.sim.trace.read_trace`
    makes a :class:`~pasid.sim.trace.Trace` of, and checks)."""
    from pasid.sim.chunk import concatenate

    stream = _open(source, 1 << 62, name)
    whole = concatenate(stream.chunks())
    assert whole is not None        # a trace gives one chunk at least
    return stream.header, whole, list(stream.owner_names), list(stream.handle_names)
