"""The exception hierarchy, shared by both backends.

Every error raised by :mod:`pasid` derives from :class:`PasidError`, so a
caller can catch the whole family at once, or one kind precisely.
"""

__all__ = [
    "PasidError",
    "PasidExhausted",
    "QuotaExceeded",
    "InvalidPasid",
    "StateError",
    "SnapshotError",
    "MigrationConflict",
]


class PasidError(Exception):
    """Base class of every error raised by pasid."""


class PasidExhausted(PasidError):
    """Nothing FREE in the requested range."""


class QuotaExceeded(PasidExhausted):
    """The owner's quota is used up (ACTIVE + DRAINING + QUARANTINED)."""


class InvalidPasid(PasidError, ValueError):
    """An ID out of range, negative, or an empty range."""


class StateError(PasidError):
    """The operation is not allowed in the PASID's current state."""


class SnapshotError(PasidError):
    """A snapshot that is corrupt, truncated or of an unknown version."""


class MigrationConflict(StateError):
    """An identity-mode VM cannot move: the destination host has some of its PASIDs
    taken. ``pasids`` lists them, ascending; nothing changed."""

    def __init__(self, message: str, pasids: "tuple[int, ...]" = ()) -> None:
        super().__init__(message)
        self.pasids = tuple(pasids)
