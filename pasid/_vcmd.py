"""The VT-d virtual command registers, as Linux's intel-iommu driver used them: both layouts.

A guest's IOMMU driver asks the VMM for a PASID by writing a command word to the
virtual command register (``VCMD_REG``) and polling the response register
(``VCRSP_REG``) until its in-progress bit clears. Linux did so from v5.7
(commit 24f27d32ab6b, "iommu/vt-d: Enlightened PASID allocation") to v6.3
(removed in v6.4 by commit 760f41d182ec, "iommu/vt-d: Remove virtual command
interface"): ``vcmd_alloc_pasid`` and ``vcmd_free_pasid`` in
``drivers/iommu/intel-pasid.c`` (v5.7), then ``drivers/iommu/intel/pasid.c``,
with the ``VCMD_*`` macros in the ``pasid.h`` beside it; the guest used them when
``ecap_vcs(iommu->ecap)`` held and ``VCCAP_REG`` had ``DMA_VCS_PAS``.

The layout changed once. Commit 4d99efb229e6 ("iommu/vt-d: Update the virtual
command related registers", Lu Baolu, posted 2021-07-13, in v5.15 and the
stable trees) followed VT-d spec rev 3.3, which moved the operand and result up
to bit 16 and widened the status code; before it the driver followed rev 3.0/3.1.
The two encodings here are named after those spec revisions:

=================================  ==========================  ==========================
driver macro                       ``"3.1"`` (v5.7 - v5.14)    ``"3.3"`` (v5.15 - v6.3)
=================================  ==========================  ==========================
``VCMD_CMD_ALLOC``                 ``0x1`` (bits 7:0)          ``0x1`` (bits 7:0)
``VCMD_CMD_FREE``                  ``0x2`` (bits 7:0)          ``0x2`` (bits 7:0)
``VCMD_CMD_OPERAND(e)``            ``((e) << 8)``              ``((e) << 16)``
``VCMD_VRSP_IP``                   ``0x1`` (bit 0)             ``0x1`` (bit 0)
``VCMD_VRSP_SC(e)``                ``(((e) >> 1) & 0x3)``      ``(((e) & 0xff) >> 1)``
``VCMD_VRSP_SC_SUCCESS``           ``0``                       ``0``
``VCMD_VRSP_SC_NO_PASID_AVAIL``    ``2``                       ``16``
``VCMD_VRSP_SC_INVALID_PASID``     ``2``                       ``16``
(none: an undefined command)       ``1``                       ``1``
``VCMD_VRSP_RESULT_PASID(e)``      ``(((e) >> 8) & 0xfffff)``  ``(((e) >> 16) & 0xfffff)``
=================================  ==========================  ==========================

In ``"3.1"`` the two error codes are those of commit 444d66a23c1f ("iommu/vt-d:
Fix status code for Allocate/Free PASID command", Zenghui Yu, 2021-03-04,
v5.12-rc2 and the stable trees), which cites spec rev 3.0 section 10.4.45: the
driver of v5.7 - v5.11 had ``1`` for both, the code the spec gives an undefined
command. The driver has no macro for an undefined command: it treats any code
it does not expect as an error ("Unexpected error code"). Intel's own vIOMMU of
the time (QEMU patches "intel_iommu: add virtual command capability support",
Liu Yi L, 2020, "per VT-d spec 3.1") answers one with ``1``
(``VTD_VCMD_UNDEFINED_CMD``) and the two errors with ``2``; rev 3.3 moved the
command-specific errors to ``0x10`` and kept the low codes for the generic ones,
so the undefined command stays ``1`` there (the rev 3.3 text itself was not at
hand: this one value is inferred, not quoted).

A command word is well formed when it holds ALLOC alone, or FREE and a PASID in
the operand field, every other bit zero. Anything else (another command, a set
reserved bit, a word that is negative or does not fit 64 bits) is an undefined
command: the model answers with a status, as hardware would, and never raises
for a bad word. The model is synchronous, so a response's in-progress bit is
always 0.

>>> word = FREE | 0x12345 << 16               # what vcmd_free_pasid writes, rev 3.3
>>> decode(word, "3.3")
(2, 74565)
>>> hex(respond(Status.SUCCESS, 0x12345, "3.3"))
'0x123450000'
>>> parse_response(0x123450000, "3.3")
(0, 0, 74565)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from collections.abc import Mapping
from typing import Any

from pasid._args import as_int

__all__ = [
    "ALLOC",
    "COMMAND_MASK",
    "ENCODINGS",
    "FREE",
    "IN_PROGRESS",
    "LAYOUTS",
    "Layout",
    "PASID_BITS",
    "Status",
    "UNDEFINED",
    "WORD_BITS",
    "check_encoding",
    "decode",
    "parse_response",
    "respond",
]

ALLOC = 1                   # VCMD_CMD_ALLOC
FREE = 2                    # VCMD_CMD_FREE
UNDEFINED = -1              # decode's command for a word that is neither
COMMAND_MASK = 0xFF         # the command field, bits 7:0, in both layouts
IN_PROGRESS = 0x1           # VCMD_VRSP_IP, bit 0 of the response, in both layouts
PASID_BITS = 20             # the driver's operand and result: & 0xfffff
WORD_BITS = 64              # both registers are 64 bits wide


class Status(enum.IntEnum):
    """What the model answers a command with. The values name the statuses; they
    are not the register's codes, which depend on the layout (``Layout.codes``)."""

    SUCCESS = 0
    NO_PASID = 1            # ALLOC: no PASID available
    INVALID_PASID = 2       # FREE: the operand is not a PASID the guest holds
    UNDEFINED_COMMAND = 3   # neither ALLOC nor FREE, or a malformed word


