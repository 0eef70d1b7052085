"""Trace files a chunk at a time (pasid.sim.traceio): both text parsers, the binary form.

Every text test runs on both parsers, the compiled (``pasid.sim._textread``)
and the pure (``pasid.sim._textread_py``), and checks which one ran: the
compiled one must not fall back silently. Under ``PASID_NO_EXTENSION=1`` the
compiled runs are skipped.
"""

import io
import json
import os
import re
import zipfile

import numpy as np
import pytest

from pasid.sim import _textread_py, traceio
from pasid.sim.chunk import concatenate
from pasid.sim.trace import TraceBuilder, TraceError, read_trace
from pasid.sim.workload import generate, preset

from test_replay import BAD_LINES

MAGIC = "pasid-trace 1"
COLUMNS = ("time", "op", "handle", "owner", "device")


def compiled_parser():
    if os.environ.get("PASID_NO_EXTENSION") == "1":
        pytest.skip("PASID_NO_EXTENSION=1: the pure parser only")
    from pasid.sim import _textread
    return _textread.TextParser


@pytest.fixture(params=["compiled", "python"])
def parser(request, monkeypatch):
    """The text parser class open_trace uses for files, forced to one twin."""
    cls = compiled_parser() if request.param == "compiled" else _textread_py.TextParser
    monkeypatch.setattr(traceio, "text_parser", lambda: cls)
    return cls


def open_with(cls, path, chunk=traceio.CHUNK):
    """open_trace's stream on ``path``, asserting that ``cls`` parses it."""
    file = open(path, "rb")
    stream = traceio._TextStream(cls(str(path)), traceio._byte_blocks(file), chunk, file)
    assert type(stream.parser) is cls
    return stream


def chunks_of(cls, path, chunk):
    stream = open_with(cls, path, chunk)
    return stream.header, list(stream.chunks())


def same_chunks(a, b, lines=True):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for column in COLUMNS + (("lines",) if lines else ()):
            assert np.array_equal(getattr(x, column), getattr(y, column)), column
            if column == "time":        # the same bits: -0.0 stays -0.0
                assert getattr(x, column).tobytes() == getattr(y, column).tobytes()
        assert (x.start, x.handles, x.owners, x.devices) == (y.start, y.handles, y.owners,
                                                              y.devices)


def test_the_default_parser_is_the_compiled_one():
    cls = compiled_parser()
    assert traceio.text_parser() is cls


TRACES = {
    "default": lambda: generate(preset("default", duration=3000), 0),
    "exhaustion": lambda: generate(preset("exhaustion", duration=2000), 1),
    "vm-churn": lambda: generate(preset("vm-churn", duration=2000), 2),
}


@pytest.fixture(scope="module", params=sorted(TRACES))
def generated(request):
    return TRACES[request.param]()


def same_trace(a, b):
    for column in COLUMNS:
        assert np.array_equal(getattr(a, column), getattr(b, column)), column
    assert (a.bits, a.grace, a.devices, a.handles, a.owners, a.comment) == (
        b.bits, b.grace, b.devices, b.handles, b.owners, b.comment)


def test_text_round_trip(parser, generated, tmp_path):
    path = tmp_path / "t.trace"
    generated.write(path)
    again = read_trace(path)
    same_trace(again, generated)
    assert again.to_text() == generated.to_text() == path.read_text(encoding="utf-8")


def test_binary_round_trip(generated, tmp_path):
    path = tmp_path / "t.npz"
    generated.write(path)
    same_trace(read_trace(path), generated)
    meta = json.loads(zipfile.ZipFile(path).read("header.json"))
    assert (meta["format"], meta["version"]) == ("pasid-trace-npz", 1)
    assert meta["handles"]["numbered"] == "h"       # no list of names for h0, h1, ...


