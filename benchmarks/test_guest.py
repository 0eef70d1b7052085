"""Guests (SPEC §7): what a VM's PASID costs next to the host's own, and a migration.

Two groups, the same state for every row of a group:

=============  ==========================================================================
guest-pair     1,000 alloc+free pairs from Python per round: ``host`` (the host's own
               ``alloc()``/``free(p)``, owner-less: the host's fastest path),
               ``host-owned`` (``alloc("proc")``, an owner whose record stays: it holds
               another PASID; every VM PASID is owner-tagged likewise, by the VM's name),
               ``translated`` and ``identity`` (a GuestSpace's ``alloc()``/``free(g)``),
               on each backend. The state: a 20-bit host,
               grace 0, 10,000 host PASIDs ACTIVE, each VM holding 1,000 guest PASIDs
               (so no pair is served at the bottom of an empty space).
vm-migrate     ``vm.export()`` then ``host2.import_vm(blob, ...)`` of a translated VM
               holding 10,000 guest PASIDs (an owner tag on every 10th, data on every
               100th, a device bound to every 50th); the imported VM is removed after
               the round, untimed.
=============  ==========================================================================

Targets (issue 18), reported at the end of a timed run, not asserted: translated pair
within 1.5x of the host pair and identity within 1.2x (compiled, same run), given
against both host rows; export + import of 10,000 <= 20 ms. Skipped under ``PASID_NO_EXTENSION=1``.
"""

import os
import statistics

import pytest

import pasid._core as compiled
import pasid.pure as pure

if os.environ.get("PASID_NO_EXTENSION") == "1":
    pytest.skip("benchmarks measure the compiled core", allow_module_level=True)

PAIRS = 1000
BACKENDS = {"cy": compiled, "py": pure}
MEDIANS = {}


def _pair_state(module):
    host = module.PasidAllocator(bits=20)
    host.alloc_many(10_000)
    host.alloc("proc")                    # "proc" keeps its record between the pairs
    spaces = {"translated": host.add_vm("t", mode="translated"),
              "identity": host.add_vm("i", mode="identity")}
    for space in spaces.values():
        for _ in range(1000):
            space.alloc()
    return host, spaces


STATES = {}


def _state(name):
    if name not in STATES:
        STATES[name] = _pair_state(BACKENDS[name])
    return STATES[name]


@pytest.mark.parametrize("row", ["host", "host-owned", "translated", "identity"])
@pytest.mark.parametrize("backend", ["cy", "py"])
def test_guest_pair(benchmark, backend, row):
    host, spaces = _state(backend)
    target = host if row.startswith("host") else spaces[row]
    alloc, free = target.alloc, target.free

    if row == "host-owned":
        def pairs():
            for _ in range(PAIRS):
                free(alloc("proc"))
    else:
        def pairs():
            for _ in range(PAIRS):
                free(alloc())

    benchmark.group = "guest-pair"
    benchmark(pairs)
    host._check()
    if benchmark.stats is not None:
        MEDIANS[("pair", backend, row)] = benchmark.stats.stats.median


@pytest.mark.parametrize("backend", ["cy", "py"])
def test_vm_migrate(benchmark, backend):
    module = BACKENDS[backend]
    src = module.PasidAllocator(bits=20)
    src.add_device("vf0")
    vm = src.add_vm("vm0", devices=["vf0"])
    for i in range(10_000):
        g = vm.alloc(owner=("proc", i) if i % 10 == 0 else None,
                     data=("ctx", i) if i % 100 == 0 else None)
        if i % 50 == 0:
            vm.bind(g, "vf0")
    dst = module.PasidAllocator(bits=20)
    dst.add_device("vf0")

    names = iter(range(10**9))

    def move(name):
        return dst.import_vm(vm.export(), name)

    def clean():
        for name in dst.vms():
            dst.remove_vm(name)
        return (next(names),), {}

    benchmark.group = "vm-migrate"
    moved = benchmark.pedantic(move, setup=clean, rounds=15, iterations=1)
    assert sorted(moved) == sorted(vm)
    dst._check()
    if benchmark.stats is not None:
        MEDIANS[("migrate", backend)] = benchmark.stats.stats.median


def test_guest_report():
    """The ratios of this run (a timed run only)."""
    if ("pair", "cy", "host") not in MEDIANS:
        pytest.skip("timing disabled")
    lines = []
    for backend in BACKENDS:
        for base in ("host", "host-owned"):
            host = MEDIANS[("pair", backend, base)]
            for row in ("translated", "identity"):
                ratio = MEDIANS[("pair", backend, row)] / host
                lines.append(f"{backend} {row} pair / {base} pair: {ratio:.2f}x "
                             f"({MEDIANS[('pair', backend, row)] / PAIRS * 1e9:.0f} ns vs "
                             f"{host / PAIRS * 1e9:.0f} ns)")
    for backend in BACKENDS:
        lines.append(f"{backend} export + import_vm of 10,000: "
                     f"{MEDIANS[('migrate', backend)] * 1e3:.1f} ms")
    print("\n" + "\n".join(lines))
    assert statistics.fmean(MEDIANS.values()) > 0