@dataclass(frozen=True)
class Layout:
    """One register layout: where the fields are and what the status codes are.

    ``index`` is the layout's number in the compiled twin (``pasid/_vcmd.pxd``);
    ``operand_shift`` places a FREE's PASID (``VCMD_CMD_OPERAND``),
    ``status_shift``/``status_mask`` read the status code (``VCMD_VRSP_SC``),
    ``result_shift`` places an ALLOC's PASID (``VCMD_VRSP_RESULT_PASID``), and
    ``codes`` gives each :class:`Status` its code.
    """

    index: int
    operand_shift: int
    status_shift: int
    status_mask: int
    result_shift: int
    codes: Mapping[Status, int]

    @property
    def operand_mask(self) -> int:
        """The operand field's bits in a command word."""
        return ((1 << PASID_BITS) - 1) << self.operand_shift


def _codes(success: int, no_pasid: int, invalid_pasid: int,
           undefined: int) -> Mapping[Status, int]:
    return MappingProxyType({Status.SUCCESS: success, Status.NO_PASID: no_pasid,
                             Status.INVALID_PASID: invalid_pasid,
                             Status.UNDEFINED_COMMAND: undefined})


LAYOUTS: Mapping[str, Layout] = MappingProxyType({
    "3.1": Layout(index=0, operand_shift=8, status_shift=1, status_mask=0x3,
                  result_shift=8, codes=_codes(0, 2, 2, 1)),
    "3.3": Layout(index=1, operand_shift=16, status_shift=1, status_mask=0x7F,
                  result_shift=16, codes=_codes(0, 16, 16, 1)),
})
ENCODINGS = tuple(LAYOUTS)      # ("3.1", "3.3")


def check_encoding(encoding: Any) -> str:
    """``encoding`` if it names a layout: TypeError for a non-str, ValueError for
    another string.

    >>> check_encoding("3.1")
    '3.1'
    >>> check_encoding("3.2")
    Traceback (most recent call last):
        ...
    ValueError: encoding must be '3.1' or '3.3' (the VT-d spec revisions of the two register layouts), not '3.2'
    >>> check_encoding(3.3)
    Traceback (most recent call last):
        ...
    TypeError: encoding must be a str ('3.1' or '3.3'), not float
    """
    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be a str ('3.1' or '3.3'), not {type(encoding).__name__}")
    if encoding not in LAYOUTS:
        raise ValueError("encoding must be '3.1' or '3.3' (the VT-d spec revisions of the "
                         f"two register layouts), not {encoding!r}")
    return encoding


