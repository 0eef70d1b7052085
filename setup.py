"""Build the compiled core, pasid._core, and the simulator's replay loops, trace checker
and text trace reader: pasid.sim._replay, pasid.sim._vmreplay, pasid.sim._tracecheck,
pasid.sim._textread.

Cython directives live here and nowhere else. ``PASID_DEBUG_BUILD=1`` turns on
bounds, wrap-around and initialisation checks and builds without optimisation;
``PASID_SANITIZE=1`` adds AddressSanitizer and UBSan (run Python with
``LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"``:
the ASan runtime must load first, and libstdc++ before any C++ extension).
Cython and a C compiler are required: a missing one fails the build loudly,
there is no silent pure-Python install.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("PASID_DEBUG_BUILD") == "1"

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "embedsignature.format": "clinic",   # inspect.signature() works on methods
    "freethreading_compatible": True,
    # methods as plain C method descriptors: 4-6 ns less per call than
    # binding function objects, which matters at ~20 ns a call
    "binding": False,
}

# Portable by default: no -march=native, so a built wheel runs on any CPU of
# the architecture; count-trailing-zeros is one instruction either way.
# The inline limit: gcc's default at -O2 (70 insns) leaves the core's
# ``cdef inline`` fast paths (put, lowest alloc) as calls in the c_* entry
# points; with it they are one function each (1-2 ns per W1 pair; 1% more code).
# -g0: no debug information in the release build (Python's own CFLAGS ask for -g). It
# changes no code and takes 40% off the compile (_core.c: 32 s -> 19 s); symbols stay,
# so profilers still name the functions. PASID_DEBUG_BUILD=1 has the debug information.
CFLAGS = (["-O0", "-g"] if DEBUG
          else ["-O2", "--param=max-inline-insns-single=400", "-g0"])
LDFLAGS = []
# PASID_SANITIZE=1 (with the debug build): AddressSanitizer and UBSan, every report fatal
if os.environ.get("PASID_SANITIZE") == "1":
    CFLAGS += ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
               "-fno-omit-frame-pointer"]
    LDFLAGS += ["-fsanitize=address,undefined"]

MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]

extensions = [
    # the allocator core
    Extension("pasid._core", ["pasid/_core.pyx"], extra_compile_args=CFLAGS,
              extra_link_args=LDFLAGS, define_macros=MACROS),
    # the simulator's replay loop, over the core's C-level API (pasid/capi.pxd)
    Extension("pasid.sim._replay", ["pasid/sim/_replay.pyx"], extra_compile_args=CFLAGS,
              extra_link_args=LDFLAGS, define_macros=MACROS),
    # the VM simulation's replay loop (pasid/sim/vms.py), over the same API
    Extension("pasid.sim._vmreplay", ["pasid/sim/_vmreplay.pyx"], extra_compile_args=CFLAGS,
              extra_link_args=LDFLAGS, define_macros=MACROS),
    # the text trace reader's per-line work (pasid/sim/traceio.py)
    Extension("pasid.sim._textread", ["pasid/sim/_textread.pyx"], extra_compile_args=CFLAGS,
              extra_link_args=LDFLAGS, define_macros=MACROS),
    # the trace checker and the no-quarantine rewrite, a chunk at a time
    Extension("pasid.sim._tracecheck", ["pasid/sim/_tracecheck.pyx"], extra_compile_args=CFLAGS,
              extra_link_args=LDFLAGS, define_macros=MACROS),
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES, include_path=["."],
                            annotate=False))
