"""pasid: PCIe PASID allocation with the lifecycle IOMMU drivers need.

The public names come from the compiled core, ``pasid._core``, unless
``PASID_NO_EXTENSION=1`` is set or the extension cannot be imported; then they
come from the pure-Python backend, :mod:`pasid.pure`, and a missing extension
is reported with a :class:`RuntimeWarning` naming the cause.
``pasid.BACKEND`` says which is in use: ``"cython"`` or ``"python"``.
"""

import os as _os
import typing as _typing
import warnings as _warnings

from pasid._errors import (
    InvalidPasid,
    MigrationConflict,
    PasidError,
    PasidExhausted,
    QuotaExceeded,
    SnapshotError,
    StateError,
)
from pasid._handle import PasidHandle
from pasid._state import State
from pasid._version import __version__ as __version__  # re-exported

BACKEND: _typing.Literal["cython", "python"]
if _typing.TYPE_CHECKING:
    # One type for the public names, whichever backend runs: checkers read the
    # stubs of the compiled core (pasid/_core.pyi), which describe both.
    from pasid._core import IDA, GuestSpace, PasidAllocator
elif _os.environ.get("PASID_NO_EXTENSION") == "1":
    from pasid.pure import IDA, GuestSpace, PasidAllocator

    BACKEND = "python"
else:
    try:
        from pasid._core import IDA, GuestSpace, PasidAllocator

        BACKEND = "cython"
    except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
        _warnings.warn(
            f"pasid: compiled core unavailable ({_exc}); using the pure-Python backend",
            RuntimeWarning,
            stacklevel=2,
        )
        from pasid.pure import IDA, GuestSpace, PasidAllocator

        BACKEND = "python"

from pasid import pure  # noqa: E402  (after the backend choice, by design)

__all__ = [
    "BACKEND",
    "GuestSpace",
    "IDA",
    "InvalidPasid",
    "MigrationConflict",
    "PasidAllocator",
    "PasidError",
    "PasidExhausted",
    "PasidHandle",
    "QuotaExceeded",
    "SnapshotError",
    "State",
    "StateError",
    "pure",
]