def decode(word: Any, encoding: str) -> tuple[int, int]:
    """``(command, operand)`` of a command word: ``(ALLOC, 0)``, ``(FREE, pasid)``,
    or ``(UNDEFINED, 0)`` for every other word, malformed ones included (any
    bit set outside the command's fields, a negative word, one of 2**64 or more).

    Never raises for a bad word; TypeError for a non-integer (a bool too), and for
    ``encoding`` as :func:`check_encoding` says. O(1).

    >>> decode(ALLOC, "3.1"), decode(FREE | 5 << 8, "3.1"), decode(FREE | 5 << 16, "3.3")
    ((1, 0), (2, 5), (2, 5))
    >>> decode(3, "3.3"), decode(FREE | 5 << 8, "3.3"), decode(-1, "3.1"), decode(2**64, "3.1")
    ((-1, 0), (-1, 0), (-1, 0), (-1, 0))
    """
    layout = LAYOUTS[check_encoding(encoding)]
    word = as_int(word, "a command word")
    if not 0 <= word < 1 << WORD_BITS:
        return UNDEFINED, 0
    if word == ALLOC:
        return ALLOC, 0
    if word & COMMAND_MASK == FREE and word & ~(layout.operand_mask | COMMAND_MASK) == 0:
        return FREE, word >> layout.operand_shift
    return UNDEFINED, 0


def respond(status: Any, pasid: Any, encoding: str) -> int:
    """The response word for ``status``: its code in the status field, the
    in-progress bit 0, and ``pasid`` in the result field if ``status`` is
    SUCCESS (give the PASID an ALLOC took, 0 for a FREE, whose response carries
    none; any other status ignores it).

    TypeError for a non-integer status or PASID, ValueError for a status that is
    not a :class:`Status` or a PASID outside ``0 .. 2**20 - 1``. O(1).

    >>> hex(respond(Status.SUCCESS, 0x12345, "3.1")), hex(respond(Status.NO_PASID, 0, "3.1"))
    ('0x1234500', '0x4')
    >>> hex(respond(Status.INVALID_PASID, 7, "3.3"))
    '0x20'
    >>> hex(respond(Status.UNDEFINED_COMMAND, 0, "3.3"))
    '0x2'
    """
    layout = LAYOUTS[check_encoding(encoding)]
    status = Status(as_int(status, "status"))
    pasid = as_int(pasid, "PASID")
    if not 0 <= pasid < 1 << PASID_BITS:
        raise ValueError(f"PASID must be in 0 .. 2**{PASID_BITS} - 1, got {pasid}")
    word = layout.codes[status] << layout.status_shift
    if status == Status.SUCCESS:
        word |= pasid << layout.result_shift
    return word


def parse_response(word: Any, encoding: str) -> tuple[int, int, int]:
    """``(in_progress, status, pasid)`` of a response word, read as the guest
    driver reads it: ``VCMD_VRSP_IP``, the status code ``VCMD_VRSP_SC`` (the
    register's code: compare it with ``LAYOUTS[encoding].codes``), and
    ``VCMD_VRSP_RESULT_PASID``, which the driver takes only from a completed,
    successful response (0 otherwise).

    TypeError for a non-integer, ValueError for a word outside ``0 .. 2**64 - 1``
    (a response is what the model wrote, never the guest). O(1).

    >>> parse_response(0x1234500, "3.1"), parse_response(0x20, "3.3")
    ((0, 0, 74565), (0, 16, 0))
    >>> parse_response(0x123450001, "3.3")       # still in progress: no PASID yet
    (1, 0, 0)
    """
    layout = LAYOUTS[check_encoding(encoding)]
    word = as_int(word, "a response word")
    if not 0 <= word < 1 << WORD_BITS:
        raise ValueError(f"a response word must be in 0 .. 2**{WORD_BITS} - 1, got {word}")
    in_progress = word & IN_PROGRESS
    status = (word >> layout.status_shift) & layout.status_mask
    pasid = 0
    if not in_progress and status == layout.codes[Status.SUCCESS]:
        pasid = (word >> layout.result_shift) & ((1 << PASID_BITS) - 1)
    return in_progress, status, pasid
