"""Type stubs for the compiled text trace reader (``pasid/sim/_textread.pyx``; Cython writes none)."""

from typing import Any, final

import numpy as np
import numpy.typing as npt

from pasid.sim._tracerules import Device

__test__: dict[str, str]    # Cython's table of docstrings for doctest

@final
class TextParser:
    source: str
    bits: int
    grace: float
    comment: str | None
    devices: list[Device]
    declared: int
    line: int
    seen_magic: bool
    header_open: bool
    # The compiled class takes its argument in ``__cinit__``, which is its ``__new__``.
    def __new__(cls, source: str) -> TextParser: ...
    @property
    def handles(self) -> int: ...
    @property
    def owners(self) -> int: ...
    def handle_name(self, number: int) -> str: ...
    def owner_name(self, number: int) -> str: ...
    def handle_names(self) -> list[str]: ...
    def owner_names(self) -> list[str]: ...
    def finish(self) -> None: ...
    def feed(self, block: bytes) -> tuple[npt.NDArray[Any], ...]: ...

def format_ops(time: npt.NDArray[np.float64], op: npt.NDArray[np.uint8],
               handle: npt.NDArray[np.int32], owner: npt.NDArray[np.int32],
               device: npt.NDArray[np.int32], handle_names: list[str] | str,
               owner_names: list[str] | str, device_names: list[str]) -> bytes: ...
