"""fork() with allocators in use: the child gets each one consistent and working.

A thread that forks copies only itself: a lock another thread held at the fork
stays held in the child for ever, and tables that thread was changing stay half
changed. So every object that holds a lock registers here (:func:`register`,
both backends, shared) and ``os.register_at_fork`` calls, on every live one:

* ``_fork_prepare()`` before the fork, in the forking thread: wait for the
  change in progress to end and keep new ones out (the compiled core takes its
  batch gate, the pure backend its lock). Nothing waited for here runs user
  code, so this does not wait on the program.
* ``_fork_parent()`` after it, in the parent: let them in again.
* ``_fork_child()`` after it, in the child: the same, and new registry locks
  (the lock under which owner and device tables change while an owner's
  ``__hash__``/``__eq__`` runs: held by another thread, it is never released in
  the child, and the change it guarded has not begun or is whole).

The objects are prepared in one order and let go in the reverse order. A fork
costs O(live allocators). Where ``os.register_at_fork`` does not exist there
is no fork() either.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

__all__ = ["register"]

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_prepared: list[Any] = []           # the objects held across the fork in progress


def register(obj: object) -> None:
    """Have ``obj``'s ``_fork_prepare``/``_fork_parent``/``_fork_child`` called at every
    fork while it lives. O(1)."""
    _live.add(obj)


def _prepare() -> None:
    for obj in list(_live):
        obj._fork_prepare()
        _prepared.append(obj)


def _in_parent() -> None:
    while _prepared:
        _prepared.pop()._fork_parent()


def _in_child() -> None:
    while _prepared:
        _prepared.pop()._fork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_prepare, after_in_parent=_in_parent, after_in_child=_in_child)
