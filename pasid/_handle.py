"""PasidHandle: a file-descriptor-like reference to an allocated PASID.

Shared by both backends: a handle only calls ``get``, ``put``, ``state`` and
``generation`` on its allocator (:class:`HandleAllocator`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Literal, Protocol

from pasid._errors import StateError
from pasid._state import State

__all__ = ["HandleAllocator", "PasidHandle"]


class HandleAllocator(Protocol):
    """What a :class:`PasidHandle` needs of its allocator: either backend's
    ``PasidAllocator``, or any object with these four methods. ``_put_if`` and
    ``_get_if`` check the PASID's life and act on it in one atomic step."""

    def _put_if(self, pasid: int, generation: int, /) -> bool: ...

    def _get_if(self, pasid: int, generation: int, /) -> bool: ...

    def state(self, pasid: int, /) -> int: ...

    def generation(self, pasid: int, /) -> int: ...


class PasidHandle:
    """One reference to a PASID, released by :meth:`close` (or ``with``).

    A handle remembers the PASID's generation when it was made. If the PASID
    is released behind its back (the owner exited) or released and allocated
    again, the handle is *stale*: ``valid`` is False, ``close()`` does nothing
    (it never touches the PASID's new life) and ``dup()`` raises
    :class:`~pasid.StateError`.

    >>> from pasid import PasidAllocator
    >>> a = PasidAllocator(bits=8)
    >>> with a.open() as h:
    ...     h.pasid, h.valid, a.refcount(h.pasid)
    (1, True, 1)
    >>> h.closed, 1 in a
    (True, False)
    """

    __slots__ = ("_allocator", "_pasid", "_generation", "_closed")

    def __init__(self, allocator: HandleAllocator, pasid: int, generation: int) -> None:
        self._allocator = allocator
        self._pasid = pasid
        self._generation = generation
        self._closed = False

    @property
    def pasid(self) -> int:
        """The PASID this handle refers to."""
        return self._pasid

    @property
    def generation(self) -> int:
        """The PASID's generation (times allocated) when this handle was made."""
        return self._generation

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called on this handle."""
        return self._closed

    @property
    def valid(self) -> bool:
        """True while the handle holds its reference: not closed, not revoked, not reused."""
        if self._closed:
            return False
        allocator = self._allocator
        return (
            allocator.state(self._pasid) == State.ACTIVE
            and allocator.generation(self._pasid) == self._generation
        )

    def close(self) -> None:
        """Drop this handle's reference (a ``put``); a no-op on a closed or stale handle. O(log64 N)."""
        if self._closed:
            return
        # closed first, so that two closes never put twice; a put that raised (the
        # clock did) changed nothing, and the handle stays open for another close
        self._closed = True
        try:
            # one atomic step: put only if the PASID is still in this handle's life
            self._allocator._put_if(self._pasid, self._generation)
        except BaseException:
            self._closed = False
            raise

    def dup(self) -> PasidHandle:
        """A new handle holding one more reference (a ``get``).

        Raises :class:`~pasid.StateError` if this handle is closed, revoked or
        its PASID has been reused.
        """
        if self._closed or not self._allocator._get_if(self._pasid, self._generation):
            raise StateError(
                f"dup of a stale handle for PASID {self._pasid} "
                f"(generation {self._generation})"
            )
        return PasidHandle(self._allocator, self._pasid, self._generation)

    def __enter__(self) -> PasidHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        status = "closed" if self._closed else ("valid" if self.valid else "stale")
        return (
            f"<PasidHandle pasid={self._pasid} generation={self._generation} {status}>"
        )
