"""Sweeps: strategies x parameters x seeds, one JSON line per run, resumable.

:func:`sweep` takes a workload (a preset name or a
:class:`~pasid.sim.workload.Workload`), a *grid* (workload fields, each with a
list of values: every combination is a *point*) and a number of seeds. Each
(point, seed) is a *task*: it generates one trace and replays it under every
strategy asked (:func:`pasid.sim.replay.simulate`), so the strategies are
compared on the same operations. Tasks run in a local process pool, serially
(``workers=1``) or on a Dask cluster (``dask="tcp://host:port"``); each
finished task's rows are appended to the output file at once.

The row schema, one JSON object a line (keys sorted)::

    workload    the preset's name; a Workload w that is not the preset of its
                name (PRESETS[w.name]) is named NAME@HASH, HASH the first
                12 hex digits of the SHA-256 of its fields as canonical
                JSON, so two different workloads never share rows
    params      the point: {field: value} of the grid's overrides ({} for an
                empty grid), values as the Workload holds them
    root_seed   the root the seeds were spawned from
    seed_index  i, 0 .. seeds-1
    seed        the seed of the workload and of the random strategy (below)
    generator   the workload generator's version
                (pasid.sim.workload.GENERATOR_VERSION): the same workload and
                seed give other traces under another version
    strategy    lowest, cyclic, fifo or random
    ...         the metrics of pasid.sim.replay.row(): ops, seconds,
                ops_per_s, engine, allocations, failures, skipped,
                peak_active, peak_held, reuse, stale, stale_no_quarantine,
                blocks_peak, highest

The VM workload (``"vms"``, a :class:`~pasid.sim.vms.VMWorkload`) is a
second kind of sweep point: a task runs :func:`pasid.sim.vms.simulate_vms`
for the point's designs (its ``mode`` field: ``all``, the default, gives the
three; a grid over ``mode`` gives one each), the hosts' strategy being a
parameter of the grid (``strategy``) rather than the ``strategies``
argument, which must be None. Its rows have the same identity fields, with
``strategy`` the hosts' strategy, ``generator`` the VM simulator's version
(:data:`pasid.sim.vms.VM_SIM_VERSION`), and ``mode`` the design; the
metrics are those of :func:`pasid.sim.vms.vm_row` (``ops``, ``seconds``,
``ops_per_s``, ``engine``, ``arrivals``, ``allocations``, ``alloc_refused``,
``alloc_exhausted``, ``alloc_quota``, ``migrations_attempted``,
``migrations``, ``migrations_conflict``, ``migrations_busy``,
``migrations_refused``, ``peak_held``, ``peak_active``, ``guest_reuse``,
``stale``, ``stale_cross_vm``, ``stale_no_quarantine``,
``stale_cross_vm_no_quarantine``). Its key adds ``mode``.

Seeds: ``numpy.random.SeedSequence(root_seed).spawn(seeds)``; seed *i* is
``int(children[i].generate_state(1, dtype=numpy.uint64)[0])``
(:func:`spawn_seeds`). Every point uses the same seeds. Apart from the timing
fields ``seconds`` and ``ops_per_s``, a row depends only on its key (below),
not on the executor, on the order tasks finish in, or on which other
strategies ran in the same task (each replays on a fresh allocator); ``engine``
also says which replay loop the worker had (the backends agree on every
metric, so the key leaves it out, as it does ``allocator``).

Resuming: a row's key is (workload, params as canonical JSON, root_seed,
seed_index, strategy, generator), a row without ``generator`` counting as
version 1 (written before rows carried it). Before running, the rows already
in the output file are read; a task whose every requested strategy has a row
is skipped, and a task with some missing runs only those, so a sweep never
writes a key the file holds. A key held twice (files written by two sweeps at
once before the lock below) counts once; the sweep leaves such rows as they
are, and a reader wanting one row per key keeps the first. A final line that
lacks its newline or does not parse (a write cut short) is dropped first, by
truncating the file in place; any other line that does not parse is an error.
Rows of other workloads, params, seeds, strategies or generator versions are
left alone: a task whose rows are of another generator version runs again,
and the file then holds both, told apart by ``generator``.

One sweep per file: a sweep holds an exclusive ``flock`` on the output file
itself from before it reads it until it returns (the kernel lets go of it if
the process dies), and a second sweep on a file in use raises
:class:`SweepError` at once, reading and writing nothing. The lock is
advisory: it keeps sweeps apart, not other programs. Each task's rows go to
the file in one ``write``, so a file holds only whole tasks, but for a last
line cut short by a full disk or a crash.

Ending early: a failed task, or Ctrl-C (KeyboardInterrupt), cancels the tasks
not started and kills the local workers at once, without waiting for the
running tasks; the rows already written stay, and running the sweep again
resumes it. Pool workers also die with the sweep if it is killed (SIGKILL
from the kernel on Linux, ``prctl(PR_SET_PDEATHSIG)``; elsewhere a thread of
each worker watching its parent), and ignore SIGINT: a terminal's Ctrl-C
reaches the whole process group, and the sweep ends its workers itself.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import fcntl
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from pasid._args import STRATEGIES, as_strategy
from pasid.sim.replay import simulate

if TYPE_CHECKING:
    from types import ModuleType

    from pasid.sim.replay import _AllocatorChoice
    from pasid.sim.vms import VMWorkload
    from pasid.sim.workload import Workload

__all__ = ["TIMING_FIELDS", "SweepError", "run_task", "spawn_seeds", "sweep"]

TIMING_FIELDS = ("seconds", "ops_per_s")     # the fields that differ from run to run
DASK_MISSING = "pasid sweep --dask needs the 'dask' extra: pip install 'pasid[dask]'"


class SweepError(RuntimeError):
    """A sweep could not finish: a task failed (the message names its point and seed, the
    worker's exception is the cause), or the output file is in use by another sweep."""


class Task(NamedTuple):
    """One (point, seed): what a worker needs to run it, and its identity in the rows."""

    workload: Workload | VMWorkload     # the sweep's, before the point's overrides
    params: dict[str, Any]      # the point's overrides, as the Workload holds them
    params_key: str             # the point as canonical JSON
    seed_index: int
    seed: int
    strategies: tuple[str, ...]     # the strategies it lacks, in the order asked (VM
                                    # workloads: the designs it lacks)
    allocator: _AllocatorChoice      # passed on to simulate


# A finished task's rows go to the output file: finished(task, rows).
Finished = Callable[[Task, list[dict[str, Any]]], None]


def spawn_seeds(root_seed: int, count: int) -> list[int]:
    """The ``count`` seeds of a sweep, spawned from ``root_seed``.

    ``numpy.random.SeedSequence(root_seed).spawn(count)``, and of each child
    the first 64-bit word of its state: independent streams, reproducible from
    the root alone, and seed *i* does not depend on ``count``. O(count).

    >>> spawn_seeds(0, 3) == [int(s.generate_state(1, dtype=np.uint64)[0])
    ...                      for s in np.random.SeedSequence(0).spawn(3)]
    True
    >>> spawn_seeds(0, 2) == spawn_seeds(0, 3)[:2]
    True
    """
    return [int(child.generate_state(1, dtype=np.uint64)[0])
            for child in np.random.SeedSequence(root_seed).spawn(count)]


def _plain(value: object) -> dict[str, Any]:
    """JSON's fallback for the values a Workload holds beyond JSON's own (DeviceSpec)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{value!r} cannot be written as JSON")


def _canonical(value: object) -> str:
    """Canonical JSON: sorted keys, no blanks, tuples as lists, DeviceSpecs as dicts."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      default=_plain)


def _workload_and_name(workload: str | Workload | VMWorkload,
                       ) -> tuple[Workload | VMWorkload, str]:
    """The Workload and the name its rows carry (see the module docstring)."""
    from pasid.sim.vms import VM_PRESETS, VMWorkload
    from pasid.sim.workload import PRESETS, Workload

    presets: dict[str, Any] = {**PRESETS, **VM_PRESETS}
    if isinstance(workload, str):
        if workload not in presets:
            raise ValueError(f"unknown workload {workload!r} (one of {', '.join(presets)})")
        return presets[workload], workload
    if not isinstance(workload, (Workload, VMWorkload)):
        raise TypeError(f"workload must be a preset name or a Workload, got {workload!r}")
    if presets.get(workload.name) == workload:
        return workload, workload.name
    digest = hashlib.sha256(_canonical(dataclasses.asdict(workload)).encode()).hexdigest()
    return workload, f"{workload.name}@{digest[:12]}"


def _points(base: Workload | VMWorkload, grid: Mapping[str, Iterable[object]]) -> list[dict[str, Any]]:
    """Every combination of the grid as {field: value}, checked and normalised; no duplicates."""
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must map workload fields to lists of values, got {grid!r}")
    names = {field.name for field in dataclasses.fields(base)} - {"name"}
    choices = []
    for name, values in grid.items():
        if name == "name":
            raise ValueError("grid: 'name' labels the workload, it is not a parameter")
        if name not in names:
            raise ValueError(f"unknown workload parameter {name!r} in the grid "
                             f"(one of {', '.join(sorted(names))})")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError(f"grid {name}: wants a list of values, got {values!r}")
        values = list(values)
        if not values:
            raise ValueError(f"grid {name}: no values")
        checked = []
        for value in values:
            try:
                held = getattr(base.with_(**{name: value}), name)
                _canonical(held)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"grid {name}={value!r}: {exc}") from None
            checked.append(held)
        choices.append([(name, value) for value in checked])
    points, seen = [], set()
    for combination in itertools.product(*choices):
        point = dict(combination)
        try:
            base.with_(**point)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"grid point {_canonical(point)}: {exc}") from None
        key = _canonical(point)
        if key not in seen:
            seen.add(key)
            points.append(point)
    return points


