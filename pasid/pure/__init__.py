"""The pure-Python backend: the fallback, and the baseline the compiled core is measured against.

``pasid.pure.IDA`` reimplements the Linux kernel IDA in its own design (a radix
tree of 64-slot nodes over 1024-bit leaf bitmaps, with a free mark carried up),
and ``pasid.pure.PasidAllocator`` has the same behaviour, errors and snapshot
format as the compiled ``pasid.PasidAllocator``.
"""

from pasid.pure.ida import IDA
from pasid.pure.allocator import PasidAllocator
from pasid.pure.guest import GuestSpace

__all__ = ["GuestSpace", "IDA", "PasidAllocator"]
