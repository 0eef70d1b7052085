"""VM traces (``pasid-trace 2``): the VM simulation's work, independent of the design.

:func:`pasid.sim.vms.record_vms` turns a :class:`~pasid.sim.vms.VMWorkload`
and a seed into a :class:`VMTrace`; :func:`pasid.sim.vms.replay_vms` replays
it under identity, translated and identity-split and gives the rows
``pasid simulate --workload vms`` prints (that command records and replays:
the two are one path). What depends on the design (a refused allocation, a
refused migration, which host PASIDs a migration leaves bound) is the
replay's; the trace holds only what the guests and devices do.

The text format, version 2 (``#`` comments, blank lines ignored, fields
separated by blanks)::

    pasid-trace 2                          first line
    bits 10                                header: the hosts' PASID width (default 20)
    grace 10                               header: the hosts' grace (default 0)
    strategy lowest                        header: the hosts' strategy (default lowest)
    quota none                             header: each VM's host PASIDs at most (default none)
    host 0 seed=1234                       a host, numbered from 0 in order, and the seed of
                                           its allocator (the random strategy's)
    vm vm0 host=0 split=1..31 drain=2 vm0.dev0 vm0.dev1
                                           a VM: the host it starts on, its identity-split
                                           slice, its devices' drain, its devices
    0.5   arrive  p0 vm0                   TIME arrive PROCESS VM: a guest process allocates
                                           a guest PASID and binds every device of its VM
    80.1  end     p0                       TIME end PROCESS: it frees its guest PASID
    84.2  access  p0 vm0.dev1              TIME access PROCESS DEVICE: a late device access
    90.3  unbind  p0 vm0.dev0              TIME unbind PROCESS DEVICE: the device has drained
    95.0  migrate vm0 +2 9.5 12.25/0.5     TIME migrate VM +OFFSET [ACK[/FRACTION] ...]

``migrate`` moves the VM to the host OFFSET places on from the one it is on
(modulo the hosts); then every (host PASID, device) the source's
``remove_vm`` leaves bound tears down with the next draw of the list, in
ascending host PASID, then device order: the device unbinds ACK later and,
for ``ACK/FRACTION``, makes one late access FRACTION x ACK later. The list
holds a draw for every device of every process alive in the VM (the most a
removal can leave bound). Process names are tokens, named by their
``arrive``; device names belong to one VM. Numbers read as in version 1.

Checked before anything runs (:func:`pasid.sim._vmrules.check`): the
header, times non-decreasing, known VMs, hosts and devices, a process ends
only once after it arrived, its devices access and unbind it only after it
ended, each device unbinding it once, every migration's draws. A bad trace
raises :class:`~pasid.sim.trace.TraceError` naming the line.

The binary form follows the ``.npz`` scheme of :mod:`pasid.sim.traceio`
(an uncompressed zip, ``header.json`` last) with ``"version": 2``: members
``time.npy`` (float64), ``op.npy`` (uint8, the ``VM_*`` codes),
``process.npy``, ``vm.npy``, ``arg.npy`` (int32; ``arg``: the device slot
in its VM for access and unbind, the host offset for migrate; -1 unused),
``pool_ack.npy``, ``pool_access.npy`` (float64; NaN: no late access),
``pool_offset.npy`` (int64: migration m's draws are
``pool_offset[m]..pool_offset[m+1]-1``), and ``header.json``: ``{"format":
"pasid-trace-npz", "version": 2, "bits", "grace", "strategy", "quota",
"hosts": [seed, ...], "vms": [[name, host, lo, hi, drain, [device, ...]],
...], "processes": N, "comment"}`` (processes named ``p0``, ``p1``, ...).
An error there names the operation by index.

Version-1 traces (one host, handles) read exactly as before:
:func:`pasid.sim.trace.read_trace` returns a :class:`VMTrace` for version 2
and a :class:`~pasid.sim.trace.Trace` for version 1; :func:`trace_version`
tells them apart without reading the whole file.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from pasid.sim import _vmrules
from pasid.sim._textread_py import decode_line
from pasid.sim._tracerules import (
    _BOM, _DECIMAL, _INTEGER, _NAME, MAGIC, TraceError, _number,
)
from pasid.sim._vmrules import (
    VM_ACCESS, VM_ARRIVE, VM_BINARY_VERSION, VM_END, VM_MIGRATE, VM_OP_CODES, VM_OP_NAMES,
    VM_UNBIND, VM_VERSION, VMSpec,
)

# numpy's .npy format, untyped in numpy 1.24's stubs (as pasid.sim.traceio reads it)
_npy_format: Any = np.lib.format

__all__ = ["VMSpec", "VMTrace", "read_vm_trace", "trace_version"]

BINARY_FORMAT = "pasid-trace-npz"
_MEMBERS = {"time": "<f8", "op": "u1", "process": "<i4", "vm": "<i4", "arg": "<i4",
            "pool_ack": "<f8", "pool_access": "<f8", "pool_offset": "<i8"}


@dataclass(eq=False)
class VMTrace:
    """A checked VM trace: the header, five operation columns and the migrations' draws."""

    bits: int
    grace: float
    strategy: str
    quota: int | None
    host_seeds: list[int]
    vms: list[VMSpec]
    processes: list[str]
    time: npt.NDArray[np.float64]
    op: npt.NDArray[np.uint8]
    process: npt.NDArray[np.int32]
    vm: npt.NDArray[np.int32]
    arg: npt.NDArray[np.int32]
    pool_ack: npt.NDArray[np.float64]
    pool_access: npt.NDArray[np.float64]
    pool_offset: npt.NDArray[np.int64]
    lines: npt.NDArray[np.int64] | None = None
    source: str | None = None
    comment: str | None = None

    def __len__(self) -> int:
        return len(self.op)

    @property
    def hosts(self) -> int:
        return len(self.host_seeds)

    @property
    def duration(self) -> float:
        """The time of the last operation (0 for an empty trace)."""
        return float(self.time[-1]) if len(self.time) else 0.0

    def counts(self) -> dict[str, int]:
        """How many operations of each kind, as ``{name: count}``."""
        found = np.bincount(self.op, minlength=len(VM_OP_NAMES))
        return {name: int(found[code]) for code, name in enumerate(VM_OP_NAMES)}

    # ------------------------------------------------------------ writing

    def write(self, file: str | os.PathLike[str] | IO[str]) -> None:
        """Write to a path (``.npz``: binary, else text) or a text file object. O(n)."""
        if isinstance(file, (str, os.PathLike)):
            if os.fspath(file).lower().endswith(".npz"):
                self._write_binary(file)
                return
            with open(file, "w", encoding="utf-8", newline="\n") as out:
                self._write_text(out)
            return
        self._write_text(file)

    def to_text(self) -> str:
        """The trace in the text format, as a string."""
        out = io.StringIO()
        self._write_text(out)
        return out.getvalue()

    def _write_text(self, out: IO[str]) -> None:
        put = out.write
        put(f"{MAGIC} {VM_VERSION}\n")
        if self.comment:
            for line in self.comment.splitlines():
                put(f"# {line}\n")
        put(f"bits {self.bits}\ngrace {_number(self.grace)}\nstrategy {self.strategy}\n")
        put(f"quota {'none' if self.quota is None else self.quota}\n")
        for x, seed in enumerate(self.host_seeds):
            put(f"host {x} seed={seed}\n")
        for vm in self.vms:
            put(f"vm {vm.name} host={vm.host} split={vm.split[0]}..{vm.split[1]} "
                f"drain={_number(vm.drain)} {' '.join(vm.devices)}\n")
        names, vms = self.processes, self.vms
        vm_of = [0] * len(names)
        offsets, acks, accesses = (self.pool_offset.tolist(), self.pool_ack.tolist(),
                                   self.pool_access.tolist())
        migration = 0
        lines = []
        for t, op, k, v, a in zip(self.time.tolist(), self.op.tolist(), self.process.tolist(),
                                  self.vm.tolist(), self.arg.tolist()):
            when = _number(t)
            if op == VM_ARRIVE:
                vm_of[k] = v
                lines.append(f"{when} arrive {names[k]} {vms[v].name}")
            elif op == VM_END:
                lines.append(f"{when} end {names[k]}")
            elif op == VM_MIGRATE:
                draws = []
                for j in range(offsets[migration], offsets[migration + 1]):
                    ack, access = acks[j], accesses[j]
                    draws.append(repr(ack) if math.isnan(access)
                                 else f"{repr(ack)}/{repr(access)}")
                migration += 1
                lines.append(" ".join([f"{when} migrate {vms[v].name} +{a}", *draws]))
            else:
                lines.append(f"{when} {VM_OP_NAMES[op]} {names[k]} {vms[vm_of[k]].devices[a]}")
            if len(lines) >= 4096:
                put("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            put("\n".join(lines) + "\n")

    def _write_binary(self, path: str | os.PathLike[str]) -> None:
        numbered = all(name == f"p{k}" for k, name in enumerate(self.processes))
        if not numbered:
            raise ValueError("the binary form names processes p0, p1, ...: write this trace "
                             "as text")
        meta = {"format": BINARY_FORMAT, "version": VM_BINARY_VERSION, "bits": self.bits,
                "grace": self.grace, "strategy": self.strategy, "quota": self.quota,
                "hosts": [int(s) for s in self.host_seeds],
                "vms": [[vm.name, vm.host, vm.split[0], vm.split[1], vm.drain,
                         list(vm.devices)] for vm in self.vms],
                "processes": len(self.processes), "comment": self.comment}
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for name, dtype in _MEMBERS.items():
                buffer = io.BytesIO()
                _npy_format.write_array(buffer, np.ascontiguousarray(
                    getattr(self, name), dtype=dtype), allow_pickle=False)
                zf.writestr(f"{name}.npy", buffer.getvalue())
            zf.writestr("header.json", json.dumps(meta))


# ---------------------------------------------------------------- which version

def trace_version(source: str | os.PathLike[str]) -> int:
    """The format version of the trace file at ``source``: 2 for a VM trace (its first
    line, or for ``.npz`` a ``header.json`` of version 2 with ``vms``), else 1 (the version-1 reader then
    says what is wrong, if anything). OSError for a file that cannot be opened."""
    label = os.fspath(source)
    if label.lower().endswith(".npz"):
        try:
            with zipfile.ZipFile(source) as zf:
                meta = json.loads(zf.read("header.json"))
        except (zipfile.BadZipFile, KeyError, ValueError, UnicodeDecodeError):
            return 1            # the version-1 reader says what is wrong, as before
        vm = isinstance(meta, dict) and meta.get("version") == VM_BINARY_VERSION \
            and "vms" in meta
        return 2 if vm else 1
    with open(source, "rb") as file:
        first = file.readline(256).decode("utf-8", "replace").lstrip(_BOM).split()
    if len(first) >= 2 and first[0] == MAGIC and first[1] == str(VM_VERSION):
        return VM_VERSION
    return 1


# ---------------------------------------------------------------- reading text

def _lines_of(source: str | os.PathLike[str] | Iterable[str],
              name: str | None) -> tuple[Iterator[str], str]:
    if isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        with open(source, "rb") as file:
            data = file.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:      # name the first line that is not UTF-8, as version 1
            lines = data.decode("utf-8", "surrogateescape").splitlines()
            for number, line in enumerate(lines, 1):
                decode_line(line.encode("utf-8", "surrogateescape"), label, number)
            raise                       # pragma: no cover - some line does not decode
        return iter(text.splitlines()), label
    return iter(source), name or getattr(source, "name", None) or "trace"


def read_vm_trace(source: str | os.PathLike[str] | Iterable[str], *,
                  name: str | None = None) -> VMTrace:
    """Read a VM trace from a path (``.npz``: binary, else text) or an iterable of lines
    (text), and check it (:func:`pasid.sim._vmrules.check`). TraceError naming the
    first bad line, or operation of a binary trace. O(n)."""
    if isinstance(source, (str, os.PathLike)) and os.fspath(source).lower().endswith(".npz"):
        return _read_binary(source, name or os.fspath(source))
    lines, label = _lines_of(source, name)
    return _vmrules.check(_TextReader(str(label)).read(lines))


class _TextReader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.line = 0

    def fail(self, message: str) -> TraceError:
        return TraceError(message, self.line, self.source)

    def integer(self, text: str, what: str) -> int:
        if not _INTEGER.fullmatch(text):
            raise self.fail(f"{what} must be an integer, got {text!r}")
        return int(text)

    def decimal(self, text: str, what: str) -> float:
        if not _DECIMAL.fullmatch(text):
            raise self.fail(f"{what} must be a decimal number, got {text!r}")
        return float(text)

    def settings(self, fields: list[str], known: tuple[str, ...]) -> dict[str, str]:
        found: dict[str, str] = {}
        for item in fields:
            key, sep, value = item.partition("=")
            if not sep or key not in known:
                raise self.fail(f"expected {'=, '.join(known)}=, got {item!r}")
            if key in found:
                raise self.fail(f"{key} given twice")
            found[key] = value
        missing = [key for key in known if key not in found]
        if missing:
            raise self.fail(f"missing {', '.join(missing)}")
        return found

    def read(self, lines: Iterator[str]) -> VMTrace:
        header: dict[str, Any] = {}
        hosts: list[int] = []
        vms: list[VMSpec] = []
        vm_index: dict[str, int] = {}
        device_of: dict[str, tuple[int, int]] = {}
        processes: list[str] = []
        process_index: dict[str, int] = {}
        process_vm: list[int] = []
        rows: list[tuple[float, int, int, int, int, int]] = []
        acks: list[float] = []
        accesses: list[float] = []
        offsets = [0]
        comment: list[str] = []
        started = False
        for self.line, raw in enumerate(lines, 1):
            text = raw.lstrip(_BOM) if self.line == 1 else raw
            if self.line == 1:
                first = text.split()
                if len(first) != 2 or first[0] != MAGIC or first[1] != str(VM_VERSION):
                    raise self.fail(f"expected '{MAGIC} {VM_VERSION}' (a VM trace), "
                                    f"got {text.strip()!r}")
                continue
            body, _, note = text.partition("#")
            fields = body.split()
            if not fields:
                if not started and note and not fields and text.lstrip().startswith("#"):
                    comment.append(note.strip())
                continue
            word = fields[0]
            if word[0].isdigit() or word[0] in "+-.":
                started = True
                rows.append(self.operation(fields, vms, vm_index, device_of, processes,
                                           process_index, process_vm, acks, accesses, offsets))
                continue
            if started:
                raise self.fail(f"header line {word!r} after the first operation")
            if word in ("bits", "grace", "strategy", "quota"):
                if len(fields) != 2:
                    raise self.fail(f"{word} takes one value")
                if word in header:
                    raise self.fail(f"{word} given twice")
                value = fields[1]
                header[word] = (self.integer(value, "bits") if word == "bits"
                                else self.decimal(value, "grace") if word == "grace"
                                else None if word == "quota" and value == "none"
                                else self.integer(value, "quota") if word == "quota"
                                else value)
            elif word == "host":
                if len(fields) != 3:
                    raise self.fail("expected: host NUMBER seed=SEED")
                number = self.integer(fields[1], "host number")
                if number != len(hosts):
                    raise self.fail(f"hosts are numbered in order: expected host "
                                    f"{len(hosts)}, got {number}")
                seed = self.settings(fields[2:], ("seed",))["seed"]
                hosts.append(self.integer(seed, "seed"))
            elif word == "vm":
                if len(fields) < 6:
                    raise self.fail("expected: vm NAME host=H split=LO..HI drain=D DEVICE...")
                name = fields[1]
                if name in vm_index:
                    raise self.fail(f"vm {name!r} declared twice")
                got = self.settings(fields[2:5], ("host", "split", "drain"))
                lo, sep, hi = got["split"].partition("..")
                if not sep:
                    raise self.fail(f"split must be LO..HI, got {got['split']!r}")
                devices = tuple(fields[5:])
                for slot, device in enumerate(devices):
                    if device in device_of:
                        raise self.fail(f"device {device!r} belongs to two VMs")
                    device_of[device] = (len(vms), slot)
                vm_index[name] = len(vms)
                vms.append(VMSpec(name, self.integer(got["host"], "host"),
                                  (self.integer(lo, "split"), self.integer(hi, "split")),
                                  self.decimal(got["drain"], "drain"), devices))
            else:
                raise self.fail(f"unknown header line {word!r}")
        if self.line == 0:
            raise TraceError(f"{self.source}: empty trace (expected '{MAGIC} {VM_VERSION}')")
        self.line = 0
        try:
            _vmrules.check_header(header.get("bits", 20), header.get("grace", 0.0),
                                  header.get("strategy", "lowest"), header.get("quota"),
                                  hosts, vms)
        except TraceError as error:
            raise TraceError(f"{self.source}: {error}") from None
        n = len(rows)
        columns = list(zip(*rows)) if rows else [()] * 6
        return VMTrace(
            bits=header.get("bits", 20), grace=float(header.get("grace", 0.0)),
            strategy=header.get("strategy", "lowest"), quota=header.get("quota"),
            host_seeds=hosts, vms=vms, processes=processes,
            time=np.array(columns[0], dtype=np.float64).reshape(n),
            op=np.array(columns[1], dtype=np.uint8).reshape(n),
            process=np.array(columns[2], dtype=np.int32).reshape(n),
            vm=np.array(columns[3], dtype=np.int32).reshape(n),
            arg=np.array(columns[4], dtype=np.int32).reshape(n),
            pool_ack=np.array(acks, dtype=np.float64),
            pool_access=np.array(accesses, dtype=np.float64),
            pool_offset=np.array(offsets, dtype=np.int64),
            lines=np.array(columns[5], dtype=np.int64).reshape(n),
            source=self.source, comment="\n".join(comment) or None)

    def operation(self, fields: list[str], vms: list[VMSpec], vm_index: dict[str, int],
                  device_of: dict[str, tuple[int, int]], processes: list[str],
                  process_index: dict[str, int], process_vm: list[int], acks: list[float],
                  accesses: list[float], offsets: list[int]) -> tuple[float, int, int, int, int, int]:
        t = self.decimal(fields[0], "time")
        if len(fields) < 2:
            raise self.fail("an operation needs a name after its time")
        op = VM_OP_CODES.get(fields[1])
        if op is None:
            raise self.fail(f"unknown operation {fields[1]!r} (a VM trace knows "
                            f"{', '.join(VM_OP_NAMES)})")
        args = fields[2:]

        def vm(name: str) -> int:
            found = vm_index.get(name)
            if found is None:
                raise self.fail(f"unknown vm {name!r}")
            return found

        def process(name: str) -> int:
            found = process_index.get(name)
            if found is None:
                raise self.fail(f"unknown process {name!r} (a process is named by its arrive)")
            return found

        if op == VM_MIGRATE:
            if len(args) < 2 or not args[1].startswith("+"):
                raise self.fail("expected: TIME migrate VM +OFFSET [ACK[/FRACTION] ...]")
            v = vm(args[0])
            offset = self.integer(args[1][1:], "host offset")
            for draw in args[2:]:
                ack, sep, fraction = draw.partition("/")
                acks.append(self.decimal(ack, "teardown ack time"))
                accesses.append(self.decimal(fraction, "late-access fraction") if sep
                                else math.nan)
            offsets.append(len(acks))
            return (t, op, -1, v, offset, self.line)
        if op == VM_ARRIVE:
            if len(args) != 2:
                raise self.fail("expected: TIME arrive PROCESS VM")
            name = args[0]
            if not _NAME.fullmatch(name):
                raise self.fail(f"bad process name {name!r}")
            if name in process_index:
                raise self.fail(f"process {name!r} arrives twice")
            v = vm(args[1])
            process_index[name] = len(processes)
            processes.append(name)
            process_vm.append(v)
            return (t, op, process_index[name], v, -1, self.line)
        if op == VM_END:
            if len(args) != 1:
                raise self.fail("expected: TIME end PROCESS")
            return (t, op, process(args[0]), -1, -1, self.line)
        if len(args) != 2:
            raise self.fail(f"expected: TIME {fields[1]} PROCESS DEVICE")
        k = process(args[0])
        found = device_of.get(args[1])
        if found is None:
            vm_name, devices = vms[process_vm[k]].name, vms[process_vm[k]].devices
            raise self.fail(f"unknown device {args[1]!r}: vm {vm_name!r} declares "
                            f"{', '.join(devices)}")
        if found[0] != process_vm[k]:
            raise self.fail(f"{fields[1]} of process {args[0]!r} by {args[1]!r}, a device of "
                            f"vm {vms[found[0]].name!r}, not of the process's vm "
                            f"{vms[process_vm[k]].name!r}")
        return (t, op, k, -1, found[1], self.line)


# ---------------------------------------------------------------- reading binary

def _read_binary(path: str | os.PathLike[str], label: str) -> VMTrace:
    def bad(message: str) -> TraceError:
        return TraceError(f"{label}: {message}")

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise bad(f"not a binary trace ({error})") from None
    with zf:
        try:
            meta = json.loads(zf.read("header.json"))
        except (KeyError, ValueError, UnicodeDecodeError) as error:
            raise bad(f"header.json unreadable ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != BINARY_FORMAT:
            raise bad(f"header.json does not name the format {BINARY_FORMAT!r}")
        if meta.get("version") != VM_BINARY_VERSION:
            raise bad(f"not a VM trace: version {meta.get('version')!r}")
        try:
            vms = [VMSpec(str(name), int(host), (int(lo), int(hi)), float(drain),
                          tuple(str(d) for d in devices))
                   for name, host, lo, hi, drain, devices in meta["vms"]]
            hosts = [int(seed) for seed in meta["hosts"]]
            count = int(meta["processes"])
            bits, grace = int(meta["bits"]), float(meta["grace"])
            strategy = str(meta["strategy"])
            quota = None if meta["quota"] is None else int(meta["quota"])
            comment = meta.get("comment")
        except (KeyError, TypeError, ValueError) as error:
            raise bad(f"header.json: bad or missing field ({error})") from None
        try:
            _vmrules.check_header(bits, grace, strategy, quota, hosts, vms)
        except TraceError as error:
            raise bad(f"header.json: {error}") from None
        arrays: dict[str, Any] = {}
        for name, dtype in _MEMBERS.items():
            try:
                array = _npy_format.read_array(io.BytesIO(zf.read(f"{name}.npy")),
                                                 allow_pickle=False)
            except (KeyError, ValueError, OSError) as error:
                raise bad(f"member {name}.npy missing or unreadable ({error})") from None
            if array.dtype != np.dtype(dtype) or array.ndim != 1:
                raise bad(f"member {name}.npy must be a 1-D {np.dtype(dtype)} array, "
                          f"got {array.ndim}-D {array.dtype}")
            arrays[name] = np.ascontiguousarray(array)
    n = len(arrays["op"])
    if any(len(arrays[c]) != n for c in ("time", "process", "vm", "arg")):
        raise bad("trace columns differ in length")
    trace = VMTrace(bits=bits, grace=grace, strategy=strategy, quota=quota, host_seeds=hosts,
                    vms=vms, processes=[f"p{k}" for k in range(count)], source=label,
                    comment=comment, **arrays)
    arrive = np.flatnonzero(trace.op == VM_ARRIVE)
    numbered = trace.process[arrive]
    wrong = np.flatnonzero(numbered != np.arange(len(arrive)))
    if len(wrong) or len(arrive) != count:
        i = int(arrive[wrong[0]]) if len(wrong) else n
        raise bad(f"operation {i}: processes must be numbered in order of arrival "
                  f"({count} named)")
    return _vmrules.check(trace)