def _strategy_list(strategies: str | Iterable[str] | None) -> tuple[str, ...]:
    if strategies is None:
        return STRATEGIES
    if isinstance(strategies, str):
        strategies = [strategies]
    chosen = tuple(dict.fromkeys(strategies))
    if not chosen:
        raise ValueError("no strategies to run")
    for name in chosen:
        as_strategy(name)
    return chosen


def _count(value: object, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < least:
        raise ValueError(f"{name} must be >= {least}, got {value}")
    return int(value)


# ---------------------------------------------------------------- the output file

def _row_key(row: object) -> tuple[Any, ...] | None:
    """A row's resume key, or None for a line that is not a sweep row."""
    if not isinstance(row, dict):
        return None
    try:
        return (row["workload"], _canonical(row["params"]), row["root_seed"],
                row["seed_index"], row["strategy"], row.get("generator", 1), row.get("mode"))
    except (KeyError, TypeError, ValueError):
        return None


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:          # json.JSONDecodeError and UnicodeDecodeError both are
        return False
    return True


def _open_locked(path: str | os.PathLike[str]) -> io.FileIO:
    """``path`` opened to read and append (created if missing), under an exclusive ``flock``.

    The lock lasts until the file is closed. Another sweep holding it raises
    :class:`SweepError` naming the file.
    """
    handle = io.FileIO(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SweepError(f"{os.fsdecode(path)} is in use by another sweep (locked); "
                         "wait for it to end, or write to another file") from None
    except BaseException:
        handle.close()
        raise
    return handle


def _read_done(handle: io.FileIO, path: str | os.PathLike[str]) -> set[tuple[Any, ...]]:
    """The keys of the rows in the locked file ``handle``, after repairing its tail.

    A last line without its newline, or that does not parse, is cut off by
    truncating the file in place (the same inode: a reader holding it open
    keeps it). Any other line that does not parse raises ValueError naming it,
    and leaves the file as it was. O(the file's size).
    """
    handle.seek(0)
    content = handle.readall()
    lines = content.split(b"\n")
    if lines[-1] == b"":                    # ends with a newline (or is empty)
        lines.pop()
        cut = bool(lines) and not _parses(lines[-1])
    else:
        cut = True                          # a write cut short
    if cut:
        lines.pop()
    done = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ValueError(f"{os.fsdecode(path)}:{number}: not a JSON line; "
                             "remove or mend it, then run the sweep again") from None
        key = _row_key(row)
        if key is not None:
            done.add(key)
    if cut:
        handle.truncate(sum(len(line) + 1 for line in lines))
    return done


def _append(handle: io.FileIO, data: bytes) -> None:
    """Append ``data`` in one ``write`` (more only if the disk takes part of it)."""
    view = memoryview(data)
    while view:
        view = view[handle.write(view):]


# ---------------------------------------------------------------- running

def run_task(task: Task) -> list[dict[str, Any]]:
    """Run one task (in a worker): its point's workload, its seed, the strategies it lacks.

    Returns :func:`~pasid.sim.replay.simulate`'s rows, in the task's strategy order
    (a VM workload: :func:`~pasid.sim.vms.simulate_vms`'s, in the task's mode order).
    """
    from pasid.sim.vms import VMWorkload, simulate_vms

    if isinstance(task.workload, VMWorkload):
        choice = task.allocator
        engine = ({None: "auto", "python": "python", "cython": "compiled"}.get(choice)
                  if choice is None or isinstance(choice, str) else None)
        if engine is None:
            raise ValueError("a VM sweep takes allocator None, 'python' or 'cython'")
        return simulate_vms(task.workload.with_(**task.params), task.seed,
                            modes=task.strategies, engine=engine)
    rows, _runs = simulate(task.workload.with_(**task.params), list(task.strategies),
                           seed=task.seed, allocator=task.allocator, samples=0)
    return rows


def _failure(task: Task, exc: BaseException) -> SweepError:
    return SweepError(f"sweep task failed at params {task.params_key}, seed_index "
                      f"{task.seed_index}, seed {task.seed}: {type(exc).__name__}: {exc}")


def _run_serial(tasks: list[Task], finished: Finished) -> None:
    for task in tasks:
        try:
            rows = run_task(task)
        except Exception as exc:
            raise _failure(task, exc) from exc
        finished(task, rows)


_PR_SET_PDEATHSIG = 1     # <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """Initializer of a pool worker: end when the sweep process ``parent`` does; ignore SIGINT.

    On Linux the kernel sends SIGKILL when the parent ends
    (``prctl(PR_SET_PDEATHSIG)``; strictly, when the parent's thread that
    started the worker ends: the sweep's, which outlives the pool). Elsewhere,
    or if prctl fails, a daemon thread polls ``os.getppid()`` twice a second.
    A parent that died before this ran is caught by the check at the end.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _parent_death_signal(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(parent,), name="pasid-watch-parent",
                         daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)


def _parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent ends; False if it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return int(prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), ctypes.c_ulong(0),
                     ctypes.c_ulong(0), ctypes.c_ulong(0))) == 0


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _kill_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Kill the pool's workers now: ``shutdown`` alone waits for the running tasks.

    ``_processes`` is private, but there from Python 3.8 to 3.14 (whose
    ``kill_workers`` does this and shuts the pool down without waiting).
    """
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT blocked in this thread while the pool starts its processes (its resource
    tracker, its workers): a process started then inherits the mask, so a Ctrl-C to the
    terminal's group cannot interrupt it while it imports, before its initializer
    ignores SIGINT (that printed a worker's traceback). The sweep's own ^C waits until
    the block ends, then raises as usual. A no-op where there is no ``pthread_sigmask``."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _run_pool(tasks: list[Task], finished: Finished, workers: int | None) -> None:
    # spawn, not fork: forking a process that has threads (a Dask client, a GUI)
    # is unsafe and deprecated, and spawn behaves the same on every platform.
    # The workers start as tasks are submitted (spawn starts them on demand).
    with _sigint_held():
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers or os.cpu_count() or 1, len(tasks)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_die_with_parent, initargs=(os.getpid(),))
    futures: dict[concurrent.futures.Future[list[dict[str, Any]]], Task] = {}
    try:
        with _sigint_held():
            futures.update((pool.submit(run_task, task), task) for task in tasks)
        for future in concurrent.futures.as_completed(futures):
            task = futures[future]
            try:
                rows = future.result()
            except Exception as exc:
                raise _failure(task, exc) from exc
            finished(task, rows)
    except BaseException:
        # a failed task or ^C: drop the tasks not started, end the running ones
        # (their rows would not be written), then let shutdown tidy up
        for future in futures:
            future.cancel()
        _kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(tasks: list[Task], finished: Finished, address: str,
              distributed: ModuleType) -> None:
    with distributed.Client(address, set_as_default=False) as client:
        futures = [client.submit(run_task, task, pure=False) for task in tasks]
        task_of = {future.key: task for future, task in zip(futures, tasks)}
        pending = set(task_of)
        try:
            for future in distributed.as_completed(futures, loop=client.loop):
                task = task_of[future.key]
                try:
                    rows = future.result()
                except Exception as exc:
                    raise _failure(task, exc) from exc
                pending.discard(future.key)
                finished(task, rows)
        finally:
            if pending:
                client.cancel([future for future in futures if future.key in pending])


def sweep(workload: str | Workload | VMWorkload, grid: Mapping[str, Iterable[object]],
          strategies: str | Iterable[str] | None, seeds: int, *, root_seed: int = 0,
          out: str | os.PathLike[str], dask: str | None = None, workers: int | None = None,
          progress: Callable[[int, int], object] | None = None,
          allocator: _AllocatorChoice = None) -> int:
    """Run ``strategies`` x the points of ``grid`` x ``seeds`` seeds; append rows to ``out``.

    ``workload``: a preset name (``"default"``, ``"exhaustion"``,
    ``"vm-churn"``; ``"vms"``, the VM workload) or a
    :class:`~pasid.sim.workload.Workload` (or :class:`~pasid.sim.vms.VMWorkload`:
    see the module docstring; ``strategies`` must then be None). ``grid``:
    ``{field: [values]}`` (any :class:`~pasid.sim.workload.Workload` field
    but ``name``; text values are read by the field's type, as
    :meth:`~pasid.sim.workload.Workload.with_` does); the points are the
    cartesian product, values the Workload holds alike (``1``, ``"1"``,
    ``1.0``) counting once (an empty grid is one point, the workload itself).
    ``strategies``: names among
    ``lowest``, ``cyclic``, ``fifo``, ``random`` (``None``: all four).
    ``seeds``: seeds per point; seed *i* is
    ``int(SeedSequence(root_seed).spawn(seeds)[i].generate_state(1, dtype=numpy.uint64)[0])``
    (:func:`spawn_seeds`). Each (point, seed) is one task: one trace,
    replayed under every strategy it lacks (see the module docstring for the
    rows and the resume rule). ``out``: the JSON-lines file, created or
    appended to, one task's rows at a time, and locked for the whole call:
    one sweep per file.

    Executors: a local pool of ``workers`` processes (default one per core;
    ``workers=1`` runs in this process; the pool starts its processes with
    ``spawn``, so a script calling this needs the ``if __name__ ==
    "__main__":`` guard), or the Dask scheduler at ``dask``
    (``"tcp://host:port"``; needs ``distributed``, the ``dask`` extra).
    ``allocator`` is passed on to :func:`~pasid.sim.replay.simulate` (a class
    must be importable by the workers). ``progress(done, total)`` is called
    with 0 before the first task and after each task, ``total`` being the
    tasks this call runs.

    Returns the number of rows written. Bad arguments (an unknown field or
    strategy, a value the Workload refuses, an empty list) raise ValueError or
    TypeError before anything is read or written. ``out`` in use by another
    sweep raises :class:`SweepError` before it is read. A task that fails
    raises :class:`SweepError` naming its point and seed, and KeyboardInterrupt
    passes through, after the tasks not yet started are cancelled and the
    local workers killed; the rows written so far stay, so running the same
    sweep again resumes it. Cost: the tasks' simulations, plus reading ``out``
    once, O(its size).

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = os.path.join(tmp, "rows.jsonl")
    ...     grid = {"bits": [10], "duration": [200], "lifetime": [50], "arrival": [0.1, 0.2]}
    ...     first = sweep("default", grid, ["lowest", "fifo"], 2, out=out, workers=1)
    ...     again = sweep("default", grid, ["lowest", "fifo"], 2, out=out, workers=1)
    ...     with open(out) as rows:
    ...         row = json.loads(rows.readline())
    >>> first, again            # 2 points x 2 seeds x 2 strategies, then nothing left
    (8, 0)
    >>> row["workload"], row["params"], row["seed_index"], row["seed"] == spawn_seeds(0, 2)[0]
    ('default', {'arrival': 0.1, 'bits': 10, 'duration': 200.0, 'lifetime': 50.0}, 0, True)
    """
    from pasid.sim.vms import VM_SIM_VERSION, VMWorkload
    from pasid.sim.workload import GENERATOR_VERSION

    base, name = _workload_and_name(workload)
    points = _points(base, grid)
    vms = isinstance(base, VMWorkload)
    if vms and strategies is not None:
        raise ValueError("a VM sweep takes the hosts' strategy as a grid parameter "
                         "(strategy), not strategies")
    chosen = () if vms else _strategy_list(strategies)
    version = VM_SIM_VERSION if vms else GENERATOR_VERSION
    seeds = _count(seeds, "seeds", 1)
    root_seed = _count(root_seed, "root_seed", 0)
    if dask is not None:
        if workers is not None:
            raise ValueError("workers sizes the local pool; with dask the cluster decides")
        try:
            import distributed
        except ImportError:
            raise RuntimeError(DASK_MISSING) from None
    elif workers is not None:
        workers = _count(workers, "workers", 1)

    seed_values = spawn_seeds(root_seed, seeds)
    written = finished_tasks = 0
    with _open_locked(out) as handle:
        done = _read_done(handle, out)
        tasks = []
        for point in points:
            params_key = _canonical(point)
            keys: list[tuple[str, str | None]]
            if isinstance(base, VMWorkload):    # the point's designs, one host strategy
                at = base.with_(**point)
                keys = [(at.strategy, mode) for mode in at.modes()]
            else:
                keys = [(strategy, None) for strategy in chosen]
            for index, seed in enumerate(seed_values):
                missing = tuple(strategy if mode is None else mode for strategy, mode in keys
                                if (name, params_key, root_seed, index, strategy,
                                    version, mode) not in done)
                if missing:
                    tasks.append(Task(base, point, params_key, index, seed, missing, allocator))

        def finished(task: Task, metrics: list[dict[str, Any]]) -> None:
            nonlocal written, finished_tasks
            identity = {"workload": name, "params": json.loads(task.params_key),
                        "root_seed": root_seed, "seed_index": task.seed_index, "seed": task.seed,
                        "generator": version}
            _append(handle, "".join(json.dumps({**metric, **identity}, sort_keys=True) + "\n"
                                    for metric in metrics).encode())
            written += len(metrics)
            finished_tasks += 1
            if progress is not None:
                progress(finished_tasks, len(tasks))

        if progress is not None and tasks:
            progress(0, len(tasks))
        if not tasks:
            pass
        elif dask is not None:
            _run_dask(tasks, finished, dask, distributed)
        elif workers == 1:
            _run_serial(tasks, finished)
        else:
            _run_pool(tasks, finished, workers)
    return written
