"""pasid.sim: workloads, traces, replay, metrics and sweeps (``pasid simulate``).

The simulator knows the allocator only through the public API (``import
pasid``), so it runs on either backend; with the compiled core its replay loop
is compiled too (``pasid.sim._replay``, over the C-level API in
``pasid/capi.pxd``).

- workloads: :class:`Workload`, :class:`DeviceSpec`, :data:`PRESETS`,
  :func:`preset`, :func:`generate` (a whole trace), :func:`stream` (a chunk at a
  time), :data:`GENERATOR_VERSION`
- traces: :class:`Trace`, :class:`TraceBuilder`, :func:`read_trace`,
  :class:`TraceError`; files a chunk at a time, text or binary (``.npz``):
  :func:`open_trace`, :func:`write_trace`
- replay: :func:`replay` (one strategy: a :class:`Run`), :func:`simulate`
  (every strategy: rows of metrics and runs)
- sweeps: :func:`sweep` (JSON lines, resumable, a process pool or Dask); their rows
  at a glance: :mod:`pasid.sim.report` (``pasid report``)
- virtual machines: :func:`simulate_vms` (every guest PASID design on one
  :class:`VMWorkload`: rows of metrics), :func:`vm_preset`
- plots: :func:`pasid.sim.plot.plot_runs`, :func:`pasid.sim.plot.plot_modes` (needs matplotlib)
"""

from pasid.sim.replay import STRATEGIES, Run, replay, simulate
from pasid.sim.sweep import sweep
from pasid.sim.trace import Trace, TraceBuilder, TraceError, read_trace
from pasid.sim.traceio import open_trace, write_trace
from pasid.sim.vms import VMWorkload, simulate_vms, vm_preset
from pasid.sim.workload import (
    GENERATOR_VERSION, PRESETS, DeviceSpec, Workload, generate, preset, stream,
)

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "STRATEGIES",
    "DeviceSpec",
    "Run",
    "Trace",
    "TraceBuilder",
    "TraceError",
    "VMWorkload",
    "Workload",
    "generate",
    "open_trace",
    "preset",
    "read_trace",
    "replay",
    "simulate",
    "simulate_vms",
    "stream",
    "sweep",
    "vm_preset",
    "write_trace",
]
