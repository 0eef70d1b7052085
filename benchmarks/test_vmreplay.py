"""The VM replay loop (``pasid replay`` of a VM trace): the compiled loop against its
Python twin, on the same trace, the same compiled hosts, in one run.

One group, ``vm-replay``: the ``vms`` preset (4 hosts x 8 VMs, ~30,000 operations,
~100 migrations), seed 0, recorded once (untimed), replayed under the ``translated``
design with quarantine (one :func:`pasid.sim.vms.replay_vm` per round: the hosts and VMs
set up, then the walk). Rows: ``compiled`` (``pasid.sim._vmreplay``: host calls through
the C-level API table, guest calls still Python methods until the table's guest entries
land) and ``python`` (``_vmreplay_py``), both on the compiled allocator, and ``python-pure``
(the Python loop on the pure allocator, what ``--engine python`` runs) for scale.

Reported at the end of a timed run, not asserted: the compiled / Python-loop ratio.
Skipped under ``PASID_NO_EXTENSION=1``.
"""

import os

import pytest

if os.environ.get("PASID_NO_EXTENSION") == "1":
    pytest.skip("benchmarks measure the compiled core", allow_module_level=True)

from pasid.sim.vms import record_vms, replay_vm, vm_preset  # noqa: E402

ROWS = {"compiled": ("compiled", "compiled"), "python": ("python", "compiled"),
        "python-pure": ("python", "python")}
MEDIANS = {}
TRACE = []


def _trace():
    if not TRACE:
        TRACE.append(record_vms(vm_preset("vms"), seed=0))
    return TRACE[0]


@pytest.mark.parametrize("row", list(ROWS))
def test_vm_replay(benchmark, row):
    trace = _trace()
    loop, hosts = ROWS[row]
    benchmark.group = "vm-replay"
    run = benchmark.pedantic(replay_vm, args=(trace, "translated"),
                             kwargs={"engine": loop, "allocator": hosts}, rounds=5,
                             iterations=1)
    assert run.arrivals == trace.counts()["arrive"] and run.loop == loop
    if benchmark.stats is not None:
        MEDIANS[row] = benchmark.stats.stats.median


def test_vm_replay_report():
    """The ratio of this run (a timed run only)."""
    if "compiled" not in MEDIANS or "python" not in MEDIANS:
        pytest.skip("timing disabled")
    ops = len(_trace())
    lines = [f"{row}: {MEDIANS[row] * 1e3:.1f} ms ({MEDIANS[row] / ops * 1e9:.0f} ns per "
             f"trace operation)" for row in MEDIANS]
    lines.append(f"python loop / compiled loop (compiled hosts): "
                 f"{MEDIANS['python'] / MEDIANS['compiled']:.2f}x")
    print("\n" + "\n".join(lines))
    assert MEDIANS["compiled"] > 0
