"""The PASID states, shared by both backends, the snapshot format and the simulator.

:class:`State` names them; ``FREE`` ... ``QUARANTINED`` are the same codes as
plain ints, for the tables and loops that compare them often. The compiled
modules keep C enums of their own and check them against these at import.
"""

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


FREE = State.FREE.value
RESERVED = State.RESERVED.value
ACTIVE = State.ACTIVE.value
DRAINING = State.DRAINING.value
QUARANTINED = State.QUARANTINED.value