@pytest.mark.parametrize("chunk", [1, 7, 1 << 40])
def test_text_and_binary_give_the_same_chunks(parser, generated, tmp_path, chunk):
    generated.write(tmp_path / "t.trace")
    generated.write(tmp_path / "t.npz")
    header, text = chunks_of(parser, tmp_path / "t.trace", chunk)
    binary_header, binary = traceio.open_trace(tmp_path / "t.npz", chunk=chunk)
    same_chunks(text, list(binary), lines=False)
    assert (header.bits, header.grace) == (binary_header.bits, binary_header.grace)
    assert all(c.lines is not None for c in text)
    n = len(generated)
    assert [len(c) for c in text] == [min(chunk, n - s) for s in range(0, n, chunk)]


def test_the_twins_give_the_same_chunks_at_any_chunk_size(generated, tmp_path):
    path = tmp_path / "t.trace"
    generated.write(path)
    whole = chunks_of(_textread_py.TextParser, path, 1 << 40)[1]
    for chunk in (1, 7, 1000):
        python = chunks_of(_textread_py.TextParser, path, chunk)[1]
        same_chunks([concatenate(python)], whole)
        if os.environ.get("PASID_NO_EXTENSION") != "1":
            same_chunks(chunks_of(compiled_parser(), path, chunk)[1], python)


def test_small_blocks_give_the_same_chunks(parser, generated, tmp_path, monkeypatch):
    path = tmp_path / "t.trace"
    generated.write(path)
    whole = chunks_of(parser, path, 100)[1]
    monkeypatch.setattr(traceio, "BLOCK", 13)      # lines cut across blocks
    same_chunks(chunks_of(parser, path, 100)[1], whole)


# ---------------------------------------------------------------- errors

BAD_TEXT = [case.values if hasattr(case, "values") else case for case in BAD_LINES] + [
    ("pasid-trace 1\n0 alloc h0 p1 nic\n", 2, "unknown device 'nic'"),
    ("pasid-trace 1\n0 alloc\n", 2, "expected 'TIME alloc HANDLE"),
    ("pasid-trace 1\n0 alloc h0 a b c\n", 2, "expected 'TIME alloc HANDLE"),
    ("pasid-trace 1\n0 alloc h0 a b c d e\n", 2, "expected 'TIME alloc HANDLE"),
    ("pasid-trace 1\n0 alloc h0\n0 get\n", 3, "expected 'TIME get HANDLE'"),
    ("pasid-trace 1\n0 alloc h0\n0 bind h0\n", 3, "expected 'TIME bind HANDLE DEVICE'"),
    ("pasid-trace 1\n0 exit -\n", 2, "expected 'TIME exit OWNER'"),
    ("pasid-trace 1\n0 advance now\n", 2, "expected 'TIME advance'"),
    ("pasid-trace 1\n0\n", 2, "expected 'TIME OP"),
    ("pasid-trace 1\n. alloc h0\n", 2, "time must be a decimal number, got '.'"),
    ("pasid-trace 1\n1e alloc h0\n", 2, "time must be a decimal number, got '1e'"),
    ("pasid-trace 1\n1e400 alloc h0\n", 2, "time must be finite and within"),
    ("pasid-trace 1\n" + "1" * 400 + " alloc h0\n", 2, "time must be finite and within"),
    ("pasid-trace 1\ndevice gpu\x00\n0 alloc h0\n0 bind h0 gpu\x00\n", None, None),  # a NUL
    ("pasid-trace 1\ndevice gpu\n0 alloc h0\n0 bind h0 gpu\x00\n", 4,      # is a name's
     "unknown device 'gpu.x00': the header declares gpu"),
    ("pasid-trace 1\n0 alloc h\u00e9\n1 put h\u00e9\n1 put h\u00e9\n", 4, "released"),
    ("pasid-trace 1\n0 alloc h0\u3000p1\n1 exit p1\n1 put h0\n", 4, "released"),
    ("pasid-trace 1\r0 alloc h0\r\n1 put h1\n", 3, "unknown handle 'h1'"),
    ("pasid-trace 1\n0 alloc h0\x0bp1\x0c\n1 exit p1 p2\n", 3, "expected 'TIME exit OWNER'"),
    ("pasid-trace 1\n# c\n", None, None),
    ("", None, "empty trace"),
    ("# only a comment\n", None, "empty trace"),
]


