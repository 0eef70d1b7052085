"""pasid.sim: workloads, traces, replay, metrics and sweeps (``pasid simulate``).

The simulator knows the allocator only through the public API (``import
pasid``), so it runs on either backend; with the compiled core its replay loop
is compiled too (``pasid.sim._replay``, over the C-level API in
``pasid/capi.pxd``).

- workloads: :class:`Workload`, :class:`DeviceSpec`, :data:`PRESETS`,
  :func:`preset`, :func:`generate`
- traces: :class:`Trace`, :class:`TraceBuilder`, :func:`read_trace`,
  :class:`TraceError`
- replay: :func:`replay` (one strategy: a :class:`Run`), :func:`simulate`
  (every strategy: rows of metrics and runs)
- sweeps: :func:`sweep` (JSON lines, resumable, a process pool or Dask)
- plots: :func:`pasid.sim.plot.plot_runs` (needs matplotlib)
"""

from pasid.sim.replay import STRATEGIES, Run, replay, simulate
from pasid.sim.sweep import sweep
from pasid.sim.trace import Trace, TraceBuilder, TraceError, read_trace
from pasid.sim.workload import PRESETS, DeviceSpec, Workload, generate, preset

__all__ = [
    "PRESETS",
    "STRATEGIES",
    "DeviceSpec",
    "Run",
    "Trace",
    "TraceBuilder",
    "TraceError",
    "Workload",
    "generate",
    "preset",
    "read_trace",
    "replay",
    "simulate",
    "sweep",
]
