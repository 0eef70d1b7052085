"""The PASID states, shared by both backends."""

import enum


class State(enum.IntEnum):
    """Where a PASID is in its lifecycle.

    FREE can be allocated; RESERVED is held back by the host; ACTIVE is
    allocated and referenced; DRAINING is released but still bound to a device;
    QUARANTINED waits for its ``release_at`` time before it becomes FREE again.
    """

    FREE = 0
    RESERVED = 1
    ACTIVE = 2
    DRAINING = 3
    QUARANTINED = 4


# The codes as plain ints, for the tables of both backends (an int compares faster
# than an IntEnum member); the compiled core's C enum is checked against them at import.
FREE, RESERVED, ACTIVE, DRAINING, QUARANTINED = (int(state) for state in State)