def error_of(parser, data, tmp_path, chunk):
    """The first error reading ``data`` as a file with ``parser`` (message, line), or None."""
    path = tmp_path / "bad.trace"
    path.write_bytes(data)
    try:
        stream = traceio._open(path, chunk, "t")
        assert type(stream.parser) is parser
        for _ in stream.chunks():
            pass
        read_trace(path, name="t")      # and the checker's errors
    except TraceError as error:
        return str(error), error.line
    return None, None


@pytest.mark.parametrize("text, line, message", BAD_TEXT)
def test_bad_lines_are_named_alike_by_both_parsers(parser, tmp_path, text, line, message):
    data = text.encode("utf-8")
    first, where = error_of(parser, data, tmp_path, 1 << 40)
    if message is None:
        assert first is None
        return
    assert first is not None and re.search(message, first)
    assert where == line
    if line is not None:
        assert first.startswith(f"t:{line}: ")
    for chunk in (1, 7):        # the same first error at any chunk size
        assert error_of(parser, data, tmp_path, chunk) == (first, where)


@pytest.mark.parametrize("data, line", [
    (b"pasid-trace 1\n0 alloc h\xff\n", 2),
    (b"pasid-trace 1\n0 alloc h0\n0 put h0 # \xc3\n", 3),
    (b"pasid-trace 1\n\xe2\x80\n", 2),
])
def test_text_that_is_not_utf8_is_named(parser, tmp_path, data, line):
    message, where = error_of(parser, data, tmp_path, 1 << 40)
    assert where == line and "not UTF-8 text" in message


def test_a_bom_only_at_the_start_is_skipped(parser, tmp_path):
    path = tmp_path / "bom.trace"
    path.write_bytes(b"\xef\xbb\xbfpasid-trace 1\n0 alloc h0\n")
    assert len(read_trace(path)) == 1
    path.write_bytes(b"pasid-trace 1\n\xef\xbb\xbf0 alloc h0\n")
    with pytest.raises(TraceError, match="time must be a decimal number"):
        read_trace(path)


def test_an_undeclared_device_is_named_with_the_declared_ones(parser, tmp_path):
    # issue 20: a typo of a device name is an error at its line, not a new device
    text = (f"{MAGIC}\n# a note\ndevice gpu1 bits=8\ndevice nic\n0 alloc h0 p0 gpu1\n"
            "1 bind h0 gpu1\n2 alloc h1 p1\n3 bind h1 gpu11\n")
    path = tmp_path / "t.trace"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TraceError) as caught:
        chunks_of(parser, path, 2)
    assert str(caught.value) == (f"{path}:8: unknown device 'gpu11': the header declares "
                                 "gpu1, nic")
    assert caught.value.line == 8


def test_a_binary_trace_names_an_undeclared_device_by_operation(tmp_path):
    # a .npz of an earlier writer could list devices it did not declare (header.json's
    # "declared"); an operation naming one is refused with the file and its index
    b = TraceBuilder()
    b.device("gpu1")
    h = b.alloc(0.0, owner="p")
    b.bind(1.0, h, "gpu1")
    b.bind(2.0, h, "gpu11")             # the Python API declares it at its first bind
    path = tmp_path / "t.npz"
    b.build().write(path)
    assert read_trace(path).devices[1].name == "gpu11"       # this writer declares both
    rewrite(path, tmp_path / "old.npz", with_header(lambda meta: meta.update(declared=1)))
    with pytest.raises(TraceError) as caught:
        read_trace(tmp_path / "old.npz")
    assert str(caught.value) == (f"{tmp_path / 'old.npz'}: operation 2: unknown device "
                                 "'gpu11': the header declares gpu1")


