"""Running on_teardown callbacks, shared by both backends."""

from __future__ import annotations

from collections.abc import Callable

# What a release collects: (the device's on_teardown callback, the PASID), in bind order.
Teardown = list[tuple[Callable[[int], object], int]]


def run_teardown(teardown: Teardown) -> None:
    """Call each ``(callback, pasid)`` after a state change is complete.

    In ascending PASID order, and for one PASID in the order its devices were
    bound (the list holds them so; the sort is stable). Every callback runs;
    the first exception propagates after the others have run, and the state
    change stands.
    """
    teardown.sort(key=lambda item: item[1])
    error: BaseException | None = None
    for callback, pasid in teardown:
        try:
            callback(pasid)
        except BaseException as exc:  # re-raised below, after the others ran
            if error is None:
                error = exc
    if error is not None:
        raise error