def test_writers_declare_every_device_they_write(parser, tmp_path):
    # a chunk after the first may list a device the first did not: the binary form
    # declares it (its header is written last), the text form cannot and refuses
    text = f"{MAGIC}\ndevice gpu bits=8\n0 alloc h0 p0 gpu\n1 alloc h1 p1\n2 put h1\n"
    path = tmp_path / "t.trace"
    path.write_text(text, encoding="utf-8")
    header, chunks = chunks_of(parser, path, 2)
    assert header.comment is None and [[d.name for d in c.devices] for c in chunks] == [
        ["gpu"], ["gpu"]]
    late = traceio.Device("nic")
    last = chunks[-1]
    chunks[-1] = type(last)(**{**last.__dict__, "devices": (*last.devices, late),
                               "device": np.array([1], np.int32), "op": np.array([3], np.uint8),
                               "handle": np.array([1], np.int32),
                               "owner": np.array([-1], np.int32)})
    traceio.write_trace(tmp_path / "t.npz", header, chunks)
    again = list(traceio.open_trace(tmp_path / "t.npz", chunk=2)[1])
    assert [d.name for d in again[-1].devices] == ["gpu", "nic"]
    assert json.loads(zipfile.ZipFile(tmp_path / "t.npz").read("header.json"))["declared"] == 2
    with pytest.raises(ValueError, match="device 'nic' first appears after the first chunk"):
        traceio.write_trace(tmp_path / "again.trace", header, chunks)
    traceio.write_trace(tmp_path / "again.trace", header, chunks, devices=(chunks[0].devices[0],
                                                                          late))
    assert read_trace(tmp_path / "again.trace").devices[1] == late


def test_writer_refuses_a_later_device_it_cannot_express(tmp_path):
    b = TraceBuilder()
    h = b.alloc(0.0)
    b.device("gpu", drain=1.0)         # not the defaults: a text trace must declare it
    b.bind(1.0, h, "gpu")
    trace = b.build()
    chunks = list(trace.chunks(1))
    first = chunks[0]
    chunks[0] = type(first)(**{**first.__dict__, "devices": ()})     # gpu appears later
    with pytest.raises(ValueError, match="declare the devices up front"):
        traceio.write_trace(tmp_path / "t.trace", trace.header(), chunks)
    traceio.write_trace(tmp_path / "t.trace", trace.header(), chunks, devices=trace.devices)
    same_trace(read_trace(tmp_path / "t.trace"), trace)


def test_text_file_objects_and_lines_read_alike():
    text = f"{MAGIC}\n0 alloc h0 p\n1 put h0\n"
    a = read_trace(io.StringIO(text))
    b = read_trace(io.BytesIO(text.encode()))
    c = read_trace(text.splitlines())
    for other in (b, c):
        same_trace(a, other)


# ---------------------------------------------------------------- hostile binaries

@pytest.fixture
def binary(tmp_path):
    trace = generate(preset("default", duration=500), 3)
    path = tmp_path / "good.npz"
    trace.write(path)
    return path


def rewrite(path, out, change):
    """``path`` with its members passed through ``change(name, data) -> data | None``."""
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
    return out


def npy(array):
    out = io.BytesIO()
    np.lib.format.write_array(out, array)
    return out.getvalue()


def with_header(edit):
    def change(name, data):
        if name == "header.json":
            meta = json.loads(data)
            edit(meta)
            return json.dumps(meta)
        return data
    return change


def with_column(column, make):
    def change(name, data):
        if name == f"chunk000000/{column}.npy":
            return npy(make(np.load(io.BytesIO(data))))
        return data
    return change


def shuffled_handles(handle):
    handle = handle.copy()
    handle[handle == 0], handle[handle == 1] = 1, 0
    return handle


HOSTILE = {
    "wrong version": (with_header(lambda m: m.update(version=2)), "unknown version 2"),
    "wrong format": (with_header(lambda m: m.update(format="x")), "does not name the format"),
    "no header": (lambda n, d: None if n == "header.json" else d, "header.json missing"),
    "missing column": (lambda n, d: None if n == "chunk000000/op.npy" else d,
                       "chunk000000/op.npy missing"),
    "wrong dtype": (with_column("time", lambda a: a.astype(np.float32)), "dtype <f4"),
    "short column": (with_column("owner", lambda a: a[:-1]), "shape"),
    "2-d column": (with_column("op", lambda a: a.reshape(1, -1)), "shape"),
    "object column": (with_column("op", lambda a: a.astype(object)), "dtype |O"),
    "op out of range": (with_column("op", lambda a: np.where(a == 7, 9, a).astype(np.uint8) if
                                    (a == 7).any() else np.concatenate(([9], a[1:])).astype(
                                        np.uint8)), "unknown operation code"),
    "device out of range": (with_column("device", lambda a: np.where(a >= 0, 99, a).astype(
        np.int32)), "device"),
    "shuffled numbering": (with_column("handle", shuffled_handles), "allocation order"),
    "owner skipped": (with_column("owner", lambda a: np.where(a >= 0, a + 5, a).astype(
        np.int32)), "first appearance"),
    "bad counts": (with_header(lambda m: m["handles"].update(count=1)), "counts"),
    "bad bits": (with_header(lambda m: m.update(bits=21)), "bits must be in 1..20"),
    "bad chunks": (with_header(lambda m: m.update(chunks=[5, 5])), "chunk"),
    "not json": (lambda n, d: b"{" if n == "header.json" else d, "not JSON"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_binaries_are_trace_errors(binary, tmp_path, case):
    change, message = HOSTILE[case]
    bad = rewrite(binary, tmp_path / "bad.npz", change)
    with pytest.raises(TraceError) as caught:
        read_trace(bad)
    assert message in str(caught.value)


@pytest.mark.parametrize("cut", [0, 10, 100, 1000, -100, -22])
def test_truncated_binaries_are_trace_errors(binary, tmp_path, cut):
    data = binary.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[:cut])
    with pytest.raises(TraceError, match="not a valid binary trace"):
        read_trace(bad)


def test_compressed_members_are_refused(binary, tmp_path):
    out = tmp_path / "deflated.npz"
    with zipfile.ZipFile(binary) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zo:
        for info in zin.infolist():
            zo.writestr(info.filename, zin.read(info))
    with pytest.raises(TraceError, match="compressed"):
        read_trace(out)


def test_a_binary_history_error_names_the_operation(tmp_path):
    trace = TraceBuilder().build()
    trace.time = np.array([0.0, 1.0, 2.0])
    trace.op = np.array([0, 2, 2], dtype=np.uint8)          # alloc, put, put
    trace.handle = np.array([0, 0, 0], dtype=np.int32)
    trace.owner = trace.device = np.array([-1, -1, -1], dtype=np.int32)
    trace.handles = ["h0"]
    trace.lines = None
    trace.write(tmp_path / "bad.npz")
    path = tmp_path / "bad.npz"
    with pytest.raises(TraceError, match=rf"^{re.escape(str(path))}: operation 2: put of handle "
                                         "'h0', which has been"):
        read_trace(path)


@pytest.mark.parametrize("twin", ["compiled", "python"])
def test_numbered_names_are_written_from_their_prefix(twin, tmp_path):
    # A generated trace's names are h<N> and p<N>: the writer passes their prefixes, and
    # never builds a list of every handle's and owner's name (memory by live state,
    # `simulate --record`); the text is the same as from the lists.
    from pasid.sim.workload import stream

    if twin == "compiled":
        compiled_parser()               # skipped under PASID_NO_EXTENSION=1
        from pasid.sim._textread import format_ops
    else:
        format_ops = _textread_py.format_ops
    trace = generate(preset("default", duration=2000), 2)
    columns = (trace.time, trace.op, trace.handle, trace.owner, trace.device)
    devices = [d.name for d in trace.devices]
    listed = format_ops(*columns, trace.handles, trace.owners, devices)
    assert format_ops(*columns, "h", "p", devices) == listed
    with pytest.raises(IndexError):
        format_ops(*columns, trace.handles[:3], trace.owners, devices)
    header, chunks = stream(preset("default", duration=2000), 2)
    path = tmp_path / "streamed.trace"
    writer = traceio.TraceWriter(path, header)
    for c in chunks:
        writer.write(c)
    assert writer.handles.names == [] and writer.owners.names == []    # none listed
    writer.close()
    assert path.read_bytes() == trace.to_text().encode("utf-8")
